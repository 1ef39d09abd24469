//! `server.worker_threads = 1`: Sluice on Tokio's current-thread scheduler.
//! Every session, the pool, the monitor and the admin endpoint share one
//! thread, so nothing may block it: while one client's statement runs,
//! other clients are served (text and prepared, in a transaction too), a
//! KILL QUERY from another client stops it, and `/metrics` answers. The
//! log names the scheduler that runs.

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row};
use sluice_tests::{Sluice, SluiceOptions, Topology, direct_opts};
use std::time::Duration;

const SLEEP: &str = "SELECT SLEEP(30) AS runtime_test_sleep";

/// Whether a server (a read may run on any) is running the sleeping
/// statement.
async fn sleeping(servers: &mut [Conn]) -> bool {
    for server in servers {
        let n: Option<u64> = server
            .query_first(
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST \
                 WHERE INFO LIKE 'SELECT SLEEP(30) AS runtime_test_sleep%'",
            )
            .await
            .unwrap();
        if n.unwrap_or(0) > 0 {
            return true;
        }
    }
    false
}

#[tokio::test]
async fn one_thread_serves_everyone_while_a_statement_runs() {
    let s = Sluice::start_with(SluiceOptions {
        server_extra: "worker_threads = 1".into(),
        ..SluiceOptions::default()
    });
    // The scheduler itself: a multi-thread runtime with one worker would
    // pass everything below too.
    sluice_tests::wait_until("the runtime is logged", Duration::from_secs(10), || {
        s.log().contains("runtime: ")
    })
    .await;
    assert!(
        s.log().contains("runtime: CurrentThread scheduler"),
        "the current-thread scheduler runs: {}",
        s.log()
    );
    let topo = Topology::from_env();
    let mut servers = Vec::new();
    for addr in [&topo.primary, &topo.replica1, &topo.replica2] {
        servers.push(Conn::new(direct_opts(addr)).await.unwrap());
    }
    let mut victim = Conn::new(s.opts()).await.unwrap();
    let id = victim.id();
    let sleeper = tokio::spawn(async move {
        let r = victim.query_drop(SLEEP).await;
        (victim, r)
    });
    let mut waited = 0;
    while !sleeping(&mut servers).await {
        waited += 1;
        assert!(waited < 300, "the sleeping statement never reached the server");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Served while the statement runs on the same thread's runtime.
    let mut other = Conn::new(s.opts()).await.unwrap();
    let one: Option<u32> = other.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1));
    let stmt = other.prep("SELECT ? + 1").await.unwrap();
    let two: Option<u32> = other.exec_first(&stmt, (1,)).await.unwrap();
    assert_eq!(two, Some(2));
    other
        .query_drop("CREATE TABLE IF NOT EXISTS runtime_t (id INT PRIMARY KEY)")
        .await
        .unwrap();
    other.query_drop("DELETE FROM runtime_t").await.unwrap();
    let mut tx = other.start_transaction(Default::default()).await.unwrap();
    tx.query_drop("INSERT INTO runtime_t VALUES (1)").await.unwrap();
    let rows: Vec<Row> = tx.query("SELECT id FROM runtime_t").await.unwrap();
    assert_eq!(rows.len(), 1, "read-your-writes inside the transaction");
    tx.commit().await.unwrap();
    let metrics = s.metrics();
    assert!(metrics.contains("sluice_queries_total"), "/metrics answers");
    assert!(!sleeper.is_finished(), "the sleeping statement is still running");

    // Another client's KILL QUERY reaches it.
    other.query_drop(format!("KILL QUERY {id}")).await.unwrap();
    let (mut victim, r) = sleeper.await.unwrap();
    let err = r.expect_err("the statement was killed");
    assert!(err.to_string().contains("1317"), "{err}");
    let one: Option<u32> = victim.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1), "the killed statement's client goes on");
}
