//! Member news told lately, told again after a NATS connection dropped.
//!
//! What a chat server published just before its connection dropped is gone: NATS drops what it
//! had not delivered yet, and the dead socket what it had not sent. The same goes for what was
//! on its way to a connector whose connection dropped. A lost chat message is still in the
//! history (a recovering client comes back for it); a lost `onAdd` or `onLeave` would leave a
//! stock client's list of the room's users wrong until it enters again. So each room's member
//! news is remembered for a while, and once the connection is back (this server's own, or a
//! connector's that asks: `chatRemote.restate`), the last news of each user in the [`WINDOW`]
//! before the loss was noticed is told again, if the store still agrees with it (otherwise
//! whoever changed the room since told its members): `onLeave` for a user who is gone;
//! `onLeave` then `onAdd` for one who is in, so that a client that got the first `onAdd` does
//! not list the user twice. It runs in the room's order, read afresh from the store, and is
//! not recorded in the history (the first telling is).
//!
//! A NATS that restarts is noticed at once (its sockets close); a silent network cut only when
//! the client's pings go unanswered, and news older than the window before that is not told
//! again.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::ChatState;
use crate::room::tell_again;

/// How far back, before a loss was noticed, news may have been lost: what NATS and the
/// sockets still held.
pub const WINDOW: Duration = Duration::from_secs(5);

/// How long news is remembered: a connection may be down a while before the loss is handled.
const KEPT: Duration = Duration::from_secs(120);

/// News remembered at most (a bound on what a storm of enters can make it hold).
const REMEMBERED: usize = 20_000;

/// One piece of member news: when, in which room, of whom, and whether it said in (`onAdd`).
type News = (Instant, String, String, bool);

/// Who each room was told of lately.
#[derive(Debug, Default)]
pub struct RecentNews {
    told: Mutex<VecDeque<News>>,
}

impl RecentNews {
    /// Room `rid` was told that `uid` is in it (`added`) or not.
    pub fn told(&self, rid: &str, uid: &str, added: bool) {
        let now = Instant::now();
        let mut told = self.told.lock();
        while told
            .front()
            .is_some_and(|(at, ..)| now.duration_since(*at) > KEPT || told.len() >= REMEMBERED)
        {
            told.pop_front();
        }
        told.push_back((now, rid.to_owned(), uid.to_owned(), added));
    }

    /// The last news of each user of each room since `since`: whether it said in.
    pub fn since(&self, since: Instant) -> BTreeMap<String, BTreeMap<String, bool>> {
        let mut rooms: BTreeMap<String, BTreeMap<String, bool>> = BTreeMap::new();
        for (_, rid, uid, added) in self.told.lock().iter().filter(|(at, ..)| *at >= since) {
            rooms.entry(rid.clone()).or_default().insert(uid.clone(), *added);
        }
        rooms
    }
}

/// Each time `bus` loses its connection: once it is back, tells every room that had news in
/// the [`WINDOW`] before (see the module doc).
pub async fn watch(state: ChatState, token: CancellationToken) {
    let bus = state.bus.clone();
    let Some(mut losses) = bus.losses() else {
        return;
    };
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            changed = losses.changed() => if changed.is_err() { return },
        }
        let noticed = Instant::now();
        state.lost.down(noticed);
        tokio::select! {
            _ = token.cancelled() => return,
            () = bus.until_connected() => {}
        }
        // Losses while it was down are covered by this telling.
        losses.borrow_and_update();
        // Pushes first: recovering members must be dropped before anything newer reaches them.
        crate::lost_pushes::handle(&state).await;
        let rooms = tell_rooms_again(&state, noticed, None);
        if rooms > 0 {
            tracing::warn!(
                rooms,
                "nats connection was lost: rooms told again of their latest news"
            );
        }
    }
}

/// Queues, in each room's order, the telling again of the news in the [`WINDOW`] before
/// `noticed`: to every member, or to those on connector `only`. Returns how many rooms were
/// queued (a room whose queue is full is not).
pub fn tell_rooms_again(state: &ChatState, noticed: Instant, only: Option<&str>) -> usize {
    let rooms = state.news.since(noticed.checked_sub(WINDOW).unwrap_or(noticed));
    let mut queued = 0;
    for (rid, news) in rooms {
        let job = restate(state.clone(), rid.clone(), news, only.map(str::to_owned));
        match state.rooms.submit(rid.clone(), job) {
            Ok(()) => queued += 1,
            Err(_) => tracing::warn!(%rid, "room busy: its latest news not told again"),
        }
    }
    queued
}

/// Tells room `rid` (its members on connector `only`, or all) the last news of each user of
/// `news` again, where the store still agrees with it.
async fn restate(state: ChatState, rid: String, news: BTreeMap<String, bool>, only: Option<String>) {
    if !state.owns(&rid) {
        // The room moved meanwhile: news from here would come out of its new owner's order.
        // Left untold (its members' lists may stay wrong until they enter again).
        tracing::warn!(%rid, "the room moved: its latest news not told again");
        return;
    }
    state.channels.invalidate_room(&rid);
    let members = match state.channels.channel(&rid).members().await {
        Ok(members) => members,
        Err(e) => {
            tracing::warn!(%rid, error = %e, "cannot read the room to tell its news again");
            return;
        }
    };
    for (uid, added) in &news {
        let present = members.iter().any(|m| &m.uid == uid);
        if present != *added {
            // Changed since, and told by whoever changed it.
            continue;
        }
        let to: Vec<_> = members
            .iter()
            .filter(|m| &m.uid != uid && only.as_ref().is_none_or(|sid| &m.sid == sid))
            .cloned()
            .collect();
        tell_again(&state, &rid, &to, uid, present).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_last_news_of_each_user_is_remembered_while_it_is_kept() {
        let news = RecentNews::default();
        news.told("r1", "a*r1", true);
        tokio::time::advance(Duration::from_secs(3)).await;
        let mid = Instant::now();
        news.told("r1", "b*r1", true);
        news.told("r1", "b*r1", false);
        news.told("r2", "c*r2", true);
        let all = news.since(mid - Duration::from_secs(10));
        let r1: Vec<_> = all["r1"].iter().map(|(u, a)| (u.as_str(), *a)).collect();
        assert_eq!(r1, [("a*r1", true), ("b*r1", false)], "b's last news: gone");
        assert_eq!(all["r2"].len(), 1);
        let later = news.since(mid);
        assert_eq!(later["r1"].keys().collect::<Vec<_>>(), ["b*r1"]);
        tokio::time::advance(KEPT + Duration::from_secs(1)).await;
        news.told("r3", "d*r3", true);
        assert_eq!(
            news.told.lock().len(),
            1,
            "older than kept: forgotten on the next news"
        );
    }
}
