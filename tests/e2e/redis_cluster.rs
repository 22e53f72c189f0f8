//! A Redis Cluster under the chat: a master that dies is replaced by its replica and rooms keep
//! their members; what its asynchronous replication can lose is repaired by the membership
//! rounds.

use std::time::Duration;

use redis::AsyncCommands;
use serde_json::json;
use shaddock_client::Client;
use shaddock_e2e::{Server, TestConfig, eventually};
use shaddock_redis::{Redis, room_tag, slot, testing::LocalCluster};

use crate::support::{SEND, connect, enter, receives_push, stored_members, users};

/// Sends `text` from `from` until `to` receives it (at most `within`).
async fn chats(from: &Client, to: &mut Client, text: &str, within: Duration) -> bool {
    let started = std::time::Instant::now();
    while started.elapsed() < within {
        let body = json!({"rid": "room", "content": text, "from": "x", "target": "*"});
        if matches!(from.request(SEND, body).await, Ok(v) if v == json!({}))
            && receives_push(to, Duration::from_millis(500), |p| p.body["msg"] == text).await
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_redis_cluster_a_dead_master_is_replaced_by_its_replica_and_rooms_keep_their_members() {
    let mut redis = LocalCluster::start(3, 1).await;
    let config = TestConfig::with_urls("rediscluster", "", "nats://127.0.0.1:4222", &redis.url());
    let log = std::env::temp_dir().join(format!("{}-chat.log", config.namespace));
    let _chat = Server::start_logged("chat", "chat-server-1", &config, &log).await;
    let c1 = Server::start("connector", "connector-server-1", &config).await;
    let c2 = Server::start("connector", "connector-server-2", &config).await;
    let mut alice = connect(&c1.url()).await;
    let mut bob = connect(&c2.url()).await;
    enter(&alice, "alice", "room").await;
    enter(&bob, "bob", "room").await;
    assert!(chats(&alice, &mut bob, "before", Duration::from_secs(5)).await);

    // Kill the master that holds the room (SIGKILL, as a machine that dies).
    let key = format!("{}:channel:{}", config.namespace, room_tag("room"));
    let master = redis
        .master_of(slot(&key))
        .await
        .expect("a master holds the room");
    let replica = redis.replica_of(master).await.expect("the master has a replica");
    // What the master acknowledged has reached its replica (see below for what it may not).
    assert!(
        redis
            .wait_replicated(master, replica, Duration::from_secs(10))
            .await
    );
    redis.kill(master).await;
    assert!(
        redis.wait_until_master(replica, Duration::from_secs(15)).await,
        "the replica took over"
    );

    // The room kept its members: messages flow again, a newcomer sees everyone, nobody left.
    let failed_over = std::time::Instant::now();
    let resumed = chats(&alice, &mut bob, "after", Duration::from_secs(10)).await;
    let chat_log = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(resumed, "chat resumes; the chat server said:\n{chat_log}");
    println!(
        "chat resumed {:?} after the replica took over",
        failed_over.elapsed()
    );
    let live = redis.nodes[replica].url();
    assert_eq!(
        stored_members(&config, &live_seeds(&redis), "room").await,
        vec!["alice*room", "bob*room"]
    );
    let carol = connect(&c1.url()).await;
    assert_eq!(
        users(&enter(&carol, "carol", "room").await),
        vec!["alice", "bob", "carol"]
    );
    for p in bob.pushes_within(Duration::from_millis(500)).await {
        assert_ne!(p.route, "onLeave", "{p:?}");
    }

    // What asynchronous replication can lose: writes the old master acknowledged but had not
    // yet sent to its replica. Made here on purpose: bob's enter lost (he is missing) and a
    // leave lost (a ghost, stored like alice, whose session is gone).
    let mut conn = Redis::connect(&live, true).await.expect("the cluster answers");
    let alice_value: String = conn.hget(&key, "alice*room").await.expect("alice is stored");
    let _: i64 = conn.hdel(&key, "bob*room").await.unwrap();
    let _: i64 = conn.hset(&key, "ghost*room", &alice_value).await.unwrap();
    eventually(
        "the rounds put bob back and remove the ghost",
        Duration::from_secs(10),
        || async {
            let now = stored_members(&config, &live_seeds(&redis), "room").await;
            (now == ["alice*room", "bob*room", "carol*room"]).then_some(())
        },
    )
    .await;
    assert!(
        receives_push(&mut alice, Duration::from_secs(2), |p| p.route == "onLeave"
            && p.body["user"] == "ghost")
        .await,
        "the ghost's leave is announced"
    );
    assert!(!alice.is_closed() && !bob.is_closed());
}

/// The seeds of the nodes still running.
fn live_seeds(redis: &LocalCluster) -> String {
    let urls: Vec<String> = redis
        .nodes
        .iter()
        .filter(|n| n.is_running())
        .map(|n| n.url())
        .collect();
    urls.join(",")
}
