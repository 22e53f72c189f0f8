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
}

impl Member {
    pub fn new(uid: impl Into<String>, sid: impl Into<String>) -> Self {
        Self {
            uid: uid.into(),
            sid: sid.into(),
            incarnation: 0,
        }
    }

    fn from_stored(uid: String, value: &str) -> Self {
        match value.rsplit_once('#') {
            Some((sid, inc)) => Self {
                uid,
                sid: sid.to_owned(),
                incarnation: inc.parse().unwrap_or(0),
            },
            None => Self::new(uid, value),
        }
    }
}

/// How a member is stored: `<sid>#<incarnation>` (server ids never contain `#`).
fn stored(sid: &str, incarnation: u64) -> String {
    format!("{sid}#{incarnation}")
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

    /// Adds `uid` on `sid`; false (and nothing changes) when the uid is already a member.
    pub async fn add(
        &self,
        name: &str,
        uid: &str,
        sid: &str,
        incarnation: u64,
    ) -> Result<bool, ChannelError> {
        let value = stored(sid, incarnation);
        match self {
            Self::Redis { conn, ns } => {
                let (set, hash) = Self::keys(ns, name);
                let (added, _, _): (bool, i64, i64) = redis::pipe()
                    .atomic()
                    .hset_nx(&hash, uid, &value)
                    .sadd(set, name)
                    .sadd(format!("{ns}:sid:{sid}"), name)
                    .query_async(&mut conn.clone())
                    .await?;
                Ok(added)
            }
            Self::Memory(m) => {
                let mut m = m.lock();
                let members = m.channels.entry(name.to_owned()).or_default();
                if members.contains_key(uid) {
                    return Ok(false);
                }
                members.insert(uid.to_owned(), value);
                m.by_sid
                    .entry(sid.to_owned())
                    .or_default()
                    .insert(name.to_owned());
                Ok(true)
            }
        }
    }

    /// Removes `uid` when it is a member on `sid` of `incarnation` (any, when `None`); true if
    /// removed.
    pub async fn leave(
        &self,
        name: &str,
        uid: &str,
        only: Option<(&str, u64)>,
    ) -> Result<bool, ChannelError> {
        let only = only.map(|(sid, inc)| stored(sid, inc));
        match self {
            Self::Redis { conn, ns } => {
                let (_, hash) = Self::keys(ns, name);
                let mut c = conn.clone();
                if let Some(value) = only {
                    // Only the session that joined may leave: a late kick from an old session
                    // must not remove a newer one. Compare-and-delete in one script.
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
