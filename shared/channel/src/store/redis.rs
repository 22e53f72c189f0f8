//! The channel store in Redis, for clusters of servers. A channel's whole membership is one
//! `HGETALL`: a push costs one round trip at most. Compare-and-set steps are Lua scripts, built
//! once.
//!
//! On a single Redis a script also keeps the indexes (`channels`, the frontend's channels,
//! `sids`) in the same step. On a Redis Cluster a script touches one room's keys only (one
//! slot), and the indexes are kept by separate commands around it: a frontend's channels are
//! added *before* its member (the index may name a room too many, which a round forgets, never
//! one too few), and forgotten after its last member left. Both happen in the room's turn on
//! its owner, so they do not race with the room's other changes.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use redis::{AsyncCommands, RedisResult, Script};
use shaddock_redis::Redis;

use super::keys::Keys;
use super::{Added, Epoch, Member, Store};
use crate::ChannelError;

/// Adds a member unless another frontend holds the uid (a held place is anyone's to take
/// back); records the channel, the frontend's channel and the frontend. Answers 1 (new),
/// 2 (replaced), 3 (resumed) or 0 (taken).
/// KEYS: channel hash, channels, sid's channels, sids. ARGV: uid, value, "sid#", name, sid.
/// On a Redis Cluster, KEYS are the room's own only (channel hash, created mark) and the
/// indexes are kept around the script.
static ADD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "local v = redis.call('HGET', KEYS[1], ARGV[1]) \
         local held = v and string.sub(v, 1, 6) == '~held#' \
         if v and not held and string.sub(v, 1, string.len(ARGV[3])) ~= ARGV[3] then return 0 end \
         redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) \
         if #KEYS == 4 then \
           redis.call('SADD', KEYS[2], ARGV[4]) \
           redis.call('SADD', KEYS[3], ARGV[4]) \
           redis.call('SADD', KEYS[4], ARGV[5]) \
         end \
         if held and ARGV[3] ~= '~held#' then return 3 elseif v then return 2 else return 1 end",
    )
});

/// Removes a member only if it is stored exactly as given (compare-and-delete), then forgets
/// what became empty: the channel, the frontend's channel, the frontend.
/// KEYS and ARGV as for [`ADD`].
static LEAVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end \
         redis.call('HDEL', KEYS[1], ARGV[1]) \
         if redis.call('HLEN', KEYS[1]) == 0 then redis.call('SREM', KEYS[2], ARGV[4]) end \
         for _, v in ipairs(redis.call('HVALS', KEYS[1])) do \
           if string.sub(v, 1, string.len(ARGV[3])) == ARGV[3] then return 1 end \
         end \
         redis.call('SREM', KEYS[3], ARGV[4]) \
         if redis.call('SCARD', KEYS[3]) == 0 then redis.call('SREM', KEYS[4], ARGV[5]) end \
         return 1",
    )
});

/// Forgets a frontend's channel, and the frontend when it has no channel left.
/// KEYS: sid's channels, sids. ARGV: name, sid.
static FORGET: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "redis.call('SREM', KEYS[1], ARGV[1]) \
         if redis.call('SCARD', KEYS[1]) == 0 then redis.call('SREM', KEYS[2], ARGV[2]) end \
         return 1",
    )
});

/// [`LEAVE`] on a Redis Cluster: the room's keys only. Answers 0 (not stored so), 1 (removed)
/// or 2 (removed, and the frontend has no member left in the room: forget it there).
/// KEYS and ARGV as for [`ADD`] on a cluster.
static LEAVE_IN_ROOM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end \
         redis.call('HDEL', KEYS[1], ARGV[1]) \
         if redis.call('HLEN', KEYS[1]) == 0 then redis.call('DEL', KEYS[2]) end \
         for _, v in ipairs(redis.call('HVALS', KEYS[1])) do \
           if string.sub(v, 1, string.len(ARGV[3])) == ARGV[3] then return 1 end \
         end \
         return 2",
    )
});

/// Sets the epoch mark unless it is set (SET NX GET, which Redis before 7 lacks).
/// KEYS: the mark. ARGV: a new token. Answers {1, token} when it set it, else {0, the mark}.
static EPOCH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "local v = redis.call('GET', KEYS[1]) \
         if v then return {0, v} end \
         redis.call('SET', KEYS[1], ARGV[1]) \
         return {1, ARGV[1]}",
    )
});

/// How long a chat server trusts that `sids` names a frontend it added there (Redis Cluster):
/// `sids` is one key, so it is not written on every enter.
const SIDS_MEMO: Duration = Duration::from_secs(30);

/// Membership in Redis under one namespace.
#[derive(Clone)]
pub struct RedisStore {
    conn: Redis,
    keys: Arc<Keys>,
    /// Redis errors (exported as `shaddock_store_errors_total`).
    errors: Counter,
    /// Redis Cluster: when this server last added each frontend to `sids`.
    sids_added: Arc<Mutex<HashMap<String, Instant>>>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore").field("keys", &self.keys).finish()
    }
}

