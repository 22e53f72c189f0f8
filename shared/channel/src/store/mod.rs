//! The channel store: who is in which channel, through which frontend. [`RedisStore`] for
//! clusters, [`MemoryStore`] for one process, both behind the [`Store`] trait and checked by
//! one conformance suite (`tests/conformance.rs`); [`ChannelStore`] is the one the rest of
//! the code holds. The keys are in [`keys`].

use std::future::Future;

use prometheus_client::metrics::counter::Counter;

use crate::ChannelError;

pub mod keys;
mod memory;
mod redis;

pub use memory::MemoryStore;
pub use redis::RedisStore;

/// One member of a channel: a uid and the frontend (sid) that holds its session.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Member {
    pub uid: String,
    /// The frontend server id holding the session.
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
    /// The incarnation tells a member of a restarted frontend (a ghost) from a live one.
    fn stored(&self) -> String {
        format!("{}#{}#{}", self.sid, self.incarnation, self.session)
    }

    /// A held place for `uid` until `until_ms` (see [`HELD_SID`]).
    pub fn held(uid: impl Into<String>, until_ms: u64) -> Self {
        Self {
            uid: uid.into(),
            sid: HELD_SID.to_owned(),
            incarnation: 0,
            session: until_ms,
        }
    }

    /// True for a held place (see [`HELD_SID`]).
    pub fn is_held(&self) -> bool {
        self.sid == HELD_SID
    }

    /// What every stored value of this member's frontend starts with.
    fn sid_prefix(&self) -> String {
        format!("{}#", self.sid)
    }
}

/// The frontend of a held place: a member whose session closed to come back (its connector
/// drained) keeps its place under this sid until its `session` field, a deadline in ms since
/// the Unix epoch. Nothing is pushed to it; entering again takes the place back
/// ([`Added::Resumed`]). Server ids never start with `~`.
pub const HELD_SID: &str = "~held";

/// The store's epoch mark, as [`Store::claim_epoch`] found or set it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Epoch {
    /// The mark was missing and this call set it.
    pub claimed: bool,
    /// The mark: it changes whenever the store loses its data.
    pub mark: String,
}

/// What `add` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    /// The uid was not in the channel.
    New,
    /// The uid was there through the same frontend, from a session that is gone (the frontend
    /// checked it holds no live one) or an earlier incarnation: replaced.
    Replaced,
    /// The uid's place was held ([`HELD_SID`]): taken back, from any frontend.
    Resumed,
    /// Another frontend holds the uid: refused.
    Taken,
}

/// What a channel store does. Order of lists is unspecified here; [`ChannelStore`] sorts.
pub trait Store: Clone + Send + Sync + 'static {
    /// Records a channel name (Pomelo's `getChannel(name, true)`).
    fn create(&self, name: &str) -> impl Future<Output = Result<(), ChannelError>> + Send;
    fn exists(&self, name: &str) -> impl Future<Output = Result<bool, ChannelError>> + Send;
    /// Adds `member`: refused when another frontend holds the uid, replaced when the same
    /// frontend left it (it holds no live session for it any more, else it would not ask),
    /// resumed when its place was held.
    fn add(&self, name: &str, member: &Member) -> impl Future<Output = Result<Added, ChannelError>> + Send;
    /// Removes `member` when it is stored exactly so (same frontend, incarnation and
    /// session): a late leave never removes a newer session. True if removed. Nothing is left
    /// behind: a channel without members leaves the channel list, a frontend without members
    /// in it forgets the channel, and a frontend without members anywhere leaves `sids`.
    fn leave(&self, name: &str, member: &Member) -> impl Future<Output = Result<bool, ChannelError>> + Send;
    /// Every member, in one round trip.
    fn members(&self, name: &str) -> impl Future<Output = Result<Vec<Member>, ChannelError>> + Send;
    fn member(
        &self,
        name: &str,
        uid: &str,
    ) -> impl Future<Output = Result<Option<Member>, ChannelError>> + Send;
    /// Deletes a channel and its members.
    fn destroy(&self, name: &str) -> impl Future<Output = Result<(), ChannelError>> + Send;
    fn channels(&self) -> impl Future<Output = Result<Vec<String>, ChannelError>> + Send;
    /// The channels in which frontend `sid` has (or had) members.
    fn channels_of_sid(&self, sid: &str) -> impl Future<Output = Result<Vec<String>, ChannelError>> + Send;
    /// Forgets that frontend `sid` had members in `name` (after purging them), and `sid`
    /// itself when it has members nowhere.
    fn forget_sid_channel(
        &self,
        sid: &str,
        name: &str,
    ) -> impl Future<Output = Result<(), ChannelError>> + Send;
    /// The frontends that have (or had, until purged) members.
    fn sids(&self) -> impl Future<Output = Result<Vec<String>, ChannelError>> + Send;
    /// Marks the store as holding this cluster's membership, with `token` if the mark is
    /// missing: the store is new, or it lost its data (a Redis restart without persistence),
    /// and the frontends must tell it again who is where. Answers the mark as it is now: a
    /// chat server that finds another mark than the one it saw last knows of the loss too.
    fn claim_epoch(&self, token: &str) -> impl Future<Output = Result<Epoch, ChannelError>> + Send;
    /// True when the store answers.
    fn ping(&self) -> impl Future<Output = bool> + Send;
    /// Keeps `note` about frontend `sid`'s members purged from `name`, for `ttl` (replacing
    /// any before it).
    fn keep_purged(
        &self,
        name: &str,
        sid: &str,
        note: &[u8],
        ttl: std::time::Duration,
    ) -> impl Future<Output = Result<(), ChannelError>> + Send;
    /// The note kept by [`Store::keep_purged`], if it has not expired or been forgotten.
    fn purged(
        &self,
        name: &str,
        sid: &str,
    ) -> impl Future<Output = Result<Option<Vec<u8>>, ChannelError>> + Send;
    /// Forgets the note kept by [`Store::keep_purged`] (it was used).
    fn forget_purged(&self, name: &str, sid: &str) -> impl Future<Output = Result<(), ChannelError>> + Send;
}

