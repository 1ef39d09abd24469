//! Classification with a cache: the fingerprint of a statement keys a
//! bounded LRU of [`Facts`]; sqlparser runs only on a miss, so a template
//! is parsed once however often it runs.

use crate::analyze::{AstFacts, analyze};
use crate::classify::{Kind, PinReason, Statement, classify};
use crate::fingerprint::fingerprint;
use lru::LruCache;
use std::num::NonZeroUsize;
use std::ops::Range;
use std::sync::{Arc, Mutex};

/// Everything known about a statement template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// From the one-pass lexer (always available).
    pub lexical: Statement,
    /// From sqlparser (`ast.parsed == false` if it could not parse).
    pub ast: AstFacts,
}

impl Facts {
    pub fn of(sql: &str) -> Facts {
        Facts {
            lexical: classify(sql),
            ast: analyze(sql),
        }
    }

    pub fn kind(&self) -> Kind {
        self.ast.kind.unwrap_or(self.lexical.kind)
    }

    /// sqlparser could not parse it: it runs on the primary, counted.
    pub fn unparsed(&self) -> bool {
        !self.ast.parsed
    }

    /// A replica may run it: one parsed statement that only reads and
    /// leaves no state behind.
    pub fn replica_safe(&self) -> bool {
        self.ast.parsed && self.ast.statements == 1 && self.ast.read_only && self.pin_reason(0).is_none()
    }

    /// `SET @v = literal, ...` whose values Sluice can replay on another
    /// connection, given how many literals this execution has.
    pub fn tracked_user_vars(&self, literal_count: usize) -> bool {
        self.kind() == Kind::Set
            && !self.ast.user_var_literals.is_empty()
            && !self.ast.user_var_expression
            && self.ast.user_var_literals.len() == literal_count
    }

    /// May set user variables to values Sluice cannot see in the text
    /// (`SELECT ... INTO @v`, `SET @a := expr`, a procedure's OUT
    /// parameter or body): the session reads them back afterwards instead
    /// of pinning.
    pub fn writes_user_vars(&self, literal_count: usize) -> bool {
        self.kind() == Kind::Call
            || (self.lexical.pin == Some(PinReason::UserVariable) && !self.tracked_user_vars(literal_count))
    }

    /// The state this statement leaves that pins the client, if any.
    pub fn pin_reason(&self, literal_count: usize) -> Option<PinReason> {
        match self.lexical.pin {
            Some(PinReason::UserVariable) if self.tracked_user_vars(literal_count) => None,
            other => other,
        }
    }
}

/// Reusable buffers for fingerprinting, one per session, and the
/// session's recent classifications: a client repeating its few statement
/// shapes (the common case) skips the shared cache and its lock.
#[derive(Debug, Default)]
pub struct Scratch {
    pub normalized: Vec<u8>,
    pub literals: Vec<Range<usize>>,
    recent: Vec<Recent>,
    /// The entry the next new shape replaces, once `recent` is full.
    evict: usize,
    generations: u64,
}

/// Shapes a session remembers (sysbench's four tables, an application's
/// handful of hot statements).
const RECENT: usize = 8;

/// One remembered classification. Its facts are lent to the statement that
/// runs (moved out, not cloned: cloning the shared `Arc` per statement
/// wrote a reference count that sessions on every worker thread write) and
/// given back when it ends ([`Scratch::give_back`]).
#[derive(Debug)]
struct Recent {
    hash: u64,
    key: Vec<u8>,
    /// None while lent.
    facts: Option<Arc<Facts>>,
    /// Unique per entry: facts come back only to the entry they left.
    generation: u64,
}

/// Where a classification's facts go back to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lent {
    index: usize,
    generation: u64,
}

impl Scratch {
    /// Returns the facts of a classification to the session's memo, if
    /// the entry they came from is still there (else they are dropped).
    pub fn give_back(&mut self, lent: Option<Lent>, facts: Arc<Facts>) {
        let Some(lent) = lent else {
            return;
        };
        if let Some(entry) = self.recent.get_mut(lent.index) {
            if entry.generation == lent.generation && entry.facts.is_none() {
                entry.facts = Some(facts);
            }
        }
    }

