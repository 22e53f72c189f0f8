//! One suite, three histories: every behaviour holds the same in memory, in the real Redis on
//! 127.0.0.1:6379 (a random namespace per test; keys expire within a minute), and on a private
//! Redis Cluster of three masters.

use std::time::Duration;

use shaddock_history::{Audience, History, NewEntry, Position, Retention};

const REDIS: &str = "redis://127.0.0.1:6379";

fn retention(size: usize) -> Retention {
    Retention {
        size,
        age: Duration::from_secs(60),
        meta_ttl: Duration::from_secs(60),
    }
}

fn namespace(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("test-history-{tag}-{}-{nanos}", std::process::id())
}

macro_rules! conformance {
    ($($behaviour:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $behaviour() {
                    super::$behaviour(&|size| Box::pin(async move {
                        shaddock_history::History::memory(super::retention(size))
                    })).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test]
                async fn $behaviour() {
                    let ns = super::namespace(stringify!($behaviour));
                    super::$behaviour(&move |size| {
                        let ns = ns.clone();
                        Box::pin(async move {
                            shaddock_history::History::redis(super::REDIS, false, &ns, super::retention(size))
                                .await
                                .unwrap()
                        })
                    }).await;
                }
            )*
        }
        mod redis_cluster {
            /// One cluster for the whole suite (forming one takes a few seconds).
            #[tokio::test]
            async fn every_behaviour_holds_on_a_redis_cluster() {
                let cluster = shaddock_redis::testing::LocalCluster::start(3, 0).await;
                let url = cluster.url();
                $(
                    let ns = super::namespace(stringify!($behaviour));
                    let seeds = url.clone();
                    super::$behaviour(&move |size| {
                        let (ns, url) = (ns.clone(), seeds.clone());
                        Box::pin(async move {
                            shaddock_history::History::redis(&url, true, &ns, super::retention(size))
                                .await
                                .unwrap()
                        })
                    }).await;
                )*
            }
        }
    };
}

/// Makes a history keeping `size` messages per room (one namespace per test: two made by
/// one test share their rooms, like two chat servers).
type Make = dyn Fn(usize) -> std::pin::Pin<Box<dyn std::future::Future<Output = History>>>;

conformance!(
    offsets_count_from_one_per_room_in_one_epoch,
    a_client_gets_exactly_what_it_missed,
    a_trimmed_history_fails_whole,
    two_servers_share_one_count,
    a_room_never_written_has_an_epoch_that_stays,
    a_batch_takes_consecutive_offsets_and_is_recovered_in_its_order,
    a_withdrawn_message_is_never_recovered_and_the_history_stays_whole,
);

async fn append(h: &History, room: &str, n: u64) -> Position {
    h.append(
        room,
        "onChat",
        format!("{{\"n\":{n}}}").as_bytes(),
        &Audience::All,
    )
    .await
    .unwrap()
    .unwrap()
}

async fn offsets_count_from_one_per_room_in_one_epoch(make: &Make) {
    let h = make(10).await;
    let a1 = append(&h, "a", 1).await;
    let a2 = append(&h, "a", 2).await;
    let b1 = append(&h, "b", 1).await;
    assert_eq!((a1.offset, a2.offset, b1.offset), (1, 2, 1));
    assert_eq!(a1.epoch, a2.epoch);
    let r = h.recover("a", "u", None).await.unwrap().unwrap();
    assert_eq!(r.position, a2);
    assert!(!r.recovered, "no position given: nothing to recover");
}

