//! Values every worker thread updates: one copy per thread, each on cache
//! lines of its own, combined when read (rarely: a scrape, a replica pick).
//! A value all threads wrote would bounce its cache line between their
//! cores on every update. Threads beyond [`COPIES`] share copies (still
//! correct, only contended).

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// Copies per value.
pub const COPIES: usize = 8;

static NEXT: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Each thread takes the next copy number once.
    static MINE: usize = NEXT.fetch_add(1, Relaxed) % COPIES;
}

/// One copy, alone on its cache lines.
#[repr(align(128))]
#[derive(Debug, Default)]
struct Padded<T>(T);

#[derive(Debug, Default)]
pub struct PerThread<T> {
    copies: [Padded<T>; COPIES],
}

impl<T> PerThread<T> {
    /// The calling thread's copy.
    pub fn mine(&self) -> &T {
        &self.copies[MINE.with(|i| *i)].0
    }

    /// Every copy, to combine.
    pub fn all(&self) -> impl Iterator<Item = &T> {
        self.copies.iter().map(|c| &c.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn threads_write_copies_of_their_own_and_all_are_combined() {
        let v = Arc::new(PerThread::<AtomicU64>::default());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let v = v.clone();
                std::thread::spawn(move || (0..1000).for_each(|_| _ = v.mine().fetch_add(1, Relaxed)))
            })
            .collect();
        for t in threads {
            t.join().expect("a counting thread panicked");
        }
        // Each thread takes the next copy number, so only eight or more
        // threads in between could make two of the four share one.
        let used = v.all().filter(|c| c.load(Relaxed) > 0).count();
        assert!(used >= 2, "{used} copies written by four threads");
        assert_eq!(v.all().map(|c| c.load(Relaxed)).sum::<u64>(), 4000);
    }
}
