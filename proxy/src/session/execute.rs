//! Running one command: ask the plan (`sluice_router::plan`) where it goes,
//! check out or keep a connection (`checkout`), restore the client's
//! session on it and send the command (`outgoing`), relay the response
//! (stopping it with KILL QUERY after `routing.query_timeout_ms`), capture
//! what must follow the client, and apply what the plan says the client
//! keeps. Failures are reported to the plan, which says what happens next.

use super::capture::Captured;
use super::outgoing::{Outgoing, SendError, remember, send};
use super::{End, Session};
use crate::errors;
use crate::relay::{Outcome, Relay, RelayError, ResponseKind};
use crate::topology::Backend;
use sluice_config::{PoolMode, Role};
use sluice_pool::{AcquireError, BackendConn};
use sluice_protocol::consts::status;
use sluice_router::plan::{self, HoldInput, Leftovers, Lost, Recovery, WriteNote};
use sluice_router::{Facts, GtidPos, HoldReason, Plan, Route, SessionInput};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// One command to run.
pub(super) struct Work<'a> {
    /// None for commands that are not statements (they run where the
    /// client's connection is, or on the primary).
    pub facts: Option<&'a Facts>,
    /// Literal values of this execution (for `SET @v = literal`).
    pub literals: Vec<&'a str>,
    pub response: ResponseKind,
    pub outgoing: Outgoing,
    pub label: &'static str,
    /// Keep the result set's column definitions (for the guard).
    pub capture_columns: bool,
}

impl Work<'_> {
    /// The statement executed (not a COM_STMT_PREPARE or a fetch).
    pub fn ran(&self) -> bool {
        !matches!(self.outgoing, Outgoing::Prepare { .. }) && self.label != "COM_STMT_FETCH"
    }
}

/// What the command did, for the caller.
#[derive(Default)]
pub(super) struct Done {
    pub outcome: Option<Outcome>,
    /// The backend that answered, and as what.
    pub ran_on: Option<(sluice_pool::Local<Backend>, Role)>,
}

enum Step {
    Done(Done),
    /// A read failed before the client saw anything: run it again.
    RetryRead,
}

/// `routing.query_timeout_ms`: a statement still running after `after` is
/// killed on the server; the relay then reads the server's "interrupted"
/// error and passes it on. A backend that does not answer even then
/// (frozen, cut off) is abandoned after `grace`: the connection is closed.
struct KillAfter<'a> {
    after: Duration,
    grace: Duration,
    target: &'a sluice_pool::ConnectTarget,
    backend_id: u32,
    conn_id: u32,
    backend: &'a str,
    sent_any: &'a AtomicBool,
}

impl KillAfter<'_> {
    async fn run<F: std::future::Future<Output = Result<Outcome, RelayError>>>(
        self,
        mut relay: std::pin::Pin<&mut F>,
        kill: &mut Option<tokio::task::JoinHandle<()>>,
    ) -> Result<Outcome, RelayError> {
        tokio::select! {
            r = &mut relay => return r,
            _ = tokio::time::sleep(self.after) => {}
        }
        tracing::info!(
            conn_id = self.conn_id,
            backend = self.backend,
            "statement exceeded routing.query_timeout_ms = {}; killing it",
            self.after.as_millis()
        );
        metrics::counter!("sluice_errors_total", "cause" => "query_timeout").increment(1);
        *kill = Some(tokio::spawn(kill_query(self.target.clone(), self.backend_id)));
        match tokio::time::timeout(self.grace, relay).await {
            Ok(r) => r,
            Err(_) => Err(RelayError::Backend {
                error: std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no answer {} ms after KILL QUERY", self.grace.as_millis()),
                ),
                client_saw_any: self.sent_any.load(Ordering::Relaxed),
            }),
        }
    }
}

/// KILL QUERY from a separate connection (the statement's own connection is
/// busy waiting for it).
pub(super) async fn kill_query(target: sluice_pool::ConnectTarget, connection_id: u32) {
    let result = async {
        let mut conn = BackendConn::connect(&target).await?;
        conn.expect_ok(&format!("KILL QUERY {connection_id}")).await
    }
    .await;
    if let Err(e) = result {
        tracing::warn!(backend = target.backend, "KILL QUERY {connection_id} failed: {e}");
    }
}

