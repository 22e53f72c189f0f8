//! The loop a backend (e.g. chat) runs on its subject `<ns>.srv.<id>`: forwarded client
//! requests go through its handler pipeline, remote calls to its remotes.
//!
//! Messages that carry a key (what the sender routed by: a room) are handled one at a time
//! per key, in the order they arrived, through the backend's [`Sequencer`]: that is where a
//! room's messages get their one order. Messages without a key (calls addressed to this
//! server by id) are handled each in its own task. Different keys never wait for each other.

use std::future::Future;
use std::sync::Arc;

use shaddock_bus::{Bus, Envelope, Incoming, Reply, SessionExport, Subscription};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::handler::{BoxFuture, HandlerError, Handlers, response_body};
use crate::metrics::Metrics;
use crate::sequencer::{Batchable, Busy, Job, Sequencer};

tokio::task_local! {
    /// The deadlines of the requests the running job answers (one, or a batch's).
    static DEADLINES: Vec<Deadline>;
}

/// When a request's sender stops waiting: `at` counted from its arrival here, `at_ms` on
/// the wall clock as the sender set it; a request with neither (a notify) waits for nobody.
#[derive(Debug, Clone, Copy, Default)]
struct Deadline {
    at: Option<tokio::time::Instant>,
    at_ms: Option<u64>,
}

impl Deadline {
    fn passed(&self) -> bool {
        self.at.is_some_and(|at| tokio::time::Instant::now() >= at)
            || shaddock_bus::envelope::is_late(self.at_ms)
    }
}

/// True when every forwarded request the running job answers has passed its deadline: their
/// senders were all told it failed, so what the job would send now would come as a surprise,
/// and a retry as a second copy. False outside such a job, and while any sender still waits.
pub fn deadline_passed_for_sender() -> bool {
    DEADLINES
        .try_with(|all| !all.is_empty() && all.iter().all(Deadline::passed))
        .unwrap_or(false)
}

type RemoteFn =
    Arc<dyn Fn(String, String, Vec<u8>) -> BoxFuture<Result<Vec<u8>, HandlerError>> + Send + Sync>;

/// A backend: handlers for forwarded requests and one function for remote calls.
pub struct Backend {
    pub handlers: Handlers<SessionExport>,
    remote: RemoteFn,
    order: Sequencer<String, Forwarded>,
    metrics: Arc<Metrics>,
}

/// A forwarded request to a batched route ([`Handlers::add_batched`]), waiting in its key's
/// queue: requests of one route queued behind each other run as one batch.
pub struct Forwarded {
    backend: Arc<Backend>,
    bus: Bus,
    msg: Incoming,
    session: SessionExport,
    route: String,
    body: Vec<u8>,
    expires: Option<tokio::time::Instant>,
    expires_at_ms: Option<u64>,
}

impl std::fmt::Debug for Forwarded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarded").field("route", &self.route).finish()
    }
}

impl Batchable for Forwarded {
    fn joins(&self, next: &Self) -> bool {
        // One backend per sequencer: the route alone decides.
        self.route == next.route
    }

    fn run(batch: Vec<Self>) -> Job {
        Box::pin(async move {
            if let Some(first) = batch.first() {
                first.backend.clone().handle_batch(batch).await;
            }
        })
    }
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend")
            .field("handlers", &self.handlers)
            .field("order", &self.order)
            .finish()
    }
}

