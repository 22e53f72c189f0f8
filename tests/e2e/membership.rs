//! Membership heals itself: whatever was lost on the way, the store's members converge to the
//! live sessions, and the others are told (`onLeave`, `onAdd`).

use std::time::Duration;

use futures_util::future::join_all;
use serde_json::json;
use shaddock_client::Client;
use shaddock_e2e::{ClusterSpec, Server, TestConfig, eventually_true, spawn_cluster};

use crate::support::{connect, enter, receives_push, room_owned, stored_members, users};

const REDIS: &str = "redis://127.0.0.1:6379";
/// Registry lapse (1.2 s in tests) plus a few membership rounds (0.5 s each), with room to spare.
const HEALS_WITHIN: Duration = Duration::from_secs(10);

/// Waits until `client` is told that `user` left.
async fn hears_leave(client: &mut Client, user: &str) -> bool {
    let wanted = |p: &shaddock_client::Push| p.route == "onLeave" && p.body["user"] == json!(user);
    receives_push(client, HEALS_WITHIN, wanted).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_who_leaves_while_their_rooms_chat_server_is_dead_is_no_ghost() {
    let config = TestConfig::new("ghost-leave", "");
    let mut chat1 = Server::start("chat", "chat-server-1", &config).await;
    let _chat2 = Server::start("chat", "chat-server-2", &config).await;
    let c1 = Server::start("connector", "connector-server-1", &config).await;
    let c2 = Server::start("connector", "connector-server-2", &config).await;
    let room = room_owned(
        "ghost",
        &["chat-server-1", "chat-server-2"],
        "chat-server-1",
        None,
    );
    let mut stays = connect(&c2.url()).await;
    let goes = connect(&c1.url()).await;
    enter(&stays, "stays", &room).await;
    assert_eq!(users(&enter(&goes, "goes", &room).await), vec!["goes", "stays"]);

    // The room's chat server dies, and right after it the user closes the tab: the leave
    // goes to a dead server and is lost.
    chat1.kill().await;
    goes.close();

    assert!(hears_leave(&mut stays, "goes").await);
    let want = vec![format!("stays*{room}")];
    eventually_true("the store forgets the user who left", HEALS_WITHIN, || async {
        stored_members(&config, REDIS, &room).await == want
    })
    .await;
    // The name is free again, through the other connector too.
    let again = connect(&c2.url()).await;
    assert_eq!(users(&enter(&again, "goes", &room).await), vec!["goes", "stays"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connector_and_a_chat_server_dying_together_leave_no_ghosts() {
    let config = TestConfig::new("ghost-both", "");
    let mut chat1 = Server::start("chat", "chat-server-1", &config).await;
    let _chat2 = Server::start("chat", "chat-server-2", &config).await;
    let mut c1 = Server::start("connector", "connector-server-1", &config).await;
    let c2 = Server::start("connector", "connector-server-2", &config).await;
    // A room of chat-server-1: when it dies the room moves to chat-server-2, which never saw
    // connector-server-1 depart while owning it.
    let room = room_owned("both", &["chat-server-1", "chat-server-2"], "chat-server-1", None);
    let mut stays = connect(&c2.url()).await;
    let lost = connect(&c1.url()).await;
    enter(&stays, "stays", &room).await;
    enter(&lost, "lost", &room).await;

    tokio::join!(chat1.kill(), c1.kill());

    assert!(hears_leave(&mut stays, "lost").await);
    let want = vec![format!("stays*{room}")];
    eventually_true("the dead connector's member is gone", HEALS_WITHIN, || async {
        stored_members(&config, REDIS, &room).await == want
    })
    .await;
}

#[tokio::test]
async fn of_two_sockets_entering_one_name_at_once_exactly_one_gets_in() {
    let cluster = spawn_cluster(ClusterSpec::default()).await;
    for round in 0..5 {
        let a = connect(&cluster.connector_url(0)).await;
        let b = connect(&cluster.connector_url(0)).await;
        let room = format!("r{round}");
        let answers = join_all([&a, &b].map(|c| enter(c, "twin", &room))).await;
        let entered = answers.iter().filter(|r| r.get("users").is_some()).count();
        assert_eq!(entered, 1, "{answers:?}");
        a.close();
        b.close();
    }
}

#[tokio::test]
async fn rooms_nobody_is_in_any_more_are_forgotten() {
    let cluster = spawn_cluster(ClusterSpec::default()).await;
    let config_ns = cluster.namespace.clone();
    for i in 0..10 {
        let mut u = cluster.user("passer").await;
        u.enters(&format!("fresh-{i}")).await;
        u.leaves();
    }
    let store = shaddock_channel::ChannelStore::redis(REDIS, &config_ns)
        .await
        .unwrap();
    eventually_true("no empty room is listed", HEALS_WITHIN, || async {
        store.channels().await.unwrap().is_empty() && store.sids().await.unwrap().is_empty()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn news_sent_to_a_users_earlier_session_does_not_reach_its_new_one_on_the_same_connector() {
    // Pushes are routed by uid: while alice's new session enters through the connector her
    // old one was on, what the room still sends the old one reaches the new one too.
    let config = TestConfig::new("stale-news", "");
    let chat = Server::start("chat", "chat-server-1", &config).await;
    let c1 = Server::start("connector", "connector-server-1", &config).await;
    let c2 = Server::start("connector", "connector-server-2", &config).await;
    let alice1 = connect(&c1.url()).await;
    let dave1 = connect(&c2.url()).await;
    assert!(enter(&alice1, "alice", "x").await.get("users").is_some());
    assert!(enter(&dave1, "dave", "x").await.get("users").is_some());
    let mut alice2 = connect(&c1.url()).await;
    let dave2 = connect(&c2.url()).await;

    // The chat server stops a moment (less than the lapse) while dave and alice both come
    // back: dave's old leave, alice's old leave, dave's enter, alice's enter queue in order.
    chat.signal("STOP");
    dave1.close();
    tokio::time::sleep(Duration::from_millis(100)).await;
    alice1.close();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let enter_body = |name: &str| json!({"username": name, "rid": "x"});
    let (dave_in, alice_in, ()) = tokio::join!(
        dave2.request(crate::support::ENTER, enter_body("dave")),
        async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            alice2.request(crate::support::ENTER, enter_body("alice")).await
        },
        async {
            tokio::time::sleep(Duration::from_millis(400)).await;
            chat.signal("CONT");
        }
    );
    let alice_in = alice_in.expect("alice's enter answer");
    let dave_is_in = dave_in.expect("dave's enter answer").get("users").is_some();
    // Her picture of the room: her answer, then each onAdd and onLeave. Dave's old session's
    // onLeave, sent while her old session was still in, must not be part of it: she entered
    // after dave was back, and her answer says so.
    let mut view: std::collections::BTreeSet<String> = users(&alice_in).into_iter().collect();
    for p in alice2.pushes_within(Duration::from_secs(1)).await {
        let who = p.body["user"].as_str().unwrap_or_default().to_owned();
        match p.route.as_str() {
            "onAdd" => view.insert(who),
            "onLeave" => view.remove(&who),
            _ => false,
        };
    }
    let mut truth = vec!["alice"];
    if dave_is_in {
        truth.push("dave");
    }
    assert_eq!(
        view.iter().collect::<Vec<_>>(),
        truth,
        "alice's answer: {alice_in}"
    );
}
