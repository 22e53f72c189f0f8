//! Decoding never panics, whatever the bytes: random input, and mutations of the vectors.

use proptest::prelude::*;
use shaddock_protocol::handshake::{HandshakeRequest, HandshakeResponse};
use shaddock_protocol::{message, package, text};

fn decode_everything(bytes: &[u8]) {
    for pkg in package::decode_all(bytes) {
        let Ok(pkg) = pkg else { break };
        let _ = message::decode(pkg.body);
        let _ = HandshakeRequest::parse(pkg.body);
        let _ = HandshakeResponse::parse(pkg.body);
    }
    let _ = message::decode(bytes);
    let _ = message::decode_id(bytes);
    let _ = text::decode_lenient(bytes);
}

const SEEDS: &[&[u8]] = &[
    b"\x04\x00\x00\x1e\x01\x01\x00\x02{\"username\":\"a\",\"rid\":\"r\"}",
    b"\x04\x00\x00\x2e\x00\xac\x02\x1bgate.gateHandler.queryEntry{\"uid\":\"alice\"}",
    b"\x01\x00\x00\x4b{\"sys\":{\"type\":\"js-websocket\",\"version\":\"0.0.1\",\"rsa\":{},\"protoVersion\":0}}",
    b"\x03\x00\x00\x00\x02\x00\x00\x00",
    b"\x04\x00\x00\x05\x07\x00\x05{}",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        decode_everything(&bytes);
    }

    #[test]
    fn mutated_vectors_never_panic(
        seed in 0..SEEDS.len(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = SEEDS[seed].to_vec();
        for (at, value) in flips {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        let end = cut.index(bytes.len() + 1);
        decode_everything(&bytes[..end]);
        decode_everything(&bytes);
    }
}
