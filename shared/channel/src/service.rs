//! `ChannelService` and `Channel`, as in Pomelo's `lib/common/service/channelService.js`.
//!
//! ## Behavior
//! - Membership lives in the store; a chat server caches each channel's grouping by sid and
//!   keeps the cache current on its own `add`/`leave`. The cache is only right while this
//!   server owns the channel, so the owner calls [`ChannelService::invalidate_cache`] whenever
//!   the server list changes (a rebalance), and the next push reads the store again. An entry
//!   is trusted for 2 s at most (a lagging connector may still change the room through its old
//!   owner), and the cache holds a bounded number of rooms.
//! - `push_message` sends ONE envelope per sid group to `<ns>.srv.<sid>`, the body encoded
//!   once by the caller. With [`Delivery::Confirm`] it waits for each frontend's failIds
//!   (uids without a session there), as Pomelo's callback does; with [`Delivery::Publish`] it
//!   does not wait, except for a frontend the registry has not heard since this server's NATS
//!   connection came back ([`ChannelService::follow`]): NATS drops what is published to a
//!   subject nobody listens on, so the first push to it goes as a request, retried while
//!   nobody listens (for at most a registry lapse). An answer, or a short wait with none (a
//!   paused frontend: NATS holds its messages), shows its subject is live again.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use shaddock_bus::envelope::{decode_value, encode_push_unnumbered, number_push};
use shaddock_bus::{Bus, BusError, Envelope, PendingReply, PushNo, Registry, Reply, subject};

use crate::ChannelError;
use crate::changes::Changes;
use crate::store::{Added, ChannelStore, HELD_SID, Member};

/// A channel's members grouped by the frontend (sid) that holds their sessions.
#[derive(Debug, Clone, Default)]
struct Groups {
    by_sid: BTreeMap<String, Vec<String>>,
    /// uid -> (incarnation, session) of the member.
    tags: HashMap<String, (u64, u64)>,
}

impl Groups {
    /// Idempotent: a member already cached (say, read from the store by a concurrent load)
    /// is moved, never doubled.
    fn insert(&mut self, m: &Member) {
        if let Some(old_sid) = self.sid_of(&m.uid) {
            self.remove(&m.uid, &old_sid);
        }
        self.by_sid.entry(m.sid.clone()).or_default().push(m.uid.clone());
        self.tags.insert(m.uid.clone(), (m.incarnation, m.session));
    }

    fn remove(&mut self, uid: &str, sid: &str) {
        if let Some(uids) = self.by_sid.get_mut(sid) {
            uids.retain(|u| u != uid);
            if uids.is_empty() {
                self.by_sid.remove(sid);
            }
        }
        self.tags.remove(uid);
    }

    fn sid_of(&self, uid: &str) -> Option<String> {
        if !self.tags.contains_key(uid) {
            return None;
        }
        self.by_sid
            .iter()
            .find(|(_, uids)| uids.iter().any(|u| u == uid))
            .map(|(s, _)| s.clone())
    }

    fn members(&self) -> impl Iterator<Item = Member> + '_ {
        self.by_sid.iter().flat_map(move |(sid, uids)| {
            uids.iter().map(move |u| Member {
                uid: u.clone(),
                sid: sid.clone(),
                incarnation: self.tags.get(u).map(|t| t.0).unwrap_or(0),
                session: self.tags.get(u).map(|t| t.1).unwrap_or(0),
            })
        })
    }
}

/// A channel's members as a push groups them (see [`Channel::grouped`]).
#[derive(Debug, Clone)]
pub struct Grouped(Arc<Groups>);

/// How long a cached grouping is trusted: it bounds how long a change the store saw from
/// elsewhere (another chat server during a handoff) can be missed here.
const CACHE_TTL: Duration = Duration::from_secs(2);
/// Uids in one push envelope at most: with uids of up to 128 bytes, well under NATS' default
/// max_payload of 1 MB.
const PUSH_UIDS: usize = 4_000;
/// Rooms cached at most; past it, expired entries go (and all, if none had expired).
const CACHE_MAX: usize = 50_000;

/// A grouping read from the store, and when.
#[derive(Debug, Clone)]
struct Cached {
    groups: Arc<Groups>,
    loaded: Instant,
}

/// Whether a push waits for the frontends' answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Fire and forget: the fast path for chat messages.
    Publish,
    /// Wait for each frontend and collect failIds.
    Confirm,
}

