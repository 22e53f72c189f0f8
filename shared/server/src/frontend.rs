//! A frontend server (gate or connector): the listener of WebSocket and raw TCP clients on one
//! port ([`listener`], [`transport`]), the Pomelo socket state machine ([`socket`]) and
//! delivery of pushes that arrive on the bus ([`push`]).
//!
//! Any request path upgrades (as Pomelo's `ws` server accepts any), binary frames go out,
//! text frames are read as bytes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, State};
use axum::response::{IntoResponse, Response};
use shaddock_config::Limits;
use shaddock_protobuf::Protos;
use shaddock_protocol::Dictionary;
use shaddock_protocol::handshake::{HandshakeConfig, ProtosAnnouncement};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::forward::Forwarder;
use crate::handler::Handlers;
use crate::metrics::Metrics;
use crate::sequencer::Sequencer;
use crate::service::session_service::{Session, SessionService};

pub mod builder;
pub mod listener;
pub mod push;
pub mod socket;
pub mod tls;
pub mod transport;

pub use builder::FrontendBuilder;

/// Called once for every session that closes (Pomelo's `session.on('closed')`).
pub type OnClose = Arc<dyn Fn(Session) + Send + Sync>;

/// WebSocket read buffer per connection: chat messages are small, the default is 128 KiB
/// (tungstenite adds a fixed 4 KiB read chunk of its own).
const READ_BUFFER: usize = 512;
/// WebSocket write buffer per connection.
const WRITE_BUFFER: usize = 4 * 1024;

/// Everything a frontend needs; shared by all its sockets.
pub struct Frontend {
    pub server_type: String,
    pub server_id: String,
    pub handshake: HandshakeConfig,
    /// Only heartbeats reset it; `None` with heartbeats off.
    pub heartbeat_timeout: Option<Duration>,
    /// Expands compressed routes and compresses push routes; `None` when `useDict` is off.
    pub dict: Option<Arc<Dictionary>>,
    /// pomelo-protobuf bodies for the routes that have a proto; `None`: every body is JSON.
    pub protos: Option<Arc<Protos>>,
    /// TLS on the client port (wss and TLS over raw TCP); `None`: plain.
    pub(crate) tls: Option<tokio_rustls::TlsAcceptor>,
    pub limits: Limits,
    pub(crate) handlers: Handlers<Session>,
    /// Where requests for other server types go; `None` answers them `{"code":500}`.
    pub(crate) forwarder: Option<Forwarder>,
    pub sessions: SessionService,
    pub metrics: Arc<Metrics>,
    pub(crate) on_close: Option<OnClose>,
    /// Called when a backend asks this frontend to tell the channel store again who is
    /// connected (`sessionRemote.resync`, after the store lost its data).
    pub(crate) on_resync: Option<Arc<dyn Fn(bool) + Send + Sync>>,
    pub token: CancellationToken,
    pub tracker: TaskTracker,
    /// The client port it listens on (set when it starts).
    port: u16,
    /// Cancelled to stop accepting connections (the first step of a drain).
    listening: CancellationToken,
    /// The sockets: a drain waits for them to flush their kicks.
    pub(crate) sockets: TaskTracker,
    /// What `on_close` started for closed sessions (their leaves): a drain waits for them, so
    /// that nothing of this server's sessions is left in flight when it says goodbye.
    pub leaves: TaskTracker,
    /// Each session's requests, in the order the client sent them (keyed by session id).
    pub(crate) requests: Sequencer<u64>,
    connections: Arc<Semaphore>,
}

impl std::fmt::Debug for Frontend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frontend")
            .field("server_id", &self.server_id)
            .finish()
    }
}

impl Frontend {
    /// A frontend of `server_type` with the options of the cluster config.
    pub fn new(
        server_type: &str,
        server_id: &str,
        config: &shaddock_config::ClusterConfig,
        token: CancellationToken,
        tracker: TaskTracker,
        metrics: Arc<Metrics>,
        protos: Option<Arc<Protos>>,
    ) -> Self {
        let opts = config.frontend(server_type);
        let dict = opts.use_dict.then(|| {
            Arc::new(Dictionary::new(
                config.dictionary.routes.iter().cloned(),
                config.dictionary.extra.iter().cloned(),
            ))
        });
        Self {
            server_type: server_type.to_owned(),
            server_id: server_id.to_owned(),
            handshake: HandshakeConfig {
                heartbeat_secs: (opts.heartbeat_secs > 0).then_some(opts.heartbeat_secs),
                dict: dict.as_deref().cloned(),
                protos: protos.as_ref().map(|p| ProtosAnnouncement {
                    version: p.version().to_owned(),
                    json: p.handshake_json().to_owned(),
                }),
            },
            protos,
            tls: None,
            heartbeat_timeout: opts.heartbeat_timeout(),
            dict,
            limits: config.limits.clone(),
            handlers: Handlers::new(),
            forwarder: None,
            sessions: SessionService::new(server_id, metrics.clone()),
            metrics,
            on_close: None,
            on_resync: None,
            port: 0,
            listening: token.child_token(),
            sockets: TaskTracker::new(),
            leaves: TaskTracker::new(),
            token,
            // Room for every request in flight plus the session's close.
            requests: Sequencer::new(tracker.clone(), config.limits.max_in_flight.max(1) + 2),
            tracker,
            connections: Arc::new(Semaphore::new(config.limits.max_connections)),
        }
    }

