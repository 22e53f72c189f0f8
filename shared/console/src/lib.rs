//! The admin console: the jobs of Pomelo's admin console for this chat, as a page (`/admin`)
//! and a JSON API (`/admin/api/...`) over the typed remotes:
//! - `GET servers`: the cluster's servers;
//! - `GET connectors`: connections and users of each connector (`sessionRemote.sessionCount`);
//! - `GET channels`: every channel and its members (`chatRemote.channels`);
//! - `GET rooms?q=&page=&per_page=`: rooms with members, largest first, by name substring;
//! - `GET rooms/{name}`: one room's members;
//! - `POST kick {uid, reason?}`: kicks a user wherever it is (`sessionRemote.kickByUid`);
//! - `POST broadcast {text | route?, body?, rid?}`: pushes to every session of every
//!   connector, or with `rid` to one room's members through its chat server
//!   (`chatRemote.broadcast`, in the room's order and history).
//!
//! Each server mounts it on its admin port (see `shaddock_server::admin`), which checks the
//! bearer token before any of this runs.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use shaddock_bus::{Bus, Envelope, subject};
use shaddock_remote::chat_remote::{Broadcast, ChannelMembers, Channels, ChatRemote};
use shaddock_remote::session_remote::{KickByUid, SessionCount, SessionRemote};
use shaddock_remote::{Remote, RpcClient};

/// What the console needs to reach the cluster.
#[derive(Debug, Clone)]
pub struct Console {
    pub rpc: RpcClient,
    pub bus: Bus,
    pub namespace: String,
}

impl Console {
    pub fn new(rpc: RpcClient, bus: Bus, namespace: &str) -> Self {
        Self {
            rpc,
            bus,
            namespace: namespace.to_owned(),
        }
    }

    /// The page at `/` and the API under `/api`, to nest under `/admin`.
    pub fn routes(self) -> Router {
        Router::new()
            .route("/", get(page))
            .route("/api/servers", get(servers))
            .route("/api/connectors", get(connectors))
            .route("/api/channels", get(channels))
            .route("/api/rooms", get(rooms))
            .route("/api/rooms/{name}", get(room))
            .route("/api/kick", post(kick))
            .route("/api/broadcast", post(broadcast))
            .with_state(self)
    }
}

type Shared = State<Console>;

async fn page() -> Html<&'static str> {
    Html(include_str!("admin.html"))
}

fn bad_gateway(e: impl std::fmt::Display) -> Response {
    (StatusCode::BAD_GATEWAY, Json(json!({"error": e.to_string()}))).into_response()
}

async fn servers(State(c): Shared) -> Response {
    let list = c.rpc.registry().list();
    let servers: Vec<Value> = list
        .all()
        .map(|s| {
            json!({"id": s.id, "type": s.server_type, "host": s.host, "clientPort": s.client_port, "draining": s.draining})
        })
        .collect();
    Json(json!({ "servers": servers })).into_response()
}

async fn connectors(State(c): Shared) -> Response {
    let mut out = Vec::new();
    for s in c.rpc.registry().list().servers(SessionRemote::SERVER_TYPE) {
        out.push(match c.rpc.call_server(&s.id, SessionCount {}).await {
            Ok(n) => json!({
                "id": s.id, "host": s.host, "clientPort": s.client_port, "connections": n.connections,
                "users": n.users, "requests": n.requests, "deliveries": n.deliveries,
            }),
            Err(e) => json!({"id": s.id, "error": e.to_string()}),
        });
    }
    Json(json!({ "connectors": out })).into_response()
}

/// Every channel in the store, asked of any chat server.
async fn all_channels(c: &Console) -> Result<Vec<ChannelMembers>, Response> {
    let list = c.rpc.registry().list();
    let Some(chat) = list.servers(ChatRemote::SERVER_TYPE).first() else {
        return Err((
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"error": "no chat server"})),
        )
            .into_response());
    };
    c.rpc
        .call_server(&chat.id, Channels {})
        .await
        .map_err(bad_gateway)
}

#[derive(Debug, Deserialize)]
struct RoomsQuery {
    q: Option<String>,
    page: Option<usize>,
    per_page: Option<usize>,
}

