//! The channel store in memory, for the single-process build and tests.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::{Added, Epoch, Member, Store};
use crate::ChannelError;

/// Membership held in this process.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    epoch: Option<String>,
    /// name -> uid -> stored member.
    channels: HashMap<String, HashMap<String, String>>,
    /// sid -> channel names.
    by_sid: HashMap<String, HashSet<String>>,
    /// (name, sid) -> purge note and when it expires.
    purged: HashMap<(String, String), (Vec<u8>, Instant)>,
}

impl Inner {
    /// `sid` has no member left in `name`; a frontend with no channel left is forgotten.
    fn forget(&mut self, sid: &str, name: &str) {
        if let Some(names) = self.by_sid.get_mut(sid) {
            names.remove(name);
            if names.is_empty() {
                self.by_sid.remove(sid);
            }
        }
    }
}

impl Store for MemoryStore {
    async fn create(&self, name: &str) -> Result<(), ChannelError> {
        self.inner.lock().channels.entry(name.to_owned()).or_default();
        Ok(())
    }

    async fn exists(&self, name: &str) -> Result<bool, ChannelError> {
        Ok(self.inner.lock().channels.contains_key(name))
    }

    async fn add(&self, name: &str, member: &Member) -> Result<Added, ChannelError> {
        let mut inner = self.inner.lock();
        let members = inner.channels.entry(name.to_owned()).or_default();
        let held_prefix = format!("{}#", super::HELD_SID);
        let outcome = match members.get(&member.uid) {
            Some(v) if v.starts_with(&held_prefix) && !member.is_held() => Added::Resumed,
            Some(v) if v.starts_with(&held_prefix) => Added::Replaced,
            Some(v) if !v.starts_with(&member.sid_prefix()) => return Ok(Added::Taken),
            Some(_) => Added::Replaced,
            None => Added::New,
        };
        members.insert(member.uid.clone(), member.stored());
        inner
            .by_sid
            .entry(member.sid.clone())
            .or_default()
            .insert(name.to_owned());
        Ok(outcome)
    }

    async fn leave(&self, name: &str, member: &Member) -> Result<bool, ChannelError> {
        let mut inner = self.inner.lock();
        let Some(members) = inner.channels.get_mut(name) else {
            return Ok(false);
        };
        if members.get(&member.uid) != Some(&member.stored()) {
            return Ok(false);
        }
        members.remove(&member.uid);
        let prefix = member.sid_prefix();
        let sid_stays = members.values().any(|v| v.starts_with(&prefix));
        if members.is_empty() {
            inner.channels.remove(name);
        }
        if !sid_stays {
            inner.forget(&member.sid, name);
        }
        Ok(true)
    }

    async fn members(&self, name: &str) -> Result<Vec<Member>, ChannelError> {
        Ok(self
            .inner
            .lock()
            .channels
            .get(name)
            .map(|c| c.iter().map(|(u, v)| Member::from_stored(u.clone(), v)).collect())
            .unwrap_or_default())
    }

    async fn member(&self, name: &str, uid: &str) -> Result<Option<Member>, ChannelError> {
        let inner = self.inner.lock();
        let value = inner.channels.get(name).and_then(|c| c.get(uid));
        Ok(value.map(|v| Member::from_stored(uid.to_owned(), v)))
    }

    async fn destroy(&self, name: &str) -> Result<(), ChannelError> {
        self.inner.lock().channels.remove(name);
        Ok(())
    }

    async fn channels(&self) -> Result<Vec<String>, ChannelError> {
        Ok(self.inner.lock().channels.keys().cloned().collect())
    }

    async fn channels_of_sid(&self, sid: &str) -> Result<Vec<String>, ChannelError> {
        let inner = self.inner.lock();
        Ok(inner
            .by_sid
            .get(sid)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default())
    }

    async fn forget_sid_channel(&self, sid: &str, name: &str) -> Result<(), ChannelError> {
        self.inner.lock().forget(sid, name);
        Ok(())
    }

    async fn sids(&self) -> Result<Vec<String>, ChannelError> {
        Ok(self.inner.lock().by_sid.keys().cloned().collect())
    }

    async fn claim_epoch(&self, token: &str) -> Result<Epoch, ChannelError> {
        let mut inner = self.inner.lock();
        let claimed = inner.epoch.is_none();
        let mark = inner.epoch.get_or_insert_with(|| token.to_owned()).clone();
        Ok(Epoch { claimed, mark })
    }

    async fn ping(&self) -> bool {
        true
    }

    async fn keep_purged(
        &self,
        name: &str,
        sid: &str,
        note: &[u8],
        ttl: Duration,
    ) -> Result<(), ChannelError> {
        let mut inner = self.inner.lock();
        let now = Instant::now();
        inner.purged.retain(|_, (_, until)| *until > now);
        let until = now.checked_add(ttl).unwrap_or(now);
        inner
            .purged
            .insert((name.to_owned(), sid.to_owned()), (note.to_vec(), until));
        Ok(())
    }

    async fn purged(&self, name: &str, sid: &str) -> Result<Option<Vec<u8>>, ChannelError> {
        let inner = self.inner.lock();
        let key = (name.to_owned(), sid.to_owned());
        Ok(inner
            .purged
            .get(&key)
            .filter(|(_, until)| *until > Instant::now())
            .map(|(note, _)| note.clone()))
    }

    async fn forget_purged(&self, name: &str, sid: &str) -> Result<(), ChannelError> {
        self.inner
            .lock()
            .purged
            .remove(&(name.to_owned(), sid.to_owned()));
        Ok(())
    }
}
