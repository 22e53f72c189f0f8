//! Routing: `crc32(key) % n` over the servers of a type sorted by id, as Pomelo's dispatcher
//! does over its (registration-ordered) list. Sorting makes every server agree.

use crate::registry::ServerInfo;

/// Picks the server for `key` among `servers` (already sorted by id).
pub fn pick<'a>(key: &str, servers: &'a [ServerInfo]) -> Option<&'a ServerInfo> {
    shaddock_protocol::crc::pick_index(key, servers.len()).map(|i| &servers[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(id: &str) -> ServerInfo {
        ServerInfo {
            id: id.into(),
            server_type: "chat".into(),
            host: "127.0.0.1".into(),
            client_port: None,
            incarnation: 0,
        }
    }

    #[test]
    fn the_same_key_picks_the_same_server() {
        let list = vec![s("chat-1"), s("chat-2"), s("chat-3")];
        // abs(crc32("bob")) = 171200192, % 3 = 2
        assert_eq!(pick("bob", &list).unwrap().id, "chat-3");
        assert!(pick("bob", &[]).is_none());
    }
}
