//! The empty-key guard's data side: per guarded table, a Bloom filter of
//! the keys that exist, built by a scan in a consistent snapshot and kept
//! current from the primary's binlog (one stream for all tables). A lookup
//! asks [`Guard::table`] then [`TableGuard::may_contain`]; nothing on that
//! path takes a lock.
//!
//! Ordering contract for a caller deciding "certainly absent": read
//! [`Guard::applied`] first and check it covers what the read needs, then
//! [`TableGuard::ready`], then [`TableGuard::may_contain`]. A table is marked
//! not ready before the position of the event that made it untrustworthy
//! is published, so this order never answers from a stale filter.
//!
//! Modules: [`key`] (encoding), [`column`] (discovery), [`filter`], [`scan`],
//! [`metric`] (names), `feed` (the binlog stream), `table` (the per-table builder).

pub mod column;
mod feed;
pub mod filter;
pub mod key;
pub mod metric;
pub mod scan;
mod state;
mod table;

pub use column::{KeyColumn, Verified, verify, verify_config, verify_indexed};
pub use key::KeyKind;

use filter::Filter;
use serde_json::json;
use sluice_config::GuardTableConfig;
use sluice_router::GtidPos;
use state::{RegTable, Settings, Shared, TableCtl, lock};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;

/// The guard: its tables, its stream, its state.
pub struct Guard {
    shared: Arc<Shared>,
    control: Mutex<Control>,
}

#[derive(Default)]
struct Control {
    tables: HashMap<String, Managed>,
    feed: Option<(FeedKey, JoinHandle<()>)>,
    metrics: Option<JoinHandle<()>>,
}

struct Managed {
    config: GuardTableConfig,
    task: JoinHandle<()>,
}

/// What the stream's connection depends on: a change restarts it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FeedKey {
    server_id: u32,
    user: String,
    password: String,
}

/// One guarded table's current filter. A superseded `TableGuard` stays
/// correct while held (it keeps receiving keys), so callers may keep one
/// for the length of a lookup.
pub struct TableGuard {
    pub(crate) ctl: Arc<TableCtl>,
    pub(crate) column: KeyColumn,
    pub(crate) filter: Arc<Filter>,
    pub(crate) ready: Arc<AtomicBool>,
}

impl TableGuard {
    /// Whether the filter holds every key up to [`Guard::applied`].
    pub fn ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    pub fn kind(&self) -> &KeyKind {
        &self.column.kind
    }

    pub fn key_column(&self) -> &str {
        &self.column.name
    }

    /// Bumped by every DDL on the table seen in the binlog: cached metadata
    /// of an older generation is stale.
    pub fn ddl_generation(&self) -> u64 {
        self.ctl.ddl_generation.load(Ordering::SeqCst)
    }

    /// Where the table's structure was last established (its build's
    /// snapshot, its last DDL): result metadata is trusted only from a
    /// backend that has applied this.
    pub fn structure_at(&self) -> GtidPos {
        lock(&self.ctl.structure_at).clone()
    }

    /// false = certainly absent (only meaningful when ready).
    pub fn may_contain(&self, encoded_key: &[u8]) -> bool {
        self.filter.may_contain(encoded_key)
    }

    /// `schema.table` as configured.
    pub fn name(&self) -> &str {
        &self.ctl.config.table
    }

    pub fn keys(&self) -> u64 {
        self.filter.keys()
    }

    pub fn memory_bytes(&self) -> u64 {
        self.filter.memory_bytes()
    }
}

/// A snapshot of the guarded tables ([`Guard::tables`]). Hold it for one
/// decision, not across an await: a held snapshot keeps its tables alive.
pub struct Tables(arc_swap::Guard<Arc<state::TableSet>>);

impl Tables {
    /// The set's version: a [`Tables::position`] found under it names the
    /// same table in every snapshot of the same version.
    pub fn version(&self) -> u64 {
        self.0.version
    }

