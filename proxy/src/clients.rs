//! The registry of connected clients by the id their handshake gave them,
//! which is what `CONNECTION_ID()` returns and what `KILL` names. A client's
//! slot says which backend connection runs its statement right now, so a
//! KILL QUERY reaches that statement and nothing else.

use sluice_pool::BackendPool;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// One client, as other clients' KILL statements see it.
pub struct ClientSlot {
    pub id: u32,
    user: Mutex<String>,
    /// The pool and server-side id of the backend connection running the
    /// client's statement. Held by a KILL while it lands, so the connection
    /// cannot go back to the pool (and to another client) meanwhile.
    pub running: tokio::sync::Mutex<Option<(BackendPool, u32)>>,
    killed: AtomicBool,
    wake: tokio::sync::Notify,
}

impl ClientSlot {
    pub fn user(&self) -> String {
        self.user.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set_user(&self, user: &str) {
        *self.user.lock().unwrap_or_else(|e| e.into_inner()) = user.to_string();
    }

    /// Asks the client's session to close (KILL CONNECTION).
    pub fn kill(&self) {
        self.killed.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    pub fn killed(&self) -> bool {
        self.killed.load(Ordering::Acquire)
    }

    /// Resolves once the client is killed.
    pub async fn wait_killed(&self) {
        while !self.killed() {
            self.wake.notified().await;
        }
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
            running: tokio::sync::Mutex::new(None),
            killed: AtomicBool::new(false),
            wake: tokio::sync::Notify::new(),
        });
        map.insert(id, slot.clone());
        slot
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
