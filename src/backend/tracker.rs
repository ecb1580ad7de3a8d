//! Matching server responses to the client requests that caused them.
//!
//! The frontend side pushes one [`Pending`] entry for every message that the
//! server will answer, in the order it forwards them. The backend side feeds
//! every server message to [`Tracker::observe`], which keeps the queue in
//! step with the protocol (including the skip-to-Sync after an error in the
//! extended protocol) and reports each statement as it completes, with its
//! row count. Entries pgwarden answers itself ([`Pending::Reply`]) are
//! released in their turn, so replies never overtake earlier results.

use crate::analysis::{Analyzed, Source};
use crate::decision::Decision;
use atomic_waker::AtomicWaker;
use bytes::Bytes;
use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// The hand-over from the frontend direction to the backend direction.
///
/// A plain locked queue rather than a channel: the backend direction drains
/// it whenever it handles a server message, so ordinary requests wake
/// nobody. Only a reply of pgwarden's own, which may be due while the server
/// is silent, wakes the backend direction.
#[derive(Debug, Default)]
pub struct PendingQueue {
    queue: Mutex<VecDeque<Pending>>,
    /// A reply was pushed since the backend direction last looked.
    reply_due: AtomicBool,
    reply_waker: AtomicWaker,
}

impl PendingQueue {
    /// Queue everything in `batch` (emptying it) under one lock.
    pub fn push_all(&self, batch: &mut VecDeque<Pending>) {
        if batch.is_empty() {
            return;
        }
        let wake = batch.iter().any(|p| matches!(p, Pending::Reply(_)));
        if let Ok(mut q) = self.queue.lock() {
            append(&mut q, batch);
        }
        if wake {
            self.reply_due.store(true, Ordering::Release);
            self.reply_waker.wake();
        }
    }

    /// Move everything queued into `tracker`.
    pub fn drain_into(&self, tracker: &mut Tracker) {
        if let Ok(mut q) = self.queue.lock() {
            if tracker.copy_in {
                for p in q.drain(..) {
                    tracker.push(p);
                }
                return;
            }
            tracker.inspected |= q.iter().any(Pending::inspected);
            append(&mut tracker.queue, &mut q);
            tracker.pop_copy_ends();
        }
    }

    /// Ready once a reply was pushed since the last time it was ready.
    pub fn poll_reply_pushed(&self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.reply_due.load(Ordering::Acquire) {
            self.reply_waker.register(cx.waker());
            // A reply pushed before the waker was registered.
            if !self.reply_due.load(Ordering::Acquire) {
                return Poll::Pending;
            }
        }
        self.reply_due.store(false, Ordering::Release);
        Poll::Ready(())
    }
}

/// Move everything from `from` to the back of `to`. When `to` is empty the
/// two queues trade places, so the entries are not moved one by one and
/// the buffers are used again.
fn append(to: &mut VecDeque<Pending>, from: &mut VecDeque<Pending>) {
    if to.is_empty() {
        std::mem::swap(to, from);
    } else {
        to.append(from);
    }
}

/// How the server answered a request that gives a name its meaning (a
/// Parse, a Bind, a simple Query's PREPARE or DECLARE). The backend
/// direction sets it from the server's replies; the frontend direction
/// trusts a name only once the server confirmed it ([`Confirm::outcome`]).
#[derive(Debug, Default)]
pub struct Confirm {
    /// 0: no answer yet; 1: done; 2: failed or skipped after an error.
    state: AtomicU8,
    /// A simple Query: how many of its statements completed before an
    /// error (all of them when none failed).
    succeeded: AtomicUsize,
    notify: tokio::sync::Notify,
}

/// The server's answer to a request with a [`Confirm`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// It did what it asked (for a Query: every statement completed).
    pub done: bool,
    /// A Query: the statements that completed before an error.
    pub succeeded: usize,
}

impl Confirm {
    pub(crate) fn resolve(&self, done: bool, succeeded: usize) {
        self.succeeded.store(succeeded, Ordering::Relaxed);
        self.state
            .store(if done { 1 } else { 2 }, Ordering::Release);
        self.notify.notify_waiters();
    }

    /// The answer, once the server gave it.
    pub fn outcome(&self) -> Option<Outcome> {
        match self.state.load(Ordering::Acquire) {
            0 => None,
            s => Some(Outcome {
                done: s == 1,
                succeeded: self.succeeded.load(Ordering::Relaxed),
            }),
        }
    }

