//! The backend monitor. One task per backend polls it every
//! `monitor.interval_ms` on its own mysql_async connection (as the
//! `[monitor]` user): reachable, `@@read_only`, replication threads, lag and
//! applied GTID position. Another task writes heartbeats on the writable
//! primary so lag is measured in milliseconds. The result is a [`View`]
//! that sessions read lock-free on every routing decision; monitor failures
//! only change the view, they never block client traffic.

mod heartbeat;
mod probe;

pub use probe::{Replication, connect};

use arc_swap::ArcSwap;
use heartbeat::Written;
use probe::Probe;
use sluice_config::{Config, Role};
use sluice_router::{GtidPos, Writer, WriterCandidate, choose_writer, fresh_after};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Health by backend name. Read on every routing decision, so hashed with
/// foldhash: SipHash of a short name cost more than the rest of the lookup.
pub type Backends = HashMap<String, Health, foldhash::fast::RandomState>;

/// Where the monitor reads the live config (it follows reloads).
pub type ConfigSource = Arc<dyn Fn() -> Arc<Config> + Send + Sync>;

/// How a replica's lag was measured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LagSource {
    /// Not a replica, or not measured yet.
    #[default]
    None,
    /// From the heartbeat table (millisecond precision).
    Heartbeat,
    /// From Seconds_Behind_Master (whole seconds).
    SecondsBehindMaster,
    /// A replication thread is stopped: infinitely stale.
    Stopped,
}

impl LagSource {
    pub fn label(self) -> &'static str {
        match self {
            LagSource::None => "none",
            LagSource::Heartbeat => "heartbeat",
            LagSource::SecondsBehindMaster => "seconds_behind_master",
            LagSource::Stopped => "replication_stopped",
        }
    }
}

/// What the monitor last saw of one backend.
#[derive(Debug, Clone, Default)]
pub struct Health {
    /// None until the first probe finished.
    pub up: Option<bool>,
    pub read_only: Option<bool>,
    pub replication: Option<Replication>,
    /// Replication lag; infinite while a replication thread is stopped.
    pub lag_ms: Option<f64>,
    pub lag_source: LagSource,
    /// GTID position the replica has applied.
    pub position: Option<GtidPos>,
    /// Lagging beyond `routing.max_replica_lag_ms` (with hysteresis).
    pub stale: bool,
    /// The last probe's error.
    pub error: Option<String>,
}

/// Which backend takes writes right now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum WriterState {
    Backend(String),
    #[default]
    NoneWritable,
    /// These backends are all writable: writes are refused.
    Conflict(Vec<String>),
}

/// The monitor's picture of every backend.
#[derive(Debug, Clone, Default)]
pub struct View {
    pub backends: Backends,
    pub writer: WriterState,
}

impl View {
    pub fn health(&self, backend: &str) -> Option<&Health> {
        self.backends.get(backend)
    }
}

pub struct Monitor {
    view: ArcSwap<View>,
    /// Bumped whenever the view changes (writers waiting for a primary).
    changed: tokio::sync::watch::Sender<u64>,
    written: Mutex<Written>,
    updating: Mutex<()>,
    /// Set when Sluice stops: the tasks close their connections and end.
    stopping: tokio::sync::watch::Sender<bool>,
    /// Monitor tasks running (supervisor, probes, heartbeat writer).
    running: tokio::sync::watch::Sender<usize>,
}

impl Monitor {
    pub fn new(config: &Config) -> Arc<Monitor> {
        let monitor = Arc::new(Monitor {
            view: ArcSwap::from_pointee(View::default()),
            changed: tokio::sync::watch::Sender::new(0),
            written: Mutex::new(Written::default()),
            updating: Mutex::new(()),
            stopping: tokio::sync::watch::Sender::new(false),
            running: tokio::sync::watch::Sender::new(0),
        });
        let writer = writer_state(config, &Backends::default());
        monitor.view.store(Arc::new(View {
            backends: Backends::default(),
            writer,
        }));
        monitor
    }

    pub fn view(&self) -> arc_swap::Guard<Arc<View>> {
        self.view.load()
    }

