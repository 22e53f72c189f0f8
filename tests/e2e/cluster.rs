//! The multi-server chat path: gate, connectors and chat servers as real processes, 20
//! clients in 4 rooms, through chat-server crashes and a connector crash; and, in this
//! process, a room's life on NATS and Redis and on the embedded bus and store.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};
use shaddock_client::{Client, Push};
use shaddock_e2e::{Backing, ClusterSpec, Server, TestConfig, eventually, spawn_cluster};

use crate::support::{QUERY_ENTRY, SEND, connect, enter, users as user_list};

pub(crate) struct User {
    name: String,
    room: String,
    port: u16,
    client: Client,
}

/// Asks the gate for `name`'s connector, as the web client does.
async fn query_entry(gate: &str, name: &str) -> Value {
    let client = connect(gate).await;
    let resp = client.request(QUERY_ENTRY, json!({ "uid": name })).await.unwrap();
    client.close();
    resp
}

/// Waits until the gate sees `n` connectors (it answers with `n` distinct ports).
async fn wait_for_connectors(gate: &str, n: usize) {
    eventually(
        "the gate sees every connector",
        Duration::from_secs(10),
        || async {
            let mut ports = std::collections::BTreeSet::new();
            for i in 0..16 {
                if let Some(p) = query_entry(gate, &format!("probe{i}")).await["port"].as_u64() {
                    ports.insert(p);
                }
            }
            (ports.len() >= n).then_some(())
        },
    )
    .await;
}

async fn login(gate: &str, name: &str, room: &str) -> User {
    let entry = query_entry(gate, name).await;
    assert_eq!(entry["code"], json!(200), "{entry}");
    let port = entry["port"].as_u64().unwrap() as u16;
    let host = entry["host"].as_str().unwrap();
    let client = connect(&format!("ws://{host}:{port}")).await;
    let resp = enter(&client, name, room).await;
    assert!(resp.get("users").is_some(), "{name} could not enter: {resp}");
    User {
        name: name.to_owned(),
        room: room.to_owned(),
        port,
        client,
    }
}

/// Collects pushes of `route` for every user until each has `expected(user)`, then a little
/// longer to catch duplicates.
async fn collect(users: &mut [User], route: &str, expected: impl Fn(&User) -> usize) -> Vec<Vec<Push>> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
    let mut got: Vec<Vec<Push>> = users.iter().map(|_| Vec::new()).collect();
    for (u, bucket) in users.iter_mut().zip(got.iter_mut()) {
        let want = expected(u);
        while bucket.len() < want {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match u.client.next_push(left).await {
                Some(p) if p.route == route => bucket.push(p),
                Some(_) => {}
                None => break,
            }
        }
    }
    // Then one quiet moment for everyone (not a wait for a condition: nothing more should
    // come, and a duplicate would arrive in it).
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (u, bucket) in users.iter_mut().zip(got.iter_mut()) {
        for p in u.client.pushes_within(Duration::from_millis(5)).await {
            if p.route == route {
                bucket.push(p);
            }
        }
    }
    got
}

/// Every user sends one message to the whole room, tagged `round`; every member must get
/// every message of its room exactly once and nothing from another room.
async fn chat_round(users: &mut [User], round: &str) {
    for u in users.iter() {
        // Right after a crash the room's new owner may not be known yet: retry until sent.
        eventually("a send is accepted", Duration::from_secs(10), || async {
            let msg = json!({"rid": u.room, "content": format!("{round} {}", u.name), "from": u.name, "target": "*"});
            (u.client.request(SEND, msg).await.unwrap() == json!({})).then_some(())
        })
        .await;
    }
    let room_size = |room: &str| users.iter().filter(|o| o.room == room).count();
    let sizes: BTreeMap<String, usize> = users
        .iter()
        .map(|u| (u.room.clone(), room_size(&u.room)))
        .collect();
    let got = collect(users, "onChat", |u| sizes[&u.room]).await;
    for (u, pushes) in users.iter().zip(got) {
        let mut texts: Vec<String> = pushes
            .iter()
            .filter(|p| p.body["msg"].as_str().is_some_and(|m| m.starts_with(round)))
            .map(|p| p.body["msg"].as_str().unwrap_or_default().to_owned())
            .collect();
        texts.sort();
        let mut want: Vec<String> = users
            .iter()
            .filter(|o| o.room == u.room)
            .map(|o| format!("{round} {}", o.name))
            .collect();
        want.sort();
        assert_eq!(texts, want, "{} in {} ({round})", u.name, u.room);
        for p in &pushes {
            let from = p.body["from"].as_str().unwrap_or_default();
            assert!(
                users.iter().any(|o| o.name == from && o.room == u.room),
                "{} got {p:?}",
                u.name
            );
            assert_eq!(p.body["target"], json!("*"));
        }
    }
}