    /// Remembers a new shape, its facts lent out; returns where they go back.
    fn remember(&mut self, hash: u64) -> Lent {
        self.generations += 1;
        let generation = self.generations;
        let index = if self.recent.len() < RECENT {
            self.recent.push(Recent {
                hash,
                key: self.normalized.clone(),
                facts: None,
                generation,
            });
            self.recent.len() - 1
        } else {
            // The oldest entry, its key's buffer reused: a client cycling
            // through more shapes than this allocates nothing per statement.
            let index = self.evict % RECENT;
            self.evict = (index + 1) % RECENT;
            let entry = &mut self.recent[index];
            entry.hash = hash;
            entry.key.clear();
            entry.key.extend_from_slice(&self.normalized);
            entry.facts = None;
            entry.generation = generation;
            index
        };
        Lent { index, generation }
    }
}

struct Entry {
    key: Box<[u8]>,
    facts: Arc<Facts>,
}

const SHARDS: usize = 16;

pub struct Classifier {
    shards: Vec<Mutex<LruCache<u64, Entry>>>,
}

/// The result of classifying one statement.
#[derive(Debug, Clone)]
pub struct Classified {
    pub facts: Arc<Facts>,
    pub cache_hit: bool,
    /// The fingerprint's hash (its text is in `Scratch::normalized`).
    pub hash: u64,
    /// Give `facts` back with [`Scratch::give_back`] when the statement
    /// ends, so the next one of its shape finds them in the session.
    pub lent: Option<Lent>,
}

