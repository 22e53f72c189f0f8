//! What the members of a room hear: every push into a room goes through [`publish`], which
//! first gives it its offset in the room's history (when history is on), then pushes it with
//! that offset (one envelope per connector). `onAdd` and `onLeave` are here too.

use serde::Serialize;
use shaddock_channel::{Channel, ChannelError, Delivery, Grouped, Member};
use shaddock_history::{Audience, History, HistoryError, NewEntry, Position};

use crate::ChatState;
use crate::lost_pushes::before_push;

/// Why a push into a room failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("room history: {0}")]
    History(#[from] HistoryError),
    #[error("{0}")]
    Channel(#[from] ChannelError),
    /// The history write of a whole batch failed.
    #[error("room history: {0}")]
    Batch(std::sync::Arc<HistoryError>),
    /// The room's members could not be read for a whole batch (nothing was recorded).
    #[error("{0}")]
    Members(std::sync::Arc<ChannelError>),
    /// Too late to push (its senders gave up, or the room went on without it while this
    /// server stalled): withdrawn from the history, not pushed.
    #[error("too late to push: withdrawn")]
    Overtaken,
    /// The room's recovering members had to be dropped first, and could not be (see
    /// `crate::takeover`).
    #[error("the room's recovering members could not be dropped first")]
    Unsettled,
}

/// Who a push goes to.
#[derive(Debug, Clone, Copy)]
pub enum To<'a> {
    /// Every member of the channel.
    Room(&'a Channel),
    /// These members; the history keeps the message for `audience`.
    Members(&'a [Member], &'a Audience),
}

impl To<'_> {
    /// Whom the history keeps the message for.
    fn audience(&self) -> &Audience {
        match self {
            To::Room(_) => &Audience::All,
            To::Members(_, audience) => audience,
        }
    }
}

/// Pushes `body` on `route` into room `rid`, after recording it in the room's history; when
/// that write fails it is not sent (`Err`: the sender is told). Member events go through
/// `push_event` instead, which sends them all the same.
pub async fn publish(
    state: &ChatState,
    rid: &str,
    route: &str,
    body: &[u8],
    to: To<'_>,
) -> Result<(), PublishError> {
    if !crate::takeover::before_append(state, rid).await {
        return Err(PublishError::Unsettled);
    }
    let grouped = grouped_for(std::slice::from_ref(&to)).await?;
    let position = state.history.append(rid, route, body, to.audience()).await?;
    before_push(state).await;
    if overtaken(state, rid, position.as_slice()).await {
        return Err(PublishError::Overtaken);
    }
    push(
        state,
        rid,
        route,
        body,
        to,
        position.map(|p| p.offset),
        grouped.as_ref(),
    )
    .await
}

