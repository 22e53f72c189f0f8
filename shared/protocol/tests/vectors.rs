//! Table-driven tests from the byte vectors the reference npm packages produced
//! (pomelo-protocol 0.1.6, crc 0.2.0): every case, encode and decode.

use std::borrow::Cow;

use bytes::BytesMut;
use serde_json::Value;
use shaddock_protocol::handshake::{HandshakeConfig, HandshakeRequest};
use shaddock_protocol::message::{self, MessageType, RouteRef};
use shaddock_protocol::package::{self, PackageType};
use shaddock_protocol::{DecodeError, Dictionary, crc};

fn vectors() -> Value {
    let text = include_str!("vectors/pomelo-protocol.json");
    serde_json::from_str(text).unwrap()
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn cases<'a>(v: &'a Value, key: &str) -> &'a Vec<Value> {
    v[key].as_array().unwrap()
}

#[test]
fn packages_encode_and_decode_like_the_reference() {
    let v = vectors();
    for case in cases(&v, "packages") {
        let name = case["name"].as_str().unwrap();
        let kind = PackageType::try_from(case["type"].as_u64().unwrap() as u8).unwrap();
        if let Some(pkg_hex) = case["package_hex"].as_str() {
            let body = hex(case["body_hex"].as_str().unwrap());
            let expected = hex(pkg_hex);
            assert_eq!(
                &package::encoded(kind, &body).unwrap()[..],
                &expected[..],
                "{name}"
            );
            let (pkg, used) = package::decode_one(&expected).unwrap();
            assert_eq!(
                (pkg.kind, pkg.body, used),
                (kind, &body[..], expected.len()),
                "{name}"
            );
        } else {
            let len = case["body_len"].as_u64().unwrap() as usize;
            let header = hex(case["header_hex"].as_str().unwrap());
            let mut out = BytesMut::new();
            package::encode(kind, &vec![b'a'; len], &mut out).unwrap();
            assert_eq!(&out[..4], &header[..], "{name}");
            let (pkg, _) = package::decode_one(&out).unwrap();
            assert_eq!(pkg.body.len(), len, "{name}");
        }
    }
}

#[test]
fn message_ids_encode_and_decode_like_the_reference() {
    let v = vectors();
    for case in cases(&v, "message_ids") {
        let id = case["id"].as_u64().unwrap() as u32;
        let varint = hex(case["varint_hex"].as_str().unwrap());
        let mut out = BytesMut::new();
        message::encode_id(id, &mut out);
        assert_eq!(&out[..], &varint[..], "id {id}");
        assert_eq!(message::decode_id(&varint), Ok((id, varint.len())));
        let msg = hex(case["message_hex"].as_str().unwrap());
        let decoded = message::decode(&msg).unwrap();
        assert_eq!((decoded.kind, decoded.id), (MessageType::Response, id));
    }
}

fn message_type(n: u64) -> MessageType {
    match n {
        0 => MessageType::Request,
        1 => MessageType::Notify,
        2 => MessageType::Response,
        _ => MessageType::Push,
    }
}

#[test]
fn messages_encode_and_decode_like_the_reference() {
    let v = vectors();
    for case in cases(&v, "messages") {
        let name = case["name"].as_str().unwrap();
        let d = &case["decoded"];
        let kind = message_type(d["type"].as_u64().unwrap());
        let id = d["id"].as_u64().unwrap_or(0) as u32;
        let route = match &d["route"] {
            Value::Number(n) => Some(RouteRef::Code(n.as_u64().unwrap() as u16)),
            Value::String(s) => Some(RouteRef::Name(Cow::Owned(s.clone()))),
            _ => None,
        };
        let body = hex(d["body_hex"].as_str().unwrap());
        let bytes = hex(case["message_hex"].as_str().unwrap());

        let msg = message::decode(&bytes).unwrap();
        assert_eq!(msg.kind, kind, "{name}");
        assert_eq!(msg.id, id, "{name}");
        assert_eq!(msg.route, route, "{name}");
        assert_eq!(msg.body, &body[..], "{name}");
        assert_eq!(msg.gzip, d["compressGzip"].as_u64() == Some(1), "{name}");

        // We never set the gzip bit, so only the other cases are encoded back.
        if let Some(pkg_hex) = case["package_hex"].as_str() {
            let pkg = message::data_package(kind, id, route.as_ref(), &body).unwrap();
            assert_eq!(&pkg[..], &hex(pkg_hex)[..], "{name}");
        }
    }
}

