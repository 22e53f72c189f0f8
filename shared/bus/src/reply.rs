//! Requests whose sending and waiting are two steps: [`crate::Bus::send_request`] returns once
//! the request has left in order with every other publish of this connection, and the
//! [`PendingReply`] waits for the answer. A connector sends a session's requests one after the
//! other without waiting for each answer, and they still reach the chat server in the order
//! sent (async-nats' own `request` does both in one future, so two of them may overtake).
//!
//! On NATS, answers come back on one wildcard inbox per connection (`<inbox>.<n>`), matched by
//! `n` to the waiting request.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::oneshot;

use crate::BusError;

/// The answers awaited on one NATS connection.
#[derive(Debug)]
pub(crate) struct ReplyMux {
    prefix: String,
    next: AtomicU64,
    waiting: Mutex<HashMap<u64, oneshot::Sender<Result<Bytes, BusError>>>>,
}

impl ReplyMux {
    /// Subscribes to `<inbox>.>` and routes what arrives there until the client is gone. A
    /// server with a subject of its own (`home`) has its inbox under it,
    /// `<home>._r.<id>`, so that answers may come in batches sent to `home`.
    pub(crate) async fn start(
        client: &async_nats::Client,
        home: Option<&str>,
    ) -> Result<Arc<Self>, BusError> {
        let prefix = match home {
            Some(home) => {
                let inbox = client.new_inbox();
                let id = inbox.rsplit('.').next().unwrap_or("0").to_owned();
                format!("{home}{}{id}", crate::coalesce::REPLY_TOKEN)
            }
            None => client.new_inbox(),
        };
        let mut sub = client
            .subscribe(format!("{prefix}.>"))
            .await
            .map_err(|e| BusError::Subscribe(e.to_string()))?;
        let mux = Arc::new(Self {
            prefix,
            next: AtomicU64::new(1),
            waiting: Mutex::new(HashMap::new()),
        });
        // Owned by the connection: the stream ends when the client is dropped.
        let weak = Arc::downgrade(&mux);
        tokio::spawn(async move {
            while let Some(msg) = sub.next().await {
                let Some(mux) = weak.upgrade() else { break };
                mux.answer(msg);
            }
        });
        Ok(mux)
    }

    fn answer(&self, msg: async_nats::Message) {
        let result = if msg.status == Some(async_nats::StatusCode::NO_RESPONDERS) {
            Err(BusError::NoResponders(String::new()))
        } else {
            Ok(msg.payload)
        };
        self.settle(msg.subject.as_str(), result);
    }

    /// True when `subject` is an answer to a request of this connection.
    pub(crate) fn owns(&self, subject: &str) -> bool {
        subject
            .strip_prefix(self.prefix.as_str())
            .is_some_and(|rest| rest.starts_with('.'))
    }

    /// An answer that came inside a batch.
    pub(crate) fn answer_to(&self, subject: &str, payload: Bytes) {
        self.settle(subject, Ok(payload));
    }

    /// Hands the answer on `<prefix>.<n>[.b]` to request `n`.
    fn settle(&self, subject: &str, result: Result<Bytes, BusError>) {
        let Some(n) = subject
            .strip_prefix(self.prefix.as_str())
            .and_then(|rest| rest.strip_prefix('.'))
            .and_then(|rest| rest.split('.').next())
            .and_then(|t| t.parse::<u64>().ok())
        else {
            return;
        };
        let Some(tx) = self.waiting.lock().remove(&n) else {
            return; // answered after its timeout
        };
        let _ = tx.send(result);
    }

    fn reply_subject(&self, n: u64, batchable: bool) -> String {
        // Only an inbox under a server subject can be answered in a batch sent there.
        if batchable && self.prefix.contains(crate::coalesce::REPLY_TOKEN) {
            format!("{}.{n}{}", self.prefix, crate::coalesce::BATCHABLE_SUFFIX)
        } else {
            format!("{}.{n}", self.prefix)
        }
    }

    /// A fresh answer number, where its answer will come, and what forgets it when dropped.
    fn expect(self: &Arc<Self>) -> (u64, oneshot::Receiver<Result<Bytes, BusError>>, Forget) {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.waiting.lock().insert(n, tx);
        let mux = self.clone();
        let forget = Forget::new(move || {
            mux.waiting.lock().remove(&n);
        });
        (n, rx, forget)
    }

