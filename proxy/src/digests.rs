//! Query digests: per statement fingerprint (the router's, literals as `?`)
//! the count, errors, latency, rows sent and routes taken, as ProxySQL's
//! `stats_mysql_query_digest`.
//!
//! Recording costs no allocation and no contended lock for a known
//! fingerprint: each thread that records has its own table behind its own
//! mutex, which only a reader of `/digests` (or a reset) ever contends;
//! the tables are merged when read. Each table keeps at most
//! `digests.max_entries` fingerprints: a new one evicts the entry with the
//! least total time into the table's `(other)` row. The merged view is
//! bounded the same way, so `(other)` holds every evicted statement and no
//! count is ever lost.
//!
//! Rendering (JSON, sorting) is in [`crate::digests_json`].

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

/// Fingerprint text kept per entry; longer ones are cut (at a character
/// boundary) and marked truncated.
pub const MAX_TEXT: usize = 1024;

/// The fingerprint shown for evicted statements.
pub const OTHER: &str = "(other)";

/// Where a statement was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Route {
    Primary,
    Replica,
    /// On the connection the client holds (transaction, pin).
    Held,
    /// The empty-key guard answered it without the database.
    Guard,
    /// Sluice answered it itself (SHOW WARNINGS from its capture, KILL).
    Local,
    /// It ended before reaching a backend (an error Sluice sent).
    #[default]
    None,
}

impl Route {
    pub const ALL: [Route; 6] = [
        Route::Primary,
        Route::Replica,
        Route::Held,
        Route::Guard,
        Route::Local,
        Route::None,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Route::Primary => "primary",
            Route::Replica => "replica",
            Route::Held => "held",
            Route::Guard => "guard",
            Route::Local => "local",
            Route::None => "none",
        }
    }
}

/// One statement's outcome.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub took: Duration,
    pub at: Instant,
    pub error: bool,
    pub rows: u64,
    pub route: Route,
}

/// Accumulated numbers of one fingerprint (or of `(other)`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Stats {
    pub count: u64,
    pub errors: u64,
    pub total_ns: u64,
    pub max_ns: u64,
    pub rows: u64,
    /// By [`Route::ALL`]'s order.
    pub routes: [u64; 6],
    pub first_seen: Option<Instant>,
    pub last_seen: Option<Instant>,
}

impl Stats {
    fn add(&mut self, s: &Sample) {
        let ns = u64::try_from(s.took.as_nanos()).unwrap_or(u64::MAX);
        self.count += 1;
        self.errors += u64::from(s.error);
        self.total_ns = self.total_ns.saturating_add(ns);
        self.max_ns = self.max_ns.max(ns);
        self.rows = self.rows.saturating_add(s.rows);
        self.routes[s.route as usize] += 1;
        self.first_seen.get_or_insert(s.at);
        self.last_seen = Some(s.at);
    }

    /// Folds `other` in: counts add, extremes are kept.
    pub fn merge(&mut self, other: &Stats) {
        self.count += other.count;
        self.errors += other.errors;
        self.total_ns = self.total_ns.saturating_add(other.total_ns);
        self.max_ns = self.max_ns.max(other.max_ns);
        self.rows = self.rows.saturating_add(other.rows);
        for (a, b) in self.routes.iter_mut().zip(other.routes) {
            *a += b;
        }
        self.first_seen = match (self.first_seen, other.first_seen) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.last_seen = self.last_seen.max(other.last_seen);
    }

    pub fn mean_ns(&self) -> u64 {
        self.total_ns.checked_div(self.count).unwrap_or(0)
    }
}

/// A fingerprint as a prepared statement keeps it from COM_STMT_PREPARE to
/// each COM_STMT_EXECUTE.
#[derive(Debug)]
pub struct Fingerprint {
    pub hash: u64,
    pub text: Box<[u8]>,
}

impl Fingerprint {
    /// Keeps one byte past what an entry keeps, so that recording sees
    /// a longer text as truncated just as it would the whole one.
    pub fn new(hash: u64, normalized: &[u8]) -> Fingerprint {
        Fingerprint {
            hash,
            text: normalized[..normalized.len().min(MAX_TEXT + 1)].into(),
        }
    }
}

