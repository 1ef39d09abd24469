//! Checking out the connection a plan names. Writes go to the writer (the
//! configured primary, or with `monitor.follow_read_only` whichever backend
//! is writable, waiting up to `routing.write_wait_ms` when none is). Reads
//! go where `sluice_router::plan::plan_read` says: a replica fresh enough
//! for the read and for what read-your-writes requires (waiting there up to
//! `routing.causal_wait_ms` with MASTER_GTID_WAIT if the plan says so), or
//! the primary. This module does the I/O; the choices are the plan's.

use super::Session;
use crate::topology::Backend;
use sluice_config::{BackendConfig, ReadYourWrites, Role};
use sluice_pool::monitor::{View, WriterState};
use sluice_pool::{AcquireError, BackendPool, Local, PoolKey, Pooled, discard};
use sluice_router::plan::{self, ReadInput, ReadTarget, Requirement};
use sluice_router::{Facts, GtidPos, ReplicaState, Route};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A replica chosen for a read (its index in the topology), and the
/// position to wait for there first.
type ReplicaRead = (usize, Option<GtidPos>);

/// A session's pool on a backend and the backend itself, both its own
/// references ([`Local`]): held per statement without writing a count
/// that sessions on other worker threads write too.
pub(super) type Handles = (Arc<BackendPool>, Local<Backend>);

impl Session {
    /// Checks a connection out for `route` (the writer or a replica) and
    /// holds it for the statement. A replica read must see `requirement`.
    pub(super) async fn check_out(
        &mut self,
        route: Route,
        requirement: Requirement,
        facts: Option<&Facts>,
    ) -> Result<(), AcquireError> {
        // One acquire for both routes: the future stays small.
        let replica = match route {
            Route::Replica => {
                match requirement {
                    Requirement::None => self.replica_for_read(facts, None)?,
                    // Boxed: rare, and large (it may ask the primary).
                    _ => match Box::pin(self.required_position(requirement)).await {
                        Ok(required) => self.replica_for_read(facts, required)?,
                        // The primary's position is unknown: the primary.
                        Err(()) => None,
                    },
                }
            }
            _ => None,
        };
        let (pool, backend, role, wait_for) = match replica {
            Some((index, wait_for)) => {
                let (pool, backend) = self.pool_for(index);
                (pool, backend, Role::Replica, wait_for)
            }
            None => {
                let (pool, backend) = self.writer_pool().await?;
                (pool, backend, Role::Primary, None)
            }
        };
        let conn = self.acquire(&pool).await?;
        let conn = match wait_for {
            None => conn,
            Some(gtid) => match Box::pin(self.wait_for_gtid(conn, &gtid)).await {
                Some(conn) => conn,
                // Not there in time: the primary.
                None => return Box::pin(self.check_out_writer()).await,
            },
        };
        self.binding.hold(conn, pool, backend, role);
        Ok(())
    }

    async fn check_out_writer(&mut self) -> Result<(), AcquireError> {
        let (pool, backend) = self.writer_pool().await?;
        let conn = self.acquire(&pool).await?;
        self.binding.hold(conn, pool, backend, Role::Primary);
        Ok(())
    }

    /// Checks the schema a client asked for at connect, as the server
    /// would. Returns the server's ERR if it does not exist.
    pub(super) async fn check_schema(&mut self) -> Result<Option<Vec<u8>>, AcquireError> {
        let writer_known = matches!(self.shared.monitor.view().writer, WriterState::Backend(_));
        let plan = plan::plan_schema_check(writer_known, self.config.routing.read_your_writes);
        let mut attempt = 0;
        loop {
            self.check_out(plan.route, plan.requirement, None).await?;
            let Some(held) = self.binding.held.as_mut() else {
                return Ok(None);
            };
            let applied = held
                .conn
                .apply(&self.desired, false, false, held.pool.target())
                .await;
            match applied {
                Ok(answer) => {
                    // Back to the pool: nothing follows up on it.
                    self.binding.held = None;
                    return Ok(answer);
                }
                Err(e) => {
                    let backend = held.backend.name.to_string();
                    let address = held.backend.address.to_string();
                    self.binding.drop_broken();
                    // A pooled connection the server has closed since
                    // (`COMMIT RELEASE`, `wait_timeout`): try another.
                    attempt += 1;
                    if plan::on_lost_before_send(plan.route, true, attempt).is_some() {
                        tracing::info!(
                            conn_id = self.id,
                            backend,
                            "backend connection failed checking the schema ({e}); retrying"
                        );
                        continue;
                    }
                    return Err(AcquireError::Unreachable {
                        backend,
                        address,
                        reason: format!("connection failed while restoring the session: {e}"),
                    });
                }
            }
        }
    }

