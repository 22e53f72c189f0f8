//! Push numbering against the real NATS on 127.0.0.1:4222, a random subject prefix per test.

use std::time::Duration;

use shaddock_bus::envelope::decode_push;
use shaddock_bus::{Bus, subject};
use shaddock_channel::{ChannelService, ChannelStore, Delivery, Member};

mod support;

use support::namespace;

const NATS: &str = "127.0.0.1:4222";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_of_many_rooms_at_once_reach_a_frontend_numbered_in_the_order_they_arrive() {
    let ns = namespace("numbering");
    let bus = Bus::connect_nats(NATS, "numbering-test").await.unwrap();
    let frontend = Bus::connect_nats(NATS, "numbering-frontend").await.unwrap();
    let mut one = frontend
        .subscribe(subject::server(&ns, "connector-1"))
        .await
        .unwrap();
    let mut two = frontend
        .subscribe(subject::server(&ns, "connector-2"))
        .await
        .unwrap();
    frontend.flush().await.unwrap();
    let svc = ChannelService::new(ChannelStore::memory(), bus, &ns, Duration::from_secs(1));

    const ROOMS: usize = 16;
    const EACH: usize = 50;
    let mut rooms = Vec::new();
    for r in 0..ROOMS {
        let svc = svc.clone();
        rooms.push(tokio::spawn(async move {
            let members = [
                Member::new(format!("a{r}"), "connector-1"),
                Member::new(format!("b{r}"), "connector-2"),
            ];
            for _ in 0..EACH {
                svc.push_message_by_uids("onChat", b"{}", &members, None, Delivery::Publish)
                    .await
                    .unwrap();
            }
        }));
    }
    for r in rooms {
        r.await.unwrap();
    }
    for (name, sub) in [("connector-1", &mut one), ("connector-2", &mut two)] {
        let mut from = None;
        for expected in 1..=(ROOMS * EACH) as u64 {
            let msg = tokio::time::timeout(Duration::from_secs(5), sub.next())
                .await
                .unwrap()
                .unwrap();
            let no = decode_push(&msg.payload).unwrap().unwrap().no.unwrap();
            assert_eq!(
                no.n, expected,
                "{name}: pushes arrive in the order of their numbers"
            );
            assert_eq!(*from.get_or_insert(no.from), no.from, "one sender");
        }
    }
}
