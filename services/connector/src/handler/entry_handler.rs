//! `connector.entryHandler.enter {username, rid}` (chatofpomelo's entryHandler.js).
//!
//! Binds the session to `username*rid`, keeps `rid` in its settings, and asks the chat server
//! of that room to add it (`chatRemote.add`). The answer is `{users:[names]}`; a uid already
//! logged in anywhere in the cluster gets `{"code":500,"error":true}` and the socket stays open.
//!
//! With `recover: true` the answer adds the room's `epoch` and `offset`, and with the last
//! `epoch` and `offset` the client saw, `recovered` and the `messages` it missed; its pushes
//! then carry their `offset` and reach it after the answer (docs/recovery.md).

use serde_json::{Value, json};
use shaddock_bus::PushNo;
use shaddock_remote::RpcClient;
use shaddock_remote::chat_remote::{Add, AddOutcome, Kick, Recover, Recovery, RoomMember, RoomPosition};
use shaddock_server::frontend::FrontendBuilder;
use std::sync::Arc;
use std::time::Duration;

use shaddock_server::{HandlerError, Session, SessionService};

use crate::auth;

pub const ROUTE: &str = "connector.entryHandler.enter";

/// What `enter` needs besides the request.
#[derive(Debug, Clone)]
struct Enter {
    sessions: SessionService,
    max_chars: usize,
    /// When not empty, enter needs a login token (see [`crate::auth`]).
    secret: Arc<str>,
    /// Where leaves run (retried apart from the enter's answer; a drain waits for them); its
    /// RPC client and incarnation are the enter's too.
    leaves: Leaves,
}

