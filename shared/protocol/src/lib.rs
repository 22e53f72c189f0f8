//! The Pomelo wire format, as pomelo-protocol 0.1.6 and pomelo 2.2.7 put it on the wire.
//!
//! Pure functions over bytes: no I/O, no async runtime, no clock. Every decoder returns a
//! value or an error and never panics, whatever the input (a property test checks this).
//!
//! # Layout
//! - [`package`]: the package layer (type byte, 3-byte big-endian length, body).
//! - [`message`]: the message layer inside a DATA package (flag, varint id, route, body).
//! - [`handshake`]: the handshake request a client sends and the response a server builds.
//! - [`dictionary`]: the route dictionary (`route -> code`) and its `dictVersion`.
//! - [`crc`]: the crc32 that Pomelo's dispatchers use to pick a server.
//! - [`text`]: lenient decoding of the CESU-8 strings that the browser client sends.
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

pub mod crc;
pub mod dictionary;
pub mod handshake;
pub mod message;
pub mod package;
pub mod text;

pub use dictionary::Dictionary;
pub use message::{Message, MessageType, RouteRef};
pub use package::{Package, PackageType};

/// Everything that can be wrong with bytes received from a peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("package shorter than its 4-byte header")]
    TooShort,
    #[error("unknown package type {0}")]
    BadPackageType(u8),
    #[error("declared body length {declared} exceeds the {available} bytes present")]
    LengthMismatch { declared: usize, available: usize },
    #[error("message is empty")]
    EmptyMessage,
    #[error("unknown message type {0}")]
    BadMessageType(u8),
    #[error("message id is truncated or longer than 5 bytes")]
    BadId,
    #[error("route is truncated")]
    TruncatedRoute,
}

/// Everything that can stop a value from being encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("body of {0} bytes exceeds the 16777215 bytes a package can carry")]
    BodyTooLarge(usize),
    #[error("route of {0} bytes exceeds the 255 bytes a message can carry")]
    RouteTooLong(usize),
}
