//! The loop a backend (e.g. chat) runs on its subject `<ns>.srv.<id>`: forwarded client
//! requests go through its handler pipeline, remote calls to its remotes. Each message is
//! handled in its own task, so one slow call does not hold the others.

use std::future::Future;
use std::sync::Arc;

use shaddock_bus::{Bus, Envelope, Incoming, Reply, SessionExport, Subscription};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::handler::{BoxFuture, HandlerError, Handlers, response_body};

type RemoteFn =
    Arc<dyn Fn(String, String, Vec<u8>) -> BoxFuture<Result<Vec<u8>, HandlerError>> + Send + Sync>;

/// A backend: handlers for forwarded requests and one function for remote calls.
pub struct Backend {
    pub handlers: Handlers<SessionExport>,
    remote: RemoteFn,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend")
            .field("handlers", &self.handlers)
            .finish()
    }
}

impl Backend {
    /// `remote(service, method, args)` answers remote calls with a MessagePack body.
    pub fn new<F, Fut>(handlers: Handlers<SessionExport>, remote: F) -> Self
    where
        F: Fn(String, String, Vec<u8>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<u8>, HandlerError>> + Send + 'static,
    {
        Self {
            handlers,
            remote: Arc::new(move |s, m, a| Box::pin(remote(s, m, a))),
        }
    }

    /// Serves `sub` until `token` is cancelled.
    pub async fn serve(
        self: Arc<Self>,
        bus: Bus,
        mut sub: Subscription,
        token: CancellationToken,
        tracker: TaskTracker,
    ) {
        loop {
            let msg = tokio::select! {
                _ = token.cancelled() => break,
                m = sub.next() => m,
            };
            let Some(msg) = msg else { break };
            let this = self.clone();
            let bus = bus.clone();
            tracker.spawn(async move { this.handle(bus, msg).await }.in_current_span());
        }
    }

    async fn handle(&self, bus: Bus, msg: Incoming) {
        let reply = match Envelope::decode(&msg.payload) {
            Err(e) => Reply::Err {
                code: 500,
                message: e.to_string(),
            },
            Ok(Envelope::Forward { session, route, body }) => {
                let body = serde_json::from_slice(&body).unwrap_or_else(|_| serde_json::json!({}));
                let result = self.handlers.handle_filtered(&route, session, body).await;
                if let Err(e) = &result {
                    tracing::debug!(%route, error = %e, "handler failed");
                }
                Reply::Ok(response_body(&result))
            }
            Ok(Envelope::Rpc {
                service,
                method,
                args,
            }) => match (self.remote)(service.clone(), method.clone(), args).await {
                Ok(body) => Reply::Ok(body),
                Err(e) => {
                    tracing::debug!(%service, %method, error = %e, "remote failed");
                    Reply::Err {
                        code: 500,
                        message: e.message,
                    }
                }
            },
            Ok(Envelope::Push { .. } | Envelope::Broadcast { .. }) => Reply::Err {
                code: 500,
                message: "a backend holds no sessions".into(),
            },
        };
        if msg.reply.is_some() {
            match reply.encode() {
                Ok(bytes) => {
                    if let Err(e) = bus.respond(&msg, bytes).await {
                        tracing::debug!(error = %e, "cannot answer");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot encode reply"),
            }
        }
    }
}
