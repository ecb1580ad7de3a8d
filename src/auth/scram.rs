//! SCRAM-SHA-256 (RFC 5802, RFC 7677) as PostgreSQL uses it, on both sides.
//!
//! In terminate mode pgwarden is the SCRAM *server* for the client, checking
//! the client's proof against the stored secret (`StoredKey`, `ServerKey`)
//! and recovering the `ClientKey` from it, then the SCRAM *client* towards
//! PostgreSQL with that `ClientKey`. The password itself is never known.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// Why a SCRAM exchange failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    #[error("channel binding is not supported through pgwarden")]
    ChannelBinding,
    #[error("nonce mismatch")]
    Nonce,
    #[error("wrong password")]
    Proof,
    #[error("the server's signature does not match its stored secret")]
    ServerSignature,
}

/// A stored secret `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: [u8; 32],
    pub server_key: [u8; 32],
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret {{ iterations: {}, .. }}", self.iterations)
    }
}

fn key32(b64: &str) -> Option<[u8; 32]> {
    B64.decode(b64).ok()?.try_into().ok()
}

impl Secret {
    /// Parse `rolpassword` as PostgreSQL stores SCRAM secrets.
    pub fn parse(s: &str) -> Option<Secret> {
        let rest = s.strip_prefix("SCRAM-SHA-256$")?;
        let (params, keys) = rest.split_once('$')?;
        let (iterations, salt) = params.split_once(':')?;
        let (stored, server) = keys.split_once(':')?;
        Some(Secret {
            iterations: iterations.parse().ok().filter(|i| *i > 0)?,
            salt: B64.decode(salt).ok()?,
            stored_key: key32(stored)?,
            server_key: key32(server)?,
        })
    }

    /// Derive a secret from a password (tests and mock exchanges).
    pub fn from_password(password: &str, salt: &[u8], iterations: u32) -> Secret {
        let salted = hi(password.as_bytes(), salt, iterations);
        let client_key = hmac(&salted, b"Client Key");
        Secret {
            iterations,
            salt: salt.to_vec(),
            stored_key: sha256(&client_key),
            server_key: hmac(&salted, b"Server Key"),
        }
    }
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut m = <HmacSha256 as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(data);
    m.finalize().into_bytes().into()
}

fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// PBKDF2-HMAC-SHA-256 with one output block, as SCRAM's `Hi`.
fn hi(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut block = salt.to_vec();
    block.extend_from_slice(&1u32.to_be_bytes());
    let mut u = hmac(password, &block);
    let mut out = u;
    for _ in 1..iterations {
        u = hmac(password, &u);
        for (o, x) in out.iter_mut().zip(u.iter()) {
            *o ^= x;
        }
    }
    out
}

fn xor(a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
    let mut out = [0u8; 32];
    for i in 0..32 {
        out[i] = a[i] ^ b[i];
    }
    out
}

/// Equality without early exit.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A printable random nonce.
pub fn nonce() -> String {
    let mut raw = [0u8; 18];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut raw);
    B64.encode(raw)
}

/// Value of attribute `name` (`r`, `s`, `i`, `c`, `p`, `v`) in a SCRAM message.
fn attr(msg: &str, name: char) -> Option<&str> {
    msg.split(',').find_map(|part| {
        let mut chars = part.chars();
        (chars.next() == Some(name) && chars.next() == Some('=')).then(|| &part[2..])
    })
}

/// pgwarden as the SCRAM server facing a client.
pub struct ServerExchange {
    secret: Secret,
    gs2_header: String,
    client_first_bare: String,
    server_first: String,
    nonce: String,
}