/// What a push did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushReport {
    /// Envelopes sent: one per sid group.
    pub groups: usize,
    /// Uids that had no session on their frontend (only with [`Delivery::Confirm`]).
    pub fail_ids: Vec<String>,
}

/// Pomelo's `app.get('channelService')`.
#[derive(Debug, Clone)]
pub struct ChannelService {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: ChannelStore,
    bus: Bus,
    namespace: String,
    timeout: Duration,
    cache: Mutex<HashMap<String, Cached>>,
    /// Membership changes by room: a grouping read from the store while its room changed may
    /// be stale, so it is used once and not cached.
    changes: Mutex<Changes>,
    /// Who is heard (see [`ChannelService::follow`]).
    registry: OnceLock<Registry>,
    /// sid -> when a push to it last showed that its subject is live.
    listening: Mutex<HashMap<String, tokio::time::Instant>>,
    /// This service's pushes numbered per frontend (see [`PushNo`]).
    numbering: Numbering,
}

/// The last number given to a push for each frontend. The lock is held while the pushes are
/// handed to the bus (which sends, or with batching queues, them in that order), so numbers
/// reach each frontend in order; a frontend that then sees one missing knows a push was lost.
#[derive(Debug)]
struct Numbering {
    from: u64,
    last: tokio::sync::Mutex<HashMap<String, u64>>,
}

impl Numbering {
    fn new() -> Self {
        use std::hash::{BuildHasher, Hasher};
        // Random per run, so that a restarted server is a new sender to its frontends.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        h.write_u32(std::process::id());
        Self {
            from: h.finish(),
            last: tokio::sync::Mutex::new(HashMap::new()),
        }
    }
}

fn next_no(from: u64, last: &mut HashMap<String, u64>, sid: &str) -> PushNo {
    let n = match last.get_mut(sid) {
        Some(n) => {
            *n += 1;
            *n
        }
        None => {
            last.insert(sid.to_owned(), 1);
            1
        }
    };
    PushNo { from, n }
}

/// How soon a push to a frontend nobody listens on yet is tried again.
const UNHEARD_RETRY: Duration = Duration::from_millis(50);
/// How long a push to a frontend not heard lately waits for its answer: with none by then, a
/// subscriber exists (NATS answers at once when there is none), it is only slow or paused.
const UNHEARD_PROBE: Duration = Duration::from_millis(250);

