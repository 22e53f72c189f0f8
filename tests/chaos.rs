//! The chaos run: simulated users chat in a cluster of real processes on private NATS and Redis
//! while one fault at a time is injected at a random moment. After each fault heals, the run
//! checks, within the registry lapse + 2 s:
//! - the store's members of every room equal the live sessions, exactly;
//! - every present user's picture of its room (the `users` of its enter, then each `onAdd`
//!   and `onLeave`) equals who is really there;
//! - every user still connected receives every message sent to its room after the heal, once,
//!   every member in one order, each sender's messages in the order sent;
//! - no process exited but those killed, and nothing panicked (the servers' logs are read);
//! - and, over the whole run, that no recovering member (three users in four enter with
//!   `recover: true` and come back with their epoch and offset) lost a room message across
//!   its reconnects, or got one twice or out of order (`recovery`).
//!
//! `run` returns what it did and every violation; the `chaos` test runs it for a minute and
//! `make chaos DURATION=...` (the `shaddock-chaos` binary) for longer.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::{Value, json};
use shaddock_channel::ChannelStore;
use shaddock_client::{Client, ClientOptions};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::{PrivateServer, Server, TestConfig, XorShift};

pub mod recovery;
use recovery::{Got, Position};

const ENTER: &str = "connector.entryHandler.enter";
const SEND: &str = "chat.chatHandler.send";
/// What the issue allows after a heal: the test config's registry lapse (1.2 s) + 2 s.
const CONVERGE: Duration = Duration::from_millis(1200 + 2000);
const CHATS: usize = 2;
const CONNECTORS: usize = 2;

/// What to run.
#[derive(Debug, Clone)]
pub struct ChaosConfig {
    pub duration: Duration,
    pub users: usize,
    pub rooms: usize,
    pub seed: u64,
    /// Half the Redis restarts lose every key (a wipe), as a Redis without persistence does.
    pub wipe_redis: bool,
    /// The kinds of fault to inject (see [`FAULT_KINDS`]); empty means all of them.
    pub faults: Vec<String>,
}

/// The kinds of fault, as `--faults` names them and as a fault's report begins.
pub const FAULT_KINDS: [&str; 5] = [
    "kill-9",
    "sigstop",
    "nats-restart",
    "redis-restart",
    "network-pause",
];

impl Default for ChaosConfig {
    fn default() -> Self {
        Self {
            duration: Duration::from_secs(60),
            users: 12,
            rooms: 3,
            seed: 1,
            wipe_redis: true,
            faults: Vec::new(),
        }
    }
}

/// What a run did and found.
#[derive(Debug, Default)]
pub struct ChaosReport {
    pub faults: Vec<String>,
    pub checks: usize,
    pub messages_checked: usize,
    /// Room messages the recovering members received (live or recovered), all checked.
    pub messages_recovered: usize,
    pub violations: Vec<String>,
    /// Where the servers' logs are (stderr; `RUST_LOG` sets their level).
    pub logs: PathBuf,
}

impl std::fmt::Display for ChaosReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
        for fault in &self.faults {
            *kinds.entry(fault.split(' ').next().unwrap_or("")).or_default() += 1;
        }
        writeln!(f, "faults injected: {} {kinds:?}", self.faults.len())?;
        writeln!(
            f,
            "checks: {} (messages checked: {}; recovering members' messages checked: {})",
            self.checks, self.messages_checked, self.messages_recovered
        )?;
        writeln!(f, "servers' logs: {}", self.logs.display())?;
        writeln!(f, "violations: {}", self.violations.len())?;
        for v in &self.violations {
            writeln!(f, "  - {v}")?;
        }
        Ok(())
    }
}

/// One simulated user, as the checker sees it.
#[derive(Debug, Default)]
struct UserState {
    /// Entered and connected.
    present: bool,
    /// The connector it is connected through.
    connector: String,
    /// Who it believes is in its room.
    view: BTreeSet<String>,
    /// The check messages received, in order.
    checks: Vec<String>,
    /// The check messages it sent that were accepted (`{}`).
    sent: Vec<String>,
    /// A recovering user's every enter and room message, over the whole run.
    got: Vec<Got>,
}

