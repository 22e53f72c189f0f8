//! Pomelo's `SessionService` on a frontend: every socket is a [`Session`] with an id (unique
//! on this frontend; "sid" always means a frontend's server id, never this), an optional
//! bound uid and settings. Outbound packages go through a bounded queue per socket; a full
//! queue means the client is too slow, and it is closed rather than allowed to slow anyone
//! else.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use serde_json::{Map, Value};
use shaddock_bus::{PushNo, SessionExport};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::service::outbox::{Outbox, QueueError};
use crate::service::push_numbers::PushNumbers;

/// Why a bind was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BindError {
    #[error("session is already bound to another uid")]
    AlreadyBound,
    #[error("session is closed")]
    Closed,
    #[error("another session of this frontend is bound to that uid")]
    Taken,
}

/// All sessions of this frontend.
#[derive(Debug, Clone)]
pub struct SessionService {
    inner: Arc<ServiceInner>,
}

#[derive(Debug)]
struct ServiceInner {
    frontend_id: String,
    metrics: Arc<Metrics>,
    sessions: RwLock<HashMap<u64, Session>>,
    by_uid: RwLock<HashMap<String, Vec<Session>>>,
    next_id: AtomicU64,
    /// Numbers binds, in order (see [`Session::entry`]).
    next_entry: AtomicU64,
    /// Slow clients closed because their queue was full.
    slow_kicks: AtomicU64,
    /// The pushes delivered here, by sender.
    push_numbers: PushNumbers,
}

/// One client connection. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Session {
    inner: Arc<SessionInner>,
}

#[derive(Debug)]
struct SessionInner {
    id: u64,
    frontend_id: String,
    tx: Outbox,
    closing: CancellationToken,
    working: AtomicBool,
    /// Entered with `recover`: its pushes carry their room offset.
    recover: AtomicBool,
    /// Pushes are held (see [`Session::hold_pushes`]).
    holding: AtomicBool,
    held: Mutex<Option<Vec<Held>>>,
    /// Held pushes at or below this offset are dropped on release (0: none): see
    /// [`Session::skip_held_through`].
    held_floor: AtomicU64,
    /// Held pushes of this sender at or below this number are dropped on release: see
    /// [`Session::skip_held_sent_through`].
    held_fence: Mutex<Option<PushNo>>,
    state: Mutex<SessionState>,
    service: Weak<ServiceInner>,
}

/// A held push, with its room offset and its number when it has them.
type Held = (Bytes, Option<u64>, Option<PushNo>);

/// Pushes held for one session at most while a request runs; past it the client is closed
/// as too slow, as when its queue is full.
const HELD_MAX: usize = 4096;

#[derive(Debug, Default)]
struct SessionState {
    uid: Option<String>,
    /// The number of its bind (0 while unbound).
    entry: u64,
    /// Why it was kicked, if it was.
    kick_reason: Option<String>,
    /// A list, not a map: a session holds one or two settings, and an empty `Vec` costs
    /// nothing where a map's first entry costs a 600-byte node (heaptrack, idle connector).
    settings: Vec<(String, Value)>,
}

impl SessionService {
    pub fn new(frontend_id: &str, metrics: Arc<Metrics>) -> Self {
        Self {
            inner: Arc::new(ServiceInner {
                frontend_id: frontend_id.to_owned(),
                metrics,
                sessions: RwLock::new(HashMap::new()),
                by_uid: RwLock::new(HashMap::new()),
                next_id: AtomicU64::new(1),
                next_entry: AtomicU64::new(1),
                slow_kicks: AtomicU64::new(0),
                push_numbers: PushNumbers::default(),
            }),
        }
    }

