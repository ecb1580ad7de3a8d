//! Copies of audit records to a syslog collector, as RFC 5424 messages.
//!
//! Each record becomes one message: `<PRI>1 TIMESTAMP HOST pgwarden PID
//! EVENT [pgwarden@32473 seq="…"] BOM{json}`. The JSON is the line as it
//! is in the trail, MAC included, so a collector can keep the chain.
//! Severity follows the event: `alert` is warning, refusals and failed
//! logins are notice, the rest informational. Over UDP one datagram is one
//! message (cut at 64 000 bytes); over TCP messages are framed by octet
//! counting (RFC 6587), and the connection is re-established with backoff.

use super::outbox::Outbox;
use crate::config::{SyslogConfig, SyslogTransport};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UdpSocket};
use tracing::warn;

/// Largest message sent in one UDP datagram.
const MAX_DATAGRAM: usize = 64_000;
/// The enterprise number reserved for documentation (RFC 5612).
const SD_ID: &str = "pgwarden@32473";

/// Facility names and codes (RFC 5424, table 1).
pub fn facility_code(name: &str) -> Option<u8> {
    Some(match name {
        "kern" => 0,
        "user" => 1,
        "daemon" => 3,
        "auth" => 4,
        "syslog" => 5,
        "authpriv" => 10,
        "local0" => 16,
        "local1" => 17,
        "local2" => 18,
        "local3" => 19,
        "local4" => 20,
        "local5" => 21,
        "local6" => 22,
        "local7" => 23,
        _ => return None,
    })
}

/// Fields of a trail line the header needs.
#[derive(serde::Deserialize)]
struct Head<'a> {
    #[serde(default)]
    ts: &'a str,
    #[serde(default)]
    seq: u64,
    #[serde(default)]
    event: &'a str,
    #[serde(default)]
    decision: Option<&'a str>,
}

fn severity(event: &str, decision: Option<&str>) -> u8 {
    match (event, decision) {
        ("alert", _) | ("lost", _) => 4,
        ("auth_failed", _) | (_, Some("refuse")) => 5,
        _ => 6,
    }
}

/// The RFC 5424 message for one trail line.
pub fn format(line: &[u8], facility: u8, host: &str, app: &str, pid: u32) -> Vec<u8> {
    let head: Head = serde_json::from_slice(line).unwrap_or(Head {
        ts: "",
        seq: 0,
        event: "",
        decision: None,
    });
    let pri = facility as u32 * 8 + severity(head.event, head.decision) as u32;
    let ts = if head.ts.is_empty() { "-" } else { head.ts };
    let msgid = if head.event.is_empty() || !head.event.bytes().all(|c| c.is_ascii_graphic()) {
        "-"
    } else {
        head.event
    };
    let mut out = format!(
        "<{pri}>1 {ts} {host} {app} {pid} {msgid} [{SD_ID} seq=\"{}\"] \u{feff}",
        head.seq
    )
    .into_bytes();
    out.extend_from_slice(line);
    out
}

/// A header field: printable ASCII without spaces, or `-`.
fn header_field(s: &str, max: usize) -> String {
    let f: String = s
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(max)
        .collect();
    if f.is_empty() { "-".into() } else { f }
}

pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at
    // most that many bytes.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let name = if rc == 0 {
        let end = buf.iter().position(|&c| c == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        String::new()
    };
    header_field(&name, 255)
}

/// Send what `outbox` receives to the collector until it is closed.
pub async fn run(config: SyslogConfig, outbox: Arc<Outbox>, sent: prometheus::IntCounter) {
    let facility = facility_code(&config.facility).unwrap_or(16);
    let host = hostname();
    let app = header_field(&config.app_name, 48);
    let pid = std::process::id();
    let mut backoff = Backoff::new();
    let mut udp: Option<UdpSocket> = None;
    let mut tcp: Option<TcpStream> = None;
    while let Some(batch) = outbox.take(256).await {
        let mut frames = Vec::with_capacity(batch.len());
        for line in &batch {
            frames.push(format(line, facility, &host, &app, pid));
        }
        let result = match config.transport {
            SyslogTransport::Udp => send_udp(&mut udp, &config.address, &frames).await,
            SyslogTransport::Tcp => send_tcp(&mut tcp, &config.address, &frames).await,
        };
        match result {
            Ok(()) => {
                sent.inc_by(batch.len() as u64);
                backoff.reset();
            }
            Err(e) => {
                udp = None;
                tcp = None;
                warn!(error = %e, address = %config.address, queued = outbox.len() + batch.len(), "cannot send audit records to syslog; retrying");
                outbox.requeue(batch);
                backoff.wait().await;
            }
        }
    }
}

async fn send_udp(
    sock: &mut Option<UdpSocket>,
    address: &str,
    frames: &[Vec<u8>],
) -> std::io::Result<()> {
    if sock.is_none() {
        let target = tokio::net::lookup_host(address)
            .await?
            .next()
            .ok_or_else(|| std::io::Error::other("no address"))?;
        let local = if target.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        };
        let s = UdpSocket::bind(local).await?;
        s.connect(target).await?;
        *sock = Some(s);
    }
    let s = sock.as_ref().expect("connected above");
    for f in frames {
        s.send(&f[..f.len().min(MAX_DATAGRAM)]).await?;
    }
    Ok(())
}

async fn send_tcp(
    stream: &mut Option<TcpStream>,
    address: &str,
    frames: &[Vec<u8>],
) -> std::io::Result<()> {
    if stream.is_none() {
        let s = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(address))
            .await
            .map_err(|_| std::io::Error::other("connect timed out"))??;
        s.set_nodelay(true)?;
        *stream = Some(s);
    }
    let s = stream.as_mut().expect("connected above");
    let mut buf = Vec::new();
    for f in frames {
        buf.extend_from_slice(format!("{} ", f.len()).as_bytes());
        buf.extend_from_slice(f);
    }
    s.write_all(&buf).await?;
    s.flush().await
}

/// Exponential backoff between retries: 0.5 s doubling to 30 s.
pub struct Backoff {
    next: Duration,
}

impl Backoff {
    pub fn new() -> Backoff {
        Backoff {
            next: Duration::from_millis(500),
        }
    }

    pub fn reset(&mut self) {
        self.next = Duration::from_millis(500);
    }

    pub async fn wait(&mut self) {
        tokio::time::sleep(self.next).await;
        self.next = (self.next * 2).min(Duration::from_secs(30));
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_follow_rfc_5424() {
        let line = br#"{"ts":"2026-11-24T08:00:00Z","seq":7,"event":"query","decision":"refuse","mac":"00"}"#;
        let m = String::from_utf8(format(line, 16, "db-gw-1", "pgwarden", 42)).unwrap();
        // local0 (16) * 8 + notice (5).
        assert!(
            m.starts_with("<133>1 2026-11-24T08:00:00Z db-gw-1 pgwarden 42 query [pgwarden@32473 seq=\"7\"] \u{feff}{"),
            "{m}"
        );
        assert!(m.ends_with(r#""mac":"00"}"#));
        let alert = br#"{"ts":"2026-11-24T08:00:00Z","seq":8,"event":"alert"}"#;
        assert!(
            String::from_utf8(format(alert, 4, "h", "a", 1))
                .unwrap()
                .starts_with("<36>1 ")
        );
        assert_eq!(facility_code("authpriv"), Some(10));
        assert_eq!(facility_code("nope"), None);
        assert_eq!(header_field("a b\u{1}c", 10), "abc");
    }
}
