//! The bus: publish, request with a timeout, subscribe. NATS for clusters, in-process for the
//! single-process build.
//!
//! ## Behavior
//! - `publish` never waits for a subscriber; with nobody listening the message is dropped.
//! - `request` fails with [`BusError::Timeout`] or [`BusError::NoResponders`]; it never hangs.
//! - NATS reconnects by itself (async-nats); calls made during the gap fail or time out.
//! - A subscription's queue is bounded: when a subscriber falls behind, messages are dropped
//!   (async-nats reports a slow consumer) rather than slowing the publisher.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use parking_lot::Mutex;
use tokio::sync::mpsc;

use crate::BusError;
use crate::batch;
use crate::coalesce::Coalescer;
use crate::reply::{Forget, PendingReply, ReplyMux};
use crate::stats::BusStats;

/// Messages a subscription buffers before dropping.
pub const SUBSCRIPTION_CAPACITY: usize = 65_536;

/// One message received on a subscription.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub subject: String,
    /// Where to send the answer, when the sender waits for one.
    pub reply: Option<String>,
    pub payload: Bytes,
}

/// The bus handle: cheap to clone.
#[derive(Debug, Clone)]
pub enum Bus {
    Nats(NatsBus),
    Local(LocalBus),
}

/// A NATS connection and the answers awaited on it.
#[derive(Debug, Clone)]
pub struct NatsBus {
    client: async_nats::Client,
    shared: Arc<NatsShared>,
    stats: BusStats,
}

#[derive(Debug)]
struct NatsShared {
    replies: Arc<ReplyMux>,
    /// Publishes waiting for the end of the instant (see [`crate::batch`]); `None` with
    /// batching off, where every publish leaves at once.
    out: Option<Arc<Coalescer>>,
    /// This server's own subject: answers to its requests may come inside batches sent
    /// there, once it is subscribed (`home_live`).
    home: Option<String>,
    home_live: AtomicBool,
    /// When the connection last came up (first connect or reconnect).
    connected_at: Arc<parking_lot::Mutex<tokio::time::Instant>>,
    /// Counts the moments this server may have lost what was sent to it (see
    /// [`Bus::losses`]).
    losses: tokio::sync::watch::Sender<u64>,
    /// The client's counters (`connects`: see [`Bus::connects`]).
    statistics: Arc<async_nats::Statistics>,
    /// Bumped each time the connection comes up (see [`Bus::comebacks`]).
    comebacks: tokio::sync::watch::Sender<u64>,
}

impl Bus {
    /// Connects to NATS (TCP_NODELAY is async-nats' default).
    /// Connects to `url`: one NATS server, or several of a cluster, comma-separated (the
    /// client picks one and fails over to the others, and to those the cluster announces).
    pub async fn connect_nats(url: &str, name: &str) -> Result<Self, BusError> {
        Self::connect_nats_at(url, name, None, true).await
    }

