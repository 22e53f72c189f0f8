//! A rolling restart of every connector, then every chat server, one at a time, under steady
//! chat in 20 rooms whose members recover (`shaddock_client::RecoveringClient`): no message
//! lost, none twice, none out of order, and nobody sees anyone leave or come back.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::json;
use shaddock_client::{Event, RecoveringClient, RecoveringOptions};
use shaddock_e2e::{Server, TestConfig};

use crate::support::SEND;

const ROOMS: usize = 20;

/// What one member received: chat texts in order, and membership events.
#[derive(Debug, Default)]
struct Seen {
    texts: Vec<String>,
    member_events: Vec<String>,
    gaps: usize,
}

/// Starts a server with its log in `logs`.
async fn start(kind: &str, id: &str, config: &TestConfig, logs: &std::path::Path) -> Server {
    Server::start_logged(kind, id, config, &logs.join(format!("{id}.log"))).await
}

async fn wait_entered(c: &mut RecoveringClient) {
    loop {
        match c.next_event(Duration::from_secs(15)).await {
            Some(Event::Entered { .. }) => return,
            Some(_) => {}
            None => panic!("never entered"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_of_every_server_loses_duplicates_and_reorders_nothing() {
    let config = TestConfig::new("rolling", "[resume]\ngrace_ms = 30000\n");
    // The servers' logs, kept for a failure to be read.
    let logs = std::env::temp_dir().join(format!("{}-logs", config.namespace));
    std::fs::create_dir_all(&logs).expect("log dir");
    eprintln!("rolling: server logs in {}", logs.display());
    let mut chats = [
        start("chat", "chat-server-1", &config, &logs).await,
        start("chat", "chat-server-2", &config, &logs).await,
    ];
    let mut connectors = [
        start("connector", "connector-server-1", &config, &logs).await,
        start("connector", "connector-server-2", &config, &logs).await,
    ];
    let gate = start("gate", "gate-server-1", &config, &logs).await;
    let gate_url = gate.url();

    // Two members per room: "a" talks, both listen.
    let mut members: Vec<(usize, String, RecoveringClient)> = Vec::new();
    for r in 0..ROOMS {
        for name in ["a", "b"] {
            let username = format!("{name}{r}");
            let mut c =
                RecoveringClient::start(RecoveringOptions::new(&gate_url, &username, &format!("room{r}")));
            wait_entered(&mut c).await;
            members.push((r, username, c));
        }
    }
    // Drop what entering caused (the b's onAdd reaching a).
    for (_, _, c) in members.iter_mut() {
        while c.next_event(Duration::from_millis(50)).await.is_some() {}
    }

    let seen: Arc<Mutex<HashMap<String, Seen>>> = Arc::default();
    let started = std::time::Instant::now();
    let acked: Arc<Mutex<HashMap<usize, Vec<String>>>> = Arc::default();
    let talking = Arc::new(AtomicBool::new(true));
    let mut tasks = Vec::new();
    for (r, username, mut c) in members {
        let (seen, acked, talking) = (seen.clone(), acked.clone(), talking.clone());
        tasks.push(tokio::spawn(async move {
            let talker = username.starts_with('a');
            let mut n = 0u32;
            let mut next_say = tokio::time::Instant::now();
            let mut quiet_since: Option<tokio::time::Instant> = None;
            loop {
                if talker && talking.load(Ordering::Relaxed) && tokio::time::Instant::now() >= next_say {
                    let text = format!("room{r}-{n}");
                    let body = json!({"rid": "x", "content": text, "from": "x", "target": "*"});
                    // Each attempt says something new: a retry of a message whose answer was
                    // lost would be a second copy, by the client.
                    n += 1;
                    if let Ok(answer) = c.request(SEND, body).await
                        && answer == json!({})
                    {
                        acked.lock().entry(r).or_default().push(text);
                    }
                    next_say = tokio::time::Instant::now() + Duration::from_millis(100);
                }
                if !talking.load(Ordering::Relaxed) {
                    let since = *quiet_since.get_or_insert_with(tokio::time::Instant::now);
                    if since.elapsed() > Duration::from_secs(3) {
                        break;
                    }
                }
                let Some(event) = c.next_event(Duration::from_millis(20)).await else {
                    continue;
                };
                let mut all = seen.lock();
                let mine = all.entry(username.clone()).or_default();
                match event {
                    Event::Message { route, body, .. } if route == "onChat" => {
                        mine.texts
                            .push(body["msg"].as_str().unwrap_or_default().to_owned());
                    }
                    Event::Message { route, body, .. } => {
                        let at = started.elapsed().as_millis();
                        mine.member_events
                            .push(format!("{route} {} at {at} ms", body["user"]));
                    }
                    Event::Entered { recovered: false, .. } => {
                        mine.gaps += 1;
                        let at = started.elapsed().as_millis();
                        mine.member_events
                            .push(format!("entered without recovery at {at} ms"));
                    }
                    _ => {}
                }
            }
            // Stopped only once every member has stopped listening: a partner leaving at the
            // end is not a leave during the restarts.
            c
        }));
    }

    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut restarts = 0;
    // Every connector, then every chat server, one at a time, each back before the next.
    for (kind, servers) in [("connector", &mut connectors), ("chat", &mut chats)] {
        for server in servers.iter_mut() {
            let id = server.id.clone();
            eprintln!("rolling: stopping {id} at {} ms", started.elapsed().as_millis());
            assert_eq!(
                server.terminate(Duration::from_secs(15)).await,
                Some(true),
                "{id} stops cleanly"
            );
            eprintln!("rolling: {id} exited at {} ms", started.elapsed().as_millis());
            *server = start(kind, &id, &config, &logs).await;
            restarts += 1;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    talking.store(false, Ordering::Relaxed);
    let mut clients = Vec::new();
    for t in tasks {
        clients.push(t.await.unwrap());
    }

    let acked = acked.lock();
    let seen = seen.lock();
    let (mut lost, mut duplicated, mut out_of_order, mut delivered) = (0usize, 0usize, 0usize, 0usize);
    let mut membership_noise = Vec::new();
    for r in 0..ROOMS {
        let sent = acked.get(&r).cloned().unwrap_or_default();
        let index: HashMap<&str, usize> = sent.iter().enumerate().map(|(i, t)| (t.as_str(), i)).collect();
        for name in ["a", "b"] {
            let who = format!("{name}{r}");
            let mine = seen.get(&who);
            let texts = mine.map(|m| m.texts.clone()).unwrap_or_default();
            let mut counts: HashMap<&str, usize> = HashMap::new();
            let mut last: Option<usize> = None;
            for t in &texts {
                *counts.entry(t.as_str()).or_default() += 1;
                // An unacknowledged message (its answer was lost) may arrive: it has no place.
                if let Some(&i) = index.get(t.as_str()) {
                    if last.is_some_and(|l| i < l) {
                        out_of_order += 1;
                    }
                    last = Some(i);
                }
            }
            duplicated += counts.values().filter(|c| **c > 1).map(|c| c - 1).sum::<usize>();
            lost += sent.iter().filter(|t| !counts.contains_key(t.as_str())).count();
            delivered += texts.len();
            if let Some(m) = mine {
                membership_noise.extend(m.member_events.iter().map(|e| format!("{who}: {e}")));
                lost += m.gaps; // a recovery that failed lost something
            }
        }
    }
    let sent: usize = acked.values().map(Vec::len).sum();
    eprintln!(
        "rolling restart: {restarts} restarts, {sent} messages acknowledged, {delivered} deliveries, \
         {lost} lost, {duplicated} duplicated, {out_of_order} out of order, {} membership events",
        membership_noise.len()
    );
    assert!(sent > ROOMS * 20, "the rooms kept talking: {sent}");
    assert!(membership_noise.is_empty(), "{membership_noise:?}");
    assert_eq!((lost, duplicated, out_of_order), (0, 0, 0));
    drop(clients);
    let _ = std::fs::remove_dir_all(&logs);
}
