//! The route dictionary: handler routes sorted and numbered from 1, then extra routes
//! (Pomelo's `config/dictionary.json`), and `dictVersion` = base64(md5(JSON of the dict)).

use std::collections::HashMap;

use base64::Engine as _;
use md5::{Digest, Md5};

/// Route -> code and code -> route, with the JSON the handshake sends, built once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dictionary {
    /// `routes[code - 1]` is the route of `code`.
    routes: Vec<String>,
    codes: HashMap<String, u16>,
    version: String,
}

impl Dictionary {
    /// Builds the dictionary as Pomelo does: `handler_routes` sorted and deduplicated get codes
    /// 1..=n, then each new route of `extra`, in order, gets n+1, n+2, ...
    pub fn new<I, J, S, T>(handler_routes: I, extra: J) -> Self
    where
        I: IntoIterator<Item = S>,
        J: IntoIterator<Item = T>,
        S: Into<String>,
        T: Into<String>,
    {
        let mut routes: Vec<String> = handler_routes.into_iter().map(Into::into).collect();
        routes.sort();
        routes.dedup();
        for r in extra {
            let r = r.into();
            if !routes.contains(&r) {
                routes.push(r);
            }
        }
        // Codes are 16-bit on the wire.
        routes.truncate(usize::from(u16::MAX));
        let codes = routes
            .iter()
            .enumerate()
            .map(|(i, r)| (r.clone(), (i + 1) as u16))
            .collect();
        let mut dict = Dictionary {
            routes,
            codes,
            version: String::new(),
        };
        let digest = Md5::digest(dict.dict_json().as_bytes());
        dict.version = base64::engine::general_purpose::STANDARD.encode(digest);
        dict
    }

    pub fn code_of(&self, route: &str) -> Option<u16> {
        self.codes.get(route).copied()
    }

    pub fn route_of(&self, code: u16) -> Option<&str> {
        let i = usize::from(code).checked_sub(1)?;
        self.routes.get(i).map(String::as_str)
    }

    /// `dictVersion`: base64 of the MD5 of the dict's JSON.
    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// Routes in code order.
    pub fn routes(&self) -> impl Iterator<Item = (&str, u16)> {
        self.routes
            .iter()
            .enumerate()
            .map(|(i, r)| (r.as_str(), (i + 1) as u16))
    }

    /// `{"route":code,...}` in code order, as `JSON.stringify` writes it.
    pub fn dict_json(&self) -> String {
        let mut out = String::from("{");
        for (i, (route, code)) in self.routes().enumerate() {
            if i > 0 {
                out.push(',');
            }
            push_json_string(&mut out, route);
            out.push(':');
            out.push_str(&code.to_string());
        }
        out.push('}');
        out
    }

    /// `{"code":"route",...}` in code order.
    pub fn code_to_route_json(&self) -> String {
        let mut out = String::from("{");
        for (i, (route, code)) in self.routes().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push('"');
            out.push_str(&code.to_string());
            out.push_str("\":");
            push_json_string(&mut out, route);
        }
        out.push('}');
        out
    }
}

pub(crate) fn push_json_string(out: &mut String, s: &str) {
    // serde_json's string escaping matches JSON.stringify for the characters routes use.
    out.push_str(&serde_json::Value::from(s).to_string());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo() -> Dictionary {
        Dictionary::new(
            [
                "gate.gateHandler.queryEntry",
                "connector.entryHandler.enter",
                "chat.chatHandler.send",
            ],
            Vec::<String>::new(),
        )
    }

    #[test]
    fn handler_routes_are_sorted_and_numbered_from_one() {
        let d = demo();
        assert_eq!(d.code_of("chat.chatHandler.send"), Some(1));
        assert_eq!(d.code_of("gate.gateHandler.queryEntry"), Some(3));
        assert_eq!(d.route_of(2), Some("connector.entryHandler.enter"));
        assert_eq!(d.route_of(0), None);
        assert_eq!(d.route_of(4), None);
    }

    #[test]
    fn extra_routes_follow_the_handler_routes_in_their_own_order() {
        let d = Dictionary::new(["b.c.d", "a.b.c"], ["onChat", "onAdd", "onLeave", "onChat"]);
        assert_eq!(d.code_of("onChat"), Some(3));
        assert_eq!(d.code_of("onLeave"), Some(5));
    }

    #[test]
    fn dict_version_is_base64_md5_of_the_dict_json() {
        assert_eq!(demo().version(), "s2r1qfKDrbhWCkA6uf+PTA==");
    }

    #[test]
    fn the_push_routes_of_the_pomelo_peers_dictionary_json_get_codes_4_to_6() {
        let d = Dictionary::new(
            [
                "chat.chatHandler.send",
                "connector.entryHandler.enter",
                "gate.gateHandler.queryEntry",
            ],
            ["onChat", "onAdd", "onLeave"],
        );
        assert_eq!(
            (d.code_of("onChat"), d.code_of("onAdd"), d.code_of("onLeave")),
            (Some(4), Some(5), Some(6))
        );
        // base64(md5('{"chat.chatHandler.send":1,...,"onLeave":6}')), as Node computes it.
        assert_eq!(d.version(), "2aLbouXtKQ/URxNfQ1DeAg==");
    }
}