    /// As [`Bus::connect_nats`], for a server whose own subject is `home`: answers to its
    /// requests then travel in batches with what else goes there (see [`crate::batch`]).
    /// `batching`: whether this server sends batches at all.
    pub async fn connect_nats_at(
        url: &str,
        name: &str,
        home: Option<String>,
        batching: bool,
    ) -> Result<Self, BusError> {
        let stats = BusStats::default();
        let counted = stats.clone();
        let connected_at = Arc::new(parking_lot::Mutex::new(tokio::time::Instant::now()));
        let marked = connected_at.clone();
        let losses = tokio::sync::watch::Sender::new(0u64);
        let lost = losses.clone();
        let comebacks = tokio::sync::watch::Sender::new(0u64);
        let back = comebacks.clone();
        let client = async_nats::ConnectOptions::new()
            .name(name)
            .subscription_capacity(SUBSCRIPTION_CAPACITY)
            .connection_timeout(Duration::from_secs(3))
            .event_callback(move |event| {
                let stats = counted.clone();
                let marked = marked.clone();
                let lost = lost.clone();
                let back = back.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            *marked.lock() = tokio::time::Instant::now();
                            stats.nats_connects.inc();
                            back.send_modify(|n| *n += 1);
                            tracing::info!("nats connected")
                        }
                        async_nats::Event::Disconnected => {
                            stats.nats_disconnects.inc();
                            lost.send_modify(|n| *n += 1);
                            tracing::warn!("nats disconnected")
                        }
                        // Not a loss here: the event does not say which subscription (a reply
                        // inbox loses no push), and dropping every recovering client on each
                        // one would feed the overload that caused it.
                        async_nats::Event::SlowConsumer(sid) => {
                            stats.slow_consumer_events.inc();
                            tracing::warn!(sid, "nats slow consumer, messages dropped")
                        }
                        other => tracing::debug!(event = %other, "nats event"),
                    }
                }
            })
            .connect(servers(url)?)
            .await
            .map_err(|e| BusError::Connect {
                url: url.to_owned(),
                reason: e.to_string(),
            })?;
        let replies = ReplyMux::start(&client, home.as_deref()).await?;
        let out = batching.then(|| Coalescer::start(client.clone(), stats.clone()));
        let statistics = client.statistics();
        Ok(Bus::Nats(NatsBus {
            client,
            shared: Arc::new(NatsShared {
                replies,
                out,
                home,
                home_live: AtomicBool::new(false),
                connected_at,
                losses,
                statistics,
                comebacks,
            }),
            stats,
        }))
    }

    /// A fresh in-process bus (every handle cloned from it shares it).
    pub fn local() -> Self {
        Bus::Local(LocalBus::default())
    }

    /// What this bus counts, to register in a metrics registry.
    pub fn stats(&self) -> &BusStats {
        match self {
            Bus::Nats(n) => &n.stats,
            Bus::Local(l) => &l.inner.stats,
        }
    }

    /// Publishes at once (after what was batched before it, so a handle's messages keep
    /// their order).
    pub async fn publish(&self, subject: String, payload: Bytes) -> Result<(), BusError> {
        match self {
            Bus::Nats(n) => {
                let _sending = n.send_pending().await;
                n.client
                    .publish(subject, payload)
                    .await
                    .map_err(|e| BusError::Publish(e.to_string()))
            }
            Bus::Local(l) => {
                l.deliver(&subject, None, payload);
                Ok(())
            }
        }
    }

    /// Sends `payload` and waits at most `timeout` for one answer.
    pub async fn request(
        &self,
        subject: String,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, BusError> {
        self.send_request(subject, payload, timeout).await.answer().await
    }

    /// Sends a request and returns once it has left, in order with everything this handle
    /// published before; the answer is awaited on the returned [`PendingReply`].
    pub async fn send_request(&self, subject: String, payload: Bytes, timeout: Duration) -> PendingReply {
        let sent = match self {
            Bus::Nats(n) => {
                let _sending = n.send_pending().await;
                let batchable = n.shared.home_live.load(Ordering::Relaxed);
                n.shared
                    .replies
                    .send(&n.client, subject, payload, timeout, batchable)
                    .await
            }
            Bus::Local(l) => l.send_request(subject, payload, timeout),
        };
        sent.unwrap_or_else(PendingReply::failed)
            .counting(self.stats().request_failures.clone())
    }

    /// With batching on, queues `payload` to leave at the end of this instant in one message
    /// with whatever else this handle publishes to the same server meanwhile (a failure is
    /// then only logged); otherwise [`Bus::publish`]. The order of a handle's messages is kept.
    pub async fn publish_batched(&self, subject: String, payload: Bytes) -> Result<(), BusError> {
        match self {
            Bus::Nats(NatsBus { shared, .. }) if let Some(out) = &shared.out => {
                out.queue(subject, None, payload);
                Ok(())
            }
            _ => self.publish(subject, payload).await,
        }
    }

    /// Answers a request as [`Bus::publish_batched`] publishes: with the pushes that go to
    /// the same server, when the requester takes its answers in batches.
    pub async fn respond_batched(&self, incoming: &Incoming, payload: Bytes) -> Result<(), BusError> {
        match &incoming.reply {
            Some(reply) => self.publish_batched(reply.clone(), payload).await,
            None => Ok(()),
        }
    }

    pub async fn subscribe(&self, subject: String) -> Result<Subscription, BusError> {
        match self {
            Bus::Nats(n) => {
                let sub = n
                    .client
                    .subscribe(subject.clone())
                    .await
                    .map_err(|e| BusError::Subscribe(e.to_string()))?;
                let home = n.shared.home.as_deref() == Some(subject.as_str());
                if home {
                    n.shared.home_live.store(true, Ordering::Relaxed);
                }
                Ok(Subscription::Nats(NatsSubscription {
                    sub,
                    unpacked: VecDeque::new(),
                    replies: home.then(|| n.shared.replies.clone()),
                }))
            }
            Bus::Local(l) => Ok(Subscription::Local(l.subscribe(subject))),
        }
    }

    /// Answers a request received on a subscription; a no-op when nobody waits.
    pub async fn respond(&self, incoming: &Incoming, payload: Bytes) -> Result<(), BusError> {
        match &incoming.reply {
            Some(reply) => self.publish(reply.clone(), payload).await,
            None => Ok(()),
        }
    }

    /// Waits until everything published so far has left this process.
    pub async fn flush(&self) -> Result<(), BusError> {
        match self {
            Bus::Nats(n) => {
                drop(n.send_pending().await);
                n.client
                    .flush()
                    .await
                    .map_err(|e| BusError::Publish(e.to_string()))
            }
            Bus::Local(_) => Ok(()),
        }
    }

    /// Waits until the NATS server has handled everything this bus sent so far, its
    /// subscriptions included, so that another connection's publishes reach them (one round
    /// trip; [`Bus::flush`] only writes the socket). Immediate for the in-process bus.
    pub async fn sync(&self, timeout: Duration) -> Result<(), BusError> {
        match self {
            Bus::Nats(n) => {
                drop(n.send_pending().await);
                n.shared.replies.sync(&n.client, timeout).await
            }
            Bus::Local(_) => Ok(()),
        }
    }

    /// When the connection to NATS last came up; `None` for an in-process bus (always up).
    /// A subject another server subscribed before is only live again once that server has
    /// reconnected too: what was published to it meanwhile is lost.
    pub fn connected_since(&self) -> Option<tokio::time::Instant> {
        match self {
            Bus::Nats(n) => Some(*n.shared.connected_at.lock()),
            Bus::Local(_) => None,
        }
    }

    /// Changes each time what was published to this server may have been lost: its
    /// connection dropped (NATS keeps nothing for a subject nobody listens on, and what was
    /// on its way when the server died is gone). `None` for the in-process bus, which loses
    /// nothing.
    pub fn losses(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        match self {
            Bus::Nats(n) => Some(n.shared.losses.subscribe()),
            Bus::Local(_) => None,
        }
    }

    /// How many times the connection came up (the first connect included; 0 for the
    /// in-process bus). Counted before anything is read from a new connection, so a message
    /// received after it changed may be the first of a new connection: what was on its way
    /// before is lost, though the `Disconnected` event (see [`Bus::losses`]) may not have
    /// been handled yet.
    pub fn connects(&self) -> u64 {
        match self {
            Bus::Nats(n) => n.shared.statistics.connects.load(Ordering::Relaxed),
            Bus::Local(_) => 0,
        }
    }

    /// Changes each time the connection comes up (after [`Bus::connects`] has counted it),
    /// so that a loop that checks `connects` per message also learns of a new connection
    /// when nothing arrives on it. `None` for the in-process bus.
    pub fn comebacks(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        match self {
            Bus::Nats(n) => Some(n.shared.comebacks.subscribe()),
            Bus::Local(_) => None,
        }
    }

    /// Returns once the transport is connected (at once for the in-process bus).
    pub async fn until_connected(&self) {
        while !self.is_connected() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// True while the transport is connected (always for the in-process bus).
    pub fn is_connected(&self) -> bool {
        match self {
            Bus::Nats(n) => n.client.connection_state() == async_nats::connection::State::Connected,
            Bus::Local(_) => true,
        }
    }
}

impl NatsBus {
    /// Sends what was batched, and holds the batcher's lock so the caller's own message
    /// leaves after it; nothing to do with batching off.
    async fn send_pending(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match &self.shared.out {
            Some(out) => Some(out.send_pending().await),
            None => None,
        }
    }
}

/// A stream of messages on one subject; dropping it unsubscribes.
#[derive(Debug)]
pub enum Subscription {
    Nats(NatsSubscription),
    Local(mpsc::Receiver<Incoming>),
}

/// A NATS subscription, and the rest of a batch being read.
#[derive(Debug)]
pub struct NatsSubscription {
    sub: async_nats::Subscriber,
    unpacked: VecDeque<Incoming>,
    /// On the server's own subject: where answers inside batches go.
    replies: Option<Arc<ReplyMux>>,
}

impl Subscription {
    /// The next message; `None` once the bus is gone. A batch gives its messages one by one.
    pub async fn next(&mut self) -> Option<Incoming> {
        match self {
            Subscription::Nats(NatsSubscription {
                sub,
                unpacked,
                replies,
            }) => loop {
                if let Some(m) = unpacked.pop_front() {
                    return Some(m);
                }
                let m = sub.next().await?;
                if !batch::is_batch(&m.payload) {
                    return Some(Incoming {
                        subject: m.subject.to_string(),
                        reply: m.reply.map(|r| r.to_string()),
                        payload: m.payload,
                    });
                }
                for item in batch::read(&m.payload) {
                    match item.subject {
                        None => unpacked.push_back(Incoming {
                            subject: m.subject.to_string(),
                            reply: item.reply,
                            payload: item.payload,
                        }),
                        Some(to) => match replies {
                            Some(mux) if mux.owns(&to) => mux.answer_to(&to, item.payload),
                            _ => {
                                tracing::debug!(subject = %to, "a batched message for another subject: dropped")
                            }
                        },
                    }
                }
            },
            Subscription::Local(r) => r.recv().await,
        }
    }
}

/// Where answers to in-process requests go; other publishes never touch the waiting map.
const LOCAL_INBOX: &str = "_INBOX.local.";

/// The in-process bus: exact-subject fanout to bounded queues.
#[derive(Debug, Clone, Default)]
pub struct LocalBus {
    inner: Arc<LocalInner>,
}

#[derive(Debug, Default)]
struct LocalInner {
    subs: Mutex<HashMap<String, Vec<mpsc::Sender<Incoming>>>>,
    /// Requests waiting for their answer, by inbox subject.
    inboxes: Mutex<HashMap<String, tokio::sync::oneshot::Sender<Result<Bytes, BusError>>>>,
    next_inbox: AtomicU64,
    stats: BusStats,
}

impl LocalBus {
    fn subscribe(&self, subject: String) -> mpsc::Receiver<Incoming> {
        let (tx, rx) = mpsc::channel(SUBSCRIPTION_CAPACITY);
        self.inner.subs.lock().entry(subject).or_default().push(tx);
        rx
    }

    /// Delivers to every live subscriber; returns how many took it.
    fn deliver(&self, subject: &str, reply: Option<String>, payload: Bytes) -> usize {
        if subject.starts_with(LOCAL_INBOX)
            && let Some(waiting) = self.inner.inboxes.lock().remove(subject)
        {
            let _ = waiting.send(Ok(payload));
            return 1;
        }
        let mut subs = self.inner.subs.lock();
        let Some(list) = subs.get_mut(subject) else {
            return 0;
        };
        list.retain(|tx| !tx.is_closed());
        let mut n = 0;
        for tx in list.iter() {
            let msg = Incoming {
                subject: subject.to_owned(),
                reply: reply.clone(),
                payload: payload.clone(),
            };
            match tx.try_send(msg) {
                Ok(()) => n += 1,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::warn!(%subject, "local bus subscriber is full, message dropped");
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
        if list.is_empty() {
            subs.remove(subject);
        }
        n
    }

    fn send_request(
        &self,
        subject: String,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<PendingReply, BusError> {
        let inbox = format!(
            "{LOCAL_INBOX}{}",
            self.inner.next_inbox.fetch_add(1, Ordering::Relaxed)
        );
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.inner.inboxes.lock().insert(inbox.clone(), tx);
        let (bus, waiting) = (self.clone(), inbox.clone());
        let forget = Forget::new(move || bus.forget_inbox(&waiting));
        if self.deliver(&subject, Some(inbox), payload) == 0 {
            drop(forget);
            return Err(BusError::NoResponders(subject));
        }
        Ok(PendingReply::waiting(rx, timeout, subject, forget))
    }

    pub(crate) fn forget_inbox(&self, inbox: &str) {
        self.inner.inboxes.lock().remove(inbox);
    }
}

/// The servers of a comma-separated NATS URL list.
fn servers(url: &str) -> Result<Vec<async_nats::ServerAddr>, BusError> {
    let parsed: Result<Vec<async_nats::ServerAddr>, _> = url
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(str::parse)
        .collect();
    match parsed {
        Ok(list) if !list.is_empty() => Ok(list),
        Ok(_) => Err(BusError::Connect {
            url: url.to_owned(),
            reason: "no server in the URL".into(),
        }),
        Err(e) => Err(BusError::Connect {
            url: url.to_owned(),
            reason: e.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_request_gets_the_subscribers_answer() {
        let bus = Bus::local();
        let mut sub = bus.subscribe("ns.srv.a".into()).await.unwrap();
        let responder = bus.clone();
        tokio::spawn(async move {
            let m = sub.next().await.unwrap();
            responder.respond(&m, Bytes::from_static(b"pong")).await.unwrap();
        });
        let answer = bus
            .request(
                "ns.srv.a".into(),
                Bytes::from_static(b"ping"),
                Duration::from_secs(1),
            )
            .await
            .unwrap();
        assert_eq!(&answer[..], b"pong");
    }

    #[tokio::test]
    async fn local_request_without_subscriber_fails_at_once() {
        let bus = Bus::local();
        let err = bus
            .request("ns.srv.none".into(), Bytes::new(), Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(err, BusError::NoResponders(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn local_request_to_a_silent_subscriber_times_out() {
        let bus = Bus::local();
        let _sub = bus.subscribe("ns.srv.mute".into()).await.unwrap();
        let err = bus
            .request("ns.srv.mute".into(), Bytes::new(), Duration::from_millis(100))
            .await
            .unwrap_err();
        assert!(matches!(err, BusError::Timeout));
    }
}

#[cfg(test)]
mod server_list_tests {
    use super::servers;

    #[test]
    fn a_url_may_list_several_servers_of_a_cluster() {
        let list = servers("nats://a:4222, nats://b:4223,").unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[1].host(), "b");
        assert_eq!(list[1].port(), 4223);
        assert!(servers("").is_err());
        assert!(servers("nats://a:notaport").is_err());
    }
}