    /// Wait for the answer.
    pub async fn answered(&self) {
        loop {
            let notified = self.notify.notified();
            if self.outcome().is_some() {
                return;
            }
            notified.await;
        }
    }
}

fn resolve(c: &Option<Arc<Confirm>>, done: bool, succeeded: usize) {
    if let Some(c) = c {
        c.resolve(done, succeeded);
    }
}

/// A request forwarded to the server, awaiting its response.
#[derive(Debug)]
pub enum Pending {
    /// A simple Query (one or more statements); ends at ReadyForQuery.
    Query(Arc<Statement>),
    /// Parse of a statement; if it fails and no Execute follows, the
    /// failure is reported against this statement.
    Parse(Arc<Statement>),
    /// Bind, with the confirmation of the portal it creates (restricted
    /// sessions).
    Bind(Option<Arc<Confirm>>),
    /// Describe of a statement or portal, with the decision that rewrites
    /// its RowDescription.
    Describe(Option<Arc<Decision>>),
    Close,
    /// A Parse or Bind pgwarden sent on its own behalf (to raise a
    /// refusal, or to run a simple Query's statement prepared): its
    /// success reply is not forwarded; an error is, under the decision
    /// of the statement it belongs to, if any.
    Hidden(Option<Arc<Decision>>),
    /// A Parse (or Close) pgwarden sent to prepare a statement for later:
    /// neither its success nor its error reaches the client.
    Prepare(Arc<Confirm>),
    /// A Sync pgwarden sent after a [`Pending::Prepare`]; its
    /// ReadyForQuery is not forwarded.
    HiddenSync,
    /// The client's CopyDone or CopyFail: no answer of its own. Once the
    /// server is in COPY-IN mode it ignores every Sync up to this mark.
    CopyEnd,
    /// Execute of a portal; ends at CommandComplete, EmptyQueryResponse,
    /// PortalSuspended or an error.
    Execute(Arc<Statement>),
    /// Sync; ends at ReadyForQuery.
    Sync,
    /// Fast-path function call; ends at ReadyForQuery.
    FunctionCall,
    /// Bytes pgwarden sends to the client itself when this entry's turn comes.
    Reply(Bytes),
}

impl Pending {
    /// The server answers this request with a ReadyForQuery.
    pub fn ends_cycle(&self) -> bool {
        matches!(
            self,
            Pending::Query(_) | Pending::Sync | Pending::HiddenSync | Pending::FunctionCall
        )
    }

    /// Whether the responses to this request may have to be rewritten,
    /// counted against a limit, replaced or hidden before the client sees
    /// them.
    fn inspected(&self) -> bool {
        match self {
            Pending::Query(s) | Pending::Parse(s) | Pending::Execute(s) => s.inspected(),
            Pending::Describe(d) => d.is_some(),
            Pending::Hidden(_) | Pending::Reply(_) | Pending::Prepare(_) | Pending::HiddenSync => {
                true
            }
            Pending::CopyEnd => false,
            Pending::Bind(c) => c.is_some(),
            Pending::Close | Pending::Sync | Pending::FunctionCall => false,
        }
    }
}

/// Bind parameters as the audit trail records them (`None` for NULL).
pub type Params = Arc<[Option<String>]>;

/// What the frontend knew about a statement when it forwarded it.
#[derive(Debug)]
pub struct Statement {
    pub sql: Arc<str>,
    /// Simple or extended protocol.
    pub extended: bool,
    pub started: Instant,
    /// For restricted sessions: how its results are rewritten.
    pub decision: Option<Arc<Decision>>,
    /// Bind parameters, as the audit trail records them.
    pub params: Option<Params>,
    /// Why pgwarden refused it, when it did.
    pub refusal: Option<Arc<str>>,
    /// What each statement reads, as far as the analysis could tell
    /// (restricted roles, and full-access roles with an audit trail).
    pub reads: Option<Arc<[Reads]>>,
    /// A Parse or Query whose success gives names a meaning (restricted
    /// sessions): answered from the server's replies.
    pub confirm: Option<Arc<Confirm>>,
}

