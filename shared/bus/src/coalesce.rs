//! Publishes that leave together: [`crate::Bus::publish_batched`] queues a message, and a
//! flusher task sends what is queued once the tasks running in this instant have added
//! theirs, one NATS message per server (see [`crate::batch`]). Direct publishes and requests
//! first send what is queued, under the same lock, so a handle's messages keep their order.

use std::sync::{Arc, Weak};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::{MutexGuard, Notify};

use crate::batch;
use crate::stats::BusStats;

/// The token that marks an answer subject `<server subject>._r.<inbox>.<n>.b` as one its
/// requester takes in batches sent to `<server subject>` (see [`crate::reply`]).
pub(crate) const REPLY_TOKEN: &str = "._r.";
pub(crate) const BATCHABLE_SUFFIX: &str = ".b";

/// Where a message to `subject` may travel: an answer its requester takes in batches goes
/// with everything for that requester's server; anything else with its own subject.
pub(crate) fn bucket_of(subject: &str) -> &str {
    if subject.ends_with(BATCHABLE_SUFFIX)
        && let Some(at) = subject.find(REPLY_TOKEN)
    {
        return &subject[..at];
    }
    subject
}

struct Queued {
    subject: String,
    reply: Option<String>,
    payload: Bytes,
}

pub(crate) struct Coalescer {
    client: async_nats::Client,
    stats: BusStats,
    queued: Mutex<Vec<Queued>>,
    wake: Arc<Notify>,
    /// Held while messages are handed to the client.
    sending: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Coalescer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coalescer")
            .field("queued", &self.queued.lock().len())
            .finish_non_exhaustive()
    }
}

impl Drop for Coalescer {
    fn drop(&mut self) {
        // The flusher wakes, finds the bus gone, and ends.
        self.wake.notify_one();
    }
}

impl Coalescer {
    /// A coalescer on `client` and its flusher task, which ends when the coalescer is dropped.
    pub(crate) fn start(client: async_nats::Client, stats: BusStats) -> Arc<Self> {
        let wake = Arc::new(Notify::new());
        let this = Arc::new(Self {
            client,
            stats,
            queued: Mutex::new(Vec::new()),
            wake: wake.clone(),
            sending: tokio::sync::Mutex::new(()),
        });
        let weak: Weak<Self> = Arc::downgrade(&this);
        tokio::spawn(async move {
            loop {
                wake.notified().await;
                // Let the tasks woken with this one queue theirs first.
                tokio::task::yield_now().await;
                let Some(this) = weak.upgrade() else { break };
                drop(this.send_pending().await);
            }
        });
        this
    }

    pub(crate) fn queue(&self, subject: String, reply: Option<String>, payload: Bytes) {
        let mut queued = self.queued.lock();
        if queued.is_empty() {
            self.wake.notify_one();
        }
        queued.push(Queued {
            subject,
            reply,
            payload,
        });
    }

    /// Sends what is queued and returns the lock under which it was sent: the caller sends
    /// its own message before letting it go.
    pub(crate) async fn send_pending(&self) -> MutexGuard<'_, ()> {
        let guard = self.sending.lock().await;
        let queued = std::mem::take(&mut *self.queued.lock());
        if !queued.is_empty() {
            self.send(queued).await;
        }
        guard
    }

    async fn send(&self, queued: Vec<Queued>) {
        // Groups by server, in the order each was first met; a group keeps its order.
        let mut groups: Vec<(String, Vec<Queued>)> = Vec::new();
        for q in queued {
            let bucket = bucket_of(&q.subject);
            match groups.iter_mut().find(|g| g.0 == bucket) {
                Some(g) => g.1.push(q),
                None => groups.push((bucket.to_owned(), vec![q])),
            }
        }
        for (bucket, items) in groups {
            let mut rest = items.as_slice();
            while !rest.is_empty() {
                // As many as fit in one batch (at least one).
                let mut bytes = 1;
                let mut n = 0;
                for q in rest {
                    let len = batch::item_len(Some(&q.subject), q.reply.as_deref(), &q.payload);
                    if n > 0 && bytes + len > batch::MAX_BYTES {
                        break;
                    }
                    bytes += len;
                    n += 1;
                }
                let (now, later) = rest.split_at(n);
                rest = later;
                let sent = match now {
                    [one] => self.publish_one(one).await,
                    many => {
                        let mut w = batch::Writer::with_capacity(bytes);
                        for q in many {
                            let subject = (q.subject != bucket).then_some(q.subject.as_str());
                            w.push(subject, q.reply.as_deref(), &q.payload);
                        }
                        self.stats.batched_messages.inc_by(many.len() as u64);
                        self.client.publish(bucket.clone(), w.finish()).await
                    }
                };
                if let Err(e) = sent {
                    tracing::warn!(subject = %bucket, error = %e, "a batched publish failed");
                }
            }
        }
    }

    async fn publish_one(&self, q: &Queued) -> Result<(), async_nats::PublishError> {
        match &q.reply {
            Some(reply) => {
                self.client
                    .publish_with_reply(q.subject.clone(), reply.clone(), q.payload.clone())
                    .await
            }
            None => self.client.publish(q.subject.clone(), q.payload.clone()).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::bucket_of;

    #[test]
    fn an_answer_taken_in_batches_goes_with_its_requesters_server() {
        assert_eq!(bucket_of("ns.srv.connector-1._r.abc.17.b"), "ns.srv.connector-1");
        assert_eq!(
            bucket_of("ns.srv.connector-1._r.abc.17"),
            "ns.srv.connector-1._r.abc.17"
        );
        assert_eq!(bucket_of("_INBOX.abc.17"), "_INBOX.abc.17");
        assert_eq!(bucket_of("ns.srv.chat-1"), "ns.srv.chat-1");
    }
}
