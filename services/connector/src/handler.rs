//! Client routes served by the connector itself (`app/servers/connector/handler`).

pub mod entry_handler;
