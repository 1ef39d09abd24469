//! The Prometheus recorder and the gauges sampled from the pools. Metric
//! names follow Prometheus conventions: `sluice_` prefix, `_total` counters,
//! `_seconds` histograms with explicit buckets. Labels never carry SQL text.
//! Every metric's HELP text is in [`help`].

mod help;
pub mod latency;
mod registry;
pub mod striped;

use crate::shared::Shared;
use latency::Series;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::cell::RefCell;
use std::sync::Arc;
use std::time::Duration;
use striped::Striped;

pub fn install() -> anyhow::Result<PrometheusHandle> {
    // Histograms are not the exporter's: see `latency`.
    let handle = PrometheusBuilder::new().install_recorder()?;
    help::describe();
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}

pub fn build_info() {
    metrics::gauge!("sluice_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
}

/// Samples pool sizes every second into `sluice_pool_connections{backend,state}`,
/// `sluice_pool_waiting` and `sluice_pool_concurrency_limit`.
pub fn spawn_pool_gauges(shared: Arc<Shared>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let mut per_backend: std::collections::BTreeMap<String, (usize, usize, usize, usize)> =
                Default::default();
            for status in shared.pools.status() {
                let entry = per_backend.entry(status.key.backend.clone()).or_default();
                entry.0 += status.idle;
                entry.1 += status.size.saturating_sub(status.idle);
                entry.2 += status.waiting;
                entry.3 += status.limit;
            }
            guard_lag(&shared);
            for (worker, sessions) in shared.worker_session_counts().into_iter().enumerate() {
                metrics::gauge!("sluice_worker_sessions", "worker" => worker.to_string())
                    .set(sessions as f64);
            }
            for (backend, (idle, active, waiting, limit)) in per_backend {
                metrics::gauge!("sluice_pool_concurrency_limit", "backend" => backend.clone())
                    .set(limit as f64);
                metrics::gauge!("sluice_pool_connections", "backend" => backend.clone(), "state" => "idle")
                    .set(idle as f64);
                metrics::gauge!("sluice_pool_connections", "backend" => backend.clone(), "state" => "active")
                    .set(active as f64);
                metrics::gauge!("sluice_pool_waiting", "backend" => backend).set(waiting as f64);
            }
        }
    });
}

/// `sluice_guard_lag_seconds`: how far the guard's binlog feed is behind,
/// measured from the heartbeat rows it sees (NaN when unknown: no guarded
/// table, no trusted heartbeat, or the stream has seen none yet).
fn guard_lag(shared: &Shared) {
    if shared.config.load().guard.tables.is_empty() {
        return;
    }
    let config = shared.config.load();
    let lag = shared
        .guard
        .last_heartbeat_us()
        .and_then(|us| shared.monitor.heartbeat_lag_ms(&config, us));
    metrics::gauge!("sluice_guard_lag_seconds").set(lag.map_or(f64::NAN, |ms| ms / 1000.0));
}

