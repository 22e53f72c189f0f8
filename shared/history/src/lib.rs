//! A room's history, for clients that reconnect: every message pushed into a room gets an
//! `offset` (a per-room counter from 1), the room has an `epoch` (changed whenever its history
//! was lost), and the last messages are kept, bounded in number and age.
//!
//! # Behavior
//! - [`History::append`] hands out the next offset and records the message in one atomic step
//!   (one Lua script in Redis): two owners of a room during a handoff never hand out one
//!   offset twice, and a room keeps counting when it changes owner.
//! - [`History::recover`] answers the room's position and, for a client that gives the last
//!   epoch and offset it saw, every message for that user after it, or `recovered: false`
//!   when the epoch changed or a missed message is no longer kept (never a part).
//! - [`History::withdraw`] takes back messages that were appended but never pushed (their
//!   room's owner stalled between the two, and the room went on without them): recovery
//!   skips them, and a client recovering across them still recovers.
//! - A message has an [`Audience`]: the whole room, all but one (a joiner's own `onAdd`), or
//!   some uids (a private message). Recovery returns only what was for the user.
//! - Redis keys: `<ns>:history:{<room>}` (a stream whose ids are the offsets),
//!   `<ns>:history-meta:{<room>}` (a hash: epoch, top offset) and
//!   `<ns>:history-withdrawn:{<room>}` (a set of offsets, rarely present). The room is a hash
//!   tag, so all three live in one Redis Cluster slot. The stream expires after `age` without
//!   messages, the hash and the set after `meta_ttl` (then the room starts a new epoch).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

mod memory;
mod redis_log;

pub use memory::MemoryHistory;
pub use redis_log::RedisHistory;

/// What can go wrong with history.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("history store: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("history entry: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
    #[error("history entry: {0}")]
    Decode(#[from] rmp_serde::decode::Error),
    #[error("history store answered {0}")]
    Unexpected(String),
}

/// How much history a room keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Messages kept per room at most.
    pub size: usize,
    /// A message older than this is gone.
    pub age: Duration,
    /// A room's epoch and offset are forgotten after this long without a message.
    pub meta_ttl: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            size: 300,
            age: Duration::from_secs(600),
            meta_ttl: Duration::from_secs(86_400),
        }
    }
}

/// Who a message was for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Audience {
    /// Everyone in the room.
    All,
    /// Everyone but this uid (a joiner does not hear its own `onAdd`).
    Except(String),
    /// Only these uids (a private message).
    Only(Vec<String>),
}

impl Audience {
    pub fn includes(&self, uid: &str) -> bool {
        match self {
            Audience::All => true,
            Audience::Except(u) => u != uid,
            Audience::Only(us) => us.iter().any(|u| u == uid),
        }
    }
}

/// A message to append: what [`History::append_batch`] takes.
#[derive(Debug, Clone, Copy)]
pub struct NewEntry<'a> {
    pub route: &'a str,
    pub body: &'a [u8],
    pub audience: &'a Audience,
}

/// Where a room's history stands: its epoch and latest offset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    pub epoch: String,
    pub offset: u64,
}

/// One kept message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub offset: u64,
    pub route: String,
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
    pub audience: Audience,
    /// When it was appended, in ms since the Unix epoch (for the age bound).
    pub at_ms: u64,
}

/// A message given back to a client that recovers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recovered {
    pub offset: u64,
    pub route: String,
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
}

/// The answer to [`History::recover`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recovery {
    /// The room's position now: live pushes continue after it.
    pub position: Position,
    /// True when `messages` holds every message for the user after the given offset.
    pub recovered: bool,
    pub messages: Vec<Recovered>,
}

/// A room's history in Redis, in memory, or none.
#[derive(Debug, Clone)]
pub enum History {
    /// No offsets and no history: pushes are Pomelo's, and recovery always fails.
    Off,
    Memory(Arc<MemoryHistory>),
    Redis(RedisHistory),
}

impl History {
    pub fn memory(retention: Retention) -> Self {
        History::Memory(Arc::new(MemoryHistory::new(retention)))
    }

    /// `cluster`: a Redis Cluster (also when `url` lists several nodes).
    pub async fn redis(
        url: &str,
        cluster: bool,
        namespace: &str,
        retention: Retention,
    ) -> Result<Self, HistoryError> {
        Ok(History::Redis(
            RedisHistory::connect(url, cluster, namespace, retention).await?,
        ))
    }

    pub fn is_on(&self) -> bool {
        !matches!(self, History::Off)
    }

    /// Gives the message the room's next offset and keeps it; `None` when history is off.
    /// When it fails, the message is not to be pushed: an append whose answer was lost (it
    /// may have happened) is withdrawn.
    pub async fn append(
        &self,
        room: &str,
        route: &str,
        body: &[u8],
        audience: &Audience,
    ) -> Result<Option<Position>, HistoryError> {
        let entry = NewEntry {
            route,
            body,
            audience,
        };
        let positions = self
            .append_entries(room, std::slice::from_ref(&entry), true)
            .await?;
        Ok(positions.and_then(|p| p.into_iter().next()))
    }

