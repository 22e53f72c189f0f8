//! The last push number heard from each sender (see [`PushNo`]): the push loop notes each
//! push, and finds gaps; an enter asks whether everything its chat server sent here before
//! the add has been delivered.

use std::collections::HashMap;

use parking_lot::Mutex;
use shaddock_bus::PushNo;

/// Senders remembered at most: each run of a chat server is one; past it, all are forgotten
/// (the next push of each only sets where its numbering is).
const SENDERS_MAX: usize = 4096;

#[derive(Debug, Default)]
pub struct PushNumbers {
    /// The highest number heard from each sender.
    last: Mutex<HashMap<u64, u64>>,
    /// The highest number from each sender whose push has been queued on its sessions.
    delivered: Mutex<HashMap<u64, u64>>,
}

impl PushNumbers {
    /// Notes `no`; true when pushes of its sender are missing before it. The first push heard
    /// from a sender only says where its numbering is; one that comes late (below the last)
    /// is no gap.
    pub fn missing_before(&self, no: PushNo) -> bool {
        let last = raise(&mut self.last.lock(), no, no.n.saturating_sub(1));
        no.n > last.saturating_add(1)
    }

    /// Notes that the push numbered `no` has been queued on its sessions (after
    /// [`PushNumbers::missing_before`] and the delivery).
    pub fn delivered(&self, no: PushNo) {
        raise(&mut self.delivered.lock(), no, no.n);
    }

    /// True when a push numbered `no` or later from its sender has been delivered here.
    pub fn through(&self, no: PushNo) -> bool {
        self.delivered
            .lock()
            .get(&no.from)
            .is_some_and(|&last| last >= no.n)
    }

    /// Forgets every sender (the connection was new: numbering starts afresh).
    pub fn clear(&self) {
        self.last.lock().clear();
        self.delivered.lock().clear();
    }
}

/// Raises `no`'s sender in `all` to `no.n` (from `first` when it is new there, at most
/// [`SENDERS_MAX`] senders); answers where it was before.
fn raise(all: &mut HashMap<u64, u64>, no: PushNo, first: u64) -> u64 {
    if all.len() >= SENDERS_MAX && !all.contains_key(&no.from) {
        all.clear();
    }
    let last = all.entry(no.from).or_insert(first);
    let before = *last;
    *last = before.max(no.n);
    before
}

#[cfg(test)]
mod tests {
    use super::{PushNo, PushNumbers};

    #[test]
    fn a_missing_push_number_is_a_gap_and_a_late_or_first_one_is_not() {
        let n = PushNumbers::default();
        let no = |from, n| PushNo { from, n };
        assert!(!n.missing_before(no(1, 5)), "the first heard sets where it is");
        assert!(!n.missing_before(no(1, 6)));
        assert!(n.missing_before(no(1, 8)), "7 is missing");
        assert!(!n.missing_before(no(1, 7)), "late, not a gap");
        assert!(!n.missing_before(no(1, 9)));
        assert!(!n.missing_before(no(2, 1)), "another sender");
        assert!(n.missing_before(no(2, 3)));
        assert!(!n.missing_before(no(1, 10)));
    }

    #[test]
    fn a_sender_is_through_a_number_once_it_or_a_later_one_was_delivered() {
        let n = PushNumbers::default();
        let no = |from, n| PushNo { from, n };
        assert!(!n.through(no(1, 1)), "nothing heard from it");
        n.missing_before(no(1, 4));
        assert!(!n.through(no(1, 4)), "heard, not yet delivered");
        n.delivered(no(1, 4));
        assert!(n.through(no(1, 3)));
        assert!(n.through(no(1, 4)));
        assert!(!n.through(no(1, 5)));
        assert!(!n.through(no(2, 4)), "another sender");
        n.clear();
        assert!(!n.through(no(1, 3)));
    }
}
