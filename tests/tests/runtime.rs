//! The runtimes Sluice runs on. `server.worker_threads = 1`: Tokio's
//! current-thread scheduler; every session, the pool, the monitor and the
//! admin endpoint share one thread, so nothing may block it. `= 2`: client
//! sessions on two worker threads with a runtime each, a client staying on
//! its worker; the second client lands on the other worker from the first
//! (`/status` `worker_sessions` shows one on each), so the KILL below
//! crosses workers. Either way: while one client's
//! statement runs, other clients are served (text and prepared, in a
//! transaction too), a KILL QUERY from another client stops it, and
//! `/metrics` answers. The log names the runtime that runs.

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row};
use sluice_tests::{Sluice, SluiceOptions};
use std::time::Duration;

/// The sleeping statement of the test with `worker_threads`.
fn sleep_sql(worker_threads: usize) -> String {
    format!("SELECT SLEEP(30) AS runtime_test_sleep{worker_threads}")
}

#[tokio::test]
async fn one_thread_serves_everyone_while_a_statement_runs() {
    // The scheduler itself: a multi-thread runtime with one worker would
    // pass everything else too.
    serves_everyone_while_a_statement_runs(1, "runtime: CurrentThread scheduler, one thread").await;
}

#[tokio::test]
async fn worker_threads_serve_everyone_while_a_statement_runs() {
    serves_everyone_while_a_statement_runs(
        2,
        "runtime: 2 worker threads, each with a CurrentThread scheduler",
    )
    .await;
}

async fn serves_everyone_while_a_statement_runs(worker_threads: usize, log_says: &str) {
    let s = Sluice::start_with(SluiceOptions {
        server_extra: format!("worker_threads = {worker_threads}"),
        ..SluiceOptions::default()
    });
    sluice_tests::wait_until("the runtime is logged", Duration::from_secs(10), || {
        s.log().contains("runtime: ")
    })
    .await;
    assert!(s.log().contains(log_says), "{log_says}: {}", s.log());
    // Its own table: the two tests run at once.
    let table = format!("runtime_t{worker_threads}");
    let mut victim = Conn::new(s.opts()).await.unwrap();
    let id = victim.id();
    let sleeper = tokio::spawn(async move {
        let r = victim.query_drop(sleep_sql(worker_threads)).await;
        (victim, r)
    });
    sluice_tests::wait_until_running(&sleep_sql(worker_threads)).await;

    // Served while the statement runs on the same thread's runtime.
    let mut other = Conn::new(s.opts()).await.unwrap();
    let one: Option<u32> = other.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1));
    // The two clients' sessions: one on each worker (so the KILL below
    // crosses workers); none listed on one thread.
    let expected: Vec<u64> = if worker_threads == 1 { vec![] } else { vec![1, 1] };
    assert_eq!(
        s.status()["worker_sessions"],
        serde_json::json!(expected),
        "{}",
        s.status()
    );
    let stmt = other.prep("SELECT ? + 1").await.unwrap();
    let two: Option<u32> = other.exec_first(&stmt, (1,)).await.unwrap();
    assert_eq!(two, Some(2));
    other
        .query_drop(format!("CREATE TABLE IF NOT EXISTS {table} (id INT PRIMARY KEY)"))
        .await
        .unwrap();
    other.query_drop(format!("DELETE FROM {table}")).await.unwrap();
    let mut tx = other.start_transaction(Default::default()).await.unwrap();
    tx.query_drop(format!("INSERT INTO {table} VALUES (1)"))
        .await
        .unwrap();
    let rows: Vec<Row> = tx.query(format!("SELECT id FROM {table}")).await.unwrap();
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
