//! Authentication in terminate mode: pgwarden checks the client itself and
//! logs into the server on its behalf, still without learning the password.
//!
//! The login's stored verifier comes from `auth_query` through the catalog
//! account. For a SCRAM verifier pgwarden runs SCRAM-SHA-256 with the
//! client, recovers its `ClientKey` from the proof, and uses it to answer
//! the server's own SCRAM challenge (the same verifier, so the same salt and
//! iterations). For an md5 verifier the stored hash answers the server's md5
//! challenge. Unknown logins get a full mock exchange and the same error as
//! a wrong password, so login names cannot be probed. This mode works when
//! the upstream leg uses TLS, where a relayed SCRAM exchange fails
//! PostgreSQL's channel-binding downgrade check.

use super::Error;
use super::auth::{forward_client_answer_frame, login_refused, read_upstream};
use crate::auth::scram::{ClientExchange, Secret, ServerExchange};
use crate::auth::{StoredSecret, UpstreamCredential, md5};
use crate::backend::{self, auth_code};
use crate::context::ProxyContext;
use crate::error::{PgError, sqlstate};
use crate::frame::OwnedFrame;
use crate::frontend::password;
use crate::frontend::startup::StartupParams;
use crate::net::{ClientStream, FramedIo, UpstreamStream};
use bytes::{Bytes, BytesMut};
use pgwire::messages::Message;
use pgwire::messages::startup::{Authentication, Password, SASLInitialResponse, SASLResponse};
use tracing::warn;

const SCRAM: &str = "SCRAM-SHA-256";

fn encode(m: impl Message) -> Bytes {
    let mut buf = BytesMut::new();
    // Encoding well-formed messages into memory cannot fail.
    let _ = m.encode(&mut buf);
    buf.freeze()
}

fn auth_failed(user: &str) -> Error {
    Error::AuthFailed {
        sqlstate: sqlstate::INVALID_PASSWORD.to_string(),
        message: format!("password authentication failed for user \"{user}\""),
    }
}

/// Tell the client its login failed, exactly as PostgreSQL words it.
async fn refuse_login(client: &mut FramedIo<ClientStream>, user: &str) -> Error {
    let e = PgError::fatal(
        sqlstate::INVALID_PASSWORD,
        format!("password authentication failed for user \"{user}\""),
    );
    let _ = client.send(&e.encode()).await;
    auth_failed(user)
}

/// Authenticate the client, then log into the server as that user.
pub async fn authenticate(
    ctx: &ProxyContext,
    client: &mut FramedIo<ClientStream>,
    params: &StartupParams,
    raw_startup: &OwnedFrame,
) -> Result<FramedIo<UpstreamStream>, Error> {
    let user = params.user().unwrap_or_default().to_string();
    let stored = match ctx.catalog.auth_secret(&user).await {
        Ok(s) => s.as_deref().and_then(StoredSecret::parse),
        Err(e) => {
            warn!(error = %e, "auth_query failed");
            return Err(Error::Refused(PgError::fatal(
                sqlstate::CANNOT_CONNECT_NOW,
                "pgwarden cannot verify logins right now",
            )));
        }
    };
    let (credential, server_final) = match stored {
        Some(StoredSecret::Scram(secret)) => {
            let server_key = secret.server_key;
            let (server_final, client_key) = scram_with_client(client, secret, &user).await?;
            (
                UpstreamCredential::Scram {
                    client_key,
                    server_key,
                },
                Some(server_final),
            )
        }
        Some(StoredSecret::Md5(hash)) => {
            md5_with_client(client, &hash, &user).await?;
            (UpstreamCredential::Md5 { hash }, None)
        }
        None => {
            // No such login, or no password: a mock exchange that always fails.
            let mock = Secret::from_password(&crate::auth::scram::nonce(), user.as_bytes(), 4096);
            scram_with_client(client, mock, &user).await?;
            return Err(refuse_login(client, &user).await);
        }
    };
    let mut upstream = super::open_upstream(ctx, raw_startup).await?;
    login_upstream(client, &mut upstream, &credential).await?;
    let mut out = BytesMut::new();
    if let Some(f) = server_final {
        out.extend_from_slice(&encode(Authentication::SASLFinal(Bytes::from(f))));
    }
    out.extend_from_slice(&encode(Authentication::Ok));
    client.send(&out).await?;
    Ok(upstream)
}

