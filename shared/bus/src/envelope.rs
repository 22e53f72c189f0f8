//! What travels between servers, as MessagePack (rmp-serde).

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::BusError;

/// A frontend session as a backend sees it (Pomelo's `session.export()`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SessionExport {
    /// The connector that holds the socket: Pomelo's `frontendId`, the channel's `sid`.
    pub frontend_id: String,
    /// The socket's id on that connector.
    pub id: u64,
    pub uid: Option<String>,
    pub settings: Map<String, Value>,
}

impl SessionExport {
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.settings.get(key).and_then(Value::as_str)
    }
}

/// One message on a server's subject.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Envelope {
    /// A client request (or notify) whose route names this server's type, forwarded by the
    /// frontend that received it. `body` is the request's JSON.
    Forward {
        session: SessionExport,
        route: String,
        #[serde(with = "serde_bytes")]
        body: Vec<u8>,
        /// What the sender routed by (the session's `rid` for chat): the receiver handles the
        /// messages of one key in the order they arrive.
        #[serde(default)]
        key: Option<String>,
        /// How long the sender waits for the answer, from when it sent it: a request still
        /// queued when that has passed is dropped, not run (the client has been told it
        /// failed, and may send it again).
        #[serde(default)]
        deadline_ms: Option<u64>,
        /// The same deadline on the sender's clock (ms since the Unix epoch): a request that
        /// sat unread (its receiver was paused) is dropped too. See [`is_late`].
        #[serde(default)]
        expires_at_ms: Option<u64>,
    },
    /// A remote call, Pomelo's `app.rpc.<type>.<service>.<method>(args)`. `args` is the
    /// call in MessagePack, as the typed remotes of `shaddock-remote` write and read it.
    Rpc {
        service: String,
        method: String,
        #[serde(with = "serde_bytes")]
        args: Vec<u8>,
        /// The routing key of the call, as for `Forward`; `None` for a call addressed to a
        /// server by id, which is handled apart from any order.
        #[serde(default)]
        key: Option<String>,
        /// When the caller stops waiting, on its clock (ms since the Unix epoch); a call still
        /// unhandled then is dropped, not run (the caller was told it failed).
        #[serde(default)]
        expires_at_ms: Option<u64>,
    },
    /// A push for sessions on this frontend: one per sid group. `body` is already encoded
    /// (once, by the sender); the frontend frames it once for all `uids`.
    Push {
        route: String,
        #[serde(with = "serde_bytes")]
        body: Vec<u8>,
        uids: Vec<String>,
        /// The message's offset in its room's history: sessions that entered with `recover`
        /// get it inside the body (framed once more, for them all).
        #[serde(default)]
        offset: Option<u64>,
    },
    /// A push to every session on this frontend (`channelService.broadcast`).
    Broadcast {
        route: String,
        #[serde(with = "serde_bytes")]
        body: Vec<u8>,
    },
    /// Answered once everything of `key` that reached the receiver before it has been handled:
    /// a room's new owner waits on it before serving the room.
    Barrier { key: String },
}

/// Now, in ms since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// How far servers' clocks may disagree before a request is called late by the wrong one.
pub const CLOCK_SKEW_MS: u64 = 200;

/// How long the receiver may still answer a request whose sender waits `wait`: less the
/// answer's way (a quarter, at most 250 ms). The sender's timer runs from before the request
/// arrives; what is done just before the full wait would reach the sender after it was told
/// the request failed, and a retry would do it twice (a chat message pushed twice).
pub fn answerable_within(wait: std::time::Duration) -> std::time::Duration {
    let way = (wait / 4).min(std::time::Duration::from_millis(250));
    wait - way
}

/// The wall-clock expiry to put in a request whose sender waits `wait`: the end of
/// [`answerable_within`], less the clock skew [`is_late`] allows, so that a receiver on the
/// same clock calls it late exactly there.
pub fn expiry_for(wait: std::time::Duration) -> u64 {
    (now_ms() + answerable_within(wait).as_millis() as u64).saturating_sub(CLOCK_SKEW_MS)
}

/// True when a request that expired at `expires_at_ms` (sender's clock) is late now.
pub fn is_late(expires_at_ms: Option<u64>) -> bool {
    expires_at_ms.is_some_and(|at| now_ms() > at.saturating_add(CLOCK_SKEW_MS))
}

