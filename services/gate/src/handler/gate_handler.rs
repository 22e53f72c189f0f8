//! `gate.gateHandler.queryEntry {uid}` (chatofpomelo's gateHandler.js): no uid, or no
//! connector, answers `{"code":500}`; else `{"code":200,"host":..,"port":..}`.

use serde_json::{Value, json};
use shaddock_bus::Registry;
use shaddock_server::Session;
use shaddock_server::frontend::FrontendBuilder;

pub const ROUTE: &str = "gate.gateHandler.queryEntry";

pub fn register(fe: &mut FrontendBuilder) {
    let registry = fe.registry().clone();
    fe.handler(ROUTE, move |_session: Session, body: Value| {
        let registry = registry.clone();
        async move { Ok(query_entry(&registry, &body)) }
    });
}

pub fn query_entry(registry: &Registry, body: &Value) -> Value {
    let uid = match body.get("uid") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => return json!({"code": 500}),
    };
    let list = registry.list();
    // A draining connector takes no new client: it is handing its sessions back.
    match list.pick_serving("connector", &uid) {
        Some(c) => match c.client_port {
            Some(port) => json!({"code": 200, "host": c.host, "port": port}),
            None => json!({"code": 500}),
        },
        None => json!({"code": 500}),
    }
}
