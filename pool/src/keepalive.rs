//! Keeping pooled connections alive and warm. A sweep every
//! [`SWEEP_EVERY`] checks out each idle connection once, oldest first, so the
//! checkout checks in `recycle` (closed socket, ping after idle, maximum
//! lifetime) run on connections no client is using; then it opens
//! connections up to `pool.min_idle`. Both take their permits from the
//! pool's gate only when one is free and nobody waits: housekeeping never
//! delays a client nor takes the place of one.

use crate::PoolSettings;
use crate::local::Local;
use crate::manager::{PEEK_AFTER_IDLE, PoolShared};
use deadpool::managed::Timeouts;
use std::sync::Arc;
use std::time::Duration;

const SWEEP_EVERY: Duration = Duration::from_millis(500);

pub(crate) fn spawn(shared: &Arc<PoolShared>, settings: PoolSettings) {
    let weak = Arc::downgrade(shared);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SWEEP_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            // The pool is gone (closed or dropped): stop.
            let Some(shared) = weak.upgrade() else { return };
            if shared.pool.is_closed() {
                return;
            }
            sweep(&shared).await;
            warm(&shared, settings.min_idle).await;
        }
    });
}

/// Takes each idle connection once without waiting; `recycle` pings or
/// replaces it as needed and dropping it puts it at the back of the queue
/// (or hands it to a request that started waiting meanwhile). Connections
/// left on the gate's hot stack since before the last sweep go back to
/// deadpool first, so this reaches them too.
async fn sweep(shared: &Arc<PoolShared>) {
    drop(
        shared
            .gate
            .evict_hot(|conn| conn.last_io.elapsed() < PEEK_AFTER_IDLE),
    );
    let no_wait = Timeouts {
        wait: Some(Duration::ZERO),
        ..shared.pool.timeouts()
    };
    let local = Local::new(shared.clone());
    for _ in 0..shared.pool.status().available {
        if !shared.gate.try_enter() {
            return;
        }
        match PoolShared::checkout(&local, Some(&no_wait)).await {
            Ok(conn) => drop(conn),
            Err(_) => return,
        }
    }
}

/// Opens connections until `min_idle` exist, holding each so the next
/// checkout creates another; stops at the first failure (the backend is
/// down: the next sweep tries again).
async fn warm(shared: &Arc<PoolShared>, min_idle: usize) {
    let target = min_idle.min(shared.pool.status().max_size);
    let mut opened = Vec::new();
    let local = Local::new(shared.clone());
    while shared.pool.status().size < target {
        if !shared.gate.try_enter() {
            return;
        }
        match PoolShared::checkout(&local, None).await {
            Ok(conn) => opened.push(conn),
            Err(_) => return,
        }
    }
}
