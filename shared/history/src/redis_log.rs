//! History in Redis: per room, a stream of entries whose ids are the offsets, a hash with
//! the epoch and the top offset, both written by one script, and a set of the offsets that
//! were withdrawn (kept in the stream, never given back).

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use redis::{RedisResult, Script};
use shaddock_redis::{Redis, room_tag};

use crate::{Audience, Entry, HistoryError, NewEntry, Position, Retention, new_epoch, now_ms};

/// Makes sure the room has an epoch: a missing hash means the history was lost (or never
/// was), so the stream and its withdrawn offsets are dropped and a new epoch starts at
/// offset 0. KEYS: meta, stream, withdrawn.
const ENSURE_META: &str = "local e = redis.call('HGET', KEYS[1], 'epoch') \
     if not e then \
       e = ARGV[1] \
       redis.call('DEL', KEYS[2], KEYS[3]) \
       redis.call('HSET', KEYS[1], 'epoch', e, 'top', 0) \
     end ";

/// Hands out the next offsets, one per entry in order, and keeps the entries (when size > 0),
/// each marked with the append's token (so that an append whose answer was lost can be found).
/// KEYS: meta, stream, withdrawn. ARGV: epoch if new, size, age ms, meta ttl ms, token, then
/// the entries without their offsets. Answers {epoch, first offset, the room's recorded writer
/// or ''}.
static APPEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{ENSURE_META} \
         local n = #ARGV - 5 \
         local top = redis.call('HINCRBY', KEYS[1], 'top', n) \
         local first = top - n + 1 \
         if tonumber(ARGV[2]) > 0 then \
           for i = 1, n do \
             redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[2], string.format('%d-0', first + i - 1), \
               'm', ARGV[5 + i], 't', ARGV[5]) \
           end \
           redis.call('PEXPIRE', KEYS[2], ARGV[3]) \
         end \
         redis.call('PEXPIRE', KEYS[1], ARGV[4]) \
         return {{e, tostring(first), redis.call('HGET', KEYS[1], 'w') or ''}}"
    ))
});

/// The position, the withdrawn offsets and the entries from offset ARGV[2] on ('' for none),
/// as {epoch, top, n, withdrawn1..withdrawn_n, offset1, entry1, offset2, entry2, ...}.
/// KEYS: meta, stream, withdrawn. ARGV: epoch if new, first offset wanted, meta ttl ms.
static READ: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{ENSURE_META} \
         redis.call('PEXPIRE', KEYS[1], ARGV[3]) \
         local out = {{e, redis.call('HGET', KEYS[1], 'top')}} \
         local gone = {{}} \
         if ARGV[2] ~= '' then gone = redis.call('SMEMBERS', KEYS[3]) end \
         table.insert(out, tostring(#gone)) \
         for _, g in ipairs(gone) do table.insert(out, g) end \
         if ARGV[2] ~= '' then \
           for _, x in ipairs(redis.call('XRANGE', KEYS[2], ARGV[2] .. '-0', '+')) do \
             table.insert(out, x[1]) \
             table.insert(out, x[2][2]) \
           end \
         end \
         return out"
    ))
});

/// How long a failed append's withdrawal is retried while Redis cannot be reached.
const WITHDRAW_PATIENCE: Duration = Duration::from_secs(10);

/// Withdraws offsets of the epoch ARGV[1] (nothing if the room is in another epoch by now),
/// but for those a new writer sealed; answers how many were sealed.
/// KEYS: meta, withdrawn. ARGV: epoch, ttl ms, then the offsets.
static WITHDRAW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "if redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[1] then return 0 end \
         local sealed = tonumber(redis.call('HGET', KEYS[1], 'sealed') or '0') \
         local kept = 0 \
         for i = 3, #ARGV do \
           if tonumber(ARGV[i]) <= sealed then kept = kept + 1 \
           else redis.call('SADD', KEYS[2], ARGV[i]) end \
         end \
         redis.call('PEXPIRE', KEYS[2], ARGV[2]) \
         return kept",
    )
});

