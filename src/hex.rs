//! Lower-case hexadecimal, for MACs, pseudonyms and binary values in the
//! audit trail.

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Append the hex digits of `bytes` to `out`.
pub fn push(out: &mut String, bytes: &[u8]) {
    out.reserve(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 15) as usize] as char);
    }
}

/// The hex digits of `bytes`.
pub fn encode(bytes: &[u8]) -> String {
    let mut s = String::new();
    push(&mut s, bytes);
    s
}

/// 32 bytes from 64 hex digits.
pub fn decode32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trip() {
        let b = [0xabu8; 32];
        assert_eq!(super::encode(&[0, 15, 255]), "000fff");
        assert_eq!(super::decode32(&super::encode(&b)), Some(b));
        assert_eq!(super::decode32("zz"), None);
    }
}
