//! Helpers shared by the end-to-end tests.

use std::time::Duration;

use serde_json::{Value, json};
use shaddock_bus::Bus;
use shaddock_channel::{ChannelService, ChannelStore};
use shaddock_client::{Client, ClientOptions};
use shaddock_e2e::{TestConfig, eventually};
use shaddock_protocol::crc::pick_index;

pub const ENTER: &str = "connector.entryHandler.enter";
pub const SEND: &str = "chat.chatHandler.send";
pub const QUERY_ENTRY: &str = "gate.gateHandler.queryEntry";

pub async fn connect(url: &str) -> Client {
    Client::connect(url, ClientOptions::default())
        .await
        .expect("connect")
}

/// `enter`, retrying while the cluster is still forming (a bare `{"code":500}`).
pub async fn enter(client: &Client, username: &str, rid: &str) -> Value {
    eventually("the cluster has formed", Duration::from_secs(5), || async {
        let resp = client
            .request(ENTER, json!({"username": username, "rid": rid}))
            .await
            .expect("enter response");
        let forming = resp.get("code") == Some(&json!(500)) && resp.get("error").is_none();
        (!forming).then_some(resp)
    })
    .await
}

/// `enter` with `recover: true` (and the epoch and offset seen last, if any), retrying while
/// the cluster is still forming.
pub async fn enter_recovering(
    client: &Client,
    username: &str,
    rid: &str,
    since: Option<(&str, u64)>,
) -> Value {
    let mut body = json!({"username": username, "rid": rid, "recover": true});
    if let Some((epoch, offset)) = since {
        body["epoch"] = json!(epoch);
        body["offset"] = json!(offset);
    }
    eventually("the cluster has formed", Duration::from_secs(10), || async {
        let resp = client.request(ENTER, body.clone()).await.expect("enter response");
        let forming = resp.get("code") == Some(&json!(500));
        (!forming).then_some(resp)
    })
    .await
}

/// [`enter_recovering`] afresh; returns the room's position (epoch, offset) to recover from.
pub async fn enter_recovering_at(client: &Client, username: &str, rid: &str) -> (String, u64) {
    let answer = enter_recovering(client, username, rid, None).await;
    let (Some(epoch), Some(offset)) = (answer["epoch"].as_str(), answer["offset"].as_u64()) else {
        panic!("no position in {answer}");
    };
    (epoch.to_owned(), offset)
}

/// Waits (at most `within`) for a push `wanted` accepts, skipping the others.
pub async fn receives_push(
    client: &mut Client,
    within: Duration,
    wanted: impl Fn(&shaddock_client::Push) -> bool,
) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while let Some(p) = client
        .next_push(deadline.saturating_duration_since(tokio::time::Instant::now()))
        .await
    {
        if wanted(&p) {
            return true;
        }
    }
    false
}

/// The sorted user list of an enter response.
pub fn users(resp: &Value) -> Vec<String> {
    let mut u: Vec<String> = resp["users"]
        .as_array()
        .unwrap_or_else(|| panic!("no users in {resp}"))
        .iter()
        .map(|v| v.as_str().unwrap_or_default().to_owned())
        .collect();
    u.sort();
    u
}

/// The committed fuzz corpus of the connector's input path (`fuzz/corpus/connector_input`).
pub fn corpus() -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/connector_input");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    files.iter().filter_map(|p| std::fs::read(p).ok()).collect()
}

/// The uids the channel store holds for `room`.
pub async fn stored_members(config: &TestConfig, redis_url: &str, room: &str) -> Vec<String> {
    let store = ChannelStore::redis(redis_url, &config.namespace)
        .await
        .expect("redis");
    let svc = ChannelService::new(store, Bus::local(), &config.namespace, Duration::from_secs(1));
    let mut uids: Vec<String> = svc
        .channel(room)
        .members()
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.uid)
        .collect();
    uids.sort();
    uids
}

/// A room that `owner` serves among `servers` (sorted ids) and, if given, `then` serves among
/// `after`.
pub fn room_owned(prefix: &str, servers: &[&str], owner: &str, after: Option<(&[&str], &str)>) -> String {
    (0..10_000)
        .map(|i| format!("{prefix}-{i}"))
        .find(|r| {
            let now = pick_index(r, servers.len()).map(|i| servers[i]) == Some(owner);
            let later =
                after.is_none_or(|(list, then)| pick_index(r, list.len()).map(|i| list[i]) == Some(then));
            now && later
        })
        .expect("some room routes so")
}

/// Sends `text` from `from` to room `rid` (again after a failure) until `to` receives it;
/// false if it does not within `within`.
pub async fn eventually_said(
    from: &Client,
    to: &mut Client,
    rid: &str,
    text: &str,
    within: Duration,
) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    let said = |p: &shaddock_client::Push| p.route == "onChat" && p.body["msg"] == text;
    while tokio::time::Instant::now() < deadline {
        let body = json!({"rid": rid, "content": text, "from": "x", "target": "*"});
        let _ = from.request(SEND, body).await;
        if receives_push(to, Duration::from_millis(500), said).await {
            return true;
        }
    }
    false
}

/// The chat lines a recovering enter's answer gave back, in order; panics unless it recovered.
pub fn recovered_lines(back: &Value) -> Vec<String> {
    assert_eq!(back["recovered"], json!(true), "{back}");
    back["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter(|m| m["route"] == "onChat")
        .filter_map(|m| m["body"]["msg"].as_str().map(str::to_owned))
        .collect()
}

/// Asserts that `client` is dropped (closed, no kick) within `within`, and got no chat line
/// `text` before that.
pub async fn dropped_before(client: &mut Client, text: &str, within: Duration) {
    assert!(client.closed_within(within).await, "not dropped");
    assert_eq!(client.kick_reason(), None, "a drop, not a kick");
    let before_drop = client.pushes_within(Duration::from_millis(100)).await;
    assert!(
        !before_drop.iter().any(|p| p.body["msg"] == text),
        "{text:?} reached it before it was dropped: {before_drop:?}"
    );
}
