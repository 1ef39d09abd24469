//! State shared by the feed, the table builders and the lookup API. The
//! [`Registry`] (one mutex) is where the ordering rules live: a new filter
//! is registered to receive stream keys before its snapshot is taken, the
//! applied position advances and pending filters become ready under the
//! same lock, and a table is marked not-ready before the position of the
//! event that disabled it is published.

use crate::column::KeyColumn;
use crate::filter::{Budget, Filter};
use crate::key::KeyKind;
use arc_swap::ArcSwap;
use sluice_config::GuardTableConfig;
use sluice_router::GtidPos;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use tokio::sync::{Notify, oneshot, watch};

/// Locks a mutex, ignoring poison (a panicking stream task must not take
/// the guard down with it; the data under these locks stays consistent
/// at every await-free step).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Settings from the config that change without restarting anything.
#[derive(Debug, Clone, Default)]
pub(crate) struct Settings {
    pub rebuild_interval_ms: u64,
    pub max_memory_bytes: u64,
    pub server_id: u32,
    pub user: String,
    pub password: String,
    /// `schema.table` of the heartbeat rows, "" = none.
    pub heartbeat_table: String,
    /// This instance's heartbeat row (`server.instance_name`'s id).
    pub instance_id: u32,
    /// Each backend's TLS settings by address (the guard follows the
    /// writer by address).
    pub backend_tls: Vec<(String, sluice_config::BackendTls)>,
}

impl Settings {
    /// The TLS settings of the backend at `address` (the default,
    /// `preferred`, for an address no backend has).
    pub fn tls_for(&self, address: &str) -> sluice_config::BackendTls {
        self.backend_tls
            .iter()
            .find(|(a, _)| a == address)
            .map(|(_, tls)| tls.clone())
            .unwrap_or_default()
    }
}

/// One version of the guarded table set. A session remembers a lookup's
/// table by its position in `order` under `version`: the same version is
/// the same set, so the same position is the same table.
pub struct TableSet {
    /// Counts the changes of the set (0: the empty set at start).
    pub version: u64,
    /// By lowercase `schema.table`.
    pub map: HashMap<String, Arc<crate::TableGuard>>,
    /// The same tables in key order.
    pub order: Vec<(String, Arc<crate::TableGuard>)>,
}

impl TableSet {
    pub fn new(version: u64, map: HashMap<String, Arc<crate::TableGuard>>) -> TableSet {
        let mut order: Vec<_> = map.iter().map(|(k, t)| (k.clone(), t.clone())).collect();
        order.sort_by(|a, b| a.0.cmp(&b.0));
        TableSet { version, map, order }
    }
}

impl std::ops::Deref for TableSet {
    type Target = HashMap<String, Arc<crate::TableGuard>>;

    fn deref(&self) -> &Self::Target {
        &self.map
    }
}

/// The guard's state.
pub(crate) struct Shared {
    /// Current snapshot per table, keyed by lowercase `schema.table`.
    pub tables: ArcSwap<TableSet>,
    /// Bumped after every change of `tables` (see [`Shared::change_tables`]).
    pub tables_version: AtomicU64,
    pub applied: ArcSwap<GtidPos>,
    /// 0 = no heartbeat seen.
    pub heartbeat_us: AtomicU64,
    pub connected: AtomicBool,
    pub budget: Arc<Budget>,
    pub registry: Mutex<Registry>,
    pub settings: ArcSwap<Settings>,
    pub writer: Mutex<Option<watch::Receiver<Option<String>>>>,
    /// Bumped each time the stream's start position is (re)set: builders
    /// wait for 1 and restart when it moves.
    pub epoch: watch::Sender<u64>,
    /// Why the feed refuses to run (binlog format), if it does.
    pub refused: Mutex<Option<String>>,
    pub last_error: Mutex<Option<String>>,
    pub events: AtomicU64,
    pub reconnects: AtomicU64,
}

