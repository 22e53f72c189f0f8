//! Every key of the channel store, spelled here and nowhere else. All live under the
//! namespace (`<ns>`), so clusters (and tests) sharing one Redis never see each other:
//! - `<ns>:channels`: the set of channel names (a single Redis only);
//! - `<ns>:channel:{<name>}`: a hash `uid -> "<sid>#<incarnation>#<session>"` (Pomelo keeps
//!   `sid:uid` strings, which break on a `:` in a uid; a hash does not);
//! - `<ns>:sid:<sid>`: the channels frontend `sid` has members in, to purge it when it dies;
//! - `<ns>:sids`: the frontends that have members anywhere (a dead one is found here);
//! - `<ns>:epoch`: set once the store holds this cluster's membership (missing after a Redis
//!   restart without persistence); on a Redis Cluster one per master, `<ns>:epoch:{m<i>}`,
//!   since each master can lose its data alone.
//! - `<ns>:purged:{<name>}:<sid>`: what frontend `sid`'s members of channel `name` were
//!   purged from (a chat server's note, read by whichever owns the room when they come back);
//!   it expires.
//! - `<ns>:created:{<name>}`: on a Redis Cluster, a channel created without members (what
//!   `<ns>:channels` says on a single Redis: a set spanning all rooms has no place on a
//!   cluster, whose channels are found by a scan instead).
//!
//! A room's keys carry the room as their hash tag (`shaddock_redis::room_tag`, as the history's
//! keys do): on a cluster they share one slot, so a script over a room stays on one node.

use shaddock_redis::{glob_escape, room_tag, untag};

/// The keys of one namespace.
#[derive(Debug, Clone)]
pub struct Keys {
    ns: String,
}

impl Keys {
    pub fn new(namespace: &str) -> Self {
        Self {
            ns: namespace.to_owned(),
        }
    }

    pub fn channels(&self) -> String {
        format!("{}:channels", self.ns)
    }

    pub fn channel(&self, name: &str) -> String {
        format!("{}:channel:{}", self.ns, room_tag(name))
    }

    /// A channel created without members (Redis Cluster).
    pub fn created(&self, name: &str) -> String {
        format!("{}:created:{}", self.ns, room_tag(name))
    }

    /// The patterns that find every channel of the namespace on a cluster: its members' hashes
    /// and its created marks.
    pub fn channel_patterns(&self) -> [String; 2] {
        let ns = glob_escape(&self.ns);
        [format!("{ns}:channel:{{*}}"), format!("{ns}:created:{{*}}")]
    }

    /// The channel named by a key of [`Keys::channel_patterns`].
    pub fn channel_of_key<'k>(&self, key: &'k str) -> Option<&'k str> {
        let rest = key.strip_prefix(self.ns.as_str())?.strip_prefix(':')?;
        let tagged = rest
            .strip_prefix("channel:")
            .or_else(|| rest.strip_prefix("created:"))?;
        let tag = tagged.strip_prefix('{')?.strip_suffix('}')?;
        Some(untag(tag))
    }

    /// The note of the last purge of frontend `sid`'s members from channel `name`.
    pub fn purged(&self, name: &str, sid: &str) -> String {
        format!("{}:purged:{}:{sid}", self.ns, room_tag(name))
    }

    /// The channels of frontend `sid`.
    pub fn sid(&self, sid: &str) -> String {
        format!("{}:sid:{sid}", self.ns)
    }

    /// The frontends that have members.
    pub fn sids(&self) -> String {
        format!("{}:sids", self.ns)
    }

    pub fn epoch(&self) -> String {
        format!("{}:epoch", self.ns)
    }

    /// The epoch mark of the master whose slots `tag` falls in (Redis Cluster).
    pub fn epoch_tagged(&self, tag: &str) -> String {
        format!("{}:epoch:{tag}", self.ns)
    }
}

#[cfg(test)]
mod tests {
    use super::Keys;

    #[test]
    fn every_key_lives_under_the_namespace() {
        let k = Keys::new("ns");
        assert_eq!(k.channels(), "ns:channels");
        assert_eq!(k.channel("a:b*c"), "ns:channel:{a:b*c}");
        assert_eq!(k.created("lobby"), "ns:created:{lobby}");
        assert_eq!(k.sid("connector-1"), "ns:sid:connector-1");
        assert_eq!(k.sids(), "ns:sids");
        assert_eq!(k.epoch(), "ns:epoch");
    }

    #[test]
    fn a_channel_is_read_back_from_its_keys() {
        let k = Keys::new("n*s");
        for name in ["lobby", "", "~x", "a}b", "{x}"] {
            assert_eq!(k.channel_of_key(&k.channel(name)), Some(name));
            assert_eq!(k.channel_of_key(&k.created(name)), Some(name));
        }
        assert_eq!(k.channel_of_key("n*s:sid:x"), None);
        assert_eq!(k.channel_patterns()[0], "n\\*s:channel:{*}");
    }
}
