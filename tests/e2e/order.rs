//! Order: a room's members see each sender's messages in the order sent, and all of them see
//! the room in one and the same order, with members on two connectors, rooms on several chat
//! servers, and while a chat server joins or leaves.
//!
//! Senders fire notifies back to back (as game clients send moves); every member, the senders
//! included, must receive every message exactly once.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::json;
use shaddock_client::Client;
use shaddock_e2e::{PrivateServer, Server, TestConfig};

use crate::support::{
    ENTER, SEND, connect, dropped_before, enter, enter_recovering, recovered_lines, room_owned,
};

const SENDERS: usize = 4;
const LISTENERS: usize = 6;

struct Member {
    name: String,
    client: Client,
}

/// A room with `SENDERS` senders and `LISTENERS` listeners spread over `connectors`.
async fn fill_room(connectors: &[&Server], rid: &str) -> (Vec<Member>, Vec<Member>) {
    let mut senders = Vec::new();
    let mut listeners = Vec::new();
    for i in 0..SENDERS + LISTENERS {
        let (name, list) = if i < SENDERS {
            (format!("s{i}"), &mut senders)
        } else {
            (format!("l{}", i - SENDERS), &mut listeners)
        };
        let client = connect(&connectors[i % connectors.len()].url()).await;
        let resp = enter(&client, &name, rid).await;
        assert!(
            resp.get("users").is_some(),
            "{name} could not enter {rid}: {resp}"
        );
        list.push(Member { name, client });
    }
    // Drop the onAdd pushes of the room filling up.
    for m in senders.iter_mut().chain(listeners.iter_mut()) {
        let _ = m.client.pushes_within(Duration::from_millis(300)).await;
    }
    (senders, listeners)
}

/// Each sender sends `per_sender` chat messages `"<name>:<i>"` as notifies, pausing `pace`
/// every 10 messages; all senders at once.
async fn burst(senders: &[Member], rid: &str, per_sender: usize, pace: Duration) {
    let sends = senders.iter().map(|s| async move {
        for i in 0..per_sender {
            let body =
                json!({"rid": rid, "content": format!("{}:{i}", s.name), "from": s.name, "target": "*"});
            s.client.notify(SEND, body).expect("notify");
            if i % 10 == 9 {
                tokio::time::sleep(pace).await;
            }
        }
    });
    futures_util::future::join_all(sends).await;
}

/// The chat lines `m` receives until it has `want` of them (or 30 s pass), then a little
/// longer to catch duplicates.
async fn received(m: &mut Member, want: usize) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut lines = Vec::new();
    loop {
        let wait = if lines.len() >= want {
            Duration::from_millis(200)
        } else {
            deadline.saturating_duration_since(tokio::time::Instant::now())
        };
        match m.client.next_push(wait).await {
            Some(p) if p.route == "onChat" => {
                lines.push(p.body["msg"].as_str().unwrap_or_default().to_owned());
            }
            Some(_) => {}
            None => return lines,
        }
    }
}

/// Every member got every line once, each sender's in the order sent, all in one order.
async fn assert_one_order(members: &mut [Member], senders: usize, per_sender: usize) {
    let want = senders * per_sender;
    let mut first: Option<(String, Vec<String>)> = None;
    for m in members.iter_mut() {
        let lines = received(m, want).await;
        assert_eq!(
            lines.len(),
            want,
            "{} received {} of {want} lines",
            m.name,
            lines.len()
        );
        let mut next: HashMap<&str, usize> = HashMap::new();
        for line in &lines {
            let (sender, i) = line.split_once(':').expect("a line is sender:i");
            let i: usize = i.parse().expect("a number");
            let expected = next.entry(sender).or_insert(0);
            assert_eq!(
                i, *expected,
                "{} received {sender}'s message {i} when {expected} was due",
                m.name
            );
            *expected += 1;
        }
        match &first {
            None => first = Some((m.name.clone(), lines)),
            Some((name, order)) => {
                if let Some(at) = order.iter().zip(&lines).position(|(a, b)| a != b) {
                    panic!(
                        "{} and {name} saw the room in different orders from line {at}: {:?} vs {:?}",
                        m.name,
                        &lines[at..(at + 3).min(lines.len())],
                        &order[at..(at + 3).min(order.len())]
                    );
                }
            }
        }
    }
}