/// The store a chat server holds: Redis or memory.
#[derive(Debug, Clone)]
pub enum ChannelStore {
    Redis(RedisStore),
    Memory(MemoryStore),
}

/// Runs `$call` on whichever store `$self` is.
macro_rules! on_store {
    ($self:ident, $s:ident => $call:expr) => {
        match $self {
            ChannelStore::Redis($s) => $call,
            ChannelStore::Memory($s) => $call,
        }
    };
}

impl ChannelStore {
    /// Connects to Redis (see [`RedisStore::connect`]): a cluster when `url` lists several
    /// nodes.
    pub async fn redis(url: &str, namespace: &str) -> Result<Self, ChannelError> {
        Ok(Self::Redis(RedisStore::connect(url, false, namespace).await?))
    }

    /// A store on an existing connection (a single Redis or a cluster).
    pub fn on(conn: shaddock_redis::Redis, namespace: &str) -> Self {
        Self::Redis(RedisStore::with(conn, namespace))
    }

    pub fn memory() -> Self {
        Self::Memory(MemoryStore::default())
    }

    /// Errors of the store (a memory store has none), to register in a metrics registry.
    pub fn errors(&self) -> Counter {
        match self {
            Self::Redis(r) => r.errors().clone(),
            Self::Memory(_) => Counter::default(),
        }
    }

    pub async fn create(&self, name: &str) -> Result<(), ChannelError> {
        on_store!(self, s => s.create(name).await)
    }

    pub async fn exists(&self, name: &str) -> Result<bool, ChannelError> {
        on_store!(self, s => s.exists(name).await)
    }

    /// See [`Store::add`].
    pub async fn add(&self, name: &str, member: &Member) -> Result<Added, ChannelError> {
        on_store!(self, s => s.add(name, member).await)
    }

    /// See [`Store::leave`].
    pub async fn leave(&self, name: &str, member: &Member) -> Result<bool, ChannelError> {
        on_store!(self, s => s.leave(name, member).await)
    }

    /// Every member, grouped by sid as Pomelo's `getMembers` is (then by uid).
    pub async fn members(&self, name: &str) -> Result<Vec<Member>, ChannelError> {
        let mut list = on_store!(self, s => s.members(name).await)?;
        list.sort_by(|a, b| (&a.sid, &a.uid).cmp(&(&b.sid, &b.uid)));
        Ok(list)
    }

    pub async fn member(&self, name: &str, uid: &str) -> Result<Option<Member>, ChannelError> {
        on_store!(self, s => s.member(name, uid).await)
    }

    pub async fn destroy(&self, name: &str) -> Result<(), ChannelError> {
        on_store!(self, s => s.destroy(name).await)
    }

    /// Every channel name, sorted.
    pub async fn channels(&self) -> Result<Vec<String>, ChannelError> {
        let mut names = on_store!(self, s => s.channels().await)?;
        names.sort();
        Ok(names)
    }

    /// See [`Store::channels_of_sid`].
    pub async fn channels_of_sid(&self, sid: &str) -> Result<Vec<String>, ChannelError> {
        on_store!(self, s => s.channels_of_sid(sid).await)
    }

    pub async fn forget_sid_channel(&self, sid: &str, name: &str) -> Result<(), ChannelError> {
        on_store!(self, s => s.forget_sid_channel(sid, name).await)
    }

    /// See [`Store::sids`] (sorted).
    pub async fn sids(&self) -> Result<Vec<String>, ChannelError> {
        let mut sids = on_store!(self, s => s.sids().await)?;
        sids.sort();
        Ok(sids)
    }

    /// See [`Store::claim_epoch`].
    pub async fn claim_epoch(&self, token: &str) -> Result<Epoch, ChannelError> {
        on_store!(self, s => s.claim_epoch(token).await)
    }

    pub async fn ping(&self) -> bool {
        on_store!(self, s => s.ping().await)
    }

    /// See [`Store::keep_purged`].
    pub async fn keep_purged(
        &self,
        name: &str,
        sid: &str,
        note: &[u8],
        ttl: std::time::Duration,
    ) -> Result<(), ChannelError> {
        on_store!(self, s => s.keep_purged(name, sid, note, ttl).await)
    }

    /// See [`Store::purged`].
    pub async fn purged(&self, name: &str, sid: &str) -> Result<Option<Vec<u8>>, ChannelError> {
        on_store!(self, s => s.purged(name, sid).await)
    }

    /// See [`Store::forget_purged`].
    pub async fn forget_purged(&self, name: &str, sid: &str) -> Result<(), ChannelError> {
        on_store!(self, s => s.forget_purged(name, sid).await)
    }
}
