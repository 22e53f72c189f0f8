//! The handshake: the JSON a client sends in a HANDSHAKE package and the JSON a server answers.

use bytes::Bytes;
use serde_json::Value;

use crate::Dictionary;
use crate::dictionary::push_json_string;
use crate::package::{self, PackageType};

/// Handshake codes.
pub const CODE_OK: u16 = 200;
/// Bad handshake (no `sys`) or the user handshake hook failed.
pub const CODE_USE_ERROR: u16 = 500;
/// The client is too old (`checkClient` refused it).
pub const CODE_OLD_CLIENT: u16 = 501;

/// What a client says in its handshake, as far as a server cares.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HandshakeRequest {
    /// `sys.type`, e.g. `js-websocket`.
    pub client_type: Option<String>,
    /// `sys.version`.
    pub client_version: Option<String>,
    /// `sys.dictVersion`: the JS client never sends it.
    pub dict_version: Option<String>,
    /// `sys.protoVersion`: `0` on first contact, else the cached protos version.
    pub proto_version: Option<Value>,
    /// `user`: passed to a user handshake hook.
    pub user: Option<Value>,
}

/// Why a handshake body was refused (answered with code 500).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    #[error("handshake body is not JSON")]
    NotJson,
    #[error("handshake has no sys object")]
    NoSys,
}

impl HandshakeRequest {
    /// Parses a handshake body. Pomelo refuses a body without a `sys` object.
    pub fn parse(body: &[u8]) -> Result<Self, HandshakeError> {
        let text = crate::text::decode_lenient(body);
        let v: Value = serde_json::from_str(&text).map_err(|_| HandshakeError::NotJson)?;
        let sys = v
            .get("sys")
            .and_then(Value::as_object)
            .ok_or(HandshakeError::NoSys)?;
        let string = |k: &str| sys.get(k).and_then(Value::as_str).map(str::to_owned);
        Ok(Self {
            client_type: string("type"),
            client_version: string("version"),
            dict_version: string("dictVersion"),
            proto_version: sys.get("protoVersion").cloned(),
            user: v.get("user").cloned(),
        })
    }

    /// The JSON the JS client sends (`sys.type = js-websocket`, `protoVersion = 0`).
    pub fn js_client_body(dict_version: Option<&str>) -> String {
        match dict_version {
            None => {
                r#"{"sys":{"type":"js-websocket","version":"0.0.1","rsa":{},"protoVersion":0}}"#.to_owned()
            }
            Some(v) => {
                let mut s = String::from(
                    r#"{"sys":{"type":"js-websocket","version":"0.0.1","rsa":{},"protoVersion":0,"dictVersion":"#,
                );
                push_json_string(&mut s, v);
                s.push_str("}}");
                s
            }
        }
    }
}

/// The server side of a handshake: what goes in every `sys` answer.
#[derive(Debug, Clone, Default)]
pub struct HandshakeConfig {
    /// Heartbeat interval in seconds; `None` omits `sys.heartbeat` and disables heartbeats.
    pub heartbeat_secs: Option<u32>,
    /// The route dictionary; `None` (or empty) leaves `useDict` out.
    pub dict: Option<Dictionary>,
    /// The server's protos, when it has any (`useProtobuf`).
    pub protos: Option<ProtosAnnouncement>,
}

/// What a handshake says of a server's protos.
#[derive(Debug, Clone, Default)]
pub struct ProtosAnnouncement {
    /// `protos.version`; a client that sends it back as `protoVersion` is not sent them again.
    pub version: String,
    /// The whole `protos` object: `{"server":..,"client":..,"version":..}`.
    pub json: String,
}

