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
        /// A session enters room `rid`: answers the names in the room, the joiner included,
        /// or `None` when the uid is already in it.
        Add = "add" -> Option<Vec<String>>,
        /// A session leaves room `rid`: answers whether it was there (exactly so).
        Kick = "kick" -> bool,
        /// A connector tells again who it holds (the store lost its data): answers how many
        /// were missing.
        Resync = "resync" -> usize,
        /// Every channel and its members, for the admin console.
        Channels = "channels" -> Vec<ChannelMembers>,
        /// The members of connector `sid` from any incarnation but `keep` leave the rooms this
        /// server owns: answers how many left.
        PurgeFrontend = "purgeFrontend" -> usize,
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
    /// The session's id on that connector.
    pub session: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Add {
    pub rid: String,
    pub member: RoomMember,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Kick {
    pub rid: String,
    pub member: RoomMember,
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resync {
    pub sid: String,
    pub incarnation: u64,
    pub members: Vec<ResyncMember>,
}

/// One session of a [`Resync`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResyncMember {
    pub uid: String,
    pub rid: String,
    pub session: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Channels {}

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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PurgeFrontend {
    pub sid: String,
    /// The live incarnation, whose members stay; `None`: all leave.
    pub keep: Option<u64>,
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
    fn a_newer_peers_extra_field_is_ignored() {
        // A later version adds a field to `purgeFrontend`: this one still reads the call.
        #[derive(Serialize)]
        enum Newer {
            #[serde(rename = "purgeFrontend")]
            PurgeFrontend {
                sid: String,
                keep: Option<u64>,
                reason: String,
            },
        }
        let bytes = rmp_serde::to_vec_named(&Newer::PurgeFrontend {
            sid: "connector-1".into(),
            keep: Some(2),
            reason: "restart".into(),
        })
        .unwrap();
        let call = decode_call::<ChatRemote>("chatRemote", "purgeFrontend", &bytes).unwrap();
        assert_eq!(
            call,
            ChatRemote::PurgeFrontend(PurgeFrontend {
                sid: "connector-1".into(),
                keep: Some(2)
            })
        );
    }
}