struct User {
    name: String,
    room: String,
    /// Enters with `recover: true`, and comes back from where it was.
    recovering: bool,
    state: Mutex<UserState>,
    /// Messages the checker asks it to send.
    say: Mutex<Option<mpsc::UnboundedSender<String>>>,
}

/// The cluster's processes, restartable.
struct Cluster {
    config: TestConfig,
    redis_url: String,
    logs: PathBuf,
    chats: Vec<Option<Server>>,
    connectors: Vec<Option<Server>>,
    /// The client ports of the live connectors, for the users.
    ports: Arc<Mutex<Vec<Option<u16>>>>,
}

impl Cluster {
    fn id(kind: &str, i: usize) -> String {
        format!("{kind}-server-{}", i + 1)
    }

    fn log(&self, kind: &str, i: usize) -> PathBuf {
        self.logs.join(format!("{}.log", Self::id(kind, i)))
    }

    async fn start(&mut self, kind: &str, i: usize) {
        let server = Server::start_logged(kind, &Self::id(kind, i), &self.config, &self.log(kind, i)).await;
        if kind == "connector" {
            self.ports.lock()[i] = server.client_port;
            self.connectors[i] = Some(server);
        } else {
            self.chats[i] = Some(server);
        }
    }

    fn slot(&mut self, kind: &str, i: usize) -> &mut Option<Server> {
        if kind == "connector" {
            &mut self.connectors[i]
        } else {
            &mut self.chats[i]
        }
    }

    async fn kill(&mut self, kind: &str, i: usize) {
        if kind == "connector" {
            self.ports.lock()[i] = None;
        }
        if let Some(mut s) = self.slot(kind, i).take() {
            s.kill().await;
        }
    }

    fn signal(&mut self, kind: &str, i: usize, name: &str) {
        if let Some(s) = self.slot(kind, i).as_ref() {
            s.signal(name);
        }
    }

    /// Servers that are not running though nobody killed them.
    fn exited(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        for (kind, list) in [("chat", &mut self.chats), ("connector", &mut self.connectors)] {
            for (i, s) in list.iter_mut().enumerate() {
                if let Some(s) = s
                    && !s.is_running()
                {
                    out.push(Self::id(kind, i));
                }
            }
        }
        out
    }

    fn panics(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (kind, n) in [("chat", CHATS), ("connector", CONNECTORS)] {
            for i in 0..n {
                let text = std::fs::read_to_string(self.log(kind, i)).unwrap_or_default();
                out.extend(
                    text.lines()
                        .filter(|l| l.contains("panicked"))
                        .map(|l| format!("{}: {l}", Self::id(kind, i))),
                );
            }
        }
        out
    }
}

