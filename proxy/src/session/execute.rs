//! Running a command on a backend: route it, check out (or keep) a
//! connection and replay the client's session state on it, send the
//! command (preparing statements lazily on that connection), relay the
//! response, and decide what the client keeps afterwards.

use super::capture::Captured;
use super::target::ReadTarget;
use super::{End, Held, HoldReason, Session};
use crate::errors;
use crate::relay::{Outcome, Relay, RelayError, ResponseKind};
use bytes::Bytes;
use sluice_config::{PoolMode, ReadYourWrites, Role, RoutingMode};
use sluice_pool::{AcquireError, BackendConn, BackendError, BackendPool, PoolKey, discard};
use sluice_protocol::consts::{CapabilityFlags as Caps, com, status};
use sluice_router::{Facts, GtidPos, Kind, PinReason, Route, RouteInput, route};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What goes to the backend once a connection is chosen.
pub(super) enum Outgoing {
    /// The client's packet, unchanged.
    Raw(Bytes),
    /// COM_STMT_PREPARE: relayed with Sluice's statement id.
    Prepare {
        sql: Arc<str>,
        packet: Bytes,
        client_id: u32,
    },
    /// COM_STMT_EXECUTE / COM_STMT_BULK_EXECUTE: the statement is prepared
    /// on the chosen connection first, long data and parameter types are
    /// re-sent as needed, and the id is rewritten.
    Execute {
        sql: Arc<str>,
        packet: Bytes,
        params: u16,
        types: Option<Vec<u8>>,
        long_data: Vec<(u16, Vec<u8>)>,
    },
    /// COM_STMT_FETCH / COM_STMT_RESET on the held connection.
    ForStatement { sql: Arc<str>, packet: Bytes },
}

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
}

/// What the command did, for the caller.
#[derive(Default)]
pub(super) struct Done {
    pub outcome: Option<Outcome>,
}

enum Step {
    Done(Done),
    /// A read failed before the client saw anything: run it again.
    RetryRead,
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

enum SendError {
    /// Nothing reached the server: safe to retry on another connection.
    NotSent(BackendError),
    /// The command may have run.
    Unknown(BackendError),
}

impl Session {
    /// The client keeps its connection between statements.
    fn bound(&self) -> bool {
        self.held
            .as_ref()
            .is_some_and(|h| h.reason != HoldReason::Statement)
    }

    fn decide(&self, facts: Option<&Facts>) -> Route {
        let config = self.shared.config.load();
        let mode = match config.pool.mode {
            // One connection per client: it must be able to write.
            PoolMode::Session => RoutingMode::PrimaryOnly,
            PoolMode::Transaction => config.routing.mode,
        };
        match facts {
            Some(facts) => route(RouteInput {
                mode,
                facts,
                bound: self.bound(),
                autocommit_off: self
                    .desired
                    .vars
                    .get("autocommit")
                    .is_some_and(|v| v.eq_ignore_ascii_case("OFF")),
                // In gtid mode only writes that reported no GTID use the
                // window; a read of no table needs no window at all.
                recent_write: config.routing.read_your_writes != ReadYourWrites::Off
                    && !facts.ast.reads_no_data
                    && self.last_write.is_some_and(|at| {
                        at.elapsed() < Duration::from_millis(config.routing.read_your_writes_window_ms)
                    }),
            }),
            None if self.bound() => Route::Held,
            None => Route::Primary,
        }
    }

    /// Runs `work` and relays its response. An autocommit read whose
    /// backend failed before the client saw any of the answer runs once
    /// more (on another replica if it was on one); nothing else is retried.
    pub(super) async fn run(&mut self, work: Work<'_>) -> Result<Done, End> {
        // Reads of the previous statement's diagnostics carry their values
        // in the text by now (session/diagnostics.rs), so they retry too.
        let retryable = work.facts.is_some_and(|f| f.replica_safe()) && !self.bound();
        match self.run_once(&work, retryable).await? {
            Step::Done(done) => Ok(done),
            Step::RetryRead => {
                metrics::counter!("sluice_retries_total", "reason" => "read_backend_lost").increment(1);
                match self.run_once(&work, false).await? {
                    Step::Done(done) => Ok(done),
                    Step::RetryRead => Ok(Done::default()),
                }
            }
        }
    }