/// SCRAM-SHA-256 with pgwarden as the server. Returns the server-final
/// message (sent once the upstream login worked) and the ClientKey.
async fn scram_with_client(
    client: &mut FramedIo<ClientStream>,
    secret: Secret,
    user: &str,
) -> Result<(String, [u8; 32]), Error> {
    client
        .send(&encode(Authentication::SASL(vec![SCRAM.to_string()])))
        .await?;
    let first = forward_client_answer_frame(client).await?;
    let (mechanism, data) = password::sasl_initial_response(&first.frame()).ok_or_else(|| {
        Error::Protocol(crate::codec::DecodeError::new(
            b'p',
            "malformed SASLInitialResponse",
        ))
    })?;
    if mechanism != SCRAM {
        return Err(Error::Refused(PgError::fatal(
            sqlstate::PROTOCOL_VIOLATION,
            format!("client selected an invalid SASL authentication mechanism: {mechanism}"),
        )));
    }
    let data = String::from_utf8(data).map_err(|_| {
        Error::Protocol(crate::codec::DecodeError::new(
            b'p',
            "SCRAM data is not UTF-8",
        ))
    })?;
    let (exchange, server_first) = match ServerExchange::start(secret, &data) {
        Ok(v) => v,
        Err(e) => {
            warn!(error = %e, "SCRAM client-first refused");
            return Err(refuse_login(client, user).await);
        }
    };
    client
        .send(&encode(Authentication::SASLContinue(Bytes::from(
            server_first,
        ))))
        .await?;
    let fin = forward_client_answer_frame(client).await?;
    let fin = String::from_utf8(password::sasl_response(&fin.frame())).unwrap_or_default();
    match exchange.finish(&fin) {
        Ok(v) => Ok(v),
        Err(_) => Err(refuse_login(client, user).await),
    }
}

/// md5 challenge with pgwarden as the server.
async fn md5_with_client(
    client: &mut FramedIo<ClientStream>,
    hash: &str,
    user: &str,
) -> Result<(), Error> {
    let salt: [u8; 4] = rand::random();
    client
        .send(&encode(Authentication::MD5Password(salt.to_vec())))
        .await?;
    let answer = forward_client_answer_frame(client).await?;
    let response = password::password(&answer.frame()).unwrap_or_default();
    if md5::verify(hash, &salt, &response) {
        Ok(())
    } else {
        Err(refuse_login(client, user).await)
    }
}

async fn send_upstream(up: &mut FramedIo<UpstreamStream>, b: Bytes) -> Result<(), Error> {
    up.send(&b)
        .await
        .map_err(|e| Error::UpstreamRead(e.to_string()))
}

/// Answer the server's authentication requests with `credential`.
async fn login_upstream(
    client: &mut FramedIo<ClientStream>,
    upstream: &mut FramedIo<UpstreamStream>,
    credential: &UpstreamCredential,
) -> Result<(), Error> {
    let mut scram: Option<ClientExchange> = None;
    let unsupported = |what: &str| {
        Error::Refused(PgError::fatal(
            sqlstate::INVALID_AUTHORIZATION,
            format!("the server asks for {what}, which pgwarden cannot answer in terminate mode"),
        ))
    };
    loop {
        let frame = read_upstream(upstream).await?;
        match frame.tag {
            b'R' => {
                let data = Bytes::copy_from_slice(frame.body().get(4..).unwrap_or_default());
                match (backend::auth_code(&frame.frame()), credential) {
                    (Some(auth_code::OK), _) => return Ok(()),
                    (
                        Some(auth_code::SASL),
                        UpstreamCredential::Scram {
                            client_key,
                            server_key,
                        },
                    ) => {
                        let offered = backend::sasl_mechanisms(&frame.frame())
                            .map_err(|e| Error::UpstreamProtocol(e.to_string()))?;
                        if !offered.iter().any(|m| m == SCRAM) {
                            return Err(unsupported("a SASL mechanism other than SCRAM-SHA-256"));
                        }
                        let (ex, first) = ClientExchange::start(*client_key, *server_key);
                        scram = Some(ex);
                        send_upstream(
                            upstream,
                            encode(SASLInitialResponse::new(
                                SCRAM.into(),
                                Some(Bytes::from(first)),
                            )),
                        )
                        .await?;
                    }
                    (Some(auth_code::SASL_CONTINUE), _) => {
                        let ex = scram.as_mut().ok_or_else(|| {
                            Error::UpstreamProtocol("SASL continue out of order".into())
                        })?;
                        let fin = ex
                            .respond(&String::from_utf8_lossy(&data))
                            .map_err(|e| Error::UpstreamProtocol(e.to_string()))?;
                        send_upstream(upstream, encode(SASLResponse::new(Bytes::from(fin))))
                            .await?;
                    }
                    (Some(auth_code::SASL_FINAL), _) => {
                        let ex = scram.as_ref().ok_or_else(|| {
                            Error::UpstreamProtocol("SASL final out of order".into())
                        })?;
                        ex.verify(&String::from_utf8_lossy(&data))
                            .map_err(|e| Error::UpstreamProtocol(e.to_string()))?;
                    }
                    (Some(auth_code::MD5), UpstreamCredential::Md5 { hash }) => {
                        let salt: [u8; 4] = data
                            .get(..4)
                            .and_then(|s| s.try_into().ok())
                            .ok_or_else(|| Error::UpstreamProtocol("short md5 salt".into()))?;
                        send_upstream(upstream, encode(Password::new(md5::response(hash, &salt))))
                            .await?;
                    }
                    (Some(auth_code::CLEARTEXT), _) => {
                        return Err(unsupported("a cleartext password"));
                    }
                    _ => {
                        return Err(unsupported(
                            "an authentication method that does not match the stored secret",
                        ));
                    }
                }
            }
            b'E' => return Err(login_refused(client, &frame).await),
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
