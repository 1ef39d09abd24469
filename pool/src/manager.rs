//! The pools: one per (backend, user, FOUND_ROWS profile, attributes),
//! created on first use. deadpool opens, checks and keeps the connections;
//! a [`Gate`] in front of it bounds how many are out at once and queues the
//! requests past that, handing a returned connection straight to the oldest
//! waiter. Failures become a distinct [`AcquireError`] per cause.

use crate::gate::{Entry, Gate, Grant, WaitError};
use crate::limit::{AdaptiveLimit, LimitParams};
use crate::local::Local;
use crate::{AcquireError, BackendConn, BackendError, BackendTls, ConnectTarget, Credential, SessionCaps};
use deadpool::Runtime;
use deadpool::managed::{self, Metrics, Object, PoolError, RecycleError, RecycleResult, TimeoutType};
use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

pub struct BackendManager {
    target: ConnectTarget,
    settings: PoolSettings,
}

/// A connection idle at least this long is checked before a client gets
/// it (a cheap non-blocking peek for a closed socket).
pub(crate) const PEEK_AFTER_IDLE: Duration = Duration::from_millis(50);

impl managed::Manager for BackendManager {
    /// Boxed: a checked-out connection moves between the pool, the gate and
    /// the session on every statement, and 8 bytes move cheaper than 450.
    type Type = Box<BackendConn>;
    type Error = BackendError;

    async fn create(&self) -> Result<Box<BackendConn>, BackendError> {
        // Boxed: connecting is rare and its future large; deadpool inlines
        // it into every checkout's future otherwise.
        let conn = Box::pin(BackendConn::connect(&self.target)).await?;
        metrics::counter!("sluice_backend_connections_opened_total", "backend" => self.target.backend.clone())
            .increment(1);
        Ok(Box::new(conn))
    }

    /// Runs at every checkout: a connection that is broken, too old, closed
    /// by the server, or silent for too long without a successful ping is
    /// replaced before any client sees it.
    async fn recycle(&self, conn: &mut Box<BackendConn>, _: &Metrics) -> RecycleResult<BackendError> {
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

    fn detach(&self, _conn: &mut Box<BackendConn>) {
        metrics::counter!("sluice_backend_connections_closed_total", "backend" => self.target.backend.clone())
            .increment(1);
    }
}

fn build_pool(target: ConnectTarget, settings: PoolSettings) -> Pool {
    let create_timeout = settings.connect_timeout.min(settings.acquire_timeout);
    // FIFO: a checkout takes the connection idle longest, so every
    // connection keeps being used and the keepalive sweep reaches them all.
    // The gate admits at most max_size at once, so deadpool's own wait
    // (wait_timeout) is only a backstop.
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

pub(crate) type Pool = managed::Pool<BackendManager>;
type Conn = Object<BackendManager>;

impl crate::home::Homed for Conn {
    fn home(&self) -> usize {
        self.home
    }
}

/// One pool and its gate, shared by the sessions' handles, the checked-out
/// connections and the keepalive task.
pub(crate) struct PoolShared {
    pub(crate) pool: Pool,
    pub(crate) gate: Arc<Gate<Conn>>,
    /// The adaptive limit is on: checkouts note their start for latency
    /// samples.
    adaptive: AtomicBool,
}

impl PoolShared {
    fn new(target: ConnectTarget, settings: PoolSettings) -> Arc<Self> {
        let adaptive = settings
            .adaptive_limit
            .then(|| AdaptiveLimit::new(LimitParams::new(settings.max_per_backend)));
        Arc::new(PoolShared {
            pool: build_pool(target, settings),
            gate: Gate::new(settings.max_per_backend, adaptive),
            adaptive: AtomicBool::new(settings.adaptive_limit),
        })
    }

    fn backend(&self) -> &str {
        &self.pool.manager().target.backend
    }

    /// Checks a connection out of deadpool for a permit already held
    /// (opening one if none is idle); the permit goes back if that fails or
    /// the caller goes away meanwhile.
    pub(crate) async fn checkout(
        shared: &Local<Self>,
        timeouts: Option<&managed::Timeouts>,
    ) -> Result<Pooled, PoolError<BackendError>> {
        struct Permit<'a>(&'a Gate<Conn>);
        impl Drop for Permit<'_> {
            fn drop(&mut self) {
                self.0.release(None);
            }
        }
        let permit = Permit(&shared.gate);
        let conn = match timeouts {
            None => shared.pool.get().await?,
            Some(t) => shared.pool.timeout_get(t).await?,
        };
        std::mem::forget(permit);
        Ok(PoolShared::pooled(shared, conn, Duration::ZERO))
    }