impl ServerExchange {
    /// Take the client-first message and produce the server-first message.
    pub fn start(secret: Secret, client_first: &str) -> Result<(ServerExchange, String), Error> {
        // gs2-header: "n,," (no binding) or "y,," (client could, we did not
        // offer); "p=..." asks for binding, which pgwarden never offers.
        let (flag, rest) = client_first
            .split_once(',')
            .ok_or(Error::Malformed("gs2 header"))?;
        match flag {
            "n" | "y" => {}
            f if f.starts_with("p=") => return Err(Error::ChannelBinding),
            _ => return Err(Error::Malformed("gs2 flag")),
        }
        let (authzid, bare) = rest.split_once(',').ok_or(Error::Malformed("gs2 header"))?;
        if !authzid.is_empty() {
            return Err(Error::Malformed("authzid is not supported"));
        }
        let client_nonce = attr(bare, 'r').ok_or(Error::Malformed("client nonce"))?;
        if client_nonce.is_empty()
            || !client_nonce
                .bytes()
                .all(|b| (0x21..=0x7e).contains(&b) && b != b',')
        {
            return Err(Error::Malformed("client nonce"));
        }
        let nonce = format!("{client_nonce}{}", self::nonce());
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&secret.salt),
            secret.iterations
        );
        let ex = ServerExchange {
            gs2_header: format!("{flag},{authzid},"),
            client_first_bare: bare.to_string(),
            server_first: server_first.clone(),
            nonce,
            secret,
        };
        Ok((ex, server_first))
    }

    /// Check the client-final message. On success returns the server-final
    /// message and the client's `ClientKey`.
    pub fn finish(self, client_final: &str) -> Result<(String, [u8; 32]), Error> {
        let (without_proof, proof) = client_final
            .rsplit_once(",p=")
            .ok_or(Error::Malformed("proof"))?;
        let binding = attr(without_proof, 'c').ok_or(Error::Malformed("channel binding"))?;
        if binding != B64.encode(&self.gs2_header) {
            return Err(Error::ChannelBinding);
        }
        if attr(without_proof, 'r') != Some(self.nonce.as_str()) {
            return Err(Error::Nonce);
        }
        let proof: [u8; 32] = B64
            .decode(proof)
            .ok()
            .and_then(|p| p.try_into().ok())
            .ok_or(Error::Malformed("proof"))?;
        let auth_message = format!(
            "{},{},{}",
            self.client_first_bare, self.server_first, without_proof
        );
        let client_signature = hmac(&self.secret.stored_key, auth_message.as_bytes());
        let client_key = xor(&proof, &client_signature);
        if !ct_eq(&sha256(&client_key), &self.secret.stored_key) {
            return Err(Error::Proof);
        }
        let server_signature = hmac(&self.secret.server_key, auth_message.as_bytes());
        Ok((format!("v={}", B64.encode(server_signature)), client_key))
    }
}

/// pgwarden as the SCRAM client facing PostgreSQL, proving knowledge of
/// `ClientKey` without the password.
pub struct ClientExchange {
    client_key: [u8; 32],
    server_key: [u8; 32],
    client_first_bare: String,
    nonce: String,
    auth_message: Option<String>,
}

impl ClientExchange {
    /// The client-first message (no channel binding).
    pub fn start(client_key: [u8; 32], server_key: [u8; 32]) -> (ClientExchange, String) {
        let nonce = nonce();
        let bare = format!("n=,r={nonce}");
        let first = format!("n,,{bare}");
        (
            ClientExchange {
                client_key,
                server_key,
                client_first_bare: bare,
                nonce,
                auth_message: None,
            },
            first,
        )
    }

