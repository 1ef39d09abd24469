//! The registry of connected clients by the id their handshake gave them,
//! which is what `CONNECTION_ID()` returns and what `KILL` names. A client's
//! slot says which backend connection runs its statement right now, so a
//! KILL QUERY reaches that statement and nothing else.

use atomic_waker::AtomicWaker;
use sluice_pool::BackendPool;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;

/// One client, as other clients' KILL statements see it.
pub struct ClientSlot {
    pub id: u32,
    user: Mutex<String>,
    running: Mutex<Running>,
    /// Wakes a statement waiting for KILLs in flight to land.
    kills_done: tokio::sync::Notify,
    killed: AtomicBool,
    /// A wake-up for the session between commands, kept until it waits.
    wake_pending: AtomicBool,
    /// The session's task while it waits between commands. Not a `Notify`:
    /// subscribing to one locks its waiter list twice per command.
    waker: AtomicWaker,
}

/// The backend connection running the client's statement (its pool and
/// server-side id), and how many KILL QUERYs are landing on it: until they
/// have, the connection must not go back to the pool (and to another
/// client). A plain mutex: held for a few instructions, never across an
/// await, so the statement path pays no more than an uncontended lock.
#[derive(Default)]
struct Running {
    statement: Option<(Arc<BackendPool>, u32)>,
    kills_in_flight: u32,
}

impl ClientSlot {
    fn running(&self) -> std::sync::MutexGuard<'_, Running> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The client's statement now runs on connection `backend_id` of `pool`.
    pub fn start_statement(&self, pool: Arc<BackendPool>, backend_id: u32) {
        self.running().statement = Some((pool, backend_id));
    }

    /// The statement ended; returns once no KILL is landing on its
    /// connection any more.
    pub async fn end_statement(&self) {
        loop {
            let notified = self.kills_done.notified();
            tokio::pin!(notified);
            {
                let mut running = self.running();
                running.statement = None;
                if running.kills_in_flight == 0 {
                    return;
                }
                // Registered before the lock is released: no wake-up lost.
                notified.as_mut().enable();
            }
            notified.await;
        }
    }

    /// For KILL QUERY: the connection running the client's statement, kept
    /// from going back to the pool until [`ClientSlot::kill_landed`].
    pub fn begin_kill(&self) -> Option<(Arc<BackendPool>, u32)> {
        let mut running = self.running();
        let statement = running.statement.clone()?;
        running.kills_in_flight += 1;
        Some(statement)
    }

    pub fn kill_landed(&self) {
        let mut running = self.running();
        running.kills_in_flight = running.kills_in_flight.saturating_sub(1);
        if running.kills_in_flight == 0 {
            self.kills_done.notify_waiters();
        }
    }

