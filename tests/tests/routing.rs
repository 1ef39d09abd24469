//! The read/write split end to end: each routing rule is checked by asking
//! the backend that answered for its `@@server_id` (1 = primary, 2 and 3 =
//! replicas in the test topology).

use mysql_async::Conn;
use mysql_async::prelude::*;
use sluice_tests::{Sluice, SluiceOptions, metric_sum};
use std::collections::HashSet;

const PRIMARY: u32 = 1;

fn is_replica(id: u32) -> bool {
    id == 2 || id == 3
}

async fn server_id(c: &mut Conn, sql: &str) -> u32 {
    c.query_first(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .expect("a row")
}

/// A split-mode Sluice without read-your-writes, so every rule shows.
fn split_off() -> Sluice {
    Sluice::start_with(SluiceOptions {
        routing_extra: "read_your_writes = \"off\"".into(),
        ..SluiceOptions::default()
    })
}

async fn setup_table(c: &mut Conn) {
    c.query_drop("CREATE TABLE IF NOT EXISTS rt (id INT PRIMARY KEY, sid INT)")
        .await
        .unwrap();
    c.query_drop("INSERT IGNORE INTO rt VALUES (1, 0)").await.unwrap();
    // The replicas have the row before anything reads it from them.
    sluice_tests::replicas_caught_up().await;
}

#[tokio::test]
async fn reads_go_to_replicas_and_writes_to_the_primary() {
    let s = split_off();
    let mut c = Conn::new(s.opts()).await.unwrap();
    setup_table(&mut c).await;
    let mut seen = HashSet::new();
    for _ in 0..40 {
        let id = server_id(&mut c, "SELECT @@server_id").await;
        assert!(is_replica(id), "plain SELECT on a replica, got {id}");
        seen.insert(id);
    }
    assert_eq!(seen.len(), 2, "both replicas get reads");
    for sql in ["SHOW VARIABLES LIKE 'server_id'"] {
        let row: Option<(String, u32)> = c.query_first(sql).await.unwrap();
        assert!(is_replica(row.unwrap().1), "{sql}");
    }
    assert!(is_replica(
        server_id(&mut c, "WITH x AS (SELECT @@server_id AS s) SELECT s FROM x").await
    ));

    // Writes: the row records which server executed the statement.
    c.query_drop("UPDATE rt SET sid = @@server_id WHERE id = 1")
        .await
        .unwrap();
    let sid = server_id(&mut c, "SELECT /* sluice:primary */ sid FROM rt WHERE id = 1").await;
    assert_eq!(sid, PRIMARY, "UPDATE ran on the primary");
    c.query_drop("REPLACE INTO rt VALUES (2, @@server_id)")
        .await
        .unwrap();
    let sid = server_id(&mut c, "SELECT /* sluice:primary */ sid FROM rt WHERE id = 2").await;
    assert_eq!(sid, PRIMARY, "REPLACE ran on the primary");

    let m = s.metrics();
    assert!(metric_sum(&m, "sluice_queries_total", &["route=\"replica\""]) >= 40.0);
    assert!(metric_sum(&m, "sluice_classification_cache_total", &["result=\"hit\""]) >= 30.0);
}

#[tokio::test]
async fn locking_reads_side_effects_and_unparsed_go_to_the_primary() {
    let s = split_off();
    let mut c = Conn::new(s.opts()).await.unwrap();
    setup_table(&mut c).await;
    for sql in [
        "SELECT @@server_id FROM rt WHERE id = 1 FOR UPDATE",
        "SELECT @@server_id FROM rt WHERE id = 1 LOCK IN SHARE MODE",
        "SELECT @@server_id + COALESCE(IS_USED_LOCK('nobody'), 0)",
        "SELECT /* sluice:primary */ @@server_id",
    ] {
        assert_eq!(server_id(&mut c, sql).await, PRIMARY, "{sql}");
    }
    let (got, sid): (i32, u32) = c
        .query_first("SELECT GET_LOCK('rt_lock', 1), @@server_id")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((got, sid), (1, PRIMARY));
    c.query_drop("DO RELEASE_LOCK('rt_lock')").await.unwrap();
    let m = s.metrics();
    assert!(
        metric_sum(&m, "sluice_unparsed_statements_total", &[]) >= 1.0,
        "LOCK IN SHARE MODE is counted"
    );
    assert!(metric_sum(&m, "sluice_session_pins_total", &["reason=\"get_lock\""]) >= 1.0);
}

/// The backend connection's own thread id (`CONNECTION_ID()` is the
/// client's, whatever connection runs it).
const BACKEND_THREAD: &str = "SELECT @@pseudo_thread_id";

#[tokio::test]
async fn transactions_stay_on_one_connection() {
    let s = split_off();
    let mut c = Conn::new(s.opts()).await.unwrap();
    setup_table(&mut c).await;
    c.query_drop("BEGIN").await.unwrap();
    let a = server_id(&mut c, "SELECT @@server_id").await;
    let conn_a: u64 = c.query_first(BACKEND_THREAD).await.unwrap().unwrap();
    c.query_drop("UPDATE rt SET sid = 5 WHERE id = 1").await.unwrap();
    let conn_b: u64 = c.query_first(BACKEND_THREAD).await.unwrap().unwrap();
    c.query_drop("COMMIT").await.unwrap();
    assert_eq!(a, PRIMARY, "reads inside a transaction run on the primary");
    assert_eq!(conn_a, conn_b, "one backend connection for the whole transaction");
    assert!(
        is_replica(server_id(&mut c, "SELECT @@server_id").await),
        "after COMMIT reads go back to replicas"
    );

    c.query_drop("START TRANSACTION READ ONLY").await.unwrap();
    let r1 = server_id(&mut c, "SELECT @@server_id").await;
    let r2 = server_id(&mut c, "SELECT @@server_id").await;
    c.query_drop("COMMIT").await.unwrap();
    assert!(
        is_replica(r1) && r1 == r2,
        "a read-only transaction stays on one replica ({r1}, {r2})"
    );

    c.query_drop("SET autocommit = 0").await.unwrap();
    assert_eq!(
        server_id(&mut c, "SELECT @@server_id").await,
        PRIMARY,
        "autocommit=0 keeps reads on the primary"
    );
    c.query_drop("COMMIT").await.unwrap();
    c.query_drop("SET autocommit = 1").await.unwrap();
    assert!(is_replica(server_id(&mut c, "SELECT @@server_id").await));
}

#[tokio::test]
async fn previous_statement_state_is_read_where_it_was_made() {
    let s = split_off();
    let mut c = Conn::new(s.opts()).await.unwrap();
    c.query_drop("CREATE TABLE IF NOT EXISTS rt_ai (id INT PRIMARY KEY AUTO_INCREMENT, v INT)")
        .await
        .unwrap();
    for _ in 0..5 {
        c.query_drop("INSERT INTO rt_ai (v) VALUES (1)").await.unwrap();
        let expected = c.last_insert_id().unwrap();
        let (id, sid): (u64, u32) = c
            .query_first("SELECT LAST_INSERT_ID(), @@server_id")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(id, expected, "LAST_INSERT_ID() is right on server {sid}");
    }
    sluice_tests::replicas_caught_up().await;
    let _: Vec<u64> = c
        .query("SELECT SQL_CALC_FOUND_ROWS id FROM rt_ai LIMIT 1")
        .await
        .unwrap();
    let found: Option<u64> = c.query_first("SELECT FOUND_ROWS()").await.unwrap();
    let total: Option<u64> = c
        .query_first("SELECT /* sluice:primary */ COUNT(*) FROM rt_ai")
        .await
        .unwrap();
    assert_eq!(found, total);
    let _: Option<i32> = c.query_first("SELECT CAST('x1' AS INT)").await.unwrap();
    let warnings: Vec<(String, u32, String)> = c.query("SHOW WARNINGS").await.unwrap();
    assert_eq!(warnings.len(), 1);
}

#[tokio::test]
async fn user_variables_follow_the_client_to_replicas() {
    let s = split_off();
    let mut c = Conn::new(s.opts()).await.unwrap();
    c.query_drop("SET @answer = 42, @name = 'it''s'").await.unwrap();
    for _ in 0..6 {
        let (a, n, sid): (i64, String, u32) = c
            .query_first("SELECT @answer, @name, @@server_id")
            .await
            .unwrap()
            .unwrap();
        assert_eq!((a, n.as_str()), (42, "it's"), "on server {sid}");
        assert!(is_replica(sid));
    }
    let m = s.metrics();
    assert_eq!(
        metric_sum(&m, "sluice_session_pins_total", &["reason=\"user_variable\""]),
        0.0,
        "literal user variables do not pin"
    );
    let mut other = Conn::new(s.opts()).await.unwrap();
    let v: Option<Option<i64>> = other.query_first("SELECT @answer").await.unwrap();
    assert_eq!(v, Some(None), "never visible to another client");
    // A non-literal assignment pins instead.
    // A value the server computes is read back after the statement and
    // replayed with its type, instead of pinning the client.
    c.query_drop("SET @t = NOW(6) + 0").await.unwrap();
    let first: Option<String> = c.query_first("SELECT CAST(@t AS CHAR)").await.unwrap();
    for _ in 0..4 {
        let (again, sid): (Option<String>, u32) = c
            .query_first("SELECT CAST(@t AS CHAR), @@server_id")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(again, first, "on server {sid}");
    }
    let m = s.metrics();
    assert_eq!(metric_sum(&m, "sluice_session_pins_total", &[]), 0.0, "no pin");
    assert!(metric_sum(&m, "sluice_state_read_backs_total", &["what=\"user_variables\""]) >= 1.0);
}

#[tokio::test]
async fn prepared_statements_route_by_their_text() {
    let s = split_off();
    let mut c = Conn::new(s.opts()).await.unwrap();
    setup_table(&mut c).await;
    let read = c.prep("SELECT @@server_id + ? * 0").await.unwrap();
    let mut seen = HashSet::new();
    for i in 0..20 {
        let id: u32 = c.exec_first(&read, (i,)).await.unwrap().unwrap();
        assert!(is_replica(id), "read-only prepared statement on a replica");
        seen.insert(id);
    }
    assert_eq!(seen.len(), 2, "spread over both replicas");
    let write = c
        .prep("UPDATE rt SET sid = @@server_id + ? WHERE id = 1")
        .await
        .unwrap();
    c.exec_drop(&write, (0,)).await.unwrap();
    let sid = server_id(&mut c, "SELECT /* sluice:primary */ sid FROM rt WHERE id = 1").await;
    assert_eq!(sid, PRIMARY);
    assert_eq!(
        metric_sum(
            &s.metrics(),
            "sluice_session_pins_total",
            &["reason=\"prepared_statement\""]
        ),
        0.0,
        "prepared statements no longer pin"
    );
}

#[tokio::test]
async fn read_your_writes_window_sends_reads_to_the_primary() {
    let s = Sluice::start(); // default: read_your_writes = "primary_window"
    let mut c = Conn::new(s.opts()).await.unwrap();
    setup_table(&mut c).await;
    // The setup wrote too: its window passes first.
    reads_reach_a_replica(&mut c, "reads reach a replica after the setup's window").await;
    c.query_drop("UPDATE rt SET sid = 7 WHERE id = 1").await.unwrap();
    assert_eq!(
        server_id(&mut c, "SELECT @@server_id FROM rt WHERE id = 1").await,
        PRIMARY,
        "reads right after a write see the primary"
    );
    reads_reach_a_replica(&mut c, "reads go back to replicas after the window").await;
}

/// Reads until one is answered by a replica (up to 10 s).
async fn reads_reach_a_replica(c: &mut Conn, what: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !is_replica(server_id(c, "SELECT @@server_id FROM rt WHERE id = 1").await) {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn primary_only_and_session_modes() {
    let s = Sluice::start_with(SluiceOptions {
        routing_mode: "primary_only",
        ..SluiceOptions::default()
    });
    let mut c = Conn::new(s.opts()).await.unwrap();
    for _ in 0..5 {
        assert_eq!(server_id(&mut c, "SELECT @@server_id").await, PRIMARY);
    }
    let s = Sluice::start_with(SluiceOptions {
        pool_extra: "mode = \"session\"".into(),
        ..SluiceOptions::default()
    });
    let mut c = Conn::new(s.opts()).await.unwrap();
    let first: u64 = c.query_first(BACKEND_THREAD).await.unwrap().unwrap();
    for _ in 0..5 {
        assert_eq!(server_id(&mut c, "SELECT @@server_id").await, PRIMARY);
        let id: u64 = c.query_first(BACKEND_THREAD).await.unwrap().unwrap();
        assert_eq!(id, first, "session mode keeps one backend connection");
    }
}

#[tokio::test]
async fn for_update_lock_waits_and_get_lock_between_clients() {
    let s = split_off();
    let mut a = Conn::new(s.opts()).await.unwrap();
    let mut b = Conn::new(s.opts()).await.unwrap();
    a.query_drop("CREATE TABLE IF NOT EXISTS rt_lock (id INT PRIMARY KEY, v INT)")
        .await
        .unwrap();
    a.query_drop("INSERT IGNORE INTO rt_lock VALUES (1, 0)")
        .await
        .unwrap();

    // A holds the row lock; B's locking read waits for A's commit.
    a.query_drop("BEGIN").await.unwrap();
    let _: Option<i32> = a
        .query_first("SELECT v FROM rt_lock WHERE id = 1 FOR UPDATE")
        .await
        .unwrap();
    a.query_drop("UPDATE rt_lock SET v = v + 1 WHERE id = 1")
        .await
        .unwrap();
    let waiter = tokio::spawn(async move {
        b.query_drop("BEGIN").await.unwrap();
        let v: Option<i32> = b
            .query_first("SELECT v FROM rt_lock WHERE id = 1 FOR UPDATE")
            .await
            .unwrap();
        b.query_drop("COMMIT").await.unwrap();
        (v, b)
    });
    sluice_tests::wait_until_running("SELECT v FROM rt_lock WHERE id = 1 FOR UPDATE").await;
    assert!(
        !waiter.is_finished(),
        "the second locking read waits for the first transaction"
    );
    let before: Option<i32> = a.query_first("SELECT v FROM rt_lock WHERE id = 1").await.unwrap();
    a.query_drop("COMMIT").await.unwrap();
    let (v, mut b) = waiter.await.unwrap();
    assert_eq!(v, before, "after the wait it reads the committed value");

    // GET_LOCK is exclusive between clients as on the server.
    let got: Option<i32> = a.query_first("SELECT GET_LOCK('rt_named', 0)").await.unwrap();
    assert_eq!(got, Some(1));
    let other: Option<i32> = b.query_first("SELECT GET_LOCK('rt_named', 0)").await.unwrap();
    assert_eq!(other, Some(0), "held by the other client");
    let released: Option<i32> = a.query_first("SELECT RELEASE_LOCK('rt_named')").await.unwrap();
    assert_eq!(released, Some(1));
    let now: Option<i32> = b.query_first("SELECT GET_LOCK('rt_named', 1)").await.unwrap();
    assert_eq!(now, Some(1));
}

#[tokio::test]
async fn may_i_write_is_answered_by_the_primary() {
    // MediaWiki asks this before every write and refuses to write on 1.
    const ASK: &str = "SELECT @@GLOBAL.read_only AS Value";
    let topo = sluice_tests::Topology::from_env();
    let mut said = Vec::new();
    for addr in [&topo.primary, &topo.replica1, &topo.replica2] {
        let mut direct = Conn::new(sluice_tests::direct_opts(addr)).await.unwrap();
        said.push(direct.query_first::<u8, _>(ASK).await.unwrap());
    }
    assert_eq!(said, [Some(0), Some(1), Some(1)], "the topology's servers");
    let s = split_off();
    let mut c = Conn::new(s.opts()).await.unwrap();
    for _ in 0..6 {
        let through: Option<u8> = c.query_first(ASK).await.unwrap();
        assert_eq!(
            through, said[0],
            "the primary's answer, as a server would give it"
        );
        let (read_only, sid): (u8, u32) = c
            .query_first("SELECT @@read_only, @@server_id")
            .await
            .unwrap()
            .unwrap();
        assert_eq!((read_only, sid), (0, PRIMARY));
        // Other reads of no table still spread to the replicas.
        assert!(is_replica(server_id(&mut c, "SELECT @@server_id").await));
    }
}
