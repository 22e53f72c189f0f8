//! When a room changes owner, the new owner waits until the old one has finished with it.
//!
//! crc32(rid) % chat servers moves rooms whenever a chat server joins or leaves. For a moment
//! the old owner may still hold messages of a moved room (queued in its room order, or sent by
//! connectors that had not heard of the change yet) while the new owner receives the next
//! ones. So before the first message of a room that another server owned before a recent
//! change, this server sends that server a barrier for the room (`Envelope::Barrier`): it is
//! answered once everything of the room that reached the old owner before it has been pushed.
//! Only that room waits, once per change, and at most the RPC timeout (an old owner that is
//! gone answers at once: nobody listens on its subject).
//!
//! A chat server that has just started does not know the list before it: it asks the server
//! each room would belong to without it. A leaving chat server keeps serving for the handoff
//! window after its goodbye and until its rooms are idle (see `crate::run`).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use shaddock_bus::{Registry, ServerInfo, ServerList};
use shaddock_remote::RpcClient;
use shaddock_server::sequencer::Job;
use tokio::time::Instant;

use crate::SERVER_TYPE;

/// How long after a change its moved rooms are checked with their old owner.
const FOLLOW_UP: Duration = Duration::from_secs(30);

/// Recent changes of the chat server list, as this server saw them.
#[derive(Debug)]
pub struct Handoff {
    me: String,
    registry: Registry,
    rpc: RpcClient,
    seen: Mutex<Seen>,
    /// Rooms whose old owner did not answer their barrier (see [`Handoff::did_not_hand_over`]).
    unsettled: Mutex<HashSet<String>>,
}

#[derive(Debug)]
struct Seen {
    /// The list this server last looked at.
    last: Arc<ServerList>,
    changes: Vec<Change>,
}

#[derive(Debug)]
struct Change {
    at: Instant,
    before: Before,
    /// Rooms already handed over (or not moved) for this change.
    settled: HashSet<String>,
}

#[derive(Debug)]
enum Before {
    /// This server has just started: each room was the one's it routes to without this server.
    Started,
    List(Arc<ServerList>),
}

impl Handoff {
    pub fn new(me: &str, rpc: RpcClient) -> Self {
        let registry = rpc.registry().clone();
        let last = registry.list();
        Self {
            me: me.to_owned(),
            registry,
            rpc,
            unsettled: Mutex::default(),
            seen: Mutex::new(Seen {
                last,
                changes: vec![Change {
                    at: Instant::now(),
                    before: Before::Started,
                    settled: HashSet::new(),
                }],
            }),
        }
    }

    /// Notes a change of the chat servers since the last look (called on every registry
    /// change, and before every check, so no change goes unseen).
    pub fn observe(&self) {
        let now = self.registry.list();
        self.note(&mut self.seen.lock(), now);
    }

    fn note(&self, seen: &mut Seen, now: Arc<ServerList>) {
        if Arc::ptr_eq(&seen.last, &now) {
            return;
        }
        let ids = |l: &ServerList| {
            l.servers(SERVER_TYPE)
                .iter()
                .map(|s| s.id.clone())
                .collect::<Vec<_>>()
        };
        let moved = ids(&seen.last) != ids(&now);
        let before = std::mem::replace(&mut seen.last, now);
        if moved {
            seen.changes.push(Change {
                at: Instant::now(),
                before: Before::List(before),
                settled: HashSet::new(),
            });
        }
    }

    /// This server was cut off (a pause, a NATS outage) and is back: the others may have
    /// routed its rooms elsewhere meanwhile, though its own list never changed. Each room
    /// then waits, as after a start, for the server it routes to without this one.
    pub fn rejoined(&self) {
        self.seen.lock().changes.push(Change {
            at: Instant::now(),
            before: Before::Started,
            settled: HashSet::new(),
        });
    }

    /// The server that owned `rid` before `change`, if not this one.
    fn old_owner(&self, before: &Before, rid: &str) -> Option<String> {
        let owner = match before {
            Before::List(list) => list.pick(SERVER_TYPE, rid).map(|s| s.id.clone()),
            Before::Started => {
                let now = self.registry.list();
                let others: Vec<ServerInfo> = now
                    .servers(SERVER_TYPE)
                    .iter()
                    .filter(|s| s.id != self.me)
                    .cloned()
                    .collect();
                shaddock_bus::route::pick(rid, &others).map(|s| s.id.clone())
            }
        };
        owner.filter(|o| *o != self.me)
    }

