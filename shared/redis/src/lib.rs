//! One connection to Redis for the chat server's stores (channels, history): a single
//! instance, the default, or a Redis Cluster.
//!
//! # The rule that makes a cluster work
//! Every key of one room carries the room as its hash tag ([`room_tag`]): all of a room's keys
//! live in one slot, so a script over a room never spans two nodes. Nothing of a room is kept
//! in a key that spans all rooms; what must be found across rooms is found by [`Redis::scan`],
//! which visits every master.
//!
//! # Addresses
//! `redis_url` names one server (`redis://host:6379`) or, comma-separated, the seed nodes of a
//! cluster (`redis://a:7000,redis://b:7000`). A list, or `cluster = true` with one seed, makes a
//! cluster connection: it learns the slots from the seeds, follows `MOVED` and refreshes the
//! slot map when a master fails over to its replica.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};

#[cfg(feature = "testing")]
pub mod testing;

/// How many slots a Redis Cluster has.
pub const SLOTS: u16 = 16384;

/// A connection to a single Redis or to a Redis Cluster. Cheap to clone: clones share the
/// connection, which reconnects by itself; commands time out.
#[derive(Clone)]
pub enum Redis {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Redis::Single(_) => "Redis::Single",
            Redis::Cluster(_) => "Redis::Cluster",
        })
    }
}

/// The seeds of `url`: one address, or the comma-separated nodes of a cluster.
pub fn seeds(url: &str) -> Vec<&str> {
    url.split(',').map(str::trim).filter(|s| !s.is_empty()).collect()
}

impl Redis {
    /// Connects to `url` (see the crate doc): a cluster when `cluster` is set or `url` lists
    /// more than one node.
    pub async fn connect(url: &str, cluster: bool) -> RedisResult<Self> {
        let seeds = seeds(url);
        if cluster || seeds.len() > 1 {
            let client = redis::cluster::ClusterClient::builder(seeds)
                .connection_timeout(Duration::from_secs(2))
                .response_timeout(Duration::from_secs(2))
                // A failover takes a node timeout and an election: retry through it.
                .retries(6)
                .min_retry_wait(100)
                .max_retry_wait(1000)
                .build()?;
            return Ok(Self::Cluster(client.get_async_connection().await?));
        }
        let client = redis::Client::open(url)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        Ok(Self::Single(
            client.get_connection_manager_with_config(config).await?,
        ))
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, Redis::Cluster(_))
    }

    /// The first slot of each master's ranges, one per master (a single Redis: `[0]`).
    pub async fn masters(&self) -> RedisResult<Vec<(u16, u16)>> {
        let Redis::Cluster(conn) = self else {
            return Ok(vec![(0, SLOTS - 1)]);
        };
        let answer = conn
            .clone()
            .route_command(
                redis::cmd("CLUSTER").arg("SLOTS").clone(),
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
            )
            .await?;
        Ok(slot_ranges(&answer))
    }

    /// Every key matching `pattern` (a glob: escape with [`glob_escape`]), on every master.
    /// For what is rare (an operator's listing, a sweep), never for a message's path.
    pub async fn scan(&self, pattern: &str) -> RedisResult<Vec<String>> {
        let mut found = Vec::new();
        let nodes: Vec<Option<u16>> = match self {
            Redis::Single(_) => vec![None],
            Redis::Cluster(_) => {
                let mut ranges = self.masters().await?;
                // A master may serve several ranges: visit each master once.
                ranges.sort_unstable();
                let mut seen = Vec::new();
                let mut firsts = Vec::new();
                for (start, _) in ranges {
                    let id = self.node_of(start).await?;
                    if !seen.contains(&id) {
                        seen.push(id);
                        firsts.push(Some(start));
                    }
                }
                firsts
            }
        };
        for node in nodes {
            let mut cursor = 0u64;
            loop {
                let mut cmd = redis::cmd("SCAN");
                cmd.arg(cursor).arg("MATCH").arg(pattern).arg("COUNT").arg(1000);
                let value = self.on_node(node, cmd).await?;
                let (next, keys): (u64, Vec<String>) = redis::from_redis_value(value)?;
                found.extend(keys);
                cursor = next;
                if cursor == 0 {
                    break;
                }
            }
        }
        found.sort_unstable();
        found.dedup();
        Ok(found)
    }

    /// The id of the master serving `slot` (its `CLUSTER MYID`).
    async fn node_of(&self, slot: u16) -> RedisResult<String> {
        let value = self
            .on_node(Some(slot), redis::cmd("CLUSTER").arg("MYID").clone())
            .await?;
        Ok(redis::from_redis_value(value)?)
    }

    /// Runs `cmd` on the master of `slot` (a single Redis: on it).
    async fn on_node(&self, slot: Option<u16>, cmd: Cmd) -> RedisResult<Value> {
        match (self, slot) {
            (Redis::Cluster(conn), Some(slot)) => {
                let route = Route::new(slot, SlotAddr::Master);
                conn.clone()
                    .route_command(
                        cmd,
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route)),
                    )
                    .await
            }
            (conn, _) => cmd.query_async(&mut conn.clone()).await,
        }
    }
}