/// Runs the chaos for `cfg.duration` and reports.
pub async fn run(cfg: ChaosConfig) -> ChaosReport {
    let nats = PrivateServer::nats().await;
    let mut redis = PrivateServer::redis().await;
    let config = TestConfig::with_urls("chaos", "", &nats.url(), &redis.url());
    let logs = std::env::temp_dir().join(format!("{}-logs", config.namespace));
    std::fs::create_dir_all(&logs).expect("log dir");
    let mut cluster = Cluster {
        redis_url: redis.url(),
        config,
        logs,
        chats: (0..CHATS).map(|_| None).collect(),
        connectors: (0..CONNECTORS).map(|_| None).collect(),
        ports: Arc::new(Mutex::new(vec![None; CONNECTORS])),
    };
    for i in 0..CHATS {
        cluster.start("chat", i).await;
    }
    for i in 0..CONNECTORS {
        cluster.start("connector", i).await;
    }
    let mut nats = nats;
    let calm = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let users: Vec<Arc<User>> = (0..cfg.users)
        .map(|i| {
            Arc::new(User {
                name: format!("user{i}"),
                room: format!("room{}", i % cfg.rooms.max(1)),
                // One user of each room in the first `rooms` is a plain Pomelo client.
                recovering: i >= cfg.rooms,
                state: Mutex::default(),
                say: Mutex::new(None),
            })
        })
        .collect();
    let mut tasks = Vec::new();
    for (i, u) in users.iter().enumerate() {
        let seed = cfg.seed.wrapping_mul(1000).wrapping_add(i as u64 + 1);
        tasks.push(tokio::spawn(user_loop(
            u.clone(),
            cluster.ports.clone(),
            calm.clone(),
            stop.clone(),
            seed,
        )));
    }
    let mut report = ChaosReport::default();
    let mut rng = XorShift(cfg.seed.max(1));
    let started = Instant::now();
    let mut round = 0usize;
    // Let everyone in before the first fault.
    tokio::time::sleep(Duration::from_secs(2)).await;
    while started.elapsed() < cfg.duration {
        tokio::time::sleep(Duration::from_millis(1000 + rng.next_u64() % 2000)).await;
        let at = time_of_day();
        let fault = inject(&mut cluster, &mut nats, &mut redis, &mut rng, &cfg).await;
        // When, to find it in the servers' logs (kept in the log directory).
        let fault = format!("{fault} (at {at} UTC)");
        report.faults.push(fault.clone());
        round += 1;
        calm.store(true, Ordering::SeqCst);
        check(&mut cluster, &users, &fault, round, &mut report).await;
        calm.store(false, Ordering::SeqCst);
    }
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        let _ = t.await;
    }
    report
        .violations
        .extend(cluster.panics().into_iter().map(|p| format!("panic: {p}")));
    let logs: Vec<(String, String, Vec<Got>)> = users
        .iter()
        .filter(|u| u.recovering)
        .map(|u| {
            (
                u.name.clone(),
                u.room.clone(),
                std::mem::take(&mut u.state.lock().got),
            )
        })
        .collect();
    report.messages_recovered = logs
        .iter()
        .flat_map(|(_, _, log)| log)
        .filter(|g| matches!(g, Got::Message { .. }))
        .count();
    report.violations.extend(
        recovery::check(&logs)
            .into_iter()
            .map(|v| format!("recovery: {v}")),
    );
    report.logs = cluster.logs.clone();
    report
}

/// Injects one fault and heals it; returns what it was.
async fn inject(
    cluster: &mut Cluster,
    nats: &mut PrivateServer,
    redis: &mut PrivateServer,
    rng: &mut XorShift,
    cfg: &ChaosConfig,
) -> String {
    let (pause, kind, i, draw) = loop {
        let pause = Duration::from_millis(300 + rng.next_u64() % 2500);
        let kind = if rng.next_u64().is_multiple_of(2) {
            "chat"
        } else {
            "connector"
        };
        let i = (rng.next_u64() as usize) % if kind == "chat" { CHATS } else { CONNECTORS };
        let draw = rng.next_u64() % 7;
        let name = FAULT_KINDS[[0, 0, 1, 1, 2, 3, 4][draw as usize]];
        if cfg.faults.is_empty() || cfg.faults.iter().any(|f| f == name) {
            break (pause, kind, i, draw);
        }
    };
    let id = Cluster::id(kind, i);
    match draw {
        0 | 1 => {
            cluster.kill(kind, i).await;
            tokio::time::sleep(pause).await;
            cluster.start(kind, i).await;
            format!("kill-9 {id}, back after {pause:?}")
        }
        2 | 3 => {
            cluster.signal(kind, i, "STOP");
            tokio::time::sleep(pause).await;
            cluster.signal(kind, i, "CONT");
            format!("sigstop {id} for {pause:?}")
        }
        4 => {
            nats.stop().await;
            tokio::time::sleep(pause.min(Duration::from_secs(1))).await;
            nats.restart().await;
            "nats-restart".into()
        }
        5 => {
            // The draw happens either way: the rest of a seed's sequence stays the same.
            let wipe = rng.next_u64().is_multiple_of(2) && cfg.wipe_redis;
            redis.stop().await;
            if wipe {
                redis.wipe();
            }
            redis.restart().await;
            if wipe {
                "redis-restart without its data".into()
            } else {
                "redis-restart with its data".into()
            }
        }
        _ => {
            let pause = pause.min(Duration::from_millis(1500));
            nats.signal("STOP");
            tokio::time::sleep(pause).await;
            nats.signal("CONT");
            format!("network-pause of {pause:?}")
        }
    }
}

