//! The channel store in Redis, for clusters. A channel's whole membership is one `HGETALL`: a
//! push costs one round trip at most. Compare-and-set steps are Lua scripts, built once.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use redis::aio::ConnectionManager;
use redis::{AsyncCommands, RedisResult, Script};

use super::keys::Keys;
use super::{Added, Member, Store};
use crate::ChannelError;

/// Adds a member unless another frontend holds the uid (a held place is anyone's to take
/// back); records the channel, the frontend's channel and the frontend. Answers 1 (new),
/// 2 (replaced), 3 (resumed) or 0 (taken).
/// KEYS: channel hash, channels, sid's channels, sids. ARGV: uid, value, "sid#", name, sid.
static ADD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "local v = redis.call('HGET', KEYS[1], ARGV[1]) \
         local held = v and string.sub(v, 1, 6) == '~held#' \
         if v and not held and string.sub(v, 1, string.len(ARGV[3])) ~= ARGV[3] then return 0 end \
         redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) \
         redis.call('SADD', KEYS[2], ARGV[4]) \
         redis.call('SADD', KEYS[3], ARGV[4]) \
         redis.call('SADD', KEYS[4], ARGV[5]) \
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

/// Membership in Redis under one namespace.
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    keys: Arc<Keys>,
    /// Redis errors (exported as `shaddock_store_errors_total`).
    errors: Counter,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore").field("keys", &self.keys).finish()
    }
}

impl RedisStore {
    /// Connects to Redis; the connection reconnects by itself and commands time out.
    pub async fn connect(url: &str, namespace: &str) -> Result<Self, ChannelError> {
        let client = redis::Client::open(url)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let conn = client.get_connection_manager_with_config(config).await?;
        Ok(Self {
            conn,
            keys: Arc::new(Keys::new(namespace)),
            errors: Counter::default(),
        })
    }

    /// The error counter, to register in a metrics registry.
    pub fn errors(&self) -> &Counter {
        &self.errors
    }

    fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// A script over one member of one channel, with [`ADD`]'s keys and arguments.
    fn member_script<'s>(
        &self,
        script: &'s Script,
        name: &str,
        member: &Member,
    ) -> redis::ScriptInvocation<'s> {
        let mut invocation = script.prepare_invoke();
        invocation
            .key(self.keys.channel(name))
            .key(self.keys.channels())
            .key(self.keys.sid(&member.sid))
            .key(self.keys.sids())
            .arg(&member.uid)
            .arg(member.stored())
            .arg(member.sid_prefix())
            .arg(name)
            .arg(&member.sid);
        invocation
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
        let added: RedisResult<i64> = self.conn().sadd(self.keys.channels(), name).await;
        self.check(added).map(drop)
    }

    async fn exists(&self, name: &str) -> Result<bool, ChannelError> {
        let found = self.conn().sismember(self.keys.channels(), name).await;
        self.check(found)
    }

    /// A uid held through another frontend is refused (a duplicate login across the
    /// cluster); one left by the same frontend is replaced: that frontend has no live session
    /// for it any more, else it would not have asked.
    async fn add(&self, name: &str, member: &Member) -> Result<Added, ChannelError> {
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
        let removed: RedisResult<i64> = self
            .member_script(&LEAVE, name, member)
            .invoke_async(&mut self.conn())
            .await;
        Ok(self.check(removed)? > 0)
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
        let names = self.conn().smembers(self.keys.channels()).await;
        self.check(names)
    }

    async fn channels_of_sid(&self, sid: &str) -> Result<Vec<String>, ChannelError> {
        let names = self.conn().smembers(self.keys.sid(sid)).await;
        self.check(names)
    }

    async fn forget_sid_channel(&self, sid: &str, name: &str) -> Result<(), ChannelError> {
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

    async fn claim_epoch(&self) -> Result<bool, ChannelError> {
        let set: RedisResult<Option<String>> = redis::cmd("SET")
            .arg(self.keys.epoch())
            .arg("1")
            .arg("NX")
            .query_async(&mut self.conn())
            .await;
        Ok(self.check(set)?.is_some())
    }

    async fn ping(&self) -> bool {
        let pong: RedisResult<String> = redis::cmd("PING").query_async(&mut self.conn()).await;
        pong.is_ok()
    }
}