    /// A receiver that wakes on every view change.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Starts the probe and heartbeat tasks.
    pub fn spawn(self: &Arc<Self>, config: ConfigSource) {
        if let WriterState::Backend(name) = &self.view.load().writer {
            metrics::gauge!("sluice_backend_writer", "backend" => name.clone()).set(1.0);
        }
        tokio::spawn(supervise(self.clone(), config.clone()));
        tokio::spawn(write_heartbeats(self.clone(), config));
    }

    /// Stops the monitor (shutdown): each task closes its connection with
    /// COM_QUIT, so the servers log no aborted connection for it. Waits at
    /// most `limit` (a probe in flight to a frozen server is cut off).
    pub async fn stop(&self, limit: Duration) {
        self.stopping.send_replace(true);
        let mut running = self.running.subscribe();
        let _ = tokio::time::timeout(limit, running.wait_for(|n| *n == 0)).await;
    }

    /// Counts a task as running until the returned guard is dropped.
    fn run(self: &Arc<Self>) -> Running {
        self.running.send_modify(|n| *n += 1);
        Running(self.clone())
    }

    /// Sleeps until `until`: false when Sluice stops first (or had stopped).
    async fn rest_until(&self, until: Instant) -> bool {
        let mut stopping = self.stopping.subscribe();
        let slept = tokio::select! {
            () = tokio::time::sleep_until(until.into()) => true,
            _ = stopping.wait_for(|s| *s) => false,
        };
        slept && !*stopping.borrow()
    }

    /// Folds one probe's result into the view.
    fn record(&self, config: &Config, name: &str, observed: Result<Probe, String>) {
        let previous = self.view.load().backends.get(name).cloned().unwrap_or_default();
        let health = match observed {
            Err(error) => Health {
                up: Some(false),
                stale: previous.stale,
                error: Some(error),
                ..Health::default()
            },
            Ok(probe) => {
                // A promoted replica is the writer now, not a stale replica.
                let promoted = self.view.load().writer == WriterState::Backend(name.to_string());
                let replica = !promoted
                    && config
                        .backends
                        .iter()
                        .any(|b| b.name == name && b.role == Role::Replica);
                let (lag_ms, lag_source) = self.lag(config, &probe, replica);
                if probe.replication_refused.is_some() && previous.error != probe.replication_refused {
                    tracing::warn!(
                        backend = name,
                        "{}; its lag is unknown",
                        probe.replication_refused.as_deref().unwrap_or_default()
                    );
                }
                Health {
                    up: Some(true),
                    read_only: probe.read_only,
                    replication: probe.replication,
                    lag_ms,
                    lag_source,
                    position: probe.position,
                    stale: !fresh_after(!previous.stale, lag_ms, config.routing.max_replica_lag_ms),
                    error: probe.replication_refused,
                }
            }
        };
        match (&health.error, health.up, previous.up) {
            (Some(error), Some(false), before) if before != Some(false) => {
                tracing::warn!(backend = name, "monitor cannot reach the backend: {error}");
            }
            (_, Some(true), Some(false)) => {
                tracing::info!(backend = name, "monitor reaches the backend again")
            }
            _ => {}
        }
        export(name, &health, &previous);
        self.update(|view| {
            view.backends.insert(name.to_string(), health);
            let writer = writer_state(config, &view.backends);
            if writer != view.writer {
                announce(&view.writer, &writer);
                view.writer = writer;
            }
        });
    }

    fn lag(&self, config: &Config, probe: &Probe, replica: bool) -> (Option<f64>, LagSource) {
        let Some(replication) = probe.replication else {
            // A configured replica that replicates from nothing holds data
            // of unknown age: infinitely stale.
            if replica && probe.replication_refused.is_none() {
                return (Some(f64::INFINITY), LagSource::Stopped);
            }
            return (None, LagSource::None);
        };
        if !replication.running() {
            return (Some(f64::INFINITY), LagSource::Stopped);
        }
        // Heartbeats count only while Sluice is writing them.
        match probe
            .heartbeat_us
            .and_then(|us| self.heartbeat_lag_ms(config, us))
        {
            Some(lag) => (Some(lag), LagSource::Heartbeat),
            None => (
                replication.seconds_behind_master.map(|s| s as f64 * 1000.0),
                LagSource::SecondsBehindMaster,
            ),
        }
    }

