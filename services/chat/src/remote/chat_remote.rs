//! `chatRemote.add(uid, sid, rid)` and `chatRemote.kick(uid, sid, rid)` (chatRemote.js).
//!
//! Where Shaddock differs from the demo, on purpose: the joiner does not get its own `onAdd`
//! (only the members already there do), and a uid already in the room, through any connector,
//! is refused (`add` answers `None`).

use serde::Serialize;
use shaddock_bus::envelope::decode_value;
use shaddock_channel::{Added, Channel, Delivery, Member};
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
///
/// - `add(uid, sid, rid, incarnation)` -> `Option<Vec<String>>`
/// - `kick(uid, sid, rid, incarnation)` -> `bool`
/// - `purgeFrontend(sid, keep_incarnation)` -> `usize`: members of `sid` from any other
///   incarnation leave (a connector calls it when it starts and sees a chat server).
pub async fn dispatch(
    state: &ChatState,
    service: &str,
    method: &str,
    args: &[u8],
) -> Result<Vec<u8>, HandlerError> {
    let answer = match (service, method) {
        ("chatRemote", "add") => {
            let (member, rid) = member_args(args)?;
            rmp_serde::to_vec(&add(state, &member, &rid).await?)
        }
        ("chatRemote", "kick") => {
            let (member, rid) = member_args(args)?;
            rmp_serde::to_vec(&kick(state, &member, &rid).await?)
        }
        ("chatRemote", "resync") => {
            let (sid, inc, members): (String, u64, Vec<(String, String, u64)>) =
                decode_value(args).map_err(err)?;
            rmp_serde::to_vec(&resync(state, &sid, inc, members).await?)
        }
        ("chatRemote", "channels") => rmp_serde::to_vec(&channels(state).await?),
        ("chatRemote", "purgeFrontend") => {
            let (sid, keep): (String, Option<u64>) = decode_value(args).map_err(err)?;
            rmp_serde::to_vec(&crate::purge::purge_frontend(state, &sid, keep).await)
        }
        _ => return Err(HandlerError::new(format!("no remote {service}.{method}"))),
    };
    answer.map_err(err)
}

/// The arguments of `add` and `kick`: `(uid, sid, rid, incarnation, session)`.
fn member_args(args: &[u8]) -> Result<(Member, String), HandlerError> {
    let (uid, sid, rid, incarnation, session): (String, String, String, u64, u64) =
        decode_value(args).map_err(err)?;
    Ok((
        Member {
            uid,
            sid,
            incarnation,
            session,
        },
        rid,
    ))
}

/// The user name in a uid `username*rid`; the rid is known, so a `*` in a name is fine.
pub fn user_name<'a>(uid: &'a str, rid: &str) -> &'a str {
    uid.strip_suffix(rid)
        .and_then(|u| u.strip_suffix('*'))
        .unwrap_or(uid)
}

/// Adds `member` to room `rid`; tells the members already there; answers the names in the
/// room, the joiner included, or `None` when the uid is already in.
pub async fn add(state: &ChatState, member: &Member, rid: &str) -> Result<Option<Vec<String>>, HandlerError> {
    let channel = state
        .channels
        .get_channel(rid, true)
        .await
        .map_err(err)?
        .ok_or_else(|| err("no channel"))?;
    let added = channel.add(member).await.map_err(err)?;
    if added == Added::Taken {
        return Ok(None);
    }
    let members = channel.members().await.map_err(err)?;
    // Replaced: the same user came back through the same connector before its old session's
    // leave arrived; the others never heard it leave, so they hear no join either.
    if added == Added::New {
        let others: Vec<Member> = members.iter().filter(|m| m.uid != member.uid).cloned().collect();
        push_event(state, &others, "onAdd", user_name(&member.uid, rid)).await;
    }
    Ok(Some(
        members
            .iter()
            .map(|m| user_name(&m.uid, rid).to_owned())
            .collect(),
    ))
}

/// Removes `member` from `rid` if it is there exactly so; tells the others. True if it left.
pub async fn kick(state: &ChatState, member: &Member, rid: &str) -> Result<bool, HandlerError> {
    let channel = state.channels.channel(rid);
    let left = channel.leave(member).await.map_err(err)?;
    if left {
        announce_leave(state, &channel, &member.uid).await;
    }
    Ok(left)
}

/// Puts back members a frontend still holds (after the store lost its data), without `onAdd`:
/// nobody joined, the store forgot. Returns how many were missing.
pub async fn resync(
    state: &ChatState,
    sid: &str,
    incarnation: u64,
    members: Vec<(String, String, u64)>,
) -> Result<usize, HandlerError> {
    let mut added = 0;
    for (uid, rid, session) in members {
        let member = Member {
            uid,
            sid: sid.to_owned(),
            incarnation,
            session,
        };
        // In the room's order, like every other change of the room.
        let channels = state.channels.clone();
        let room = rid.clone();
        let put_back = async move { channels.channel(&room).add(&member).await };
        match state.rooms.run(rid, put_back).await {
            Some(Ok(Added::New)) => added += 1,
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(err(e)),
            None => return Err(err("the room is busy")),
        }
    }
    if added > 0 {
        state.channels.invalidate_cache();
    }
    Ok(added)
}

/// Every channel and its members as `(uid, sid)`, for the admin console.
pub async fn channels(state: &ChatState) -> Result<Vec<(String, Vec<(String, String)>)>, HandlerError> {
    let store = state.channels.store();
    let mut out = Vec::new();
    for name in store.channels().await.map_err(err)? {
        let members = store.members(&name).await.map_err(err)?;
        out.push((name, members.into_iter().map(|m| (m.uid, m.sid)).collect()));
    }
    Ok(out)
}

/// Pushes `onLeave` for `uid` to whoever is still in `channel`.
pub async fn announce_leave(state: &ChatState, channel: &Channel, uid: &str) {
    match channel.members().await {
        Ok(members) => push_event(state, &members, "onLeave", user_name(uid, channel.name())).await,
        Err(e) => tracing::warn!(error = %e, "cannot read members for onLeave"),
    }
}

async fn push_event(state: &ChatState, to: &[Member], route: &str, user: &str) {
    if to.is_empty() {
        return;
    }
    let Ok(body) = serde_json::to_vec(&MemberEvent { route, user }) else {
        return;
    };
    if let Err(e) = state
        .channels
        .push_message_by_uids(route, &body, to, Delivery::Publish)
        .await
    {
        tracing::warn!(%route, error = %e, "member event push failed");
    }
}

#[cfg(test)]
mod tests {
    use super::user_name;

    #[test]
    fn the_user_name_is_the_uid_without_its_room() {
        assert_eq!(user_name("alice*room1", "room1"), "alice");
        assert_eq!(user_name("a*b*room", "room"), "a*b");
        assert_eq!(user_name("x*r*r", "r*r"), "x");
        assert_eq!(user_name("odd", "room"), "odd");
    }
}