    /// A response (by its request's route) or push body for the wire: protobuf when the
    /// route has a server proto (empty when the body does not fit it, as Pomelo sends it),
    /// else the JSON as it is.
    pub fn encode_body<'a>(&self, route: &str, json: &'a [u8]) -> std::borrow::Cow<'a, [u8]> {
        match self.protos.as_ref().and_then(|p| p.encode_server(route, json)) {
            None => std::borrow::Cow::Borrowed(json),
            Some(Ok(bytes)) => std::borrow::Cow::Owned(bytes),
            Some(Err(e)) => {
                tracing::debug!(%route, error = %e, "body does not fit its proto, sent empty");
                std::borrow::Cow::Owned(Vec::new())
            }
        }
    }

    /// The client port this frontend listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops accepting connections, kicks every session with `reason`, and returns once every
    /// socket has written its kick and closed (a writer gives up on a stuck client after a
    /// short grace).
    pub async fn drain(&self, reason: &str) {
        self.listening.cancel();
        // In paced batches: their clients reconnect elsewhere, and should not all land at once.
        let (batch, pause) = (
            self.limits.drain_batch.max(1),
            Duration::from_millis(self.limits.drain_pause_ms),
        );
        let all = self.sessions.all();
        for (i, chunk) in all.chunks(batch).enumerate() {
            if i > 0 {
                tokio::time::sleep(pause).await;
            }
            for s in chunk {
                s.kick(reason);
            }
        }
        tracing::info!(sessions = all.len(), "kicked sessions for shutdown");
        self.sockets.close();
        self.sockets.wait().await;
        // A session's close runs after the requests it sent (in its order): wait for those,
        // so every close has started its leave.
        self.requests.wait_idle().await;
        // Each closed session's leave (a held place, for a drain) is acknowledged before the
        // goodbye: a successor under this id must not find them still in flight.
        self.leaves.close();
        self.leaves.wait().await;
    }

    /// True once the frontend has started to drain: a socket accepted just before is kicked.
    pub fn is_draining(&self) -> bool {
        self.listening.is_cancelled()
    }

    /// Serves WebSocket and raw TCP clients on `listener` until the frontend drains or stops.
    pub fn serve(self: Arc<Self>, listener: TcpListener) {
        let token = self.listening.clone();
        let app = Router::new().fallback(upgrade).with_state(self.clone());
        // The handshake's deadline covers the HTTP upgrade before it too.
        let deadline = Duration::from_millis(self.limits.handshake_timeout_ms);
        self.tracker
            .spawn(listener::serve(listener, app, self.clone(), token, deadline));
    }

    /// A raw TCP client (its first byte was not an HTTP method's): Pomelo packages straight
    /// on the stream, the same state machine as WebSocket.
    pub(crate) fn serve_tcp(self: Arc<Self>, io: transport::BoxIo, peer: SocketAddr) {
        let Ok(permit) = self.connections.clone().try_acquire_owned() else {
            tracing::warn!(%peer, max = self.limits.max_connections, "connection limit reached, refusing");
            return; // dropping `io` closes it
        };
        let frames = transport::tcp(io, self.limits.max_package_bytes);
        self.tracker
            .spawn(socket::run(frames, self.clone(), peer, permit));
    }
}

async fn upgrade(
    State(fe): State<Arc<Frontend>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let Ok(ws) = ws else {
        return (axum::http::StatusCode::BAD_REQUEST, "pomelo websocket endpoint\n").into_response();
    };
    let Ok(permit) = fe.connections.clone().try_acquire_owned() else {
        tracing::warn!(%peer, max = fe.limits.max_connections, "connection limit reached, refusing");
        return (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "too many connections\n",
        )
            .into_response();
    };
    let max = fe.limits.max_package_bytes;
    ws.read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(max.saturating_mul(4).max(1 << 20))
        .max_message_size(max)
        .max_frame_size(max)
        .on_failed_upgrade(|e| tracing::debug!(error = %e, "websocket upgrade failed"))
        .on_upgrade(move |socket| socket::run(transport::websocket(socket), fe, peer, permit))
}
