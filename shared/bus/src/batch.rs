//! Several bus messages in one NATS message: what a server publishes to the same subject in
//! the same instant (a room's push and the answer to its sender's connector, the pushes of many
//! rooms under load) leaves as one message, so NATS, the kernel and the receiver wake once.
//!
//! The format starts with 0xC1, a byte MessagePack never uses, so a batch is never mistaken
//! for an [`crate::Envelope`]. Then, per message: subject (u16 length, empty for the batch's
//! own subject), reply subject (u16 length, empty for none), payload (u32 length), all
//! big-endian.

use bytes::{BufMut, Bytes, BytesMut};

/// The first byte of a batch.
pub const MARK: u8 = 0xC1;

/// What one batch carries at most; NATS refuses messages over its `max_payload` (1 MiB by
/// default), and a big batch would only delay its first message.
pub const MAX_BYTES: usize = 256 * 1024;

/// One message of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// `None`: the subject the batch was published to.
    pub subject: Option<String>,
    pub reply: Option<String>,
    pub payload: Bytes,
}

/// True when `payload` is a batch.
pub fn is_batch(payload: &[u8]) -> bool {
    payload.first() == Some(&MARK)
}

/// The bytes `item` takes in a batch.
pub fn item_len(subject: Option<&str>, reply: Option<&str>, payload: &[u8]) -> usize {
    2 + subject.map_or(0, str::len) + 2 + reply.map_or(0, str::len) + 4 + payload.len()
}

/// Writes a batch's messages after its mark.
#[derive(Debug)]
pub struct Writer {
    buf: BytesMut,
}

impl Writer {
    pub fn with_capacity(bytes: usize) -> Self {
        let mut buf = BytesMut::with_capacity(bytes + 1);
        buf.put_u8(MARK);
        Self { buf }
    }

    /// Adds a message; subjects are server and inbox names (far under 64 KiB).
    pub fn push(&mut self, subject: Option<&str>, reply: Option<&str>, payload: &[u8]) {
        for s in [subject, reply] {
            let s = s.unwrap_or("");
            self.buf.put_u16(s.len() as u16);
            self.buf.put_slice(s.as_bytes());
        }
        self.buf.put_u32(payload.len() as u32);
        self.buf.put_slice(payload);
    }

    pub fn finish(self) -> Bytes {
        self.buf.freeze()
    }
}

/// The messages of a batch, their payloads slices of it (no copy). A batch cut short or
/// malformed yields what it holds before the fault.
pub fn read(batch: &Bytes) -> Vec<Item> {
    let mut items = Vec::new();
    let mut at = 1;
    let text = |at: &mut usize| -> Option<Option<String>> {
        let len = usize::from(u16::from_be_bytes(batch.get(*at..*at + 2)?.try_into().ok()?));
        let s = std::str::from_utf8(batch.get(*at + 2..*at + 2 + len)?).ok()?;
        *at += 2 + len;
        Some((!s.is_empty()).then(|| s.to_owned()))
    };
    while at < batch.len() {
        let Some(subject) = text(&mut at) else { break };
        let Some(reply) = text(&mut at) else { break };
        let Some(len) = batch
            .get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .map(|b| u32::from_be_bytes(b) as usize)
        else {
            break;
        };
        if batch.len() < at + 4 + len {
            break;
        }
        items.push(Item {
            subject,
            reply,
            payload: batch.slice(at + 4..at + 4 + len),
        });
        at += 4 + len;
    }
    items
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_gives_back_its_messages_in_order() {
        let mut w = Writer::with_capacity(64);
        w.push(None, None, b"\x81\xa4Push");
        w.push(Some("ns.srv.c-1._b.x.7"), None, b"answer");
        w.push(None, Some("_INBOX.y.3"), b"");
        let bytes = w.finish();
        assert!(is_batch(&bytes));
        let items = read(&bytes);
        assert_eq!(items.len(), 3);
        assert_eq!(items[0].subject, None);
        assert_eq!(&items[0].payload[..], b"\x81\xa4Push");
        assert_eq!(items[1].subject.as_deref(), Some("ns.srv.c-1._b.x.7"));
        assert_eq!(&items[1].payload[..], b"answer");
        assert_eq!(items[2].reply.as_deref(), Some("_INBOX.y.3"));
        assert!(items[2].payload.is_empty());
        let lens: usize = items
            .iter()
            .map(|i| item_len(i.subject.as_deref(), i.reply.as_deref(), &i.payload))
            .sum();
        assert_eq!(lens + 1, bytes.len());
    }

    #[test]
    fn a_batch_cut_short_yields_what_it_holds_before_the_cut() {
        let mut w = Writer::with_capacity(16);
        w.push(None, None, b"one");
        w.push(None, None, b"two");
        let bytes = w.finish();
        let cut = bytes.slice(..bytes.len() - 1);
        assert_eq!(read(&cut).len(), 1);
        assert!(read(&Bytes::from_static(&[MARK, 0])).is_empty());
        assert!(!is_batch(b"\x81") && !is_batch(b""));
    }
}