    /// Lag of a reader (the guard's binlog feed) whose newest heartbeat is
    /// `seen_us`, measured like a replica's; None while Sluice is not
    /// writing heartbeats it can trust.
    pub fn heartbeat_lag_ms(&self, config: &Config, seen_us: u64) -> Option<f64> {
        let trust = Duration::from_millis(
            config
                .monitor
                .heartbeat_interval_ms
                .saturating_mul(3)
                .max(config.monitor.interval_ms.saturating_mul(2))
                .max(1000),
        );
        let now = heartbeat::now_us();
        let written = self.written.lock().unwrap_or_else(|e| e.into_inner());
        written.latest_within(now, trust)?;
        Some(written.lag_ms(seen_us, now))
    }

    fn forget(&self, config: &Config, name: &str) {
        self.update(|view| {
            view.backends.remove(name);
            view.writer = writer_state(config, &view.backends);
        });
        for gauge in [
            "sluice_backend_up",
            "sluice_backend_writer",
            "sluice_backend_stale",
        ] {
            metrics::gauge!(gauge, "backend" => name.to_string()).set(0.0);
        }
    }

    /// Changes the view. Updates are serialized (not `rcu`) so a role
    /// change is announced and counted exactly once.
    fn update(&self, change: impl FnOnce(&mut View)) {
        let _one_at_a_time = self.updating.lock().unwrap_or_else(|e| e.into_inner());
        let mut view = View::clone(&self.view.load());
        change(&mut view);
        self.view.store(Arc::new(view));
        self.changed.send_modify(|g| *g += 1);
    }

    /// The backend heartbeats go to: the current writer.
    fn writer_address(&self, config: &Config) -> Option<(String, String)> {
        let WriterState::Backend(name) = &self.view.load().writer else {
            return None;
        };
        let backend = config.backends.iter().find(|b| &b.name == name)?;
        Some((backend.name.clone(), backend.address.clone()))
    }
}

fn writer_state(config: &Config, backends: &Backends) -> WriterState {
    let candidates: Vec<WriterCandidate> = config
        .backends
        .iter()
        .map(|b| {
            let health = backends.get(&b.name);
            WriterCandidate {
                configured_primary: b.role == Role::Primary,
                up: health.and_then(|h| h.up),
                read_only: health.and_then(|h| h.read_only),
            }
        })
        .collect();
    let name = |i: usize| config.backends[i].name.clone();
    match choose_writer(&candidates, config.monitor.follow_read_only) {
        Writer::Backend(i) => WriterState::Backend(name(i)),
        Writer::NoneWritable => WriterState::NoneWritable,
        Writer::Conflict(all) => WriterState::Conflict(all.into_iter().map(name).collect()),
    }
}

fn announce(old: &WriterState, new: &WriterState) {
    if let WriterState::Backend(old) = old {
        metrics::gauge!("sluice_backend_writer", "backend" => old.clone()).set(0.0);
    }
    match new {
        WriterState::Backend(name) => {
            tracing::warn!(backend = name, "writes now go to `{name}`");
            metrics::gauge!("sluice_backend_writer", "backend" => name.clone()).set(1.0);
            metrics::counter!("sluice_backend_role_changes_total", "backend" => name.clone(), "role" => "writer")
                .increment(1);
        }
        WriterState::NoneWritable => {
            tracing::error!("no backend is writable: writes wait up to routing.write_wait_ms, then fail");
            metrics::counter!("sluice_backend_role_changes_total", "backend" => "", "role" => "none_writable")
                .increment(1);
        }
        WriterState::Conflict(names) => {
            tracing::error!(
                "backends {} are all writable: refusing writes rather than split the brain",
                names.join(", ")
            );
            metrics::counter!("sluice_backend_role_changes_total", "backend" => names.join(","), "role" => "conflict")
                .increment(1);
        }
    }
}