/// How many bytes of `text` an entry keeps: all of it, or [`MAX_TEXT`]
/// backed off to a UTF-8 character boundary.
fn cut(text: &[u8]) -> usize {
    if text.len() <= MAX_TEXT {
        return text.len();
    }
    let mut end = MAX_TEXT;
    while end > 0 && (text[end] & 0xC0) == 0x80 {
        end -= 1;
    }
    end
}

/// The fingerprint hash is xxh3 already: the map uses it as is.
#[derive(Default)]
struct Identity(u64);

impl Hasher for Identity {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

struct Entry {
    text: Box<[u8]>,
    truncated: bool,
    stats: Stats,
}

#[derive(Default)]
struct Table {
    entries: HashMap<u64, Entry, BuildHasherDefault<Identity>>,
    other: Stats,
}

impl Table {
    fn record(&mut self, hash: u64, text: &[u8], sample: &Sample, max_entries: usize) {
        let kept = &text[..cut(text)];
        if let Some(entry) = self.entries.get_mut(&hash) {
            if *entry.text == *kept {
                entry.stats.add(sample);
            } else {
                // Two fingerprints with one hash: the later one is counted
                // in (other) rather than under the wrong text.
                self.other.add(sample);
            }
            return;
        }
        while self.entries.len() >= max_entries.max(1) {
            self.evict_one();
        }
        let mut stats = Stats::default();
        stats.add(sample);
        self.entries.insert(
            hash,
            Entry {
                text: kept.into(),
                truncated: kept.len() < text.len(),
                stats,
            },
        );
    }

    /// Folds the entry with the least total time into `(other)`.
    fn evict_one(&mut self) {
        let Some(hash) = self
            .entries
            .iter()
            .min_by_key(|(_, e)| e.stats.total_ns)
            .map(|(h, _)| *h)
        else {
            return;
        };
        if let Some(entry) = self.entries.remove(&hash) {
            self.other.merge(&entry.stats);
            metrics::counter!("sluice_digests_evicted_total").increment(1);
        }
    }
}

type Shard = Mutex<Table>;

fn lock(shard: &Shard) -> MutexGuard<'_, Table> {
    shard.lock().unwrap_or_else(|e| e.into_inner())
}

/// Every thread's table, the current settings, and the clock pair that
/// turns an `Instant` into unix time.
struct Registry {
    shards: Mutex<Vec<Arc<Shard>>>,
    enabled: AtomicBool,
    max_entries: AtomicUsize,
    epoch: (Instant, SystemTime),
}

static REGISTRY: LazyLock<Registry> = LazyLock::new(|| Registry {
    shards: Mutex::new(Vec::new()),
    enabled: AtomicBool::new(true),
    max_entries: AtomicUsize::new(1000),
    epoch: (Instant::now(), SystemTime::now()),
});

thread_local! {
    /// This thread's table, registered on its first statement.
    static LOCAL: Arc<Shard> = {
        let shard = Arc::new(Shard::default());
        REGISTRY
            .shards
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(shard.clone());
        shard
    };
}

/// The settings the view and `sluice top` report (from `[digests]`, at
/// start and on each reload). Sessions pass their own config's limit to
/// [`record`].
pub fn configure(config: &sluice_config::DigestsConfig) {
    REGISTRY.enabled.store(config.enabled, Ordering::Relaxed);
    REGISTRY
        .max_entries
        .store(config.max_entries.max(1), Ordering::Relaxed);
}

pub fn enabled() -> bool {
    REGISTRY.enabled.load(Ordering::Relaxed)
}

pub fn max_entries() -> usize {
    REGISTRY.max_entries.load(Ordering::Relaxed)
}

/// Records one statement under fingerprint `text` (normalized, any length)
/// with hash `hash`, in the calling thread's table. Out of line so that a
/// profile shows its cost (`bench/digests.sh`); a call is nothing beside it.
#[inline(never)]
pub fn record(hash: u64, text: &[u8], sample: &Sample, max_entries: usize) {
    // Only during thread teardown is the table gone: nothing is recorded.
    let _ = LOCAL.try_with(|shard| lock(shard).record(hash, text, sample, max_entries));
}

/// Empties every table.
pub fn reset() {
    let shards = REGISTRY.shards.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for shard in shards {
        let mut table = lock(&shard);
        table.entries.clear();
        table.entries.shrink_to_fit();
        table.other = Stats::default();
    }
}

