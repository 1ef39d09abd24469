//! The prepared statements one backend connection holds: a bounded LRU keyed
//! by SQL text, so any client's statement with the same text reuses it and
//! `max_prepared_stmt_count` on the server is never exhausted however many
//! statements clients prepare. The least recently used one is closed when
//! the bound is reached.

use bytes::Bytes;
use lru::LruCache;
use std::sync::Arc;

/// The column definitions of a statement's result, as the server sent
/// them (one payload each). Under MariaDB's metadata cache an execute may
/// skip them, meaning "the same as last time": these are what it means.
/// (An `Arc<Vec>`, not `Arc<[_]>`: a thin pointer keeps the statement
/// path's values small.)
pub type ColumnDefs = Arc<Vec<Bytes>>;

/// One server-side prepared statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendStatement {
    pub id: u32,
    pub params: u16,
    pub columns: u16,
    /// Parameter types last sent with an execute on this connection; the
    /// server remembers them, so later executes may omit them.
    pub types: Option<Arc<[u8]>>,
    /// The result's column definitions the server last sent for this
    /// statement on this connection (its prepare response, or an execute
    /// that sent new ones); None when it has no result columns.
    pub column_defs: Option<ColumnDefs>,
    /// The connection's session variables when `column_defs` were sent.
    /// The definitions depend on `character_set_results`, which the
    /// server's "did they change?" check ignores.
    pub defs_vars: Option<crate::Vars>,
    /// The connection's default schema when it was prepared: the server
    /// resolved its unqualified table names in that schema for good, so a
    /// client in another schema must not run it.
    pub schema: Option<String>,
}

#[derive(Debug)]
pub struct StatementCache {
    lru: LruCache<Arc<str>, BackendStatement>,
}

impl Default for StatementCache {
    fn default() -> Self {
        StatementCache {
            lru: LruCache::unbounded(),
        }
    }
}

impl StatementCache {
    pub fn get(&mut self, sql: &str) -> Option<&mut BackendStatement> {
        self.lru.get_mut(sql)
    }

    pub fn contains(&self, sql: &str) -> bool {
        self.lru.contains(sql)
    }

    /// Adds a statement; returns the ids of statements evicted to stay
    /// within `capacity` (the caller closes them on the server).
    pub fn insert(&mut self, sql: Arc<str>, statement: BackendStatement, capacity: usize) -> Vec<u32> {
        let mut evicted = Vec::new();
        // One prepared in another schema is replaced: close it too.
        let id = statement.id;
        if let Some(old) = self.lru.put(sql, statement).filter(|old| old.id != id) {
            evicted.push(old.id);
        }
        while self.lru.len() > capacity.max(1) {
            if let Some((_, old)) = self.lru.pop_lru() {
                evicted.push(old.id);
            }
        }
        evicted
    }

    /// Removes the least recently used statement if `capacity` statements
    /// are held, so one more can be prepared without exceeding it. Returns
    /// its id (the caller closes it on the server).
    pub fn evict_for_one_more(&mut self, capacity: usize) -> Option<u32> {
        if self.lru.len() >= capacity.max(1) {
            return self.lru.pop_lru().map(|(_, s)| s.id);
        }
        None
    }

    /// Forgets a statement; returns its id (the caller closes it on the
    /// server).
    pub fn remove(&mut self, sql: &str) -> Option<u32> {
        self.lru.pop(sql).map(|s| s.id)
    }

    /// A statement by SQL text, without touching recency.
    pub fn peek_mut(&mut self, sql: &str) -> Option<&mut BackendStatement> {
        self.lru.peek_mut(sql)
    }

    /// The id a backend statement has here, by SQL text, without touching
    /// recency.
    pub fn id_of(&self, sql: &str) -> Option<u32> {
        self.lru.peek(sql).map(|s| s.id)
    }

    pub fn len(&self) -> usize {
        self.lru.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lru.is_empty()
    }

    pub fn clear(&mut self) {
        self.lru.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stmt(id: u32) -> BackendStatement {
        BackendStatement {
            id,
            params: 0,
            columns: 0,
            types: None,
            column_defs: None,
            defs_vars: None,
            schema: None,
        }
    }

    #[test]
    fn evicts_least_recently_used_beyond_capacity() {
        let mut c = StatementCache::default();
        assert!(c.insert("a".into(), stmt(1), 2).is_empty());
        assert!(c.insert("b".into(), stmt(2), 2).is_empty());
        c.get("a"); // a is now more recent than b
        assert_eq!(c.insert("c".into(), stmt(3), 2), vec![2]);
        assert!(c.contains("a") && c.contains("c") && !c.contains("b"));
    }
}
