//! `chatRemote.add(uid, sid, rid)` and `chatRemote.kick(uid, sid, rid)` (chatRemote.js).
//!
//! Where Shaddock differs from the demo, on purpose: the joiner does not get its own `onAdd`
//! (only the members already there do), and a uid already in the room, through any connector,
//! is refused (`add` answers `None`).

use serde::Serialize;
use shaddock_bus::envelope::decode_value;
use shaddock_channel::{Channel, Delivery, Member};
use shaddock_server::HandlerError;

use crate::ChatState;

/// `onAdd` / `onLeave` bodies: the whole object, `route` included, as Pomelo sends it.
#[derive(Debug, Serialize)]
struct MemberEvent<'a> {
    route: &'a str,
    user: &'a str,
}

fn err(e: impl std::fmt::Display) -> HandlerError {
    HandlerError::new(e.to_string())
}

/// Routes a remote call to its method; the answer is MessagePack.
pub async fn dispatch(state: &ChatState, service: &str, method: &str, args: &[u8]) -> Result<Vec<u8>, HandlerError> {
    let (uid, sid, rid): (String, String, String) = match service {
        "chatRemote" => decode_value(args).map_err(err)?,
        _ => return Err(HandlerError::new(format!("no remote {service}.{method}"))),
    };
    let answer = match method {
        "add" => rmp_serde::to_vec(&add(state, &uid, &sid, &rid).await?),
        "kick" => rmp_serde::to_vec(&kick(state, &uid, &sid, &rid).await?),
        _ => return Err(HandlerError::new(format!("no remote {service}.{method}"))),
    };
    answer.map_err(err)
}

fn user_name(uid: &str) -> &str {
    uid.split('*').next().unwrap_or(uid)
}

/// Adds `uid` (held by connector `sid`) to room `rid`; tells the members already there; answers
/// the names in the room, the joiner included, or `None` when the uid is already in.
pub async fn add(state: &ChatState, uid: &str, sid: &str, rid: &str) -> Result<Option<Vec<String>>, HandlerError> {
    let channel = state.channels.get_channel(rid, true).await.map_err(err)?.ok_or_else(|| err("no channel"))?;
    if !channel.add(uid, sid).await.map_err(err)? {
        return Ok(None);
    }
    let members = channel.members().await.map_err(err)?;
    let others: Vec<Member> = members.iter().filter(|m| m.uid != uid).cloned().collect();
    push_event(state, &others, "onAdd", user_name(uid)).await;
    Ok(Some(members.iter().map(|m| user_name(&m.uid).to_owned()).collect()))
}

/// Removes `uid` from `rid` if connector `sid` holds it; tells the others. True if it left.
pub async fn kick(state: &ChatState, uid: &str, sid: &str, rid: &str) -> Result<bool, HandlerError> {
    let channel = state.channels.channel(rid);
    let left = channel.leave(uid, sid).await.map_err(err)?;
    if left {
        announce_leave(state, &channel, uid).await;
    }
    Ok(left)
}

/// Pushes `onLeave` for `uid` to whoever is still in `channel`.
pub async fn announce_leave(state: &ChatState, channel: &Channel, uid: &str) {
    match channel.members().await {
        Ok(members) => push_event(state, &members, "onLeave", user_name(uid)).await,
        Err(e) => tracing::warn!(error = %e, "cannot read members for onLeave"),
    }
}

async fn push_event(state: &ChatState, to: &[Member], route: &str, user: &str) {
    if to.is_empty() {
        return;
    }
    let Ok(body) = serde_json::to_vec(&MemberEvent { route, user }) else { return };
    if let Err(e) = state.channels.push_message_by_uids(route, &body, to, Delivery::Publish).await {
        tracing::warn!(%route, error = %e, "member event push failed");
    }
}
