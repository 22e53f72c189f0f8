//! Faults: NATS and Redis restarts (private instances), SIGTERM, a chat server lost for good,
//! a slow client. After each, channel membership in the store equals the live sessions and
//! everyone still connected receives what is sent after recovery.

use std::time::Duration;

use serde_json::{Value, json};
use shaddock_bus::envelope::encode_push;
use shaddock_bus::{Bus, PushNo, subject};
use shaddock_client::Client;
use shaddock_e2e::{PrivateServer, Server, TestConfig, eventually, eventually_true};
use shaddock_history::{Audience, History, Retention};

use crate::support::{
    SEND, connect, dropped_before, enter, enter_recovering, enter_recovering_at, receives_push,
    recovered_lines, room_owned, stored_members, users,
};

/// Sends `text` to the room until the cluster answers `{}` (it may be recovering).
async fn send_until_ok(client: &Client, room: &str, text: &str, within: Duration) -> Vec<Value> {
    let answers = parking_lot::Mutex::new(Vec::new());
    eventually(&format!("{text:?} is accepted"), within, || async {
        let resp = client
            .request(
                SEND,
                json!({"rid": room, "content": text, "from": "x", "target": "*"}),
            )
            .await
            .expect("an answer, never a hang");
        let ok = resp == json!({});
        answers.lock().push(resp);
        ok.then_some(())
    })
    .await;
    answers.into_inner()
}

