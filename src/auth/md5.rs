//! PostgreSQL's md5 password scheme: `md5` + hex(md5(hex(md5(password ||
//! user)) || salt)). Holding the stored hash is enough to answer the
//! server, which is why md5 secrets must be guarded like passwords.

use md5::{Digest, Md5};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The response to an md5 challenge with `salt`, given the stored hash
/// (the 32 hex digits after `md5`).
pub fn response(stored_hex: &str, salt: &[u8; 4]) -> String {
    let mut h = Md5::new();
    h.update(stored_hex.as_bytes());
    h.update(salt);
    format!("md5{}", hex(&h.finalize()))
}

/// The stored hash for `password` and `user`.
pub fn stored(password: &str, user: &str) -> String {
    let mut h = Md5::new();
    h.update(password.as_bytes());
    h.update(user.as_bytes());
    hex(&h.finalize())
}

/// Check a client's md5 response without early exit.
pub fn verify(stored_hex: &str, salt: &[u8; 4], client_response: &str) -> bool {
    let expected = response(stored_hex, salt);
    expected.len() == client_response.len()
        && expected
            .bytes()
            .zip(client_response.bytes())
            .fold(0u8, |a, (x, y)| a | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_postgres_scheme() {
        // SELECT 'md5' || md5('secret' || 'alice') in PostgreSQL.
        assert_eq!(
            stored("secret", "alice"),
            "4a0a68b43b6cd5cf266fa02f196e2371"
        );
        let salt = [1, 2, 3, 4];
        let r = response(&stored("secret", "alice"), &salt);
        assert!(verify(&stored("secret", "alice"), &salt, &r));
        assert!(!verify(&stored("secret", "alice"), &[4, 3, 2, 1], &r));
    }
}