/// `chats` chat servers (`chat-server-1`...) and two connectors, on a fresh namespace.
async fn cluster(tag: &str, chats: usize) -> (TestConfig, Vec<Server>, [Server; 2]) {
    let cfg = TestConfig::new(tag, "");
    let mut chat = Vec::new();
    for n in 1..=chats {
        chat.push(Server::start("chat", &format!("chat-server-{n}"), &cfg).await);
    }
    let c1 = Server::start("connector", "connector-server-1", &cfg).await;
    let c2 = Server::start("connector", "connector-server-2", &cfg).await;
    (cfg, chat, [c1, c2])
}

#[tokio::test]
async fn messages_fired_back_to_back_arrive_in_each_senders_order_and_one_room_order() {
    let (_cfg, _chat, [c1, c2]) = cluster("order", 2).await;
    let chats = ["chat-server-1", "chat-server-2"];
    // Rounds in rooms of either chat server.
    for (round, owner) in chats.iter().cycle().take(4).enumerate() {
        let rid = room_owned(&format!("round{round}"), &chats, owner, None);
        let (mut senders, mut listeners) = fill_room(&[&c1, &c2], &rid).await;
        burst(&senders, &rid, 100, Duration::ZERO).await;
        assert_one_order(&mut listeners, SENDERS, 100).await;
        assert_one_order(&mut senders, SENDERS, 100).await;
        for m in senders.iter().chain(&listeners) {
            m.client.close();
        }
    }
}

#[tokio::test]
async fn the_room_order_holds_while_a_chat_server_joins() {
    let (cfg, chat, [c1, c2]) = cluster("order-join", 2).await;
    let chat1 = &chat[0];
    // A room that moves to the newcomer.
    let before = ["chat-server-1", "chat-server-2"];
    let after = ["chat-server-1", "chat-server-2", "chat-server-3"];
    let rid = room_owned("join", &before, "chat-server-1", Some((&after, "chat-server-3")));
    let (mut senders, mut listeners) = fill_room(&[&c1, &c2], &rid).await;
    // About 2 s of busy chat (1600 messages a second into the room). Half a second into it
    // the old owner stalls (SIGSTOP) with messages of the room on their way to it, the third
    // chat server starts and connectors send the room to it, then the old owner resumes.
    let chat = burst(&senders, &rid, 800, Duration::from_millis(25));
    // The stall stays well under the registry lapse (1.2 s) and the RPC timeout (2 s): a
    // server stalled longer counts as failed, which is the chaos run's business, not this one's.
    let join = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        chat1.signal("STOP");
        let start = Server::start("chat", "chat-server-3", &cfg);
        tokio::pin!(start);
        let chat3 = match tokio::time::timeout(Duration::from_millis(600), &mut start).await {
            Ok(chat3) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                chat1.signal("CONT");
                chat3
            }
            Err(_) => {
                chat1.signal("CONT");
                start.await
            }
        };
        chat1.signal("CONT");
        chat3
    };
    let ((), _chat3) = tokio::join!(chat, join);
    assert_one_order(&mut listeners, SENDERS, 800).await;
    assert_one_order(&mut senders, SENDERS, 800).await;
}

#[tokio::test]
async fn the_room_order_holds_while_a_chat_server_leaves() {
    let (_cfg, mut chat, [c1, c2]) = cluster("order-leave", 3).await;
    let chat3 = &mut chat[2];
    // A room of the server that leaves.
    let all = ["chat-server-1", "chat-server-2", "chat-server-3"];
    let rid = room_owned("leave", &all, "chat-server-3", None);
    let (mut senders, mut listeners) = fill_room(&[&c1, &c2], &rid).await;
    let chat = burst(&senders, &rid, 150, Duration::from_millis(200));
    let leave = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        chat3.terminate(Duration::from_secs(15)).await
    };
    let ((), exited) = tokio::join!(chat, leave);
    assert_eq!(exited, Some(true), "the leaving chat server exits cleanly");
    assert_one_order(&mut listeners, SENDERS, 150).await;
    assert_one_order(&mut senders, SENDERS, 150).await;
}

