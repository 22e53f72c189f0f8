//! Remote methods other servers call (`app/servers/chat/remote`).

pub mod chat_remote;
