//! The pool's waiting path against a real server (`SLUICE_TEST_PRIMARY`, as
//! scripts/test.sh sets it; skipped without it): first come first served,
//! `max_queue`, `acquire_timeout_ms`, a connection handed to a waiter that
//! went away, broken connections, discard and close.

use sluice_pool::{AcquireError, BackendPool, ConnectAttrs, PoolKey, PoolSettings, Pooled, Pools, discard};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn primary() -> Option<String> {
    let addr = std::env::var("SLUICE_TEST_PRIMARY").ok();
    if addr.is_none() {
        eprintln!("SLUICE_TEST_PRIMARY is not set (scripts/test.sh sets it): skipped");
    }
    addr
}

fn settings(max: usize) -> PoolSettings {
    PoolSettings {
        max_per_backend: max,
        acquire_timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(5),
        max_lifetime: None,
        min_idle: 0,
        max_queue: 0,
        adaptive_limit: false,
    }
}

fn pool(address: &str, settings: PoolSettings) -> (Arc<Pools>, BackendPool) {
    let pools = Pools::new(settings);
    let key = PoolKey {
        backend: "primary".into(),
        user: "app".into(),
        session_caps: Default::default(),
        attrs: ConnectAttrs::from(Vec::new()),
    };
    let handle = pools.handle(
        &key,
        address,
        &sluice_pool::Credential::Password("app".into()),
        &sluice_pool::BackendTls::new(&Default::default(), address),
    );
    (pools, handle)
}

