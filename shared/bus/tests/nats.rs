//! The bus and the registry against the real NATS on 127.0.0.1:4222, a random namespace each.

use std::time::Duration;

use bytes::Bytes;
use shaddock_bus::registry::RegistryTiming;
use shaddock_bus::{Bus, BusError, Registry, ServerInfo, subject};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const NATS: &str = "nats://127.0.0.1:4222";

fn namespace() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("t{}x{nanos}", std::process::id())
}

fn info(id: &str) -> ServerInfo {
    ServerInfo {
        id: id.into(),
        server_type: "connector".into(),
        host: "127.0.0.1".into(),
        client_port: Some(1),
        incarnation: 0,
        draining: false,
    }
}

fn timing() -> RegistryTiming {
    RegistryTiming {
        heartbeat: Duration::from_millis(100),
        lapse: Duration::from_millis(500),
    }
}

#[tokio::test]
async fn a_request_gets_its_reply_over_nats() {
    let ns = namespace();
    let bus = Bus::connect_nats(NATS, "test").await.unwrap();
    let mut sub = bus.subscribe(subject::server(&ns, "chat-1")).await.unwrap();
    let responder = bus.clone();
    tokio::spawn(async move {
        while let Some(m) = sub.next().await {
            let mut answer = b"re:".to_vec();
            answer.extend_from_slice(&m.payload);
            responder.respond(&m, answer.into()).await.unwrap();
        }
    });
    let reply = bus
        .request(
            subject::server(&ns, "chat-1"),
            Bytes::from_static(b"hi"),
            Duration::from_secs(2),
        )
        .await
        .unwrap();
    assert_eq!(&reply[..], b"re:hi");
}

#[tokio::test]
async fn a_request_nobody_answers_fails_within_its_timeout() {
    let ns = namespace();
    let bus = Bus::connect_nats(NATS, "test").await.unwrap();
    // A subscriber that never answers: the request must time out, not hang.
    let _mute = bus.subscribe(subject::server(&ns, "mute")).await.unwrap();
    let started = std::time::Instant::now();
    let asked = bus.request(
        subject::server(&ns, "mute"),
        Bytes::new(),
        Duration::from_millis(300),
    );
    // The outer bound only guards against a hang; the timeout itself is waited out in full.
    let err = tokio::time::timeout(Duration::from_secs(30), asked)
        .await
        .expect("a request never hangs")
        .unwrap_err();
    assert!(matches!(err, BusError::Timeout), "{err:?}");
    assert!(started.elapsed() >= Duration::from_millis(300));
    // Nobody subscribed at all: no responders (or a timeout), never a hang.
    let err = bus
        .request(
            subject::server(&ns, "nobody"),
            Bytes::new(),
            Duration::from_millis(300),
        )
        .await
        .unwrap_err();
    assert!(err.is_unreachable(), "{err:?}");
}

#[tokio::test]
async fn a_server_that_stops_heartbeating_drops_out_of_the_list() {
    let ns = namespace();
    let bus = Bus::connect_nats(NATS, "a").await.unwrap();
    let tracker = TaskTracker::new();
    let token = CancellationToken::new();
    let a = Registry::start(bus, &ns, info("connector-a"), timing(), token.clone(), &tracker)
        .await
        .unwrap();

    // Server b runs on its own runtime in its own thread; dropping the runtime is a crash: no Bye.
    let ns_b = ns.clone();
    let (crash_tx, crash_rx) = std::sync::mpsc::channel::<()>();
    let b = std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async move {
            let bus = Bus::connect_nats(NATS, "b").await.unwrap();
            let tracker = TaskTracker::new();
            let r = Registry::start(
                bus,
                &ns_b,
                info("connector-b"),
                timing(),
                CancellationToken::new(),
                &tracker,
            )
            .await
            .unwrap();
            assert!(r.wait_for("connector", 2, Duration::from_secs(2)).await);
            // Keep the registry alive until told to crash.
            tokio::task::spawn_blocking(move || crash_rx.recv())
                .await
                .unwrap()
                .unwrap();
            std::mem::forget(r);
        });
        drop(rt);
    });
    assert!(a.wait_for("connector", 2, Duration::from_secs(2)).await);
    crash_tx.send(()).unwrap();
    let crashed = std::time::Instant::now();
    tokio::task::spawn_blocking(move || b.join())
        .await
        .unwrap()
        .unwrap();

    let mut rx = a.watch();
    tokio::time::timeout(Duration::from_secs(3), async {
        while rx.borrow_and_update().servers("connector").len() != 1 {
            rx.changed().await.unwrap();
        }
    })
    .await
    .expect("b should lapse");
    assert!(
        crashed.elapsed() >= Duration::from_millis(400),
        "lapsed too early"
    );
    assert_eq!(a.list().servers("connector")[0].id, "connector-a");
    token.cancel();
}

