//! Member news told lately, told again after this server's NATS connection dropped.
//!
//! What a chat server published just before its connection dropped is gone: NATS drops what it
//! had not delivered yet, and the dead socket what it had not sent. A lost chat message is still
//! in the history (a recovering client comes back for it); a lost `onAdd` or `onLeave` would
//! leave a stock client's list of the room's users wrong until it enters again. So the users
//! of each room's recent news are remembered for [`WINDOW`], and once the connection is back,
//! each room is told where each of them stands now: `onAdd` if in, `onLeave` if not. A member
//! who got the first news hears the same again (a no-op on a list of users); one who missed it
//! is put right. It runs in the room's order, so no older news of that room follows it.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use parking_lot::Mutex;
use shaddock_bus::Bus;
use shaddock_history::Audience;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::ChatState;
use crate::room::push_event;

/// How far back, before a loss was noticed, news may have been lost: what NATS and the
/// socket still held. A NATS that died is noticed at once (the socket closes); generous.
pub const WINDOW: Duration = Duration::from_secs(5);

/// News remembered at most (a bound on what a storm of enters can make it hold).
const REMEMBERED: usize = 20_000;

/// Who each room was told of lately.
#[derive(Debug, Default)]
pub struct RecentNews {
    told: Mutex<VecDeque<(Instant, String, String)>>,
}

impl RecentNews {
    /// Room `rid` was told news of `uid`.
    pub fn told(&self, rid: &str, uid: &str) {
        let now = Instant::now();
        let mut told = self.told.lock();
        while told
            .front()
            .is_some_and(|(at, ..)| now.duration_since(*at) > WINDOW || told.len() >= REMEMBERED)
        {
            told.pop_front();
        }
        told.push_back((now, rid.to_owned(), uid.to_owned()));
    }

    /// The users each room was told of since `since`, each once.
    pub fn since(&self, since: Instant) -> BTreeMap<String, BTreeSet<String>> {
        let mut rooms: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (_, rid, uid) in self.told.lock().iter().filter(|(at, ..)| *at >= since) {
            rooms.entry(rid.clone()).or_default().insert(uid.clone());
        }
        rooms
    }
}

/// Each time `bus` loses its connection: once it is back, tells every room that had news in
/// the [`WINDOW`] before where each user of that news stands now.
pub async fn watch(state: ChatState, bus: Bus, token: CancellationToken) {
    let Some(mut losses) = bus.losses() else {
        return;
    };
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            changed = losses.changed() => if changed.is_err() { return },
        }
        let noticed = Instant::now();
        while !bus.is_connected() {
            tokio::select! {
                _ = token.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
        // Losses while it was down are covered by this telling.
        losses.borrow_and_update();
        let rooms = tell_again(&state, Some(noticed), None);
        if rooms > 0 {
            tracing::warn!(
                rooms,
                "nats connection was lost: rooms told again of their latest news"
            );
        }
    }
}

/// Tells each room with news in the [`WINDOW`] before `noticed` (or since) where each user
/// of it stands now: to every member, or to those on connector `only`. Queued in each room's
/// order; returns how many rooms.
pub fn tell_again(state: &ChatState, noticed: Option<Instant>, only: Option<&str>) -> usize {
    let now = Instant::now();
    let noticed = noticed.unwrap_or(now);
    let rooms = state.news.since(noticed.checked_sub(WINDOW).unwrap_or(noticed));
    let count = rooms.len();
    for (rid, uids) in rooms {
        let job = restate(state.clone(), rid.clone(), uids, only.map(str::to_owned));
        if state.rooms.submit(rid.clone(), job).is_err() {
            tracing::warn!(%rid, "room busy: its latest news not told again");
        }
    }
    count
}

/// Tells room `rid` (its members on connector `only`, or all) where each of `uids` stands now
/// (`onAdd`: in; `onLeave`: not), in the room's order. Read afresh from the store: the cache
/// may be as stale as the news.
async fn restate(state: ChatState, rid: String, uids: BTreeSet<String>, only: Option<String>) {
    if !state.owns(&rid) {
        // Its owner now told the members what held when the room moved.
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
    for uid in &uids {
        let route = if members.iter().any(|m| &m.uid == uid) {
            "onAdd"
        } else {
            "onLeave"
        };
        let to: Vec<_> = members
            .iter()
            .filter(|m| &m.uid != uid && only.as_ref().is_none_or(|sid| &m.sid == sid))
            .cloned()
            .collect();
        let audience = Audience::Except(uid.clone());
        push_event(&state, &rid, &to, &audience, route, uid).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn news_is_remembered_for_the_window_each_user_once_per_room() {
        let news = RecentNews::default();
        news.told("r1", "a*r1");
        tokio::time::advance(Duration::from_secs(3)).await;
        let mid = Instant::now();
        news.told("r1", "b*r1");
        news.told("r1", "b*r1");
        news.told("r2", "c*r2");
        let all = news.since(mid - Duration::from_secs(10));
        assert_eq!(all["r1"].iter().collect::<Vec<_>>(), ["a*r1", "b*r1"]);
        assert_eq!(all["r2"].len(), 1);
        let later = news.since(mid);
        assert_eq!(later["r1"].iter().collect::<Vec<_>>(), ["b*r1"]);
        tokio::time::advance(WINDOW + Duration::from_secs(1)).await;
        news.told("r3", "d*r3");
        assert_eq!(
            news.told.lock().len(),
            1,
            "older than the window: forgotten on the next news"
        );
    }
}
