//! History in memory, for one process (`transport = "local"`) and tests.

use std::collections::{HashMap, VecDeque};

use parking_lot::Mutex;

use crate::{Entry, NewEntry, Position, Retention, new_epoch, now_ms};

#[derive(Debug)]
struct RoomLog {
    epoch: String,
    top: u64,
    entries: VecDeque<Entry>,
    /// Offsets withdrawn (their entries are kept, for nobody).
    withdrawn: Vec<u64>,
    /// When it was last used (ms), to forget rooms idle for `meta_ttl`.
    used_ms: u64,
}

/// Rooms kept before idle ones are swept.
const SWEEP_ABOVE: usize = 10_000;

/// Every room's history in this process.
#[derive(Debug)]
pub struct MemoryHistory {
    retention: Retention,
    rooms: Mutex<HashMap<String, RoomLog>>,
}

impl MemoryHistory {
    pub fn new(retention: Retention) -> Self {
        Self {
            retention,
            rooms: Mutex::new(HashMap::new()),
        }
    }

    pub fn retention(&self) -> Retention {
        self.retention
    }

    fn with_room<T>(&self, room: &str, f: impl FnOnce(&mut RoomLog) -> T) -> T {
        let now = now_ms();
        let mut rooms = self.rooms.lock();
        if rooms.len() > SWEEP_ABOVE && !rooms.contains_key(room) {
            let ttl = self.retention.meta_ttl.as_millis() as u64;
            rooms.retain(|_, log| now.saturating_sub(log.used_ms) < ttl);
        }
        let log = rooms.entry(room.to_owned()).or_insert_with(|| RoomLog {
            epoch: new_epoch(),
            top: 0,
            entries: VecDeque::new(),
            withdrawn: Vec::new(),
            used_ms: now,
        });
        log.used_ms = now;
        f(log)
    }

    /// Appends `entries` in order, at one time (as Redis's script does).
    pub(crate) fn append(&self, room: &str, entries: &[NewEntry<'_>]) -> Vec<Position> {
        let size = self.retention.size;
        self.with_room(room, |log| {
            entries
                .iter()
                .map(|e| {
                    log.top += 1;
                    if size > 0 {
                        log.entries.push_back(Entry {
                            offset: log.top,
                            route: e.route.to_owned(),
                            body: e.body.to_vec(),
                            audience: e.audience.clone(),
                            at_ms: now_ms(),
                        });
                        while log.entries.len() > size {
                            log.entries.pop_front();
                        }
                    }
                    Position {
                        epoch: log.epoch.clone(),
                        offset: log.top,
                    }
                })
                .collect()
        })
    }

    /// Withdraws `offsets` of `epoch` (nothing if the room is in another epoch).
    pub(crate) fn withdraw(&self, room: &str, epoch: &str, offsets: &[u64]) {
        self.with_room(room, |log| {
            // Only offsets still kept matter (none when nothing is kept).
            let Some(oldest) = log.entries.front().map(|e| e.offset) else {
                log.withdrawn.clear();
                return;
            };
            if log.epoch == epoch {
                log.withdrawn.retain(|o| *o >= oldest);
                log.withdrawn.extend(offsets.iter().filter(|o| **o >= oldest));
            }
        });
    }

    /// The position, and the entries after `after` when given.
    pub(crate) fn read(&self, room: &str, after: Option<u64>) -> (Position, Vec<Entry>) {
        self.with_room(room, |log| {
            let kept = match after {
                Some(after) => log
                    .entries
                    .iter()
                    .filter(|e| e.offset > after)
                    .map(|e| {
                        let mut e = e.clone();
                        if log.withdrawn.contains(&e.offset) {
                            e.audience = crate::Audience::Only(Vec::new());
                        }
                        e
                    })
                    .collect(),
                None => Vec::new(),
            };
            let position = Position {
                epoch: log.epoch.clone(),
                offset: log.top,
            };
            (position, kept)
        })
    }
}
