//! The connector: Pomelo's `app/servers/connector`. It holds the client sessions, serves
//! `connector.entryHandler.enter`, forwards every other server type's routes (chat by
//! crc32 of the session's `rid`), delivers the pushes that arrive on its subject, and tells
//! the chat server when a session closes (`chatRemote.kick`).
//!
//! # Layout
//! - `handler::entry_handler`: `enter`.
//! - [`membership`]: rounds that tell the chat servers who is really here.
//! - [`auth`]: optional login tokens.
//! - [`run`]: assembles the frontend on an `App` and serves until stopped.

use std::sync::Arc;

use shaddock_console::Console;
use shaddock_remote::Remote;
use shaddock_remote::chat_remote::{ChatRemote, Restate};
use shaddock_server::App;
use shaddock_server::frontend::Frontend;
use shaddock_server::frontend::builder::DRAIN_REASON;

pub mod auth;
pub mod handler;
pub mod membership;

/// The server type.
pub const SERVER_TYPE: &str = "connector";

/// The backend whose routes are forwarded by room (`rid`).
const CHAT: &str = <ChatRemote as Remote>::SERVER_TYPE;

/// Each time pushes to this connector may have been lost on their way (its NATS connection
/// dropped), closes every recovering session, without a KICK: nothing newer reaches a closed
/// session, so their clients come back and recover exactly what was lost (the push loop does
/// the same on the first message of a new connection, which may come before this event). A
/// stock client stays; once the connection is back, the chat servers tell its rooms' latest
/// member news again ([`ask_news_again`]), so that its list of users is right again.
async fn on_loss(
    mut losses: tokio::sync::watch::Receiver<u64>,
    sessions: shaddock_server::SessionService,
    asking: Asking,
    token: tokio_util::sync::CancellationToken,
) {
    let drop_recovering = || {
        let dropped = sessions.drop_all_recovering();
        if dropped > 0 {
            tracing::warn!(
                dropped,
                "pushes may have been lost on the way here: recovering clients dropped, to recover"
            );
        }
    };
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            changed = losses.changed() => if changed.is_err() { return },
        }
        // Asked from the first loss on: a loss while asking starts the asking again.
        let noticed = tokio::time::Instant::now();
        drop_recovering();
        loop {
            tokio::select! {
                _ = token.cancelled() => return,
                changed = losses.changed() => {
                    if changed.is_err() { return }
                    drop_recovering();
                }
                () = ask_news_again(&asking, noticed) => break,
            }
        }
    }
}

/// What [`ask_news_again`] needs.
#[derive(Debug, Clone)]
struct Asking {
    sid: String,
    bus: shaddock_bus::Bus,
    rpc: shaddock_remote::RpcClient,
}

/// How long, once the connection is back, the chat servers are asked for news again: they may
/// still be reconnecting themselves (a NATS restart), and NATS keeps nothing for a subject
/// nobody listens on.
const ASK_FOR: std::time::Duration = std::time::Duration::from_secs(10);

/// Once the connection is back, asks every chat server known then or since to tell this
/// connector's members the rooms' latest member news again (`chatRemote.restate`), each until
/// it answers.
async fn ask_news_again(asking: &Asking, noticed: tokio::time::Instant) {
    let pause = std::time::Duration::from_millis(200);
    let chats = || -> Vec<String> {
        let list = asking.rpc.registry().list();
        list.servers(CHAT).iter().map(|s| s.id.clone()).collect()
    };
    let mut to_ask: std::collections::BTreeSet<String> = chats().into_iter().collect();
    let mut answered = std::collections::BTreeSet::new();
    asking.bus.until_connected().await;
    let back = tokio::time::Instant::now();
    while back.elapsed() < ASK_FOR {
        to_ask.extend(chats());
        for id in to_ask.difference(&answered).cloned().collect::<Vec<_>>() {
            let ask = Restate {
                sid: asking.sid.clone(),
                noticed_ms_ago: noticed.elapsed().as_millis() as u64,
            };
            match asking.rpc.call_server(&id, ask).await {
                Ok(rooms) => {
                    tracing::info!(chat = %id, rooms, "rooms' latest news told here again");
                    answered.insert(id);
                }
                Err(e) => tracing::debug!(chat = %id, error = %e, "asking for news again"),
            }
        }
        if !to_ask.is_empty() && to_ask.is_subset(&answered) {
            return;
        }
        tokio::time::sleep(pause).await;
    }
    let unasked: Vec<_> = to_ask.difference(&answered).collect();
    tracing::warn!(?unasked, "chat servers not asked to tell their latest news again");
}

