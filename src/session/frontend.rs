//! Client-to-server direction of a session.
//!
//! Reads whatever the client sent, cuts it into frames, decodes each once,
//! keeps the session's protocol state, applies the policy decision of
//! restricted sessions ([`super::enforce`]), tells the backend direction
//! which responses to expect (with the decision that rewrites them), and
//! forwards the bytes in one write per read: the original bytes, a Bind
//! asking for text, or a refusal in place of a statement. A malformed
//! message ends the session with a protocol error, and nothing of the read
//! it came in reaches the server.
//!
//! A login known to have full access, with no audit trail to record for,
//! passes through: its messages are still decoded before they go out, but
//! the state and expectations are kept after the write, while the server
//! already works on them (PgBouncer's latency on the critical path, not a
//! full inspection's).
//!
//! Restricted sessions' statements are analysed, rewritten or refused in
//! [`restricted`]; this file keeps the reading, the dispatch and the
//! full-access tracking.

mod as_prepared;
mod probes;
mod restricted;

use super::enforce::{Enforcer, Standing};
use super::state::{Prepared, SessionState};
use super::{Error, SessionInfo};
use crate::analysis::{Effect, Refusal};
use crate::backend::tracker::{Params, Pending, PendingQueue, Reads, Statement};
use crate::codec::{self, DecodeError};
use crate::context::ProxyContext;
use crate::frame::{Frame, FrameError, consume, peek_frame};
use crate::frontend::FrontendMessage;
use crate::frontend::extended::Bind;
use crate::net::{ClientRead, UpstreamWrite};
use bytes::BytesMut;
use pgwire::messages::DecodeContext;
use smallvec::SmallVec;
use std::collections::VecDeque;
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
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
    let mut state = SessionState::default();
    let mut out = BytesMut::with_capacity(READ_CHUNK);
    let mut inspector = Inspector {
        ctx,
        info,
        state: &mut state,
        enforcer: Enforcer::default(),
        batch: VecDeque::new(),
    };
    loop {
        // Messages are handled in place; the buffer moves on after them.
        let terminate = if inspector.passes_through() {
            forward_then_track(&mut inspector, &mut buf, wr, pending, &dctx).await?
        } else {
            inspect_then_forward(&mut inspector, &mut buf, wr, pending, &dctx, &mut out).await?
        };
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

fn framing(e: FrameError) -> Error {
    Error::Protocol(DecodeError::new(0, e.to_string()))
}

/// Forward the complete messages in `buf` once each is decoded, then track
/// them while the server works on them: for sessions whose bytes nothing
/// changes or holds back ([`Inspector::passes_through`]). Returns whether
/// the client said Terminate.
async fn forward_then_track(
    inspector: &mut Inspector<'_>,
    buf: &mut BytesMut,
    wr: &mut UpstreamWrite,
    pending: &PendingQueue,
    dctx: &DecodeContext,
) -> Result<bool, Error> {
    let max = inspector.ctx.config.max_client_message_bytes;
    let mut used = 0;
    let mut terminate = false;
    {
        let mut msgs = SmallVec::<[FrontendMessage<'_>; 4]>::new();
        while let Some(frame) = peek_frame(&buf[used..], max).map_err(framing)? {
            used += frame.bytes.len();
            let msg = FrontendMessage::decode(&frame, dctx).map_err(Error::Protocol)?;
            terminate = matches!(msg, FrontendMessage::Terminate);
            inspector.state.note_message(&msg);
            msgs.push(msg);
            if terminate {
                break;
            }
        }
        if used > 0 {
            inspector
                .ctx
                .metrics
                .hot
                .bytes_to_server
                .inc_by(used as u64);
            let mut write = pin!(wr.write_all(&buf[..used]));
            // One attempt now, without yielding: the backend direction runs
            // only when this task yields, so the expectations still go out
            // before it can see the responses.
            let first = std::future::poll_fn(|cx| Poll::Ready(write.as_mut().poll(cx))).await;
            for msg in msgs {
                inspector.track_passed_through(msg);
            }
            inspector.push_expectations(pending);
            match first {
                Poll::Ready(r) => r,
                Poll::Pending => write.await,
            }
            .map_err(|e| Error::UpstreamRead(e.to_string()))?;
        }
    }
    consume(buf, used, max).map_err(framing)?;
    Ok(terminate)
}

/// Inspect the complete messages in `buf`, queue what their responses are
/// expected to be, then forward what goes to the server: the original
/// bytes, rewritten messages or refusals. Returns whether the client said
/// Terminate.
async fn inspect_then_forward(
    inspector: &mut Inspector<'_>,
    buf: &mut BytesMut,
    wr: &mut UpstreamWrite,
    pending: &PendingQueue,
    dctx: &DecodeContext,
    out: &mut BytesMut,
) -> Result<bool, Error> {
    let max = inspector.ctx.config.max_client_message_bytes;
    let mut used = 0;
    let mut terminate = false;
    while let Some(frame) = peek_frame(&buf[used..], max).map_err(framing)? {
        used += frame.bytes.len();
        let msg = FrontendMessage::decode(&frame, dctx).map_err(Error::Protocol)?;
        terminate = matches!(msg, FrontendMessage::Terminate);
        inspector.state.note_message(&msg);
        if let Some(msg) = inspector.inspect_now(msg, &frame, out) {
            // A name changed in an earlier block and not yet confirmed:
            // send what came before and wait for the server's answer.
            while let Some(c) = inspector.unanswered(&msg) {
                flush(inspector, wr, pending, out).await?;
                c.answered().await;
            }
            inspector.inspect(msg, &frame, out).await;
        }
        if terminate {
            break;
        }
    }
    consume(buf, used, max).map_err(framing)?;
    flush(inspector, wr, pending, out).await?;
    Ok(terminate)
}

/// Send what was inspected so far, its expectations first.
async fn flush(
    inspector: &mut Inspector<'_>,
    wr: &mut UpstreamWrite,
    pending: &PendingQueue,
    out: &mut BytesMut,
) -> Result<(), Error> {
    inspector.push_expectations(pending);
    if !out.is_empty() {
        inspector
            .ctx
            .metrics
            .hot
            .bytes_to_server
            .inc_by(out.len() as u64);
        wr.write_all(out)
            .await
            .map_err(|e| Error::UpstreamRead(e.to_string()))?;
        out.clear();
    }
    Ok(())
}

/// Keeps protocol state, applies policy decisions and queues expected
/// responses for each message.
struct Inspector<'a> {
    ctx: &'a ProxyContext,
    info: &'a SessionInfo,
    state: &'a mut SessionState,
    enforcer: Enforcer,
    /// Expectations of the messages of one read, queued together.
    batch: VecDeque<Pending>,
}

impl Inspector<'_> {
    fn expect(&mut self, p: Pending) {
        self.batch.push_back(p);
    }

    /// Hand the expectations of what was sent to the backend direction.
    fn push_expectations(&mut self, pending: &PendingQueue) {
        self.state.sent_cycles += self.batch.iter().filter(|p| p.ends_cycle()).count() as u64;
        pending.push_all(&mut self.batch);
    }

    /// The server has answered every request sent before this read's
    /// and is idle outside a transaction block: a statement pgwarden adds
    /// now runs in a transaction of its own.
    fn server_idle(&self) -> bool {
        let sent =
            self.state.sent_cycles + self.batch.iter().filter(|p| p.ends_cycle()).count() as u64;
        self.info.readies() >= sent && self.info.tx_status() == b'I'
    }

    /// Handle a message of a session known to have full access that needs
    /// neither analysis nor a wait, as most messages of the extended
    /// protocol are; any other message is handed back for [`Self::inspect`].
    fn inspect_now<'m>(
        &mut self,
        msg: FrontendMessage<'m>,
        frame: &Frame<'_>,
        out: &mut BytesMut,
    ) -> Option<FrontendMessage<'m>> {
        let decided = match &msg {
            FrontendMessage::Query(_)
            | FrontendMessage::Parse(_)
            | FrontendMessage::FunctionCall { .. } => false,
            FrontendMessage::Bind(_)
            | FrontendMessage::Describe(_)
            | FrontendMessage::Execute(_) => self.enforcer.known_full_access(self.ctx),
            _ => true,
        };
        if !decided {
            return Some(msg);
        }
        self.track(msg);
        out.extend_from_slice(frame.bytes);
        None
    }

    /// Inspect one message and append what goes to the server to `out`:
    /// the original bytes, a rewritten message, or a refusal in its place.
    async fn inspect(&mut self, msg: FrontendMessage<'_>, frame: &Frame<'_>, out: &mut BytesMut) {
        let standing = match &msg {
            FrontendMessage::Query(_)
            | FrontendMessage::Parse(_)
            | FrontendMessage::Bind(_)
            | FrontendMessage::Describe(_)
            | FrontendMessage::Execute(_)
            | FrontendMessage::FunctionCall { .. } => {
                self.enforcer.standing(self.ctx, self.info).await
            }
            _ => Standing::FullAccess,
        };
        let view = match standing {
            Standing::FullAccess => {
                self.inspect_full_access(msg).await;
                out.extend_from_slice(frame.bytes);
                return;
            }
            Standing::Restricted(v) => {
                self.info.set_restricted();
                v
            }
            Standing::Blocked(reason) => {
                let refusal = Refusal::new(reason);
                match msg {
                    FrontendMessage::Parse(p) => self.refuse_parse(p.query.into(), &refusal, out),
                    FrontendMessage::Query(sql) => self.refuse_query(sql, &refusal, out),
                    FrontendMessage::FunctionCall { .. } => {
                        self.refuse_query("<function call>".into(), &refusal, out)
                    }
                    // Statements prepared before are not run either.
                    FrontendMessage::Bind(b) => {
                        self.state.close(b'P', &b.portal);
                        self.refuse_parse(Arc::from(""), &refusal, out)
                    }
                    FrontendMessage::Describe(_) | FrontendMessage::Execute(_) => {
                        self.refuse_parse(Arc::from(""), &refusal, out)
                    }
                    other => {
                        self.inspect_full_access(other).await;
                        out.extend_from_slice(frame.bytes);
                    }
                }
                return;
            }
        };
        self.inspect_restricted(msg, frame, &view, out).await;
    }

    /// Full-access sessions: state only, bytes untouched; with an audit
    /// trail, the classified columns statements touch are recorded.
    async fn inspect_full_access(&mut self, msg: FrontendMessage<'_>) {
        match msg {
            FrontendMessage::Query(sql) => {
                let observed = self.observe(&sql).await;
                self.full_access_query(sql, observed);
            }
            FrontendMessage::Parse(p) => {
                let sql: Arc<str> = p.query.into();
                let observed = self.observe(&sql).await;
                self.full_access_parse(p.name.as_deref().unwrap_or(""), sql, observed);
            }
            other => self.track(other),
        }
    }

    /// Full-access sessions with nothing to observe ([`Self::passes_through`]):
    /// the same state and expectations as [`Self::inspect_full_access`],
    /// without waiting.
    fn track_passed_through(&mut self, msg: FrontendMessage<'_>) {
        match msg {
            FrontendMessage::Query(sql) => self.full_access_query(sql, None),
            FrontendMessage::Parse(p) => {
                self.full_access_parse(p.name.as_deref().unwrap_or(""), p.query.into(), None)
            }
            other => self.track(other),
        }
    }

    /// Whether every message of this session goes to the server as the
    /// client sent it and is tracked without waiting: a login known to
    /// have full access, with no audit trail to record its statements
    /// for. Its bytes can then be forwarded before they are inspected.
    fn passes_through(&self) -> bool {
        self.ctx.audit.is_none() && self.enforcer.known_full_access(self.ctx)
    }

    fn full_access_query(&mut self, sql: Arc<str>, observed: Option<Arc<[Reads]>>) {
        self.ctx.metrics.hot.statements_simple.inc();
        self.ctx.metrics.hot.queries_forward.inc();
        self.track_cursors(&sql);
        debug!(sql = %sql, "query");
        self.expect(Pending::Query(Statement::decided(
            sql, false, None, observed,
        )));
    }

    fn full_access_parse(&mut self, name: &str, sql: Arc<str>, observed: Option<Arc<[Reads]>>) {
        let reads = observed
            .as_ref()
            .and_then(|o| o.first().cloned())
            .unwrap_or_default();
        self.state
            .parse(name, Prepared::new(sql.clone(), None, false, None, reads));
        self.expect(Pending::Parse(Statement::decided(
            sql, true, None, observed,
        )));
    }

    /// State and expectations of a full-access message that needs no
    /// analysis (all but Query and Parse); never waits.
    fn track(&mut self, msg: FrontendMessage<'_>) {
        match msg {
            FrontendMessage::Bind(b) => {
                let params = self.params(&b);
                self.state.bind(
                    &b.portal,
                    &b.statement,
                    Vec::new(),
                    b.result_formats(),
                    params,
                );
                self.expect(Pending::Bind(None));
            }
            FrontendMessage::Describe(_) => self.expect(Pending::Describe(None)),
            FrontendMessage::Execute(e) => {
                self.ctx.metrics.hot.statements_extended.inc();
                self.ctx.metrics.hot.queries_forward.inc();
                let (sql, params, reads) = self
                    .state
                    .portal(&e.portal)
                    .map(|p| (p.statement.sql.clone(), p.params.clone(), p.reads.clone()))
                    .unwrap_or_else(unknown_portal);
                debug!(sql = %sql, portal = %e.portal, "execute");
                self.expect(Pending::Execute(Statement::with_params(
                    sql, None, params, reads, None,
                )));
            }
            FrontendMessage::Close(c) => {
                self.state.close(c.kind, &c.name);
                self.expect(Pending::Close);
            }
            FrontendMessage::Sync => {
                self.state.next_block();
                self.expect(Pending::Sync);
            }
            FrontendMessage::FunctionCall { function_oid } => {
                warn!(user = %self.info.user, function_oid, "fast-path function call");
                self.expect(Pending::FunctionCall);
            }
            // The end of what the client sent in COPY-IN mode: the server
            // ignores a Sync sent before it if it entered that mode.
            FrontendMessage::CopyDone | FrontendMessage::CopyFail(_) => {
                self.expect(Pending::CopyEnd)
            }
            FrontendMessage::Query(_)
            | FrontendMessage::Parse(_)
            | FrontendMessage::Flush
            | FrontendMessage::CopyData
            | FrontendMessage::Password
            | FrontendMessage::Terminate => {}
        }
    }

    /// The classified columns a full-access statement touches, for the
    /// trail; `None` when there is no trail or the analysis cannot tell
    /// (never a reason to stop a full-access statement).
    async fn observe(&mut self, sql: &Arc<str>) -> Option<Arc<[Reads]>> {
        let view = self.enforcer.audit_view(self.ctx, self.info).await?;
        match self
            .enforcer
            .analyze(self.ctx, self.info, &view, self.state, sql)
            .await
        {
            Ok(a) => Some(a.statements.iter().map(Reads::from).collect()),
            Err(r) => {
                debug!(user = %self.info.user, sql = %sql, reason = %r.message, "columns of a full-access statement not known");
                None
            }
        }
    }

    /// Bind parameters for the audit trail, when there is one.
    fn params(&self, b: &Bind<'_>) -> Option<Params> {
        self.ctx.audit.as_ref()?;
        let hash = self
            .ctx
            .config
            .audit
            .hash_parameters
            .then_some(&self.ctx.hash_key);
        Some(super::trail::bind_params(b, hash))
    }

    fn count(&self, rewrite: bool, extended: bool) {
        let hot = &self.ctx.metrics.hot;
        if extended {
            hot.statements_extended.inc();
        } else {
            hot.statements_simple.inc();
        }
        if rewrite {
            hot.queries_rewrite.inc();
        } else {
            hot.queries_forward.inc();
        }
    }

    /// Remember cursors opened and closed by SQL (DECLARE / CLOSE) of
    /// full-access sessions.
    fn track_cursors(&mut self, sql: &Arc<str>) {
        let head = sql.trim_start();
        let keyword = head
            .split(|c: char| !c.is_ascii_alphabetic())
            .next()
            .unwrap_or("");
        if keyword.eq_ignore_ascii_case("declare") {
            if let Some(name) = head.split_whitespace().nth(1) {
                self.state.apply(&Effect::DeclareCursor {
                    name: name.trim_matches('"').to_string(),
                    cursor: Default::default(),
                });
            }
        } else if keyword.eq_ignore_ascii_case("close") {
            match head
                .split_whitespace()
                .nth(1)
                .map(|n| n.trim_end_matches(';'))
            {
                Some(n) if n.eq_ignore_ascii_case("all") => {
                    self.state.apply(&Effect::CloseCursor(None))
                }
                Some(n) => self
                    .state
                    .apply(&Effect::CloseCursor(Some(n.trim_matches('"').to_string()))),
                None => {}
            }
        }
    }
}

/// An Execute of a portal the session does not know: the server will
/// refuse it.
fn unknown_portal() -> (Arc<str>, Option<Params>, Arc<[Reads]>) {
    (Arc::from(""), None, Arc::from([Reads::default()]))
}