/// The chat lines among `pushes`.
fn lines(pushes: &[shaddock_client::Push]) -> Vec<String> {
    pushes
        .iter()
        .filter(|p| p.route == "onChat")
        .map(|p| p.body["msg"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn a_batch_whose_chat_server_stalled_after_writing_it_is_never_pushed_after_what_the_room_said_since() {
    // A private Redis: the test pauses it so that the owner's history write is on its way
    // when the owner itself stalls.
    let redis = PrivateServer::redis().await;
    let cfg = TestConfig::with_urls("order-overtaken", "", "nats://127.0.0.1:4222", &redis.url());
    let chat1 = Server::start("chat", "chat-server-1", &cfg).await;
    let _chat2 = Server::start("chat", "chat-server-2", &cfg).await;
    let c1 = Server::start("connector", "connector-server-1", &cfg).await;
    let c2 = Server::start("connector", "connector-server-2", &cfg).await;
    let rid = room_owned(
        "overtaken",
        &["chat-server-1", "chat-server-2"],
        "chat-server-1",
        None,
    );
    let mut alice = connect(&c1.url()).await;
    let mut bob = connect(&c2.url()).await;
    let mut since = None;
    for (client, name) in [(&alice, "alice"), (&bob, "bob")] {
        let body = json!({"username": name, "rid": rid, "recover": true});
        let resp = client.request(ENTER, body).await.expect("enter answer");
        assert!(resp.get("users").is_some(), "{name} could not enter: {resp}");
        since.get_or_insert((resp["epoch"].clone(), resp["offset"].clone()));
    }
    let _ = alice.pushes_within(Duration::from_millis(300)).await;
    let _ = bob.pushes_within(Duration::from_millis(300)).await;
    let say = |text: &str| json!({"rid": rid, "content": text, "from": "alice", "target": "*"});

    // Alice's "stalled" reaches chat-server-1, whose history write waits on the paused Redis;
    // then chat-server-1 itself stalls, and Redis resumes and writes it.
    redis.signal("STOP");
    alice.notify(SEND, say("stalled")).expect("notify");
    tokio::time::sleep(Duration::from_millis(400)).await;
    chat1.signal("STOP");
    tokio::time::sleep(Duration::from_millis(100)).await;
    redis.signal("CONT");

    // Past the lapse (1.2 s) chat-server-1 is taken for dead; dead, it may have written a
    // message it never pushed, so the room's recovering members are dropped, to recover.
    for client in [&mut alice, &mut bob] {
        dropped_before(client, "stalled", Duration::from_secs(10)).await;
    }
    // They come back and recover it in its place (the room's new owner sealed it: chat-server-1
    // can no longer withdraw it), then the room goes on on chat-server-2.
    let (epoch, offset) = since.expect("alice entered");
    let (epoch, offset) = (epoch.as_str().expect("epoch"), offset.as_u64().expect("offset"));
    let mut alice = connect(&c1.url()).await;
    let mut bob = connect(&c2.url()).await;
    for (client, name) in [(&alice, "alice"), (&bob, "bob")] {
        let back = enter_recovering(client, name, &rid, Some((epoch, offset))).await;
        assert_eq!(recovered_lines(&back), ["stalled"], "{name}: {back}");
    }
    let went_on =
        crate::support::eventually_said(&alice, &mut bob, &rid, "later", Duration::from_secs(15)).await;
    assert!(went_on, "the room went on without the stalled server");

    // The stalled server resumes: its batch must not reach anyone after "later".
    chat1.signal("CONT");
    let after_alice = lines(&alice.pushes_within(Duration::from_secs(3)).await);
    let after_bob = lines(&bob.pushes_within(Duration::from_millis(200)).await);
    for (name, got) in [("alice", &after_alice), ("bob", &after_bob)] {
        assert!(
            !got.iter().any(|l| l == "stalled"),
            "{name} received the stalled batch after the room went on: {got:?}"
        );
    }
    // Whoever recovers from before it gets it in its place, before "later".
    let carol = connect(&c2.url()).await;
    let back = enter_recovering(&carol, "carol", &rid, Some((epoch, offset))).await;
    assert_eq!(back["recovered"], json!(true), "{back}");
    let texts: Vec<&str> = back["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter(|m| m["route"] == "onChat")
        .filter_map(|m| m["body"]["msg"].as_str())
        .collect();
    assert_eq!(texts.first(), Some(&"stalled"), "{back}");
    assert!(
        texts[1..].iter().all(|t| *t == "later") && texts.len() > 1,
        "{back}"
    );
}
