//! Runs jobs one at a time per key, in the order they were submitted, and different keys in
//! parallel: the point where a session's requests (on a connector) or a room's messages (on
//! its chat server) get their one order.
//!
//! ## Behavior
//! - [`Sequencer::submit`] never waits: it appends the job to its key's queue, so the caller (a
//!   receive loop) keeps the order in which messages arrived. The first job of an idle key
//!   starts a worker task; the worker runs the key's jobs in order and ends when the queue is
//!   empty, so an idle key costs nothing.
//! - A key holds at most `max_queued` waiting jobs; more are refused ([`Busy`]) rather than let
//!   one hot room or one flooding session take all the memory.
//! - An optional hold (see [`Sequencer::with_hold`]) may make a key's next job wait for a
//!   future: a room that has just moved to this chat server waits until its old owner has
//!   finished with it. Only that key waits. Jobs submitted with [`Sequencer::submit_unheld`]
//!   (a barrier another server waits on) skip the hold, so two servers can never wait on each
//!   other's hold.
//! - Batchable work ([`Sequencer::submit_batchable`]) that is queued right behind more of its
//!   kind runs with it as one batch, still in the key's order: a room's chat messages that
//!   waited while one was being written then make one write to its history instead of one
//!   each. A plain job between two of them ends the batch, so nothing overtakes anything.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// One unit of work.
pub type Job = Pin<Box<dyn Future<Output = ()> + Send>>;

tokio::task_local! {
    /// When the job this task is running began (after its hold).
    static STARTED: tokio::time::Instant;
}

/// When the job (or batch) running in this task began, after any hold; `None` outside a
/// sequencer's job. A job that has run far longer than its work takes may have stalled (its
/// process paused) while others acted on its key: it can tell from this.
pub fn job_started() -> Option<tokio::time::Instant> {
    STARTED.try_with(|started| *started).ok()
}

/// What a key must wait for before its next job (`None`: go on at once).
pub type Hold<K> = Arc<dyn Fn(&K) -> Option<Job> + Send + Sync>;

/// Work of one key that may run together with more of its kind queued right behind it.
pub trait Batchable: Send + Sized + 'static {
    /// Most items in one batch.
    const MAX_BATCH: usize = 64;
    /// Whether `next` may join a batch that starts with `self`.
    fn joins(&self, next: &Self) -> bool;
    /// Runs `batch` (in the key's order).
    fn run(batch: Vec<Self>) -> Job;
}

/// No batchable work: a sequencer of plain jobs.
#[derive(Debug)]
pub enum Unbatched {}

impl Batchable for Unbatched {
    fn joins(&self, _: &Self) -> bool {
        match *self {}
    }
    fn run(batch: Vec<Self>) -> Job {
        Box::pin(async move { drop(batch) })
    }
}

/// What waits in a key's queue.
enum Work<B> {
    Job(Job),
    Item(B),
}

/// A key's waiting work, each with whether the hold applies to it.
type Queue<B> = VecDeque<(Work<B>, bool)>;

/// A key already has `max_queued` jobs waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many messages queued")]
pub struct Busy;

/// Per-key serial execution; `B` is the work that may run in batches. Cheap to clone.
pub struct Sequencer<K, B = Unbatched> {
    inner: Arc<Inner<K, B>>,
}

struct Inner<K, B> {
    /// A key is present while its worker runs; the queue holds the work after the current one.
    queues: Mutex<HashMap<K, Queue<B>>>,
    tracker: TaskTracker,
    max_queued: usize,
    hold: Option<Hold<K>>,
    /// Woken when the last worker ends.
    idle: tokio::sync::Notify,
}

impl<K, B> Clone for Sequencer<K, B> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<K, B> std::fmt::Debug for Sequencer<K, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sequencer")
            .field("active", &self.inner.queues.lock().len())
            .field("max_queued", &self.inner.max_queued)
            .finish()
    }
}

impl<K> Sequencer<K>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
{
    /// Workers are spawned on `tracker`, so shutdown waits for the jobs already queued.
    pub fn new(tracker: TaskTracker, max_queued: usize) -> Self {
        Self::batching(tracker, max_queued, None)
    }

    /// Before each job of a key, waits for what `hold(key)` returns (when it returns one).
    pub fn with_hold(tracker: TaskTracker, max_queued: usize, hold: Hold<K>) -> Self {
        Self::batching(tracker, max_queued, Some(hold))
    }
}

impl<K, B> Sequencer<K, B>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    B: Batchable,
{
    /// A sequencer that also takes batchable work `B`, with an optional hold.
    pub fn batching(tracker: TaskTracker, max_queued: usize, hold: Option<Hold<K>>) -> Self {
        Self {
            inner: Arc::new(Inner {
                queues: Mutex::new(HashMap::new()),
                tracker,
                max_queued: max_queued.max(1),
                hold,
                idle: tokio::sync::Notify::new(),
            }),
        }
    }

