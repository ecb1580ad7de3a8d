//! Server-to-client direction of a session.
//!
//! Reads what the server sent, cuts it into frames, matches each to the
//! request it answers (see [`crate::backend::tracker`]), updates session
//! state from ReadyForQuery and ParameterStatus, rewrites the results of
//! restricted sessions as their decision says ([`crate::masking::rows`],
//! [`crate::masking::notices`]), and forwards the bytes in one write per
//! read. Results stream: nothing is held beyond one read.
//!
//! When nothing due can be rewritten, limited, hidden or held for an audit
//! record ([`crate::backend::tracker::Tracker::passes_through`], no trail),
//! the bytes read go out as they are first and are accounted for after.

use super::{Error, SessionInfo, trail};
use crate::alerts::Alert;
use crate::analysis::CopyFormat;
use crate::backend::tracker::{Completed, PendingQueue, SubjectColumn, Tracker};
use crate::backend::{self as msg};
use crate::context::ProxyContext;
use crate::error::{PgError, Severity};
use crate::events::Event;
use crate::frame::{Frame, FrameError, consume, peek_frame};
use crate::limits::{Cap, Limiter};
use crate::masking::notices::{self, Redaction};
use crate::masking::rows::{self, Mismatch};
use crate::net::{ClientWrite, UpstreamRead};
use crate::policy::Policy;
use bytes::BytesMut;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::warn;

const READ_CHUNK: usize = 64 * 1024;
/// Buffers that grew past this for one large message are given back.
const SHRINK_ABOVE: usize = 4 * 1024 * 1024;

pub async fn run(
    ctx: &ProxyContext,
    info: &SessionInfo,
    rd: &mut UpstreamRead,
    wr: &mut ClientWrite,
    mut buf: BytesMut,
    pending: &PendingQueue,
    server_key: Option<(i32, bytes::Bytes)>,
) -> Result<(), Error> {
    let mut tracker = Tracker::default();
    let mut out = BytesMut::with_capacity(READ_CHUNK);
    let mut direction = Direction {
        ctx,
        info,
        tracker: &mut tracker,
        copy_header: false,
        need: 0,
        waited: 0,
        restricted: false,
        result: None,
        cut: None,
        cancel_due: false,
        described: None,
        columns: trail::Columns::default(),
    };
    loop {
        // Every response in `buf` answers a request whose expectation was
        // queued before the request was written: one drain per read suffices.
        pending.drain_into(direction.tracker);
        // Messages are handled in place; the buffer moves on after them.
        if out.is_empty() && direction.passes_through() {
            direction.forward_then_observe(&mut buf, wr).await?;
        } else {
            direction
                .inspect_then_forward(&mut buf, &mut out, wr, &server_key)
                .await?;
        }
        if buf.is_empty() && buf.capacity() > SHRINK_ABOVE {
            buf = BytesMut::with_capacity(READ_CHUNK);
        }
        if buf.capacity() - buf.len() < READ_CHUNK / 4 {
            buf.reserve(READ_CHUNK);
        }
        // Reading first: replies are also released as server messages are
        // handled, so a busy server never holds one back.
        tokio::select! {
            biased;
            n = rd.read_buf(&mut buf) => {
                if n.map_err(|e| Error::UpstreamRead(e.to_string()))? == 0 {
                    return Err(Error::UpstreamClosed);
                }
            }
            _ = std::future::poll_fn(|cx| pending.poll_reply_pushed(cx)) => {
                pending.drain_into(direction.tracker);
                release_replies(direction.tracker, &mut out);
            }
        }
    }
}

fn framing(e: FrameError) -> Error {
    Error::UpstreamProtocol(e.to_string())
}

/// Append pgwarden's own replies whose turn has come.
fn release_replies(tracker: &mut Tracker, out: &mut BytesMut) {
    while let Some(r) = tracker.next_reply() {
        out.extend_from_slice(&r);
    }
}

struct Direction<'a> {
    ctx: &'a ProxyContext,
    info: &'a SessionInfo,
    tracker: &'a mut Tracker,
    /// The next CopyData is a CSV header line.
    copy_header: bool,
    /// Audit ticket that must be durable before the next write, and the
    /// last one that was.
    need: u64,
    waited: u64,
    /// A statement of a restricted role is among those waited for.
    restricted: bool,
    /// Limit bookkeeping of the result streaming now.
    result: Option<ResultLimit>,
    /// A result was cut at its limit: what follows up to ReadyForQuery is
    /// dropped.
    cut: Option<Cut>,
    /// A cancel must be sent for the cut result.
    cancel_due: bool,
    /// The subject key column the RowDescription of the simple-Query
    /// result now streaming showed (`Some(None)`: none).
    described: Option<Option<SubjectColumn>>,
    /// Audit form of the columns the last recorded statement touched.
    columns: trail::Columns,
}

