//! One client socket: the Pomelo state machine of POMELO.md 1.2-1.6.
//!
//! | state | accepts | then |
//! | --- | --- | --- |
//! | inited | HANDSHAKE (else ignored) | answer, wait for ack; no `sys`: `{"code":500}` and close |
//! | wait-ack | HANDSHAKE_ACK | working; one HEARTBEAT at once |
//! | working | HEARTBEAT (echoed at once), DATA | |
//!
//! A package that does not decode, or a KICK from the client, closes this socket only. Several
//! packages in one frame are all handled (Pomelo disconnects; we are lenient). Only client
//! heartbeats reset the heartbeat deadline; expiry closes without a KICK, as Pomelo does.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use shaddock_protocol::handshake::{self, HandshakeRequest};
use shaddock_protocol::message::{self, MessageType, RouteRef};
use shaddock_protocol::package::{self, PackageType};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::task_tracker::TaskTrackerToken;
use tracing::Instrument;

use super::Frontend;
use super::transport::{FrameReader, FrameWriter};
use crate::handler::{HandlerError, RouteCheck, check_route, response_body};
use crate::sequencer::Busy;
use crate::service::outbox::{OutboxReader, outbox};
use crate::service::session_service::Session;

/// How long a closing socket may take to flush what is queued (e.g. a KICK).
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// A deadline far enough to mean "never".
const NEVER: Duration = Duration::from_secs(86400 * 365);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_code_is_read_from_the_json() {
        assert_eq!(answer_code(br#"{"code":500,"error":true}"#), 500);
        assert_eq!(answer_code(br#"{"users":["a"]}"#), 200);
        assert_eq!(answer_code(b"{}"), 200);
    }

    #[test]
    fn the_rate_limit_refuses_past_the_burst_then_calls_a_flood() {
        let mut r = RateLimit::new(10, 3);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(matches!(r.admit(t0), Admission::Accept));
        }
        for _ in 0..3 {
            assert!(matches!(r.admit(t0), Admission::Refuse));
        }
        assert!(matches!(r.admit(t0), Admission::Flood));
        // Tokens come back with time.
        let mut r = RateLimit::new(10, 1);
        assert!(matches!(r.admit(t0), Admission::Accept));
        assert!(matches!(r.admit(t0), Admission::Refuse));
        assert!(matches!(
            r.admit(t0 + Duration::from_millis(150)),
            Admission::Accept
        ));
        assert!(matches!(RateLimit::new(0, 0).admit(t0), Admission::Accept));
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Inited,
    WaitAck,
    Working,
}

/// What one package asks the connection to do next.
enum Next {
    Continue,
    Close,
}

/// Runs one client connection (WebSocket or raw TCP) to its end. The set-up is done before
/// the future is made, and the future keeps each thing once: a socket's whole task is its
/// largest allocation while it is idle.
pub(crate) fn run(
    (stream, sink): (FrameReader, FrameWriter),
    fe: Arc<Frontend>,
    peer: SocketAddr,
    permit: OwnedSemaphorePermit,
) -> impl Future<Output = ()> + Send + 'static {
    // A drain waits for every socket to have written its kick.
    let writing = fe.sockets.token();
    let (tx, outbox) = outbox(fe.limits.send_queue);
    let closing = fe.token.child_token();
    let session = fe.sessions.create(tx, closing.clone());
    let span = tracing::debug_span!("connection", peer.addr = %peer, session.id = session.id());
    if fe.is_draining() {
        session.kick(super::builder::DRAIN_REASON);
    }
    fe.metrics.connections.inc();
    fe.metrics.connections_total.inc();
    let mut conn = Connection {
        state: State::Inited,
        deadline: Instant::now() + Duration::from_millis(fe.limits.handshake_timeout_ms),
        rate: RateLimit::new(fe.limits.requests_per_second, fe.limits.request_burst),
        in_flight: Arc::new(tokio::sync::Semaphore::new(fe.limits.max_in_flight.max(1))),
        fe,
        session,
        stream,
        sink,
        outbox,
        closing,
        _held: (permit, writing),
    };
    async move {
        tracing::debug!("connected");
        conn.serve().await;
        conn.finish().await;
        tracing::debug!("closed");
    }
    .instrument(span)
}

/// The close callback when the session's queue is full (it holds at most `max_in_flight`).
fn on_close_now(fe: &Frontend, session: Session) {
    if let Some(on_close) = &fe.on_close {
        on_close(session);
    }
}

struct Connection {
    fe: Arc<Frontend>,
    session: Session,
    state: State,
    deadline: Instant,
    rate: RateLimit,
    /// Bounds the requests of this session being handled at once (each holds its body).
    in_flight: Arc<tokio::sync::Semaphore>,
    stream: FrameReader,
    sink: FrameWriter,
    /// What the session queued for this socket.
    outbox: OutboxReader,
    /// Cancelled to end the socket (a kick, a slow client, shutdown).
    closing: CancellationToken,
    /// Held until the socket ends: its place under `limits.max_connections`, and the
    /// drain's count of sockets still writing.
    _held: (OwnedSemaphorePermit, TaskTrackerToken),
}

/// A token bucket per session: `rate` requests a second, `burst` at once. Refused requests
/// are answered `{"code":500}`; as many refused in a row again as the burst means a flood.
struct RateLimit {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
    refused_in_a_row: u32,
}

enum Admission {
    Accept,
    Refuse,
    Flood,
}

impl RateLimit {
    fn new(per_second: u32, burst: u32) -> Self {
        Self {
            rate: f64::from(per_second),
            burst: f64::from(burst.max(1)),
            tokens: f64::from(burst.max(1)),
            at: Instant::now(),
            refused_in_a_row: 0,
        }
    }

    fn admit(&mut self, now: Instant) -> Admission {
        if self.rate <= 0.0 {
            return Admission::Accept;
        }
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.refused_in_a_row = 0;
            Admission::Accept
        } else {
            self.refused_in_a_row += 1;
            if f64::from(self.refused_in_a_row) > self.burst {
                Admission::Flood
            } else {
                Admission::Refuse
            }
        }
    }
}

impl Connection {
    /// Reads the client's frames and writes what its session queued, in one task (a second
    /// task per socket cost about 0.9 KiB per idle connection), until either side ends.
    async fn serve(&mut self) {
        // Made once, not per turn of the loop: every write to the socket is a turn, and a
        // fresh timer and cancellation wait each time would cost two registrations per push.
        let closing = self.closing.clone();
        let cancelled = closing.cancelled();
        let timer = tokio::time::sleep_until(self.deadline);
        tokio::pin!(cancelled, timer);
        loop {
            if timer.deadline() != self.deadline {
                timer.as_mut().reset(self.deadline);
            }
            let frame = tokio::select! {
                _ = &mut cancelled => return,
                _ = &mut timer => {
                    match self.state {
                        State::Working => tracing::debug!("heartbeat timeout"),
                        _ => tracing::debug!("handshake timeout"),
                    }
                    return;
                }
                first = self.outbox.recv() => {
                    let written =
                        write_queued(&mut self.sink, &mut self.outbox, first, cancelled.as_mut()).await;
                    if let Err(e) = written {
                        tracing::debug!(error = %e, "write failed");
                        return;
                    }
                    continue;
                }
                frame = self.stream.next() => frame,
            };
            let bytes: Bytes = match frame {
                None => return,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "socket error");
                    return;
                }
                Some(Ok(b)) => b,
            };
            for pkg in package::decode_all(&bytes) {
                let next = match pkg {
                    Ok(pkg) => self.on_package(pkg.kind, pkg.body),
                    Err(e) => {
                        tracing::debug!(error = %e, "bad package, closing");
                        Next::Close
                    }
                };
                if let Next::Close = next {
                    return;
                }
            }
        }
    }

    /// After the socket ended: forgets the session, starts its close callback, and writes
    /// what is still queued (a KICK, a last answer), then a close frame.
    async fn finish(&mut self) {
        let fe = &self.fe;
        self.closing.cancel();
        fe.sessions.remove(&self.session);
        if let Some(on_close) = fe.on_close.clone() {
            // After the requests this session sent before it closed: its last messages reach
            // the room before its leave does.
            let closed = self.session.clone();
            let job = async move { on_close(closed) };
            if let Err(Busy) = fe.requests.submit(self.session.id(), job) {
                on_close_now(fe, self.session.clone());
            }
        }
        let (sink, outbox) = (&mut self.sink, &mut self.outbox);
        let last = async {
            feed_queued(sink, outbox).await?;
            sink.close().await
        };
        let _ = tokio::time::timeout(CLOSE_GRACE, last).await;
        fe.metrics.connections.dec();
    }

    /// Without heartbeats (the gate), a socket silent for `limits.idle_timeout_ms` is closed:
    /// idle sockets must not hold every connection slot.
    fn idle_deadline(&self) -> Instant {
        match self.fe.limits.idle_timeout_ms {
            0 => Instant::now() + NEVER,
            ms => Instant::now() + Duration::from_millis(ms),
        }
    }

    fn on_package(&mut self, kind: PackageType, body: &[u8]) -> Next {
        match (self.state, kind) {
            (State::Inited, PackageType::Handshake) => self.on_handshake(body),
            (State::WaitAck, PackageType::HandshakeAck) => {
                self.state = State::Working;
                self.session.set_working();
                match self.fe.heartbeat_timeout {
                    Some(timeout) => {
                        self.session.send(Bytes::from_static(&package::HEARTBEAT));
                        self.deadline = Instant::now() + timeout;
                    }
                    None => self.deadline = self.idle_deadline(),
                }
                Next::Continue
            }
            (State::Working, PackageType::Heartbeat) => {
                if let Some(timeout) = self.fe.heartbeat_timeout {
                    self.session.send(Bytes::from_static(&package::HEARTBEAT));
                    self.deadline = Instant::now() + timeout;
                }
                Next::Continue
            }
            (State::Working, PackageType::Data) => {
                if self.fe.heartbeat_timeout.is_none() {
                    self.deadline = self.idle_deadline();
                }
                self.on_data(body)
            }
            // A client never sends KICK: Pomelo disconnects on it.
            (_, PackageType::Kick) => Next::Close,
            // Anything out of its state (DATA before the ack, a second handshake): ignored.
            _ => Next::Continue,
        }
    }

    fn on_handshake(&mut self, body: &[u8]) -> Next {
        match HandshakeRequest::parse(body) {
            Ok(req) => {
                self.session.send(self.fe.handshake.ok_package(&req, None));
                self.state = State::WaitAck;
                Next::Continue
            }
            Err(e) => {
                tracing::debug!(error = %e, "handshake refused");
                self.session
                    .send(handshake::error_package(handshake::CODE_USE_ERROR));
                self.session.close();
                Next::Close
            }
        }
    }

    fn on_data(&mut self, body: &[u8]) -> Next {
        let msg = match message::decode(body) {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(error = %e, "bad message, closing");
                return Next::Close;
            }
        };
        if !matches!(msg.kind, MessageType::Request | MessageType::Notify) {
            return Next::Continue;
        }
        let route = match &msg.route {
            Some(RouteRef::Name(n)) => n.to_string(),
            // Pomelo drops a compressed route it cannot expand, without an answer.
            Some(RouteRef::Code(c)) => match self.fe.dict.as_ref().and_then(|d| d.route_of(*c)) {
                Some(r) => r.to_owned(),
                None => return Next::Continue,
            },
            None => return Next::Continue,
        };
        let request_id = (msg.kind == MessageType::Request).then_some(msg.id);
        match self.rate.admit(Instant::now()) {
            Admission::Accept => {}
            Admission::Refuse => {
                if let Some(id) = request_id {
                    let refused = HandlerError::with_response(
                        "rate limit",
                        serde_json::json!({"code": 500, "error": "rate limit"}),
                    );
                    respond(&self.fe, &self.session, id, &route, &response_body(&Err(refused)));
                }
                return Next::Continue;
            }
            Admission::Flood => {
                tracing::warn!("request flood, kicking");
                self.session.kick("flood");
                return Next::Close;
            }
        }
        let server_type = match check_route(&route) {
            RouteCheck::Drop => return Next::Continue,
            RouteCheck::Attack => {
                tracing::warn!(%route, "constructor route, kicking");
                self.session.kick("attack");
                return Next::Close;
            }
            RouteCheck::Invalid => {
                if let Some(id) = request_id {
                    let result = Err(HandlerError::new("route needs three parts"));
                    respond(&self.fe, &self.session, id, &route, &response_body(&result));
                }
                return Next::Continue;
            }
            RouteCheck::Ok(parts) => parts.server_type.to_owned(),
        };
        // Invalid JSON is an empty object, as Pomelo's coder makes it.
        // Forwarded bodies travel as the client sent them (made UTF-8); only a local handler
        // needs them parsed. The backend parses, and invalid JSON becomes `{}` there too.
        // A route with a client proto arrives as protobuf and travels on as JSON.
        let raw = match self
            .fe
            .protos
            .as_ref()
            .and_then(|p| p.decode_client(&route, msg.body))
        {
            None => shaddock_protocol::text::decode_lenient(msg.body)
                .into_owned()
                .into_bytes(),
            Some(Ok(json)) => json.into_bytes(),
            Some(Err(e)) => {
                tracing::debug!(%route, error = %e, "bad protobuf body");
                if let Some(id) = request_id {
                    let bad = serde_json::json!({"code": 500, "error": "bad protobuf body"});
                    let answer = response_body(&Err(HandlerError::with_response("bad body", bad)));
                    respond(&self.fe, &self.session, id, &route, &answer);
                }
                return Next::Continue;
            }
        };
        let Ok(permit) = self.in_flight.clone().try_acquire_owned() else {
            if let Some(id) = request_id {
                let busy = serde_json::json!({"code": 500, "error": "too many requests in flight"});
                respond(
                    &self.fe,
                    &self.session,
                    id,
                    &route,
                    &response_body(&Err(HandlerError::with_response("busy", busy))),
                );
            }
            return Next::Continue;
        };
        // The session's order: each request is handed on (a local handler run to its end, a
        // forwarded one sent) only after the one before it. Answers to forwarded requests are
        // awaited apart, so a slow answer holds back no later request's effect.
        let fe = self.fe.clone();
        let session = self.session.clone();
        let started = Instant::now();
        // The job takes the route; a refused job is answered by the same route's proto.
        let route_of_busy = route.clone();
        let job = async move {
            if server_type == fe.server_type {
                let body = serde_json::from_slice(&raw).unwrap_or_else(|_| Value::Object(Default::default()));
                let result = fe.handlers.handle_filtered(&route, session.clone(), body).await;
                let answer = result.map(|v| response_body(&Ok(v)));
                finish(&fe, &session, request_id, &route, answer, started);
                drop(permit);
                return;
            }
            let Some(fw) = &fe.forwarder else {
                let answer = Err(HandlerError::new(format!("no server of type {server_type}")));
                finish(&fe, &session, request_id, &route, answer, started);
                return;
            };
            match fw
                .send(session.export(), &server_type, &route, raw, request_id.is_none())
                .await
            {
                Ok(sent) if request_id.is_some() => {
                    let waiter = fe.clone();
                    fe.tracker.spawn(
                        async move {
                            let answer = sent.answer().await;
                            finish(&waiter, &session, request_id, &route, answer, started);
                            drop(permit);
                        }
                        .in_current_span(),
                    );
                }
                sent => finish(
                    &fe,
                    &session,
                    request_id,
                    &route,
                    sent.map(|_| Vec::new()),
                    started,
                ),
            }
        };
        if self.fe.requests.submit(self.session.id(), job).is_err()
            && let Some(id) = request_id
        {
            let busy = serde_json::json!({"code": 500, "error": "too many requests in flight"});
            respond(
                &self.fe,
                &self.session,
                id,
                &route_of_busy,
                &response_body(&Err(HandlerError::with_response("busy", busy))),
            );
        }
        Next::Continue
    }
}