    /// `waited`: how long the checkout took (zero from the hot stack).
    fn pooled(shared: &Local<Self>, conn: Conn, waited: Duration) -> Pooled {
        let adaptive = shared.adaptive.load(Ordering::Relaxed);
        Pooled {
            conn: Some(conn),
            shared: shared.clone(),
            since: adaptive.then(Instant::now),
            waited,
        }
    }

    /// A connection coming back from a client: closed if it cannot be
    /// reused, else straight to the oldest waiter, else back to deadpool.
    /// The checks are those of `recycle` that need no round trip; a
    /// connection that needs a ping goes through deadpool, which pings it
    /// at the next checkout.
    fn give_back(&self, mut conn: Conn, since: Option<Instant>) {
        let settings = &self.pool.manager().settings;
        // A real reading: a session may have held it idle for minutes.
        let now = Instant::now();
        let c: &mut BackendConn = &mut conn;
        // A latency sample when a command was sent during this checkout.
        let sample = since
            .filter(|since| c.last_io >= *since)
            .map(|_| (now.saturating_duration_since(c.last_io), now));
        let backend = self.backend();
        let reason = if c.broken {
            Some("broken")
        } else if !crate::home::keeps(c.home) {
            Some("off_worker")
        } else if settings
            .max_lifetime
            .is_some_and(|max| now.saturating_duration_since(c.created) > max.mul_f64(c.jitter))
        {
            Some("max_lifetime")
        } else {
            None
        };
        if let Some(reason) = reason {
            replaced(backend, reason);
            drop(Object::take(conn));
            self.gate.release(sample);
            return;
        }
        let idle = now.saturating_duration_since(c.last_io);
        // The interval's float arithmetic only for a connection idle long
        // enough for it to matter (not after an ordinary statement).
        if idle >= crate::conn::MIN_KEEPALIVE_INTERVAL && idle >= c.keepalive_interval() {
            drop(conn);
            self.gate.release(sample);
            return;
        }
        if idle >= PEEK_AFTER_IDLE && c.peer_closed() {
            replaced(backend, "closed_by_server");
            drop(Object::take(conn));
            self.gate.release(sample);
            return;
        }
        c.stream.shrink_buffers();
        // To the oldest waiter, or back to deadpool.
        self.gate.put_back(conn, sample);
    }
}

/// A connection from the gate's hot stack is handed out unchecked only if
/// it was in use moments ago (so its socket cannot have been closed
/// unnoticed for long); anything older goes through deadpool's `recycle`.
fn fresh(conn: &Conn, now: Instant) -> bool {
    !conn.broken && now.saturating_duration_since(conn.last_io) < PEEK_AFTER_IDLE
}

/// A checked-out backend connection (dereferences to [`BackendConn`]);
/// dropping it returns it to its pool, or to the request waiting longest.
pub struct Pooled {
    conn: Option<Conn>,
    shared: Local<PoolShared>,
    /// When it was checked out, if the adaptive limit wants latencies.
    since: Option<Instant>,
    /// How long the checkout waited (queue, connect, checks); zero for one
    /// taken from the hot stack, which reads no clock.
    waited: Duration,
}

impl Pooled {
    pub fn waited(&self) -> Duration {
        self.waited
    }
}

