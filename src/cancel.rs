//! Cancel keys: the key pgwarden hands each client, and the server's key
//! behind it.
//!
//! A client receives the server's real process id (so `pg_stat_activity`
//! and NOTIFY senders match) with a secret of pgwarden's own. A
//! CancelRequest with that pair is sent on to the server with the server's
//! secret; any other pair is dropped without a word, as PostgreSQL does.

use bytes::Bytes;
use dashmap::DashMap;
use rand::RngCore;
use std::sync::Arc;

/// Client-visible (pid, secret) -> the server's secret for that backend.
#[derive(Default)]
pub struct CancelRegistry {
    keys: DashMap<(i32, Bytes), Bytes>,
}

impl CancelRegistry {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Register a server backend and return the guard holding the secret
    /// to give the client (same length as the server's).
    pub fn register(self: &Arc<Self>, pid: i32, server_secret: Bytes) -> CancelKey {
        let mut secret = vec![0u8; server_secret.len()];
        loop {
            rand::rng().fill_bytes(&mut secret);
            let key = (pid, Bytes::copy_from_slice(&secret));
            if let dashmap::Entry::Vacant(v) = self.keys.entry(key.clone()) {
                v.insert(server_secret);
                return CancelKey {
                    registry: self.clone(),
                    pid,
                    secret: key.1,
                };
            }
        }
    }

    /// The server's secret for a client's cancel request, if it is valid.
    pub fn lookup(&self, pid: i32, client_secret: &Bytes) -> Option<Bytes> {
        self.keys
            .get(&(pid, client_secret.clone()))
            .map(|v| v.clone())
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// A registered key; dropping it forgets the key.
pub struct CancelKey {
    registry: Arc<CancelRegistry>,
    pub pid: i32,
    pub secret: Bytes,
}

impl Drop for CancelKey {
    fn drop(&mut self) {
        self.registry.keys.remove(&(self.pid, self.secret.clone()));
    }
}

/// The bytes of a CancelRequest for `pid` and `secret`.
pub fn encode_cancel_request(pid: i32, secret: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + secret.len());
    out.extend_from_slice(&((12 + secret.len()) as i32).to_be_bytes());
    out.extend_from_slice(&80_877_102i32.to_be_bytes());
    out.extend_from_slice(&pid.to_be_bytes());
    out.extend_from_slice(secret);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_lookup_forget() {
        let reg = CancelRegistry::new();
        let server = Bytes::from_static(&[9, 9, 9, 9]);
        let key = reg.register(77, server.clone());
        assert_eq!(key.secret.len(), 4);
        assert_eq!(reg.lookup(77, &key.secret), Some(server));
        assert_eq!(reg.lookup(78, &key.secret), None);
        drop(key);
        assert!(reg.is_empty());
    }

    #[test]
    fn cancel_request_layout() {
        let b = encode_cancel_request(5, &[0, 0, 0, 1]);
        assert_eq!(b, vec![0, 0, 0, 16, 4, 210, 22, 46, 0, 0, 0, 5, 0, 0, 0, 1]);
    }
}