    /// What room `rid` must wait for before its next message: barriers on the servers that
    /// owned it before the recent changes it has not been handed over for yet.
    pub fn hold(self: &Arc<Self>, rid: &str) -> Option<Job> {
        let now = self.registry.list();
        let mut seen = self.seen.lock();
        self.note(&mut seen, now);
        seen.changes.retain(|c| c.at.elapsed() < FOLLOW_UP);
        let mut fresh = false;
        let mut moved = false;
        for change in seen.changes.iter_mut().filter(|c| !c.settled.contains(rid)) {
            match &change.before {
                Before::Started => fresh = true,
                before => match self.old_owner(before, rid) {
                    Some(_) => moved = true,
                    // Was already this server's: nothing to wait for.
                    None => {
                        change.settled.insert(rid.to_owned());
                    }
                },
            }
        }
        drop(seen);
        if !fresh && !moved {
            return None;
        }
        let this = self.clone();
        let rid = rid.to_owned();
        Some(Box::pin(async move {
            if fresh {
                // Just started: know every server before guessing who had the room.
                this.registry.wait_until_complete(this.rpc.timeout()).await;
            }
            let ask = this.old_owners(&rid);
            for owner in &ask {
                this.barrier(owner, &rid).await;
            }
            let mut seen = this.seen.lock();
            for change in seen.changes.iter_mut() {
                change.settled.insert(rid.clone());
            }
        }))
    }

    /// The servers that owned `rid` before the changes it is not settled for.
    fn old_owners(&self, rid: &str) -> Vec<String> {
        let seen = self.seen.lock();
        let mut ask = Vec::new();
        for change in seen.changes.iter().filter(|c| !c.settled.contains(rid)) {
            if let Some(owner) = self.old_owner(&change.before, rid)
                && !ask.contains(&owner)
            {
                ask.push(owner);
            }
        }
        ask
    }

    async fn barrier(&self, owner: &str, rid: &str) {
        let started = Instant::now();
        match self.rpc.barrier(owner, rid).await {
            Ok(_) => tracing::debug!(%rid, %owner, waited = ?started.elapsed(), "room handed over"),
            // Gone (nobody listens) or stuck: the wait is bounded, the room goes on.
            Err(e) => {
                tracing::debug!(%rid, %owner, error = %e, "old owner did not hand over");
                let mut unsettled = self.unsettled.lock();
                if unsettled.len() >= UNSETTLED_MAX {
                    unsettled.clear();
                }
                unsettled.insert(rid.to_owned());
            }
        }
    }

    /// True (once) when room `rid`'s old owner did not answer its barrier: stuck, it may
    /// still hold a batch it wrote and did not push, as if it had died (`crate::takeover`).
    pub fn did_not_hand_over(&self, rid: &str) -> bool {
        self.unsettled.lock().remove(rid)
    }
}

/// Rooms remembered as not handed over at most (each is forgotten at its next write).
const UNSETTLED_MAX: usize = 100_000;

#[cfg(test)]
mod tests {
    use super::*;
    use shaddock_bus::{Bus, Envelope, subject};
    use tokio_util::sync::CancellationToken;
    use tokio_util::task::TaskTracker;

    fn info(id: &str) -> ServerInfo {
        ServerInfo {
            id: id.into(),
            server_type: SERVER_TYPE.into(),
            host: "127.0.0.1".into(),
            client_port: None,
            incarnation: 1,
            draining: false,
        }
    }

    async fn registry(bus: &Bus, id: &str, token: &CancellationToken, tracker: &TaskTracker) -> Registry {
        let timing = shaddock_bus::registry::RegistryTiming {
            heartbeat: Duration::from_millis(50),
            lapse: Duration::from_secs(60),
        };
        Registry::start(bus.clone(), "t", info(id), timing, token.clone(), tracker)
            .await
            .unwrap()
    }

