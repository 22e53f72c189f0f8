//! Membership that heals itself: the store's members of every room converge to the sessions
//! that really exist, whatever failed on the way. This module is the one place that knows the
//! whole state machine; the connector's side is `shaddock_connector::membership`.
//!
//! # Who knows what
//! - The truth is the connectors' sessions. A session bound to `username*rid` on connector
//!   `sid` is a member of room `rid`. Each bind on a connector gets a number, its *entry*
//!   (increasing; 0 means unbound); a connector's runs are told apart by its *incarnation*.
//! - The store holds, per room, `uid -> sid#incarnation#entry`. It is a cache of the truth
//!   that every chat server can read, so a room can move between chat servers.
//! - The owner of a room (crc32(rid) over the live chat servers) is the only server that
//!   changes it, one message at a time in the room's order (`ChatState::rooms`).
//!
//! # How the store is kept true
//! 1. **Enter and leave.** `chatRemote.add` when a session enters, `chatRemote.kick` when it
//!    closes: the fast path. Either may be lost (a chat server dies, NATS drops out, a timeout);
//!    a failed leave is retried by its connector for 30 s, and one that then finds nobody
//!    (the store lost its data meanwhile) is still announced (see 5.).
//! 2. **Rounds (anti-entropy).** Every `registry.sync_ms` each connector sends each chat
//!    server a [`Sync`]: its newest entry, taken *before* the list, and every live member of
//!    the rooms that server owns (in parts, so no message outgrows NATS' max_payload). For each
//!    room listed, and, once every part of the round has arrived, for each room where the store
//!    still has members of that connector but no part listed it, the owner compares:
//!    - a stored member of another incarnation of the connector: a ghost of an earlier run,
//!      removed (`onLeave`);
//!    - a stored member with no live session and an entry at most the newest one: its
//!      session closed and its leave was lost, removed (`onLeave`);
//!    - a stored member with a later entry: it entered after the list was taken, kept;
//!    - a live member the store lacks: put back (`onAdd`, unless the round is a resync after
//!      the store lost its data: the others never heard it leave);
//!    - a live member stored with another entry of the same connector: replaced, silently;
//!    - a member listed live whose session this server saw leave lately: not live. The list
//!      is taken before it is sent, so a leave can overtake it (a paused connector resumes,
//!      finds sockets closed while it was stopped, and its round tick fires at once); put
//!      back, it would be a ghost announced with `onAdd` (`crate::closed`).
//!
//!    A part computed over another list of chat servers than the receiver's is skipped: room
//!    ownership is moving, and the next round agrees. The list is checked again when each
//!    room's turn comes (a room may wait behind a handoff barrier while the list changes).
//! 3. **Dead connectors.** A connector that comes back as another incarnation has lost its
//!    sessions: its old members leave at once. One whose heartbeat lapses may only be paused:
//!    its members leave the rooms this server owns if it is still gone a grace (one more lapse)
//!    later ([`watch`]), and on round ticks for connectors the store still names but the
//!    registry has not known for the grace ([`sweep`]): rooms that move later (a chat server
//!    died too) are cleaned by their new owner. A purged connector that comes back is asked
//!    for a round at once: its members are put back with `onAdd` (by any round, a store
//!    loss's silent one too: the others were told they left), and each is given, from the
//!    history and in order, what the room said while it was purged (its session lived on, so
//!    its client, recovering or not, never learned it should ask). One the history cannot
//!    catch up (trimmed, another epoch) is dropped if its session is a recovering one
//!    (`sessionRemote.dropRecovering`: its client comes back and recovers, or is told
//!    `recovered: false`), else told (`onAdd`, `onLeave`) who came and went meanwhile. What
//!    a purge removed is noted in the store (`Store::keep_purged`, for ten minutes), so a
//!    room that moved meanwhile (a chat server joined or left) is caught up by its new owner.
//!    A member put back whose purge nobody noted (its enter's add was still on its way when
//!    the round listed it) gets neither.
//! 4. **Held places.** A session closed by its draining connector is kicked with `resume_ms`:
//!    its member becomes a held place (`HELD_SID`, with its deadline as `session`), nobody
//!    is told, and nothing is pushed to it. Entering again, through any connector, takes it
//!    back (`Added::Resumed`, no `onAdd`). `HELD_SID` is in the store's `sids` like a
//!    connector that is never in the registry, so [`sweep`] visits its rooms on every tick
//!    and removes the places past their deadline, with `onLeave`.
//! 5. **A store that lost its data** (a Redis restart without persistence: the epoch mark is
//!    gone or another, found every heartbeat or by a leave that finds nobody): every connector
//!    is asked for a silent round. For a while after, a leave that finds nobody is still
//!    announced (the store may have forgotten a member the others still believe in), and
//!    members put back are told what they missed meanwhile (`crate::store_loss`).
//! 6. **A chat server cut off and back** (paused, or its NATS gone) may hear no change of the
//!    server list although the others routed its rooms elsewhere meanwhile: on its return
//!    ([`shaddock_bus::Registry::rejoins`]) each room first waits for the server it routes to
//!    without this one (a barrier, `crate::handoff`) and is then read afresh from the store.
//! 7. **Pushes across a NATS restart.** Servers reconnect one by one, and NATS drops what is
//!    published to a subject nobody listens on: a chat server back first would push a room's
//!    messages, `onAdd` and `onLeave` into connectors not yet subscribed again. A push to a
//!    connector the registry has not heard since this server's connection came back goes as
//!    a request, retried while nobody listens, for at most a lapse
//!    (`shaddock_channel::ChannelService::follow`). A store that lost its data, and a leave
//!    that removed nothing, also drop the room cache: it may name members the store forgot.
//!
//!    What was already on its way when a connection dropped is gone (the dead socket's
//!    buffers, NATS' own): each chat server remembers its rooms' member news and, once its
//!    own connection is back, or to a connector's members when that connector's connection
//!    dropped and it asks (`chatRemote.restate`), tells each room again the last news of each
//!    user from just before the loss, where the store still agrees with it
//!    (`crate::recent_news`). Recovering members come back for the chat messages: a
//!    connector whose connection dropped drops them itself; after a loss of a chat server's
//!    own connection, it asks the connectors to, before its next push (`crate::lost_pushes`).
//! 8. **A job that stalled.** A room's job that has run for a third of the lapse may have been
//!    paused between its store write and its push while the others gave its room to another
//!    owner, which changed the room and told the members meanwhile: its `onAdd` and `onLeave`
//!    are checked against the store, read afresh, and dropped when no longer true
//!    (`crate::room`), so a user who came back is not told gone, nor one who went, back. The
//!    check runs before the event's history write and again before its push, since the pause
//!    may fall between the two; news found stale there is withdrawn from the history too. A
//!    stalled batch of chat messages that the room's history went on without is withdrawn.
//!
//! The store forgets what becomes empty (a room with no member, a connector with no room), so
//! nothing grows without bound; the chat server's per-room cache expires (see
//! `shaddock_channel::ChannelService`).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use shaddock_channel::{Added, ChannelError, HELD_SID, Member};
use shaddock_history::Position;
use shaddock_remote::chat_remote::{Sync, SyncMember, SyncReport};
use shaddock_remote::session_remote::{DropRecovering, Resync};
use shaddock_server::HandlerError;
use tokio_util::sync::CancellationToken;