impl Session {
    fn autocommit_off(&mut self) -> bool {
        let vars = &self.desired.vars;
        match &self.autocommit_memo {
            Some((set, off)) if set.same(vars) => *off,
            _ => {
                let off = vars
                    .get("autocommit")
                    .is_some_and(|v| v.eq_ignore_ascii_case("OFF") || v == "0");
                self.autocommit_memo = Some((vars.clone(), off));
                off
            }
        }
    }

    /// The command's plan, decided once from the session's state
    /// (`sluice_router::plan::plan`).
    pub(super) fn plan(&mut self, facts: Option<&Facts>) -> Plan {
        let autocommit_off = self.autocommit_off();
        let routing = &self.config.routing;
        plan::plan(
            facts,
            SessionInput {
                mode: routing.mode,
                pool_mode: self.config.pool.mode,
                read_your_writes: routing.read_your_writes,
                window_ms: routing.read_your_writes_window_ms,
                bound: self.binding.bound(),
                autocommit_off,
                // Measured at the command's arrival: no clock read per statement.
                since_last_write: self
                    .last_write
                    .map(|at| self.command_started.saturating_duration_since(at)),
            },
        )
    }

    /// Carries out `plan` for `work` and relays the response; a read the
    /// plan allows to be retried runs once more if its backend failed
    /// before the client saw any of the answer.
    pub(super) async fn run(&mut self, work: Work<'_>, plan: Plan) -> Result<Done, End> {
        match self.run_once(&work, plan).await? {
            Step::Done(done) => Ok(done),
            Step::RetryRead => {
                metrics::counter!("sluice_retries_total", "reason" => "read_backend_lost").increment(1);
                match self.run_once(&work, plan.retried()).await? {
                    Step::Done(done) => Ok(done),
                    Step::RetryRead => Ok(Done::default()),
                }
            }
        }
    }

    async fn run_once(&mut self, work: &Work<'_>, plan: Plan) -> Result<Step, End> {
        let routed = plan.route;
        if routed != Route::Held {
            self.binding.release_statement_hold();
        }
        // From the command's arrival: what the client waits for.
        let started = self.command_started;
        if let Some(step) = self.connect_and_send(work, plan).await? {
            return Ok(step);
        }
        let Some(held) = self.binding.held.as_ref() else {
            return Ok(Step::Done(Done::default()));
        };
        let backend = held.backend.clone();
        let role = held.role;
        self.digest.route = match (routed, role) {
            (Route::Held, _) => crate::digests::Route::Held,
            (_, Role::Primary) => crate::digests::Route::Primary,
            (_, Role::Replica) => crate::digests::Route::Replica,
        };
        let result = self.relay(work).await;
        let ended = Instant::now();
        let took = ended.saturating_duration_since(started);
        self.digest.ended = Some((ended, took));
        self.metrics
            .query(&backend.name, self.digest.route.label(), work.label, took);
        if let Ok(outcome) = &result {
            self.digest.error |= outcome.ended_with_error;
            self.digest.rows = outcome.rows;
        }
        match result {
            Ok(outcome) => match self.finish(work, outcome, &backend).await? {
                Step::Done(mut done) => {
                    done.ran_on = Some((backend, role));
                    Ok(Step::Done(done))
                }
                other => Ok(other),
            },
            Err(RelayError::Client(e)) => {
                if e.kind() == std::io::ErrorKind::TimedOut {
                    // It stopped reading its answer (net_write_timeout).
                    tracing::info!(
                        conn_id = self.id,
                        backend = &*backend.name,
                        "closing a client that stopped reading its answer"
                    );
                    metrics::counter!("sluice_client_connections_closed_total", "cause" => "write_timeout")
                        .increment(1);
                } else {
                    tracing::debug!("client gone mid-response: {e}");
                }
                self.binding.drop_broken();
                Err(End::ClientGone)
            }
            // Rare: boxed, so the statement's future stays small.
            Err(RelayError::Backend {
                error,
                client_saw_any,
            }) => Box::pin(self.lost_mid_response(&backend, role, plan, error, client_saw_any, true)).await,
            Err(RelayError::Metadata {
                error,
                client_saw_any,
            }) => Box::pin(self.lost_mid_response(&backend, role, plan, error, client_saw_any, false)).await,
        }
    }