impl RedisStore {
    /// Connects to Redis, a single one or a cluster (see `shaddock_redis`); the connection
    /// reconnects by itself and commands time out.
    pub async fn connect(url: &str, cluster: bool, namespace: &str) -> Result<Self, ChannelError> {
        Ok(Self::with(Redis::connect(url, cluster).await?, namespace))
    }

    /// A store on an existing connection.
    pub fn with(conn: Redis, namespace: &str) -> Self {
        Self {
            conn,
            keys: Arc::new(Keys::new(namespace)),
            errors: Counter::default(),
            sids_added: Arc::default(),
        }
    }

    /// The error counter, to register in a metrics registry.
    pub fn errors(&self) -> &Counter {
        &self.errors
    }

    fn conn(&self) -> Redis {
        self.conn.clone()
    }

    fn cluster(&self) -> bool {
        self.conn.is_cluster()
    }

    /// Redis Cluster: indexes `name` under `member`'s frontend before the member is stored.
    async fn index(&self, name: &str, member: &Member) -> RedisResult<()> {
        let _: i64 = self.conn().sadd(self.keys.sid(&member.sid), name).await?;
        let fresh = self
            .sids_added
            .lock()
            .get(&member.sid)
            .is_some_and(|at| at.elapsed() < SIDS_MEMO);
        if !fresh {
            let _: i64 = self.conn().sadd(self.keys.sids(), &member.sid).await?;
            self.sids_added.lock().insert(member.sid.clone(), Instant::now());
        }
        Ok(())
    }

    /// A script over one member of one channel, with [`ADD`]'s keys and arguments; on a Redis
    /// Cluster with the room's keys only.
    fn member_script<'s>(
        &self,
        script: &'s Script,
        name: &str,
        member: &Member,
    ) -> redis::ScriptInvocation<'s> {
        let mut invocation = script.prepare_invoke();
        invocation.key(self.keys.channel(name));
        if self.cluster() {
            invocation.key(self.keys.created(name));
        } else {
            invocation
                .key(self.keys.channels())
                .key(self.keys.sid(&member.sid))
                .key(self.keys.sids());
        }
        invocation
            .arg(&member.uid)
            .arg(member.stored())
            .arg(member.sid_prefix())
            .arg(name)
            .arg(&member.sid);
        invocation
    }

    /// Sets `key` to `token` unless it is set; answers what it holds.
    async fn claim_mark(&self, key: String, token: &str) -> Result<Epoch, ChannelError> {
        let answer: RedisResult<(i64, String)> =
            EPOCH.key(key).arg(token).invoke_async(&mut self.conn()).await;
        let (claimed, mark) = self.check(answer)?;
        Ok(Epoch {
            claimed: claimed == 1,
            mark,
        })
    }

    /// Counts a failed command.
    fn check<T>(&self, result: RedisResult<T>) -> Result<T, ChannelError> {
        result.map_err(|e| {
            self.errors.inc();
            ChannelError::Store(e)
        })
    }
}

impl Store for RedisStore {
    async fn create(&self, name: &str) -> Result<(), ChannelError> {
        let added: RedisResult<i64> = if self.cluster() {
            self.conn().set(self.keys.created(name), 1).await.map(|()| 1)
        } else {
            self.conn().sadd(self.keys.channels(), name).await
        };
        self.check(added).map(drop)
    }

    async fn exists(&self, name: &str) -> Result<bool, ChannelError> {
        let found: RedisResult<bool> = if self.cluster() {
            let keys = [self.keys.channel(name), self.keys.created(name)];
            self.conn().exists::<_, i64>(&keys).await.map(|n| n > 0)
        } else {
            self.conn().sismember(self.keys.channels(), name).await
        };
        self.check(found)
    }

    /// A uid held through another frontend is refused (a duplicate login across the
    /// cluster); one left by the same frontend is replaced: that frontend has no live session
    /// for it any more, else it would not have asked.
    async fn add(&self, name: &str, member: &Member) -> Result<Added, ChannelError> {
        if self.cluster() {
            let indexed = self.index(name, member).await;
            self.check(indexed)?;
        }
        let outcome: RedisResult<i64> = self
            .member_script(&ADD, name, member)
            .invoke_async(&mut self.conn())
            .await;
        Ok(match self.check(outcome)? {
            1 => Added::New,
            2 => Added::Replaced,
            3 => Added::Resumed,
            _ => Added::Taken,
        })
    }

    async fn leave(&self, name: &str, member: &Member) -> Result<bool, ChannelError> {
        let script = if self.cluster() { &LEAVE_IN_ROOM } else { &LEAVE };
        let removed: RedisResult<i64> = self
            .member_script(script, name, member)
            .invoke_async(&mut self.conn())
            .await;
        let removed = self.check(removed)?;
        if removed == 2 && self.cluster() {
            self.forget_sid_channel(&member.sid, name).await?;
        }
        Ok(removed > 0)
    }