use crate::room::{announce_add, announce_leave, catch_up, tell};
use crate::{ChatState, SERVER_TYPE};

/// Now, in ms since the Unix epoch: the clock of held places' deadlines.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// The parts of the current round of each connector that have arrived, and what the members
/// of a purged connector last saw of each room.
#[derive(Debug, Default)]
pub struct Rounds {
    by_sid: Mutex<HashMap<String, RoundSeen>>,
    /// What this server knows of the store's losses of data.
    pub loss: crate::store_loss::StoreLoss,
    /// Sessions seen leaving lately: a round that still lists one is stale for it.
    pub closed: crate::closed::Closed,
}

/// A room as a connector's members last saw it before they were purged from it, if their
/// sessions were alive after all (a paused connector). Kept in the store for
/// [`PURGE_NOTE_TTL`], for whichever chat server owns the room when they come back (it may have
/// moved meanwhile: a server joined or left); read by the round that puts them back, then
/// forgotten. Named fields: servers of two versions read each other's notes.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct PurgedView {
    /// The room's uids: what they still believe.
    #[serde(default)]
    seen: BTreeSet<String>,
    /// The members purged, exactly (uid, incarnation, entry): only these sessions can have
    /// lived on through the purge and missed what was said meanwhile. Empty when the purge
    /// was of an earlier incarnation (its sessions are gone for sure).
    #[serde(default)]
    removed: HashSet<(String, u64, u64)>,
    /// The room's history position before they left: what they missed comes after it.
    #[serde(default)]
    position: Option<Position>,
}

