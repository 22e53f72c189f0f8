//! The message layer, the body of a DATA package:
//! `flag | id (varint, requests and responses) | route (pushes, requests, notifies) | body`.

use std::borrow::Cow;

use bytes::{BufMut, Bytes, BytesMut};

use crate::package::{self, PackageType};
use crate::{DecodeError, EncodeError};

const ROUTE_COMPRESSED: u8 = 0x01;
const TYPE_MASK: u8 = 0x07;
const GZIP: u8 = 0x10;
/// Longest id varint pomelo-protocol writes (`MSG_ID_MAX_BYTES`).
const ID_MAX_BYTES: usize = 5;

/// The four message types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum MessageType {
    Request = 0,
    Notify = 1,
    Response = 2,
    Push = 3,
}

impl MessageType {
    fn has_id(self) -> bool {
        matches!(self, Self::Request | Self::Response)
    }
    fn has_route(self) -> bool {
        !matches!(self, Self::Response)
    }
}

/// A route as it travels: a string, or a dictionary code when compressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteRef<'a> {
    Name(Cow<'a, str>),
    Code(u16),
}

impl RouteRef<'_> {
    /// The route string, resolving a code with `dict`; `None` for an unknown code.
    pub fn resolve<'d>(&'d self, dict: &'d crate::Dictionary) -> Option<&'d str> {
        match self {
            RouteRef::Name(n) => Some(n),
            RouteRef::Code(c) => dict.route_of(*c),
        }
    }
}

/// One decoded message, borrowing from the package body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message<'a> {
    pub kind: MessageType,
    /// 0 for notifies and pushes.
    pub id: u32,
    /// `None` for responses.
    pub route: Option<RouteRef<'a>>,
    /// The gzip bit (pomelo-protocol 0.1.6); parsed, never set by us.
    pub gzip: bool,
    pub body: &'a [u8],
}

/// Decodes the body of a DATA package.
pub fn decode(buf: &[u8]) -> Result<Message<'_>, DecodeError> {
    let (&flag, mut rest) = buf.split_first().ok_or(DecodeError::EmptyMessage)?;
    let kind = match (flag >> 1) & TYPE_MASK {
        0 => MessageType::Request,
        1 => MessageType::Notify,
        2 => MessageType::Response,
        3 => MessageType::Push,
        other => return Err(DecodeError::BadMessageType(other)),
    };
    let mut id = 0u32;
    if kind.has_id() {
        let (value, used) = decode_id(rest)?;
        id = value;
        rest = &rest[used..];
    }
    let mut route = None;
    if kind.has_route() {
        if flag & ROUTE_COMPRESSED != 0 {
            if rest.len() < 2 {
                return Err(DecodeError::TruncatedRoute);
            }
            route = Some(RouteRef::Code(u16::from_be_bytes([rest[0], rest[1]])));
            rest = &rest[2..];
        } else {
            let (&len, after) = rest.split_first().ok_or(DecodeError::TruncatedRoute)?;
            let len = usize::from(len);
            if after.len() < len {
                return Err(DecodeError::TruncatedRoute);
            }
            route = Some(RouteRef::Name(crate::text::decode_lenient(&after[..len])));
            rest = &after[len..];
        }
    }
    Ok(Message {
        kind,
        id,
        route,
        gzip: flag & GZIP != 0,
        body: rest,
    })
}

/// Decodes a message id: base-128, least significant group first, at most 5 bytes.
pub fn decode_id(buf: &[u8]) -> Result<(u32, usize), DecodeError> {
    let mut value: u64 = 0;
    for (i, &b) in buf.iter().take(ID_MAX_BYTES).enumerate() {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return u32::try_from(value)
                .map(|v| (v, i + 1))
                .map_err(|_| DecodeError::BadId);
        }
    }
    Err(DecodeError::BadId)
}

/// Appends a message id varint.
pub fn encode_id(mut id: u32, out: &mut BytesMut) {
    loop {
        let group = (id & 0x7f) as u8;
        id >>= 7;
        if id == 0 {
            out.put_u8(group);
            return;
        }
        out.put_u8(group | 0x80);
    }
}

fn id_len(mut id: u32) -> usize {
    let mut n = 1;
    while id >= 0x80 {
        id >>= 7;
        n += 1;
    }
    n
}