impl ChannelService {
    pub fn new(store: ChannelStore, bus: Bus, namespace: &str, timeout: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                bus,
                namespace: namespace.to_owned(),
                timeout,
                cache: Mutex::new(HashMap::new()),
                changes: Mutex::new(Changes::default()),
                registry: OnceLock::new(),
                listening: Mutex::new(HashMap::new()),
                numbering: Numbering::new(),
            }),
        }
    }

    /// Pushes to a frontend `registry` has not heard lately (see [`Registry::is_heard`]) wait
    /// until it listens, for at most a lapse, rather than vanish: after a NATS restart, the
    /// frontends that reconnect last would otherwise miss what the others already send.
    pub fn follow(&self, registry: Registry) {
        let _ = self.inner.registry.set(registry);
    }

    /// True when frontend `sid` may not be listening on its subject: not heard lately, and no
    /// push showed its subject live since this server's NATS connection came up.
    fn may_not_listen(&self, sid: &str) -> bool {
        let Some(registry) = self.inner.registry.get() else {
            return false;
        };
        if registry.is_heard(sid) {
            return false;
        }
        let up = self.inner.bus.connected_since();
        let shown = self.inner.listening.lock().get(sid).copied();
        !(self.inner.bus.is_connected() && shown.is_some_and(|at| up.is_none_or(|up| at >= up)))
    }

    pub fn store(&self) -> &ChannelStore {
        &self.inner.store
    }

    /// `getChannel(name, create)`: `None` when it does not exist and `create` is false.
    pub async fn get_channel(&self, name: &str, create: bool) -> Result<Option<Channel>, ChannelError> {
        if create {
            self.inner.store.create(name).await?;
        } else if !self.inner.store.exists(name).await? {
            return Ok(None);
        }
        Ok(Some(self.channel(name)))
    }

    /// A handle on a channel, without asking the store whether it exists.
    pub fn channel(&self, name: &str) -> Channel {
        Channel {
            service: self.clone(),
            name: name.to_owned(),
        }
    }

    pub async fn destroy_channel(&self, name: &str) -> Result<(), ChannelError> {
        self.invalidate_room(name);
        self.inner.store.destroy(name).await
    }

    /// Forgets one room's cached grouping (its members changed elsewhere).
    pub fn invalidate_room(&self, name: &str) {
        self.changing(name);
        self.inner.cache.lock().remove(name);
    }

    /// Forgets every cached grouping: call it when the server list changes.
    pub fn invalidate_cache(&self) {
        self.inner.changes.lock().all();
        self.inner.cache.lock().clear();
    }

    /// `pushMessageByUids(route, msg, uids)`: `body` is the encoded push body; `offset`, the
    /// message's place in its room's history (see [`shaddock_bus::Envelope::Push`]).
    pub async fn push_message_by_uids(
        &self,
        route: &str,
        body: &[u8],
        members: &[Member],
        offset: Option<u64>,
        delivery: Delivery,
    ) -> Result<PushReport, ChannelError> {
        if members.is_empty() {
            return Err(ChannelError::NoUids);
        }
        let mut by_sid: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for m in members {
            by_sid.entry(m.sid.clone()).or_default().push(m.uid.clone());
        }
        self.send_by_group(route, body, &by_sid, offset, delivery).await
    }

    /// `broadcast(serverType, route, msg)`: to every session on every server of a type.
    pub async fn broadcast(&self, server_type: &str, route: &str, body: &[u8]) -> Result<(), ChannelError> {
        let env = Envelope::Broadcast {
            route: route.to_owned(),
            body: body.to_vec(),
        };
        let subject = subject::server_type(&self.inner.namespace, server_type);
        self.inner.bus.publish(subject, env.encode()?).await?;
        Ok(())
    }

    /// The last push this service numbered for frontend `sid`, if any (see [`PushNo`]).
    pub async fn last_push_to(&self, sid: &str) -> Option<PushNo> {
        let numbering = &self.inner.numbering;
        let n = *numbering.last.lock().await.get(sid)?;
        Some(PushNo {
            from: numbering.from,
            n,
        })
    }

    async fn send_by_group(
        &self,
        route: &str,
        body: &[u8],
        groups: &BTreeMap<String, Vec<String>>,
        offset: Option<u64>,
        delivery: Delivery,
    ) -> Result<PushReport, ChannelError> {
        let mut report = PushReport::default();
        let mut confirms = Vec::new();
        let mut unheard = Vec::new();
        let mut failed = None;
        // One envelope per sid group, split only when a group would outgrow NATS' max_payload;
        // one buffer each, encoded before the numbering's lock (the uids are borrowed from the
        // cached grouping). Held places (`HELD_SID`) have no session anywhere: nothing to send.
        let mut payloads = Vec::with_capacity(groups.len());
        for (sid, uids) in groups.iter().filter(|(sid, _)| sid.as_str() != HELD_SID) {
            for chunk in uids.chunks(PUSH_UIDS) {
                payloads.push((sid, chunk, encode_push_unnumbered(route, body, chunk, offset)?));
            }
        }
        let numbering = &self.inner.numbering;
        let mut last = numbering.last.lock().await;
        for (sid, uids, payload) in payloads {
            let payload = number_push(payload, next_no(numbering.from, &mut last, sid));
            let subject = subject::server(&self.inner.namespace, sid);
            report.groups += 1;
            match delivery {
                Delivery::Publish
                    if let Some(registry) = self.inner.registry.get()
                        && self.may_not_listen(sid) =>
                {
                    let bus = self.inner.bus.clone();
                    let first = bus
                        .send_request(subject.clone(), payload.clone(), UNHEARD_PROBE)
                        .await;
                    unheard.push(async move {
                        let sent = push_when_listening(&bus, registry, sid, subject, payload, first).await;
                        (sid, sent)
                    });
                }
                Delivery::Publish => {
                    // With batching on, leaves with what else goes to that frontend in this
                    // instant (the answer to the sender, other rooms' pushes). One frontend
                    // that cannot be reached does not cost the others their push.
                    if let Err(e) = self.inner.bus.publish_batched(subject, payload).await {
                        failed.get_or_insert(e);
                    }
                }
                Delivery::Confirm => {
                    let answer = self
                        .inner
                        .bus
                        .send_request(subject, payload, self.inner.timeout)
                        .await;
                    confirms.push(async move { (uids, answer.answer().await) });
                }
            }
        }
        drop(last);
        for (sid, result) in futures_util::future::join_all(unheard).await {
            match result {
                Ok(()) => {
                    self.inner
                        .listening
                        .lock()
                        .insert(sid.clone(), tokio::time::Instant::now());
                }
                // Not a failure of the push: a frontend gone for a lapse is purged from its
                // rooms.
                Err(e) => tracing::warn!(%sid, error = %e, "push to a frontend not heard lately failed"),
            }
        }
        if delivery == Delivery::Confirm && !confirms.is_empty() {
            let mut any_ok = false;
            for (uids, answer) in futures_util::future::join_all(confirms).await {
                let fails = answer
                    .map_err(ChannelError::from)
                    .and_then(|b| Ok(Reply::decode(&b)?.into_result()?))
                    .and_then(|b| Ok(decode_value::<Vec<String>>(&b)?));
                match fails {
                    Ok(fails) => {
                        any_ok = true;
                        report.fail_ids.extend(fails);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "push to a frontend failed");
                        report.fail_ids.extend(uids.iter().cloned());
                    }
                }
            }
            if !any_ok {
                return Err(ChannelError::AllFailed);
            }
        }
        match failed {
            Some(e) => Err(e.into()),
            None => Ok(report),
        }
    }

    async fn groups(&self, name: &str) -> Result<Arc<Groups>, ChannelError> {
        if let Some(c) = self.inner.cache.lock().get(name)
            && c.loaded.elapsed() < CACHE_TTL
        {
            return Ok(c.groups.clone());
        }
        let began = self.inner.changes.lock().now();
        let mut groups = Groups::default();
        for m in self.inner.store.members(name).await? {
            groups.insert(&m);
        }
        let groups = Arc::new(groups);
        // Checked under the cache's lock: an invalidation marks its change before it takes
        // that lock to remove the entry, so a stale grouping is never left behind.
        let mut cache = self.inner.cache.lock();
        if !self.inner.changes.lock().since(name, began) {
            if cache.len() >= CACHE_MAX {
                cache.retain(|_, c| c.loaded.elapsed() < CACHE_TTL);
                if cache.len() >= CACHE_MAX {
                    cache.clear();
                }
            }
            let loaded = Instant::now();
            cache.insert(
                name.to_owned(),
                Cached {
                    groups: groups.clone(),
                    loaded,
                },
            );
        }
        Ok(groups)
    }

    fn changing(&self, name: &str) {
        self.inner.changes.lock().room(name);
    }

    fn update_cache(&self, name: &str, f: impl FnOnce(&mut Groups)) {
        if let Some(c) = self.inner.cache.lock().get_mut(name) {
            f(Arc::make_mut(&mut c.groups));
        }
    }
}