/// How long the store keeps a purge's note: a paused connector's clients may wait for it
/// longer than its lapse, but not for ever.
const PURGE_NOTE_TTL: Duration = Duration::from_secs(600);

impl PurgedView {
    async fn keep(&self, state: &ChatState, sid: &str, rid: &str) {
        let Ok(note) = rmp_serde::to_vec_named(self) else {
            return;
        };
        let store = state.channels.store();
        if let Err(e) = store.keep_purged(rid, sid, &note, PURGE_NOTE_TTL).await {
            tracing::warn!(%rid, %sid, error = %e, "cannot keep a purge's note in the store");
        }
    }

    /// The note of the last purge of `sid`'s members from `rid`, by whichever server made it.
    async fn read(state: &ChatState, sid: &str, rid: &str) -> Option<Self> {
        match state.channels.store().purged(rid, sid).await {
            Ok(note) => note.and_then(|n| rmp_serde::from_slice(&n).ok()),
            Err(e) => {
                tracing::warn!(%rid, %sid, error = %e, "cannot read a purge's note");
                None
            }
        }
    }
}

#[derive(Debug)]
struct RoundSeen {
    incarnation: u64,
    round: u64,
    parts: HashSet<u32>,
    rooms: HashSet<String>,
}

impl Rounds {
    /// Notes a part; once every part of its round is in, returns every room the round listed.
    fn record(&self, call: &Sync) -> Option<HashSet<String>> {
        let mut by_sid = self.by_sid.lock();
        let seen = by_sid.entry(call.sid.clone()).or_insert_with(|| RoundSeen {
            incarnation: call.incarnation,
            round: call.round,
            parts: HashSet::new(),
            rooms: HashSet::new(),
        });
        if (seen.incarnation, seen.round) != (call.incarnation, call.round) {
            *seen = RoundSeen {
                incarnation: call.incarnation,
                round: call.round,
                parts: HashSet::new(),
                rooms: HashSet::new(),
            };
        }
        seen.parts.insert(call.part);
        seen.rooms.extend(call.rooms.iter().map(|r| r.rid.clone()));
        (seen.parts.len() as u32 >= call.parts).then(|| std::mem::take(&mut seen.rooms))
    }
}

fn err(e: impl std::fmt::Display) -> HandlerError {
    HandlerError::new(e.to_string())
}

/// `chatRemote.sync`: one part of a connector's round.
pub async fn sync(state: &ChatState, call: Sync) -> Result<SyncReport, HandlerError> {
    let mut report = SyncReport::default();
    let list = state.registry.list();
    let mine: Vec<&str> = list.servers(SERVER_TYPE).iter().map(|s| s.id.as_str()).collect();
    if mine != call.chats.iter().map(String::as_str).collect::<Vec<_>>() {
        tracing::debug!(sid = %call.sid, "a membership round over another server list: skipped");
        return Ok(report);
    }
    let complete = state.rounds.record(&call);
    let view = View::of(&call);
    for room in &call.rooms {
        if state.owns(&room.rid) {
            report += reconcile(state, &view, &room.rid, &room.members).await?;
        }
    }
    if let Some(listed) = complete {
        let rooms = state
            .channels
            .store()
            .channels_of_sid(&call.sid)
            .await
            .map_err(err)?;
        for rid in rooms.into_iter().filter(|r| !listed.contains(r) && state.owns(r)) {
            report += reconcile(state, &view, &rid, &[]).await?;
        }
    }
    if report != SyncReport::default() {
        tracing::info!(sid = %call.sid, added = report.added, removed = report.removed, "membership repaired");
    }
    Ok(report)
}

