//! `chatRemote` on a chat server (chatRemote.js): add, kick, and the membership rounds that
//! keep the store true (`sync`, see [`crate::membership`]), plus the channel list for the
//! admin console. The
//! calls themselves are declared in `shaddock_remote::chat_remote`.
//!
//! Where Shaddock differs from the demo, on purpose: the joiner does not get its own `onAdd`
//! (only the members already there do), and a uid already in the room, through any connector,
//! is refused (`add` answers `None`).

use shaddock_channel::{Added, Member};
use shaddock_remote::chat_remote::{
    Add, AddOutcome, ChannelMembers, Channels, ChatRemote, Kick, MemberAt, RoomMember, Sync,
};
use shaddock_remote::{decode_call, encode_reply};
use shaddock_server::HandlerError;

use crate::ChatState;
use crate::room::{announce_add, announce_leave, user_name};

fn err(e: impl std::fmt::Display) -> HandlerError {
    HandlerError::new(e.to_string())
}

/// Answers one `chatRemote` call in MessagePack.
pub async fn dispatch(
    state: &ChatState,
    service: &str,
    method: &str,
    args: &[u8],
) -> Result<Vec<u8>, HandlerError> {
    let answer = match decode_call::<ChatRemote>(service, method, args).map_err(err)? {
        ChatRemote::Add(Add { rid, member }) => encode_reply::<Add>(&add(state, member, &rid).await?),
        ChatRemote::Kick(Kick { rid, member }) => encode_reply::<Kick>(&kick(state, member, &rid).await?),
        ChatRemote::Sync(part) => encode_reply::<Sync>(&crate::membership::sync(state, part).await?),
        ChatRemote::Channels(Channels {}) => encode_reply::<Channels>(&channels(state).await?),
    };
    answer.map_err(err)
}

fn member(m: RoomMember) -> Member {
    Member {
        uid: m.uid,
        sid: m.sid,
        incarnation: m.incarnation,
        session: m.session,
    }
}

/// Adds `member` to room `rid`; tells the members already there; answers the names in the
/// room, the joiner included, or why not.
async fn add(state: &ChatState, joiner: RoomMember, rid: &str) -> Result<AddOutcome, HandlerError> {
    let joiner = member(joiner);
    let channel = state
        .channels
        .get_channel(rid, true)
        .await
        .map_err(err)?
        .ok_or_else(|| err("no channel"))?;
    if state.max_room_size > 0
        && channel.user_amount().await.map_err(err)? >= state.max_room_size
        && channel.member(&joiner.uid).await.map_err(err)?.is_none()
    {
        return Ok(AddOutcome::Full);
    }
    let added = channel.add(&joiner).await.map_err(err)?;
    if added == Added::Taken {
        return Ok(AddOutcome::Taken);
    }
    let members = channel.members().await.map_err(err)?;
    // Replaced: the same user came back through the same connector before its old session's
    // leave arrived; the others never heard it leave, so they hear no join either.
    if added == Added::New {
        let others: Vec<Member> = members.iter().filter(|m| m.uid != joiner.uid).cloned().collect();
        announce_add(state, &others, &joiner.uid, rid).await;
    }
    Ok(AddOutcome::Entered(
        members
            .iter()
            .map(|m| user_name(&m.uid, rid).to_owned())
            .collect(),
    ))
}

/// Removes `member` from `rid` if it is there exactly so; tells the others. True if it left.
async fn kick(state: &ChatState, leaver: RoomMember, rid: &str) -> Result<bool, HandlerError> {
    let leaver = member(leaver);
    let channel = state.channels.channel(rid);
    let left = channel.leave(&leaver).await.map_err(err)?;
    if left || state.rounds.store_recently_lost() {
        announce_leave(state, &channel, &leaver.uid).await;
    }
    Ok(left)
}

/// Every channel and its members, for the admin console.
async fn channels(state: &ChatState) -> Result<Vec<ChannelMembers>, HandlerError> {
    let store = state.channels.store();
    let mut out = Vec::new();
    for name in store.channels().await.map_err(err)? {
        let members = store.members(&name).await.map_err(err)?;
        let members = members
            .into_iter()
            .map(|m| MemberAt {
                uid: m.uid,
                sid: m.sid,
            })
            .collect();
        out.push(ChannelMembers { name, members });
    }
    Ok(out)
}