    /// The backend connection failed mid-response (`backend_at_fault`), or
    /// Sluice's own record of the statement's column definitions did not
    /// fit what the server sent: the connection is closed either way, but
    /// only a failed replica is skipped for a moment.
    async fn lost_mid_response(
        &mut self,
        backend: &Backend,
        role: Role,
        plan: Plan,
        error: std::io::Error,
        client_saw_any: bool,
        backend_at_fault: bool,
    ) -> Result<Step, End> {
        let cause = if backend_at_fault {
            "backend_lost"
        } else {
            "metadata_cache"
        };
        tracing::warn!(
            conn_id = self.id,
            backend = &*backend.name,
            cause,
            "backend connection closed mid-response: {error}"
        );
        metrics::counter!("sluice_errors_total", "cause" => cause).increment(1);
        self.binding.drop_broken();
        let on_replica = role == Role::Replica && backend_at_fault;
        match plan::on_lost_mid_response(client_saw_any, plan.retry, on_replica) {
            Lost::CloseClient => {
                // The client's stream is mid-result; it cannot take an ERR.
                self.client.shutdown().await;
                Err(End::ClientGone)
            }
            Lost::Retry { mark_down } => {
                if mark_down {
                    self.topology.mark_down(backend);
                }
                Ok(Step::RetryRead)
            }
            Lost::Error => {
                self.reply(&errors::backend_lost(&backend.name, &error.to_string()))
                    .await?;
                Ok(Step::Done(Done::default()))
            }
        }
    }

    /// Checks out a connection (unless one is held), restores the client's
    /// session on it and sends the command. Before anything of the client's
    /// reaches a server, a failed connection is replaced and an unreachable
    /// replica skipped, as the plan says. `Some(step)`: the command is over
    /// (the client got an error).
    async fn connect_and_send(&mut self, work: &Work<'_>, plan: Plan) -> Result<Option<Step>, End> {
        let routed = plan.route;
        let with_last_insert_id = work.facts.is_some_and(|f| f.lexical.reads_last_insert_id);
        // CONNECTION_ID() returns pseudo_thread_id, set to the client's id
        // for it, and for a statement that may create a temporary table:
        // the server files temporary tables under pseudo_thread_id, so one
        // made under another id would vanish when it changed.
        let with_connection_id = work
            .facts
            .is_some_and(|f| f.lexical.reads_connection_id || f.lexical.may_create_temporary_table);
        let capacity = self.config.pool.max_prepared_per_connection;
        let mut attempt = 0;
        let mut route_now = routed;
        loop {
            attempt += 1;
            if self.binding.held.is_none() {
                if let Err(e) = self.check_out(route_now, plan.requirement, work.facts).await {
                    if Box::pin(self.recover_checkout(&e, route_now, attempt)).await {
                        continue;
                    }
                    tracing::warn!(conn_id = self.id, "{e}");
                    metrics::counter!("sluice_errors_total", "cause" => e.cause()).increment(1);
                    self.reply(&errors::acquire(&e)).await?;
                    return Ok(Some(Step::Done(Done::default())));
                }
            }
            // check_out holds a connection whenever it succeeds; should
            // that ever break, the client gets an error, never silence.
            let Some(held) = self.binding.held.as_mut() else {
                metrics::counter!("sluice_errors_total", "cause" => "backend_lost").increment(1);
                self.reply(&errors::backend_lost(
                    "(none)",
                    "no backend connection was checked out",
                ))
                .await?;
                return Ok(Some(Step::Done(Done::default())));
            };
            let fresh = held.reason == HoldReason::Statement && route_now != Route::Held;
            let applied = held
                .conn
                .apply(
                    &self.desired,
                    with_last_insert_id,
                    with_connection_id,
                    held.pool.target(),
                )
                .await;
            let sent = match applied {
                Ok(None) => send(&mut held.conn, &work.outgoing, capacity).await,
                Ok(Some(err)) => Ok(Some(err)),
                Err(e) => Err(SendError::NotSent(e)),
            };
            let error = match sent {
                Ok(None) => return Ok(None),
                Ok(Some(server_err)) => {
                    // The server refused the session replay or the
                    // re-prepare: the client gets that error as the answer.
                    tracing::info!(
                        conn_id = self.id,
                        backend = &*held.backend.name,
                        "the server refused restoring the session or preparing the statement; the client gets its error"
                    );
                    metrics::counter!("sluice_errors_total", "cause" => "session_restore_refused")
                        .increment(1);
                    let failed = Outcome {
                        ended_with_error: true,
                        ..Outcome::default()
                    };
                    self.after(&failed, work, Captured::default());
                    self.reply(&server_err).await?;
                    return Ok(Some(Step::Done(Done::default())));
                }
                Err(SendError::NotSent(e)) => match plan::on_lost_before_send(routed, fresh, attempt) {
                    Some(again) => {
                        tracing::info!(
                            conn_id = self.id,
                            backend = &*held.backend.name,
                            "backend connection failed before the command was sent ({e}); retrying"
                        );
                        self.binding.drop_broken();
                        route_now = again;
                        continue;
                    }
                    None => e,
                },
                Err(SendError::Unknown(e)) => e,
            };
            let backend = held.backend.name.clone();
            self.binding.drop_broken();
            metrics::counter!("sluice_errors_total", "cause" => "backend_lost").increment(1);
            self.reply(&errors::backend_lost(&backend, &error.to_string()))
                .await?;
            return Ok(Some(Step::Done(Done::default())));
        }
    }

