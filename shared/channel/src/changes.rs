//! Which rooms' memberships changed while a grouping was being read from the store.
//!
//! A grouping read while its own room changed may be older than the store: it is used once
//! and not cached. Changes are counted per room, so that an enter in one room does not keep
//! every other room from being cached: with one counter for all rooms, a chat server whose
//! rooms see enters and leaves all the time read a room's members from the store for nearly
//! every push.

use std::collections::HashMap;

/// Rooms remembered before the record starts afresh (every read under way then is not cached).
const ROOMS_MAX: usize = 4096;

/// A clock ticked by every change, and the tick of each room's last change.
#[derive(Debug, Default)]
pub(crate) struct Changes {
    clock: u64,
    /// Reads that began before this tick are not cached (the whole cache was dropped, or the
    /// record of rooms started afresh).
    floor: u64,
    rooms: HashMap<String, u64>,
}

impl Changes {
    /// Now, for a read about to begin.
    pub(crate) fn now(&self) -> u64 {
        self.clock
    }

    /// Room `name` changes (or changed elsewhere): a read of it under way is not cached.
    pub(crate) fn room(&mut self, name: &str) {
        self.clock += 1;
        if self.rooms.len() >= ROOMS_MAX && !self.rooms.contains_key(name) {
            self.rooms.clear();
            self.floor = self.clock;
        }
        match self.rooms.get_mut(name) {
            Some(at) => *at = self.clock,
            None => {
                self.rooms.insert(name.to_owned(), self.clock);
            }
        }
    }

    /// Every room may have changed (the server list changed, the store was lost).
    pub(crate) fn all(&mut self) {
        self.clock += 1;
        self.floor = self.clock;
        self.rooms.clear();
    }

    /// Whether room `name` may have changed since `since` (a tick from [`Changes::now`]).
    pub(crate) fn since(&self, name: &str, since: u64) -> bool {
        self.floor > since || self.rooms.get(name).is_some_and(|&at| at > since)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_in_one_room_leaves_a_read_of_another_cacheable() {
        let mut c = Changes::default();
        let began = c.now();
        c.room("b");
        assert!(c.since("b", began));
        assert!(!c.since("a", began));
        let later = c.now();
        assert!(
            !c.since("b", later),
            "a read that began after the change is current"
        );
    }

    #[test]
    fn dropping_everything_marks_every_read_under_way() {
        let mut c = Changes::default();
        c.room("a");
        let began = c.now();
        c.all();
        assert!(c.since("a", began) && c.since("never-seen", began));
        assert!(!c.since("a", c.now()));
    }

    #[test]
    fn a_full_record_starts_afresh_without_forgetting_a_change() {
        let mut c = Changes::default();
        let began = c.now();
        for i in 0..ROOMS_MAX {
            c.room(&format!("r{i}"));
        }
        c.room("one-more");
        assert!(c.rooms.len() <= ROOMS_MAX);
        assert!(
            c.since("r0", began),
            "forgotten rooms count as changed for reads under way"
        );
        let later = c.now();
        assert!(!c.since("r0", later));
        c.room("r0");
        assert!(c.since("r0", later));
    }
}
