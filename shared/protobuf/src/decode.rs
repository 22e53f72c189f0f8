//! Decoding a pomelo-protobuf body into JSON, as pomelo-protobuf 0.4.0 does
//! (`lib/decoder.js`): a field is read by its proto's type (the key's wire type is not
//! checked, as there), fields come out in the order they were read, a repeated scalar is an
//! element count and the elements.
//!
//! Every input gives a value or an error, never a panic: a tag the proto does not know (the
//! reference throws), bytes that end early, a count or length past the end, nesting past
//! [`MAX_DEPTH`](crate::encode::MAX_DEPTH).

use crate::encode::{MAX_DEPTH, is_simple};
use crate::json::Json;
use crate::proto::{MessageProto, ProtoSet, Repeat};

/// Why a body does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("the body ends inside a field")]
    Truncated,
    #[error("a varint is longer than 10 bytes")]
    LongVarint,
    #[error("tag {0} is not in the proto")]
    UnknownTag(u64),
    #[error("field {0} has a type that is not a known message")]
    UnknownType(String),
    #[error("message nesting deeper than {0}")]
    TooDeep(usize),
}

pub(crate) struct Decoder<'a> {
    pub set: &'a ProtoSet,
    pub buf: &'a [u8],
    pub pos: usize,
}

impl<'a> Decoder<'a> {
    /// Reads fields until `end`.
    pub fn message(&mut self, proto: &MessageProto, end: usize, depth: usize) -> Result<Json, DecodeError> {
        if depth > MAX_DEPTH {
            return Err(DecodeError::TooDeep(MAX_DEPTH));
        }
        let mut entries: Vec<(String, Json)> = Vec::new();
        while self.pos < end {
            let head = self.varint()?;
            let tag = head >> 3;
            let f = proto.field_by_tag(tag).ok_or(DecodeError::UnknownTag(tag))?;
            let slot = match entries.iter().position(|(n, _)| *n == f.name) {
                Some(i) => i,
                None => {
                    let empty = match f.option {
                        Repeat::Repeated => Json::Array(Vec::new()),
                        _ => Json::Null,
                    };
                    entries.push((f.name.clone(), empty));
                    entries.len() - 1
                }
            };
            match f.option {
                Repeat::Required | Repeat::Optional => {
                    entries[slot].1 = self.prop(proto, &f.name, &f.ty, end, depth)?;
                }
                Repeat::Repeated => {
                    let mut items = Vec::new();
                    self.array(proto, &f.name, &f.ty, end, depth, &mut items)?;
                    if let Json::Array(existing) = &mut entries[slot].1 {
                        existing.extend(items);
                    }
                }
            }
        }
        if self.pos > end {
            return Err(DecodeError::Truncated);
        }
        Ok(Json::object(entries))
    }

    fn array(
        &mut self,
        scope: &MessageProto,
        field: &str,
        ty: &str,
        end: usize,
        depth: usize,
        items: &mut Vec<Json>,
    ) -> Result<(), DecodeError> {
        if is_simple(ty) {
            let count = self.varint()?;
            // Each element takes a byte at least: a count past the end is a lie.
            if count > (end.saturating_sub(self.pos)) as u64 {
                return Err(DecodeError::Truncated);
            }
            for _ in 0..count {
                items.push(self.prop(scope, field, ty, end, depth)?);
            }
        } else {
            // The reference peeks the length and skips an empty element entirely.
            let save = self.pos;
            if self.varint()? == 0 {
                return Ok(());
            }
            self.pos = save;
            items.push(self.prop(scope, field, ty, end, depth)?);
        }
        Ok(())
    }

    fn prop(
        &mut self,
        scope: &MessageProto,
        field: &str,
        ty: &str,
        end: usize,
        depth: usize,
    ) -> Result<Json, DecodeError> {
        Ok(match ty {
            "uInt32" => Json::Number(self.varint()? as f64),
            "sInt32" | "int32" => {
                let n = self.varint()? as f64;
                // (n % 2 + n) / 2 * sign, as the codec computes it.
                let sign = if n % 2.0 == 1.0 { -1.0 } else { 1.0 };
                Json::Number((n % 2.0 + n) / 2.0 * sign)
            }
            "float" => {
                let b = self.take(4, end)?;
                Json::Number(f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])))
            }
            "double" => {
                let b = self.take(8, end)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                Json::Number(f64::from_le_bytes(a))
            }
            "string" => {
                let len = self.length(end)?;
                let b = self.take(len, end)?;
                Json::String(shaddock_protocol::text::decode_lenient(b).into_owned())
            }
            _ => {
                let nested = scope
                    .message(ty)
                    .or_else(|| self.set.top_message(ty))
                    .ok_or_else(|| DecodeError::UnknownType(field.to_owned()))?;
                let len = self.length(end)?;
                let inner_end = self.pos + len;
                self.message(nested, inner_end, depth + 1)?
            }
        })
    }

    /// A length that must fit in what is left before `end`.
    fn length(&mut self, end: usize) -> Result<usize, DecodeError> {
        let len = self.varint()?;
        if len > end.saturating_sub(self.pos) as u64 {
            return Err(DecodeError::Truncated);
        }
        Ok(len as usize)
    }

    fn take(&mut self, n: usize, end: usize) -> Result<&'a [u8], DecodeError> {
        if self.pos + n > end.min(self.buf.len()) {
            return Err(DecodeError::Truncated);
        }
        let b = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(b)
    }

    fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut n: u64 = 0;
        for i in 0..10 {
            let b = *self.buf.get(self.pos).ok_or(DecodeError::Truncated)?;
            self.pos += 1;
            n |= u64::from(b & 0x7f).checked_shl(7 * i).unwrap_or(0);
            if b < 0x80 {
                return Ok(n);
            }
        }
        Err(DecodeError::LongVarint)
    }
}
