//! Worker threads for client sessions. Each worker thread runs its own
//! current-thread Tokio runtime, and a client's session stays on the worker
//! it is given from login to disconnect, with the backend connections that
//! worker opened ([`sluice_pool::worker`]): the statement path has no
//! work-stealing bookkeeping and no cross-thread wake-up (on the 2-core
//! test machine Tokio's multi-thread scheduler cost about 1.9 µs of CPU per
//! point select more than the current-thread one).
//!
//! Every worker accepts clients itself, from its own duplicate of the
//! listening socket, and keeps the client unless another worker runs fewer
//! sessions (then the client moves there, so long-lived clients spread
//! evenly). Accepting on the main thread and handing every socket over cost
//! each connection two `epoll_ctl`s and a wake-up of two threads more. The
//! admin endpoint, the monitor, the reload watcher and the guard's binlog
//! feed run on the main thread's runtime.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::runtime::Handle;
use tokio::sync::{oneshot, watch};

/// Sessions running on each worker, by worker index (empty without worker
/// threads); `/status` and `sluice_worker_sessions` show it.
pub type WorkerSessions = Arc<[AtomicUsize]>;

/// Where client sessions run.
pub struct Workers {
    workers: Vec<Worker>,
    placer: Placer,
}

struct Worker {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// Puts sessions on workers; a cheap clone for every acceptor.
#[derive(Clone)]
pub struct Placer {
    handles: Arc<[Handle]>,
    sessions: WorkerSessions,
    /// Where the search for the least busy worker starts (ties go round).
    turn: Arc<AtomicUsize>,
}

/// A client connection an acceptor took, registered with the runtime of the
/// thread that accepted it.
pub struct Accepted {
    pub stream: TcpStream,
    pub peer: SocketAddr,
    /// The worker whose acceptor took it (None: no worker threads).
    worker: Option<usize>,
}

impl Workers {
    /// No worker threads: sessions run on the caller's runtime (one-thread
    /// Sluice, and Sluice embedded in a process).
    pub fn local() -> Workers {
        Workers {
            workers: Vec::new(),
            placer: Placer {
                handles: Arc::new([]),
                sessions: Arc::new([]),
                turn: Arc::new(AtomicUsize::new(0)),
            },
        }
    }

    /// Starts `n` worker threads, each with its own runtime.
    pub fn start(n: usize) -> std::io::Result<Workers> {
        let mut workers = Vec::with_capacity(n);
        let mut handles = Vec::with_capacity(n);
        for index in 0..n {
            // Sockets and timers only: signals and child processes are the
            // main runtime's, and their drivers would run on every park.
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .enable_time()
                .build()?;
            handles.push(runtime.handle().clone());
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
                stop: Some(stop),
                thread: Some(thread),
            });
        }
        Ok(Workers {
            workers,
            placer: Placer {
                handles: handles.into(),
                sessions: (0..n).map(|_| AtomicUsize::new(0)).collect(),
                turn: Arc::new(AtomicUsize::new(0)),
            },
        })
    }

    /// Worker threads (0: sessions run on the caller's runtime).
    pub fn count(&self) -> usize {
        self.workers.len()
    }

    pub fn sessions(&self) -> WorkerSessions {
        self.placer.sessions.clone()
    }

    /// Accepts clients from `listener` until `stop` is true (or its sender
    /// is dropped): on every worker thread, each with a duplicate of the
    /// socket registered with its own runtime, or without worker threads on
    /// the caller's runtime. `on_client` gets each connection on the thread
    /// that accepted it and usually hands it to [`Placer::spawn`]. The
    /// listening socket closes when the returned tasks have all ended.
    pub fn accept<C>(
        &self,
        listener: std::net::TcpListener,
        stop: watch::Receiver<bool>,
        on_client: C,
    ) -> std::io::Result<Vec<tokio::task::JoinHandle<()>>>
    where
        C: Fn(&Placer, Accepted) + Send + Sync + 'static,
    {
        listener.set_nonblocking(true)?;
        let on_client = Arc::new(on_client);
        if self.workers.is_empty() {
            let acceptor = accept_loop(listener, None, self.placer.clone(), stop, on_client);
            return Ok(vec![tokio::spawn(acceptor)]);
        }
        let mut acceptors = Vec::with_capacity(self.workers.len());
        for (index, handle) in self.placer.handles.iter().enumerate() {
            let acceptor = accept_loop(
                listener.try_clone()?,
                Some(index),
                self.placer.clone(),
                stop.clone(),
                on_client.clone(),
            );
            acceptors.push(handle.spawn(acceptor));
        }
        Ok(acceptors)
    }
}