    pub fn user(&self) -> String {
        self.user.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set_user(&self, user: &str) {
        *self.user.lock().unwrap_or_else(|e| e.into_inner()) = user.to_string();
    }

    /// Asks the client's session to close (KILL CONNECTION).
    pub fn kill(&self) {
        self.killed.store(true, Ordering::Release);
        self.wake();
    }

    pub fn killed(&self) -> bool {
        self.killed.load(Ordering::Acquire)
    }

    /// Resolves at the next wake-up: a KILL, or the server shutting down
    /// (the session then checks which). A wake-up sent while the session is
    /// busy is kept for its next wait, so none is lost.
    pub async fn woken(&self) {
        std::future::poll_fn(|cx| {
            if self.take_wake() {
                return Poll::Ready(());
            }
            self.waker.register(cx.waker());
            // Registered first, checked again: a wake-up sent in between
            // found no waker but is seen here.
            if self.take_wake() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }

    fn take_wake(&self) -> bool {
        self.wake_pending.load(Ordering::Acquire) && self.wake_pending.swap(false, Ordering::AcqRel)
    }

    /// Wakes the session if it waits for its client's next command.
    pub fn wake(&self) {
        self.wake_pending.store(true, Ordering::Release);
        self.waker.wake();
    }
}

#[derive(Default)]
pub struct Clients {
    by_id: Mutex<HashMap<u32, Arc<ClientSlot>>>,
    next_id: std::sync::atomic::AtomicU32,
}

impl Clients {
    /// Gives a new client its id (never 0, never one a connected client
    /// still has, even after the counter wraps) and registers it.
    pub fn register(&self, user: &str) -> Arc<ClientSlot> {
        let mut map = self.lock();
        let id = loop {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
            if id != 0 && !map.contains_key(&id) {
                break id;
            }
        };
        let slot = Arc::new(ClientSlot {
            id,
            user: Mutex::new(user.to_string()),
            running: Mutex::new(Running::default()),
            kills_done: tokio::sync::Notify::new(),
            killed: AtomicBool::new(false),
            wake_pending: AtomicBool::new(false),
            waker: AtomicWaker::new(),
        });
        map.insert(id, slot.clone());
        slot
    }

    /// Wakes every session waiting between commands (on shutdown).
    pub fn wake_all(&self) {
        for slot in self.lock().values() {
            slot.wake();
        }
    }

    pub fn remove(&self, id: u32) {
        self.lock().remove(&id);
    }

    pub fn get(&self, id: u64) -> Option<Arc<ClientSlot>> {
        let id = u32::try_from(id).ok()?;
        self.lock().get(&id).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Arc<ClientSlot>>> {
        self.by_id.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_wake_up_is_kept_until_the_session_waits_and_is_seen_once() {
        let clients = Clients::default();
        let slot = clients.register("a");
        // Sent while busy: the next wait returns at once.
        slot.wake();
        tokio::time::timeout(std::time::Duration::from_secs(5), slot.woken())
            .await
            .expect("a kept wake-up");
        // Consumed: the following wait blocks until the next one.
        let waiting = tokio::spawn({
            let slot = slot.clone();
            async move { slot.woken().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "no second wake-up from the first");
        slot.kill();
        tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("woken by the KILL")
            .expect("task");
        assert!(slot.killed());
    }

    #[tokio::test]
    async fn a_statement_ends_only_after_the_kills_on_it_landed() {
        let clients = Clients::default();
        let slot = clients.register("a");
        assert!(slot.begin_kill().is_none(), "nothing running");
        slot.end_statement().await;
        let settings = sluice_pool::PoolSettings {
            max_per_backend: 1,
            acquire_timeout: std::time::Duration::from_secs(1),
            connect_timeout: std::time::Duration::from_secs(1),
            max_lifetime: None,
            min_idle: 0,
            max_queue: 0,
            adaptive_limit: false,
        };
        let pools = sluice_pool::Pools::new(settings);
        let key = sluice_pool::PoolKey {
            backend: "b".into(),
            user: "u".into(),
            session_caps: Default::default(),
            attrs: Default::default(),
        };
        let pool = Arc::new(pools.handle(
            &key,
            "127.0.0.1:1",
            &sluice_pool::Credential::Password(String::new()),
            &sluice_pool::BackendTls::new(&Default::default(), "127.0.0.1:1"),
        ));
        slot.start_statement(pool, 42);
        let (_, id) = slot.begin_kill().expect("running");
        assert_eq!(id, 42);
        let slot2 = slot.clone();
        let ended = tokio::spawn(async move { slot2.end_statement().await });
        tokio::task::yield_now().await;
        assert!(!ended.is_finished(), "waits for the KILL");
        slot.kill_landed();
        ended.await.expect("statement ended");
        assert!(slot.begin_kill().is_none());
    }

    #[test]
    fn ids_skip_zero_and_ids_in_use_after_wrapping() {
        let clients = Clients::default();
        let first = clients.register("a");
        assert_eq!(first.id, 1);
        clients.next_id.store(u32::MAX - 1, Ordering::Relaxed);
        assert_eq!(clients.register("b").id, u32::MAX);
        // Wraps past 0 and past 1, which is still connected.
        assert_eq!(clients.register("c").id, 2);
        clients.remove(first.id);
        clients.next_id.store(0, Ordering::Relaxed);
        assert_eq!(clients.register("d").id, 1);
    }
}