/// What one statement of a request reads.
#[derive(Debug, Clone, Default)]
pub struct Reads {
    /// Classified columns touched, with the role's action.
    pub touched: Arc<BTreeSet<Source>>,
    /// It reads one table reference: a subject key column in its result
    /// names each row's subject.
    pub single_relation: bool,
    /// Rows already returned by the cursor or portal it reads from.
    pub fetched: Option<Arc<AtomicU64>>,
    /// The result column holding each row's subject key, once a
    /// RowDescription of this statement showed it (shared by the
    /// Describe and the Executes of one prepared statement).
    pub subject: SubjectSlot,
    /// An Execute: the result format codes its Bind asked the server for.
    pub formats: Option<Arc<[i16]>>,
}

/// Which result column names each row's data subject: learned from the
/// server's RowDescription, `None` inside when no column does.
pub type SubjectSlot = Arc<std::sync::OnceLock<Option<SubjectColumn>>>;

/// The result column holding a subject key, and its type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubjectColumn {
    pub index: usize,
    pub type_oid: u32,
}

impl Reads {
    /// Whether the server sends column `index` of an Execute's result in
    /// binary (text for simple queries).
    pub fn binary(&self, index: usize) -> bool {
        match self.formats.as_deref() {
            None | Some([]) => false,
            Some([one]) => *one == 1,
            Some(many) => many.get(index) == Some(&1),
        }
    }
}

impl From<&Analyzed> for Reads {
    fn from(a: &Analyzed) -> Reads {
        Reads {
            touched: a.touched.clone(),
            single_relation: a.single_relation,
            fetched: a.fetched.clone(),
            subject: SubjectSlot::default(),
            formats: None,
        }
    }
}

impl Statement {
    fn base(sql: Arc<str>, extended: bool) -> Statement {
        Statement {
            sql,
            extended,
            started: Instant::now(),
            decision: None,
            params: None,
            refusal: None,
            reads: None,
            confirm: None,
        }
    }

    pub fn new(sql: Arc<str>, extended: bool) -> Arc<Statement> {
        Arc::new(Self::base(sql, extended))
    }

    /// A statement forwarded under `decision` (none for full access).
    pub fn decided(
        sql: Arc<str>,
        extended: bool,
        decision: Option<Arc<Decision>>,
        reads: Option<Arc<[Reads]>>,
    ) -> Arc<Statement> {
        Arc::new(Statement {
            decision,
            reads,
            ..Self::base(sql, extended)
        })
    }

    /// A Parse or Query under `decision` whose outcome `confirm` tells.
    pub fn confirmed(
        sql: Arc<str>,
        extended: bool,
        decision: Option<Arc<Decision>>,
        reads: Option<Arc<[Reads]>>,
        confirm: Arc<Confirm>,
    ) -> Arc<Statement> {
        Arc::new(Statement {
            decision,
            reads,
            confirm: Some(confirm),
            ..Self::base(sql, extended)
        })
    }

    /// An Execute of a bound portal; `confirm` when its success gives a
    /// name a meaning (a DECLARE or PREPARE run through the protocol).
    pub fn with_params(
        sql: Arc<str>,
        decision: Option<Arc<Decision>>,
        params: Option<Params>,
        reads: Arc<[Reads]>,
        confirm: Option<Arc<Confirm>>,
    ) -> Arc<Statement> {
        Arc::new(Statement {
            decision,
            params,
            reads: Some(reads),
            confirm,
            ..Self::base(sql, true)
        })
    }

    /// A statement pgwarden refused (the server raises the refusal).
    pub fn refused(
        sql: Arc<str>,
        extended: bool,
        decision: Option<Arc<Decision>>,
        message: &str,
    ) -> Arc<Statement> {
        Arc::new(Statement {
            decision,
            refusal: Some(message.into()),
            ..Self::base(sql, extended)
        })
    }

    /// Whether its results may have to be rewritten (a restricted role's),
    /// replaced (a refusal) or counted against a limit (classified).
    fn inspected(&self) -> bool {
        self.decision.is_some()
            || self.refusal.is_some()
            || self
                .reads
                .as_deref()
                .is_some_and(|r| r.iter().any(|r| !r.touched.is_empty()))
    }

    /// Results of a restricted role's statement that pgwarden let run:
    /// never shown without their audit record.
    pub fn restricted_results(&self) -> bool {
        self.decision.is_some() && self.refusal.is_none()
    }

    /// The classified columns its `index`-th statement touches, as far
    /// as pgwarden knows.
    pub fn touched(&self, index: usize) -> Option<&Arc<BTreeSet<Source>>> {
        Some(&self.reads(index)?.touched)
    }