    /// The pool times the checkout itself: a connection from its hot stack
    /// waited zero and costs no clock reading.
    async fn acquire(&mut self, pool: &BackendPool) -> Result<Pooled, AcquireError> {
        let conn = pool.acquire_at(self.command_started).await?;
        self.metrics.pool_wait(pool.backend(), conn.waited());
        Ok(conn)
    }

    /// This client's pool on the topology's backend `index` (its user,
    /// FOUND_ROWS flag and connection attributes), looked up once per
    /// config generation.
    pub(super) fn pool_for(&mut self, index: usize) -> Handles {
        if let Some(Some(handles)) = self.pools.get(index) {
            return handles.clone();
        }
        let backend = Local::new(self.topology.backends[index].clone());
        // The password as configured now (a reload may have changed it);
        // a `password_hash` user's token from its login.
        let credential = match self.config.user(&self.user) {
            Some(u) if u.password_hash.is_none() => sluice_pool::Credential::Password(u.secret().to_string()),
            _ => self.credential.clone(),
        };
        let key = PoolKey {
            backend: backend.name.to_string(),
            user: self.user.clone(),
            session_caps: sluice_pool::SessionCaps::of_client(
                self.caps,
                if self.extended_metadata {
                    sluice_protocol::consts::MariadbCapabilities::MARIADB_CLIENT_EXTENDED_METADATA
                } else {
                    sluice_protocol::consts::MariadbCapabilities::empty()
                },
            ),
            attrs: self.attrs.clone(),
        };
        let pool = Arc::new(
            self.shared
                .pools
                .handle(&key, &backend.address, &credential, &backend.tls),
        );
        if self.pools.len() <= index {
            self.pools.resize(index + 1, None);
        }
        self.pools[index] = Some((pool.clone(), backend.clone()));
        (pool, backend)
    }

    /// The pool of the backend that takes writes now.
    pub(super) async fn writer_pool(&mut self) -> Result<Handles, AcquireError> {
        if !self.config.monitor.follow_read_only {
            let primary = self.topology.primary.ok_or_else(|| AcquireError::Closed {
                backend: "primary".into(),
            })?;
            return Ok(self.pool_for(primary));
        }
        Box::pin(self.follow_writer(self.config.clone())).await
    }

    /// With `monitor.follow_read_only`: the backend the monitor names as
    /// writable, waiting up to `routing.write_wait_ms` for one.
    async fn follow_writer(&mut self, config: Arc<sluice_config::Config>) -> Result<Handles, AcquireError> {
        let started = Instant::now();
        let deadline = started + Duration::from_millis(config.routing.write_wait_ms);
        let mut changes = self.shared.monitor.subscribe();
        let mut counted = false;
        loop {
            let writer = self.shared.monitor.view().writer.clone();
            match writer {
                WriterState::Backend(name) => {
                    if let Some(index) = self.topology.by_name(&name).map(|b| b.index) {
                        return Ok(self.pool_for(index));
                    }
                }
                WriterState::Conflict(names) => {
                    return Err(AcquireError::WriterConflict {
                        backends: names.join(", "),
                    });
                }
                WriterState::NoneWritable => {}
            }
            if !counted {
                metrics::counter!("sluice_write_waits_total").increment(1);
                counted = true;
            }
            let changed = tokio::time::timeout_at(deadline.into(), changes.changed()).await;
            if !matches!(changed, Ok(Ok(()))) {
                return Err(AcquireError::NoWriter {
                    detail: no_writer_detail(&config.backends, &self.shared.monitor.view()),
                    waited_ms: started.elapsed().as_millis() as u64,
                });
            }
        }
    }

    /// Whether `backend` is the one writes go to.
    pub(super) fn is_writer(&self, backend: &str) -> bool {
        if self.config.monitor.follow_read_only {
            matches!(&self.shared.monitor.view().writer, WriterState::Backend(name) if name == backend)
        } else {
            self.topology
                .primary
                .is_some_and(|i| &*self.topology.backends[i].name == backend)
        }
    }

