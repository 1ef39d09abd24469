//! Session state under multiplexing: a client's schema, charset and session
//! variables follow it across pooled connections and never leak to another
//! client; state that cannot follow (temporary tables, GET_LOCK, user
//! variables, transactions) keeps the client on its connection.

use futures_util::future::join_all;
use mysql_async::Conn;
use mysql_async::prelude::*;
use sluice_tests::{Sluice, SluiceOptions, metric_sum};
use std::collections::HashSet;

fn small_pool(max: usize) -> Sluice {
    Sluice::start_with(SluiceOptions {
        max_connections_per_backend: max,
        ..SluiceOptions::default()
    })
}

#[tokio::test]
async fn variables_and_charset_follow_each_client_across_connections() {
    let s = small_pool(4);
    let clients = (0..16).map(|i| {
        let opts = s.opts();
        async move {
            let mut c = Conn::new(opts).await.unwrap();
            let tz = format!("+{:02}:00", i % 12);
            let charset = if i % 2 == 0 { "latin1" } else { "utf8mb4" };
            c.query_drop(format!(
                "SET SESSION time_zone = '{tz}', sql_mode = 'ANSI_QUOTES'"
            ))
            .await
            .unwrap();
            c.query_drop(format!("SET NAMES {charset}")).await.unwrap();
            let mut backend_ids = HashSet::new();
            for _ in 0..30 {
                let (got_tz, mode, cs, id): (String, String, String, u64) = c
                    .query_first("SELECT @@time_zone, @@sql_mode, @@character_set_client, @@pseudo_thread_id")
                    .await
                    .unwrap()
                    .unwrap();
                assert_eq!(got_tz, tz, "client {i} sees its own time_zone");
                assert_eq!(mode, "ANSI_QUOTES");
                assert_eq!(cs, charset);
                // pseudo_thread_id: the backend connection's own id
                // (CONNECTION_ID() is the client's).
                backend_ids.insert(id);
                tokio::task::yield_now().await;
            }
            c.disconnect().await.unwrap();
            backend_ids.len()
        }
    });
    let distinct: Vec<usize> = join_all(clients).await;
    assert!(
        distinct.iter().any(|&n| n > 1),
        "clients were multiplexed over several backend connections: {distinct:?}"
    );
    let m = s.metrics();
    assert!(metric_sum(&m, "sluice_pool_connections", &["backend=\"primary\""]) <= 4.0);

    // Nothing leaks: a fresh client sees the server defaults.
    let mut fresh = Conn::new(s.opts()).await.unwrap();
    for _ in 0..10 {
        let (mode, cs): (String, String) = fresh
            .query_first("SELECT @@sql_mode, @@character_set_client")
            .await
            .unwrap()
            .unwrap();
        assert!(!mode.contains("ANSI_QUOTES"), "sql_mode leaked: {mode}");
        assert_eq!(cs, "utf8mb4");
    }
}

#[tokio::test]
async fn schema_follows_the_client() {
    let s = small_pool(2);
    let mut setup = Conn::new(s.opts()).await.unwrap();
    setup
        .query_drop("CREATE DATABASE IF NOT EXISTS sluice_s1; CREATE DATABASE IF NOT EXISTS sluice_s2")
        .await
        .unwrap();
    let mut a = Conn::new(s.opts()).await.unwrap();
    let mut b = Conn::new(s.opts()).await.unwrap();
    a.query_drop("USE sluice_s1").await.unwrap();
    b.query_drop("USE sluice_s2").await.unwrap();
    for _ in 0..20 {
        let da: Option<String> = a.query_first("SELECT DATABASE()").await.unwrap();
        let db: Option<String> = b.query_first("SELECT DATABASE()").await.unwrap();
        let ds: Option<String> = setup.query_first("SELECT DATABASE()").await.unwrap();
        assert_eq!(da.as_deref(), Some("sluice_s1"));
        assert_eq!(db.as_deref(), Some("sluice_s2"));
        assert_eq!(ds.as_deref(), Some("sluice_test"));
    }
}

#[tokio::test]
async fn temporary_tables_pin_and_do_not_leak() {
    let s = small_pool(1);
    let mut a = Conn::new(s.opts()).await.unwrap();
    a.query_drop("CREATE TEMPORARY TABLE tmp_pin (x INT)")
        .await
        .unwrap();
    a.query_drop("INSERT INTO tmp_pin VALUES (42)").await.unwrap();
    let x: Option<i32> = a.query_first("SELECT x FROM tmp_pin").await.unwrap();
    assert_eq!(x, Some(42));
    assert!(
        metric_sum(
            &s.metrics(),
            "sluice_session_pins_total",
            &["reason=\"temporary_table\""]
        ) >= 1.0
    );
    a.disconnect().await.unwrap();
    // The only backend connection is reused by the next client, without the table.
    let mut b = Conn::new(s.opts()).await.unwrap();
    let err = b.query_drop("SELECT x FROM tmp_pin").await.unwrap_err();
    assert!(err.to_string().contains("doesn't exist"), "{err}");
}

