//! One simulated user: gate (optional), connector, handshake, enter, then chat and heartbeats,
//! as the chatofpomelo web client behaves. Lean on purpose: a push is counted and its
//! timestamp read from the bytes, without building a JSON value.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use shaddock_client::tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use shaddock_client::tokio_tungstenite::{WebSocketStream, client_async_with_config, tungstenite::Message};
use shaddock_protocol::Dictionary;
use shaddock_protocol::handshake::{HandshakeRequest, HandshakeResponse};
use shaddock_protocol::message::{self, MessageType, RouteRef};
use shaddock_protocol::package::{self, PackageType};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;

use crate::Stats;

/// What a user is told to do once in its room.
#[derive(Debug)]
pub enum Command {
    /// Send a message to the room (`target = "*"`) or to one user.
    Send {
        target: String,
        pad: usize,
    },
    Quit,
}

#[derive(Debug, Clone)]
pub struct UserSpec {
    pub name: String,
    pub room: String,
    /// Where to ask for a connector (`host:port`), or None to use `connector` directly.
    pub gate: Option<String>,
    pub connector: Option<SocketAddr>,
    pub source: IpAddr,
    /// Which shard of the shared latency histograms this user records into.
    pub shard: usize,
    /// Enter with `recover: true`, and reconnect and recover after a drop.
    pub recover: bool,
}

/// Where a recovering user is in its room's history.
#[derive(Debug, Default)]
struct Position {
    epoch: Option<String>,
    offset: u64,
}

/// Reads the `"offset":N` a recovering session's push body ends with.
fn offset_of(body: &[u8]) -> Option<u64> {
    const KEY: &[u8] = b"\"offset\":";
    let at = body.windows(KEY.len()).rposition(|w| w == KEY)? + KEY.len();
    let digits: Vec<u8> = body[at..]
        .iter()
        .copied()
        .take_while(u8::is_ascii_digit)
        .collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

type Ws = WebSocketStream<TcpStream>;

pub fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

async fn connect(addr: SocketAddr, source: IpAddr) -> anyhow::Result<Ws> {
    let socket = TcpSocket::new_v4()?;
    // The port is picked at connect, where only the whole 4-tuple must be free: picked at bind,
    // it must be free of every TIME_WAIT left on that address, and after a few runs that search
    // (inet_csk_get_port) took most of this process's CPU and enters fell to 150/s.
    nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::IpBindAddressNoPort, &true)?;
    socket.bind(SocketAddr::new(source, 0))?;
    let tcp = socket.connect(addr).await?;
    tcp.set_nodelay(true)?;
    // Small buffers: a load generator holds tens of thousands of these.
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_write_buffer_size(1 << 20);
    let (ws, _) = client_async_with_config(format!("ws://{addr}/"), tcp, Some(config)).await?;
    Ok(ws)
}

/// Handshake and ack; returns what the server said.
async fn handshake(ws: &mut Ws) -> anyhow::Result<HandshakeResponse> {
    let body = HandshakeRequest::js_client_body(None);
    ws.send(Message::Binary(package::encoded(
        PackageType::Handshake,
        body.as_bytes(),
    )?))
    .await?;
    while let Some(frame) = ws.next().await {
        if let Message::Binary(b) = frame? {
            let (pkg, _) = package::decode_one(&b)?;
            if pkg.kind == PackageType::Handshake {
                let hs = HandshakeResponse::parse(pkg.body)?;
                anyhow::ensure!(hs.code == 200, "handshake code {}", hs.code);
                ws.send(Message::Binary(Bytes::from_static(&package::HANDSHAKE_ACK)))
                    .await?;
                return Ok(hs);
            }
        }
    }
    anyhow::bail!("closed during handshake")
}

fn request(dict: Option<&Dictionary>, id: u32, route: &str, body: &Value) -> anyhow::Result<Bytes> {
    let route = match dict.and_then(|d| d.code_of(route)) {
        Some(c) => RouteRef::Code(c),
        None => RouteRef::Name(route.into()),
    };
    Ok(message::data_package(
        MessageType::Request,
        id,
        Some(&route),
        &serde_json::to_vec(body)?,
    )?)
}

/// Waits for the response to request `id`, answering heartbeats meanwhile.
async fn response(ws: &mut Ws, id: u32) -> anyhow::Result<Value> {
    while let Some(frame) = ws.next().await {
        let Message::Binary(b) = frame? else { continue };
        for pkg in package::decode_all(&b) {
            let pkg = pkg?;
            if pkg.kind == PackageType::Data {
                let m = message::decode(pkg.body)?;
                if m.kind == MessageType::Response && m.id == id {
                    return Ok(serde_json::from_slice(m.body).unwrap_or(Value::Null));
                }
            }
        }
    }
    anyhow::bail!("closed before response {id}")
}

