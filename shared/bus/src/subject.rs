//! Subject names. Ids and types are validated by the config (letters, digits, `-`, `_`), so
//! nothing a client sends ever becomes part of a subject.

/// Everything addressed to one server.
pub fn server(ns: &str, server_id: &str) -> String {
    format!("{ns}.srv.{server_id}")
}

/// Broadcast to every server of a type.
pub fn server_type(ns: &str, server_type: &str) -> String {
    format!("{ns}.type.{server_type}")
}

/// Registry announcements and heartbeats.
pub fn registry(ns: &str) -> String {
    format!("{ns}.registry")
}
