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
use shaddock_channel::Member;
use shaddock_history::Audience;
use shaddock_server::{HandlerError, Handlers};

use crate::ChatState;
use crate::room::{Message, To, publish_batch};

pub const ROUTE: &str = "chat.chatHandler.send";

/// The `onChat` body, fields in Pomelo's order.
#[derive(Debug, Serialize)]
struct OnChat<'a> {
    msg: &'a Value,
    from: &'a str,
    target: &'a str,
}

pub fn register(handlers: &mut Handlers<SessionExport>, state: ChatState) {
    handlers.add_batched(ROUTE, move |requests: Vec<(SessionExport, Value)>| {
        let state = state.clone();
        async move { send_batch(&state, requests).await }
    });
}

/// A message ready to push: its body and the private target's member, if it has one.
struct Outgoing {
    rid: String,
    payload: Vec<u8>,
    target: Option<(Member, Audience)>,
}

/// The requests that queued in a room's order while one was being handled, handled together:
/// each is checked and given its body in order, then the room's history gets all of them in
/// one write, and they are pushed in order (see `room::publish_batch`).
async fn send_batch(
    state: &ChatState,
    requests: Vec<(SessionExport, Value)>,
) -> Vec<Result<Value, HandlerError>> {
    let mut results: Vec<Result<Value, HandlerError>> = Vec::with_capacity(requests.len());
    let mut ready: Vec<(usize, Outgoing)> = Vec::with_capacity(requests.len());
    for (session, body) in &requests {
        match prepare(state, session, body).await {
            Ok(out) => {
                ready.push((results.len(), out));
                results.push(Ok(json!({})));
            }
            Err(e) => results.push(Err(e)),
        }
    }
    // A batch is one room (its key); should it hold several, each run of one room is written
    // on its own, still in order.
    let mut start = 0;
    while start < ready.len() {
        let rid = ready[start].1.rid.clone();
        let end = ready[start..]
            .iter()
            .position(|(_, o)| o.rid != rid)
            .map_or(ready.len(), |n| start + n);
        let run = &ready[start..end];
        let channel = state.room_to_push(&rid);
        let messages: Vec<Message<'_>> = run
            .iter()
            .map(|(_, o)| Message {
                body: &o.payload,
                to: match &o.target {
                    None => To::Room(&channel),
                    Some((member, audience)) => To::Members(std::slice::from_ref(member), audience),
                },
            })
            .collect();
        let pushed = publish_batch(state, &rid, "onChat", &messages).await;
        for ((i, _), p) in run.iter().zip(pushed) {
            if let Err(e) = p {
                results[*i] = Err(HandlerError::new(e.to_string()));
            }
        }
        start = end;
    }
    results
}

/// Checks one request and makes its `onChat` body (in the room's order: a private target is
/// looked up as the room stands after the messages before it).
async fn prepare(state: &ChatState, session: &SessionExport, body: &Value) -> Result<Outgoing, HandlerError> {
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
    let target = if target == "*" {
        None
    } else {
        let target_uid = format!("{target}*{rid}");
        let member = state
            .room_to_push(rid)
            .member(&target_uid)
            .await
            .map_err(|e| HandlerError::new(e.to_string()))?
            .ok_or_else(|| HandlerError::new(format!("{target} is not in {rid}")))?;
        Some((member, Audience::Only(vec![target_uid])))
    };
    Ok(Outgoing {
        rid: rid.to_owned(),
        payload,
        target,
    })
}
