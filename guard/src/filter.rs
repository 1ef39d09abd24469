//! One table's Bloom filter: a fastbloom `AtomicBloomFilter` hashing with
//! foldhash's quality variant under a fixed seed (inserts from the stream
//! and lookups from sessions need no lock),
//! a count of inserted keys, and its share of the guard's memory budget,
//! reserved before the bits are allocated and given back when the last
//! holder drops it.

use fastbloom::AtomicBloomFilter;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The seed every filter uses: the same key always hashes the same.
const SEED: u64 = 0x51ce_9ad0_5eed_0001;

/// foldhash, not fastbloom's default SipHash: a third of the cost per
/// lookup, which every lookup of a guarded table pays. A key crafted to
/// collide only makes a false positive: the lookup goes to the database.
type Hasher = foldhash::quality::FixedState;

/// The memory all filters may use together.
#[derive(Debug, Default)]
pub struct Budget {
    used: AtomicU64,
}

impl Budget {
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Reserves `bytes` if the total stays within `limit`.
    fn reserve(&self, bytes: u64, limit: u64) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|total| *total <= limit)
            })
            .is_ok()
    }

    fn release(&self, bytes: u64) {
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                Some(used.saturating_sub(bytes))
            });
    }
}

/// A table's filter.
#[derive(Debug)]
pub struct Filter {
    bloom: AtomicBloomFilter<Hasher>,
    keys: AtomicU64,
    expected: u64,
    fpr: f64,
    reserved: u64,
    budget: Arc<Budget>,
}

/// Bytes a filter for `expected` keys at `fpr` takes.
pub fn size_bytes(expected: u64, fpr: f64) -> u64 {
    let items = usize::try_from(expected.max(1)).unwrap_or(usize::MAX);
    let bits = fastbloom::optimal_size(items, fpr) as u64;
    // fastbloom keeps whole 64-bit words.
    bits.div_ceil(64) * 8
}

impl Filter {
    /// Allocates a filter, or None (nothing allocated) when it would take
    /// the budget past `limit_bytes`.
    pub fn new(expected: u64, fpr: f64, budget: &Arc<Budget>, limit_bytes: u64) -> Option<Filter> {
        let bytes = size_bytes(expected, fpr);
        if !budget.reserve(bytes, limit_bytes) {
            return None;
        }
        let items = usize::try_from(expected.max(1)).unwrap_or(usize::MAX);
        let bloom = AtomicBloomFilter::with_false_pos(fpr)
            .hasher(Hasher::with_seed(SEED))
            .expected_items(items);
        Some(Filter {
            bloom,
            keys: AtomicU64::new(0),
            expected,
            fpr,
            reserved: bytes,
            budget: budget.clone(),
        })
    }

    /// Adds an encoded key (see [`crate::key`]).
    pub fn insert(&self, encoded: &[u8]) {
        if !self.bloom.insert(encoded) {
            self.keys.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// False = certainly never inserted.
    pub fn may_contain(&self, encoded: &[u8]) -> bool {
        self.bloom.contains(encoded)
    }

    /// Distinct keys inserted (a key the filter already seemed to hold is
    /// not counted again).
    pub fn keys(&self) -> u64 {
        self.keys.load(Ordering::Relaxed)
    }

    pub fn bits(&self) -> u64 {
        self.bloom.num_bits() as u64
    }

    pub fn memory_bytes(&self) -> u64 {
        self.bits() / 8
    }

    pub fn expected(&self) -> u64 {
        self.expected
    }

    pub fn fpr(&self) -> f64 {
        self.fpr
    }
}

impl Drop for Filter {
    fn drop(&mut self) {
        self.budget.release(self.reserved);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_what_it_holds_and_mostly_not_the_rest() {
        let budget = Arc::new(Budget::default());
        let f = Filter::new(10_000, 0.01, &budget, u64::MAX).unwrap();
        for i in 0u64..10_000 {
            f.insert(&i.to_le_bytes());
        }
        assert!((0u64..10_000).all(|i| f.may_contain(&i.to_le_bytes())));
        let fp = (10_000u64..110_000)
            .filter(|i| f.may_contain(&i.to_le_bytes()))
            .count();
        assert!(fp < 1_500, "{fp} false positives in 100000");
        assert!(f.keys() > 9_900);
        assert_eq!(budget.used(), size_bytes(10_000, 0.01));
        assert!(f.memory_bytes() <= budget.used());
        drop(f);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn budget_refuses_a_filter_that_does_not_fit() {
        let budget = Arc::new(Budget::default());
        let bytes = size_bytes(1_000_000, 0.01);
        let a = Filter::new(1_000_000, 0.01, &budget, bytes * 3 / 2).unwrap();
        assert!(Filter::new(1_000_000, 0.01, &budget, bytes * 3 / 2).is_none());
        assert_eq!(budget.used(), bytes);
        drop(a);
        assert!(Filter::new(1_000_000, 0.01, &budget, bytes * 3 / 2).is_some());
    }

    #[test]
    fn same_seed_same_bits() {
        let budget = Arc::new(Budget::default());
        let a = Filter::new(100, 0.01, &budget, u64::MAX).unwrap();
        let b = Filter::new(100, 0.01, &budget, u64::MAX).unwrap();
        a.insert(b"x");
        b.insert(b"x");
        assert_eq!(a.bloom.as_slice().len(), b.bloom.as_slice().len());
        let same = a
            .bloom
            .as_slice()
            .iter()
            .zip(b.bloom.as_slice())
            .all(|(x, y)| x.load(Ordering::Relaxed) == y.load(Ordering::Relaxed));
        assert!(same);
    }
}
