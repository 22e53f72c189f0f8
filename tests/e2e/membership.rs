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