    /// A checkout failed: true when the plan says to try again (after
    /// skipping the replica, or once the monitor names a new writer).
    async fn recover_checkout(&mut self, error: &AcquireError, route: Route, attempt: u32) -> bool {
        let AcquireError::Unreachable { backend, .. } = error else {
            return false;
        };
        let writer = self.is_writer(backend);
        match plan::on_unreachable(route, writer, self.config.monitor.follow_read_only, attempt) {
            Recovery::SkipReplica => {
                self.mark_down(backend);
                metrics::counter!("sluice_route_fallbacks_total", "reason" => "replica_unreachable")
                    .increment(1);
                true
            }
            // Nothing was sent: a write may wait for the monitor to find
            // the new primary.
            Recovery::WaitForWriter => self.wait_for_new_writer(backend).await,
            Recovery::Fail => false,
        }
    }

    /// Relays the response of the command just sent on the held
    /// connection. After `routing.query_timeout_ms` the statement is killed
    /// on the server; another client's KILL QUERY finds it meanwhile.
    async fn relay(&mut self, work: &Work<'_>) -> Result<Outcome, RelayError> {
        let Some(held) = self.binding.held.as_mut() else {
            return Err(RelayError::Backend {
                error: std::io::Error::other("no connection held"),
                client_saw_any: false,
            });
        };
        let backend: &Backend = &held.backend;
        let kill_id = held.conn.info.connection_id;
        self.slot.start_statement(held.pool.clone(), kill_id);
        backend.in_flight.begin();
        let sent_any = AtomicBool::new(false);
        let mut relay = Relay::new(
            &mut self.client,
            &mut held.conn,
            self.caps,
            &mut self.desired,
            self.seq,
            &sent_any,
        );
        match &work.outgoing {
            Outgoing::Prepare { client_id, .. } => relay = relay.with_statement_id(*client_id),
            Outgoing::Execute { sql, client_defs, .. } => {
                let procedure = work.facts.is_some_and(|f| f.kind() == sluice_router::Kind::Call);
                relay = relay.for_execute(sql, client_defs.as_ref(), procedure)
            }
            _ => {}
        }
        relay = relay.client_caches_metadata(self.caches_metadata);
        relay = relay.capturing_columns(work.capture_columns);
        let kill_after = self.config.routing.query_timeout_ms;
        let grace = held.pool.target().connect_timeout;
        let mut kill = None;
        let result = {
            let mut fut = std::pin::pin!(relay.run(work.response));
            if kill_after == 0 || work.facts.is_none() {
                fut.await
            } else {
                // Boxed: the timers make the future large, and most
                // deployments run without a query timeout.
                let killer = KillAfter {
                    after: Duration::from_millis(kill_after),
                    grace,
                    target: held.pool.target(),
                    backend_id: kill_id,
                    conn_id: self.id,
                    backend: &backend.name,
                    sent_any: &sent_any,
                };
                Box::pin(killer.run(fut.as_mut(), &mut kill)).await
            }
        };
        backend.in_flight.end();
        // A KILL QUERY landing on this connection must land before it can
        // serve anyone else, or it could stop another client's statement.
        self.slot.end_statement().await;
        if let Some(kill) = kill {
            if tokio::time::timeout(grace, kill).await.is_err() {
                if let Some(conn) = self.binding.conn() {
                    conn.broken = true;
                }
            }
        }
        result
    }

