//! One client session, from the first byte to the last, in its own task.
//!
//! [`run`] takes an accepted TCP connection through the client's opening
//! ([`startup`]), connects upstream, relays authentication ([`auth`]) and
//! then relays messages both ways ([`relay`]) until either side ends.
//! Client messages are decoded and inspected in [`frontend`]; server
//! messages in [`backend`]. Errors the client must see become an
//! ErrorResponse here; everything else is logged and counted.

mod auth;
mod backend;
pub mod context;
mod enforce;
mod frontend;
mod relay;
pub mod server_prepared;
mod startup;
pub mod state;
mod terminate;
mod trail;
mod wakes;

pub use context::{SessionId, SessionInfo};

use crate::codec::DecodeError;
use crate::config::AuthMode;
use crate::context::ProxyContext;
use crate::error::{PgError, sqlstate};
use crate::events::Event;
use crate::net::stream::ReadError;
use crate::upstream;
use startup::Opening;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

/// Why a session ended early.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("client I/O: {0}")]
    ClientIo(String),
    #[error("client closed the connection")]
    ClientClosed,
    #[error("client read: {0}")]
    ClientRead(String),
    #[error("client TLS handshake: {0}")]
    ClientTls(std::io::Error),
    #[error("protocol violation: {0}")]
    Protocol(DecodeError),
    #[error("refused: {0}")]
    Refused(PgError),
    #[error("authentication failed ({sqlstate}): {message}")]
    AuthFailed { sqlstate: String, message: String },
    /// The login passed the server but not its role's connect rules.
    #[error("refused by the {rule} rule: {message}")]
    ConnectRefused { rule: &'static str, message: String },
    #[error(transparent)]
    Upstream(#[from] upstream::Error),
    #[error("server closed the connection")]
    UpstreamClosed,
    #[error("server I/O: {0}")]
    UpstreamRead(String),
    #[error("server protocol: {0}")]
    UpstreamProtocol(String),
    #[error("timed out during startup")]
    StartupTimeout,
    #[error("proxy shutting down")]
    Shutdown,
    /// A result of a restricted session did not match its analysis.
    #[error("result did not match its policy decision: {0}")]
    Violation(String),
    /// Results of a restricted session were due but their audit record
    /// could not be written.
    #[error("audit trail cannot be written")]
    AuditUnavailable,
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::ClientIo(e.to_string())
    }
}

impl From<ReadError> for Error {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Frame(f) => Error::Protocol(DecodeError::new(0, f.to_string())),
            other => Error::ClientRead(other.to_string()),
        }
    }
}

impl Error {
    /// What the client is told, if anything, before the connection closes.
    fn client_message(&self) -> Option<PgError> {
        match self {
            Error::Refused(e) => Some(e.clone()),
            Error::ConnectRefused { message, .. } => Some(PgError::fatal(
                sqlstate::INVALID_AUTHORIZATION,
                message.clone(),
            )),
            Error::Protocol(e) => Some(PgError::protocol(e)),
            Error::Upstream(_) => Some(PgError::upstream_unavailable()),
            Error::UpstreamClosed | Error::UpstreamRead(_) | Error::UpstreamProtocol(_) => {
                Some(PgError::fatal(
                    sqlstate::CONNECTION_FAILURE,
                    "pgwarden lost the connection to the database server",
                ))
            }
            Error::StartupTimeout => Some(PgError::fatal(
                sqlstate::PROTOCOL_VIOLATION,
                "startup and authentication took too long",
            )),
            Error::AuditUnavailable => Some(PgError::fatal(
                sqlstate::IO_ERROR,
                "pgwarden stopped this session: the audit trail cannot be written, and results \
                 are not shown without their audit record",
            )),
            Error::Violation(_) => Some(PgError::fatal(
                sqlstate::INSUFFICIENT_PRIVILEGE,
                "pgwarden stopped this session: a result did not match the policy decision \
                 taken for its statement (the incident is logged)",
            )),
            Error::Shutdown => Some(PgError::fatal(
                sqlstate::ADMIN_SHUTDOWN,
                "terminating connection because pgwarden is shutting down",
            )),
            _ => None,
        }
    }
}

/// Serve one client connection; never panics the listener, whatever comes in.
pub async fn run(
    ctx: Arc<ProxyContext>,
    tcp: TcpStream,
    peer: SocketAddr,
    shutdown: CancellationToken,
) {
    let id = SessionId::random();
    let span = info_span!("session", session = %id, client = %peer, user = tracing::field::Empty);
    async move {
        let _ = tcp.set_nodelay(true);
        ctx.metrics.connections_total.inc();
        ctx.metrics.connections_active.inc();
        let result = serve(&ctx, tcp, peer, id, shutdown).await;
        ctx.metrics.connections_active.dec();
        match result {
            Ok(()) => debug!("session ended"),
            // The event sink has logged it with the login's details.
            Err(Error::AuthFailed { .. }) => ctx.metrics.auth_failures.inc(),
            Err(e @ Error::Protocol(_)) => {
                ctx.metrics.protocol_errors.inc();
                warn!(error = %e, "closing connection");
            }
            Err(e @ Error::Upstream(_)) => {
                warn!(error = %e, "cannot reach the server");
            }
            Err(Error::ClientClosed) => debug!("client left"),
            Err(e) => info!(error = %e, "session ended"),
        }
    }
    .instrument(span)
    .await
}