    /// Where `schema.table` is in this set (names compared
    /// ASCII-case-insensitively), for [`Tables::at`].
    pub fn position(&self, schema: &str, table: &str) -> Option<usize> {
        let order = &self.0.order;
        if order.is_empty() {
            return None;
        }
        // A few tables are compared in place, without building the key;
        // names as written (the keys are lower case, like most SQL) before
        // the case-blind comparison.
        if order.len() <= 16 {
            let find = |same: fn(&str, &str) -> bool| {
                order.iter().position(|(key, _)| {
                    key.len() == schema.len() + 1 + table.len()
                        && key.as_bytes().get(schema.len()) == Some(&b'.')
                        && key.get(schema.len() + 1..).is_some_and(|t| same(t, table))
                        && key.get(..schema.len()).is_some_and(|s| same(s, schema))
                })
            };
            return find(|a, b| a == b).or_else(|| find(str::eq_ignore_ascii_case));
        }
        let mut key = String::with_capacity(schema.len() + table.len() + 1);
        key.push_str(schema);
        key.push('.');
        key.push_str(table);
        key.make_ascii_lowercase();
        order.binary_search_by(|(k, _)| k.as_str().cmp(&key)).ok()
    }

    pub fn at(&self, position: usize) -> Option<&Arc<TableGuard>> {
        self.0.order.get(position).map(|(_, t)| t)
    }
}

impl Guard {
    pub fn new() -> Arc<Guard> {
        Arc::new(Guard {
            shared: Arc::new(Shared::new()),
            control: Mutex::new(Control::default()),
        })
    }

