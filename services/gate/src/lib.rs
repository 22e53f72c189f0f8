//! The gate: Pomelo's `app/servers/gate`. Clients ask it which connector to use
//! (`gate.gateHandler.queryEntry {uid}`); it answers the public host and client port of the
//! connector at `crc32(uid) % connectors`, the live connectors sorted by id.

use std::sync::Arc;

use shaddock_console::Console;
use shaddock_server::App;
use shaddock_server::frontend::Frontend;

pub mod handler;

/// The server type.
pub const SERVER_TYPE: &str = "gate";

/// Starts a gate on `app`.
pub async fn start(app: &App) -> anyhow::Result<Arc<Frontend>> {
    let mut fe = app.frontend(SERVER_TYPE).await?;
    handler::gate_handler::register(&mut fe);
    let console = Console::new(app.rpc(fe.registry()), app.bus.clone(), &app.config.namespace);
    fe.start(console.routes()).await
}

/// Runs a gate until it is stopped.
pub async fn run(app: App) -> anyhow::Result<()> {
    start(&app).await?;
    app.run().await;
    Ok(())
}
