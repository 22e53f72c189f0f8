//! Encoding a JSON body as pomelo-protobuf 0.4.0 does (`lib/encoder.js`, `lib/codec.js`).
//!
//! Where it differs from Google's protobuf, it is followed: fields go in the body's key
//! order, `int32` is ZigZag like `sInt32`, a repeated scalar is one key, an element count and
//! the elements. Where it would write something broken (a type it cannot encode, `null` for a
//! string) or throw, this is an error; the caller then sends an empty body, as Pomelo does
//! when a required field is missing.

use crate::json::{Json, write_number};
use crate::proto::{MessageProto, ProtoSet, Repeat};

/// Why a body could not be encoded with its proto.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("the body is not an object")]
    NotAnObject,
    #[error("required field {0} is missing")]
    MissingRequired(String),
    #[error("field {field}: {why}")]
    BadValue { field: String, why: &'static str },
    #[error("message nesting deeper than {0}")]
    TooDeep(usize),
}

/// Nested messages deeper than this are refused (a proto may refer to itself).
pub const MAX_DEPTH: usize = 64;

pub(crate) struct Encoder<'a> {
    pub set: &'a ProtoSet,
    pub out: Vec<u8>,
}

/// The scalar types whose repeated form is "key, count, elements".
pub(crate) fn is_simple(ty: &str) -> bool {
    matches!(
        ty,
        "uInt32" | "sInt32" | "int32" | "uInt64" | "sInt64" | "float" | "double"
    )
}

/// The wire type pomelo-protobuf gives a field type (`constant.TYPES[type] || 2`).
fn wire_type(ty: &str) -> u64 {
    match ty {
        "uInt32" | "sInt32" | "int32" => 0,
        "double" => 1,
        "float" => 5,
        _ => 2,
    }
}

impl<'a> Encoder<'a> {
    /// Encodes `msg` with `proto`, checking the required fields first.
    pub fn message(&mut self, proto: &MessageProto, msg: &Json) -> Result<(), EncodeError> {
        self.check(proto, msg, 0)?;
        self.fields(proto, msg, 0)
    }

