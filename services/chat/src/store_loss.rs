//! A store that lost its data (a Redis restart without persistence, a master without a replica
//! back empty): how every chat server learns of it, and what members put back afterwards are
//! told. Part 5 of the state machine in [`crate::membership`].
//!
//! # Learning of the loss
//! The store holds an epoch mark, a token set by whoever finds it missing. Each chat server
//! remembers the mark it saw last (every heartbeat, and at once when a leave finds nobody): the
//! one that sets it asks every connector for a silent round, and the others, finding another
//! mark than theirs, know of the loss too.
//!
//! # While the store is rebuilt
//! The rounds put members back silently, one connector at a time, so for a while the store
//! lacks members the others still believe in. Per room, for [`WINDOW`] after the loss:
//! - a leave that found nobody is announced to whoever is stored, and remembered;
//! - a user who entered (`onAdd` to whoever was stored) is remembered.
//!
//! The loss is found up to a heartbeat after it happened, so enters and leaves are remembered
//! for [`CARRY`] at all times, and those are kept when a loss is found.
//!
//! A member put back later missed both, so it is told each remembered leave (of a user still
//! gone) and each remembered enter (of a user still there); each who entered is told of it
//! (`onAdd`: the list it got on entering lacked it). A member put back that was announced as
//! gone (the leave was of an older session of it) is announced again (`onAdd`).

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use parking_lot::Mutex;
use shaddock_channel::{Channel, ChannelError, Member};
use shaddock_remote::session_remote::Resync;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::ChatState;
use crate::room::{announce_add, tell};

/// How long after the store lost its data a leave that finds nobody is still announced, and
/// what happened in each room is remembered for members put back.
pub const WINDOW: Duration = Duration::from_secs(30);

/// Users remembered per room at most (a bound on what a flood of enters can make it hold).
const REMEMBERED: usize = 1000;

/// What was remembered this long before a loss is found is kept across it: it may belong to
/// the new loss already, found up to a heartbeat after it happened (chaos: a leave that found
/// nobody in the wiped store 300 ms before the loss was found, forgotten with the last loss's
/// memory, was never told to the members put back).
const CARRY: Duration = Duration::from_secs(5);

/// What this server knows of the store's losses.
#[derive(Debug, Default)]
pub struct StoreLoss {
    /// When the store was last found without its data.
    lost_at: Mutex<Option<Instant>>,
    /// The epoch mark this server saw last.
    mark: Mutex<Option<String>>,
    /// Per room, since the loss (or in the last [`CARRY`]): uids whose leave found nobody,
    /// and uids that entered.
    rooms: Mutex<HashMap<String, Remembered>>,
    /// When `rooms` was last rid of what is older than [`CARRY`] outside a loss's window.
    pruned: Mutex<Option<Instant>>,
    /// When the last epoch check that found the store intact was sent: what was noted before
    /// it was in the store before any loss found after.
    intact_at: Mutex<Option<Instant>>,
}

/// Notes `uid` in `list` as of now (once; the oldest goes past [`REMEMBERED`]).
fn note(list: &mut Vec<(String, Instant)>, uid: &str) {
    let now = Instant::now();
    if let Some(at) = list.iter().position(|(u, _)| u == uid) {
        // Again: as of now (an enter after the wipe of a user who entered before it).
        let (u, _) = list.remove(at);
        list.push((u, now));
        return;
    }
    if list.len() >= REMEMBERED {
        list.remove(0);
    }
    list.push((uid.to_owned(), now));
}

/// [`SinceLoss`] as remembered, each uid with when.
#[derive(Debug, Default)]
struct Remembered {
    left: Vec<(String, Instant)>,
    entered: Vec<(String, Instant)>,
}

/// What happened in one room since the store lost its data.
#[derive(Debug, Default, Clone)]
pub struct SinceLoss {
    pub left: Vec<String>,
    pub entered: Vec<String>,
}

impl StoreLoss {
    /// True for [`WINDOW`] after the store lost its data.
    pub fn recent(&self) -> bool {
        self.lost_at.lock().is_some_and(|at| at.elapsed() < WINDOW)
    }

    /// The store was found without its data: what was noted since it was last found intact
    /// (and within [`CARRY`]) may already belong to this loss, and is kept; the rest goes.
    fn lost(&self) {
        let now = Instant::now();
        let mut rooms = self.rooms.lock();
        *self.lost_at.lock() = Some(now);
        let carry_from = now.checked_sub(CARRY).unwrap_or(now);
        let from = self.intact_at.lock().map_or(carry_from, |at| at.max(carry_from));
        let after = |(_, at): &(String, Instant)| *at >= from;
        for room in rooms.values_mut() {
            room.left.retain(after);
            room.entered.retain(after);
        }
        rooms.retain(|_, r| !r.left.is_empty() || !r.entered.is_empty());
    }