async fn a_client_gets_exactly_what_it_missed(make: &Make) {
    let h = make(10).await;
    let seen = append(&h, "r", 1).await;
    append(&h, "r", 2).await;
    h.append(
        "r",
        "onChat",
        b"{\"private\":1}",
        &Audience::Only(vec!["other".into()]),
    )
    .await
    .unwrap();
    h.append("r", "onAdd", b"{\"user\":\"u\"}", &Audience::Except("u".into()))
        .await
        .unwrap();
    let last = append(&h, "r", 5).await;
    let r = h.recover("r", "u", Some(&seen)).await.unwrap().unwrap();
    assert!(r.recovered);
    assert_eq!(r.position, last);
    let got: Vec<(u64, String)> = r
        .messages
        .iter()
        .map(|m| (m.offset, String::from_utf8(m.body.clone()).unwrap()))
        .collect();
    assert_eq!(got, vec![(2, "{\"n\":2}".into()), (5, "{\"n\":5}".into())]);
    let up_to_date = h.recover("r", "u", Some(&last)).await.unwrap().unwrap();
    assert!(up_to_date.recovered && up_to_date.messages.is_empty());
}

async fn a_trimmed_history_fails_whole(make: &Make) {
    let h = make(3).await;
    let seen = append(&h, "r", 1).await;
    for n in 2..=5 {
        append(&h, "r", n).await;
    }
    let r = h.recover("r", "u", Some(&seen)).await.unwrap().unwrap();
    assert!(!r.recovered);
    assert!(r.messages.is_empty());
    assert_eq!(r.position.offset, 5);
    let recent = Position {
        epoch: seen.epoch.clone(),
        offset: 2,
    };
    let r = h.recover("r", "u", Some(&recent)).await.unwrap().unwrap();
    assert!(r.recovered, "3, 4 and 5 are kept");
    assert_eq!(r.messages.len(), 3);
    let stranger = Position {
        epoch: "another".into(),
        offset: 4,
    };
    assert!(
        !h.recover("r", "u", Some(&stranger))
            .await
            .unwrap()
            .unwrap()
            .recovered
    );
}

async fn two_servers_share_one_count(make: &Make) {
    let (one, two) = (make(10).await, make(10).await);
    if matches!(one, History::Memory(_)) {
        return; // memory is one process's: nothing is shared
    }
    let a = append(&one, "r", 1).await;
    let b = append(&two, "r", 2).await;
    assert_eq!((a.offset, b.offset), (1, 2));
    assert_eq!(a.epoch, b.epoch);
}

async fn a_room_never_written_has_an_epoch_that_stays(make: &Make) {
    let h = make(10).await;
    let before = h.recover("quiet", "u", None).await.unwrap().unwrap().position;
    assert_eq!(before.offset, 0);
    let first = append(&h, "quiet", 1).await;
    assert_eq!(
        first.epoch, before.epoch,
        "entering first must not cost a recovery"
    );
    let r = h.recover("quiet", "u", Some(&before)).await.unwrap().unwrap();
    assert!(r.recovered);
    assert_eq!(r.messages.len(), 1);
}

async fn a_batch_takes_consecutive_offsets_and_is_recovered_in_its_order(make: &Make) {
    let h = make(10).await;
    let seen = append(&h, "r", 1).await;
    let bodies: Vec<Vec<u8>> = (2..=4).map(|n| format!("{{\"n\":{n}}}").into_bytes()).collect();
    let only_b = Audience::Only(vec!["b".into()]);
    let entries: Vec<NewEntry<'_>> = bodies
        .iter()
        .enumerate()
        .map(|(i, body)| NewEntry {
            route: "onChat",
            body,
            audience: if i == 1 { &only_b } else { &Audience::All },
        })
        .collect();
    let batch = h.append_batch("r", &entries).await.unwrap().unwrap();
    let offsets: Vec<u64> = batch.iter().map(|p| p.offset).collect();
    assert_eq!(offsets, vec![2, 3, 4]);
    assert!(batch.iter().all(|p| p.epoch == seen.epoch));
    assert_eq!(
        append(&h, "r", 5).await.offset,
        5,
        "the count goes on after a batch"
    );
    let r = h.recover("r", "a", Some(&seen)).await.unwrap().unwrap();
    assert!(r.recovered);
    let got: Vec<(u64, &[u8])> = r.messages.iter().map(|m| (m.offset, m.body.as_slice())).collect();
    let want: Vec<(u64, &[u8])> = vec![(2, b"{\"n\":2}"), (4, b"{\"n\":4}"), (5, b"{\"n\":5}")];
    assert_eq!(got, want, "in order, and only what was for the user");
    assert_eq!(h.append_batch("r", &[]).await.unwrap().unwrap(), vec![]);
}

