//! The package layer: `type (1 byte) | body length (3 bytes, big-endian) | body`.

use bytes::{BufMut, Bytes, BytesMut};

use crate::{DecodeError, EncodeError};

/// Bytes in a package header.
pub const HEADER_LEN: usize = 4;
/// Largest body a 24-bit length can declare.
pub const MAX_BODY_LEN: usize = 0xFF_FFFF;

/// The five package types of the Pomelo protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PackageType {
    Handshake = 1,
    HandshakeAck = 2,
    Heartbeat = 3,
    Data = 4,
    Kick = 5,
}

impl TryFrom<u8> for PackageType {
    type Error = DecodeError;
    fn try_from(b: u8) -> Result<Self, DecodeError> {
        Ok(match b {
            1 => Self::Handshake,
            2 => Self::HandshakeAck,
            3 => Self::Heartbeat,
            4 => Self::Data,
            5 => Self::Kick,
            other => return Err(DecodeError::BadPackageType(other)),
        })
    }
}

/// One decoded package, borrowing its body from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Package<'a> {
    pub kind: PackageType,
    pub body: &'a [u8],
}

/// A heartbeat package, the same bytes in both directions.
pub const HEARTBEAT: [u8; 4] = [PackageType::Heartbeat as u8, 0, 0, 0];
/// The handshake acknowledgement a client sends.
pub const HANDSHAKE_ACK: [u8; 4] = [PackageType::HandshakeAck as u8, 0, 0, 0];

/// Decodes the first package of `buf`, returning it and the number of bytes it used.
///
/// A declared length beyond the data is an error (the reference decoder pads with zeros).
pub fn decode_one(buf: &[u8]) -> Result<(Package<'_>, usize), DecodeError> {
    if buf.len() < HEADER_LEN {
        return Err(DecodeError::TooShort);
    }
    let kind = PackageType::try_from(buf[0])?;
    let declared = usize::from(buf[1]) << 16 | usize::from(buf[2]) << 8 | usize::from(buf[3]);
    let available = buf.len() - HEADER_LEN;
    if declared > available {
        return Err(DecodeError::LengthMismatch { declared, available });
    }
    let end = HEADER_LEN + declared;
    Ok((
        Package {
            kind,
            body: &buf[HEADER_LEN..end],
        },
        end,
    ))
}

/// How long the package at the start of a byte stream is, header included, once its header
/// has arrived (`Ok(None)` before); an unknown type is an error. Raw TCP clients send a
/// stream, not frames: this cuts it into packages.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, DecodeError> {
    let Some(header) = buf.get(..HEADER_LEN) else {
        return Ok(None);
    };
    PackageType::try_from(header[0])?;
    let body = (usize::from(header[1]) << 16) | (usize::from(header[2]) << 8) | usize::from(header[3]);
    Ok(Some(HEADER_LEN + body))
}

/// Iterates over every package in one buffer (a WebSocket message may hold several).
///
/// Stops after the first error.
pub fn decode_all(buf: &[u8]) -> Packages<'_> {
    Packages {
        rest: buf,
        failed: false,
    }
}

/// Iterator returned by [`decode_all`].
#[derive(Debug)]
pub struct Packages<'a> {
    rest: &'a [u8],
    failed: bool,
}

impl<'a> Iterator for Packages<'a> {
    type Item = Result<Package<'a>, DecodeError>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.rest.is_empty() {
            return None;
        }
        match decode_one(self.rest) {
            Ok((pkg, used)) => {
                self.rest = &self.rest[used..];
                Some(Ok(pkg))
            }
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

/// Writes a package header for a body of `len` bytes.
pub fn encode_header(kind: PackageType, len: usize, out: &mut BytesMut) -> Result<(), EncodeError> {
    if len > MAX_BODY_LEN {
        return Err(EncodeError::BodyTooLarge(len));
    }
    out.reserve(HEADER_LEN + len);
    out.put_u8(kind as u8);
    out.put_u8((len >> 16) as u8);
    out.put_u8((len >> 8) as u8);
    out.put_u8(len as u8);
    Ok(())
}

/// Appends a whole package to `out`.
pub fn encode(kind: PackageType, body: &[u8], out: &mut BytesMut) -> Result<(), EncodeError> {
    encode_header(kind, body.len(), out)?;
    out.put_slice(body);
    Ok(())
}

/// Returns a whole package as one buffer.
pub fn encoded(kind: PackageType, body: &[u8]) -> Result<Bytes, EncodeError> {
    let mut out = BytesMut::with_capacity(HEADER_LEN + body.len());
    encode(kind, body, &mut out)?;
    Ok(out.freeze())
}

/// The KICK package a server sends before closing: `{"reason": <reason>}`.
pub fn kick(reason: &str) -> Bytes {
    let body = serde_json::json!({ "reason": reason }).to_string();
    // A reason never comes near 16 MiB; clamp rather than fail.
    encoded(PackageType::Kick, body.as_bytes()).unwrap_or_else(|_| Bytes::from_static(&[5, 0, 0, 0]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_length_is_big_endian_24_bit() {
        let mut out = BytesMut::new();
        encode_header(PackageType::Data, 65536, &mut out).unwrap();
        assert_eq!(&out[..], &[4, 1, 0, 0]);
    }

    #[test]
    fn a_declared_length_beyond_the_data_is_an_error_not_padding() {
        assert_eq!(
            decode_one(&[4, 0, 0, 0x10, 0]),
            Err(DecodeError::LengthMismatch {
                declared: 16,
                available: 1
            })
        );
    }

    #[test]
    fn several_packages_in_one_buffer_are_all_decoded() {
        let kinds: Vec<_> = decode_all(&[3, 0, 0, 0, 2, 0, 0, 0])
            .map(|p| p.unwrap().kind)
            .collect();
        assert_eq!(kinds, vec![PackageType::Heartbeat, PackageType::HandshakeAck]);
    }

    #[test]
    fn unknown_types_and_short_input_are_errors() {
        assert_eq!(decode_one(&[9, 0, 0, 0]), Err(DecodeError::BadPackageType(9)));
        assert_eq!(decode_one(&[4, 0]), Err(DecodeError::TooShort));
    }

    #[test]
    fn kick_body_is_the_reason_as_json() {
        assert_eq!(&kick("kick")[..], b"\x05\x00\x00\x11{\"reason\":\"kick\"}");
    }

    #[test]
    fn bodies_past_24_bits_cannot_be_encoded() {
        let mut out = BytesMut::new();
        assert!(encode_header(PackageType::Data, MAX_BODY_LEN + 1, &mut out).is_err());
    }
}
