//! A connector whose heartbeat lapses (or that comes back as a new incarnation) has lost its
//! sessions: its members leave every room this chat server owns, with `onLeave`, so pushes stop
//! going to a dead subject and user lists stay true. Each chat server purges the rooms it owns.
//!
//! Any change of the server list also drops the channel cache: room ownership may have moved.

use std::collections::HashSet;
use std::time::Duration;

use shaddock_remote::session_remote::Resync;
use tokio_util::sync::CancellationToken;

use crate::ChatState;
use crate::room::announce_leave;

pub async fn watch(state: ChatState, token: CancellationToken) {
    let mut rx = state.registry.watch();
    let mut last = rx.borrow_and_update().clone();
    // Connectors purged for a lapse that came back as the same incarnation (their NATS came
    // back late): their sessions are alive, so they are asked to tell us who is there again.
    let mut purged: HashSet<(String, u64)> = HashSet::new();
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            changed = rx.changed() => if changed.is_err() { return },
        }
        let now = rx.borrow_and_update().clone();
        state.handoff.observe();
        state.channels.invalidate_cache();
        for gone in last.departed(&now, "connector") {
            // Back under a new incarnation: keep what the new one already added.
            let keep = now
                .servers("connector")
                .iter()
                .find(|s| s.id == gone.id)
                .map(|s| s.incarnation);
            purge_frontend(&state, &gone.id, keep).await;
            if keep.is_none() {
                purged.insert((gone.id.clone(), gone.incarnation));
            }
        }
        for back in now.servers("connector") {
            if purged.remove(&(back.id.clone(), back.incarnation)) {
                tracing::warn!(server.id = %back.id, "a purged connector is back: asking it to resync");
                if let Err(e) = state.rpc.notify_server(&back.id, Resync {}).await {
                    tracing::warn!(error = %e, "cannot ask for a resync");
                }
            }
        }
        last = now;
    }
}

/// Removes the members held by frontend `sid` from the rooms this server owns, except those
/// of incarnation `keep` (the frontend's live one). Returns how many left.
pub async fn purge_frontend(state: &ChatState, sid: &str, keep: Option<u64>) -> usize {
    let rooms = match state.channels.store().channels_of_sid(sid).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(%sid, error = %e, "cannot list rooms of a departed connector");
            return 0;
        }
    };
    let mut removed = 0usize;
    for rid in rooms.into_iter().filter(|r| state.owns(r)) {
        // In the room's order, like every other change of the room.
        let job = purge_room(state.clone(), sid.to_owned(), keep, rid.clone());
        removed += state.rooms.run(rid, job).await.unwrap_or(0);
    }
    if removed > 0 {
        tracing::info!(%sid, removed, "purged members of a departed connector");
    }
    removed
}

/// Removes the members of frontend `sid` (except incarnation `keep`) from one room.
async fn purge_room(state: ChatState, sid: String, keep: Option<u64>, rid: String) -> usize {
    let channel = state.channels.channel(&rid);
    let Ok(members) = channel.members().await else {
        return 0;
    };
    let mut removed = 0;
    let mut kept = false;
    for m in members.iter().filter(|m| m.sid == sid) {
        if Some(m.incarnation) == keep {
            kept = true;
        } else if channel.leave(m).await.unwrap_or(false) {
            removed += 1;
            announce_leave(&state, &channel, &m.uid).await;
        }
    }
    if !kept {
        let _ = state.channels.store().forget_sid_channel(&sid, &rid).await;
    }
    removed
}

/// Watches the channel store for lost data: when its epoch mark is missing (a Redis restart
/// without persistence), asks every connector to tell the chat servers again who is where.
pub async fn watch_store(state: ChatState, every: Duration, token: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tick.tick() => {}
        }
        match state.channels.store().claim_epoch().await {
            Ok(true) => {
                tracing::warn!(
                    "the channel store has no epoch mark (new, or it lost its data): asking connectors to resync"
                );
                // Asked three times: a connector whose NATS is still reconnecting misses one.
                for wait in [0, 2, 5] {
                    tokio::select! {
                        _ = token.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(wait)) => {}
                    }
                    if let Err(e) = state.rpc.notify_all(Resync {}).await {
                        tracing::warn!(error = %e, "cannot ask for a resync");
                    }
                }
            }
            Ok(false) => {}
            Err(e) => tracing::debug!(error = %e, "channel store unreachable"),
        }
    }
}