    /// Gives the messages the room's next offsets, in order, and keeps them, in one step (one
    /// round trip to Redis): no other message of the room falls between them. `None` when
    /// history is off. When it fails, none is to be pushed: an append whose answer was lost
    /// (it may have happened) is withdrawn.
    pub async fn append_batch(
        &self,
        room: &str,
        entries: &[NewEntry<'_>],
    ) -> Result<Option<Vec<Position>>, HistoryError> {
        self.append_entries(room, entries, true).await
    }

    /// [`History::append_batch`] by `writer` (as recorded by [`History::take_over`]); also
    /// answers whether the room's recorded writer is another one: another server wrote the
    /// room since this one took it over (two servers served it while their lists of chat
    /// servers disagreed), and what this one knows of the room may be behind.
    pub async fn append_batch_by(
        &self,
        room: &str,
        entries: &[NewEntry<'_>],
        writer: u64,
    ) -> Result<Option<(Vec<Position>, bool)>, HistoryError> {
        self.append_by(room, entries, true, writer).await
    }

    /// [`History::append`] for a message pushed even when its append fails (a member event):
    /// an append whose answer was lost stays, if it happened, as the message went out. By
    /// `writer`, telling as [`History::append_batch_by`] does.
    pub async fn append_kept_by(
        &self,
        room: &str,
        route: &str,
        body: &[u8],
        audience: &Audience,
        writer: u64,
    ) -> Result<Option<(Position, bool)>, HistoryError> {
        let entry = NewEntry {
            route,
            body,
            audience,
        };
        let appended = self
            .append_by(room, std::slice::from_ref(&entry), false, writer)
            .await?;
        Ok(appended.and_then(|(p, other)| Some((p.into_iter().next()?, other))))
    }

    async fn append_by(
        &self,
        room: &str,
        entries: &[NewEntry<'_>],
        withdraw_if_unanswered: bool,
        writer: u64,
    ) -> Result<Option<(Vec<Position>, bool)>, HistoryError> {
        match self {
            History::Off => Ok(None),
            History::Memory(m) => Ok(Some((m.append(room, entries), false))),
            History::Redis(r) => {
                let (positions, recorded) = r.append(room, entries, withdraw_if_unanswered).await?;
                Ok(Some((positions, recorded.is_some_and(|w| w != writer))))
            }
        }
    }

    async fn append_entries(
        &self,
        room: &str,
        entries: &[NewEntry<'_>],
        withdraw_if_unanswered: bool,
    ) -> Result<Option<Vec<Position>>, HistoryError> {
        let appended = self.append_by(room, entries, withdraw_if_unanswered, 0).await?;
        Ok(appended.map(|(p, _)| p))
    }

    /// Records `writer` (a server's incarnation) as the one that writes and pushes room `room`
    /// now, and answers the one that did before, if another. A writer that died between an
    /// append and its push left a message in the history that its members never got; one that
    /// was only paused would withdraw it when it runs again. So a change of writer seals what
    /// the room holds: [`History::withdraw`] no longer takes it back, and the new writer can
    /// have the recovering members come back for it. `None` for a history in memory (one
    /// process) or off.
    pub async fn take_over(&self, room: &str, writer: u64) -> Result<Option<u64>, HistoryError> {
        match self {
            History::Off | History::Memory(_) => Ok(None),
            History::Redis(r) => r.take_over(room, writer).await,
        }
    }

    /// Withdraws messages appended at `offsets` of `epoch` that were never pushed: recovery
    /// never gives them back, and the history stays whole (a client recovering across them
    /// still recovers). Nothing happens if the room has started another epoch since. Answers
    /// how many were kept, sealed by a new writer ([`History::take_over`]): recovery gives
    /// those back.
    pub async fn withdraw(&self, room: &str, epoch: &str, offsets: &[u64]) -> Result<u64, HistoryError> {
        match self {
            History::Off => Ok(0),
            History::Memory(m) => {
                m.withdraw(room, epoch, offsets);
                Ok(0)
            }
            History::Redis(r) => r.withdraw(room, epoch, offsets).await,
        }
    }

    /// Where the room's history stands now; `None` when history is off.
    pub async fn position(&self, room: &str) -> Result<Option<Position>, HistoryError> {
        Ok(self.recover(room, "", None).await?.map(|r| r.position))
    }

    /// The room's position, and what `uid` missed since `since` (when given); `None` when
    /// history is off.
    pub async fn recover(
        &self,
        room: &str,
        uid: &str,
        since: Option<&Position>,
    ) -> Result<Option<Recovery>, HistoryError> {
        let (position, kept, age) = match self {
            History::Off => return Ok(None),
            History::Memory(m) => {
                let (p, k) = m.read(room, since.map(|s| s.offset));
                (p, k, m.retention().age)
            }
            History::Redis(r) => {
                let (p, k) = r.read(room, since.map(|s| s.offset)).await?;
                (p, k, r.retention().age)
            }
        };
        Ok(Some(recovery(position, kept, since, uid, age, now_ms())))
    }

    /// Redis errors (for the metrics registry); `None` unless Redis.
    pub fn errors(&self) -> Option<prometheus_client::metrics::counter::Counter> {
        match self {
            History::Redis(r) => Some(r.errors().clone()),
            _ => None,
        }
    }
}

/// Decides a recovery from what the store kept after the client's offset (in order).
fn recovery(
    position: Position,
    kept: Vec<Entry>,
    since: Option<&Position>,
    uid: &str,
    age: Duration,
    now_ms: u64,
) -> Recovery {
    let failed = |position| Recovery {
        position,
        recovered: false,
        messages: Vec::new(),
    };
    let Some(since) = since else {
        return failed(position);
    };
    if since.epoch != position.epoch || since.offset > position.offset {
        return failed(position);
    }
    let oldest_kept = now_ms.saturating_sub(age.as_millis() as u64);
    let mut next = since.offset + 1;
    let mut messages = Vec::new();
    for e in kept {
        if e.offset < next {
            continue;
        }
        // A hole (trimmed, or expired by age) means something is missing: never a part.
        if e.offset != next || e.at_ms < oldest_kept {
            return failed(position);
        }
        next += 1;
        if e.audience.includes(uid) {
            messages.push(Recovered {
                offset: e.offset,
                route: e.route,
                body: e.body,
            });
        }
    }
    if next != position.offset + 1 {
        return failed(position);
    }
    Recovery {
        position,
        recovered: true,
        messages,
    }
}

/// A new epoch: unique enough across servers and restarts (time in ns, plus a counter).
fn new_epoch() -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default();
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    format!("{:x}", nanos ^ (u64::from(std::process::id()) << 40) ^ seq)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(offset: u64, audience: Audience, at_ms: u64) -> Entry {
        Entry {
            offset,
            route: "onChat".into(),
            body: format!("{{\"n\":{offset}}}").into_bytes(),
            audience,
            at_ms,
        }
    }

    fn pos(epoch: &str, offset: u64) -> Position {
        Position {
            epoch: epoch.into(),
            offset,
        }
    }

    const AGE: Duration = Duration::from_secs(600);

    #[test]
    fn a_recovery_returns_what_the_user_missed_in_order_and_nothing_else() {
        let kept = vec![
            entry(4, Audience::All, 1000),
            entry(5, Audience::Only(vec!["b*r".into()]), 1000),
            entry(6, Audience::Except("a*r".into()), 1000),
            entry(7, Audience::Only(vec!["a*r".into()]), 1000),
        ];
        let r = recovery(pos("e", 7), kept, Some(&pos("e", 3)), "a*r", AGE, 2000);
        assert!(r.recovered);
        let offsets: Vec<u64> = r.messages.iter().map(|m| m.offset).collect();
        assert_eq!(offsets, vec![4, 7]);
        assert_eq!(r.position, pos("e", 7));
    }

    #[test]
    fn nothing_missed_is_a_recovery_with_no_messages() {
        let r = recovery(pos("e", 3), vec![], Some(&pos("e", 3)), "a", AGE, 0);
        assert!(r.recovered);
        assert!(r.messages.is_empty());
    }

    #[test]
    fn another_epoch_a_hole_an_expired_message_or_a_client_ahead_fails_whole() {
        let two = || vec![entry(4, Audience::All, 1000), entry(5, Audience::All, 1000)];
        let cases = [
            recovery(pos("new", 5), two(), Some(&pos("old", 3)), "a", AGE, 2000),
            recovery(pos("e", 5), two(), Some(&pos("e", 2)), "a", AGE, 2000),
            recovery(pos("e", 6), two(), Some(&pos("e", 3)), "a", AGE, 2000),
            recovery(pos("e", 5), two(), Some(&pos("e", 3)), "a", AGE, 1000 + 600_001),
            recovery(pos("e", 5), two(), Some(&pos("e", 9)), "a", AGE, 2000),
            recovery(pos("e", 5), two(), None, "a", AGE, 2000),
        ];
        for r in cases {
            assert!(!r.recovered, "{r:?}");
            assert!(r.messages.is_empty());
        }
    }

    #[test]
    fn audiences_include_whom_they_name() {
        assert!(Audience::All.includes("x"));
        assert!(!Audience::Except("x".into()).includes("x"));
        assert!(Audience::Except("x".into()).includes("y"));
        assert!(Audience::Only(vec!["x".into()]).includes("x"));
        assert!(!Audience::Only(vec!["x".into()]).includes("y"));
    }

    #[test]
    fn epochs_differ() {
        assert_ne!(new_epoch(), new_epoch());
    }
}