    /// Skips a backend for reads for a moment after it failed.
    pub(super) fn mark_down(&self, backend: &str) {
        if let Some(b) = self.topology.by_name(backend) {
            self.topology.mark_down(b);
        }
    }

    /// Waits (up to `routing.write_wait_ms`) for the monitor to name a
    /// writer other than `failed`, which just refused a connection.
    pub(super) async fn wait_for_new_writer(&self, failed: &str) -> bool {
        if !self.config.monitor.follow_read_only {
            return false;
        }
        let deadline = Instant::now() + Duration::from_millis(self.config.routing.write_wait_ms);
        let mut changes = self.shared.monitor.subscribe();
        loop {
            if !matches!(&self.shared.monitor.view().writer, WriterState::Backend(name) if name == failed) {
                return true;
            }
            if !matches!(
                tokio::time::timeout_at(deadline.into(), changes.changed()).await,
                Ok(Ok(()))
            ) {
                return false;
            }
        }
    }

    /// The position a replica read must see, under the configured
    /// read-your-writes mode. `Err` when the primary's position could not
    /// be learned (`universal`): the read goes to the primary.
    pub(super) async fn required_position(
        &mut self,
        requirement: Requirement,
    ) -> Result<Option<GtidPos>, ()> {
        match requirement {
            Requirement::None => Ok(None),
            Requirement::Session => Ok(self.causal.clone()),
            Requirement::Global => {
                let written = self.shared.positions.written();
                Ok((!written.is_empty()).then(|| GtidPos::clone(&written)))
            }
            Requirement::PrimaryNow => {
                let limit = Duration::from_millis(
                    self.config
                        .pool
                        .connect_timeout_ms
                        .max(self.config.routing.causal_wait_ms),
                );
                let (pool, _) = self.writer_pool().await.map_err(|_| ())?;
                match self.shared.positions.clone().primary_position(&pool, limit).await {
                    Some(pos) => Ok((!pos.is_empty()).then(|| GtidPos::clone(&pos))),
                    None => {
                        metrics::counter!("sluice_route_fallbacks_total", "reason" => "primary_position_unknown")
                            .increment(1);
                        Err(())
                    }
                }
            }
        }
    }

    /// The replica a read goes to (and the position to wait for there), or
    /// None for the primary; `Err` when the plan refuses the read
    /// (`routing.on_no_replica = "error"`). `required`: what the read must
    /// see (`plan::read_requirement`, resolved).
    fn replica_for_read(
        &mut self,
        facts: Option<&Facts>,
        required: Option<GtidPos>,
    ) -> Result<Option<ReplicaRead>, AcquireError> {
        let view = self.shared.monitor.view();
        let decided = self.plan_replica_read(facts, required.as_ref(), &view);
        let topology = &self.topology;
        let max_lag_ms = facts.and_then(|f| f.lexical.max_lag_ms());
        tracing::debug!(conn_id = self.id, ?decided, causal = ?required, "read plan");
        for i in decided.skipped() {
            metrics::counter!("sluice_reads_skipped_for_lag_total", "backend" => topology.backends[i].name.to_string())
                .increment(1);
        }
        if let Some(outcome) = decided.causal_outcome {
            metrics::counter!("sluice_read_your_writes_total", "outcome" => outcome).increment(1);
        }
        if let Some(reason) = decided.fallback {
            metrics::counter!("sluice_route_fallbacks_total", "reason" => reason).increment(1);
        }
        if decided.all_applied && self.config.routing.read_your_writes == ReadYourWrites::Gtid {
            // Every replica has the session's writes: nothing left to wait for.
            self.causal = None;
        }
        match decided.target {
            ReadTarget::Replica(i) => Ok(Some((i, None))),
            ReadTarget::WaitOn(i) => Ok(Some((i, required))),
            ReadTarget::Primary => Ok(None),
            ReadTarget::Refuse(_) => Err(AcquireError::NoReplica {
                detail: no_replica_detail(
                    &self.config.backends,
                    &view,
                    &self.replica_states,
                    max_lag_ms,
                    &self.config,
                ),
            }),
        }
    }

