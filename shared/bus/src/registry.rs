//! The server registry, the job of Pomelo's master: each server announces
//! `{id, type, host, clientPort}` on `<ns>.registry` and heartbeats; every server keeps the
//! live list, sorted by id, on a `watch` channel, so routing needs no round trip.
//!
//! ## Behavior
//! - A newcomer says `Hello`; everyone answers at once with its `Roster` (itself and every
//!   server it knows), so the newcomer learns the whole list within one round trip, even the
//!   servers that are too busy (or stopped) to answer it themselves: a chat server that starts
//!   must know every room's current owner before it serves a room.
//! - A server missing for `lapse` leaves the list; `Bye` (on shutdown) removes it at once.
//!   It must also have heard its own heartbeat come back a lapse after the other's last one:
//!   an overloaded server hears everyone late, itself included, and must not take them all
//!   for dead.
//! - While this server's own bus is disconnected nobody is expired, and after a reconnect
//!   everyone gets a fresh `lapse`: a NATS restart must not look like every server dying.
//! - A server always lists itself.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt as _;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::{Bus, BusError, subject};

/// One server as the others see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerInfo {
    pub id: String,
    pub server_type: String,
    /// The host clients connect to.
    pub host: String,
    pub client_port: Option<u16>,
    /// Differs on every start: a server that restarts under the same id is a new incarnation,
    /// and what the old one held (sessions, channel members) is gone.
    #[serde(default)]
    pub incarnation: u64,
    /// Shutting down: it keeps its sessions (and its place in rooms) while it hands them
    /// back, but takes no new ones (the gate routes nobody to it).
    #[serde(default)]
    pub draining: bool,
}

impl ServerInfo {
    /// A fresh incarnation number for a starting server.
    pub fn new_incarnation() -> u64 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        nanos ^ u64::from(std::process::id()).rotate_left(48)
    }
}

#[derive(Debug, Serialize, Deserialize)]
enum Announce {
    Hello(ServerInfo),
    Alive(ServerInfo),
    Bye(String),
    /// The answer to a `Hello`: the sender first, then the others it knows.
    Roster(Vec<ServerInfo>),
}

/// The live servers, by type, each list sorted by id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerList {
    by_type: BTreeMap<String, Vec<ServerInfo>>,
}

impl ServerList {
    fn from_servers<'a>(servers: impl Iterator<Item = &'a ServerInfo>) -> Self {
        let mut by_type: BTreeMap<String, Vec<ServerInfo>> = BTreeMap::new();
        for s in servers {
            by_type.entry(s.server_type.clone()).or_default().push(s.clone());
        }
        for list in by_type.values_mut() {
            list.sort_by(|a, b| a.id.cmp(&b.id));
        }
        Self { by_type }
    }

    /// The servers of one type, sorted by id.
    pub fn servers(&self, server_type: &str) -> &[ServerInfo] {
        self.by_type.get(server_type).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The server of `server_type` that `key` routes to (crc32 % n).
    pub fn pick(&self, server_type: &str, key: &str) -> Option<&ServerInfo> {
        crate::route::pick(key, self.servers(server_type))
    }

    /// As [`ServerList::pick`], among the servers that are not draining: where a new client
    /// goes.
    pub fn pick_serving(&self, server_type: &str, key: &str) -> Option<ServerInfo> {
        let serving: Vec<ServerInfo> = self
            .servers(server_type)
            .iter()
            .filter(|s| !s.draining)
            .cloned()
            .collect();
        crate::route::pick(key, &serving).cloned()
    }

    pub fn contains(&self, id: &str) -> bool {
        self.all().any(|s| s.id == id)
    }

    pub fn all(&self) -> impl Iterator<Item = &ServerInfo> {
        self.by_type.values().flatten()
    }

    /// Servers of `server_type` in `self` that are gone from `new` or came back as a new
    /// incarnation: whatever they held is lost.
    pub fn departed<'a>(&'a self, new: &ServerList, server_type: &str) -> Vec<&'a ServerInfo> {
        self.servers(server_type)
            .iter()
            .filter(|old| {
                !new.servers(server_type)
                    .iter()
                    .any(|n| n.id == old.id && n.incarnation == old.incarnation)
            })
            .collect()
    }
}

/// Timing of the registry.
#[derive(Debug, Clone, Copy)]
pub struct RegistryTiming {
    pub heartbeat: Duration,
    pub lapse: Duration,
}