/// Per-session cache of metric handles: looking a labelled metric up in the
/// registry on every statement costs more than the rest of the bookkeeping.
/// A session's first use of a label set takes the handle from its worker
/// thread's cache ([`Shelf`]), so a client that connects for one query
/// (PHP's connect-per-request) does not register its handles again.
#[derive(Default)]
pub struct SessionMetrics {
    queries: Vec<(String, &'static str, &'static str, Arc<Striped>)>,
    latency: Vec<(&'static str, Arc<Series>)>,
    pool_wait: Vec<(String, Arc<Series>)>,
    classification: Option<[Arc<Striped>; 3]>,
    guard: Vec<(String, Option<&'static str>, Arc<Striped>)>,
}

/// Distinct label sets a session keeps handles for before starting over.
const MAX_CACHED: usize = 32;

/// Distinct label sets a worker thread keeps handles for before starting
/// over (backends x routes x kinds, guarded tables x reasons).
const MAX_SHELVED: usize = 256;

/// One worker thread's handles, shared by the sessions it runs. Every
/// thread's handle of a series counts into the same series.
struct Shelf {
    queries: Vec<(QueryLabels, Arc<Striped>)>,
    pool_wait: Vec<(String, Arc<Series>)>,
    classification: Option<[Arc<Striped>; 3]>,
    guard: Vec<(GuardLabels, Arc<Striped>)>,
}

/// `sluice_queries_total`'s backend, route and kind.
type QueryLabels = (String, &'static str, &'static str);

/// The guard counters' table and reason (None: answered).
type GuardLabels = (String, Option<&'static str>);

thread_local! {
    static SHELF: RefCell<Shelf> = const {
        RefCell::new(Shelf {
            queries: Vec::new(),
            pool_wait: Vec::new(),
            classification: None,
            guard: Vec::new(),
        })
    };
}

/// The handle in `shelf` that `matches`, made by `make` (and kept) if none.
fn shelved<K, H: Clone>(
    shelf: &mut Vec<(K, H)>,
    matches: impl Fn(&K) -> bool,
    make: impl FnOnce() -> (K, H),
) -> H {
    if let Some((_, h)) = shelf.iter().find(|(k, _)| matches(k)) {
        return h.clone();
    }
    if shelf.len() >= MAX_SHELVED {
        shelf.clear();
    }
    let (k, h) = make();
    shelf.push((k, h.clone()));
    h
}

fn with_shelf<R>(f: impl FnOnce(&mut Shelf) -> R) -> R {
    SHELF.with(|s| f(&mut s.borrow_mut()))
}

impl SessionMetrics {
    /// A lookup of a guarded table: answered by the guard (`reason` None)
    /// or passed to the database for `reason`.
    pub fn guard(&mut self, table: &str, reason: Option<&'static str>) {
        self.guard_counter(table, reason).increment();
    }

    /// The counter [`SessionMetrics::guard`] bumps, for a caller that
    /// bumps it often and keeps it.
    pub fn guard_counter(&mut self, table: &str, reason: Option<&'static str>) -> &Arc<Striped> {
        let cached = &mut self.guard;
        let i = match cached
            .iter()
            .position(|(t, r, _)| same_reason(*r, reason) && same_name(t, table))
        {
            Some(i) => i,
            None => {
                if cached.len() >= MAX_CACHED {
                    cached.clear();
                }
                let c = with_shelf(|s| {
                    shelved(
                        &mut s.guard,
                        |(t, r)| same_reason(*r, reason) && same_name(t, table),
                        || {
                            let c = match reason {
                                None => striped::counter(&help::GUARD_ANSWERED, &[("table", table)]),
                                Some(reason) => striped::counter(
                                    &help::GUARD_PASSED,
                                    &[("table", table), ("reason", reason)],
                                ),
                            };
                            ((table.to_string(), reason), c)
                        },
                    )
                });
                cached.push((table.to_string(), reason, c));
                cached.len() - 1
            }
        };
        &cached[i].2
    }

    pub fn query(&mut self, backend: &str, route: &'static str, kind: &'static str, took: Duration) {
        let queries = &mut self.queries;
        let i = match queries
            .iter()
            .position(|(b, r, k, _)| same(r, route) && same(k, kind) && b == backend)
        {
            Some(i) => i,
            None => {
                if queries.len() >= MAX_CACHED {
                    queries.clear();
                }
                let c = with_shelf(|s| {
                    shelved(
                        &mut s.queries,
                        |(b, r, k)| same(r, route) && same(k, kind) && b == backend,
                        || {
                            let c = striped::counter(
                                &help::QUERIES,
                                &[("backend", backend), ("route", route), ("kind", kind)],
                            );
                            ((backend.to_string(), route, kind), c)
                        },
                    )
                });
                queries.push((backend.to_string(), route, kind, c));
                queries.len() - 1
            }
        };
        queries[i].3.increment();
        let latency = &mut self.latency;
        let j = match latency.iter().position(|(r, _)| same(r, route)) {
            Some(j) => j,
            None => {
                latency.push((route, latency::series(&help::QUERY_DURATION, route)));
                latency.len() - 1
            }
        };
        latency[j].1.record(took);
    }

    /// Cache hit or miss, and statements sqlparser could not parse (they
    /// run on the primary).
    pub fn classified(&mut self, cache_hit: bool, unparsed: bool) {
        let [hit, miss, unparsed_total] = self.classification.get_or_insert_with(|| {
            with_shelf(|s| {
                s.classification
                    .get_or_insert_with(|| {
                        [
                            striped::counter(&help::CLASSIFICATION, &[("result", "hit")]),
                            striped::counter(&help::CLASSIFICATION, &[("result", "miss")]),
                            striped::counter(&help::UNPARSED, &[]),
                        ]
                    })
                    .clone()
            })
        });
        if cache_hit {
            hit.increment()
        } else {
            miss.increment()
        }
        if unparsed {
            unparsed_total.increment();
        }
    }

    pub fn pool_wait(&mut self, backend: &str, took: Duration) {
        let waits = &mut self.pool_wait;
        let i = match waits.iter().position(|(b, _)| b == backend) {
            Some(i) => i,
            None => {
                if waits.len() >= MAX_CACHED {
                    waits.clear();
                }
                let h = with_shelf(|s| {
                    shelved(
                        &mut s.pool_wait,
                        |b| b == backend,
                        || (backend.to_string(), latency::series(&help::POOL_WAIT, backend)),
                    )
                });
                waits.push((backend.to_string(), h));
                waits.len() - 1
            }
        };
        waits[i].1.record(took);
    }
}

/// Label strings are literals: the same address almost always, so compare
/// that before the bytes.
fn same(a: &'static str, b: &'static str) -> bool {
    std::ptr::eq(a, b) || a == b
}

/// Table names of one schema often differ only at the end (`t1`, `t2`):
/// the last byte rejects most of them without a full comparison.
fn same_name(a: &str, b: &str) -> bool {
    a.as_bytes().last() == b.as_bytes().last() && a == b
}

fn same_reason(a: Option<&'static str>, b: Option<&'static str>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => same(a, b),
        (None, None) => true,
        _ => false,
    }
}

/// The exposition: the exporter's metrics, then the latency histograms.
pub fn render(handle: &PrometheusHandle) -> String {
    let mut text = handle.render();
    latency::render(&mut text);
    striped::render(&mut text);
    text
}