impl Deref for Pooled {
    type Target = BackendConn;
    fn deref(&self) -> &BackendConn {
        self.conn
            .as_ref()
            .expect("a Pooled holds its connection until dropped")
    }
}

impl DerefMut for Pooled {
    fn deref_mut(&mut self) -> &mut BackendConn {
        self.conn
            .as_mut()
            .expect("a Pooled holds its connection until dropped")
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.shared.give_back(conn, self.since);
        }
    }
}

impl std::fmt::Debug for Pooled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pooled")
            .field("backend", &self.shared.backend())
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub backend: String,
    pub user: String,
    /// The client's handshake bits that shape its server session
    /// (multi-results, FOUND_ROWS, ...; see [`SessionCaps`]).
    pub session_caps: SessionCaps,
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
    /// Connections allowed out at once: `max`, or below it the adaptive
    /// limit's current value.
    pub limit: usize,
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
    /// Find the number of connections out at once from observed latency
    /// (at most `max_per_backend`) instead of always allowing the maximum.
    pub adaptive_limit: bool,
}

/// Every pool of the process.
pub struct Pools {
    pools: RwLock<HashMap<PoolKey, Arc<PoolShared>>>,
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
        credential: &Credential,
        tls: &Arc<BackendTls>,
    ) -> Result<Pooled, AcquireError> {
        self.handle(key, address, credential, tls).acquire().await
    }

    /// A handle on one pool (created on first use) that a session keeps, so
    /// a checkout costs no lookup. `tls` is the backend's, of the config
    /// generation the pool is created in.
    pub fn handle(
        &self,
        key: &PoolKey,
        address: &str,
        credential: &Credential,
        tls: &Arc<BackendTls>,
    ) -> BackendPool {
        let settings = self.settings();
        BackendPool {
            shared: Local::new(self.pool_for(key, address, credential, tls, settings)),
            key: Arc::new(key.clone()),
            address: address.into(),
            settings,
        }
    }

    fn pool_for(
        &self,
        key: &PoolKey,
        address: &str,
        credential: &Credential,
        tls: &Arc<BackendTls>,
        settings: PoolSettings,
    ) -> Arc<PoolShared> {
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
                    credential: credential.clone(),
                    session_caps: key.session_caps,
                    attrs: key.attrs.clone(),
                    connect_timeout: settings.connect_timeout,
                    tls: tls.clone(),
                };
                let shared = PoolShared::new(target, settings);
                crate::keepalive::spawn(&shared, settings);
                shared
            })
            .clone()
    }

    /// Status of every pool.
    pub fn status(&self) -> Vec<PoolStatus> {
        let pools = self.pools.read().unwrap_or_else(|e| e.into_inner());
        pools
            .iter()
            .map(|(key, shared)| {
                let s = shared.pool.status();
                let gate = shared.gate.status();
                PoolStatus {
                    key: key.clone(),
                    max: s.max_size,
                    limit: gate.limit,
                    size: s.size,
                    idle: s.available + gate.hot,
                    waiting: gate.queued,
                }
            })
            .collect()
    }

    /// Applies new pool settings: existing pools are resized, and pools of
    /// backends that were removed or whose address or password changed are
    /// closed (checked-out connections finish their work and are then
    /// dropped; idle ones close now). `keep(key, target)` says whether a
    /// pool still matches the configuration (address, password, TLS).
    pub fn reconfigure(&self, settings: PoolSettings, keep: impl Fn(&PoolKey, &ConnectTarget) -> bool) {
        *self.settings.write().unwrap_or_else(|e| e.into_inner()) = settings;
        let mut pools = self.pools.write().unwrap_or_else(|e| e.into_inner());
        pools.retain(|key, shared| {
            if keep(key, &shared.pool.manager().target) {
                shared.pool.resize(settings.max_per_backend);
                shared
                    .gate
                    .set_bounds(settings.max_per_backend, settings.adaptive_limit);
                shared.adaptive.store(settings.adaptive_limit, Ordering::Relaxed);
                true
            } else {
                shared.gate.close();
                shared.pool.close();
                false
            }
        });
    }

    /// Closes every pool (shutdown).
    pub fn close(&self) {
        for shared in self.pools.read().unwrap_or_else(|e| e.into_inner()).values() {
            shared.gate.close();
            shared.pool.close();
        }
    }
}

