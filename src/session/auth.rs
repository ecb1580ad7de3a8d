//! Authentication in relay mode, then the server's greeting.
//!
//! pgwarden forwards the server's authentication requests and the client's
//! answers (SCRAM-SHA-256, md5, cleartext) without ever needing the
//! password. It removes `-PLUS` mechanisms from the server's SASL offer:
//! channel binding cannot span two TLS legs. The session's identity is
//! known only once the server says AuthenticationOk. After that it relays
//! ParameterStatus, swaps BackendKeyData for a key of its own and stops at
//! the first ReadyForQuery.

use super::Error;
use crate::backend::{self, auth_code};
use crate::cancel::CancelKey;
use crate::context::ProxyContext;
use crate::error::{PgError, sqlstate};
use crate::frame::OwnedFrame;
use crate::net::{ClientStream, FramedIo, UpstreamStream};
use bytes::BytesMut;

/// Largest message accepted during authentication, either way.
const MAX_AUTH_MESSAGE: usize = 64 * 1024;

/// Server parameters and cancel key learned after authentication.
pub struct Greeting {
    pub parameters: Vec<(String, String)>,
    pub cancel_key: Option<CancelKey>,
}

/// Relay the authentication exchange until the server accepts or refuses.
pub async fn relay_authentication(
    client: &mut FramedIo<ClientStream>,
    upstream: &mut FramedIo<UpstreamStream>,
) -> Result<(), Error> {
    loop {
        let frame = read_upstream(upstream).await?;
        match frame.tag {
            b'R' => match backend::auth_code(&frame.frame()) {
                Some(auth_code::OK) => {
                    client.send(&frame.bytes).await?;
                    return Ok(());
                }
                Some(auth_code::SASL) => {
                    let offer = strip_channel_binding(&frame)?;
                    client.send(&offer.bytes).await?;
                    forward_client_answer(client, upstream).await?;
                }
                Some(auth_code::CLEARTEXT | auth_code::MD5 | auth_code::SASL_CONTINUE) => {
                    client.send(&frame.bytes).await?;
                    forward_client_answer(client, upstream).await?;
                }
                Some(auth_code::SASL_FINAL) => client.send(&frame.bytes).await?,
                other => {
                    return Err(Error::Refused(PgError::fatal(
                        sqlstate::FEATURE_NOT_SUPPORTED,
                        format!("pgwarden cannot relay authentication method {other:?}"),
                    )));
                }
            },
            b'E' => return Err(login_refused(client, &frame).await),
            // NegotiateProtocolVersion and notices go to the client as is.
            b'v' | b'N' => client.send(&frame.bytes).await?,
            t => {
                return Err(Error::UpstreamProtocol(format!(
                    "unexpected message {:?} during authentication",
                    t as char
                )));
            }
        }
    }
}

/// Relay ParameterStatus, BackendKeyData and notices up to ReadyForQuery.
pub async fn relay_greeting(
    ctx: &ProxyContext,
    client: &mut FramedIo<ClientStream>,
    upstream: &mut FramedIo<UpstreamStream>,
) -> Result<Greeting, Error> {
    let mut out = BytesMut::new();
    let mut greeting = Greeting {
        parameters: Vec::new(),
        cancel_key: None,
    };
    loop {
        let frame = read_upstream(upstream).await?;
        match frame.tag {
            b'S' => {
                if let Some(p) = backend::parameter_status(&frame.frame()) {
                    greeting.parameters.push(p);
                }
                out.extend_from_slice(&frame.bytes);
            }
            b'K' => {
                let (pid, secret) = backend::backend_key(&frame.frame())
                    .ok_or_else(|| Error::UpstreamProtocol("malformed BackendKeyData".into()))?;
                let key = ctx.cancel.register(pid, secret);
                out.extend_from_slice(&backend::encode_backend_key(key.pid, &key.secret).bytes);
                greeting.cancel_key = Some(key);
            }
            b'Z' => {
                out.extend_from_slice(&frame.bytes);
                client.send(&out).await?;
                return Ok(greeting);
            }
            b'E' => {
                // Refused after authentication (no such database, too many
                // connections): what came before, then the error.
                client.send(&out).await?;
                return Err(login_refused(client, &frame).await);
            }
            b'N' | b'v' => out.extend_from_slice(&frame.bytes),
            t => {
                return Err(Error::UpstreamProtocol(format!(
                    "unexpected message {:?} after authentication",
                    t as char
                )));
            }
        }
    }
}

/// The server refused the login: pass its error on as written and report it.
pub(super) async fn login_refused(
    client: &mut FramedIo<ClientStream>,
    frame: &OwnedFrame,
) -> Error {
    let _ = client.send(&frame.bytes).await;
    let fields = backend::error_fields(&frame.frame()).unwrap_or_default();
    Error::AuthFailed {
        sqlstate: backend::error_field(&fields, b'C')
            .unwrap_or("28000")
            .to_string(),
        message: backend::error_field(&fields, b'M')
            .unwrap_or_default()
            .to_string(),
    }
}

pub(super) async fn read_upstream(
    upstream: &mut FramedIo<UpstreamStream>,
) -> Result<OwnedFrame, Error> {
    match upstream.read_frame(true, MAX_AUTH_MESSAGE).await {
        Ok(Some(f)) => Ok(f),
        Ok(None) => Err(Error::UpstreamClosed),
        Err(e) => Err(Error::UpstreamRead(e.to_string())),
    }
}

/// The client's answer to an authentication request: one `p` message.
pub(super) async fn forward_client_answer_frame(
    client: &mut FramedIo<ClientStream>,
) -> Result<OwnedFrame, Error> {
    let frame = match client.read_frame(true, MAX_AUTH_MESSAGE).await {
        Ok(Some(f)) => f,
        Ok(None) => return Err(Error::ClientClosed),
        Err(e) => return Err(Error::ClientRead(e.to_string())),
    };
    if frame.tag != b'p' {
        return Err(Error::Protocol(crate::codec::DecodeError::new(
            frame.tag,
            "expected a password message",
        )));
    }
    Ok(frame)
}

/// Relay the client's answer to an authentication request.
async fn forward_client_answer(
    client: &mut FramedIo<ClientStream>,
    upstream: &mut FramedIo<UpstreamStream>,
) -> Result<(), Error> {
    let frame = forward_client_answer_frame(client).await?;
    upstream
        .send(&frame.bytes)
        .await
        .map_err(|e| Error::UpstreamRead(e.to_string()))
}

/// The server's SASL offer without channel-binding (`-PLUS`) mechanisms.
fn strip_channel_binding(frame: &OwnedFrame) -> Result<OwnedFrame, Error> {
    let mechanisms = backend::sasl_mechanisms(&frame.frame())
        .map_err(|e| Error::UpstreamProtocol(e.to_string()))?;
    let kept: Vec<String> = mechanisms
        .into_iter()
        .filter(|m| !m.ends_with("-PLUS"))
        .collect();
    if kept.is_empty() {
        return Err(Error::Refused(PgError::fatal(
            sqlstate::FEATURE_NOT_SUPPORTED,
            "the server offers only channel-bound SASL mechanisms, which cannot pass through a proxy",
        )));
    }
    Ok(backend::encode_sasl(kept))
}
