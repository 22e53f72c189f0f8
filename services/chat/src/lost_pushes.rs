//! Pushes lost with this chat server's own NATS connection, and the recovering clients that
//! must come back for them.
//!
//! What a chat server pushed as its connection died is lost on its way to every member. A
//! chat message is in the room's history, so a recovering client gets it back, but only if it
//! comes back: when only this server's connection dropped (a node of a NATS cluster died, a
//! link was reset), the connectors lost nothing themselves and keep their sessions. So before
//! its first push on a new connection, or once the connection is back if nothing is pushed, a
//! chat server asks each connector to drop the recovering members of every room it pushed to
//! in the [`WINDOW`] before the loss (`sessionRemote.dropRecoveringOf`, naming each session).
//! Sent to each connector's own subject, as pushes are, the ask reaches it before anything
//! this server pushes after; pushes wait while the connection is down (a publish made then
//! would go out on the new connection ahead of the ask), and a room's job checks again, after
//! such a wait, that its push is still due (a wait counts as a stall: `crate::room`).
//!
//! Pushes already handed to the NATS client when the loss happened but not yet written go out
//! first on the new connection, ahead of the ask: the connectors see those losses themselves,
//! by the pushes' numbering (`shaddock_bus::PushNo`). The ask covers what numbering cannot
//! show: a lost push that was the last this server sent to a connector.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use shaddock_channel::HELD_SID;
use shaddock_remote::session_remote::{DropRecovering, DropRecoveringOf};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::ChatState;

/// How far back, before the connection was seen down, pushes may have been lost.
pub const WINDOW: Duration = crate::recent_news::WINDOW;

/// How many sessions one ask names at most (NATS' max_payload).
const ASK_SESSIONS: usize = 2000;

/// Rooms remembered before those not pushed to lately are forgotten (the rooms pushed to in
/// the last two windows are all kept).
const ROOMS: usize = 4096;

/// What this server pushed lately, and which of its connections' losses it has handled.
#[derive(Debug)]
pub struct LostPushes {
    /// Each room's last push.
    pushed: Mutex<HashMap<String, Instant>>,
    /// When `pushed` was last rid of the rooms not pushed to lately.
    pruned: Mutex<Option<Instant>>,
    /// When the connection was first seen down, while that loss is not handled yet.
    down_since: Mutex<Option<Instant>>,
    /// The connection (`Bus::connects`) whose losses are handled.
    handled: AtomicU64,
    /// One handling at a time; pushes wait for it.
    handling: tokio::sync::Mutex<()>,
    /// The server's shutdown: a push waiting for the connection gives up.
    token: CancellationToken,
}

impl LostPushes {
    /// For a server on its connection number `connects`, stopped by `token`.
    pub fn new(connects: u64, token: CancellationToken) -> Self {
        Self {
            pushed: Mutex::default(),
            pruned: Mutex::default(),
            down_since: Mutex::default(),
            handled: AtomicU64::new(connects),
            handling: tokio::sync::Mutex::new(()),
            token,
        }
    }

    /// Room `rid` is pushed to now.
    pub fn pushed(&self, rid: &str) {
        let now = Instant::now();
        let mut pushed = self.pushed.lock();
        if let Some(at) = pushed.get_mut(rid) {
            *at = now;
            return;
        }
        let mut pruned = self.pruned.lock();
        if pushed.len() >= ROOMS && pruned.is_none_or(|at| now.duration_since(at) > WINDOW) {
            // At most once a window: past it, many rooms are pushed to at once, all kept.
            *pruned = Some(now);
            pushed.retain(|_, at| now.duration_since(*at) <= WINDOW * 2);
        }
        pushed.insert(rid.to_owned(), now);
    }

    /// The connection was seen down at `at` (kept if seen earlier).
    pub fn down(&self, at: Instant) {
        self.down_since.lock().get_or_insert(at);
    }

    /// The rooms pushed to since `since`.
    fn pushed_since(&self, since: Instant) -> Vec<String> {
        let pushed = self.pushed.lock();
        pushed
            .iter()
            .filter(|(_, at)| **at >= since)
            .map(|(rid, _)| rid.clone())
            .collect()
    }
}

