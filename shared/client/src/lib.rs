//! A Pomelo client that behaves like `pomelo-jsclient-websocket` (over WebSocket, `ws://`) or
//! a libpomelo2 game client (raw TCP, `tcp://`; TLS as `wss://` and `tls://`): handshake (with or
//! without using the route dictionary), ack, requests with ids, notifies, a stream of pushes,
//! and heartbeats sent `heartbeat` seconds after each server heartbeat.
//!
//! It is for Shaddock's tests, load generator and benchmarks; [`Client::send_raw`] lets a test
//! put any bytes on the wire.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use serde_json::Value;
use shaddock_protobuf::Protos;
use shaddock_protocol::Dictionary;
use shaddock_protocol::handshake::{HandshakeRequest, HandshakeResponse};
use shaddock_protocol::message::{self, MessageType, RouteRef};
use shaddock_protocol::package::{self, PackageType};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

pub use tokio_tungstenite;

pub mod recovering;
mod transport;
pub use recovering::{Event, RecoveringClient, RecoveringOptions};

/// How the client behaves.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Compress request routes the server's dictionary knows (as the JS client does).
    pub use_dict: bool,
    /// Answer server heartbeats like the JS client; off to test heartbeat timeouts.
    pub heartbeat: bool,
    /// How long `request` waits for its response.
    pub request_timeout: Duration,
    /// The handshake body; `None` sends the JS client's.
    pub handshake_body: Option<String>,
    /// The TLS client config for `wss://` and `tls://` URLs.
    pub tls: Option<Arc<tokio_rustls::rustls::ClientConfig>>,
    /// pomelo-protobuf bodies: requests of routes with a client proto are encoded, responses
    /// and pushes of routes with a server proto decoded (the same protos as the server's).
    pub protos: Option<Arc<Protos>>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            use_dict: true,
            heartbeat: true,
            request_timeout: Duration::from_secs(10),
            handshake_body: None,
            protos: None,
            tls: None,
        }
    }
}

/// What can go wrong.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("websocket: {0}")]
    Ws(#[from] tokio_tungstenite::tungstenite::Error),
    #[error("handshake failed with code {0}")]
    Handshake(u16),
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("timed out")]
    Timeout,
    #[error("connection closed")]
    Closed,
}

/// What the writer task is asked to do.
#[derive(Debug)]
enum Out {
    Frame(Bytes),
    Close,
}

/// A push received from the server.
#[derive(Debug, Clone, PartialEq)]
pub struct Push {
    pub route: String,
    /// The JSON body (`Value::Null` if it was not JSON).
    pub body: Value,
}

/// Requests waiting for their answer, with their route (an answer is decoded by it).
type Pending = Arc<Mutex<HashMap<u32, (String, oneshot::Sender<Value>)>>>;

/// A connected, handshaken client.
#[derive(Debug)]
pub struct Client {
    out: mpsc::UnboundedSender<Out>,
    pending: Pending,
    pushes: mpsc::UnboundedReceiver<Push>,
    next_id: AtomicU32,
    handshake: HandshakeResponse,
    closed: CancellationToken,
    kick: Arc<Mutex<Option<String>>>,
    heartbeats_seen: Arc<AtomicU32>,
    options: ClientOptions,
}

