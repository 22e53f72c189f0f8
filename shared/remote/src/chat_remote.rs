//! `chatRemote`, served by chat servers (chatofpomelo's `app/servers/chat/remote/chatRemote.js`,
//! plus what a cluster needs to keep membership true).
//!
//! `sid` is always a frontend server id (the connector holding the socket); `session` is the
//! socket's id on it; `incarnation` tells a connector's runs apart.

use serde::{Deserialize, Serialize};

use crate::{Routed, remote_service};

remote_service! {
    /// The calls a chat server answers.
    pub enum ChatRemote ("chatRemote", served by "chat") {
        /// A session enters room `rid`.
        Add = "add" -> AddOutcome,
        /// A session leaves room `rid`: answers whether it was there (exactly so).
        Kick = "kick" -> bool,
        /// One part of a connector's membership round: who it really holds in the rooms this
        /// server owns. The store is made to agree (see the chat server's `membership`).
        Sync = "sync" -> SyncReport,
        /// Every channel and its members, for the admin console.
        Channels = "channels" -> Vec<ChannelMembers>,
        /// A push from the admin console to every member of room `rid`, in the room's order
        /// and history like a chat message: answers how many members it went to.
        Broadcast = "broadcast" -> usize,
        /// What was on its way to connector `sid` may be lost (its NATS connection dropped):
        /// each room with recent member news tells that connector's members its last news of
        /// each user again, where it still holds (the chat server's `recent_news`). Answers
        /// how many rooms it was queued in.
        Restate = "restate" -> usize,
    }
}

/// A session as a room member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomMember {
    /// `username*rid`.
    pub uid: String,
    /// The connector holding the session.
    pub sid: String,
    pub incarnation: u64,
    /// The number of the session's bind on that connector (its `entry`): a late kick of an
    /// earlier session never removes a newer one.
    pub session: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Add {
    pub rid: String,
    pub member: RoomMember,
    /// The client entered with `recover: true`: answer the room's position and, when it gives
    /// one, what it missed since (see docs/recovery.md).
    #[serde(default)]
    pub recover: Option<Recover>,
}

/// What a recovering client saw last.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recover {
    /// The epoch and offset of the last room message it saw, when it has seen one.
    pub since: Option<RoomPosition>,
}

/// A room's history position: its epoch and an offset in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomPosition {
    pub epoch: String,
    pub offset: u64,
}

/// The answer to a [`Recover`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recovery {
    /// The room's latest position: the session's pushes continue after it.
    pub position: RoomPosition,
    /// True when `messages` is every message for the user after the offset it gave.
    pub recovered: bool,
    pub messages: Vec<RecoveredMessage>,
}

/// A message a recovering client missed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveredMessage {
    pub offset: u64,
    pub route: String,
    /// The push body as it was sent (JSON).
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
}

/// What an [`Add`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AddOutcome {
    /// In: the names in the room, the joiner included; a recovery when one was asked for
    /// and the room keeps history.
    Entered {
        users: Vec<String>,
        recovery: Option<Recovery>,
        /// The offset of the joiner's `onAdd`: a push to its uid at or below it was sent
        /// before it was in (to an earlier session of the same user, say, whose leave was
        /// still on its way), not to this session.
        #[serde(default)]
        floor: Option<u64>,
        /// The last push the room's chat server had numbered for the joiner's connector when
        /// the add was done: a push to the joiner's uid numbered at or below it was sent
        /// before it was in (news told again carries no offset, so `floor` misses it).
        #[serde(default)]
        pushed: Option<shaddock_bus::PushNo>,
    },
    /// The uid is in the room through another connector.
    Taken,
    /// The room already has `limits.max_room_size` members.
    Full,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Kick {
    pub rid: String,
    pub member: RoomMember,
    /// More than 0: the session closed to come back (its connector drains), so its place is
    /// held this long with no `onLeave`; entering again within it, through any connector,
    /// takes the place back with no `onAdd`.
    #[serde(default)]
    pub resume_ms: u64,
    /// A repeat of a kick whose answer was lost: the first attempt may have removed the
    /// member without anyone being told.
    #[serde(default)]
    pub retry: bool,
}

impl Routed for Add {
    fn key(&self) -> &str {
        &self.rid
    }
}

impl Routed for Kick {
    fn key(&self) -> &str {
        &self.rid
    }
}

/// One part of a connector's membership round (see the chat server's `membership` module).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sync {
    /// The connector.
    pub sid: String,
    pub incarnation: u64,
    /// The connector's newest bind when it took the list: a stored member with a later bind
    /// entered after, and is left alone.
    pub newest_entry: u64,
    /// The chat servers the connector routed rooms over (sorted): a receiver that sees
    /// another list skips the part (ownership is moving; the next round agrees).
    pub chats: Vec<String>,
    /// Rounds of one incarnation are numbered; a round is `parts` calls to each chat server.
    pub round: u64,
    pub part: u32,
    pub parts: u32,
    /// The rooms of this part, each with every live member of the connector in it.
    pub rooms: Vec<SyncRoom>,
    /// Whether members put back are announced (`onAdd`): not after the store lost its data
    /// (nobody joined, the store forgot).
    pub announce: bool,
}