    async fn run_once(&mut self, work: &Work<'_>, retryable: bool) -> Result<Step, End> {
        let routed = self.decide(work.facts);
        if routed != Route::Held
            && self
                .held
                .as_ref()
                .is_some_and(|h| h.reason == HoldReason::Statement)
        {
            self.held = None;
        }
        let started = Instant::now();
        let with_last_insert_id = work.facts.is_some_and(|f| f.lexical.reads_last_insert_id);
        let with_connection_id = work.facts.is_some_and(|f| f.lexical.reads_connection_id);
        // Before anything of the client's reaches a server, a failed
        // connection is replaced and an unreachable replica skipped.
        let mut attempts = 0;
        let mut route_now = routed;
        loop {
            attempts += 1;
            if self.held.is_none() {
                if let Err(e) = self.check_out(route_now, work.facts).await {
                    if let (AcquireError::Unreachable { backend, .. }, true) = (&e, attempts <= 3) {
                        let writer = self.is_writer(backend);
                        if route_now == Route::Replica && !writer {
                            self.shared.mark_down(backend);
                            metrics::counter!("sluice_route_fallbacks_total", "reason" => "replica_unreachable")
                                .increment(1);
                            continue;
                        }
                        // Nothing was sent: a write may wait for the
                        // monitor to find the new primary.
                        if writer && self.wait_for_new_writer(backend).await {
                            continue;
                        }
                    }
                    tracing::warn!(conn_id = self.id, "{e}");
                    metrics::counter!("sluice_errors_total", "cause" => e.cause()).increment(1);
                    self.reply(&errors::acquire(&e)).await?;
                    return Ok(Step::Done(Done::default()));
                }
            }
            let fresh = self
                .held
                .as_ref()
                .is_some_and(|h| h.reason == HoldReason::Statement)
                && route_now != Route::Held;
            let capacity = self.prepared_capacity();
            let held = self.held.as_mut().expect("checked out above");
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
            match sent {
                Ok(None) => break,
                Ok(Some(server_err)) => {
                    // The server refused the session replay or the
                    // re-prepare: the client gets that error as the answer.
                    tracing::info!(
                        conn_id = self.id,
                        backend = held.pool.backend(),
                        "the server refused restoring the session or preparing the statement; the client gets its error"
                    );
                    metrics::counter!("sluice_errors_total", "cause" => "session_restore_refused")
                        .increment(1);
                    self.after(
                        &Outcome {
                            ended_with_error: true,
                            ..Outcome::default()
                        },
                        work,
                    );
                    self.reply(&server_err).await?;
                    return Ok(Step::Done(Done::default()));
                }
                Err(SendError::NotSent(e)) if fresh && attempts < 3 => {
                    let backend = held.pool.backend().to_string();
                    self.drop_broken_connection();
                    tracing::info!(
                        conn_id = self.id,
                        backend,
                        "backend connection failed before the command was sent ({e}); retrying"
                    );
                    route_now = if routed == Route::Held {
                        Route::Primary
                    } else {
                        routed
                    };
                    continue;
                }
                Err(SendError::NotSent(e) | SendError::Unknown(e)) => {
                    let backend = held.pool.backend().to_string();
                    self.drop_broken_connection();
                    metrics::counter!("sluice_errors_total", "cause" => "backend_lost").increment(1);
                    self.reply(&errors::backend_lost(&backend, &e.to_string()))
                        .await?;
                    return Ok(Step::Done(Done::default()));
                }
            }
        }
        let held = self.held.as_mut().expect("connection is held");
        let role = held.role;
        let backend = held.pool.key.backend.clone();
        let load = self.shared.load(&backend);
        let kill_pool = held.pool.clone();
        let kill_id = held.conn.info.connection_id;
        let grace = kill_pool.target().connect_timeout;
        // Another client's KILL QUERY finds the statement here.
        *self.slot.running.lock().await = Some((kill_pool.clone(), kill_id));
        let held = self.held.as_mut().expect("connection is held");
        load.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let sent_any = std::sync::atomic::AtomicBool::new(false);
        let mut relay = Relay::new(
            &mut self.client,
            &mut held.conn,
            self.caps,
            &mut self.desired,
            self.seq,
            &sent_any,
        );
        if let Outgoing::Prepare { client_id, .. } = &work.outgoing {
            relay = relay.with_statement_id(*client_id);
        }
        let kill_after = self.shared.config.load().routing.query_timeout_ms;
        let fut = relay.run(work.response);
        let mut kill = None;
        let result = if kill_after == 0 || work.facts.is_none() {
            fut.await
        } else {
            tokio::pin!(fut);
            tokio::select! {
                r = &mut fut => r,
                _ = tokio::time::sleep(Duration::from_millis(kill_after)) => {
                    // Stop it on the server; the relay then reads the
                    // server's "interrupted" error and passes it on.
                    tracing::info!(conn_id = self.id, backend, "statement exceeded routing.query_timeout_ms = {kill_after}; killing it");
                    metrics::counter!("sluice_errors_total", "cause" => "query_timeout").increment(1);
                    kill = Some(tokio::spawn(kill_query(kill_pool.target().clone(), kill_id)));
                    // A backend that does not answer even then (frozen,
                    // cut off) is abandoned: the connection is closed.
                    match tokio::time::timeout(grace, fut).await {
                        Ok(r) => r,
                        Err(_) => Err(RelayError::Backend {
                            error: std::io::Error::new(
                                std::io::ErrorKind::TimedOut,
                                format!("no answer {} ms after KILL QUERY", grace.as_millis()),
                            ),
                            client_saw_any: sent_any.load(std::sync::atomic::Ordering::Relaxed),
                        }),
                    }
                }
            }
        };
        load.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        // Waits for a KILL QUERY in flight to land before the connection
        // can serve anyone else.
        *self.slot.running.lock().await = None;
        // The KILL must land before the connection can serve anyone else,
        // or it could stop another client's statement.
        if let Some(kill) = kill {
            if tokio::time::timeout(grace, kill).await.is_err() {
                if let Some(held) = self.held.as_mut() {
                    held.conn.broken = true;
                }
            }
        }
        let label = if routed == Route::Held {
            "held"
        } else if role == Role::Primary {
            "primary"
        } else {
            "replica"
        };
        self.metrics.query(&backend, label, work.label, started.elapsed());
        match result {
            Ok(outcome) => {
                if let (Some(stmt), Outgoing::Prepare { sql, .. }) = (&outcome.prepared, &work.outgoing) {
                    let capacity = self.prepared_capacity();
                    let held = self.held.as_mut().expect("connection is held");
                    if let Err(e) = remember(&mut held.conn, sql, stmt.clone(), capacity).await {
                        tracing::warn!(conn_id = self.id, backend, "closing a statement failed: {e}");
                        self.drop_broken_connection();
                    }
                }
                let captured = match self.capture(&outcome, work).await {
                    Ok(captured) => captured,
                    Err(e) => {
                        // The client has its answer; only the state that
                        // should follow it is unknown, so it stays here.
                        tracing::warn!(
                            conn_id = self.id,
                            backend,
                            "reading back session state failed: {e}"
                        );
                        metrics::counter!("sluice_errors_total", "cause" => "state_read_back").increment(1);
                        let bound = self.held.as_ref().is_some_and(|h| {
                            matches!(h.reason, HoldReason::Transaction | HoldReason::Pinned(_))
                        }) || outcome.status.is_some_and(|st| st & status::IN_TRANS != 0);
                        self.drop_broken_connection();
                        if bound {
                            // Its transaction or pinned state died with the
                            // connection: the client must not go on as if
                            // it were still there.
                            return Err(End::ClientGone);
                        }
                        Captured::default()
                    }
                };
                self.after_captured(&outcome, work, captured);
                Ok(Step::Done(Done {
                    outcome: Some(outcome),
                }))
            }
            Err(RelayError::Client(e)) => {
                if e.kind() == std::io::ErrorKind::TimedOut {
                    // It stopped reading its answer (net_write_timeout).
                    tracing::info!(
                        conn_id = self.id,
                        backend,
                        "closing a client that stopped reading its answer"
                    );
                    metrics::counter!("sluice_client_connections_closed_total", "cause" => "write_timeout")
                        .increment(1);
                } else {
                    tracing::debug!("client gone mid-response: {e}");
                }
                self.drop_broken_connection();
                Err(End::ClientGone)
            }
            Err(RelayError::Backend {
                error,
                client_saw_any,
            }) => {
                tracing::warn!(
                    conn_id = self.id,
                    backend,
                    "backend connection failed mid-response: {error}"
                );
                metrics::counter!("sluice_errors_total", "cause" => "backend_lost").increment(1);
                self.drop_broken_connection();
                if client_saw_any {
                    // The client's stream is mid-result; it cannot take an ERR.
                    self.client.shutdown().await;
                    return Err(End::ClientGone);
                }
                if retryable {
                    if role == Role::Replica {
                        self.shared.mark_down(&backend);
                    }
                    return Ok(Step::RetryRead);
                }
                self.reply(&errors::backend_lost(&backend, &error.to_string()))
                    .await?;
                Ok(Step::Done(Done::default()))
            }
        }
    }