/// What a round says about one connector.
#[derive(Debug, Clone)]
struct View {
    sid: String,
    incarnation: u64,
    newest_entry: u64,
    announce: bool,
    /// A purge of a departed connector (not a round it sent).
    purging: bool,
    /// The chat servers the round was computed over (`None` for a purge): when the list has
    /// changed by the time a room's turn comes, the room is skipped (ownership moved under
    /// it; the next round agrees).
    chats: Option<Vec<String>>,
}

impl View {
    fn of(call: &Sync) -> Self {
        Self {
            sid: call.sid.clone(),
            incarnation: call.incarnation,
            newest_entry: call.newest_entry,
            announce: call.announce,
            purging: false,
            chats: Some(call.chats.clone()),
        }
    }

    /// A view that keeps none of `sid`'s members except those of incarnation `keep` (all of
    /// whose entries count as newer than the view).
    fn purge(sid: &str, keep: Option<u64>) -> Self {
        Self {
            sid: sid.to_owned(),
            incarnation: keep.unwrap_or(u64::MAX),
            newest_entry: 0,
            announce: false,
            purging: true,
            chats: None,
        }
    }
}

/// Makes room `rid`'s members of `view.sid` agree with `live`, in the room's order.
async fn reconcile(
    state: &ChatState,
    view: &View,
    rid: &str,
    live: &[SyncMember],
) -> Result<SyncReport, HandlerError> {
    let job = reconcile_room(state.clone(), view.clone(), rid.to_owned(), live.to_vec());
    match state.rooms.run(rid.to_owned(), job).await {
        Some(result) => result.map_err(err),
        None => Err(err("the room is busy")),
    }
}

