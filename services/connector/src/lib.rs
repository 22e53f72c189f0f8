//! The connector: Pomelo's `app/servers/connector`. It holds the client sessions, serves
//! `connector.entryHandler.enter`, forwards every other server type's routes (chat by
//! crc32 of the session's `rid`), delivers the pushes that arrive on its subject, and tells
//! the chat server when a session closes (`chatRemote.kick`).
//!
//! # Layout
//! - `handler::entry_handler`: `enter`.
//! - [`run`]: assembles the frontend on an `App` and serves until stopped.

use std::collections::HashMap;
use std::sync::Arc;

use shaddock_console::Console;
use shaddock_remote::Remote;
use shaddock_remote::RpcClient;
use shaddock_remote::chat_remote::{ChatRemote, PurgeFrontend, Resync, ResyncMember};
use shaddock_server::App;
use shaddock_server::frontend::Frontend;

pub mod auth;
pub mod handler;

/// The server type.
pub const SERVER_TYPE: &str = "connector";

/// The backend whose routes are forwarded by room (`rid`).
const CHAT: &str = <ChatRemote as Remote>::SERVER_TYPE;

/// Members an earlier run of this connector left in the channel store are ghosts: nobody holds
/// their sessions any more. Each chat server this connector sees (again) is asked to drop the
/// members of this sid from any other incarnation. Safe to repeat: live members are kept.
async fn purge_ghosts(
    rpc: RpcClient,
    my_id: String,
    incarnation: u64,
    token: tokio_util::sync::CancellationToken,
) {
    let mut rx = rpc.registry().watch();
    let mut asked = std::collections::HashSet::new();
    loop {
        let chats: Vec<(String, u64)> = rx
            .borrow_and_update()
            .servers(CHAT)
            .iter()
            .map(|s| (s.id.clone(), s.incarnation))
            .collect();
        let mut failed = false;
        for chat in chats {
            if asked.insert(chat.clone()) {
                let purge = PurgeFrontend {
                    sid: my_id.clone(),
                    keep: Some(incarnation),
                };
                let purged = rpc.call_server(&chat.0, purge).await;
                match purged {
                    Ok(n) if n > 0 => {
                        tracing::info!(chat = %chat.0, purged = n, "dropped ghosts of an earlier run")
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!(chat = %chat.0, error = %e, "purge request failed, will retry");
                        asked.remove(&chat);
                        failed = true;
                    }
                }
            }
        }
        let retry = async {
            if failed {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await
            } else {
                std::future::pending().await
            }
        };
        tokio::select! {
            _ = token.cancelled() => return,
            _ = retry => {}
            changed = rx.changed() => if changed.is_err() { return },
        }
    }
}

/// The channel store lost its data (a Redis restart without persistence): tell the chat
/// servers again who is connected here and in which room, one call per chat server.
async fn resync(rpc: RpcClient, my_id: String, incarnation: u64, sessions: shaddock_server::SessionService) {
    let list = rpc.registry().list();
    let mut by_chat: HashMap<String, Vec<ResyncMember>> = HashMap::new();
    let bound = sessions.bound();
    for s in &bound {
        let (Some(uid), Some(rid)) = (s.uid(), s.get("rid").and_then(|v| v.as_str().map(str::to_owned)))
        else {
            continue;
        };
        if let Some(chat) = list.pick(CHAT, &rid) {
            by_chat.entry(chat.id.clone()).or_default().push(ResyncMember {
                uid,
                rid,
                session: s.id(),
            });
        }
    }
    for (chat, members) in by_chat {
        let n = members.len();
        let resync = Resync {
            sid: my_id.clone(),
            incarnation,
            members,
        };
        match rpc.call_server(&chat, resync).await {
            Ok(added) => {
                tracing::info!(%chat, members = n, added, "told the channel store who is here again")
            }
            Err(e) => tracing::warn!(%chat, error = %e, "resync failed"),
        }
    }
    // A session that closed while the resync was on its way may have left before it was put
    // back: leave again (idempotent).
    for s in bound.into_iter().filter(|s| s.is_closed()) {
        handler::entry_handler::on_user_leave(rpc.clone(), incarnation, s).await;
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
    handler::entry_handler::register(&mut fe, rpc.clone(), incarnation, app.config.auth.secret.expose());

    let (tracker, leave_rpc) = (app.tracker.clone(), rpc.clone());
    fe.on_close(move |session| {
        tracker.spawn(handler::entry_handler::on_user_leave(
            leave_rpc.clone(),
            incarnation,
            session,
        ));
    });
    let (tracker, resync_rpc, my_id) = (app.tracker.clone(), rpc.clone(), app.me.id.clone());
    let sessions = fe.sessions().clone();
    fe.on_resync(move || {
        let resync = resync(resync_rpc.clone(), my_id.clone(), incarnation, sessions.clone());
        tracker.spawn(resync);
    });
    app.tracker.spawn(purge_ghosts(
        rpc.clone(),
        app.me.id.clone(),
        incarnation,
        app.token.clone(),
    ));
    let console = Console::new(rpc, app.bus.clone(), &app.config.namespace);
    fe.start(console.routes()).await
}
