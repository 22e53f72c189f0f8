//! The connector: Pomelo's `app/servers/connector`. It holds the client sessions, serves
//! `connector.entryHandler.enter`, forwards every other server type's routes (chat by
//! crc32 of the session's `rid`), delivers the pushes that arrive on its subject, and tells
//! the chat server when a session closes (`chatRemote.kick`).
//!
//! # Layout
//! - [`handler::entry_handler`]: `enter`.
//! - [`run`]: assembles the frontend on an [`App`] and serves until stopped.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use shaddock_bus::subject;
use shaddock_server::forward::Forwarder;
use shaddock_server::frontend::{push, Frontend};
use shaddock_server::rpc::RpcClient;
use shaddock_server::App;

pub mod handler;

/// The server type.
pub const SERVER_TYPE: &str = "connector";

/// Runs a connector on `app` until it is stopped (signal or token).
pub async fn run(app: App) -> anyhow::Result<()> {
    let started = start(&app).await?;
    let sessions = started.sessions.clone();
    app.run_until_stopped(Duration::from_secs(10), move || {
        let n = sessions.kick_all("server shutting down");
        tracing::info!(sessions = n, "kicked sessions for shutdown");
    })
    .await;
    Ok(())
}

/// Starts a connector on `app` and returns its frontend (the caller decides when to stop).
pub async fn start(app: &App) -> anyhow::Result<Arc<Frontend>> {
    let listener = app.bind_client_port().await?;
    let port = listener.local_addr()?.port();
    let registry = app.join_registry(Some(port)).await?;
    let rpc = RpcClient {
        bus: app.bus.clone(),
        registry: registry.clone(),
        namespace: app.config.namespace.clone(),
        timeout: app.rpc_timeout(),
    };

    let mut fe = Frontend::new(SERVER_TYPE, &app.me.id, &app.config, app.token.clone(), app.tracker.clone());
    fe.forwarder = Some(Forwarder {
        bus: app.bus.clone(),
        registry,
        namespace: app.config.namespace.clone(),
        timeout: app.rpc_timeout(),
        route_keys: HashMap::from([("chat".to_owned(), "rid".to_owned())]),
    });
    handler::entry_handler::register(&mut fe, rpc.clone());
    let tracker = app.tracker.clone();
    fe.on_close = Some(Arc::new(move |session| {
        let rpc = rpc.clone();
        tracker.spawn(handler::entry_handler::on_user_leave(rpc, session));
    }));
    let fe = Arc::new(fe);

    let own = app.bus.subscribe(subject::server(&app.config.namespace, &app.me.id)).await?;
    let by_type = app.bus.subscribe(subject::server_type(&app.config.namespace, SERVER_TYPE)).await?;
    app.tracker
        .spawn(push::serve(app.bus.clone(), vec![own, by_type], fe.clone(), app.token.clone()));
    fe.clone().serve(listener);
    app.announce_ready(Some(port));
    Ok(fe)
}