async fn reconcile_room(
    state: ChatState,
    view: View,
    rid: String,
    live: Vec<SyncMember>,
) -> Result<SyncReport, ChannelError> {
    if let Some(chats) = &view.chats {
        let list = state.registry.list();
        let now: Vec<&str> = list.servers(SERVER_TYPE).iter().map(|s| s.id.as_str()).collect();
        if now != chats.iter().map(String::as_str).collect::<Vec<_>>() || !state.owns(&rid) {
            return Ok(SyncReport::default());
        }
    }
    let channel = state.channels.channel(&rid);
    let before = channel.members().await?;
    let stored: Vec<Member> = before.iter().filter(|m| m.sid == view.sid).cloned().collect();
    // Where the room's history is before a purge's leaves: if its members' sessions live on,
    // what they miss comes after it.
    let purged_at = if view.purging && view.sid != HELD_SID && !stored.is_empty() {
        state.history.position(&rid).await.ok().flatten()
    } else {
        None
    };
    // The last purge's note, read when a member is to be put back, forgotten once used (an
    // error on the way keeps it).
    let mut missed: Option<PurgedView> = None;
    let mut noted = false;
    // Put back, whose sessions lived on through the purge.
    let mut lived: HashSet<String> = HashSet::new();
    let mut caught_up: HashSet<String> = HashSet::new();
    let mut dropped: HashSet<String> = HashSet::new();
    let mut removed: HashSet<(String, u64, u64)> = HashSet::new();
    let live_entry: HashMap<&str, u64> = live.iter().map(|m| (m.uid.as_str(), m.entry)).collect();
    let mut report = SyncReport::default();
    let mut kept = 0usize;
    // Members put back, each with whether the others were told (`onAdd`).
    let mut put_back: Vec<(Member, bool)> = Vec::new();
    let mut left: Vec<&str> = Vec::new();
    let now = now_ms();
    for m in &stored {
        let current = m.incarnation == view.incarnation;
        let as_live = |entry: u64| Member {
            session: entry,
            incarnation: view.incarnation,
            ..m.clone()
        };
        let listed = live_entry
            .get(m.uid.as_str())
            .copied()
            // A session already seen leaving, listed by a round taken before it closed, is not
            // live (see `crate::closed`).
            .filter(|&entry| !state.rounds.closed.is_closed(&rid, &as_live(entry)));
        match listed {
            // A held place lapses at its deadline (its `session`), not before.
            _ if m.is_held() && m.session > now => kept += 1,
            Some(entry) if current && m.session == entry => kept += 1,
            _ if current && m.session > view.newest_entry => kept += 1,
            // The same user on another bind of this connector: replaced, nobody is told.
            Some(entry) => {
                channel.add(&as_live(entry)).await?;
                kept += 1;
            }
            None => {
                if channel.leave(m).await? {
                    report.removed += 1;
                    left.push(&m.uid);
                    removed.insert((m.uid.clone(), m.incarnation, m.session));
                }
            }
        }
    }
    // Told once all have gone: one who leaves with the others is not told of them.
    for uid in left {
        announce_leave(&state, &channel, uid).await;
    }
    for m in live.iter().filter(|l| !stored.iter().any(|s| s.uid == l.uid)) {
        let member = Member {
            uid: m.uid.clone(),
            sid: view.sid.clone(),
            incarnation: view.incarnation,
            session: m.entry,
        };
        if state.rounds.closed.is_closed(&rid, &member) {
            // Its leave came first (see `crate::closed`): not a member the store lacks.
            tracing::debug!(%rid, uid = %member.uid, sid = %view.sid, "a round listed a session that has left: not put back");
            continue;
        }
        if !noted && !view.purging {
            noted = true;
            missed = PurgedView::read(&state, &view.sid, &rid).await;
        }
        if channel.add(&member).await? == Added::New {
            report.added += 1;
            // Its session lived on through a purge that the others were told of: it is
            // announced back and caught up even by a silent round (a store loss's, asked for
            // before its connector paused and heard on its return, may come first).
            let lived_on = (member.uid.clone(), member.incarnation, member.session);
            let purged = missed.as_ref().filter(|m| m.removed.contains(&lived_on));
            let announced = view.announce || purged.is_some();
            put_back.push((member.clone(), announced));
            if purged.is_some() {
                lived.insert(member.uid.clone());
            }
            if announced && !view.announce {
                // While the store is rebuilt, those put back later hear of it from what is
                // remembered since the loss (`crate::store_loss`).
                state.rounds.loss.entered(&rid, &member.uid, true);
            }
            if announced {
                let others: Vec<Member> = channel
                    .members()
                    .await?
                    .into_iter()
                    .filter(|o| o.uid != member.uid)
                    .collect();
                announce_add(&state, &others, &member.uid, &rid).await;
            }
            // It gets what was said meanwhile, before anything said after (so a recovering
            // client misses nothing it cannot see missed).
            let Some(m) = purged else {
                continue;
            };
            match &m.position {
                Some(since) if catch_up(&state, &member, &rid, since).await => {
                    caught_up.insert(member.uid.clone());
                }
                // Not caught up, it missed what was said while it was out. A recovering client
                // is dropped now, before anything newer reaches it (the next member's onAdd
                // would), so that it comes back and recovers: told onAdd/onLeave, it would go
                // on past the gap unaware.
                _ => {
                    if drop_recovering(&state, &view.sid, &member).await {
                        dropped.insert(member.uid.clone());
                    }
                }
            }
        }
    }
    if view.purging && report.removed > 0 && view.sid != HELD_SID {
        let seen = before.iter().map(|m| m.uid.clone()).collect();
        // A purge that keeps a live incarnation removes only an earlier one's dead sessions.
        let removed = if view.incarnation == u64::MAX {
            removed
        } else {
            HashSet::new()
        };
        let purged = PurgedView {
            seen,
            removed,
            position: purged_at,
        };
        purged.keep(&state, &view.sid, &rid).await;
    } else if let Some(seen) = missed.map(|m| m.seen) {
        let _ = state.channels.store().forget_purged(&rid, &view.sid).await;
        // The others whose sessions lived on: told what changed meanwhile. Not who left while
        // the store is rebuilt after a loss: it lacks members not put back yet.
        let now: BTreeSet<String> = channel.members().await?.into_iter().map(|m| m.uid).collect();
        let rebuilding = state.rounds.loss.recent();
        let behind = put_back
            .iter()
            .map(|(p, _)| p)
            .filter(|p| lived.contains(&p.uid) && !caught_up.contains(&p.uid) && !dropped.contains(&p.uid));
        for member in behind {
            for uid in now.difference(&seen).filter(|u| **u != member.uid) {
                tell(&state, member, "onAdd", uid, &rid).await;
            }
            for uid in seen.difference(&now).filter(|u| **u != member.uid && !rebuilding) {
                tell(&state, member, "onLeave", uid, &rid).await;
            }
        }
    }
    if report.removed > 0 || !put_back.is_empty() {
        tracing::debug!(
            %rid,
            sid = %view.sid,
            purging = view.purging,
            announce = view.announce,
            removed = report.removed,
            put_back = ?put_back.iter().map(|(m, _)| m.uid.as_str()).collect::<Vec<_>>(),
            "round"
        );
    }
    // Caught up from the history, or dropped to recover: told nothing more.
    let told: HashSet<String> = caught_up.union(&dropped).cloned().collect();
    for announced in [true, false] {
        let these: Vec<Member> = put_back
            .iter()
            .filter(|(_, a)| *a == announced)
            .map(|(m, _)| m.clone())
            .collect();
        if !these.is_empty() {
            crate::store_loss::after_put_back(&state, &channel, &these, announced, &told).await?;
        }
    }
    if live.is_empty() && kept == 0 {
        // Nothing of this connector is left here (a leave forgets it too; this covers a
        // room that was already empty of it).
        let _ = state.channels.store().forget_sid_channel(&view.sid, &rid).await;
    }
    if report.added > 0 {
        state.channels.invalidate_room(&rid);
    }
    Ok(report)
}