    /// What its `index`-th statement reads, as far as pgwarden knows.
    pub fn reads(&self, index: usize) -> Option<&Reads> {
        self.reads.as_ref()?.get(index)
    }

    /// Whether its `index`-th statement touches classified columns.
    pub fn classified(&self, index: usize) -> bool {
        self.refusal.is_none() && self.touched(index).is_some_and(|t| !t.is_empty())
    }

    /// `refuse`, `rewrite` or `forward`, for its `index`-th result.
    pub fn outcome(&self, index: usize) -> &'static str {
        match (&self.refusal, &self.decision) {
            (Some(_), _) => "refuse",
            (None, Some(d)) => d.outcome(index),
            (None, None) => "forward",
        }
    }
}

/// A statement (or one result of a multi-statement Query) that finished.
#[derive(Debug)]
pub struct Completed<'a> {
    pub statement: Arc<Statement>,
    /// Which statement of a simple Query (from 0).
    pub index: usize,
    /// The CommandComplete tag, when it succeeded (borrowed from the
    /// server's message).
    pub tag: Option<&'a str>,
    /// The SQLSTATE, when it failed.
    pub sqlstate: Option<String>,
    pub rows: u64,
    pub bytes: u64,
    /// PortalSuspended: more rows remain in the portal.
    pub suspended: bool,
    pub duration: Duration,
}

/// Progress of the result currently streaming.
#[derive(Debug, Default)]
struct Progress {
    rows: u64,
    bytes: u64,
    /// Its start was announced to the audit trail.
    announced: bool,
}

/// The queue of requests awaiting responses.
#[derive(Debug, Default)]
pub struct Tracker {
    queue: VecDeque<Pending>,
    /// A request queued since the queue was last empty is
    /// [`Pending::inspected`].
    inspected: bool,
    progress: Progress,
    /// Results already completed of the simple Query at the head.
    query_results: usize,
    /// Of those, the ones that succeeded.
    query_succeeded: usize,
    /// An error in the extended protocol: the server ignores everything up
    /// to the next Sync, simple Queries and function calls included, even
    /// those sent after the error reached the client.
    skipping: bool,
    /// In COPY-IN mode with the client's CopyDone or CopyFail not yet
    /// queued: the Syncs queued before it go unanswered.
    copy_in: bool,
}

/// What `observe` learned from one server message.
#[derive(Debug, Default)]
pub struct Observed<'a> {
    pub completed: Option<Completed<'a>>,
    /// A ReadyForQuery ended a request cycle.
    pub ready: bool,
    /// The message answers a request of pgwarden's own: not forwarded.
    pub hidden: bool,
}

impl Tracker {
    pub fn push(&mut self, p: Pending) {
        if self.copy_in {
            match p {
                Pending::Sync => return,
                Pending::CopyEnd => {
                    self.copy_in = false;
                    return;
                }
                _ => {}
            }
        }
        self.inspected |= p.inspected();
        self.queue.push_back(p);
        self.pop_copy_ends();
    }

    /// Number of requests still waiting for the server.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Whether the responses now due go to the client exactly as the
    /// server sends them, whatever they are: no request queued since the
    /// queue was last empty has its responses inspected first.
    pub fn passes_through(&self) -> bool {
        !self.inspected
    }

    /// The decision the next result message (RowDescription, DataRow,
    /// CopyData, ErrorResponse) falls under, with the index of the result
    /// within its request.
    pub fn current(&self) -> Option<(&Decision, usize)> {
        match self.queue.front()? {
            Pending::Query(s) => Some((s.decision.as_deref()?, self.query_results)),
            Pending::Execute(s) | Pending::Parse(s) => Some((s.decision.as_deref()?, 0)),
            Pending::Describe(d) | Pending::Hidden(d) => Some((d.as_deref()?, 0)),
            _ => None,
        }
    }

    /// Whether the request at the head is one the server answers with a
    /// result (RowDescription, rows, COPY data): a result arriving for
    /// any other means pgwarden lost track of the conversation.
    pub fn expects_result(&self) -> bool {
        matches!(
            self.queue.front(),
            Some(Pending::Query(_) | Pending::Execute(_) | Pending::Describe(_))
        )
    }

    /// The statement whose results come next, and the index of the result
    /// within its request.
    pub fn current_statement(&self) -> Option<(&Arc<Statement>, usize)> {
        match self.queue.front()? {
            Pending::Query(s) => Some((s, self.query_results)),
            Pending::Execute(s) => Some((s, 0)),
            _ => None,
        }
    }