/// Another server wrote room `rid` since this one took it over: two served it while their
/// lists of chat servers disagreed (one stopped, taken for dead, and back), and what this one
/// cached of the room may lack what that one changed (a member who entered through it would
/// miss this batch). The members are read afresh (the ones read before serve if that fails),
/// and the room is taken over again before its next write.
async fn written_elsewhere(
    state: &ChatState,
    rid: &str,
    targets: &[To<'_>],
    grouped: Option<Grouped>,
) -> Option<Grouped> {
    another_wrote(state, rid);
    match grouped_for(targets).await {
        Ok(Some(fresh)) => Some(fresh),
        _ => grouped,
    }
}

/// Another server wrote room `rid` since this one took it over: its cached grouping goes, and
/// the room is taken over again before its next write.
fn another_wrote(state: &ChatState, rid: &str) {
    tracing::debug!(%rid, "another server wrote the room since this one took it over: read afresh");
    state.takeovers.recheck(rid);
    state.channels.invalidate_room(rid);
}

/// Every message of a batch failed with `e`.
fn all_failed(messages: &[Message<'_>], e: impl Fn() -> PublishError) -> Vec<Result<(), PublishError>> {
    messages.iter().map(|_| Err(e())).collect()
}

/// The room's members, read before its messages are recorded: a message recorded and then
/// not pushed (the store gone between the two) would be given by recovery to some members and
/// never to those who were there (chaos seed 503, a Redis restart). Read once for the
/// messages that go to the whole room; a job runs in the room's order, so they still hold
/// when it pushes.
async fn grouped_for(to: &[To<'_>]) -> Result<Option<Grouped>, ChannelError> {
    match to.iter().find_map(|t| match t {
        To::Room(channel) => Some(*channel),
        To::Members(..) => None,
    }) {
        Some(channel) => Ok(Some(channel.grouped().await?)),
        None => Ok(None),
    }
}

/// One message of [`publish_batch`]: its body and whom it goes to.
#[derive(Debug)]
pub struct Message<'a> {
    pub body: &'a [u8],
    pub to: To<'a>,
}

/// Pushes `messages` on `route` into room `rid`, in order, after recording them all in the
/// room's history in one write (their offsets follow each other). When that write fails none
/// is sent; otherwise each push succeeds or fails on its own.
pub async fn publish_batch(
    state: &ChatState,
    rid: &str,
    route: &str,
    messages: &[Message<'_>],
) -> Vec<Result<(), PublishError>> {
    let entries: Vec<NewEntry<'_>> = messages
        .iter()
        .map(|m| NewEntry {
            route,
            body: m.body,
            audience: m.to.audience(),
        })
        .collect();
    if !crate::takeover::before_append(state, rid).await {
        return all_failed(messages, || PublishError::Unsettled);
    }
    let targets: Vec<To<'_>> = messages.iter().map(|m| m.to).collect();
    let grouped = match grouped_for(&targets).await {
        Ok(grouped) => grouped,
        Err(e) => {
            let e = std::sync::Arc::new(e);
            return all_failed(messages, || PublishError::Members(e.clone()));
        }
    };
    let (positions, grouped) = match state
        .history
        .append_batch_by(rid, &entries, state.incarnation)
        .await
    {
        Ok(Some((positions, false))) => (Some(positions), grouped),
        Ok(Some((positions, true))) => (
            Some(positions),
            written_elsewhere(state, rid, &targets, grouped).await,
        ),
        Ok(None) => (None, grouped),
        Err(e) => {
            let e = std::sync::Arc::new(e);
            return all_failed(messages, || PublishError::Batch(e.clone()));
        }
    };
    before_push(state).await;
    if overtaken(state, rid, positions.as_deref().unwrap_or_default()).await {
        return all_failed(messages, || PublishError::Overtaken);
    }
    let offsets = positions.map(|p| p.into_iter().map(|p| p.offset).collect::<Vec<_>>());
    let mut results = Vec::with_capacity(messages.len());
    for (i, m) in messages.iter().enumerate() {
        let offset = offsets.as_ref().and_then(|o| o.get(i).copied());
        results.push(push(state, rid, route, m.body, m.to, offset, grouped.as_ref()).await);
    }
    results
}

/// Whether a batch appended at `positions` is too late to push, and is withdrawn from the
/// history instead (recovery never gives it back) while its senders are told it failed:
/// - its senders' deadline passed while it ran (the server or its Redis was paused): they
///   were told it timed out, so it would come as a surprise, and a retry as a second copy;
/// - its job stalled (a third of the lapse or more) and meanwhile another owner of the room
///   appended after it, and pushed that: the batch would reach every member after later
///   messages. A job that did not stall is the room's only writer.
///
/// Offsets a new writer of the room sealed meanwhile (`History::take_over`) stay in the
/// history: the room's recovering members are dropped then, to recover them.
async fn overtaken(state: &ChatState, rid: &str, positions: &[Position]) -> bool {
    let started = shaddock_server::sequencer::job_started();
    let senders_gone = shaddock_server::backend::deadline_passed_for_sender();
    let withdrawn = overtaken_in(
        &state.history,
        rid,
        positions,
        started,
        state.registry.lapse(),
        senders_gone,
    )
    .await;
    match withdrawn {
        None => false,
        Some(0) => true,
        Some(kept) => {
            kept_for_recovery(state, rid, kept).await;
            true
        }
    }
}

/// `kept` messages of room `rid` that were not pushed could not be withdrawn (a new writer
/// sealed them): its recovering members are dropped, to recover them.
async fn kept_for_recovery(state: &ChatState, rid: &str, kept: u64) {
    tracing::warn!(%rid, kept, "messages not pushed were sealed by the room's new writer");
    let rooms = [rid.to_owned()];
    if !crate::lost_pushes::drop_recovering_members(state, &rooms, "a message of the room was not pushed")
        .await
    {
        state.takeovers.owe(rid);
    }
}

/// [`overtaken`], given the history, when the job began, the lapse, and whether its senders'
/// deadline passed: `None` when not overtaken, else how many of its offsets stay (sealed).
async fn overtaken_in(
    history: &History,
    rid: &str,
    positions: &[Position],
    started: Option<tokio::time::Instant>,
    lapse: std::time::Duration,
    senders_gone: bool,
) -> Option<u64> {
    let (Some(first), Some(last)) = (positions.first(), positions.last()) else {
        // Nothing kept (history off): only the senders' deadline counts.
        return senders_gone.then_some(0);
    };
    let why = if senders_gone {
        "its senders' deadline passed"
    } else if !may_have_stalled(started, lapse) {
        return None;
    } else {
        match history.position(rid).await {
            Ok(Some(now)) if went_on_without(last, &now) => "the room went on without it",
            Ok(_) => return None,
            Err(e) => {
                tracing::warn!(%rid, error = %e, "cannot check a stalled batch against the history; pushed");
                return None;
            }
        }
    };
    let offsets: Vec<u64> = (first.offset..=last.offset).collect();
    let ran_ms = started.map(|s| s.elapsed().as_millis()).unwrap_or_default();
    tracing::warn!(%rid, from = first.offset, to = last.offset, ran_ms, why,
        "a batch too late to push: withdrawn, not pushed");
    match history.withdraw(rid, &last.epoch, &offsets).await {
        Ok(kept) => Some(kept),
        Err(e) => {
            tracing::warn!(%rid, error = %e, "cannot withdraw a batch too late to push");
            Some(0)
        }
    }
}

/// True when the history at `now` has gone past `mine`, the last position a batch was given
/// (or started another epoch meanwhile: the batch's offsets mean nothing there).
fn went_on_without(mine: &Position, now: &Position) -> bool {
    now.epoch != mine.epoch || now.offset > mine.offset
}

/// Pushes into room `rid`. The caller has waited for `crate::lost_pushes::before_push` first,
/// before the checks that a stall (which such a wait is) makes it run.
async fn push(
    state: &ChatState,
    rid: &str,
    route: &str,
    body: &[u8],
    to: To<'_>,
    offset: Option<u64>,
    grouped: Option<&Grouped>,
) -> Result<(), PublishError> {
    state.lost.pushed(rid);
    match (to, grouped) {
        (To::Room(channel), Some(grouped)) => {
            channel
                .push_grouped(grouped, route, body, offset, Delivery::Publish)
                .await?
        }
        (To::Room(channel), None) => {
            channel
                .push_message(route, body, offset, Delivery::Publish)
                .await?
        }
        (To::Members(members, _), _) => {
            state
                .channels
                .push_message_by_uids(route, body, members, offset, Delivery::Publish)
                .await?
        }
    };
    Ok(())
}

/// `onAdd` / `onLeave` bodies: the whole object, `route` included, as Pomelo sends it.
#[derive(Debug, Serialize)]
struct MemberEvent<'a> {
    route: &'a str,
    user: &'a str,
}

/// The user name in a uid `username*rid`; the rid is known, so a `*` in a name is fine.
pub fn user_name<'a>(uid: &'a str, rid: &str) -> &'a str {
    uid.strip_suffix(rid)
        .and_then(|u| u.strip_suffix('*'))
        .unwrap_or(uid)
}