impl HandshakeConfig {
    /// The body of a 200 response, keys in Pomelo's order:
    /// `{"code":200,"sys":{"heartbeat":..,"dict":..,"routeToCode":..,"codeToRoute":..,"dictVersion":..,"useDict":true}}`.
    ///
    /// The dict is sent whenever the client's `dictVersion` differs (the JS client never sends one).
    pub fn ok_body(&self, req: &HandshakeRequest, user: Option<&Value>) -> String {
        let mut sys: Vec<String> = Vec::new();
        if let Some(h) = self.heartbeat_secs {
            sys.push(format!("\"heartbeat\":{h}"));
        }
        if let Some(dict) = self.dict.as_ref().filter(|d| !d.is_empty()) {
            if req.dict_version.as_deref() != Some(dict.version()) {
                let d = dict.dict_json();
                sys.push(format!("\"dict\":{d}"));
                sys.push(format!("\"routeToCode\":{d}"));
                sys.push(format!("\"codeToRoute\":{}", dict.code_to_route_json()));
                let mut v = String::from("\"dictVersion\":");
                push_json_string(&mut v, dict.version());
                sys.push(v);
            }
            sys.push("\"useDict\":true".to_owned());
        }
        if let Some(protos) = &self.protos {
            let known = matches!(&req.proto_version, Some(Value::String(v)) if *v == protos.version);
            if !known {
                sys.push(format!("\"protos\":{}", protos.json));
            }
            sys.push("\"useProto\":true".to_owned());
        } else if holds_foreign_protos(req) {
            // The JS client keeps protos from an earlier server (a Pomelo with protobuf) in
            // localStorage and only replaces them when a handshake carries `protos`; without
            // this it would decode our JSON pushes as protobuf.
            let mut p = String::from("\"protos\":{\"server\":{},\"client\":{},\"version\":");
            push_json_string(&mut p, &empty_protos_version());
            p.push('}');
            sys.push(p);
        }
        let mut out = format!("{{\"code\":{CODE_OK},\"sys\":{{{}}}", sys.join(","));
        if let Some(user) = user {
            out.push_str(",\"user\":");
            out.push_str(&user.to_string());
        }
        out.push('}');
        out
    }

    /// The whole HANDSHAKE package of a 200 response.
    pub fn ok_package(&self, req: &HandshakeRequest, user: Option<&Value>) -> Bytes {
        let body = self.ok_body(req, user);
        package::encoded(PackageType::Handshake, body.as_bytes())
            .unwrap_or_else(|_| error_package(CODE_USE_ERROR))
    }
}

/// The protos version of a server without protos: base64(md5(JSON(client) + JSON(server)))
/// with both `{}`, as Pomelo computes it.
pub fn empty_protos_version() -> String {
    use base64::Engine as _;
    use md5::{Digest, Md5};
    base64::engine::general_purpose::STANDARD.encode(Md5::digest(b"{}{}"))
}

/// True when the client announces protos (a non-empty `protoVersion`) that are not ours.
fn holds_foreign_protos(req: &HandshakeRequest) -> bool {
    match &req.proto_version {
        Some(Value::String(v)) => !v.is_empty() && *v != empty_protos_version(),
        Some(Value::Number(n)) => n.as_f64().is_some_and(|n| n != 0.0),
        _ => false,
    }
}

/// A HANDSHAKE package carrying only an error code, e.g. `{"code":500}`.
pub fn error_package(code: u16) -> Bytes {
    let body = format!("{{\"code\":{code}}}");
    package::encoded(PackageType::Handshake, body.as_bytes()).unwrap_or_default()
}

/// What a client learns from a 200 handshake response.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HandshakeResponse {
    pub code: u16,
    pub heartbeat_secs: Option<u32>,
    pub dict: Option<Dictionary>,
    pub user: Option<Value>,
    /// `sys.useProto`: the server encodes the routes of its protos as protobuf.
    pub use_proto: bool,
    /// `sys.protos.version`, when the server sent its protos.
    pub protos_version: Option<String>,
}