/// Rooms with members (empty ones are not listed), largest first, then by name; `q` keeps
/// the names that contain it; pages from 1.
async fn rooms(State(c): Shared, Query(query): Query<RoomsQuery>) -> Response {
    let channels = match all_channels(&c).await {
        Ok(ch) => ch,
        Err(r) => return r,
    };
    let needle = query.q.unwrap_or_default().to_lowercase();
    let mut rooms: Vec<(String, usize)> = channels
        .into_iter()
        .filter(|ch| !ch.members.is_empty() && ch.name.to_lowercase().contains(&needle))
        .map(|ch| (ch.name, ch.members.len()))
        .collect();
    rooms.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let per_page = query.per_page.unwrap_or(50).clamp(1, 500);
    let page = query.page.unwrap_or(1).max(1);
    let listed: Vec<Value> = rooms
        .iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .map(|(name, n)| json!({"name": name, "members": n}))
        .collect();
    Json(json!({"total": rooms.len(), "page": page, "per_page": per_page, "rooms": listed})).into_response()
}

/// One room's members: `uid` (`name*room`), `user` (the name) and `sid` (their connector).
async fn room(State(c): Shared, Path(name): Path<String>) -> Response {
    let channels = match all_channels(&c).await {
        Ok(ch) => ch,
        Err(r) => return r,
    };
    let Some(ch) = channels
        .into_iter()
        .find(|ch| ch.name == name && !ch.members.is_empty())
    else {
        return (StatusCode::NOT_FOUND, Json(json!({"error": "no such room"}))).into_response();
    };
    let mut members: Vec<Value> = ch
        .members
        .into_iter()
        .map(|m| {
            let user = m
                .uid
                .split_once('*')
                .map_or(m.uid.as_str(), |(u, _)| u)
                .to_owned();
            json!({"uid": m.uid, "user": user, "sid": m.sid})
        })
        .collect();
    members.sort_by(|a, b| a["user"].as_str().cmp(&b["user"].as_str()));
    Json(json!({"name": ch.name, "members": members})).into_response()
}

async fn channels(State(c): Shared) -> Response {
    match all_channels(&c).await {
        Ok(channels) => {
            let channels: Vec<Value> = channels
                .into_iter()
                .map(|c| {
                    let members: Vec<Value> = c
                        .members
                        .into_iter()
                        .map(|m| json!({"uid": m.uid, "sid": m.sid}))
                        .collect();
                    json!({"name": c.name, "members": members})
                })
                .collect();
            Json(json!({ "channels": channels })).into_response()
        }
        Err(r) => r,
    }
}

#[derive(Debug, Deserialize)]
struct KickRequest {
    uid: String,
    reason: Option<String>,
}

async fn kick(State(c): Shared, Json(req): Json<KickRequest>) -> Response {
    let reason = req.reason.unwrap_or_else(|| "kick".into());
    let mut kicked = 0usize;
    for s in c.rpc.registry().list().servers(SessionRemote::SERVER_TYPE) {
        let kick = KickByUid {
            uid: req.uid.clone(),
            reason: Some(reason.clone()),
        };
        kicked += c.rpc.call_server(&s.id, kick).await.unwrap_or(0);
    }
    tracing::info!(uid = %req.uid, kicked, "admin kick");
    Json(json!({ "kicked": kicked })).into_response()
}

#[derive(Debug, Deserialize)]
struct BroadcastRequest {
    /// Defaults to `onChat`.
    route: Option<String>,
    /// The push body; defaults to `{msg: text, from: "admin", target: "*"}`, a chat message
    /// every chat client shows.
    body: Option<Value>,
    text: Option<String>,
    /// One room only.
    rid: Option<String>,
}

async fn broadcast(State(c): Shared, Json(req): Json<BroadcastRequest>) -> Response {
    let route = req.route.unwrap_or_else(|| "onChat".into());
    let body = req
        .body
        .unwrap_or_else(|| json!({"msg": req.text.unwrap_or_default(), "from": "admin", "target": "*"}));
    if let Some(rid) = req.rid {
        let call = Broadcast {
            rid,
            route,
            body: serde_json::to_vec(&body).unwrap_or_default(),
        };
        return match c.rpc.call(call).await {
            Ok(members) => Json(json!({"ok": true, "members": members})).into_response(),
            Err(e) => bad_gateway(e),
        };
    }
    let env = Envelope::Broadcast {
        route,
        body: serde_json::to_vec(&body).unwrap_or_default(),
    };
    let to = subject::server_type(&c.namespace, SessionRemote::SERVER_TYPE);
    let sent = match env.encode() {
        Ok(bytes) => c.bus.publish(to, bytes).await,
        Err(e) => Err(e),
    };
    match sent {
        Ok(()) => Json(json!({"ok": true})).into_response(),
        Err(e) => bad_gateway(e),
    }
}
