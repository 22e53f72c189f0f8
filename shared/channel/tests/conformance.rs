//! One suite, three stores: every behaviour of the channel store holds the same in memory, in
//! the real Redis on 127.0.0.1:6379 (a random namespace per test), and on a private Redis
//! Cluster of three masters.

use shaddock_channel::{Added, ChannelStore, Member};

mod support;

fn member(uid: &str, sid: &str, incarnation: u64, session: u64) -> Member {
    Member {
        uid: uid.into(),
        sid: sid.into(),
        incarnation,
        session,
    }
}

/// Runs each behaviour against both stores.
macro_rules! conformance {
    ($($behaviour:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $behaviour() {
                    super::$behaviour(shaddock_channel::ChannelStore::memory()).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test]
                async fn $behaviour() {
                    let ns = crate::support::namespace(stringify!($behaviour));
                    let store = shaddock_channel::ChannelStore::redis(crate::support::REDIS, &ns).await.unwrap();
                    super::$behaviour(store).await;
                }
            )*
        }
        mod redis_cluster {
            /// One cluster for the whole suite (forming one takes a few seconds).
            #[tokio::test]
            async fn every_behaviour_holds_on_a_redis_cluster() {
                let cluster = shaddock_redis::testing::LocalCluster::start(3, 0).await;
                $(
                    let ns = crate::support::namespace(stringify!($behaviour));
                    let store = shaddock_channel::ChannelStore::redis(&cluster.url(), &ns).await.unwrap();
                    super::$behaviour(store).await;
                )*
            }
        }
    };
}

conformance!(
    a_uid_held_by_another_frontend_is_refused_and_one_of_the_same_frontend_replaced,
    a_leave_for_an_older_session_keeps_the_newer_one,
    members_are_grouped_by_frontend_and_names_keep_odd_characters,
    channels_are_created_listed_and_destroyed,
    the_store_remembers_which_channels_a_frontend_has_members_in,
    the_epoch_mark_is_claimed_once,
    nothing_is_left_behind_when_the_last_members_leave,
    a_held_place_is_taken_back_from_any_frontend,
    a_purge_note_is_kept_per_room_and_frontend_until_forgotten_or_expired,
);

async fn a_purge_note_is_kept_per_room_and_frontend_until_forgotten_or_expired(store: ChannelStore) {
    let long = std::time::Duration::from_secs(60);
    assert_eq!(store.purged("r", "connector-1").await.unwrap(), None);
    store
        .keep_purged("r", "connector-1", b"first", long)
        .await
        .unwrap();
    store
        .keep_purged("r", "connector-1", b"second", long)
        .await
        .unwrap();
    store
        .keep_purged("r:odd {x}", "connector-1", b"other room", long)
        .await
        .unwrap();
    assert_eq!(
        store.purged("r", "connector-1").await.unwrap().as_deref(),
        Some(&b"second"[..])
    );
    assert_eq!(store.purged("r", "connector-2").await.unwrap(), None);
    assert_eq!(
        store.purged("r:odd {x}", "connector-1").await.unwrap().as_deref(),
        Some(&b"other room"[..])
    );
    store.forget_purged("r", "connector-1").await.unwrap();
    assert_eq!(store.purged("r", "connector-1").await.unwrap(), None);
    store
        .keep_purged("r", "connector-2", b"brief", std::time::Duration::from_millis(30))
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(80)).await;
    assert_eq!(store.purged("r", "connector-2").await.unwrap(), None, "expired");
}

async fn a_held_place_is_taken_back_from_any_frontend(store: ChannelStore) {
    let first = member("a*r", "connector-1", 1, 7);
    store.add("r", &first).await.unwrap();
    assert!(store.leave("r", &first).await.unwrap());
    let held = Member::held("a*r", 99);
    assert_eq!(store.add("r", &held).await.unwrap(), Added::New);
    assert!(store.member("r", "a*r").await.unwrap().unwrap().is_held());
    let back = member("a*r", "connector-2", 5, 1);
    assert_eq!(store.add("r", &back).await.unwrap(), Added::Resumed);
    assert_eq!(store.member("r", "a*r").await.unwrap(), Some(back.clone()));
    assert_eq!(
        store.add("r", &member("a*r", "connector-1", 1, 8)).await.unwrap(),
        Added::Taken,
        "taken back, it is no longer anyone's"
    );
}

async fn a_uid_held_by_another_frontend_is_refused_and_one_of_the_same_frontend_replaced(
    store: ChannelStore,
) {
    let first = member("a*r", "connector-1", 1, 7);
    assert_eq!(store.add("r", &first).await.unwrap(), Added::New);
    let elsewhere = member("a*r", "connector-2", 1, 9);
    assert_eq!(store.add("r", &elsewhere).await.unwrap(), Added::Taken);
    assert_eq!(store.member("r", "a*r").await.unwrap(), Some(first));
    let restarted = member("a*r", "connector-1", 2, 3);
    assert_eq!(store.add("r", &restarted).await.unwrap(), Added::Replaced);
    assert_eq!(store.member("r", "a*r").await.unwrap(), Some(restarted));
    assert!(store.ping().await);
}

