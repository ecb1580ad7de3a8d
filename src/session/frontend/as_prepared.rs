//! A restricted simple-protocol SELECT run through a server-side prepared
//! statement of its shape (see [`crate::session::server_prepared`]).

use super::Inspector;
use crate::analysis::Analysis;
use crate::backend::tracker::{Pending, Statement};
use crate::rewrite::params::parameterize;
use crate::session::enforce::{
    close_statement_message, parse_message, run_prepared_messages, sync_message,
};
use crate::session::server_prepared::{Plan, key};
use bytes::BytesMut;
use std::sync::Arc;

/// How a restricted Query's statement was sent.
pub(super) enum Ran {
    /// Through a prepared statement: nothing left to send.
    Prepared,
    /// The caller sends the Query, then prepares its shape if this says so.
    Query(Option<PrepareLater>),
}

/// A Parse of a shape's prepared form, sent after the Query.
pub(super) struct PrepareLater {
    name: String,
    close: Vec<String>,
    key: String,
    text: String,
    type_oids: Vec<u32>,
}

impl Inspector<'_> {
    /// Run `st` (the only statement of simple Query `sql`, analysed as
    /// `a`) through the prepared statement of its shape if the server
    /// holds one.
    pub(super) fn run_prepared(
        &mut self,
        a: &Analysis,
        sql: &str,
        st: &Arc<Statement>,
        out: &mut BytesMut,
    ) -> Ran {
        let (Some(literals), Some(rewrite)) = (&a.literals, &a.rewrite) else {
            return Ran::Query(None);
        };
        // Inside the client's open extended batch the server may be
        // skipping to its Sync; a Sync of pgwarden's would end that.
        if self.state.extended_open {
            return Ran::Query(None);
        }
        let Some(p) = parameterize(sql, literals, rewrite) else {
            return Ran::Query(None);
        };
        let k = key(&p.text, &p.type_oids);
        let may_prepare = self.server_idle();
        match self.state.server.plan(&k, may_prepare) {
            Plan::Run(name) => {
                run_prepared_messages(&name, &p.values, out);
                if let Some(c) = &st.confirm {
                    self.state.server.ran(&k, c.clone());
                }
                self.expect(Pending::Hidden(st.decision.clone()));
                self.expect(Pending::Describe(st.decision.clone()));
                self.expect(Pending::Execute(st.clone()));
                self.expect(Pending::Sync);
                Ran::Prepared
            }
            Plan::QueryThenPrepare { name, close } => Ran::Query(Some(PrepareLater {
                name,
                close,
                key: k,
                text: p.text,
                type_oids: p.type_oids,
            })),
            Plan::Query => Ran::Query(None),
        }
    }

    /// Prepare a shape, out of the client's sight: the server's replies
    /// to this Close, Parse and Sync are not forwarded.
    pub(super) fn prepare(&mut self, l: PrepareLater, out: &mut BytesMut) {
        let Some(parsed) = self.state.server.parsed(&l.key) else {
            return;
        };
        for old in &l.close {
            // Its reply, even an error, is pgwarden's alone.
            close_statement_message(old, out);
            self.expect(Pending::Prepare(Arc::default()));
        }
        parse_message(&l.name, &l.text, &l.type_oids, out);
        self.expect(Pending::Prepare(parsed));
        sync_message(out);
        self.expect(Pending::HiddenSync);
    }
}