#[tokio::test]
async fn get_lock_and_user_variables_stay_on_one_connection() {
    let s = small_pool(4);
    let mut a = Conn::new(s.opts()).await.unwrap();
    let mut b = Conn::new(s.opts()).await.unwrap();
    let got: Option<i32> = a.query_first("SELECT GET_LOCK('sluice_lock', 5)").await.unwrap();
    assert_eq!(got, Some(1));
    let free: Option<i32> = b.query_first("SELECT IS_FREE_LOCK('sluice_lock')").await.unwrap();
    assert_eq!(free, Some(0), "the lock is held by a's connection");
    // Other clients churn through the pool meanwhile.
    for _ in 0..10 {
        let _: Option<i32> = b.query_first("SELECT 1").await.unwrap();
    }
    let released: Option<i32> = a.query_first("SELECT RELEASE_LOCK('sluice_lock')").await.unwrap();
    assert_eq!(released, Some(1), "released on the connection that took it");

    a.query_drop("SET @mine = 'a-value'").await.unwrap();
    let v: Option<String> = a.query_first("SELECT @mine").await.unwrap();
    assert_eq!(v.as_deref(), Some("a-value"));
    let other: Option<Option<String>> = b.query_first("SELECT @mine").await.unwrap();
    assert_eq!(other, Some(None), "user variables never leak");
}

#[tokio::test]
async fn transactions_keep_their_connection() {
    // Reads of another client's commit use the primary: a replica may not
    // have applied it yet (reading one's own writes is the session's own
    // guarantee, not another client's).
    let s = small_pool(4);
    let mut setup = Conn::new(s.opts()).await.unwrap();
    setup
        .query_drop("DROP TABLE IF EXISTS tx_t; CREATE TABLE tx_t (id INT PRIMARY KEY)")
        .await
        .unwrap();
    let mut a = Conn::new(s.opts()).await.unwrap();
    let mut b = Conn::new(s.opts()).await.unwrap();
    a.query_drop("START TRANSACTION").await.unwrap();
    a.query_drop("INSERT INTO tx_t VALUES (1)").await.unwrap();
    let seen_by_b: Option<i64> = b
        .query_first("SELECT /* sluice:primary */ COUNT(*) FROM tx_t")
        .await
        .unwrap();
    assert_eq!(seen_by_b, Some(0), "uncommitted row is invisible to others");
    let seen_by_a: Option<i64> = a.query_first("SELECT COUNT(*) FROM tx_t").await.unwrap();
    assert_eq!(seen_by_a, Some(1), "the transaction sees its own row");
    a.query_drop("COMMIT").await.unwrap();
    let seen_by_b: Option<i64> = b
        .query_first("SELECT /* sluice:primary */ COUNT(*) FROM tx_t")
        .await
        .unwrap();
    assert_eq!(seen_by_b, Some(1));

    // autocommit=0 opens a transaction implicitly.
    a.query_drop("SET autocommit = 0").await.unwrap();
    a.query_drop("INSERT INTO tx_t VALUES (2)").await.unwrap();
    let seen_by_b: Option<i64> = b
        .query_first("SELECT /* sluice:primary */ COUNT(*) FROM tx_t")
        .await
        .unwrap();
    assert_eq!(seen_by_b, Some(1));
    a.query_drop("ROLLBACK").await.unwrap();
    let seen_by_a: Option<i64> = a.query_first("SELECT COUNT(*) FROM tx_t").await.unwrap();
    assert_eq!(seen_by_a, Some(1));

    // A client that leaves mid-transaction leaves nothing behind.
    a.query_drop("INSERT INTO tx_t VALUES (3)").await.unwrap();
    drop(a);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let count: Option<i64> = b
        .query_first("SELECT /* sluice:primary */ COUNT(*) FROM tx_t")
        .await
        .unwrap();
    assert_eq!(count, Some(1), "the abandoned transaction was rolled back");
}