async fn a_leave_for_an_older_session_keeps_the_newer_one(store: ChannelStore) {
    let newer = member("a*r", "connector-1", 1, 8);
    store.add("r", &newer).await.unwrap();
    let older = member("a*r", "connector-1", 1, 7);
    assert!(!store.leave("r", &older).await.unwrap());
    assert!(store.member("r", "a*r").await.unwrap().is_some());
    assert!(store.leave("r", &newer).await.unwrap());
    assert!(
        !store.leave("r", &newer).await.unwrap(),
        "a second leave finds nothing"
    );
    assert!(store.members("r").await.unwrap().is_empty());
    assert!(!store.leave("nowhere", &newer).await.unwrap());
}

async fn nothing_is_left_behind_when_the_last_members_leave(store: ChannelStore) {
    let (a, b) = (
        member("a*r", "connector-1", 1, 1),
        member("b*r", "connector-2", 1, 2),
    );
    let c = member("c*q", "connector-1", 1, 3);
    for (room, m) in [("r", &a), ("r", &b), ("q", &c)] {
        store.add(room, m).await.unwrap();
    }
    assert_eq!(store.sids().await.unwrap(), vec!["connector-1", "connector-2"]);
    store.leave("r", &a).await.unwrap();
    assert_eq!(store.channels_of_sid("connector-1").await.unwrap(), vec!["q"]);
    assert_eq!(store.channels().await.unwrap(), vec!["q", "r"]);
    store.leave("r", &b).await.unwrap();
    assert_eq!(
        store.channels().await.unwrap(),
        vec!["q"],
        "an empty room is not listed"
    );
    assert!(!store.exists("r").await.unwrap());
    assert_eq!(store.sids().await.unwrap(), vec!["connector-1"]);
    store.forget_sid_channel("connector-1", "q").await.unwrap();
    assert!(
        store.sids().await.unwrap().is_empty(),
        "a frontend with no room is forgotten"
    );
}

async fn members_are_grouped_by_frontend_and_names_keep_odd_characters(store: ChannelStore) {
    let room = "room:1 with*odd.chars#";
    for (uid, sid) in [
        ("carol*x", "connector-1"),
        ("bob*x", "connector-2"),
        ("al:ice*x", "connector-1"),
    ] {
        store.add(room, &Member::new(uid, sid)).await.unwrap();
    }
    assert_eq!(
        store.members(room).await.unwrap(),
        vec![
            Member::new("al:ice*x", "connector-1"),
            Member::new("carol*x", "connector-1"),
            Member::new("bob*x", "connector-2"),
        ]
    );
    assert_eq!(store.member(room, "nobody").await.unwrap(), None);
}

async fn channels_are_created_listed_and_destroyed(store: ChannelStore) {
    assert!(!store.exists("b").await.unwrap());
    store.create("b").await.unwrap();
    store.add("a", &Member::new("u*a", "connector-1")).await.unwrap();
    assert!(store.exists("b").await.unwrap());
    assert_eq!(store.channels().await.unwrap(), vec!["a", "b"]);
    store.destroy("a").await.unwrap();
    assert!(!store.exists("a").await.unwrap());
    store.add("a", &Member::new("u*a", "connector-1")).await.unwrap();
    assert!(
        store
            .leave("a", &Member::new("u*a", "connector-1"))
            .await
            .unwrap()
    );
    assert!(store.members("a").await.unwrap().is_empty());
    assert_eq!(store.channels().await.unwrap(), vec!["b"]);
}

async fn the_store_remembers_which_channels_a_frontend_has_members_in(store: ChannelStore) {
    store
        .add("r1", &Member::new("a*r1", "connector-1"))
        .await
        .unwrap();
    store
        .add("r2", &Member::new("b*r2", "connector-1"))
        .await
        .unwrap();
    store
        .add("r2", &Member::new("c*r2", "connector-2"))
        .await
        .unwrap();
    let mut of_1 = store.channels_of_sid("connector-1").await.unwrap();
    of_1.sort();
    assert_eq!(of_1, vec!["r1", "r2"]);
    assert_eq!(store.channels_of_sid("connector-2").await.unwrap(), vec!["r2"]);
    store.forget_sid_channel("connector-1", "r1").await.unwrap();
    assert_eq!(store.channels_of_sid("connector-1").await.unwrap(), vec!["r2"]);
    assert!(store.channels_of_sid("connector-9").await.unwrap().is_empty());
}

async fn the_epoch_mark_is_claimed_once(store: ChannelStore) {
    let first = store.claim_epoch("one").await.unwrap();
    assert!(first.claimed, "a new store has no mark");
    let again = store.claim_epoch("two").await.unwrap();
    assert!(!again.claimed);
    assert_eq!(again.mark, first.mark, "the first token stays the mark");
    assert!(first.mark.contains("one") && !first.mark.contains("two"));
}