/// A chat server that vanished from the list (not stopped in good order: killed, or paused
/// past the lapse) may have died between a message's history write and its push, which no
/// member got: closes, without a KICK, the recovering sessions whose rooms it owned, so that
/// their clients come back and recover it. (A room that goes on is covered before that too:
/// its next owner asks for the same drop before its first history write or recovery read,
/// `sessionRemote.dropRecoveringOf`, as it may hear of the change before this connector.)
async fn on_chat_vanished(
    registry: shaddock_bus::Registry,
    sessions: shaddock_server::SessionService,
    token: tokio_util::sync::CancellationToken,
) {
    let mut lists = registry.watch();
    let mut before = lists.borrow_and_update().clone();
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            changed = lists.changed() => if changed.is_err() { return },
        }
        let now = lists.borrow_and_update().clone();
        let vanished: Vec<&shaddock_bus::ServerInfo> = before
            .departed(&now, CHAT)
            .into_iter()
            .filter(|s| !registry.left_in_good_order(s.incarnation))
            .collect();
        if !vanished.is_empty() {
            let owned_by_vanished = |s: &shaddock_server::Session| {
                let rid = s.get("rid");
                let owner = rid
                    .as_ref()
                    .and_then(|r| r.as_str())
                    .and_then(|r| before.pick(CHAT, r));
                owner.is_some_and(|o| {
                    vanished
                        .iter()
                        .any(|v| v.id == o.id && v.incarnation == o.incarnation)
                })
            };
            let dropped = sessions.drop_recovering_where(owned_by_vanished);
            let ids: Vec<&str> = vanished.iter().map(|s| s.id.as_str()).collect();
            tracing::warn!(
                chat = ?ids,
                dropped,
                "a chat server vanished: its rooms' recovering clients dropped, to recover"
            );
        }
        before = now;
    }
}

/// Runs a connector on `app` until it is stopped (signal or token).
pub async fn run(app: App) -> anyhow::Result<()> {
    start(&app).await?;
    app.run().await;
    Ok(())
}

/// Starts a connector on `app` and returns its frontend (the caller decides when to stop).
pub async fn start(app: &App) -> anyhow::Result<Arc<Frontend>> {
    let mut fe = app.frontend(SERVER_TYPE).await?;
    let rpc = app.rpc(fe.registry());
    let incarnation = app.incarnation;
    fe.forward(CHAT, "rid").deliver_pushes();
    let leaves = handler::entry_handler::Leaves::new(rpc.clone(), incarnation, fe.leaves());
    handler::entry_handler::register(&mut fe, leaves.clone(), app.config.auth.secret.expose());

    let resume = app.config.resume.clone();
    fe.on_close(move |session| {
        // Handed back by a drain: the user comes back through another connector, and keeps
        // its place meanwhile.
        let resume_ms = if session.kick_reason().as_deref() == Some(DRAIN_REASON) {
            resume.grace_ms
        } else {
            resume.abrupt_grace_ms
        };
        leaves.spawn(session, resume_ms);
    });
    // Membership rounds: on a timer, and at once when a chat server asks.
    let (ask, asked) = tokio::sync::mpsc::unbounded_channel();
    fe.on_resync(move |announce| {
        let _ = ask.send(announce);
    });
    let me = membership::Connector {
        sid: app.me.id.clone(),
        incarnation,
        sessions: fe.sessions().clone(),
    };
    let every = std::time::Duration::from_millis(app.config.registry.sync_ms);
    app.tracker
        .spawn(membership::run(rpc.clone(), me, every, asked, app.token.clone()));
    if let Some(losses) = app.bus.losses() {
        let asking = Asking {
            sid: app.me.id.clone(),
            bus: app.bus.clone(),
            rpc: rpc.clone(),
        };
        app.tracker
            .spawn(on_loss(losses, fe.sessions().clone(), asking, app.token.clone()));
    }
    app.tracker.spawn(on_chat_vanished(
        fe.registry().clone(),
        fe.sessions().clone(),
        app.token.clone(),
    ));
    let console = Console::new(rpc, app.bus.clone(), &app.config.namespace);
    fe.start(console.routes()).await
}
