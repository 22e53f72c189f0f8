//! The gate: Pomelo's `app/servers/gate`. Clients ask it which connector to use
//! (`gate.gateHandler.queryEntry {uid}`); it answers the public host and client port of the
//! connector at `crc32(uid) % connectors`, the live connectors sorted by id.

use std::sync::Arc;
use std::time::Duration;

use shaddock_console::Console;
use shaddock_server::App;
use shaddock_server::frontend::Frontend;

pub mod handler;

/// The server type.
pub const SERVER_TYPE: &str = "gate";

/// Starts a gate on `app`.
pub async fn start(app: &App) -> anyhow::Result<Arc<Frontend>> {
    let (listener, port, registry, mut fe) = app.start_frontend(SERVER_TYPE).await?;
    handler::gate_handler::register(&mut fe, registry.clone());
    let fe = Arc::new(fe);
    let console = Console::new(app.rpc(&registry), app.bus.clone(), &app.config.namespace);
    app.serve_admin(&registry, Some(fe.clone()), Vec::new(), console.routes())
        .await?;
    fe.clone().serve(listener);
    app.announce_ready(Some(port));
    Ok(fe)
}

/// Runs a gate until it is stopped.
pub async fn run(app: App) -> anyhow::Result<()> {
    start(&app).await?;
    app.run_until_stopped(Duration::from_secs(5), || {}).await;
    Ok(())
}