impl HandshakeResponse {
    /// Parses a server's handshake response (client side).
    pub fn parse(body: &[u8]) -> Result<Self, HandshakeError> {
        let v: Value = serde_json::from_slice(body).map_err(|_| HandshakeError::NotJson)?;
        let code = v.get("code").and_then(Value::as_u64).unwrap_or(0) as u16;
        let sys = v.get("sys");
        let heartbeat_secs = sys
            .and_then(|s| s.get("heartbeat"))
            .and_then(Value::as_u64)
            .map(|h| h as u32);
        let dict = sys
            .and_then(|s| s.get("dict"))
            .and_then(Value::as_object)
            .map(|m| {
                // Rebuild from the server's codes, which are authoritative.
                let mut pairs: Vec<(&String, u64)> =
                    m.iter().filter_map(|(k, c)| c.as_u64().map(|c| (k, c))).collect();
                pairs.sort_by_key(|(_, c)| *c);
                Dictionary::from_ordered(pairs.into_iter().map(|(k, _)| k.clone()))
            });
        Ok(Self {
            code,
            heartbeat_secs,
            dict,
            user: v.get("user").cloned(),
            use_proto: sys.and_then(|s| s.get("useProto")).and_then(Value::as_bool) == Some(true),
            protos_version: sys
                .and_then(|s| s.pointer("/protos/version"))
                .and_then(Value::as_str)
                .map(str::to_owned),
        })
    }
}

impl Dictionary {
    /// A dictionary whose routes are already in code order (1, 2, ...), as a client receives it.
    pub fn from_ordered<I: IntoIterator<Item = String>>(routes: I) -> Self {
        // `new` sorts its first argument; pass everything as "extra" to keep the order.
        Dictionary::new(Vec::<String>::new(), routes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handshake_without_sys_is_refused() {
        assert_eq!(HandshakeRequest::parse(b"{}"), Err(HandshakeError::NoSys));
        assert_eq!(HandshakeRequest::parse(b"nope"), Err(HandshakeError::NotJson));
        assert_eq!(&error_package(500)[..], b"\x01\x00\x00\x0c{\"code\":500}");
    }

    #[test]
    fn a_server_without_heartbeat_or_dict_answers_an_empty_sys() {
        let cfg = HandshakeConfig::default();
        assert_eq!(
            cfg.ok_body(&HandshakeRequest::default(), None),
            r#"{"code":200,"sys":{}}"#
        );
    }

    #[test]
    fn the_dict_is_left_out_when_the_client_already_has_it() {
        let dict = Dictionary::new(["a.b.c"], Vec::<String>::new());
        let req = HandshakeRequest {
            dict_version: Some(dict.version().to_owned()),
            ..Default::default()
        };
        let cfg = HandshakeConfig {
            heartbeat_secs: Some(3),
            dict: Some(dict),
            protos: None,
        };
        assert_eq!(
            cfg.ok_body(&req, None),
            r#"{"code":200,"sys":{"heartbeat":3,"useDict":true}}"#
        );
    }

    #[test]
    fn a_client_holding_another_servers_protos_is_told_there_are_none() {
        let cfg = HandshakeConfig::default();
        let stale = HandshakeRequest {
            proto_version: Some(Value::from("2zWPnSlRsRxjqgcU215Uxg==")),
            ..Default::default()
        };
        let body = cfg.ok_body(&stale, None);
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["sys"]["protos"]["server"], serde_json::json!({}));
        assert_eq!(v["sys"]["protos"]["version"], Value::from(empty_protos_version()));
        // A fresh client (protoVersion 0) or one that has our (empty) protos gets none.
        for pv in [Value::from(0), Value::from(empty_protos_version())] {
            let req = HandshakeRequest {
                proto_version: Some(pv),
                ..Default::default()
            };
            assert!(!cfg.ok_body(&req, None).contains("protos"));
        }
    }

    #[test]
    fn a_client_reads_heartbeat_and_dict_back() {
        let dict = Dictionary::new(["x.y.z", "a.b.c"], ["onChat"]);
        let cfg = HandshakeConfig {
            heartbeat_secs: Some(3),
            dict: Some(dict.clone()),
            protos: None,
        };
        let body = cfg.ok_body(&HandshakeRequest::default(), None);
        let resp = HandshakeResponse::parse(body.as_bytes()).unwrap();
        assert_eq!(resp.code, 200);
        assert_eq!(resp.heartbeat_secs, Some(3));
        assert_eq!(resp.dict.unwrap().code_of("onChat"), dict.code_of("onChat"));
    }
}
