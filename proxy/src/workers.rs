//! Worker threads for client sessions. Each worker thread runs its own
//! current-thread Tokio runtime, and a client's session stays on the worker
//! it is given from login to disconnect, with the backend connections that
//! worker opened ([`sluice_pool::worker`]): the statement path has no
//! work-stealing bookkeeping and no cross-thread wake-up (on the 2-core
//! test machine Tokio's multi-thread scheduler cost about 1.9 µs of CPU per
//! point select more than the current-thread one). A new client goes to the
//! worker with the fewest sessions. The acceptor, the admin endpoint, the
//! monitor, the reload watcher and the guard's binlog feed run on the main
//! thread's runtime.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use tokio::net::TcpStream;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// Where client sessions run.
pub struct Workers {
    workers: Vec<Worker>,
    /// Where the search for the least busy worker starts (ties go round).
    turn: AtomicUsize,
}

struct Worker {
    handle: Handle,
    /// Sessions running on it.
    sessions: Arc<AtomicUsize>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Workers {
    /// No worker threads: sessions run on the caller's runtime (one-thread
    /// Sluice, and Sluice embedded in a process).
    pub fn local() -> Workers {
        Workers {
            workers: Vec::new(),
            turn: AtomicUsize::new(0),
        }
    }

    /// Starts `n` worker threads, each with its own runtime.
    pub fn start(n: usize) -> std::io::Result<Workers> {
        let mut workers = Vec::with_capacity(n);
        for index in 0..n {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let handle = runtime.handle().clone();
            let (stop, stopped) = oneshot::channel::<()>();
            let thread = std::thread::Builder::new()
                .name(format!("sluice-worker-{index}"))
                .spawn(move || {
                    sluice_pool::set_worker(index);
                    // Runs the worker's tasks until told to stop; dropping
                    // the runtime then ends the sessions still on it.
                    runtime.block_on(async {
                        let _ = stopped.await;
                    });
                })?;
            workers.push(Worker {
                handle,
                sessions: Arc::default(),
                stop: Some(stop),
                thread: Some(thread),
            });
        }
        Ok(Workers {
            workers,
            turn: AtomicUsize::new(0),
        })
    }

    /// Worker threads (0: sessions run on the caller's runtime).
    pub fn count(&self) -> usize {
        self.workers.len()
    }

    /// Runs `session` for a client's `stream` on the worker with the fewest
    /// sessions, the stream registered with that worker's runtime.
    pub fn spawn<F, Fut>(&self, stream: TcpStream, session: F)
    where
        F: FnOnce(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let Some(worker) = self.least_busy() else {
            tokio::spawn(session(stream));
            return;
        };
        let stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("cannot hand a client connection to a worker thread: {e}");
                return;
            }
        };
        let sessions = worker.sessions.clone();
        sessions.fetch_add(1, Ordering::Relaxed);
        worker.handle.spawn(async move {
            let _count = Finished(sessions);
            match TcpStream::from_std(stream) {
                Ok(stream) => session(stream).await,
                Err(e) => tracing::warn!("a worker thread cannot take a client connection: {e}"),
            }
        });
    }

    fn least_busy(&self) -> Option<&Worker> {
        let n = self.workers.len();
        if n == 0 {
            return None;
        }
        let start = self.turn.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|i| &self.workers[(start + i) % n])
            .min_by_key(|w| w.sessions.load(Ordering::Relaxed))
    }
}

/// Counts a session off its worker when it ends (or is dropped unrun).
struct Finished(Arc<AtomicUsize>);

impl Drop for Finished {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Drop for Workers {
    /// Stops every worker thread and waits for it.
    fn drop(&mut self) {
        for worker in &mut self.workers {
            if let Some(stop) = worker.stop.take() {
                let _ = stop.send(());
            }
        }
        for worker in &mut self.workers {
            if let Some(thread) = worker.thread.take() {
                let _ = thread.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sessions_run_on_the_least_busy_worker_with_its_pool_index() {
        let workers = Workers::start(2).expect("workers");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut clients = Vec::new();
        for _ in 0..4 {
            clients.push(TcpStream::connect(addr).await.unwrap());
            let (stream, _) = listener.accept().await.unwrap();
            let tx = tx.clone();
            workers.spawn(stream, move |mut stream| async move {
                let name = std::thread::current().name().map(str::to_string);
                let _ = tx.send((name, sluice_pool::worker()));
                // Held open until the client closes: the session counts.
                let mut byte = [0u8; 1];
                let _ = tokio::io::AsyncReadExt::read(&mut stream, &mut byte).await;
            });
        }
        let mut seen = Vec::new();
        for _ in 0..4 {
            seen.push(rx.recv().await.unwrap());
        }
        seen.sort();
        assert_eq!(
            seen,
            vec![
                (Some("sluice-worker-0".to_string()), 0),
                (Some("sluice-worker-0".to_string()), 0),
                (Some("sluice-worker-1".to_string()), 1),
                (Some("sluice-worker-1".to_string()), 1),
            ]
        );
        drop(clients);
        drop(workers);
    }
}
