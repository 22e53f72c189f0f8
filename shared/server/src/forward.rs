//! Forwarding a client request to the backend that serves its route (Pomelo's
//! `msgRemote.forwardMessage`): the server is picked by crc32 of a session setting (the
//! route key of that server type, e.g. `rid` for chat) or of the uid, over the live list
//! sorted by id. A timeout or an unreachable server answers `{"code":500}`, never a hang.

use std::collections::HashMap;
use std::time::Duration;

use shaddock_bus::{Bus, Envelope, PendingReply, Registry, Reply, SessionExport, subject};

use crate::handler::HandlerError;

/// Sends forwarded requests over the bus.
#[derive(Debug, Clone)]
pub struct Forwarder {
    pub bus: Bus,
    pub registry: Registry,
    pub namespace: String,
    pub timeout: Duration,
    /// Server type -> session setting whose value picks the server (else the uid).
    pub route_keys: HashMap<String, String>,
}

impl Forwarder {
    /// The routing key of a session for a server type (Pomelo's `app.route` function).
    pub fn route_key<'a>(&'a self, server_type: &str, session: &'a SessionExport) -> &'a str {
        self.route_keys
            .get(server_type)
            .and_then(|k| session.get_str(k))
            .or(session.uid.as_deref())
            .unwrap_or("")
    }

    /// Sends one request (or notify) and returns once it has left: requests sent one after
    /// the other reach the backend in that order, whenever their answers come. A notify is
    /// published without an answer.
    pub async fn send(
        &self,
        session: SessionExport,
        server_type: &str,
        route: &str,
        body: Vec<u8>,
        notify: bool,
    ) -> Result<ForwardAnswer, HandlerError> {
        let list = self.registry.list();
        let key = self.route_key(server_type, &session).to_owned();
        let target = list
            .pick(server_type, &key)
            .ok_or_else(|| HandlerError::new(format!("no {server_type} server is available")))?;
        let subject = subject::server(&self.namespace, &target.id);
        let env = Envelope::Forward {
            session,
            route: route.to_owned(),
            body,
            key: Some(key),
            // Short of the wait by the answer's way back (see `answerable_within`).
            deadline_ms: (!notify)
                .then(|| shaddock_bus::envelope::answerable_within(self.timeout).as_millis() as u64),
            expires_at_ms: (!notify).then(|| shaddock_bus::envelope::expiry_for(self.timeout)),
        };
        let payload = env.encode().map_err(|e| HandlerError::new(e.to_string()))?;
        if notify {
            self.bus
                .publish(subject, payload)
                .await
                .map_err(|e| HandlerError::new(e.to_string()))?;
            return Ok(ForwardAnswer { pending: None });
        }
        let pending = self.bus.send_request(subject, payload, self.timeout).await;
        Ok(ForwardAnswer {
            pending: Some((pending, target.id.clone())),
        })
    }
}

/// The answer to a forwarded request that has been sent.
#[derive(Debug)]
pub struct ForwardAnswer {
    /// `None` for a notify.
    pending: Option<(PendingReply, String)>,
}

impl ForwardAnswer {
    /// The backend's JSON (empty for a notify), or the error to answer the client with.
    pub async fn answer(self) -> Result<Vec<u8>, HandlerError> {
        let Some((pending, target)) = self.pending else {
            return Ok(Vec::new());
        };
        let answer = pending
            .answer()
            .await
            .map_err(|e| HandlerError::new(format!("forward to {target}: {e}")))?;
        match Reply::decode(&answer).map_err(|e| HandlerError::new(e.to_string()))? {
            // The backend already applied the response rules: relay its JSON.
            Reply::Ok(json) => Ok(json),
            Reply::Err { code, message } => Err(HandlerError::with_response(
                message,
                serde_json::json!({ "code": code }),
            )),
        }
    }
}
