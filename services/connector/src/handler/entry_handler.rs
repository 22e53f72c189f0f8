//! `connector.entryHandler.enter {username, rid}` (chatofpomelo's entryHandler.js).
//!
//! Binds the session to `username*rid`, keeps `rid` in its settings, and asks the chat server
//! of that room to add it (`chatRemote.add`). The answer is `{users:[names]}`; a uid already
//! logged in anywhere in the cluster gets `{"code":500,"error":true}` and the socket stays open.

use serde_json::{Value, json};
use shaddock_remote::RpcClient;
use shaddock_remote::chat_remote::{Add, AddOutcome, Kick, RoomMember};
use shaddock_server::frontend::FrontendBuilder;
use std::sync::Arc;

use shaddock_server::{HandlerError, Session, SessionService};

use crate::auth;

pub const ROUTE: &str = "connector.entryHandler.enter";

/// What `enter` needs besides the request.
#[derive(Debug, Clone)]
struct Enter {
    rpc: RpcClient,
    sessions: SessionService,
    incarnation: u64,
    max_chars: usize,
    /// When not empty, enter needs a login token (see [`crate::auth`]).
    secret: Arc<str>,
}

pub fn register(fe: &mut FrontendBuilder, rpc: RpcClient, incarnation: u64, secret: &str) {
    let ctx = Enter {
        rpc,
        sessions: fe.sessions().clone(),
        incarnation,
        max_chars: fe.limits().max_name_chars,
        secret: Arc::from(secret),
    };
    fe.handler(ROUTE, move |session: Session, body: Value| {
        let ctx = ctx.clone();
        async move { ctx.enter(session, body).await }
    });
}

/// A user or room name: a string of 1 to `max_chars` characters, no control characters.
/// Anything else (`.`, `>`, `:`, spaces; `*` in a room) is fine: names never become part of a
/// NATS subject, and only the last part of a Redis key.
fn name(body: &Value, key: &str, max_chars: usize) -> Option<String> {
    let v = body.get(key)?.as_str()?;
    let n = v.chars().count();
    let ok = (1..=max_chars).contains(&n) && !v.chars().any(char::is_control);
    ok.then(|| v.to_owned())
}

fn refused() -> Value {
    json!({"code": 500, "error": true})
}

impl Enter {
    async fn enter(&self, session: Session, body: Value) -> Result<Value, HandlerError> {
        let username = name(&body, "username", self.max_chars);
        let rid = name(&body, "rid", self.max_chars);
        let (Some(username), Some(rid)) = (username, rid) else {
            return Ok(refused());
        };
        if username.contains('*') {
            // The uid is `username*rid`, and Pomelo splits it at the first `*`.
            return Ok(json!({"code": 500, "error": true, "reason": "a user name may not contain '*'"}));
        }
        if !self.secret.is_empty() {
            let token = body.get("token").and_then(Value::as_str);
            if let Err(e) = auth::verify(self.secret.as_bytes(), &username, token, auth::now()) {
                tracing::debug!(%username, error = %e, "enter refused");
                return Ok(json!({"code": 500, "error": true, "reason": "invalid token"}));
            }
        }
        let (rpc, sessions, incarnation) = (&self.rpc, &self.sessions, self.incarnation);

        let uid = format!("{username}*{rid}");
        if session.uid().is_some() {
            return Ok(refused());
        }
        // The room first, then the bind: a membership round lists every bound session with
        // its room (see `crate::membership`).
        session.set("rid", Value::from(rid.clone()));
        // One step: of two sockets entering the same uid at once, one is refused.
        if session.bind_exclusive(&uid).is_err() {
            return Ok(refused());
        }
        let add = Add {
            rid: rid.clone(),
            member: room_member(&session, uid, incarnation),
        };
        match rpc.call(add).await {
            Ok(AddOutcome::Entered(users)) => {
                // The socket may have closed while `add` was in flight: its leave could then
                // have reached the chat server first and found nothing. Leave again (it is
                // idempotent) so that no member outlives its session.
                if session.is_closed() {
                    on_user_leave(rpc.clone(), incarnation, session).await;
                }
                Ok(json!({ "users": users }))
            }
            Ok(AddOutcome::Taken) => {
                // Logged in elsewhere in the cluster.
                sessions.unbind(&session);
                Ok(refused())
            }
            Ok(AddOutcome::Full) => {
                sessions.unbind(&session);
                Ok(json!({"code": 500, "error": true, "reason": "the room is full"}))
            }
            Err(e) => {
                // The add may have happened and only its answer been lost (a timeout): take
                // it back, or the member would outlive the session.
                on_user_leave(rpc.clone(), incarnation, session.clone()).await;
                sessions.unbind(&session);
                Err(HandlerError::new(format!("chatRemote.add failed: {e}")))
            }
        }
    }
}

fn room_member(session: &Session, uid: String, incarnation: u64) -> RoomMember {
    RoomMember {
        uid,
        sid: session.frontend_id().to_owned(),
        incarnation,
        session: session.entry(),
    }
}

/// Pomelo's `onUserLeave`: a closed session leaves its room.
pub async fn on_user_leave(rpc: RpcClient, incarnation: u64, session: Session) {
    let Some(uid) = session.uid() else { return };
    let Some(rid) = session.get("rid").and_then(|v| v.as_str().map(str::to_owned)) else {
        return;
    };
    let kick = Kick {
        rid,
        member: room_member(&session, uid.clone(), incarnation),
    };
    if let Err(e) = rpc.call(kick).await {
        tracing::warn!(%uid, error = %e, "chatRemote.kick failed");
    }
}