/// Numbers the pushes one sender (a chat server's channel service, `from`, random per run)
/// sends to one frontend: 1, 2, 3, in the order they leave. NATS keeps that order, so a
/// frontend that gets `n` after `n - 2` knows one was lost (a connection dropped with it in
/// its buffers, a subscription overflowed), even when nothing else shows it.
///
/// It travels after the push's envelope, as [`PUSH_NO_LEN`] bytes of its own (a MessagePack
/// array of two 64-bit integers): a frontend of the previous version reads the envelope and
/// ignores what follows it, so the two versions still talk during a rolling upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushNo {
    pub from: u64,
    pub n: u64,
}

/// The length of a [`PushNo`] after its envelope.
pub const PUSH_NO_LEN: usize = 19;

impl PushNo {
    fn write(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[0x92, 0xcf]);
        out.extend_from_slice(&self.from.to_be_bytes());
        out.push(0xcf);
        out.extend_from_slice(&self.n.to_be_bytes());
    }

    /// The number at the end of `bytes`, and the envelope before it, when it ends with one.
    fn read(bytes: &[u8]) -> Option<(&[u8], PushNo)> {
        let at = bytes.len().checked_sub(PUSH_NO_LEN)?;
        let tail = &bytes[at..];
        if tail[..2] != [0x92, 0xcf] || tail[10] != 0xcf {
            return None;
        }
        let word = |b: &[u8]| b.try_into().ok().map(u64::from_be_bytes);
        let no = PushNo {
            from: word(&tail[2..10])?,
            n: word(&tail[11..19])?,
        };
        Some((&bytes[..at], no))
    }
}

/// A push envelope encoded from borrowed parts: the same bytes as [`Envelope::Push`], without
/// cloning the uids of a cached channel group on every push; then its number, if any.
pub fn encode_push(
    route: &str,
    body: &[u8],
    uids: &[String],
    offset: Option<u64>,
    no: Option<PushNo>,
) -> Result<Bytes, BusError> {
    let out = encode_push_unnumbered(route, body, uids, offset)?;
    Ok(match no {
        Some(no) => number_push(out, no),
        None => Bytes::from(out),
    })
}

/// [`encode_push`] without a number, with room for one ([`number_push`]): a sender encodes
/// before it takes the lock that keeps its numbers in order.
pub fn encode_push_unnumbered(
    route: &str,
    body: &[u8],
    uids: &[String],
    offset: Option<u64>,
) -> Result<Vec<u8>, BusError> {
    /// Mirrors [`Envelope`]: same variant names and order, so the encoding is identical.
    #[derive(Serialize)]
    #[allow(dead_code)]
    enum EnvelopeRef<'a> {
        Forward {},
        Rpc {},
        Push {
            route: &'a str,
            #[serde(with = "serde_bytes")]
            body: &'a [u8],
            uids: &'a [String],
            offset: Option<u64>,
        },
    }
    let env = EnvelopeRef::Push {
        route,
        body,
        uids,
        offset,
    };
    let uids_len: usize = uids.iter().map(|u| u.len() + 2).sum();
    let mut out = Vec::with_capacity(body.len() + route.len() + uids_len + 32 + PUSH_NO_LEN);
    rmp_serde::encode::write(&mut out, &env)?;
    Ok(out)
}

/// A push encoded by [`encode_push_unnumbered`], with its number after it.
pub fn number_push(mut push: Vec<u8>, no: PushNo) -> Bytes {
    push.reserve_exact(PUSH_NO_LEN);
    no.write(&mut push);
    Bytes::from(push)
}

/// A push read without copying: the route, body and uids borrow from the received bytes, so a
/// frontend decoding a push for N sessions allocates once (the uid list), not once per uid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushView<'a> {
    pub route: &'a str,
    pub body: &'a [u8],
    pub uids: Vec<&'a str>,
    pub offset: Option<u64>,
    pub no: Option<PushNo>,
}

