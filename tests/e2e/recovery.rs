//! Recovery (docs/recovery.md): a client that enters with `recover: true` and comes back with
//! the last epoch and offset it saw gets exactly what it missed, then live pushes; a stock
//! client's bodies stay Pomelo's.

use std::time::Duration;

use serde_json::{Value, json};
use shaddock_client::Client;
use shaddock_e2e::{PrivateServer, Server, TestConfig, eventually};

use crate::support::{QUERY_ENTRY, SEND, connect, enter, enter_recovering, room_owned, users};

const NATS: &str = "nats://127.0.0.1:4222";

async fn say(client: &Client, text: &str) -> Value {
    client
        .request(
            SEND,
            json!({"rid": "x", "content": text, "from": "x", "target": "*"}),
        )
        .await
        .expect("send answer")
}

/// The onChat texts and offsets of the pushes that arrive within `within`.
async fn chats(client: &mut Client, within: Duration) -> Vec<(String, Option<u64>)> {
    client
        .pushes_within(within)
        .await
        .into_iter()
        .filter(|p| p.route == "onChat")
        .map(|p| {
            let text = p.body["msg"].as_str().unwrap_or_default().to_owned();
            (text, p.body.get("offset").and_then(Value::as_u64))
        })
        .collect()
}

/// Stops connector `paused` until `watcher` hears `who`, one of its members, leave: the chat
/// server took it for dead and purged its members, whose sockets stay open.
async fn pause_until_purged(paused: &Server, watcher: &mut Client, who: &str) {
    paused.signal("STOP");
    let purged = crate::support::receives_push(watcher, Duration::from_secs(10), |p| {
        p.route == "onLeave" && p.body["user"] == json!(who)
    })
    .await;
    assert!(purged, "{who}'s connector was never purged");
}

