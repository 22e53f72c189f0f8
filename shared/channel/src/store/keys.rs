//! Every key of the channel store, spelled here and nowhere else. All live under the
//! namespace (`<ns>`), so clusters (and tests) sharing one Redis never see each other:
//! - `<ns>:channels`: the set of channel names;
//! - `<ns>:channel:<name>`: a hash `uid -> "<sid>#<incarnation>#<session>"` (Pomelo keeps
//!   `sid:uid` strings, which break on a `:` in a uid; a hash does not);
//! - `<ns>:sid:<sid>`: the channels frontend `sid` has members in, to purge it when it dies;
//! - `<ns>:sids`: the frontends that have members anywhere (a dead one is found here);
//! - `<ns>:epoch`: set once the store holds this cluster's membership (missing after a Redis
//!   restart without persistence).

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
        format!("{}:channel:{name}", self.ns)
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
}

#[cfg(test)]
mod tests {
    use super::Keys;

    #[test]
    fn every_key_lives_under_the_namespace() {
        let k = Keys::new("ns");
        assert_eq!(k.channels(), "ns:channels");
        assert_eq!(k.channel("a:b*c"), "ns:channel:a:b*c");
        assert_eq!(k.sid("connector-1"), "ns:sid:connector-1");
        assert_eq!(k.sids(), "ns:sids");
        assert_eq!(k.epoch(), "ns:epoch");
    }
}
