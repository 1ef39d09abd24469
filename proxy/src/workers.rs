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

/// Sessions running on each worker, by worker index (empty without worker
/// threads); `/status` and `sluice_worker_sessions` show it.
pub type WorkerSessions = Arc<[AtomicUsize]>;

/// Where client sessions run.
pub struct Workers {
    workers: Vec<Worker>,
    sessions: WorkerSessions,
    /// Where the search for the least busy worker starts (ties go round).
    turn: AtomicUsize,
}

struct Worker {
    handle: Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Workers {
    /// No worker threads: sessions run on the caller's runtime (one-thread
    /// Sluice, and Sluice embedded in a process).
    pub fn local() -> Workers {
        Workers {
            workers: Vec::new(),
            sessions: Arc::new([]),
            turn: AtomicUsize::new(0),
        }
    }

    /// Starts `n` worker threads, each with its own runtime.
    pub fn start(n: usize) -> std::io::Result<Workers> {
        let mut workers = Vec::with_capacity(n);
        for index in 0..n {
            // Sockets and timers only: signals and child processes are the
            // main runtime's, and their drivers would run on every park.
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .enable_time()
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
                stop: Some(stop),
                thread: Some(thread),
            });
        }
        Ok(Workers {
            workers,
            sessions: (0..n).map(|_| AtomicUsize::new(0)).collect(),
            turn: AtomicUsize::new(0),
        })
    }

    /// Worker threads (0: sessions run on the caller's runtime).
    pub fn count(&self) -> usize {
        self.workers.len()
    }

    pub fn sessions(&self) -> WorkerSessions {
        self.sessions.clone()
    }

    /// Runs `session` for a client's `stream` on the worker with the fewest
    /// sessions, the stream registered with that worker's runtime.
    pub fn spawn<F, Fut>(&self, stream: TcpStream, session: F)
    where
        F: FnOnce(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let Some(index) = self.least_busy() else {
            tokio::spawn(session(stream));
            return;
        };
        // Out of the acceptor's reactor, into the worker's. Neither step
        // fails short of a broken socket or the process's epoll limits;
        // if one does, the client is closed: say so and count it.
        let stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => return handoff_failed(&e),
        };
        self.sessions[index].fetch_add(1, Ordering::Relaxed);
        let count = Finished(self.sessions.clone(), index);
        self.workers[index].handle.spawn(async move {
            let _count = count;
            match TcpStream::from_std(stream) {
                Ok(stream) => session(stream).await,
                Err(e) => handoff_failed(&e),
            }
        });
    }

    /// The worker with the fewest sessions (None: no worker threads).
    fn least_busy(&self) -> Option<usize> {
        let n = self.workers.len();
        if n == 0 {
            return None;
        }
        let start = self.turn.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|i| (start + i) % n)
            .min_by_key(|&i| self.sessions[i].load(Ordering::Relaxed))
    }
}

/// A client connection that could not be moved to a worker thread (it is
/// closed without a greeting).
fn handoff_failed(e: &std::io::Error) {
    metrics::counter!("sluice_client_connections_rejected_total", "cause" => "worker_handoff").increment(1);
    tracing::warn!(
        "closed a new client connection: it could not be moved to a worker thread ({e}); \
         check the process's open-file limit and fs.epoll.max_user_watches"
    );
}

/// Counts a session off its worker when it ends (or is dropped unrun).
struct Finished(WorkerSessions, usize);

impl Drop for Finished {
    fn drop(&mut self) {
        self.0[self.1].fetch_sub(1, Ordering::Relaxed);
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
        let counts = |w: &Workers| {
            w.sessions()
                .iter()
                .map(|n| n.load(Ordering::Relaxed))
                .collect::<Vec<_>>()
        };
        assert_eq!(counts(&workers), [2, 2]);
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
        // Sessions that end are counted off their worker.
        drop(clients);
        for _ in 0..500 {
            if counts(&workers) == [0, 0] {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(counts(&workers), [0, 0]);
        drop(workers);
    }
}
