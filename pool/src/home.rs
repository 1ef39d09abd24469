//! Which worker thread a backend connection belongs to. Sluice runs client
//! sessions on several worker threads, each with its own Tokio runtime; a
//! socket is registered with the runtime of the thread that opened it, and
//! reading it from another thread costs a cross-thread wake-up per packet.
//! So a connection remembers the worker it was opened on, and a pool hands
//! a request a connection of its own worker when it has one idle
//! ([`crate::gate`]). Other threads (the main runtime's housekeeping, or
//! everything with `server.worker_threads = 1`) are [`OFF_WORKERS`].

use std::cell::Cell;

/// The "worker" of a thread that is not a worker thread.
pub const OFF_WORKERS: usize = usize::MAX;

thread_local! {
    static WORKER: Cell<usize> = const { Cell::new(OFF_WORKERS) };
}

/// Marks the calling thread as worker `index` (at the thread's start).
pub fn set_worker(index: usize) {
    WORKER.with(|w| w.set(index));
}

/// The calling thread's worker index ([`OFF_WORKERS`] off the workers).
pub fn worker() -> usize {
    WORKER.with(Cell::get)
}

/// Whether a worker thread should keep a connection opened on `home`: not
/// one opened off the worker threads. Its socket is registered with a
/// runtime that is not a worker's, so every packet of every statement on
/// it would wake that thread and then cross to the worker (measured: one
/// pooled connection in sixteen, opened at startup on the main thread, made
/// the main thread wake a worker for 7 % of all statements).
pub(crate) fn keeps(home: usize) -> bool {
    home != OFF_WORKERS || worker() == OFF_WORKERS
}

/// What the gate hands out knows its worker.
pub(crate) trait Homed {
    fn home(&self) -> usize;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_keeps_connections_of_workers_not_ones_opened_off_them() {
        // A test thread is not a worker: it keeps what it opened.
        assert_eq!(worker(), OFF_WORKERS);
        assert!(keeps(OFF_WORKERS));
        set_worker(1);
        assert!(keeps(0) && keeps(1));
        assert!(!keeps(OFF_WORKERS));
    }
}