#[test]
fn crc32_matches_the_reference() {
    let v = vectors();
    for case in cases(&v, "crc32") {
        let input = case["input"].as_str().unwrap();
        assert_eq!(
            i64::from(crc::crc32(input)),
            case["crc32_signed"].as_i64().unwrap(),
            "{input:?}"
        );
        assert_eq!(
            crc::crc32(input).unsigned_abs() as u64,
            case["abs"].as_u64().unwrap()
        );
    }
}

#[test]
fn handshake_responses_without_protobuf_are_byte_identical() {
    let v = vectors();
    let facts = &v["handshake_facts"];
    let dict_routes: Vec<(String, u64)> = facts["dict"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, c)| (k.clone(), c.as_u64().unwrap()))
        .collect();
    let dict = Dictionary::new(dict_routes.iter().map(|(r, _)| r.clone()), Vec::<String>::new());
    for (route, code) in &dict_routes {
        assert_eq!(dict.code_of(route), Some(*code as u16));
    }
    assert_eq!(dict.version(), facts["dictVersion"].as_str().unwrap());

    let req = HandshakeRequest::parse(HandshakeRequest::js_client_body(None).as_bytes()).unwrap();
    let mut checked = 0;
    for case in cases(&v, "handshake") {
        let name = case["name"].as_str().unwrap();
        let json = case["response_json"].as_str().unwrap();
        let parsed: Value = serde_json::from_str(json).unwrap();
        if parsed["sys"].get("protos").is_some() || parsed["sys"].get("useProto").is_some() {
            continue; // the protobuf case: shared/protobuf/tests/vectors.rs
        }
        let cfg = HandshakeConfig {
            heartbeat_secs: parsed["sys"]["heartbeat"].as_u64().map(|h| h as u32),
            dict: parsed["sys"].get("dict").map(|_| dict.clone()),
            protos: None,
        };
        let pkg = cfg.ok_package(&req, None);
        assert_eq!(
            &pkg[..],
            &hex(case["package_hex"].as_str().unwrap())[..],
            "{name}"
        );
        checked += 1;
    }
    assert!(checked >= 2);
}

#[test]
fn the_js_client_handshake_request_is_byte_identical() {
    let v = vectors();
    let first = &cases(&v, "packages")[0];
    let body = HandshakeRequest::js_client_body(None);
    assert_eq!(body.as_bytes(), &hex(first["body_hex"].as_str().unwrap())[..]);
}

#[test]
fn decode_errors_are_errors_where_the_reference_was_lenient() {
    let v = vectors();
    let c = cases(&v, "decode_errors");
    // two packages in one buffer: both decoded (the reference returns an array)
    let two: Vec<_> = package::decode_all(&hex(c[0]["input_hex"].as_str().unwrap()))
        .map(|p| p.unwrap().kind)
        .collect();
    assert_eq!(two, vec![PackageType::Heartbeat, PackageType::HandshakeAck]);
    // declared length beyond the data: an error, never zero padding
    assert!(matches!(
        package::decode_one(&hex(c[1]["input_hex"].as_str().unwrap())),
        Err(DecodeError::LengthMismatch { .. })
    ));
    // unknown type 9
    assert_eq!(
        package::decode_one(&hex(c[2]["input_hex"].as_str().unwrap())),
        Err(DecodeError::BadPackageType(9))
    );
}