    /// Starts the feed if needed and applies (hot-reload) the config: tables
    /// added/removed/changed rebuild; the stream restarts only if
    /// server_id/account changed. Must be called inside a tokio runtime.
    pub fn configure(
        self: &Arc<Self>,
        config: &sluice_config::Config,
        writer: tokio::sync::watch::Receiver<Option<String>>,
    ) {
        let guard = &config.guard;
        let (user, password) = config.monitor_account().unwrap_or(("", ""));
        self.shared.settings.store(Arc::new(Settings {
            rebuild_interval_ms: guard.rebuild_interval_ms,
            max_memory_bytes: guard.max_memory_mb.saturating_mul(1024 * 1024),
            server_id: guard.server_id(&config.server.instance_name),
            user: user.to_string(),
            password: password.to_string(),
            heartbeat_table: config.monitor.heartbeat_table.clone(),
            instance_id: config.server.instance_id(),
            backend_tls: config
                .backends
                .iter()
                .map(|b| (b.address.clone(), b.tls_settings()))
                .collect(),
        }));
        *lock(&self.shared.writer) = Some(writer);
        let mut control = lock(&self.control);
        let wanted: HashMap<String, &GuardTableConfig> = guard
            .tables
            .iter()
            .map(|t| (t.table.to_ascii_lowercase(), t))
            .collect();
        // Removed or changed tables stop.
        let stale: Vec<String> = control
            .tables
            .iter()
            .filter(|(k, m)| wanted.get(*k).is_none_or(|c| **c != m.config))
            .map(|(k, _)| k.clone())
            .collect();
        for key in stale {
            if let Some(m) = control.tables.remove(&key) {
                self.stop_table(&key, m);
            }
        }
        for (key, config) in wanted {
            if control.tables.contains_key(&key) {
                continue;
            }
            let ctl = Arc::new(TableCtl::new(config.clone()));
            lock(&self.shared.registry).tables.insert(
                key.clone(),
                RegTable {
                    ctl: ctl.clone(),
                    sinks: Vec::new(),
                    pending: Vec::new(),
                },
            );
            let task = tokio::spawn(table::run(self.shared.clone(), ctl.clone()));
            control.tables.insert(
                key,
                Managed {
                    config: config.clone(),
                    task,
                },
            );
        }
        let key = FeedKey {
            server_id: guard.server_id(&config.server.instance_name),
            user: user.to_string(),
            password: password.to_string(),
        };
        if control.tables.is_empty() {
            if let Some((_, task)) = control.feed.take() {
                task.abort();
                self.shared.connected.store(false, Ordering::SeqCst);
            }
        } else if control.feed.as_ref().is_none_or(|(k, _)| *k != key) {
            if let Some((_, task)) = control.feed.take() {
                task.abort();
            }
            let task = tokio::spawn(feed::supervise(self.shared.clone()));
            control.feed = Some((key, task));
        }
        if control.metrics.is_none() {
            let weak = Arc::downgrade(self);
            control.metrics = Some(tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    match weak.upgrade() {
                        Some(guard) => guard.export_metrics(),
                        None => return,
                    }
                }
            }));
        }
    }

    fn stop_table(&self, key: &str, m: Managed) {
        m.task.abort();
        {
            let mut reg = lock(&self.shared.registry);
            reg.forget_filters(key);
            reg.tables.remove(key);
        }
        self.shared.mark_not_ready(key);
        self.shared.change_tables(|tables| {
            let mut tables = tables.clone();
            tables.remove(key);
            tables
        });
    }

    /// The table's current filter (names compared ASCII-case-insensitively).
    pub fn table(&self, schema: &str, table: &str) -> Option<Arc<TableGuard>> {
        let tables = self.tables();
        tables.position(schema, table).and_then(|i| tables.at(i)).cloned()
    }

    /// The guarded tables as they are now. Taking and reading one writes
    /// nothing another thread reads (no reference count bumped): a lookup
    /// on every worker thread asks for it.
    pub fn tables(&self) -> Tables {
        Tables(self.shared.tables.load())
    }

    /// The version of the table set [`Guard::table`] looks in: a lookup
    /// remembered under the current version is still what it would return.
    /// 0 until the first table is built (the set has always been empty).
    pub fn tables_version(&self) -> u64 {
        self.shared.tables_version.load(Ordering::Acquire)
    }

    /// The stream's applied position: every transaction up to it is in the
    /// filters of ready tables.
    pub fn applied(&self) -> arc_swap::Guard<Arc<GtidPos>> {
        self.shared.applied.load()
    }

    /// Newest heartbeat (`monitor.heartbeat_table` `ts`, µs) seen in the binlog.
    pub fn last_heartbeat_us(&self) -> Option<u64> {
        match self.shared.heartbeat_us.load(Ordering::Relaxed) {
            0 => None,
            v => Some(v),
        }
    }

    pub fn connected(&self) -> bool {
        self.shared.connected.load(Ordering::SeqCst)
    }

    /// Per table: state, keys, bits, memory, expected, fpr, snapshot,
    /// rebuilds, ddl_generation, reason; and the stream's state.
    pub fn status(&self) -> serde_json::Value {
        let live = self.shared.tables.load_full();
        let ctls: Vec<Arc<TableCtl>> = lock(&self.shared.registry)
            .tables
            .values()
            .map(|t| t.ctl.clone())
            .collect();
        let mut tables = serde_json::Map::new();
        for ctl in ctls {
            let s = lock(&ctl.status).clone();
            let t = live.get(&ctl.key);
            let state = match t {
                Some(t) if s.state == "ready" && !t.ready() => "disabled",
                _ => s.state,
            };
            tables.insert(
                ctl.config.table.clone(),
                json!({
                    "state": state,
                    "ready": t.is_some_and(|t| t.ready()),
                    "reason": s.reason,
                    "key": ctl.config.key,
                    "kind": s.column.as_ref().map(|c| format!("{:?}", c.kind)),
                    "keys": t.map(|t| t.filter.keys()),
                    "bits": t.map(|t| t.filter.bits()),
                    "memory_bytes": t.map(|t| t.filter.memory_bytes()),
                    "expected_keys": t.map(|t| t.filter.expected()),
                    "false_positive_rate": ctl.config.false_positive_rate,
                    "snapshot_gtid": s.snapshot,
                    "applied_gtid": self.shared.applied.load().to_string(),
                    "rebuilds": s.rebuilds,
                    "build_ms": s.build_ms,
                    "ddl_generation": ctl.ddl_generation.load(Ordering::SeqCst),
                }),
            );
        }
        json!({
            "connected": self.connected(),
            "applied_gtid": self.shared.applied.load().to_string(),
            "last_heartbeat_us": self.last_heartbeat_us(),
            "refused": lock(&self.shared.refused).clone(),
            "last_stream_error": lock(&self.shared.last_error).clone(),
            "events": self.shared.events.load(Ordering::Relaxed),
            "reconnects": self.shared.reconnects.load(Ordering::Relaxed),
            "memory_bytes": self.shared.budget.used(),
            "max_memory_bytes": self.shared.settings.load().max_memory_bytes,
            "tables": tables,
        })
    }

    /// The status of one table (`state` etc., as in [`Guard::status`]).
    pub fn table_status(&self, table: &str) -> Option<serde_json::Value> {
        self.status()
            .get("tables")?
            .as_object()?
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(table))
            .map(|(_, v)| v.clone())
    }

    /// Stops the stream and every builder; every table stops being ready.
    pub fn shutdown(&self) {
        let mut control = lock(&self.control);
        if let Some((_, task)) = control.feed.take() {
            task.abort();
        }
        if let Some(task) = control.metrics.take() {
            task.abort();
        }
        let tables: Vec<(String, Managed)> = control.tables.drain().collect();
        for (key, m) in tables {
            self.stop_table(&key, m);
        }
        self.shared.connected.store(false, Ordering::SeqCst);
    }

    /// Test hook: makes the stream resume from `pos` (as if it had applied
    /// it), to exercise the path where the writer no longer has the
    /// position (error 1236): every table is rebuilt from scratch.
    #[doc(hidden)]
    pub fn debug_resume_from(&self, pos: GtidPos) {
        self.shared.applied.store(Arc::new(pos));
        let mut control = lock(&self.control);
        if let Some((key, task)) = control.feed.take() {
            task.abort();
            let task = tokio::spawn(feed::supervise(self.shared.clone()));
            control.feed = Some((key, task));
        }
    }

    fn export_metrics(&self) {
        use crate::metric as m;
        let live = self.shared.tables.load_full();
        let ctls: Vec<Arc<TableCtl>> = lock(&self.shared.registry)
            .tables
            .values()
            .map(|t| t.ctl.clone())
            .collect();
        for ctl in ctls {
            let name = ctl.config.table.clone();
            let state = ctl.state();
            for s in m::STATES {
                let v = if *s == state { 1.0 } else { 0.0 };
                ::metrics::gauge!(m::STATE, "table" => name.clone(), "state" => *s).set(v);
            }
            if let Some(t) = live.get(&ctl.key) {
                ::metrics::gauge!(m::KEYS, "table" => name.clone()).set(t.filter.keys() as f64);
                ::metrics::gauge!(m::FILTER_BYTES, "table" => name).set(t.filter.memory_bytes() as f64);
            }
        }
        ::metrics::counter!(m::EVENTS).absolute(self.shared.events.load(Ordering::Relaxed));
        if let Some(hb) = self.last_heartbeat_us() {
            ::metrics::gauge!(m::HEARTBEAT).set(hb as f64 / 1e6);
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::Budget;

    fn table(name: &str) -> Arc<TableGuard> {
        let config = GuardTableConfig {
            table: name.to_string(),
            key: "id".to_string(),
            false_positive_rate: 0.01,
            expected_keys: None,
        };
        let budget = Arc::new(Budget::default());
        Arc::new(TableGuard {
            ctl: Arc::new(TableCtl::new(config)),
            column: KeyColumn {
                name: "id".to_string(),
                ordinal: 0,
                kind: KeyKind::Integer {
                    unsigned: false,
                    bytes: 4,
                },
                nullable: false,
                index: "PRIMARY".to_string(),
            },
            filter: Arc::new(Filter::new(100, 0.01, &budget, 1 << 20).expect("a small filter fits")),
            ready: Arc::new(AtomicBool::new(true)),
        })
    }

    /// A set of `n` tables app.t0 .. app.t{n-1}, as the guard publishes it.
    fn tables(n: usize) -> Tables {
        let shared = Shared::new();
        shared.change_tables(|_| {
            (0..n)
                .map(|i| (format!("app.t{i}"), table(&format!("app.t{i}"))))
                .collect()
        });
        Tables(shared.tables.load())
    }

    #[test]
    fn a_position_names_its_table_in_small_and_large_sets() {
        // Up to 16 tables are compared in place, more are searched by key.
        for n in [3, 40] {
            let set = tables(n);
            assert_eq!(set.version(), 1);
            for i in 0..n {
                let at = set
                    .position("app", &format!("t{i}"))
                    .expect("a guarded table is found");
                assert_eq!(
                    set.at(at).map(|t| t.name().to_string()),
                    Some(format!("app.t{i}"))
                );
                // Names compare ASCII-case-insensitively.
                assert_eq!(set.position("APP", &format!("T{i}")), Some(at), "{n} tables");
            }
            assert_eq!(set.position("app", "missing"), None);
            assert_eq!(set.position("other", "t1"), None);
            assert!(set.at(n).is_none());
        }
        assert_eq!(tables(0).position("app", "t0"), None);
    }
}