/// One acceptor: takes connections while the socket has them, then waits
/// for the next (every acceptor is woken; the others find none).
async fn accept_loop<C>(
    listener: std::net::TcpListener,
    worker: Option<usize>,
    placer: Placer,
    mut stop: watch::Receiver<bool>,
    on_client: Arc<C>,
) where
    C: Fn(&Placer, Accepted) + Send + Sync + 'static,
{
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(
                worker,
                "this worker thread cannot accept clients ({e}); the others still do"
            );
            return;
        }
    };
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|stop| *stop) => return,
        };
        match accepted {
            Ok((stream, peer)) => on_client(&placer, Accepted { stream, peer, worker }),
            Err(e) => {
                // Out of file descriptors and the like: back off, keep serving.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

impl Placer {
    /// Runs `session` for `client`: on the worker that accepted it unless
    /// another one runs fewer sessions, then on the least busy one; without
    /// worker threads on the caller's runtime.
    pub fn spawn<F, Fut>(&self, client: Accepted, session: F)
    where
        F: FnOnce(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let load = |i: usize| self.sessions[i].load(Ordering::Relaxed);
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        let Some(index) = place(self.sessions.len(), load, client.worker, turn) else {
            tokio::spawn(session(client.stream));
            return;
        };
        self.sessions[index].fetch_add(1, Ordering::Relaxed);
        let count = Finished(self.sessions.clone(), index);
        if client.worker == Some(index) {
            // Already registered with this worker's runtime.
            let run = session(client.stream);
            self.handles[index].spawn(async move {
                let _count = count;
                run.await
            });
            return;
        }
        // Out of the accepting runtime's reactor, into the chosen worker's.
        // Neither step fails short of a broken socket or the process's
        // epoll limits; if one does, the client is closed: say so and count it.
        let stream = match client.stream.into_std() {
            Ok(s) => s,
            Err(e) => return handoff_failed(&e),
        };
        self.handles[index].spawn(async move {
            let _count = count;
            match TcpStream::from_std(stream) {
                Ok(stream) => session(stream).await,
                Err(e) => handoff_failed(&e),
            }
        });
    }
}

/// The worker a new client runs on, of `n` workers with `load(i)` sessions
/// each, given the worker that accepted it and where to start looking for
/// the least busy one (ties go round): None without worker threads.
pub fn place(
    n: usize,
    load: impl Fn(usize) -> usize,
    accepted_on: Option<usize>,
    turn: usize,
) -> Option<usize> {
    let least = (0..n).map(|i| (turn + i) % n).min_by_key(|&i| load(i))?;
    match accepted_on {
        Some(here) if here < n && load(here) <= load(least) => Some(here),
        _ => Some(least),
    }
}

/// A client connection that could not be moved to another worker thread
/// (it is closed without a greeting).
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

    #[test]
    fn a_worker_keeps_its_client_unless_another_runs_fewer_sessions() {
        let loads = [5, 3, 4, 3];
        let load = |i: usize| loads[i];
        // No workers: the caller's runtime.
        assert_eq!(place(0, load, None, 0), None);
        // Accepted off the workers: the least busy.
        assert_eq!(place(4, load, None, 0), Some(1));
        // As idle as the least busy: stays.
        assert_eq!(place(4, load, Some(1), 0), Some(1));
        assert_eq!(place(4, load, Some(3), 0), Some(3));
        // Busier: goes to the least busy.
        assert_eq!(place(4, load, Some(0), 0), Some(1));
        assert_eq!(place(4, load, Some(2), 2), Some(3));
        // Ties go round from the turn.
        let even = |_| 2;
        assert_eq!(place(3, even, None, 4), Some(1));
        assert_eq!(place(3, even, None, 5), Some(2));
    }

    #[tokio::test]
    async fn workers_accept_and_run_sessions_with_their_pool_index() {
        let workers = Workers::start(2).expect("workers");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = watch::channel(false);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let acceptors = workers
            .accept(listener, stopped, move |placer, client| {
                let tx = tx.clone();
                placer.spawn(client, move |mut stream| async move {
                    let name = std::thread::current().name().map(str::to_string);
                    let _ = tx.send((name, sluice_pool::worker()));
                    // Held open until the client closes: the session counts.
                    let mut byte = [0u8; 1];
                    let _ = tokio::io::AsyncReadExt::read(&mut stream, &mut byte).await;
                });
            })
            .expect("acceptors");
        let mut clients = Vec::new();
        for _ in 0..8 {
            // One at a time, so each placement sees the one before.
            clients.push(TcpStream::connect(addr).await.unwrap());
            let (name, index) = rx.recv().await.unwrap();
            // Each session runs on a worker thread, with that worker's pool index.
            assert_eq!(name, Some(format!("sluice-worker-{index}")));
        }
        let counts = |w: &Workers| {
            w.sessions()
                .iter()
                .map(|n| n.load(Ordering::Relaxed))
                .collect::<Vec<_>>()
        };
        let running = counts(&workers);
        assert_eq!(running.iter().sum::<usize>(), 8, "{running:?}");
        assert_eq!(running, [4, 4], "sessions spread evenly");
        // Sessions that end are counted off their worker.
        drop(clients);
        for _ in 0..500 {
            if counts(&workers) == [0, 0] {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(counts(&workers), [0, 0]);
        // Stopped acceptors close the listening socket.
        stop.send_replace(true);
        for acceptor in acceptors {
            acceptor.await.expect("acceptor ended");
        }
        assert!(TcpStream::connect(addr).await.is_err(), "the socket is closed");
        drop(workers);
    }
}
