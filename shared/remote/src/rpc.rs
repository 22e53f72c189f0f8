//! [`RpcClient`]: sends typed calls over the bus and waits for their typed replies. A call is
//! routed by crc32 of its key over the live servers of its type ([`RpcClient::call`]), or sent
//! to one server by id ([`RpcClient::call_server`], Pomelo's `rpcInvoke`).

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use shaddock_bus::{Bus, BusError, Envelope, Registry, Reply, subject};

use crate::{Remote, Request, Routed, encode_call};

/// Calls remotes over the bus.
#[derive(Debug, Clone)]
pub struct RpcClient {
    bus: Bus,
    registry: Registry,
    namespace: String,
    timeout: Duration,
    /// Calls from this server that failed (exported as `shaddock_rpc_errors_total`).
    errors: Counter,
}

impl RpcClient {
    pub fn new(bus: Bus, registry: Registry, namespace: &str, timeout: Duration, errors: Counter) -> Self {
        Self {
            bus,
            registry,
            namespace: namespace.to_owned(),
            timeout,
            errors,
        }
    }

    /// The live servers this client routes over.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// How long a call waits for its answer.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sends `request` to the server of its type that its key routes to; the receiver handles
    /// the calls of one key in the order they were sent.
    pub async fn call<Q: Routed>(&self, request: Q) -> Result<Q::Reply, BusError> {
        let server_type = <Q::Remote as Remote>::SERVER_TYPE;
        let key = request.key().to_owned();
        let target = self.registry.list().pick(server_type, &key).map(|s| s.id.clone());
        let Some(target) = target else {
            self.errors.inc();
            return Err(BusError::NoServer(server_type.to_owned()));
        };
        self.invoke::<Q>(&target, Some(key), request.into()).await
    }

    /// Sends `request` to the server `server_id`, outside any key's order.
    pub async fn call_server<Q: Request>(&self, server_id: &str, request: Q) -> Result<Q::Reply, BusError> {
        self.invoke::<Q>(server_id, None, request.into()).await
    }

    /// Sends `request` to every server of its type, without waiting for anyone.
    pub async fn notify_all<Q: Request>(&self, request: Q) -> Result<(), BusError> {
        let to = subject::server_type(&self.namespace, <Q::Remote as Remote>::SERVER_TYPE);
        let sent = self.publish(to, request.into()).await;
        self.count(sent)
    }

    /// Sends `request` to `server_id` without waiting for its answer.
    pub async fn notify_server<Q: Request>(&self, server_id: &str, request: Q) -> Result<(), BusError> {
        let sent = self
            .publish(subject::server(&self.namespace, server_id), request.into())
            .await;
        self.count(sent)
    }

    /// Answers once `server_id` has handled everything of `key` that reached it before.
    pub async fn barrier(&self, server_id: &str, key: &str) -> Result<(), BusError> {
        let env = Envelope::Barrier { key: key.to_owned() }.encode()?;
        let answered = self
            .bus
            .request(subject::server(&self.namespace, server_id), env, self.timeout)
            .await
            .map(|_| ());
        self.count(answered)
    }

    async fn publish<R: Remote>(&self, to: String, call: R) -> Result<(), BusError> {
        let payload = envelope(&call, None, None)?.encode()?;
        self.bus.publish(to, payload).await
    }

    async fn invoke<Q: Request>(
        &self,
        server_id: &str,
        key: Option<String>,
        call: Q::Remote,
    ) -> Result<Q::Reply, BusError> {
        let result = async {
            let payload = envelope(&call, key, Some(self.timeout))?.encode()?;
            let answer = self
                .bus
                .request(subject::server(&self.namespace, server_id), payload, self.timeout)
                .await?;
            let body = Reply::decode(&answer)?.into_result()?;
            Ok(rmp_serde::from_slice(&body)?)
        }
        .await;
        self.count(result)
    }

    fn count<T>(&self, result: Result<T, BusError>) -> Result<T, BusError> {
        if result.is_err() {
            self.errors.inc();
        }
        result
    }
}

/// A call envelope; `wait`, how long the caller waits for the answer (none for a notify).
fn envelope<R: Remote>(call: &R, key: Option<String>, wait: Option<Duration>) -> Result<Envelope, BusError> {
    Ok(Envelope::Rpc {
        service: R::SERVICE.to_owned(),
        method: call.method().to_owned(),
        args: encode_call(call)?,
        key,
        expires_at_ms: wait.map(shaddock_bus::envelope::expiry_for),
    })
}
