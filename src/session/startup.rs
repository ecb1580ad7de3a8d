//! The client's opening: encryption negotiation (SSLRequest, GSSENCRequest,
//! direct TLS), then a StartupMessage or a CancelRequest.

use super::Error;
use crate::config::ClientTlsMode;
use crate::context::ProxyContext;
use crate::error::{PgError, sqlstate};
use crate::frame::OwnedFrame;
use crate::frontend::startup::{StartupParams, StartupRequest, decode_startup};
use crate::net::{ClientStream, FramedIo, Stream};
use bytes::Bytes;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

/// Largest startup-phase packet accepted (PostgreSQL uses 10,000 bytes).
const MAX_STARTUP_PACKET: usize = 10_000;

/// How the client opened the connection.
pub enum Opening {
    /// A StartupMessage, with its exact bytes to forward.
    Startup(FramedIo<ClientStream>, StartupParams, OwnedFrame),
    /// A StartupMessage pgwarden refuses; the error goes to the client.
    Failed(FramedIo<ClientStream>, Error),
    Cancel {
        pid: i32,
        secret: Bytes,
    },
    /// The client went away before sending a StartupMessage.
    Closed,
}

/// Read the client's opening messages, upgrading to TLS when asked.
pub async fn accept(ctx: &ProxyContext, tcp: TcpStream) -> Result<Opening, Error> {
    let mode = ctx.config.tls.effective_mode();
    let mut io = if starts_with_tls_handshake(&tcp).await {
        // libpq 17's `sslnegotiation=direct`: TLS without an SSLRequest.
        match &ctx.client_tls {
            Some(tls) if mode != ClientTlsMode::Disable => upgrade(tls.clone(), tcp).await?,
            _ => return Ok(Opening::Closed),
        }
    } else {
        FramedIo::new(Stream::Plain(tcp))
    };
    loop {
        let Some(frame) = io.read_frame(false, MAX_STARTUP_PACKET).await? else {
            return Ok(Opening::Closed);
        };
        match decode_startup(&frame.frame()).map_err(Error::Protocol)? {
            StartupRequest::Ssl => {
                let Some(tls) = ctx
                    .client_tls
                    .clone()
                    .filter(|_| mode != ClientTlsMode::Disable && !io.io.is_tls())
                else {
                    io.send(b"N").await?;
                    continue;
                };
                // Bytes sent after the SSLRequest and before the handshake
                // would bypass TLS (CVE-2021-23214).
                if !io.buf.is_empty() {
                    return Err(Error::Protocol(crate::codec::DecodeError::new(
                        0,
                        "data after SSLRequest",
                    )));
                }
                io.send(b"S").await?;
                let Stream::Plain(tcp) = io.io else {
                    return Ok(Opening::Closed);
                };
                io = upgrade(tls, tcp).await?;
            }
            StartupRequest::GssEnc => io.send(b"N").await?,
            StartupRequest::Cancel { pid, secret } => return Ok(Opening::Cancel { pid, secret }),
            StartupRequest::Startup(params) => {
                return Ok(match check_startup(ctx, &io, &params) {
                    Ok(()) => Opening::Startup(io, params, frame),
                    Err(e) => Opening::Failed(io, e),
                });
            }
        }
    }
}

/// Peek whether the first byte is a TLS handshake record.
async fn starts_with_tls_handshake(tcp: &TcpStream) -> bool {
    let mut b = [0u8; 1];
    matches!(tcp.peek(&mut b).await, Ok(1) if b[0] == 0x16)
}

async fn upgrade(
    tls: std::sync::Arc<rustls::ServerConfig>,
    tcp: TcpStream,
) -> Result<FramedIo<ClientStream>, Error> {
    let stream = TlsAcceptor::from(tls)
        .accept(tcp)
        .await
        .map_err(Error::ClientTls)?;
    Ok(FramedIo::new(Stream::Tls(Box::new(stream))))
}

/// Refuse openings pgwarden will not serve, with the error PostgreSQL
/// itself would give where there is one.
fn check_startup(
    ctx: &ProxyContext,
    io: &FramedIo<ClientStream>,
    params: &StartupParams,
) -> Result<(), Error> {
    if params.major != 3 {
        return Err(Error::Refused(PgError::fatal(
            sqlstate::FEATURE_NOT_SUPPORTED,
            format!(
                "unsupported frontend protocol {}.{}",
                params.major, params.minor
            ),
        )));
    }
    if ctx.config.tls.effective_mode() == ClientTlsMode::Require && !io.io.is_tls() {
        return Err(Error::Refused(PgError::fatal(
            sqlstate::INVALID_AUTHORIZATION,
            "pgwarden requires TLS: connect with sslmode=require",
        )));
    }
    if params.user().is_none_or(str::is_empty) {
        return Err(Error::Refused(PgError::fatal(
            sqlstate::INVALID_AUTHORIZATION,
            "no PostgreSQL user name specified in startup packet",
        )));
    }
    if let Some(r) = params.get("replication") {
        if !matches!(
            r.to_ascii_lowercase().as_str(),
            "false" | "off" | "no" | "0"
        ) {
            return Err(Error::Refused(PgError::fatal(
                sqlstate::INSUFFICIENT_PRIVILEGE,
                "pgwarden does not relay replication connections: they would bypass per-query audit",
            )));
        }
    }
    Ok(())
}