async fn serve(
    ctx: &Arc<ProxyContext>,
    tcp: TcpStream,
    peer: SocketAddr,
    id: SessionId,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let opening = tokio::time::timeout(ctx.config.startup_timeout(), startup::accept(ctx, tcp))
        .await
        .map_err(|_| Error::StartupTimeout)?;
    let (mut client, params, raw_startup) = match opening? {
        Opening::Closed => return Ok(()),
        Opening::Cancel { pid, secret } => {
            forward_cancel(ctx, pid, &secret).await;
            return Ok(());
        }
        Opening::Startup(client, params, raw) => {
            let raw = with_role_settings(ctx, &params, raw);
            (client, params, raw)
        }
        Opening::Failed(mut client, e) => {
            if let Some(m) = e.client_message() {
                let _ = client.send(&m.encode()).await;
            }
            return Err(e);
        }
    };
    let startup = async {
        let mut upstream = if ctx.config.auth.mode == AuthMode::Terminate {
            terminate::authenticate(ctx, &mut client, &params, &raw_startup).await?
        } else {
            let mut upstream = open_upstream(ctx, &raw_startup).await?;
            auth::relay_authentication(&mut client, &mut upstream).await?;
            upstream
        };
        let admitted = admit(ctx, &client, &params, peer, id)?;
        let greeting = auth::relay_greeting(ctx, &mut client, &mut upstream).await?;
        Ok::<_, Error>((upstream, greeting, admitted))
    };
    let result = match tokio::time::timeout(ctx.config.startup_timeout(), startup).await {
        Ok(r) => r,
        Err(_) => Err(Error::StartupTimeout),
    };
    let (upstream, greeting, _presence) = match result {
        Ok(v) => v,
        Err(e) => {
            if let Error::ConnectRefused { rule, message } = &e {
                ctx.metrics
                    .connections_rejected
                    .with_label_values(&[rule])
                    .inc();
                warn!(
                    user = params.user().unwrap_or_default(),
                    rule, "login refused by a connect rule"
                );
                if let Some(trail) = &ctx.audit {
                    let mut r = crate::audit::Record::new("connect_refused");
                    r.user = params.user().map(str::to_string);
                    r.database = params.database().map(str::to_string);
                    r.client = Some(peer.to_string());
                    r.session = Some(id.to_string());
                    r.tls = Some(client.io.is_tls());
                    r.rule = Some(rule.to_string());
                    r.sqlstate = Some(sqlstate::INVALID_AUTHORIZATION.to_string());
                    r.message = Some(message.clone());
                    trail.submit(r);
                }
            }
            if let Error::AuthFailed { sqlstate, message } = &e {
                if let Some(trail) = &ctx.audit {
                    let mut r = crate::audit::Record::new("auth_failed");
                    r.user = params.user().map(str::to_string);
                    r.database = params.database().map(str::to_string);
                    r.client = Some(peer.to_string());
                    r.sqlstate = Some(sqlstate.clone());
                    r.message = Some(message.clone());
                    trail.submit(r);
                }
                ctx.events.record(&Event::AuthFailed {
                    client: peer,
                    user: params.user().unwrap_or_default().to_string(),
                    database: params.database().unwrap_or_default().to_string(),
                    sqlstate: sqlstate.clone(),
                    message: message.clone(),
                });
            }
            if let Some(m) = e.client_message() {
                let _ = client.send(&m.encode()).await;
            }
            return Err(e);
        }
    };
    let info = SessionInfo::new(
        id,
        params.user().unwrap_or_default().to_string(),
        params.database().unwrap_or_default().to_string(),
        params
            .get("application_name")
            .unwrap_or_default()
            .to_string(),
        peer,
        client.io.is_tls(),
    );
    for (k, v) in greeting.parameters {
        info.set_parameter(k, v);
    }
    tracing::Span::current().record("user", info.user.as_str());
    if let Some(trail) = &ctx.audit {
        let mut r = trail::session_record(ctx, &info, "connect");
        r.tls = Some(info.tls);
        trail.submit(r);
    }
    ctx.events.record(&Event::Connected {
        session: info.id,
        user: info.user.clone(),
        database: info.database.clone(),
        application_name: info.application_name.clone(),
        client: info.client,
        tls: info.tls,
    });
    let cancel_key = greeting.cancel_key;
    // The server's own key, to stop a query cut at a limit.
    let server_key = cancel_key
        .as_ref()
        .and_then(|k| Some((k.pid, ctx.cancel.lookup(k.pid, &k.secret)?)));
    let info = Arc::new(info);
    let result = relay::run(ctx, client, upstream, info.clone(), shutdown, server_key).await;
    drop(cancel_key);
    if let Some(trail) = &ctx.audit {
        let mut r = trail::session_record(ctx, &info, "disconnect");
        r.statements = Some(info.statements.load(std::sync::atomic::Ordering::Relaxed));
        r.rows = Some(info.rows.load(std::sync::atomic::Ordering::Relaxed));
        r.duration_ms = Some(info.started.elapsed().as_millis() as f64);
        if let Err(e) = &result {
            r.message = Some(e.to_string());
        }
        trail.submit(r);
    }
    ctx.events.record(&Event::Disconnected {
        session: info.id,
        user: info.user.clone(),
        statements: info.statements.load(std::sync::atomic::Ordering::Relaxed),
        rows: info.rows.load(std::sync::atomic::Ordering::Relaxed),
        duration: info.started.elapsed(),
    });
    result
}