/// Decodes `bytes` as a push without copying; `None` when it is another kind of envelope.
pub fn decode_push(bytes: &[u8]) -> Result<Option<PushView<'_>>, BusError> {
    use serde::de::IgnoredAny;
    /// Mirrors [`Envelope`]: same variant names and order.
    #[derive(Deserialize)]
    enum EnvelopeView<'a> {
        Forward(IgnoredAny),
        Rpc(IgnoredAny),
        Push {
            #[serde(borrow)]
            route: &'a str,
            #[serde(borrow, with = "serde_bytes")]
            body: &'a [u8],
            #[serde(borrow)]
            uids: Vec<&'a str>,
            #[serde(default)]
            offset: Option<u64>,
        },
        Broadcast(IgnoredAny),
        Barrier(IgnoredAny),
    }
    // A numbered push is read without its number; anything else (an envelope whose last
    // bytes merely look like a number) is read whole.
    let (view, no) = match PushNo::read(bytes)
        .and_then(|(env, no)| Some((rmp_serde::from_slice::<EnvelopeView<'_>>(env).ok()?, no)))
    {
        Some((view, no)) => (view, Some(no)),
        None => (rmp_serde::from_slice::<EnvelopeView<'_>>(bytes)?, None),
    };
    Ok(match view {
        EnvelopeView::Push {
            route,
            body,
            uids,
            offset,
        } => Some(PushView {
            route,
            body,
            uids,
            offset,
            no,
        }),
        EnvelopeView::Forward(_)
        | EnvelopeView::Rpc(_)
        | EnvelopeView::Broadcast(_)
        | EnvelopeView::Barrier(_) => None,
    })
}

/// The answer to a request on the bus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Reply {
    /// `body`: JSON for a forwarded request, MessagePack for a remote call or a push.
    Ok(#[serde(with = "serde_bytes")] Vec<u8>),
    Err {
        code: u16,
        message: String,
    },
}

impl Envelope {
    pub fn encode(&self) -> Result<Bytes, BusError> {
        Ok(Bytes::from(rmp_serde::to_vec(self)?))
    }
    pub fn decode(bytes: &[u8]) -> Result<Self, BusError> {
        Ok(rmp_serde::from_slice(bytes)?)
    }
    /// The same envelope, handled in the order of `key` by its receiver.
    pub fn keyed(mut self, new_key: Option<&str>) -> Self {
        if let Envelope::Forward { key, .. } | Envelope::Rpc { key, .. } = &mut self {
            *key = new_key.map(str::to_owned);
        }
        self
    }

    /// The key whose order this message keeps, if any.
    pub fn key(&self) -> Option<&str> {
        match self {
            Envelope::Forward { key, .. } | Envelope::Rpc { key, .. } => key.as_deref(),
            Envelope::Barrier { key } => Some(key),
            Envelope::Push { .. } | Envelope::Broadcast { .. } => None,
        }
    }
}

impl Reply {
    pub fn encode(&self) -> Result<Bytes, BusError> {
        Ok(Bytes::from(rmp_serde::to_vec(self)?))
    }
    pub fn decode(bytes: &[u8]) -> Result<Self, BusError> {
        Ok(rmp_serde::from_slice(bytes)?)
    }
    /// A successful reply whose body is `value` in MessagePack.
    pub fn value(value: &impl Serialize) -> Result<Self, BusError> {
        Ok(Reply::Ok(rmp_serde::to_vec(value)?))
    }
    /// The body, or the remote error.
    pub fn into_result(self) -> Result<Vec<u8>, BusError> {
        match self {
            Reply::Ok(b) => Ok(b),
            Reply::Err { code, message } => Err(BusError::Remote { code, message }),
        }
    }
}

/// Decodes a MessagePack value (a reply body, rpc args).
pub fn decode_value<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, BusError> {
    Ok(rmp_serde::from_slice(bytes)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rpc() -> Envelope {
        Envelope::Rpc {
            service: "chatRemote".into(),
            method: "add".into(),
            args: vec![0x80],
            key: None,
            expires_at_ms: None,
        }
    }

    #[test]
    fn envelopes_round_trip_through_messagepack() {
        let mut settings = Map::new();
        settings.insert("rid".into(), Value::from("room1"));
        let e = Envelope::Forward {
            session: SessionExport {
                frontend_id: "connector-1".into(),
                id: 7,
                uid: Some("a*room1".into()),
                settings,
            },
            route: "chat.chatHandler.send".into(),
            body: b"{}".to_vec(),
            key: Some("room1".into()),
            deadline_ms: Some(2000),
            expires_at_ms: Some(1),
        };
        assert_eq!(Envelope::decode(&e.encode().unwrap()).unwrap(), e);
        assert_eq!(e.key(), Some("room1"));
        let r = rpc().keyed(Some("r"));
        let decoded = Envelope::decode(&r.encode().unwrap()).unwrap();
        assert_eq!(decoded.key(), Some("r"));
        assert_eq!(decoded, r);
    }

    #[test]
    fn a_borrowed_push_encodes_like_the_owned_one() {
        let uids = vec!["a".to_owned(), "b".to_owned()];
        let borrowed = encode_push("onChat", b"{}", &uids, Some(7), None).unwrap();
        let owned = Envelope::Push {
            route: "onChat".into(),
            body: b"{}".to_vec(),
            uids,
            offset: Some(7),
        };
        assert_eq!(borrowed, owned.encode().unwrap());
    }

    #[test]
    fn a_push_is_read_without_copying_and_other_envelopes_are_not_pushes() {
        let uids = vec!["a*r".to_owned(), "b*r".to_owned()];
        let bytes = encode_push("onChat", b"{\"msg\":1}", &uids, None, None).unwrap();
        let view = decode_push(&bytes).unwrap().unwrap();
        assert_eq!(
            view,
            PushView {
                route: "onChat",
                body: b"{\"msg\":1}",
                uids: vec!["a*r", "b*r"],
                offset: None,
                no: None,
            }
        );
        assert_eq!(decode_push(&rpc().encode().unwrap()).unwrap(), None);
        let b = Envelope::Broadcast {
            route: "x".into(),
            body: vec![],
        }
        .encode()
        .unwrap();
        assert_eq!(decode_push(&b).unwrap(), None);
        assert!(decode_push(&[0xc1]).is_err());
    }

    #[test]
    fn a_numbered_push_and_one_of_the_previous_version_read_each_other() {
        // What a server of the previous version wrote and read: a push without `no`.
        #[derive(Serialize, Deserialize, Debug, PartialEq)]
        enum Before {
            Forward {},
            Rpc {},
            Push {
                route: String,
                #[serde(with = "serde_bytes")]
                body: Vec<u8>,
                uids: Vec<String>,
                offset: Option<u64>,
            },
        }
        let uids = vec!["a".to_owned()];
        let old = rmp_serde::to_vec(&Before::Push {
            route: "onChat".into(),
            body: b"{}".to_vec(),
            uids: uids.clone(),
            offset: Some(4),
        })
        .unwrap();
        let view = decode_push(&old).unwrap().unwrap();
        assert_eq!((view.offset, view.no), (Some(4), None));
        let no = PushNo {
            from: u64::MAX - 1,
            n: 2,
        };
        let new = encode_push("onChat", b"{}", &uids, Some(4), Some(no)).unwrap();
        let Before::Push { route, offset, .. } = rmp_serde::from_slice(&new).unwrap() else {
            panic!("not a push");
        };
        assert_eq!((route.as_str(), offset), ("onChat", Some(4)));
        let view = decode_push(&new).unwrap().unwrap();
        assert_eq!((view.route, view.offset, view.no), ("onChat", Some(4), Some(no)));
        assert!(matches!(Envelope::decode(&new).unwrap(), Envelope::Push { .. }));
    }

    #[test]
    fn a_request_is_answerable_until_its_wait_less_the_way_back() {
        use std::time::Duration;
        assert_eq!(
            answerable_within(Duration::from_millis(2000)),
            Duration::from_millis(1750)
        );
        assert_eq!(
            answerable_within(Duration::from_millis(5000)),
            Duration::from_millis(4750)
        );
        assert_eq!(
            answerable_within(Duration::from_millis(400)),
            Duration::from_millis(300)
        );
        let at = expiry_for(Duration::from_millis(5000));
        let now = now_ms();
        // Late on the same clock once the answerable part is over, not before.
        assert!(!is_late(Some(at)));
        assert!((now + 4700..=now + 4750).contains(&(at + CLOCK_SKEW_MS)));
    }

    #[test]
    fn a_request_is_late_only_past_its_expiry_and_the_clock_skew() {
        assert!(!is_late(None));
        assert!(!is_late(Some(now_ms() + 1000)));
        assert!(!is_late(Some(now_ms())));
        assert!(is_late(Some(now_ms() - CLOCK_SKEW_MS - 1000)));
    }

    #[test]
    fn garbage_is_a_decode_error_not_a_panic() {
        assert!(Envelope::decode(&[0xc1, 0xff, 0x00]).is_err());
        assert!(Reply::decode(&[]).is_err());
    }
}
