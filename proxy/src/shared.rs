//! State shared by every client session: the live config, the pools, what
//! the primary announced, and connection counting.

use crate::profile::ServerProfile;
use crate::topology::Topology;
use arc_swap::ArcSwap;
use sluice_config::Config;
use sluice_pool::monitor::Monitor;
use sluice_pool::{PoolSettings, Pools};
use sluice_router::Classifier;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Statement templates whose classification is cached.
const CLASSIFICATION_CACHE_ENTRIES: usize = 10_000;

pub struct Shared {
    pub config: ArcSwap<Config>,
    pub pools: Arc<Pools>,
    pub profile: ArcSwap<ServerProfile>,
    pub classifier: Classifier,
    pub monitor: Arc<Monitor>,
    pub attribute_sets: crate::attributes::AttributeSets,
    /// What reads must see in `global` / `universal` read-your-writes.
    pub positions: Arc<crate::positions::Positions>,
    /// Connected clients by id, for KILL.
    pub clients_by_id: crate::clients::Clients,
    clients: AtomicUsize,
    /// The backends of the live config, by index.
    pub topology: ArcSwap<Topology>,
    turn: AtomicUsize,
    /// Bumped by every applied reload; sessions re-resolve pools on change.
    generation: AtomicU64,
    /// Unix time of the last applied config.
    loaded_at: AtomicU64,
    pub started: Instant,
    /// Ready for new clients (`GET /readyz`, systemd's READY=1).
    pub readiness: crate::readiness::Readiness,
    /// Set on SIGTERM/SIGINT: idle clients are closed, transactions finish.
    pub shutdown: tokio::sync::watch::Sender<bool>,
    /// Result-set metadata of guardable lookups, for the guard's answers.
    pub answers: crate::answers::Answers,
    /// The empty-key guard: filters of the keys in `[guard]` tables.
    pub guard: Arc<sluice_guard::Guard>,
    /// TLS towards clients from `[server.tls]` (None: plain text only);
    /// replaced on reload, so new handshakes use the new certificate.
    pub tls: arc_swap::ArcSwapOption<rustls::ServerConfig>,
    /// Password checks' state: caching_sha2's cache and RSA pair.
    pub auth: crate::auth::AuthState,
    /// The writer's address, for the guard's binlog stream.
    guard_writer: tokio::sync::watch::Sender<Option<String>>,
    /// Client sessions per worker thread.
    pub worker_sessions: crate::workers::WorkerSessions,
}

impl Shared {
    /// Client sessions on each worker thread (empty on one thread).
    pub fn worker_session_counts(&self) -> Vec<usize> {
        self.worker_sessions
            .iter()
            .map(|n| n.load(std::sync::atomic::Ordering::Relaxed))
            .collect()
    }

    pub fn new(config: Config, worker_sessions: crate::workers::WorkerSessions) -> Arc<Self> {
        let pools = Pools::new(pool_settings(&config));
        let monitor = Monitor::new(&config);
        let started = Instant::now();
        crate::digests::configure(&config.digests);
        let config = Arc::new(config);
        let topology = Topology::new(config.clone(), 1, started, None);
        Arc::new(Shared {
            config: ArcSwap::new(config),
            pools,
            profile: ArcSwap::from_pointee(ServerProfile::fallback()),
            classifier: Classifier::new(CLASSIFICATION_CACHE_ENTRIES),
            monitor,
            attribute_sets: Default::default(),
            clients_by_id: Default::default(),
            positions: Default::default(),
            clients: AtomicUsize::new(0),
            topology: ArcSwap::from_pointee(topology),
            turn: AtomicUsize::new(0),
            generation: AtomicU64::new(1),
            loaded_at: AtomicU64::new(unix_now()),
            started,
            readiness: Default::default(),
            shutdown: tokio::sync::watch::Sender::new(false),
            answers: crate::answers::Answers::new(ANSWER_SHAPES),
            guard: sluice_guard::Guard::new(),
            guard_writer: tokio::sync::watch::Sender::new(None),
            worker_sessions,
            tls: Default::default(),
            auth: Default::default(),
        })
    }

    /// Loads what `config` names for client security (the TLS certificate,
    /// the caching_sha2 RSA pair); on error nothing changes.
    pub fn configure_security(&self, config: &Config) -> Result<(), String> {
        let tls = match &config.server.tls {
            Some(tls) => Some(crate::tls::server_config(tls)?),
            None => None,
        };
        self.auth.configure(config)?;
        self.tls.store(tls);
        Ok(())
    }

