//! A client's protobuf request body, decoded with protos that nest, repeat and refer to
//! themselves: an error or a value, never a panic. The decoded JSON encodes back.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use shaddock_protobuf::{Json, Protos};

const CLIENT: &str = r#"{
  "chat.chatHandler.send": {"required string rid": 1, "required string content": 2,
    "optional string from": 3, "optional string target": 4},
  "test.all": {"optional uInt32 u": 1, "optional sInt32 s": 2, "optional int32 i": 3,
    "optional double d": 4, "optional float f": 5, "repeated uInt32 ids": 6,
    "repeated string names": 7, "repeated Node nodes": 8, "optional Node root": 9},
  "message Node": {"optional string v": 1, "repeated Node kids": 2}
}"#;

fn protos() -> &'static Protos {
    static P: OnceLock<Protos> = OnceLock::new();
    P.get_or_init(|| {
        let client = Json::parse(CLIENT.as_bytes()).unwrap_or(Json::Null);
        Protos::new(&Json::Object(Vec::new()), &client)
    })
}

fuzz_target!(|data: &[u8]| {
    for route in ["chat.chatHandler.send", "test.all"] {
        if let Some(Ok(json)) = protos().decode_client(route, data) {
            let _ = protos().encode_client(route, json.as_bytes());
        }
    }
});
