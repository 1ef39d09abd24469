//! The series Sluice renders itself (latency histograms, striped counters):
//! registered once and kept for the life of the process, as the exporter's
//! series are, and written family by family at scrape.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

/// Every registered series of one kind.
pub struct Registry<T>(Mutex<Vec<Arc<T>>>);

impl<T> Registry<T> {
    pub const fn new() -> Registry<T> {
        Registry(Mutex::new(Vec::new()))
    }

    /// The series that `matches`, registered from `make` on first use.
    pub fn get_or_add(&self, matches: impl Fn(&T) -> bool, make: impl FnOnce() -> T) -> Arc<T> {
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(found) = all.iter().find(|s| matches(s)) {
            return found.clone();
        }
        let s = Arc::new(make());
        all.push(s.clone());
        s
    }

    /// Every series, ordered by `key` (a family's series together).
    pub fn sorted<K: Ord>(&self, key: impl Fn(&T) -> K) -> Vec<Arc<T>> {
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        all.sort_by_key(|s| key(s));
        all
    }
}

/// Writes a family's HELP and TYPE lines before its first series (`last`
/// is the family written before).
pub fn family_header(
    out: &mut String,
    last: &mut Option<&'static str>,
    name: &'static str,
    help: &str,
    kind: &str,
) {
    if *last != Some(name) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        *last = Some(name);
    }
}
