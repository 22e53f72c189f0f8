//! The channel store. Keys, all under the namespace:
//! - `<ns>:channels`: the set of channel names;
//! - `<ns>:channel:<name>`: a hash `uid -> "<sid>#<incarnation>"` (Pomelo keeps `sid:uid`
//!   strings, which break on a `:` in a uid; a hash does not). The incarnation of the frontend
//!   that added a member tells a member of a restarted frontend (a ghost) from a live one;
//! - `<ns>:sid:<sid>`: the channels a frontend has members in, to purge a dead frontend.
//!
//! A channel's whole membership is one `HGETALL`: a push costs one round trip at most.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use redis::AsyncCommands;
use redis::aio::ConnectionManager;

use crate::ChannelError;

/// One member of a channel: a uid and the frontend (sid) that holds its session.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Member {
    pub uid: String,
    pub sid: String,
    /// The incarnation of the frontend when the member joined (0 when unknown).
    pub incarnation: u64,
    /// The session (socket) on that frontend: a leave from an older session of the same uid
    /// must not remove a newer one.
    pub session: u64,
}

impl Member {
    pub fn new(uid: impl Into<String>, sid: impl Into<String>) -> Self {
        Self {
            uid: uid.into(),
            sid: sid.into(),
            incarnation: 0,
            session: 0,
        }
    }

    fn from_stored(uid: String, value: &str) -> Self {
        let mut parts = value.split('#');
        let sid = parts.next().unwrap_or_default().to_owned();
        let incarnation = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        let session = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        Self {
            uid,
            sid,
            incarnation,
            session,
        }
    }

    /// How a member is stored: `<sid>#<incarnation>#<session>` (server ids never contain `#`).
    fn stored(&self) -> String {
        format!("{}#{}#{}", self.sid, self.incarnation, self.session)
    }
}

/// What `add` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    /// The uid was not in the channel.
    New,
    /// The uid was there through the same frontend, from a session that is gone (the frontend
    /// checked it holds no live one) or an earlier incarnation: replaced.
    Replaced,
    /// Another frontend holds the uid: refused.
    Taken,
}

/// Where channel membership lives.
#[derive(Clone)]
pub enum ChannelStore {
    Redis { conn: ConnectionManager, ns: Arc<str> },
    Memory(Arc<Mutex<MemoryStore>>),
}

impl std::fmt::Debug for ChannelStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Redis { ns, .. } => write!(f, "ChannelStore::Redis({ns})"),
            Self::Memory(_) => write!(f, "ChannelStore::Memory"),
        }
    }
}

/// The in-memory store of the single-process build.
#[derive(Debug, Default)]
pub struct MemoryStore {
    epoch: bool,
    channels: HashMap<String, HashMap<String, String>>,
    by_sid: HashMap<String, HashSet<String>>,
}

impl ChannelStore {
    /// Connects to Redis; the connection reconnects by itself and commands time out.
    pub async fn redis(url: &str, namespace: &str) -> Result<Self, ChannelError> {
        let client = redis::Client::open(url)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let conn = client.get_connection_manager_with_config(config).await?;
        Ok(Self::Redis {
            conn,
            ns: Arc::from(namespace),
        })
    }

    pub fn memory() -> Self {
        Self::Memory(Arc::default())
    }

    fn keys(ns: &str, name: &str) -> (String, String) {
        (format!("{ns}:channels"), format!("{ns}:channel:{name}"))
    }

    /// Records a channel name (Pomelo's `getChannel(name, true)`).
    pub async fn create(&self, name: &str) -> Result<(), ChannelError> {
        match self {
            Self::Redis { conn, ns } => {
                let (set, _) = Self::keys(ns, name);
                let _: i64 = conn.clone().sadd(set, name).await?;
            }
            Self::Memory(m) => {
                m.lock().channels.entry(name.to_owned()).or_default();
            }
        }
        Ok(())
    }

