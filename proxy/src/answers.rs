//! The server's own metadata for the guard's local answers. When a
//! guardable lookup really runs, the column definitions of its result set
//! are kept here, keyed by everything that can change them: the statement's
//! text apart from the key's values, the guarded table, the result
//! charset, the protocol (text or binary) and the guarded table's DDL
//! generation. A guarded answer sends exactly these packets, so a shape
//! that has not run once is never answered locally.

use bytes::Bytes;
use lru::LruCache;
use std::hash::{Hash, Hasher};
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

/// What the metadata of one execution depends on.
#[derive(Debug, Clone, Copy)]
pub struct ShapeKey<'a> {
    /// The statement's text with the key's values left out (its text with
    /// the key's literals as `?`, or a prepared statement's SQL).
    pub text: &'a [u8],
    /// The guarded table, `schema.table`.
    pub table: &'a str,
    /// `character_set_results`, `collation_connection` and the results
    /// collation, as the session has them.
    pub charset: [&'a str; 3],
    /// COM_STMT_EXECUTE (binary rows) rather than COM_QUERY.
    pub binary: bool,
    /// The definitions carry MariaDB's extended type information (the
    /// client asked for `MARIADB_CLIENT_EXTENDED_METADATA`).
    pub extended: bool,
    /// The guarded table's DDL generation when the metadata was seen.
    pub generation: u64,
}

impl ShapeKey<'_> {
    fn hash64(&self) -> u64 {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        self.text.hash(&mut h);
        self.table.hash(&mut h);
        self.charset.hash(&mut h);
        self.binary.hash(&mut h);
        self.extended.hash(&mut h);
        self.generation.hash(&mut h);
        h.finish()
    }
}

struct Entry {
    text: Box<[u8]>,
    table: Box<str>,
    charset: [Box<str>; 3],
    binary: bool,
    extended: bool,
    generation: u64,
    /// The column count packet, then one packet per column definition.
    columns: Arc<[Bytes]>,
}

impl Entry {
    fn matches(&self, key: &ShapeKey<'_>) -> bool {
        *self.text == *key.text
            && *self.table == *key.table
            && self.charset.iter().zip(key.charset).all(|(a, b)| **a == *b)
            && self.binary == key.binary
            && self.extended == key.extended
            && self.generation == key.generation
    }
}

const SHARDS: usize = 8;

/// A bounded cache of result-set metadata by statement shape.
pub struct Answers {
    shards: Vec<Mutex<LruCache<u64, Entry>>>,
}

impl Answers {
    pub fn new(capacity: usize) -> Answers {
        let per_shard = NonZeroUsize::new(capacity.div_ceil(SHARDS).max(1)).unwrap_or(NonZeroUsize::MIN);
        Answers {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(LruCache::new(per_shard)))
                .collect(),
        }
    }

    fn shard(&self, hash: u64) -> std::sync::MutexGuard<'_, LruCache<u64, Entry>> {
        self.shards[(hash as usize) % SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// The column count and definitions last seen for this shape.
    pub fn get(&self, key: &ShapeKey<'_>) -> Option<Arc<[Bytes]>> {
        let hash = key.hash64();
        let mut shard = self.shard(hash);
        // The whole key is compared: a hash collision must never answer
        // with another statement's columns.
        shard
            .get(&hash)
            .filter(|e| e.matches(key))
            .map(|e| e.columns.clone())
    }

    pub fn put(&self, key: &ShapeKey<'_>, columns: Vec<Bytes>) {
        if columns.is_empty() {
            return;
        }
        let hash = key.hash64();
        let entry = Entry {
            text: key.text.into(),
            table: key.table.into(),
            charset: key.charset.map(Into::into),
            binary: key.binary,
            extended: key.extended,
            generation: key.generation,
            columns: columns.into(),
        };
        self.shard(hash).put(hash, entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key<'a>(text: &'a [u8], charset: &'a str, generation: u64) -> ShapeKey<'a> {
        ShapeKey {
            text,
            table: "app.t",
            charset: [charset, "utf8mb4_general_ci", "utf8mb4 utf8mb4_general_ci"],
            binary: false,
            extended: false,
            generation,
        }
    }

    #[test]
    fn metadata_is_found_only_under_the_same_shape() {
        let answers = Answers::new(16);
        let cols = vec![Bytes::from_static(b"\x01"), Bytes::from_static(b"def")];
        answers.put(&key(b"SELECT * FROM t WHERE id = ?", "utf8mb4", 0), cols.clone());
        let got = answers.get(&key(b"SELECT * FROM t WHERE id = ?", "utf8mb4", 0));
        assert_eq!(got.as_deref(), Some(&cols[..]));
        assert!(
            answers
                .get(&key(b"SELECT * FROM t WHERE id = ?", "latin1", 0))
                .is_none()
        );
        assert!(
            answers
                .get(&key(b"SELECT c FROM t WHERE id = ?", "utf8mb4", 0))
                .is_none()
        );
        // DDL on the table since: the old metadata is not used.
        assert!(
            answers
                .get(&key(b"SELECT * FROM t WHERE id = ?", "utf8mb4", 1))
                .is_none()
        );
        let binary = ShapeKey {
            binary: true,
            ..key(b"SELECT * FROM t WHERE id = ?", "utf8mb4", 0)
        };
        assert!(answers.get(&binary).is_none());
    }

    #[test]
    fn the_cache_is_bounded() {
        let answers = Answers::new(8);
        for i in 0..100u32 {
            let text = format!("SELECT c{i} FROM t WHERE id = ?");
            answers.put(&key(text.as_bytes(), "x", 0), vec![Bytes::from_static(b"\x01")]);
        }
        let held: usize = answers.shards.iter().map(|s| s.lock().unwrap().len()).sum();
        assert!(held <= 8, "{held}");
    }
}