/// Publishes one backend's health as gauges.
fn export(name: &str, health: &Health, previous: &Health) {
    let up = health.up == Some(true);
    metrics::gauge!("sluice_backend_up", "backend" => name.to_string()).set(f64::from(u8::from(up)));
    if !up {
        metrics::counter!("sluice_monitor_probe_failures_total", "backend" => name.to_string()).increment(1);
    }
    if let Some(ro) = health.read_only {
        metrics::gauge!("sluice_backend_read_only", "backend" => name.to_string())
            .set(f64::from(u8::from(ro)));
    }
    if let Some(replication) = health.replication {
        metrics::gauge!("sluice_backend_replication_running", "backend" => name.to_string())
            .set(f64::from(u8::from(replication.running())));
    }
    if let Some(lag) = health.lag_ms {
        // The exporter would print infinity as "inf", which Prometheus does
        // not parse: a stopped thread shows NaN and `_running` says why.
        let seconds = if lag.is_finite() { lag / 1000.0 } else { f64::NAN };
        metrics::gauge!("sluice_backend_replication_lag_seconds", "backend" => name.to_string()).set(seconds);
    } else if previous.lag_ms.is_some() {
        // Unknown now (down, or not readable): do not keep showing the old value.
        metrics::gauge!("sluice_backend_replication_lag_seconds", "backend" => name.to_string())
            .set(f64::NAN);
    }
    metrics::gauge!("sluice_backend_stale", "backend" => name.to_string())
        .set(f64::from(u8::from(health.stale)));
    if health.stale != previous.stale && up {
        let lag = health.lag_ms.unwrap_or(f64::NAN);
        if health.stale {
            tracing::warn!(
                backend = name,
                "replica lags {lag:.0} ms: no new reads until it catches up"
            );
        } else {
            tracing::info!(backend = name, "replica caught up ({lag:.0} ms): reads resume");
        }
    }
}