    pub async fn exists(&self, name: &str) -> Result<bool, ChannelError> {
        match self {
            Self::Redis { conn, ns } => {
                let (set, _) = Self::keys(ns, name);
                Ok(conn.clone().sismember(set, name).await?)
            }
            Self::Memory(m) => Ok(m.lock().channels.contains_key(name)),
        }
    }

    /// Adds `member`. A uid held through another frontend is refused (a duplicate login
    /// across the cluster); one left by the same frontend is replaced: that frontend has no
    /// live session for it any more, else it would not have asked.
    pub async fn add(&self, name: &str, member: &Member) -> Result<Added, ChannelError> {
        let value = member.stored();
        let prefix = format!("{}#", member.sid);
        match self {
            Self::Redis { conn, ns } => {
                let (set, hash) = Self::keys(ns, name);
                let script = redis::Script::new(
                    "local v = redis.call('HGET', KEYS[1], ARGV[1]) \
                     if v and string.sub(v, 1, string.len(ARGV[3])) ~= ARGV[3] then return 0 end \
                     redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) \
                     redis.call('SADD', KEYS[2], ARGV[4]) \
                     redis.call('SADD', KEYS[3], ARGV[4]) \
                     if v then return 2 else return 1 end",
                );
                let outcome: i64 = script
                    .key(&hash)
                    .key(set)
                    .key(format!("{ns}:sid:{}", member.sid))
                    .arg(&member.uid)
                    .arg(&value)
                    .arg(&prefix)
                    .arg(name)
                    .invoke_async(&mut conn.clone())
                    .await?;
                Ok(match outcome {
                    1 => Added::New,
                    2 => Added::Replaced,
                    _ => Added::Taken,
                })
            }
            Self::Memory(m) => {
                let mut m = m.lock();
                let members = m.channels.entry(name.to_owned()).or_default();
                let outcome = match members.get(&member.uid) {
                    Some(v) if !v.starts_with(&prefix) => return Ok(Added::Taken),
                    Some(_) => Added::Replaced,
                    None => Added::New,
                };
                members.insert(member.uid.clone(), value);
                m.by_sid
                    .entry(member.sid.clone())
                    .or_default()
                    .insert(name.to_owned());
                Ok(outcome)
            }
        }
    }

    /// Removes `uid` when it is exactly `only` (same frontend, incarnation and session; any
    /// when `None`). True if removed.
    pub async fn leave(&self, name: &str, uid: &str, only: Option<&Member>) -> Result<bool, ChannelError> {
        let only = only.map(Member::stored);
        match self {
            Self::Redis { conn, ns } => {
                let (_, hash) = Self::keys(ns, name);
                let mut c = conn.clone();
                if let Some(value) = only {
                    // Compare-and-delete in one script.
                    let script = redis::Script::new(
                        "if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then \
                         return redis.call('HDEL', KEYS[1], ARGV[1]) else return 0 end",
                    );
                    let n: i64 = script.key(&hash).arg(uid).arg(value).invoke_async(&mut c).await?;
                    Ok(n > 0)
                } else {
                    let n: i64 = c.hdel(&hash, uid).await?;
                    Ok(n > 0)
                }
            }
            Self::Memory(m) => {
                let mut m = m.lock();
                let Some(members) = m.channels.get_mut(name) else {
                    return Ok(false);
                };
                match (members.get(uid), only) {
                    (Some(have), Some(want)) if *have != want => Ok(false),
                    (Some(_), _) => Ok(members.remove(uid).is_some()),
                    (None, _) => Ok(false),
                }
            }
        }
    }

    /// Every member, in one round trip.
    pub async fn members(&self, name: &str) -> Result<Vec<Member>, ChannelError> {
        let mut list: Vec<Member> = match self {
            Self::Redis { conn, ns } => {
                let (_, hash) = Self::keys(ns, name);
                let map: HashMap<String, String> = conn.clone().hgetall(hash).await?;
                map.into_iter()
                    .map(|(uid, v)| Member::from_stored(uid, &v))
                    .collect()
            }
            Self::Memory(m) => m
                .lock()
                .channels
                .get(name)
                .map(|c| c.iter().map(|(u, v)| Member::from_stored(u.clone(), v)).collect())
                .unwrap_or_default(),
        };
        // Grouped by sid, as Pomelo's getMembers is; stable for tests and users.
        list.sort_by(|a, b| (&a.sid, &a.uid).cmp(&(&b.sid, &b.uid)));
        Ok(list)
    }

