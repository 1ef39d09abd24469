//! The deadpool pools: one per (backend, user, FOUND_ROWS profile), created
//! on first use, checked out with a bounded wait and turned into a distinct
//! [`AcquireError`] per cause.

use crate::{AcquireError, BackendConn, BackendError, ConnectTarget};
use deadpool::Runtime;
use deadpool::managed::{self, Metrics, Object, PoolError, RecycleError, RecycleResult, TimeoutType};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

pub struct BackendManager {
    target: ConnectTarget,
    settings: PoolSettings,
}

/// A connection idle at least this long is checked before a client gets
/// it (a cheap non-blocking peek for a closed socket).
const PEEK_AFTER_IDLE: Duration = Duration::from_millis(50);

impl managed::Manager for BackendManager {
    type Type = BackendConn;
    type Error = BackendError;

    async fn create(&self) -> Result<BackendConn, BackendError> {
        // Boxed: connecting is rare and its future large; deadpool inlines
        // it into every checkout's future otherwise.
        let conn = Box::pin(BackendConn::connect(&self.target)).await?;
        metrics::counter!("sluice_backend_connections_opened_total", "backend" => self.target.backend.clone())
            .increment(1);
        Ok(conn)
    }

    /// Runs at every checkout: a connection that is broken, too old, closed
    /// by the server, or silent for too long without a successful ping is
    /// replaced before any client sees it.
    async fn recycle(&self, conn: &mut BackendConn, _: &Metrics) -> RecycleResult<BackendError> {
        let backend = &self.target.backend;
        if conn.broken {
            return Err(replaced(backend, "broken"));
        }
        if self
            .settings
            .max_lifetime
            .is_some_and(|max| conn.created.elapsed() > max.mul_f64(conn.jitter))
        {
            return Err(replaced(backend, "max_lifetime"));
        }
        let idle = conn.last_io.elapsed();
        if idle >= PEEK_AFTER_IDLE && conn.peer_closed() {
            return Err(replaced(backend, "closed_by_server"));
        }
        if idle >= conn.keepalive_interval() {
            metrics::counter!("sluice_pool_keepalive_pings_total", "backend" => backend.clone()).increment(1);
            if let Err(e) = Box::pin(conn.ping()).await {
                tracing::info!(
                    backend,
                    "an idle backend connection failed its ping, replacing it: {e}"
                );
                return Err(replaced(backend, "ping_failed"));
            }
        }
        conn.stream.shrink_buffers();
        Ok(())
    }

    fn detach(&self, _conn: &mut BackendConn) {
        metrics::counter!("sluice_backend_connections_closed_total", "backend" => self.target.backend.clone())
            .increment(1);
    }
}

fn build_pool(target: ConnectTarget, settings: PoolSettings) -> Pool {
    let create_timeout = settings.connect_timeout.min(settings.acquire_timeout);
    // FIFO: a checkout takes the connection idle longest, so every
    // connection keeps being used and the keepalive sweep reaches them all.
    Pool::builder(BackendManager { target, settings })
        .max_size(settings.max_per_backend)
        .wait_timeout(Some(settings.acquire_timeout))
        .create_timeout(Some(create_timeout))
        .recycle_timeout(Some(create_timeout))
        .queue_mode(deadpool::managed::QueueMode::Fifo)
        .runtime(Runtime::Tokio1)
        .build()
        .expect("runtime is set, so building cannot fail")
}

fn replaced(backend: &str, reason: &'static str) -> RecycleError<BackendError> {
    metrics::counter!("sluice_pool_connections_replaced_total", "backend" => backend.to_string(), "reason" => reason)
        .increment(1);
    RecycleError::message(reason)
}

pub type Pool = managed::Pool<BackendManager>;
/// A checked-out backend connection; dropping it returns it to its pool.
pub type Pooled = Object<BackendManager>;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub backend: String,
    pub user: String,
    pub found_rows: bool,
    /// Connection attributes the backend connections carry (the clients'
    /// program name and own attributes); empty for Sluice's defaults.
    pub attrs: ConnectAttrs,
}

/// Connection attributes as sent to the server.
pub type ConnectAttrs = Arc<[(String, String)]>;

/// A snapshot of one pool for metrics and status pages.
#[derive(Debug, Clone)]
pub struct PoolStatus {
    pub key: PoolKey,
    pub max: usize,
    pub size: usize,
    pub idle: usize,
    pub waiting: usize,
}

/// Pool sizing and timeouts, from `[pool]`.
#[derive(Debug, Clone, Copy)]
pub struct PoolSettings {
    pub max_per_backend: usize,
    pub acquire_timeout: Duration,
    pub connect_timeout: Duration,
    /// Replace connections older than this (jittered), if set.
    pub max_lifetime: Option<Duration>,
    /// Connections per pool kept open even when idle.
    pub min_idle: usize,
    /// Reject at once when this many requests already wait (0 = no limit).
    pub max_queue: usize,
}

/// Every pool of the process.
pub struct Pools {
    pools: RwLock<HashMap<PoolKey, Pool>>,
    settings: RwLock<PoolSettings>,
}

impl Pools {
    pub fn new(settings: PoolSettings) -> Arc<Self> {
        Arc::new(Pools {
            pools: RwLock::new(HashMap::new()),
            settings: RwLock::new(settings),
        })
    }