pub fn register(fe: &mut FrontendBuilder, leaves: Leaves, secret: &str) {
    let ctx = Enter {
        sessions: fe.sessions().clone(),
        max_chars: fe.limits().max_name_chars,
        secret: Arc::from(secret),
        leaves,
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

/// What a client asked to recover: `None` without `recover: true`; `since` when it also
/// gave the epoch and offset it saw last.
fn recover_request(body: &Value) -> Option<Recover> {
    if body.get("recover").and_then(Value::as_bool) != Some(true) {
        return None;
    }
    let epoch = body.get("epoch").and_then(Value::as_str);
    let offset = body.get("offset").and_then(Value::as_u64);
    let since = match (epoch, offset) {
        (Some(epoch), Some(offset)) => Some(RoomPosition {
            epoch: epoch.to_owned(),
            offset,
        }),
        _ => None,
    };
    Some(Recover { since })
}

/// The enter answer: Pomelo's `{users}`, and what a recovering client asked for.
fn entered(users: Vec<String>, asked: Option<&Recover>, recovery: Option<Recovery>) -> Value {
    let mut answer = json!({ "users": users });
    let Some(asked) = asked else { return answer };
    if let Some(r) = &recovery {
        answer["epoch"] = Value::from(r.position.epoch.clone());
        answer["offset"] = Value::from(r.position.offset);
    }
    if asked.since.is_some() {
        let (recovered, messages) = match recovery {
            Some(r) => (r.recovered, r.messages),
            None => (false, Vec::new()),
        };
        let messages: Vec<Value> = messages
            .into_iter()
            .map(|m| {
                let body = serde_json::from_slice(&m.body)
                    .unwrap_or_else(|_| Value::from(String::from_utf8_lossy(&m.body).into_owned()));
                json!({"route": m.route, "offset": m.offset, "body": body})
            })
            .collect();
        answer["recovered"] = Value::from(recovered);
        answer["messages"] = Value::from(messages);
    }
    answer
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
        let (rpc, sessions, incarnation) = (&self.leaves.rpc, &self.sessions, self.leaves.incarnation);

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
        let recover = recover_request(&body);
        session.set_recover(recover.is_some());
        // Pushes that follow the add must reach the client after this answer (released when
        // it is queued), and those sent before it to an earlier session of this uid on this
        // connector (routed by uid, they reach this one too) must not reach it at all.
        session.hold_pushes();
        let add = Add {
            rid: rid.clone(),
            member: room_member(&session, uid, incarnation),
            recover: recover.clone(),
        };
        match rpc.call(add).await {
            Ok(AddOutcome::Entered {
                users,
                recovery,
                floor,
                pushed,
            }) => {
                // The socket may have closed while `add` was in flight: its leave could then
                // have reached the chat server first and found nothing. Leave again (it is
                // idempotent) so that no member outlives its session.
                if session.is_closed() {
                    self.leaves.spawn(session.clone(), 0);
                }
                // Pushes held meanwhile that were sent before this session was in (an earlier
                // session's), or that the answer's recovery gives up to its offset, are not
                // for it.
                let recovered = recovery.as_ref().filter(|_| recover.is_some());
                let through = recovered.map(|r| r.position.offset).max(floor);
                if let Some(through) = through {
                    session.skip_held_through(through);
                }
                if let Some(pushed) = pushed {
                    self.fence_pushes_before(&session, pushed, &rid).await;
                }
                Ok(entered(users, recover.as_ref(), recovery))
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
                // Apart: it may be retried for a while, and the client is answered now (a
                // later bind of this session has another entry, which it never removes).
                self.leaves.spawn(session.clone(), 0);
                sessions.unbind(&session);
                Err(HandlerError::new(format!("chatRemote.add failed: {e}")))
            }
        }
    }
}

impl Enter {
    /// Holds the answer until every push the room's chat server sent here before the add
    /// (`pushed` and lower) has been delivered, and has those held for this session dropped:
    /// they were for an earlier session of its uid. A push can arrive before the add's reply
    /// and still be handled after it (the reply and the pushes are read by different tasks,
    /// and news told again after a NATS loss may wait in a backed-up push loop); delivered
    /// after the answer, an `onAdd` of someone who left since would make a ghost.
    async fn fence_pushes_before(&self, session: &Session, pushed: PushNo, rid: &str) {
        if !self.sessions.push_numbers().through(pushed) {
            // A barrier on this connector's own subject is answered by its push loop once
            // everything that reached it before has been handled.
            let me = session.frontend_id().to_owned();
            if let Err(e) = self.leaves.rpc.barrier(&me, rid).await {
                tracing::debug!(error = %e, "cannot wait for the pushes sent before an enter");
            }
        }
        session.skip_held_sent_through(pushed);
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

/// Pomelo's `onUserLeave`, for every session of one connector: a closed session leaves its
/// room, or with `resume_ms` > 0 keeps its place that long for the user to come back (see
/// `ResumeOptions`).
///
/// At most [`LEAVES_IN_FLIGHT`] calls are out at once; the rest wait here. When thousands of
/// sockets close together (a load balancer or a client fleet going away), sending every leave
/// at once queued them at the chat servers past their deadline: each was then refused unrun,
/// retried, and refused again, and the connector's own heartbeat waited behind them until the
/// others thought it dead. Waiting here costs no deadline, so every leave sent is one done.
#[derive(Debug, Clone)]
pub struct Leaves {
    rpc: RpcClient,
    incarnation: u64,
    tracker: tokio_util::task::TaskTracker,
    in_flight: Arc<tokio::sync::Semaphore>,
}

/// Leaves one connector has out at once (see [`Leaves`]).
pub const LEAVES_IN_FLIGHT: usize = 256;

impl Leaves {
    /// Leaves run on `tracker` (a drain waits for it).
    pub fn new(rpc: RpcClient, incarnation: u64, tracker: tokio_util::task::TaskTracker) -> Self {
        Self {
            rpc,
            incarnation,
            tracker,
            in_flight: Arc::new(tokio::sync::Semaphore::new(LEAVES_IN_FLIGHT)),
        }
    }

    /// Sends the leave of `session` (its member is read now) until a chat server takes it.
    pub fn spawn(&self, session: Session, resume_ms: u64) {
        let kick = session.uid().and_then(|uid| {
            let rid = session.get("rid")?.as_str()?.to_owned();
            Some(Kick {
                rid,
                member: room_member(&session, uid, self.incarnation),
                resume_ms,
                retry: false,
            })
        });
        if let Some(kick) = kick {
            let rpc = self.rpc.clone();
            let call = move |kick: Kick| {
                let rpc = rpc.clone();
                async move { rpc.call(kick).await.map(drop) }
            };
            self.tracker.spawn(send_leave(call, self.in_flight.clone(), kick));
        }
    }
}

/// Retried until a chat server takes it (NATS or the room's server may be down for a while):
/// a leave that is never heard is a ghost that everyone else still sees. Kicks are exact
/// (this session's bind only), so a repeat, or a leave that waited its turn, never removes
/// anyone else.
async fn send_leave<F, C>(call: C, in_flight: Arc<tokio::sync::Semaphore>, kick: Kick)
where
    C: Fn(Kick) -> F,
    F: Future<Output = Result<(), shaddock_bus::BusError>>,
{
    let uid = kick.member.uid.clone();
    let mut wait = Duration::from_millis(250);
    let deadline = tokio::time::Instant::now() + LEAVE_RETRY_FOR;
    let mut kick = kick;
    loop {
        let result = {
            // Never closed; held for the call only, not while waiting to retry.
            let _permit = in_flight.acquire().await;
            call(kick.clone()).await
        };
        match result {
            Ok(_) => return,
            Err(e) if tokio::time::Instant::now() + wait < deadline => {
                tracing::warn!(%uid, error = %e, "chatRemote.kick failed, retrying");
                tokio::time::sleep(wait).await;
                kick.retry = true;
                // At most a second apart: the others should hear the leave soon after the
                // outage ends.
                wait = (wait * 2).min(Duration::from_secs(1));
            }
            Err(e) => {
                tracing::warn!(%uid, error = %e, "chatRemote.kick failed; the membership rounds will repair it");
                return;
            }
        }
    }
}

/// How long a failed leave is retried.
const LEAVE_RETRY_FOR: Duration = Duration::from_secs(30);

#[cfg(test)]
mod tests {
    use super::*;
    use shaddock_remote::chat_remote::RecoveredMessage;

    #[tokio::test]
    async fn leaves_beyond_the_bound_wait_their_turn_and_all_are_sent_once() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let in_flight = Arc::new(tokio::sync::Semaphore::new(LEAVES_IN_FLIGHT));
        let (now, most, done) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
        );
        let call = {
            let (now, most, done) = (now.clone(), most.clone(), done.clone());
            move |_kick: Kick| {
                let (now, most, done) = (now.clone(), most.clone(), done.clone());
                async move {
                    let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(n, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    now.fetch_sub(1, Ordering::SeqCst);
                    done.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                }
            }
        };
        let tracker = tokio_util::task::TaskTracker::new();
        let leaves = 4 * LEAVES_IN_FLIGHT;
        for i in 0..leaves {
            let kick = Kick {
                rid: format!("room{i}"),
                member: RoomMember {
                    uid: format!("u{i}*room{i}"),
                    sid: "connector-1".into(),
                    incarnation: 1,
                    session: 1,
                },
                resume_ms: 0,
                retry: false,
            };
            tracker.spawn(send_leave(call.clone(), in_flight.clone(), kick));
        }
        tracker.close();
        tracker.wait().await;
        assert_eq!(done.load(Ordering::SeqCst), leaves, "every leave is sent, once");
        assert_eq!(
            most.load(Ordering::SeqCst),
            LEAVES_IN_FLIGHT,
            "never more at once than the bound"
        );
    }

    #[test]
    fn recover_is_asked_with_true_and_a_position_needs_both_parts() {
        assert_eq!(recover_request(&json!({"username": "a"})), None);
        assert_eq!(recover_request(&json!({"recover": "yes"})), None);
        assert_eq!(
            recover_request(&json!({"recover": true, "epoch": "e"})),
            Some(Recover { since: None })
        );
        assert_eq!(
            recover_request(&json!({"recover": true, "epoch": "e", "offset": 4})),
            Some(Recover {
                since: Some(RoomPosition {
                    epoch: "e".into(),
                    offset: 4
                })
            })
        );
    }

    #[test]
    fn the_answer_is_pomelos_unless_recover_was_asked() {
        let users = || vec!["a".to_owned()];
        let recovery = || Recovery {
            position: RoomPosition {
                epoch: "e".into(),
                offset: 9,
            },
            recovered: true,
            messages: vec![RecoveredMessage {
                offset: 8,
                route: "onChat".into(),
                body: br#"{"msg":"hi"}"#.to_vec(),
            }],
        };
        assert_eq!(
            entered(users(), None, Some(recovery())).to_string(),
            r#"{"users":["a"]}"#
        );
        let fresh = Recover { since: None };
        assert_eq!(
            entered(users(), Some(&fresh), Some(recovery())).to_string(),
            r#"{"epoch":"e","offset":9,"users":["a"]}"#
        );
        let back = Recover {
            since: Some(RoomPosition {
                epoch: "e".into(),
                offset: 7,
            }),
        };
        assert_eq!(
            entered(users(), Some(&back), Some(recovery())),
            json!({"users": ["a"], "epoch": "e", "offset": 9, "recovered": true,
                   "messages": [{"route": "onChat", "offset": 8, "body": {"msg": "hi"}}]})
        );
        assert_eq!(
            entered(users(), Some(&back), None),
            json!({"users": ["a"], "recovered": false, "messages": []})
        );
    }
}