/// Whether news of `uid` in `rid` (`onAdd`: it is in the room; `onLeave`: it is not) may be
/// told now.
///
/// A room's job that has run for a third of the lapse may have stalled: its process paused
/// (SIGSTOP, a VM or host stall) between its store write and its push, long enough for the
/// other servers to give the room to another owner, which changed the room meanwhile and told
/// the members what then held. Told late, this job's news would undo that in every member's
/// view (a user who came back seen as gone, one who went seen as back). So a stalled job's
/// news is checked against the store first and dropped when it no longer holds: whoever
/// changed it since told its members. A job that did not stall is its room's only writer.
async fn still_holds(state: &ChatState, rid: &str, route: &str, uid: &str) -> bool {
    let started = shaddock_server::sequencer::job_started();
    if !may_have_stalled(started, state.registry.lapse()) {
        return true;
    }
    match agrees_with_store(&state.channels, rid, route, uid).await {
        Ok(true) => true,
        Ok(false) => {
            let stalled_ms = started.map(|s| s.elapsed().as_millis()).unwrap_or_default();
            tracing::warn!(%rid, %uid, %route, stalled_ms, "a stalled job's news no longer holds: not told");
            false
        }
        Err(e) => {
            tracing::warn!(%rid, error = %e, "cannot check a stalled job's news; told");
            true
        }
    }
}

