//! `sessionRemote`, served by every frontend (Pomelo's
//! `lib/common/remote/frontend/sessionRemote.js`); the serving side is
//! `shaddock_server::remote::session_remote`.

use serde::{Deserialize, Serialize};

use crate::remote_service;

remote_service! {
    /// The calls a frontend answers about the sessions it holds.
    pub enum SessionRemote ("sessionRemote", served by "connector") {
        /// Kicks every session bound to `uid`: answers how many.
        KickByUid = "kickByUid" -> usize,
        /// Tell the chat servers again, now, who is connected here (a membership round).
        Resync = "resync" -> (),
        /// Open connections and bound sessions.
        SessionCount = "sessionCount" -> SessionCounts,
        /// Closes the socket of one session (no KICK: a drop) if it entered with `recover`, so
        /// that its client comes back and recovers what it missed; answers whether it did.
        DropRecovering = "dropRecovering" -> bool,
        /// Closes (no KICK) each of these recovering sessions (uid and entry): what a chat
        /// server pushed to them may have been lost with its NATS connection. Answers how many.
        DropRecoveringOf = "dropRecoveringOf" -> usize,
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KickByUid {
    pub uid: String,
    /// What the client is told (Pomelo's kick `reason`); `kick` when `None`.
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Resync {
    /// Announce the members put back (`onAdd`): true when they were purged with `onLeave`,
    /// false when the store lost its data.
    #[serde(default)]
    pub announce: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SessionCount {}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DropRecovering {
    pub uid: String,
    /// The session's bind on the connector (its entry): only that one is dropped.
    pub entry: u64,
}

/// See [`SessionRemote::DropRecoveringOf`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DropRecoveringOf {
    pub sessions: Vec<DropRecovering>,
}

/// The answer to [`SessionCount`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionCounts {
    pub connections: usize,
    /// Sessions bound to a uid.
    pub users: usize,
    /// Requests and notifies answered since the server started (for rates).
    #[serde(default)]
    pub requests: u64,
    /// Sockets pushes were handed to since the server started.
    #[serde(default)]
    pub deliveries: u64,
}
