//! The connector's side of membership rounds: every `registry.sync_ms`, and at once when a chat
//! server asks (`sessionRemote.resync`), tell each chat server who this connector really holds
//! in the rooms it owns. The whole state machine is described in the chat server's
//! `membership` module; this side only takes the list.

use std::collections::BTreeMap;
use std::time::Duration;

use shaddock_remote::chat_remote::{ChatRemote, Sync, SyncMember, SyncRoom};
use shaddock_remote::{Remote, RpcClient};
use shaddock_server::SessionService;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Live members per part: keeps one call well under NATS' max_payload (1 MB by default).
const PART_MEMBERS: usize = 2_000;

/// Who this connector is.
#[derive(Debug, Clone)]
pub struct Connector {
    pub sid: String,
    pub incarnation: u64,
    pub sessions: SessionService,
}

/// Runs rounds every `every`, and when `asked` says so (with whether to announce), until
/// `token` is cancelled.
pub async fn run(
    rpc: RpcClient,
    me: Connector,
    every: Duration,
    mut asked: mpsc::UnboundedReceiver<bool>,
    token: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut round = 0u64;
    loop {
        let announce = tokio::select! {
            _ = token.cancelled() => return,
            _ = tick.tick() => true,
            Some(announce) = asked.recv() => announce,
        };
        // A draining connector hands its sessions back one by one (each kick holds the
        // member's place): a round would race those kicks and announce them as leaves.
        if rpc.registry().is_draining() {
            continue;
        }
        round += 1;
        send_round(&rpc, &me, round, announce).await;
    }
}

/// One round: the list is taken now, then sent to every chat server in parts.
async fn send_round(rpc: &RpcClient, me: &Connector, round: u64, announce: bool) {
    // The newest bind before the list: a bind the list misses is newer, and is left alone.
    let newest_entry = me.sessions.newest_entry();
    let list = rpc.registry().list();
    let server_type = <ChatRemote as Remote>::SERVER_TYPE;
    let chats: Vec<String> = list.servers(server_type).iter().map(|s| s.id.clone()).collect();
    let mut by_chat: BTreeMap<&str, BTreeMap<String, Vec<SyncMember>>> = BTreeMap::new();
    for s in me.sessions.bound() {
        let (Some(uid), Some(rid)) = (s.uid(), s.get("rid").and_then(|v| v.as_str().map(str::to_owned)))
        else {
            continue;
        };
        let Some(owner) = list.pick(server_type, &rid) else {
            continue;
        };
        let entry = s.entry();
        by_chat
            .entry(owner.id.as_str())
            .or_default()
            .entry(rid)
            .or_default()
            .push(SyncMember { uid, entry });
    }
    for chat in &chats {
        let rooms = by_chat.remove(chat.as_str()).unwrap_or_default();
        let parts = split(rooms);
        let count = parts.len() as u32;
        for (part, rooms) in parts.into_iter().enumerate() {
            let call = Sync {
                sid: me.sid.clone(),
                incarnation: me.incarnation,
                newest_entry,
                chats: chats.clone(),
                round,
                part: part as u32,
                parts: count,
                rooms,
                announce,
            };
            // A part that fails ends this round for that chat server: the next one retries.
            if let Err(e) = rpc.call_server(chat, call).await {
                tracing::debug!(%chat, error = %e, "membership round failed");
                break;
            }
        }
    }
}

/// The rooms in parts of at most [`PART_MEMBERS`] members (a bigger room is one part alone);
/// at least one part, so a chat server hears the round even when no room of it is listed.
fn split(rooms: BTreeMap<String, Vec<SyncMember>>) -> Vec<Vec<SyncRoom>> {
    let mut parts: Vec<Vec<SyncRoom>> = vec![Vec::new()];
    let mut size = 0;
    for (rid, members) in rooms {
        if size > 0 && size + members.len() > PART_MEMBERS {
            parts.push(Vec::new());
            size = 0;
        }
        size += members.len();
        if let Some(last) = parts.last_mut() {
            last.push(SyncRoom { rid, members });
        }
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(n: usize) -> Vec<SyncMember> {
        (0..n)
            .map(|i| SyncMember {
                uid: format!("u{i}"),
                entry: i as u64,
            })
            .collect()
    }

    #[test]
    fn a_round_is_split_into_parts_that_keep_each_room_whole() {
        assert_eq!(
            split(BTreeMap::new()).len(),
            1,
            "an empty round is still one part"
        );
        let rooms: BTreeMap<String, Vec<SyncMember>> = [("a", 1500), ("b", 1000), ("c", 3000), ("d", 10)]
            .into_iter()
            .map(|(r, n)| (r.to_owned(), room(n)))
            .collect();
        let parts = split(rooms);
        let names: Vec<Vec<&str>> = parts
            .iter()
            .map(|p| p.iter().map(|r| r.rid.as_str()).collect())
            .collect();
        assert_eq!(names, vec![vec!["a"], vec!["b"], vec!["c"], vec!["d"]]);
        let sizes: Vec<usize> = parts
            .iter()
            .map(|p| p.iter().map(|r| r.members.len()).sum())
            .collect();
        assert_eq!(sizes, vec![1500, 1000, 3000, 10]);
    }
}