    /// A new session writing to `tx`; `closing` ends its socket.
    pub fn create(&self, tx: Outbox, closing: CancellationToken) -> Session {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let session = Session {
            inner: Arc::new(SessionInner {
                id,
                frontend_id: self.inner.frontend_id.clone(),
                tx,
                closing,
                working: AtomicBool::new(false),
                recover: AtomicBool::new(false),
                holding: AtomicBool::new(false),
                held: Mutex::new(None),
                held_floor: AtomicU64::new(0),
                held_fence: Mutex::new(None),
                state: Mutex::new(SessionState::default()),
                service: Arc::downgrade(&self.inner),
            }),
        };
        self.inner.sessions.write().insert(id, session.clone());
        session
    }

    /// Undoes a bind (e.g. when the backend refused the login).
    pub fn unbind(&self, session: &Session) {
        let uid = {
            let mut state = session.inner.state.lock();
            state.entry = 0;
            state.uid.take()
        };
        let Some(uid) = uid else {
            return;
        };
        let mut by_uid = self.inner.by_uid.write();
        if let Some(list) = by_uid.get_mut(&uid) {
            list.retain(|s| s.id() != session.id());
            if list.is_empty() {
                by_uid.remove(&uid);
            }
        }
    }

    /// Forgets a closed session.
    pub fn remove(&self, session: &Session) {
        self.inner.sessions.write().remove(&session.id());
        if let Some(uid) = session.uid() {
            let mut by_uid = self.inner.by_uid.write();
            if let Some(list) = by_uid.get_mut(&uid) {
                list.retain(|s| s.id() != session.id());
                if list.is_empty() {
                    by_uid.remove(&uid);
                }
            }
        }
    }

    pub fn get(&self, id: u64) -> Option<Session> {
        self.inner.sessions.read().get(&id).cloned()
    }

    /// Every session bound to `uid` on this frontend (`getByUid`).
    pub fn get_by_uid(&self, uid: &str) -> Vec<Session> {
        self.inner.by_uid.read().get(uid).cloned().unwrap_or_default()
    }

    /// Queues `pkg` on every session of `uid`; false when the uid has none here.
    pub fn send_to_uid(&self, uid: &str, pkg: &Bytes) -> bool {
        self.send_to_uids(&[uid], pkg).is_empty()
    }