impl ConnectionLike for Redis {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Redis::Single(c) => c.req_packed_command(cmd),
            Redis::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Redis::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Redis::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Redis::Single(c) => c.get_db(),
            Redis::Cluster(c) => c.get_db(),
        }
    }
}

/// The `(first, last)` slots of each range in a `CLUSTER SLOTS` answer.
fn slot_ranges(answer: &Value) -> Vec<(u16, u16)> {
    let Value::Array(ranges) = answer else {
        return Vec::new();
    };
    ranges
        .iter()
        .filter_map(|range| match range {
            Value::Array(items) => match (items.first(), items.get(1)) {
                (Some(Value::Int(a)), Some(Value::Int(b))) => {
                    Some((u16::try_from(*a).ok()?, u16::try_from(*b).ok()?))
                }
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// The hash tag of a room: its name, unless that is empty or starts with `~`, which get a `~`
/// in front. One-to-one, and never empty (an empty tag `{}` would not be a tag at all, and a
/// room's keys would fall in different slots).
pub fn room_tag(room: &str) -> String {
    if room.is_empty() || room.starts_with('~') {
        format!("{{~{room}}}")
    } else {
        format!("{{{room}}}")
    }
}

/// The room of a tag made by [`room_tag`] (without its braces).
pub fn untag(tag: &str) -> &str {
    tag.strip_prefix('~').unwrap_or(tag)
}

/// The slot of `key`, as Redis Cluster computes it (CRC16 of the hash tag, or of the key).
pub fn slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let hashed = bytes
        .iter()
        .position(|b| *b == b'{')
        .and_then(|open| {
            let rest = &bytes[open + 1..];
            let close = rest.iter().position(|b| *b == b'}')?;
            (close > 0).then(|| &rest[..close])
        })
        .unwrap_or(bytes);
    crc16::State::<crc16::XMODEM>::calculate(hashed) % SLOTS
}

/// A hash tag (`{…}`) whose keys fall in `first..=last`: one key per master, for a mark that
/// must be on every node.
pub fn tag_in(first: u16, last: u16) -> Option<String> {
    (0u32..1_000_000)
        .map(|i| format!("{{m{i}}}"))
        .find(|tag| (first..=last).contains(&slot(tag)))
}

/// `text` with the glob characters of `SCAN MATCH` escaped.
pub fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_those_redis_computes() {
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(slot("123456789"), 12739);
        assert_eq!(slot("foo"), 12182);
        assert_eq!(slot("{user1000}.following"), slot("{user1000}.followers"));
        assert_eq!(slot("foo{}{bar}"), slot("foo{}{bar}"));
        assert_ne!(
            slot("foo{}{bar}"),
            slot("bar"),
            "an empty first tag hashes the whole key"
        );
        assert_eq!(slot("foo{{bar}}zap"), slot("{bar"));
    }

    #[test]
    fn every_key_of_a_room_falls_in_one_slot_whatever_its_name() {
        for room in ["", "~", "~x", "lobby", "a}b", "{x}", "a:b*c", "房间"] {
            let tag = room_tag(room);
            assert_eq!(
                slot(&format!("ns:channel:{tag}")),
                slot(&format!("ns:history:{tag}")),
                "{room:?}"
            );
            let inner = &tag[1..tag.len() - 1];
            assert_eq!(untag(inner), room);
        }
        assert_ne!(room_tag(""), room_tag("~"));
        assert_ne!(room_tag("~"), room_tag("~~"));
    }

    #[test]
    fn a_tag_is_found_for_any_range_of_slots() {
        for (a, b) in [(0, 5460), (5461, 10922), (10923, 16383), (100, 100)] {
            let tag = tag_in(a, b).unwrap();
            assert!((a..=b).contains(&slot(&format!("ns:epoch:{tag}"))));
        }
    }

    #[test]
    fn glob_characters_are_escaped() {
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
        assert_eq!(
            seeds("redis://a:1, redis://b:2,"),
            vec!["redis://a:1", "redis://b:2"]
        );
    }
}