/// True when a job that began at `started` has run for a third of `lapse` or more.
fn may_have_stalled(started: Option<tokio::time::Instant>, lapse: std::time::Duration) -> bool {
    started.is_some_and(|s| s.elapsed() >= lapse / 3)
}

/// Whether the store, read afresh, agrees with news of `uid` on `route`.
async fn agrees_with_store(
    channels: &shaddock_channel::ChannelService,
    rid: &str,
    route: &str,
    uid: &str,
) -> Result<bool, ChannelError> {
    channels.invalidate_room(rid);
    let present = channels.channel(rid).member(uid).await?.is_some();
    Ok(present == (route == "onAdd"))
}

/// Pushes `onAdd` for `uid` to `others` (the joiner never hears its own).
/// Returns the onAdd's offset in the room's history, when it has one.
pub async fn announce_add(state: &ChatState, others: &[Member], uid: &str, rid: &str) -> Option<u64> {
    if !still_holds(state, rid, "onAdd", uid).await {
        return None;
    }
    tracing::debug!(%rid, %uid, to = others.len(), "onAdd");
    let audience = Audience::Except(uid.to_owned());
    push_event(state, rid, others, &audience, "onAdd", uid).await
}

/// Tells `to` alone that `uid` is in the room (`onAdd`) or not (`onLeave`): what it missed
/// while it was purged.
pub async fn tell(state: &ChatState, to: &Member, route: &str, uid: &str, rid: &str) {
    if !still_holds(state, rid, route, uid).await {
        return;
    }
    tracing::debug!(%rid, to = %to.uid, %route, %uid, "telling a member what it missed");
    let audience = Audience::Only(vec![to.uid.clone()]);
    push_event(state, rid, std::slice::from_ref(to), &audience, route, uid).await;
}

/// Tells `to` again that `uid` is in the room (`present`) or not, without recording it in the
/// history (the first telling is there): see `crate::recent_news`. A user who is in is told
/// as `onLeave` then `onAdd`, so that a client that got the first `onAdd` still lists it once
/// (the Pomelo chat client appends a user on every `onAdd`, and removes every copy on `onLeave`).
pub(crate) async fn tell_again(state: &ChatState, rid: &str, to: &[Member], uid: &str, present: bool) {
    let route = if present { "onAdd" } else { "onLeave" };
    if to.is_empty() {
        return;
    }
    before_push(state).await;
    if !still_holds(state, rid, route, uid).await {
        return;
    }
    let user = user_name(uid, rid);
    let routes: &[&str] = if present {
        &["onLeave", "onAdd"]
    } else {
        &["onLeave"]
    };
    // Nothing is recorded: the audience is not read.
    let audience = Audience::All;
    for &route in routes {
        let Ok(body) = serde_json::to_vec(&MemberEvent { route, user }) else {
            return;
        };
        if let Err(e) = push(state, rid, route, &body, To::Members(to, &audience), None, None).await {
            tracing::warn!(%rid, %route, error = %e, "cannot tell news again");
            return;
        }
    }
}

/// Pushes to `to`, in order and with their offsets, the room's messages for it after `since`:
/// what it missed while its connector was purged and its session lived on. Run in the room's
/// job, so that they come before anything pushed after. False when the history cannot give
/// them all (off, failing, trimmed, or in another epoch by now): nothing is pushed then; or
/// when a push fails on the way (those before it went).
pub async fn catch_up(state: &ChatState, to: &Member, rid: &str, since: &Position) -> bool {
    before_push(state).await;
    if !crate::takeover::before_append(state, rid).await {
        return false;
    }
    let recovery = match state.history.recover(rid, &to.uid, Some(since)).await {
        Ok(Some(r)) if r.recovered => r,
        Ok(_) => return false,
        Err(e) => {
            tracing::warn!(%rid, uid = %to.uid, error = %e, "cannot read what a member missed");
            return false;
        }
    };
    tracing::debug!(%rid, uid = %to.uid, since = since.offset, missed = recovery.messages.len(), "catching a member up");
    let audience = Audience::Only(vec![to.uid.clone()]);
    for m in &recovery.messages {
        let to = To::Members(std::slice::from_ref(to), &audience);
        if let Err(e) = push(state, rid, &m.route, &m.body, to, Some(m.offset), None).await {
            tracing::warn!(%rid, error = %e, "cannot push what a member missed");
            return false;
        }
    }
    true
}