impl Shared {
    /// Changes the table set, then bumps its version: a reader that saw the
    /// old version may hold either set, one that sees the new version finds
    /// the new set.
    pub fn change_tables(
        &self,
        change: impl Fn(&HashMap<String, Arc<crate::TableGuard>>) -> HashMap<String, Arc<crate::TableGuard>>,
    ) {
        self.tables
            .rcu(|set| TableSet::new(set.version + 1, change(&set.map)));
        self.tables_version.fetch_add(1, Ordering::Release);
    }

    pub fn new() -> Shared {
        Shared {
            tables: ArcSwap::from_pointee(TableSet::new(0, HashMap::new())),
            tables_version: AtomicU64::new(0),
            applied: ArcSwap::from_pointee(GtidPos::default()),
            heartbeat_us: AtomicU64::new(0),
            connected: AtomicBool::new(false),
            budget: Arc::new(Budget::default()),
            registry: Mutex::new(Registry::default()),
            settings: ArcSwap::from_pointee(Settings::default()),
            writer: Mutex::new(None),
            epoch: watch::channel(0).0,
            refused: Mutex::new(None),
            last_error: Mutex::new(None),
            events: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
        }
    }

    /// Marks the table's live filter not ready (it keeps its keys).
    pub fn mark_not_ready(&self, key: &str) {
        if let Some(t) = self.tables.load().get(key) {
            t.ready.store(false, Ordering::SeqCst);
        }
    }

    pub fn writer_address(&self) -> Option<String> {
        lock(&self.writer).as_ref().and_then(|w| w.borrow().clone())
    }
}

/// Who receives stream keys, and who waits for the stream to catch up.
#[derive(Default)]
pub(crate) struct Registry {
    pub tables: HashMap<String, RegTable>,
    /// Lowercase `schema.table` of the heartbeat rows, the `id` and `ts`
    /// columns' positions, and this instance's row id.
    pub heartbeat: Option<HeartbeatColumns>,
    pub next_build: u64,
}

/// Where this instance's heartbeats are in the heartbeat table's row
/// events: rows whose `id` is `instance` (another instance's rows carry
/// its clock, not ours).
pub(crate) struct HeartbeatColumns {
    pub table: String,
    pub id: usize,
    pub ts: usize,
    pub instance: u32,
}

pub(crate) struct RegTable {
    pub ctl: Arc<TableCtl>,
    pub sinks: Vec<Sink>,
    pub pending: Vec<Pending>,
}

/// A filter fed from the stream (held weakly: a superseded filter is fed
/// for as long as a lookup still holds it).
pub(crate) struct Sink {
    pub build: u64,
    pub ordinal: usize,
    pub kind: KeyKind,
    pub filter: Weak<Filter>,
    /// The `ready` flag of every `TableGuard` built on this filter.
    pub ready: Arc<AtomicBool>,
}

/// A scanned filter waiting for the stream to cover its snapshot.
pub(crate) struct Pending {
    pub snapshot: GtidPos,
    pub done: oneshot::Sender<()>,
}

impl Registry {
    /// Fires every pending build whose snapshot `applied` covers.
    pub fn release_covered(&mut self, applied: &GtidPos) {
        for t in self.tables.values_mut() {
            if t.pending.iter().any(|p| applied.covers(&p.snapshot)) {
                let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut t.pending)
                    .into_iter()
                    .partition(|p| applied.covers(&p.snapshot));
                t.pending = waiting;
                for p in ready {
                    let _ = p.done.send(());
                }
            }
        }
    }

    /// Drops every filter and pending build of a table (each one, current
    /// or superseded but still held, stops being ready): it must be built
    /// again. Returns the table's control block.
    pub fn forget_filters(&mut self, key: &str) -> Option<Arc<TableCtl>> {
        let t = self.tables.get_mut(key)?;
        for sink in t.sinks.drain(..) {
            sink.ready.store(false, Ordering::SeqCst);
        }
        t.pending.clear();
        Some(t.ctl.clone())
    }

    pub fn has_sink(&self, key: &str, build: u64) -> bool {
        self.tables
            .get(key)
            .is_some_and(|t| t.sinks.iter().any(|s| s.build == build))
    }
}