/// Asks connector `sid` to drop `member`'s session if it is a recovering one; true if it did.
async fn drop_recovering(state: &ChatState, sid: &str, member: &Member) -> bool {
    let call = DropRecovering {
        uid: member.uid.clone(),
        entry: member.session,
    };
    match state.rpc.call_server(sid, call).await {
        Ok(dropped) => {
            if dropped {
                tracing::info!(%sid, uid = %member.uid, "a recovering member put back is dropped, to recover");
            }
            dropped
        }
        Err(e) => {
            tracing::warn!(%sid, error = %e, "cannot drop a recovering member put back");
            false
        }
    }
}

/// Removes the members of connector `sid`, except those of incarnation `keep` (its live one),
/// from the rooms this server owns. Returns how many left.
pub async fn purge_frontend(state: &ChatState, sid: &str, keep: Option<u64>) -> usize {
    let rooms = match state.channels.store().channels_of_sid(sid).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(%sid, error = %e, "cannot list the rooms of a departed connector");
            return 0;
        }
    };
    let view = View::purge(sid, keep);
    let mut removed = 0usize;
    for rid in rooms.into_iter().filter(|r| state.owns(r)) {
        let keep_live = reconcile(state, &view, &rid, &[]).await;
        removed += keep_live.map(|r| r.removed).unwrap_or(0);
    }
    if removed > 0 {
        tracing::info!(%sid, removed, "purged members of a departed connector");
    }
    removed
}

/// Follows the registry: a connector that departs (or comes back as a new incarnation) is
/// purged from the rooms this server owns; one that comes back as the same incarnation after a
/// purge is asked for a round. Any change of the server list also drops the room cache: room
/// ownership may have moved.
pub async fn watch(state: ChatState, grace: Duration, token: CancellationToken) {
    let mut rx = state.registry.watch();
    let mut rejoins = state.registry.rejoins();
    let mut last = rx.borrow_and_update().clone();
    let purged = Purged::default();
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            changed = rx.changed() => if changed.is_err() { return },
            rejoined = rejoins.changed() => {
                if rejoined.is_err() { return }
                // Back from being cut off: rooms wait for whoever served them meanwhile.
                state.handoff.rejoined();
                state.channels.invalidate_cache();
                continue;
            }
        }
        let now = rx.borrow_and_update().clone();
        state.handoff.observe();
        state.channels.invalidate_cache();
        for gone in last.departed(&now, "connector") {
            // Back under a new incarnation: the old one's sessions are gone for sure; keep what
            // the new one already added.
            let reborn = now
                .servers("connector")
                .iter()
                .find(|s| s.id == gone.id)
                .map(|s| s.incarnation);
            if reborn.is_some() {
                purge_frontend(&state, &gone.id, reborn).await;
                continue;
            }
            // Lapsed: it may only be paused. Purged if it is still gone after the grace.
            let (state, purged, gone) = (state.clone(), purged.clone(), gone.clone());
            tokio::spawn(async move {
                tokio::time::sleep(grace).await;
                let list = state.registry.list();
                let back = list.servers("connector").iter().any(|s| s.id == gone.id);
                if back {
                    return;
                }
                purge_frontend(&state, &gone.id, None).await;
                let is_back = || {
                    let list = state.registry.list();
                    let servers = list.servers("connector");
                    servers
                        .iter()
                        .any(|s| s.id == gone.id && s.incarnation == gone.incarnation)
                };
                if purged.done(&gone.id, gone.incarnation, is_back) {
                    ask_round(&state, &gone.id).await;
                }
            });
        }
        for back in now.servers("connector") {
            if purged.take(&back.id, back.incarnation) {
                ask_round(&state, &back.id).await;
            }
        }
        last = now;
    }
}

