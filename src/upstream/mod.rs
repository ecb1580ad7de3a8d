//! The upstream leg: pgwarden's connection to the PostgreSQL server.
//!
//! `connect` opens TCP, negotiates TLS as `[upstream_tls]` says, and hands
//! back a framed stream ready for the StartupMessage. `cancel` sends a
//! CancelRequest on a connection of its own.

use crate::cancel::encode_cancel_request;
use crate::config::UpstreamTlsMode;
use crate::context::ProxyContext;
use crate::net::{FramedIo, Stream, UpstreamStream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Why the server could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("connecting to the server: {0}")]
    Connect(std::io::Error),
    #[error("connecting to the server timed out")]
    Timeout,
    #[error("the server refused TLS, which upstream_tls.mode requires")]
    TlsRefused,
    #[error("TLS handshake with the server: {0}")]
    Tls(std::io::Error),
    #[error("the server sent data before the TLS handshake")]
    TlsPrefix,
    #[error("unexpected answer {0:#04x} to SSLRequest")]
    BadSslAnswer(u8),
}

impl Error {
    /// A short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Connect(_) | Error::Timeout => "connect",
            _ => "tls",
        }
    }
}

const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

/// Open a connection to the server, with TLS as configured.
pub async fn connect(ctx: &ProxyContext) -> Result<FramedIo<UpstreamStream>, Error> {
    let tcp = tokio::time::timeout(
        ctx.config.connect_timeout(),
        TcpStream::connect(&ctx.config.upstream),
    )
    .await
    .map_err(|_| Error::Timeout)?
    .map_err(Error::Connect)?;
    let _ = tcp.set_nodelay(true);
    let stream = match &ctx.upstream_tls {
        None => Stream::Plain(tcp),
        Some(tls) => negotiate_tls(ctx, tcp, tls.clone()).await?,
    };
    Ok(FramedIo::new(stream))
}

async fn negotiate_tls(
    ctx: &ProxyContext,
    mut tcp: TcpStream,
    tls: std::sync::Arc<rustls::ClientConfig>,
) -> Result<UpstreamStream, Error> {
    tcp.write_all(&SSL_REQUEST).await.map_err(Error::Connect)?;
    let answer = tcp.read_u8().await.map_err(Error::Connect)?;
    match answer {
        b'S' => {
            // Anything already buffered after 'S' was not protected by TLS
            // (CVE-2021-23222): refuse it.
            let mut probe = [0u8; 1];
            if let Ok(n) = tcp.try_read(&mut probe) {
                if n > 0 {
                    return Err(Error::TlsPrefix);
                }
            }
            let tls = TlsConnector::from(tls)
                .connect(ctx.upstream_name.clone(), tcp)
                .await
                .map_err(Error::Tls)?;
            Ok(Stream::Tls(Box::new(tls)))
        }
        b'N' if ctx.config.upstream_tls.mode == UpstreamTlsMode::Prefer => Ok(Stream::Plain(tcp)),
        b'N' => Err(Error::TlsRefused),
        other => Err(Error::BadSslAnswer(other)),
    }
}

/// Send a CancelRequest for server backend `pid` with the server's secret,
/// then wait (briefly) for the server to confirm it.
pub async fn cancel(ctx: &ProxyContext, pid: i32, secret: &[u8]) -> Result<(), Error> {
    let sent = send_cancel(ctx, pid, secret).await?;
    sent.confirmed().await;
    Ok(())
}

/// A CancelRequest written to the server, not yet confirmed.
pub struct SentCancel(FramedIo<UpstreamStream>);

/// Write a CancelRequest for server backend `pid` with the server's secret.
pub async fn send_cancel(ctx: &ProxyContext, pid: i32, secret: &[u8]) -> Result<SentCancel, Error> {
    let mut conn = connect(ctx).await?;
    conn.send(&encode_cancel_request(pid, secret))
        .await
        .map_err(Error::Connect)?;
    Ok(SentCancel(conn))
}

impl SentCancel {
    /// The server answers nothing and closes the connection once it has
    /// signalled the backend: wait for that (briefly), so that whoever
    /// asked for the cancel can tell the signal went out before the
    /// session's next statement does.
    pub async fn confirmed(mut self) {
        let mut sink = [0u8; 64];
        let _ = tokio::time::timeout(CANCEL_CONFIRM, async {
            while matches!(self.0.io.read(&mut sink).await, Ok(n) if n > 0) {}
        })
        .await;
    }
}

/// How long a cancel waits for the server to close its connection.
const CANCEL_CONFIRM: std::time::Duration = std::time::Duration::from_secs(2);