/// Withdraws the entries an append marked with token ARGV[1], among the last ARGV[3] kept
/// (an append whose answer was lost: it may or may not have happened), but for those a new
/// writer sealed. Answers how many were withdrawn.
/// KEYS: stream, withdrawn, meta. ARGV: token, ttl ms, entries to look through.
static WITHDRAW_APPEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "local sealed = tonumber(redis.call('HGET', KEYS[3], 'sealed') or '0') \
         local found = 0 \
         for _, x in ipairs(redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', ARGV[3])) do \
           local offset = string.match(x[1], '^(%d+)') \
           if x[2][4] == ARGV[1] and tonumber(offset) > sealed then \
             redis.call('SADD', KEYS[2], offset) \
             found = found + 1 \
           end \
         end \
         if found > 0 then redis.call('PEXPIRE', KEYS[2], ARGV[2]) end \
         return found",
    )
});

/// Records ARGV[2] as the room's writer and answers the one before it (nil when none was
/// recorded). When the writer changes, what the room holds so far is sealed: no withdrawal
/// takes it back (see [`RedisHistory::take_over`]). KEYS: meta, stream, withdrawn. ARGV: epoch
/// if new, writer, meta ttl ms.
static TAKE_OVER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{ENSURE_META} \
         local prev = redis.call('HGET', KEYS[1], 'w') \
         if prev ~= ARGV[2] then \
           redis.call('HSET', KEYS[1], 'w', ARGV[2], 'sealed', redis.call('HGET', KEYS[1], 'top')) \
         end \
         redis.call('PEXPIRE', KEYS[1], ARGV[3]) \
         return prev"
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

    fn withdrawn_key(&self, room: &str) -> String {
        format!("{}:history-withdrawn:{}", self.namespace, room_tag(room))
    }

    fn check<T>(&self, result: RedisResult<T>) -> Result<T, HistoryError> {
        result.map_err(|e| {
            self.errors.inc();
            HistoryError::Redis(e)
        })
    }

    /// Appends `entries` in order with one script call (one round trip for a batch), and
    /// answers the room's recorded writer too (see [`RedisHistory::take_over`]).
    /// With `withdraw_if_unanswered`, an append that fails is withdrawn in case it happened.
    pub(crate) async fn append(
        &self,
        room: &str,
        entries: &[NewEntry<'_>],
        withdraw_if_unanswered: bool,
    ) -> Result<(Vec<Position>, Option<u64>), HistoryError> {
        if entries.is_empty() {
            return Ok((Vec::new(), None));
        }
        let r = self.retention;
        let at_ms = now_ms();
        // One unique string per append: its token, and the epoch if the room has none yet.
        let token = new_epoch();
        let mut call = APPEND.key(self.meta_key(room));
        call.key(self.stream_key(room))
            .key(self.withdrawn_key(room))
            .arg(&token)
            .arg(r.size)
            .arg(r.age.as_millis() as u64)
            .arg(r.meta_ttl.as_millis() as u64)
            .arg(&token);
        for e in entries {
            call.arg(rmp_serde::to_vec(&StoredRef {
                route: e.route,
                body: e.body,
                audience: e.audience,
                at_ms,
            })?);
        }
        let answer: RedisResult<(String, String, String)> = call.invoke_async(&mut self.conn.clone()).await;
        if answer.is_err() && withdraw_if_unanswered {
            // The append may have happened all the same (its answer timed out, the connection
            // dropped after the script ran): its caller will not push it, so recovery must not
            // give it back either. Sent after it, without holding up the room's next job (the
            // token is found wherever later appends put it); retried while Redis is away.
            let (this, room) = (self.clone(), room.to_owned());
            tokio::spawn(async move { this.withdraw_append(&room, &token).await });
        }
        let (epoch, first, writer) = self.check(answer)?;
        let first: u64 = first
            .parse()
            .map_err(|_| HistoryError::Unexpected(format!("offset {first}")))?;
        let positions = (first..first + entries.len() as u64)
            .map(|offset| Position {
                epoch: epoch.clone(),
                offset,
            })
            .collect();
        Ok((positions, writer.parse().ok()))
    }

    /// Withdraws what the append marked `token` kept, if it happened. Retried while Redis
    /// cannot be reached (for a while): an append whose answer was lost with its connection
    /// (Redis restarting with its AOF just after running it) is otherwise left in the history,
    /// pushed to nobody, for a recovering client to be given.
    async fn withdraw_append(&self, room: &str, token: &str) {
        let until = tokio::time::Instant::now() + WITHDRAW_PATIENCE;
        let mut wait = Duration::from_millis(50);
        loop {
            let answer: RedisResult<u64> = WITHDRAW_APPEND
                .key(self.stream_key(room))
                .key(self.withdrawn_key(room))
                .key(self.meta_key(room))
                .arg(token)
                .arg(self.retention.meta_ttl.as_millis() as u64)
                .arg(self.retention.size.max(1))
                .invoke_async(&mut self.conn.clone())
                .await;
            match answer {
                Ok(0) => return,
                Ok(n) => {
                    tracing::warn!(%room, withdrawn = n, "a failed history append had happened: withdrawn");
                    return;
                }
                Err(e) if tokio::time::Instant::now() >= until => {
                    tracing::warn!(%room, error = %e, "cannot withdraw a failed history append");
                    return;
                }
                Err(_) => {
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    /// Records `writer` as the room's writer; answers the one before, if another.
    pub(crate) async fn take_over(&self, room: &str, writer: u64) -> Result<Option<u64>, HistoryError> {
        let answer: RedisResult<Option<String>> = TAKE_OVER
            .key(self.meta_key(room))
            .key(self.stream_key(room))
            .key(self.withdrawn_key(room))
            .arg(new_epoch())
            .arg(writer.to_string())
            .arg(self.retention.meta_ttl.as_millis() as u64)
            .invoke_async(&mut self.conn.clone())
            .await;
        let before = self.check(answer)?;
        Ok(before.and_then(|w| w.parse().ok()).filter(|w| *w != writer))
    }

    /// Withdraws `offsets` of `epoch` in `room`; answers how many were sealed (kept).
    pub(crate) async fn withdraw(
        &self,
        room: &str,
        epoch: &str,
        offsets: &[u64],
    ) -> Result<u64, HistoryError> {
        let mut call = WITHDRAW.key(self.meta_key(room));
        call.key(self.withdrawn_key(room))
            .arg(epoch)
            .arg(self.retention.meta_ttl.as_millis() as u64);
        for o in offsets {
            call.arg(*o);
        }
        let answer: RedisResult<u64> = call.invoke_async(&mut self.conn.clone()).await;
        self.check(answer)
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
            .key(self.withdrawn_key(room))
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
        let gone = it
            .next()
            .as_deref()
            .and_then(parse_u64)
            .ok_or_else(|| bad("withdrawn"))?;
        let mut withdrawn = std::collections::HashSet::new();
        for _ in 0..gone {
            let o = it
                .next()
                .as_deref()
                .and_then(parse_u64)
                .ok_or_else(|| bad("withdrawn"))?;
            withdrawn.insert(o);
        }
        let mut kept = Vec::new();
        while let (Some(id), Some(bytes)) = (it.next(), it.next()) {
            // A stream id is `<offset>-0`.
            let offset = id
                .split(|b| *b == b'-')
                .next()
                .and_then(parse_u64)
                .ok_or_else(|| bad("stream id"))?;
            let s: Stored = rmp_serde::from_slice(&bytes)?;
            // A withdrawn entry stays, so that the history is whole, but is for nobody.
            let audience = if withdrawn.contains(&offset) {
                Audience::Only(Vec::new())
            } else {
                s.audience
            };
            kept.push(Entry {
                offset,
                route: s.route,
                body: s.body,
                audience,
                at_ms: s.at_ms,
            });
        }
        Ok((Position { epoch, offset }, kept))
    }
}

fn parse_u64(bytes: &[u8]) -> Option<u64> {
    std::str::from_utf8(bytes).ok()?.parse().ok()
}