    /// pomelo-protobuf's `checkMsg`: every required field present, and each element of a
    /// repeated message checked. (It ignores what a nested required or optional message's
    /// check says, and so does this.)
    fn check(&self, proto: &MessageProto, msg: &Json, depth: usize) -> Result<(), EncodeError> {
        if depth > MAX_DEPTH {
            return Err(EncodeError::TooDeep(MAX_DEPTH));
        }
        let Json::Object(_) = msg else {
            return Err(EncodeError::NotAnObject);
        };
        for f in &proto.fields {
            let value = msg.get(&f.name);
            match f.option {
                Repeat::Required if matches!(value, None | Some(Json::Null)) => {
                    return Err(EncodeError::MissingRequired(f.name.clone()));
                }
                Repeat::Repeated => {
                    if let (Some(Json::Array(items)), Some(nested)) = (value, self.lookup(proto, &f.ty)) {
                        for item in items {
                            self.check(nested, item, depth + 1)?;
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn lookup(&self, scope: &'a MessageProto, ty: &str) -> Option<&'a MessageProto> {
        scope.message(ty).or_else(|| self.set.top_message(ty))
    }

    /// Writes the fields of `msg` that `proto` knows, in the body's key order.
    fn fields(&mut self, proto: &MessageProto, msg: &Json, depth: usize) -> Result<(), EncodeError> {
        if depth > MAX_DEPTH {
            return Err(EncodeError::TooDeep(MAX_DEPTH));
        }
        let Json::Object(entries) = msg else {
            // A nested value that is not an object encodes no fields, as in the encoder.
            return Ok(());
        };
        for (name, value) in entries {
            let Some(f) = proto.field(name) else { continue };
            match f.option {
                Repeat::Required | Repeat::Optional => {
                    // An optional null is taken as absent (the encoder would throw on it).
                    if matches!(value, Json::Null) && f.option == Repeat::Optional {
                        continue;
                    }
                    self.key(f.tag, &f.ty);
                    self.prop(proto, &f.name, &f.ty, value, depth)?;
                }
                Repeat::Repeated => {
                    let Json::Array(items) = value else { continue };
                    if items.is_empty() {
                        continue;
                    }
                    if is_simple(&f.ty) {
                        self.key(f.tag, &f.ty);
                        varint(&mut self.out, items.len() as u128);
                        for item in items {
                            self.prop(proto, &f.name, &f.ty, item, depth)?;
                        }
                    } else {
                        for item in items {
                            self.key(f.tag, &f.ty);
                            self.prop(proto, &f.name, &f.ty, item, depth)?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn key(&mut self, tag: u32, ty: &str) {
        varint(&mut self.out, u128::from((u64::from(tag) << 3) | wire_type(ty)));
    }

    fn prop(
        &mut self,
        scope: &MessageProto,
        field: &str,
        ty: &str,
        value: &Json,
        depth: usize,
    ) -> Result<(), EncodeError> {
        let bad = |why| EncodeError::BadValue {
            field: field.to_owned(),
            why,
        };
        match ty {
            "uInt32" => {
                let n = parse_int(value)
                    .filter(|n| *n >= 0.0)
                    .ok_or(bad("not a uInt32"))?;
                varint(&mut self.out, n as u128);
            }
            "sInt32" | "int32" => {
                let n = parse_int(value).ok_or(bad("not an integer"))?;
                // In doubles, as the codec computes it.
                let z = if n < 0.0 { n.abs() * 2.0 - 1.0 } else { n * 2.0 };
                varint(&mut self.out, z as u128);
            }
            "float" => self
                .out
                .extend_from_slice(&(to_number(value) as f32).to_le_bytes()),
            "double" => self.out.extend_from_slice(&to_number(value).to_le_bytes()),
            "string" => {
                let Json::String(s) = value else {
                    return Err(bad("not a string"));
                };
                varint(&mut self.out, s.len() as u128);
                self.out.extend_from_slice(s.as_bytes());
            }
            _ => {
                let Some(nested) = self.lookup(scope, ty) else {
                    return Err(bad("its type is not a known message"));
                };
                // Length-delimited: encode apart, then the length and the bytes.
                let start = self.out.len();
                self.fields(nested, value, depth + 1)?;
                let body = self.out.split_off(start);
                varint(&mut self.out, body.len() as u128);
                self.out.extend_from_slice(&body);
            }
        }
        Ok(())
    }
}

/// A base-128 varint, least significant group first.
pub(crate) fn varint(out: &mut Vec<u8>, mut n: u128) {
    loop {
        let low = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(low);
            return;
        }
        out.push(low | 0x80);
    }
}

/// JavaScript's `parseInt(value)`: the value as a string, then its leading integer (so
/// `1.7` is 1 and `1e21` is 1, as there).
fn parse_int(value: &Json) -> Option<f64> {
    let text = match value {
        Json::Number(n) if n.is_finite() => {
            let mut s = String::new();
            write_number(*n, &mut s);
            s
        }
        Json::String(s) => s.clone(),
        _ => return None,
    };
    let t = text.trim_start();
    let (negative, digits) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let end = digits.bytes().take_while(u8::is_ascii_digit).count();
    if end == 0 {
        return None;
    }
    let n: f64 = digits[..end].parse().ok()?;
    Some(if negative { -n } else { n })
}

/// JavaScript's `Number(value)` for the values a JSON body holds.
fn to_number(value: &Json) -> f64 {
    match value {
        Json::Number(n) => *n,
        Json::Bool(b) => f64::from(u8::from(*b)),
        Json::Null => 0.0,
        Json::String(s) if s.trim().is_empty() => 0.0,
        Json::String(s) => s.trim().parse().unwrap_or(f64::NAN),
        _ => f64::NAN,
    }
}