#[tokio::test]
async fn pushes_and_the_answer_for_one_server_arrive_in_one_message_and_in_order() {
    let ns = namespace();
    let home = subject::server(&ns, "connector-1");
    let connector = Bus::connect_nats_at(NATS, "connector-1", Some(home.clone()), true)
        .await
        .unwrap();
    let mut pushes = connector.subscribe(home.clone()).await.unwrap();
    let chat = Bus::connect_nats_at(NATS, "chat-1", Some(subject::server(&ns, "chat-1")), true)
        .await
        .unwrap();
    let mut requests = chat.subscribe(subject::server(&ns, "chat-1")).await.unwrap();
    // The subscriptions are known to the server before anything is sent.
    chat.sync(Duration::from_secs(10)).await.unwrap();
    let responder = chat.clone();
    let to = home.clone();
    tokio::spawn(async move {
        while let Some(m) = requests.next().await {
            for n in 0..3u8 {
                responder
                    .publish_batched(to.clone(), Bytes::from(vec![b'p', n]))
                    .await
                    .unwrap();
            }
            responder
                .respond_batched(&m, Bytes::from_static(b"done"))
                .await
                .unwrap();
        }
    });
    let asked = connector
        .send_request(
            subject::server(&ns, "chat-1"),
            Bytes::from_static(b"send"),
            Duration::from_secs(10),
        )
        .await;
    // The answer comes through the connector's own subscription: it must be read.
    for n in 0..3u8 {
        let m = tokio::time::timeout(Duration::from_secs(10), pushes.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&m.payload[..], &[b'p', n], "pushes keep their order");
        assert_eq!(m.subject, home);
    }
    assert_eq!(&asked.answer().await.unwrap()[..], b"done");
    // The three pushes and the answer left together, in one NATS message.
    assert_eq!(chat.stats().batched_messages.get(), 4);
}

#[tokio::test]
async fn an_answer_to_a_server_not_yet_subscribed_to_its_subject_comes_directly() {
    let ns = namespace();
    let home = subject::server(&ns, "connector-2");
    let connector = Bus::connect_nats_at(NATS, "connector-2", Some(home), true)
        .await
        .unwrap();
    let chat = Bus::connect_nats(NATS, "chat").await.unwrap();
    let mut requests = chat.subscribe(subject::server(&ns, "chat-2")).await.unwrap();
    chat.sync(Duration::from_secs(10)).await.unwrap();
    let responder = chat.clone();
    tokio::spawn(async move {
        while let Some(m) = requests.next().await {
            responder
                .respond_batched(&m, Bytes::from_static(b"ok"))
                .await
                .unwrap();
        }
    });
    let reply = connector
        .request(
            subject::server(&ns, "chat-2"),
            Bytes::new(),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert_eq!(&reply[..], b"ok");
}

#[tokio::test]
async fn a_subscription_is_known_to_the_server_once_sync_returns() {
    let ns = namespace();
    let asker = Bus::connect_nats(NATS, "asker").await.unwrap();
    let answerer = Bus::connect_nats(NATS, "answerer").await.unwrap();
    // Each round a fresh subject: a request sent by another connection right after the
    // sync must find its subscriber, never "no responders".
    for round in 0..50 {
        let to = subject::server(&ns, &format!("s{round}"));
        let mut sub = answerer.subscribe(to.clone()).await.unwrap();
        answerer.sync(Duration::from_secs(10)).await.unwrap();
        let asked = asker
            .send_request(to, Bytes::new(), Duration::from_secs(10))
            .await;
        let m = tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .expect("the request reaches the subscriber")
            .unwrap();
        answerer.respond(&m, Bytes::from_static(b"ok")).await.unwrap();
        assert_eq!(&asked.answer().await.unwrap()[..], b"ok", "round {round}");
    }
}
