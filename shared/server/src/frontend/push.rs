//! Delivery of what arrives on a frontend's subject: pushes for its sessions (framed once,
//! the same bytes queued on every socket), broadcasts, and `sessionRemote` calls.
//!
//! The receive loop never awaits a socket: queues are `try_send`, a full one closes its
//! client.

use std::sync::Arc;

use shaddock_bus::envelope::decode_push;
use shaddock_bus::{Bus, Envelope, Incoming, Reply, Subscription};
use shaddock_protocol::message;
use tokio_util::sync::CancellationToken;

use super::Frontend;
use crate::remote::session_remote::{self, SessionRemoteTarget};

/// Runs until the token is cancelled or the subscription ends.
pub async fn serve(bus: Bus, mut subs: Vec<Subscription>, fe: Arc<Frontend>, token: CancellationToken) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Incoming>(1024);
    // One forwarding task per extra subscription (the type subject), the server's own inline.
    let mut own = subs.remove(0);
    for mut sub in subs {
        let tx = tx.clone();
        let token = token.clone();
        fe.tracker.spawn(async move {
            loop {
                tokio::select! {
                    _ = token.cancelled() => break,
                    m = sub.next() => match m {
                        Some(m) => { if tx.send(m).await.is_err() { break } }
                        None => break,
                    }
                }
            }
        });
    }
    let mut connects = bus.connects();
    let mut comebacks = bus.comebacks();
    loop {
        let msg = tokio::select! {
            _ = token.cancelled() => break,
            m = own.next() => m,
            m = rx.recv() => m,
            () = came_back(&mut comebacks) => {
                drop_recovering_if_reconnected(&bus, &fe, &mut connects);
                continue;
            }
        };
        let Some(msg) = msg else { break };
        // The first message of a new connection may reach here before the `Disconnected`
        // event is handled: recovering sessions must be closed before it, or it would put
        // their clients' offsets past what was lost with the old one.
        drop_recovering_if_reconnected(&bus, &fe, &mut connects);
        let reply = deliver(&fe, &msg);
        let answer = match (reply, &msg.reply) {
            (Some(reply), Some(_)) => reply.encode().ok(),
            _ => None,
        };
        if let Some(bytes) = answer
            && let Err(e) = bus.respond(&msg, bytes).await
        {
            tracing::debug!(error = %e, "cannot answer a push");
        }
    }
}

/// Waits until the connection comes up again (forever for the in-process bus).
async fn came_back(comebacks: &mut Option<tokio::sync::watch::Receiver<u64>>) {
    if let Some(rx) = comebacks
        && rx.changed().await.is_ok()
    {
        return;
    }
    *comebacks = None;
    std::future::pending::<()>().await
}

/// When the connection came up again since `connects` (what was on its way is lost), closes
/// every recovering session, so that its client comes back and recovers it.
fn drop_recovering_if_reconnected(bus: &Bus, fe: &Frontend, connects: &mut u64) {
    let now = bus.connects();
    if now == *connects {
        return;
    }
    *connects = now;
    // Every recovering session goes now: the senders' numbering starts afresh from here.
    fe.sessions.push_numbers().clear();
    let dropped = fe.sessions.drop_all_recovering();
    if dropped > 0 {
        tracing::warn!(
            dropped,
            "nats reconnected: recovering clients dropped, to recover"
        );
    }
}

/// A JSON object body with `"offset":N` added last, for sessions that entered with
/// `recover`; `None` for a body that is not an object (it is sent as it is).
fn with_offset(body: &[u8], offset: u64) -> Option<Vec<u8>> {
    let end = body.iter().rposition(|b| !b.is_ascii_whitespace())?;
    let start = body.iter().position(|b| !b.is_ascii_whitespace())?;
    if body[start] != b'{' || body[end] != b'}' || start >= end {
        return None;
    }
    let inner = &body[start + 1..end];
    let mut out = Vec::with_capacity(body.len() + 24);
    out.extend_from_slice(&body[..end]);
    if inner.iter().any(|b| !b.is_ascii_whitespace()) {
        out.push(b',');
    }
    out.extend_from_slice(format!("\"offset\":{offset}}}").as_bytes());
    Some(out)
}