    /// Queues the push `pkg` on every session of each uid, under one lock; returns the uids
    /// with no session here (Pomelo's failIds).
    pub fn send_to_uids<'a>(&self, uids: &[&'a str], pkg: &Bytes) -> Vec<&'a str> {
        self.push_to_uids(uids, pkg, None, None, || None)
    }

    /// The pushes delivered here, by sender (see [`PushNo`]).
    pub fn push_numbers(&self) -> &PushNumbers {
        &self.inner.push_numbers
    }

    /// As [`SessionService::send_to_uids`], but sessions that entered with `recover` get the
    /// package `recovering` makes (the body with its offset), made once at most.
    /// `offset` is the push's room offset, `no` its sender's number, if it has them.
    pub fn push_to_uids<'a>(
        &self,
        uids: &[&'a str],
        pkg: &Bytes,
        offset: Option<u64>,
        no: Option<PushNo>,
        recovering: impl FnOnce() -> Option<Bytes>,
    ) -> Vec<&'a str> {
        let mut recovering = Some(recovering);
        let mut with_offset: Option<Bytes> = None;
        let by_uid = self.inner.by_uid.read();
        let mut fails = Vec::new();
        for &uid in uids {
            match by_uid.get(uid) {
                Some(list) if !list.is_empty() => {
                    for s in list {
                        if s.inner.recover.load(Ordering::Relaxed) {
                            if let Some(make) = recovering.take() {
                                with_offset = make();
                            }
                            s.push_at(with_offset.as_ref().unwrap_or(pkg).clone(), offset, no);
                        } else {
                            s.push_at(pkg.clone(), offset, no);
                        }
                    }
                }
                _ => fails.push(uid),
            }
        }
        fails
    }

    /// Queues the push `pkg` on every working session; returns how many.
    pub fn send_to_all(&self, pkg: &Bytes) -> usize {
        let sessions = self.inner.sessions.read();
        let mut n = 0;
        for s in sessions.values().filter(|s| s.is_working()) {
            s.push(pkg.clone());
            n += 1;
        }
        n
    }

    /// Kicks every session of `uid` with `reason`; returns how many.
    pub fn kick_by_uid(&self, uid: &str, reason: &str) -> usize {
        let list = self.get_by_uid(uid);
        for s in &list {
            s.kick(reason);
        }
        list.len()
    }

    /// Closes, without a KICK, the open session of `uid` bound as `entry` if it entered with
    /// `recover`: its client takes it for a drop, comes back and recovers. True if it did.
    pub fn drop_recovering(&self, uid: &str, entry: u64) -> bool {
        let list = self.get_by_uid(uid);
        let found = list
            .iter()
            .find(|s| s.entry() == entry && s.recovers() && !s.is_closed());
        if let Some(s) = found {
            tracing::debug!(session.id = s.id(), %uid, "dropped: it missed what it can recover");
            s.close();
        }
        found.is_some()
    }

    /// Closes, without a KICK, every session that entered with `recover` (see
    /// [`SessionService::drop_recovering`]). Returns how many.
    pub fn drop_all_recovering(&self) -> usize {
        self.drop_recovering_where(|_| true)
    }

    /// [`SessionService::drop_all_recovering`], for the sessions `which` picks.
    pub fn drop_recovering_where(&self, which: impl Fn(&Session) -> bool) -> usize {
        let sessions: Vec<Session> = self.inner.sessions.read().values().cloned().collect();
        let mut n = 0;
        for s in sessions
            .iter()
            .filter(|s| s.recovers() && !s.is_closed() && which(s))
        {
            s.close();
            n += 1;
        }
        n
    }

    /// Kicks everybody (graceful shutdown).
    pub fn kick_all(&self, reason: &str) -> usize {
        let all = self.all();
        for s in &all {
            s.kick(reason);
        }
        all.len()
    }

    /// Every session.
    pub fn all(&self) -> Vec<Session> {
        self.inner.sessions.read().values().cloned().collect()
    }

    /// Every session bound to a uid.
    pub fn bound(&self) -> Vec<Session> {
        self.inner.by_uid.read().values().flatten().cloned().collect()
    }

    pub fn count(&self) -> usize {
        self.inner.sessions.read().len()
    }

    /// The number of the latest bind. A session bound later has a greater [`Session::entry`];
    /// one bound before and missing from a later [`SessionService::bound`] has closed.
    pub fn newest_entry(&self) -> u64 {
        self.inner.next_entry.load(Ordering::SeqCst).saturating_sub(1)
    }

    pub fn bound_count(&self) -> usize {
        self.inner.by_uid.read().len()
    }

    pub fn slow_kicks(&self) -> u64 {
        self.inner.slow_kicks.load(Ordering::Relaxed)
    }

    pub fn frontend_id(&self) -> &str {
        &self.inner.frontend_id
    }
}

impl Session {
    /// The id of this socket on its frontend.
    pub fn id(&self) -> u64 {
        self.inner.id
    }

    pub fn frontend_id(&self) -> &str {
        &self.inner.frontend_id
    }

    pub fn uid(&self) -> Option<String> {
        self.inner.state.lock().uid.clone()
    }

    /// The number of this session's bind on its frontend: binds are numbered in order, so a
    /// list of sessions taken after [`SessionService::newest_entry`] tells a closed session
    /// from one bound later. 0 while unbound.
    pub fn entry(&self) -> u64 {
        self.inner.state.lock().entry
    }

    /// Binds this session to `uid` (Pomelo's `session.bind`). Binding again to the same uid
    /// is fine; to another uid is refused.
    pub fn bind(&self, uid: &str) -> Result<(), BindError> {
        self.bind_checked(uid, false)
    }

    /// Binds this session to `uid` unless another session of this frontend holds it, in one
    /// step: two sockets entering the same uid at once cannot both succeed.
    pub fn bind_exclusive(&self, uid: &str) -> Result<(), BindError> {
        self.bind_checked(uid, true)
    }

