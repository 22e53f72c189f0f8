//! Routing: `crc32(key) % n` over the servers of a type sorted by id, as Pomelo's dispatcher
//! does over its (registration-ordered) list. Sorting makes every server agree.

/// Picks the server for `key` among `servers` (already sorted by id).
pub fn pick<'a, S>(key: &str, servers: &'a [S]) -> Option<&'a S> {
    shaddock_protocol::crc::pick_index(key, servers.len()).map(|i| &servers[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_key_picks_the_same_server() {
        let list = ["chat-1", "chat-2", "chat-3"];
        // abs(crc32("bob")) = 171200192, % 3 = 2
        assert_eq!(pick("bob", &list), Some(&"chat-3"));
        assert!(pick::<&str>("bob", &[]).is_none());
    }
}
