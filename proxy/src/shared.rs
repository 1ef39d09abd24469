//! State shared by every client session: the live config, the pools, what
//! the primary announced, and connection counting.

use crate::profile::ServerProfile;
use arc_swap::ArcSwap;
use sluice_config::Config;
use sluice_pool::{PoolSettings, Pools};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

pub struct Shared {
    pub config: ArcSwap<Config>,
    pub pools: Arc<Pools>,
    pub profile: ArcSwap<ServerProfile>,
    next_connection_id: AtomicU32,
    clients: AtomicUsize,
}

impl Shared {
    pub fn new(config: Config) -> Arc<Self> {
        let pools = Pools::new(pool_settings(&config));
        Arc::new(Shared {
            config: ArcSwap::from_pointee(config),
            pools,
            profile: ArcSwap::from_pointee(ServerProfile::fallback()),
            next_connection_id: AtomicU32::new(1),
            clients: AtomicUsize::new(0),
        })
    }

    pub fn next_connection_id(&self) -> u32 {
        self.next_connection_id.fetch_add(1, Ordering::Relaxed)
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
        Some(ClientGuard {
            shared: self.clone(),
        })
    }

    pub fn client_count(&self) -> usize {
        self.clients.load(Ordering::Relaxed)
    }
}

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
    }
}
