//! The backends of one config generation, by index: what the routing plan
//! needs per command (role, weight, statements in flight, down-until) with
//! no name-keyed map and no lock. A session loads the snapshot once per
//! generation; a reload builds a new one and carries over what the old one
//! learned (in-flight counts stay on the snapshot a statement started on).

use crate::per_thread::PerThread;
use sluice_config::{Config, Role};
use sluice_pool::BackendTls;
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long a backend that refused a connection is skipped for reads.
const DOWN_FOR: Duration = Duration::from_secs(2);

/// One configured backend.
#[derive(Debug)]
pub struct Backend {
    pub index: usize,
    pub name: Arc<str>,
    pub address: Arc<str>,
    pub role: Role,
    pub weight: u32,
    /// TLS to it: the rustls client config its pools of this generation
    /// share, built here once.
    pub tls: Arc<BackendTls>,
    /// Statements running on it (least-outstanding balancing).
    pub in_flight: InFlight,
    /// Milliseconds since the topology's epoch until which it is skipped
    /// for reads (0: not down).
    down_until_ms: AtomicU64,
}

/// Statements running on a backend, counted per thread ([`PerThread`]):
/// every statement adds and removes one. Read (to pick a replica, for
/// `/status`) as the sum.
#[derive(Debug, Default)]
pub struct InFlight(PerThread<AtomicIsize>);

impl InFlight {
    pub fn begin(&self) {
        self.0.mine().fetch_add(1, Ordering::Relaxed);
    }

    /// A statement may end on another thread than it began on (Tokio's
    /// multi-thread scheduler moves tasks, as in an embedding), so one
    /// thread's count may go below 0.
    pub fn end(&self) {
        self.0.mine().fetch_sub(1, Ordering::Relaxed);
    }

    pub fn get(&self) -> usize {
        let sum: isize = self.0.all().map(|c| c.load(Ordering::Relaxed)).sum();
        usize::try_from(sum).unwrap_or(0)
    }
}

#[derive(Debug)]
pub struct Topology {
    pub generation: u64,
    /// The config this snapshot was built from.
    pub config: Arc<Config>,
    pub backends: Box<[Arc<Backend>]>,
    /// The configured primary.
    pub primary: Option<usize>,
    epoch: Instant,
}

impl Topology {
    pub fn new(
        config: Arc<Config>,
        generation: u64,
        epoch: Instant,
        previous: Option<&Topology>,
    ) -> Topology {
        let backends = config
            .backends
            .iter()
            .enumerate()
            .map(|(index, b)| {
                let before = previous.and_then(|p| p.by_name(&b.name));
                Arc::new(Backend {
                    index,
                    name: b.name.as_str().into(),
                    address: b.address.as_str().into(),
                    role: b.role,
                    weight: b.weight,
                    tls: BackendTls::new(&b.tls_settings(), &b.address),
                    in_flight: InFlight::default(),
                    down_until_ms: AtomicU64::new(
                        before.map_or(0, |b| b.down_until_ms.load(Ordering::Relaxed)),
                    ),
                })
            })
            .collect();
        let primary = config.backends.iter().position(|b| b.role == Role::Primary);
        Topology {
            generation,
            config,
            backends,
            primary,
            epoch,
        }
    }

    pub fn by_name(&self, name: &str) -> Option<&Arc<Backend>> {
        self.backends.iter().find(|b| &*b.name == name)
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Skips `backend` for reads for a moment after it refused a connection.
    pub fn mark_down(&self, backend: &Backend) {
        backend
            .down_until_ms
            .store(self.now_ms() + DOWN_FOR.as_millis() as u64, Ordering::Relaxed);
    }

    pub fn is_down(&self, backend: &Backend) -> bool {
        let until = backend.down_until_ms.load(Ordering::Relaxed);
        until != 0 && self.now_ms() < until
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_flight_counts_sum_over_threads_and_never_read_negative() {
        let count = Arc::new(InFlight::default());
        // Runs `f` on a thread of its own (its own count).
        let elsewhere = |f: fn(&InFlight)| {
            let count = count.clone();
            std::thread::spawn(move || f(&count)).join().expect("thread");
        };
        count.begin();
        // Begun on one thread, ended on another: one thread's count goes below 0.
        elsewhere(|c| {
            c.begin();
            c.begin();
            c.end();
        });
        assert_eq!(count.get(), 2);
        elsewhere(|c| (0..3).for_each(|_| c.end()));
        assert_eq!(count.get(), 0, "a sum below 0 reads as none");
    }

    fn config() -> Config {
        Config::parse(
            r#"
            [server]
            listen = "127.0.0.1:0"
            [[users]]
            name = "app"
            password = "app"
            [[backends]]
            name = "p"
            address = "127.0.0.1:1"
            role = "primary"
            [[backends]]
            name = "r"
            address = "127.0.0.1:2"
            role = "replica"
            "#,
        )
        .expect("valid config")
    }

    #[test]
    fn backends_by_index_and_down_state_carried_over() {
        let epoch = Instant::now();
        let first = Topology::new(Arc::new(config()), 1, epoch, None);
        assert_eq!(first.primary, Some(0));
        let replica = first.by_name("r").expect("configured").clone();
        assert_eq!(replica.index, 1);
        assert!(!first.is_down(&replica));
        first.mark_down(&replica);
        assert!(first.is_down(&replica));
        let second = Topology::new(Arc::new(config()), 2, epoch, Some(&first));
        assert!(
            second.is_down(&second.backends[1]),
            "a reload keeps what was learned"
        );
        assert!(!second.is_down(&second.backends[0]));
    }
}
