//! Client routes served by the gate (`app/servers/gate/handler`).

pub mod gate_handler;
