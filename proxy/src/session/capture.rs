//! Reading back, on the connection that ran a statement, the session state
//! the server changed without reporting it in full, so it follows the
//! client to its next connection instead of pinning it: the connection
//! charset after `SET NAMES` (which reports no collation), user variables
//! set by `SELECT ... INTO @v`, `SET @a := expr` or a procedure, session
//! variables set as `@@name` (which the server does not report), and the
//! GTID and insert id of a write that answered with rows (`INSERT ...
//! RETURNING`).

use super::Session;
use super::execute::Work;
use crate::relay::Outcome;
use sluice_config::ReadYourWrites;
use sluice_pool::BackendError;

/// What the read-back captured.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Captured {
    /// The client's user variables now match the server's.
    pub user_vars: bool,
}

impl Session {
    /// Runs the read-backs `outcome` calls for on the held connection; a
    /// GTID read back goes into `outcome` as if the answer had carried it.
    pub(super) async fn capture(
        &mut self,
        outcome: &mut Outcome,
        work: &Work<'_>,
    ) -> Result<Captured, BackendError> {
        let mut captured = Captured::default();
        self.capture_diagnostics(outcome, work).await?;
        let Some(held) = self.binding.held.as_mut() else {
            return Ok(captured);
        };
        // Each rule's cheapest conditions first (the statement's flags, the
        // mode): a plain SELECT and answers that carried a GTID stop there.
        let ryw = self.config.routing.read_your_writes;
        let kind = work.facts.map(|f| f.kind());
        // LAST_INSERT_ID(expr) sets the value; an answer with rows (a
        // SELECT, unlike an UPDATE's OK) does not carry it.
        let set_explicitly = work.facts.is_some_and(|f| f.lexical.sets_last_insert_id)
            && outcome.result_set
            && !outcome.ended_with_error
            && work.ran();
        let insert_id = set_explicitly
            || matches!(
                kind,
                Some(sluice_router::Kind::Insert | sluice_router::Kind::Replace)
            ) && sluice_router::plan::read_back_insert_id(
                kind,
                work.ran(),
                outcome.result_set,
                outcome.ended_with_error,
            );
        let gtid = outcome.result_set
            && outcome.last_gtid.is_none()
            && matches!(ryw, ReadYourWrites::Gtid | ReadYourWrites::Global)
            && sluice_router::plan::read_back_gtid(
                held.role == sluice_config::Role::Primary,
                kind,
                work.ran(),
                ryw,
                outcome.result_set,
                outcome.last_gtid.is_some(),
                outcome
                    .status
                    .is_none_or(|st| st & sluice_protocol::consts::status::IN_TRANS != 0),
            );
        if gtid || insert_id {
            let sql = match (gtid, insert_id) {
                (true, true) => "SELECT @@last_gtid, LAST_INSERT_ID()",
                (true, false) => "SELECT @@last_gtid",
                _ => "SELECT NULL, LAST_INSERT_ID()",
            };
            let row = Box::pin(held.conn.query_rows(sql))
                .await?
                .into_iter()
                .next()
                .unwrap_or_default();
            if gtid {
                outcome.last_gtid = row.first().cloned().flatten();
                metrics::counter!("sluice_state_read_backs_total", "what" => "last_gtid").increment(1);
            }
            // A value the connection did not have before: the insert
            // generated it (one it had was another statement's, perhaps
            // another client's).
            let id = row.get(1).cloned().flatten().and_then(|v| v.parse::<u64>().ok());
            let generated = |id: &u64| *id != 0 && *id != held.conn.state.last_insert_id;
            if let Some(id) = id.filter(|id| set_explicitly || generated(id)) {
                outcome.last_insert_id = id;
                held.conn.state.last_insert_id = id;
                self.desired.last_insert_id = id;
            }
            if insert_id {
                metrics::counter!("sluice_state_read_backs_total", "what" => "last_insert_id").increment(1);
            }
        }
        // `SET @@name = ...` changed the session without a tracker report.
        let unscoped = work.facts.map_or(&[][..], |f| &f.lexical.unscoped_sets[..]);
        if !unscoped.is_empty() && !outcome.ended_with_error {
            let read = Box::pin(held.conn.read_back_variables(unscoped)).await?;
            self.desired.record_vars(&read);
            metrics::counter!("sluice_state_read_backs_total", "what" => "system_variables").increment(1);
        }
        if outcome.connection_charset_unsure {
            let profile = self.shared.profile.load();
            let names = |id| super::collation_names(id, &profile);
            let (charset, collation, results) =
                Box::pin(held.conn.read_back_connection_charset(names)).await?;
            self.desired.set_connection_charset(charset, collation, results);
        }
        let writes_user_vars = work
            .facts
            .is_some_and(|f| f.writes_user_vars(work.literals.len()));
        if writes_user_vars {
            match Box::pin(held.conn.read_back_user_variables()).await? {
                Some(vars) => {
                    self.desired.user_vars = vars;
                    captured.user_vars = true;
                    metrics::counter!("sluice_state_read_backs_total", "what" => "user_variables")
                        .increment(1);
                }
                None => {
                    metrics::counter!("sluice_state_read_backs_total", "what" => "user_variables_unavailable")
                        .increment(1);
                }
            }
        }
        Ok(captured)
    }
}