    /// One member.
    pub async fn member(&self, name: &str, uid: &str) -> Result<Option<Member>, ChannelError> {
        let value: Option<String> = match self {
            Self::Redis { conn, ns } => {
                let (_, hash) = Self::keys(ns, name);
                conn.clone().hget(hash, uid).await?
            }
            Self::Memory(m) => m.lock().channels.get(name).and_then(|c| c.get(uid).cloned()),
        };
        Ok(value.map(|v| Member::from_stored(uid.to_owned(), &v)))
    }

    /// Deletes a channel and its members.
    pub async fn destroy(&self, name: &str) -> Result<(), ChannelError> {
        match self {
            Self::Redis { conn, ns } => {
                let (set, hash) = Self::keys(ns, name);
                let _: () = redis::pipe()
                    .atomic()
                    .srem(set, name)
                    .ignore()
                    .del(hash)
                    .ignore()
                    .query_async(&mut conn.clone())
                    .await?;
            }
            Self::Memory(m) => {
                m.lock().channels.remove(name);
            }
        }
        Ok(())
    }

    /// Every channel name.
    pub async fn channels(&self) -> Result<Vec<String>, ChannelError> {
        let mut names: Vec<String> = match self {
            Self::Redis { conn, ns } => conn.clone().smembers(format!("{ns}:channels")).await?,
            Self::Memory(m) => m.lock().channels.keys().cloned().collect(),
        };
        names.sort();
        Ok(names)
    }

    /// The channels in which frontend `sid` has (or had) members.
    pub async fn channels_of_sid(&self, sid: &str) -> Result<Vec<String>, ChannelError> {
        match self {
            Self::Redis { conn, ns } => Ok(conn.clone().smembers(format!("{ns}:sid:{sid}")).await?),
            Self::Memory(m) => Ok(m
                .lock()
                .by_sid
                .get(sid)
                .map(|s| s.iter().cloned().collect())
                .unwrap_or_default()),
        }
    }

    /// Forgets that frontend `sid` had members in `name` (after purging them).
    pub async fn forget_sid_channel(&self, sid: &str, name: &str) -> Result<(), ChannelError> {
        match self {
            Self::Redis { conn, ns } => {
                let _: i64 = conn.clone().srem(format!("{ns}:sid:{sid}"), name).await?;
            }
            Self::Memory(m) => {
                if let Some(s) = m.lock().by_sid.get_mut(sid) {
                    s.remove(name);
                }
            }
        }
        Ok(())
    }

    /// Marks the store as holding this cluster's membership. True when the mark was missing:
    /// the store is new, or it lost its data (a Redis restart without persistence), and the
    /// frontends must tell it again who is where.
    pub async fn claim_epoch(&self) -> Result<bool, ChannelError> {
        match self {
            Self::Redis { conn, ns } => {
                let set: Option<String> = redis::cmd("SET")
                    .arg(format!("{ns}:epoch"))
                    .arg("1")
                    .arg("NX")
                    .query_async(&mut conn.clone())
                    .await?;
                Ok(set.is_some())
            }
            Self::Memory(m) => {
                let mut m = m.lock();
                let missing = !m.epoch;
                m.epoch = true;
                Ok(missing)
            }
        }
    }

    /// True when the store answers.
    pub async fn ping(&self) -> bool {
        match self {
            Self::Redis { conn, .. } => redis::cmd("PING")
                .query_async::<String>(&mut conn.clone())
                .await
                .is_ok(),
            Self::Memory(_) => true,
        }
    }
}