async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn size(pools: &Pools) -> usize {
    pools.status().iter().map(|s| s.size).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_are_served_first_come_first_served() {
    let Some(addr) = primary() else { return };
    let (_pools, pool) = pool(&addr, settings(1));
    let held = pool.acquire().await.unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for n in 0..6 {
        let (pool2, order) = (pool.clone(), order.clone());
        tasks.push(tokio::spawn(async move {
            let conn = pool2.acquire().await.unwrap();
            order.lock().unwrap().push(n);
            tokio::time::sleep(Duration::from_millis(5)).await;
            drop(conn);
        }));
        // The next one arrives only once this one queues.
        until("a waiter", || pool.waiting() == n + 1).await;
    }
    drop(held);
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(*order.lock().unwrap(), (0..6).collect::<Vec<_>>());
    assert_eq!(pool.waiting(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_returned_connection_goes_to_the_waiter_as_is() {
    let Some(addr) = primary() else { return };
    let (pools, pool) = pool(&addr, settings(1));
    let held = pool.acquire().await.unwrap();
    let id = held.info.connection_id;
    let waiter = tokio::spawn({
        let pool = pool.clone();
        async move { pool.acquire().await.map(|c| c.info.connection_id) }
    });
    until("the waiter", || pool.waiting() == 1).await;
    drop(held);
    assert_eq!(waiter.await.unwrap().unwrap(), id);
    assert_eq!(size(&pools), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_queue_refuses_at_once() {
    let Some(addr) = primary() else { return };
    let (_pools, pool) = pool(
        &addr,
        PoolSettings {
            max_queue: 1,
            ..settings(1)
        },
    );
    let held = pool.acquire().await.unwrap();
    let queued = tokio::spawn({
        let pool = pool.clone();
        async move { pool.acquire().await.is_ok() }
    });
    until("the queued request", || pool.waiting() == 1).await;
    // Refused while the only connection is still held: it did not wait.
    match pool.acquire().await {
        Err(e @ AcquireError::QueueFull { waiting: 1, .. }) => {
            assert_eq!(e.cause(), "queue_full");
            assert!(e.to_string().contains("pool.max_queue"), "{e}");
        }
        Err(e) => panic!("expected queue_full, got {e}"),
        Ok(_) => panic!("expected queue_full, got a connection"),
    }
    drop(held);
    assert!(queued.await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_ends_at_the_acquire_timeout() {
    let Some(addr) = primary() else { return };
    let (_pools, pool) = pool(
        &addr,
        PoolSettings {
            acquire_timeout: Duration::from_millis(300),
            ..settings(1)
        },
    );
    let _held = pool.acquire().await.unwrap();
    let started = Instant::now();
    match pool.acquire().await {
        Err(
            e @ AcquireError::PoolExhausted {
                max: 1,
                waited_ms: 300,
                ..
            },
        ) => {
            assert_eq!(e.cause(), "pool_exhausted");
        }
        Err(e) => panic!("expected pool_exhausted, got {e}"),
        Ok(_) => panic!("expected pool_exhausted, got a connection"),
    }
    // Not before the timeout (no upper bound: tests assert no timing).
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(300), "{waited:?}");
    assert_eq!(pool.waiting(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_handed_to_a_cancelled_waiter_is_not_lost() {
    let Some(addr) = primary() else { return };
    let (pools, pool) = pool(&addr, settings(1));
    let held = pool.acquire().await.unwrap();
    let id = held.info.connection_id;
    // A waiter that is polled (queued) and then never again.
    let mut gone = Box::pin(pool.acquire());
    assert!(
        tokio::time::timeout(Duration::from_millis(20), &mut gone)
            .await
            .is_err()
    );
    assert_eq!(pool.waiting(), 1);
    let behind = tokio::spawn({
        let pool = pool.clone();
        async move { pool.acquire().await.map(|c| c.info.connection_id) }
    });
    until("the second waiter", || pool.waiting() == 2).await;
    // The connection goes to the first waiter, whose client then leaves.
    drop(held);
    drop(gone);
    assert_eq!(behind.await.unwrap().unwrap(), id);
    // Nobody behind: the connection goes back to the pool.
    let held = pool.acquire().await.unwrap();
    let mut gone = Box::pin(pool.acquire());
    assert!(
        tokio::time::timeout(Duration::from_millis(20), &mut gone)
            .await
            .is_err()
    );
    drop(held);
    drop(gone);
    let again = tokio::time::timeout(Duration::from_secs(2), pool.acquire()).await;
    assert_eq!(again.expect("not lost").unwrap().info.connection_id, id);
    assert_eq!(size(&pools), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_connections_are_closed_not_reused() {
    let Some(addr) = primary() else { return };
    let (pools, pool) = pool(&addr, settings(1));
    let mut held = pool.acquire().await.unwrap();
    let id = held.info.connection_id;
    held.broken = true;
    drop(held);
    assert_eq!(size(&pools), 0);
    let fresh = pool.acquire().await.unwrap();
    assert_ne!(fresh.info.connection_id, id);
    // A waiter behind a broken connection gets a new one, not the broken one.
    let id = fresh.info.connection_id;
    let waiter = tokio::spawn({
        let pool = pool.clone();
        async move { pool.acquire().await.map(|c| c.info.connection_id) }
    });
    until("the waiter", || pool.waiting() == 1).await;
    let mut fresh: Pooled = fresh;
    fresh.broken = true;
    drop(fresh);
    let got = waiter.await.unwrap().unwrap();
    assert_ne!(got, id);
    // discard() closes it and frees the place.
    let conn = pool.acquire().await.unwrap();
    discard(conn);
    assert_eq!(size(&pools), 0);
    assert!(pool.acquire().await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_closes_a_connection_opened_off_the_workers() {
    let Some(addr) = primary() else { return };
    let (pools, pool) = pool(&addr, settings(2));
    // The test's threads are not Sluice worker threads: what they open and
    // give back stays in the pool.
    let conn = pool.acquire().await.unwrap();
    let id = conn.info.connection_id;
    drop(conn);
    assert_eq!(size(&pools), 1);
    let conn = pool.acquire().await.unwrap();
    assert_eq!(conn.info.connection_id, id, "kept and reused");
    // Given back by a worker, it is closed: its socket belongs to another
    // runtime, and every packet on it would wake that runtime's thread.
    std::thread::spawn(move || {
        sluice_pool::set_worker(0);
        drop(conn);
    })
    .join()
    .unwrap();
    assert_eq!(size(&pools), 0);
    let fresh = pool.acquire().await.unwrap();
    assert_ne!(fresh.info.connection_id, id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_ends_waits_and_refuses_new_ones() {
    let Some(addr) = primary() else { return };
    let (pools, pool) = pool(&addr, settings(1));
    let held = pool.acquire().await.unwrap();
    let waiter = tokio::spawn({
        let pool = pool.clone();
        async move { pool.acquire().await.map(|_| ()) }
    });
    until("the waiter", || pool.waiting() == 1).await;
    pools.close();
    assert!(matches!(waiter.await.unwrap(), Err(AcquireError::Closed { .. })));
    assert!(matches!(pool.acquire().await, Err(AcquireError::Closed { .. })));
    // The checked-out connection finishes and is then closed.
    drop(held);
    assert_eq!(size(&pools), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_clients_share_a_small_pool_without_loss() {
    let Some(addr) = primary() else { return };
    let (pools, pool) = pool(&addr, settings(3));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..50 {
                let mut conn = pool.acquire().await.unwrap();
                conn.query_rows("SELECT 1").await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let status = &pools.status()[0];
    assert_eq!((status.size, status.waiting, status.limit), (3, 0, 3));
    assert_eq!(status.idle, 3);
}
