//! Client routes served by chat servers (`app/servers/chat/handler`).

pub mod chat_handler;