    /// Room `rid`'s memory in `rooms`, to note something in. Outside a loss's window only the
    /// last [`CARRY`] is kept: a loss found later may have happened before it (a Redis that
    /// restarted empty is found up to a heartbeat later, and what entered or left meanwhile
    /// must still be told to the members put back).
    fn noting<'a>(&self, rooms: &'a mut HashMap<String, Remembered>, rid: &str) -> &'a mut Remembered {
        let recent = self.recent();
        let now = Instant::now();
        let fresh = |(_, at): &(String, Instant)| now.duration_since(*at) <= CARRY;
        if !recent {
            let mut pruned = self.pruned.lock();
            if pruned.is_none_or(|at| now.duration_since(at) > CARRY) {
                *pruned = Some(now);
                rooms.retain(|_, r| r.left.iter().chain(&r.entered).any(fresh));
            }
        }
        if !rooms.contains_key(rid) {
            rooms.insert(rid.to_owned(), Remembered::default());
        }
        let room = rooms.get_mut(rid).expect("inserted above");
        if !recent {
            room.left.retain(fresh);
            room.entered.retain(fresh);
        }
        room
    }

    /// A leave of `uid` found nobody in `rid`.
    pub fn left(&self, rid: &str, uid: &str) {
        let mut rooms = self.rooms.lock();
        let room = self.noting(&mut rooms, rid);
        room.entered.retain(|(u, _)| u != uid);
        note(&mut room.left, uid);
    }

    /// `uid` entered `rid`; `announced`: as a newcomer (`onAdd` to those stored).
    pub fn entered(&self, rid: &str, uid: &str, announced: bool) {
        let mut rooms = self.rooms.lock();
        let room = self.noting(&mut rooms, rid);
        room.left.retain(|(u, _)| u != uid);
        if announced {
            note(&mut room.entered, uid);
        }
    }

    /// What happened in `rid` since a recent loss.
    fn since(&self, rid: &str) -> Option<SinceLoss> {
        if !self.recent() {
            return None;
        }
        let uids = |v: &[(String, Instant)]| v.iter().map(|(u, _)| u.clone()).collect();
        self.rooms.lock().get(rid).map(|r| SinceLoss {
            left: uids(&r.left),
            entered: uids(&r.entered),
        })
    }

    /// `uid`, put back, is no longer among those who left.
    fn back(&self, rid: &str, uid: &str) {
        if let Some(room) = self.rooms.lock().get_mut(rid) {
            room.left.retain(|(u, _)| u != uid);
        }
    }
}

/// Members were put back in `rid` by a round (`announced`: with `onAdd` to the others): tells
/// them, and those who entered meanwhile, what they missed while the store was rebuilt; but
/// not those in `told` (caught up from the history, which holds that news, or dropped).
pub async fn after_put_back(
    state: &ChatState,
    channel: &Channel,
    put_back: &[Member],
    announced: bool,
    told: &std::collections::HashSet<String>,
) -> Result<(), ChannelError> {
    let rid = channel.name();
    let Some(missed) = state.rounds.loss.since(rid) else {
        return Ok(());
    };
    let members = channel.members().await?;
    let now: BTreeSet<&str> = members.iter().map(|m| m.uid.as_str()).collect();
    for member in put_back {
        if missed.left.contains(&member.uid) {
            // Announced as gone by a leave of an older session: it is here.
            state.rounds.loss.back(rid, &member.uid);
            if !announced {
                let others: Vec<Member> = members.iter().filter(|o| o.uid != member.uid).cloned().collect();
                announce_add(state, &others, &member.uid, rid).await;
            }
        }
        if told.contains(&member.uid) {
            continue;
        }
        for uid in missed
            .left
            .iter()
            .filter(|u| !now.contains(u.as_str()) && **u != member.uid)
        {
            tell(state, member, "onLeave", uid, rid).await;
        }
        for uid in missed
            .entered
            .iter()
            .filter(|u| now.contains(u.as_str()) && **u != member.uid)
        {
            tell(state, member, "onAdd", uid, rid).await;
        }
    }
    if !announced {
        for newcomer in members.iter().filter(|m| missed.entered.contains(&m.uid)) {
            for member in put_back.iter().filter(|p| p.uid != newcomer.uid) {
                tell(state, newcomer, "onAdd", &member.uid, rid).await;
            }
        }
    }
    Ok(())
}

/// The store lost its data: remember when, and (`ask`) ask every connector for a silent round,
/// three times (a connector whose NATS is still reconnecting misses one).
fn store_lost(state: &ChatState, ask: bool) {
    state.rounds.loss.lost();
    // The cached groupings name members the store no longer has: a round comparing with them
    // would keep what it must put back.
    state.channels.invalidate_cache();
    tracing::warn!(
        asking = ask,
        "the channel store lost its data (or is new): connectors tell it again who is where"
    );
    if !ask {
        return;
    }
    let rpc = state.rpc.clone();
    tokio::spawn(async move {
        for wait in [0, 2, 5] {
            tokio::time::sleep(Duration::from_secs(wait)).await;
            if let Err(e) = rpc.notify_all(Resync { announce: false }).await {
                tracing::warn!(error = %e, "cannot ask for a round");
            }
        }
    });
}

