//! Publishes gathered while one piece of work runs ([`crate::Bus::gathering`]): a batch of a
//! room's chat messages pushes to each connector and answers each sender, and all of it leaves
//! at the end as one NATS message per server (the answers with the pushes to their senders'
//! connectors), instead of one per push and one per answer. No task and no timer: the work's
//! own task sends it when the work ends. A request made meanwhile first sends what was kept
//! before it, so nothing overtakes anything.

use std::cell::RefCell;
use std::future::Future;

use bytes::Bytes;

use crate::coalesce::Queued;

tokio::task_local! {
    static GATHERED: Gathered;
}

struct Gathered {
    /// The bus that gathers (one process may hold several).
    owner: usize,
    queued: RefCell<Vec<Queued>>,
}

/// Keeps a publish of bus `owner` for the end of the gathering this task is in, if any;
/// otherwise gives it back.
pub(crate) fn keep(owner: usize, subject: String, payload: Bytes) -> Option<(String, Bytes)> {
    let mut message = Some((subject, payload));
    let _ = GATHERED.try_with(|g| {
        if g.owner == owner
            && let Some((subject, payload)) = message.take()
        {
            g.queued.borrow_mut().push(Queued {
                subject,
                reply: None,
                payload,
            });
        }
    });
    message
}

/// Takes what bus `owner` has kept in this task's gathering so far (a request is about to
/// leave, and must not overtake it).
pub(crate) fn take(owner: usize) -> Vec<Queued> {
    GATHERED
        .try_with(|g| {
            if g.owner == owner {
                std::mem::take(&mut *g.queued.borrow_mut())
            } else {
                Vec::new()
            }
        })
        .unwrap_or_default()
}

/// Runs `f`, keeping what bus `owner` publishes in this task meanwhile; returns its output
/// and what was kept, in order.
pub(crate) async fn run<T>(owner: usize, f: impl Future<Output = T>) -> (T, Vec<Queued>) {
    let gathered = Gathered {
        owner,
        queued: RefCell::new(Vec::new()),
    };
    GATHERED
        .scope(gathered, async move {
            let out = f.await;
            let kept = GATHERED.with(|g| std::mem::take(&mut *g.queued.borrow_mut()));
            (out, kept)
        })
        .await
}