#[tokio::test]
async fn last_insert_id_found_rows_and_warnings_read_the_previous_statement() {
    let s = small_pool(4);
    let mut c = Conn::new(s.opts()).await.unwrap();
    c.query_drop("DROP TABLE IF EXISTS lii_t; CREATE TABLE lii_t (id INT PRIMARY KEY AUTO_INCREMENT, v INT)")
        .await
        .unwrap();
    // Other clients keep the pool busy.
    let noise = {
        let opts = s.opts();
        tokio::spawn(async move {
            let mut n = Conn::new(opts).await.unwrap();
            for _ in 0..200 {
                n.query_drop("INSERT INTO lii_t (v) VALUES (0)").await.unwrap();
            }
        })
    };
    for _ in 0..30 {
        c.query_drop("INSERT INTO lii_t (v) VALUES (1)").await.unwrap();
        let reported = c.last_insert_id().unwrap();
        let id: Option<u64> = c.query_first("SELECT LAST_INSERT_ID()").await.unwrap();
        assert_eq!(id, Some(reported));
    }
    noise.await.unwrap();
    let _: Vec<i32> = c
        .query("SELECT SQL_CALC_FOUND_ROWS id FROM lii_t LIMIT 2")
        .await
        .unwrap();
    let total: Option<i64> = c.query_first("SELECT FOUND_ROWS()").await.unwrap();
    let count: Option<i64> = c.query_first("SELECT COUNT(*) FROM lii_t").await.unwrap();
    assert_eq!(total, count);
    c.query_drop("SELECT CAST('abc' AS INT)").await.unwrap();
    let warnings: Vec<(String, u32, String)> = c.query("SHOW WARNINGS").await.unwrap();
    assert_eq!(
        warnings.len(),
        1,
        "SHOW WARNINGS sees the previous statement's warning"
    );
}

#[tokio::test]
async fn follow_up_reads_stay_right_after_a_pause() {
    // LAST_INSERT_ID() is replayed on whatever connection runs the next
    // statement, so it is right even when 6 clients share 2 connections.
    let s = small_pool(2);
    let mut setup = Conn::new(s.opts()).await.unwrap();
    setup
        .query_drop("CREATE OR REPLACE TABLE pause_t (id INT PRIMARY KEY AUTO_INCREMENT, w INT)")
        .await
        .unwrap();
    let clients = (0..6).map(|i| {
        let opts = s.opts();
        async move {
            let mut c = Conn::new(opts).await.unwrap();
            for _ in 0..3 {
                c.query_drop(format!("INSERT INTO pause_t (w) VALUES ({i})"))
                    .await
                    .unwrap();
                let mine = c.last_insert_id().unwrap();
                tokio::time::sleep(std::time::Duration::from_millis(400)).await;
                let id: Option<u64> = c.query_first("SELECT LAST_INSERT_ID()").await.unwrap();
                assert_eq!(id, Some(mine), "client {i} reads its own insert id after a pause");
            }
        }
    });
    join_all(clients).await;

    // SHOW WARNINGS after a pause: the connection stays with the client
    // while nobody else waits for the pool.
    let s = small_pool(8);
    let clients = (0..6).map(|_| {
        let opts = s.opts();
        async move {
            let mut c = Conn::new(opts).await.unwrap();
            for _ in 0..2 {
                c.query_drop("SELECT CAST('abc' AS INT)").await.unwrap();
                tokio::time::sleep(std::time::Duration::from_millis(400)).await;
                let w: Vec<(String, u32, String)> = c.query("SHOW WARNINGS").await.unwrap();
                assert_eq!(w.len(), 1, "the warning is still there after a pause");
            }
        }
    });
    join_all(clients).await;
}

