//! Which backend a command's connection comes from. Writes go to the writer
//! (the configured primary, or with `monitor.follow_read_only` whichever
//! backend is writable, waiting up to `routing.write_wait_ms` when none
//! is). Reads go to a replica the monitor considers fresh enough and, when
//! the session must read its own writes (`read_your_writes = "gtid"`), one
//! that has applied the session's last GTID — or that gets there within
//! `routing.causal_wait_ms` (MASTER_GTID_WAIT) — else to the primary.

use super::Session;
use sluice_config::{BackendConfig, OnNoReplica, ReadYourWrites, Role};
use sluice_pool::monitor::{View, WriterState};
use sluice_pool::{AcquireError, BackendPool, Pooled, discard};
use sluice_router::{Facts, GtidPos, NoReplica, ReadChoice, ReadRequest, ReplicaState, choose_read};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Where a read goes.
pub(super) enum ReadTarget {
    /// This replica; `wait_for` is the GTID to wait for there first.
    Replica {
        name: String,
        address: String,
        wait_for: Option<GtidPos>,
    },
    /// No replica qualified: the primary (counted by reason).
    Primary,
}

impl Session {
    /// The pool of the backend that takes writes now.
    pub(super) async fn writer_pool(&mut self) -> Result<BackendPool, AcquireError> {
        let config = self.shared.config.load_full();
        if !config.monitor.follow_read_only {
            let primary = config.primary().ok_or_else(|| AcquireError::Closed {
                backend: "primary".into(),
            })?;
            return Ok(self.pool_for(&primary.name, &primary.address));
        }
        let started = Instant::now();
        let deadline = started + Duration::from_millis(config.routing.write_wait_ms);
        let mut changes = self.shared.monitor.subscribe();
        let mut counted = false;
        loop {
            let writer = self.shared.monitor.view().writer.clone();
            match writer {
                WriterState::Backend(name) => {
                    if let Some(b) = config.backends.iter().find(|b| b.name == name) {
                        return Ok(self.pool_for(&b.name, &b.address));
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
        let config = self.shared.config.load();
        if config.monitor.follow_read_only {
            self.shared.monitor.view().writer == WriterState::Backend(backend.to_string())
        } else {
            config.primary().is_some_and(|p| p.name == backend)
        }
    }

    /// Waits (up to `routing.write_wait_ms`) for the monitor to name a
    /// writer other than `failed`, which just refused a connection.
    pub(super) async fn wait_for_new_writer(&self, failed: &str) -> bool {
        let config = self.shared.config.load();
        if !config.monitor.follow_read_only {
            return false;
        }
        let deadline = Instant::now() + Duration::from_millis(config.routing.write_wait_ms);
        let mut changes = self.shared.monitor.subscribe();
        loop {
            if self.shared.monitor.view().writer != WriterState::Backend(failed.to_string()) {
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

    /// Chooses the replica for a read, or the primary; `Err` when no
    /// replica qualifies and `routing.on_no_replica = "error"`.
    /// What a read must see under the configured read-your-writes mode:
    /// the session's writes (`gtid`), every write through this instance
    /// (`global`), or the primary's position now (`universal`; asked once
    /// for all reads arriving together). `Err` when the primary's position
    /// could not be learned: the read goes to the primary.
    pub(super) async fn read_requirement(&mut self, facts: Option<&Facts>) -> Result<Option<GtidPos>, ()> {
        if facts.is_some_and(|f| f.ast.reads_no_data) {
            return Ok(None);
        }
        let config = self.shared.config.load_full();
        match config.routing.read_your_writes {
            ReadYourWrites::Gtid => Ok(self.causal.clone()),
            ReadYourWrites::Global => {
                let written = self.shared.positions.written();
                Ok((!written.is_empty()).then(|| GtidPos::clone(&written)))
            }
            ReadYourWrites::Universal => {
                let limit =
                    Duration::from_millis(config.pool.connect_timeout_ms.max(config.routing.causal_wait_ms));
                let pool = self.writer_pool().await.map_err(|_| ())?;
                match self.shared.positions.clone().primary_position(&pool, limit).await {
                    Some(pos) => Ok((!pos.is_empty()).then(|| GtidPos::clone(&pos))),
                    None => {
                        metrics::counter!("sluice_route_fallbacks_total", "reason" => "primary_position_unknown")
                            .increment(1);
                        Err(())
                    }
                }
            }
            ReadYourWrites::Off | ReadYourWrites::PrimaryWindow => Ok(None),
        }
    }

    pub(super) fn read_target(
        &mut self,
        facts: Option<&Facts>,
        required: Option<GtidPos>,
    ) -> Result<ReadTarget, AcquireError> {
        let config = self.shared.config.load_full();
        let view = self.shared.monitor.view();
        let writer = match &view.writer {
            WriterState::Backend(name) => Some(name.as_str()),
            _ => None,
        };
        // A promoted replica takes writes, not reads.
        let replicas: Vec<&BackendConfig> = config
            .backends
            .iter()
            .filter(|b| {
                b.role == Role::Replica && (!config.monitor.follow_read_only || writer != Some(&b.name))
            })
            .collect();
        let states: Vec<ReplicaState<'_>> = replicas
            .iter()
            .map(|b| {
                let health = view.health(&b.name);
                ReplicaState {
                    weight: b.weight,
                    outstanding: self.shared.load(&b.name).load(Ordering::Relaxed),
                    reachable: !self.shared.is_down(&b.name) && health.and_then(|h| h.up) != Some(false),
                    fresh: !health.is_some_and(|h| h.stale),
                    lag_ms: health.and_then(|h| h.lag_ms),
                    position: health.and_then(|h| h.position.as_ref()),
                }
            })
            .collect();
        let mut required = required;
        if let Some(causal) = &required {
            // Every replica has it: nothing left to wait for.
            if !states.is_empty()
                && states
                    .iter()
                    .all(|s| s.position.is_some_and(|p| p.covers(causal)))
            {
                required = None;
                if config.routing.read_your_writes == ReadYourWrites::Gtid {
                    self.causal = None;
                }
            }
        }
        let request = ReadRequest {
            max_lag_ms: facts.and_then(|f| f.lexical.max_lag_ms()),
            causal: required.as_ref(),
            causal_wait_ms: config.routing.causal_wait_ms,
            reads_no_data: facts.is_some_and(|f| f.ast.reads_no_data),
        };
        let plan = choose_read(&states, request, self.shared.next_turn());
        tracing::debug!(conn_id = self.id, choice = ?plan.choice, causal = ?required, "read target");
        for &i in &plan.skipped_for_lag {
            metrics::counter!("sluice_reads_skipped_for_lag_total", "backend" => replicas[i].name.clone())
                .increment(1);
        }
        let causal = required.is_some() && !request.reads_no_data;
        let to_replica = |i: usize, wait_for: Option<GtidPos>| ReadTarget::Replica {
            name: replicas[i].name.clone(),
            address: replicas[i].address.clone(),
            wait_for,
        };
        match plan.choice {
            ReadChoice::Replica(i) => {
                if causal {
                    metrics::counter!("sluice_read_your_writes_total", "outcome" => "replica").increment(1);
                }
                Ok(to_replica(i, None))
            }
            ReadChoice::WaitOn(i) => Ok(to_replica(i, required.clone())),
            ReadChoice::NoReplica(NoReplica::NotCaughtUp) => {
                metrics::counter!("sluice_read_your_writes_total", "outcome" => "primary").increment(1);
                Ok(ReadTarget::Primary)
            }
            ReadChoice::NoReplica(why) => {
                if causal {
                    metrics::counter!("sluice_read_your_writes_total", "outcome" => "primary").increment(1);
                }
                if config.routing.on_no_replica == OnNoReplica::Error && why != NoReplica::NoneConfigured {
                    return Err(AcquireError::NoReplica {
                        detail: no_replica_detail(&replicas, &view, &states, request.max_lag_ms, &config),
                    });
                }
                metrics::counter!("sluice_route_fallbacks_total", "reason" => why.label()).increment(1);
                Ok(ReadTarget::Primary)
            }
        }
    }

    /// Waits on a replica connection until it has applied `gtid`, at most
    /// `routing.causal_wait_ms`. Returns the connection if it got there;
    /// None sends the read to the primary.
    pub(super) async fn wait_for_gtid(&self, mut conn: Pooled, gtid: &GtidPos) -> Option<Pooled> {
        let wait_ms = self.shared.config.load().routing.causal_wait_ms;
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
    replicas: &[&BackendConfig],
    view: &View,
    states: &[ReplicaState<'_>],
    hint: Option<u64>,
    config: &sluice_config::Config,
) -> String {
    if replicas.is_empty() {
        return "no replica is configured".into();
    }
    let limit = match hint {
        Some(ms) => format!("max_lag_ms = {ms} (hint)"),
        None => format!(
            "routing.max_replica_lag_ms = {}",
            config.routing.max_replica_lag_ms
        ),
    };
    let parts: Vec<String> = replicas
        .iter()
        .zip(states)
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