/// The cap of one result and its rows so far.
struct ResultLimit {
    /// The statement (by address) and result index it counts.
    id: (usize, usize),
    cap: Option<Cap>,
    rows: u64,
    alerted: bool,
    /// Its rows count distinct subjects (under this policy), by this
    /// column when known.
    subjects: Option<Arc<Policy>>,
    subject_field: Option<SubjectColumn>,
    /// The server sends that column in binary.
    subject_binary: bool,
}

/// A result stopped at its limit.
struct Cut {
    rows: u64,
    rule: &'static str,
    message: String,
    /// Its completion was recorded.
    recorded: bool,
}

impl Direction<'_> {
    /// Whether the responses now due go to the client exactly as the
    /// server sends them: nothing waits on an audit record, nothing is
    /// rewritten, limited or hidden, no result is being cut.
    fn passes_through(&self) -> bool {
        self.ctx.audit.is_none() && self.cut.is_none() && self.tracker.passes_through()
    }

    /// Forward the complete messages in `buf` as they are, then account
    /// for them while the client reads them.
    async fn forward_then_observe(
        &mut self,
        buf: &mut BytesMut,
        wr: &mut ClientWrite,
    ) -> Result<(), Error> {
        let max = self.ctx.config.max_server_message_bytes;
        let mut used = 0;
        let mut schema_change = false;
        while let Some(frame) = peek_frame(&buf[used..], max).map_err(framing)? {
            used += frame.bytes.len();
            schema_change |= frame.tag == b'C' && command_tag_changes_schema(frame.body());
        }
        if schema_change {
            // Before the client can send its next statement.
            self.ctx.catalog.invalidate(&self.info.database);
        }
        if used > 0 {
            self.ctx.metrics.hot.bytes_to_client.inc_by(used as u64);
            wr.write_all(&buf[..used])
                .await
                .map_err(|e| Error::ClientIo(e.to_string()))?;
            let mut at = 0;
            while let Some(frame) = peek_frame(&buf[at..used], max).map_err(framing)? {
                at += frame.bytes.len();
                self.observe(&frame)?;
            }
        }
        consume(buf, used, max).map_err(framing)
    }

    /// Handle the complete messages in `buf` one by one (rewritten,
    /// counted against limits, hidden or passed on into `out`), then
    /// forward `out` once the audit records it depends on are written.
    async fn inspect_then_forward(
        &mut self,
        buf: &mut BytesMut,
        out: &mut BytesMut,
        wr: &mut ClientWrite,
        server_key: &Option<(i32, bytes::Bytes)>,
    ) -> Result<(), Error> {
        let max = self.ctx.config.max_server_message_bytes;
        let mut used = 0;
        while let Some(frame) = peek_frame(&buf[used..], max).map_err(framing)? {
            used += frame.bytes.len();
            if self.cut.is_some() {
                // The rest of a result stopped at its limit: accounted
                // for, never shown, up to the ReadyForQuery.
                self.observe(&frame)?;
                if frame.tag == b'Z' {
                    self.cut = None;
                    out.extend_from_slice(frame.bytes);
                }
                release_replies(self.tracker, out);
                continue;
            }
            if matches!(frame.tag, b'D' | b'd') && !self.copy_header {
                if let Some(message) = self.count_row(&frame) {
                    out.extend_from_slice(
                        &PgError::new(Severity::Error, "42501", message).encode(),
                    );
                    self.observe(&frame)?;
                    continue;
                }
            }
            if self.info.restricted()
                && matches!(frame.tag, b'T' | b'D' | b'H' | b'd')
                && !self.tracker.expects_result()
            {
                warn!(tag = %(frame.tag as char), "stopping session: a result matches no request");
                return Err(Error::Violation(
                    "pgwarden lost track of which request a result answers".into(),
                ));
            }
            let rewritten = rewrite(self.tracker, &mut self.copy_header, self.ctx, &frame, out)?;
            let hidden = self.observe(&frame)?;
            if !rewritten && !hidden {
                out.extend_from_slice(frame.bytes);
            }
            if frame.tag != b'D' {
                release_replies(self.tracker, out);
            }
        }
        consume(buf, used, max).map_err(framing)?;
        // Stop the server-side query of a result cut at its limit, unless
        // the server has already finished (then a cancel could only hit
        // a later statement).
        if std::mem::take(&mut self.cancel_due) && self.cut.is_some() {
            if let Some((pid, secret)) = &server_key {
                if let Err(e) = crate::upstream::cancel(self.ctx, *pid, secret).await {
                    warn!(error = %e, "cannot cancel a query stopped at its limit");
                }
            }
        }
        if !out.is_empty() {
            self.await_audit().await?;
            self.ctx
                .metrics
                .hot
                .bytes_to_client
                .inc_by(out.len() as u64);
            wr.write_all(out)
                .await
                .map_err(|e| Error::ClientIo(e.to_string()))?;
            out.clear();
            if out.capacity() > SHRINK_ABOVE {
                *out = BytesMut::with_capacity(READ_CHUNK);
            }
        }
        Ok(())
    }

    /// Hold the bytes about to go to the client until the audit records
    /// of the statements they answer are durable (`sync`), announcing a
    /// statement whose rows stream before it completes.
    async fn await_audit(&mut self) -> Result<(), Error> {
        let Some(trail) = &self.ctx.audit else {
            return Ok(());
        };
        if let Some((st, index)) = self.tracker.announce() {
            self.restricted |= st.restricted_results();
            self.need = trail.submit(trail::started(
                self.ctx,
                self.info,
                &mut self.columns,
                &st,
                index,
            ));
        }
        if self.need <= self.waited {
            return Ok(());
        }
        match trail.wait(self.need).await {
            Ok(()) => {}
            Err(_) if self.restricted => return Err(Error::AuditUnavailable),
            // Full access is not stopped: its records wait in memory.
            Err(_) => {}
        }
        self.waited = self.need;
        self.restricted = false;
        Ok(())
    }
}