    fn prepared_capacity(&self) -> usize {
        self.shared.config.load().pool.max_prepared_per_connection
    }

    /// Checks a connection out for `route` (the writer or a replica) and
    /// holds it for the statement.
    async fn check_out(&mut self, route: Route, facts: Option<&Facts>) -> Result<(), AcquireError> {
        if route == Route::Replica {
            let target = match self.read_requirement(facts).await {
                Ok(required) => self.read_target(facts, required)?,
                Err(()) => ReadTarget::Primary,
            };
            if let ReadTarget::Replica {
                name,
                address,
                wait_for,
            } = target
            {
                let pool = self.pool_for(&name, &address);
                let conn = self.acquire(&pool).await?;
                let conn = match wait_for {
                    None => Some(conn),
                    Some(gtid) => self.wait_for_gtid(conn, &gtid).await,
                };
                if let Some(conn) = conn {
                    self.hold(conn, pool, Role::Replica);
                    return Ok(());
                }
            }
        }
        let pool = self.writer_pool().await?;
        let conn = self.acquire(&pool).await?;
        self.hold(conn, pool, Role::Primary);
        Ok(())
    }

    async fn acquire(&mut self, pool: &BackendPool) -> Result<sluice_pool::Pooled, AcquireError> {
        let waited = Instant::now();
        let conn = pool.acquire().await?;
        self.metrics.pool_wait(pool.backend(), waited.elapsed());
        Ok(conn)
    }