    /// Waits until the NATS server has handled everything sent on this connection before
    /// (its subscriptions included): a message to one of this connection's own inboxes comes
    /// back only after them. `Client::flush` only writes the socket.
    pub(crate) async fn sync(
        self: &Arc<Self>,
        client: &async_nats::Client,
        timeout: Duration,
    ) -> Result<(), BusError> {
        let (n, rx, _forget) = self.expect();
        client
            .publish(format!("{}.{n}", self.prefix), Bytes::new())
            .await
            .map_err(|e| BusError::Publish(e.to_string()))?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(BusError::Timeout),
        }
    }

    /// Publishes `payload` to `subject` with a reply inbox of its own; `batchable` when the
    /// answer may come inside a batch to this server's subject (it is subscribed).
    pub(crate) async fn send(
        self: &Arc<Self>,
        client: &async_nats::Client,
        subject: String,
        payload: Bytes,
        timeout: Duration,
        batchable: bool,
    ) -> Result<PendingReply, BusError> {
        let (n, rx, guard) = self.expect();
        client
            .publish_with_reply(subject.clone(), self.reply_subject(n, batchable), payload)
            .await
            .map_err(|e| BusError::Publish(e.to_string()))?;
        Ok(PendingReply {
            state: Pending::Waiting {
                rx,
                timeout,
                subject,
                _forget: Some(guard),
            },
            failures: None,
        })
    }
}

/// Removes a request that will not be answered (timed out or dropped) from what waits: runs
/// its closure when dropped.
pub(crate) struct Forget(Option<Box<dyn FnOnce() + Send + Sync>>);

impl Forget {
    pub(crate) fn new(forget: impl FnOnce() + Send + Sync + 'static) -> Self {
        Self(Some(Box::new(forget)))
    }
}

impl std::fmt::Debug for Forget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Forget")
    }
}

impl Drop for Forget {
    fn drop(&mut self) {
        if let Some(forget) = self.0.take() {
            forget();
        }
    }
}

/// A request that has been sent; [`PendingReply::answer`] waits for its answer.
#[derive(Debug)]
pub struct PendingReply {
    state: Pending,
    /// Counts a request that gets no answer.
    failures: Option<Counter>,
}

#[derive(Debug)]
enum Pending {
    Waiting {
        rx: oneshot::Receiver<Result<Bytes, BusError>>,
        timeout: Duration,
        subject: String,
        _forget: Option<Forget>,
    },
    Failed(BusError),
}

impl PendingReply {
    /// The same request, counted in `failures` when it gets no answer.
    pub(crate) fn counting(mut self, failures: Counter) -> Self {
        self.failures = Some(failures);
        self
    }

    /// A request that failed before it could be sent.
    pub(crate) fn failed(e: BusError) -> Self {
        Self {
            state: Pending::Failed(e),
            failures: None,
        }
    }

    /// A request waiting on a channel the responder fulfils (the in-process bus).
    pub(crate) fn waiting(
        rx: oneshot::Receiver<Result<Bytes, BusError>>,
        timeout: Duration,
        subject: String,
        forget: Forget,
    ) -> Self {
        Self {
            state: Pending::Waiting {
                rx,
                timeout,
                subject,
                _forget: Some(forget),
            },
            failures: None,
        }
    }

    /// The answer, or [`BusError::Timeout`] / [`BusError::NoResponders`]; never hangs.
    pub async fn answer(self) -> Result<Bytes, BusError> {
        let result = match self.state {
            Pending::Failed(e) => Err(e),
            Pending::Waiting {
                rx, timeout, subject, ..
            } => match tokio::time::timeout(timeout, rx).await {
                Err(_) | Ok(Err(_)) => Err(BusError::Timeout),
                Ok(Ok(Err(BusError::NoResponders(_)))) => Err(BusError::NoResponders(subject)),
                Ok(Ok(other)) => other,
            },
        };
        if result.is_err()
            && let Some(failures) = &self.failures
        {
            failures.inc();
        }
        result
    }
}