/// Apply the decision of a restricted session's request to one server
/// message, appending the rewritten message to `out`. Returns whether it
/// did; `false` means the message goes out as it came.
fn rewrite(
    tracker: &Tracker,
    copy_header: &mut bool,
    ctx: &ProxyContext,
    frame: &Frame<'_>,
    out: &mut BytesMut,
) -> Result<bool, Error> {
    let Some((d, index)) = tracker.current() else {
        return Ok(false);
    };
    let violation = |m: Mismatch| {
        warn!(role = %d.view.role, reason = %m, "stopping session: result does not match its decision");
        Error::Violation(m.0)
    };
    let plan = d.plan(index);
    match frame.tag {
        b'T' => {
            rows::row_description(
                frame,
                plan,
                &d.formats,
                |i, f| match d.view.restricted_column(f.table_oid, f.attnum) {
                    Some((table, col)) if !plan.is_some_and(|p| p.columns[i].rewrites()) => Err(Mismatch(
                        format!("result column {} comes from {table}.{col}, which analysis did not plan to rewrite", i + 1),
                    )),
                    _ => Ok(()),
                },
                out,
            )
            .map_err(violation)?;
            Ok(true)
        }
        b'D' => match plan {
            Some(p) if p.copy.is_none() => {
                if rows::data_row(frame, p, &ctx.hash_key, out).map_err(violation)? > 0 {
                    ctx.metrics.hot.rows_masked.inc();
                }
                Ok(true)
            }
            _ => Ok(false),
        },
        b'H' => {
            if let Some(p) = plan {
                if frame.body().first() != Some(&0) {
                    return Err(violation(Mismatch(
                        "binary COPY of classified columns".into(),
                    )));
                }
                *copy_header = matches!(p.copy, Some(CopyFormat::Csv { header: true }));
            }
            Ok(false)
        }
        b'd' => match plan.and_then(|p| Some((p, p.copy?))) {
            Some(_) if *copy_header => {
                *copy_header = false;
                Ok(false)
            }
            Some((p, format)) => {
                rows::copy_row(frame, p, format, &ctx.hash_key, out).map_err(violation)?;
                ctx.metrics.hot.rows_masked.inc();
                Ok(true)
            }
            None => Ok(false),
        },
        b'E' | b'N' if d.refusal => {
            notices::redact(frame, Redaction::Refusal, out);
            Ok(true)
        }
        b'E' | b'N' if d.sensitive => {
            notices::redact(frame, Redaction::Values, out);
            Ok(true)
        }
        _ => Ok(false),
    }
}

