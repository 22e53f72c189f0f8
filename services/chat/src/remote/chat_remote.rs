//! `chatRemote` on a chat server (chatRemote.js): add, kick, and the membership rounds that
//! keep the store true (`sync`, see [`crate::membership`]), plus the channel list for the
//! admin console. The
//! calls themselves are declared in `shaddock_remote::chat_remote`.
//!
//! Where Shaddock differs from the demo, on purpose: the joiner does not get its own `onAdd`
//! (only the members already there do), and a uid already in the room, through any connector,
//! is refused (`add` answers `None`).

use shaddock_channel::{Added, Member};
use shaddock_history::Position;
use shaddock_remote::chat_remote::{
    Add, AddOutcome, Broadcast, ChannelMembers, Channels, ChatRemote, Kick, MemberAt, Recover,
    RecoveredMessage, Recovery, Restate, RoomMember, RoomPosition, Sync,
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
        ChatRemote::Add(Add { rid, member, recover }) => {
            encode_reply::<Add>(&add(state, member, &rid, recover).await?)
        }
        ChatRemote::Kick(Kick {
            rid,
            member,
            resume_ms,
            retry,
        }) => encode_reply::<Kick>(&kick(state, member, &rid, resume_ms, retry).await?),
        ChatRemote::Sync(part) => encode_reply::<Sync>(&crate::membership::sync(state, part).await?),
        ChatRemote::Channels(Channels {}) => encode_reply::<Channels>(&channels(state).await?),
        ChatRemote::Broadcast(b) => encode_reply::<Broadcast>(&broadcast(state, b).await?),
        ChatRemote::Restate(r) => {
            let ago = std::time::Duration::from_millis(r.noticed_ms_ago);
            let now = tokio::time::Instant::now();
            let noticed = now.checked_sub(ago).unwrap_or(now);
            let rooms = crate::recent_news::tell_rooms_again(state, noticed, Some(&r.sid));
            encode_reply::<Restate>(&rooms)
        }
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

/// Recovered messages in one answer at most (bytes of bodies): past it the recovery fails
/// whole (`recovered: false`), so that the answer stays well under NATS' max_payload.
const RECOVERY_BYTES: usize = 512 * 1024;

/// Adds `member` to room `rid`; tells the members already there; answers the names in the
/// room, the joiner included, or why not. A recovering joiner also gets the room's position
/// and what it missed: read in the room's order, so nothing is pushed in between.
async fn add(
    state: &ChatState,
    joiner: RoomMember,
    rid: &str,
    recover: Option<Recover>,
) -> Result<AddOutcome, HandlerError> {
    let joiner = member(joiner);
    // Before anything is read from the room's history or added to it: a recovery must not give
    // back what its old writer may still withdraw, and the members dropped for it must not
    // include the joiner.
    if !crate::takeover::before_append(state, rid).await {
        return Err(err("the room's recovering members could not be dropped first"));
    }
    // Not `getChannel(rid, true)`: the add below records the room with its first member, in
    // the same step, so creating it first would be one more store round trip per enter.
    let channel = state.channels.channel(rid);
    if state.max_room_size > 0
        && channel.user_amount().await.map_err(err)? >= state.max_room_size
        && channel.member(&joiner.uid).await.map_err(err)?.is_none()
    {
        return Ok(AddOutcome::Full);
    }
    // Before the add, so that a failure changes nothing; the joiner's own onAdd (next) is not
    // for it, and its pushes continue after this position.
    let recovery = match &recover {
        Some(r) => recovery(state, rid, &joiner.uid, r).await?,
        None => None,
    };
    let added = channel.add(&joiner).await.map_err(err)?;
    if added == Added::Taken {
        return Ok(AddOutcome::Taken);
    }
    let members = channel.members().await.map_err(err)?;
    // Replaced: the same user came back through the same connector before its old session's
    // leave arrived; Resumed: it took back its held place. Either way the others never heard
    // it leave, so they hear no join either.
    state.rounds.loss.entered(rid, &joiner.uid, added == Added::New);
    // Read in the room's order, before the joiner's own onAdd (which is not for it): every
    // push of this room numbered so far was made before the joiner was in. Only a uid that
    // had a session through this connector lately can have such pushes on their way to it
    // (routed by uid); any other enter costs nothing more.
    let earlier = added == Added::Replaced
        || state
            .rounds
            .closed
            .left_lately_through(rid, &joiner.uid, &joiner.sid);
    let pushed = match earlier {
        true => state.channels.last_push_to(&joiner.sid).await,
        false => None,
    };
    let mut floor = None;
    if added == Added::New {
        let others: Vec<Member> = members.iter().filter(|m| m.uid != joiner.uid).cloned().collect();
        floor = announce_add(state, &others, &joiner.uid, rid).await;
    }
    Ok(AddOutcome::Entered {
        users: members
            .iter()
            .map(|m| user_name(&m.uid, rid).to_owned())
            .collect(),
        recovery,
        floor,
        pushed,
    })
}

/// The room's position and what `uid` missed since the position it gave; `None` when the room
/// keeps no history.
async fn recovery(
    state: &ChatState,
    rid: &str,
    uid: &str,
    asked: &Recover,
) -> Result<Option<Recovery>, HandlerError> {
    let since = asked.since.as_ref().map(|p| Position {
        epoch: p.epoch.clone(),
        offset: p.offset,
    });
    let Some(r) = state
        .history
        .recover(rid, uid, since.as_ref())
        .await
        .map_err(err)?
    else {
        return Ok(None);
    };
    let position = RoomPosition {
        epoch: r.position.epoch,
        offset: r.position.offset,
    };
    let bytes: usize = r.messages.iter().map(|m| m.body.len() + m.route.len()).sum();
    if bytes > RECOVERY_BYTES {
        return Ok(Some(Recovery {
            position,
            recovered: false,
            messages: Vec::new(),
        }));
    }
    Ok(Some(Recovery {
        position,
        recovered: r.recovered,
        messages: r
            .messages
            .into_iter()
            .map(|m| RecoveredMessage {
                offset: m.offset,
                route: m.route,
                body: m.body,
            })
            .collect(),
    }))
}

/// Removes `member` from `rid` if it is there exactly so; tells the others. True if it left.
/// With `resume_ms` > 0 its place is held that long instead, and nobody is told (see
/// `shaddock_channel::HELD_SID`; [`crate::membership`] lets a held place lapse).
async fn kick(
    state: &ChatState,
    leaver: RoomMember,
    rid: &str,
    resume_ms: u64,
    retry: bool,
) -> Result<bool, HandlerError> {
    let leaver = member(leaver);
    let channel = state.channels.channel(rid);
    let left = channel.leave(&leaver).await.map_err(err)?;
    // Closed for good, whatever the store had: a round listing it now is stale.
    state.rounds.closed.left(rid, &leaver);
    tracing::debug!(%rid, uid = %leaver.uid, sid = %leaver.sid, resume_ms, left, "kick");
    if left && resume_ms > 0 {
        let until = crate::membership::now_ms().saturating_add(resume_ms);
        channel
            .add(&Member::held(leaver.uid.clone(), until))
            .await
            .map_err(err)?;
        return Ok(true);
    }
    // Found nobody of that uid at all (not merely another session of it, which a late or
    // retried leave must leave alone): the store may have lost it with its data.
    // A leave that removed nothing dropped the room's cached grouping, so this reads the
    // store afresh (after a loss of its data, the cache still named the leaver).
    let found_nobody = !left && channel.member(&leaver.uid).await.map_err(err)?.is_none();
    if found_nobody {
        crate::store_loss::check_on_missed_leave(state).await;
        state.rounds.loss.left(rid, &leaver.uid);
    }
    // A retry that finds nobody of that uid: its first attempt may have removed the member
    // in the store and lost only the answer (Redis restarting), so nobody was told.
    let announce = left || (found_nobody && (retry || state.rounds.loss.recent()));
    if found_nobody {
        tracing::debug!(%rid, uid = %leaver.uid, retry, announce, "a leave found nobody");
    }
    if announce {
        announce_leave(state, &channel, &leaver.uid).await;
    }
    Ok(left)
}

/// Every channel and its members, for the admin console.
/// The admin console's push to one room: through the room's history and order, as a chat
/// message goes; a room with nobody in it gets nothing.
async fn broadcast(state: &ChatState, b: Broadcast) -> Result<usize, HandlerError> {
    let channel = state.room_to_push(&b.rid);
    let members = channel.user_amount().await.map_err(err)?;
    if members == 0 {
        return Ok(0);
    }
    crate::room::publish(state, &b.rid, &b.route, &b.body, crate::room::To::Room(&channel))
        .await
        .map_err(err)?;
    Ok(members)
}

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
