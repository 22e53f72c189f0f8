//! `chat.chatHandler.send {rid, content, from, target}` (chatofpomelo's chatHandler.js).
//!
//! The room and the sender come from the session (its `rid` setting and its uid), not from
//! the body. `target == "*"` pushes `onChat {msg, from, target}` to the whole room, the sender
//! included; otherwise only to that user, and an unknown target answers `{"code":500}`.
//! The response is `{}`. When the room's history cannot be written, the message is not sent
//! and the answer is `{"code":500}` (a recovering client must never miss it).

use serde::Serialize;
use serde_json::{Value, json};
use shaddock_bus::SessionExport;
use shaddock_history::Audience;
use shaddock_server::{HandlerError, Handlers};

use crate::ChatState;
use crate::room::{To, publish};

pub const ROUTE: &str = "chat.chatHandler.send";

/// The `onChat` body, fields in Pomelo's order.
#[derive(Debug, Serialize)]
struct OnChat<'a> {
    msg: &'a Value,
    from: &'a str,
    target: &'a str,
}

pub fn register(handlers: &mut Handlers<SessionExport>, state: ChatState) {
    handlers.add(ROUTE, move |session: SessionExport, body: Value| {
        let state = state.clone();
        async move { send(&state, &session, &body).await }
    });
}

async fn send(state: &ChatState, session: &SessionExport, body: &Value) -> Result<Value, HandlerError> {
    let rid = session
        .get_str("rid")
        .ok_or_else(|| HandlerError::new("session has no rid"))?;
    let uid = session
        .uid
        .as_deref()
        .ok_or_else(|| HandlerError::new("session is not bound"))?;
    let from = crate::room::user_name(uid, rid);
    // Pomelo answers a missing target with an error (its getMember lookup fails): so do we.
    let target = body
        .get("target")
        .and_then(Value::as_str)
        .ok_or_else(|| HandlerError::new("send needs a target"))?;
    if !state.room_rates.admit(rid) {
        return Err(HandlerError::with_response(
            "room rate limit",
            json!({"code": 500, "error": "room rate limit"}),
        ));
    }
    let msg = body.get("content").unwrap_or(&Value::Null);
    let payload =
        serde_json::to_vec(&OnChat { msg, from, target }).map_err(|e| HandlerError::new(e.to_string()))?;
    let channel = state.room_to_push(rid);
    let pushed = if target == "*" {
        publish(state, rid, "onChat", &payload, To::Room(&channel), false).await
    } else {
        let target_uid = format!("{target}*{rid}");
        let member = channel
            .member(&target_uid)
            .await
            .map_err(|e| HandlerError::new(e.to_string()))?
            .ok_or_else(|| HandlerError::new(format!("{target} is not in {rid}")))?;
        let audience = Audience::Only(vec![target_uid]);
        let to = To::Members(std::slice::from_ref(&member), &audience);
        publish(state, rid, "onChat", &payload, to, false).await
    };
    pushed.map_err(|e| HandlerError::new(e.to_string()))?;
    Ok(json!({}))
}