    fn room_of(list: &ServerList, id: &str) -> String {
        (0..1000)
            .map(|i| format!("room{i}"))
            .find(|r| list.pick(SERVER_TYPE, r).is_some_and(|s| s.id == id))
            .unwrap()
    }

    /// Answers barriers on `id`'s subject, counting them.
    async fn answer_barriers(bus: &Bus, id: &str) -> Arc<Mutex<Vec<String>>> {
        let mut sub = bus.subscribe(subject::server("t", id)).await.unwrap();
        let asked = Arc::new(Mutex::new(Vec::new()));
        let log = asked.clone();
        let responder = bus.clone();
        tokio::spawn(async move {
            while let Some(m) = sub.next().await {
                if let Ok(Envelope::Barrier { key }) = Envelope::decode(&m.payload) {
                    log.lock().push(key);
                    let _ = responder.respond(&m, Default::default()).await;
                }
            }
        });
        asked
    }

    #[tokio::test]
    async fn a_room_that_moves_here_asks_its_old_owner_once_and_a_room_that_stays_does_not() {
        let bus = Bus::local();
        let tracker = TaskTracker::new();
        let (token1, token2) = (CancellationToken::new(), CancellationToken::new());
        let reg1 = registry(&bus, "chat-1", &token1, &tracker).await;
        let reg2 = registry(&bus, "chat-2", &token2, &tracker).await;
        assert!(reg1.wait_for(SERVER_TYPE, 2, Duration::from_secs(5)).await);
        let asked_of_2 = answer_barriers(&bus, "chat-2").await;
        let rpc = RpcClient::new(
            bus.clone(),
            reg1.clone(),
            "t",
            Duration::from_secs(1),
            Default::default(),
        );
        let one = Arc::new(Handoff::new("chat-1", rpc));
        let list = reg1.list();
        let (mine, theirs) = (room_of(&list, "chat-1"), room_of(&list, "chat-2"));

        // Just started: a room of mine was chat-2's without me; it is asked once.
        let wait = one.hold(&mine).expect("a fresh server asks the old owner");
        wait.await;
        assert_eq!(*asked_of_2.lock(), vec![mine.clone()]);
        assert!(!one.did_not_hand_over(&mine), "it answered");
        assert!(one.hold(&mine).is_none(), "once per change");
        // Every room of a fresh server is asked for once (its list before it is unknown).
        one.hold(&theirs).expect("asked once").await;

        // chat-2 leaves: its rooms move here and are asked for; rooms that were mine are not.
        token2.cancel();
        let start = Instant::now();
        while reg1.list().servers(SERVER_TYPE).len() != 1 {
            assert!(start.elapsed() < Duration::from_secs(5), "chat-2 never left");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let moved = one.hold(&theirs).expect("a moved room waits for its old owner");
        moved.await;
        assert_eq!(
            *asked_of_2.lock(),
            vec![mine.clone(), theirs.clone(), theirs.clone()]
        );
        assert!(one.hold(&theirs).is_none());
        assert!(one.hold(&mine).is_none(), "a room that stayed never waits");
        drop(reg2);
        token1.cancel();
    }

    #[tokio::test]
    async fn a_room_whose_old_owner_does_not_answer_its_barrier_is_known_as_not_handed_over_once() {
        let bus = Bus::local();
        let tracker = TaskTracker::new();
        let (token1, token2) = (CancellationToken::new(), CancellationToken::new());
        let reg1 = registry(&bus, "chat-1", &token1, &tracker).await;
        let _reg2 = registry(&bus, "chat-2", &token2, &tracker).await;
        assert!(reg1.wait_for(SERVER_TYPE, 2, Duration::from_secs(5)).await);
        // Nobody answers on chat-2's subject.
        let rpc = RpcClient::new(
            bus.clone(),
            reg1.clone(),
            "t",
            Duration::from_millis(200),
            Default::default(),
        );
        let one = Arc::new(Handoff::new("chat-1", rpc));
        let mine = room_of(&reg1.list(), "chat-1");
        one.hold(&mine).expect("a fresh server asks the old owner").await;
        assert!(one.did_not_hand_over(&mine));
        assert!(!one.did_not_hand_over(&mine), "told once");
        token1.cancel();
        token2.cancel();
    }
}