/// Pushes `onLeave` for `uid` to whoever is still in `channel`.
pub async fn announce_leave(state: &ChatState, channel: &Channel, uid: &str) {
    if !still_holds(state, channel.name(), "onLeave", uid).await {
        return;
    }
    match channel.members().await {
        Ok(members) => {
            tracing::debug!(rid = %channel.name(), %uid, to = members.len(), "onLeave");
            let audience = Audience::Except(uid.to_owned());
            push_event(state, channel.name(), &members, &audience, "onLeave", uid).await;
        }
        Err(e) => tracing::warn!(error = %e, "cannot read members for onLeave"),
    }
}

/// Records news of `uid` on `route` in the history and pushes it to `to`. Pushed even when the
/// history write fails (without an offset); but when the job stalled before the push and the
/// news no longer holds (see [`still_holds`]), it is withdrawn from the history and not pushed:
/// whoever changed the room since told the members, and may have written before or after it.
/// Returns its offset, when it was recorded and still holds.
async fn push_event(
    state: &ChatState,
    rid: &str,
    to: &[Member],
    audience: &Audience,
    route: &str,
    uid: &str,
) -> Option<u64> {
    let user = user_name(uid, rid);
    let Ok(body) = serde_json::to_vec(&MemberEvent { route, user }) else {
        return None;
    };
    let mut fresh: Option<Vec<Member>> = None;
    // Unsettled, it is pushed without an offset (and not kept), as when the write fails.
    let position = if crate::takeover::before_append(state, rid).await {
        match state
            .history
            .append_kept_by(rid, route, &body, audience, state.incarnation)
            .await
        {
            Ok(Some((position, other))) => {
                // News for the whole room, and another server wrote it since this one took
                // it over: its members are read afresh (see `written_elsewhere`).
                if other && matches!(audience, Audience::Except(_)) {
                    another_wrote(state, rid);
                    fresh = state
                        .channels
                        .channel(rid)
                        .members()
                        .await
                        .ok()
                        .map(|all| all.into_iter().filter(|m| m.uid != uid).collect());
                }
                Some(position)
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(%rid, %route, error = %e, "history write failed; pushed without an offset");
                None
            }
        }
    } else {
        None
    };
    let to = fresh.as_deref().unwrap_or(to);
    before_push(state).await;
    if !still_holds(state, rid, route, uid).await {
        // Stale news: whoever changed the room since may have written after it, and a
        // recovering client must not replay it last.
        if let Some(p) = &position {
            match state.history.withdraw(rid, &p.epoch, &[p.offset]).await {
                Ok(0) => {}
                Ok(kept) => kept_for_recovery(state, rid, kept).await,
                Err(e) => tracing::warn!(%rid, %route, error = %e, "cannot withdraw stale news"),
            }
        }
        return None;
    }
    let offset = position.map(|p| p.offset);
    // Nobody to tell now; a member who recovers later still hears of it.
    if to.is_empty() {
        return offset;
    }
    state.news.told(rid, uid, route == "onAdd");
    if let Err(e) = push(state, rid, route, &body, To::Members(to, audience), offset, None).await {
        tracing::warn!(%route, error = %e, "member event push failed");
    }
    offset
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use shaddock_bus::Bus;
    use shaddock_channel::{ChannelService, ChannelStore, Member};

    use shaddock_history::{Audience, History, Retention};

    use super::{agrees_with_store, may_have_stalled, overtaken_in, user_name};

    #[tokio::test(start_paused = true)]
    async fn a_job_may_have_stalled_once_it_has_run_a_third_of_the_lapse() {
        let lapse = Duration::from_millis(3000);
        let began = tokio::time::Instant::now();
        assert!(!may_have_stalled(None, lapse), "outside a room's job");
        tokio::time::advance(Duration::from_millis(999)).await;
        assert!(!may_have_stalled(Some(began), lapse));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(may_have_stalled(Some(began), lapse));
    }

    #[tokio::test]
    async fn news_is_checked_against_the_store_as_it_is_now_not_as_cached() {
        let channels = ChannelService::new(ChannelStore::memory(), Bus::local(), "t", Duration::from_secs(1));
        let room = channels.channel("r");
        let old = Member::new("u*r".to_owned(), "connector-1");
        room.add(&old).await.unwrap();
        // The room as this server last cached it: u is in.
        assert_eq!(room.members().await.unwrap().len(), 1);
        assert!(agrees_with_store(&channels, "r", "onAdd", "u*r").await.unwrap());
        assert!(!agrees_with_store(&channels, "r", "onLeave", "u*r").await.unwrap());
        // Another owner took u out while this one stalled: its cache still says in.
        channels.store().leave("r", &old).await.unwrap();
        assert!(agrees_with_store(&channels, "r", "onLeave", "u*r").await.unwrap());
        assert!(!agrees_with_store(&channels, "r", "onAdd", "u*r").await.unwrap());
        // u came back through another connector: a late onLeave of its old session is wrong.
        channels
            .store()
            .add("r", &Member::new("u*r".to_owned(), "connector-2"))
            .await
            .unwrap();
        assert!(!agrees_with_store(&channels, "r", "onLeave", "u*r").await.unwrap());
        assert!(agrees_with_store(&channels, "r", "onAdd", "u*r").await.unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_batch_the_room_went_on_without_is_withdrawn_and_not_pushed() {
        let lapse = Duration::from_millis(3000);
        let history = History::memory(Retention::default());
        let append = |n: u64| {
            let history = history.clone();
            async move {
                let body = format!("{{\"n\":{n}}}");
                history
                    .append("r", "onChat", body.as_bytes(), &Audience::All)
                    .await
                    .unwrap()
                    .unwrap()
            }
        };
        let seen = append(1).await;
        let began = tokio::time::Instant::now();
        let batch = vec![append(2).await, append(3).await];
        // Nobody wrote after it: a slow job is still the room's only writer.
        tokio::time::advance(lapse).await;
        assert_eq!(
            overtaken_in(&history, "r", &batch, Some(began), lapse, false).await,
            None
        );
        // Another owner appended after it while it stalled.
        append(4).await;
        assert_eq!(
            overtaken_in(
                &history,
                "r",
                &batch,
                Some(tokio::time::Instant::now()),
                lapse,
                false
            )
            .await,
            None,
            "a job that did not stall does not even look"
        );
        assert_eq!(
            overtaken_in(&history, "r", &batch, Some(began), lapse, false).await,
            Some(0)
        );
        let r = history.recover("r", "u", Some(&seen)).await.unwrap().unwrap();
        assert!(r.recovered);
        let offsets: Vec<u64> = r.messages.iter().map(|m| m.offset).collect();
        assert_eq!(offsets, vec![4], "recovery never gives the withdrawn batch back");
        // A batch whose senders gave up is withdrawn, stalled or not, overtaken or not.
        let late = vec![append(5).await];
        let now = Some(tokio::time::Instant::now());
        assert_eq!(
            overtaken_in(&history, "r", &late, now, lapse, true).await,
            Some(0)
        );
        let r = history.recover("r", "u", Some(&seen)).await.unwrap().unwrap();
        assert_eq!(r.messages.iter().map(|m| m.offset).collect::<Vec<_>>(), vec![4]);
        assert!(r.recovered);
    }

    #[tokio::test]
    async fn a_batch_without_history_is_too_late_only_once_its_senders_gave_up() {
        let off = History::Off;
        let lapse = Duration::from_millis(3000);
        assert_eq!(overtaken_in(&off, "r", &[], None, lapse, true).await, Some(0));
        assert_eq!(overtaken_in(&off, "r", &[], None, lapse, false).await, None);
    }

    #[test]
    fn a_history_in_another_epoch_went_on_without_the_batch() {
        let mine = shaddock_history::Position {
            epoch: "e1".into(),
            offset: 7,
        };
        let at = |epoch: &str, offset| shaddock_history::Position {
            epoch: epoch.into(),
            offset,
        };
        assert!(!super::went_on_without(&mine, &at("e1", 7)));
        assert!(super::went_on_without(&mine, &at("e1", 8)));
        assert!(
            super::went_on_without(&mine, &at("e2", 1)),
            "the history was lost meanwhile"
        );
    }

    #[test]
    fn the_user_name_is_the_uid_without_its_room() {
        assert_eq!(user_name("alice*room1", "room1"), "alice");
        assert_eq!(user_name("a*b*room", "room"), "a*b");
        assert_eq!(user_name("x*r*r", "r*r"), "x");
        assert_eq!(user_name("odd", "room"), "odd");
    }
}
