//! POSTing batches of JSON Lines to an HTTP endpoint (a SIEM collector or
//! an alert webhook), with retries and backoff.
//!
//! One batch is one request: `Content-Type: application/x-ndjson`, one
//! record a line, as the trail holds it. Any 2xx answer counts as
//! delivered; anything else, or no answer within the timeout, is retried
//! with backoff (0.5 s doubling to 30 s) while newer records wait in the
//! bounded [`Outbox`](super::outbox::Outbox).

use super::outbox::Outbox;
use super::syslog::Backoff;
use bytes::Bytes;
use http_body_util::Full;
use hyper::Request;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tracing::warn;

/// Where and how to POST.
#[derive(Clone)]
pub struct Endpoint {
    pub url: String,
    host: String,
    port: u16,
    path: String,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    pub headers: Vec<(String, String)>,
    pub timeout: Duration,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint").field("url", &self.url).finish()
    }
}

/// CA bundle used for `https://` when no `ca_file` is given.
pub const SYSTEM_CA: &str = "/etc/ssl/certs/ca-certificates.crt";

impl Endpoint {
    /// Check `url` (`http://` or `https://`) and prepare the connection
    /// settings; the error says what is wrong.
    pub fn new(
        url: &str,
        ca_file: Option<&std::path::Path>,
        headers: Vec<(String, String)>,
        timeout: Duration,
    ) -> Result<Endpoint, String> {
        let uri: hyper::Uri = url
            .parse()
            .map_err(|e| format!("`{url}` is not a URL: {e}"))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(format!("`{url}`: only http:// and https:// are supported")),
        };
        let host = uri
            .host()
            .ok_or_else(|| format!("`{url}` names no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let path = uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        let tls = if https {
            let ca = ca_file.unwrap_or(std::path::Path::new(SYSTEM_CA));
            let config = crate::net::tls::verifying_client_config(ca).map_err(|e| e.to_string())?;
            let name = ServerName::try_from(host.clone())
                .map_err(|_| format!("`{host}` is not a valid TLS server name"))?;
            Some((tokio_rustls::TlsConnector::from(config), name))
        } else {
            None
        };
        for (k, v) in &headers {
            hyper::header::HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| format!("`{k}` is not a valid header name"))?;
            hyper::header::HeaderValue::from_str(v)
                .map_err(|_| format!("the value of header `{k}` is not valid"))?;
        }
        Ok(Endpoint {
            url: url.to_string(),
            host,
            port,
            path,
            tls,
            headers,
            timeout,
        })
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| format!("cannot connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => handshake(TokioIo::new(tcp)).await,
            Some((connector, name)) => {
                let tls = connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| format!("TLS: {e}"))?;
                handshake(TokioIo::new(tls)).await
            }
        }
    }
}

async fn handshake<T>(io: TokioIo<T>) -> Result<SendRequest<Full<Bytes>>, String>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// A connection kept open between batches.
pub struct Poster {
    endpoint: Endpoint,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Poster {
    pub fn new(endpoint: Endpoint) -> Poster {
        Poster {
            endpoint,
            sender: None,
        }
    }

    /// POST `body` once; Ok on a 2xx answer.
    pub async fn post(&mut self, body: Bytes, content_type: &str) -> Result<(), String> {
        let timeout = self.endpoint.timeout;
        match tokio::time::timeout(timeout, self.post_inner(body, content_type)).await {
            Ok(r) => r,
            Err(_) => {
                self.sender = None;
                Err(format!("no answer within {} s", timeout.as_secs_f64()))
            }
        }
    }

    async fn post_inner(&mut self, body: Bytes, content_type: &str) -> Result<(), String> {
        let reusable = match &mut self.sender {
            Some(s) => s.ready().await.is_ok(),
            None => false,
        };
        if !reusable {
            self.sender = Some(self.endpoint.connect().await?);
        }
        let sender = self.sender.as_mut().expect("connected above");
        let ep = &self.endpoint;
        let authority =
            if (ep.tls.is_some() && ep.port == 443) || (ep.tls.is_none() && ep.port == 80) {
                ep.host.clone()
            } else {
                format!("{}:{}", ep.host, ep.port)
            };
        let mut req = Request::post(ep.path.as_str())
            .header(hyper::header::HOST, authority)
            .header(hyper::header::CONTENT_TYPE, content_type)
            .header(
                hyper::header::USER_AGENT,
                concat!("pgwarden/", env!("CARGO_PKG_VERSION")),
            );
        for (k, v) in &ep.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let req = req.body(Full::new(body)).map_err(|e| e.to_string())?;
        let resp = match sender.send_request(req).await {
            Ok(r) => r,
            Err(e) => {
                self.sender = None;
                return Err(format!("HTTP: {e}"));
            }
        };
        let status = resp.status();
        // Read (and drop) the answer so the connection can be reused.
        let _ = http_body_util::BodyExt::collect(resp.into_body()).await;
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("answered {status}"))
        }
    }
}

/// Deliver what `outbox` receives in batches of up to `batch` lines,
/// retrying each batch until it is accepted, until the outbox is closed.
pub async fn run(
    endpoint: Endpoint,
    outbox: Arc<Outbox>,
    batch: usize,
    linger: Duration,
    sent: prometheus::IntCounter,
) {
    let mut poster = Poster::new(endpoint);
    let mut backoff = Backoff::new();
    while let Some(mut lines) = outbox.take(batch).await {
        if lines.len() < batch && !outbox.closed() {
            // Let a batch fill for a moment rather than POST every line.
            tokio::time::sleep(linger).await;
            if let Some(more) = outbox.try_take(batch - lines.len()) {
                lines.extend(more);
            }
        }
        let mut body = Vec::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
        for l in &lines {
            body.extend_from_slice(l);
            if batch > 1 {
                body.push(b'\n');
            }
        }
        let body = Bytes::from(body);
        let content_type = if batch == 1 {
            "application/json"
        } else {
            "application/x-ndjson"
        };
        loop {
            match poster.post(body.clone(), content_type).await {
                Ok(()) => {
                    sent.inc_by(lines.len() as u64);
                    backoff.reset();
                    break;
                }
                Err(e) => {
                    warn!(url = %poster.endpoint.url, error = %e, records = lines.len(), queued = outbox.len(), "cannot deliver to HTTP endpoint; retrying");
                    backoff.wait().await;
                }
            }
        }
    }
}