/// What a client sees of one-shot `SET TRANSACTION` (characteristics of
/// the connection's next transaction only), connecting with `opts`; `other`
/// writes between two reads of a transaction (always directly, so a small
/// pool never makes it wait for the client's held connection).
async fn next_transaction_transcript(opts: mysql_async::Opts, other: &mut Conn) -> Vec<String> {
    fn said<T>(r: Result<T, mysql_async::Error>) -> String {
        match r {
            Ok(_) => "ok".into(),
            Err(mysql_async::Error::Server(e)) => format!("error {}", e.code),
            Err(e) => format!("failed: {e}"),
        }
    }
    const WRITE: &str = "UPDATE next_trx SET v = v + 1 WHERE id = 1";
    const READ: &str = "SELECT v FROM next_trx WHERE id = 1";
    let mut seen = Vec::new();
    let mut a = Conn::new(opts.clone()).await.unwrap();
    // READ ONLY applies to the next transaction, then no more.
    seen.push(said(a.query_drop("SET TRANSACTION READ ONLY").await));
    seen.push(said(a.query_drop("START TRANSACTION").await));
    seen.push(said(a.query_drop(WRITE).await));
    seen.push(said(a.query_drop("ROLLBACK").await));
    seen.push(said(a.query_drop(WRITE).await));
    // The isolation level: READ COMMITTED sees another client's commit
    // within the transaction; the next transaction is REPEATABLE READ again.
    seen.push(said(
        a.query_drop("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
            .await,
    ));
    for _ in 0..2 {
        a.query_drop("START TRANSACTION").await.unwrap();
        let before: Option<i64> = a.query_first(READ).await.unwrap();
        other.query_drop(WRITE).await.unwrap();
        let after: Option<i64> = a.query_first(READ).await.unwrap();
        a.query_drop("COMMIT").await.unwrap();
        seen.push(format!("saw the other write: {}", before != after));
    }
    // A statement that touches an InnoDB table uses it up (on the server,
    // and so through Sluice, wherever reads go).
    seen.push(said(a.query_drop("SET TRANSACTION READ ONLY").await));
    seen.push(said(a.query_drop("SELECT 1").await));
    seen.push(said(a.query_drop(READ).await));
    seen.push(said(a.query_drop(WRITE).await));
    // Left pending by a client that goes away: nobody else's.
    seen.push(said(a.query_drop("SET TRANSACTION READ ONLY").await));
    a.disconnect().await.unwrap();
    for _ in 0..3 {
        let mut b = Conn::new(opts.clone()).await.unwrap();
        seen.push(said(b.query_drop(WRITE).await));
        seen.push(said(b.query_drop("START TRANSACTION").await));
        seen.push(said(b.query_drop(WRITE).await));
        seen.push(said(b.query_drop("COMMIT").await));
        b.disconnect().await.unwrap();
    }
    seen
}

#[tokio::test]
async fn set_transaction_applies_to_the_clients_next_transaction_only() {
    let topo = sluice_tests::Topology::from_env();
    let mut other = Conn::new(sluice_tests::direct_opts(&topo.primary)).await.unwrap();
    other
        .query_drop(
            "CREATE TABLE IF NOT EXISTS sluice_test.next_trx (id INT PRIMARY KEY, v INT) ENGINE=InnoDB",
        )
        .await
        .unwrap();
    other
        .query_drop("INSERT IGNORE INTO sluice_test.next_trx VALUES (1, 0)")
        .await
        .unwrap();
    other.query_drop("USE sluice_test").await.unwrap();
    sluice_tests::replicas_caught_up().await;
    let direct = next_transaction_transcript(
        mysql_async::OptsBuilder::from_opts(sluice_tests::direct_opts(&topo.primary))
            .db_name(Some("sluice_test"))
            .into(),
        &mut other,
    )
    .await;
    assert!(
        direct.contains(&"error 1792".to_string()),
        "the server refuses a write in a READ ONLY transaction: {direct:?}"
    );
    // One connection per backend: a client that comes after another gets
    // the connection it left.
    for mode in ["primary_only", "split"] {
        let s = Sluice::start_with(SluiceOptions {
            max_connections_per_backend: 1,
            routing_mode: mode,
            ..SluiceOptions::default()
        });
        let through = next_transaction_transcript(s.opts(), &mut other).await;
        assert_eq!(through, direct, "{mode}: what the client sees through Sluice");
        let m = s.metrics();
        assert!(
            metric_sum(&m, "sluice_next_transaction_holds_total", &[]) >= 3.0,
            "{mode}: {m}"
        );
    }
}

/// `SET @@name = value` (no scope) sets the session's variable, but the
/// server's session tracking does not report it (it does `SET name`,
/// `SET SESSION name` and `@@session.name`): the client must still keep
/// it on every connection, and the next client must not inherit it.
#[tokio::test]
async fn unscoped_at_at_assignments_follow_the_client_and_never_leak() {
    for mode in ["primary_only", "split"] {
        let s = Sluice::start_with(SluiceOptions {
            max_connections_per_backend: 1,
            routing_mode: mode,
            ..SluiceOptions::default()
        });
        for (i, form) in [
            "SET @@time_zone = '+05:00'",
            "SET time_zone = '+05:00'",
            "SET @@session.time_zone = '+05:00'",
            "SET @@time_zone = '+05:00', @@sql_mode = 'ANSI_QUOTES'",
        ]
        .into_iter()
        .enumerate()
        {
            let mut a = Conn::new(s.opts()).await.unwrap();
            a.query_drop(form).await.unwrap();
            for _ in 0..4 {
                // Reads of no table: on a replica in split mode.
                let tz: Option<String> = a.query_first("SELECT @@time_zone").await.unwrap();
                assert_eq!(
                    tz.as_deref(),
                    Some("+05:00"),
                    "{mode}: `{form}`: the client keeps it"
                );
            }
            a.disconnect().await.unwrap();
            let mut b = Conn::new(s.opts()).await.unwrap();
            let (tz, sql_mode): (String, String) = b
                .query_first("SELECT @@time_zone, @@sql_mode")
                .await
                .unwrap()
                .unwrap();
            assert_eq!(tz, "SYSTEM", "{mode}: `{form}`: the next client starts clean");
            assert_ne!(sql_mode, "ANSI_QUOTES", "{mode}: `{form}`");
            b.disconnect().await.unwrap();
            if i == 0 {
                let m = s.metrics();
                assert!(
                    metric_sum(
                        &m,
                        "sluice_state_read_backs_total",
                        &["what=\"system_variables\""]
                    ) >= 1.0
                );
            }
        }
    }
}