    /// The statement whose rows are streaming, the first time this is
    /// asked while it has sent rows but not completed.
    pub fn announce(&mut self) -> Option<(Arc<Statement>, usize)> {
        if self.progress.announced || self.progress.bytes == 0 {
            return None;
        }
        let (s, index) = match self.queue.front()? {
            Pending::Query(s) => (s.clone(), self.query_results),
            Pending::Execute(s) => (s.clone(), 0),
            _ => return None,
        };
        self.progress.announced = true;
        Some((s, index))
    }

    /// The next reply whose turn has come (replies at the head of the
    /// queue).
    pub fn next_reply(&mut self) -> Option<Bytes> {
        if !matches!(self.queue.front(), Some(Pending::Reply(_))) {
            return None;
        }
        match self.queue.pop_front() {
            Some(Pending::Reply(b)) => Some(b),
            _ => None,
        }
    }

    /// Account for one server message of type `tag` and `len` bytes.
    pub fn observe<'a>(
        &mut self,
        tag: u8,
        len: usize,
        sqlstate: Option<&str>,
        command_tag: Option<&'a str>,
    ) -> Observed<'a> {
        let mut seen = Observed::default();
        self.pop_copy_ends();
        if tag == b'E' {
            // An error ends COPY-IN mode: later Syncs are answered.
            self.copy_in = false;
        }
        match tag {
            b'G' => self.copy_in(),
            b'D' | b'd' => {
                if tag == b'D' {
                    self.progress.rows += 1;
                }
                self.progress.bytes += len as u64;
            }
            b'C' | b'I' => {
                if matches!(self.queue.front(), Some(Pending::Query(_))) {
                    self.query_succeeded += 1;
                }
                seen.completed = self.finish_result(command_tag, None, false)
            }
            b's' => seen.completed = self.finish_result(None, None, true),
            b'1' | b'2' | b'3' | b'n' => {
                if matches!(self.queue.front(), Some(Pending::Hidden(_))) {
                    self.queue.pop_front();
                    seen.hidden = true;
                } else if let Some(Pending::Prepare(c)) = self.queue.front() {
                    c.resolve(true, 0);
                    self.queue.pop_front();
                    seen.hidden = true;
                } else if matches!(
                    self.queue.front(),
                    Some(
                        Pending::Parse(_)
                            | Pending::Bind(_)
                            | Pending::Close
                            | Pending::Describe(_)
                    )
                ) {
                    match self.queue.pop_front() {
                        Some(Pending::Parse(s)) => resolve(&s.confirm, true, 0),
                        Some(Pending::Bind(c)) => resolve(&c, true, 0),
                        _ => {}
                    }
                }
            }
            b'T' => {
                self.pop_if(|p| matches!(p, Pending::Describe(_)));
            }
            b'E' if matches!(self.queue.front(), Some(Pending::Prepare(_))) => {
                if let Some(p) = self.queue.pop_front() {
                    failed(p);
                }
                self.skip_to_sync();
                self.skipping = true;
                seen.hidden = true;
            }
            b'E' => seen.completed = self.on_error(sqlstate.unwrap_or("XX000")),
            b'Z' => {
                seen.ready = true;
                let skipping = std::mem::take(&mut self.skipping);
                while let Some(p) = self.queue.pop_front() {
                    match p {
                        // Ignored by the server: this answers a Sync.
                        Pending::Query(_) | Pending::FunctionCall if skipping => failed(p),
                        Pending::Query(s) => {
                            let all =
                                s.confirm.is_some() && self.query_succeeded == self.query_results;
                            resolve(&s.confirm, all, self.query_succeeded);
                            break;
                        }
                        Pending::Sync | Pending::FunctionCall => break,
                        Pending::HiddenSync => {
                            seen.hidden = true;
                            break;
                        }
                        other => failed(other),
                    }
                }
                self.progress = Progress::default();
                self.query_results = 0;
                self.query_succeeded = 0;
                if self.queue.is_empty() {
                    self.inspected = false;
                }
            }
            _ => {}
        }
        // A CopyEnd mark never stays at the head, where the next message
        // would be matched against it.
        self.pop_copy_ends();
        seen
    }

    /// CopyEnd marks at the head: nothing answers them.
    fn pop_copy_ends(&mut self) {
        while matches!(self.queue.front(), Some(Pending::CopyEnd)) {
            self.queue.pop_front();
        }
    }

    /// CopyInResponse: the server now ignores Syncs up to the client's
    /// CopyDone or CopyFail. Drop those queued (a driver may send one
    /// right after the COPY's Execute), up to the first CopyEnd mark; if
    /// the mark has not come yet, those still to come are dropped as they
    /// are queued.
    fn copy_in(&mut self) {
        let mut i = 1;
        while i < self.queue.len() {
            match self.queue[i] {
                Pending::Sync => {
                    self.queue.remove(i);
                }
                Pending::CopyEnd => {
                    self.queue.remove(i);
                    return;
                }
                _ => i += 1,
            }
        }
        self.copy_in = true;
    }

    fn pop_if(&mut self, pred: impl Fn(&Pending) -> bool) {
        if self.queue.front().is_some_and(pred) {
            self.queue.pop_front();
        }
    }

    /// A result ended (CommandComplete and friends).
    fn finish_result<'a>(
        &mut self,
        tag: Option<&'a str>,
        sqlstate: Option<String>,
        suspended: bool,
    ) -> Option<Completed<'a>> {
        let progress = std::mem::take(&mut self.progress);
        let index = self.query_results;
        let statement = match self.queue.front() {
            // A Query stays queued until its ReadyForQuery; each of its
            // statements completes here.
            Some(Pending::Query(s)) => {
                self.query_results += 1;
                s.clone()
            }
            Some(Pending::Execute(_)) => match self.queue.pop_front() {
                Some(Pending::Execute(s)) => {
                    resolve(&s.confirm, sqlstate.is_none(), 0);
                    s
                }
                _ => return None,
            },
            _ => return None,
        };
        Some(Completed {
            index: if statement.extended { 0 } else { index },
            duration: statement.started.elapsed(),
            statement,
            tag,
            sqlstate,
            rows: progress.rows,
            bytes: progress.bytes,
            suspended,
        })
    }

    /// An ErrorResponse: in the extended protocol the server now skips
    /// everything up to the next Sync.
    fn on_error(&mut self, sqlstate: &str) -> Option<Completed<'static>> {
        match self.queue.front() {
            // An error in a simple Query ends it at its ReadyForQuery;
            // nothing is skipped.
            Some(Pending::Query(_)) => self.finish_result(None, Some(sqlstate.to_string()), false),
            Some(Pending::Execute(_)) => {
                let done = self.finish_result(None, Some(sqlstate.to_string()), false);
                self.skip_to_sync();
                self.skipping = true;
                done
            }
            Some(
                Pending::Parse(_)
                | Pending::Bind(_)
                | Pending::Describe(_)
                | Pending::Close
                | Pending::Hidden(_),
            ) => {
                // The statement failed before it ran (syntax, planning,
                // parameters): report it against the Execute it prevented,
                // or the Parse when nothing was to run.
                let head = self.queue.pop_front();
                match &head {
                    Some(Pending::Parse(s)) => resolve(&s.confirm, false, 0),
                    Some(Pending::Bind(c)) => resolve(c, false, 0),
                    _ => {}
                }
                let prevented = self.skip_to_sync();
                self.skipping = true;
                let statement = prevented.or(match head {
                    Some(Pending::Parse(s)) => Some(s),
                    _ => None,
                })?;
                self.progress = Progress::default();
                Some(Completed {
                    index: 0,
                    duration: statement.started.elapsed(),
                    statement,
                    tag: None,
                    sqlstate: Some(sqlstate.to_string()),
                    rows: 0,
                    bytes: 0,
                    suspended: false,
                })
            }
            _ => None,
        }
    }

    /// Drop the requests the server will now ignore, up to a Sync or a
    /// reply of our own: extended-protocol messages and simple Queries
    /// alike (the server skips every message but Sync after an error in
    /// the extended protocol). Returns the first Execute dropped.
    fn skip_to_sync(&mut self) -> Option<Arc<Statement>> {
        let mut first_execute = None;
        while let Some(p) = self.queue.front() {
            match p {
                Pending::Parse(_)
                | Pending::Bind(_)
                | Pending::Describe(_)
                | Pending::Close
                | Pending::Hidden(_)
                | Pending::Prepare(_)
                | Pending::Query(_)
                | Pending::CopyEnd
                | Pending::Execute(_) => match self.queue.pop_front() {
                    Some(Pending::Execute(s)) => {
                        resolve(&s.confirm, false, 0);
                        first_execute.get_or_insert(s);
                    }
                    Some(other) => failed(other),
                    None => {}
                },
                _ => break,
            }
        }
        first_execute
    }
}