    /// The command completed: remember a prepared statement, capture what
    /// must follow the client, and apply what it keeps.
    async fn finish(
        &mut self,
        work: &Work<'_>,
        mut outcome: Outcome,
        backend: &Backend,
    ) -> Result<Step, End> {
        if let (Some(stmt), Outgoing::Prepare { sql, .. }) = (&outcome.prepared, &work.outgoing) {
            let capacity = self.config.pool.max_prepared_per_connection;
            if let Some(conn) = self.binding.conn() {
                if let Err(e) = remember(conn, sql, (**stmt).clone(), capacity).await {
                    tracing::warn!(
                        conn_id = self.id,
                        backend = &*backend.name,
                        "closing a statement failed: {e}"
                    );
                    self.binding.drop_broken();
                }
            }
        }
        let captured = match self.capture(&mut outcome, work).await {
            Ok(captured) => captured,
            Err(e) => {
                // The client has its answer; only the state that should
                // follow it is unknown, so it stays here.
                tracing::warn!(
                    conn_id = self.id,
                    backend = &*backend.name,
                    "reading back session state failed: {e}"
                );
                metrics::counter!("sluice_errors_total", "cause" => "state_read_back").increment(1);
                let bound =
                    self.binding.holds_state() || outcome.status.is_some_and(|st| st & status::IN_TRANS != 0);
                self.binding.drop_broken();
                if bound {
                    // Its transaction or pinned state died with the
                    // connection: the client must not go on as if it were
                    // still there.
                    return Err(End::ClientGone);
                }
                Captured::default()
            }
        };
        self.after(&outcome, work, captured);
        Ok(Step::Done(Done {
            outcome: Some(outcome),
            ran_on: None,
        }))
    }