/// Check a login the server accepted against its role's connect rules;
/// the presence it returns is held for the session's life.
fn admit(
    ctx: &ProxyContext,
    client: &crate::net::FramedIo<crate::net::ClientStream>,
    params: &crate::frontend::startup::StartupParams,
    peer: SocketAddr,
    id: SessionId,
) -> Result<Option<crate::access::addresses::Presence>, Error> {
    let policy = ctx.policy.current();
    let user = params.user().unwrap_or_default();
    let role = policy.role_of(user);
    let certificate = client.io.client_certificate_name();
    let login = crate::access::Login {
        user,
        client: peer,
        session: id,
        certificate: certificate.as_deref(),
    };
    match ctx.gate.admit(role, login) {
        Ok(a) => Ok(a.presence),
        Err(r) => Err(Error::ConnectRefused {
            rule: r.rule,
            message: r.message,
        }),
    }
}

/// The StartupMessage the server gets: the client's, with the settings the
/// login's role imposes appended, so that they win over any the client
/// sent (the server applies a startup packet's parameters in order, after
/// its `options`). A `RESET` returns to them.
fn with_role_settings(
    ctx: &ProxyContext,
    params: &crate::frontend::startup::StartupParams,
    raw: crate::frame::OwnedFrame,
) -> crate::frame::OwnedFrame {
    let policy = ctx.policy.current();
    let role = policy.role_of(params.user().unwrap_or_default());
    let Some(ms) = role
        .limits
        .statement_timeout_ms
        .filter(|_| !role.is_full_access())
    else {
        return raw;
    };
    let bytes = &raw.bytes;
    // Length, version, name/value pairs, and a final zero byte.
    if bytes.len() < 9 || bytes.last() != Some(&0) {
        return raw;
    }
    let mut out = bytes::BytesMut::with_capacity(bytes.len() + 32);
    out.extend_from_slice(&bytes[..bytes.len() - 1]);
    out.extend_from_slice(b"statement_timeout\0");
    out.extend_from_slice(ms.to_string().as_bytes());
    out.extend_from_slice(b"\0\0");
    let len = (out.len() as i32).to_be_bytes();
    out[..4].copy_from_slice(&len);
    crate::frame::OwnedFrame {
        tag: raw.tag,
        bytes: out.freeze(),
    }
}

/// Connect to the server (counting failures) and send the client's
/// StartupMessage as it came.
async fn open_upstream(
    ctx: &ProxyContext,
    raw_startup: &crate::frame::OwnedFrame,
) -> Result<crate::net::FramedIo<crate::net::UpstreamStream>, Error> {
    let mut upstream = upstream::connect(ctx).await.inspect_err(|e| {
        ctx.metrics
            .upstream_errors
            .with_label_values(&[e.kind()])
            .inc();
    })?;
    upstream
        .send(&raw_startup.bytes)
        .await
        .map_err(|e| Error::UpstreamRead(e.to_string()))?;
    Ok(upstream)
}

/// Pass a client's cancel request to the server backend it names.
async fn forward_cancel(ctx: &ProxyContext, pid: i32, secret: &bytes::Bytes) {
    let Some(server_secret) = ctx.cancel.lookup(pid, secret) else {
        ctx.metrics
            .cancel_requests
            .with_label_values(&["unknown_key"])
            .inc();
        debug!(pid, "cancel request with an unknown key ignored");
        return;
    };
    match upstream::send_cancel(ctx, pid, &server_secret).await {
        Ok(sent) => {
            // Counted once written: the client may see its statement
            // cancelled before the server's confirmation reaches here.
            ctx.metrics
                .cancel_requests
                .with_label_values(&["forwarded"])
                .inc();
            info!(pid, "cancel request forwarded");
            sent.confirmed().await;
        }
        Err(e) => {
            ctx.metrics
                .cancel_requests
                .with_label_values(&["failed"])
                .inc();
            warn!(pid, error = %e, "cancel request could not be forwarded");
        }
    }
}
