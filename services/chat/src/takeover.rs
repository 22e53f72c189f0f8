//! A room taken over from a chat server that died between a history append and its push.
//!
//! A room's owner appends a message to the history, then pushes it. Killed in between (or
//! with the push still in its NATS client), it leaves a message that the history holds and
//! no member got; the room's next owner (another server, or the same id restarted) pushes the
//! next offsets, and a recovering client that gets one of them would recover from past the
//! missing one. So each server records itself as the room's writer in the history
//! ([`shaddock_history::History::take_over`]) once per room after each change of the server
//! list (and after coming back from a pause), on the first push after an append. When the
//! writer before it is neither in the list nor left saying `Bye` (a server that leaves in good
//! order finishes its rooms first), it asks the connectors to drop the room's recovering
//! members before that push: their clients come back and recover what was missed.
//!
//! Not covered: a room that gets no push after its writer died keeps its recovering members
//! until they come back for another reason (they then recover it).

use std::collections::HashSet;
use std::sync::Arc;

use parking_lot::Mutex;
use shaddock_bus::ServerList;

use crate::ChatState;
use crate::lost_pushes::drop_recovering_members;

/// Rooms remembered as checked at most; past it, all are checked again.
const ROOMS: usize = 100_000;

/// The rooms whose writer this server has recorded since the server list last changed.
#[derive(Debug, Default)]
pub struct Takeovers {
    checked: Mutex<Checked>,
    /// Rooms whose recovering members are still to be dropped (the ask failed): the writer
    /// is recorded already, so the next check would not find the vanished one again.
    owed: Mutex<HashSet<String>>,
}

#[derive(Debug, Default)]
struct Checked {
    /// The list the rooms were checked under (compared by pointer: any change checks again).
    list: Option<Arc<ServerList>>,
    /// The registry's rejoins then.
    rejoins: u64,
    rooms: HashSet<String>,
}

impl Takeovers {
    /// True when `rid` was checked under `list` and `rejoins`; otherwise forgets what was
    /// checked under another.
    fn is_checked(&self, list: &Arc<ServerList>, rejoins: u64, rid: &str) -> bool {
        let mut c = self.checked.lock();
        let same = c.list.as_ref().is_some_and(|l| Arc::ptr_eq(l, list)) && c.rejoins == rejoins;
        if !same || c.rooms.len() >= ROOMS {
            c.rooms.clear();
            c.list = Some(list.clone());
            c.rejoins = rejoins;
        }
        c.rooms.contains(rid)
    }

    fn checked(&self, list: &Arc<ServerList>, rejoins: u64, rid: &str) {
        let mut c = self.checked.lock();
        if c.list.as_ref().is_some_and(|l| Arc::ptr_eq(l, list)) && c.rejoins == rejoins {
            c.rooms.insert(rid.to_owned());
        }
    }
}

/// Before room `rid`'s next history write (or read, to catch a member up): see the module doc.
/// A list read and a set lookup once the room is checked.
pub async fn before_append(state: &ChatState, rid: &str) {
    if !state.history.is_on() {
        return;
    }
    let list = state.registry.list();
    let rejoins = *state.registry.rejoins().borrow();
    if state.takeovers.is_checked(&list, rejoins, rid) {
        return;
    }
    let owed = state.takeovers.owed.lock().remove(rid);
    let vanished = match state.history.take_over(rid, state.incarnation).await {
        Ok(Some(before)) if !state.registry.left_in_good_order(before) => {
            tracing::warn!(%rid, writer = before, "a room taken over from a writer that vanished");
            true
        }
        Ok(_) => false,
        Err(e) => {
            tracing::warn!(%rid, error = %e, "cannot record this server as the room's writer");
            if owed {
                state.takeovers.owed.lock().insert(rid.to_owned());
            }
            return;
        }
    };
    if vanished || owed {
        let rooms = [rid.to_owned()];
        if !drop_recovering_members(state, &rooms, "a message of the room may not have been pushed").await {
            state.takeovers.owed.lock().insert(rid.to_owned());
            return;
        }
    }
    state.takeovers.checked(&list, rejoins, rid);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooms_are_checked_again_after_a_change_of_the_list_or_a_rejoin() {
        let t = Takeovers::default();
        let list = Arc::new(ServerList::default());
        assert!(!t.is_checked(&list, 0, "r"));
        t.checked(&list, 0, "r");
        assert!(t.is_checked(&list, 0, "r"));
        assert!(!t.is_checked(&list, 0, "other"));
        assert!(!t.is_checked(&list, 1, "r"), "rejoined");
        t.checked(&list, 1, "r");
        let changed = Arc::new(ServerList::default());
        assert!(!t.is_checked(&changed, 1, "r"), "another list");
        t.checked(&list, 1, "r");
        assert!(
            !t.is_checked(&changed, 1, "r"),
            "checked under the old list: not kept"
        );
    }
}
