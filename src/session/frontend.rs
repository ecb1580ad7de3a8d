//! Client-to-server direction of a session.
//!
//! Reads whatever the client sent, cuts it into frames, decodes each once,
//! keeps the session's protocol state, tells the backend direction which
//! responses to expect, and forwards the original bytes in one write per
//! read. A malformed message ends the session with a protocol error.

use super::state::SessionState;
use super::{Error, SessionInfo};
use crate::backend::tracker::{Pending, PendingQueue, Statement};
use crate::codec::{self, DecodeError};
use crate::context::ProxyContext;
use crate::frame::take_frame;
use crate::frontend::FrontendMessage;
use crate::net::{ClientRead, UpstreamWrite};
use bytes::BytesMut;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{debug, warn};

/// Read-buffer growth step.
const READ_CHUNK: usize = 64 * 1024;

pub async fn run(
    ctx: &ProxyContext,
    info: &SessionInfo,
    rd: &mut ClientRead,
    wr: &mut UpstreamWrite,
    mut buf: BytesMut,
    pending: &PendingQueue,
) -> Result<(), Error> {
    let dctx = codec::context();
    let max = ctx.config.max_client_message_bytes;
    let mut state = SessionState::default();
    let mut out = BytesMut::with_capacity(READ_CHUNK);
    let mut inspector = Inspector {
        ctx,
        info,
        state: &mut state,
        batch: Vec::new(),
    };
    loop {
        let mut terminate = false;
        while let Some(frame) = take_frame(&mut buf, true, max)
            .map_err(|e| Error::Protocol(DecodeError::new(0, e.to_string())))?
        {
            let msg = FrontendMessage::decode(&frame, &dctx).map_err(Error::Protocol)?;
            terminate = matches!(msg, FrontendMessage::Terminate);
            inspector.inspect(msg);
            out.extend_from_slice(&frame.bytes);
            if terminate {
                break;
            }
        }
        // Expectations go out before the bytes they answer to.
        pending.push_all(&mut inspector.batch);
        if !out.is_empty() {
            ctx.metrics.hot.bytes_to_server.inc_by(out.len() as u64);
            wr.write_all(&out)
                .await
                .map_err(|e| Error::UpstreamRead(e.to_string()))?;
            out.clear();
        }
        if terminate {
            return Ok(());
        }
        if buf.capacity() - buf.len() < READ_CHUNK / 4 {
            buf.reserve(READ_CHUNK);
        }
        if rd
            .read_buf(&mut buf)
            .await
            .map_err(|e| Error::ClientRead(e.to_string()))?
            == 0
        {
            return if buf.is_empty() {
                Err(Error::ClientClosed)
            } else {
                Err(Error::ClientRead("connection closed mid-message".into()))
            };
        }
    }
}

/// Keeps protocol state and queues expected responses for each message.
struct Inspector<'a> {
    ctx: &'a ProxyContext,
    info: &'a SessionInfo,
    state: &'a mut SessionState,
    /// Expectations of the messages of one read, queued together.
    batch: Vec<Pending>,
}

impl Inspector<'_> {
    fn expect(&mut self, p: Pending) {
        self.batch.push(p);
    }

    fn inspect(&mut self, msg: FrontendMessage) {
        match msg {
            FrontendMessage::Query(sql) => {
                self.ctx.metrics.hot.statements_simple.inc();
                self.ctx.metrics.hot.queries_forward.inc();
                let sql: Arc<str> = sql.into();
                self.track_cursors(&sql);
                debug!(sql = %sql, "query");
                self.expect(Pending::Query(Statement::new(sql, false)));
            }
            FrontendMessage::Parse(p) => {
                let sql: Arc<str> = p.query.into();
                self.state.parse(p.name, sql.clone());
                self.expect(Pending::Parse(Statement::new(sql, true)));
            }
            FrontendMessage::Bind(b) => {
                self.state.bind(b.portal_name, b.statement_name);
                self.expect(Pending::Bind);
            }
            FrontendMessage::Describe(_) => self.expect(Pending::Describe),
            FrontendMessage::Execute(e) => {
                self.ctx.metrics.hot.statements_extended.inc();
                self.ctx.metrics.hot.queries_forward.inc();
                let sql = self
                    .state
                    .portal_sql(e.name.as_deref())
                    .unwrap_or_else(|| "".into());
                debug!(sql = %sql, portal = e.name.as_deref().unwrap_or(""), "execute");
                self.expect(Pending::Execute(Statement::new(sql, true)));
            }
            FrontendMessage::Close(c) => {
                self.state.close(c.target_type, c.name.as_deref());
                self.expect(Pending::Close);
            }
            FrontendMessage::Sync => self.expect(Pending::Sync),
            FrontendMessage::FunctionCall { function_oid } => {
                warn!(user = %self.info.user, function_oid, "fast-path function call");
                self.expect(Pending::FunctionCall);
            }
            FrontendMessage::Flush
            | FrontendMessage::CopyData
            | FrontendMessage::CopyDone
            | FrontendMessage::CopyFail(_)
            | FrontendMessage::Password
            | FrontendMessage::Terminate => {}
        }
    }

    /// Remember cursors opened and closed by SQL (DECLARE / CLOSE).
    fn track_cursors(&mut self, sql: &Arc<str>) {
        let head = sql.trim_start();
        let keyword = head
            .split(|c: char| !c.is_ascii_alphabetic())
            .next()
            .unwrap_or("");
        if keyword.eq_ignore_ascii_case("declare") {
            if let Some(name) = head.split_whitespace().nth(1) {
                self.state
                    .declare_cursor(name.trim_matches('"').to_string(), sql.clone());
            }
        } else if keyword.eq_ignore_ascii_case("close") {
            match head
                .split_whitespace()
                .nth(1)
                .map(|n| n.trim_end_matches(';'))
            {
                Some(n) if n.eq_ignore_ascii_case("all") => self.state.close_cursor(None),
                Some(n) => self.state.close_cursor(Some(n.trim_matches('"'))),
                None => {}
            }
        }
    }
}