    /// Counts a client in, or returns None when `max_client_connections` is
    /// reached. The guard counts it out when dropped.
    pub fn admit_client(self: &Arc<Self>) -> Option<ClientGuard> {
        let max = self.config.load().server.max_client_connections;
        let mut current = self.clients.load(Ordering::Relaxed);
        loop {
            if current >= max {
                return None;
            }
            match self.clients.compare_exchange_weak(
                current,
                current + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(now) => current = now,
            }
        }
        metrics::gauge!("sluice_client_connections").increment(1.0);
        Some(ClientGuard { shared: self.clone() })
    }

    /// Swaps in a validated config.
    pub fn install_config(&self, config: Config) {
        let generation = self.generation() + 1;
        crate::digests::configure(&config.digests);
        let config = Arc::new(config);
        let topology = Topology::new(
            config.clone(),
            generation,
            self.started,
            Some(&self.topology.load()),
        );
        self.config.store(config);
        self.topology.store(Arc::new(topology));
        self.generation.store(generation, Ordering::Release);
        self.loaded_at.store(unix_now(), Ordering::Relaxed);
        metrics::gauge!("sluice_config_generation").set(self.generation() as f64);
        self.configure_guard(&self.config.load());
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn loaded_at(&self) -> u64 {
        self.loaded_at.load(Ordering::Relaxed)
    }

    pub fn shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Starts the backend monitor on the live config.
    pub fn spawn_monitor(self: &Arc<Self>) {
        let shared = self.clone();
        self.monitor.spawn(Arc::new(move || shared.config.load_full()));
    }

    /// Starts the guard's binlog feed on the live config. It reads from
    /// the backend that takes writes: the configured primary, or with
    /// `monitor.follow_read_only` the one the monitor finds writable.
    pub fn spawn_guard(self: &Arc<Self>) {
        self.configure_guard(&self.config.load());
        let shared = self.clone();
        let mut changes = self.monitor.subscribe();
        tokio::spawn(async move {
            while changes.changed().await.is_ok() {
                shared.update_guard_writer();
            }
        });
    }

    fn update_guard_writer(&self) {
        let now = self.writer_address();
        self.guard_writer.send_if_modified(|was| {
            let changed = *was != now;
            *was = now;
            changed
        });
    }

    fn configure_guard(&self, config: &Config) {
        self.update_guard_writer();
        if !config.guard.tables.is_empty() {
            if let Some(why) = guard_never_answers(config) {
                tracing::warn!("the empty-key guard can never answer: {why}; it only keeps its filters");
            }
        }
        self.guard.configure(config, self.guard_writer.subscribe());
    }

    /// The address writes go to now, if any.
    pub fn writer_address(&self) -> Option<String> {
        let topology = self.topology.load();
        if self.config.load().monitor.follow_read_only {
            match &self.monitor.view().writer {
                sluice_pool::monitor::WriterState::Backend(name) => {
                    topology.by_name(name).map(|b| b.address.to_string())
                }
                _ => None,
            }
        } else {
            topology
                .primary
                .and_then(|i| topology.backends.get(i))
                .map(|b| b.address.to_string())
        }
    }

    /// A counter that rotates ties between equally loaded replicas.
    pub fn next_turn(&self) -> usize {
        self.turn.fetch_add(1, Ordering::Relaxed)
    }

    pub fn client_count(&self) -> usize {
        self.clients.load(Ordering::Relaxed)
    }
}

/// Statement shapes whose result-set metadata the guard keeps.
const ANSWER_SHAPES: usize = 4096;

pub struct ClientGuard {
    shared: Arc<Shared>,
}

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.shared.clients.fetch_sub(1, Ordering::AcqRel);
        metrics::gauge!("sluice_client_connections").decrement(1.0);
    }
}

pub fn pool_settings(config: &Config) -> PoolSettings {
    PoolSettings {
        max_per_backend: config.pool.max_connections_per_backend,
        acquire_timeout: Duration::from_millis(config.pool.acquire_timeout_ms),
        connect_timeout: Duration::from_millis(config.pool.connect_timeout_ms),
        max_lifetime: (config.pool.max_lifetime_ms > 0)
            .then(|| Duration::from_millis(config.pool.max_lifetime_ms)),
        min_idle: config.pool.min_idle,
        max_queue: config.pool.max_queue,
        adaptive_limit: config.pool.adaptive_limit,
    }
}

/// Why a config leaves the guard no read to answer: it only answers reads
/// that may go to a replica.
pub fn guard_never_answers(config: &Config) -> Option<&'static str> {
    if config.pool.mode == sluice_config::PoolMode::Session {
        Some("pool.mode = \"session\" keeps every client on the primary")
    } else if config.routing.mode == sluice_config::RoutingMode::PrimaryOnly {
        Some("routing.mode = \"primary_only\" sends every read to the primary")
    } else {
        None
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