impl Direction<'_> {
    /// Count one row (DataRow or CopyData) of the current result against
    /// its cap and its role's subject budget; when it is one past a
    /// blocking limit, start cutting and return the message the client
    /// gets.
    fn count_row(&mut self, frame: &Frame<'_>) -> Option<String> {
        let (st, index) = self.tracker.current_statement()?;
        let id = (Arc::as_ptr(st) as usize, index);
        if self.result.as_ref().is_none_or(|r| r.id != id) {
            let reads = st.reads(index);
            // Limits count only rows carrying classified data.
            let (cap, subjects) = if st.classified(index) {
                let policy = self.ctx.policy.current();
                let role = policy.role_of(&self.info.user);
                let already = reads
                    .and_then(|r| r.fetched.as_ref())
                    .map_or(0, |f| f.load(Ordering::Relaxed));
                let cap = self.ctx.limiter.cap(role, &self.info.user, already);
                let subjects = Limiter::counts_subjects(role).then(|| policy.clone());
                (cap, subjects)
            } else {
                (None, None)
            };
            // The subject column is trusted only for a statement reading
            // one table reference, and only as described for this very
            // statement: the RowDescription just before a simple Query's
            // rows, or a Describe of the prepared statement executed.
            let subject_field = match reads {
                Some(r) if r.single_relation => {
                    if st.extended {
                        r.subject.get().copied().flatten()
                    } else {
                        self.described.flatten()
                    }
                }
                _ => None,
            };
            let subject_binary = match (reads, subject_field) {
                (Some(r), Some(f)) => r.binary(f.index),
                _ => false,
            };
            self.result = Some(ResultLimit {
                id,
                cap,
                rows: 0,
                alerted: false,
                subjects,
                subject_field,
                subject_binary,
            });
        }
        let r = self.result.as_mut()?;
        r.rows += 1;
        if let Some(message) = self.over_cap() {
            return Some(message);
        }
        self.new_subject(frame)
    }

    /// The rows cap of the current result, one row further.
    fn over_cap(&mut self) -> Option<String> {
        let r = self.result.as_mut()?;
        let cap = r.cap?;
        if r.rows <= cap.rows || (r.alerted && !cap.block) {
            return None;
        }
        r.alerted = true;
        let (st, _) = self.tracker.current_statement()?;
        let sql = st.sql.to_string();
        let policy = self.ctx.policy.current();
        let role = policy.role_of(&self.info.user);
        let limit = match cap.rule {
            "rows_per_query" => role.limits.rows_per_query,
            _ => role.limits.classified_rows_per_hour,
        }
        .unwrap_or(cap.rows);
        self.ctx.limiter.alerts.raise(Alert::of(
            cap.rule,
            self.info.login(),
            role,
            serde_json::json!({ "limit": limit, "rows_sent": cap.rows, "sql": sql }),
            cap.block,
        ));
        if !cap.block {
            return None;
        }
        let message = format!(
            "permission denied by pgwarden: result stopped after {} rows by the {} limit of role {} ({limit} rows carrying classified data{})",
            cap.rows,
            cap.rule,
            role.name,
            if cap.rule == "rows_per_query" {
                " per statement, cursor or portal"
            } else {
                " an hour"
            }
        );
        Some(self.start_cut(cap.rows, cap.rule, message))
    }

    /// Count the subject of the current row; the message when its role's
    /// budget refuses a new subject.
    fn new_subject(&mut self, frame: &Frame<'_>) -> Option<String> {
        let r = self.result.as_ref()?;
        let policy = r.subjects.as_ref()?;
        // Without a known subject column (COPY, or a result the key is
        // not in), every row counts as a subject of its own.
        let subject = match (frame.tag, r.subject_field) {
            (b'D', Some(f)) => rows::field(frame, f.index)
                .and_then(|v| rows::canonical_text(v, f.type_oid, r.subject_binary))
                .map(|v| self.ctx.hash_key.subject_id(&v)),
            _ => None,
        }
        .unwrap_or_else(rand::random);
        let delivered = r.rows - 1;
        let role = policy.role_of(&self.info.user);
        let message = self
            .ctx
            .limiter
            .see_subject(role, self.info, subject)
            .err()?;
        Some(self.start_cut(delivered, "distinct_subjects", message))
    }

    fn start_cut(&mut self, rows: u64, rule: &'static str, message: String) -> String {
        self.cut = Some(Cut {
            rows,
            rule,
            message: message.clone(),
            recorded: false,
        });
        self.cancel_due = true;
        message
    }

    /// Account for one server message; `true` when it answers a request of
    /// pgwarden's own and is not forwarded.
    fn observe(&mut self, frame: &Frame<'_>) -> Result<bool, Error> {
        let mut sqlstate = None;
        let mut tag = None;
        match frame.tag {
            b'D' => {}
            b'E' => {
                let fields =
                    msg::error_fields(frame).map_err(|e| Error::UpstreamProtocol(e.to_string()))?;
                sqlstate = msg::error_field(&fields, b'C').map(str::to_string);
            }
            b'C' => tag = msg::command_tag(frame),
            b'T' => self.described(frame),
            b'Z' => {
                if let Some(s) = msg::ready_status(frame) {
                    self.info.set_tx_status(s);
                }
            }
            b'S' => {
                if let Some((k, v)) = msg::parameter_status(frame) {
                    self.info.set_parameter(k, v);
                }
            }
            _ => {}
        }
        let seen = self
            .tracker
            .observe(frame.tag, frame.bytes.len(), sqlstate.as_deref(), tag);
        if let Some(done) = seen.completed {
            self.completed(done);
            // The next result counts from zero (even if its statement
            // reuses this one's address).
            self.result = None;
            self.described = None;
        }
        if seen.ready {
            self.result = None;
            self.described = None;
        }
        Ok(seen.hidden)
    }

    /// Note which column of a result holds its rows' subject key, for
    /// roles with a subject budget.
    fn described(&mut self, frame: &Frame<'_>) {
        let Some((d, _)) = self.tracker.current() else {
            return;
        };
        if d.view.policy.subjects.is_empty() {
            return;
        }
        let found = rows::find_field(frame, |oid, attnum| d.view.is_subject_column(oid, attnum))
            .map(|(index, type_oid)| SubjectColumn { index, type_oid });
        if let Some(slot) = &d.subject {
            let _ = slot.set(found);
        } else if self
            .tracker
            .current_statement()
            .is_none_or(|(st, _)| !st.extended)
        {
            // A simple Query's own RowDescription, or the Describe
            // pgwarden sends before running one through a prepared
            // statement.
            self.described = Some(found);
        }
    }

    fn completed(&mut self, mut done: Completed<'_>) {
        let mut cut_by = None;
        if let Some(cut) = self.cut.as_mut().filter(|c| !c.recorded) {
            // The result that was cut: what the client got.
            cut.recorded = true;
            done.rows = cut.rows;
            done.tag = None;
            done.sqlstate = Some("42501".into());
            cut_by = Some((cut.rule, cut.message.clone()));
        }
        if let Some(f) = done
            .statement
            .reads(done.index)
            .and_then(|r| r.fetched.as_ref())
        {
            f.fetch_add(done.rows, Ordering::Relaxed);
        }
        if done.statement.classified(done.index) && done.rows > 0 {
            let policy = self.ctx.policy.current();
            self.ctx
                .limiter
                .record(policy.role_of(&self.info.user), self.info, done.rows);
        }
        let m = &self.ctx.metrics;
        let duration = if done.statement.extended {
            &m.hot.duration_extended
        } else {
            &m.hot.duration_simple
        };
        duration.observe(done.duration.as_secs_f64());
        m.rows.inc_by(done.rows);
        if done.sqlstate.is_some() {
            m.statement_errors.inc();
        }
        self.info.statements.fetch_add(1, Ordering::Relaxed);
        self.info.rows.fetch_add(done.rows, Ordering::Relaxed);
        // DDL through the proxy: the schema cache of this database is stale.
        if done.tag.is_some_and(crate::catalog::is_schema_change) {
            self.ctx.catalog.invalidate(&self.info.database);
        }
        if let Some(trail) = &self.ctx.audit {
            self.restricted |= done.statement.restricted_results();
            let mut r = trail::completed(self.ctx, self.info, &mut self.columns, &done);
            if let Some((rule, message)) = cut_by {
                r.rule = Some(rule.to_string());
                r.message = Some(message);
            }
            self.need = trail.submit(r);
        }
        if !self.ctx.events.wants_statements() {
            return;
        }
        self.ctx.events.record(&Event::StatementDone {
            session: self.info.id,
            user: self.info.user.clone(),
            sql: done.statement.sql.clone(),
            extended: done.statement.extended,
            tag: done.tag.map(str::to_string),
            sqlstate: done.sqlstate,
            rows: done.rows,
            bytes: done.bytes,
            duration: done.duration,
        });
    }
}

/// A CommandComplete body whose tag is DDL (the schema cache is stale).
fn command_tag_changes_schema(body: &[u8]) -> bool {
    let tag = body.strip_suffix(&[0]).unwrap_or(body);
    std::str::from_utf8(tag).is_ok_and(crate::catalog::is_schema_change)
}