    fn hold(&mut self, conn: sluice_pool::Pooled, pool: BackendPool, role: Role) {
        self.held = Some(Held {
            conn,
            pool,
            role,
            reason: HoldReason::Statement,
        });
    }

    pub(super) fn pool_for(&mut self, name: &str, address: &str) -> BackendPool {
        if let Some(pool) = self.pools.get(name) {
            return pool.clone();
        }
        let config = self.shared.config.load();
        let password = config.user(&self.user).map(|u| u.secret()).unwrap_or_default();
        let key = PoolKey {
            backend: name.to_string(),
            user: self.user.clone(),
            found_rows: self.caps.contains(Caps::CLIENT_FOUND_ROWS),
            attrs: self.attrs.clone(),
        };
        let pool = self.shared.pools.handle(&key, address, password);
        self.pools.insert(name.to_string(), pool.clone());
        pool
    }

    /// After a statement: pins and transactions decide whether the client
    /// keeps its connection.
    fn after(&mut self, outcome: &Outcome, work: &Work<'_>) {
        self.after_captured(outcome, work, Captured::default());
    }

    fn after_captured(&mut self, outcome: &Outcome, work: &Work<'_>, captured: Captured) {
        let literal_count = work.literals.len();
        if let Some(facts) = work.facts {
            if !outcome.ended_with_error && facts.tracked_user_vars(literal_count) {
                let held = self.held.as_mut();
                for (name, literal) in facts.ast.user_var_literals.iter().zip(&work.literals) {
                    self.desired.user_vars.insert(name.clone(), literal.to_string());
                }
                if let Some(held) = held {
                    held.conn.state.user_vars = self.desired.user_vars.clone();
                }
            }
        }
        let Some(held) = self.held.as_mut() else { return };
        // Anything but a read, SET or USE that ran on the primary may have
        // written: start the read-your-writes window.
        // (Commands without a statement, such as COM_INIT_DB, write nothing.)
        let read_only_kind = work
            .facts
            .is_none_or(|f| matches!(f.kind(), Kind::Select | Kind::Show | Kind::Set | Kind::Use));
        let ran = !matches!(work.outgoing, Outgoing::Prepare { .. }) && work.label != "COM_STMT_FETCH";
        if held.role == Role::Primary && !read_only_kind && ran {
            let gtid = outcome.last_gtid.as_deref().and_then(GtidPos::parse);
            match (self.shared.config.load().routing.read_your_writes, gtid) {
                (ReadYourWrites::Gtid, Some(gtid)) => self.causal.get_or_insert_default().merge(&gtid),
                (ReadYourWrites::Global, Some(gtid)) => self.shared.positions.wrote(&gtid),
                (ReadYourWrites::Universal, Some(_)) => {}
                (ReadYourWrites::Gtid | ReadYourWrites::Global | ReadYourWrites::Universal, None) => {
                    // No GTID to wait for (nothing was written, or the
                    // server does not report it): the primary window keeps
                    // the session's reads safe.
                    metrics::counter!("sluice_read_your_writes_total", "outcome" => "write_without_gtid")
                        .increment(1);
                    self.last_write = Some(Instant::now());
                }
                _ => self.last_write = Some(Instant::now()),
            }
        }
        // A state change the read-back explains: user variables of one
        // statement. A procedure or multi-statement may also have left
        // prepared statements or temporary tables: those still pin.
        let explained = work.facts.is_some_and(|f| {
            f.tracked_user_vars(literal_count)
                || (captured.user_vars && f.kind() != Kind::Call && f.ast.statements <= 1)
        });
        let new_pin = work
            .facts
            .and_then(|f| f.pin_reason(literal_count))
            .filter(|&reason| !(reason == PinReason::UserVariable && captured.user_vars))
            .or(outcome.cursor_opened.then_some(PinReason::Cursor))
            .or((outcome.untracked_change && !explained).then_some(PinReason::UntrackedState));
        self.cursor_open |= outcome.cursor_opened;
        if let (None, Some(reason)) = (self.pinned, new_pin) {
            tracing::debug!(reason = reason.label(), "client pinned to its backend connection");
            metrics::counter!("sluice_session_pins_total", "reason" => reason.label()).increment(1);
            self.pinned = Some(reason);
        }
        let in_transaction = match outcome.status {
            Some(st) => st & status::IN_TRANS != 0,
            // An ERR does not say: a transaction stays open until it ends,
            // one opened earlier in this response is open, and with
            // autocommit=0 the failed statement may have opened one.
            None => {
                held.reason == HoldReason::Transaction
                    || outcome.saw_in_transaction
                    || self
                        .desired
                        .vars
                        .get("autocommit")
                        .is_some_and(|v| v.eq_ignore_ascii_case("OFF"))
            }
        };
        self.in_transaction = in_transaction;
        let session_mode = self.shared.config.load().pool.mode == PoolMode::Session;
        held.reason = if let Some(reason) = self.pinned {
            HoldReason::Pinned(reason)
        } else if session_mode {
            HoldReason::Session
        } else if in_transaction {
            HoldReason::Transaction
        } else {
            self.held = None; // back to the pool
            return;
        };
    }