fn deliver(fe: &Frontend, msg: &Incoming) -> Option<Reply> {
    let fail = |e: &dyn std::fmt::Display| Reply::Err {
        code: 500,
        message: e.to_string(),
    };
    // The hot path: a push is read in place, framed once, and the same bytes are queued on
    // every session of its uids.
    match decode_push(&msg.payload) {
        Ok(Some(push)) => {
            // A push lost on its way here (its sender's connection dropped with it queued,
            // this server's subscription overflowed) may have carried an offset: recovering
            // sessions must not get anything after it, or their clients would recover from
            // past it. Closed, they come back and recover it.
            if let Some(no) = push.no
                && fe.sessions.push_numbers().missing_before(no)
            {
                fe.metrics.lost_pushes.inc();
                let dropped = fe.sessions.drop_all_recovering();
                tracing::warn!(
                    from = no.from,
                    n = no.n,
                    dropped,
                    "a push was lost on its way here: recovering clients dropped, to recover"
                );
            }
            let body = fe.encode_body(push.route, push.body);
            let pkg = match message::push_package(push.route, fe.dict.as_deref(), &body) {
                Ok(p) => p,
                Err(e) => return Some(fail(&e)),
            };
            // The offset reaches a protobuf client only if the route's proto has a field
            // for it (`optional uInt32 offset`).
            let recovering = || {
                let json = with_offset(push.body, push.offset?)?;
                let body = fe.encode_body(push.route, &json);
                message::push_package(push.route, fe.dict.as_deref(), &body).ok()
            };
            let fails = fe
                .sessions
                .push_to_uids(&push.uids, &pkg, push.offset, push.no, recovering);
            if let Some(no) = push.no {
                fe.sessions.push_numbers().delivered(no);
            }
            let m = &fe.metrics;
            m.pushes.inc();
            m.deliveries.inc_by((push.uids.len() - fails.len()) as u64);
            msg.reply.as_ref()?;
            return Reply::value(&fails).ok();
        }
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(error = %e, subject = %msg.subject, "undecodable envelope");
            return Some(fail(&e));
        }
    }
    let env = match Envelope::decode(&msg.payload) {
        Ok(e) => e,
        Err(e) => return Some(fail(&e)),
    };
    match env {
        Envelope::Push { .. } => None, // read above
        Envelope::Broadcast { route, body } => {
            let body = fe.encode_body(&route, &body);
            if let Ok(pkg) = message::push_package(&route, fe.dict.as_deref(), &body) {
                let n = fe.sessions.send_to_all(&pkg);
                fe.metrics.deliveries.inc_by(n as u64);
            }
            Reply::value(&()).ok()
        }
        Envelope::Rpc {
            service,
            method,
            args,
            ..
        } => {
            let target = SessionRemoteTarget {
                sessions: &fe.sessions,
                metrics: &fe.metrics,
                on_resync: fe.on_resync.as_deref(),
            };
            Some(session_remote::dispatch(target, &service, &method, &args))
        }
        // A frontend keeps no order of keys: nothing to wait for.
        Envelope::Barrier { .. } => Reply::value(&()).ok(),
        Envelope::Forward { route, .. } => Some(Reply::Err {
            code: 500,
            message: format!("{} does not serve {route}", fe.server_type),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::with_offset;

    #[test]
    fn the_offset_goes_last_inside_an_object_body() {
        let got = |b: &[u8]| with_offset(b, 7).map(|v| String::from_utf8(v).unwrap());
        assert_eq!(
            got(b"{\"msg\":\"hi\",\"from\":\"a\"}").as_deref(),
            Some("{\"msg\":\"hi\",\"from\":\"a\",\"offset\":7}")
        );
        assert_eq!(got(b"{}").as_deref(), Some("{\"offset\":7}"));
        assert_eq!(got(b" { } \n").as_deref(), Some(" { \"offset\":7}"));
        assert_eq!(got(b"[1]"), None);
        assert_eq!(got(b"\"x\""), None);
        assert_eq!(got(b""), None);
        assert_eq!(got(b"}"), None);
    }
}