/// The checks after a heal; violations go into `report`.
async fn check(
    cluster: &mut Cluster,
    users: &[Arc<User>],
    fault: &str,
    round: usize,
    report: &mut ChaosReport,
) {
    report.checks += 1;
    let healed = Instant::now();
    for id in cluster.exited() {
        report.violations.push(format!("after {fault}: {id} exited"));
    }
    // Membership: the store and every present user's view agree with who is present.
    let store = ChannelStore::redis(&cluster.redis_url, &cluster.config.namespace).await;
    let mut last_diff = String::new();
    let converged = loop {
        let present = present_by_room(users);
        let mut diff = String::new();
        if let Ok(store) = &store {
            // Exactly: each member through the connector its session is on.
            for (room, names) in &placed_by_room(users) {
                let stored: BTreeSet<String> = match store.members(room).await {
                    Ok(m) => m
                        .into_iter()
                        .map(|m| format!("{}@{}", name_of(&m.uid), m.sid))
                        .collect(),
                    Err(e) => {
                        diff.push_str(&format!("{room}: store unreadable ({e}); "));
                        continue;
                    }
                };
                if &stored != names {
                    diff.push_str(&format!("{room}: stored {stored:?}, present {names:?}; "));
                }
            }
        }
        for u in users {
            let state = u.state.lock();
            if state.present {
                let truth = present.get(&u.room).cloned().unwrap_or_default();
                if state.view != truth {
                    diff.push_str(&format!("{} sees {:?}, present {truth:?}; ", u.name, state.view));
                }
            }
        }
        if diff.is_empty() {
            break true;
        }
        last_diff = diff;
        if healed.elapsed() > CONVERGE {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    if !converged {
        report.violations.push(format!(
            "after {fault}: membership not true within {CONVERGE:?}: {last_diff}"
        ));
        return;
    }
    // Messages: two from every present user; every present member gets all, once, one order.
    let senders: Vec<Arc<User>> = users.iter().filter(|u| u.state.lock().present).cloned().collect();
    for u in &senders {
        let mut state = u.state.lock();
        state.checks.clear();
        state.sent.clear();
    }
    for u in &senders {
        if let Some(say) = u.say.lock().as_ref() {
            for n in 1..=2 {
                let _ = say.send(format!("check:{round}:{}:{n}", u.name));
            }
        }
    }
    // Wait for the senders to have their messages accepted (or given up on). A sender whose
    // client was closed meanwhile (a recovering one dropped to recover, say when the
    // connectors hear of a restarted chat server just after membership looked settled) is
    // gone: what it never had accepted, it never sent. One still present owes both.
    let deadline = Instant::now() + Duration::from_secs(8);
    let owing = |u: &User| {
        let state = u.state.lock();
        state.present && state.sent.len() < 2
    };
    let expected = loop {
        let expected: HashMap<&str, usize> = senders.iter().fold(HashMap::new(), |mut m, u| {
            *m.entry(u.room.as_str()).or_default() += u.state.lock().sent.len();
            m
        });
        if !senders.iter().any(|u| owing(u)) || Instant::now() > deadline {
            break expected;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let short: Vec<String> = senders
        .iter()
        .filter(|u| owing(u))
        .map(|u| format!("{} ({} of 2)", u.name, u.state.lock().sent.len()))
        .collect();
    if !short.is_empty() {
        report.violations.push(format!(
            "after {fault}: check messages of present users not accepted: {}",
            short.join(", ")
        ));
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let done = senders.iter().all(|u| {
            let s = u.state.lock();
            !s.present || s.checks.len() >= expected.get(u.room.as_str()).copied().unwrap_or(0)
        });
        if done || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A little longer: a duplicate would arrive now.
    tokio::time::sleep(Duration::from_millis(200)).await;
    // What a sender that left meanwhile never had accepted may have gone out all the same
    // (its answer lost with its socket): the members may have it or not, once at most.
    let uncertain: BTreeSet<String> = senders
        .iter()
        .filter(|u| !u.state.lock().present)
        .flat_map(|u| {
            let sent = u.state.lock().sent.clone();
            (1..=2)
                .map(move |n| format!("check:{round}:{}:{n}", u.name))
                .filter(move |t| !sent.contains(t))
        })
        .collect();
    let mut orders: BTreeMap<&str, (String, Vec<String>)> = BTreeMap::new();
    for u in &senders {
        let s = u.state.lock();
        if !s.present {
            continue;
        }
        let want = expected.get(u.room.as_str()).copied().unwrap_or(0);
        report.messages_checked += s.checks.len();
        let unique: BTreeSet<&String> = s.checks.iter().collect();
        let extra = s.checks.iter().filter(|c| uncertain.contains(*c)).count();
        let extra_unique = unique.iter().filter(|c| uncertain.contains(**c)).count();
        if s.checks.len() - extra != want || unique.len() - extra_unique != want || extra != extra_unique {
            report.violations.push(format!(
                "after {fault}: {} got {} of {want} check messages ({} distinct): {:?}",
                u.name,
                s.checks.len(),
                unique.len(),
                s.checks
            ));
            continue;
        }
        for sender in &senders {
            let first = s
                .checks
                .iter()
                .position(|c| c == &format!("check:{round}:{}:1", sender.name));
            let second = s
                .checks
                .iter()
                .position(|c| c == &format!("check:{round}:{}:2", sender.name));
            if let (Some(a), Some(b)) = (first, second)
                && a > b
            {
                report.violations.push(format!(
                    "after {fault}: {} got {}'s messages out of order",
                    u.name, sender.name
                ));
            }
        }
        match orders.get(u.room.as_str()) {
            None => {
                orders.insert(u.room.as_str(), (u.name.clone(), s.checks.clone()));
            }
            Some((other, order)) if order != &s.checks => report.violations.push(format!(
                "after {fault}: {} and {other} saw {} in different orders",
                u.name, u.room
            )),
            Some(_) => {}
        }
    }
}

/// Now as `HH:MM:SS.mmm` (UTC), as the servers' logs write it.
pub(crate) fn time_of_day() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() % 86_400_000)
        .unwrap_or_default();
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

fn name_of(uid: &str) -> String {
    uid.split('*').next().unwrap_or(uid).to_owned()
}

/// Who is present in each room, as `name@connector`.
fn placed_by_room(users: &[Arc<User>]) -> BTreeMap<String, BTreeSet<String>> {
    let mut rooms: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for u in users {
        let entry = rooms.entry(u.room.clone()).or_default();
        let state = u.state.lock();
        if state.present {
            entry.insert(format!("{}@{}", u.name, state.connector));
        }
    }
    rooms
}

fn present_by_room(users: &[Arc<User>]) -> BTreeMap<String, BTreeSet<String>> {
    let mut rooms: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for u in users {
        let entry = rooms.entry(u.room.clone()).or_default();
        if u.state.lock().present {
            entry.insert(u.name.clone());
        }
    }
    rooms
}

/// One user: connect to a live connector, enter, chat, now and then leave and come back;
/// while the checker runs (`calm`) it neither leaves nor comes back.
async fn user_loop(
    user: Arc<User>,
    ports: Arc<Mutex<Vec<Option<u16>>>>,
    calm: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    seed: u64,
) {
    let mut rng = XorShift(seed.max(1));
    let mut seq = 0u64;
    let mut position: Option<Position> = None;
    while !stop.load(Ordering::SeqCst) {
        if calm.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        let live: Vec<(usize, u16)> = ports
            .lock()
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.map(|p| (i, p)))
            .collect();
        let Some(&(index, port)) = live.get((rng.next_u64() as usize) % live.len().max(1)) else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let options = ClientOptions {
            request_timeout: Duration::from_secs(3),
            ..ClientOptions::default()
        };
        let Ok(mut client) = Client::connect(&format!("ws://127.0.0.1:{port}"), options).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let body = if user.recovering {
            recovery::enter_body(&user.name, &user.room, position.as_ref())
        } else {
            json!({"username": user.name, "rid": user.room})
        };
        let answer = client.request(ENTER, body).await;
        let Ok(Value::Object(answer)) = answer else {
            client.close();
            tokio::time::sleep(Duration::from_millis(300)).await;
            continue;
        };
        let Some(list) = answer.get("users").and_then(Value::as_array) else {
            // Taken (a ghost not yet purged) or the cluster is recovering: later.
            client.close();
            tokio::time::sleep(Duration::from_millis(300)).await;
            continue;
        };
        let (say_tx, mut say_rx) = mpsc::unbounded_channel::<String>();
        {
            let mut state = user.state.lock();
            if user.recovering {
                let (got, at) = recovery::entered(&Value::Object(answer.clone()), position.as_ref());
                state.got.extend(got);
                position = at;
            }
            state.view = list
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect();
            state.present = true;
            state.connector = Cluster::id("connector", index);
            *user.say.lock() = Some(say_tx);
        }
        let mut next_chat = Instant::now() + Duration::from_millis(500 + rng.next_u64() % 2000);
        let leave_at = Instant::now() + Duration::from_millis(3000 + rng.next_u64() % 20_000);
        loop {
            if stop.load(Ordering::SeqCst) || client.is_closed() {
                break;
            }
            if !calm.load(Ordering::SeqCst) && Instant::now() > leave_at {
                break;
            }
            tokio::select! {
                push = client.next_push(Duration::from_millis(100)) => {
                    let Some(p) = push else { continue };
                    let mut state = user.state.lock();
                    if user.recovering && let Some(got) = recovery::message(&p.route, &p.body, true) {
                        if let (Some(at), Got::Message { offset, .. }) = (position.as_mut(), &got) {
                            at.offset = *offset;
                        }
                        state.got.push(got);
                    }
                    let who = p.body["user"].as_str().map(str::to_owned);
                    match (p.route.as_str(), who) {
                        ("onAdd", Some(who)) => { state.view.insert(who); }
                        ("onLeave", Some(who)) => { state.view.remove(&who); }
                        ("onChat", _) => {
                            if let Some(text) = p.body["msg"].as_str().filter(|m| m.starts_with("check:")) {
                                state.checks.push(text.to_owned());
                            }
                        }
                        _ => {}
                    }
                }
                Some(text) = say_rx.recv() => {
                    // Retried until accepted, as a client would: what was never accepted was
                    // never sent.
                    let until = Instant::now() + Duration::from_secs(3);
                    while Instant::now() < until && !client.is_closed() {
                        let msg = json!({"rid": user.room, "content": text, "target": "*"});
                        if let Ok(answer) = client.request(SEND, msg).await && answer == json!({}) {
                            user.state.lock().sent.push(text.clone());
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
                _ = tokio::time::sleep_until(next_chat) => {
                    seq += 1;
                    let text = format!("chat:{}:{seq}", user.name);
                    let send = client.request(SEND, json!({"rid": user.room, "content": text, "target": "*"}));
                    // Never wait long on it: pushes must keep being read.
                    let _ = tokio::time::timeout(Duration::from_millis(50), send).await;
                    next_chat = Instant::now() + Duration::from_millis(500 + rng.next_u64() % 2000);
                }
            }
        }
        {
            let mut state = user.state.lock();
            state.present = false;
            state.view.clear();
            *user.say.lock() = None;
        }
        client.close();
        tokio::time::sleep(Duration::from_millis(200 + rng.next_u64() % 1500)).await;
    }
}
