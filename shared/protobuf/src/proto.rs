//! Protos as Pomelo writes them (`{"required string msg": 1, "message Pos": {...}}`) and as
//! pomelo-protobuf's parser turns them into what the handshake carries
//! (`{"msg": {"option","type","tag"}, ..., "__messages": {...}, "__tags": {...}}`).
//!
//! Like the parser: a key that is not `<option> <type> <name>` or `message <Name>` is skipped,
//! and so is a field whose tag an earlier field took. Unlike it, a tag must be a whole number
//! (below 2^28, so that a field's key fits a varint as JavaScript's 32-bit shift computes it).
//!
//! A field's message type is looked up in the message that declares the field, then among the
//! file's top-level `message <Name>` entries, as the reference decoder does: a message that
//! refers to itself must be a top-level one.

use std::collections::HashMap;

use crate::json::Json;

/// How a field repeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repeat {
    Required,
    Optional,
    Repeated,
}

impl Repeat {
    fn name(self) -> &'static str {
        match self {
            Repeat::Required => "required",
            Repeat::Optional => "optional",
            Repeat::Repeated => "repeated",
        }
    }
}

/// One field of a message.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    pub name: String,
    pub option: Repeat,
    /// `uInt32`, `sInt32`, `int32`, `float`, `double`, `string`, or a message name.
    pub ty: String,
    pub tag: u32,
}

/// A message: its fields in the order of the proto file, and the messages declared in it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MessageProto {
    pub fields: Vec<Field>,
    by_name: HashMap<String, usize>,
    by_tag: HashMap<u32, usize>,
    /// `message <Name>` entries, in file order.
    pub messages: Vec<(String, MessageProto)>,
}

/// The largest tag whose key `(tag << 3) | wire` stays positive in JavaScript's int32 shift.
const MAX_TAG: u64 = (1 << 28) - 1;

impl MessageProto {
    /// Parses one message's source object; anything but an object is an empty message.
    pub fn parse(source: &Json) -> Self {
        let mut m = MessageProto::default();
        let Json::Object(entries) = source else {
            return m;
        };
        for (key, value) in entries {
            let params: Vec<&str> = key.split(' ').collect();
            match params[0] {
                "message" if params.len() == 2 => {
                    let nested = MessageProto::parse(value);
                    match m.messages.iter_mut().find(|(n, _)| n == params[1]) {
                        Some(slot) => slot.1 = nested,
                        None => m.messages.push((params[1].to_owned(), nested)),
                    }
                }
                "required" | "optional" | "repeated" if params.len() == 3 => {
                    let option = match params[0] {
                        "required" => Repeat::Required,
                        "optional" => Repeat::Optional,
                        _ => Repeat::Repeated,
                    };
                    let Some(tag) = whole_number(value).filter(|t| *t <= MAX_TAG) else {
                        continue;
                    };
                    let tag = tag as u32;
                    if m.by_tag.contains_key(&tag) {
                        continue;
                    }
                    let field = Field {
                        name: params[2].to_owned(),
                        option,
                        ty: params[1].to_owned(),
                        tag,
                    };
                    let at = match m.by_name.get(params[2]) {
                        // A second field of the same name replaces the first, as in the parser.
                        Some(&i) => {
                            m.fields[i] = field;
                            i
                        }
                        None => {
                            m.fields.push(field);
                            m.fields.len() - 1
                        }
                    };
                    m.by_name.insert(params[2].to_owned(), at);
                    m.by_tag.insert(tag, at);
                }
                _ => {}
            }
        }
        m
    }

    /// The field called `name`.
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.by_name.get(name).map(|&i| &self.fields[i])
    }

    /// The field with tag `tag`.
    pub fn field_by_tag(&self, tag: u64) -> Option<&Field> {
        let tag = u32::try_from(tag).ok()?;
        self.by_tag.get(&tag).map(|&i| &self.fields[i])
    }

    /// A message declared in this one.
    pub fn message(&self, name: &str) -> Option<&MessageProto> {
        self.messages.iter().find(|(n, _)| n == name).map(|(_, m)| m)
    }

    /// The parsed form, as the handshake carries it.
    pub fn to_json(&self) -> Json {
        let mut entries: Vec<(String, Json)> = self
            .fields
            .iter()
            .map(|f| {
                let spec = Json::object(vec![
                    ("option".to_owned(), Json::String(f.option.name().to_owned())),
                    ("type".to_owned(), Json::String(f.ty.clone())),
                    ("tag".to_owned(), Json::Number(f64::from(f.tag))),
                ]);
                (f.name.clone(), spec)
            })
            .collect();
        let messages = self
            .messages
            .iter()
            .map(|(n, m)| (n.clone(), m.to_json()))
            .collect();
        entries.push(("__messages".to_owned(), Json::object(messages)));
        let tags = self
            .fields
            .iter()
            .map(|f| (f.tag.to_string(), Json::String(f.name.clone())))
            .collect();
        entries.push(("__tags".to_owned(), Json::object(tags)));
        Json::object(entries)
    }
}

/// A non-negative whole number.
fn whole_number(v: &Json) -> Option<u64> {
    match v {
        Json::Number(n) if *n >= 0.0 && n.fract() == 0.0 && *n < 9e15 => Some(*n as u64),
        _ => None,
    }
}

/// One side's protos (the server's or the client's): a message per route, and top-level
/// `message <Name>` entries that any route may use.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProtoSet {
    /// Keyed as in the file: a route, or `message <Name>`.
    entries: Vec<(String, MessageProto)>,
    by_key: HashMap<String, usize>,
}

impl ProtoSet {
    /// Parses a `serverProtos.json` or `clientProtos.json` object.
    pub fn parse(source: &Json) -> Self {
        let mut set = ProtoSet::default();
        if let Json::Object(entries) = source {
            for (key, value) in entries {
                set.by_key.insert(key.clone(), set.entries.len());
                set.entries.push((key.clone(), MessageProto::parse(value)));
            }
        }
        set
    }

    /// The message of a route.
    pub fn route(&self, route: &str) -> Option<&MessageProto> {
        self.by_key.get(route).map(|&i| &self.entries[i].1)
    }

    /// A top-level `message <Name>`.
    pub fn top_message(&self, name: &str) -> Option<&MessageProto> {
        self.by_key
            .get(&format!("message {name}"))
            .map(|&i| &self.entries[i].1)
    }

    /// True when no route has a proto.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The parsed form, as the handshake carries it.
    pub fn to_json(&self) -> Json {
        Json::object(
            self.entries
                .iter()
                .map(|(k, m)| (k.clone(), m.to_json()))
                .collect(),
        )
    }
}
