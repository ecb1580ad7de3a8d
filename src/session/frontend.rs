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

use super::enforce::{
    Enforcer, Standing, log_refusal, parse_message, query_message, refusal_extended, refusal_query,
};
use super::state::{Prepared, SessionState, Use};
use super::{Error, SessionInfo};
use crate::analysis::{Effect, Refusal, ResultPlan};
use crate::backend::tracker::{Confirm, Params, Pending, PendingQueue, Reads, Statement};
use crate::codec::{self, DecodeError};
use crate::context::ProxyContext;
use crate::decision::{Decision, RoleView};
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
            pending.push_all(&mut inspector.batch);
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
    pending.push_all(&mut inspector.batch);
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
            Standing::Restricted(v) => v,
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
            FrontendMessage::Query(_)
            | FrontendMessage::Parse(_)
            | FrontendMessage::Flush
            | FrontendMessage::CopyData
            | FrontendMessage::CopyDone
            | FrontendMessage::CopyFail(_)
            | FrontendMessage::Password
            | FrontendMessage::Terminate => {}
        }
    }

    fn decision(
        &self,
        view: &Arc<RoleView>,
        results: Vec<Option<Arc<ResultPlan>>>,
        formats: Vec<i16>,
        sensitive: bool,
        refusal: bool,
        rewritten: bool,
    ) -> Option<Arc<Decision>> {
        Some(Arc::new(Decision {
            results,
            formats,
            sensitive,
            refusal,
            rewritten,
            view: view.clone(),
            subject: None,
        }))
    }

    fn refusal_decision(&self) -> Option<Arc<Decision>> {
        let view = self.enforcer.current_view()?;
        self.decision(&view, Vec::new(), Vec::new(), true, true, false)
    }

    fn refuse_query(&mut self, sql: Arc<str>, r: &Refusal, out: &mut BytesMut) {
        log_refusal(self.info, &sql, r);
        self.ctx.metrics.hot.statements_simple.inc();
        self.ctx.metrics.hot.queries_refuse.inc();
        refusal_query(&r.message, out);
        let d = self.refusal_decision();
        self.expect(Pending::Query(Statement::refused(
            sql, false, d, &r.message,
        )));
    }

    fn refuse_parse(&mut self, sql: Arc<str>, r: &Refusal, out: &mut BytesMut) {
        log_refusal(self.info, &sql, r);
        self.ctx.metrics.hot.statements_extended.inc();
        self.ctx.metrics.hot.queries_refuse.inc();
        refusal_extended(&r.message, out);
        // The refusal replaces the server's unnamed statement and portal.
        self.state.close(b'S', "");
        self.state.close(b'P', "");
        let d = self.refusal_decision();
        self.expect(Pending::Hidden);
        self.expect(Pending::Hidden);
        self.expect(Pending::Execute(Statement::refused(
            sql, true, d, &r.message,
        )));
    }

    async fn inspect_restricted(
        &mut self,
        msg: FrontendMessage<'_>,
        frame: &Frame<'_>,
        view: &Arc<RoleView>,
        out: &mut BytesMut,
    ) {
        match msg {
            FrontendMessage::Query(sql) => {
                self.certain(Use::Sql);
                let analysis = self
                    .enforcer
                    .analyze(self.ctx, self.info, view, self.state, &sql)
                    .await;
                let analysis = analysis.and_then(|a| {
                    if a.sensitive() {
                        self.admit()?;
                    }
                    let text = a.server_text(&sql)?;
                    Ok((a, text))
                });
                match analysis {
                    Err(r) => self.refuse_query(sql, &r, out),
                    Ok((a, text)) => {
                        for st in &a.statements {
                            self.state.apply(&st.effect);
                        }
                        let confirm = Arc::new(Confirm::default());
                        self.state.query_tentative(
                            a.statements.iter().map(|s| s.effect.clone()).collect(),
                            confirm.clone(),
                        );
                        let results: Vec<_> =
                            a.statements.iter().map(|s| s.result.clone()).collect();
                        let rewritten = a.rewrite.is_some();
                        self.count(rewritten || results.iter().any(Option::is_some), false);
                        let reads = a.statements.iter().map(Reads::from).collect();
                        let d = self.decision(
                            view,
                            results,
                            Vec::new(),
                            a.withholds_text(),
                            false,
                            rewritten,
                        );
                        match text {
                            Some(text) => query_message(&text, out),
                            None => out.extend_from_slice(frame.bytes),
                        }
                        self.expect(Pending::Query(Statement::confirmed(
                            sql,
                            false,
                            d,
                            Some(reads),
                            confirm,
                        )));
                    }
                }
                // Like a Sync, a Query ends a block.
                self.state.next_block();
            }
            FrontendMessage::Parse(p) => {
                let name = p.name.unwrap_or_default();
                let type_oids = p.type_oids;
                let sql: Arc<str> = p.query.into();
                self.certain(Use::Sql);
                let analysis = self
                    .enforcer
                    .analyze(self.ctx, self.info, view, self.state, &sql)
                    .await
                    .and_then(|a| match a.statements.as_slice() {
                        [_] | [] => Ok(a),
                        _ => Err(Refusal::new(
                            "permission denied by pgwarden: a prepared statement holds one statement",
                        )),
                    })
                    .and_then(|a| {
                        let text = a.server_text(&sql)?;
                        Ok((a, text))
                    });
                match analysis {
                    Err(r) => {
                        self.state.close(b'S', &name);
                        self.refuse_parse(sql, &r, out);
                    }
                    Ok((a, text)) => {
                        // A DECLARE or PREPARE in it takes effect when it
                        // is executed.
                        let sensitive = a.withholds_text();
                        let server_sql: Option<Arc<str>> = text.map(Arc::from);
                        match &server_sql {
                            Some(text) => parse_message(&name, text, &type_oids, out),
                            None => out.extend_from_slice(frame.bytes),
                        }
                        let prepared = Prepared::analysed(
                            sql.clone(),
                            a.statements.first(),
                            sensitive,
                            view.clone(),
                            server_sql,
                        );
                        let (plan, reads) = (prepared.plan.clone(), prepared.reads.clone());
                        self.state.parse(&name, prepared);
                        let confirm = Arc::new(Confirm::default());
                        self.state.parse_tentative(&name, confirm.clone());
                        let d =
                            self.decision(view, vec![plan], Vec::new(), sensitive, false, false);
                        self.expect(Pending::Parse(Statement::confirmed(
                            sql,
                            true,
                            d,
                            Some(Arc::new([reads])),
                            confirm,
                        )));
                    }
                }
            }
            FrontendMessage::Bind(b) => {
                let name = &*b.statement;
                self.certain(Use::Statement(name));
                if self.state.statements.get(name).is_none() {
                    self.state.close(b'P', &b.portal);
                    let r = unknown_name("prepared statement", name);
                    self.refuse_parse(Arc::from(""), &r, out);
                    return;
                }
                if let Err((sql, r)) = self.refresh_statement(view, name).await {
                    // Refused under the policy now in force: the Bind
                    // fails, and the server skips to the next Sync.
                    self.state.close(b'S', name);
                    self.state.close(b'P', &b.portal);
                    self.refuse_parse(sql, &r, out);
                    return;
                }
                if let Err(r) = self.lookup_arrays(&b) {
                    self.state.close(b'P', &b.portal);
                    let sql = self.state.statements.get(name).map(|p| p.sql.clone());
                    self.refuse_parse(sql.unwrap_or_default(), &r, out);
                    return;
                }
                let plan = self.state.statements.get(name).and_then(|p| p.plan.clone());
                let formats = match &plan {
                    Some(p) => b.expand_result_formats(p.columns.len()),
                    None => Vec::new(),
                };
                let params = self.params(&b);
                let rewrite = plan.as_ref().is_some_and(|p| {
                    p.columns
                        .iter()
                        .zip(&formats)
                        .any(|(c, f)| c.rewrites() && *f != 0)
                });
                if rewrite {
                    // Ask the server for rewritten columns in text.
                    let p = plan.as_ref().expect("checked");
                    let sent: Vec<i16> = p
                        .columns
                        .iter()
                        .zip(&formats)
                        .map(|(c, f)| if c.rewrites() { 0 } else { *f })
                        .collect();
                    b.encode_with_result_formats(&sent, out);
                    self.state
                        .bind(&b.portal, name, formats, sent.into_iter(), params);
                } else {
                    out.extend_from_slice(frame.bytes);
                    self.state
                        .bind(&b.portal, name, formats, b.result_formats(), params);
                }
                let confirm = Arc::new(Confirm::default());
                self.state.bind_tentative(&b.portal, confirm.clone());
                self.expect(Pending::Bind(Some(confirm)));
            }
            FrontendMessage::Describe(d) => {
                let known = if d.kind == b'S' {
                    self.certain(Use::Statement(&d.name));
                    self.state.statements.get(&d.name).is_some()
                } else {
                    self.certain(Use::Portal(&d.name));
                    self.state.portal(&d.name).is_some()
                };
                if !known {
                    let what = if d.kind == b'S' {
                        "prepared statement"
                    } else {
                        "portal"
                    };
                    self.refuse_parse(Arc::from(""), &unknown_name(what, &d.name), out);
                    return;
                }
                if d.kind == b'S' {
                    if let Err((sql, r)) = self.refresh_statement(view, &d.name).await {
                        self.state.close(b'S', &d.name);
                        self.refuse_parse(sql, &r, out);
                        return;
                    }
                }
                let (plan, formats, sensitive, subject) = if d.kind == b'S' {
                    match self.state.statements.get(&d.name) {
                        Some(p) => (
                            p.plan.clone(),
                            Vec::new(),
                            p.sensitive,
                            Some(p.reads.subject.clone()),
                        ),
                        None => (None, Vec::new(), false, None),
                    }
                } else {
                    match self.state.portal(&d.name) {
                        Some(p) => (
                            p.statement.plan.clone(),
                            p.formats.clone(),
                            p.statement.sensitive,
                            Some(p.statement.reads.subject.clone()),
                        ),
                        None => (None, Vec::new(), false, None),
                    }
                };
                let dec = Some(Arc::new(Decision {
                    results: vec![plan],
                    formats,
                    sensitive,
                    refusal: false,
                    rewritten: false,
                    view: view.clone(),
                    subject,
                }));
                out.extend_from_slice(frame.bytes);
                self.expect(Pending::Describe(dec));
            }
            FrontendMessage::Execute(e) => {
                self.certain(Use::Portal(&e.portal));
                let Some(p) = self.state.portal(&e.portal) else {
                    let r = unknown_name("portal", &e.portal);
                    self.refuse_parse(Arc::from(""), &r, out);
                    return;
                };
                let (sql, plan, formats, sensitive, reads, params, rewritten, effect) = (
                    p.statement.sql.clone(),
                    p.statement.plan.clone(),
                    p.formats.clone(),
                    p.statement.sensitive,
                    p.reads.clone(),
                    p.params.clone(),
                    p.statement.server_sql.is_some(),
                    p.statement.effect.clone(),
                );
                if reads.iter().any(|r| !r.touched.is_empty()) {
                    if let Err(r) = self.admit() {
                        // In place of the Execute: a refusal the server
                        // raises, skipping to the next Sync.
                        self.refuse_parse(sql, &r, out);
                        return;
                    }
                }
                self.count(rewritten || plan.is_some(), true);
                let d = self.decision(view, vec![plan], formats, sensitive, false, rewritten);
                out.extend_from_slice(frame.bytes);
                let confirm = (effect != Effect::None).then(|| {
                    let c = Arc::new(Confirm::default());
                    self.state.apply(&effect);
                    self.state.query_tentative(vec![effect], c.clone());
                    c
                });
                self.expect(Pending::Execute(Statement::with_params(
                    sql, d, params, reads, confirm,
                )));
            }
            FrontendMessage::FunctionCall { function_oid } => {
                let r = Refusal::new(format!(
                    "permission denied by pgwarden: fast-path function calls (function {function_oid}) are refused for role {}",
                    view.role
                ));
                self.refuse_query("<function call>".into(), &r, out);
            }
            other => {
                self.inspect_full_access(other).await;
                out.extend_from_slice(frame.bytes);
            }
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

    /// Whether the role's hours and hourly window let a classified
    /// statement start.
    fn admit(&self) -> Result<(), Refusal> {
        let policy = self.ctx.policy.current();
        let role = policy.role_of(&self.info.user);
        self.ctx
            .gate
            .in_hours(role, self.info.login())
            .and_then(|()| self.ctx.limiter.admit(role, self.info))
            .map_err(Refusal::new)
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

    /// Refuse a Bind whose lookup arrays compare a classified column with
    /// more values than a lookup may.
    fn lookup_arrays(&self, b: &Bind<'_>) -> Result<(), Refusal> {
        let Some(p) = self.state.statements.get(&b.statement) else {
            return Ok(());
        };
        let max = crate::analysis::MAX_LOOKUP_VALUES;
        let mut total = p.lookup_values;
        for &i in &p.lookup_arrays {
            let Some(Some(value)) = b.params().nth(i - 1) else {
                continue;
            };
            let n = crate::frontend::extended::array_len(value, b.param_format(i - 1) == 1);
            total = total.saturating_add(n.unwrap_or(usize::MAX));
        }
        if total > max {
            return Err(Refusal::new(format!(
                "permission denied by pgwarden: the lookups of this statement compare classified \
                 columns with more than {max} values together (or with an array pgwarden cannot \
                 count); a statement may look up at most {max}"
            )));
        }
        Ok(())
    }

    /// The confirmation `msg` must wait for: an earlier block's change
    /// of a name it uses that the server has not answered yet.
    fn unanswered(&mut self, msg: &FrontendMessage<'_>) -> Option<Arc<Confirm>> {
        self.state.settle();
        let u = match msg {
            FrontendMessage::Query(_) | FrontendMessage::Parse(_) => Use::Sql,
            FrontendMessage::Bind(b) => Use::Statement(&b.statement),
            FrontendMessage::Describe(d) if d.kind == b'S' => Use::Statement(&d.name),
            FrontendMessage::Describe(d) => Use::Portal(&d.name),
            FrontendMessage::Execute(e) => Use::Portal(&e.portal),
            _ => return None,
        };
        self.state.unanswered(u)
    }

    /// Take the server's answers so far into account before `u` is used
    /// (the caller waited for those `u` depends on).
    fn certain(&mut self, u: Use<'_>) {
        self.state.settle();
        debug_assert!(self.state.unanswered(u).is_none() || matches!(u, Use::Sql));
    }

    /// Analyse prepared statement `name` again if the policy or schema
    /// changed since it was parsed; on refusal, its SQL and the refusal.
    async fn refresh_statement(
        &mut self,
        view: &Arc<RoleView>,
        name: &str,
    ) -> Result<(), (Arc<str>, Refusal)> {
        let Some(p) = self.state.statements.get(name) else {
            return Ok(());
        };
        // (A statement parsed while the login had full access has no view:
        // it is analysed now.)
        if p.view.as_ref().is_some_and(|v| Arc::ptr_eq(v, view)) {
            return Ok(());
        }
        let sql = p.sql.clone();
        let prepared_as = p.server_sql.clone();
        let analysis = self
            .enforcer
            .analyze(self.ctx, self.info, view, self.state, &sql)
            .await
            .map_err(|r| (sql.clone(), r))?;
        let server_sql: Option<Arc<str>> = analysis
            .server_text(&sql)
            .map_err(|r| (sql.clone(), r))?
            .map(Arc::from);
        if server_sql != prepared_as {
            // The server holds the statement as it was rewritten under the
            // old policy or schema: it must be prepared again.
            return Err((
                sql,
                Refusal::new(
                    "permission denied by pgwarden: this prepared statement was rewritten under \
                     a policy or schema that has changed since; prepare it again",
                ),
            ));
        }
        let refreshed = Prepared::analysed(
            sql.clone(),
            analysis.statements.first(),
            analysis.withholds_text(),
            view.clone(),
            server_sql,
        );
        self.state.parse(name, refreshed);
        Ok(())
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

/// A name whose meaning pgwarden does not hold for certain.
fn unknown_name(what: &str, name: &str) -> Refusal {
    Refusal::new(format!(
        "permission denied by pgwarden: {what} \"{name}\" was not created through pgwarden in \
         this session, or the server did not confirm it; using it is refused"
    ))
}

/// An Execute of a portal the session does not know: the server will
/// refuse it.
fn unknown_portal() -> (Arc<str>, Option<Params>, Arc<[Reads]>) {
    (Arc::from(""), None, Arc::from([Reads::default()]))
}