    /// Checks the schema a client asked for at connect on the primary, as
    /// the server would. Returns the server's ERR if it does not exist.
    pub(super) async fn check_schema(&mut self) -> Result<Option<Vec<u8>>, AcquireError> {
        // Any backend can check a schema; with no writer right now, a replica.
        let writer_known = matches!(
            self.shared.monitor.view().writer,
            sluice_pool::monitor::WriterState::Backend(_)
        );
        let route = if writer_known {
            Route::Primary
        } else {
            Route::Replica
        };
        self.check_out(route, None).await?;
        let held = self.held.as_mut().expect("checked out above");
        match held
            .conn
            .apply(&self.desired, false, false, held.pool.target())
            .await
        {
            Ok(None) => {
                self.held = None; // back to the pool: nothing follows up on it
                Ok(None)
            }
            Ok(Some(err)) => {
                self.held = None;
                Ok(Some(err))
            }
            Err(e) => {
                let backend = held.pool.backend().to_string();
                let address = held.pool.address.to_string();
                self.drop_broken_connection();
                Err(AcquireError::Unreachable {
                    backend,
                    address,
                    reason: format!("connection failed while restoring the session: {e}"),
                })
            }
        }
    }

    /// The connection's protocol state is unknown: close it, never reuse it.
    pub(super) fn drop_broken_connection(&mut self) {
        if let Some(mut held) = self.held.take() {
            held.conn.broken = true;
            discard(held.conn);
        }
        // Whatever was pinned or open on it is gone.
        self.pinned = None;
        self.cursor_open = false;
    }

