//! What the members of a room hear about each other: `onAdd` and `onLeave`.

use serde::Serialize;
use shaddock_channel::{Channel, Delivery, Member};

use crate::ChatState;

/// `onAdd` / `onLeave` bodies: the whole object, `route` included, as Pomelo sends it.
#[derive(Debug, Serialize)]
struct MemberEvent<'a> {
    route: &'a str,
    user: &'a str,
}

/// The user name in a uid `username*rid`; the rid is known, so a `*` in a name is fine.
pub fn user_name<'a>(uid: &'a str, rid: &str) -> &'a str {
    uid.strip_suffix(rid)
        .and_then(|u| u.strip_suffix('*'))
        .unwrap_or(uid)
}

/// Pushes `onAdd` for `uid` to `others`.
pub async fn announce_add(state: &ChatState, others: &[Member], uid: &str, rid: &str) {
    push_event(state, others, "onAdd", user_name(uid, rid)).await;
}

/// Tells `to` alone that `uid` is in the room (`onAdd`) or not (`onLeave`): what it missed
/// while it was purged.
pub async fn tell(state: &ChatState, to: &Member, route: &str, uid: &str, rid: &str) {
    push_event(state, std::slice::from_ref(to), route, user_name(uid, rid)).await;
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