    /// Answer the server-first message with the client-final message.
    pub fn respond(&mut self, server_first: &str) -> Result<String, Error> {
        let nonce = attr(server_first, 'r').ok_or(Error::Malformed("server nonce"))?;
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err(Error::Nonce);
        }
        attr(server_first, 's').ok_or(Error::Malformed("salt"))?;
        attr(server_first, 'i').ok_or(Error::Malformed("iterations"))?;
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!(
            "{},{},{}",
            self.client_first_bare, server_first, without_proof
        );
        let stored_key = sha256(&self.client_key);
        let proof = xor(
            &self.client_key,
            &hmac(&stored_key, auth_message.as_bytes()),
        );
        self.auth_message = Some(auth_message);
        Ok(format!("{without_proof},p={}", B64.encode(proof)))
    }

    /// Check the server-final message: the server knows `ServerKey`.
    pub fn verify(&self, server_final: &str) -> Result<(), Error> {
        let v = attr(server_final, 'v').ok_or(Error::Malformed("server signature"))?;
        let expected = hmac(
            &self.server_key,
            self.auth_message.as_deref().unwrap_or("").as_bytes(),
        );
        let got = B64
            .decode(v)
            .map_err(|_| Error::Malformed("server signature"))?;
        if ct_eq(&got, &expected) {
            Ok(())
        } else {
            Err(Error::ServerSignature)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client that knows the password, as libpq computes its proof.
    fn client_final(password: &str, client_first_bare: &str, server_first: &str) -> String {
        let salt = B64.decode(attr(server_first, 's').unwrap()).unwrap();
        let iters: u32 = attr(server_first, 'i').unwrap().parse().unwrap();
        let salted = hi(password.as_bytes(), &salt, iters);
        let client_key = hmac(&salted, b"Client Key");
        let stored = sha256(&client_key);
        let without = format!("c=biws,r={}", attr(server_first, 'r').unwrap());
        let am = format!("{client_first_bare},{server_first},{without}");
        let proof = xor(&client_key, &hmac(&stored, am.as_bytes()));
        format!("{without},p={}", B64.encode(proof))
    }

    #[test]
    fn rfc7677_test_vector_secret() {
        // RFC 7677 section 3: user "user", password "pencil".
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let s = Secret::from_password("pencil", &salt, 4096);
        let salted = hi(b"pencil", &salt, 4096);
        let client_key = hmac(&salted, b"Client Key");
        let am = "n=user,r=rOprNGfwEbeRWgbNEkqO,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let proof = xor(&client_key, &hmac(&s.stored_key, am.as_bytes()));
        assert_eq!(
            B64.encode(proof),
            "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        assert_eq!(
            B64.encode(hmac(&s.server_key, am.as_bytes())),
            "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
    }

    #[test]
    fn parse_postgres_secret() {
        let s = Secret::from_password("pw", b"saltsaltsaltsalt", 4096);
        let text = format!(
            "SCRAM-SHA-256${}:{}${}:{}",
            s.iterations,
            B64.encode(&s.salt),
            B64.encode(s.stored_key),
            B64.encode(s.server_key)
        );
        assert_eq!(Secret::parse(&text), Some(s));
        assert_eq!(Secret::parse("md5abc"), None);
        assert_eq!(Secret::parse("SCRAM-SHA-256$0:AA==$AA==:AA=="), None);
    }

    #[test]
    fn server_recovers_client_key_and_client_logs_in_with_it() {
        let secret = Secret::from_password("correct horse", b"0123456789abcdef", 4096);
        let (ex, server_first) =
            ServerExchange::start(secret.clone(), "n,,n=,r=clientnonce").unwrap();
        let fin = client_final("correct horse", "n=,r=clientnonce", &server_first);
        let (server_final, client_key) = ex.finish(&fin).unwrap();
        assert!(server_final.starts_with("v="));

        // Now towards a "server" holding the same secret.
        let (mut client, first) = ClientExchange::start(client_key, secret.server_key);
        let bare = first.strip_prefix("n,,").unwrap();
        let (server, sfirst) = ServerExchange::start(secret, &first).unwrap();
        let cfinal = client.respond(&sfirst).unwrap();
        let (sfinal, _) = server.finish(&cfinal).unwrap();
        client.verify(&sfinal).unwrap();
        assert!(bare.starts_with("n=,r="));
    }

    #[test]
    fn wrong_password_and_tampering_are_refused() {
        let secret = Secret::from_password("right", b"0123456789abcdef", 4096);
        let (ex, sf) = ServerExchange::start(secret.clone(), "n,,n=,r=abc").unwrap();
        assert_eq!(
            ex.finish(&client_final("wrong", "n=,r=abc", &sf))
                .unwrap_err(),
            Error::Proof
        );
        let (ex, sf) = ServerExchange::start(secret.clone(), "y,,n=,r=abc").unwrap();
        // The client announced "y" but claims "n" in the final message.
        assert_eq!(
            ex.finish(&client_final("right", "n=,r=abc", &sf))
                .unwrap_err(),
            Error::ChannelBinding
        );
        assert_eq!(
            ServerExchange::start(secret.clone(), "p=tls-server-end-point,,n=,r=abc").err(),
            Some(Error::ChannelBinding)
        );
        let (ex, _sf) = ServerExchange::start(secret, "n,,n=,r=abc").unwrap();
        assert_eq!(
            ex.finish("c=biws,r=abcOTHER,p=AAAA").unwrap_err(),
            Error::Nonce
        );
    }
}
