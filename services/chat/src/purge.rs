//! A connector whose heartbeat lapses (or that comes back as a new incarnation) has lost its
//! sessions: its members leave every room this chat server owns, with `onLeave`, so pushes stop
//! going to a dead subject and user lists stay true. Each chat server purges the rooms it owns.
//!
//! Any change of the server list also drops the channel cache: room ownership may have moved.

use tokio_util::sync::CancellationToken;

use crate::remote::chat_remote::announce_leave;
use crate::ChatState;

pub async fn watch(state: ChatState, token: CancellationToken) {
    let mut rx = state.registry.watch();
    let mut last = rx.borrow_and_update().clone();
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            changed = rx.changed() => if changed.is_err() { return },
        }
        let now = rx.borrow_and_update().clone();
        state.channels.invalidate_cache();
        for gone in last.departed(&now, "connector") {
            purge_frontend(&state, &gone.id).await;
        }
        last = now;
    }
}

/// Removes every member held by frontend `sid` from the rooms this server owns.
pub async fn purge_frontend(state: &ChatState, sid: &str) {
    let rooms = match state.channels.store().channels_of_sid(sid).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(%sid, error = %e, "cannot list rooms of a lapsed connector");
            return;
        }
    };
    let mut removed = 0usize;
    for rid in rooms.iter().filter(|r| state.owns(r)) {
        let channel = state.channels.channel(rid);
        let Ok(members) = channel.members().await else { continue };
        for m in members.iter().filter(|m| m.sid == sid) {
            if channel.leave(&m.uid, sid).await.unwrap_or(false) {
                removed += 1;
                announce_leave(state, &channel, &m.uid).await;
            }
        }
        let _ = state.channels.store().forget_sid_channel(sid, rid).await;
    }
    tracing::info!(%sid, removed, "purged members of a departed connector");
}