/// 20 users join 4 rooms through the gate (spread over two connectors), hear of each other
/// (onAdd), chat with their room, and one private message reaches only its target.
pub(crate) async fn join_and_chat(gate: &str) -> Vec<User> {
    let mut users: Vec<User> = Vec::new();
    for r in 0..4 {
        for i in 0..5 {
            users.push(login(gate, &format!("user{r}{i}"), &format!("room{r}")).await);
        }
    }
    let ports: std::collections::BTreeSet<u16> = users.iter().map(|u| u.port).collect();
    assert_eq!(ports.len(), 2, "users are spread over both connectors");

    // onAdd: each member hears of every later joiner of its room, never of itself.
    let position = |u: &User| u.name.chars().last().and_then(|c| c.to_digit(10)).unwrap_or(0) as usize;
    let adds = collect(&mut users, "onAdd", |u| 4 - position(u)).await;
    for (u, pushes) in users.iter().zip(adds) {
        let mut names: Vec<String> = pushes
            .iter()
            .map(|p| p.body["user"].as_str().unwrap_or_default().to_owned())
            .collect();
        names.sort();
        let want: Vec<String> = (position(u) + 1..5)
            .map(|i| format!("{}{i}", &u.name[..u.name.len() - 1]))
            .collect();
        assert_eq!(names, want, "onAdd for {}", u.name);
        assert!(pushes.iter().all(|p| p.body["route"] == json!("onAdd")));
    }

    chat_round(&mut users, "r1").await;

    // A private message reaches its target only; an unknown target answers 500.
    let resp = users[0]
        .client
        .request(
            SEND,
            json!({"rid": "room0", "content": "psst", "from": "user00", "target": "user01"}),
        )
        .await
        .unwrap();
    assert_eq!(resp, json!({}));
    let private = collect(&mut users, "onChat", |u| usize::from(u.name == "user01")).await;
    for (u, pushes) in users.iter().zip(private) {
        if u.name == "user01" {
            assert_eq!(pushes.len(), 1);
            assert_eq!(
                pushes[0].body,
                json!({"msg": "psst", "from": "user00", "target": "user01"})
            );
        } else {
            assert!(pushes.is_empty(), "{} saw a private message: {pushes:?}", u.name);
        }
    }
    let resp = users[0]
        .client
        .request(
            SEND,
            json!({"rid": "room0", "content": "x", "from": "user00", "target": "nobody"}),
        )
        .await
        .unwrap();
    assert_eq!(resp, json!({"code": 500}));

    users
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_users_in_four_rooms_chat_across_two_connectors_through_crashes() {
    let config = TestConfig::new("cluster", "[connector]\nheartbeat_secs = 1\n");
    let mut chat1 = Server::start("chat", "chat-server-1", &config).await;
    let _chat2 = Server::start("chat", "chat-server-2", &config).await;
    let mut conn1 = Server::start("connector", "connector-server-1", &config).await;
    let conn2 = Server::start("connector", "connector-server-2", &config).await;
    let gate = Server::start("gate", "gate-server-1", &config).await;
    wait_for_connectors(&gate.url(), 2).await;

    let mut users = join_and_chat(&gate.url()).await;

    // A chat server crashes and comes back: nobody has to enter again.
    chat1.kill().await;
    chat1 = Server::start("chat", "chat-server-1", &config).await;
    chat_round(&mut users, "r2").await;

    // A connector crashes: its members leave every user list, with onLeave to the others.
    let dead_port = conn1.client_port.unwrap();
    conn1.kill().await;
    let (gone, mut alive): (Vec<User>, Vec<User>) = users.into_iter().partition(|u| u.port == dead_port);
    assert!(!gone.is_empty() && !alive.is_empty());
    let gone_in = |room: &str| gone.iter().filter(|g| g.room == room).count();
    let leaves = collect(&mut alive, "onLeave", |u| gone_in(&u.room)).await;
    for (u, pushes) in alive.iter().zip(leaves) {
        let mut names: Vec<String> = pushes
            .iter()
            .map(|p| p.body["user"].as_str().unwrap_or_default().to_owned())
            .collect();
        names.sort();
        let mut want: Vec<String> = gone
            .iter()
            .filter(|g| g.room == u.room)
            .map(|g| g.name.clone())
            .collect();
        want.sort();
        assert_eq!(names, want, "onLeave for {}", u.name);
    }
    // A newcomer's user list shows only the live members.
    let probe = connect(&conn2.url()).await;
    let resp = enter(&probe, "probe", "room0").await;
    let mut want: Vec<String> = alive
        .iter()
        .filter(|u| u.room == "room0")
        .map(|u| u.name.clone())
        .collect();
    want.push("probe".into());
    want.sort();
    assert_eq!(user_list(&resp), want);
    probe.close();
    drop(gone);
    chat_round(&mut alive, "r3").await;
    drop(chat1);
}

#[tokio::test]
async fn the_gate_answers_500_without_uid_or_without_connectors() {
    let config = TestConfig::new("gate", "");
    let gate = Server::start("gate", "gate-server-1", &config).await;
    assert_eq!(query_entry(&gate.url(), "alice").await, json!({"code": 500}));
    let client = connect(&gate.url()).await;
    assert_eq!(
        client.request(QUERY_ENTRY, json!({})).await.unwrap(),
        json!({"code": 500})
    );
    let _connector = Server::start("connector", "connector-server-1", &config).await;
    wait_for_connectors(&gate.url(), 1).await;
    let entry = query_entry(&gate.url(), "alice").await;
    assert_eq!(entry["code"], json!(200));
    assert_eq!(entry["host"], json!("127.0.0.1"));
}

#[tokio::test]
async fn a_uid_logged_in_through_one_connector_is_refused_on_another() {
    let cluster = spawn_cluster(ClusterSpec {
        connectors: 2,
        ..ClusterSpec::default()
    })
    .await;
    let first = connect(&cluster.connector_url(0)).await;
    assert_eq!(user_list(&enter(&first, "eve", "r").await), vec!["eve"]);
    let second = connect(&cluster.connector_url(1)).await;
    assert_eq!(
        enter(&second, "eve", "r").await,
        json!({"code": 500, "error": true})
    );
    // Once the first session closes, the name is free again.
    first.close();
    let resp = eventually("the name is freed", Duration::from_secs(5), || async {
        let resp = enter(&second, "eve", "r").await;
        resp.get("users").is_some().then_some(resp)
    })
    .await;
    assert_eq!(user_list(&resp), vec!["eve"]);
}

/// People chat in a room, whisper, and leave, on a cluster of this process.
async fn a_room_works_end_to_end(backing: Backing) {
    let cluster = spawn_cluster(ClusterSpec {
        chats: 2,
        connectors: 2,
        backing,
        ..ClusterSpec::default()
    })
    .await;
    let mut ann = cluster.user("ann").await;
    let mut ben = cluster.user("ben").await;
    let mut cat = cluster.user("cat").await;
    assert_eq!(ann.enters("lobby").await, vec!["ann"]);
    assert_eq!(ben.enters("lobby").await, vec!["ann", "ben"]);
    ann.sees_enter("ben").await;
    assert_eq!(cat.enters("lobby").await, vec!["ann", "ben", "cat"]);
    ann.sees_enter("cat").await;
    ben.sees_enter("cat").await;

    ann.says("hello all").await;
    for u in [&mut ann, &mut ben, &mut cat] {
        u.sees("ann", "hello all").await;
    }
    ben.whispers("cat", "psst").await;
    cat.sees("ben", "psst").await;
    // Only the target hears a whisper (chatofpomelo's client shows the sender its own).
    for u in [&mut ann, &mut ben] {
        let heard = u.pushes_within(Duration::from_millis(200)).await;
        assert!(heard.iter().all(|p| p.body["msg"] != json!("psst")), "{heard:?}");
    }

    cat.leaves();
    ann.sees_leave("cat").await;
    ben.sees_leave("cat").await;
    cluster.stop().await;
}

#[tokio::test]
async fn a_room_works_end_to_end_on_nats_and_redis() {
    a_room_works_end_to_end(Backing::Shared).await;
}

#[tokio::test]
async fn a_room_works_end_to_end_on_the_embedded_bus_and_store() {
    a_room_works_end_to_end(Backing::Embedded).await;
}

#[tokio::test]
async fn a_connector_restarted_under_the_same_id_leaves_no_ghosts() {
    let config = TestConfig::new("ghosts", "");
    let _chat = Server::start("chat", "chat-server-1", &config).await;
    let mut c1 = Server::start("connector", "connector-server-1", &config).await;
    let c2 = Server::start("connector", "connector-server-2", &config).await;
    let stays = connect(&c2.url()).await;
    enter(&stays, "stays", "room").await;
    let ghost = connect(&c1.url()).await;
    assert_eq!(
        user_list(&enter(&ghost, "ghost", "room").await),
        vec!["ghost", "stays"]
    );
    // Crash and restart at once, well within the registry lapse.
    c1.kill().await;
    let c1 = Server::start("connector", "connector-server-1", &config).await;
    let back = connect(&c1.url()).await;
    let resp = eventually(
        "the restarted connector lets ghost enter",
        Duration::from_secs(5),
        || async {
            let resp = enter(&back, "ghost", "room").await;
            resp.get("users").is_some().then_some(resp)
        },
    )
    .await;
    assert_eq!(user_list(&resp), vec!["ghost", "stays"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_chat_works_in_one_process_on_the_embedded_bus_and_store() {
    let servers = "
[[servers]]
id = \"chat-server-1\"
type = \"chat\"
[[servers]]
id = \"chat-server-2\"
type = \"chat\"
[[servers]]
id = \"connector-server-1\"
type = \"connector\"
bind = \"127.0.0.1\"
client_port = 0
[[servers]]
id = \"connector-server-2\"
type = \"connector\"
bind = \"127.0.0.1\"
client_port = 0
[[servers]]
id = \"gate-server-1\"
type = \"gate\"
bind = \"127.0.0.1\"
client_port = 0
";
    let config = TestConfig::new("embedded", servers);
    let (_all, ports) = Server::start_standalone(&config).await;
    let gate = format!("ws://127.0.0.1:{}", ports["gate-server-1"]);
    wait_for_connectors(&gate, 2).await;
    let mut users = join_and_chat(&gate).await;
    // A closed socket leaves its room there too.
    let gone = users.remove(0);
    gone.client.close();
    let got = collect(&mut users, "onLeave", |u| usize::from(u.room == gone.room)).await;
    for (u, pushes) in users.iter().zip(got) {
        if u.room == gone.room {
            assert_eq!(pushes.len(), 1, "{}", u.name);
            assert_eq!(pushes[0].body, json!({"route": "onLeave", "user": gone.name}));
        }
    }
}
