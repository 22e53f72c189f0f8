//! History in Redis: per room, a stream of entries whose ids are the offsets and a hash with
//! the epoch and the top offset, both written by one script.

use std::sync::{Arc, LazyLock};

use prometheus_client::metrics::counter::Counter;
use redis::{RedisResult, Script};
use shaddock_redis::{Redis, room_tag};

use crate::{Audience, Entry, HistoryError, NewEntry, Position, Retention, new_epoch, now_ms};

/// Makes sure the room has an epoch: a missing hash means the history was lost (or never
/// was), so the stream is dropped and a new epoch starts at offset 0.
const ENSURE_META: &str = "local e = redis.call('HGET', KEYS[1], 'epoch') \
     if not e then \
       e = ARGV[1] \
       redis.call('DEL', KEYS[2]) \
       redis.call('HSET', KEYS[1], 'epoch', e, 'top', 0) \
     end ";

/// Hands out the next offsets, one per entry in order, and keeps the entries (when size > 0).
/// KEYS: meta, stream. ARGV: epoch if new, size, age ms, meta ttl ms, then the entries without
/// their offsets. Answers {epoch, first offset}.
static APPEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{ENSURE_META} \
         local n = #ARGV - 4 \
         local top = redis.call('HINCRBY', KEYS[1], 'top', n) \
         local first = top - n + 1 \
         if tonumber(ARGV[2]) > 0 then \
           for i = 1, n do \
             redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[2], string.format('%d-0', first + i - 1), 'm', ARGV[4 + i]) \
           end \
           redis.call('PEXPIRE', KEYS[2], ARGV[3]) \
         end \
         redis.call('PEXPIRE', KEYS[1], ARGV[4]) \
         return {{e, tostring(first)}}"
    ))
});

/// The position, and the entries from offset ARGV[2] on ('' for none), as
/// {epoch, top, offset1, entry1, offset2, entry2, ...}.
/// KEYS: meta, stream. ARGV: epoch if new, first offset wanted, meta ttl ms.
static READ: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{ENSURE_META} \
         redis.call('PEXPIRE', KEYS[1], ARGV[3]) \
         local out = {{e, redis.call('HGET', KEYS[1], 'top')}} \
         if ARGV[2] ~= '' then \
           for _, x in ipairs(redis.call('XRANGE', KEYS[2], ARGV[2] .. '-0', '+')) do \
             table.insert(out, x[1]) \
             table.insert(out, x[2][2]) \
           end \
         end \
         return out"
    ))
});

/// An entry as stored: its offset is the stream id.
#[derive(serde::Serialize, serde::Deserialize)]
struct Stored {
    route: String,
    #[serde(with = "serde_bytes")]
    body: Vec<u8>,
    audience: Audience,
    at_ms: u64,
}

/// [`Stored`] from borrowed parts: the same bytes, without copying the body to encode it.
#[derive(serde::Serialize)]
struct StoredRef<'a> {
    route: &'a str,
    #[serde(with = "serde_bytes")]
    body: &'a [u8],
    audience: &'a Audience,
    at_ms: u64,
}

/// Rooms' histories in one Redis, under a namespace.
#[derive(Clone)]
pub struct RedisHistory {
    conn: Redis,
    namespace: Arc<str>,
    retention: Retention,
    errors: Counter,
}

impl std::fmt::Debug for RedisHistory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisHistory")
            .field("namespace", &self.namespace)
            .field("retention", &self.retention)
            .finish()
    }
}

impl RedisHistory {
    /// Connects to a single Redis or a cluster (see `shaddock_redis`); the connection
    /// reconnects by itself and commands time out.
    pub async fn connect(
        url: &str,
        cluster: bool,
        namespace: &str,
        retention: Retention,
    ) -> Result<Self, HistoryError> {
        let conn = Redis::connect(url, cluster).await?;
        Ok(Self {
            conn,
            namespace: Arc::from(namespace),
            retention,
            errors: Counter::default(),
        })
    }

    pub fn retention(&self) -> Retention {
        self.retention
    }

    pub fn errors(&self) -> &Counter {
        &self.errors
    }

    /// The stream of `room` (the room is the hash tag: see the crate doc).
    pub fn stream_key(&self, room: &str) -> String {
        format!("{}:history:{}", self.namespace, room_tag(room))
    }

    pub fn meta_key(&self, room: &str) -> String {
        format!("{}:history-meta:{}", self.namespace, room_tag(room))
    }

    fn check<T>(&self, result: RedisResult<T>) -> Result<T, HistoryError> {
        result.map_err(|e| {
            self.errors.inc();
            HistoryError::Redis(e)
        })
    }

    /// Appends `entries` in order with one script call (one round trip for a batch).
    pub(crate) async fn append(
        &self,
        room: &str,
        entries: &[NewEntry<'_>],
    ) -> Result<Vec<Position>, HistoryError> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let r = self.retention;
        let at_ms = now_ms();
        let mut call = APPEND.key(self.meta_key(room));
        call.key(self.stream_key(room))
            .arg(new_epoch())
            .arg(r.size)
            .arg(r.age.as_millis() as u64)
            .arg(r.meta_ttl.as_millis() as u64);
        for e in entries {
            call.arg(rmp_serde::to_vec(&StoredRef {
                route: e.route,
                body: e.body,
                audience: e.audience,
                at_ms,
            })?);
        }
        let answer: RedisResult<(String, String)> = call.invoke_async(&mut self.conn.clone()).await;
        let (epoch, first) = self.check(answer)?;
        let first: u64 = first
            .parse()
            .map_err(|_| HistoryError::Unexpected(format!("offset {first}")))?;
        Ok((first..first + entries.len() as u64)
            .map(|offset| Position {
                epoch: epoch.clone(),
                offset,
            })
            .collect())
    }

    pub(crate) async fn read(
        &self,
        room: &str,
        after: Option<u64>,
    ) -> Result<(Position, Vec<Entry>), HistoryError> {
        let from = after.map(|a| (a + 1).to_string()).unwrap_or_default();
        let answer: RedisResult<Vec<Vec<u8>>> = READ
            .key(self.meta_key(room))
            .key(self.stream_key(room))
            .arg(new_epoch())
            .arg(from)
            .arg(self.retention.meta_ttl.as_millis() as u64)
            .invoke_async(&mut self.conn.clone())
            .await;
        let parts = self.check(answer)?;
        let bad = |what: &str| HistoryError::Unexpected(what.to_owned());
        let mut it = parts.into_iter();
        let epoch = String::from_utf8(it.next().ok_or_else(|| bad("no epoch"))?).map_err(|_| bad("epoch"))?;
        let top = it.next().ok_or_else(|| bad("no top"))?;
        let offset = parse_u64(&top).ok_or_else(|| bad("top"))?;
        let mut kept = Vec::new();
        while let (Some(id), Some(bytes)) = (it.next(), it.next()) {
            // A stream id is `<offset>-0`.
            let offset = id
                .split(|b| *b == b'-')
                .next()
                .and_then(parse_u64)
                .ok_or_else(|| bad("stream id"))?;
            let s: Stored = rmp_serde::from_slice(&bytes)?;
            kept.push(Entry {
                offset,
                route: s.route,
                body: s.body,
                audience: s.audience,
                at_ms: s.at_ms,
            });
        }
        Ok((Position { epoch, offset }, kept))
    }
}

fn parse_u64(bytes: &[u8]) -> Option<u64> {
    std::str::from_utf8(bytes).ok()?.parse().ok()
}
