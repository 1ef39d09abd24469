//! Multiplexing at scale: 2,000 concurrent clients over at most 20
//! connections per backend with zero errors and no lost or doubled write,
//! and 5,000 distinct prepared statements that never exceed the
//! per-connection bound on the servers. The two tests run one after the
//! other (they measure server-wide counters).

use futures_util::future::join_all;
use mysql_async::prelude::*;
use mysql_async::{Conn, OptsBuilder};
use sluice_tests::{Sluice, SluiceOptions, Topology, direct_opts, metric_sum, raise_fd_limit};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::Mutex;

static SERIAL: Mutex<()> = Mutex::const_new(());

const CLIENTS: usize = 2000;
const POOL: usize = 20;
const ROUNDS: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_clients_over_twenty_connections() {
    let _serial = SERIAL.lock().await;
    raise_fd_limit();
    let s = Sluice::start_with(SluiceOptions {
        max_connections_per_backend: POOL,
        acquire_timeout_ms: 60_000,
        ..SluiceOptions::default()
    });
    let mut setup = Conn::new(s.opts()).await.unwrap();
    setup
        .query_drop("CREATE OR REPLACE TABLE scale_t (id INT PRIMARY KEY, v INT NOT NULL)")
        .await
        .unwrap();
    let rows: Vec<String> = (0..CLIENTS).map(|i| format!("({i}, 0)")).collect();
    setup
        .query_drop(format!("INSERT INTO scale_t VALUES {}", rows.join(",")))
        .await
        .unwrap();

    // Sample the pools while the load runs.
    let running = Arc::new(AtomicBool::new(true));
    let max_pool = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let (running, max_pool) = (running.clone(), max_pool.clone());
        let admin = s.admin_port;
        tokio::spawn(async move {
            while running.load(Ordering::Relaxed) {
                if let Some(body) = sluice_tests::http_get_port(admin, "/status") {
                    for size in sluice_tests::pool_sizes(&body) {
                        max_pool.fetch_max(size, Ordering::Relaxed);
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let clients = (0..CLIENTS).map(|i| {
        let opts = OptsBuilder::from_opts(s.opts()).stmt_cache_size(0);
        let errors = errors.clone();
        async move {
            let result: Result<(), mysql_async::Error> = async {
                let mut c = Conn::new(opts).await?;
                for _ in 0..ROUNDS {
                    let _: Option<i32> = c.exec_first("SELECT v FROM scale_t WHERE id = ?", (i,)).await?;
                    c.query_drop(format!("UPDATE scale_t SET v = v + 1 WHERE id = {i}"))
                        .await?;
                    c.query_drop("BEGIN").await?;
                    c.exec_drop("UPDATE scale_t SET v = v + 1 WHERE id = ?", (i,))
                        .await?;
                    let _: Option<i32> = c
                        .query_first(format!("SELECT v FROM scale_t WHERE id = {i}"))
                        .await?;
                    c.query_drop("COMMIT").await?;
                }
                c.disconnect().await
            }
            .await;
            if let Err(e) = result {
                errors.lock().await.push(format!("client {i}: {e}"));
            }
        }
    });
    join_all(clients).await;
    running.store(false, Ordering::Relaxed);
    sampler.await.unwrap();

    let errors = errors.lock().await;
    assert!(
        errors.is_empty(),
        "{} clients failed, first: {:?}",
        errors.len(),
        errors.first()
    );
    let total: Option<i64> = setup
        .query_first("SELECT /* sluice:primary */ SUM(v) FROM scale_t")
        .await
        .unwrap();
    assert_eq!(
        total,
        Some((CLIENTS * ROUNDS * 2) as i64),
        "every acknowledged write applied exactly once"
    );
    let max = max_pool.load(Ordering::Relaxed);
    println!("2000 clients: largest pool seen {max} connections");
    assert!(
        max > 0 && max <= POOL,
        "pools stayed within {POOL} connections per backend (saw {max})"
    );
    let m = s.metrics();
    assert!(metric_sum(&m, "sluice_queries_total", &["route=\"replica\""]) > 0.0);
    assert!(
        metric_sum(&m, "sluice_errors_total", &[]) == 0.0,
        "no errors counted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_prepared_statements_stay_bounded() {
    let _serial = SERIAL.lock().await;
    const PER_CONN: usize = 16;
    const CONNS: usize = 4;
    let s = Sluice::start_with(SluiceOptions {
        max_connections_per_backend: CONNS,
        acquire_timeout_ms: 30_000,
        pool_extra: format!("max_prepared_per_connection = {PER_CONN}"),
        ..SluiceOptions::default()
    });
    let topo = Topology::from_env();
    let running = Arc::new(AtomicBool::new(true));
    let max_count = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let (running, max_count) = (running.clone(), max_count.clone());
        let backends = vec![topo.primary.clone(), topo.replica1.clone(), topo.replica2.clone()];
        tokio::spawn(async move {
            let mut conns = Vec::new();
            for b in &backends {
                conns.push(Conn::new(direct_opts(b)).await.unwrap());
            }
            while running.load(Ordering::Relaxed) {
                for c in &mut conns {
                    let row: Option<(String, usize)> = c
                        .query_first("SHOW GLOBAL STATUS LIKE 'Prepared_stmt_count'")
                        .await
                        .unwrap();
                    max_count.fetch_max(row.map(|r| r.1).unwrap_or(0), Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let clients = (0..50).map(|client| {
        let opts = OptsBuilder::from_opts(s.opts()).stmt_cache_size(0);
        async move {
            let mut c = Conn::new(opts).await.unwrap();
            for k in 0..100 {
                let n = client * 100 + k;
                let sql = if k % 2 == 0 {
                    format!("SELECT ? + {n}")
                } else {
                    format!("SELECT /* sluice:primary */ ? + {n}")
                };
                let stmt = c.prep(sql).await.unwrap();
                let v: Option<i64> = c.exec_first(&stmt, (1,)).await.unwrap();
                assert_eq!(v, Some(n as i64 + 1));
                c.close(stmt).await.unwrap();
            }
            c.disconnect().await.unwrap();
        }
    });
    join_all(clients).await;
    running.store(false, Ordering::Relaxed);
    sampler.await.unwrap();
    let max = max_count.load(Ordering::Relaxed);
    println!("5000 prepared statements: highest Prepared_stmt_count on a backend {max}");
    assert!(
        max <= PER_CONN * CONNS,
        "Prepared_stmt_count {max} exceeded {PER_CONN} x {CONNS}"
    );
}