    fn settings(&self) -> PoolSettings {
        *self.settings.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Checks out a connection to `address` as `user`, waiting at most the
    /// acquire timeout.
    pub async fn acquire(
        &self,
        key: &PoolKey,
        address: &str,
        password: &str,
    ) -> Result<Pooled, AcquireError> {
        self.handle(key, address, password).acquire().await
    }

    /// A handle on one pool (created on first use) that a session keeps, so
    /// a checkout costs no lookup.
    pub fn handle(&self, key: &PoolKey, address: &str, password: &str) -> BackendPool {
        let settings = self.settings();
        BackendPool {
            pool: self.pool_for(key, address, password, settings),
            key: Arc::new(key.clone()),
            address: address.into(),
            settings,
        }
    }

    fn pool_for(&self, key: &PoolKey, address: &str, password: &str, settings: PoolSettings) -> Pool {
        if let Some(pool) = self.pools.read().unwrap_or_else(|e| e.into_inner()).get(key) {
            return pool.clone();
        }
        let mut pools = self.pools.write().unwrap_or_else(|e| e.into_inner());
        pools
            .entry(key.clone())
            .or_insert_with(|| {
                let target = ConnectTarget {
                    backend: key.backend.clone(),
                    address: address.to_string(),
                    user: key.user.clone(),
                    password: password.to_string(),
                    found_rows: key.found_rows,
                    attrs: key.attrs.clone(),
                    connect_timeout: settings.connect_timeout,
                };
                let pool = build_pool(target, settings);
                crate::keepalive::spawn(pool.clone(), settings);
                pool
            })
            .clone()
    }

    /// Status of every pool.
    pub fn status(&self) -> Vec<PoolStatus> {
        let pools = self.pools.read().unwrap_or_else(|e| e.into_inner());
        pools
            .iter()
            .map(|(key, pool)| {
                let s = pool.status();
                PoolStatus {
                    key: key.clone(),
                    max: s.max_size,
                    size: s.size,
                    idle: s.available,
                    waiting: s.waiting,
                }
            })
            .collect()
    }

    /// Applies new pool settings: existing pools are resized, and pools of
    /// backends that were removed or whose address or password changed are
    /// closed (checked-out connections finish their work and are then
    /// dropped; idle ones close now). `keep(key, address, password)` says
    /// whether a pool still matches the configuration.
    pub fn reconfigure(&self, settings: PoolSettings, keep: impl Fn(&PoolKey, &ConnectTarget) -> bool) {
        *self.settings.write().unwrap_or_else(|e| e.into_inner()) = settings;
        let mut pools = self.pools.write().unwrap_or_else(|e| e.into_inner());
        pools.retain(|key, pool| {
            if keep(key, &pool.manager().target) {
                pool.resize(settings.max_per_backend);
                true
            } else {
                pool.close();
                false
            }
        });
    }

    /// Closes every pool (shutdown).
    pub fn close(&self) {
        for pool in self.pools.read().unwrap_or_else(|e| e.into_inner()).values() {
            pool.close();
        }
    }
}

/// One pool, as a session holds it.
#[derive(Clone)]
pub struct BackendPool {
    pool: Pool,
    pub key: Arc<PoolKey>,
    pub address: Arc<str>,
    settings: PoolSettings,
}

impl BackendPool {
    pub fn backend(&self) -> &str {
        &self.key.backend
    }

    /// How to open a connection of this pool outside it (KILL QUERY).
    pub fn target(&self) -> &ConnectTarget {
        &self.pool.manager().target
    }

    /// Checks out a connection, waiting at most the acquire timeout; with
    /// `pool.max_queue` set, refuses at once when the queue is full.
    pub async fn acquire(&self) -> Result<Pooled, AcquireError> {
        let backend = || self.key.backend.clone();
        if self.settings.max_queue > 0 && self.waiting() >= self.settings.max_queue {
            return Err(AcquireError::QueueFull {
                backend: backend(),
                waiting: self.waiting(),
            });
        }
        let unreachable = |reason: String| AcquireError::Unreachable {
            backend: backend(),
            address: self.address.to_string(),
            reason,
        };
        match self.pool.get().await {
            Ok(conn) => Ok(conn),
            Err(PoolError::Timeout(TimeoutType::Wait)) => Err(AcquireError::PoolExhausted {
                backend: backend(),
                max: self.pool.status().max_size,
                waited_ms: self.settings.acquire_timeout.as_millis() as u64,
            }),
            Err(PoolError::Timeout(_)) => Err(unreachable(format!(
                "no connection within {} ms",
                self.settings.connect_timeout.as_millis()
            ))),
            Err(PoolError::Backend(e)) => Err(unreachable(e.to_string())),
            Err(PoolError::PostCreateHook(e)) => Err(unreachable(e.to_string())),
            Err(PoolError::Closed | PoolError::NoRuntimeSpecified) => {
                Err(AcquireError::Closed { backend: backend() })
            }
        }
    }

    /// Clients queueing because the pool is full (deadpool also counts
    /// clients that are opening a new connection as waiting; those are not
    /// pressure).
    pub fn waiting(&self) -> usize {
        let s = self.pool.status();
        if s.size >= s.max_size { s.waiting } else { 0 }
    }
}

/// Detaches a connection from its pool and closes it, for connections whose
/// protocol state is unknown.
pub fn discard(conn: Pooled) {
    drop(Object::take(conn));
}
