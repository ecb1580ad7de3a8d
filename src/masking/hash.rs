//! Keyed pseudonyms for the `hash` action: the same value always maps to
//! the same pseudonym under the same key (across sessions and restarts), so
//! analysts can count and join, but the value cannot be recovered or
//! guessed by hashing candidates without the key.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Label separating the hash key derived from the audit key from any other
/// use of that key.
const DERIVE_LABEL: &[u8] = b"pgwarden masking hash key v1";

/// The secret behind pseudonyms, kept as the MAC state already keyed with
/// it: each use clones that state instead of keying a new MAC, which
/// halves the SHA-256 work per value.
#[derive(Clone)]
pub struct HashKey(HmacSha256);

impl std::fmt::Debug for HashKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HashKey(..)")
    }
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut m = <HmacSha256 as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(data);
    m.finalize().into_bytes().into()
}

impl HashKey {
    /// A key from the bytes of `[masking] hash_key_file`.
    pub fn from_secret(secret: &[u8]) -> HashKey {
        HashKey::keyed(&hmac(secret, b"pgwarden masking hash key"))
    }

    fn keyed(key: &[u8; 32]) -> HashKey {
        HashKey(<HmacSha256 as KeyInit>::new_from_slice(key).expect("HMAC takes any key length"))
    }

    fn mac(&self, value: &[u8]) -> [u8; 32] {
        let mut m = self.0.clone();
        m.update(value);
        m.finalize().into_bytes().into()
    }

    /// A key derived from the audit key, with a label of its own, for when
    /// no hash key file is configured.
    pub fn derive_from_audit_key(audit_key: &[u8]) -> HashKey {
        HashKey::keyed(&hmac(audit_key, DERIVE_LABEL))
    }

    /// A data subject's identity in memory: 64 bits of the keyed hash of
    /// its key (the key itself is never kept).
    pub fn subject_id(&self, value: &[u8]) -> u64 {
        let mac = self.mac(value);
        u64::from_le_bytes(mac[..8].try_into().expect("8 bytes"))
    }

    /// The pseudonym of `value`: `h:` and 20 hex digits (80 bits).
    pub fn pseudonym(&self, value: &[u8]) -> String {
        let mac = self.mac(value);
        let mut out = String::with_capacity(22);
        out.push_str("h:");
        crate::hex::push(&mut out, &mac[..10]);
        out
    }
}

/// The hash key of a configuration: `[masking] hash_key_file`, else
/// derived from `[audit] key_file`. Without either, pseudonyms use a
/// random key and change on every restart (logged as a warning).
pub fn load_key(config: &crate::config::Config) -> Result<HashKey, String> {
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()))
    };
    if let Some(p) = &config.masking.hash_key_file {
        return Ok(HashKey::from_secret(&read(p)?));
    }
    if let Some(p) = &config.audit.key_file {
        return Ok(HashKey::derive_from_audit_key(&read(p)?));
    }
    tracing::warn!(
        "no [masking] hash_key_file or [audit] key_file: hash pseudonyms will change on restart"
    );
    Ok(HashKey::from_secret(&rand::random::<[u8; 32]>()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_keyed_and_distinct() {
        let k = HashKey::from_secret(b"secret one");
        let a = k.pseudonym("13812345678".as_bytes());
        assert_eq!(
            a,
            HashKey::from_secret(b"secret one").pseudonym("13812345678".as_bytes())
        );
        assert_eq!(a.len(), 22);
        assert!(a.starts_with("h:"));
        assert_ne!(a, k.pseudonym("13812345679".as_bytes()));
        assert_ne!(
            a,
            HashKey::from_secret(b"secret two").pseudonym("13812345678".as_bytes())
        );
        // The derived key differs from using the audit key directly.
        assert_ne!(
            HashKey::derive_from_audit_key(b"audit").pseudonym(b"x"),
            HashKey::from_secret(b"audit").pseudonym(b"x")
        );
    }
}