async fn query_gate(gate: &str, name: &str, source: IpAddr) -> anyhow::Result<SocketAddr> {
    let addr: SocketAddr = tokio::net::lookup_host(gate)
        .await?
        .next()
        .ok_or_else(|| anyhow::anyhow!("bad gate"))?;
    let mut ws = connect(addr, source).await?;
    let hs = handshake(&mut ws).await?;
    ws.send(Message::Binary(request(
        hs.dict.as_ref(),
        1,
        "gate.gateHandler.queryEntry",
        &json!({"uid": name}),
    )?))
    .await?;
    let resp = response(&mut ws, 1).await?;
    let _ = ws.close(None).await;
    anyhow::ensure!(resp["code"] == json!(200), "queryEntry: {resp}");
    let host = resp["host"].as_str().unwrap_or("127.0.0.1");
    let port = resp["port"].as_u64().unwrap_or(0) as u16;
    tokio::net::lookup_host((host, port))
        .await?
        .next()
        .ok_or_else(|| anyhow::anyhow!("bad entry"))
}

/// Reads the send timestamp that starts a message text: `"msg":"<micros>|...`.
fn sent_at(body: &[u8]) -> Option<u64> {
    const KEY: &[u8] = b"\"msg\":\"";
    let at = body.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let digits = body[at..].iter().take_while(|b| b.is_ascii_digit());
    let mut n: u64 = 0;
    let mut any = false;
    for d in digits {
        n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
        any = true;
    }
    any.then_some(n)
}

/// Connects (through the gate when there is one), handshakes and enters; with `recover`, from
/// `position`. Returns the socket, the handshake and the enter answer.
async fn enter(
    spec: &UserSpec,
    stats: &Stats,
    position: &Position,
) -> anyhow::Result<(Ws, HandshakeResponse, Value)> {
    let addr = match (&spec.gate, spec.connector) {
        (Some(gate), _) => query_gate(gate, &spec.name, spec.source).await?,
        (None, Some(c)) => c,
        (None, None) => anyhow::bail!("no gate and no connector"),
    };
    let mut ws = connect(addr, spec.source).await?;
    stats.connected.fetch_add(1, Ordering::Relaxed);
    let hs = handshake(&mut ws).await?;
    let mut body = json!({"username": spec.name, "rid": spec.room});
    if spec.recover {
        body["recover"] = json!(true);
        if let Some(epoch) = &position.epoch {
            body["epoch"] = json!(epoch);
            body["offset"] = json!(position.offset);
        }
    }
    ws.send(Message::Binary(request(
        hs.dict.as_ref(),
        1,
        "connector.entryHandler.enter",
        &body,
    )?))
    .await?;
    let resp = response(&mut ws, 1).await?;
    anyhow::ensure!(resp.get("users").is_some(), "enter: {resp}");
    Ok((ws, hs, resp))
}

/// Full jitter: a uniform wait under 100 ms doubling per attempt, at most 5 s.
fn backoff(attempt: u32, seed: &mut u64) -> Duration {
    let ceiling = Duration::from_millis(100)
        .saturating_mul(1 << attempt.min(6))
        .min(Duration::from_secs(5));
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    ceiling.mul_f64((*seed >> 11) as f64 / (1u64 << 53) as f64)
}

/// Runs one user until told to quit or the server closes it (with `recover`: until told to
/// quit, reconnecting and recovering after every drop).
pub async fn run(
    spec: UserSpec,
    stats: Arc<Stats>,
    mut commands: mpsc::Receiver<Command>,
    entered: tokio::sync::oneshot::Sender<bool>,
) {
    let mut entered = Some(entered);
    let mut position = Position::default();
    let mut attempt = 0u32;
    let mut seed = now_micros() | 1;
    loop {
        let started = Instant::now();
        match enter(&spec, &stats, &position).await {
            Ok((ws, hs, answer)) => {
                attempt = 0;
                if let Some(entered) = entered.take() {
                    stats.entered.fetch_add(1, Ordering::Relaxed);
                    stats.record_enter(started.elapsed());
                    let _ = entered.send(true);
                } else {
                    stats.reconnects.fetch_add(1, Ordering::Relaxed);
                    recovered(&spec, &stats, &answer, &position);
                }
                if let Some(epoch) = answer["epoch"].as_str() {
                    let top = answer["offset"].as_u64().unwrap_or(0);
                    let kept = answer["recovered"] == json!(true) && position.epoch.as_deref() == Some(epoch);
                    position.offset = if kept { position.offset.max(top) } else { top };
                    position.epoch = Some(epoch.to_owned());
                }
                if chat(ws, hs, &spec, &stats, &mut commands, &mut position).await {
                    return; // told to quit
                }
                stats.disconnects.fetch_add(1, Ordering::Relaxed);
                if !spec.recover {
                    return;
                }
            }
            Err(e) => {
                if let Some(entered) = entered.take() {
                    stats.enter_errors.fetch_add(1, Ordering::Relaxed);
                    if stats.enter_errors.load(Ordering::Relaxed) <= 3 {
                        eprintln!("loadgen: {} could not enter: {e:#}", spec.name);
                    }
                    let _ = entered.send(false);
                    return;
                }
                attempt = attempt.saturating_add(1);
            }
        }
        // Reconnecting: wait, unless told to quit meanwhile.
        tokio::select! {
            _ = tokio::time::sleep(backoff(attempt, &mut seed)) => {}
            cmd = commands.recv() => if matches!(cmd, Some(Command::Quit) | None) { return },
        }
    }
}

