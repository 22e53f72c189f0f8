//! A room taken over from a chat server that died between a history append and its push.
//!
//! A room's owner appends a message to the history, then pushes it. Killed in between (or
//! with the push still in its NATS client), it leaves a message that the history holds and
//! no member got; the room's next owner (another server, or the same id restarted) pushes the
//! next offsets, and a recovering client that gets one of them would recover from past the
//! missing one. So each server records itself as the room's writer in the history
//! ([`shaddock_history::History::take_over`]) once per room after each change of the server
//! list of chat servers (and after coming back from a pause), before its first history write
//! or recovery read there. When the writer before it is neither in the list nor left saying
//! `Bye` (a server that leaves in good order finishes its rooms first), it asks the connectors
//! to drop the room's recovering members before anything else: their clients come back and
//! recover what was missed. So it does when the writer is listed but did not answer the
//! room's handoff barrier (`crate::handoff`): stuck, it may hold such a batch, and once back
//! it can no longer withdraw it (the change of writer seals what the room holds, see
//! `History::take_over`). Each connector drops the same sessions by itself when it sees a
//! server vanish, which also covers rooms that get nothing more; it may see it later than the
//! new owner pushes.

use std::collections::HashSet;

use parking_lot::Mutex;
use shaddock_bus::ServerInfo;

use crate::lost_pushes::drop_recovering_members;
use crate::{ChatState, SERVER_TYPE};

/// Rooms remembered as checked at most; past it, all are checked again.
const ROOMS: usize = 100_000;

/// The rooms whose writer this server has recorded since the chat servers last changed.
#[derive(Debug, Default)]
pub struct Takeovers {
    checked: Mutex<Checked>,
    /// Rooms whose recovering members are still to be dropped (the ask failed): the writer
    /// is recorded already, so the next check would not find the vanished one again.
    owed: Mutex<HashSet<String>>,
}

#[derive(Debug, Default)]
struct Checked {
    /// The chat servers the rooms were checked under (id and incarnation): other servers
    /// coming and going change no room's writer.
    chats: Vec<(String, u64)>,
    /// The registry's rejoins then.
    rejoins: u64,
    rooms: HashSet<String>,
}

impl Takeovers {
    /// True when `rid` was checked under `chats` and `rejoins`; otherwise forgets what was
    /// checked under others.
    fn is_checked(&self, chats: &[ServerInfo], rejoins: u64, rid: &str) -> bool {
        let mut c = self.checked.lock();
        let same = c.rejoins == rejoins
            && c.chats.len() == chats.len()
            && c.chats
                .iter()
                .zip(chats)
                .all(|((id, inc), s)| *id == s.id && *inc == s.incarnation);
        if !same || c.rooms.len() >= ROOMS {
            c.rooms.clear();
            c.chats = chats.iter().map(|s| (s.id.clone(), s.incarnation)).collect();
            c.rejoins = rejoins;
        }
        c.rooms.contains(rid)
    }

    fn checked(&self, chats: &[ServerInfo], rejoins: u64, rid: &str) {
        if self.is_checked(chats, rejoins, rid) {
            return;
        }
        self.checked.lock().rooms.insert(rid.to_owned());
    }

    /// Room `rid` is to be checked again before its next write (another server wrote it).
    pub fn recheck(&self, rid: &str) {
        self.checked.lock().rooms.remove(rid);
    }

    /// Room `rid`'s recovering members are to be dropped before its next write.
    pub fn owe(&self, rid: &str) {
        self.owed.lock().insert(rid.to_owned());
    }
}

/// Before room `rid`'s next history write (or read, to catch a member up): see the module doc.
/// False when the room's recovering members may have to be dropped and could not be: nothing
/// with an offset may be pushed, nor recovery read, until they are. A few comparisons and two
/// set lookups once the room is checked.
pub async fn before_append(state: &ChatState, rid: &str) -> bool {
    if !state.history.is_on() {
        return true;
    }
    let list = state.registry.list();
    let chats = list.servers(SERVER_TYPE);
    let rejoins = *state.registry.rejoins().borrow();
    let owed = state.takeovers.owed.lock().remove(rid);
    let checked = state.takeovers.is_checked(chats, rejoins, rid);
    if checked && !owed {
        return true;
    }
    let vanished = if checked {
        false
    } else {
        let stuck = state.handoff.did_not_hand_over(rid);
        match state.history.take_over(rid, state.incarnation).await {
            Ok(Some(before)) if !state.registry.left_in_good_order(before) => {
                tracing::warn!(%rid, writer = before, "a room taken over from a writer that vanished");
                true
            }
            Ok(Some(before)) if stuck => {
                tracing::warn!(%rid, writer = before, "a room taken over from a writer that did not hand it over");
                true
            }
            Ok(_) => false,
            Err(e) => {
                tracing::warn!(%rid, error = %e, "cannot record this server as the room's writer");
                if owed || stuck {
                    state.takeovers.owe(rid);
                }
                return false;
            }
        }
    };
    if vanished || owed {
        let rooms = [rid.to_owned()];
        if !drop_recovering_members(state, &rooms, "a message of the room may not have been pushed").await {
            state.takeovers.owe(rid);
            return false;
        }
    }
    state.takeovers.checked(chats, rejoins, rid);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooms_are_checked_again_after_a_change_of_the_chat_servers_or_a_rejoin() {
        let chat = |id: &str, incarnation| ServerInfo {
            id: id.into(),
            server_type: SERVER_TYPE.into(),
            host: "h".into(),
            client_port: None,
            incarnation,
            draining: false,
        };
        let t = Takeovers::default();
        let one = [chat("chat-1", 1)];
        assert!(!t.is_checked(&one, 0, "r"));
        t.checked(&one, 0, "r");
        assert!(t.is_checked(&one, 0, "r"));
        assert!(!t.is_checked(&one, 0, "other"));
        assert!(!t.is_checked(&one, 1, "r"), "rejoined");
        t.checked(&one, 1, "r");
        assert!(t.is_checked(&one, 1, "r"));
        t.recheck("r");
        assert!(!t.is_checked(&one, 1, "r"), "another server wrote it");
        t.checked(&one, 1, "r");
        let restarted = [chat("chat-1", 2)];
        assert!(!t.is_checked(&restarted, 1, "r"), "a new incarnation");
        t.checked(&restarted, 1, "r");
        let two = [chat("chat-1", 2), chat("chat-2", 1)];
        assert!(!t.is_checked(&two, 1, "r"), "another chat server");
    }
}
