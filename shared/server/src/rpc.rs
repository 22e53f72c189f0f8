//! Remote calls to other servers (Pomelo's `app.rpc.<type>.<service>.<method>`), routed by
//! crc32 of a key over the live servers of a type, answered within the RPC timeout.

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use shaddock_bus::envelope::decode_value;
use shaddock_bus::{Bus, BusError, Envelope, Registry, Reply, subject};

/// Calls remotes over the bus.
#[derive(Debug, Clone)]
pub struct RpcClient {
    pub bus: Bus,
    pub registry: Registry,
    pub namespace: String,
    pub timeout: Duration,
}

impl RpcClient {
    /// Calls `service.method(args)` on the server of `server_type` that `key` routes to.
    pub async fn call<A: Serialize, T: DeserializeOwned>(
        &self,
        server_type: &str,
        key: &str,
        service: &str,
        method: &str,
        args: &A,
    ) -> Result<T, BusError> {
        let Some(target) = self.registry.list().pick(server_type, key).map(|s| s.id.clone()) else {
            crate::metrics::metrics().rpc_errors.inc();
            return Err(BusError::NoServer(server_type.to_owned()));
        };
        self.invoke(&target, Some(key), service, method, args).await
    }

    /// Calls `service.method(args)` on one server by id (Pomelo's `rpcInvoke`), outside any
    /// key's order.
    pub async fn call_server<A: Serialize, T: DeserializeOwned>(
        &self,
        server_id: &str,
        service: &str,
        method: &str,
        args: &A,
    ) -> Result<T, BusError> {
        self.invoke(server_id, None, service, method, args).await
    }

    /// The receiver handles calls of the same `key` in the order they were sent.
    async fn invoke<A: Serialize, T: DeserializeOwned>(
        &self,
        server_id: &str,
        key: Option<&str>,
        service: &str,
        method: &str,
        args: &A,
    ) -> Result<T, BusError> {
        let result = async {
            let payload = Envelope::rpc(service, method, args)?.keyed(key).encode()?;
            let answer = self
                .bus
                .request(subject::server(&self.namespace, server_id), payload, self.timeout)
                .await?;
            let body = Reply::decode(&answer)?.into_result()?;
            decode_value(&body)
        }
        .await;
        if result.is_err() {
            crate::metrics::metrics().rpc_errors.inc();
        }
        result
    }
}
