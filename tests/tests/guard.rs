//! The empty-key guard against the real topology, with the server as the
//! oracle: every lookup (text and prepared) gives through Sluice exactly
//! what the primary gives, including each comparison trap of MariaDB's
//! (strings, decimals and hex against integer keys, PAD SPACE, binary
//! collations, NULL); a guarded answer is the server's own bytes; the
//! diagnostics a later statement reads are the server's; and under a
//! randomized mix of writes through Sluice and around it, no lookup ever
//! misses a row it must see.

use mysql_async::prelude::*;
use mysql_async::{Conn, Params, Row, Value};
use sluice_tests::{Sluice, SluiceOptions, Topology, direct_opts, metric_sum, wait_until};
use std::time::{Duration, Instant};

/// A distinct binlog server_id per test: two streams with one id kick
/// each other off the primary.
fn options(server_id: u32, tables: &[(&str, &str)], routing_extra: &str) -> SluiceOptions {
    let mut extra = format!("\n[guard]\nserver_id = {server_id}\nrebuild_interval_ms = 0\n");
    for (table, key) in tables {
        extra.push_str(&format!(
            "\n[[guard.tables]]\ntable = \"sluice_test.{table}\"\nkey = \"{key}\"\n"
        ));
    }
    SluiceOptions {
        routing_extra: routing_extra.to_string(),
        extra,
        ..SluiceOptions::default()
    }
}

fn table_status(s: &Sluice, table: &str) -> serde_json::Value {
    s.status()["guard"]["tables"][format!("sluice_test.{table}")].clone()
}

/// Waits for a table's state, and for the binlog stream to be connected
/// (the guard answers nothing while it is not). A ready table also waits
/// until Sluice knows both replicas have its structure (the build's
/// snapshot): only then is result metadata from a replica kept.
async fn wait_state(s: &Sluice, table: &str, state: &str) {
    wait_until(&format!("{table} is {state}"), Duration::from_secs(30), || {
        let t = table_status(s, table);
        t["state"] == state
            && s.status()["guard"]["connected"] == true
            && (state != "ready" || t["snapshot_gtid"].as_str().is_some_and(|at| s.monitor_knows(at)))
    })
    .await;
}

/// Waits until both replicas have applied everything the primary has.
async fn replicas_caught_up(primary: &mut Conn) {
    let pos: String = primary
        .query_first("SELECT @@gtid_binlog_pos")
        .await
        .expect("position")
        .unwrap_or_default();
    let t = Topology::from_env();
    for replica in [&t.replica1, &t.replica2] {
        let mut c = Conn::new(direct_opts(replica)).await.expect("replica");
        let waited: Option<i64> = c
            .query_first(format!("SELECT MASTER_GTID_WAIT('{pos}', 30)"))
            .await
            .expect("wait");
        assert_eq!(waited, Some(0), "{replica} did not catch up");
        c.disconnect().await.ok();
    }
}

/// A connection to the primary after `setup` ran there and reached both
/// replicas (so a guard's scan and every replica start from the same rows).
async fn primary_after(setup: &str) -> Conn {
    let t = Topology::from_env();
    let mut primary = Conn::new(direct_opts(&t.primary)).await.expect("primary");
    primary.query_drop(setup).await.expect("set up the tables");
    replicas_caught_up(&mut primary).await;
    primary
}

fn counts(s: &Sluice, table: &str) -> (f64, f64) {
    let m = s.metrics();
    let label = format!("table=\"sluice_test.{table}\"");
    (
        metric_sum(&m, "sluice_guard_answered_total", &[&label]),
        metric_sum(&m, "sluice_guard_passed_total", &[&label]),
    )
}

fn passed(s: &Sluice, table: &str, reason: &str) -> f64 {
    let label = format!("table=\"sluice_test.{table}\"");
    let reason = format!("reason=\"{reason}\"");
    metric_sum(&s.metrics(), "sluice_guard_passed_total", &[&label, &reason])
}

/// Rows as text, in order, for comparison with the server's.
fn texts(rows: Vec<Row>) -> Vec<Vec<Option<String>>> {
    rows.into_iter()
        .map(|r| {
            r.unwrap()
                .into_iter()
                .map(|v| match v {
                    Value::NULL => None,
                    Value::Bytes(b) => Some(String::from_utf8_lossy(&b).into_owned()),
                    other => Some(other.as_sql(false)),
                })
                .collect()
        })
        .collect()
}

async fn setup_traps(primary: &mut Conn) {
    primary
        .query_drop(
            "DROP TABLE IF EXISTS guard_traps, guard_strings, guard_ci;
             CREATE TABLE guard_traps (id INT PRIMARY KEY, u BIGINT UNSIGNED UNIQUE, c VARCHAR(20));
             INSERT INTO guard_traps VALUES (5, 5, 'five'), (10, 18446744073709551615, 'ten'), (-3, 3, 'minus three'), (0, 0, 'zero');
             CREATE TABLE guard_strings (n INT PRIMARY KEY,
                 s VARCHAR(20) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin UNIQUE,
                 vb VARBINARY(20) UNIQUE);
             INSERT INTO guard_strings VALUES (1, 'a', 'ab'), (2, 'é', 'x y'), (3, 'with''quote', '');
             CREATE TABLE guard_ci (s VARCHAR(20) CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci PRIMARY KEY);
             INSERT INTO guard_ci VALUES ('a'), ('é');",
        )
        .await
        .expect("create trap tables");
}