/// Before a room's job pushes: when the connection is down, or came back since its losses
/// were handled, waits for it and handles them (see the module doc). A state read and an
/// atomic load when nothing happened.
pub async fn before_push(state: &ChatState) {
    let lost = &state.lost;
    if state.bus.is_connected() && state.bus.connects() == lost.handled.load(Ordering::Acquire) {
        return;
    }
    lost.down(Instant::now());
    handle(state).await;
}

/// Waits for the connection to be up (until shutdown), then, unless done already, asks the
/// connectors to drop the recovering members of the rooms pushed to lately.
pub async fn handle(state: &ChatState) {
    let lost = &state.lost;
    let _one = lost.handling.lock().await;
    tokio::select! {
        _ = lost.token.cancelled() => return,
        () = state.bus.until_connected() => {}
    }
    let connects = state.bus.connects();
    if connects == lost.handled.load(Ordering::Acquire) {
        // Handled already (this was seen down after): forget it, or the next loss would
        // date from it.
        lost.down_since.lock().take();
        return;
    }
    let down = lost.down_since.lock().take().unwrap_or_else(Instant::now);
    let rooms = lost.pushed_since(down.checked_sub(WINDOW).unwrap_or(down));
    if !drop_recovering_members(state, &rooms, "pushes lost with this server's nats connection").await {
        // Asked again before the next push, from the same moment.
        lost.down(down);
        return;
    }
    lost.handled.store(connects, Ordering::Release);
}

/// Asks each connector to drop the recovering members of `rooms` (no kick): their clients
/// come back and recover from the rooms' history what they did not get. Sent on each
/// connector's own subject, ahead of whatever this server pushes after. False when a room
/// could not be read or a connector not asked.
pub async fn drop_recovering_members(state: &ChatState, rooms: &[String], why: &str) -> bool {
    let mut by_sid: BTreeMap<String, Vec<DropRecovering>> = BTreeMap::new();
    let mut failed = false;
    for rid in rooms {
        match state.channels.channel(rid).members().await {
            Ok(members) => {
                for m in members.into_iter().filter(|m| m.sid != HELD_SID) {
                    by_sid.entry(m.sid).or_default().push(DropRecovering {
                        uid: m.uid,
                        entry: m.session,
                    });
                }
            }
            Err(e) => {
                tracing::warn!(%rid, error = %e, why, "cannot read a room to drop its recovering members");
                failed = true;
            }
        }
    }
    for (sid, sessions) in by_sid {
        tracing::warn!(connector = %sid, members = sessions.len(), rooms = rooms.len(), why,
            "recovering members dropped, to recover");
        for part in sessions.chunks(ASK_SESSIONS) {
            let ask = DropRecoveringOf {
                sessions: part.to_vec(),
            };
            if let Err(e) = state.rpc.notify_server(&sid, ask).await {
                tracing::warn!(connector = %sid, error = %e, "cannot ask to drop recovering members");
                failed = true;
            }
        }
    }
    !failed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_rooms_pushed_to_since_a_moment_are_known_and_old_ones_forgotten_when_many() {
        let lost = LostPushes::new(1, CancellationToken::new());
        lost.pushed("r1");
        tokio::time::advance(Duration::from_secs(60)).await;
        let mid = Instant::now();
        lost.pushed("r2");
        lost.pushed("r2");
        assert_eq!(lost.pushed_since(mid), ["r2"]);
        let mut all = lost.pushed_since(mid - Duration::from_secs(61));
        all.sort();
        assert_eq!(all, ["r1", "r2"]);
        for i in 0..ROOMS {
            lost.pushed(&format!("x{i}"));
        }
        assert!(
            !lost.pushed.lock().contains_key("r1"),
            "pushed long ago: forgotten"
        );
        assert!(lost.pushed.lock().contains_key("r2"), "pushed lately: kept");
    }

    #[test]
    fn a_loss_is_dated_from_when_it_was_first_seen() {
        let lost = LostPushes::new(1, CancellationToken::new());
        let first = Instant::now();
        lost.down(first);
        lost.down(first + Duration::from_secs(1));
        assert_eq!(*lost.down_since.lock(), Some(first));
    }
}
