//! Every protobuf case of the vectors the reference npm package (pomelo-protobuf 0.4.0)
//! produced: the parsed protos, the version, and each body both ways.

use serde_json::Value;
use shaddock_protobuf::{Json, ProtoSet, Protos};

fn vectors() -> Value {
    let text = include_str!("../../protocol/tests/vectors/pomelo-protocol.json");
    serde_json::from_str(text).unwrap()
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn source_protos(v: &Value) -> Json {
    // The source object's keys in file order: read from the text, not through serde_json.
    let text = include_str!("../../protocol/tests/vectors/pomelo-protocol.json");
    let all = Json::parse(text.as_bytes()).unwrap();
    let src = all.get("protobuf_protos_source").unwrap().clone();
    assert!(v["protobuf_protos_source"].is_object());
    src
}

#[test]
fn protos_parse_to_the_reference_parsed_form() {
    let v = vectors();
    let text = include_str!("../../protocol/tests/vectors/pomelo-protocol.json");
    let all = Json::parse(text.as_bytes()).unwrap();
    let parsed = ProtoSet::parse(&source_protos(&v)).to_json();
    assert_eq!(
        parsed.to_js_string(),
        all.get("protobuf_protos_parsed").unwrap().to_js_string()
    );
}

#[test]
fn every_protobuf_case_encodes_and_decodes_like_the_reference() {
    let v = vectors();
    let protos = Protos::new(&source_protos(&v), &Json::Object(Vec::new()));
    let cases = v["protobuf"].as_array().unwrap();
    assert!(cases.len() >= 7);
    for case in cases {
        let route = case["route"].as_str().unwrap();
        let value = case["value_json"].as_str().unwrap();
        let want = hex(case["encoded_hex"].as_str().unwrap());
        let got = protos.encode_server(route, value.as_bytes()).unwrap().unwrap();
        assert_eq!(hex_of(&got), hex_of(&want), "encode {route} {value}");
        let decoded = protos.decode_server(route, &want).unwrap().unwrap();
        assert_eq!(decoded, case["decoded_json"].as_str().unwrap(), "decode {route}");
    }
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn the_version_and_the_handshake_protos_match_the_reference() {
    let v = vectors();
    let src = source_protos(&v);
    let on_chat = Json::object(vec![("onChat".into(), src.get("onChat").unwrap().clone())]);
    let protos = Protos::new(&on_chat, &Json::Object(Vec::new()));
    assert_eq!(
        protos.version(),
        v["handshake_facts"]["protoVersion"].as_str().unwrap()
    );
    let response = v["handshake"][1]["response_json"].as_str().unwrap();
    let want = format!("\"protos\":{},\"useProto\":true", protos.handshake_json());
    assert!(response.contains(&want), "{response}\n  lacks\n{want}");
}

#[test]
fn a_missing_required_field_or_a_wrong_type_is_an_error_and_routes_without_a_proto_are_none() {
    let v = vectors();
    let protos = Protos::new(&source_protos(&v), &Json::Object(Vec::new()));
    assert!(
        protos
            .encode_server("onChat", br#"{"msg":"hi","from":"a"}"#)
            .unwrap()
            .is_err()
    );
    assert!(
        protos
            .encode_server("onChat", br#"{"msg":1,"from":"a","target":"*"}"#)
            .unwrap()
            .is_err()
    );
    assert!(protos.encode_server("onChat", b"not json").unwrap().is_err());
    assert!(protos.encode_server("onAdd", br#"{"user":"a"}"#).is_none());
    assert!(protos.decode_server("onAdd", b"\x0a").is_none());
    // Fields the proto does not know are left out; numbers as parseInt reads them.
    let got = protos
        .encode_server("test.numbers", br#"{"x":1,"u":"300","s":-2.7,"i":-1}"#)
        .unwrap()
        .unwrap();
    assert_eq!(hex_of(&got), "08ac0210031801");
}

#[test]
fn malformed_bodies_are_errors() {
    let v = vectors();
    let protos = Protos::new(&source_protos(&v), &Json::Object(Vec::new()));
    for bad in [
        &b"\x0a\x05hi"[..],                                  // length past the end
        b"\x22\x00",                                         // tag 4 is not in onChat
        b"\x0a",                                             // ends in the key's field
        b"\x0a\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", // varint too long
    ] {
        assert!(protos.decode_server("onChat", bad).unwrap().is_err(), "{bad:?}");
    }
    assert!(
        protos
            .decode_server("test.repeated", b"\x08\xff\xff\x03\x01")
            .unwrap()
            .is_err()
    );
    assert!(
        protos
            .decode_server("test.nested", b"\x0a\x09\x08\x13")
            .unwrap()
            .is_err()
    );
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn decoding_any_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let v = vectors();
            let protos = Protos::new(&source_protos(&v), &Json::Object(Vec::new()));
            for route in ["onChat", "test.numbers", "test.repeated", "test.nested"] {
                let _ = protos.decode_server(route, &bytes);
            }
        }

        #[test]
        fn chat_bodies_round_trip(msg in ".{0,40}", from in "[a-z]{1,8}", target in "[a-z*]{1,8}") {
            let v = vectors();
            let protos = Protos::new(&source_protos(&v), &Json::Object(Vec::new()));
            let body = serde_json::json!({"msg": msg, "from": from, "target": target}).to_string();
            let bytes = protos.encode_server("onChat", body.as_bytes()).unwrap().unwrap();
            let back = protos.decode_server("onChat", &bytes).unwrap().unwrap();
            let a: Value = serde_json::from_str(&back).unwrap();
            let b: Value = serde_json::from_str(&body).unwrap();
            prop_assert_eq!(a, b);
        }
    }
}

#[test]
fn a_message_that_refers_to_itself_cannot_nest_past_the_depth_limit() {
    let client = Json::parse(
        br#"{"message Node":{"optional string v":1,"optional Node next":2},"t":{"optional Node root":1}}"#,
    )
    .unwrap();
    let protos = Protos::new(&Json::Object(Vec::new()), &client);
    // root { next { next { ... } } }, each level a key and a one-byte length... or two.
    let nest = |levels: usize| {
        let mut body: Vec<u8> = Vec::new();
        for i in 0..levels {
            let mut outer = vec![if i + 1 == levels { 0x0a } else { 0x12 }];
            let mut len = Vec::new();
            let mut n = body.len();
            loop {
                let b = (n & 0x7f) as u8;
                n >>= 7;
                if n == 0 {
                    len.push(b);
                    break;
                }
                len.push(b | 0x80);
            }
            outer.extend(len);
            outer.extend(body);
            body = outer;
        }
        body
    };
    let shallow = protos.decode_client("t", &nest(10)).unwrap().expect("decodes");
    assert!(shallow.starts_with(r#"{"root":{"next":{"next":"#), "{shallow}");
    let again = protos.encode_client("t", shallow.as_bytes()).unwrap().unwrap();
    assert_eq!(again, nest(10));
    assert!(protos.decode_client("t", &nest(500)).unwrap().is_err());
}

#[test]
fn the_handshake_with_protos_is_byte_identical_and_left_out_for_a_client_that_has_them() {
    use shaddock_protocol::Dictionary;
    use shaddock_protocol::handshake::{HandshakeConfig, HandshakeRequest, ProtosAnnouncement};
    let v = vectors();
    let src = source_protos(&v);
    let on_chat = Json::object(vec![("onChat".into(), src.get("onChat").unwrap().clone())]);
    let protos = Protos::new(&on_chat, &Json::Object(Vec::new()));
    let mut routes: Vec<(String, u64)> = v["handshake_facts"]["dict"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, c)| (k.clone(), c.as_u64().unwrap()))
        .collect();
    routes.sort_by_key(|(_, c)| *c);
    let cfg = HandshakeConfig {
        heartbeat_secs: Some(3),
        dict: Some(Dictionary::new(
            routes.into_iter().map(|(r, _)| r),
            Vec::<String>::new(),
        )),
        protos: Some(ProtosAnnouncement {
            version: protos.version().to_owned(),
            json: protos.handshake_json().to_owned(),
        }),
    };
    let fresh = HandshakeRequest::parse(HandshakeRequest::js_client_body(None).as_bytes()).unwrap();
    let case = &v["handshake"][1];
    assert_eq!(
        hex_of(&cfg.ok_package(&fresh, None)),
        case["package_hex"].as_str().unwrap(),
        "{}",
        case["name"]
    );
    let cached = HandshakeRequest {
        proto_version: Some(Value::from(protos.version())),
        ..fresh
    };
    let body = cfg.ok_body(&cached, None);
    assert!(
        !body.contains("\"protos\"") && body.ends_with(",\"useProto\":true}}"),
        "{body}"
    );
}
