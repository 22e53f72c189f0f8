//! Sessions this server saw leave, for a while: a membership round must not put them back.
//!
//! A connector takes its round's list first and sends it after (one chat server at a time). A
//! session that closes in between is listed as live, and its leave can reach the room first:
//! most often when a paused connector resumes, sees a batch of sockets closed while it was
//! stopped, and its round tick fires at once. Put back by that round, the member would be a
//! ghost announced to the room (`onAdd`), and a later enter of the same user through the same
//! connector replaces it silently, so a member who heard the leave and missed that `onAdd`
//! would never see the user again. Entries are never reused within a connector's incarnation,
//! so a session seen leaving is closed for good, and a round that lists it is stale.

use std::collections::HashMap;
use std::time::Duration;

use parking_lot::Mutex;
use shaddock_channel::Member;
use tokio::time::Instant;

/// How long a leave is remembered: longer than a round can take between its list and its
/// arrival (a few RPC timeouts).
pub const REMEMBERED_FOR: Duration = Duration::from_secs(20);

/// Most leaves remembered (past it, the expired ones go, then all: a bound on memory).
const MOST: usize = 100_000;

/// The last session seen leaving, per room and uid.
#[derive(Debug, Default)]
pub struct Closed {
    by_member: Mutex<HashMap<(String, String), (Member, Instant)>>,
}

impl Closed {
    /// `member`'s session left `rid`.
    pub fn left(&self, rid: &str, member: &Member) {
        let now = Instant::now();
        let mut by_member = self.by_member.lock();
        if by_member.len() >= MOST {
            by_member.retain(|_, (_, at)| now.duration_since(*at) < REMEMBERED_FOR);
            if by_member.len() >= MOST {
                by_member.clear();
            }
        }
        by_member.insert((rid.to_owned(), member.uid.clone()), (member.clone(), now));
    }

    /// True if a session of `uid` on frontend `sid` was seen leaving `rid` lately.
    pub fn left_lately_through(&self, rid: &str, uid: &str, sid: &str) -> bool {
        let by_member = self.by_member.lock();
        by_member
            .get(&(rid.to_owned(), uid.to_owned()))
            .is_some_and(|(closed, at)| at.elapsed() < REMEMBERED_FOR && closed.sid == sid)
    }

    /// True if `member` (this very session) was seen leaving `rid` lately.
    pub fn is_closed(&self, rid: &str, member: &Member) -> bool {
        let by_member = self.by_member.lock();
        by_member
            .get(&(rid.to_owned(), member.uid.clone()))
            .is_some_and(|(closed, at)| {
                at.elapsed() < REMEMBERED_FOR
                    && closed.sid == member.sid
                    && closed.incarnation == member.incarnation
                    && closed.session == member.session
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(uid: &str, sid: &str, incarnation: u64, session: u64) -> Member {
        Member {
            uid: uid.to_owned(),
            sid: sid.to_owned(),
            incarnation,
            session,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn only_the_very_session_that_left_counts_as_closed_and_only_for_a_while() {
        let closed = Closed::default();
        let gone = session("u*r", "connector-1", 7, 3);
        closed.left("r", &gone);
        assert!(closed.is_closed("r", &gone));
        assert!(closed.left_lately_through("r", "u*r", "connector-1"));
        assert!(!closed.left_lately_through("r", "u*r", "connector-2"));
        assert!(!closed.left_lately_through("other", "u*r", "connector-1"));
        // The user's next session, the same session number of another run or connector, the
        // same session in another room: all live as far as this knows.
        assert!(!closed.is_closed("r", &session("u*r", "connector-1", 7, 4)));
        assert!(!closed.is_closed("r", &session("u*r", "connector-1", 8, 3)));
        assert!(!closed.is_closed("r", &session("u*r", "connector-2", 7, 3)));
        assert!(!closed.is_closed("r2", &gone));
        tokio::time::advance(REMEMBERED_FOR).await;
        assert!(!closed.is_closed("r", &gone), "forgotten after a while");
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_memory_lets_the_expired_go_first() {
        let closed = Closed::default();
        for i in 0..MOST as u64 - 1 {
            closed.left("r", &session(&format!("old{i}"), "c", 1, i));
        }
        tokio::time::advance(REMEMBERED_FOR).await;
        let fresh = session("new*r", "c", 1, 1);
        closed.left("r", &fresh);
        closed.left("r", &session("newer*r", "c", 1, 2));
        assert!(closed.is_closed("r", &fresh));
        assert_eq!(closed.by_member.lock().len(), 2);
    }
}
