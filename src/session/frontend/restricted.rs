//! The restricted side of the client-to-server direction: each statement
//! analysed and rewritten, refused in place when it may not run, and
//! names (statements, portals, cursors) trusted only as far as the server
//! confirmed them.

use super::Inspector;
use super::as_prepared::Ran;
use crate::analysis::ResultPlan;
use crate::analysis::{Effect, Refusal};
use crate::backend::tracker::{Confirm, Pending, Reads, Statement};
use crate::decision::{Decision, RoleView};
use crate::frame::Frame;
use crate::frontend::FrontendMessage;
use crate::session::enforce::{
    log_refusal, parse_message, query_message, refusal_extended, refusal_query,
};
use crate::session::state::{Prepared, Use};
use bytes::BytesMut;
use std::sync::Arc;

impl Inspector<'_> {
    pub(super) fn decision(
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

    pub(super) fn refusal_decision(&self) -> Option<Arc<Decision>> {
        let view = self.enforcer.current_view()?;
        self.decision(&view, Vec::new(), Vec::new(), true, true, false)
    }

    pub(super) fn refuse_query(&mut self, sql: Arc<str>, r: &Refusal, out: &mut BytesMut) {
        log_refusal(self.info, &sql, r);
        self.ctx.metrics.hot.statements_simple.inc();
        self.ctx.metrics.hot.queries_refuse.inc();
        refusal_query(&r.message, out);
        let d = self.refusal_decision();
        self.expect(Pending::Query(Statement::refused(
            sql, false, d, &r.message,
        )));
    }

    pub(super) fn refuse_parse(&mut self, sql: Arc<str>, r: &Refusal, out: &mut BytesMut) {
        log_refusal(self.info, &sql, r);
        self.ctx.metrics.hot.statements_extended.inc();
        self.ctx.metrics.hot.queries_refuse.inc();
        refusal_extended(&r.message, out);
        // The refusal replaces the server's unnamed statement and portal.
        self.state.close(b'S', "");
        self.state.close(b'P', "");
        let d = self.refusal_decision();
        self.expect(Pending::Hidden(None));
        self.expect(Pending::Hidden(None));
        self.expect(Pending::Execute(Statement::refused(
            sql, true, d, &r.message,
        )));
    }

    pub(super) async fn inspect_restricted(
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
                    self.query_lookups(&a, &sql)?;
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
                        let st = Statement::confirmed(sql.clone(), false, d, Some(reads), confirm);
                        let later = match self.run_prepared(&a, &sql, &st, out) {
                            Ran::Prepared => None,
                            Ran::Query(later) => Some(later),
                        };
                        if let Some(later) = later {
                            match text {
                                Some(text) => query_message(&text, out),
                                None => out.extend_from_slice(frame.bytes),
                            }
                            self.expect(Pending::Query(st));
                            if let Some(l) = later {
                                self.prepare(l, out);
                            }
                        }
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
                if let Err(r) = self.bind_lookups(&b) {
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
                    // A DECLAREd cursor is a portal too (psycopg describes
                    // its server-side cursors).
                    self.state.portal(&d.name).is_some()
                        || self.state.cursors.contains_key(&*d.name)
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
                    match (self.state.portal(&d.name), self.state.cursors.get(&*d.name)) {
                        (Some(p), _) => (
                            p.statement.plan.clone(),
                            p.formats.clone(),
                            p.statement.sensitive,
                            Some(p.statement.reads.subject.clone()),
                        ),
                        // Its rows come in text (a BINARY cursor over
                        // classified columns is refused); errors withheld
                        // as for the statement that declared it.
                        (None, Some(c)) => (c.plan.clone(), Vec::new(), true, None),
                        (None, None) => (None, Vec::new(), false, None),
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

    /// Whether the role's hours and hourly window let a classified
    /// statement start.
    pub(super) fn admit(&self) -> Result<(), Refusal> {
        let policy = self.ctx.policy.current();
        let role = policy.role_of(&self.info.user);
        self.ctx
            .gate
            .in_hours(role, self.info.login())
            .and_then(|()| self.ctx.limiter.admit(role, self.info))
            .map_err(Refusal::new)
    }

    /// The confirmation `msg` must wait for: an earlier block's change
    /// of a name it uses that the server has not answered yet.
    pub(super) fn unanswered(&mut self, msg: &FrontendMessage<'_>) -> Option<Arc<Confirm>> {
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
    pub(super) fn certain(&mut self, u: Use<'_>) {
        self.state.settle();
        debug_assert!(self.state.unanswered(u).is_none() || matches!(u, Use::Sql));
    }

    /// Analyse prepared statement `name` again if the policy or schema
    /// changed since it was parsed; on refusal, its SQL and the refusal.
    pub(super) async fn refresh_statement(
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
}

/// A name whose meaning pgwarden does not hold for certain.
fn unknown_name(what: &str, name: &str) -> Refusal {
    Refusal::new(format!(
        "permission denied by pgwarden: {what} \"{name}\" was not created through pgwarden in \
         this session, or the server did not confirm it; using it is refused"
    ))
}
