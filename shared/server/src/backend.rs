//! The loop a backend (e.g. chat) runs on its subject `<ns>.srv.<id>`: forwarded client
//! requests go through its handler pipeline, remote calls to its remotes.
//!
//! Messages that carry a key (what the sender routed by: a room) are handled one at a time
//! per key, in the order they arrived, through the backend's [`Sequencer`]: that is where a
//! room's messages get their one order. Messages without a key (calls addressed to this
//! server by id) are handled each in its own task. Different keys never wait for each other.

use std::future::Future;
use std::sync::Arc;

use shaddock_bus::{Bus, Envelope, Incoming, Reply, SessionExport, Subscription};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::handler::{BoxFuture, HandlerError, Handlers, response_body};
use crate::metrics::Metrics;
use crate::sequencer::Sequencer;

type RemoteFn =
    Arc<dyn Fn(String, String, Vec<u8>) -> BoxFuture<Result<Vec<u8>, HandlerError>> + Send + Sync>;

/// A backend: handlers for forwarded requests and one function for remote calls.
pub struct Backend {
    pub handlers: Handlers<SessionExport>,
    remote: RemoteFn,
    order: Sequencer<String>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend")
            .field("handlers", &self.handlers)
            .field("order", &self.order)
            .finish()
    }
}

impl Backend {
    /// `remote(service, method, args)` answers remote calls with a MessagePack body; keyed
    /// messages run in `order`.
    pub fn new<F, Fut>(
        handlers: Handlers<SessionExport>,
        remote: F,
        order: Sequencer<String>,
        metrics: Arc<Metrics>,
    ) -> Self
    where
        F: Fn(String, String, Vec<u8>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<u8>, HandlerError>> + Send + 'static,
    {
        Self {
            handlers,
            remote: Arc::new(move |s, m, a| Box::pin(remote(s, m, a))),
            order,
            metrics,
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
            let env = Envelope::decode(&msg.payload);
            let key = env.as_ref().ok().and_then(Envelope::key).map(str::to_owned);
            let barrier = matches!(env, Ok(Envelope::Barrier { .. }));
            let reply_to = msg.reply.clone();
            let this = self.clone();
            let job = {
                let bus = bus.clone();
                async move { this.handle(bus, msg, env).await }.in_current_span()
            };
            match key {
                Some(key) => {
                    let queued = if barrier {
                        self.order.submit_unheld(key, job)
                    } else {
                        self.order.submit(key, job)
                    };
                    if let Err(busy) = queued {
                        tracing::warn!("a key's queue is full: message refused");
                        self.metrics.queue_drops.inc();
                        let refused = Reply::Err {
                            code: 500,
                            message: busy.to_string(),
                        };
                        if let (Some(to), Ok(bytes)) = (reply_to, refused.encode())
                            && let Err(e) = bus.publish(to, bytes).await
                        {
                            tracing::debug!(error = %e, "cannot answer");
                        }
                    }
                }
                None => {
                    tracker.spawn(job);
                }
            }
        }
    }

    async fn handle(&self, bus: Bus, msg: Incoming, env: Result<Envelope, shaddock_bus::BusError>) {
        let reply = match env {
            Err(e) => Reply::Err {
                code: 500,
                message: e.to_string(),
            },
            Ok(Envelope::Forward {
                session, route, body, ..
            }) => {
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
                ..
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
            // Run in the key's order: everything of the key that came before has been handled.
            Ok(Envelope::Barrier { .. }) => Reply::Ok(Vec::new()),
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