/// A handle on the live server list.
#[derive(Debug, Clone)]
pub struct Registry {
    list: watch::Receiver<Arc<ServerList>>,
    /// Set once this server drains (see [`Registry::set_draining`]).
    draining: Arc<watch::Sender<bool>>,
    /// Counts this server's returns from being cut off (see [`Registry::rejoins`]).
    rejoins: watch::Receiver<u64>,
    /// True once the list is known to be complete: another server's roster has been heard,
    /// or one heartbeat has passed since this server said `Hello` (nobody was there).
    complete: watch::Receiver<bool>,
    /// When each other server was last heard first hand (see [`Registry::is_heard`]).
    heard: Heard,
    /// The incarnations that said `Bye` lately (see [`Registry::left_in_good_order`]).
    left: Left,
    bus: Bus,
    timing: RegistryTiming,
}

/// Server id -> when its heartbeat last arrived.
type Heard = Arc<parking_lot::Mutex<HashMap<String, Instant>>>;

/// Incarnation -> when it said `Bye`.
type Left = Arc<parking_lot::Mutex<HashMap<u64, Instant>>>;

/// How long a `Bye` is remembered.
const LEFT_KEPT: Duration = Duration::from_secs(600);

impl Registry {
    /// Joins the registry and keeps the list current until `token` is cancelled, when it
    /// says `Bye`.
    pub async fn start(
        bus: Bus,
        namespace: &str,
        me: ServerInfo,
        timing: RegistryTiming,
        token: CancellationToken,
        tracker: &TaskTracker,
    ) -> Result<Self, BusError> {
        let subject = subject::registry(namespace);
        let sub = bus.subscribe(subject.clone()).await?;
        let initial = Arc::new(ServerList::from_servers(std::iter::once(&me)));
        let (tx, rx) = watch::channel(initial);
        let (complete_tx, complete) = watch::channel(false);
        let (draining, draining_rx) = watch::channel(false);
        let (rejoins_tx, rejoins) = watch::channel(0u64);
        let heard = Heard::default();
        let left = Left::default();
        let task = RegistryTask {
            bus: bus.clone(),
            heard: heard.clone(),
            left: left.clone(),
            subject,
            me,
            timing,
            seen: HashMap::new(),
            tx,
            complete_tx,
            rejoins: rejoins_tx,
        };
        tracker.spawn(task.run(sub, draining_rx, token));
        Ok(Self {
            list: rx,
            draining: Arc::new(draining),
            rejoins,
            complete,
            heard,
            left,
            bus,
            timing,
        })
    }

    /// True when `incarnation` is in the list now, or left it lately saying `Bye` (it
    /// finished its work first); false for one that vanished (expired, or replaced by a new
    /// incarnation of its id: it died, or was paused past the lapse), or left unheard.
    pub fn left_in_good_order(&self, incarnation: u64) -> bool {
        self.list().all().any(|s| s.incarnation == incarnation) || self.left.lock().contains_key(&incarnation)
    }

    /// True when server `id` has been heard since this server's bus last (re)connected, and
    /// lately: then its subjects are live (a server subscribes again before it heartbeats
    /// again). Otherwise what is published to it now may be lost: after a NATS restart, the
    /// servers that reconnect first would otherwise push into subjects nobody listens on yet.
    pub fn is_heard(&self, id: &str) -> bool {
        if !self.bus.is_connected() {
            return false;
        }
        let Some(at) = self.heard.lock().get(id).copied() else {
            return false;
        };
        let fresh_for = (self.timing.heartbeat * 3).max(self.timing.lapse / 2);
        self.bus.connected_since().is_none_or(|up| at >= up) && at.elapsed() < fresh_for
    }

    /// How long a server may go unheard before it leaves the list.
    pub fn lapse(&self) -> Duration {
        self.timing.lapse
    }

    /// Tells everyone at once that this server is draining (see [`ServerInfo::draining`]).
    pub fn set_draining(&self) {
        self.draining.send_replace(true);
    }

    /// Wakes each time this server comes back from being cut off (a NATS outage, a pause):
    /// the others may have routed around it meanwhile even though its own list never changed.
    pub fn rejoins(&self) -> watch::Receiver<u64> {
        self.rejoins.clone()
    }

    /// True once [`Registry::set_draining`] was called.
    pub fn is_draining(&self) -> bool {
        *self.draining.borrow()
    }