/// Resumes connector `paused`: alice, its member (recovering, purged meanwhile, never
/// reconnected) is put back (bob is told), and gets `meanwhile-1` and `meanwhile-2`, said while
/// she was out, then what bob says next, in the room's order and with rising offsets.
async fn resumes_and_catches_up(paused: &Server, bob: &mut Client, alice: &mut Client) {
    paused.signal("CONT");
    let back = crate::support::receives_push(bob, Duration::from_secs(10), |p| {
        p.route == "onAdd" && p.body["user"] == json!("alice")
    })
    .await;
    assert!(back, "bob was not told alice is back");
    assert_eq!(say(bob, "after").await, json!({}));
    let got = chats(alice, Duration::from_secs(2)).await;
    let texts: Vec<&str> = got.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(texts, ["meanwhile-1", "meanwhile-2", "after"], "{got:?}");
    let offsets: Vec<u64> = got
        .iter()
        .map(|(_, o)| o.expect("a recovering push has its offset"))
        .collect();
    assert!(offsets.windows(2).all(|w| w[0] < w[1]), "{got:?}");
    assert!(!alice.is_closed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_drops_its_socket_gets_exactly_what_it_missed_then_live_messages() {
    let config = TestConfig::new("recover", "");
    let _chat = Server::start("chat", "chat-server-1", &config).await;
    let conn = Server::start("connector", "connector-server-1", &config).await;

    let alice = connect(&conn.url()).await;
    let first = enter_recovering(&alice, "alice", "room", None).await;
    assert_eq!(users(&first), vec!["alice"]);
    let epoch = first["epoch"].as_str().expect("an epoch").to_owned();
    assert!(first.get("recovered").is_none(), "nothing asked: {first}");
    let mut bob = connect(&conn.url()).await;
    enter(&bob, "bob", "room").await;
    assert_eq!(say(&bob, "seen").await, json!({}));
    let mut alice = alice;
    let seen = alice
        .pushes_within(Duration::from_millis(500))
        .await
        .into_iter()
        .filter_map(|p| p.body.get("offset").and_then(Value::as_u64))
        .max()
        .expect("alice's pushes carry offsets");

    alice.close();
    for text in ["m1", "m2"] {
        assert_eq!(say(&bob, text).await, json!({}));
    }
    let carol = connect(&conn.url()).await;
    enter(&carol, "carol", "room").await;
    assert_eq!(say(&bob, "m3").await, json!({}));
    // Only for carol: alice must not get it back.
    let private = bob
        .request(
            SEND,
            json!({"rid": "x", "content": "psst", "from": "x", "target": "carol"}),
        )
        .await
        .unwrap();
    assert_eq!(private, json!({}));

    let mut alice = connect(&conn.url()).await;
    let back = enter_recovering(&alice, "alice", "room", Some((&epoch, seen))).await;
    assert_eq!(back["recovered"], json!(true), "{back}");
    assert_eq!(back["epoch"], json!(epoch));
    let missed: Vec<(String, Value)> = back["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| (m["route"].as_str().unwrap().to_owned(), m["body"].clone()))
        .collect();
    assert_eq!(
        missed,
        vec![
            (
                "onChat".into(),
                json!({"msg": "m1", "from": "bob", "target": "*"})
            ),
            (
                "onChat".into(),
                json!({"msg": "m2", "from": "bob", "target": "*"})
            ),
            ("onAdd".into(), json!({"route": "onAdd", "user": "carol"})),
            (
                "onChat".into(),
                json!({"msg": "m3", "from": "bob", "target": "*"})
            ),
        ]
    );
    let offsets: Vec<u64> = back["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["offset"].as_u64().unwrap())
        .collect();
    assert!(
        offsets.windows(2).all(|w| w[0] < w[1]) && offsets[0] > seen,
        "{offsets:?}"
    );
    let top = back["offset"].as_u64().unwrap();
    assert!(top >= *offsets.last().unwrap());

    assert_eq!(say(&bob, "live").await, json!({}));
    let live = chats(&mut alice, Duration::from_millis(500)).await;
    assert_eq!(live.len(), 1, "{live:?}");
    assert_eq!(live[0].0, "live");
    assert!(live[0].1.expect("an offset") > top);

    // A stock client's push is Pomelo's body, without an offset.
    let stock = bob
        .pushes_within(Duration::from_millis(300))
        .await
        .into_iter()
        .find(|p| p.route == "onChat" && p.body["msg"] == json!("live"))
        .expect("bob hears it");
    assert_eq!(stock.body, json!({"msg": "live", "from": "bob", "target": "*"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_sent_while_a_recovering_enter_is_in_flight_arrive_once_and_in_order() {
    let config = TestConfig::new("recoverflight", "");
    let _chat = Server::start("chat", "chat-server-1", &config).await;
    let conn = Server::start("connector", "connector-server-1", &config).await;
    let bob = connect(&conn.url()).await;
    enter(&bob, "bob", "room").await;
    let mut alice = connect(&conn.url()).await;
    let first = enter_recovering(&alice, "alice", "room", None).await;
    let epoch = first["epoch"].as_str().unwrap().to_owned();

    // Bob talks without pause while alice drops and comes back twice.
    let talker = tokio::spawn(async move {
        let mut sent = Vec::new();
        for i in 0..300 {
            let text = format!("n{i}");
            if say(&bob, &text).await == json!({}) {
                sent.push(text);
            }
        }
        sent
    });
    let mut got: Vec<String> = Vec::new();
    let mut last = first["offset"].as_u64().unwrap();
    for _ in 0..2 {
        for (text, offset) in chats(&mut alice, Duration::from_millis(150)).await {
            got.push(text);
            last = offset.expect("offset");
        }
        alice.close();
        tokio::time::sleep(Duration::from_millis(100)).await;
        alice = connect(&conn.url()).await;
        let back = enter_recovering(&alice, "alice", "room", Some((&epoch, last))).await;
        assert_eq!(back["recovered"], json!(true), "{back}");
        for m in back["messages"].as_array().unwrap() {
            if m["route"] == json!("onChat") {
                got.push(m["body"]["msg"].as_str().unwrap().to_owned());
            }
        }
        last = back["offset"].as_u64().unwrap();
    }
    let sent = talker.await.unwrap();
    for (text, offset) in chats(&mut alice, Duration::from_millis(700)).await {
        assert!(
            offset.expect("offset") > last,
            "a push at or before the answer's offset"
        );
        last = offset.unwrap();
        got.push(text);
    }
    assert!(sent.len() > 250, "bob's sends mostly succeed: {}", sent.len());
    assert_eq!(got, sent, "every message once, in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_without_data_answers_recovered_false_with_a_new_epoch() {
    let mut redis = PrivateServer::redis_without_data().await;
    let config = TestConfig::with_urls("recoverwipe", "", NATS, &redis.url());
    let _chat = Server::start("chat", "chat-server-1", &config).await;
    let conn = Server::start("connector", "connector-server-1", &config).await;
    let alice = connect(&conn.url()).await;
    let first = enter_recovering(&alice, "alice", "room", None).await;
    let epoch = first["epoch"].as_str().unwrap().to_owned();
    let bob = connect(&conn.url()).await;
    enter(&bob, "bob", "room").await;
    assert_eq!(say(&bob, "before").await, json!({}));
    alice.close();

    redis.stop().await;
    redis.restart().await;
    eventually("the chat works again", Duration::from_secs(20), || async {
        (say(&bob, "after").await == json!({})).then_some(())
    })
    .await;

    let alice = connect(&conn.url()).await;
    let back = enter_recovering(&alice, "alice", "room", Some((&epoch, 1))).await;
    assert_eq!(back["recovered"], json!(false), "{back}");
    assert_eq!(back["messages"], json!([]));
    let new_epoch = back["epoch"].as_str().expect("an epoch");
    assert_ne!(new_epoch, epoch);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_handed_back_by_a_draining_connector_returns_elsewhere_unnoticed_and_misses_nothing() {
    let config = TestConfig::new("resume", "");
    let _chat = Server::start("chat", "chat-server-1", &config).await;
    let mut c1 = Server::start("connector", "connector-server-1", &config).await;
    let c2 = Server::start("connector", "connector-server-2", &config).await;
    let gate = Server::start("gate", "gate-server-1", &config).await;
    let mut alice = connect(&c1.url()).await;
    let first = enter_recovering(&alice, "alice", "room", None).await;
    let epoch = first["epoch"].as_str().unwrap().to_owned();
    let mut bob = connect(&c2.url()).await;
    enter(&bob, "bob", "room").await;
    let seen = alice
        .pushes_within(Duration::from_millis(300))
        .await
        .iter()
        .filter_map(|p| p.body.get("offset").and_then(Value::as_u64))
        .max()
        .unwrap_or(first["offset"].as_u64().unwrap());

    let stopping = tokio::spawn(async move { c1.terminate(Duration::from_secs(12)).await });
    assert!(alice.closed_within(Duration::from_secs(3)).await);
    assert_eq!(alice.kick_reason().as_deref(), Some("reconnect"));
    assert_eq!(say(&bob, "while away").await, json!({}));

    let query = connect(&gate.url()).await;
    let entry = query.request(QUERY_ENTRY, json!({"uid": "alice"})).await.unwrap();
    assert_eq!(
        entry["port"],
        json!(c2.client_port.unwrap()),
        "the gate sends her elsewhere"
    );
    alice = connect(&c2.url()).await;
    let back = enter_recovering(&alice, "alice", "room", Some((&epoch, seen))).await;
    assert_eq!(back["recovered"], json!(true), "{back}");
    assert_eq!(users(&back), vec!["alice", "bob"]);
    let missed: Vec<&Value> = back["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["body"]["msg"])
        .collect();
    assert_eq!(missed, vec![&json!("while away")]);

    assert_eq!(
        stopping.await.unwrap(),
        Some(true),
        "the old connector exits cleanly"
    );
    let noticed: Vec<_> = bob
        .pushes_within(Duration::from_secs(2))
        .await
        .into_iter()
        .filter(|p| p.route == "onLeave" || p.route == "onAdd")
        .collect();
    assert!(noticed.is_empty(), "bob saw {noticed:?}");
    assert_eq!(say(&bob, "welcome back").await, json!({}));
    let live = chats(&mut alice, Duration::from_millis(500)).await;
    assert_eq!(
        live.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>(),
        vec!["welcome back"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_connector_was_paused_past_the_lapse_gets_what_was_said_meanwhile_in_order() {
    let config = TestConfig::new("recover-paused", "");
    let _chat = Server::start("chat", "chat-server-1", &config).await;
    let paused = Server::start("connector", "connector-server-1", &config).await;
    let other = Server::start("connector", "connector-server-2", &config).await;
    let mut alice = connect(&paused.url()).await;
    let mut bob = connect(&other.url()).await;
    let entered = enter_recovering(&alice, "alice", "x", None).await;
    assert!(entered.get("users").is_some(), "{entered}");
    enter_recovering(&bob, "bob", "x", None).await;
    let _ = alice.pushes_within(Duration::from_millis(300)).await;
    let _ = bob.pushes_within(Duration::from_millis(300)).await;

    // Alice's connector stops past the lapse and its grace: the chat server takes it for dead
    // and purges its members, while alice's socket stays open.
    pause_until_purged(&paused, &mut bob, "alice").await;
    for text in ["meanwhile-1", "meanwhile-2"] {
        assert_eq!(say(&bob, text).await, json!({}), "{text} was refused");
    }
    // Back, alice's connector is asked for a round and alice is put back.
    resumes_and_catches_up(&paused, &mut bob, &mut alice).await;
}

/// The room moved while alice's connector was paused (a chat server joined): its new owner,
/// which did not purge her, reads the purge's note from the store and catches her up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_purged_by_one_chat_server_and_put_back_by_another_gets_what_was_said_meanwhile() {
    let config = TestConfig::new("recover-moved", "");
    let both: &[&str] = &["chat-server-1", "chat-server-2"];
    let rid = room_owned(
        "moved",
        &["chat-server-1"],
        "chat-server-1",
        Some((both, "chat-server-2")),
    );
    let _chat1 = Server::start("chat", "chat-server-1", &config).await;
    let paused = Server::start("connector", "connector-server-1", &config).await;
    let other = Server::start("connector", "connector-server-2", &config).await;
    let mut alice = connect(&paused.url()).await;
    let mut bob = connect(&other.url()).await;
    enter_recovering(&alice, "alice", &rid, None).await;
    enter_recovering(&bob, "bob", &rid, None).await;
    let _ = alice.pushes_within(Duration::from_millis(300)).await;

    pause_until_purged(&paused, &mut bob, "alice").await;
    for text in ["meanwhile-1", "meanwhile-2"] {
        assert_eq!(say(&bob, text).await, json!({}), "{text} was refused");
    }
    // The room moves to chat-server-2 while alice's connector is still stopped; the servers
    // hear of each other by their heartbeats (every 200 ms).
    let _chat2 = Server::start("chat", "chat-server-2", &config).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;

    resumes_and_catches_up(&paused, &mut bob, &mut alice).await;
}

/// A store loss asks every connector for a silent round (nobody is told who is put back: the
/// others never heard them leave). A connector paused past the lapse hears that ask first on
/// its return, before the announcing round its purge asks for; its member, purged meanwhile
/// and announced gone, is still announced back and caught up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_purged_then_put_back_by_a_store_losss_silent_round_still_gets_what_was_said_meanwhile() {
    let config = TestConfig::new("recover-silent", "");
    // No round of the connectors' own while the test runs: only the asked ones, in the order
    // they were asked.
    let slow_rounds = config.with_setting("sync_ms", "600000");
    let _chat = Server::start("chat", "chat-server-1", &config).await;
    let paused = Server::start("connector", "connector-server-1", &slow_rounds).await;
    let other = Server::start("connector", "connector-server-2", &slow_rounds).await;
    let mut alice = connect(&paused.url()).await;
    let mut bob = connect(&other.url()).await;
    enter_recovering(&alice, "alice", "x", None).await;
    enter_recovering(&bob, "bob", "x", None).await;
    let _ = alice.pushes_within(Duration::from_millis(300)).await;

    pause_until_purged(&paused, &mut bob, "alice").await;
    for text in ["meanwhile-1", "meanwhile-2"] {
        assert_eq!(say(&bob, text).await, json!({}), "{text} was refused");
    }
    // The store's epoch mark goes missing: the chat server claims it again and asks every
    // connector for a silent round, which waits in the paused one's socket.
    let redis = redis::Client::open("redis://127.0.0.1:6379").expect("redis url");
    let mut conn = redis.get_multiplexed_async_connection().await.expect("redis");
    let epoch = format!("{}:epoch", config.namespace);
    let _: () = redis::cmd("DEL")
        .arg(&epoch)
        .query_async(&mut conn)
        .await
        .expect("DEL");
    shaddock_e2e::eventually_true("the epoch mark claimed again", Duration::from_secs(10), || {
        let mut conn = conn.clone();
        let epoch = epoch.clone();
        async move {
            let n: u64 = redis::cmd("EXISTS")
                .arg(&epoch)
                .query_async(&mut conn)
                .await
                .unwrap_or(0);
            n == 1
        }
    })
    .await;
    // The ask is published right after the claim.
    tokio::time::sleep(Duration::from_millis(300)).await;

    resumes_and_catches_up(&paused, &mut bob, &mut alice).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recovering_member_put_back_that_cannot_be_caught_up_is_dropped_to_recover_and_a_plain_one_is_told()
{
    // A history of 2 messages: what is said during the pause outgrows it.
    let config = TestConfig::new("recover-dropped", "[history]\nsize = 2\n");
    let _chat = Server::start("chat", "chat-server-1", &config).await;
    let paused = Server::start("connector", "connector-server-1", &config).await;
    let other = Server::start("connector", "connector-server-2", &config).await;
    let alice = connect(&paused.url()).await;
    let mut carol = connect(&paused.url()).await;
    let mut bob = connect(&other.url()).await;
    let entered = enter_recovering(&alice, "alice", "x", None).await;
    let (epoch, offset) = (entered["epoch"].clone(), entered["offset"].clone());
    assert!(enter(&carol, "carol", "x").await.get("users").is_some());
    enter_recovering(&bob, "bob", "x", None).await;
    let _ = carol.pushes_within(Duration::from_millis(300)).await;
    let _ = bob.pushes_within(Duration::from_millis(300)).await;

    pause_until_purged(&paused, &mut bob, "carol").await;
    for n in 0..4 {
        assert_eq!(say(&bob, &format!("meanwhile-{n}")).await, json!({}));
    }
    paused.signal("CONT");

    // Alice's socket is closed without a kick: her client comes back and is told that what
    // she missed is gone, rather than going on past it unaware.
    assert!(
        alice.closed_within(Duration::from_secs(10)).await,
        "alice was not dropped"
    );
    assert_eq!(alice.kick_reason(), None);
    let again = connect(&other.url()).await;
    let since = (
        epoch.as_str().expect("an epoch"),
        offset.as_u64().expect("an offset"),
    );
    let back = enter_recovering(&again, "alice", "x", Some(since)).await;
    assert_eq!(back["recovered"], json!(false), "{back}");
    // Carol, a plain client, stays and is told who is there now.
    let told = crate::support::receives_push(&mut carol, Duration::from_secs(5), |p| {
        p.route == "onAdd" && p.body["user"] == json!("alice")
    })
    .await;
    assert!(told, "carol was not told alice is back");
    assert!(!carol.is_closed());
}
