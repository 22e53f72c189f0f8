//! Lenient text decoding. The browser client of the chat demo encodes each UTF-16 unit on its
//! own, so a character outside the BMP arrives as two 3-byte surrogates (CESU-8). We rebuild
//! such pairs and replace anything else invalid with U+FFFD, rather than refuse the message.

use std::borrow::Cow;

/// Decodes UTF-8, accepting CESU-8 surrogate pairs; borrows when the input is valid UTF-8.
pub fn decode_lenient(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => Cow::Owned(String::from_utf8_lossy(&rebuild_surrogate_pairs(bytes)).into_owned()),
    }
}

/// Replaces each CESU-8 surrogate pair (`ED A0..AF xx ED B0..BF xx`) with its 4-byte UTF-8.
fn rebuild_surrogate_pairs(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if let Some(c) = surrogate_pair_at(b, i) {
            let mut tmp = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut tmp).as_bytes());
            i += 6;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

fn surrogate_pair_at(b: &[u8], i: usize) -> Option<char> {
    let s = b.get(i..i + 6)?;
    let cont = |x: u8| x & 0xc0 == 0x80;
    if s[0] != 0xed || !(0xa0..=0xaf).contains(&s[1]) || !cont(s[2]) {
        return None;
    }
    if s[3] != 0xed || !(0xb0..=0xbf).contains(&s[4]) || !cont(s[5]) {
        return None;
    }
    let hi = 0xd000 | (u32::from(s[1] & 0x3f) << 6) | u32::from(s[2] & 0x3f);
    let lo = 0xd000 | (u32::from(s[4] & 0x3f) << 6) | u32::from(s[5] & 0x3f);
    char::from_u32(0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cesu8_emoji_is_rebuilt() {
        assert_eq!(decode_lenient(&[0xed, 0xa0, 0xbd, 0xed, 0xb8, 0x80]), "\u{1F600}");
    }

    #[test]
    fn other_invalid_bytes_become_replacement_characters() {
        assert_eq!(decode_lenient(&[b'a', 0xff, b'b']), "a\u{FFFD}b");
    }

    #[test]
    fn valid_utf8_is_borrowed() {
        assert!(matches!(decode_lenient("你好".as_bytes()), Cow::Borrowed(_)));
    }
}
