//! `sessionRemote` on a frontend (Pomelo's `lib/common/remote/frontend/sessionRemote.js`):
//! what backends and the admin console ask of the sessions a frontend holds.

use shaddock_bus::Reply;
use shaddock_remote::session_remote::{KickByUid, Resync, SessionCount, SessionCounts, SessionRemote};
use shaddock_remote::{RemoteError, decode_call, encode_reply};

use crate::frontend::Frontend;

/// Answers one `sessionRemote` call.
pub fn dispatch(fe: &Frontend, service: &str, method: &str, args: &[u8]) -> Reply {
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

fn handle(fe: &Frontend, service: &str, method: &str, args: &[u8]) -> Result<Vec<u8>, RemoteError> {
    match decode_call::<SessionRemote>(service, method, args)? {
        SessionRemote::KickByUid(KickByUid { uid, reason }) => {
            let kicked = fe.sessions.kick_by_uid(&uid, reason.as_deref().unwrap_or("kick"));
            encode_reply::<KickByUid>(&kicked)
        }
        SessionRemote::Resync(Resync {}) => {
            if let Some(resync) = &fe.on_resync {
                resync();
            }
            encode_reply::<Resync>(&())
        }
        SessionRemote::SessionCount(SessionCount {}) => encode_reply::<SessionCount>(&SessionCounts {
            connections: fe.sessions.count(),
            users: fe.sessions.bound_count(),
        }),
    }
}