impl Client {
    /// Connects to `url` (e.g. `ws://127.0.0.1:3050`), handshakes and acks.
    pub async fn connect(url: &str, options: ClientOptions) -> Result<Self, ClientError> {
        let (mut stream, mut sink) = tokio::time::timeout(
            Duration::from_secs(10),
            transport::open(url, options.tls.as_ref()),
        )
        .await
        .map_err(|_| ClientError::Timeout)??;
        let body = options
            .handshake_body
            .clone()
            .unwrap_or_else(|| HandshakeRequest::js_client_body(None));
        let hs = package::encoded(PackageType::Handshake, body.as_bytes())
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        sink.send(hs).await?;

        let handshake = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(frame) = stream.next().await {
                let b = frame?;
                let (pkg, _) = package::decode_one(&b).map_err(|e| ClientError::Protocol(e.to_string()))?;
                if pkg.kind == PackageType::Handshake {
                    return HandshakeResponse::parse(pkg.body)
                        .map_err(|e| ClientError::Protocol(e.to_string()));
                }
            }
            Err(ClientError::Closed)
        })
        .await
        .map_err(|_| ClientError::Timeout)??;
        if handshake.code != 200 {
            return Err(ClientError::Handshake(handshake.code));
        }
        sink.send(Bytes::from_static(&package::HANDSHAKE_ACK)).await?;

        let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Out>();
        let (push_tx, push_rx) = mpsc::unbounded_channel();
        let pending: Pending = Arc::default();
        let closed = CancellationToken::new();
        let kick = Arc::new(Mutex::new(None));
        let heartbeats_seen = Arc::new(AtomicU32::new(0));

        let writer_closed = closed.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = writer_closed.cancelled() => break,
                    m = out_rx.recv() => match m {
                        Some(Out::Close) | None => break,
                        Some(Out::Frame(b)) => if sink.send(b).await.is_err() { break },
                    }
                }
            }
            sink.close().await;
        });

        let reader = Reader {
            dict: handshake.dict.clone(),
            heartbeat: handshake
                .heartbeat_secs
                .filter(|_| options.heartbeat)
                .map(|s| Duration::from_secs(u64::from(s))),
            heartbeat_scheduled: Arc::new(AtomicBool::new(false)),
            out: out_tx.clone(),
            pending: pending.clone(),
            pushes: push_tx,
            kick: kick.clone(),
            heartbeats_seen: heartbeats_seen.clone(),
            protos: options.protos.clone(),
        };
        let reader_closed = closed.clone();
        tokio::spawn(async move {
            while let Some(Ok(frame)) = stream.next().await {
                reader.on_frame(&frame);
            }
            reader_closed.cancel();
        });

        Ok(Self {
            out: out_tx,
            pending,
            pushes: push_rx,
            next_id: AtomicU32::new(1),
            handshake,
            closed,
            kick,
            heartbeats_seen,
            options,
        })
    }

    /// What the server said in its handshake.
    pub fn handshake(&self) -> &HandshakeResponse {
        &self.handshake
    }

    fn route_ref<'a>(&self, route: &'a str) -> RouteRef<'a> {
        match self.handshake.dict.as_ref().and_then(|d| d.code_of(route)) {
            Some(code) if self.options.use_dict => RouteRef::Code(code),
            _ => RouteRef::Name(Cow::Borrowed(route)),
        }
    }

    /// Sends a request and waits for its response.
    pub async fn request(&self, route: &str, body: Value) -> Result<Value, ClientError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().insert(id, (route.to_owned(), tx));
        let json = self.body(route, &body)?;
        let pkg = message::data_package(MessageType::Request, id, Some(&self.route_ref(route)), &json)
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        self.send_raw(pkg)?;
        let result = tokio::select! {
            // A response that arrived before the close (a refusal, then a kick) still counts.
            biased;
            r = tokio::time::timeout(self.options.request_timeout, rx) => match r {
                Ok(Ok(v)) => Ok(v),
                Ok(Err(_)) => Err(ClientError::Closed),
                Err(_) => Err(ClientError::Timeout),
            },
            _ = self.closed.cancelled() => Err(ClientError::Closed),
        };
        self.pending.lock().remove(&id);
        result
    }

    /// Sends a notify (no response).
    pub fn notify(&self, route: &str, body: Value) -> Result<(), ClientError> {
        let json = self.body(route, &body)?;
        let pkg = message::data_package(MessageType::Notify, 0, Some(&self.route_ref(route)), &json)
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        self.send_raw(pkg)
    }

    /// A request body: protobuf if the route has a client proto, else JSON.
    fn body(&self, route: &str, body: &Value) -> Result<Vec<u8>, ClientError> {
        let json = serde_json::to_vec(body).map_err(|e| ClientError::Protocol(e.to_string()))?;
        match self
            .options
            .protos
            .as_ref()
            .and_then(|p| p.encode_client(route, &json))
        {
            None => Ok(json),
            Some(encoded) => encoded.map_err(|e| ClientError::Protocol(e.to_string())),
        }
    }

    /// Puts `bytes` on the wire as one binary frame, whatever they are.
    pub fn send_raw(&self, bytes: impl Into<Bytes>) -> Result<(), ClientError> {
        self.out
            .send(Out::Frame(bytes.into()))
            .map_err(|_| ClientError::Closed)
    }

    /// The next push, waiting at most `timeout`.
    pub async fn next_push(&mut self, timeout: Duration) -> Option<Push> {
        tokio::time::timeout(timeout, self.pushes.recv())
            .await
            .ok()
            .flatten()
    }

    /// Takes the stream of pushes (to read them elsewhere); [`Client::next_push`] then sees
    /// none.
    pub fn take_pushes(&mut self) -> mpsc::UnboundedReceiver<Push> {
        let (_, empty) = mpsc::unbounded_channel();
        std::mem::replace(&mut self.pushes, empty)
    }

    /// Every push that arrives within `timeout`.
    pub async fn pushes_within(&mut self, timeout: Duration) -> Vec<Push> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut out = Vec::new();
        while let Ok(Some(p)) = tokio::time::timeout_at(deadline, self.pushes.recv()).await {
            out.push(p);
        }
        out
    }

    /// Waits until the server closes the connection; true if it did within `timeout`.
    pub async fn closed_within(&self, timeout: Duration) -> bool {
        tokio::time::timeout(timeout, self.closed.cancelled())
            .await
            .is_ok()
    }

    pub fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }

    /// The reason of a KICK the server sent, if any.
    pub fn kick_reason(&self) -> Option<String> {
        self.kick.lock().clone()
    }

    /// Server heartbeats received so far.
    pub fn heartbeats_seen(&self) -> u32 {
        self.heartbeats_seen.load(Ordering::Relaxed)
    }

    /// Closes the connection, after what is already queued has been sent.
    pub fn close(&self) {
        let _ = self.out.send(Out::Close);
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.closed.cancel();
    }
}