/// A running monitor task (see [`Monitor::stop`]).
struct Running(Arc<Monitor>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.running.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// Closes a monitor connection with COM_QUIT (bounded: the server may be gone).
async fn close(conn: Option<mysql_async::Conn>) {
    if let Some(conn) = conn {
        let _ = tokio::time::timeout(Duration::from_millis(500), conn.disconnect()).await;
    }
}

/// Keeps one probe task per configured backend, following reloads.
async fn supervise(monitor: Arc<Monitor>, config: ConfigSource) {
    let _running = monitor.run();
    let mut tasks: HashMap<String, (String, tokio::task::JoinHandle<()>)> = HashMap::new();
    loop {
        let current = config();
        tasks.retain(|name, (address, task)| {
            let keep = current
                .backends
                .iter()
                .any(|b| &b.name == name && &b.address == address);
            if !keep {
                task.abort();
                monitor.forget(&current, name);
            }
            // A task that ended (it never should) is started again below.
            keep && !task.is_finished()
        });
        for backend in &current.backends {
            if !tasks.contains_key(&backend.name) {
                let task = tokio::spawn(watch_backend(
                    monitor.clone(),
                    config.clone(),
                    backend.name.clone(),
                    backend.address.clone(),
                ));
                tasks.insert(backend.name.clone(), (backend.address.clone(), task));
            }
        }
        let pause = Duration::from_millis(current.monitor.interval_ms.min(1000));
        if !monitor.rest_until(Instant::now() + pause).await {
            return;
        }
    }
}

async fn watch_backend(monitor: Arc<Monitor>, config: ConfigSource, name: String, address: String) {
    let _running = monitor.run();
    let mut conn: Option<mysql_async::Conn> = None;
    let mut conn_tls = sluice_config::BackendTls::default();
    loop {
        let current = config();
        // A reload that changes the backend's TLS settings reconnects.
        let tls = backend_tls(&current, &name);
        if tls != conn_tls {
            conn = None;
            conn_tls = tls.clone();
        }
        let interval = Duration::from_millis(current.monitor.interval_ms);
        let started = Instant::now();
        // A frozen backend must not hold the view back for long.
        let limit = interval.clamp(Duration::from_millis(500), Duration::from_secs(2));
        let attempt = async {
            if conn.is_none() {
                let (user, password) = current.monitor_account().unwrap_or(("", ""));
                conn = Some(probe::connect(&address, user, password, &tls).await?);
            }
            match conn.as_mut() {
                Some(c) => probe::probe(c, current.monitor.heartbeat(), current.server.instance_id()).await,
                None => Ok(Probe::default()),
            }
        };
        let observed = match tokio::time::timeout(limit, attempt).await {
            Ok(Ok(probe)) => Ok(probe),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {} ms", limit.as_millis())),
        };
        match &observed {
            Err(e) => {
                tracing::debug!(backend = name, "monitor probe failed: {e}");
                conn = None;
            }
            // Global privileges are read at login: a grant given after the
            // refusal reaches only a new connection, so reconnect.
            Ok(probe) if probe.replication_refused.is_some() => conn = None,
            Ok(_) => {}
        }
        monitor.record(&current, &name, observed);
        if !monitor.rest_until(started + interval).await {
            return close(conn).await;
        }
    }
}

/// Writes heartbeats to the current writer.
async fn write_heartbeats(monitor: Arc<Monitor>, config: ConfigSource) {
    let _running = monitor.run();
    let mut conn: Option<(String, mysql_async::Conn)> = None;
    let mut table_ready = false;
    let mut failing = false;
    loop {
        let current = config();
        let interval = Duration::from_millis(current.monitor.heartbeat_interval_ms);
        let started = Instant::now();
        let target = monitor.writer_address(&current);
        if let (Some((schema, table)), Some((name, address))) = (current.monitor.heartbeat(), target) {
            if conn.as_ref().is_some_and(|(n, _)| n != &name) {
                conn = None;
            }
            let attempt = async {
                if conn.is_none() {
                    let (user, password) = current.monitor_account().unwrap_or(("", ""));
                    let tls = backend_tls(&current, &name);
                    conn = Some((
                        name.clone(),
                        probe::connect(&address, user, password, &tls).await?,
                    ));
                    table_ready = false;
                }
                let Some((_, c)) = conn.as_mut() else {
                    return Ok(None);
                };
                if !table_ready {
                    // A DBA may have created the table for a user without
                    // CREATE: a failure here is only fatal if the write fails.
                    if let Err(e) = heartbeat::ensure_table(c, schema, table).await {
                        tracing::debug!(backend = name, "creating {schema}.{table}: {e}");
                    }
                    table_ready = true;
                }
                heartbeat::beat(c, schema, table, current.server.instance_id())
                    .await
                    .map(Some)
            };
            let limit = interval.max(Duration::from_secs(1));
            match tokio::time::timeout(limit, attempt).await {
                Ok(Ok(Some(ts))) => {
                    monitor.written.lock().unwrap_or_else(|e| e.into_inner()).push(ts);
                    metrics::counter!("sluice_heartbeat_writes_total", "result" => "ok").increment(1);
                    if failing {
                        tracing::info!(backend = name, "heartbeats are being written again");
                        failing = false;
                    }
                }
                Ok(Ok(None)) => {}
                outcome => {
                    let why = match &outcome {
                        Ok(Err(e)) => e.to_string(),
                        _ => format!("no answer within {} ms", limit.as_millis()),
                    };
                    // A server refusal keeps the connection (try creating
                    // the table again next time); anything else reconnects.
                    table_ready = false;
                    let refused = matches!(outcome, Ok(Err(mysql_async::Error::Server(_))));
                    metrics::counter!("sluice_heartbeat_writes_total", "result" => "error").increment(1);
                    if !failing {
                        tracing::warn!(
                            backend = name,
                            "cannot write heartbeats to {schema}.{table} ({why}); replica lag falls back to \
                             Seconds_Behind_Master (whole seconds)"
                        );
                        failing = true;
                    }
                    if !refused {
                        conn = None;
                    }
                }
            }
        }
        if !monitor.rest_until(started + interval).await {
            return close(conn.map(|(_, c)| c)).await;
        }
    }
}

/// The TLS settings of the backend called `name` (the default, `preferred`,
/// if it is no longer configured).
fn backend_tls(config: &Config, name: &str) -> sluice_config::BackendTls {
    config
        .backends
        .iter()
        .find(|b| b.name == name)
        .map(|b| b.tls_settings())
        .unwrap_or_default()
}