/// Waits for an onChat with `text`.
async fn receives(client: &mut Client, text: &str) -> bool {
    let wanted = |p: &shaddock_client::Push| p.route == "onChat" && p.body["msg"] == json!(text);
    receives_push(client, Duration::from_secs(5), wanted).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_restart_fails_requests_during_the_gap_and_then_everything_works_again() {
    let mut nats = PrivateServer::nats().await;
    let config = TestConfig::with_urls("natsfault", "", &nats.url(), "redis://127.0.0.1:6379");
    let mut chat = Server::start("chat", "chat-server-1", &config).await;
    let mut conn = Server::start("connector", "connector-server-1", &config).await;
    let alice = connect(&conn.url()).await;
    let mut bob = connect(&conn.url()).await;
    enter(&alice, "alice", "room").await;
    enter(&bob, "bob", "room").await;

    nats.stop().await;
    let during = alice
        .request(
            SEND,
            json!({"rid": "room", "content": "lost", "from": "alice", "target": "*"}),
        )
        .await
        .expect("an answer, never a hang");
    assert_eq!(during, json!({"code": 500}));

    nats.restart().await;
    send_until_ok(&alice, "room", "after nats", Duration::from_secs(20)).await;
    assert!(
        receives(&mut bob, "after nats").await,
        "bob gets messages after the restart"
    );
    assert!(chat.is_running() && conn.is_running(), "no process exits");
    assert_eq!(
        stored_members(&config, "redis://127.0.0.1:6379", "room").await,
        vec!["alice*room", "bob*room"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_fails_enters_cleanly_and_keeps_the_rooms() {
    let mut redis = PrivateServer::redis().await;
    let config = TestConfig::with_urls("redisfault", "", "nats://127.0.0.1:4222", &redis.url());
    let mut chat = Server::start("chat", "chat-server-1", &config).await;
    let conn = Server::start("connector", "connector-server-1", &config).await;
    let alice = connect(&conn.url()).await;
    assert_eq!(users(&enter(&alice, "alice", "room").await), vec!["alice"]);

    redis.stop().await;
    let bob = connect(&conn.url()).await;
    let during = bob
        .request(
            "connector.entryHandler.enter",
            json!({"username": "bob", "rid": "room"}),
        )
        .await
        .expect("an answer, never a hang");
    assert_eq!(during["code"], json!(500), "{during}");

    redis.restart().await;
    let resp = eventually("bob can enter again", Duration::from_secs(15), || async {
        let resp = enter(&bob, "bob", "room").await;
        resp.get("users").is_some().then_some(resp)
    })
    .await;
    assert_eq!(
        users(&resp),
        vec!["alice", "bob"],
        "alice is still in the room after the restart"
    );
    assert!(chat.is_running());
    assert_eq!(
        stored_members(&config, &redis.url(), "room").await,
        vec!["alice*room", "bob*room"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_a_connector_its_users_are_kicked_and_leave_their_rooms_after_the_resume_grace() {
    let config = TestConfig::new("sigterm", "[resume]\ngrace_ms = 1000\n");
    let _chat = Server::start("chat", "chat-server-1", &config).await;
    let mut c1 = Server::start("connector", "connector-server-1", &config).await;
    let c2 = Server::start("connector", "connector-server-2", &config).await;
    let gate = Server::start("gate", "gate-server-1", &config).await;
    let alice = connect(&c1.url()).await;
    let mut bob = connect(&c2.url()).await;
    enter(&alice, "alice", "room").await;
    enter(&bob, "bob", "room").await;

    let exited = c1.terminate(Duration::from_secs(12)).await;
    assert_eq!(
        exited,
        Some(true),
        "the connector exits cleanly within its grace period"
    );
    assert!(alice.closed_within(Duration::from_secs(2)).await);
    assert_eq!(alice.kick_reason().as_deref(), Some("reconnect"));
    // Her place is held for the resume grace (she may come back), then she leaves.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut left = false;
    while let Some(p) = bob
        .next_push(deadline.saturating_duration_since(tokio::time::Instant::now()))
        .await
    {
        if p.route == "onLeave" && p.body["user"] == json!("alice") {
            left = true;
            break;
        }
    }
    assert!(left, "bob hears that alice left");
    // The gate no longer sends anyone to the stopped connector.
    for name in ["a", "b", "c", "d", "e", "f"] {
        let client = connect(&gate.url()).await;
        let entry = client
            .request(crate::support::QUERY_ENTRY, json!({"uid": name}))
            .await
            .unwrap();
        assert_eq!(entry["port"], json!(c2.client_port.unwrap()), "{name}");
    }
    assert_eq!(
        stored_members(&config, "redis://127.0.0.1:6379", "room").await,
        vec!["bob*room"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_a_chat_server_dies_for_good_another_takes_its_rooms_over_from_redis() {
    let config = TestConfig::new("takeover", "");
    let mut chat1 = Server::start("chat", "chat-server-1", &config).await;
    let _chat2 = Server::start("chat", "chat-server-2", &config).await;
    let conn = Server::start("connector", "connector-server-1", &config).await;
    // Rooms on both chat servers: a handful of rooms, two members each.
    let mut pairs = Vec::new();
    for r in 0..6 {
        let room = format!("room{r}");
        let a = connect(&conn.url()).await;
        let b = connect(&conn.url()).await;
        enter(&a, "a", &room).await;
        enter(&b, "b", &room).await;
        pairs.push((room, a, b));
    }
    chat1.kill().await;
    for (room, a, b) in pairs.iter_mut() {
        let text = format!("after takeover {room}");
        send_until_ok(a, room, &text, Duration::from_secs(10)).await;
        assert!(receives(b, &text).await, "{room}: pushes resume");
        assert_eq!(
            stored_members(&config, "redis://127.0.0.1:6379", room).await,
            vec![format!("a*{room}"), format!("b*{room}")]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_closed_and_slows_nobody() {
    let config = TestConfig::new("slow", "[limits]\nsend_queue = 16\nrequests_per_second = 0\n");
    let _chat = Server::start("chat", "chat-server-1", &config).await;
    let conn = Server::start("connector", "connector-server-1", &config).await;

    // The slow client: a raw socket that handshakes, enters, then never reads again.
    use futures_util::SinkExt;
    use shaddock_client::tokio_tungstenite::{connect_async, tungstenite::Message};
    let (mut slow, _) = connect_async(conn.url()).await.unwrap();
    let hs = shaddock_protocol::handshake::HandshakeRequest::js_client_body(None);
    let pkg = |kind, body: &[u8]| shaddock_protocol::package::encoded(kind, body).unwrap();
    slow.send(Message::Binary(pkg(
        shaddock_protocol::PackageType::Handshake,
        hs.as_bytes(),
    )))
    .await
    .unwrap();
    slow.send(Message::Binary(pkg(
        shaddock_protocol::PackageType::HandshakeAck,
        b"",
    )))
    .await
    .unwrap();
    let enter_pkg = shaddock_protocol::message::data_package(
        shaddock_protocol::MessageType::Request,
        1,
        Some(&shaddock_protocol::RouteRef::Name(
            "connector.entryHandler.enter".into(),
        )),
        br#"{"username":"slow","rid":"room"}"#,
    )
    .unwrap();
    slow.send(Message::Binary(enter_pkg)).await.unwrap();

    let sender = connect(&conn.url()).await;
    let mut fast = connect(&conn.url()).await;
    enter(&sender, "sender", "room").await;
    enter(&fast, "fast", "room").await;

    let big = "x".repeat(16 * 1024);
    let n = 400;
    for i in 0..n {
        let resp = sender
            .request(
                SEND,
                json!({"rid": "room", "content": format!("{i} {big}"), "from": "sender", "target": "*"}),
            )
            .await
            .unwrap();
        assert_eq!(resp, json!({}));
    }
    let mut got = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while got < n {
        match fast
            .next_push(deadline.saturating_duration_since(tokio::time::Instant::now()))
            .await
        {
            Some(p) if p.route == "onChat" => got += 1,
            Some(_) => {}
            None => break,
        }
    }
    assert_eq!(got, n, "the fast client got every message");

    // The slow client's connection was closed by the server: reading drains what the kernel
    // buffered, then ends.
    use futures_util::StreamExt;
    let closed = tokio::time::timeout(Duration::from_secs(15), async {
        while let Some(frame) = slow.next().await {
            if frame.is_err() || matches!(frame, Ok(Message::Close(_))) {
                break;
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the slow client was never closed");
    // It left the room.
    eventually_true(
        "the slow client left the room",
        Duration::from_secs(5),
        || async {
            stored_members(&config, "redis://127.0.0.1:6379", "room").await
                == vec!["fast*room", "sender*room"]
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_loses_its_data_is_told_again_who_is_where() {
    // A Redis without persistence, as the shared one here: a restart forgets every room.
    let mut redis = PrivateServer::redis_without_data().await;
    let config = TestConfig::with_urls("redisloss", "", "nats://127.0.0.1:4222", &redis.url());
    let _chat = Server::start("chat", "chat-server-1", &config).await;
    let conn = Server::start("connector", "connector-server-1", &config).await;
    let alice = connect(&conn.url()).await;
    let mut bob = connect(&conn.url()).await;
    enter(&alice, "alice", "room").await;
    enter(&bob, "bob", "room").await;

    redis.stop().await;
    redis.restart().await;
    // The rooms come back from the connectors' sessions, and messages flow again.
    eventually_true("membership comes back", Duration::from_secs(10), || async {
        stored_members(&config, &redis.url(), "room").await == vec!["alice*room", "bob*room"]
    })
    .await;
    send_until_ok(&alice, "room", "after the loss", Duration::from_secs(5)).await;
    assert!(receives(&mut bob, "after the loss").await);
    // Nobody was told of a join that did not happen.
    let adds = bob.pushes_within(Duration::from_millis(300)).await;
    assert!(adds.iter().all(|p| p.route != "onAdd"), "{adds:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_closes_while_entering_leaves_no_member_behind() {
    let config = TestConfig::new("enterclose", "");
    let _chat = Server::start("chat", "chat-server-1", &config).await;
    let conn = Server::start("connector", "connector-server-1", &config).await;
    for i in 0..20 {
        let client = connect(&conn.url()).await;
        let body = serde_json::to_vec(&json!({"username": format!("quick{i}"), "rid": "room"})).unwrap();
        let pkg = shaddock_protocol::message::data_package(
            shaddock_protocol::MessageType::Request,
            1,
            Some(&shaddock_protocol::RouteRef::Name(
                "connector.entryHandler.enter".into(),
            )),
            &body,
        )
        .unwrap();
        client.send_raw(pkg).unwrap();
        client.close();
    }
    eventually_true(
        "no member outlives its session",
        Duration::from_secs(5),
        || async {
            stored_members(&config, "redis://127.0.0.1:6379", "room")
                .await
                .is_empty()
        },
    )
    .await;
}

/// Client connections a nats-server node holds now (its `/connz`).
async fn nats_clients(node: &PrivateServer) -> u64 {
    let (_, body) = shaddock_e2e::http(node.monitor_port.unwrap(), "GET", "/connz", None, None).await;
    let start = body.find('{').unwrap_or(0);
    serde_json::from_str::<Value>(&body[start..])
        .ok()
        .and_then(|v| v["num_connections"].as_u64())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_nats_cluster_a_node_that_dies_loses_nobody_and_pushes_resume_within_two_seconds() {
    let mut nodes = PrivateServer::nats_cluster(3).await;
    let urls: Vec<String> = nodes.iter().map(PrivateServer::url).collect();
    let config = TestConfig::with_urls("natscluster", "", &urls.join(","), "redis://127.0.0.1:6379");
    let chat = Server::start("chat", "chat-server-1", &config).await;
    let c1 = Server::start("connector", "connector-server-1", &config).await;
    let c2 = Server::start("connector", "connector-server-2", &config).await;
    let alice = connect(&c1.url()).await;
    let mut bob = connect(&c2.url()).await;
    enter(&alice, "alice", "room").await;
    enter(&bob, "bob", "room").await;
    send_until_ok(&alice, "room", "before", Duration::from_secs(5)).await;
    assert!(receives(&mut bob, "before").await);

    // Kill the node that holds the most of our servers' connections.
    let mut busiest = 0;
    let mut most = 0;
    for (i, node) in nodes.iter().enumerate() {
        let n = nats_clients(node).await;
        if n > most {
            (busiest, most) = (i, n);
        }
    }
    assert!(most > 0, "the servers are connected to some node");
    nodes[busiest].stop().await;

    // Pushes resume within 2 s: the servers fail over to the other nodes. A push published
    // while Bob's connector was still reconnecting is lost (Bob did not ask to recover), so
    // Alice keeps sending and any of hers that reaches Bob counts.
    let killed = std::time::Instant::now();
    let mut delivered = false;
    let mut n = 0;
    while killed.elapsed() < Duration::from_secs(2) && !delivered {
        n += 1;
        let text = format!("after {n}");
        let answer = alice
            .request(
                SEND,
                json!({"rid": "room", "content": text, "from": "alice", "target": "*"}),
            )
            .await;
        if matches!(&answer, Ok(v) if *v == json!({})) {
            delivered = receives_push(&mut bob, Duration::from_millis(300), |p| {
                p.route == "onChat" && p.body["msg"].as_str().is_some_and(|m| m.starts_with("after "))
            })
            .await;
        } else {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert!(delivered, "no message got through within 2 s of the node's death");
    println!("a push got through {:?} after the node died", killed.elapsed());
    // Nobody lost membership: nobody heard a leave, the store and a newcomer see both.
    for p in bob.pushes_within(Duration::from_millis(1500)).await {
        assert_ne!(p.route, "onLeave", "{p:?}");
    }
    let carol = connect(&c1.url()).await;
    assert_eq!(
        users(&enter(&carol, "carol", "room").await),
        vec!["alice", "bob", "carol"]
    );
    assert!(!alice.is_closed() && !bob.is_closed());
    drop(chat);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_restart_drops_a_connectors_recovering_clients_to_recover_and_keeps_the_others() {
    // What was on its way to a connector when NATS went away is gone, and nothing tells its
    // clients: a recovering one is dropped (no kick) so that it comes back and recovers.
    let mut nats = PrivateServer::nats().await;
    let config = TestConfig::with_urls("natsdrop", "", &nats.url(), "redis://127.0.0.1:6379");
    let _chat = Server::start("chat", "chat-server-1", &config).await;
    let conn = Server::start("connector", "connector-server-1", &config).await;
    let alice = connect(&conn.url()).await;
    let carol = connect(&conn.url()).await;
    let answer = enter_recovering(&alice, "alice", "room", None).await;
    assert!(answer.get("epoch").is_some(), "{answer}");
    enter(&carol, "carol", "room").await;

    nats.stop().await;
    nats.restart().await;
    assert!(
        alice.closed_within(Duration::from_secs(10)).await,
        "alice was not dropped"
    );
    assert_eq!(alice.kick_reason(), None, "a drop, not a kick");
    assert!(!carol.is_closed(), "a stock client stays");
}

/// A proxy to the shared NATS, and `config` for a server that reaches NATS through it.
async fn through_a_proxy(config: &TestConfig) -> (shaddock_e2e::proxy::TcpProxy, TestConfig) {
    let proxy = shaddock_e2e::proxy::TcpProxy::start("127.0.0.1:4222").await;
    let beside = config.beside(&format!("nats://127.0.0.1:{}", proxy.port));
    (proxy, beside)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn news_a_chat_server_sent_as_its_nats_connection_died_is_told_again_once_it_is_back() {
    // Bob's connector is paused past the lapse and purged (alice hears him leave); it comes
    // back and he is put back, but the chat server's onAdd dies with its NATS connection.
    // Nothing else tells alice: back, the chat server tells the room its latest news again.
    let config = TestConfig::new("newsloss", "");
    let (proxy, through_proxy) = through_a_proxy(&config).await;
    let _chat = Server::start("chat", "chat-server-1", &through_proxy).await;
    let conn1 = Server::start("connector", "connector-server-1", &config).await;
    let conn2 = Server::start("connector", "connector-server-2", &config).await;
    let mut alice = connect(&conn1.url()).await;
    let bob = connect(&conn2.url()).await;
    enter(&alice, "alice", "room").await;
    enter(&bob, "bob", "room").await;
    let news =
        |route: &'static str| move |p: &shaddock_client::Push| p.route == route && p.body["user"] == "bob";
    assert!(receives_push(&mut alice, Duration::from_secs(5), news("onAdd")).await);
    let bob_stored = || async {
        stored_members(&config, "redis://127.0.0.1:6379", "room")
            .await
            .iter()
            .any(|m| m.starts_with("bob"))
    };

    conn2.signal("STOP");
    eventually_true("bob's connector is purged", Duration::from_secs(10), || async {
        !bob_stored().await
    })
    .await;
    assert!(receives_push(&mut alice, Duration::from_secs(5), news("onLeave")).await);
    proxy.swallow_sent();
    conn2.signal("CONT");
    eventually_true("bob is put back", Duration::from_secs(10), bob_stored).await;
    // What the chat server sent meanwhile (bob's onAdd, right after the store write) is gone
    // with the connection.
    tokio::time::sleep(Duration::from_millis(500)).await;
    proxy.cut();
    assert!(
        receives_push(&mut alice, Duration::from_secs(10), news("onAdd")).await,
        "alice never heard bob come back"
    );
    assert!(!bob.is_closed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn news_lost_on_its_way_to_a_connector_is_told_again_once_its_connection_is_back() {
    // Dave's onAdd is lost on its way to alice's connector (its NATS connection dies with it
    // unsent); the chat server lost nothing. Back, the connector asks for the latest news.
    let config = TestConfig::new("newsdown", "");
    let (proxy, through_proxy) = through_a_proxy(&config).await;
    let _chat = Server::start("chat", "chat-server-1", &config).await;
    let conn1 = Server::start("connector", "connector-server-1", &through_proxy).await;
    let conn2 = Server::start("connector", "connector-server-2", &config).await;
    let mut alice = connect(&conn1.url()).await;
    let bob = connect(&conn2.url()).await;
    let dave = connect(&conn2.url()).await;
    enter(&alice, "alice", "room").await;
    enter(&bob, "bob", "room").await;
    let added =
        |who: &'static str| move |p: &shaddock_client::Push| p.route == "onAdd" && p.body["user"] == who;
    assert!(receives_push(&mut alice, Duration::from_secs(5), added("bob")).await);

    proxy.swallow_received();
    let answer = enter(&dave, "dave", "room").await;
    assert_eq!(users(&answer), ["alice", "bob", "dave"]);
    tokio::time::sleep(Duration::from_millis(200)).await;
    proxy.cut();
    assert!(
        receives_push(&mut alice, Duration::from_secs(10), added("dave")).await,
        "alice never heard dave come in"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_message_lost_with_its_chat_servers_nats_connection_is_recovered_by_recovering_members() {
    // Only the chat server's connection dies, with carol's message in it: the connector lost
    // nothing itself. Its recovering member is dropped (no kick) and gets it back; the stock
    // one stays.
    let config = TestConfig::new("pushloss", "");
    let (proxy, through_proxy) = through_a_proxy(&config).await;
    let _chat = Server::start("chat", "chat-server-1", &through_proxy).await;
    let conn = Server::start("connector", "connector-server-1", &config).await;
    let mut alice = connect(&conn.url()).await;
    let carol = connect(&conn.url()).await;
    enter(&carol, "carol", "room").await;
    let (epoch, offset) = enter_recovering_at(&alice, "alice", "room").await;

    proxy.swallow_sent();
    let said = json!({"rid": "room", "content": "lost", "from": "carol", "target": "*"});
    // Its answer is lost too: carol's request times out.
    let _ = tokio::time::timeout(Duration::from_millis(500), carol.request(SEND, said)).await;
    proxy.cut();
    send_until_ok(&carol, "room", "after", Duration::from_secs(10)).await;
    // Said after the loss: it must not reach alice before she is dropped, or her client would
    // recover from past what was lost.
    dropped_before(&mut alice, "after", Duration::from_secs(10)).await;
    assert!(!carol.is_closed(), "a stock client stays");

    let alice = connect(&conn.url()).await;
    let back = enter_recovering(&alice, "alice", "room", Some((&epoch, offset))).await;
    let lines = recovered_lines(&back);
    assert_eq!(lines.first().map(String::as_str), Some("lost"), "{back}");
    assert!(
        lines.len() > 1 && lines[1..].iter().all(|m| m == "after"),
        "{back}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_missing_from_its_senders_numbering_drops_the_recovering_members_before_the_next() {
    // Whatever lost it (a connection dropped with it queued, an overflowing subscription),
    // the push after a gap must not reach a recovering member: her client would recover from
    // past what was lost. Here the sender is the test, numbering 1 then 3.
    let config = TestConfig::new("pushgap", "");
    let _chat = Server::start("chat", "chat-server-1", &config).await;
    let conn = Server::start("connector", "connector-server-1", &config).await;
    let mut alice = connect(&conn.url()).await;
    let mut carol = connect(&conn.url()).await;
    enter(&carol, "carol", "room").await;
    enter_recovering(&alice, "alice", "room", None).await;
    let _ = alice.pushes_within(Duration::from_millis(200)).await;
    let _ = carol.pushes_within(Duration::from_millis(200)).await;

    let sender = Bus::connect_nats("127.0.0.1:4222", "test-sender").await.unwrap();
    let to = subject::server(&config.namespace, "connector-server-1");
    let uids = ["alice*room".to_owned(), "carol*room".to_owned()];
    let push = |msg: &str, n| {
        let body = json!({"msg": msg, "from": "test", "target": "*"}).to_string();
        encode_push(
            "onChat",
            body.as_bytes(),
            &uids,
            None,
            Some(PushNo { from: 77, n }),
        )
        .unwrap()
    };
    sender.publish(to.clone(), push("one", 1)).await.unwrap();
    sender.publish(to, push("three", 3)).await.unwrap();
    sender.flush().await.unwrap();

    let msgs = |pushes: Vec<shaddock_client::Push>| -> Vec<Value> {
        pushes
            .into_iter()
            .filter(|p| p.route == "onChat")
            .map(|p| p.body["msg"].clone())
            .collect()
    };
    assert_eq!(
        msgs(carol.pushes_within(Duration::from_secs(1)).await),
        vec![json!("one"), json!("three")],
        "a stock client gets what arrives"
    );
    assert!(
        alice.closed_within(Duration::from_secs(2)).await,
        "alice was not dropped"
    );
    assert_eq!(alice.kick_reason(), None, "a drop, not a kick");
    assert_eq!(
        msgs(alice.pushes_within(Duration::from_millis(100)).await),
        vec![json!("one")],
        "what came after the gap reached alice"
    );
    assert!(!carol.is_closed(), "a stock client stays");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_sent_to_a_users_earlier_session_never_reaches_its_next_one_after_its_enter_answer() {
    // A connector reads its RPC replies and its pushes in different tasks: a push that reached
    // it before an add's reply can be delivered after it, when its push loop lags (here the
    // test backs it up with pushes for nobody; after a NATS loss, news told again does). What
    // was said to alice's first session must not reach her second after its enter answer.
    let config = TestConfig::new("earlier-session", "");
    let _chat = Server::start("chat", "chat-server-1", &config).await;
    let conn = Server::start("connector", "connector-server-1", &config).await;
    let other = Server::start("connector", "connector-server-2", &config).await;
    let first = connect(&conn.url()).await;
    let mut bob = connect(&other.url()).await;
    enter(&first, "alice", "room").await;
    enter(&bob, "bob", "room").await;
    let _ = bob.pushes_within(Duration::from_millis(200)).await;

    let sender = Bus::connect_nats("127.0.0.1:4222", "test-sender").await.unwrap();
    let to = subject::server(&config.namespace, "connector-server-1");
    let nobody: Vec<String> = (0..1000).map(|i| format!("nobody-{i}*room")).collect();
    let junk = encode_push("onChat", b"{}", &nobody, None, None).unwrap();
    for _ in 0..1500 {
        sender.publish(to.clone(), junk.clone()).await.unwrap();
    }
    sender.flush().await.unwrap();
    // Pushed to alice's first session, behind the backlog.
    send_until_ok(&bob, "room", "before", Duration::from_secs(5)).await;
    first.close();
    let left = receives_push(&mut bob, Duration::from_secs(5), |p| {
        p.route == "onLeave" && p.body["user"] == json!("alice")
    })
    .await;
    assert!(left, "bob never heard alice's first session leave");

    let mut second = connect(&conn.url()).await;
    let answer = enter(&second, "alice", "room").await;
    assert!(answer.get("users").is_some(), "{answer}");
    let late: Vec<Value> = second
        .pushes_within(Duration::from_secs(3))
        .await
        .into_iter()
        .filter(|p| p.route == "onChat" && p.body["msg"] == json!("before"))
        .map(|p| p.body)
        .collect();
    assert!(late.is_empty(), "alice's second session got {late:?}");
    send_until_ok(&bob, "room", "after", Duration::from_secs(5)).await;
    assert!(receives(&mut second, "after").await, "and then nothing more");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_its_chat_server_died_before_pushing_is_recovered_by_the_rooms_recovering_members() {
    // The server died between a message's history append and its push: the history holds
    // it, nobody got it. Here the test writes it as that server would (recording a writer
    // that is gone), then the room's next owner, the same id restarted, pushes the next
    // message: the recovering member must be dropped before it, and get both back.
    let config = TestConfig::new("diedbeforepush", "");
    let mut chat = Server::start("chat", "chat-server-1", &config).await;
    let conn = Server::start("connector", "connector-server-1", &config).await;
    let mut alice = connect(&conn.url()).await;
    let carol = connect(&conn.url()).await;
    enter(&carol, "carol", "room").await;
    let (epoch, offset) = enter_recovering_at(&alice, "alice", "room").await;
    send_until_ok(&carol, "room", "before", Duration::from_secs(5)).await;
    assert!(receives(&mut alice, "before").await);
    chat.kill().await;
    written_but_never_pushed(&config, "room").await;

    let _chat = Server::start("chat", "chat-server-1", &config).await;
    send_until_ok(&carol, "room", "after", Duration::from_secs(20)).await;
    dropped_before(&mut alice, "after", Duration::from_secs(10)).await;
    assert!(!carol.is_closed(), "a stock client stays");

    let alice = connect(&conn.url()).await;
    let back = enter_recovering(&alice, "alice", "room", Some((&epoch, offset))).await;
    let lines = recovered_lines(&back);
    assert_eq!(lines[..2], ["before", "never pushed"], "{back}");
    assert!(
        lines.len() > 2 && lines[2..].iter().all(|m| m == "after"),
        "{back}"
    );
}

/// Writes a chat line "never pushed" into `room`'s history as a chat server that is gone would
/// have, dying before its push.
async fn written_but_never_pushed(config: &TestConfig, room: &str) {
    let redis = "redis://127.0.0.1:6379";
    let history = History::redis(redis, false, &config.namespace, Retention::default())
        .await
        .unwrap();
    let gone_writer = 12_345;
    history.take_over(room, gone_writer).await.unwrap();
    let body = json!({"msg": "never pushed", "from": "carol", "target": "*"}).to_string();
    history
        .append(room, "onChat", body.as_bytes(), &Audience::All)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_that_goes_quiet_after_its_chat_server_died_drops_its_recovering_members_to_recover() {
    // As above, but nothing is said after: the connector, seeing the server vanish, drops the
    // recovering members of its rooms by itself.
    let config = TestConfig::new("diedquiet", "");
    let mut chat1 = Server::start("chat", "chat-server-1", &config).await;
    let _chat2 = Server::start("chat", "chat-server-2", &config).await;
    let conn = Server::start("connector", "connector-server-1", &config).await;
    let room = room_owned(
        "quiet",
        &["chat-server-1", "chat-server-2"],
        "chat-server-1",
        None,
    );
    let other = room_owned("busy", &["chat-server-1", "chat-server-2"], "chat-server-2", None);
    let mut alice = connect(&conn.url()).await;
    let bob = connect(&conn.url()).await;
    let carol = connect(&conn.url()).await;
    let (epoch, offset) = enter_recovering_at(&alice, "alice", &room).await;
    enter_recovering(&bob, "bob", &other, None).await;
    enter(&carol, "carol", &room).await;
    chat1.kill().await;
    written_but_never_pushed(&config, &room).await;

    dropped_before(&mut alice, "never pushed", Duration::from_secs(10)).await;
    assert!(!carol.is_closed(), "a stock client stays");
    assert!(!bob.is_closed(), "a room of a live chat server keeps its members");

    let alice = connect(&conn.url()).await;
    let back = enter_recovering(&alice, "alice", &room, Some((&epoch, offset))).await;
    assert_eq!(recovered_lines(&back), ["never pushed"], "{back}");
}
