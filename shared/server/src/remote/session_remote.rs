//! `sessionRemote` on a frontend (Pomelo's `lib/common/remote/frontend/sessionRemote.js`):
//! what backends and the admin console ask of the sessions a frontend holds.

use shaddock_bus::Reply;
use shaddock_remote::session_remote::{
    DropRecovering, DropRecoveringOf, KickByUid, Resync, SessionCount, SessionCounts, SessionRemote,
};
use shaddock_remote::{RemoteError, decode_call, encode_reply};

use crate::service::session_service::SessionService;

/// What `sessionRemote` acts on: the frontend's sessions, and what it does when asked to
/// tell the chat servers again who is connected.
#[derive(Clone, Copy)]
pub struct SessionRemoteTarget<'a> {
    pub sessions: &'a SessionService,
    pub metrics: &'a crate::metrics::Metrics,
    pub on_resync: Option<&'a (dyn Fn(bool) + Send + Sync)>,
}

impl std::fmt::Debug for SessionRemoteTarget<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionRemoteTarget").finish_non_exhaustive()
    }
}

/// Answers one `sessionRemote` call.
pub fn dispatch(fe: SessionRemoteTarget<'_>, service: &str, method: &str, args: &[u8]) -> Reply {
    match handle(fe, service, method, args) {
        Ok(body) => Reply::Ok(body),
        Err(e) => {
            tracing::debug!(%service, %method, error = %e, "sessionRemote call failed");
            Reply::Err {
                code: 500,
                message: e.to_string(),
            }
        }
    }
}

fn handle(
    fe: SessionRemoteTarget<'_>,
    service: &str,
    method: &str,
    args: &[u8],
) -> Result<Vec<u8>, RemoteError> {
    match decode_call::<SessionRemote>(service, method, args)? {
        SessionRemote::KickByUid(KickByUid { uid, reason }) => {
            let kicked = fe.sessions.kick_by_uid(&uid, reason.as_deref().unwrap_or("kick"));
            encode_reply::<KickByUid>(&kicked)
        }
        SessionRemote::Resync(Resync { announce }) => {
            if let Some(resync) = fe.on_resync {
                resync(announce);
            }
            encode_reply::<Resync>(&())
        }
        SessionRemote::SessionCount(SessionCount {}) => encode_reply::<SessionCount>(&SessionCounts {
            connections: fe.sessions.count(),
            users: fe.sessions.bound_count(),
            requests: fe.metrics.requests_answered.get(),
            deliveries: fe.metrics.deliveries.get(),
        }),
        SessionRemote::DropRecovering(DropRecovering { uid, entry }) => {
            encode_reply::<DropRecovering>(&fe.sessions.drop_recovering(&uid, entry))
        }
        SessionRemote::DropRecoveringOf(DropRecoveringOf { sessions }) => {
            let dropped = sessions
                .iter()
                .filter(|s| fe.sessions.drop_recovering(&s.uid, s.entry))
                .count();
            encode_reply::<DropRecoveringOf>(&dropped)
        }
    }
}