impl Classifier {
    /// A cache holding about `capacity` templates.
    pub fn new(capacity: usize) -> Self {
        let per_shard = NonZeroUsize::new(capacity.div_ceil(SHARDS).max(1)).unwrap_or(NonZeroUsize::MIN);
        Classifier {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(LruCache::new(per_shard)))
                .collect(),
        }
    }

    /// Classifies `sql`; afterwards `scratch.literals` holds its literal spans.
    pub fn classify(&self, sql: &str, scratch: &mut Scratch) -> Classified {
        let hash = fingerprint(sql, &mut scratch.normalized, &mut scratch.literals);
        let normalized = &scratch.normalized;
        for (index, entry) in scratch.recent.iter_mut().enumerate() {
            // The text is compared too, as in the shared cache.
            if entry.hash != hash || *entry.key != **normalized {
                continue;
            }
            if let Some(facts) = entry.facts.take() {
                return Classified {
                    facts,
                    cache_hit: true,
                    hash,
                    lent: Some(Lent {
                        index,
                        generation: entry.generation,
                    }),
                };
            }
        }
        let mut classified = self.classify_shared(sql, hash, &scratch.normalized);
        classified.lent = Some(scratch.remember(hash));
        classified
    }

    fn classify_shared(&self, sql: &str, hash: u64, normalized: &[u8]) -> Classified {
        let shard = &self.shards[(hash as usize) % SHARDS];
        {
            let mut cache = shard.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(entry) = cache.get(&hash) {
                // Compare the text too: a hash collision must never route a
                // write as a read.
                if *entry.key == *normalized {
                    return Classified {
                        facts: entry.facts.clone(),
                        cache_hit: true,
                        hash,
                        lent: None,
                    };
                }
            }
        }
        let facts = Arc::new(Facts::of(sql));
        let entry = Entry {
            key: normalized.into(),
            facts: facts.clone(),
        };
        shard.lock().unwrap_or_else(|e| e.into_inner()).put(hash, entry);
        Classified {
            facts,
            cache_hit: false,
            hash,
            lent: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_variables_set_from_the_server_are_read_back() {
        for sql in [
            "CALL p(5, @out)",
            "CALL p()",
            "SELECT 42 INTO @v",
            "SELECT c INTO @v FROM t WHERE id = 1",
            "SET @a := 7 + 1",
            "SET @a = (SELECT MAX(id) FROM t)",
            "SELECT @n := @n + 1 FROM t",
        ] {
            let facts = Facts::of(sql);
            assert!(facts.writes_user_vars(0), "{sql}");
        }
        // Literals are tracked from the text; reading a variable writes none.
        assert!(!Facts::of("SET @a = 5").writes_user_vars(1));
        assert!(!Facts::of("SELECT @a").writes_user_vars(0));
        assert!(!Facts::of("SELECT * FROM t WHERE id = @id").writes_user_vars(0));
        // A lock taken in the same statement pins: it cannot be read back.
        for sql in [
            "SET @l = GET_LOCK('job', 10)",
            "SELECT @got := GET_LOCK('job', 10)",
        ] {
            let facts = Facts::of(sql);
            assert_eq!(facts.pin_reason(0), Some(PinReason::UserLock), "{sql}");
            assert!(!facts.writes_user_vars(0), "{sql}");
        }
    }

    #[test]
    fn second_classification_hits_the_cache() {
        let c = Classifier::new(100);
        let mut s = Scratch::default();
        assert!(!c.classify("SELECT c FROM t WHERE id = 1", &mut s).cache_hit);
        let again = c.classify("SELECT c FROM t WHERE id = 2", &mut s);
        assert!(again.cache_hit);
        assert!(again.facts.replica_safe());
        assert_eq!(s.literals.len(), 1);
    }

    #[test]
    fn a_repeated_shape_comes_from_the_session_and_another_does_not() {
        let c = Classifier::new(100);
        let mut s = Scratch::default();
        let read = c.classify("SELECT c FROM t WHERE id = 1", &mut s);
        let again = c.classify("SELECT c FROM t WHERE id = 7", &mut s);
        assert!(again.cache_hit);
        assert!(Arc::ptr_eq(&read.facts, &again.facts));
        let write = c.classify("DELETE FROM t WHERE id = 7", &mut s);
        assert!(!write.cache_hit);
        assert!(
            !write.facts.replica_safe(),
            "never the previous statement's facts"
        );
        assert!(c.classify("SELECT c FROM t WHERE id = 3", &mut s).cache_hit);
    }

    #[test]
    fn facts_are_lent_from_the_session_and_come_back_only_where_they_left() {
        let c = Classifier::new(100);
        let mut s = Scratch::default();
        let first = c.classify("SELECT c FROM t WHERE id = 1", &mut s);
        let (lent, hash) = (first.lent, first.hash);
        let count = Arc::strong_count(&first.facts);
        s.give_back(first.lent, first.facts);
        let again = c.classify("SELECT c FROM t WHERE id = 2", &mut s);
        assert!(again.cache_hit);
        assert_eq!(again.lent, lent);
        assert_eq!(Arc::strong_count(&again.facts), count, "moved out, not cloned");
        // While lent, the same shape comes from the shared cache.
        let nested = c.classify("SELECT c FROM t WHERE id = 3", &mut s);
        assert!(nested.cache_hit && Arc::ptr_eq(&nested.facts, &again.facts));
        assert_ne!(nested.lent, again.lent);
        // Every entry replaced meanwhile: the facts are not taken back.
        for i in 0..RECENT * 2 {
            let other = c.classify(&format!("SELECT c{i} FROM u"), &mut s);
            s.give_back(other.lent, other.facts);
        }
        s.give_back(again.lent, again.facts);
        s.give_back(nested.lent, nested.facts);
        assert_eq!(s.recent.len(), RECENT);
        assert!(s.recent.iter().all(|e| e.hash != hash && e.facts.is_some()));
    }

    #[test]
    fn cache_is_bounded() {
        let c = Classifier::new(16);
        let mut s = Scratch::default();
        for i in 0..1000 {
            c.classify(&format!("SELECT c{i} FROM t"), &mut s);
        }
        let held: usize = c.shards.iter().map(|m| m.lock().unwrap().len()).sum();
        assert!(held <= 16, "{held}");
    }

    #[test]
    fn literal_user_variables_are_tracked_not_pinned() {
        let f = Facts::of("SET @a = 5, @b = 'x'");
        assert!(f.tracked_user_vars(2));
        assert_eq!(f.pin_reason(2), None);
        let f = Facts::of("SET @a = NOW()");
        assert_eq!(f.pin_reason(0), Some(PinReason::UserVariable));
        let f = Facts::of("SELECT @a := 1");
        assert_eq!(f.pin_reason(1), Some(PinReason::UserVariable));
    }
}