/// Awaits `first`, a push sent to frontend `sid` as a request, and sends it again while
/// nobody listens on `subject`, for at most a lapse and while the registry still lists `sid`
/// (a frontend that died is not waited for: its members are purged). Ok once it was
/// answered, or not answered soon ([`UNHEARD_PROBE`]): then it waits in a paused subscriber's
/// queue.
async fn push_when_listening(
    bus: &Bus,
    registry: &Registry,
    sid: &str,
    subject: String,
    payload: bytes::Bytes,
    first: PendingReply,
) -> Result<(), BusError> {
    let until = tokio::time::Instant::now() + registry.lapse();
    let mut answer = first.answer().await;
    loop {
        match answer {
            Ok(_) | Err(BusError::Timeout) => return Ok(()),
            Err(BusError::NoResponders(_))
                if tokio::time::Instant::now() < until && registry.list().contains(sid) =>
            {
                tokio::time::sleep(UNHEARD_RETRY).await;
                answer = bus.request(subject.clone(), payload.clone(), UNHEARD_PROBE).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// One channel (a chat room): Pomelo's `Channel`.
#[derive(Debug, Clone)]
pub struct Channel {
    service: ChannelService,
    name: String,
}

impl Channel {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Adds `member` (see [`ChannelStore::add`]).
    pub async fn add(&self, member: &Member) -> Result<Added, ChannelError> {
        self.service.changing(&self.name);
        let added = self.service.inner.store.add(&self.name, member).await;
        // Bump again: a load that began between the first bump and the write must not cache.
        self.service.changing(&self.name);
        let added = added?;
        if added != Added::Taken {
            self.service.update_cache(&self.name, |g| g.insert(member));
        }
        Ok(added)
    }

    /// Removes `member` if it is in the channel exactly so (same frontend, incarnation and
    /// session): a late leave from an old session never removes a newer one. True when it was.
    pub async fn leave(&self, member: &Member) -> Result<bool, ChannelError> {
        self.service.changing(&self.name);
        let removed = self.service.inner.store.leave(&self.name, member).await;
        self.service.changing(&self.name);
        let removed = removed?;
        if removed {
            self.service
                .update_cache(&self.name, |g| g.remove(&member.uid, &member.sid));
        } else {
            // The store had no such member: the cached grouping may be older than the store
            // (it lost its data, or another server changed the room); read it afresh.
            self.service.invalidate_room(&self.name);
        }
        Ok(removed)
    }

    /// Every member, grouped by sid.
    pub async fn members(&self) -> Result<Vec<Member>, ChannelError> {
        Ok(self.service.groups(&self.name).await?.members().collect())
    }

    /// One member (`getMember(uid)`).
    pub async fn member(&self, uid: &str) -> Result<Option<Member>, ChannelError> {
        let groups = self.service.groups(&self.name).await?;
        Ok(groups.members().find(|m| m.uid == uid))
    }

    pub async fn user_amount(&self) -> Result<usize, ChannelError> {
        Ok(self.service.groups(&self.name).await?.tags.len())
    }

    /// `pushMessage(route, msg)` to every member: one envelope per sid group.
    pub async fn push_message(
        &self,
        route: &str,
        body: &[u8],
        offset: Option<u64>,
        delivery: Delivery,
    ) -> Result<PushReport, ChannelError> {
        let grouped = self.grouped().await?;
        self.push_grouped(&grouped, route, body, offset, delivery).await
    }

    /// The members as a push groups them, read now: a caller that must not record a message
    /// it then cannot push (the store gone between the two) reads them first.
    pub async fn grouped(&self) -> Result<Grouped, ChannelError> {
        Ok(Grouped(self.service.groups(&self.name).await?))
    }

    /// [`Channel::push_message`] to the members read by [`Channel::grouped`].
    pub async fn push_grouped(
        &self,
        grouped: &Grouped,
        route: &str,
        body: &[u8],
        offset: Option<u64>,
        delivery: Delivery,
    ) -> Result<PushReport, ChannelError> {
        self.service
            .send_by_group(route, body, &grouped.0.by_sid, offset, delivery)
            .await
    }

    pub async fn destroy(self) -> Result<(), ChannelError> {
        self.service.destroy_channel(&self.name).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn frontend(bus: &Bus, ns: &str, sid: &str) -> shaddock_bus::Subscription {
        bus.subscribe(subject::server(ns, sid)).await.unwrap()
    }

    #[tokio::test]
    async fn a_sid_group_too_big_for_one_nats_message_is_split() {
        let bus = Bus::local();
        let svc = ChannelService::new(ChannelStore::memory(), bus.clone(), "t", Duration::from_secs(1));
        let mut c1 = frontend(&bus, "t", "connector-1").await;
        let members: Vec<Member> = (0..PUSH_UIDS * 2 + 1)
            .map(|i| Member::new(format!("u{i}"), "connector-1"))
            .collect();
        let report = svc
            .push_message_by_uids("onChat", b"{}", &members, None, Delivery::Publish)
            .await
            .unwrap();
        assert_eq!(report.groups, 3);
        let mut seen = 0;
        for _ in 0..3 {
            let Envelope::Push { uids, .. } = Envelope::decode(&c1.next().await.unwrap().payload).unwrap()
            else {
                panic!("not a push")
            };
            assert!(uids.len() <= PUSH_UIDS);
            seen += uids.len();
        }
        assert_eq!(seen, members.len());
    }

    #[tokio::test]
    async fn a_push_sends_one_envelope_per_sid_group() {
        let bus = Bus::local();
        let svc = ChannelService::new(ChannelStore::memory(), bus.clone(), "t", Duration::from_secs(1));
        let mut c1 = frontend(&bus, "t", "connector-1").await;
        let mut c2 = frontend(&bus, "t", "connector-2").await;
        let room = svc.get_channel("room", true).await.unwrap().unwrap();
        assert_eq!(
            room.add(&Member::new("a", "connector-1")).await.unwrap(),
            Added::New
        );
        assert_eq!(
            room.add(&Member::new("b", "connector-1")).await.unwrap(),
            Added::New
        );
        assert_eq!(
            room.add(&Member::new("c", "connector-2")).await.unwrap(),
            Added::New
        );
        assert_eq!(
            room.add(&Member::new("c", "connector-1")).await.unwrap(),
            Added::Taken,
            "a uid is a member once, through one connector"
        );

        let report = room
            .push_message("onChat", b"{}", None, Delivery::Publish)
            .await
            .unwrap();
        assert_eq!(report.groups, 2);
        let Envelope::Push { uids, .. } = Envelope::decode(&c1.next().await.unwrap().payload).unwrap() else {
            panic!("not a push")
        };
        assert_eq!(uids, vec!["a", "b"]);
        let Envelope::Push { uids, .. } = Envelope::decode(&c2.next().await.unwrap().payload).unwrap() else {
            panic!("not a push")
        };
        assert_eq!(uids, vec!["c"]);
    }

    #[tokio::test]
    async fn leave_only_removes_the_session_that_joined() {
        let svc = ChannelService::new(ChannelStore::memory(), Bus::local(), "t", Duration::from_secs(1));
        let room = svc.channel("room");
        let mut a = Member::new("a", "connector-1");
        a.incarnation = 7;
        room.add(&a).await.unwrap();
        room.members().await.unwrap(); // warm the cache
        assert!(!room.leave(&Member::new("a", "connector-2")).await.unwrap());
        assert!(
            !room.leave(&Member::new("a", "connector-1")).await.unwrap(),
            "another incarnation"
        );
        assert_eq!(room.user_amount().await.unwrap(), 1);
        assert_eq!(room.member("a").await.unwrap(), Some(a.clone()));
        assert!(room.leave(&a).await.unwrap());
        assert_eq!(room.user_amount().await.unwrap(), 0);
    }

    /// A chat server's registry on `bus`, where no frontend has been heard.
    async fn chat_registry(bus: &Bus, token: &tokio_util::sync::CancellationToken) -> Registry {
        server_registry(bus, token, "chat-1", Duration::from_millis(50)).await
    }

    /// Server `id` in the registry on `bus`, heartbeating every `heartbeat` (lapse: 5 s).
    async fn server_registry(
        bus: &Bus,
        token: &tokio_util::sync::CancellationToken,
        id: &str,
        heartbeat: Duration,
    ) -> Registry {
        let me = shaddock_bus::ServerInfo {
            id: id.into(),
            server_type: id.split('-').next().unwrap_or(id).into(),
            host: "127.0.0.1".into(),
            client_port: None,
            incarnation: 1,
            draining: false,
        };
        let timing = shaddock_bus::registry::RegistryTiming {
            heartbeat,
            lapse: Duration::from_secs(5),
        };
        let tracker = tokio_util::task::TaskTracker::new();
        Registry::start(bus.clone(), "t", me, timing, token.clone(), &tracker)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_push_to_a_frontend_not_heard_yet_reaches_it_once_it_listens() {
        let bus = Bus::local();
        let token = tokio_util::sync::CancellationToken::new();
        let registry = chat_registry(&bus, &token).await;
        // connector-1 says hello, then is not heard for longer than the chat server trusts
        // (half a lapse) while it is still listed.
        server_registry(&bus, &token, "connector-1", Duration::from_secs(60)).await;
        tokio::time::sleep(Duration::from_millis(2600)).await;
        assert!(registry.list().contains("connector-1") && !registry.is_heard("connector-1"));
        let svc = ChannelService::new(ChannelStore::memory(), bus.clone(), "t", Duration::from_secs(1));
        svc.follow(registry);
        let pushing = tokio::spawn({
            let svc = svc.clone();
            async move {
                let members = [Member::new("a", "connector-1")];
                svc.push_message_by_uids("onChat", b"{}", &members, None, Delivery::Publish)
                    .await
            }
        });
        // Nobody listens on connector-1's subject yet (its NATS connection is coming back).
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!pushing.is_finished(), "the push waits for its frontend");
        let mut c1 = frontend(&bus, "t", "connector-1").await;
        let msg = tokio::time::timeout(Duration::from_secs(2), c1.next())
            .await
            .expect("the push arrives once the frontend listens")
            .unwrap();
        let Envelope::Push { uids, .. } = Envelope::decode(&msg.payload).unwrap() else {
            panic!("not a push")
        };
        assert_eq!(uids, vec!["a"]);
        bus.respond(
            &msg,
            Reply::value(&Vec::<String>::new()).unwrap().encode().unwrap(),
        )
        .await
        .unwrap();
        assert_eq!(pushing.await.unwrap().unwrap().groups, 1);
        token.cancel();
    }

    #[tokio::test]
    async fn a_frontend_that_listens_but_does_not_answer_holds_a_push_up_only_once() {
        // Paused (SIGSTOP): NATS keeps its messages, so waiting for it would only stall rooms.
        let bus = Bus::local();
        let token = tokio_util::sync::CancellationToken::new();
        let registry = chat_registry(&bus, &token).await;
        let svc = ChannelService::new(ChannelStore::memory(), bus.clone(), "t", Duration::from_secs(5));
        svc.follow(registry);
        let mut c1 = frontend(&bus, "t", "connector-1").await;
        let members = [Member::new("a", "connector-1")];
        for _ in 0..2 {
            let started = Instant::now();
            svc.push_message_by_uids("onChat", b"{}", &members, None, Delivery::Publish)
                .await
                .unwrap();
            assert!(
                started.elapsed() < Duration::from_secs(1),
                "{:?}",
                started.elapsed()
            );
        }
        let started = Instant::now();
        svc.push_message_by_uids("onChat", b"{}", &members, None, Delivery::Publish)
            .await
            .unwrap();
        assert!(
            started.elapsed() < UNHEARD_PROBE / 2,
            "shown live, it is published to"
        );
        for _ in 0..3 {
            assert!(c1.next().await.is_some());
        }
        token.cancel();
    }

    #[tokio::test]
    async fn a_leave_that_finds_nobody_in_the_store_drops_the_cached_member_too() {
        let store = ChannelStore::memory();
        let svc = ChannelService::new(store.clone(), Bus::local(), "t", Duration::from_secs(60));
        let room = svc.channel("room");
        let a = Member::new("a", "connector-1");
        room.add(&a).await.unwrap();
        room.add(&Member::new("b", "connector-1")).await.unwrap();
        room.members().await.unwrap(); // warm the cache
        // The store forgets `a` behind the cache's back (it lost its data, say).
        assert!(store.leave("room", &a).await.unwrap());
        assert!(!room.leave(&a).await.unwrap());
        assert_eq!(room.member("a").await.unwrap(), None);
        assert_eq!(room.user_amount().await.unwrap(), 1);
    }

    #[test]
    fn a_cached_member_inserted_twice_is_kept_once() {
        // A load from the store and a concurrent add may both insert the same member.
        let mut g = Groups::default();
        let m = Member::new("a", "connector-1");
        g.insert(&m);
        g.insert(&m);
        g.insert(&Member::new("a", "connector-2"));
        assert_eq!(
            g.members().collect::<Vec<_>>(),
            vec![Member::new("a", "connector-2")]
        );
        g.remove("a", "connector-2");
        assert_eq!(g.members().count(), 0);
        assert!(g.by_sid.is_empty());
    }

    #[tokio::test]
    async fn confirmed_pushes_collect_fail_ids_and_fail_when_nobody_answers() {
        let bus = Bus::local();
        let svc = ChannelService::new(
            ChannelStore::memory(),
            bus.clone(),
            "t",
            Duration::from_millis(200),
        );
        let mut c1 = frontend(&bus, "t", "connector-1").await;
        let responder = bus.clone();
        tokio::spawn(async move {
            while let Some(m) = c1.next().await {
                let reply = Reply::value(&vec!["gone".to_owned()]).unwrap();
                responder.respond(&m, reply.encode().unwrap()).await.unwrap();
            }
        });
        let members = vec![
            Member::new("here", "connector-1"),
            Member::new("lost", "connector-9"),
        ];
        let report = svc
            .push_message_by_uids("onChat", b"{}", &members, None, Delivery::Confirm)
            .await
            .unwrap();
        let mut fails = report.fail_ids;
        fails.sort();
        assert_eq!(fails, vec!["gone", "lost"]);

        let only_dead = vec![Member::new("lost", "connector-9")];
        assert!(matches!(
            svc.push_message_by_uids("onChat", b"{}", &only_dead, None, Delivery::Confirm)
                .await,
            Err(ChannelError::AllFailed)
        ));
        assert!(matches!(
            svc.push_message_by_uids("onChat", b"{}", &[], None, Delivery::Confirm)
                .await,
            Err(ChannelError::NoUids)
        ));
    }
}
