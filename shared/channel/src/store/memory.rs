//! The channel store in memory, for the single-process build and tests.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use parking_lot::Mutex;

use super::{Added, Member, Store};
use crate::ChannelError;

/// Membership held in this process.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    epoch: bool,
    /// name -> uid -> stored member.
    channels: HashMap<String, HashMap<String, String>>,
    /// sid -> channel names.
    by_sid: HashMap<String, HashSet<String>>,
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
        let outcome = match members.get(&member.uid) {
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

    async fn leave(&self, name: &str, uid: &str, only: Option<&Member>) -> Result<bool, ChannelError> {
        let mut inner = self.inner.lock();
        let Some(members) = inner.channels.get_mut(name) else {
            return Ok(false);
        };
        match (members.get(uid), only.map(Member::stored)) {
            (Some(have), Some(want)) if *have != want => Ok(false),
            (Some(_), _) => Ok(members.remove(uid).is_some()),
            (None, _) => Ok(false),
        }
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
        if let Some(s) = self.inner.lock().by_sid.get_mut(sid) {
            s.remove(name);
        }
        Ok(())
    }

    async fn claim_epoch(&self) -> Result<bool, ChannelError> {
        let mut inner = self.inner.lock();
        let missing = !inner.epoch;
        inner.epoch = true;
        Ok(missing)
    }

    async fn ping(&self) -> bool {
        true
    }
}