    fn bind_checked(&self, uid: &str, exclusive: bool) -> Result<(), BindError> {
        if self.is_closed() {
            return Err(BindError::Closed);
        }
        let Some(service) = self.inner.service.upgrade() else {
            return Err(BindError::Closed);
        };
        let mut by_uid = service.by_uid.write();
        {
            let mut state = self.inner.state.lock();
            match &state.uid {
                Some(u) if u == uid => return Ok(()),
                Some(_) => return Err(BindError::AlreadyBound),
                None if exclusive && by_uid.get(uid).is_some_and(|l| !l.is_empty()) => {
                    return Err(BindError::Taken);
                }
                None => {
                    state.uid = Some(uid.to_owned());
                    // Numbered under the lock `bound` reads with: see `newest_entry`.
                    state.entry = service.next_entry.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
        {
            by_uid.entry(uid.to_owned()).or_default().push(self.clone());
            // The socket may have closed since the check above, and its removal would then
            // have missed this entry: undo it here instead.
            if self.is_closed() {
                if let Some(list) = by_uid.get_mut(uid) {
                    list.retain(|s| s.id() != self.id());
                    if list.is_empty() {
                        by_uid.remove(uid);
                    }
                }
                return Err(BindError::Closed);
            }
        }
        Ok(())
    }

    pub fn set(&self, key: &str, value: Value) {
        let mut state = self.inner.state.lock();
        match state.settings.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = value,
            None => {
                // One more at a time: a first push would make room for four.
                state.settings.reserve_exact(1);
                state.settings.push((key.to_owned(), value));
            }
        }
    }

    pub fn get(&self, key: &str) -> Option<Value> {
        let state = self.inner.state.lock();
        state
            .settings
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    }

    /// What a backend receives with a forwarded request (`session.export()`).
    pub fn export(&self) -> SessionExport {
        let state = self.inner.state.lock();
        SessionExport {
            frontend_id: self.inner.frontend_id.clone(),
            id: self.inner.id,
            uid: state.uid.clone(),
            settings: state.settings.iter().cloned().collect::<Map<String, Value>>(),
        }
    }

    /// Queues a package. A full queue closes the session: a slow client never slows others.
    pub fn send(&self, pkg: Bytes) -> bool {
        match self.inner.tx.try_send(pkg) {
            Ok(()) => true,
            Err(QueueError::Full) => {
                if !self.inner.closing.is_cancelled() {
                    if let Some(service) = self.inner.service.upgrade() {
                        service.slow_kicks.fetch_add(1, Ordering::Relaxed);
                        service.metrics.queue_drops.inc();
                        service.metrics.kick("slow");
                    }
                    tracing::warn!(session.id = self.inner.id, "send queue full, closing slow client");
                    self.inner.closing.cancel();
                }
                false
            }
            Err(QueueError::Closed) => false,
        }
    }

    /// Queues a push: held while a request that asked for it runs (see
    /// [`Session::hold_pushes`]), else at once.
    pub fn push(&self, pkg: Bytes) -> bool {
        self.push_at(pkg, None, None)
    }

    /// As [`Session::push`], for a push with its room offset. Nothing once the session is
    /// closing: a session dropped so that its client recovers must get nothing newer than
    /// what it missed, or its recovery would start past it.
    pub fn push_at(&self, pkg: Bytes, offset: Option<u64>, no: Option<PushNo>) -> bool {
        if self.is_closed() {
            return false;
        }
        if self.inner.holding.load(Ordering::Acquire) {
            let mut held = self.inner.held.lock();
            if let Some(list) = held.as_mut() {
                if list.len() >= HELD_MAX {
                    drop(held);
                    tracing::warn!(
                        session.id = self.inner.id,
                        "too many pushes held, closing slow client"
                    );
                    self.inner.closing.cancel();
                    return false;
                }
                list.push((pkg, offset, no));
                return true;
            }
        }
        self.send(pkg)
    }

    /// Holds this session's pushes until [`Session::release_pushes`]: a recovering enter's
    /// answer (with its offset) must reach the client before the pushes that follow it.
    pub fn hold_pushes(&self) {
        let mut held = self.inner.held.lock();
        held.get_or_insert_with(Vec::new);
        self.inner.holding.store(true, Ordering::Release);
    }

    /// On release, drops the held pushes at or below `offset`: sent before this session was
    /// in its room (the offset of its `onAdd`), or given by a recovering enter's answer (its
    /// offset). Pushes routed by uid reach every session of the uid on this connector, so
    /// while the enter ran this session also got what the room sent an earlier session of
    /// the same user (one closed while its connector or chat server was paused, say):
    /// released after the answer, they would arrive behind it, out of place (an `onLeave` of
    /// someone the answer lists as in) or twice.
    pub fn skip_held_through(&self, offset: u64) {
        self.inner.held_floor.store(offset, Ordering::Release);
    }

    /// On release, drops the held pushes that sender `no.from` numbered `no.n` or lower: it
    /// sent them before this session was in its room (to an earlier session of the same
    /// uid), whether or not they carry an offset (news told again carries none).
    pub fn skip_held_sent_through(&self, no: PushNo) {
        *self.inner.held_fence.lock() = Some(no);
    }

    /// Queues the held pushes, in order, and stops holding. Called once a request's answer is
    /// queued; nothing when nothing is held.
    pub fn release_pushes(&self) {
        if !self.inner.holding.load(Ordering::Acquire) {
            return;
        }
        // Sent under the lock: a push arriving meanwhile waits, and so keeps its place.
        let mut held = self.inner.held.lock();
        let floor = self.inner.held_floor.swap(0, Ordering::AcqRel);
        let fence = self.inner.held_fence.lock().take();
        for (pkg, offset, no) in held.take().unwrap_or_default() {
            if floor > 0 && offset.is_some_and(|o| o <= floor) {
                continue;
            }
            if let (Some(fence), Some(no)) = (fence, no)
                && no.from == fence.from
                && no.n <= fence.n
            {
                continue;
            }
            self.send(pkg);
        }
        self.inner.holding.store(false, Ordering::Release);
    }

    /// Whether this session's pushes carry their room offset (it entered with `recover`).
    pub fn set_recover(&self, on: bool) {
        self.inner.recover.store(on, Ordering::Relaxed);
    }

    pub fn recovers(&self) -> bool {
        self.inner.recover.load(Ordering::Relaxed)
    }

    /// Sends a KICK package with `reason`, then closes the socket.
    pub fn kick(&self, reason: &str) {
        if self.is_closed() {
            return;
        }
        self.inner.state.lock().kick_reason = Some(reason.to_owned());
        let _ = self.inner.tx.try_send(shaddock_protocol::package::kick(reason));
        if let Some(service) = self.inner.service.upgrade() {
            service.metrics.kick(reason);
        }
        self.inner.closing.cancel();
    }

    /// Why this session was kicked (`None` if it was not).
    pub fn kick_reason(&self) -> Option<String> {
        self.inner.state.lock().kick_reason.clone()
    }

    /// Closes the socket without a KICK.
    pub fn close(&self) {
        self.inner.closing.cancel();
    }

    pub fn is_closed(&self) -> bool {
        self.inner.closing.is_cancelled()
    }

    pub(crate) fn set_working(&self) {
        self.inner.working.store(true, Ordering::Relaxed);
    }

    pub fn is_working(&self) -> bool {
        self.inner.working.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::outbox::outbox;

    #[test]
    fn bind_indexes_by_uid_and_remove_forgets() {
        let svc = SessionService::new("connector-1", Default::default());
        let (tx, mut rx) = outbox(4);
        let s = svc.create(tx, CancellationToken::new());
        s.bind("a*r").unwrap();
        assert_eq!(s.bind("b*r"), Err(BindError::AlreadyBound));
        assert!(svc.send_to_uid("a*r", &Bytes::from_static(b"x")));
        assert_eq!(rx.try_recv().unwrap(), Bytes::from_static(b"x"));
        assert_eq!(s.export().uid.as_deref(), Some("a*r"));
        svc.remove(&s);
        assert!(!svc.send_to_uid("a*r", &Bytes::from_static(b"x")));
        assert_eq!(svc.count(), 0);
    }

    #[test]
    fn a_setting_set_again_is_replaced_and_every_setting_is_exported() {
        let svc = SessionService::new("connector-1", Default::default());
        let (tx, _rx) = outbox(4);
        let s = svc.create(tx, CancellationToken::new());
        s.set("rid", Value::from("a"));
        s.set("level", Value::from(3));
        s.set("rid", Value::from("b"));
        assert_eq!(s.get("rid"), Some(Value::from("b")));
        assert_eq!(s.get("none"), None);
        let exported = s.export().settings;
        assert_eq!(exported.len(), 2);
        assert_eq!(exported["rid"], Value::from("b"));
        assert_eq!(exported["level"], Value::from(3));
    }

    #[test]
    fn a_full_queue_closes_only_that_session() {
        let svc = SessionService::new("connector-1", Default::default());
        let (tx, _rx) = outbox(1);
        let slow = svc.create(tx, CancellationToken::new());
        let (tx2, _rx2) = outbox(8);
        let fine = svc.create(tx2, CancellationToken::new());
        assert!(slow.send(Bytes::from_static(b"1")));
        assert!(!slow.send(Bytes::from_static(b"2")));
        assert!(slow.is_closed());
        assert!(fine.send(Bytes::from_static(b"1")));
        assert!(!fine.is_closed());
        assert_eq!(svc.slow_kicks(), 1);
    }

    #[test]
    fn held_pushes_follow_the_answer_in_order_and_recovering_sessions_get_their_own_package() {
        let svc = SessionService::new("connector-1", Default::default());
        let (tx, mut rx) = outbox(8);
        let s = svc.create(tx, CancellationToken::new());
        s.bind("a*r").unwrap();
        let (tx2, mut rx2) = outbox(8);
        let plain = svc.create(tx2, CancellationToken::new());
        plain.bind("b*r").unwrap();
        s.set_recover(true);
        s.hold_pushes();
        let mut made = 0;
        let fails = svc.push_to_uids(
            &["a*r", "b*r", "c*r"],
            &Bytes::from_static(b"p1"),
            Some(1),
            None,
            || {
                made += 1;
                Some(Bytes::from_static(b"p1+offset"))
            },
        );
        assert_eq!(fails, vec!["c*r"]);
        assert_eq!(made, 1);
        assert_eq!(rx2.try_recv().unwrap(), Bytes::from_static(b"p1"));
        assert!(rx.try_recv().is_none(), "held");
        s.send(Bytes::from_static(b"answer"));
        s.release_pushes();
        s.push(Bytes::from_static(b"p2"));
        assert_eq!(rx.try_recv().unwrap(), Bytes::from_static(b"answer"));
        assert_eq!(rx.try_recv().unwrap(), Bytes::from_static(b"p1+offset"));
        assert_eq!(rx.try_recv().unwrap(), Bytes::from_static(b"p2"));
    }

    #[test]
    fn held_pushes_the_recovering_answer_already_covered_are_dropped_on_release() {
        let svc = SessionService::new("connector-1", Default::default());
        let (tx, mut rx) = outbox(8);
        let s = svc.create(tx, CancellationToken::new());
        s.bind("a*r").unwrap();
        s.set_recover(true);
        s.hold_pushes();
        // Sent to an earlier session of a*r before the enter; then one after it.
        for (body, offset) in [(&b"p7"[..], 7), (b"p8", 8), (b"p9", 9)] {
            svc.push_to_uids(&["a*r"], &Bytes::from_static(body), Some(offset), None, || None);
        }
        s.send(Bytes::from_static(b"answer up to 8"));
        s.skip_held_through(8);
        s.release_pushes();
        assert_eq!(rx.try_recv().unwrap(), Bytes::from_static(b"answer up to 8"));
        assert_eq!(rx.try_recv().unwrap(), Bytes::from_static(b"p9"));
        assert!(rx.try_recv().is_none());
        // The floor was for that release only.
        s.hold_pushes();
        svc.push_to_uids(&["a*r"], &Bytes::from_static(b"p1"), Some(1), None, || None);
        s.release_pushes();
        assert_eq!(rx.try_recv().unwrap(), Bytes::from_static(b"p1"));
    }

    #[test]
    fn held_pushes_their_sender_numbered_before_the_add_are_dropped_on_release_offset_or_not() {
        let svc = SessionService::new("connector-1", Default::default());
        let (tx, mut rx) = outbox(8);
        let s = svc.create(tx, CancellationToken::new());
        s.bind("a*r").unwrap();
        s.hold_pushes();
        let no = |from, n| Some(PushNo { from, n });
        // News told again (no offset) to an earlier session of a*r, then one after the add,
        // and one of another sender.
        svc.push_to_uids(
            &["a*r"],
            &Bytes::from_static(b"told again"),
            None,
            no(1, 4),
            || None,
        );
        svc.push_to_uids(&["a*r"], &Bytes::from_static(b"after"), None, no(1, 6), || None);
        svc.push_to_uids(&["a*r"], &Bytes::from_static(b"other"), None, no(2, 3), || None);
        s.send(Bytes::from_static(b"answer"));
        s.skip_held_sent_through(PushNo { from: 1, n: 5 });
        s.release_pushes();
        assert_eq!(rx.try_recv().unwrap(), Bytes::from_static(b"answer"));
        assert_eq!(rx.try_recv().unwrap(), Bytes::from_static(b"after"));
        assert_eq!(rx.try_recv().unwrap(), Bytes::from_static(b"other"));
        assert!(rx.try_recv().is_none());
        // The fence was for that release only.
        s.hold_pushes();
        svc.push_to_uids(&["a*r"], &Bytes::from_static(b"p1"), None, no(1, 2), || None);
        s.release_pushes();
        assert_eq!(rx.try_recv().unwrap(), Bytes::from_static(b"p1"));
    }

    #[test]
    fn only_recovering_sessions_are_dropped_and_without_a_kick() {
        let svc = SessionService::new("connector-1", Default::default());
        let (tx, mut rx) = outbox(4);
        let recovering = svc.create(tx, CancellationToken::new());
        recovering.bind("a*r").unwrap();
        recovering.set_recover(true);
        let (tx2, _rx2) = outbox(4);
        let plain = svc.create(tx2, CancellationToken::new());
        plain.bind("b*r").unwrap();
        assert!(
            !svc.drop_recovering("a*r", recovering.entry() + 1),
            "another bind"
        );
        assert!(svc.drop_recovering("a*r", recovering.entry()));
        assert!(!svc.drop_recovering("a*r", recovering.entry()), "closed already");
        assert!(!svc.drop_recovering("b*r", plain.entry()));
        assert!(!svc.drop_recovering("nobody*r", 1));
        assert!(recovering.is_closed());
        assert!(rx.try_recv().is_none(), "a drop, not a kick");
        assert!(!plain.is_closed());
    }

    #[test]
    fn kick_queues_the_kick_package_then_closes() {
        let svc = SessionService::new("connector-1", Default::default());
        let (tx, mut rx) = outbox(4);
        let s = svc.create(tx, CancellationToken::new());
        s.kick("attack");
        assert_eq!(
            &rx.try_recv().unwrap()[..],
            b"\x05\x00\x00\x13{\"reason\":\"attack\"}"
        );
        assert!(s.is_closed());
    }
}