    /// After a statement: tracked user variables, read-your-writes, pins
    /// and transactions, as the plan decides.
    fn after(&mut self, outcome: &Outcome, work: &Work<'_>, captured: Captured) {
        let literal_count = work.literals.len();
        if let Some(facts) = work.facts {
            if !outcome.ended_with_error && facts.tracked_user_vars(literal_count) {
                for (name, literal) in facts.ast.user_var_literals.iter().zip(&work.literals) {
                    self.desired.user_vars.insert(name.clone(), literal.to_string());
                }
                if let Some(conn) = self.binding.conn() {
                    conn.state.user_vars = self.desired.user_vars.clone();
                }
            }
        }
        // Only a COMMIT or ROLLBACK looks the session's completion_type up.
        let releases = !outcome.ended_with_error
            && work.ran()
            && work.facts.is_some_and(|f| {
                matches!(
                    f.kind(),
                    sluice_router::Kind::Commit | sluice_router::Kind::Rollback
                ) && plan::releases_connection(
                    Some(f.kind()),
                    f.lexical.release,
                    self.desired.vars.get("completion_type").map(String::as_str),
                )
            });
        if releases {
            // The server closes this connection after its OK: it never
            // goes back to the pool, and the client is closed next.
            self.released = true;
        }
        let Some(held) = self.binding.held.as_ref() else {
            return;
        };
        let ran = work.ran();
        let gtid = outcome.last_gtid.as_deref().and_then(GtidPos::parse);
        let ryw = self.config.routing.read_your_writes;
        let note = plan::after_write(
            held.role == Role::Primary,
            work.facts.map(|f| f.kind()),
            ran,
            ryw,
            gtid.is_some(),
        );
        match (note, gtid) {
            (WriteNote::SessionGtid, Some(gtid)) => self.causal.get_or_insert_default().merge(&gtid),
            (WriteNote::GlobalGtid, Some(gtid)) => self.shared.positions.wrote(&gtid),
            (WriteNote::Window { counted }, _) => {
                if counted {
                    metrics::counter!("sluice_read_your_writes_total", "outcome" => "write_without_gtid")
                        .increment(1);
                }
                self.last_write = Some(Instant::now());
            }
            _ => {}
        }
        let leftovers = Leftovers {
            cursor_opened: outcome.cursor_opened,
            untracked_change: outcome.untracked_change,
            user_vars_captured: captured.user_vars,
        };
        let new_pin = plan::new_pin(work.facts, literal_count, leftovers);
        if let Some(reason) = new_pin {
            self.binding.pinned_for_more |= reason != sluice_router::PinReason::UserLock;
            if self.binding.pin(reason) {
                tracing::debug!(reason = reason.label(), "client pinned to its backend connection");
                metrics::counter!("sluice_session_pins_total", "reason" => reason.label()).increment(1);
            }
        }
        self.binding.pinned_for_more |= outcome.cursor_opened;
        if work.ran() && work.facts.is_some_and(|f| f.lexical.user_lock_calls) {
            self.track_user_locks(outcome, work);
        }
        self.binding.cursor_open |= outcome.cursor_opened;
        let autocommit_off = self.autocommit_off();
        let hold = plan::hold_after(HoldInput {
            pinned: self.binding.pinned,
            in_trans_flag: outcome.status.map(|st| st & status::IN_TRANS != 0),
            was_in_transaction: self.binding.reason() == Some(HoldReason::Transaction),
            saw_in_transaction: outcome.saw_in_transaction,
            autocommit_off,
            session_mode: self.config.pool.mode == PoolMode::Session,
            next_transaction_pending: self.binding.next_transaction,
            sets_next_transaction: work.facts.is_some_and(|f| f.lexical.sets_next_transaction),
        });
        self.binding.apply(hold);
        if self.released {
            self.binding.drop_broken();
        }
    }

    /// Follows the user locks a statement took or released (names read
    /// from its text), and unpins the client once it holds none and
    /// nothing else pinned it.
    fn track_user_locks(&mut self, outcome: &Outcome, work: &Work<'_>) {
        use sluice_router::user_locks::{LockOp, lock_ops};
        let ops = match &work.outgoing {
            _ if outcome.ended_with_error => {
                // A failed statement may still have taken its locks.
                self.binding.user_locks.mark_unknown();
                return;
            }
            Outgoing::Raw(packet) if packet.first() == Some(&sluice_protocol::consts::com::QUERY) => {
                lock_ops(&String::from_utf8_lossy(&packet[1..]))
            }
            Outgoing::Execute { sql, .. } => lock_ops(sql),
            _ => vec![LockOp::Get(None)],
        };
        self.binding.user_locks.apply(&ops);
        let released = ops.iter().any(|op| !matches!(op, LockOp::Get(_)));
        if plan::unpin_after_release(
            self.binding.pinned,
            self.binding.pinned_for_more,
            self.binding.user_locks.none_held(),
            released,
        ) {
            tracing::debug!("client released its user locks: unpinned");
            metrics::counter!("sluice_session_unpins_total", "reason" => "get_lock").increment(1);
            self.binding.pinned = None;
        }
    }
}