/// One pool, as a session holds it.
#[derive(Clone)]
pub struct BackendPool {
    /// The session's own reference: a checkout's copy of it in [`Pooled`]
    /// writes no count that other worker threads write too.
    shared: Local<PoolShared>,
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
        &self.shared.pool.manager().target
    }

    /// Checks out a connection, waiting (first come, first served) at most
    /// the acquire timeout; with `pool.max_queue` set, refuses at once when
    /// the queue is full. A request that finds a connection free never
    /// queues and arms no timer.
    pub async fn acquire(&self) -> Result<Pooled, AcquireError> {
        self.acquire_at(Instant::now()).await
    }

    /// [`acquire`](Self::acquire) for a caller that read the clock just
    /// before (`now`), so the common path reads it no more.
    pub async fn acquire_at(&self, now: Instant) -> Result<Pooled, AcquireError> {
        let gate = &self.shared.gate;
        let backend = || self.key.backend.clone();
        let entry = match gate.enter(self.settings.max_queue, self.settings.acquire_timeout) {
            Entry::Admitted(Some(conn)) if fresh(&conn, now) => {
                return Ok(PoolShared::pooled(&self.shared, conn, Duration::ZERO));
            }
            entry => entry,
        };
        // Off the hot stack: the wait (queue, connect, checks) is timed.
        let began = Instant::now();
        let granted = match entry {
            // Stale: back to deadpool now (not at the end of this function:
            // the checkout below may need it), whose checkout checks it.
            Entry::Admitted(stale) => {
                drop(stale);
                Grant::Permit
            }
            Entry::QueueFull { waiting } => {
                return Err(AcquireError::QueueFull {
                    backend: backend(),
                    waiting,
                });
            }
            Entry::Closed => return Err(AcquireError::Closed { backend: backend() }),
            Entry::Wait(wait) => match wait.await {
                Ok(grant) => grant,
                Err(WaitError::TimedOut) => {
                    return Err(AcquireError::PoolExhausted {
                        backend: backend(),
                        max: gate.status().limit,
                        waited_ms: self.settings.acquire_timeout.as_millis() as u64,
                    });
                }
                Err(WaitError::Closed) => return Err(AcquireError::Closed { backend: backend() }),
            },
        };
        let conn = match granted {
            Grant::Item(conn) => return Ok(PoolShared::pooled(&self.shared, conn, began.elapsed())),
            // Boxed: deadpool's checkout future is large, and with the hot
            // stack this path is taken only to open or recheck connections.
            Grant::Permit => Box::pin(PoolShared::checkout(&self.shared, None)).await,
        };
        let unreachable = |reason: String| AcquireError::Unreachable {
            backend: backend(),
            address: self.address.to_string(),
            reason,
        };
        match conn {
            Ok(mut conn) => {
                conn.waited = began.elapsed();
                Ok(conn)
            }
            Err(PoolError::Timeout(TimeoutType::Wait)) => Err(AcquireError::PoolExhausted {
                backend: backend(),
                max: self.shared.pool.status().max_size,
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

    /// Requests queueing because every connection the pool may have out is
    /// busy (requests opening a new connection are not counted: they are
    /// not pressure).
    pub fn waiting(&self) -> usize {
        self.shared.gate.waiting()
    }
}

/// Detaches a connection from its pool and closes it, for connections whose
/// protocol state is unknown.
pub fn discard(mut conn: Pooled) {
    if let Some(c) = conn.conn.take() {
        drop(Object::take(c));
        conn.shared.gate.release(None);
    }
}
