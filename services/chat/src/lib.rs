//! The chat backend: Pomelo's `app/servers/chat`. It owns the rooms that crc32(rid) routes to
//! it, with membership in the channel store (Redis), so another chat server can take a room
//! over, or this one can restart, without anyone entering again.
//!
//! # Layout
//! - [`handler::chat_handler`]: `chat.chatHandler.send` (reached by forwarding).
//! - [`remote::chat_remote`]: `chatRemote.add` and `chatRemote.kick` (called by connectors).
//! - [`purge`]: when a connector's heartbeat lapses, its members leave the rooms this server
//!   owns, with `onLeave`.

use std::sync::Arc;
use std::time::Duration;

use shaddock_bus::{Registry, subject};
use shaddock_channel::{ChannelService, ChannelStore};
use shaddock_server::backend::Backend;
use shaddock_server::{App, Handlers};

pub mod handler;
pub mod purge;
pub mod remote;

/// The server type.
pub const SERVER_TYPE: &str = "chat";

/// What the handlers and remotes of one chat server share.
#[derive(Debug, Clone)]
pub struct ChatState {
    pub channels: ChannelService,
    pub registry: Registry,
    pub server_id: String,
}

impl ChatState {
    /// True when crc32(rid) routes the room to this server.
    pub fn owns(&self, rid: &str) -> bool {
        self.registry
            .list()
            .pick(SERVER_TYPE, rid)
            .is_some_and(|s| s.id == self.server_id)
    }
}

/// Connects the channel store the config names, retrying for a while (Redis may start later).
pub async fn connect_store(app: &App) -> anyhow::Result<ChannelStore> {
    if app.config.transport == "local" {
        return Ok(ChannelStore::memory());
    }
    let started = std::time::Instant::now();
    loop {
        match ChannelStore::redis(&app.config.redis_url, &app.config.namespace).await {
            Ok(store) => return Ok(store),
            Err(e) if started.elapsed() < Duration::from_secs(30) => {
                tracing::warn!(error = %e, "redis not reachable yet, retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(anyhow::anyhow!("connecting to redis: {e}")),
        }
    }
}

/// Starts a chat server on `app` with `store`.
pub async fn start(app: &App, store: ChannelStore) -> anyhow::Result<ChatState> {
    let registry = app.join_registry(None).await?;
    let channels = ChannelService::new(store, app.bus.clone(), &app.config.namespace, app.rpc_timeout());
    let state = ChatState {
        channels,
        registry,
        server_id: app.me.id.clone(),
    };
    let mut handlers = Handlers::new();
    handler::chat_handler::register(&mut handlers, state.clone());
    let remote_state = state.clone();
    let backend = Arc::new(Backend::new(handlers, move |service, method, args| {
        let state = remote_state.clone();
        async move { remote::chat_remote::dispatch(&state, &service, &method, &args).await }
    }));
    let sub = app
        .bus
        .subscribe(subject::server(&app.config.namespace, &app.me.id))
        .await?;
    app.tracker
        .spawn(backend.serve(app.bus.clone(), sub, app.token.clone(), app.tracker.clone()));
    app.tracker.spawn(purge::watch(
        state.clone(),
        app.bus.clone(),
        app.config.namespace.clone(),
        app.token.clone(),
    ));
    app.tracker.spawn(purge::watch_store(
        state.clone(),
        app.bus.clone(),
        app.config.namespace.clone(),
        Duration::from_millis(app.config.registry.heartbeat_ms),
        app.token.clone(),
    ));
    let store = state.channels.store().clone();
    let store_check: shaddock_server::admin::Check = (
        "channel store",
        Arc::new(move || {
            let store = store.clone();
            Box::pin(async move { store.ping().await })
        }),
    );
    app.serve_admin(&state.registry, None, vec![store_check]).await?;
    app.announce_ready(None);
    Ok(state)
}

/// Runs a chat server until it is stopped.
pub async fn run(app: App) -> anyhow::Result<()> {
    let store = connect_store(&app).await?;
    start(&app, store).await?;
    app.run_until_stopped(Duration::from_secs(10), || {}).await;
    Ok(())
}
