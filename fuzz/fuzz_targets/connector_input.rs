//! Everything the connector does with a client's frame before a handler runs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shaddock_protocol::handshake::HandshakeRequest;
use shaddock_protocol::{message, package, text, PackageType};

fuzz_target!(|data: &[u8]| {
    for pkg in package::decode_all(data) {
        let Ok(pkg) = pkg else { break };
        match pkg.kind {
            PackageType::Handshake => {
                let _ = HandshakeRequest::parse(pkg.body);
            }
            PackageType::Data => {
                if let Ok(m) = message::decode(pkg.body) {
                    let _ = text::decode_lenient(m.body);
                }
            }
            _ => {}
        }
    }
});