    /// Queues `job` behind the jobs already submitted for `key`.
    pub fn submit(&self, key: K, job: impl Future<Output = ()> + Send + 'static) -> Result<(), Busy> {
        self.enqueue(key, Work::Job(Box::pin(job.in_current_span())), true)
    }

    /// Queues `item` behind the work already submitted for `key`; it runs in a batch with the
    /// items queued right behind it that it [`Batchable::joins`].
    pub fn submit_batchable(&self, key: K, item: B) -> Result<(), Busy> {
        self.enqueue(key, Work::Item(item), true)
    }

    /// Queues `job` behind the jobs already submitted for `key`, without the hold.
    pub fn submit_unheld(&self, key: K, job: impl Future<Output = ()> + Send + 'static) -> Result<(), Busy> {
        self.enqueue(key, Work::Job(Box::pin(job.in_current_span())), false)
    }

    fn enqueue(&self, key: K, job: Work<B>, held: bool) -> Result<(), Busy> {
        let mut queues = self.inner.queues.lock();
        if let Some(queue) = queues.get_mut(&key) {
            if queue.len() >= self.inner.max_queued {
                return Err(Busy);
            }
            queue.push_back((job, held));
            return Ok(());
        }
        queues.insert(key.clone(), Queue::new());
        drop(queues);
        let inner = self.inner.clone();
        self.inner
            .tracker
            .spawn(async move { inner.work(key, (job, held)).await });
        Ok(())
    }

    /// Runs `f` in `key`'s order and returns its output (`None` if it was refused or dropped).
    pub async fn run<T, F>(&self, key: K, f: F) -> Option<T>
    where
        T: Send + 'static,
        F: Future<Output = T> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(key, async move {
            let _ = tx.send(f.await);
        })
        .ok()?;
        rx.await.ok()
    }

    /// Keys with a worker running now.
    pub fn active(&self) -> usize {
        self.inner.queues.lock().len()
    }

    /// Returns once no key has a job running or queued.
    pub async fn wait_idle(&self) {
        loop {
            let idle = self.inner.idle.notified();
            if self.active() == 0 {
                return;
            }
            idle.await;
        }
    }
}

impl<K, B> Inner<K, B>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    B: Batchable,
{
    async fn work(self: Arc<Self>, key: K, first: (Work<B>, bool)) {
        let (mut job, mut held) = first;
        loop {
            if held && let Some(wait) = self.hold.as_ref().and_then(|h| h(&key)) {
                wait.await;
            }
            let started = tokio::time::Instant::now();
            match job {
                Work::Job(job) => STARTED.scope(started, job).await,
                Work::Item(item) => STARTED.scope(started, B::run(self.batch_from(&key, item))).await,
            }
            let mut queues = self.queues.lock();
            match queues.get_mut(&key).and_then(VecDeque::pop_front) {
                Some(next) => (job, held) = next,
                None => {
                    queues.remove(&key);
                    if queues.is_empty() {
                        self.idle.notify_waiters();
                    }
                    return;
                }
            }
        }
    }

