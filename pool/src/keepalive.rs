//! Keeping pooled connections alive and warm. A sweep every
//! [`SWEEP_EVERY`] checks out each idle connection once, oldest first, so the
//! checkout checks in `recycle` (closed socket, ping after idle, maximum
//! lifetime) run on connections no client is using; then it opens
//! connections up to `pool.min_idle`.

use crate::PoolSettings;
use crate::manager::Pool;
use deadpool::managed::Timeouts;
use std::time::Duration;

const SWEEP_EVERY: Duration = Duration::from_millis(500);

pub(crate) fn spawn(pool: Pool, settings: PoolSettings) {
    let weak = pool.weak();
    drop(pool);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SWEEP_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            // The pool is gone (closed or dropped): stop.
            let Some(pool) = weak.upgrade() else { return };
            if pool.is_closed() {
                return;
            }
            sweep(&pool).await;
            warm(&pool, settings.min_idle).await;
        }
    });
}

/// Takes each idle connection once without waiting; `recycle` pings or
/// replaces it as needed and dropping it puts it at the back of the queue.
async fn sweep(pool: &Pool) {
    let no_wait = Timeouts {
        wait: Some(Duration::ZERO),
        ..pool.timeouts()
    };
    for _ in 0..pool.status().available {
        match pool.timeout_get(&no_wait).await {
            Ok(conn) => drop(conn),
            Err(_) => return,
        }
    }
}

/// Opens connections until `min_idle` exist, holding each so the next
/// checkout creates another; stops at the first failure (the backend is
/// down: the next sweep tries again).
async fn warm(pool: &Pool, min_idle: usize) {
    let target = min_idle.min(pool.status().max_size);
    let mut opened = Vec::new();
    while pool.status().size < target {
        match pool.get().await {
            Ok(conn) => opened.push(conn),
            Err(_) => return,
        }
    }
}
