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
}

impl managed::Manager for BackendManager {
    type Type = BackendConn;
    type Error = BackendError;

    async fn create(&self) -> Result<BackendConn, BackendError> {
        let conn = BackendConn::connect(&self.target).await?;
        metrics::counter!("sluice_backend_connections_opened_total", "backend" => self.target.backend.clone())
            .increment(1);
        Ok(conn)
    }

    async fn recycle(&self, conn: &mut BackendConn, _: &Metrics) -> RecycleResult<BackendError> {
        if conn.broken {
            return Err(RecycleError::message("connection marked broken"));
        }
        conn.stream.shrink_buffers();
        Ok(())
    }

    fn detach(&self, _conn: &mut BackendConn) {
        metrics::counter!("sluice_backend_connections_closed_total", "backend" => self.target.backend.clone())
            .increment(1);
    }
}

pub type Pool = managed::Pool<BackendManager>;
/// A checked-out backend connection; dropping it returns it to its pool.
pub type Pooled = Object<BackendManager>;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub backend: String,
    pub user: String,
    pub found_rows: bool,
}

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
                let manager = BackendManager {
                    target: ConnectTarget {
                        backend: key.backend.clone(),
                        address: address.to_string(),
                        user: key.user.clone(),
                        password: password.to_string(),
                        found_rows: key.found_rows,
                        connect_timeout: settings.connect_timeout,
                    },
                };
                let create_timeout = settings.connect_timeout.min(settings.acquire_timeout);
                Pool::builder(manager)
                    .max_size(settings.max_per_backend)
                    .wait_timeout(Some(settings.acquire_timeout))
                    .create_timeout(Some(create_timeout))
                    .recycle_timeout(Some(create_timeout))
                    .queue_mode(deadpool::managed::QueueMode::Lifo)
                    .runtime(Runtime::Tokio1)
                    .build()
                    .expect("runtime is set, so building cannot fail")
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

    /// Checks out a connection, waiting at most the acquire timeout.
    pub async fn acquire(&self) -> Result<Pooled, AcquireError> {
        let backend = || self.key.backend.clone();
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
