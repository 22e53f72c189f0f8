//! The channel store against the real Redis on 127.0.0.1:6379, a random key prefix per test.

use std::time::Duration;

use shaddock_bus::Bus;
use shaddock_channel::{Added, ChannelService, ChannelStore, Delivery, Member};

mod support;

use support::{REDIS, namespace};

#[tokio::test]
async fn members_survive_a_new_service_on_the_same_store() {
    let ns = namespace("restore");
    let store = ChannelStore::redis(REDIS, &ns).await.unwrap();
    let svc = ChannelService::new(store, Bus::local(), &ns, Duration::from_secs(1));
    let room = svc
        .get_channel("room:1 with*odd.chars", true)
        .await
        .unwrap()
        .unwrap();
    room.add(&Member::new("alice*room", "connector-1")).await.unwrap();
    room.add(&Member::new("bob*room", "connector-2")).await.unwrap();
    room.add(&Member::new("carol*room", "connector-1")).await.unwrap();
    svc.channel("other")
        .add(&Member::new("dave*other", "connector-2"))
        .await
        .unwrap();

    // A restarted chat server: a fresh service, nothing cached.
    let store = ChannelStore::redis(REDIS, &ns).await.unwrap();
    let restarted = ChannelService::new(store.clone(), Bus::local(), &ns, Duration::from_secs(1));
    let room = restarted
        .get_channel("room:1 with*odd.chars", false)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        room.members().await.unwrap(),
        vec![
            Member::new("alice*room", "connector-1"),
            Member::new("carol*room", "connector-1"),
            Member::new("bob*room", "connector-2"),
        ]
    );
    assert_eq!(
        room.member("bob*room").await.unwrap().map(|m| m.sid).as_deref(),
        Some("connector-2")
    );
    assert_eq!(
        store.channels().await.unwrap(),
        vec!["other", "room:1 with*odd.chars"]
    );
    let mut of_sid = store.channels_of_sid("connector-2").await.unwrap();
    of_sid.sort();
    assert_eq!(of_sid, vec!["other", "room:1 with*odd.chars"]);
    assert!(restarted.get_channel("never", false).await.unwrap().is_none());

    for name in store.channels().await.unwrap() {
        restarted.destroy_channel(&name).await.unwrap();
    }
    assert!(store.channels().await.unwrap().is_empty());
}

#[tokio::test]
async fn add_is_refused_for_a_uid_already_in_the_channel_and_leave_checks_the_sid() {
    let ns = namespace("dup");
    let store = ChannelStore::redis(REDIS, &ns).await.unwrap();
    let svc = ChannelService::new(store, Bus::local(), &ns, Duration::from_secs(1));
    let room = svc.channel("r");
    let mut a = Member::new("a*r", "connector-1");
    a.incarnation = 42;
    assert_eq!(room.add(&a).await.unwrap(), Added::New);
    assert_eq!(
        room.add(&Member::new("a*r", "connector-2")).await.unwrap(),
        Added::Taken
    );
    assert!(!room.leave(&Member::new("a*r", "connector-2")).await.unwrap());
    assert!(
        !room.leave(&Member::new("a*r", "connector-1")).await.unwrap(),
        "an older incarnation"
    );
    assert_eq!(svc.channel("r").member("a*r").await.unwrap(), Some(a.clone()));
    assert!(room.leave(&a).await.unwrap());
    assert_eq!(room.user_amount().await.unwrap(), 0);
    room.destroy().await.unwrap();
}

#[tokio::test]
async fn a_push_groups_members_read_from_redis_in_one_round_trip() {
    let ns = namespace("push");
    let store = ChannelStore::redis(REDIS, &ns).await.unwrap();
    let bus = Bus::local();
    let svc = ChannelService::new(store, bus.clone(), &ns, Duration::from_secs(1));
    let mut c1 = bus
        .subscribe(shaddock_bus::subject::server(&ns, "connector-1"))
        .await
        .unwrap();
    let room = svc.channel("big");
    for i in 0..200 {
        room.add(&Member::new(format!("u{i}"), "connector-1"))
            .await
            .unwrap();
    }
    svc.invalidate_cache();
    let report = room
        .push_message("onChat", b"{}", None, Delivery::Publish)
        .await
        .unwrap();
    assert_eq!(report.groups, 1);
    let env = shaddock_bus::Envelope::decode(&c1.next().await.unwrap().payload).unwrap();
    let shaddock_bus::Envelope::Push { uids, .. } = env else {
        panic!("not a push")
    };
    assert_eq!(uids.len(), 200);
    room.destroy().await.unwrap();
}

#[tokio::test]
async fn a_uid_left_by_a_gone_session_of_the_same_connector_is_replaced_not_refused() {
    let ns = namespace("replace");
    let store = ChannelStore::redis(REDIS, &ns).await.unwrap();
    let svc = ChannelService::new(store, Bus::local(), &ns, Duration::from_secs(1));
    let room = svc.channel("r");
    let old = Member {
        uid: "a*r".into(),
        sid: "connector-1".into(),
        incarnation: 1,
        session: 10,
    };
    let new = Member {
        session: 11,
        ..old.clone()
    };
    assert_eq!(room.add(&old).await.unwrap(), Added::New);
    // The old session closed, its leave has not arrived yet, the user enters again.
    assert_eq!(room.add(&new).await.unwrap(), Added::Replaced);
    // The old session's late leave does not remove the new one.
    assert!(!room.leave(&old).await.unwrap());
    assert_eq!(room.member("a*r").await.unwrap(), Some(new.clone()));
    // A restarted connector (new incarnation) replaces its ghosts too.
    let reborn = Member {
        incarnation: 2,
        session: 1,
        ..old.clone()
    };
    assert_eq!(room.add(&reborn).await.unwrap(), Added::Replaced);
    assert_eq!(
        room.add(&Member::new("a*r", "connector-2")).await.unwrap(),
        Added::Taken
    );
    room.destroy().await.unwrap();
}
