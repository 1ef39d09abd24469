//! Checking a connection out and back costs no heap allocation, whether it
//! finds one free or waits for one (against `SLUICE_TEST_PRIMARY`; skipped
//! without it). Counts allocations made on the test's own thread, which
//! runs every task here (current-thread runtime).

use sluice_pool::{ConnectAttrs, PoolKey, PoolSettings, Pools};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::Duration;

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(|c| c.get())
}

#[tokio::test(flavor = "current_thread")]
async fn checkout_and_hand_off_do_not_allocate() {
    let Ok(addr) = std::env::var("SLUICE_TEST_PRIMARY") else {
        eprintln!("SLUICE_TEST_PRIMARY is not set (scripts/test.sh sets it): skipped");
        return;
    };
    let pools = Pools::new(PoolSettings {
        max_per_backend: 1,
        acquire_timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(5),
        max_lifetime: Some(Duration::from_secs(3600)),
        min_idle: 0,
        max_queue: 0,
        adaptive_limit: false,
    });
    let key = PoolKey {
        backend: "primary".into(),
        user: "app".into(),
        session_caps: Default::default(),
        attrs: ConnectAttrs::from(Vec::new()),
    };
    let pool = pools.handle(
        &key,
        &addr,
        &sluice_pool::Credential::Password("app".into()),
        &sluice_pool::BackendTls::new(&Default::default(), &addr),
    );
    drop(pool.acquire().await.unwrap());

    // Free connection: check out and back.
    let before = allocations();
    for _ in 0..100 {
        drop(pool.acquire().await.unwrap());
    }
    assert_eq!(allocations() - before, 0, "allocations on the no-wait path");

    // With a waiter: the holder yields, the waiter queues, the connection is
    // handed over. A warm-up round sizes the queue first.
    let rounds = |n: usize| {
        let pool = pool.clone();
        async move {
            for _ in 0..n {
                let held = pool.acquire().await.unwrap();
                let waiter = pool.acquire();
                let hand_over = async {
                    tokio::task::yield_now().await;
                    assert_eq!(pool.waiting(), 1);
                    drop(held);
                };
                let (got, ()) = tokio::join!(waiter, hand_over);
                drop(got.unwrap());
            }
        }
    };
    rounds(3).await;
    let before = allocations();
    rounds(100).await;
    assert_eq!(allocations() - before, 0, "allocations on the waiting path");
}
