//! The admin endpoint (`[admin] listen`): what on-call staff need when a
//! limit has blocked someone.
//!
//! - `GET /blocks`: users a spent window refuses now (JSON list of rule,
//!   count, limit, until);
//! - `POST /blocks/lift` with `{"user": "...", "rule": "..."}` (rule
//!   optional): start that user's windows afresh. Each lift is an audit
//!   record (`event: "block_lifted"`) naming who asked, from where.
//!
//! Every request must carry `Authorization: Bearer <token>` with the token
//! of `[admin] token_file`; anything else is 401 and logged. `pgwarden
//! admin blocks|lift` are the command-line clients.

use crate::context::ProxyContext;
use axum::Router;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

#[derive(Clone)]
struct Admin {
    ctx: Arc<ProxyContext>,
    token: Arc<str>,
}

/// The body of `POST /blocks/lift`.
#[derive(Debug, serde::Deserialize, serde::Serialize)]
pub struct Lift {
    pub user: String,
    pub rule: Option<String>,
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        "a valid bearer token is required\n",
    )
        .into_response()
}

fn json(value: &impl serde::Serialize) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// Compare without leaking where the first difference is.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Admin {
    fn authorized(&self, headers: &HeaderMap, peer: SocketAddr) -> bool {
        let given = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if same(given.trim().as_bytes(), self.token.as_bytes()) {
            return true;
        }
        warn!(%peer, "admin request without a valid token");
        false
    }
}

async fn blocks(
    State(a): State<Admin>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if !a.authorized(&headers, peer) {
        return unauthorized();
    }
    json(&a.ctx.limiter.blocks())
}

async fn lift(
    State(a): State<Admin>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: String,
) -> Response {
    if !a.authorized(&headers, peer) {
        return unauthorized();
    }
    let req: Lift = match serde_json::from_str(&body) {
        Ok(r) => r,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("expected {{\"user\": \"...\", \"rule\": \"...\"}}: {e}\n"),
            )
                .into_response();
        }
    };
    let lifted = a.ctx.limiter.lift(&req.user, req.rule.as_deref());
    info!(%peer, user = %req.user, rules = ?lifted, "blocks lifted");
    if let Some(trail) = &a.ctx.audit {
        let mut r = crate::audit::Record::new("block_lifted");
        r.user = Some(req.user.clone());
        r.client = Some(peer.to_string());
        r.rule = req.rule.clone();
        r.detail = Some(serde_json::json!({ "lifted": lifted, "by": "admin endpoint" }));
        trail.submit(r);
    }
    json(&serde_json::json!({ "user": req.user, "lifted": lifted }))
}

/// Serve the admin endpoint on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    ctx: Arc<ProxyContext>,
    token: String,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/blocks", get(blocks))
        .route("/blocks/lift", post(lift))
        .with_state(Admin {
            ctx,
            token: token.into(),
        });
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move { shutdown.cancelled().await })
    .await
}

/// `pgwarden admin`: one request to a running proxy's admin endpoint;
/// the response body, or why it failed.
pub async fn request(
    config: &crate::Config,
    method: &str,
    path: &str,
    body: Option<String>,
) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listen = config
        .admin
        .listen
        .as_deref()
        .ok_or_else(|| anyhow::anyhow!("{}: no [admin] listen", config.source.display()))?;
    let token = config.admin.token().map_err(anyhow::Error::msg)?;
    let addr = crate::config::parse_listen(listen).map_err(anyhow::Error::msg)?;
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach the admin endpoint at {addr}: {e}"))?;
    let body = body.unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).unwrap_or("?");
    if status != "200" {
        anyhow::bail!("the admin endpoint answered {status}: {}", body.trim());
    }
    Ok(body.to_string())
}