/// Counts what a recovering enter gave back (each `onChat` a delivery, late), or that it
/// could not.
fn recovered(spec: &UserSpec, stats: &Stats, answer: &Value, position: &Position) {
    if answer["recovered"] != json!(true) {
        stats.recovery_failures.fetch_add(1, Ordering::Relaxed);
        return;
    }
    for m in answer["messages"].as_array().into_iter().flatten() {
        if m["offset"].as_u64().unwrap_or(0) <= position.offset || m["route"] != json!("onChat") {
            continue;
        }
        stats.recovered.fetch_add(1, Ordering::Relaxed);
        stats.delivered.fetch_add(1, Ordering::Relaxed);
        let sent = m["body"]["msg"]
            .as_str()
            .and_then(|t| t.split('|').next()?.parse::<u64>().ok());
        if let Some(t) = sent {
            stats.record_fanout(spec.shard, now_micros().saturating_sub(t));
        }
    }
}

/// Chats on an entered socket until told to quit (true) or the connection ends (false).
async fn chat(
    ws: Ws,
    hs: HandshakeResponse,
    spec: &UserSpec,
    stats: &Stats,
    commands: &mut mpsc::Receiver<Command>,
    position: &mut Position,
) -> bool {
    let dict = hs.dict.clone();
    let heartbeat = hs.heartbeat_secs.map(|s| Duration::from_secs(u64::from(s)));
    let (mut sink, mut stream) = ws.split();
    let mut next_id: u32 = 2;
    let mut beat = tokio::time::interval(heartbeat.unwrap_or(Duration::from_secs(3600)));
    beat.tick().await;
    let mut quit = false;
    loop {
        tokio::select! {
            cmd = commands.recv() => match cmd {
                Some(Command::Send { target, pad }) => {
                    let content = format!("{}|{}", now_micros(), "x".repeat(pad));
                    let body = json!({"rid": spec.room, "content": content, "from": spec.name, "target": target});
                    let Ok(pkg) = request(dict.as_ref(), next_id, "chat.chatHandler.send", &body) else { continue };
                    next_id = next_id.wrapping_add(1).max(2);
                    if sink.send(Message::Binary(pkg)).await.is_err() {
                        break;
                    }
                    stats.sent.fetch_add(1, Ordering::Relaxed);
                }
                Some(Command::Quit) | None => {
                    quit = true;
                    break;
                }
            },
            _ = beat.tick(), if heartbeat.is_some() => {
                if sink.send(Message::Binary(Bytes::from_static(&package::HEARTBEAT))).await.is_err() {
                    break;
                }
            }
            frame = stream.next() => {
                let Some(Ok(frame)) = frame else { break };
                let Message::Binary(b) = frame else { continue };
                for pkg in package::decode_all(&b) {
                    let Ok(pkg) = pkg else { break };
                    match pkg.kind {
                        PackageType::Data => {
                            let Ok(m) = message::decode(pkg.body) else { continue };
                            match m.kind {
                                MessageType::Push => {
                                    if spec.recover && let Some(offset) = offset_of(m.body) {
                                        if offset <= position.offset {
                                            continue; // had it already (recovered)
                                        }
                                        position.offset = offset;
                                    }
                                    let is_chat = match &m.route {
                                        Some(RouteRef::Name(n)) => n == "onChat",
                                        Some(RouteRef::Code(c)) => dict.as_ref().and_then(|d| d.route_of(*c)) == Some("onChat"),
                                        None => false,
                                    };
                                    if is_chat {
                                        stats.delivered.fetch_add(1, Ordering::Relaxed);
                                        if let Some(t) = sent_at(m.body) {
                                            stats.record_fanout(spec.shard, now_micros().saturating_sub(t));
                                        }
                                    }
                                }
                                MessageType::Response
                                    if m.body.starts_with(b"{\"code\":500") => {
                                        stats.send_errors.fetch_add(1, Ordering::Relaxed);
                                    }
                                _ => {}
                            }
                        }
                        PackageType::Kick => {
                            stats.kicks.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {}
                    }
                }
            }
        }
    }
    let _ = sink.close().await;
    quit
}

#[cfg(test)]
mod tests {
    use super::{offset_of, sent_at};

    #[test]
    fn the_offset_is_read_from_the_end_of_a_recovering_body() {
        assert_eq!(
            offset_of(br#"{"msg":"1|x","from":"a","target":"*","offset":42}"#),
            Some(42)
        );
        assert_eq!(offset_of(br#"{"msg":"\"offset\":1","offset":7}"#), Some(7));
        assert_eq!(offset_of(br#"{"msg":"1|x"}"#), None);
    }

    #[test]
    fn the_send_time_is_read_from_the_message_text() {
        assert_eq!(sent_at(br#"{"msg":"1234|xx","from":"a"}"#), Some(1234));
        assert_eq!(sent_at(br#"{"from":"a","msg":"77|"}"#), Some(77));
        assert_eq!(sent_at(br#"{"msg":"hello"}"#), None);
    }
}
