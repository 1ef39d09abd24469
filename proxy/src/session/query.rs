//! COM_QUERY and the plain commands (COM_INIT_DB, COM_FIELD_LIST,
//! COM_STATISTICS): classify with the shared cache, count what the metrics
//! promise, and run.

use super::diagnostics::DiagnosticsRead;
use super::digest::DigestKey;
use super::execute::Work;
use super::guard::{Asked, Values};
use super::outgoing::Outgoing;
use super::{End, Session};
use crate::digests::Route;
use crate::relay::ResponseKind;
use bytes::Bytes;
use sluice_protocol::consts::com;
use sluice_router::Facts;
use std::sync::Arc;

impl Session {
    /// COM_QUERY, recorded in its query digest.
    pub(super) async fn query(&mut self, payload: Bytes) -> Result<(), End> {
        let started = self.digest_start();
        let ended = self.query_statement(payload).await;
        self.digest_end(started, &ended);
        ended
    }

    async fn query_statement(&mut self, payload: Bytes) -> Result<(), End> {
        let sql = match std::str::from_utf8(&payload[1..]) {
            Ok(s) => std::borrow::Cow::Borrowed(s),
            // Not UTF-8 (a latin1 client, say): classify a lossy copy; the
            // bytes sent to the server are the client's own. Literal values
            // cannot be replayed from it, so user variables pin.
            Err(_) => String::from_utf8_lossy(&payload[1..]),
        };
        let utf8 = matches!(sql, std::borrow::Cow::Borrowed(_));
        let sluice_router::Classified {
            facts,
            cache_hit,
            hash,
            lent,
        } = self.shared.classifier.classify(&sql, &mut self.scratch);
        let ended = self
            .classified_query(&payload, &sql, utf8, &facts, cache_hit, hash)
            .await;
        // Back to the session's memo for the next statement of its shape.
        self.scratch.give_back(lent, facts);
        ended
    }

    async fn classified_query(
        &mut self,
        payload: &Bytes,
        sql: &str,
        utf8: bool,
        facts: &Arc<Facts>,
        cache_hit: bool,
        hash: u64,
    ) -> Result<(), End> {
        self.metrics.classified(cache_hit, facts.unparsed());
        self.digest.key = DigestKey::Text(hash);
        let literals: Vec<&str> = if utf8 && facts.tracked_user_vars(self.scratch.literals.len()) {
            self.scratch.literals.iter().map(|r| &sql[r.clone()]).collect()
        } else {
            Vec::new()
        };
        // Literal spans of a non-UTF-8 text are not trusted: no replay.
        let literal_count = if utf8 {
            self.scratch.literals.len()
        } else {
            usize::MAX
        };
        let literals = if literal_count == literals.len() {
            literals
        } else {
            Vec::new()
        };
        if facts.kind() == sluice_router::Kind::Other {
            if let Some(kill) = sluice_router::parse_kill(sql) {
                return self.kill(kill).await;
            }
        }
        // A KILL inside a multi-statement or dynamic SQL would reach a
        // pooled connection with a backend id: refused.
        let may_hide_kill = facts.ast.statements > 1
            || !facts.ast.parsed
            || matches!(
                facts.kind(),
                sluice_router::Kind::Prepare | sluice_router::Kind::Execute | sluice_router::Kind::Other
            );
        if may_hide_kill && sluice_router::hides_kill(sql) {
            metrics::counter!("sluice_errors_total", "cause" => "kill_refused").increment(1);
            return self.reply(&crate::errors::kill_hidden()).await;
        }
        let label = facts.kind().label();
        let mut outgoing = Outgoing::Raw(payload.clone());
        // Not in DDL (a routine body keeps its text) nor in a
        // multi-statement (an earlier statement in it changes the values).
        let substitutable = facts.kind() != sluice_router::Kind::Ddl && facts.ast.statements <= 1;
        if facts.lexical.needs_previous && utf8 && substitutable {
            match self.diagnostics_read(sql) {
                Some(DiagnosticsRead::Local {
                    errors_only,
                    offset,
                    limit,
                }) => return self.show_diagnostics(errors_only, offset, limit, false).await,
                Some(DiagnosticsRead::Rewritten(text)) => {
                    outgoing = Outgoing::Raw(Bytes::from(sluice_pool::query_packet(&text)))
                }
                None => {}
            }
        }
        let plan = self.plan(Some(facts));
        // A lookup of a guarded table: perhaps answered without the database.
        let follow_up = if utf8 && matches!(outgoing, Outgoing::Raw(_)) && self.guard_may_apply(facts) {
            let spans = std::mem::take(&mut self.scratch.literals);
            let values = Values::Text {
                sql,
                literals: &spans,
            };
            let asked = self.ask_guard(facts, values, &plan).await;
            self.scratch.literals = spans;
            match asked? {
                Asked::Answered => {
                    self.digest.route = Route::Guard;
                    return Ok(());
                }
                Asked::Pass(follow_up) => Some(follow_up),
                Asked::NotGuarded => None,
            }
        } else {
            None
        };
        let done = self
            .run(
                Work {
                    facts: Some(facts),
                    literals,
                    response: ResponseKind::Results,
                    outgoing,
                    label,
                    capture_columns: follow_up.as_ref().is_some_and(|f| f.wants_columns()),
                },
                plan,
            )
            .await?;
        if let Some(follow_up) = follow_up {
            self.guard_follow_up(follow_up, &done);
        }
        Ok(())
    }

    pub(super) async fn plain_command(&mut self, payload: Bytes) -> Result<(), End> {
        let response = match payload[0] {
            com::FIELD_LIST => ResponseKind::FieldList,
            com::STATISTICS => ResponseKind::Single,
            _ => ResponseKind::Simple,
        };
        let label = com::name(payload[0]);
        let plan = self.plan(None);
        self.run(
            Work {
                facts: None,
                literals: Vec::new(),
                response,
                outgoing: Outgoing::Raw(payload),
                label,
                capture_columns: false,
            },
            plan,
        )
        .await
        .map(|_| ())
    }
}
