//! pomelo-protobuf bodies, byte for byte as the npm package (0.4.0, the one pomelo 2.2.7 pins)
//! writes them; see POMELO.md 1.7.
//!
//! A frontend with protos ([`Protos`]) answers a handshake with them (their parsed form and
//! version), decodes a request whose route has a client proto, and encodes a response (by the
//! request's route) or a push (by its route) whose route has a server proto. Every other
//! body stays JSON.
//!
//! # Layout
//! - [`json`]: a JSON value with JavaScript's key order, written as `JSON.stringify` writes it.
//! - [`proto`]: Pomelo's proto files and their parsed form.
//! - [`encode`] and [`decode`]: the wire format.
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

pub mod decode;
pub mod encode;
pub mod json;
pub mod proto;

use std::path::{Path, PathBuf};

pub use decode::DecodeError;
pub use encode::EncodeError;
pub use json::Json;
pub use proto::{MessageProto, ProtoSet};

/// The file names Pomelo reads from its `config/` directory.
pub const SERVER_PROTOS: &str = "serverProtos.json";
pub const CLIENT_PROTOS: &str = "clientProtos.json";

/// Why a protos directory could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} is not JSON: {source}")]
    NotJson {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{0} holds neither {SERVER_PROTOS} nor {CLIENT_PROTOS}")]
    Empty(PathBuf),
}

/// A server's protos: the server's (responses and pushes) and the client's (requests).
#[derive(Debug, Clone)]
pub struct Protos {
    pub server: ProtoSet,
    pub client: ProtoSet,
    version: String,
    /// `{"server":..,"client":..,"version":..}` as the handshake carries it.
    handshake_json: String,
}

impl Protos {
    /// Protos from the two files' contents (JSON objects in Pomelo's source form).
    pub fn new(server: &Json, client: &Json) -> Self {
        use base64::Engine as _;
        use md5::{Digest, Md5};
        let server = ProtoSet::parse(server);
        let client = ProtoSet::parse(client);
        let (s, c) = (server.to_json(), client.to_json());
        let (s_text, c_text) = (s.to_js_string(), c.to_js_string());
        // base64(md5(JSON(client) + JSON(server))) of the parsed forms, as Pomelo computes it.
        let digest = Md5::digest(format!("{c_text}{s_text}").as_bytes());
        let version = base64::engine::general_purpose::STANDARD.encode(digest);
        let mut handshake_json = format!("{{\"server\":{s_text},\"client\":{c_text},\"version\":");
        json::write_string(&version, &mut handshake_json);
        handshake_json.push('}');
        Self {
            server,
            client,
            version,
            handshake_json,
        }
    }

    /// Reads `serverProtos.json` and `clientProtos.json` from `dir`; a missing one is `{}`, as
    /// for Pomelo, but a directory with neither is a mistake worth refusing.
    pub fn load(dir: &Path) -> Result<Self, LoadError> {
        let read = |name: &str| -> Result<Option<Json>, LoadError> {
            let path = dir.join(name);
            match std::fs::read(&path) {
                Ok(bytes) => Json::parse(&bytes)
                    .map(Some)
                    .map_err(|source| LoadError::NotJson { path, source }),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(source) => Err(LoadError::Read { path, source }),
            }
        };
        let (server, client) = (read(SERVER_PROTOS)?, read(CLIENT_PROTOS)?);
        if server.is_none() && client.is_none() {
            return Err(LoadError::Empty(dir.to_owned()));
        }
        let empty = Json::Object(Vec::new());
        Ok(Self::new(
            server.as_ref().unwrap_or(&empty),
            client.as_ref().unwrap_or(&empty),
        ))
    }

    /// `protos.version`: what a client sends back as `protoVersion`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The handshake's `protos` object.
    pub fn handshake_json(&self) -> &str {
        &self.handshake_json
    }

    /// A response or push body for `route`: `None` when the route has no server proto (the
    /// body goes as JSON), else the protobuf bytes, or an error (Pomelo then sends an empty
    /// body).
    pub fn encode_server(&self, route: &str, json_body: &[u8]) -> Option<Result<Vec<u8>, EncodeError>> {
        encode_with(&self.server, route, json_body)
    }

    /// A request body for `route`, as a client encodes it (for clients and tests).
    pub fn encode_client(&self, route: &str, json_body: &[u8]) -> Option<Result<Vec<u8>, EncodeError>> {
        encode_with(&self.client, route, json_body)
    }

    /// A request body of `route` as JSON text: `None` when the route has no client proto.
    pub fn decode_client(&self, route: &str, body: &[u8]) -> Option<Result<String, DecodeError>> {
        decode_with(&self.client, route, body)
    }

    /// A response or push body of `route` as JSON text (for clients and tests).
    pub fn decode_server(&self, route: &str, body: &[u8]) -> Option<Result<String, DecodeError>> {
        decode_with(&self.server, route, body)
    }
}

fn encode_with(set: &ProtoSet, route: &str, json_body: &[u8]) -> Option<Result<Vec<u8>, EncodeError>> {
    let proto = set.route(route)?;
    let msg = Json::parse(json_body).unwrap_or(Json::Null);
    let mut enc = encode::Encoder {
        set,
        out: Vec::with_capacity(json_body.len()),
    };
    Some(enc.message(proto, &msg).map(|()| enc.out))
}

fn decode_with(set: &ProtoSet, route: &str, body: &[u8]) -> Option<Result<String, DecodeError>> {
    let proto = set.route(route)?;
    let mut dec = decode::Decoder {
        set,
        buf: body,
        pos: 0,
    };
    Some(dec.message(proto, body.len(), 0).map(|v| v.to_js_string()))
}
