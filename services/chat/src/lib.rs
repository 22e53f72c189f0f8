//! The chat backend: Pomelo's `app/servers/chat`. It owns the rooms that crc32(rid) routes to
//! it, with membership in the channel store (Redis), so another chat server can take a room
//! over, or this one can restart, without anyone entering again.
//!
//! # Layout
//! - [`handler::chat_handler`]: `chat.chatHandler.send` (reached by forwarding).
//! - [`remote::chat_remote`]: `chatRemote` (add, kick, resync, purgeFrontend, channels).
//! - [`room`]: `onAdd` and `onLeave` to the members of a room.
//! - [`membership`]: how the store's members are kept equal to the live sessions (rounds,
//!   purges of dead connectors, a store that lost its data): the whole state machine.
//! - [`handoff`]: a room that has just moved here waits for its old owner to finish with it.
//! - [`recent_news`]: member news that a NATS loss may have taken, told again.
//! - [`lost_pushes`]: recovering members dropped after pushes were lost with this server's NATS
//!   connection, to recover them.
//! - [`takeover`]: the same for a room taken over from a server that died between a history
//!   append and its push.
//!
//! # Order
//! Everything that changes a room or pushes into it (a chat message, an add, a kick, a purge)
//! runs in the room's order ([`ChatState::rooms`]): one at a time per room, in the order it
//! reached this server, rooms in parallel. Pushes are published in that order on one NATS
//! connection, so every member on every connector sees the room in one order. Chat messages
//! that queued behind each other in a room (nothing else between them) are handled as one
//! batch: one history write gives them consecutive offsets, then each is pushed in order, so a
//! busy room makes one Redis round trip per batch instead of one per message.

use std::sync::Arc;
use std::time::Duration;

use shaddock_bus::{Registry, subject};
use shaddock_channel::{Channel, ChannelService, ChannelStore};
use shaddock_console::Console;
use shaddock_history::{History, Retention};
use shaddock_server::backend::{Backend, Forwarded};
use shaddock_server::sequencer::Sequencer;
use shaddock_server::{App, Handlers};

pub mod closed;
pub mod handler;
pub mod handoff;
pub mod limits;
pub mod lost_pushes;
pub mod membership;
pub mod recent_news;
pub mod remote;
pub mod room;
pub mod store_loss;
pub mod takeover;

/// The server type.
pub const SERVER_TYPE: &str = "chat";

/// What the handlers and remotes of one chat server share.
#[derive(Debug, Clone)]
pub struct ChatState {
    pub channels: ChannelService,
    pub registry: Registry,
    /// Calls to other servers (connectors' `sessionRemote`, other chat servers' barriers).
    pub rpc: shaddock_remote::RpcClient,
    pub server_id: String,
    /// The rooms' order: the messages of one room run one at a time (keyed by rid).
    pub rooms: Sequencer<String, Forwarded>,
    pub handoff: Arc<handoff::Handoff>,
    /// The connectors' membership rounds in progress.
    pub rounds: Arc<membership::Rounds>,
    /// Most members a room may have (0: no limit).
    pub max_room_size: usize,
    pub room_rates: Arc<limits::RoomRates>,
    /// The rooms' history: every push into a room gets its offset here (see [`room`]).
    pub history: History,
    /// Who each room was told of lately (told again after a NATS loss).
    pub news: Arc<recent_news::RecentNews>,
    /// Which rooms were pushed to lately (their recovering members are dropped after a loss).
    pub lost: Arc<lost_pushes::LostPushes>,
    /// Which rooms this server recorded itself as the writer of (see [`takeover`]).
    pub takeovers: Arc<takeover::Takeovers>,
    /// This start of the server: the writer it records.
    pub incarnation: u64,
    pub bus: shaddock_bus::Bus,
}

impl ChatState {
    /// True when crc32(rid) routes the room to this server.
    pub fn owns(&self, rid: &str) -> bool {
        self.registry
            .list()
            .pick(SERVER_TYPE, rid)
            .is_some_and(|s| s.id == self.server_id)
    }

    /// Room `rid`, to push into. A server serving a room it does not own (a connector still
    /// routes by an older server list, or this one does) has not followed the room's changes,
    /// which went to the owner: it reads the members afresh rather than from its cache.
    pub fn room_to_push(&self, rid: &str) -> Channel {
        if !self.owns(rid) {
            tracing::debug!(%rid, "serving a room this server does not own");
            self.channels.invalidate_room(rid);
        }
        self.channels.channel(rid)
    }
}