/// Every lookup here is run twice through Sluice (the first run of a
/// shape gives the guard its metadata) and once on the primary; all three
/// must agree.
async fn same_as_server(sluice: &mut Conn, primary: &mut Conn, sql: &str, params: Params) {
    let want = texts(primary.exec(sql, params.clone()).await.expect("primary"));
    for round in 0..2 {
        let got = if params == Params::Empty {
            texts(sluice.query(sql).await.expect("through sluice (text)"))
        } else {
            texts(
                sluice
                    .exec(sql, params.clone())
                    .await
                    .expect("through sluice (prepared)"),
            )
        };
        assert_eq!(got, want, "round {round}: {sql} {params:?}");
    }
    if params == Params::Empty {
        // The prepared form of the same text, too.
        let got = texts(sluice.exec(sql, ()).await.expect("prepared without parameters"));
        assert_eq!(got, want, "prepared: {sql}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_comparison_trap_gives_what_the_server_gives() {
    let t = Topology::from_env();
    let mut primary = Conn::new(direct_opts(&t.primary)).await.expect("primary");
    setup_traps(&mut primary).await;
    replicas_caught_up(&mut primary).await;
    let s = Sluice::start_with(options(
        4101,
        &[("guard_traps", "id"), ("guard_strings", "s"), ("guard_ci", "s")],
        "",
    ));
    wait_state(&s, "guard_traps", "ready").await;
    wait_state(&s, "guard_strings", "ready").await;
    // A case-insensitive key could hide 'A' when 'a' exists: refused.
    wait_state(&s, "guard_ci", "refused").await;
    // The feed's lag is measured from the heartbeat rows it sees.
    wait_until("the guard's lag is known", Duration::from_secs(30), || {
        let m = s.metrics();
        let lag = metric_sum(&m, "sluice_guard_lag_seconds", &[]);
        m.lines().any(|l| l.starts_with("sluice_guard_lag_seconds ")) && lag.is_finite() && lag >= 0.0
    })
    .await;
    let mut c = Conn::new(s.opts()).await.expect("connect through sluice");

    let text = [
        // Absent integer keys: the guard's to answer.
        "SELECT * FROM guard_traps WHERE id = 6",
        "SELECT c FROM guard_traps WHERE id = 7 AND c = 'x' ORDER BY c LIMIT 1",
        "SELECT id, c FROM guard_traps WHERE id IN (6, 7, 8)",
        "SELECT * FROM guard_traps t WHERE t.id = -4",
        "SELECT * FROM guard_traps WHERE 11 = id",
        "SELECT * FROM guard_traps WHERE u = 6",
        // Present keys and partly present lists.
        "SELECT * FROM guard_traps WHERE id = 5",
        "SELECT * FROM guard_traps WHERE id = -3",
        "SELECT * FROM guard_traps WHERE id IN (6, 5)",
        "SELECT * FROM guard_traps WHERE u = 18446744073709551615",
        // Traps: the server converts, so these must reach it.
        "SELECT * FROM guard_traps WHERE id = '5abc'",
        "SELECT * FROM guard_traps WHERE id = 5.0",
        "SELECT * FROM guard_traps WHERE id = '1e1'",
        "SELECT * FROM guard_traps WHERE id = 1e1",
        "SELECT * FROM guard_traps WHERE id = 0x5",
        "SELECT * FROM guard_traps WHERE id = ' 5'",
        "SELECT * FROM guard_traps WHERE id = '05'",
        "SELECT * FROM guard_traps WHERE id = '-3'",
        "SELECT * FROM guard_traps WHERE id = '6'",
        "SELECT * FROM guard_traps WHERE id = 5.4",
        "SELECT * FROM guard_traps WHERE id = 99999999999",
        "SELECT * FROM guard_traps WHERE id = NULL",
        "SELECT * FROM guard_traps WHERE u = -1",
        "SELECT * FROM guard_traps WHERE id = TRUE",
        // Not lookups the guard may answer: a row even for no match.
        "SELECT COUNT(*) FROM guard_traps WHERE id = 6",
        "SELECT MAX(c) FROM guard_traps WHERE id = 6",
        "SELECT * FROM guard_traps WHERE id = 6 OR id = 5",
        "SELECT * FROM guard_traps WHERE id = 6 UNION SELECT * FROM guard_traps WHERE id = 5",
        "SELECT * FROM guard_traps WHERE id = (SELECT 5)",
        // Strings under utf8mb4_bin (PAD SPACE) and varbinary (NO PAD).
        "SELECT * FROM guard_strings WHERE s = 'a'",
        "SELECT * FROM guard_strings WHERE s = 'a '",
        "SELECT * FROM guard_strings WHERE s = 'A'",
        "SELECT * FROM guard_strings WHERE s = 'e'",
        "SELECT * FROM guard_strings WHERE s = 'é'",
        "SELECT * FROM guard_strings WHERE s = 'with''quote'",
        "SELECT * FROM guard_strings WHERE s = 'with\\'quote'",
        "SELECT * FROM guard_strings WHERE s = 'b'",
        "SELECT * FROM guard_strings WHERE s = _latin1'a'",
        "SELECT * FROM guard_strings WHERE s = 'A' COLLATE utf8mb4_general_ci",
        "SELECT * FROM guard_strings WHERE s = 1",
        "SELECT * FROM guard_strings WHERE vb = 'ab'",
        "SELECT * FROM guard_strings WHERE vb = 'ab '",
        "SELECT * FROM guard_strings WHERE vb = 'x y'",
        "SELECT * FROM guard_strings WHERE vb = ''",
        "SELECT * FROM guard_strings WHERE vb = 'zz'",
        // Case- and accent-insensitive: 'A' finds 'a', 'e' finds 'é'.
        "SELECT * FROM guard_ci WHERE s = 'A'",
        "SELECT * FROM guard_ci WHERE s = 'e'",
        "SELECT * FROM guard_ci WHERE s = 'zz'",
    ];
    for sql in text {
        same_as_server(&mut c, &mut primary, sql, Params::Empty).await;
    }
    let (answered_before, _) = counts(&s, "guard_traps");
    assert!(
        answered_before >= 6.0,
        "absent integer keys were answered: {answered_before}"
    );
    // `id = NULL` is no key condition at all (it matches nothing).
    for reason in [
        "non_integer_literal",
        "hex_literal",
        "out_of_range",
        "no_key_condition",
    ] {
        assert!(passed(&s, "guard_traps", reason) > 0.0, "a pass for {reason}");
    }
    assert!(passed(&s, "guard_traps", "maybe_present") > 0.0);

    // Prepared, decided from the bound value.
    let sql = "SELECT * FROM guard_traps WHERE id = ?";
    for value in [
        Value::Int(6),
        Value::Int(5),
        Value::Int(-3),
        Value::Int(1 << 40),
        Value::UInt(u64::MAX),
        Value::Bytes(b"5abc".to_vec()),
        Value::Bytes(b"6".to_vec()),
        Value::Bytes(b" 5".to_vec()),
        Value::Bytes(b"1e1".to_vec()),
        Value::Double(5.0),
        Value::Double(6.0),
        Value::NULL,
    ] {
        same_as_server(&mut c, &mut primary, sql, Params::Positional(vec![value])).await;
    }
    let sql = "SELECT n FROM guard_strings WHERE s = ? LIMIT 5";
    for value in ["a", "a ", "A", "é", "e", "zz", "with'quote"] {
        same_as_server(
            &mut c,
            &mut primary,
            sql,
            Params::Positional(vec![Value::Bytes(value.as_bytes().to_vec())]),
        )
        .await;
    }
    assert!(
        passed(&s, "guard_traps", "null") > 0.0,
        "a NULL parameter is passed: {}",
        s.metrics()
            .lines()
            .filter(|l| l.starts_with("sluice_guard_passed_total"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let (answered_after, _) = counts(&s, "guard_traps");
    assert!(
        answered_after > answered_before,
        "prepared lookups of absent keys were answered"
    );
    assert!(
        counts(&s, "guard_strings").0 > 0.0,
        "absent string keys were answered"
    );
    assert_eq!(
        counts(&s, "guard_ci").0,
        0.0,
        "a case-insensitive key is never answered"
    );
    c.disconnect().await.ok();
    primary.disconnect().await.ok();
}

/// One text command's response: every packet up to the result's end.
async fn response(c: &mut sluice_tests::raw::RawClient, sql: &[u8]) -> Vec<(u8, Vec<u8>)> {
    c.stream.send(0, sql).await.expect("send");
    let mut packets = Vec::new();
    let mut eofs = 0;
    loop {
        let p = c.stream.read_packet().await.expect("read");
        let eof_header = p.payload.first() == Some(&0xfe) && p.payload.len() < 9;
        let error = p.payload.first() == Some(&0xff);
        let len = p.payload.len();
        packets.push((p.seq, p.payload.to_vec()));
        if error {
            break;
        }
        if eof_header {
            eofs += 1;
            // Without DEPRECATE_EOF: EOF after the columns, EOF after the
            // rows. With it, one OK with the EOF header (7+ bytes).
            if eofs == 2 || len > 5 {
                break;
            }
        }
    }
    packets
}

/// A guarded answer, byte for byte, is what the primary sends: with and
/// without DEPRECATE_EOF, and to a client that caches metadata (whose
/// column count carries a "metadata follows" byte).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guarded_answer_is_the_servers_own_bytes() {
    use mysql_common::constants::{CapabilityFlags as Caps, MariadbCapabilities as Mcaps};
    use sluice_tests::raw::RawClient;
    let t = Topology::from_env();
    let primary = primary_after(
        "DROP TABLE IF EXISTS guard_bytes;
             CREATE TABLE guard_bytes (id BIGINT PRIMARY KEY, name VARCHAR(30), at DATETIME(3), amount DECIMAL(10,2));
             INSERT INTO guard_bytes VALUES (1, 'one', NOW(3), 1.5);",
    )
    .await;
    let s = Sluice::start_with(options(4102, &[("guard_bytes", "id")], ""));
    wait_state(&s, "guard_bytes", "ready").await;
    let sql = b"\x03SELECT id, name AS who, at, amount FROM guard_bytes WHERE id = 42";
    let cache = Mcaps::MARIADB_CLIENT_CACHE_METADATA;
    let ext = Mcaps::MARIADB_CLIENT_EXTENDED_METADATA;
    for (caps, mcaps) in [
        (Caps::empty(), Mcaps::empty()),
        (Caps::CLIENT_DEPRECATE_EOF, Mcaps::empty()),
        (Caps::empty(), cache),
        (Caps::CLIENT_DEPRECATE_EOF, cache),
        (Caps::empty(), ext),
        (Caps::CLIENT_DEPRECATE_EOF, ext | cache),
    ] {
        let mut direct = RawClient::connect_mariadb(t.primary_port(), caps, mcaps)
            .await
            .expect("raw to primary");
        let mut through = RawClient::connect_mariadb(s.port, caps, mcaps)
            .await
            .expect("raw through sluice");
        let want = response(&mut direct, sql).await;
        let first = response(&mut through, sql).await;
        assert_eq!(first, want, "relayed from a replica ({caps:?}, {mcaps:?})");
        // Until the guard answers (it passes while its feed is a moment
        // behind the replica), every answer must be the server's bytes.
        let mut answered_once = false;
        for _ in 0..20 {
            let answered = counts(&s, "guard_bytes").0;
            let again = response(&mut through, sql).await;
            assert_eq!(again, want, "through sluice ({caps:?}, {mcaps:?})");
            if counts(&s, "guard_bytes").0 == answered + 1.0 {
                answered_once = true;
                break;
            }
        }
        assert!(answered_once, "the guard answered ({caps:?}, {mcaps:?})");
    }
    primary.disconnect().await.ok();
}

/// After a guarded answer, what later statements read about it is what the
/// server says after the same statement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diagnostics_after_a_guarded_answer_are_the_servers() {
    let t = Topology::from_env();
    let primary = primary_after(
        "DROP TABLE IF EXISTS guard_diag, guard_diag_log;
             CREATE TABLE guard_diag (id INT PRIMARY KEY, c INT);
             CREATE TABLE guard_diag_log (id INT AUTO_INCREMENT PRIMARY KEY, note VARCHAR(10));
             INSERT INTO guard_diag VALUES (1, 1);",
    )
    .await;
    // Reads right after the INSERT may go to a replica.
    let s = Sluice::start_with(options(
        4103,
        &[("guard_diag", "id")],
        "read_your_writes = \"off\"",
    ));
    wait_state(&s, "guard_diag", "ready").await;
    let mut c = Conn::new(s.opts()).await.expect("sluice");
    let mut d = Conn::new(direct_opts(&t.primary)).await.expect("direct");
    // The shape runs once for its metadata.
    c.query_drop("SELECT * FROM guard_diag WHERE id = 1")
        .await
        .expect("warm");
    c.query_drop("SELECT * FROM guard_diag WHERE id = 1 LIMIT 1")
        .await
        .expect("warm");
    let steps: &[&str] = &[
        "INSERT INTO guard_diag_log (note) VALUES ('x')",
        "SELECT CAST('5abc' AS SIGNED)",
        "SELECT * FROM guard_diag WHERE id = 2",
        "SHOW WARNINGS",
        "SELECT FOUND_ROWS(), ROW_COUNT(), LAST_INSERT_ID(), @@warning_count",
        "SELECT * FROM guard_diag WHERE id = 3 LIMIT 1",
        "SELECT FOUND_ROWS()",
    ];
    // The guard may pass a lookup now and then (its feed a moment behind
    // the replica it would stand in for): every round must match the
    // server, and the sequence is repeated until a round had both lookups
    // answered by the guard.
    let mut answered_both = false;
    for _round in 0..10 {
        let before = counts(&s, "guard_diag").0;
        for sql in steps {
            let want = texts(d.query(*sql).await.expect("direct"));
            let got = texts(c.query(*sql).await.expect("sluice"));
            // LAST_INSERT_ID differs between the two connections' inserts.
            if sql.contains("LAST_INSERT_ID") {
                assert_eq!(got[0][0..2], want[0][0..2], "{sql}");
                assert_eq!(got[0][3], want[0][3], "{sql}");
            } else {
                assert_eq!(got, want, "{sql}");
            }
        }
        if counts(&s, "guard_diag").0 == before + 2.0 {
            answered_both = true;
            break;
        }
    }
    assert!(answered_both, "both lookups answered by the guard in some round");
    c.disconnect().await.ok();
    d.disconnect().await.ok();
    primary.disconnect().await.ok();
}

/// Reads that must go to the primary are never the guard's: a key the
/// client inserted in its open transaction (uncommitted, so in no binlog
/// and in no filter) is found, text and prepared, in an explicit
/// transaction and with autocommit=0; a primary hint is passed too. Each
/// is counted as `primary_route` (a locking read is no lookup shape at
/// all, and is not answered either). The same lookup
/// outside them is answered by the guard first, so a plan that let the
/// guard have these reads would return no row here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_that_must_go_to_the_primary_are_never_the_guards() {
    let primary = primary_after(
        "DROP TABLE IF EXISTS guard_route;
             CREATE TABLE guard_route (id INT PRIMARY KEY, v INT);
             INSERT INTO guard_route VALUES (1, 1);",
    )
    .await;
    let s = Sluice::start_with(options(
        4107,
        &[("guard_route", "id")],
        "read_your_writes = \"off\"",
    ));
    wait_state(&s, "guard_route", "ready").await;
    let mut c = Conn::new(s.opts()).await.expect("sluice");
    let lookup = |id: i64| format!("SELECT v FROM guard_route WHERE id = {id}");
    // An autocommit read of an absent key: the guard answers it (after the
    // shape's first run gives it the metadata), text and prepared.
    for prepared in [false, true] {
        let mut answered = false;
        for _ in 0..50 {
            let before = counts(&s, "guard_route").0;
            let got: Option<i64> = if prepared {
                c.exec_first("SELECT v FROM guard_route WHERE id = ?", (500,))
                    .await
                    .expect("lookup")
            } else {
                c.query_first(lookup(500)).await.expect("lookup")
            };
            assert_eq!(got, None);
            if counts(&s, "guard_route").0 > before {
                answered = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            answered,
            "the guard answers an autocommit lookup (prepared: {prepared})"
        );
    }
    let primary_route = || passed(&s, "guard_route", "primary_route");
    let answered = || counts(&s, "guard_route").0;
    let (routed_before, answered_before) = (primary_route(), answered());

    // An explicit transaction sees its own uncommitted row.
    c.query_drop("BEGIN").await.expect("begin");
    c.query_drop("INSERT INTO guard_route VALUES (1000, 7)")
        .await
        .expect("insert");
    let text: Option<i64> = c.query_first(lookup(1000)).await.expect("text");
    let prepared: Option<i64> = c
        .exec_first("SELECT v FROM guard_route WHERE id = ?", (1000,))
        .await
        .expect("prepared");
    assert_eq!((text, prepared), (Some(7), Some(7)), "in a transaction");
    c.query_drop("ROLLBACK").await.expect("rollback");

    // autocommit=0: every statement is in a transaction.
    c.query_drop("SET autocommit = 0").await.expect("autocommit 0");
    c.query_drop("INSERT INTO guard_route VALUES (1001, 8)")
        .await
        .expect("insert");
    let text: Option<i64> = c.query_first(lookup(1001)).await.expect("text");
    assert_eq!(text, Some(8), "with autocommit=0");
    c.query_drop("ROLLBACK").await.expect("rollback");
    c.query_drop("SET autocommit = 1").await.expect("autocommit 1");

    // A locking read and a primary hint of an absent key go to the server.
    let locking: Option<i64> = c
        .query_first("SELECT v FROM guard_route WHERE id = 600 FOR UPDATE")
        .await
        .expect("locking");
    let hinted: Option<i64> = c
        .query_first("SELECT /* sluice:primary */ v FROM guard_route WHERE id = 601")
        .await
        .expect("hinted");
    assert_eq!((locking, hinted), (None, None));

    assert_eq!(answered(), answered_before, "the guard answered none of them");
    // Text and prepared in the transaction, one with autocommit=0 and the
    // hinted one.
    assert_eq!(
        primary_route() - routed_before,
        4.0,
        "each passed as primary_route"
    );
    c.disconnect().await.ok();
    primary.disconnect().await.ok();
}

const KEYS: i64 = 20_000;

/// Keys with `k % 4 == 0` are deleted and moved; the others, once
/// inserted, stay: a lookup of one of those that started after the row was
/// visible must find it.
fn stays(k: i64) -> bool {
    k % 4 != 0
}

type Visible = std::sync::Arc<std::sync::Mutex<std::collections::HashSet<i64>>>;

async fn writes_through_sluice(
    mut c: Conn,
    visible: Visible,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> u64 {
    use rand::Rng;
    let mut ops = 0;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let (a, b, a2) = {
            let mut rng = rand::rng();
            let pick = |rng: &mut rand::rngs::ThreadRng, staying: bool| loop {
                let k = rng.random_range(0..KEYS);
                if stays(k) == staying {
                    break k;
                }
            };
            (pick(&mut rng, true), pick(&mut rng, false), pick(&mut rng, true))
        };
        let op = ops % 6;
        ops += 1;
        let done: Vec<i64> = match op {
            0 => {
                c.exec_drop("INSERT IGNORE INTO guard_random (id, v) VALUES (?, 1)", (a,))
                    .await
                    .expect("insert");
                vec![a]
            }
            1 => {
                c.exec_drop("INSERT IGNORE INTO guard_random (id, v) VALUES (?, 2)", (b,))
                    .await
                    .expect("insert b");
                c.exec_drop("DELETE FROM guard_random WHERE id = ?", (b + 4,))
                    .await
                    .expect("delete");
                vec![]
            }
            2 => {
                // A moving key lands on a staying one.
                // The server's own count says whether it moved (a lookup
                // through Sluice could hide exactly what this test checks).
                c.query_drop(format!("UPDATE IGNORE guard_random SET id = {a} WHERE id = {b}"))
                    .await
                    .expect("update key");
                if c.affected_rows() == 1 { vec![a] } else { vec![] }
            }
            3 => {
                c.query_drop(format!("REPLACE INTO guard_random (id, v) VALUES ({a}, 3)"))
                    .await
                    .expect("replace");
                vec![a]
            }
            4 => {
                c.exec_drop(
                    "INSERT INTO guard_random (id, v) VALUES (?, 4) ON DUPLICATE KEY UPDATE v = v + 1",
                    (a,),
                )
                .await
                .expect("upsert");
                vec![a]
            }
            _ => {
                let mut tx = c
                    .start_transaction(mysql_async::TxOpts::default())
                    .await
                    .expect("begin");
                tx.exec_drop("INSERT IGNORE INTO guard_random (id, v) VALUES (?, 5)", (a,))
                    .await
                    .expect("tx insert");
                tx.exec_drop("INSERT INTO guard_random_log (k) VALUES (?)", (a,))
                    .await
                    .expect("tx other table");
                tx.exec_drop("INSERT IGNORE INTO guard_random (id, v) VALUES (?, 5)", (a2,))
                    .await
                    .expect("tx insert 2");
                tx.commit().await.expect("commit");
                vec![a, a2]
            }
        };
        visible.lock().expect("visible").extend(done);
    }
    ops
}

async fn writes_around_sluice(
    s: &Sluice,
    visible: Visible,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> u64 {
    use rand::Rng;
    let t = Topology::from_env();
    let dir = std::env::temp_dir().join(format!("guard-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("load dir");
    let file = dir.join("keys.tsv");
    let opts = mysql_async::OptsBuilder::from_opts(direct_opts(&t.primary))
        .local_infile_handler(Some(mysql_async::WhiteListFsHandler::new([&file])));
    let mut c = Conn::new(opts).await.expect("primary");
    let mut ops = 0;
    let mut batch = 0;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        batch += 1;
        let keys: Vec<i64> = {
            let mut rng = rand::rng();
            (0..20).map(|_| rng.random_range(0..KEYS / 4) * 4 + 1).collect()
        };
        for k in &keys[..10] {
            c.exec_drop("INSERT IGNORE INTO guard_random (id, v) VALUES (?, 10)", (k,))
                .await
                .expect("direct insert");
            ops += 1;
        }
        let lines: String = keys[10..].iter().map(|k| format!("{k}\t11\n")).collect();
        std::fs::write(&file, lines).expect("write load file");
        c.query_drop(format!(
            "LOAD DATA LOCAL INFILE '{}' IGNORE INTO TABLE guard_random (id, v)",
            file.display()
        ))
        .await
        .expect("load data");
        ops += 1;
        if batch == 5 {
            // DDL mid-run: the key moves to another ordinal position.
            c.query_drop("ALTER TABLE guard_random ADD COLUMN extra INT NOT NULL DEFAULT 0 FIRST")
                .await
                .expect("alter");
        }
        let pos: String = c
            .query_first("SELECT @@gtid_binlog_pos")
            .await
            .expect("position")
            .unwrap_or_default();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !s.monitor_knows(&pos) {
            assert!(Instant::now() < deadline, "replicas did not reach {pos}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        visible.lock().expect("visible").extend(keys);
    }
    c.disconnect().await.ok();
    ops
}

#[derive(Default, Debug)]
struct Lookups {
    done: u64,
    empty: u64,
    false_negatives: Vec<i64>,
}

async fn lookups(s: &Sluice, visible: Visible, count: u64, prepared: bool, reconnect_every: u64) -> Lookups {
    use rand::Rng;
    let mut out = Lookups::default();
    let mut c = Conn::new(s.opts()).await.expect("reader");
    for i in 0..count {
        if reconnect_every > 0 && i > 0 && i % reconnect_every == 0 {
            c.disconnect().await.ok();
            c = Conn::new(s.opts()).await.expect("reader reconnect");
        }
        let k = rand::rng().random_range(0..KEYS);
        let must = visible.lock().expect("visible").contains(&k);
        let found: Option<(i64, i64)> = if prepared {
            c.exec_first("SELECT id, v FROM guard_random WHERE id = ?", (k,))
                .await
                .expect("lookup")
        } else {
            c.query_first(format!("SELECT id, v FROM guard_random WHERE id = {k}"))
                .await
                .expect("lookup")
        };
        out.done += 1;
        if found.is_none() {
            out.empty += 1;
            if must {
                out.false_negatives.push(k);
            }
        }
    }
    c.disconnect().await.ok();
    out
}

/// Writes through Sluice and straight to the primary (inserts, key
/// updates, deletes, REPLACE, upserts, LOAD DATA, a multi-table
/// transaction, an ALTER mid-run) while readers look keys up through
/// Sluice, text and prepared, on long-lived and per-request connections.
/// Every row a lookup must see (written through Sluice before it, under
/// `global` read-your-writes; or written around Sluice and applied by the
/// replicas as Sluice knows them) is found: no false negative.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn randomized_writes_and_lookups_never_miss_a_row() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let t = Topology::from_env();
    let mut primary = Conn::new(direct_opts(&t.primary)).await.expect("primary");
    primary
        .query_drop(
            "DROP TABLE IF EXISTS guard_random, guard_random_log;
             CREATE TABLE guard_random (id BIGINT PRIMARY KEY, v INT NOT NULL);
             CREATE TABLE guard_random_log (n INT AUTO_INCREMENT PRIMARY KEY, k BIGINT);",
        )
        .await
        .expect("create");
    let initial: Vec<i64> = (0..KEYS).step_by(7).collect();
    for chunk in initial.chunks(1000) {
        let values: Vec<String> = chunk.iter().map(|k| format!("({k}, 0)")).collect();
        primary
            .query_drop(format!("INSERT INTO guard_random VALUES {}", values.join(",")))
            .await
            .expect("initial rows");
    }
    replicas_caught_up(&mut primary).await;
    let visible: Visible = Arc::new(std::sync::Mutex::new(
        initial.iter().copied().filter(|&k| stays(k)).collect(),
    ));
    let s = Sluice::start_with(options(
        4104,
        &[("guard_random", "id")],
        "read_your_writes = \"global\"",
    ));
    wait_state(&s, "guard_random", "ready").await;
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(writes_through_sluice(
        Conn::new(s.opts()).await.expect("writer"),
        visible.clone(),
        stop.clone(),
    ));
    let readers = async {
        let per_reader = 25_000;
        let (a, b, c, d) = tokio::join!(
            lookups(&s, visible.clone(), per_reader, false, 0),
            lookups(&s, visible.clone(), per_reader, true, 0),
            lookups(&s, visible.clone(), per_reader, false, 50),
            lookups(&s, visible.clone(), per_reader, true, 50),
        );
        stop.store(true, Ordering::Relaxed);
        [a, b, c, d]
    };
    let (results, direct_ops) =
        tokio::join!(readers, writes_around_sluice(&s, visible.clone(), stop.clone()));
    let through_ops = writer.await.expect("writer task");
    let done: u64 = results.iter().map(|r| r.done).sum();
    let empty: u64 = results.iter().map(|r| r.empty).sum();
    let misses: Vec<i64> = results.iter().flat_map(|r| r.false_negatives.clone()).collect();
    let (answered, passed) = counts(&s, "guard_random");
    let false_positives = metric_sum(
        &s.metrics(),
        "sluice_guard_false_positives_total",
        &["table=\"sluice_test.guard_random\""],
    );
    eprintln!(
        "randomized guard test: {done} lookups, {empty} empty, {answered} answered by the guard, \
         {passed} passed to the database, {false_positives} false positives, {} false negatives; \
         {through_ops} writes through Sluice, {direct_ops} around it",
        misses.len()
    );
    assert!(misses.is_empty(), "rows hidden from lookups: {misses:?}");
    assert!(done >= 100_000);
    assert!(answered >= 1000.0, "the guard answered lookups: {answered}");
    primary.disconnect().await.ok();
}

/// DDL through Sluice that changes a guarded table's columns: no answer
/// after it carries the old columns (read-your-writes by GTID makes every
/// later read see the ALTER), and the guard answers again once rebuilt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ddl_changes_the_columns_of_later_answers() {
    let primary = primary_after(
        "DROP TABLE IF EXISTS guard_ddl;
             CREATE TABLE guard_ddl (id INT PRIMARY KEY, a INT);
             INSERT INTO guard_ddl VALUES (1, 1);",
    )
    .await;
    let s = Sluice::start_with(options(
        4105,
        &[("guard_ddl", "id")],
        "read_your_writes = \"gtid\"",
    ));
    wait_state(&s, "guard_ddl", "ready").await;
    let mut c = Conn::new(s.opts()).await.expect("sluice");
    let columns = |result: &mysql_async::QueryResult<'_, '_, mysql_async::TextProtocol>| -> Vec<String> {
        result
            .columns_ref()
            .iter()
            .map(|col| col.name_str().into_owned())
            .collect()
    };
    let lookup = async |c: &mut Conn, id: i32| -> Vec<String> {
        let result = c
            .query_iter(format!("SELECT * FROM guard_ddl WHERE id = {id}"))
            .await
            .expect("lookup");
        let names = columns(&result);
        result.drop_result().await.expect("drain");
        names
    };
    assert_eq!(lookup(&mut c, 1).await, ["id", "a"]);
    let before = counts(&s, "guard_ddl").0;
    for id in 2..50 {
        assert_eq!(lookup(&mut c, id).await, ["id", "a"]);
        if counts(&s, "guard_ddl").0 > before {
            break;
        }
    }
    assert!(counts(&s, "guard_ddl").0 > before, "answered by the guard");

    c.query_drop("ALTER TABLE guard_ddl ADD COLUMN b INT")
        .await
        .expect("alter through sluice");
    for id in 2..200 {
        assert_eq!(
            lookup(&mut c, id).await,
            ["id", "a", "b"],
            "lookup of {id} after the ALTER"
        );
    }
    // Rebuilt, with the new columns kept from a real run: answered again.
    wait_state(&s, "guard_ddl", "ready").await;
    let answered = counts(&s, "guard_ddl").0;
    let mut more = 0.0;
    for id in 250..450 {
        assert_eq!(lookup(&mut c, id).await, ["id", "a", "b"]);
        more = counts(&s, "guard_ddl").0 - answered;
        if more > 0.0 {
            break;
        }
    }
    assert!(more > 0.0, "the guard answers again after its rebuild");
    c.disconnect().await.ok();
    primary.disconnect().await.ok();
}

/// `[guard]` is hot-reloadable: a table added by a reload is built and
/// answered without a restart, and removing it stops the guard answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guarded_table_comes_and_goes_with_a_reload() {
    let primary = primary_after(
        "DROP TABLE IF EXISTS guard_reload;
             CREATE TABLE guard_reload (id INT PRIMARY KEY);
             INSERT INTO guard_reload VALUES (1);",
    )
    .await;
    let s = Sluice::start_with(options(4106, &[], "read_your_writes = \"off\""));
    let mut c = Conn::new(s.opts()).await.expect("sluice");
    let lookups = async |c: &mut Conn| {
        for id in [1, 2, 3, 4] {
            let found: Option<i32> = c
                .query_first(format!("SELECT id FROM guard_reload WHERE id = {id}"))
                .await
                .expect("lookup");
            assert_eq!(found.is_some(), id == 1, "lookup of {id}");
        }
    };
    lookups(&mut c).await;
    assert_eq!(counts(&s, "guard_reload"), (0.0, 0.0), "not guarded yet");

    let config = std::fs::read_to_string(s.config_path()).expect("config");
    let guarded = format!("{config}\n[[guard.tables]]\ntable = \"sluice_test.guard_reload\"\nkey = \"id\"\n");
    s.write_config(&guarded);
    s.signal(libc::SIGHUP);
    wait_state(&s, "guard_reload", "ready").await;
    lookups(&mut c).await;
    lookups(&mut c).await;
    let (answered, _) = counts(&s, "guard_reload");
    assert!(answered >= 1.0, "answered after the reload: {answered}");

    s.write_config(&config);
    s.signal(libc::SIGHUP);
    wait_until("the table is no longer guarded", Duration::from_secs(30), || {
        table_status(&s, "guard_reload").is_null()
    })
    .await;
    lookups(&mut c).await;
    assert_eq!(counts(&s, "guard_reload").0, answered, "no answers once removed");
    c.disconnect().await.ok();
    primary.disconnect().await.ok();
}

/// Once a statement's lookups on a connection keep finding their rows,
/// the guard checks only one in `guard.skip_check_one_in` of them (counted
/// as passed, `recently_found`); the first lookup that finds no row brings
/// every lookup back to the filter, so the next absent key is answered.
/// Every answer is the row the server has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_that_keep_finding_rows_are_checked_one_in_n() {
    let primary = primary_after(
        "DROP TABLE IF EXISTS guard_skip;
             CREATE TABLE guard_skip (id INT PRIMARY KEY, v INT);
             INSERT INTO guard_skip SELECT seq, seq * 10 FROM seq_1_to_100;",
    )
    .await;
    let mut opts = options(4108, &[("guard_skip", "id")], "read_your_writes = \"off\"");
    opts.extra = opts.extra.replace(
        "rebuild_interval_ms = 0\n",
        "rebuild_interval_ms = 0\nskip_after_found = 20\nskip_check_one_in = 4\n",
    );
    let s = Sluice::start_with(opts);
    wait_state(&s, "guard_skip", "ready").await;
    let mut c = Conn::new(s.opts()).await.expect("sluice");
    let skipped = || passed(&s, "guard_skip", "recently_found");
    let answered = || counts(&s, "guard_skip").0;
    // Answered, or passed for any reason but the streak's.
    let checked = || {
        let (answered, passed) = counts(&s, "guard_skip");
        answered + passed - skipped()
    };
    for prepared in [false, true] {
        let lookup = async |c: &mut Conn, id: i64| -> Option<i64> {
            if prepared {
                c.exec_first("SELECT v FROM guard_skip WHERE id = ?", (id,))
                    .await
                    .expect("lookup")
            } else {
                c.query_first(format!("SELECT v FROM guard_skip WHERE id = {id}"))
                    .await
                    .expect("lookup")
            }
        };
        // The shape runs once (the guard learns its metadata), then an
        // absent key is answered.
        let mut first_answer = false;
        for _ in 0..50 {
            let before = answered();
            assert_eq!(lookup(&mut c, 500).await, None);
            if answered() > before {
                first_answer = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(first_answer, "an absent key is answered (prepared: {prepared})");

        // 20 lookups in a row that find their row: each checked.
        let before = skipped();
        for id in 1..=20 {
            assert_eq!(lookup(&mut c, id).await, Some(id * 10));
        }
        assert_eq!(skipped(), before, "every lookup checked until the streak is 20");
        // Then one in four is checked.
        for id in 21..=60 {
            assert_eq!(lookup(&mut c, id).await, Some(id * 10));
        }
        assert_eq!(
            skipped() - before,
            30.0,
            "three in four of 40 lookups not checked"
        );

        // A checked lookup the guard answers ends the streak: three more
        // found rows go unchecked, the fourth lookup (an absent key) is
        // checked, and from then on every lookup is.
        for id in 61..=63 {
            assert_eq!(lookup(&mut c, id).await, Some(id * 10));
        }
        assert_eq!(skipped() - before, 33.0);
        let (skipped_before, checked_before) = (skipped(), checked());
        for id in 1000..1010 {
            assert_eq!(lookup(&mut c, id).await, None);
        }
        assert_eq!(skipped(), skipped_before, "every absent key checked");
        assert_eq!(checked() - checked_before, 10.0);

        // An absent key let through unchecked ends it too: after a new
        // streak of 20, one found row and one absent key go unchecked (the
        // database finds no row), and the next nine are checked.
        for id in 1..=21 {
            assert_eq!(lookup(&mut c, id).await, Some(id * 10));
        }
        let (skipped_before, checked_before) = (skipped(), checked());
        for id in 1000..1010 {
            assert_eq!(lookup(&mut c, id).await, None);
        }
        assert_eq!(skipped() - skipped_before, 1.0, "one absent key let through");
        assert_eq!(checked() - checked_before, 9.0, "then each checked");
    }
    assert!(answered() >= 2.0, "the guard answered absent keys");
    c.disconnect().await.ok();
    primary.disconnect().await.ok();
}
