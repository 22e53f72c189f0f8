//! A chat member that survives reconnects: it finds its connector through the gate, enters
//! with `recover: true`, and when the connection drops (a kick with `reconnect`, a connector
//! restart, a network blip) connects again with exponential backoff and full jitter, and
//! recovers what it missed (docs/recovery.md). Room messages come out once each, in the
//! room's order, whatever happened underneath.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::{Client, ClientError, ClientOptions};

const QUERY_ENTRY: &str = "gate.gateHandler.queryEntry";
const ENTER: &str = "connector.entryHandler.enter";

/// Who, where, and how patiently.
#[derive(Debug, Clone)]
pub struct RecoveringOptions {
    /// The gate, e.g. `ws://127.0.0.1:3014`.
    pub gate: String,
    pub username: String,
    pub rid: String,
    /// The first retry waits up to this long ...
    pub backoff_min: Duration,
    /// ... and no retry longer than this.
    pub backoff_max: Duration,
    pub client: ClientOptions,
}

impl RecoveringOptions {
    pub fn new(gate: &str, username: &str, rid: &str) -> Self {
        Self {
            gate: gate.to_owned(),
            username: username.to_owned(),
            rid: rid.to_owned(),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            client: ClientOptions::default(),
        }
    }
}

/// What the member sees.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A room message, live or recovered: each offset once, in order.
    Message { route: String, offset: u64, body: Value },
    /// Entered (again): `recovered` is false when messages were missed that the room's
    /// history no longer held (or its epoch changed). The first enter is `recovered: true`.
    Entered { users: Vec<String>, recovered: bool },
    /// The connection dropped; the member is reconnecting.
    Reconnecting { kick_reason: Option<String> },
}

/// A member of one room that reconnects and recovers on its own. Dropping it leaves.
#[derive(Debug)]
pub struct RecoveringClient {
    events: mpsc::UnboundedReceiver<Event>,
    current: Arc<Mutex<Option<Arc<Client>>>>,
    stop: CancellationToken,
}

impl RecoveringClient {
    /// Starts the member; it enters (and keeps entering) in the background.
    pub fn start(options: RecoveringOptions) -> Self {
        let (tx, events) = mpsc::unbounded_channel();
        let current = Arc::new(Mutex::new(None));
        let stop = CancellationToken::new();
        let member = Member {
            options,
            events: tx,
            current: current.clone(),
            epoch: None,
            offset: 0,
            stop: stop.clone(),
            seed: seed(),
        };
        tokio::spawn(member.run());
        Self {
            events,
            current,
            stop,
        }
    }

    /// The next event, waiting at most `timeout`.
    pub async fn next_event(&mut self, timeout: Duration) -> Option<Event> {
        tokio::time::timeout(timeout, self.events.recv())
            .await
            .ok()
            .flatten()
    }

    /// Sends a request on the current connection (an error while reconnecting: try again).
    pub async fn request(&self, route: &str, body: Value) -> Result<Value, ClientError> {
        let client = self.current.lock().clone().ok_or(ClientError::Closed)?;
        client.request(route, body).await
    }

    /// True while connected and entered.
    pub fn is_connected(&self) -> bool {
        self.current.lock().as_ref().is_some_and(|c| !c.is_closed())
    }

    /// Closes the connection and stops reconnecting.
    pub fn stop(&self) {
        self.stop.cancel();
        if let Some(c) = self.current.lock().take() {
            c.close();
        }
    }
}

