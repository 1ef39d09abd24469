//! A session's own reference to a value that every worker thread shares.
//!
//! Cloning an `Arc` writes its reference count. When sessions on two worker
//! threads clone and drop the same `Arc` on every statement (a pool's
//! state, a backend, a statement's parsed facts), the cache line holding
//! that count moves between cores each time: about 45 ns per move on the
//! 2-core bench machine, several times per statement. A [`Local`] is an
//! `Arc` of the session's own pointing at the shared one, made once (per
//! session, prepared statement or config generation): its clones write
//! only the session's count, and reads go through one more pointer.
//! (`bench/cpu.sh` could not tell the saving apart from its own noise of
//! about ±0.5 µs per query; the reason stands on the measured move cost.)

use std::ops::Deref;
use std::sync::Arc;

// The second allocation is the point: its count is the session's own.
#[allow(clippy::redundant_allocation)]
pub struct Local<T>(Arc<Arc<T>>);

impl<T> Local<T> {
    pub fn new(shared: Arc<T>) -> Local<T> {
        Local(Arc::new(shared))
    }

    /// The shared `Arc` (cloning it writes the shared count).
    pub fn shared(&self) -> &Arc<T> {
        &self.0
    }
}

impl<T> Clone for Local<T> {
    fn clone(&self) -> Local<T> {
        Local(self.0.clone())
    }
}

impl<T> Deref for Local<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for Local<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (**self).fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_the_local_count_not_the_shared_one() {
        let shared = Arc::new(5);
        let local = Local::new(shared.clone());
        assert_eq!(Arc::strong_count(&shared), 2);
        let copies: Vec<_> = (0..10).map(|_| local.clone()).collect();
        assert_eq!(Arc::strong_count(&shared), 2);
        assert_eq!(copies.iter().map(|c| **c).sum::<i32>(), 50);
        assert!(Arc::ptr_eq(local.shared(), &shared));
        drop(copies);
        drop(local);
        assert_eq!(Arc::strong_count(&shared), 1);
    }
}