/// A request the server skipped or failed: what it would have named
/// means nothing.
fn failed(p: Pending) {
    match p {
        Pending::Parse(s) | Pending::Query(s) | Pending::Execute(s) => {
            resolve(&s.confirm, false, 0)
        }
        Pending::Bind(c) => resolve(&c, false, 0),
        Pending::Prepare(c) => c.resolve(false, 0),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stmt(sql: &str) -> Arc<Statement> {
        Statement::new(sql.into(), true)
    }

    #[test]
    fn extended_cycle_counts_rows() {
        let mut t = Tracker::default();
        for p in [
            Pending::Parse(stmt("select")),
            Pending::Bind(None),
            Pending::Describe(None),
            Pending::Execute(stmt("select")),
            Pending::Sync,
        ] {
            t.push(p);
        }
        t.observe(b'1', 5, None, None);
        t.observe(b'2', 5, None, None);
        t.observe(b'T', 30, None, None);
        t.observe(b'D', 10, None, None);
        t.observe(b'D', 10, None, None);
        let c = t
            .observe(b'C', 13, None, Some("SELECT 2"))
            .completed
            .unwrap();
        assert_eq!(c.rows, 2);
        assert_eq!(c.tag, Some("SELECT 2"));
        assert!(t.observe(b'Z', 6, None, None).ready);
        assert!(t.is_empty());
    }

    #[test]
    fn a_query_inside_a_failed_extended_batch_is_skipped_with_it() {
        let mut t = Tracker::default();
        for p in [
            Pending::Parse(stmt("select 1/0")),
            Pending::Bind(None),
            Pending::Execute(stmt("select 1/0")),
            Pending::Query(Statement::new("select 42".into(), false)),
            Pending::Sync,
            Pending::Query(Statement::new("select phone".into(), false)),
        ] {
            t.push(p);
        }
        t.observe(b'1', 5, None, None);
        t.observe(b'2', 5, None, None);
        let c = t.observe(b'E', 50, Some("22012"), None).completed.unwrap();
        assert_eq!(&*c.statement.sql, "select 1/0");
        // The server ignored `select 42`; its ReadyForQuery answers the Sync.
        assert!(t.observe(b'Z', 6, None, None).ready);
        let (st, _) = t.current_statement().unwrap();
        assert_eq!(&*st.sql, "select phone");
        t.observe(b'T', 30, None, None);
        t.observe(b'D', 10, None, None);
        let c = t
            .observe(b'C', 13, None, Some("SELECT 1"))
            .completed
            .unwrap();
        assert_eq!((&*c.statement.sql, c.rows), ("select phone", 1));
    }

    #[test]
    fn a_query_sent_after_the_error_is_skipped_too() {
        let mut t = Tracker::default();
        for p in [
            Pending::Parse(stmt("select 1/0")),
            Pending::Bind(None),
            Pending::Execute(stmt("select 1/0")),
        ] {
            t.push(p);
        }
        t.observe(b'1', 5, None, None);
        t.observe(b'2', 5, None, None);
        assert!(t.observe(b'E', 50, Some("22012"), None).completed.is_some());
        // The client read the error, then sent a Query and a Sync.
        t.push(Pending::Query(Statement::new("select 42".into(), false)));
        t.push(Pending::Sync);
        t.push(Pending::Query(Statement::new("select phone".into(), false)));
        assert!(t.observe(b'Z', 6, None, None).ready);
        let (st, _) = t.current_statement().unwrap();
        assert_eq!(&*st.sql, "select phone");
        // Out of the skip, a Query's ReadyForQuery is its own again.
        t.observe(b'T', 30, None, None);
        t.observe(b'C', 13, None, Some("SELECT 0"));
        assert!(t.observe(b'Z', 6, None, None).ready);
        assert!(t.is_empty());
    }

    #[test]
    fn syncs_sent_in_copy_in_mode_go_unanswered() {
        let copy = || Statement::new("copy t from stdin".into(), true);
        // A driver's Execute and Sync, then data, CopyDone and Sync.
        let mut t = Tracker::default();
        for p in [
            Pending::Parse(copy()),
            Pending::Bind(None),
            Pending::Execute(copy()),
            Pending::Sync,
        ] {
            t.push(p);
        }
        t.observe(b'1', 5, None, None);
        t.observe(b'2', 5, None, None);
        t.observe(b'G', 7, None, None);
        t.push(Pending::Sync); // a stray one, still in COPY-IN mode
        t.push(Pending::CopyEnd);
        t.push(Pending::Sync);
        t.push(Pending::Query(Statement::new("select phone".into(), false)));
        assert!(
            t.observe(b'C', 11, None, Some("COPY 0"))
                .completed
                .is_some()
        );
        assert!(t.observe(b'Z', 6, None, None).ready);
        let (st, _) = t.current_statement().unwrap();
        assert_eq!(&*st.sql, "select phone");
        // Sent all at once: the Sync after CopyDone is answered.
        let mut t = Tracker::default();
        for p in [
            Pending::Query(Statement::new("copy t from stdin".into(), false)),
            Pending::Sync,
            Pending::CopyEnd,
            Pending::Sync,
            Pending::Query(Statement::new("select phone".into(), false)),
        ] {
            t.push(p);
        }
        t.observe(b'G', 7, None, None);
        t.observe(b'C', 11, None, Some("COPY 0"));
        assert!(t.observe(b'Z', 6, None, None).ready); // the Query's
        assert!(t.observe(b'Z', 6, None, None).ready); // the Sync's
        let (st, _) = t.current_statement().unwrap();
        assert_eq!(&*st.sql, "select phone");
        // A COPY that fails before COPY-IN mode: its marks are skipped.
        let mut t = Tracker::default();
        for p in [
            Pending::Query(Statement::new("copy t from stdin".into(), false)),
            Pending::CopyEnd,
            Pending::Query(Statement::new("select phone".into(), false)),
        ] {
            t.push(p);
        }
        t.observe(b'E', 40, Some("42501"), None);
        assert!(t.observe(b'Z', 6, None, None).ready);
        let (st, _) = t.current_statement().unwrap();
        assert_eq!(&*st.sql, "select phone");
    }

    #[test]
    fn error_skips_to_sync() {
        let mut t = Tracker::default();
        for p in [
            Pending::Parse(stmt("x")),
            Pending::Bind(None),
            Pending::Execute(stmt("x")),
            Pending::Sync,
            Pending::Parse(stmt("y")),
        ] {
            t.push(p);
        }
        // The Parse fails: reported against the Execute it prevented.
        let c = t.observe(b'E', 50, Some("42601"), None).completed.unwrap();
        assert_eq!(c.sqlstate.as_deref(), Some("42601"));
        assert_eq!(&*c.statement.sql, "x");
        assert_eq!(t.len(), 2);
        t.observe(b'Z', 6, None, None);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn failed_prepare_without_execute_is_reported() {
        let mut t = Tracker::default();
        for p in [
            Pending::Parse(stmt("selec 1")),
            Pending::Describe(None),
            Pending::Sync,
        ] {
            t.push(p);
        }
        let c = t.observe(b'E', 50, Some("42601"), None).completed.unwrap();
        assert_eq!(&*c.statement.sql, "selec 1");
        t.observe(b'Z', 6, None, None);
        assert!(t.is_empty());
    }

    #[test]
    fn multi_statement_query_completes_each_result() {
        let mut t = Tracker::default();
        t.push(Pending::Query(Statement::new(
            "select 1; select 2".into(),
            false,
        )));
        t.observe(b'T', 30, None, None);
        t.observe(b'D', 10, None, None);
        assert!(
            t.observe(b'C', 13, None, Some("SELECT 1"))
                .completed
                .is_some()
        );
        t.observe(b'T', 30, None, None);
        t.observe(b'D', 10, None, None);
        t.observe(b'D', 10, None, None);
        let c = t
            .observe(b'C', 13, None, Some("SELECT 2"))
            .completed
            .unwrap();
        assert_eq!(c.rows, 2);
        assert_eq!(t.len(), 1);
        t.observe(b'Z', 6, None, None);
        assert!(t.is_empty());
    }

    #[test]
    fn replies_wait_for_their_turn() {
        let mut t = Tracker::default();
        t.push(Pending::Query(Statement::new("select 1".into(), false)));
        t.push(Pending::Reply(Bytes::from_static(b"x")));
        assert!(t.next_reply().is_none());
        t.observe(b'Z', 6, None, None);
        assert!(t.next_reply().is_some());
        assert!(t.next_reply().is_none());
    }
}