async fn a_withdrawn_message_is_never_recovered_and_the_history_stays_whole(make: &Make) {
    let h = make(10).await;
    let seen = append(&h, "r", 1).await;
    let stalled = append(&h, "r", 2).await;
    append(&h, "r", 3).await;
    h.withdraw("r", &stalled.epoch, &[stalled.offset]).await.unwrap();
    // Another epoch's offsets are not this one's: nothing happens.
    h.withdraw("r", "another-epoch", &[3]).await.unwrap();
    assert_eq!(h.position("r").await.unwrap().unwrap().offset, 3);
    let r = h.recover("r", "a", Some(&seen)).await.unwrap().unwrap();
    assert!(
        r.recovered,
        "a client recovering across a withdrawn message still recovers"
    );
    let got: Vec<u64> = r.messages.iter().map(|m| m.offset).collect();
    assert_eq!(got, vec![3]);
    let r = h.recover("r", "a", Some(&stalled)).await.unwrap().unwrap();
    assert_eq!(r.messages.iter().map(|m| m.offset).collect::<Vec<_>>(), vec![3]);
    assert!(r.recovered);
}

#[tokio::test]
async fn a_room_tells_who_wrote_it_before_another_server_takes_it_over_and_seals_what_it_holds() {
    let ns = namespace("takeover");
    let h = History::redis(REDIS, false, &ns, retention(10)).await.unwrap();
    assert_eq!(h.take_over("r", 1).await.unwrap(), None, "the first writer");
    let one = append(&h, "r", 1).await;
    assert_eq!(one.offset, 1, "taking over moves no offset");
    assert_eq!(h.take_over("r", 1).await.unwrap(), None, "the same writer again");
    let two = append(&h, "r", 2).await;
    assert_eq!(h.withdraw("r", &two.epoch, &[2]).await.unwrap(), 0, "withdrawn");
    let three = append(&h, "r", 3).await;
    assert_eq!(h.take_over("r", 2).await.unwrap(), Some(1));
    assert_eq!(h.take_over("r", 2).await.unwrap(), None);
    let four = append(&h, "r", 4).await;
    assert_eq!(
        h.withdraw("r", &three.epoch, &[3, 4]).await.unwrap(),
        1,
        "3 was sealed by the new writer, 4 is its own"
    );
    let r = h.recover("r", "u", Some(&one)).await.unwrap().unwrap();
    assert!(r.recovered);
    assert_eq!(r.position, four);
    let got: Vec<u64> = r.messages.iter().map(|m| m.offset).collect();
    assert_eq!(got, vec![3], "2 and 4 withdrawn, 3 kept");
    assert_eq!(h.take_over("other", 2).await.unwrap(), None, "per room");
}

#[tokio::test]
async fn a_writers_append_tells_it_when_another_writer_took_the_room_over_since() {
    let ns = namespace("writer-seen");
    let h = History::redis(REDIS, false, &ns, retention(10)).await.unwrap();
    let entry = NewEntry {
        route: "onChat",
        body: b"{}",
        audience: &Audience::All,
    };
    let by = |writer| h.append_batch_by("r", std::slice::from_ref(&entry), writer);
    let (_, other) = by(1).await.unwrap().unwrap();
    assert!(!other, "nobody recorded yet");
    h.take_over("r", 1).await.unwrap();
    assert!(!by(1).await.unwrap().unwrap().1, "its own");
    h.take_over("r", 2).await.unwrap();
    let (positions, other) = by(1).await.unwrap().unwrap();
    assert!(other, "writer 2 took it over");
    assert_eq!(positions[0].offset, 3, "the append happened all the same");
    assert!(!by(2).await.unwrap().unwrap().1);
}