impl Drop for RecoveringClient {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Member {
    options: RecoveringOptions,
    events: mpsc::UnboundedSender<Event>,
    current: Arc<Mutex<Option<Arc<Client>>>>,
    epoch: Option<String>,
    /// The last offset delivered.
    offset: u64,
    stop: CancellationToken,
    seed: u64,
}

impl Member {
    async fn run(mut self) {
        let mut attempt = 0u32;
        while !self.stop.is_cancelled() {
            match self.connect_and_enter().await {
                Ok((client, mut pushes)) => {
                    attempt = 0;
                    let client = Arc::new(client);
                    *self.current.lock() = Some(client.clone());
                    loop {
                        tokio::select! {
                            _ = self.stop.cancelled() => break,
                            p = pushes.recv() => match p {
                                Some(p) => self.deliver(p.route, p.body),
                                None => break,
                            },
                        }
                    }
                    *self.current.lock() = None;
                    if self.stop.is_cancelled() {
                        client.close();
                        return;
                    }
                    let kick_reason = client.kick_reason();
                    let _ = self.events.send(Event::Reconnecting { kick_reason });
                }
                Err(e) => {
                    tracing::debug!(error = %e, attempt, "enter failed, retrying");
                    attempt = attempt.saturating_add(1);
                }
            }
            let wait = self.backoff(attempt);
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Full jitter: a uniform wait in [0, min(max, min_wait * 2^attempt)].
    fn backoff(&mut self, attempt: u32) -> Duration {
        let ceiling = self
            .options
            .backoff_min
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.options.backoff_max);
        // xorshift64: enough randomness to spread reconnects apart.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let unit = (self.seed >> 11) as f64 / (1u64 << 53) as f64;
        ceiling.mul_f64(unit)
    }

    async fn connect_and_enter(
        &mut self,
    ) -> Result<(Client, mpsc::UnboundedReceiver<crate::Push>), ClientError> {
        let o = &self.options;
        let gate = Client::connect(&o.gate, o.client.clone()).await?;
        let entry = gate.request(QUERY_ENTRY, json!({"uid": o.username})).await?;
        gate.close();
        let (Some(host), Some(port)) = (entry["host"].as_str(), entry["port"].as_u64()) else {
            return Err(ClientError::Protocol(format!("queryEntry answered {entry}")));
        };
        let mut client = Client::connect(&format!("ws://{host}:{port}"), o.client.clone()).await?;
        let pushes = client.take_pushes();
        let mut body = json!({"username": o.username, "rid": o.rid, "recover": true});
        if let Some(epoch) = &self.epoch {
            body["epoch"] = json!(epoch);
            body["offset"] = json!(self.offset);
        }
        let answer = client.request(ENTER, body).await?;
        let Some(users) = answer["users"].as_array() else {
            client.close();
            return Err(ClientError::Protocol(format!("enter answered {answer}")));
        };
        let users = users
            .iter()
            .filter_map(|u| u.as_str().map(str::to_owned))
            .collect();
        let first = self.epoch.is_none();
        let recovered = first || answer["recovered"] == json!(true);
        if !first && recovered {
            for m in answer["messages"].as_array().into_iter().flatten() {
                let offset = m["offset"].as_u64().unwrap_or(0);
                if offset > self.offset {
                    let route = m["route"].as_str().unwrap_or_default().to_owned();
                    let _ = self.events.send(Event::Message {
                        route,
                        offset,
                        body: m["body"].clone(),
                    });
                }
            }
        }
        self.epoch = answer["epoch"].as_str().map(str::to_owned);
        self.offset = answer["offset"]
            .as_u64()
            .unwrap_or(0)
            .max(if recovered { self.offset } else { 0 });
        let _ = self.events.send(Event::Entered { users, recovered });
        Ok((client, pushes))
    }

    /// A live push: delivered once (an offset at or below the last is a duplicate).
    fn deliver(&mut self, route: String, mut body: Value) {
        let Some(offset) = body.get("offset").and_then(Value::as_u64) else {
            return; // not a room message (a broadcast): not ours to order
        };
        if offset <= self.offset {
            return;
        }
        self.offset = offset;
        if let Some(obj) = body.as_object_mut() {
            obj.remove("offset");
        }
        let _ = self.events.send(Event::Message { route, offset, body });
    }
}

fn seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    (nanos ^ u64::from(std::process::id()).rotate_left(32)) | 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member() -> Member {
        let (events, _rx) = mpsc::unbounded_channel();
        Member {
            options: RecoveringOptions::new("ws://x", "a", "r"),
            events,
            current: Arc::default(),
            epoch: None,
            offset: 0,
            stop: CancellationToken::new(),
            seed: 12345,
        }
    }

    #[test]
    fn backoff_is_jittered_under_an_exponential_ceiling() {
        let mut m = member();
        for attempt in 0..20 {
            let ceiling = Duration::from_millis(100)
                .saturating_mul(1 << attempt.min(16))
                .min(Duration::from_secs(5));
            let waits: Vec<Duration> = (0..50).map(|_| m.backoff(attempt)).collect();
            assert!(waits.iter().all(|w| *w <= ceiling));
            assert!(waits.iter().any(|w| *w != waits[0]), "jittered");
        }
    }

    #[test]
    fn a_push_at_or_below_the_last_offset_is_a_duplicate() {
        let (events, mut rx) = mpsc::unbounded_channel();
        let mut m = Member { events, ..member() };
        m.offset = 5;
        m.deliver("onChat".into(), json!({"msg": "old", "offset": 5}));
        m.deliver("onChat".into(), json!({"msg": "new", "offset": 7}));
        m.deliver("onChat".into(), json!({"msg": "again", "offset": 7}));
        assert_eq!(
            rx.try_recv().unwrap(),
            Event::Message {
                route: "onChat".into(),
                offset: 7,
                body: json!({"msg": "new"})
            }
        );
        assert!(rx.try_recv().is_err());
    }
}
