//! The crc32 of npm `crc@0.2.0`, which Pomelo's dispatchers use to pick a server:
//! CRC-32/IEEE over the low byte of each UTF-16 code unit, read as a signed 32-bit number.

/// `crc.crc32(s)` exactly as the reference computes it (signed).
pub fn crc32(s: &str) -> i32 {
    let mut h = crc32fast::Hasher::new();
    let mut buf = [0u8; 64];
    let mut n = 0;
    for unit in s.encode_utf16() {
        buf[n] = unit as u8; // the reference keeps only the low byte
        n += 1;
        if n == buf.len() {
            h.update(&buf);
            n = 0;
        }
    }
    h.update(&buf[..n]);
    h.finalize() as i32
}

/// `Math.abs(crc32(key)) % n`: the index Pomelo's dispatchers pick; `None` when `n == 0`.
pub fn pick_index(key: &str, n: usize) -> Option<usize> {
    if n == 0 {
        return None;
    }
    Some(crc32(key).unsigned_abs() as usize % n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_reference_for_ascii_and_cjk() {
        assert_eq!(crc32("alice"), 663665735);
        assert_eq!(crc32("bob"), -171200192);
        assert_eq!(crc32("测试"), -1527930262);
        assert_eq!(crc32(""), 0);
    }

    #[test]
    fn pick_index_is_abs_modulo() {
        assert_eq!(pick_index("bob", 3), Some(171200192 % 3));
        assert_eq!(pick_index("bob", 0), None);
    }
}
