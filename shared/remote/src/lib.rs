//! Calls between servers as types: Pomelo's `app.rpc.<serverType>.<service>.<method>(args)`,
//! where a service is an enum of request structs and each request names its reply type.
//!
//! A caller writes `rpc.call(Add { .. }).await?` and gets an `AddOutcome` back; the
//! serving side decodes one enum and dispatches with one `match`. Change a request on one side
//! and the other no longer compiles, instead of failing at run time.
//!
//! On the wire a call is an [`Envelope::Rpc`](shaddock_bus::Envelope::Rpc): the service and
//! method names (for logs and for the error a peer that does not know the call answers), and
//! the request enum in MessagePack with named fields, so that a field added with
//! `#[serde(default)]` does not break a rolling upgrade.
//!
//! # Layout
//! - [`chat_remote`]: `chatRemote` (served by chat servers): add, kick, resync, channels,
//!   purgeFrontend.
//! - [`session_remote`]: `sessionRemote` (served by frontends): kickByUid, resync,
//!   sessionCount.
//! - [`rpc`]: [`RpcClient`], which routes a call (crc32 of its key over the servers of its
//!   type, or to one server by id) and waits for the typed reply.

use serde::Serialize;
use serde::de::DeserializeOwned;

pub mod chat_remote;
pub mod rpc;
pub mod session_remote;

pub use rpc::RpcClient;

/// A remote service: an enum with one variant per method.
pub trait Remote: Serialize + DeserializeOwned + Send + 'static {
    /// Pomelo's service name, e.g. `chatRemote`.
    const SERVICE: &'static str;
    /// The type of the servers that serve it, e.g. `chat`.
    const SERVER_TYPE: &'static str;
    /// Every method name, in declaration order.
    const METHODS: &'static [&'static str];
    /// The method this call names, e.g. `add`.
    fn method(&self) -> &'static str;
}

/// One method's request, and the type of its reply.
pub trait Request: Into<Self::Remote> + Send {
    type Remote: Remote;
    type Reply: Serialize + DeserializeOwned + Send;
}

/// A request routed by a key (a room) to one server of its service's type, and handled there
/// in that key's order.
pub trait Routed: Request {
    fn key(&self) -> &str;
}

/// What can go wrong reading a call on the serving side.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// A call this server does not know: a newer peer during a rolling upgrade, or a call sent
    /// to the wrong server type.
    #[error("no remote {service}.{method} on this server")]
    Unknown { service: String, method: String },
    #[error("bad arguments for {service}.{method}: {reason}")]
    BadArguments {
        service: String,
        method: String,
        reason: String,
    },
    #[error("cannot encode the reply: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
}

/// Reads a received call (`service`, `method` and `args` of an `Envelope::Rpc`) as `R`.
pub fn decode_call<R: Remote>(service: &str, method: &str, args: &[u8]) -> Result<R, RemoteError> {
    if service != R::SERVICE || !R::METHODS.contains(&method) {
        return Err(RemoteError::Unknown {
            service: service.to_owned(),
            method: method.to_owned(),
        });
    }
    rmp_serde::from_slice(args).map_err(|e| RemoteError::BadArguments {
        service: service.to_owned(),
        method: method.to_owned(),
        reason: e.to_string(),
    })
}

/// Encodes the reply to a request of type `Q`: the compiler checks it is `Q`'s reply type.
pub fn encode_reply<Q: Request>(reply: &Q::Reply) -> Result<Vec<u8>, RemoteError> {
    Ok(rmp_serde::to_vec_named(reply)?)
}

/// Encodes a call's arguments: the whole request enum, fields by name.
pub fn encode_call<R: Remote>(call: &R) -> Result<Vec<u8>, rmp_serde::encode::Error> {
    rmp_serde::to_vec_named(call)
}

/// Declares a remote service: the enum, its [`Remote`] impl, and for every request struct its
/// `From` and [`Request`] impls.
macro_rules! remote_service {
    (
        $(#[$meta:meta])*
        pub enum $name:ident ($service:literal, served by $server_type:literal) {
            $( $(#[$vmeta:meta])* $variant:ident = $method:literal -> $reply:ty, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
        pub enum $name {
            $( $(#[$vmeta])* #[serde(rename = $method)] $variant($variant), )*
        }

        impl $crate::Remote for $name {
            const SERVICE: &'static str = $service;
            const SERVER_TYPE: &'static str = $server_type;
            const METHODS: &'static [&'static str] = &[$($method),*];
            fn method(&self) -> &'static str {
                match self {
                    $( Self::$variant(_) => $method, )*
                }
            }
        }

        $(
            impl From<$variant> for $name {
                fn from(request: $variant) -> Self {
                    Self::$variant(request)
                }
            }
            impl $crate::Request for $variant {
                type Remote = $name;
                type Reply = $reply;
            }
        )*
    };
}
pub(crate) use remote_service;