/// What a table's status shows.
#[derive(Debug, Clone, Default)]
pub(crate) struct TableStatus {
    pub state: &'static str,
    pub reason: Option<String>,
    pub rebuilds: u64,
    pub snapshot: Option<String>,
    pub column: Option<KeyColumn>,
    pub build_ms: Option<u64>,
}

/// Where a table's DDL generations start: every time a table is (again)
/// guarded, above any generation it had before, so result metadata kept
/// while it was guarded earlier is never taken for current (DDL done while
/// it was not guarded went unseen). DDL bumps by one within the range.
fn first_generation() -> u64 {
    static GUARDED: AtomicU64 = AtomicU64::new(0);
    GUARDED.fetch_add(1, Ordering::Relaxed) << 32
}

/// One configured table: lives as long as its config entry, across builds.
pub(crate) struct TableCtl {
    pub config: GuardTableConfig,
    /// Lowercase `schema.table`.
    pub key: String,
    pub schema: String,
    pub table: String,
    pub ddl_generation: AtomicU64,
    /// The position where the table's structure was last established (a
    /// build's snapshot, a DDL's GTID): a backend that has not applied it
    /// may still return the old columns.
    pub structure_at: Mutex<sluice_router::GtidPos>,
    pub status: Mutex<TableStatus>,
    rebuild: Mutex<Option<&'static str>>,
    notify: Notify,
}

impl TableCtl {
    pub fn new(config: GuardTableConfig) -> TableCtl {
        let (schema, table) = config
            .table
            .split_once('.')
            .unwrap_or(("", config.table.as_str()));
        TableCtl {
            key: config.table.to_ascii_lowercase(),
            schema: schema.to_string(),
            table: table.to_string(),
            ddl_generation: AtomicU64::new(first_generation()),
            structure_at: Mutex::new(sluice_router::GtidPos::default()),
            status: Mutex::new(TableStatus {
                state: "building",
                ..TableStatus::default()
            }),
            rebuild: Mutex::new(None),
            notify: Notify::new(),
            config,
        }
    }

    /// Asks the table's builder to build again (the first reason wins until
    /// it is taken).
    pub fn request_rebuild(&self, reason: &'static str) {
        lock(&self.rebuild).get_or_insert(reason);
        self.notify.notify_one();
    }

    /// Whether a rebuild was asked for and not yet taken.
    pub fn rebuild_pending(&self) -> bool {
        lock(&self.rebuild).is_some()
    }

    pub fn take_rebuild(&self) -> Option<&'static str> {
        lock(&self.rebuild).take()
    }

    /// Waits for a rebuild request and returns its reason.
    pub async fn rebuild_requested(&self) -> &'static str {
        loop {
            if let Some(reason) = self.take_rebuild() {
                return reason;
            }
            self.notify.notified().await;
        }
    }

    pub fn set_state(&self, state: &'static str, reason: Option<String>) {
        let mut s = lock(&self.status);
        s.state = state;
        s.reason = reason;
    }

    pub fn state(&self) -> &'static str {
        lock(&self.status).state
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_change_of_the_table_set_bumps_its_version_after_the_new_set_is_in() {
        let shared = Shared::new();
        assert_eq!(shared.tables_version.load(Ordering::Acquire), 0);
        shared.change_tables(|tables| {
            // The version is bumped after the change: not yet here.
            assert_eq!(shared.tables_version.load(Ordering::Acquire), 0);
            tables.clone()
        });
        assert_eq!(shared.tables_version.load(Ordering::Acquire), 1);
        shared.change_tables(|tables| tables.clone());
        assert_eq!(shared.tables_version.load(Ordering::Acquire), 2);
        // The set carries its own version: a position remembered under it
        // is read against the same set.
        assert_eq!(shared.tables.load().version, 2);
    }
}