/// Connectors purged after a lapse, until they come back as the same incarnation. Exactly one
/// of the purge task and the watch loop asks a returning connector for its round: the loop if
/// it comes back after the purge, the task if it came back while the purge ran (the loop then
/// found no mark, and no later change of the server list may come to find it).
#[derive(Clone, Default)]
struct Purged(Arc<Mutex<HashSet<(String, u64)>>>);

impl Purged {
    /// The purge of `id` is done: marks it, then reads the server list. True if it is back
    /// already and its round is now the caller's to ask.
    fn done(&self, id: &str, incarnation: u64, is_back: impl FnOnce() -> bool) -> bool {
        self.0.lock().insert((id.to_owned(), incarnation));
        is_back() && self.take(id, incarnation)
    }

    /// True, once, if `id` as `incarnation` was purged and not yet asked for a round.
    fn take(&self, id: &str, incarnation: u64) -> bool {
        self.0.lock().remove(&(id.to_owned(), incarnation))
    }
}

/// Asks a purged connector that is back for a round that announces: its members are put back
/// with `onAdd`.
async fn ask_round(state: &ChatState, sid: &str) {
    tracing::warn!(server.id = %sid, "a purged connector is back: asking for a round");
    if let Err(e) = state.rpc.notify_server(sid, Resync { announce: true }).await {
        tracing::warn!(error = %e, "cannot ask for a round");
    }
}

/// Every `every`: purges, from the rooms this server owns, the members of connectors the
/// store still names but the registry does not know.
pub async fn sweep(state: ChatState, every: Duration, grace: Duration, token: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Purged only when absent for the grace (a connector may be paused, or have just joined
    // with its first members stored before this server heard its hello).
    let mut absent_since: HashMap<String, tokio::time::Instant> = HashMap::new();
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tick.tick() => {}
        }
        if !state.registry.is_complete() {
            continue;
        }
        let Ok(sids) = state.channels.store().sids().await else {
            continue;
        };
        let list = state.registry.list();
        let now = tokio::time::Instant::now();
        absent_since.retain(|sid, _| sids.contains(sid) && !list.contains(sid));
        for sid in sids.iter().filter(|s| !list.contains(s)) {
            let since = *absent_since.entry(sid.clone()).or_insert(now);
            if now.duration_since(since) >= grace {
                purge_frontend(&state, sid, None).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Purged;

    #[test]
    fn a_connector_back_while_its_purge_ran_is_asked_for_its_round_by_the_purge() {
        let purged = Purged::default();
        // The watch loop heard it come back before the purge was done: no mark yet.
        assert!(!purged.take("connector-1", 7));
        assert!(purged.done("connector-1", 7, || true));
        // Asked once: the loop's next look finds nothing left to ask.
        assert!(!purged.take("connector-1", 7));
    }

    #[test]
    fn a_connector_back_after_its_purge_is_asked_by_the_watch_loop_once() {
        let purged = Purged::default();
        assert!(!purged.done("connector-1", 7, || false));
        assert!(
            !purged.take("connector-1", 8),
            "another incarnation lost its sessions"
        );
        assert!(purged.take("connector-1", 7));
        assert!(!purged.take("connector-1", 7));
    }
}