fn route_len(route: &RouteRef<'_>) -> Result<usize, EncodeError> {
    match route {
        RouteRef::Code(_) => Ok(2),
        RouteRef::Name(n) if n.len() > 255 => Err(EncodeError::RouteTooLong(n.len())),
        RouteRef::Name(n) => Ok(1 + n.len()),
    }
}

/// Appends a message (without package header).
pub fn encode(
    kind: MessageType,
    id: u32,
    route: Option<&RouteRef<'_>>,
    body: &[u8],
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    let route = if kind.has_route() { route } else { None };
    let compressed = matches!(route, Some(RouteRef::Code(_)));
    out.put_u8(((kind as u8) << 1) | u8::from(compressed));
    if kind.has_id() {
        encode_id(id, out);
    }
    match route {
        Some(RouteRef::Code(c)) => out.put_u16(*c),
        Some(RouteRef::Name(n)) => {
            let len = u8::try_from(n.len()).map_err(|_| EncodeError::RouteTooLong(n.len()))?;
            out.put_u8(len);
            out.put_slice(n.as_bytes());
        }
        None if kind.has_route() => out.put_u8(0),
        None => {}
    }
    out.put_slice(body);
    Ok(())
}

/// The length of a message, to size a buffer exactly once.
pub fn encoded_len(
    kind: MessageType,
    id: u32,
    route: Option<&RouteRef<'_>>,
    body: &[u8],
) -> Result<usize, EncodeError> {
    let mut n = 1 + body.len();
    if kind.has_id() {
        n += id_len(id);
    }
    if kind.has_route() {
        n += match route {
            Some(r) => route_len(r)?,
            None => 1,
        };
    }
    Ok(n)
}

/// A whole DATA package holding one message, in one allocation: what goes on the socket.
pub fn data_package(
    kind: MessageType,
    id: u32,
    route: Option<&RouteRef<'_>>,
    body: &[u8],
) -> Result<Bytes, EncodeError> {
    let len = encoded_len(kind, id, route, body)?;
    let mut out = BytesMut::with_capacity(package::HEADER_LEN + len);
    package::encode_header(PackageType::Data, len, &mut out)?;
    encode(kind, id, route, body, &mut out)?;
    Ok(out.freeze())
}

/// The response package to request `id`.
pub fn response_package(id: u32, body: &[u8]) -> Result<Bytes, EncodeError> {
    data_package(MessageType::Response, id, None, body)
}

/// A push package: the route compressed when `dict` knows it.
pub fn push_package(
    route: &str,
    dict: Option<&crate::Dictionary>,
    body: &[u8],
) -> Result<Bytes, EncodeError> {
    let route = match dict.and_then(|d| d.code_of(route)) {
        Some(code) => RouteRef::Code(code),
        None => RouteRef::Name(Cow::Borrowed(route)),
    };
    data_package(MessageType::Push, 0, Some(&route), body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_use_least_significant_group_first() {
        let mut out = BytesMut::new();
        encode_id(300, &mut out);
        assert_eq!(&out[..], &[0xac, 0x02]);
        assert_eq!(decode_id(&[0xac, 0x02]), Ok((300, 2)));
    }

    #[test]
    fn an_id_longer_than_five_bytes_is_an_error() {
        assert_eq!(
            decode_id(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x01]),
            Err(DecodeError::BadId)
        );
        assert_eq!(decode_id(&[0x80]), Err(DecodeError::BadId));
    }

    #[test]
    fn a_response_carries_no_route() {
        let pkg = response_package(1, b"{}").unwrap();
        assert_eq!(&pkg[..], &[4, 0, 0, 4, 4, 1, b'{', b'}']);
    }

    #[test]
    fn a_compressed_push_uses_the_two_byte_code() {
        let pkg = data_package(MessageType::Push, 0, Some(&RouteRef::Code(5)), b"{}").unwrap();
        assert_eq!(&pkg[..], &[4, 0, 0, 5, 7, 0, 5, b'{', b'}']);
    }

    #[test]
    fn a_route_longer_than_255_bytes_cannot_be_encoded() {
        let long = "a".repeat(256);
        let r = RouteRef::Name(Cow::Owned(long));
        assert!(data_package(MessageType::Push, 0, Some(&r), b"").is_err());
    }
}
