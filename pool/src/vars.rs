//! Session variables, interned. Every checkout asks whether a pooled
//! connection already has the client's variables; with thousands of
//! clients holding the same few sets (a driver's charset and sql_mode),
//! comparing two maps string by string was a measurable part of each
//! statement. Equal sets share one allocation here, so that question is a
//! pointer comparison. Sets change only on `SET`, a connect or a
//! session-tracking report, and only then pay for the lookup.

use foldhash::fast::RandomState;
use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;
use std::ops::Deref;
use std::sync::{Arc, Mutex, PoisonError, Weak};

type Map = BTreeMap<String, String>;

/// Session variables by lower-case name, as the server formats them.
#[derive(Clone)]
pub struct Vars(Arc<Map>);

impl Vars {
    /// Sets one variable.
    pub fn insert(&mut self, name: String, value: String) {
        self.update(|map| {
            map.insert(name, value);
        });
    }

    /// The same interned set (what a cache of values derived from a set
    /// keys on).
    pub fn same(&self, other: &Vars) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// Changes several variables at once (one lookup in the intern table).
    pub fn update(&mut self, change: impl FnOnce(&mut Map)) {
        let mut map = (*self.0).clone();
        change(&mut map);
        if map != *self.0 {
            *self = Vars(intern(map));
        }
    }
}

impl Default for Vars {
    fn default() -> Vars {
        Vars(intern(Map::new()))
    }
}

impl Deref for Vars {
    type Target = Map;
    fn deref(&self) -> &Map {
        &self.0
    }
}

impl PartialEq for Vars {
    fn eq(&self, other: &Vars) -> bool {
        // Interned: equal sets are almost always the same allocation (a set
        // built while an equal one was being dropped is not).
        Arc::ptr_eq(&self.0, &other.0) || *self.0 == *other.0
    }
}

impl Eq for Vars {}

impl std::fmt::Debug for Vars {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl FromIterator<(String, String)> for Vars {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Vars {
        Vars(intern(iter.into_iter().collect()))
    }
}

/// Live sets by the hash of their contents.
struct Table {
    /// foldhash, seeded per process: SipHash of a driver's dozen variables
    /// was a measurable part of a connect-per-query client's login.
    hasher: RandomState,
    sets: HashMap<u64, Vec<Weak<Map>>, RandomState>,
    /// Sweep out dropped sets when the table grows past this.
    sweep_at: usize,
}

static TABLE: Mutex<Option<Table>> = Mutex::new(None);

fn intern(map: Map) -> Arc<Map> {
    let mut guard = TABLE.lock().unwrap_or_else(PoisonError::into_inner);
    let table = guard.get_or_insert_with(|| Table {
        hasher: RandomState::default(),
        sets: HashMap::default(),
        sweep_at: 64,
    });
    let hash = table.hasher.hash_one(&map);
    let bucket = table.sets.entry(hash).or_default();
    bucket.retain(|w| w.strong_count() > 0);
    if let Some(found) = bucket.iter().find_map(|w| w.upgrade().filter(|set| **set == map)) {
        return found;
    }
    let set = Arc::new(map);
    bucket.push(Arc::downgrade(&set));
    if table.sets.len() > table.sweep_at {
        table.sets.retain(|_, bucket| {
            bucket.retain(|w| w.strong_count() > 0);
            !bucket.is_empty()
        });
        table.sweep_at = (table.sets.len() * 2).max(64);
    }
    set
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vars {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn equal_sets_share_one_allocation() {
        let a = vars(&[("autocommit", "ON"), ("sql_mode", "STRICT_ALL_TABLES")]);
        let b = vars(&[("sql_mode", "STRICT_ALL_TABLES"), ("autocommit", "ON")]);
        assert!(Arc::ptr_eq(&a.0, &b.0));
        let mut c = vars(&[("autocommit", "ON")]);
        assert_ne!(a, c);
        c.insert("sql_mode".into(), "STRICT_ALL_TABLES".into());
        assert!(Arc::ptr_eq(&a.0, &c.0));
        assert_eq!(a, c);
    }

    #[test]
    fn a_change_leaves_other_holders_alone() {
        let a = vars(&[("autocommit", "ON")]);
        let mut b = a.clone();
        b.insert("autocommit".into(), "OFF".into());
        assert_eq!(a.get("autocommit").map(String::as_str), Some("ON"));
        assert_eq!(b.get("autocommit").map(String::as_str), Some("OFF"));
        assert_ne!(a, b);
        // Setting what is already there keeps the shared set.
        let mut c = a.clone();
        c.insert("autocommit".into(), "ON".into());
        assert!(Arc::ptr_eq(&a.0, &c.0));
    }

    #[test]
    fn dropped_sets_are_swept() {
        for i in 0..1000 {
            let _ = vars(&[("sql_mode", &format!("mode{i}"))]);
        }
        let live = vars(&[("sql_mode", "kept")]);
        let table = TABLE.lock().unwrap_or_else(PoisonError::into_inner);
        let size = table.as_ref().map_or(0, |t| t.sets.len());
        assert!(size < 300, "{size} hash buckets kept for 1 live set");
        drop(table);
        assert_eq!(live.get("sql_mode").map(String::as_str), Some("kept"));
    }
}