    /// Gives the held connection back, first resetting state that must not
    /// leak to the next client (open transaction, temporary tables, locks).
    pub(super) async fn release_held(&mut self) {
        self.pinned = None;
        self.cursor_open = false;
        let Some(mut held) = self.held.take() else { return };
        if held.reason == HoldReason::Statement {
            return;
        }
        if let Err(e) = held.conn.reset().await {
            tracing::info!(
                conn_id = self.id,
                backend = held.pool.key.backend,
                "could not reset a backend connection, closing it: {e}"
            );
            held.conn.broken = true;
            discard(held.conn);
        }
    }
}

/// Sends the command on the chosen connection. `Ok(Some(err))` is a server
/// refusal (for example the statement no longer prepares).
async fn send(
    conn: &mut BackendConn,
    outgoing: &Outgoing,
    capacity: usize,
) -> Result<Option<Vec<u8>>, SendError> {
    match outgoing {
        Outgoing::Raw(packet) => {
            conn.send_command(packet).await.map_err(SendError::NotSent)?;
        }
        Outgoing::Prepare { packet, .. } => {
            conn.make_room(capacity).await.map_err(SendError::NotSent)?;
            conn.send_command(packet).await.map_err(SendError::NotSent)?;
        }
        Outgoing::ForStatement { sql, packet } => {
            let Some(id) = conn.statements.id_of(sql) else {
                // The client's id is still in the packet (not rewritten yet).
                let client_id = u32::from_le_bytes([packet[1], packet[2], packet[3], packet[4]]);
                return Ok(Some(errors::unknown_statement(client_id, com::name(packet[0]))));
            };
            let mut p = packet.to_vec();
            p[1..5].copy_from_slice(&id.to_le_bytes());
            conn.send_command(&p).await.map_err(SendError::NotSent)?;
        }
        Outgoing::Execute {
            sql,
            packet,
            params,
            types,
            long_data,
        } => {
            let stmt = match conn.prepared(sql, capacity).await.map_err(SendError::NotSent)? {
                Ok(stmt) => stmt,
                Err(server_err) => return Ok(Some(server_err)),
            };
            for (param, data) in long_data {
                let mut p = Vec::with_capacity(7 + data.len());
                p.push(com::STMT_SEND_LONG_DATA);
                p.extend_from_slice(&stmt.id.to_le_bytes());
                p.extend_from_slice(&param.to_le_bytes());
                p.extend_from_slice(data);
                conn.send_command(&p).await.map_err(SendError::NotSent)?; // no response
            }
            let (p, sent_types) =
                rewrite_execute(packet, stmt.id, *params, types.as_deref(), stmt.types.as_deref());
            if let (Some(sent), Some(entry)) = (sent_types, conn.statements.get(sql)) {
                entry.types = Some(sent);
            }
            conn.send_command(&p).await.map_err(SendError::Unknown)?;
        }
    }
    Ok(None)
}

/// Puts the backend id into an execute packet and, when the client relies
/// on types this connection has not seen, adds them. Returns the packet and
/// the types the connection now knows (if they changed).
pub(super) fn rewrite_execute(
    packet: &[u8],
    backend_id: u32,
    params: u16,
    client_types: Option<&[u8]>,
    conn_types: Option<&[u8]>,
) -> (Vec<u8>, Option<Vec<u8>>) {
    let mut p = packet.to_vec();
    p[1..5].copy_from_slice(&backend_id.to_le_bytes());
    if p[0] != com::STMT_EXECUTE || params == 0 {
        return (p, None);
    }
    let bound_at = 10 + (params as usize).div_ceil(8);
    let types_len = 2 * params as usize;
    match p.get(bound_at) {
        Some(1) => {
            let sent = p.get(bound_at + 1..bound_at + 1 + types_len).map(<[u8]>::to_vec);
            (p, sent)
        }
        Some(0) => match client_types {
            Some(types) if conn_types != Some(types) && types.len() == types_len => {
                let mut out = Vec::with_capacity(p.len() + types_len);
                out.extend_from_slice(&p[..bound_at]);
                out.push(1);
                out.extend_from_slice(types);
                out.extend_from_slice(&p[bound_at + 1..]);
                (out, Some(types.to_vec()))
            }
            _ => (p, None),
        },
        _ => (p, None),
    }
}

/// Records a statement the client prepared on this connection; if the
/// connection already had the same text prepared, the duplicate is closed.
async fn remember(
    conn: &mut BackendConn,
    sql: &Arc<str>,
    stmt: sluice_pool::BackendStatement,
    capacity: usize,
) -> Result<(), BackendError> {
    if conn.statements.contains(sql) {
        let mut close = vec![com::STMT_CLOSE];
        close.extend_from_slice(&stmt.id.to_le_bytes());
        return conn.send_command(&close).await;
    }
    conn.remember_statement(sql.clone(), stmt, capacity).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn execute_packet(id: u32, bound: u8, types: &[u8], values: &[u8]) -> Vec<u8> {
        let mut p = vec![com::STMT_EXECUTE];
        p.extend_from_slice(&id.to_le_bytes());
        p.push(0);
        p.extend_from_slice(&1u32.to_le_bytes());
        p.push(0); // null bitmap for 2 params
        p.push(bound);
        p.extend_from_slice(types);
        p.extend_from_slice(values);
        p
    }

    #[test]
    fn execute_gets_backend_id_and_missing_types() {
        let types = [0x03, 0, 0xfe, 0];
        let client = execute_packet(7, 0, &[], &[1, 2]);
        let (p, sent) = rewrite_execute(&client, 99, 2, Some(&types), None);
        assert_eq!(p, execute_packet(99, 1, &types, &[1, 2]));
        assert_eq!(sent.as_deref(), Some(&types[..]));
        // The connection already knows them: nothing added.
        let (p, sent) = rewrite_execute(&client, 99, 2, Some(&types), Some(&types));
        assert_eq!(p, execute_packet(99, 0, &[], &[1, 2]));
        assert_eq!(sent, None);
        // Types sent by the client are recorded.
        let with = execute_packet(7, 1, &types, &[1, 2]);
        let (_, sent) = rewrite_execute(&with, 5, 2, Some(&types), None);
        assert_eq!(sent.as_deref(), Some(&types[..]));
    }
}