struct Reader {
    dict: Option<Dictionary>,
    heartbeat: Option<Duration>,
    heartbeat_scheduled: Arc<AtomicBool>,
    out: mpsc::UnboundedSender<Out>,
    pending: Pending,
    pushes: mpsc::UnboundedSender<Push>,
    kick: Arc<Mutex<Option<String>>>,
    heartbeats_seen: Arc<AtomicU32>,
    protos: Option<Arc<Protos>>,
}

impl Reader {
    /// A response or push body of `route` as JSON (`Null` if it is neither protobuf of the
    /// route's proto nor JSON).
    fn value(&self, route: &str, body: &[u8]) -> Value {
        match self.protos.as_ref().and_then(|p| p.decode_server(route, body)) {
            Some(Ok(json)) => serde_json::from_str(&json).unwrap_or(Value::Null),
            Some(Err(_)) => Value::Null,
            // Pomelo's client reads an empty protobuf body as `{}`.
            None => serde_json::from_slice(body).unwrap_or(Value::Null),
        }
    }

    fn on_frame(&self, bytes: &[u8]) {
        for pkg in package::decode_all(bytes) {
            let Ok(pkg) = pkg else { return };
            match pkg.kind {
                PackageType::Heartbeat => self.on_heartbeat(),
                PackageType::Data => self.on_data(pkg.body),
                PackageType::Kick => {
                    let reason = serde_json::from_slice::<Value>(pkg.body)
                        .ok()
                        .and_then(|v| v.get("reason").and_then(Value::as_str).map(str::to_owned))
                        .unwrap_or_default();
                    *self.kick.lock() = Some(reason);
                }
                _ => {}
            }
        }
    }

    fn on_heartbeat(&self) {
        self.heartbeats_seen.fetch_add(1, Ordering::Relaxed);
        let Some(interval) = self.heartbeat else {
            return;
        };
        if self.heartbeat_scheduled.swap(true, Ordering::AcqRel) {
            return;
        }
        let out = self.out.clone();
        let flag = self.heartbeat_scheduled.clone();
        tokio::spawn(async move {
            tokio::time::sleep(interval).await;
            flag.store(false, Ordering::Release);
            let _ = out.send(Out::Frame(Bytes::from_static(&package::HEARTBEAT)));
        });
    }

    fn on_data(&self, body: &[u8]) {
        let Ok(msg) = message::decode(body) else {
            return;
        };
        match msg.kind {
            MessageType::Response => {
                if let Some((route, tx)) = self.pending.lock().remove(&msg.id) {
                    let _ = tx.send(self.value(&route, msg.body));
                }
            }
            MessageType::Push => {
                let route = match &msg.route {
                    Some(RouteRef::Name(n)) => n.to_string(),
                    Some(RouteRef::Code(c)) => self
                        .dict
                        .as_ref()
                        .and_then(|d| d.route_of(*c))
                        .map(str::to_owned)
                        .unwrap_or_default(),
                    None => String::new(),
                };
                let body = self.value(&route, msg.body);
                let _ = self.pushes.send(Push { route, body });
            }
            _ => {}
        }
    }
}