    async fn members(&self, name: &str) -> Result<Vec<Member>, ChannelError> {
        let map: RedisResult<HashMap<String, String>> = self.conn().hgetall(self.keys.channel(name)).await;
        Ok(self
            .check(map)?
            .into_iter()
            .map(|(uid, v)| Member::from_stored(uid, &v))
            .collect())
    }

    async fn member(&self, name: &str, uid: &str) -> Result<Option<Member>, ChannelError> {
        let value: RedisResult<Option<String>> = self.conn().hget(self.keys.channel(name), uid).await;
        Ok(self
            .check(value)?
            .map(|v| Member::from_stored(uid.to_owned(), &v)))
    }

    async fn destroy(&self, name: &str) -> Result<(), ChannelError> {
        if self.cluster() {
            let keys = [self.keys.channel(name), self.keys.created(name)];
            let done: RedisResult<i64> = self.conn().del(&keys).await;
            return self.check(done).map(drop);
        }
        let done: RedisResult<()> = redis::pipe()
            .atomic()
            .srem(self.keys.channels(), name)
            .ignore()
            .del(self.keys.channel(name))
            .ignore()
            .query_async(&mut self.conn())
            .await;
        self.check(done)
    }

    async fn channels(&self) -> Result<Vec<String>, ChannelError> {
        if !self.cluster() {
            let names = self.conn().smembers(self.keys.channels()).await;
            return self.check(names);
        }
        let mut names = Vec::new();
        for pattern in self.keys.channel_patterns() {
            let keys = self.conn.scan(&pattern).await;
            for key in self.check(keys)? {
                if let Some(name) = self.keys.channel_of_key(&key) {
                    names.push(name.to_owned());
                }
            }
        }
        names.sort_unstable();
        names.dedup();
        Ok(names)
    }

    async fn channels_of_sid(&self, sid: &str) -> Result<Vec<String>, ChannelError> {
        let names = self.conn().smembers(self.keys.sid(sid)).await;
        self.check(names)
    }

    async fn forget_sid_channel(&self, sid: &str, name: &str) -> Result<(), ChannelError> {
        if self.cluster() {
            // Two keys in two slots: two steps. A frontend that gains a room in between stays
            // out of `sids` until its memo lapses; `sids` only serves the sweep of frontends
            // that died unseen, and the registry's departures catch the rest.
            let key = self.keys.sid(sid);
            let left: RedisResult<(i64, i64)> = redis::pipe()
                .srem(&key, name)
                .scard(&key)
                .query_async(&mut self.conn())
                .await;
            if self.check(left)?.1 == 0 {
                let gone: RedisResult<i64> = self.conn().srem(self.keys.sids(), sid).await;
                self.check(gone)?;
                self.sids_added.lock().remove(sid);
            }
            return Ok(());
        }
        let forgot: RedisResult<i64> = FORGET
            .key(self.keys.sid(sid))
            .key(self.keys.sids())
            .arg(name)
            .arg(sid)
            .invoke_async(&mut self.conn())
            .await;
        self.check(forgot).map(drop)
    }

    async fn sids(&self) -> Result<Vec<String>, ChannelError> {
        let sids = self.conn().smembers(self.keys.sids()).await;
        self.check(sids)
    }

    async fn claim_epoch(&self, token: &str) -> Result<Epoch, ChannelError> {
        if !self.cluster() {
            return self.claim_mark(self.keys.epoch(), token).await;
        }
        // One mark per master: any master can lose its data alone. The marks together are the
        // cluster's.
        let ranges = self.conn.masters().await;
        let mut all = Epoch {
            claimed: false,
            mark: String::new(),
        };
        let mut ranges = self.check(ranges)?;
        ranges.sort_unstable();
        for (first, last) in ranges {
            let Some(tag) = shaddock_redis::tag_in(first, last) else {
                continue;
            };
            let one = self.claim_mark(self.keys.epoch_tagged(&tag), token).await?;
            all.claimed |= one.claimed;
            if !all.mark.is_empty() {
                all.mark.push(',');
            }
            all.mark.push_str(&one.mark);
        }
        Ok(all)
    }

    async fn ping(&self) -> bool {
        let pong: RedisResult<String> = redis::cmd("PING").query_async(&mut self.conn()).await;
        pong.is_ok()
    }

    async fn keep_purged(
        &self,
        name: &str,
        sid: &str,
        note: &[u8],
        ttl: Duration,
    ) -> Result<(), ChannelError> {
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let set: RedisResult<()> = self.conn().pset_ex(self.keys.purged(name, sid), note, ms).await;
        self.check(set)
    }

    async fn purged(&self, name: &str, sid: &str) -> Result<Option<Vec<u8>>, ChannelError> {
        let got: RedisResult<Option<Vec<u8>>> = self.conn().get(self.keys.purged(name, sid)).await;
        self.check(got)
    }

    async fn forget_purged(&self, name: &str, sid: &str) -> Result<(), ChannelError> {
        let gone: RedisResult<i64> = self.conn().del(self.keys.purged(name, sid)).await;
        self.check(gone).map(drop)
    }
}