    /// Where a replica read would go, as the plan decides from the
    /// monitor's view (`self.replica_states` keeps the view it used).
    /// Nothing is counted or changed here; the guard asks too.
    pub(super) fn plan_replica_read(
        &mut self,
        facts: Option<&Facts>,
        required: Option<&GtidPos>,
        view: &View,
    ) -> plan::ReadPlan {
        let reads_no_data = facts.is_some_and(|f| f.ast.reads_no_data);
        let writer = match &view.writer {
            WriterState::Backend(name) => Some(name.as_str()),
            _ => None,
        };
        let follow = self.config.monitor.follow_read_only;
        let topology = &self.topology;
        self.replica_states.clear();
        self.replica_states.extend(topology.backends.iter().map(|b| {
            // A promoted replica takes writes, not reads.
            let replica = b.role == Role::Replica && !(follow && writer == Some(&*b.name));
            let health = if replica { view.health(&b.name) } else { None };
            ReplicaState {
                replica,
                weight: b.weight,
                outstanding: b.in_flight.get(),
                reachable: !topology.is_down(b) && health.and_then(|h| h.up) != Some(false),
                fresh: !health.is_some_and(|h| h.stale),
                lag_ms: health.and_then(|h| h.lag_ms),
                applied: match (required, health.and_then(|h| h.position.as_ref())) {
                    (Some(needed), Some(position)) => position.covers(needed),
                    _ => false,
                },
            }
        }));
        plan::plan_read(ReadInput {
            backends: &self.replica_states,
            causal: required.is_some(),
            max_lag_ms: facts.and_then(|f| f.lexical.max_lag_ms()),
            reads_no_data,
            causal_wait_ms: self.config.routing.causal_wait_ms,
            on_no_replica: self.config.routing.on_no_replica,
            turn: self.shared.next_turn(),
        })
    }

    /// Waits on a replica connection until it has applied `gtid`, at most
    /// `routing.causal_wait_ms`. Returns the connection if it got there;
    /// None sends the read to the primary.
    async fn wait_for_gtid(&self, mut conn: Pooled, gtid: &GtidPos) -> Option<Pooled> {
        let wait_ms = self.config.routing.causal_wait_ms;
        let sql = format!(
            "SELECT MASTER_GTID_WAIT('{gtid}', {:.3})",
            wait_ms as f64 / 1000.0
        );
        match conn.query_rows(&sql).await {
            Ok(rows) if rows.first().and_then(|r| r.first()).and_then(|v| v.as_deref()) == Some("0") => {
                metrics::counter!("sluice_read_your_writes_total", "outcome" => "waited").increment(1);
                Some(conn)
            }
            Ok(_) => {
                metrics::counter!("sluice_read_your_writes_total", "outcome" => "primary").increment(1);
                None
            }
            Err(e) => {
                tracing::info!(
                    conn_id = self.id,
                    "MASTER_GTID_WAIT failed ({e}); reading from the primary"
                );
                metrics::counter!("sluice_read_your_writes_total", "outcome" => "primary").increment(1);
                conn.broken = true;
                discard(conn);
                None
            }
        }
    }
}

fn no_writer_detail(backends: &[BackendConfig], view: &View) -> String {
    let parts: Vec<String> = backends
        .iter()
        .map(|b| match view.health(&b.name) {
            Some(h) if h.up == Some(false) => format!("{} unreachable", b.name),
            Some(h) if h.read_only == Some(true) => format!("{} read-only", b.name),
            Some(_) => format!("{} state unknown", b.name),
            None => format!("{} not probed yet", b.name),
        })
        .collect();
    format!("no backend has @@read_only = 0 ({})", parts.join(", "))
}

fn no_replica_detail(
    backends: &[BackendConfig],
    view: &View,
    states: &[ReplicaState],
    hint: Option<u64>,
    config: &sluice_config::Config,
) -> String {
    if !states.iter().any(|s| s.replica) {
        return "no replica is configured".into();
    }
    let limit = match hint {
        Some(ms) => format!("max_lag_ms = {ms} (hint)"),
        None => format!(
            "routing.max_replica_lag_ms = {}",
            config.routing.max_replica_lag_ms
        ),
    };
    let parts: Vec<String> = backends
        .iter()
        .zip(states)
        .filter(|(_, s)| s.replica)
        .map(|(b, s)| {
            let health = view.health(&b.name);
            if !s.reachable {
                format!("{} unreachable", b.name)
            } else if health.is_some_and(|h| h.replication.is_some_and(|r| !r.running())) {
                format!("{} replication stopped", b.name)
            } else {
                match s.lag_ms {
                    Some(lag) => format!("{} lags {lag:.0} ms", b.name),
                    None => format!("{} lag unknown", b.name),
                }
            }
        })
        .collect();
    format!("{} ({limit})", parts.join(", "))
}