/// Answers a request (a notify gets nothing) and counts it.
fn finish(
    fe: &Frontend,
    session: &Session,
    request_id: Option<u32>,
    route: &str,
    answer: Result<Vec<u8>, HandlerError>,
    started: Instant,
) {
    let (body, code) = match answer {
        Ok(json) => {
            let code = answer_code(&json);
            (json, code)
        }
        Err(e) => {
            tracing::debug!(%route, error = %e, "request failed");
            let body = response_body(&Err(e));
            let code = answer_code(&body);
            (body, code)
        }
    };
    if let Some(id) = request_id {
        respond(fe, session, id, route, &body);
    }
    // Pushes a handler held (a recovering enter) follow its answer.
    session.release_pushes();
    record(fe, route, code, started);
}

/// The `code` of a JSON answer (`{"code":500,...}`, as serde_json writes it), else 200.
fn answer_code(json: &[u8]) -> u16 {
    json.strip_prefix(b"{\"code\":")
        .map(|rest| {
            rest.iter().take_while(|b| b.is_ascii_digit()).fold(0u16, |n, d| {
                n.saturating_mul(10).saturating_add(u16::from(d - b'0'))
            })
        })
        .unwrap_or(200)
}

/// Counts a request by route (a dictionary route, else `other`) and answer code.
fn record(fe: &Frontend, route: &str, code: u16, started: Instant) {
    let known = fe.dict.as_ref().is_some_and(|d| d.code_of(route).is_some()) || fe.handlers.has(route);
    let m = &fe.metrics;
    let labels = crate::metrics::RequestLabels {
        route: if known {
            route.to_owned()
        } else {
            "other".to_owned()
        },
        code,
    };
    m.requests.get_or_create(&labels).inc();
    m.requests_answered.inc();
    m.request_seconds.observe(started.elapsed().as_secs_f64());
}

