//! A socket's queue of outbound packages: the session queues, the socket's writer takes.
//!
//! Tokio's bounded mpsc allocates, per channel, cache-padded state and a first block of 32
//! slots up front: about 1.5 KiB for every socket, idle or not (heaptrack of an idle
//! connector). This queue is a mutex-guarded deque that allocates only when a package is
//! queued, and gives back what a burst made it grow once it is empty again.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::Notify;

/// Why a package was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueError {
    /// The queue holds its capacity already: the client is too slow.
    Full,
    /// The writer is gone: the socket is closed.
    Closed,
}

/// What a queue keeps after a burst: enough for a few packages at a time.
const KEPT_CAPACITY: usize = 8;

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Wakes the writer; a wake-up given while it is busy is kept for its next wait.
    ready: Notify,
    capacity: usize,
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Bytes>,
    closed: bool,
}

/// The queuing side, held by the session.
#[derive(Debug)]
pub struct Outbox {
    shared: Arc<Shared>,
}

/// The taking side, held by the socket's writer; dropping it closes the queue.
#[derive(Debug)]
pub struct OutboxReader {
    shared: Arc<Shared>,
}

/// A queue of at most `capacity` packages (at least 1).
pub fn outbox(capacity: usize) -> (Outbox, OutboxReader) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State::default()),
        ready: Notify::new(),
        capacity: capacity.max(1),
    });
    (
        Outbox {
            shared: shared.clone(),
        },
        OutboxReader { shared },
    )
}

impl Outbox {
    /// Queues `pkg` unless the queue is full or its reader gone.
    pub fn try_send(&self, pkg: Bytes) -> Result<(), QueueError> {
        let mut state = self.shared.state.lock();
        if state.closed {
            return Err(QueueError::Closed);
        }
        if state.queue.len() >= self.shared.capacity {
            return Err(QueueError::Full);
        }
        let was_empty = state.queue.is_empty();
        state.queue.push_back(pkg);
        drop(state);
        if was_empty {
            self.shared.ready.notify_one();
        }
        Ok(())
    }
}

impl OutboxReader {
    /// The next package if one is queued.
    pub fn try_recv(&mut self) -> Option<Bytes> {
        let mut state = self.shared.state.lock();
        let next = state.queue.pop_front();
        if state.queue.is_empty() && state.queue.capacity() > KEPT_CAPACITY {
            state.queue.shrink_to(KEPT_CAPACITY);
        }
        next
    }

    /// Waits for the next package (cancel-safe: nothing is taken until it is returned).
    pub async fn recv(&mut self) -> Bytes {
        loop {
            if let Some(pkg) = self.try_recv() {
                return pkg;
            }
            self.shared.ready.notified().await;
        }
    }
}

impl Drop for OutboxReader {
    fn drop(&mut self) {
        let mut state = self.shared.state.lock();
        state.closed = true;
        state.queue = VecDeque::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn packages_come_out_in_order_and_a_full_queue_refuses() {
        let (tx, mut rx) = outbox(2);
        assert_eq!(tx.try_send(Bytes::from_static(b"1")), Ok(()));
        assert_eq!(tx.try_send(Bytes::from_static(b"2")), Ok(()));
        assert_eq!(tx.try_send(Bytes::from_static(b"3")), Err(QueueError::Full));
        assert_eq!(rx.recv().await, Bytes::from_static(b"1"));
        assert_eq!(rx.try_recv(), Some(Bytes::from_static(b"2")));
        assert_eq!(rx.try_recv(), None);
        drop(rx);
        assert_eq!(tx.try_send(Bytes::from_static(b"4")), Err(QueueError::Closed));
    }

    #[tokio::test]
    async fn a_waiting_reader_wakes_for_a_package_queued_later() {
        let (tx, mut rx) = outbox(4);
        let waiting = tokio::spawn(async move { rx.recv().await });
        tokio::task::yield_now().await;
        tx.try_send(Bytes::from_static(b"late")).unwrap();
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("woken")
            .unwrap();
        assert_eq!(got, Bytes::from_static(b"late"));
    }

    #[test]
    fn an_emptied_queue_gives_back_what_a_burst_grew() {
        let (tx, mut rx) = outbox(1024);
        for _ in 0..1000 {
            tx.try_send(Bytes::new()).unwrap();
        }
        while rx.try_recv().is_some() {}
        assert!(tx.shared.state.lock().queue.capacity() <= KEPT_CAPACITY);
    }
}
