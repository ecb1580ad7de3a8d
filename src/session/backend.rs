//! Server-to-client direction of a session.
//!
//! Reads what the server sent, cuts it into frames, matches each to the
//! request it answers (see [`crate::backend::tracker`]), updates session
//! state from ReadyForQuery and ParameterStatus, rewrites the results of
//! restricted sessions as their decision says ([`crate::masking::rows`],
//! [`crate::masking::notices`]), and forwards the bytes in one write per
//! read. Results stream: nothing is held beyond one read.

use super::{Error, SessionInfo, trail};
use crate::analysis::CopyFormat;
use crate::backend::tracker::{Completed, PendingQueue, Tracker};
use crate::backend::{self as msg};
use crate::context::ProxyContext;
use crate::events::Event;
use crate::frame::{Frame, take_frame};
use crate::masking::notices::{self, Redaction};
use crate::masking::rows::{self, Mismatch};
use crate::net::{ClientWrite, UpstreamRead};
use bytes::BytesMut;
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
) -> Result<(), Error> {
    let max = ctx.config.max_server_message_bytes;
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
    };
    loop {
        // Every response in `buf` answers a request whose expectation was
        // queued before the request was written: one drain per read suffices.
        pending.drain_into(direction.tracker);
        while let Some(frame) =
            take_frame(&mut buf, true, max).map_err(|e| Error::UpstreamProtocol(e.to_string()))?
        {
            let rewritten = rewrite(
                direction.tracker,
                &mut direction.copy_header,
                ctx,
                &frame,
                &mut out,
            )?;
            let hidden = direction.observe(&frame)?;
            if !rewritten && !hidden {
                out.extend_from_slice(&frame.bytes);
            }
            if frame.tag != b'D' {
                release_replies(direction.tracker, &mut out);
            }
        }
        if !out.is_empty() {
            direction.await_audit().await?;
            ctx.metrics.hot.bytes_to_client.inc_by(out.len() as u64);
            wr.write_all(&out)
                .await
                .map_err(|e| Error::ClientIo(e.to_string()))?;
            out.clear();
            if out.capacity() > SHRINK_ABOVE {
                out = BytesMut::with_capacity(READ_CHUNK);
            }
        }
        if buf.is_empty() && buf.capacity() > SHRINK_ABOVE {
            buf = BytesMut::with_capacity(READ_CHUNK);
        }
        if buf.capacity() - buf.len() < READ_CHUNK / 4 {
            buf.reserve(READ_CHUNK);
        }
        tokio::select! {
            n = rd.read_buf(&mut buf) => {
                if n.map_err(|e| Error::UpstreamRead(e.to_string()))? == 0 {
                    return Err(Error::UpstreamClosed);
                }
            }
            _ = pending.reply_pushed() => {
                pending.drain_into(direction.tracker);
                release_replies(direction.tracker, &mut out);
            }
        }
    }
}

/// Append pgwarden's own replies whose turn has come.
fn release_replies(tracker: &mut Tracker, out: &mut BytesMut) {
    for r in tracker.take_replies() {
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
}

impl Direction<'_> {
    /// Hold the bytes about to go to the client until the audit records
    /// of the statements they answer are durable (`sync`), announcing a
    /// statement whose rows stream before it completes.
    async fn await_audit(&mut self) -> Result<(), Error> {
        let Some(trail) = &self.ctx.audit else {
            return Ok(());
        };
        if let Some((st, index)) = self.tracker.announce() {
            self.restricted |= st.restricted_results();
            self.need = trail.submit(trail::started(self.ctx, self.info, &st, index));
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
    frame: &Frame,
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
    /// Account for one server message; `true` when it answers a request of
    /// pgwarden's own and is not forwarded.
    fn observe(&mut self, frame: &Frame) -> Result<bool, Error> {
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
        let seen = self.tracker.observe(
            frame.tag,
            frame.bytes.len(),
            sqlstate.as_deref(),
            tag.as_deref(),
        );
        if let Some(done) = seen.completed {
            self.completed(done);
        }
        Ok(seen.hidden)
    }

    fn completed(&mut self, done: Completed) {
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
        if done
            .tag
            .as_deref()
            .is_some_and(crate::catalog::is_schema_change)
        {
            self.ctx.catalog.invalidate(&self.info.database);
        }
        if let Some(trail) = &self.ctx.audit {
            self.restricted |= done.statement.restricted_results();
            self.need = trail.submit(trail::completed(self.ctx, self.info, &done));
        }
        if !self.ctx.events.wants_statements() {
            return;
        }
        self.ctx.events.record(&Event::StatementDone {
            session: self.info.id,
            user: self.info.user.clone(),
            sql: done.statement.sql.clone(),
            extended: done.statement.extended,
            tag: done.tag,
            sqlstate: done.sqlstate,
            rows: done.rows,
            bytes: done.bytes,
            duration: done.duration,
        });
    }
}
