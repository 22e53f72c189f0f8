//! A JSON value that behaves like a JavaScript object: keys keep their order (integer-like
//! keys first, ascending, as V8 iterates them), a repeated key keeps its first place and its
//! last value, and it is written back exactly as `JSON.stringify` writes it.
//!
//! pomelo-protobuf walks a message's keys in that order, so the bytes it writes depend on it,
//! and the protos' version is an MD5 of `JSON.stringify`: serde_json's own map sorts or
//! hashes its keys, so neither would match.

use std::collections::HashMap;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// A JSON value with JavaScript's object semantics.
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Number(f64),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    /// Parses JSON text.
    pub fn parse(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// An object from entries in insertion order: a repeated key keeps its first place and
    /// its last value, and integer-like keys move to the front, ascending, as in JavaScript.
    pub fn object(entries: Vec<(String, Json)>) -> Self {
        let mut out: Vec<(String, Json)> = Vec::with_capacity(entries.len());
        let mut index: HashMap<String, usize> = HashMap::new();
        for (k, v) in entries {
            // A linear scan is cheaper for the small objects chat bodies are.
            let at = if out.len() < 16 {
                out.iter().position(|(o, _)| *o == k)
            } else {
                if index.is_empty() {
                    index = out.iter().enumerate().map(|(i, (k, _))| (k.clone(), i)).collect();
                }
                index.get(&k).copied()
            };
            match at {
                Some(i) => out[i].1 = v,
                None => {
                    if !index.is_empty() {
                        index.insert(k.clone(), out.len());
                    }
                    out.push((k, v));
                }
            }
        }
        if out.iter().any(|(k, _)| array_index(k).is_some()) {
            // A stable sort: integer keys ascending, the others keep their order.
            out.sort_by_key(|(k, _)| array_index(k).map_or((1, 0), |i| (0, i)));
        }
        Json::Object(out)
    }

    /// The value of `key` in an object.
    pub fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Object(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// `JSON.stringify(self)`.
    pub fn to_js_string(&self) -> String {
        let mut out = String::new();
        self.write(&mut out);
        out
    }

    /// Appends `JSON.stringify(self)` to `out`.
    pub fn write(&self, out: &mut String) {
        match self {
            Json::Null => out.push_str("null"),
            Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Json::Number(n) if n.is_finite() => write_number(*n, out),
            Json::Number(_) => out.push_str("null"),
            Json::String(s) => write_string(s, out),
            Json::Array(items) => {
                out.push('[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    v.write(out);
                }
                out.push(']');
            }
            Json::Object(entries) => {
                out.push('{');
                for (i, (k, v)) in entries.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_string(k, out);
                    out.push(':');
                    v.write(out);
                }
                out.push('}');
            }
        }
    }
}

/// The value of a key that JavaScript treats as an array index ("0", "17"; not "01", "-1").
fn array_index(key: &str) -> Option<u32> {
    if key.is_empty() || key.len() > 10 || (key.len() > 1 && key.starts_with('0')) {
        return None;
    }
    if !key.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    key.parse::<u64>()
        .ok()
        .filter(|n| *n < u64::from(u32::MAX))
        .map(|n| n as u32)
}

/// A string as `JSON.stringify` writes it: `"` and `\` escaped, control characters as
/// `\b \f \n \r \t` or `\u00xx`, everything else as it is.
pub fn write_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A finite number as JavaScript's `Number.prototype.toString` writes it: the shortest
/// digits that read back the same, positional between 1e-7 and 1e21, exponential outside.
pub fn write_number(n: f64, out: &mut String) {
    if n == 0.0 {
        out.push('0');
        return;
    }
    // Rust's `{:e}` gives the same shortest round-trip digits: "d.ddde-x".
    let exp_form = format!("{:e}", n.abs());
    let (mantissa, exp) = exp_form.split_once('e').unwrap_or((exp_form.as_str(), "0"));
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let e: i32 = exp.parse().unwrap_or(0);
    let k = digits.len() as i32;
    let point = e + 1; // digits before the decimal point
    if n < 0.0 {
        out.push('-');
    }
    if k <= point && point <= 21 {
        out.push_str(&digits);
        out.extend(std::iter::repeat_n('0', (point - k) as usize));
    } else if 0 < point && point <= 21 {
        out.push_str(&digits[..point as usize]);
        out.push('.');
        out.push_str(&digits[point as usize..]);
    } else if -6 < point && point <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-point) as usize));
        out.push_str(&digits);
    } else {
        out.push_str(&digits[..1]);
        if k > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push('e');
        out.push(if point - 1 < 0 { '-' } else { '+' });
        out.push_str(&(point - 1).abs().to_string());
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Json, E> {
        Ok(Json::Number(v as f64))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Json, E> {
        Ok(Json::Number(v as f64))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Json, E> {
        Ok(Json::Number(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Json, E> {
        Ok(Json::String(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Json, E> {
        Ok(Json::String(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::new();
        while let Some(v) = seq.next_element()? {
            items.push(v);
        }
        Ok(Json::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut entries = Vec::new();
        while let Some((k, v)) = map.next_entry::<String, Json>()? {
            entries.push((k, v));
        }
        Ok(Json::object(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn js(n: f64) -> String {
        let mut s = String::new();
        write_number(n, &mut s);
        s
    }

    #[test]
    fn numbers_are_written_as_javascript_writes_them() {
        assert_eq!(js(300.0), "300");
        assert_eq!(js(-2.0), "-2");
        assert_eq!(js(1.5), "1.5");
        assert_eq!(js(0.25), "0.25");
        assert_eq!(js(f64::from(0.1f32)), "0.10000000149011612");
        assert_eq!(js(1e21), "1e+21");
        assert_eq!(js(1e20), "100000000000000000000");
        assert_eq!(js(1.5e-7), "1.5e-7");
        assert_eq!(js(0.000001), "0.000001");
        assert_eq!(js(123456.789), "123456.789");
        assert_eq!(js(-0.0), "0");
    }

    #[test]
    fn objects_keep_javascript_key_order() {
        let v = Json::parse(br#"{"b":1,"a":2,"2":3,"1":4,"b":5}"#).unwrap();
        assert_eq!(v.to_js_string(), r#"{"1":4,"2":3,"b":5,"a":2}"#);
        let s = Json::parse(r#"{"s":"q\"\\\n\u0001é"}"#.as_bytes()).unwrap();
        assert_eq!(s.to_js_string(), "{\"s\":\"q\\\"\\\\\\n\\u0001é\"}");
    }
}