    /// Waits (at most `timeout`) until this server's list is complete: another server told it
    /// every server it knows, or one heartbeat passed with nobody there.
    pub async fn wait_until_complete(&self, timeout: Duration) -> bool {
        let mut rx = self.complete.clone();
        tokio::time::timeout(timeout, rx.wait_for(|heard| *heard))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// True once this server's list is complete (see [`Registry::wait_until_complete`]).
    pub fn is_complete(&self) -> bool {
        *self.complete.borrow()
    }

    /// The current list.
    pub fn list(&self) -> Arc<ServerList> {
        self.list.borrow().clone()
    }

    /// A receiver that wakes on every change.
    pub fn watch(&self) -> watch::Receiver<Arc<ServerList>> {
        self.list.clone()
    }

    /// Waits until at least `n` servers of `server_type` are listed, or `timeout` passes.
    pub async fn wait_for(&self, server_type: &str, n: usize, timeout: Duration) -> bool {
        let mut rx = self.list.clone();
        tokio::time::timeout(timeout, async {
            loop {
                if rx.borrow_and_update().servers(server_type).len() >= n {
                    return true;
                }
                if rx.changed().await.is_err() {
                    return false;
                }
            }
        })
        .await
        .unwrap_or(false)
    }
}

/// What the registry task knows of its own link.
#[derive(Debug)]
struct Hearing {
    said_hello: Instant,
    /// When this server last heard its own heartbeat come back: if it has not for a lapse,
    /// it is the one cut off (NATS paused, or this process was stopped), and nobody else
    /// is expired until it hears itself again, then everyone gets a fresh lapse.
    heard_self: Instant,
    cut_off: bool,
    was_connected: bool,
}

impl Hearing {
    fn new() -> Self {
        Self {
            said_hello: Instant::now(),
            heard_self: Instant::now(),
            cut_off: false,
            was_connected: true,
        }
    }
}

struct RegistryTask {
    bus: Bus,
    subject: String,
    me: ServerInfo,
    timing: RegistryTiming,
    seen: HashMap<String, (ServerInfo, Instant)>,
    tx: watch::Sender<Arc<ServerList>>,
    complete_tx: watch::Sender<bool>,
    rejoins: watch::Sender<u64>,
    heard: Heard,
    left: Left,
}

impl RegistryTask {
    async fn run(
        mut self,
        mut sub: crate::Subscription,
        mut draining: watch::Receiver<bool>,
        token: CancellationToken,
    ) {
        self.announce(Announce::Hello(self.me.clone())).await;
        let mut tick = tokio::time::interval(self.timing.heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut hearing = Hearing::new();
        loop {
            tokio::select! {
                _ = token.cancelled() => break,
                changed = draining.changed(), if !self.me.draining => {
                    if changed.is_ok() && *draining.borrow() {
                        self.me.draining = true;
                        self.publish_list();
                        self.announce(Announce::Alive(self.me.clone())).await;
                    }
                }
                msg = sub.next() => {
                    let Some(msg) = msg else { break };
                    self.on_message(&msg.payload, &mut hearing).await;
                }
                _ = tick.tick() => self.on_tick(&mut sub, &mut hearing).await,
            }
        }
        self.announce(Announce::Bye(self.me.id.clone())).await;
        let _ = self.bus.flush().await;
    }

    async fn on_message(&mut self, payload: &[u8], hearing: &mut Hearing) {
        match rmp_serde::from_slice::<Announce>(payload) {
            Ok(Announce::Alive(info) | Announce::Hello(info)) if info.id == self.me.id => {
                hearing.heard_self = Instant::now();
            }
            Ok(a) => self.on_announce(a).await,
            Err(e) => tracing::debug!(error = %e, "ignoring a bad registry message"),
        }
    }

    /// Judges who is alive, then says this server is.
    async fn on_tick(&mut self, sub: &mut crate::Subscription, hearing: &mut Hearing) {
        // Everything already received first. After this task was starved (an overloaded
        // process), its own heartbeat and everyone else's wait here together; `select!` picks
        // at random, so the tick could come right after this server's own heartbeat and
        // before the others', and expire them all although their heartbeats were in hand.
        while let Some(Some(msg)) = sub.next().now_or_never() {
            self.on_message(&msg.payload, hearing).await;
        }
        if hearing.said_hello.elapsed() >= self.timing.heartbeat {
            // Any live server answers a Hello at once: nobody did, so none is there.
            self.complete_tx.send_if_modified(|c| !std::mem::replace(c, true));
        }
        let connected = self.bus.is_connected();
        // A healthy server hears itself within a heartbeat; three missed mean it is
        // cut off, well before anyone else's lapse could be trusted.
        let hears = hearing.heard_self.elapsed() < self.timing.heartbeat * 3;
        if (connected && !hearing.was_connected) || (hears && hearing.cut_off) {
            // Back from a NATS outage or a pause: give everyone a fresh lapse.
            let now = Instant::now();
            for (_, at) in self.seen.values_mut() {
                *at = now;
            }
            // Tell the watchers even if the list is the same: what they cached
            // while cut off may be stale.
            self.rejoins.send_modify(|n| *n += 1);
            self.publish_list();
        }
        if !hears && !hearing.cut_off {
            tracing::warn!("this server does not hear its own heartbeat: expiring nobody");
            // Most often this server was paused and has just woken: say so before
            // the Alive below brings traffic back, so that what it does next waits
            // for whoever served its work meanwhile. Said again once it hears itself.
            self.rejoins.send_modify(|n| *n += 1);
        }
        hearing.was_connected = connected;
        hearing.cut_off = !hears;
        if connected && hears {
            self.expire(hearing.heard_self);
        }
        self.announce(Announce::Alive(self.me.clone())).await;
    }

    async fn on_announce(&mut self, a: Announce) {
        match a {
            Announce::Hello(info) | Announce::Alive(info) if info.id == self.me.id => {}
            Announce::Hello(info) => {
                self.heard.lock().insert(info.id.clone(), Instant::now());
                // The roster leaves before this server may route anything to the newcomer.
                let roster = std::iter::once(&self.me)
                    .chain(self.seen.values().map(|(s, _)| s))
                    .cloned()
                    .collect();
                self.announce(Announce::Roster(roster)).await;
                self.see(info);
            }
            Announce::Alive(info) => {
                self.heard.lock().insert(info.id.clone(), Instant::now());
                self.see(info)
            }
            Announce::Roster(servers) => {
                let mut servers = servers.into_iter();
                let mut changed = false;
                if let Some(sender) = servers.next().filter(|s| s.id != self.me.id) {
                    self.heard.lock().insert(sender.id.clone(), Instant::now());
                    changed |= self.note(sender);
                }
                // Second hand: learnt if unknown, never kept alive by hearsay.
                for info in servers {
                    if info.id != self.me.id && !self.seen.contains_key(&info.id) {
                        changed |= self.note(info);
                    }
                }
                if changed {
                    self.publish_list();
                }
                self.complete_tx.send_replace(true);
            }
            Announce::Bye(id) => {
                self.heard.lock().remove(&id);
                if let Some((info, _)) = self.seen.remove(&id) {
                    let mut left = self.left.lock();
                    left.retain(|_, at| at.elapsed() < LEFT_KEPT);
                    left.insert(info.incarnation, Instant::now());
                    drop(left);
                    tracing::info!(server.id = %id, "server left");
                    self.publish_list();
                }
            }
        }
    }

    fn see(&mut self, info: ServerInfo) {
        if self.note(info) {
            self.publish_list();
        }
    }

    /// Records `info` as alive now; true when the list changed (the caller publishes it).
    fn note(&mut self, info: ServerInfo) -> bool {
        let changed = match self.seen.get(&info.id) {
            Some((old, _)) => *old != info,
            None => true,
        };
        if changed {
            tracing::info!(server.id = %info.id, server.type = %info.server_type, "server joined");
        }
        self.seen.insert(info.id.clone(), (info, Instant::now()));
        changed
    }

    /// Drops the servers not heard for a lapse, and only if this server heard its own
    /// heartbeat come back (about) a lapse after their last: when this server's inbound is
    /// late (NATS or this process overloaded), everyone's heartbeats are late together with
    /// its own, and only silence while its own still come through says another one is gone.
    /// Its own are heard once a heartbeat, hence the heartbeat of slack.
    fn expire(&mut self, heard_self: Instant) {
        let lapse = self.timing.lapse;
        let while_heard = lapse.saturating_sub(self.timing.heartbeat);
        let before = self.seen.len();
        self.seen.retain(|id, (_, at)| {
            let alive = at.elapsed() < lapse || heard_self.saturating_duration_since(*at) < while_heard;
            if !alive {
                tracing::warn!(server.id = %id, "server heartbeat lapsed");
                self.heard.lock().remove(id);
            }
            alive
        });
        if self.seen.len() != before {
            self.publish_list();
        }
    }

    fn publish_list(&self) {
        let list = ServerList::from_servers(
            self.seen
                .values()
                .map(|(s, _)| s)
                .chain(std::iter::once(&self.me)),
        );
        self.tx.send_replace(Arc::new(list));
    }

    async fn announce(&self, a: Announce) {
        let Ok(bytes) = rmp_serde::to_vec(&a) else {
            return;
        };
        if let Err(e) = self.bus.publish(self.subject.clone(), bytes.into()).await {
            tracing::debug!(error = %e, "registry announce failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: &str, t: &str) -> ServerInfo {
        ServerInfo {
            id: id.into(),
            server_type: t.into(),
            host: "127.0.0.1".into(),
            client_port: None,
            incarnation: 1,
            draining: false,
        }
    }

    #[test]
    fn a_server_back_under_a_new_incarnation_has_departed() {
        let old = ServerList::from_servers([info("c-1", "connector"), info("c-2", "connector")].iter());
        let mut back = info("c-1", "connector");
        back.incarnation = 2;
        let new = ServerList::from_servers([back].iter());
        let gone: Vec<_> = old
            .departed(&new, "connector")
            .iter()
            .map(|s| s.id.clone())
            .collect();
        assert_eq!(gone, vec!["c-1", "c-2"]);
        assert!(new.departed(&new, "connector").is_empty());
    }

    fn timing() -> RegistryTiming {
        RegistryTiming {
            heartbeat: Duration::from_millis(100),
            lapse: Duration::from_millis(300),
        }
    }

    /// The registry task of server `id` (a chat server), not running.
    fn task_of(id: &str, bus: Bus) -> RegistryTask {
        RegistryTask {
            bus,
            heard: Heard::default(),
            subject: "t.registry".into(),
            me: info(id, "chat"),
            timing: timing(),
            seen: HashMap::new(),
            tx: watch::channel(Arc::new(ServerList::default())).0,
            complete_tx: watch::channel(false).0,
            rejoins: watch::channel(0).0,
            left: Left::default(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_server_is_expired_only_after_a_lapse_in_which_this_one_heard_itself() {
        let mut task = task_of("chat-1", Bus::local());
        task.note(info("connector-1", "connector"));
        let last_heard = Instant::now();
        tokio::time::advance(Duration::from_secs(2)).await;
        // This server's own heartbeats were as late as the other's: its inbound is behind,
        // and the other may well be alive.
        task.expire(last_heard + Duration::from_millis(150));
        assert!(task.seen.contains_key("connector-1"));
        // Its own came back a lapse (less the heartbeat between two of its own) after the
        // other's last one: the other is gone.
        task.expire(last_heard + Duration::from_millis(200));
        assert!(!task.seen.contains_key("connector-1"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_tick_after_a_stall_reads_every_heartbeat_already_received_before_expiring_anyone() {
        let bus = Bus::local();
        let mut task = task_of("chat-1", bus.clone());
        let mut sub = bus.subscribe(task.subject.clone()).await.unwrap();
        let mut hearing = Hearing::new();
        task.note(info("connector-1", "connector"));
        // This task was starved for seconds; meanwhile its own heartbeat and the other's came.
        tokio::time::advance(Duration::from_secs(2)).await;
        for who in [info("chat-1", "chat"), info("connector-1", "connector")] {
            let alive = rmp_serde::to_vec(&Announce::Alive(who)).unwrap();
            bus.publish(task.subject.clone(), alive.into()).await.unwrap();
        }
        // The loop reads its own first, then the tick fires.
        let own = sub.next().await.unwrap();
        task.on_message(&own.payload, &mut hearing).await;
        task.on_tick(&mut sub, &mut hearing).await;
        assert!(
            task.seen.contains_key("connector-1"),
            "expired with its heartbeat in hand"
        );
    }

    #[tokio::test]
    async fn servers_learn_each_other_and_a_stopped_one_leaves() {
        let bus = Bus::local();
        let tracker = TaskTracker::new();
        let a_token = CancellationToken::new();
        let b_token = CancellationToken::new();
        let a = Registry::start(
            bus.clone(),
            "t",
            info("chat-2", "chat"),
            timing(),
            a_token.clone(),
            &tracker,
        )
        .await
        .unwrap();
        let _b = Registry::start(
            bus.clone(),
            "t",
            ServerInfo {
                incarnation: 7,
                ..info("chat-1", "chat")
            },
            timing(),
            b_token.clone(),
            &tracker,
        )
        .await
        .unwrap();
        assert!(a.wait_for("chat", 2, Duration::from_secs(2)).await);
        let ids: Vec<_> = a.list().servers("chat").iter().map(|s| s.id.clone()).collect();
        assert_eq!(ids, vec!["chat-1", "chat-2"]);

        b_token.cancel();
        let mut rx = a.watch();
        tokio::time::timeout(Duration::from_secs(2), async {
            while rx.borrow_and_update().servers("chat").len() != 1 {
                rx.changed().await.unwrap();
            }
        })
        .await
        .unwrap();
        assert!(a.left_in_good_order(7), "it said Bye");
        assert!(!a.left_in_good_order(8), "never seen");
        a_token.cancel();
    }
}