/// Claims the epoch mark and compares it with the one seen last: a loss found here asks for
/// rounds; one found by another server (another mark) is only remembered.
async fn check_epoch(state: &ChatState) -> Result<(), ChannelError> {
    let token = format!(
        "{}-{}",
        state.server_id,
        crate::membership::now_ms().wrapping_mul(1000) + u64::from(std::process::id() % 1000)
    );
    let asked = Instant::now();
    let epoch = state.channels.store().claim_epoch(&token).await?;
    let changed = {
        let mut seen = state.rounds.loss.mark.lock();
        let changed = seen.as_ref().is_some_and(|m| *m != epoch.mark);
        *seen = Some(epoch.mark);
        changed
    };
    if epoch.claimed {
        store_lost(state, true);
    } else if changed {
        store_lost(state, false);
    } else {
        *state.rounds.loss.intact_at.lock() = Some(asked);
    }
    Ok(())
}

/// A leave found nobody: if that is because the store has just lost its data (before
/// [`watch_store`] noticed), learn it now, so that the leave is still announced.
pub async fn check_on_missed_leave(state: &ChatState) {
    if !state.rounds.loss.recent() {
        let _ = check_epoch(state).await;
    }
}

/// Checks the store's epoch mark every `every` (see the module doc).
pub async fn watch_store(state: ChatState, every: Duration, token: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = check_epoch(&state).await {
            tracing::debug!(error = %e, "channel store unreachable");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::StoreLoss;

    #[tokio::test(start_paused = true)]
    async fn nothing_is_told_unless_the_store_lost_its_data_recently_and_what_came_just_before_is() {
        let loss = StoreLoss::default();
        loss.left("r", "a*r");
        tokio::time::advance(super::CARRY + std::time::Duration::from_secs(1)).await;
        loss.entered("r", "b*r", true);
        assert!(!loss.recent());
        assert!(loss.since("r").is_none());
        // Found a moment later: b entered the store that was already empty.
        tokio::time::advance(std::time::Duration::from_millis(500)).await;
        loss.lost();
        let seen = loss.since("r").unwrap();
        assert_eq!(
            (seen.left, seen.entered),
            (vec![], vec!["b*r".to_owned()]),
            "a's leave, long before, is forgotten"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_loss_keeps_only_what_came_after_the_store_was_last_found_intact() {
        let loss = StoreLoss::default();
        loss.entered("r", "a*r", true);
        loss.entered("r", "b*r", true);
        tokio::time::advance(std::time::Duration::from_millis(500)).await;
        *loss.intact_at.lock() = Some(tokio::time::Instant::now());
        tokio::time::advance(std::time::Duration::from_millis(100)).await;
        // a enters again after the check: as of now, not as of its first enter.
        loss.entered("r", "a*r", true);
        loss.entered("r", "c*r", true);
        tokio::time::advance(std::time::Duration::from_millis(500)).await;
        loss.lost();
        let seen = loss.since("r").unwrap();
        assert_eq!(seen.entered, vec!["a*r".to_owned(), "c*r".to_owned()]);
    }

    #[tokio::test(start_paused = true)]
    async fn outside_a_loss_rooms_without_news_of_the_last_seconds_are_forgotten() {
        let loss = StoreLoss::default();
        for i in 0..100 {
            loss.entered(&format!("r{i}"), "a", true);
        }
        tokio::time::advance(super::CARRY * 2).await;
        loss.entered("new", "b", true);
        assert_eq!(loss.rooms.lock().len(), 1);
    }

    #[test]
    fn a_user_who_leaves_and_enters_again_is_remembered_as_entered_only() {
        let loss = StoreLoss::default();
        loss.lost();
        loss.left("r", "a*r");
        loss.left("r", "a*r");
        loss.entered("r", "b*r", true);
        let seen = loss.since("r").unwrap();
        assert_eq!(
            (seen.left, seen.entered),
            (vec!["a*r".to_owned()], vec!["b*r".to_owned()])
        );
        loss.entered("r", "a*r", true);
        loss.left("r", "b*r");
        let seen = loss.since("r").unwrap();
        assert_eq!(
            (seen.left, seen.entered),
            (vec!["b*r".to_owned()], vec!["a*r".to_owned()])
        );
        // Taking back a place (not announced) only cancels the leave.
        loss.entered("r", "b*r", false);
        let seen = loss.since("r").unwrap();
        assert!(seen.left.is_empty());
        assert_eq!(seen.entered, vec!["a*r".to_owned()]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_loss_forgets_the_last_one_but_what_came_just_before_it() {
        let loss = StoreLoss::default();
        loss.lost();
        loss.left("r", "a*r");
        tokio::time::advance(super::CARRY + std::time::Duration::from_secs(1)).await;
        loss.left("r", "b*r");
        tokio::time::advance(std::time::Duration::from_secs(1)).await;
        loss.lost();
        let seen = loss.since("r").unwrap();
        assert_eq!(
            seen.left,
            vec!["b*r".to_owned()],
            "b may have left after the new loss"
        );
    }
}
