//! Client authentication performed by pgwarden itself (terminate mode).
//!
//! [`scram`] runs SCRAM-SHA-256 as server towards the client and as client
//! towards PostgreSQL; [`md5`] does the same for md5 secrets. [`StoredSecret`]
//! is what `auth_query` returns for a login. In relay mode none of this is
//! used: the server's own exchange passes through (`session::auth`).

pub mod md5;
pub mod scram;

/// A login's stored password verifier, as in `pg_authid.rolpassword`.
#[derive(Debug, Clone)]
pub enum StoredSecret {
    Scram(scram::Secret),
    /// `md5` + hex(md5(password || user)).
    Md5(String),
}

impl StoredSecret {
    pub fn parse(rolpassword: &str) -> Option<StoredSecret> {
        if let Some(s) = scram::Secret::parse(rolpassword) {
            return Some(StoredSecret::Scram(s));
        }
        let hex = rolpassword.strip_prefix("md5")?;
        (hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| StoredSecret::Md5(hex.to_ascii_lowercase()))
    }
}

/// What pgwarden holds after the client proved itself, to log in upstream.
pub enum UpstreamCredential {
    Scram {
        client_key: [u8; 32],
        server_key: [u8; 32],
    },
    Md5 {
        hash: String,
    },
}