/// Connects the channel store the config names, retrying for a while (Redis may start later).
pub async fn connect_store(app: &App) -> anyhow::Result<ChannelStore> {
    if app.config.transport == "local" {
        return Ok(ChannelStore::memory());
    }
    let started = std::time::Instant::now();
    loop {
        let (url, cluster) = (&app.config.redis_url, app.config.redis_cluster);
        match shaddock_channel::RedisStore::connect(url, cluster, &app.config.namespace).await {
            Ok(store) => return Ok(ChannelStore::Redis(store)),
            Err(e) if started.elapsed() < Duration::from_secs(30) => {
                tracing::warn!(error = %e, "redis not reachable yet, retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(anyhow::anyhow!("connecting to redis: {e}")),
        }
    }
}

/// The history the config asks for: off, in memory (`transport = "local"`), or in Redis.
pub async fn connect_history(config: &shaddock_config::ClusterConfig) -> anyhow::Result<History> {
    let h = &config.history;
    if !h.enabled {
        return Ok(History::Off);
    }
    let retention = Retention {
        size: h.size,
        age: Duration::from_millis(h.age_ms),
        meta_ttl: Duration::from_millis(h.meta_ttl_ms),
    };
    if config.transport == "local" {
        return Ok(History::memory(retention));
    }
    let started = std::time::Instant::now();
    loop {
        match History::redis(
            &config.redis_url,
            config.redis_cluster,
            &config.namespace,
            retention,
        )
        .await
        {
            Ok(history) => return Ok(history),
            Err(e) if started.elapsed() < Duration::from_secs(30) => {
                tracing::warn!(error = %e, "redis not reachable yet for history, retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(anyhow::anyhow!("connecting to redis for history: {e}")),
        }
    }
}

/// Starts a chat server on `app` with `store` and `history`.
pub async fn start(app: &App, store: ChannelStore, history: History) -> anyhow::Result<ChatState> {
    let store_errors = store.errors();
    let registry = app.join_registry(None).await?;
    let channels = ChannelService::new(store, app.bus.clone(), &app.config.namespace, app.rpc_timeout());
    channels.follow(registry.clone());
    let rpc = app.rpc(&registry);
    let handoff = Arc::new(handoff::Handoff::new(&app.me.id, rpc.clone()));
    let hold = handoff.clone();
    let channels_after_hold = channels.clone();
    let rooms = Sequencer::batching(
        app.tracker.clone(),
        app.config.limits.room_queue,
        Some(Arc::new(move |rid: &String| {
            let job = hold.hold(rid)?;
            let (channels, rid) = (channels_after_hold.clone(), rid.clone());
            // The old owner's last changes are in the store now: read the room afresh.
            Some(Box::pin(async move {
                job.await;
                channels.invalidate_room(&rid);
            }) as shaddock_server::sequencer::Job)
        })),
    );
    let state = ChatState {
        channels,
        registry,
        rpc,
        server_id: app.me.id.clone(),
        rooms: rooms.clone(),
        handoff,
        rounds: Arc::default(),
        max_room_size: app.config.limits.max_room_size,
        room_rates: Arc::new(limits::RoomRates::new(
            app.config.limits.room_messages_per_second,
            app.config.limits.room_burst,
        )),
        history: history.clone(),
        news: Arc::default(),
        lost: Arc::new(lost_pushes::LostPushes::new(
            app.bus.connects(),
            app.token.clone(),
        )),
        takeovers: Arc::default(),
        incarnation: app.incarnation,
        bus: app.bus.clone(),
    };
    let mut handlers = Handlers::new();
    handler::chat_handler::register(&mut handlers, state.clone());
    let remote_state = state.clone();
    let backend = Arc::new(Backend::new(
        handlers,
        move |service, method, args| {
            let state = remote_state.clone();
            async move { remote::chat_remote::dispatch(&state, &service, &method, &args).await }
        },
        rooms,
        app.metrics.clone(),
    ));
    let sub = app
        .bus
        .subscribe(subject::server(&app.config.namespace, &app.me.id))
        .await?;
    app.tracker
        .spawn(backend.serve(app.bus.clone(), sub, app.token.clone(), app.tracker.clone()));
    let heartbeat = Duration::from_millis(app.config.registry.heartbeat_ms);
    let rounds = Duration::from_millis(app.config.registry.sync_ms);
    let grace = Duration::from_millis(app.config.registry.lapse_ms);
    app.tracker
        .spawn(membership::watch(state.clone(), grace, app.token.clone()));
    app.tracker
        .spawn(membership::sweep(state.clone(), rounds, grace, app.token.clone()));
    app.tracker
        .spawn(recent_news::watch(state.clone(), app.token.clone()));
    app.tracker.spawn(store_loss::watch_store(
        state.clone(),
        heartbeat,
        app.token.clone(),
    ));
    app.metrics
        .register("store_errors", "Channel store (Redis) errors", store_errors);
    if let Some(errors) = history.errors() {
        app.metrics
            .register("history_errors", "Room history (Redis) errors", errors);
    }
    let store = state.channels.store().clone();
    let store_check: shaddock_server::admin::Check = (
        "channel store",
        Arc::new(move || {
            let store = store.clone();
            Box::pin(async move { store.ping().await })
        }),
    );
    let console = Console::new(app.rpc(&state.registry), app.bus.clone(), &app.config.namespace);
    app.serve_admin(&state.registry, None, vec![store_check], console.routes())
        .await?;
    // On SIGTERM: say goodbye to the registry first, keep serving for the handoff window
    // (what connectors sent before they heard the goodbye) and until the rooms are idle, and
    // only then stop listening: the rooms' new owners wait for this server (see `handoff`).
    let (leaving, rooms) = (app.clone(), state.rooms.clone());
    app.on_stop(move || async move {
        leaving.leave_registry();
        tokio::time::sleep(leaving.handoff()).await;
        rooms.wait_idle().await;
    });
    app.announce_ready(None);
    Ok(state)
}

/// Runs a chat server until it is stopped (see [`start`] for what it does on SIGTERM).
pub async fn run(app: App) -> anyhow::Result<()> {
    let store = connect_store(&app).await?;
    let history = connect_history(&app.config).await?;
    start(&app, store, history).await?;
    app.run().await;
    Ok(())
}