/// One row of the merged view.
#[derive(Debug, Clone)]
pub struct Row {
    /// None for the `(other)` row.
    pub hash: Option<u64>,
    pub text: String,
    pub truncated: bool,
    pub stats: Stats,
}

/// An entry copied out of a table: hash, text, truncated, numbers.
type Copied = (u64, Box<[u8]>, bool, Stats);

/// All tables merged, at most `max_entries` fingerprints plus `(other)`
/// (when it has counted anything), in no particular order.
pub fn snapshot() -> Vec<Row> {
    let shards = REGISTRY.shards.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut merged: HashMap<u64, Row> = HashMap::new();
    let mut other = Stats::default();
    for shard in shards {
        // Copied under the lock, merged after: recording waits only for
        // the copy.
        let (entries, table_other): (Vec<Copied>, Stats) = {
            let table = lock(&shard);
            (
                table
                    .entries
                    .iter()
                    .map(|(h, e)| (*h, e.text.clone(), e.truncated, e.stats))
                    .collect(),
                table.other,
            )
        };
        other.merge(&table_other);
        for (hash, text, truncated, stats) in entries {
            merged
                .entry(hash)
                .and_modify(|row| row.stats.merge(&stats))
                .or_insert_with(|| Row {
                    hash: Some(hash),
                    text: String::from_utf8_lossy(&text).into_owned(),
                    truncated,
                    stats,
                });
        }
    }
    let mut rows: Vec<Row> = merged.into_values().collect();
    let max = max_entries();
    if rows.len() > max {
        rows.sort_by_key(|r| std::cmp::Reverse(r.stats.total_ns));
        for row in rows.drain(max..) {
            other.merge(&row.stats);
        }
    }
    if other.count > 0 {
        rows.push(Row {
            hash: None,
            text: OTHER.to_string(),
            truncated: false,
            stats: other,
        });
    }
    rows
}

/// Unix seconds of an instant recorded since the registry started.
pub fn unix_seconds(at: Instant) -> u64 {
    let (base_instant, base_system) = REGISTRY.epoch;
    let system = base_system + at.saturating_duration_since(base_instant);
    system
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(ms: u64, error: bool) -> Sample {
        Sample {
            took: Duration::from_millis(ms),
            at: Instant::now(),
            error,
            rows: 1,
            route: Route::Replica,
        }
    }

    #[test]
    fn a_full_table_evicts_the_least_total_time_into_other() {
        let mut t = Table::default();
        t.record(1, b"SELECT a", &sample(5, false), 2);
        t.record(2, b"SELECT b", &sample(1, true), 2);
        t.record(3, b"SELECT c", &sample(9, false), 2);
        assert_eq!(t.entries.len(), 2);
        assert!(!t.entries.contains_key(&2));
        assert_eq!(t.other.count, 1);
        assert_eq!(t.other.errors, 1);
        assert_eq!(t.other.routes[Route::Replica as usize], 1);
    }

    #[test]
    fn long_text_is_cut_at_a_character_boundary() {
        let mut text = "SELECT '".to_string();
        text.push_str(&"é".repeat(MAX_TEXT));
        let mut t = Table::default();
        t.record(7, text.as_bytes(), &sample(1, false), 10);
        let e = &t.entries[&7];
        assert!(e.truncated);
        assert!(e.text.len() <= MAX_TEXT);
        assert!(std::str::from_utf8(&e.text).is_ok());
        // The same statement again lands on the same entry.
        t.record(7, text.as_bytes(), &sample(1, false), 10);
        assert_eq!(t.entries[&7].stats.count, 2);
        let prepared = Fingerprint::new(7, text.as_bytes());
        t.record(7, &prepared.text, &sample(1, false), 10);
        assert_eq!(t.entries[&7].stats.count, 3);
    }

    #[test]
    fn a_hash_collision_never_counts_under_the_wrong_text() {
        let mut t = Table::default();
        t.record(1, b"SELECT a", &sample(1, false), 10);
        t.record(1, b"DELETE FROM t", &sample(1, false), 10);
        assert_eq!(t.entries[&1].stats.count, 1);
        assert_eq!(t.other.count, 1);
    }
}