impl Backend {
    /// `remote(service, method, args)` answers remote calls with a MessagePack body; keyed
    /// messages run in `order`.
    pub fn new<F, Fut>(
        handlers: Handlers<SessionExport>,
        remote: F,
        order: Sequencer<String, Forwarded>,
        metrics: Arc<Metrics>,
    ) -> Self
    where
        F: Fn(String, String, Vec<u8>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<u8>, HandlerError>> + Send + 'static,
    {
        Self {
            handlers,
            remote: Arc::new(move |s, m, a| Box::pin(remote(s, m, a))),
            order,
            metrics,
        }
    }

    /// Serves `sub` until `token` is cancelled.
    pub async fn serve(
        self: Arc<Self>,
        bus: Bus,
        mut sub: Subscription,
        token: CancellationToken,
        tracker: TaskTracker,
    ) {
        loop {
            let msg = tokio::select! {
                _ = token.cancelled() => break,
                m = sub.next() => m,
            };
            let Some(msg) = msg else { break };
            let reply_to = msg.reply.clone();
            let queued = self.submit(&bus, msg, &tracker);
            if let Err(busy) = queued {
                tracing::warn!("a key's queue is full: message refused");
                self.metrics.queue_drops.inc();
                let refused = Reply::Err {
                    code: 500,
                    message: busy.to_string(),
                };
                if let (Some(to), Ok(bytes)) = (reply_to, refused.encode())
                    && let Err(e) = bus.publish(to, bytes).await
                {
                    tracing::debug!(error = %e, "cannot answer");
                }
            }
        }
    }

    /// Queues `msg` in its key's order (a request to a batched route as batchable work), or
    /// runs it in a task of its own when it has no key.
    fn submit(self: &Arc<Self>, bus: &Bus, msg: Incoming, tracker: &TaskTracker) -> Result<(), Busy> {
        let env = Envelope::decode(&msg.payload);
        let key = env.as_ref().ok().and_then(Envelope::key).map(str::to_owned);
        // The sender's deadline, counted from now: a job that starts after it is dropped.
        let expires = match &env {
            Ok(Envelope::Forward {
                deadline_ms: Some(ms),
                ..
            }) => Some(tokio::time::Instant::now() + std::time::Duration::from_millis(*ms)),
            _ => None,
        };
        match (key, env) {
            (
                Some(key),
                Ok(Envelope::Forward {
                    session,
                    route,
                    body,
                    expires_at_ms,
                    ..
                }),
            ) if self.handlers.is_batched(&route) => {
                let forwarded = Forwarded {
                    backend: self.clone(),
                    bus: bus.clone(),
                    msg,
                    session,
                    route,
                    body,
                    expires,
                    expires_at_ms,
                };
                self.order.submit_batchable(key, forwarded)
            }
            (key, env) => {
                let barrier = matches!(env, Ok(Envelope::Barrier { .. }));
                let (this, bus) = (self.clone(), bus.clone());
                let job = async move { this.handle(bus, msg, env, expires).await }.in_current_span();
                match key {
                    Some(key) if barrier => self.order.submit_unheld(key, job),
                    Some(key) => self.order.submit(key, job),
                    None => {
                        tracker.spawn(job);
                        Ok(())
                    }
                }
            }
        }
    }

    /// Answers `requests` of one batched route, in order; each is checked against its deadline
    /// as [`Backend::handle`] does.
    async fn handle_batch(&self, requests: Vec<Forwarded>) {
        let Some(route) = requests.first().map(|f| f.route.clone()) else {
            return;
        };
        let mut run = Vec::with_capacity(requests.len());
        let mut waiting = Vec::with_capacity(requests.len());
        let mut deadlines = Vec::with_capacity(requests.len());
        for f in requests {
            if self.late(f.expires, f.expires_at_ms) {
                tracing::debug!(%route, "a forwarded request's deadline passed in the queue: dropped");
                self.metrics.queue_drops.inc();
                answer(&f.bus, &f.msg, deadline_passed()).await;
                continue;
            }
            deadlines.push(Deadline {
                at: f.expires,
                at_ms: f.expires_at_ms,
            });
            let body = serde_json::from_slice(&f.body).unwrap_or_else(|_| serde_json::json!({}));
            run.push((f.session, body));
            waiting.push((f.bus, f.msg));
        }
        if run.is_empty() {
            return;
        }
        let results = DEADLINES
            .scope(deadlines, self.handlers.handle_batch_filtered(&route, run))
            .await;
        for ((bus, msg), result) in waiting.iter().zip(&results) {
            if let Err(e) = result {
                tracing::debug!(%route, error = %e, "handler failed");
            }
            answer(bus, msg, Reply::Ok(response_body(result))).await;
        }
    }

    fn late(&self, expires: Option<tokio::time::Instant>, expires_at_ms: Option<u64>) -> bool {
        expires.is_some_and(|at| tokio::time::Instant::now() >= at)
            || shaddock_bus::envelope::is_late(expires_at_ms)
    }

    async fn handle(
        &self,
        bus: Bus,
        msg: Incoming,
        env: Result<Envelope, shaddock_bus::BusError>,
        expires: Option<tokio::time::Instant>,
    ) {
        let expires_at_ms = match &env {
            Ok(Envelope::Forward { expires_at_ms, .. } | Envelope::Rpc { expires_at_ms, .. }) => {
                *expires_at_ms
            }
            _ => None,
        };
        let late = self.late(expires, expires_at_ms);
        let reply = match env {
            Ok(Envelope::Rpc { service, method, .. }) if late => {
                // The caller gave up (this server was paused, or the key's queue was long): a
                // late add would make a member whose session was already told it failed.
                tracing::debug!(%service, %method, "a call's deadline passed before it ran: dropped");
                self.metrics.queue_drops.inc();
                deadline_passed()
            }
            Ok(Envelope::Forward { route, .. }) if late => {
                // The client was already told it failed: running it now would make its retry a
                // second copy.
                tracing::debug!(%route, "a forwarded request's deadline passed in the queue: dropped");
                self.metrics.queue_drops.inc();
                deadline_passed()
            }
            Err(e) => Reply::Err {
                code: 500,
                message: e.to_string(),
            },
            Ok(Envelope::Forward {
                session, route, body, ..
            }) => {
                let body = serde_json::from_slice(&body).unwrap_or_else(|_| serde_json::json!({}));
                let deadline = Deadline {
                    at: expires,
                    at_ms: expires_at_ms,
                };
                let result = DEADLINES
                    .scope(
                        vec![deadline],
                        self.handlers.handle_filtered(&route, session, body),
                    )
                    .await;
                if let Err(e) = &result {
                    tracing::debug!(%route, error = %e, "handler failed");
                }
                Reply::Ok(response_body(&result))
            }
            Ok(Envelope::Rpc {
                service,
                method,
                args,
                ..
            }) => match (self.remote)(service.clone(), method.clone(), args).await {
                Ok(body) => Reply::Ok(body),
                Err(e) => {
                    tracing::debug!(%service, %method, error = %e, "remote failed");
                    Reply::Err {
                        code: 500,
                        message: e.message,
                    }
                }
            },
            // Run in the key's order: everything of the key that came before has been handled.
            Ok(Envelope::Barrier { .. }) => Reply::Ok(Vec::new()),
            Ok(Envelope::Push { .. } | Envelope::Broadcast { .. }) => Reply::Err {
                code: 500,
                message: "a backend holds no sessions".into(),
            },
        };
        answer(&bus, &msg, reply).await;
    }
}

fn deadline_passed() -> Reply {
    Reply::Err {
        code: 500,
        message: "deadline passed".into(),
    }
}

/// Sends `reply` to whoever asked (when anyone waits for it).
async fn answer(bus: &Bus, msg: &Incoming, reply: Reply) {
    if msg.reply.is_none() {
        return;
    }
    match reply.encode() {
        // With batching on, with the pushes this handler made to the requester's server, in
        // one message.
        Ok(bytes) => {
            if let Err(e) = bus.respond_batched(msg, bytes).await {
                tracing::debug!(error = %e, "cannot answer");
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot encode reply"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use serde_json::{Value, json};

    fn forward(body: &str, deadline_ms: u64) -> bytes::Bytes {
        forward_expiring(body, deadline_ms, None)
    }

    fn forward_expiring(body: &str, deadline_ms: u64, expires_at_ms: Option<u64>) -> bytes::Bytes {
        Envelope::Forward {
            session: SessionExport::default(),
            route: "chat.chatHandler.send".into(),
            body: body.as_bytes().to_vec(),
            key: Some("room".into()),
            deadline_ms: Some(deadline_ms),
            expires_at_ms,
        }
        .encode()
        .unwrap()
    }

    /// A backend with `handlers` serving `t.srv.chat-1` on `bus`.
    async fn serve(
        bus: &Bus,
        tracker: &TaskTracker,
        token: &CancellationToken,
        handlers: Handlers<SessionExport>,
    ) {
        let order = Sequencer::batching(tracker.clone(), 100, None);
        let backend = Arc::new(Backend::new(
            handlers,
            |_, _, _| async { Ok(Vec::new()) },
            order,
            Arc::new(Metrics::new()),
        ));
        let sub = bus.subscribe("t.srv.chat-1".into()).await.unwrap();
        tracker.spawn(backend.serve(bus.clone(), sub, token.clone(), tracker.clone()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_whose_deadline_passed_in_its_rooms_queue_is_dropped_not_run() {
        let (bus, tracker, token) = (Bus::local(), TaskTracker::new(), CancellationToken::new());
        let ran = Arc::new(AtomicUsize::new(0));
        let mut handlers = Handlers::new();
        let count = ran.clone();
        handlers.add("chat.chatHandler.send", move |_s: SessionExport, body: Value| {
            let count = count.clone();
            async move {
                count.fetch_add(1, Ordering::SeqCst);
                if body["slow"] == json!(true) {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Ok(json!({}))
            }
        });
        serve(&bus, &tracker, &token, handlers).await;

        let timeout = Duration::from_secs(5);
        let slow = bus.send_request("t.srv.chat-1".into(), forward(r#"{"slow":true}"#, 5_000), timeout);
        let slow = slow.await;
        // Queued behind the slow one, with a deadline shorter than its wait.
        let late = bus
            .send_request("t.srv.chat-1".into(), forward("{}", 100), timeout)
            .await;
        let on_time = bus
            .send_request("t.srv.chat-1".into(), forward("{}", 5_000), timeout)
            .await;
        // Read at once, but its sender's clock says it expired long ago (this server was
        // paused while it waited unread).
        let stale = forward_expiring("{}", 5_000, Some(shaddock_bus::envelope::now_ms() - 10_000));
        let stale = bus.send_request("t.srv.chat-1".into(), stale, timeout).await;
        assert_eq!(
            Reply::decode(&slow.answer().await.unwrap()).unwrap(),
            Reply::Ok(b"{}".to_vec())
        );
        assert_eq!(
            Reply::decode(&late.answer().await.unwrap()).unwrap(),
            Reply::Err {
                code: 500,
                message: "deadline passed".into()
            }
        );
        assert!(matches!(
            Reply::decode(&on_time.answer().await.unwrap()).unwrap(),
            Reply::Ok(_)
        ));
        assert!(matches!(
            Reply::decode(&stale.answer().await.unwrap()).unwrap(),
            Reply::Err { .. }
        ));
        assert_eq!(ran.load(Ordering::SeqCst), 2, "the late ones never ran");
        token.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn a_handler_knows_when_its_senders_deadline_passes_while_it_runs() {
        let (bus, tracker, token) = (Bus::local(), TaskTracker::new(), CancellationToken::new());
        let mut handlers = Handlers::new();
        handlers.add_batched(
            "chat.chatHandler.send",
            |requests: Vec<(SessionExport, Value)>| async move {
                let before = deadline_passed_for_sender();
                tokio::time::sleep(Duration::from_millis(300)).await;
                let after = deadline_passed_for_sender();
                requests
                    .iter()
                    .map(|_| Ok(json!({"before": before, "after": after})))
                    .collect()
            },
        );
        serve(&bus, &tracker, &token, handlers).await;
        assert!(!deadline_passed_for_sender(), "outside a job");
        let timeout = Duration::from_secs(5);
        for (deadline_ms, passed) in [(200, true), (5_000, false)] {
            let sent = bus
                .send_request("t.srv.chat-1".into(), forward("{}", deadline_ms), timeout)
                .await;
            let Reply::Ok(body) = Reply::decode(&sent.answer().await.unwrap()).unwrap() else {
                panic!("an answer");
            };
            let seen: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(
                seen,
                json!({"before": false, "after": passed}),
                "deadline {deadline_ms} ms"
            );
        }
        token.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn requests_queued_behind_each_other_reach_a_batched_handler_together_each_with_its_answer() {
        let (bus, tracker, token) = (Bus::local(), TaskTracker::new(), CancellationToken::new());
        let batches = Arc::new(parking_lot::Mutex::new(Vec::<Vec<u64>>::new()));
        let mut handlers = Handlers::new();
        let seen = batches.clone();
        handlers.add_batched(
            "chat.chatHandler.send",
            move |requests: Vec<(SessionExport, Value)>| {
                let seen = seen.clone();
                async move {
                    let numbers: Vec<u64> = requests
                        .iter()
                        .map(|(_, b)| b["n"].as_u64().unwrap_or(99))
                        .collect();
                    seen.lock().push(numbers.clone());
                    if numbers == [0] {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    numbers
                        .iter()
                        .map(|&n| {
                            if n == 2 {
                                Err(HandlerError::new("two fails"))
                            } else {
                                Ok(json!({ "n": n }))
                            }
                        })
                        .collect()
                }
            },
        );
        serve(&bus, &tracker, &token, handlers).await;

        let timeout = Duration::from_secs(5);
        let mut sent = Vec::new();
        for n in 0..4 {
            let body = format!("{{\"n\":{n}}}");
            sent.push(
                bus.send_request("t.srv.chat-1".into(), forward(&body, 5_000), timeout)
                    .await,
            );
            if n == 0 {
                // The first is being handled (for 500 ms) when the others come.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        let mut answers = Vec::new();
        for s in sent {
            answers.push(Reply::decode(&s.answer().await.unwrap()).unwrap());
        }
        assert_eq!(
            *batches.lock(),
            vec![vec![0], vec![1, 2, 3]],
            "the first ran alone, the rest together"
        );
        let ok = |n: u64| Reply::Ok(serde_json::to_vec(&json!({ "n": n })).unwrap());
        let failed = Reply::Ok(b"{\"code\":500}".to_vec());
        assert_eq!(answers, vec![ok(0), ok(1), failed, ok(3)]);
        token.cancel();
    }
}
