//! The tamper-evident chain.
//!
//! Each line is the record's JSON followed by `"mac"`: the HMAC-SHA256,
//! keyed by a key derived from `[audit] key_file`, of the previous record's
//! MAC and this record's JSON without its MAC. Changing, removing,
//! inserting or reordering any record breaks every MAC after it; without
//! the key nobody can compute new ones. The chain runs across files: the
//! first record of a file continues from the last record of the file
//! before.
//!
//! A chain alone cannot show that its newest records were cut off. The
//! seal file (`seal.json` in the audit folder) holds the sequence number
//! and MAC of the last record known durable, signed with the same key, and
//! is rewritten at least every second while records are written, and on
//! shutdown; `audit verify` requires the trail to reach it.

use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The MAC the first record of a trail is chained to.
pub const GENESIS: [u8; 32] = [0; 32];

/// What `,"mac":"` + 64 hex digits + `"}` adds to a record's JSON.
const MAC_SUFFIX: usize = 8 + 64 + 2;

/// The chain key, derived from the audit key with a label of its own,
/// kept as the MAC state already keyed with it: each record clones that
/// state instead of keying a new MAC (two SHA-256 blocks fewer per line).
#[derive(Clone)]
pub struct ChainKey(HmacSha256);

impl std::fmt::Debug for ChainKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChainKey(..)")
    }
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut m = <HmacSha256 as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

impl ChainKey {
    pub fn from_audit_key(secret: &[u8]) -> ChainKey {
        let key = hmac(secret, &[b"pgwarden audit chain v1"]);
        ChainKey(<HmacSha256 as KeyInit>::new_from_slice(&key).expect("HMAC takes any key length"))
    }

    fn keyed(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut m = self.0.clone();
        for p in parts {
            m.update(p);
        }
        m.finalize().into_bytes().into()
    }

    /// MAC of `body` (a record's JSON without `mac`) after `prev`.
    pub fn mac(&self, prev: &[u8; 32], body: &[u8]) -> [u8; 32] {
        self.keyed(&[prev, body])
    }

    /// A signature (hex) over `parts`, for files beside the chain.
    pub fn sign(&self, parts: &[&[u8]]) -> String {
        hex(&self.keyed(parts))
    }

    fn sign_seal(&self, seal: &Seal) -> String {
        self.sign(&[
            b"seal",
            &seal.seq.to_be_bytes(),
            seal.mac.as_bytes(),
            seal.file.as_bytes(),
            seal.ts.as_bytes(),
        ])
    }
}

pub use crate::hex::{decode32 as unhex, encode as hex};

/// Append the chained MAC to `body` (a JSON object without `mac`), giving
/// the line to write (with its newline) and the new chain head.
pub fn seal_line(key: &ChainKey, prev: &[u8; 32], body: &[u8], line: &mut Vec<u8>) -> [u8; 32] {
    let mac = key.mac(prev, body);
    let open = body.strip_suffix(b"}").unwrap_or(body);
    line.extend_from_slice(open);
    line.extend_from_slice(b",\"mac\":\"");
    line.extend_from_slice(hex(&mac).as_bytes());
    line.extend_from_slice(b"\"}\n");
    mac
}

/// Split a line into the record's JSON without `mac` and the MAC it
/// carries; `None` when the line does not end in a MAC.
pub fn open_line(line: &str) -> Option<(String, [u8; 32])> {
    let cut = line.len().checked_sub(MAC_SUFFIX)?;
    let tail = line.get(cut..)?;
    let hexpart = tail.strip_prefix(",\"mac\":\"")?.strip_suffix("\"}")?;
    let mac = unhex(hexpart)?;
    let mut body = String::with_capacity(cut + 1);
    body.push_str(&line[..cut]);
    body.push('}');
    Some((body, mac))
}

/// The signed head of the trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seal {
    /// The last record known durable.
    pub seq: u64,
    pub mac: String,
    /// The file it is in.
    pub file: String,
    pub ts: String,
    #[serde(default)]
    pub sig: String,
}

impl Seal {
    pub fn signed(key: &ChainKey, seq: u64, mac: &[u8; 32], file: &str) -> Seal {
        let mut s = Seal {
            seq,
            mac: hex(mac),
            file: file.to_string(),
            ts: jiff::Timestamp::now().to_string(),
            sig: String::new(),
        };
        s.sig = key.sign_seal(&s);
        s
    }

    pub fn valid(&self, key: &ChainKey) -> bool {
        key.sign_seal(self) == self.sig
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_open_to_what_was_sealed_and_macs_chain() {
        let key = ChainKey::from_audit_key(b"k");
        let mut line = Vec::new();
        let m1 = seal_line(&key, &GENESIS, br#"{"seq":1,"event":"start"}"#, &mut line);
        let text = String::from_utf8(line).unwrap();
        assert!(text.ends_with("\"}\n"));
        let (body, mac) = open_line(text.trim_end()).unwrap();
        assert_eq!(body, r#"{"seq":1,"event":"start"}"#);
        assert_eq!(mac, m1);
        assert_eq!(key.mac(&GENESIS, body.as_bytes()), mac);
        // The pre-keyed state gives exactly the HMAC of the derived key,
        // so trails written before it still verify.
        let derived = hmac(b"k", &[b"pgwarden audit chain v1"]);
        assert_eq!(hmac(&derived, &[&GENESIS, body.as_bytes()]), mac);
        assert_eq!(key.sign(&[b"a", b"b"]), hex(&hmac(&derived, &[b"ab"])));
        // Another key, or another predecessor, gives another MAC.
        assert_ne!(
            ChainKey::from_audit_key(b"j").mac(&GENESIS, body.as_bytes()),
            mac
        );
        assert_ne!(key.mac(&m1, body.as_bytes()), mac);
        assert_eq!(unhex(&hex(&m1)), Some(m1));
        assert!(open_line(r#"{"seq":1}"#).is_none());
    }

    #[test]
    fn seals_are_signed() {
        let key = ChainKey::from_audit_key(b"k");
        let mut s = Seal::signed(&key, 9, &[7; 32], "audit-1.jsonl");
        assert!(s.valid(&key));
        s.seq = 8;
        assert!(!s.valid(&key));
    }
}
