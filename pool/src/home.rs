//! Which worker thread a backend connection belongs to. Sluice runs client
//! sessions on several worker threads, each with its own Tokio runtime; a
//! socket is registered with the runtime of the thread that opened it, and
//! reading it from another thread costs a cross-thread wake-up per packet.
//! So a connection remembers the worker it was opened on, and a pool hands
//! a request a connection of its own worker when it has one idle
//! ([`crate::gate`]). Threads that are not workers count as worker 0.

use std::cell::Cell;

thread_local! {
    static WORKER: Cell<usize> = const { Cell::new(0) };
}

/// Marks the calling thread as worker `index` (at the thread's start).
pub fn set_worker(index: usize) {
    WORKER.with(|w| w.set(index));
}

/// The calling thread's worker index.
pub fn worker() -> usize {
    WORKER.with(Cell::get)
}

/// What the gate hands out knows its worker.
pub(crate) trait Homed {
    fn home(&self) -> usize;
}