/// Answers request `id` of `route`: the body encoded by the route's server proto, if any.
fn respond(fe: &Frontend, session: &Session, id: u32, route: &str, body: &[u8]) {
    match message::response_package(id, &fe.encode_body(route, body)) {
        Ok(pkg) => {
            session.send(pkg);
        }
        Err(e) => tracing::warn!(error = %e, "response too large to encode"),
    }
}

/// Hands the sink everything queued now, without flushing.
async fn feed_queued(sink: &mut FrameWriter, outbox: &mut OutboxReader) -> Result<(), String> {
    while let Some(more) = outbox.try_recv() {
        sink.feed(more).await?;
    }
    Ok(())
}

/// Writes `first` and whatever else is queued, several frames per flush. A write that is
/// still stuck when the socket starts closing gets a grace period to finish.
async fn write_queued(
    sink: &mut FrameWriter,
    outbox: &mut OutboxReader,
    first: Bytes,
    closing: std::pin::Pin<&mut impl Future<Output = ()>>,
) -> Result<(), String> {
    let write = async {
        sink.feed(first).await?;
        feed_queued(sink, outbox).await?;
        sink.flush().await
    };
    tokio::pin!(write);
    tokio::select! {
        r = &mut write => r,
        _ = closing => tokio::time::timeout(CLOSE_GRACE, &mut write)
            .await
            .unwrap_or_else(|_| Err("flush timed out".to_owned())),
    }
}