/// One room of a [`Sync`]: the connector's live members in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncRoom {
    pub rid: String,
    pub members: Vec<SyncMember>,
}

/// A live member: its uid and its bind's number on the connector.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncMember {
    pub uid: String,
    pub entry: u64,
}

/// What a [`Sync`] changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncReport {
    /// Live members the store was missing, put back.
    pub added: usize,
    /// Stored members with no live session, removed (with `onLeave`).
    pub removed: usize,
}

impl std::ops::AddAssign for SyncReport {
    fn add_assign(&mut self, other: Self) {
        self.added += other.added;
        self.removed += other.removed;
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Channels {}

/// See [`ChatRemote::Restate`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Restate {
    /// The connector whose pushes may be lost.
    pub sid: String,
    /// How long ago (ms) it noticed: news from a window before that is told again.
    pub noticed_ms_ago: u64,
}

/// See [`ChatRemote::Broadcast`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Broadcast {
    pub rid: String,
    pub route: String,
    /// The push body, JSON.
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
}

impl Routed for Broadcast {
    fn key(&self) -> &str {
        &self.rid
    }
}

/// A channel and its members, as `Channels` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelMembers {
    pub name: String,
    pub members: Vec<MemberAt>,
}

/// A member's uid and the connector holding it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberAt {
    pub uid: String,
    pub sid: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Remote, RemoteError, decode_call, encode_call};

    fn add() -> ChatRemote {
        ChatRemote::from(Add {
            rid: "room1".into(),
            member: RoomMember {
                uid: "a*room1".into(),
                sid: "connector-1".into(),
                incarnation: 3,
                session: 7,
            },
            recover: Some(Recover {
                since: Some(RoomPosition {
                    epoch: "e1".into(),
                    offset: 9,
                }),
            }),
        })
    }

    #[test]
    fn a_call_round_trips_under_its_pomelo_name() {
        let call = add();
        assert_eq!(call.method(), "add");
        let bytes = encode_call(&call).unwrap();
        assert_eq!(
            decode_call::<ChatRemote>("chatRemote", "add", &bytes).unwrap(),
            call
        );
    }

    #[test]
    fn an_unknown_call_is_an_error_that_names_it() {
        let bytes = encode_call(&add()).unwrap();
        let e = decode_call::<ChatRemote>("chatRemote", "history", &bytes).unwrap_err();
        assert!(matches!(e, RemoteError::Unknown { .. }));
        assert_eq!(e.to_string(), "no remote chatRemote.history on this server");
        let e = decode_call::<ChatRemote>("sessionRemote", "add", &bytes).unwrap_err();
        assert_eq!(e.to_string(), "no remote sessionRemote.add on this server");
    }

    #[test]
    fn a_call_with_bad_arguments_names_the_call() {
        let e = decode_call::<ChatRemote>("chatRemote", "kick", &[0xc1]).unwrap_err();
        assert!(
            e.to_string().starts_with("bad arguments for chatRemote.kick"),
            "{e}"
        );
    }

    #[test]
    fn an_older_peers_add_without_recover_still_reads() {
        #[derive(Serialize)]
        enum Older {
            #[serde(rename = "add")]
            Add { rid: String, member: RoomMember },
        }
        let ChatRemote::Add(Add { rid, member, .. }) = add() else {
            unreachable!()
        };
        let bytes = rmp_serde::to_vec_named(&Older::Add {
            rid: rid.clone(),
            member: member.clone(),
        })
        .unwrap();
        let call = decode_call::<ChatRemote>("chatRemote", "add", &bytes).unwrap();
        assert_eq!(
            call,
            ChatRemote::Add(Add {
                rid,
                member,
                recover: None
            })
        );
    }

    #[test]
    fn a_newer_peers_extra_field_is_ignored() {
        // A later version adds a field to `kick`: this one still reads the call.
        #[derive(Serialize)]
        enum Newer {
            #[serde(rename = "kick")]
            Kick {
                rid: String,
                member: RoomMember,
                reason: String,
            },
        }
        let ChatRemote::Add(Add { rid, member, .. }) = add() else {
            unreachable!()
        };
        let newer = Newer::Kick {
            rid: rid.clone(),
            member: member.clone(),
            reason: "closed".into(),
        };
        let bytes = rmp_serde::to_vec_named(&newer).unwrap();
        let call = decode_call::<ChatRemote>("chatRemote", "kick", &bytes).unwrap();
        assert_eq!(
            call,
            ChatRemote::Kick(Kick {
                rid,
                member,
                resume_ms: 0,
                retry: false,
            })
        );
    }
}