    /// `first` and the items queued right behind it that join it (taken after the hold, so
    /// every one of them had its turn).
    fn batch_from(&self, key: &K, first: B) -> Vec<B> {
        let mut batch = vec![first];
        let mut queues = self.queues.lock();
        let Some(queue) = queues.get_mut(key) else {
            return batch;
        };
        while batch.len() < B::MAX_BATCH
            && matches!(queue.front(), Some((Work::Item(next), _)) if batch[0].joins(next))
        {
            if let Some((Work::Item(next), _)) = queue.pop_front() {
                batch.push(next);
            }
        }
        batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn log_job(
        log: &Arc<Mutex<Vec<(u32, u32)>>>,
        key: u32,
        n: u32,
        wait_ms: u64,
    ) -> impl Future<Output = ()> + use<> {
        let log = log.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(wait_ms)).await;
            log.lock().push((key, n));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_job_knows_when_it_began_and_nothing_outside_a_job_does() {
        let tracker = TaskTracker::new();
        let seq = Sequencer::new(tracker.clone(), 100);
        assert!(job_started().is_none());
        // The second job waits 50 ms behind the first: it began when its turn came.
        seq.submit(1, tokio::time::sleep(Duration::from_millis(50)))
            .unwrap();
        let submitted = tokio::time::Instant::now();
        let seen = seq
            .run(1, async {
                let began = job_started().expect("inside a job");
                tokio::time::sleep(Duration::from_millis(30)).await;
                (began, job_started().expect("still inside"))
            })
            .await
            .expect("ran");
        assert_eq!(seen.0, seen.1, "one start for the whole job");
        assert_eq!(seen.0 - submitted, Duration::from_millis(50));
    }

    #[tokio::test(start_paused = true)]
    async fn jobs_of_one_key_run_in_submission_order_even_when_earlier_ones_are_slower() {
        let tracker = TaskTracker::new();
        let seq = Sequencer::new(tracker.clone(), 100);
        let log = Arc::new(Mutex::new(Vec::new()));
        for n in 0..10u32 {
            // Earlier jobs sleep longer: without the sequencer they would finish last.
            seq.submit(1, log_job(&log, 1, n, 100 - u64::from(n) * 10))
                .unwrap();
        }
        seq.wait_idle().await;
        let order: Vec<u32> = log.lock().iter().map(|(_, n)| *n).collect();
        assert_eq!(order, (0..10).collect::<Vec<_>>());
        assert_eq!(seq.active(), 0, "an idle key keeps no worker");
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_key_does_not_hold_up_another() {
        let tracker = TaskTracker::new();
        let seq = Sequencer::new(tracker.clone(), 100);
        let log = Arc::new(Mutex::new(Vec::new()));
        seq.submit(1, log_job(&log, 1, 0, 10_000)).unwrap();
        seq.submit(2, log_job(&log, 2, 0, 1)).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(*log.lock(), vec![(2, 0)]);
        tracker.close();
        tracker.wait().await;
        assert_eq!(*log.lock(), vec![(2, 0), (1, 0)]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_refuses_more() {
        let tracker = TaskTracker::new();
        let seq = Sequencer::new(tracker.clone(), 2);
        let log = Arc::new(Mutex::new(Vec::new()));
        seq.submit(1, log_job(&log, 1, 0, 100)).unwrap(); // running
        seq.submit(1, log_job(&log, 1, 1, 0)).unwrap();
        seq.submit(1, log_job(&log, 1, 2, 0)).unwrap();
        assert_eq!(seq.submit(1, log_job(&log, 1, 3, 0)), Err(Busy));
        assert!(
            seq.submit(2, log_job(&log, 2, 0, 0)).is_ok(),
            "other keys are not affected"
        );
        tracker.close();
        tracker.wait().await;
        assert_eq!(log.lock().len(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_held_key_waits_and_the_others_and_unheld_jobs_do_not() {
        let tracker = TaskTracker::new();
        let start = tokio::time::Instant::now();
        let hold: Hold<u32> = Arc::new(move |k| {
            (*k == 1).then(|| Box::pin(tokio::time::sleep_until(start + Duration::from_secs(1))) as Job)
        });
        let seq = Sequencer::with_hold(tracker.clone(), 100, hold);
        let done = Arc::new(Mutex::new(Vec::new()));
        let note = |tag: &'static str| {
            let done = done.clone();
            async move { done.lock().push((tag, start.elapsed())) }
        };
        seq.submit_unheld(1, note("barrier")).unwrap();
        seq.submit(1, note("held")).unwrap();
        seq.submit(2, note("other")).unwrap();
        assert_eq!(seq.run(2, async { 7 }).await, Some(7));
        tracker.close();
        tracker.wait().await;
        let done = done.lock().clone();
        assert_eq!(done[0], ("barrier", Duration::ZERO));
        assert_eq!(done[1], ("other", Duration::ZERO));
        assert_eq!(done[2].0, "held");
        assert!(done[2].1 >= Duration::from_secs(1));
    }

    /// A batchable item for the tests: its number and its kind (only one kind joins another).
    struct Noted {
        log: Arc<Mutex<Vec<Vec<u32>>>>,
        n: u32,
        kind: u8,
    }

    impl Batchable for Noted {
        const MAX_BATCH: usize = 3;
        fn joins(&self, next: &Self) -> bool {
            self.kind == next.kind
        }
        fn run(batch: Vec<Self>) -> Job {
            Box::pin(async move {
                let log = batch[0].log.clone();
                log.lock().push(batch.iter().map(|b| b.n).collect());
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn items_queued_behind_each_other_run_as_one_batch_in_order_and_a_job_between_ends_it() {
        let tracker = TaskTracker::new();
        let seq: Sequencer<u32, Noted> = Sequencer::batching(tracker.clone(), 100, None);
        let log = Arc::new(Mutex::new(Vec::new()));
        let item = |n, kind| Noted {
            log: log.clone(),
            n,
            kind,
        };
        // The first one runs at once, alone; the rest queue behind a slow job.
        seq.submit_batchable(1, item(0, 0)).unwrap();
        let slow = log.clone();
        seq.submit(1, async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            slow.lock().push(vec![100]);
        })
        .unwrap();
        for n in 1..=4 {
            seq.submit_batchable(1, item(n, 0)).unwrap();
        }
        seq.submit(1, {
            let log = log.clone();
            async move { log.lock().push(vec![200]) }
        })
        .unwrap();
        seq.submit_batchable(1, item(5, 0)).unwrap();
        seq.submit_batchable(1, item(6, 1)).unwrap();
        seq.submit_batchable(1, item(7, 1)).unwrap();
        seq.wait_idle().await;
        let expected: Vec<Vec<u32>> = vec![
            vec![0],
            vec![100],
            vec![1, 2, 3], // at most MAX_BATCH
            vec![4],
            vec![200],
            vec![5],
            vec![6, 7], // another kind starts another batch
        ];
        assert_eq!(*log.lock(), expected);
    }
}
