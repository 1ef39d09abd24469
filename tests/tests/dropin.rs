//! Drop-in fidelity regressions (issue 10), each checked against MariaDB
//! itself where the server can answer the same question: multi-packet
//! commands, user variables set by the server, SET NAMES, diagnostics after
//! a delay and under pool pressure, CONNECTION_ID() and KILL, connection
//! attributes, a client without a default schema, cursors while pinned,
//! and the status flags of OK packets Sluice builds. Both routing modes run
//! every check that a mode could change.
//!
//! Tables: dropin_* in sluice_test.

use mysql_async::prelude::*;
use mysql_async::{Conn, Opts, OptsBuilder};
use mysql_common::constants::CapabilityFlags as Caps;
use sluice_tests::raw::{RawClient, err_code};
use sluice_tests::{Sluice, SluiceOptions, Topology, direct_opts, metric_sum};
use std::time::{Duration, Instant};

const MODES: [&str; 2] = ["primary_only", "split"];

fn start(mode: &'static str) -> Sluice {
    Sluice::start_with(SluiceOptions {
        routing_mode: mode,
        ..SluiceOptions::default()
    })
}

/// Sluice with one connection per backend: clients take turns on it.
fn one_connection(mode: &'static str) -> Sluice {
    Sluice::start_with(SluiceOptions {
        routing_mode: mode,
        max_connections_per_backend: 1,
        ..SluiceOptions::default()
    })
}

/// Runs `run` through Sluice in both routing modes, one connection per
/// backend, and compares each transcript with the server's, `expected`.
async fn through_sluice_as_directly<F, Fut>(expected: &[String], run: F)
where
    F: Fn(Opts) -> Fut,
    Fut: std::future::Future<Output = Vec<String>>,
{
    for mode in MODES {
        let s = one_connection(mode);
        assert_eq!(run(s.opts()).await, expected, "{mode}");
    }
}

fn as_user(s: &Sluice, user: &str, password: &str) -> OptsBuilder {
    OptsBuilder::from_opts(s.opts())
        .user(Some(user))
        .pass(Some(password))
}

fn server_code(e: &mysql_async::Error) -> Option<u16> {
    match e {
        mysql_async::Error::Server(s) => Some(s.code),
        _ => None,
    }
}

/// Runs the same statements on a connection and returns every result as
/// text rows, errors as their code, so a direct run and a Sluice run can be
/// compared.
async fn transcript(c: &mut Conn, statements: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for sql in statements {
        match c.query::<mysql_async::Row, _>(*sql).await {
            Ok(rows) => {
                // Column types too: drivers convert values by them.
                let types: Vec<String> = rows
                    .first()
                    .map(|r| {
                        r.columns_ref()
                            .iter()
                            .map(|c| format!("{}:{:?}", c.name_str(), c.column_type()))
                            .collect()
                    })
                    .unwrap_or_default();
                let rows: Vec<Vec<String>> = rows
                    .into_iter()
                    .map(|r| r.unwrap().into_iter().map(|v| format!("{v:?}")).collect())
                    .collect();
                out.push(format!("{sql} -> {types:?} {rows:?}"));
            }
            Err(e) => out.push(format!("{sql} -> error {:?}", server_code(&e))),
        }
    }
    out
}

#[tokio::test]
async fn user_variables_set_by_the_server_follow_the_client() {
    let statements = [
        "CREATE PROCEDURE IF NOT EXISTS sluice_test.dropin_double(IN a INT, OUT b INT) SET b = a * 2",
        "CALL sluice_test.dropin_double(5, @out)",
        "SELECT @out",
        "SELECT 42 INTO @v",
        "SELECT 1 FROM dual",
        "SELECT @v",
        "SET @a := 7 + 1",
        "SELECT @a, @a + 1",
        "SET @s := CONCAT('x', 'y'), @d := 1.50, @f := 1.5e0, @n := NULL",
        "SELECT @s, @d, @f, @n",
        "SELECT @s := 'changed'",
        "SELECT @s",
        // Types and names the read-back must keep.
        "SET @uns := CAST(7 AS UNSIGNED), @`my-var` := 5",
        "SELECT @uns, @`my-var`",
        // A routine body keeps ROW_COUNT() as written.
        "CREATE OR REPLACE PROCEDURE sluice_test.dropin_rc() SELECT ROW_COUNT()",
        "SELECT ROUTINE_DEFINITION FROM information_schema.ROUTINES \
         WHERE ROUTINE_SCHEMA = 'sluice_test' AND ROUTINE_NAME = 'dropin_rc' /* sluice:primary */",
        // A lock taken with a user variable pins: it stays with the client.
        "SELECT @got := GET_LOCK('dropin_lock', 5)",
        "SELECT 1 FROM dual",
        "SELECT RELEASE_LOCK('dropin_lock')",
    ];
    let mut direct = Conn::new(direct_opts(&Topology::from_env().primary))
        .await
        .unwrap();
    direct.query_drop("USE sluice_test").await.unwrap();
    let expected = transcript(&mut direct, &statements).await;
    for mode in MODES {
        let s = start(mode);
        let mut c = Conn::new(s.opts()).await.unwrap();
        let got = transcript(&mut c, &statements).await;
        assert_eq!(got, expected, "{mode}");
        let m = s.metrics();
        assert_eq!(
            metric_sum(&m, "sluice_session_pins_total", &["reason=\"user_variable\""]),
            0.0,
            "{mode}: read back, not pinned"
        );
        assert_eq!(
            metric_sum(&m, "sluice_session_pins_total", &["reason=\"get_lock\""]),
            1.0,
            "{mode}: the lock pins"
        );
        assert!(metric_sum(&m, "sluice_state_read_backs_total", &["what=\"user_variables\""]) >= 4.0);
    }
}

#[tokio::test]
async fn set_names_after_a_latin1_handshake_sets_every_charset_variable() {
    let statements = [
        "SET NAMES utf8mb4",
        "SELECT 1",
        "SELECT @@character_set_client, @@character_set_connection, @@character_set_results, @@collation_connection",
        "SET NAMES latin1 COLLATE latin1_german1_ci",
        "SELECT @@character_set_connection, @@collation_connection",
        "SET collation_connection = utf8mb4_unicode_ci",
        "SELECT @@character_set_connection, @@collation_connection",
    ];
    let latin1 = |opts: Opts| -> Opts {
        OptsBuilder::from_opts(opts)
            .setup(vec!["SET NAMES latin1"])
            .into()
    };
    let mut direct = Conn::new(latin1(direct_opts(&Topology::from_env().primary)))
        .await
        .unwrap();
    let expected = transcript(&mut direct, &statements).await;
    for mode in MODES {
        let s = start(mode);
        // Many statements, so every one may land on another connection.
        let mut c = Conn::new(latin1(s.opts())).await.unwrap();
        let got = transcript(&mut c, &statements).await;
        assert_eq!(got, expected, "{mode}");
    }
}

/// A Sluice whose 2-connection pools `pressure` can exhaust.
fn start_with_small_pool(mode: &'static str) -> Sluice {
    Sluice::start_with(SluiceOptions {
        routing_mode: mode,
        max_connections_per_backend: 2,
        acquire_timeout_ms: 500,
        ..SluiceOptions::default()
    })
}

/// Keeps every primary connection of a small pool busy.
fn pressure(opts: Opts, until: Instant) -> Vec<tokio::task::JoinHandle<()>> {
    (0..4)
        .map(|_| {
            let opts = opts.clone();
            tokio::spawn(async move {
                let mut c = Conn::new(opts).await.unwrap();
                while Instant::now() < until {
                    // Writes go to the primary in both modes; errors
                    // (pool exhausted) are part of the pressure.
                    let _ = c
                        .query_drop("INSERT INTO sluice_test.dropin_busy VALUES (SLEEP(0.1))")
                        .await;
                }
            })
        })
        .collect()
}

#[tokio::test]
async fn diagnostics_survive_a_delay_and_pool_pressure() {
    let setup = [
        "SET SESSION sql_mode = ''",
        "CREATE TABLE IF NOT EXISTS sluice_test.dropin_w (c CHAR(2))",
        "CREATE TABLE IF NOT EXISTS sluice_test.dropin_busy (x INT)",
        "TRUNCATE sluice_test.dropin_w",
    ];
    let before = ["INSERT INTO sluice_test.dropin_w VALUES ('abcdef'), ('xyz'), ('ok')"];
    let after = [
        "SELECT @@warning_count",
        "SHOW COUNT(*) WARNINGS",
        "SHOW WARNINGS",
        "SHOW WARNINGS LIMIT 1, 1",
        "SHOW ERRORS",
        "SELECT 1",
        "SHOW WARNINGS",
        "SELECT SQL_CALC_FOUND_ROWS * FROM sluice_test.dropin_w LIMIT 1",
    ];
    let after_second_delay = [
        "SELECT FOUND_ROWS()",
        "SELECT FOUND_ROWS() AS again",
        "UPDATE sluice_test.dropin_w SET c = 'zz'",
    ];
    let after_third_delay = [
        "SELECT ROW_COUNT()",
        "SELECT ROW_COUNT()",
        "SELECT nosuchcol FROM sluice_test.dropin_w",
        "SHOW COUNT(*) ERRORS",
        "SHOW WARNINGS",
        "SELECT @@warning_count, @@error_count",
        "SELECT * FROM sluice_test.dropin_w LIMIT 0",
        "SHOW WARNINGS",
    ];
    async fn run(c: &mut Conn, busy: Option<Opts>, groups: [&[&str]; 4]) -> Vec<String> {
        let mut out = Vec::new();
        for (i, group) in groups.iter().enumerate() {
            if i > 0 {
                // Longer than any hold Sluice ever had, with other clients
                // taking every pooled connection meanwhile.
                let until = Instant::now() + Duration::from_millis(1200);
                let tasks = busy.clone().map(|o| pressure(o, until)).unwrap_or_default();
                tokio::time::sleep_until(until.into()).await;
                for t in tasks {
                    t.await.unwrap();
                }
            }
            out.extend(transcript(c, group).await);
        }
        out
    }
    let groups: [&[&str]; 4] = [&before, &after, &after_second_delay, &after_third_delay];
    let mut direct = Conn::new(direct_opts(&Topology::from_env().primary))
        .await
        .unwrap();
    transcript(&mut direct, &setup).await;
    let expected = run(&mut direct, None, groups).await;
    let expected_found: Option<u64> = direct.exec_first("SELECT FOUND_ROWS()", ()).await.unwrap();
    for mode in MODES {
        let s = start_with_small_pool(mode);
        let mut c = Conn::new(s.opts()).await.unwrap();
        transcript(&mut c, &setup).await;
        let got = run(&mut c, Some(s.opts()), groups).await;
        assert_eq!(got, expected, "{mode}");
        // The same read through the binary protocol.
        let found: Option<u64> = c.exec_first("SELECT FOUND_ROWS()", ()).await.unwrap();
        assert_eq!(found, expected_found, "{mode}: prepared FOUND_ROWS()");
    }
}

#[tokio::test]
async fn connection_id_and_kill_name_the_client() {
    sluice_tests::ensure_other_user().await;
    let mut admin = Conn::new(direct_opts(&Topology::from_env().primary))
        .await
        .unwrap();
    admin
        .query_drop(
            "CREATE USER IF NOT EXISTS 'limited'@'%' IDENTIFIED BY 'limited-pw'; \
             GRANT SELECT ON sluice_test.* TO 'limited'@'%'",
        )
        .await
        .unwrap();
    for mode in MODES {
        let s = Sluice::start_with(SluiceOptions {
            routing_mode: mode,
            extra_users: "[[users]]\nname = \"limited\"\npassword = \"limited-pw\"\n".into(),
            ..SluiceOptions::default()
        });
        let mut victim = Conn::new(s.opts()).await.unwrap();
        let id = victim.id();
        for _ in 0..3 {
            let got: Option<u32> = victim.query_first("SELECT CONNECTION_ID()").await.unwrap();
            assert_eq!(got, Some(id), "{mode}: CONNECTION_ID() is the handshake's id");
        }
        let mut killer = Conn::new(s.opts()).await.unwrap();
        assert_ne!(killer.id(), id);

        // KILL QUERY stops the statement, not the connection.
        let sleep = format!("SELECT SLEEP(20) AS dropin_kill_{mode}");
        let sleeper = tokio::spawn({
            let sleep = sleep.clone();
            async move {
                let started = Instant::now();
                let r = victim.query_drop(sleep).await;
                (victim, r, started.elapsed())
            }
        });
        sluice_tests::wait_until_running(&sleep).await;
        killer.query_drop(format!("KILL QUERY {id}")).await.unwrap();
        let (mut victim, r, took) = sleeper.await.unwrap();
        let err = r.expect_err("the statement was killed");
        assert_eq!(server_code(&err), Some(1317), "{mode}: {err} after {took:?}");
        let one: Option<u32> = victim.query_first("SELECT 1").await.unwrap();
        assert_eq!(one, Some(1), "{mode}: the connection lives on");

        // Unknown ids, other users' clients, unsupported forms.
        let e = killer.query_drop("KILL QUERY 999999").await.unwrap_err();
        assert_eq!(server_code(&e), Some(1094), "{e}");
        let mut limited = Conn::new(as_user(&s, "limited", "limited-pw")).await.unwrap();
        let e = limited.query_drop(format!("KILL {id}")).await.unwrap_err();
        assert_eq!(server_code(&e), Some(1095), "{mode}: {e}");
        let e = killer.query_drop("KILL USER app").await.unwrap_err();
        assert_eq!(server_code(&e), Some(1235), "{e}");
        // Prepared, a KILL would reach a pooled connection: refused.
        let e = killer
            .exec_drop(format!("KILL QUERY {id}"), ())
            .await
            .unwrap_err();
        assert_eq!(server_code(&e), Some(1295), "{e}");
        // A backend thread's id means nothing to Sluice: refused, and the
        // thread (here a direct connection) lives on.
        let mut direct = Conn::new(direct_opts(&Topology::from_env().primary))
            .await
            .unwrap();
        let backend_id = direct.id();
        // Sluice numbers its clients 1, 2, ...: an id above the count of
        // clients it ever accepted is none of them.
        let accepted = metric_sum(&s.metrics(), "sluice_client_connections_accepted_total", &[]);
        assert!(
            f64::from(backend_id) > accepted + 1.0,
            "the test needs a server thread id ({backend_id}) above Sluice's client ids ({accepted})"
        );
        let e = killer.query_drop(format!("KILL {backend_id}")).await.unwrap_err();
        assert_eq!(server_code(&e), Some(1094), "{mode}: {e}");
        let alive: Option<u32> = direct.query_first("SELECT 1").await.unwrap();
        assert_eq!(alive, Some(1), "{mode}: the backend thread was not killed");

        // A user with the privilege may kill another user's client.
        let mut other = Conn::new(as_user(&s, "other", "secret-other-pw")).await.unwrap();
        let limited_id = limited.id();
        other.query_drop(format!("KILL {limited_id}")).await.unwrap();
        assert!(
            limited.query_drop("SELECT 1").await.is_err(),
            "{mode}: KILL CONNECTION closed the client"
        );

        // KILL CONNECTION of a client in a transaction: it is closed and
        // its transaction rolled back.
        victim
            .query_drop("CREATE TABLE IF NOT EXISTS sluice_test.dropin_k (id INT PRIMARY KEY)")
            .await
            .unwrap();
        victim
            .query_drop("DELETE FROM sluice_test.dropin_k")
            .await
            .unwrap();
        victim.query_drop("BEGIN").await.unwrap();
        victim
            .query_drop("INSERT INTO sluice_test.dropin_k VALUES (1)")
            .await
            .unwrap();
        killer.query_drop(format!("KILL CONNECTION {id}")).await.unwrap();
        assert!(victim.query_drop("COMMIT").await.is_err(), "{mode}: killed");
        let rows: Option<u32> = killer
            .query_first("SELECT COUNT(*) FROM sluice_test.dropin_k /* sluice:primary */")
            .await
            .unwrap();
        assert_eq!(rows, Some(0), "{mode}: the killed transaction was rolled back");
        let kills = metric_sum(&s.metrics(), "sluice_kills_total", &[]);
        assert!(kills >= 3.0, "{kills}");
    }
}

#[tokio::test]
async fn connection_attributes_reach_the_server() {
    let s = start("primary_only");
    let attrs = [
        ("program_name", "dropin-test"),
        ("app_tier", "billing"),
        ("_pid", "4242"),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()));
    let opts = OptsBuilder::from_opts(s.opts()).connect_attributes(attrs.into_iter().collect());
    let mut c = Conn::new(opts).await.unwrap();
    // The backend connection running this statement finds itself by the
    // marker in its own text (performance_schema is on on the primary).
    let attrs: Vec<(String, String)> = c
        .query(
            "SELECT a.ATTR_NAME, a.ATTR_VALUE FROM performance_schema.session_connect_attrs a \
             JOIN information_schema.PROCESSLIST p ON p.ID = a.PROCESSLIST_ID \
             WHERE p.INFO LIKE '%dropin-attrs-marker%' ORDER BY a.ATTR_NAME",
        )
        .await
        .unwrap();
    let get = |k: &str| attrs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    assert_eq!(get("program_name"), Some("dropin-test"), "{attrs:?}");
    assert_eq!(get("app_tier"), Some("billing"), "{attrs:?}");
    assert_eq!(get("_proxy"), Some("sluice"), "{attrs:?}");
    assert_eq!(
        get("_pid"),
        None,
        "per-process attributes are not forwarded: {attrs:?}"
    );
}

#[tokio::test]
async fn a_client_without_a_schema_never_inherits_one() {
    for mode in MODES {
        let s = one_connection(mode);
        let mut with = Conn::new(s.opts()).await.unwrap();
        let db: Option<String> = with.query_first("SELECT DATABASE()").await.unwrap();
        assert_eq!(db.as_deref(), Some("sluice_test"));
        with.disconnect().await.unwrap();
        let mut without = Conn::new(OptsBuilder::from_opts(s.opts()).db_name(None::<String>))
            .await
            .unwrap();
        let db: Option<Option<String>> = without.query_first("SELECT DATABASE()").await.unwrap();
        assert_eq!(db, Some(None), "{mode}: no default schema");
        let e = without.query_drop("SELECT * FROM dropin_w").await.unwrap_err();
        assert_eq!(server_code(&e), Some(1046), "{mode}: {e}");
    }
}

/// A COM_STMT_EXECUTE that opens a read-only cursor, then FETCH.
#[tokio::test]
async fn fetch_works_for_a_client_pinned_before_it_opened_a_cursor() {
    let s = start("split");
    let mut c = RawClient::connect(s.port, "app", "app", Caps::empty())
        .await
        .unwrap();
    // Pinned by a temporary table first.
    let r = c
        .command(b"\x03CREATE TEMPORARY TABLE dropin_tmp (a INT)")
        .await
        .unwrap();
    assert_eq!(r.payload[0], 0, "{:?}", String::from_utf8_lossy(&r.payload));
    let mut prepare = vec![0x16];
    prepare.extend_from_slice(b"SELECT 1 UNION SELECT 2");
    c.stream.send(0, &prepare).await.unwrap();
    let ok = c.stream.read_packet().await.unwrap();
    assert_eq!(ok.payload[0], 0);
    let id = u32::from_le_bytes([ok.payload[1], ok.payload[2], ok.payload[3], ok.payload[4]]);
    // One column definition and its EOF.
    c.read_until(|p| p.payload.first() == Some(&0xfe) && p.payload.len() < 9)
        .await
        .unwrap();
    let mut execute = vec![0x17];
    execute.extend_from_slice(&id.to_le_bytes());
    execute.push(1); // CURSOR_TYPE_READ_ONLY
    execute.extend_from_slice(&1u32.to_le_bytes());
    c.stream.send(0, &execute).await.unwrap();
    // Column count, definition, EOF (with SERVER_STATUS_CURSOR_EXISTS).
    c.read_until(|p| p.payload.first() == Some(&0xfe) && p.payload.len() < 9)
        .await
        .unwrap();
    let mut fetch = vec![0x1c];
    fetch.extend_from_slice(&id.to_le_bytes());
    fetch.extend_from_slice(&10u32.to_le_bytes());
    c.stream.send(0, &fetch).await.unwrap();
    let rows = c
        .read_until(|p| {
            (p.payload.first() == Some(&0xfe) && p.payload.len() < 9) || p.payload.first() == Some(&0xff)
        })
        .await
        .unwrap();
    let last = rows.last().unwrap();
    assert_eq!(
        err_code(&last.payload),
        None,
        "{:?}",
        String::from_utf8_lossy(&last.payload)
    );
    assert_eq!(rows.len(), 3, "two rows and an EOF");
}

/// Replies to a command of more than 16 MiB continue the client's sequence
/// ids, whichever path answers it.
#[tokio::test]
async fn replies_to_multi_packet_commands_continue_the_sequence() {
    let s = start("primary_only");
    let mut c = RawClient::connect(s.port, "app", "app", Caps::empty())
        .await
        .unwrap();
    let mut big = b"\x03SELECT LENGTH('".to_vec();
    big.extend(std::iter::repeat_n(b'x', 17 << 20));
    big.extend_from_slice(b"')");
    // Two physical packets: sequence 0 and 1; the answer starts at 2.
    let next = c.stream.send(0, &big).await.unwrap();
    assert_eq!(next, 2);
    let first = c.stream.read_packet().await.unwrap();
    assert_eq!(first.seq, 2, "result set numbered after the command");
    c.read_until(|p| p.payload.first() == Some(&0xfe) && p.payload.len() < 9)
        .await
        .unwrap();
    let rows = c
        .read_until(|p| p.payload.first() == Some(&0xfe) && p.payload.len() < 9)
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    // An error Sluice makes itself (unknown statement id) after a big
    // COM_STMT_EXECUTE-sized packet.
    let mut bad = vec![0x17, 0xff, 0xff, 0xff, 0x7f, 0, 1, 0, 0, 0];
    bad.extend(std::iter::repeat_n(0u8, 17 << 20));
    c.stream.send(0, &bad).await.unwrap();
    let e = c.stream.read_packet().await.unwrap();
    assert_eq!((e.seq, err_code(&e.payload)), (2, Some(1243)));
}

#[tokio::test]
async fn max_packet_bytes_applies_to_single_packets() {
    let s = Sluice::start_with(SluiceOptions {
        server_extra: "max_packet_bytes = 1048576".into(),
        ..SluiceOptions::default()
    });
    let mut c = RawClient::connect(s.port, "app", "app", Caps::empty())
        .await
        .unwrap();
    let mut q = b"\x03SELECT '".to_vec();
    q.extend(std::iter::repeat_n(b'x', 2 << 20));
    q.push(b'\'');
    let r = c.command(&q).await.unwrap();
    assert_eq!(err_code(&r.payload), Some(1153));
}

/// OK packets Sluice builds itself (COM_PING, COM_SET_OPTION,
/// COM_RESET_CONNECTION) carry the client's autocommit and transaction
/// state, as the server's do.
#[tokio::test]
async fn ok_packets_sluice_builds_carry_the_clients_state() {
    const AUTOCOMMIT: u16 = 0x0002;
    const IN_TRANS: u16 = 0x0001;
    async fn statuses(port: u16) -> Vec<u16> {
        let status = |p: &[u8]| {
            let mut pos = 1;
            for _ in 0..2 {
                pos += match p[pos] {
                    0xfc => 3,
                    0xfd => 4,
                    0xfe => 9,
                    _ => 1,
                };
            }
            u16::from_le_bytes([p[pos], p[pos + 1]]) & (AUTOCOMMIT | IN_TRANS)
        };
        let eof = |p: &sluice_protocol::Packet| p.payload.first() == Some(&0xfe) && p.payload.len() < 9;
        let mut c = RawClient::connect(port, "app", "app", Caps::empty())
            .await
            .unwrap();
        let mut out = Vec::new();
        c.command(b"\x03CREATE TABLE IF NOT EXISTS sluice_test.dropin_s (a INT)")
            .await
            .unwrap();
        out.push(status(&c.command(&[0x0e]).await.unwrap().payload));
        c.command(b"\x03SET autocommit = 0").await.unwrap();
        out.push(status(&c.command(&[0x0e]).await.unwrap().payload));
        c.command(b"\x03SELECT * FROM sluice_test.dropin_s")
            .await
            .unwrap();
        c.read_until(eof).await.unwrap();
        c.read_until(eof).await.unwrap();
        out.push(status(&c.command(&[0x0e]).await.unwrap().payload));
        c.command(b"\x03COMMIT").await.unwrap();
        c.command(b"\x03SET autocommit = 1").await.unwrap();
        c.command(b"\x03BEGIN").await.unwrap();
        out.push(status(&c.command(&[0x0e]).await.unwrap().payload));
        out
    }
    let direct = statuses(Topology::from_env().primary_port()).await;
    assert_eq!(
        direct,
        vec![AUTOCOMMIT, 0, IN_TRANS, AUTOCOMMIT | IN_TRANS],
        "the server's own"
    );
    for mode in MODES {
        let s = start(mode);
        assert_eq!(statuses(s.port).await, direct, "{mode}");
    }
}

/// The report: the mariadb CLI with `--show-warnings` runs an INSERT that
/// truncates, its own SHOW WARNINGS, a pause while other clients exhaust
/// the pool, then the user's SHOW WARNINGS. The output must be the
/// server's, in both modes.
#[tokio::test]
async fn mariadb_cli_show_warnings_while_others_are_busy() {
    const SCRIPT: &str = "SET SESSION sql_mode = '';\n\
        INSERT INTO sluice_test.dropin_cli VALUES ('abcdef'), ('ghijkl');\n\
        SELECT SLEEP(1.5);\n\
        SHOW WARNINGS;\n\
        SELECT @@warning_count;\n";
    let cli = move |port: u16| {
        let out = std::process::Command::new("mariadb")
            .args([
                "--no-defaults",
                "-h127.0.0.1",
                "--protocol=TCP",
                "-uapp",
                "-papp",
                "--show-warnings",
                "-t",
            ])
            .arg(format!("-P{port}"))
            .arg("-e")
            .arg(SCRIPT)
            .output()
            .expect("run the mariadb CLI (scripts/install-deps.sh installs it)");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let mut admin = Conn::new(direct_opts(&Topology::from_env().primary))
        .await
        .unwrap();
    admin
        .query_drop(
            "CREATE TABLE IF NOT EXISTS sluice_test.dropin_cli (c CHAR(2)); \
             CREATE TABLE IF NOT EXISTS sluice_test.dropin_busy (x INT)",
        )
        .await
        .unwrap();
    let direct = cli(Topology::from_env().primary_port());
    assert!(direct.contains("1265"), "the server warns: {direct}");
    for mode in MODES {
        let s = start_with_small_pool(mode);
        let busy = pressure(s.opts(), Instant::now() + Duration::from_millis(1500));
        let port = s.port;
        let through = tokio::task::spawn_blocking(move || cli(port)).await.unwrap();
        for t in busy {
            t.await.unwrap();
        }
        assert_eq!(through, direct, "{mode}");
    }
}

/// What a client sees around a statement that may end its session: the
/// statement's result, then whether the connection still answers.
async fn release_transcript(opts: Opts, setup: &str, end: &str, value: u32) -> (String, String) {
    let mut c = Conn::new(opts).await.expect("connect");
    c.query_drop(setup).await.expect("setup");
    c.query_drop("BEGIN").await.expect("begin");
    c.query_drop(format!("INSERT INTO dropin_release VALUES ({value})"))
        .await
        .expect("insert");
    let ended = match c.query_drop(end).await {
        Ok(()) => "ok".to_string(),
        Err(e) => format!("error {:?}", server_code(&e)),
    };
    let next = match c.query_drop("SELECT 1").await {
        Ok(()) => "still connected".to_string(),
        Err(mysql_async::Error::Server(e)) => format!("server error {}", e.code),
        Err(_) => "disconnected".to_string(),
    };
    (ended, next)
}

/// `COMMIT RELEASE`, `ROLLBACK RELEASE` and a plain `COMMIT` under
/// `completion_type = RELEASE` make the server close the connection after
/// its OK. Through Sluice the client is closed too (it used to keep going
/// on another connection, its session silently gone), and the closed
/// backend connection never goes back to the pool (the next clients'
/// logins failed on it).
#[tokio::test]
async fn commit_release_closes_the_connection_as_the_server_does() {
    let topo = Topology::from_env();
    let direct = direct_opts(&topo.primary);
    let mut admin = Conn::new(direct.clone()).await.expect("direct");
    admin
        .query_drop("CREATE OR REPLACE TABLE sluice_test.dropin_release (v INT PRIMARY KEY)")
        .await
        .expect("create");
    let variants = [
        ("SET @x = 1", "COMMIT RELEASE", true),
        ("SET @x = 1", "ROLLBACK WORK RELEASE", false),
        ("SET completion_type = 'RELEASE'", "COMMIT", true),
        ("SET completion_type = 2", "ROLLBACK", false),
        ("SET completion_type = 'RELEASE'", "COMMIT NO RELEASE", true),
    ];
    let mut value = 0;
    for mode in MODES {
        let s = one_connection(mode);
        for (setup, end, commits) in variants {
            value += 2;
            let expected = release_transcript(direct.clone(), setup, end, value).await;
            let through = release_transcript(s.opts(), setup, end, value + 1).await;
            assert_eq!(through, expected, "{mode}: {setup}; {end}");
            let kept: Vec<u32> = admin
                .query(format!(
                    "SELECT v FROM sluice_test.dropin_release WHERE v IN ({value}, {}) ORDER BY v",
                    value + 1
                ))
                .await
                .expect("read back");
            let want = if commits {
                vec![value, value + 1]
            } else {
                Vec::new()
            };
            assert_eq!(kept, want, "{mode}: {end} committed as on the server");
            // The backend connection the server closed is not handed out.
            for i in 0..3 {
                let mut c = Conn::new(s.opts())
                    .await
                    .unwrap_or_else(|e| panic!("{mode}: login {i} after {end}: {e}"));
                let one: Option<u8> = c.query_first("SELECT 1").await.expect("select");
                assert_eq!(one, Some(1));
                c.disconnect().await.expect("disconnect");
            }
        }
        assert!(
            metric_sum(
                &s.metrics(),
                "sluice_client_connections_closed_total",
                &["cause=\"release\""]
            ) >= 4.0,
            "{mode}: counted"
        );
    }
    assert_eq!(
        release_transcript(direct, "SET @x = 1", "COMMIT RELEASE", 1000)
            .await
            .1,
        "disconnected",
        "the script tests what it claims"
    );
}

/// The server files temporary tables under `pseudo_thread_id`, which
/// CONNECTION_ID() returns and Sluice sets to the client's id: a temporary
/// table made before a CONNECTION_ID() vanished after it (error 1146, and
/// creating it again succeeded). Another client's CONNECTION_ID() on the
/// same backend connection first, one connection per backend.
#[tokio::test]
async fn temporary_tables_survive_connection_id() {
    let topo = Topology::from_env();
    let mut admin = Conn::new(direct_opts(&topo.primary)).await.expect("direct");
    admin
        .query_drop(
            "CREATE OR REPLACE PROCEDURE sluice_test.dropin_make_temp() \
             CREATE TEMPORARY TABLE dropin_tproc (v INT)",
        )
        .await
        .expect("procedure");
    sluice_tests::replicas_caught_up().await;
    let statements = [
        "CREATE TEMPORARY TABLE dropin_tcid (v INT)",
        "INSERT INTO dropin_tcid VALUES (1), (2)",
        "SELECT CONNECTION_ID() > 0",
        "SELECT COUNT(*) FROM dropin_tcid",
        "CREATE TEMPORARY TABLE dropin_tcid (v INT)",
        "CALL dropin_make_temp()",
        "SELECT CONNECTION_ID() > 0",
        "SELECT COUNT(*) FROM dropin_tproc",
        "SELECT 1; CREATE TEMPORARY TABLE dropin_tmulti (v INT)",
        "SELECT CONNECTION_ID() > 0",
        "SELECT COUNT(*) FROM dropin_tmulti",
        "SELECT COUNT(*) FROM dropin_tcid",
    ];
    let run = |opts: Opts| async move {
        let mut other = Conn::new(opts.clone()).await.expect("connect");
        let mut c = Conn::new(opts).await.expect("connect");
        let own: Option<u32> = other.query_first("SELECT CONNECTION_ID()").await.expect("id");
        assert_eq!(own, Some(other.id()));
        let out = transcript(&mut c, &statements).await;
        let id: Option<u32> = c.query_first("SELECT CONNECTION_ID()").await.expect("id");
        assert_eq!(id, Some(c.id()), "CONNECTION_ID() is still the client's own");
        out
    };
    let expected = run(direct_opts(&topo.primary)).await;
    assert!(
        expected[3].contains(r#"Bytes(\"2\")"#),
        "the server kept the table: {expected:?}"
    );
    through_sluice_as_directly(&expected, run).await;
}

/// `INSERT ... RETURNING` answers with rows, not an OK packet, so the id it
/// generated did not reach Sluice: a later `LAST_INSERT_ID()` on another
/// backend connection (a read in split mode, or after another client used
/// the only connection) was replayed with the id before it.
#[tokio::test]
async fn last_insert_id_follows_insert_returning() {
    let topo = Topology::from_env();
    let mut admin = Conn::new(direct_opts(&topo.primary)).await.expect("direct");
    let run = |opts: Opts, table: String| async move {
        let mut c = Conn::new(opts.clone()).await.expect("connect");
        let mut other = Conn::new(opts).await.expect("connect");
        let mut out = Vec::new();
        for sql in [
            format!("INSERT INTO {table} (v) VALUES ('plain')"),
            format!("INSERT INTO {table} (v) VALUES ('returning') RETURNING id"),
            "OTHER".to_string(),
            "SELECT LAST_INSERT_ID()".to_string(),
            format!("INSERT INTO {table} (v) VALUES ('two'), ('rows') RETURNING id, v"),
            "OTHER".to_string(),
            "SELECT LAST_INSERT_ID()".to_string(),
            format!("INSERT INTO {table} (id, v) VALUES (500, 'explicit') RETURNING id"),
            "SELECT LAST_INSERT_ID()".to_string(),
        ] {
            if sql == "OTHER" {
                other
                    .query_drop(format!("INSERT INTO {table}_other (v) VALUES ('other')"))
                    .await
                    .expect("other insert");
                continue;
            }
            let rows: Vec<mysql_async::Row> = c.query(&sql).await.expect("statement");
            let rows: Vec<Vec<String>> = rows
                .into_iter()
                .map(|r| r.unwrap().into_iter().map(|v| format!("{v:?}")).collect())
                .collect();
            out.push(format!("{sql} -> {rows:?}"));
        }
        out
    };
    let fresh = |table: &str| {
        format!(
            "CREATE OR REPLACE TABLE sluice_test.{table} (id INT AUTO_INCREMENT PRIMARY KEY, v TEXT); \
             CREATE OR REPLACE TABLE sluice_test.{table}_other (id INT AUTO_INCREMENT PRIMARY KEY, v TEXT) \
             AUTO_INCREMENT = 1000"
        )
    };
    admin.query_drop(fresh("dropin_lii")).await.expect("create");
    let expected = run(direct_opts(&topo.primary), "dropin_lii".into()).await;
    assert!(
        expected[2].contains(r#"Bytes(\"2\")"#),
        "the server's own answer: {expected:?}"
    );
    for mode in MODES {
        admin.query_drop(fresh("dropin_lii")).await.expect("create");
        sluice_tests::replicas_caught_up().await;
        let s = one_connection(mode);
        assert_eq!(run(s.opts(), "dropin_lii".into()).await, expected, "{mode}");
    }
}

/// What KILLs of one's own connection and COM_PROCESS_KILL (mysqli's
/// `kill()`) answer, and whether the killed connections live on.
async fn kill_transcript(opts: Opts) -> Vec<String> {
    let mut out = Vec::new();
    let outcome = |r: Result<(), mysql_async::Error>| match r {
        Ok(()) => "ok".to_string(),
        Err(mysql_async::Error::Server(e)) => format!("error {} {}", e.code, e.message),
        Err(_) => "disconnected".to_string(),
    };
    for kill in [
        "KILL QUERY CONNECTION_ID()",
        "KILL QUERY {own}",
        "KILL CONNECTION_ID()",
        "KILL {own}",
    ] {
        let mut c = Conn::new(opts.clone()).await.expect("connect");
        let sql = kill.replace("{own}", &c.id().to_string());
        out.push(format!("{kill}: {}", outcome(c.query_drop(sql).await)));
        out.push(format!("then: {}", outcome(c.query_drop("SELECT 1").await)));
    }
    // COM_PROCESS_KILL of another connection, of an unknown id, then of
    // the killer's own.
    let mut victim = Conn::new(opts.clone()).await.expect("connect");
    let (host, port) = (opts.ip_or_hostname().to_string(), opts.tcp_port());
    assert_eq!(host, "127.0.0.1");
    let mut killer = RawClient::connect(port, "app", "app", Caps::empty())
        .await
        .expect("raw");
    let process_kill = |id: u32| {
        let mut p = vec![0x0c];
        p.extend_from_slice(&id.to_le_bytes());
        p
    };
    let answer = |p: &sluice_protocol::Packet| match err_code(&p.payload) {
        Some(code) => format!("error {code}"),
        None => format!("first byte {:?}", p.payload.first()),
    };
    let p = killer.command(&process_kill(victim.id())).await.expect("kill");
    out.push(format!("COM_PROCESS_KILL victim: {}", answer(&p)));
    out.push(format!(
        "victim then: {}",
        outcome(victim.query_drop("SELECT 1").await)
    ));
    let p = killer.command(&process_kill(99_999_999)).await.expect("kill");
    out.push(format!("COM_PROCESS_KILL unknown: {}", answer(&p)));
    let own: Vec<u32> = {
        let p = killer.command(b"\x03SELECT CONNECTION_ID()").await.expect("id");
        assert_eq!(p.payload.first(), Some(&1));
        let rows = killer
            .read_until(|p| p.payload.first() == Some(&0xfe))
            .await
            .expect("defs");
        assert!(!rows.is_empty());
        let row = killer
            .read_until(|p| p.payload.first() == Some(&0xfe))
            .await
            .expect("row");
        row.first()
            .map(|r| String::from_utf8_lossy(&r.payload[1..]).parse().expect("an id"))
            .into_iter()
            .collect()
    };
    let p = killer.command(&process_kill(own[0])).await.expect("kill");
    out.push(format!("COM_PROCESS_KILL own: {}", answer(&p)));
    out
}

/// KILL of the client's own connection interrupts the KILL itself (1317
/// for KILL QUERY, 1927 then a closed connection for KILL CONNECTION), as
/// on the server (Sluice answered OK); `CONNECTION_ID()` names it; and
/// COM_PROCESS_KILL, which mysqli's `kill()` sends, kills a client (it was
/// refused as an unknown command).
#[tokio::test]
async fn kills_of_ones_own_connection_and_com_process_kill() {
    let topo = Topology::from_env();
    let expected = kill_transcript(direct_opts(&topo.primary)).await;
    assert!(
        expected.contains(&"victim then: disconnected".to_string()),
        "{expected:?}"
    );
    for mode in MODES {
        let s = start(mode);
        assert_eq!(kill_transcript(s.opts()).await, expected, "{mode}");
    }
}

/// Which statements clear the warnings the previous one left is MariaDB's
/// rule (statements using tables, derived tables or JSON_TABLE; not a
/// subquery of no table, not `FROM DUAL`, not `DO 1`), and an
/// earlier statement's warnings in a multi-statement stay when the last
/// does not clear them. Another client runs on the only backend
/// connection in between, so the answers come from Sluice's capture.
#[tokio::test]
async fn warnings_are_cleared_by_the_statements_that_clear_them_on_the_server() {
    let topo = Topology::from_env();
    let mut admin = Conn::new(direct_opts(&topo.primary)).await.expect("direct");
    admin
        .query_drop("CREATE OR REPLACE TABLE sluice_test.dropin_warn (v INT); INSERT INTO sluice_test.dropin_warn VALUES (1)")
        .await
        .expect("table");
    sluice_tests::replicas_caught_up().await;
    let middles = [
        "SELECT * FROM (SELECT 1) x",
        "SELECT COUNT(*) FROM (SELECT 1) x",
        "SELECT (SELECT 1)",
        "SELECT 1 UNION SELECT 2",
        "WITH c AS (SELECT 1) SELECT * FROM c",
        "SET @dropin_w = (SELECT COUNT(*) FROM dropin_warn)",
        "SELECT * FROM JSON_TABLE('[1]', '$[*]' COLUMNS (v INT PATH '$')) j",
        "SELECT 1 FROM DUAL",
        "SELECT 1",
        "DO 1",
        "DO (SELECT COUNT(*) FROM dropin_warn)",
        "SELECT v FROM dropin_warn",
    ];
    let run = |opts: Opts| async move {
        let mut c = Conn::new(opts.clone()).await.expect("connect");
        let mut other = Conn::new(opts).await.expect("connect");
        let mut out = Vec::new();
        for middle in middles {
            c.query_drop("SELECT CAST('1x' AS INT)").await.expect("warning");
            c.query_drop(middle).await.expect("middle");
            other
                .query_drop("SELECT v FROM dropin_warn")
                .await
                .expect("other");
            out.extend(transcript(&mut c, &["SHOW WARNINGS", "SELECT @@warning_count"]).await);
        }
        c.query_drop("SELECT CAST('1x' AS INT); SELECT 5")
            .await
            .expect("multi");
        other
            .query_drop("SELECT v FROM dropin_warn")
            .await
            .expect("other");
        out.extend(transcript(&mut c, &["SHOW WARNINGS", "SELECT @@warning_count"]).await);
        out
    };
    let expected = run(direct_opts(&topo.primary)).await;
    assert!(expected.iter().any(|l| l.contains("1292")), "{expected:?}");
    through_sluice_as_directly(&expected, run).await;
}

/// `FOUND_ROWS()` after statements whose SELECT sent the client no rows of
/// its own (`INSERT ... SELECT`, `CREATE ... SELECT`, `SELECT ... INTO`,
/// `SET @v = (SELECT ...)`, `DO (SELECT ...)`) and after a procedure whose
/// last SELECT is not its last result set: the server's count, read back
/// where it ran (Sluice gave the rows of the client's last result set).
#[tokio::test]
async fn found_rows_after_selects_the_client_did_not_see() {
    let topo = Topology::from_env();
    let mut admin = Conn::new(direct_opts(&topo.primary)).await.expect("direct");
    admin
        .query_drop(
            "CREATE OR REPLACE TABLE sluice_test.dropin_fr (v INT); \
             INSERT INTO sluice_test.dropin_fr VALUES (1),(2),(3),(4),(5),(6),(7),(8),(9); \
             CREATE OR REPLACE TABLE sluice_test.dropin_fr_copy (v INT); \
             CREATE OR REPLACE PROCEDURE sluice_test.dropin_fr_proc() \
             BEGIN SELECT v FROM dropin_fr LIMIT 2; INSERT INTO dropin_fr_copy SELECT v FROM dropin_fr LIMIT 6; END",
        )
        .await
        .expect("setup");
    sluice_tests::replicas_caught_up().await;
    let steps = [
        "SELECT v FROM dropin_fr LIMIT 5",
        "INSERT INTO dropin_fr_copy SELECT v FROM dropin_fr LIMIT 3",
        "SELECT v FROM dropin_fr WHERE v = 3 INTO @dropin_fr_x",
        "SET @dropin_fr_q = (SELECT COUNT(*) FROM dropin_fr)",
        "DO (SELECT COUNT(*) FROM dropin_fr)",
        "UPDATE dropin_fr SET v = v WHERE v < 0",
    ];
    let run = |opts: Opts| async move {
        let mut c = Conn::new(opts.clone()).await.expect("connect");
        let mut other = Conn::new(opts).await.expect("connect");
        let mut out = Vec::new();
        for step in steps {
            c.query_drop("SELECT v FROM dropin_fr LIMIT 7")
                .await
                .expect("seven");
            c.query_drop(step).await.expect("step");
            other.query_drop("SELECT 1").await.expect("other");
            out.extend(transcript(&mut c, &["SELECT FOUND_ROWS()"]).await);
        }
        // A procedure whose last result is not its last SELECT.
        c.query_drop("SELECT v FROM dropin_fr LIMIT 7")
            .await
            .expect("seven");
        c.query_iter("CALL dropin_fr_proc()")
            .await
            .expect("call")
            .drop_result()
            .await
            .expect("results");
        other.query_drop("SELECT 1").await.expect("other");
        out.extend(transcript(&mut c, &["SELECT FOUND_ROWS()"]).await);
        // Last: a temporary table pins the client to its connection.
        c.query_drop("CREATE TEMPORARY TABLE dropin_fr_t SELECT v FROM dropin_fr LIMIT 4")
            .await
            .expect("create");
        out.extend(transcript(&mut c, &["SELECT FOUND_ROWS()"]).await);
        out
    };
    admin
        .query_drop("DELETE FROM sluice_test.dropin_fr_copy")
        .await
        .expect("reset");
    let expected = run(direct_opts(&topo.primary)).await;
    assert!(
        expected[1].contains(r#"Bytes(\"3\")"#),
        "the server's own count: {expected:?}"
    );
    for mode in MODES {
        admin
            .query_drop("DELETE FROM sluice_test.dropin_fr_copy")
            .await
            .expect("reset");
        let s = one_connection(mode);
        assert_eq!(run(s.opts()).await, expected, "{mode}");
    }
}

/// `FLUSH TABLES ... WITH READ LOCK`, `FLUSH TABLES t FOR EXPORT`, `BACKUP
/// LOCK` and `BACKUP STAGE` take locks the session holds: the client is
/// pinned like `LOCK TABLES`, and the locks end with it. They leaked: the
/// next client on the connection got 1100, and the lock outlived its
/// client (a global read lock blocked every writer on the server).
#[tokio::test]
async fn flush_and_backup_locks_stay_with_their_client() {
    let topo = Topology::from_env();
    let mut admin = Conn::new(direct_opts(&topo.primary)).await.expect("direct");
    admin
        .query_drop(
            "CREATE OR REPLACE TABLE sluice_test.dropin_flush (v INT); \
             CREATE OR REPLACE TABLE sluice_test.dropin_flush_other (v INT); \
             INSERT INTO sluice_test.dropin_flush_other VALUES (1)",
        )
        .await
        .expect("tables");
    sluice_tests::replicas_caught_up().await;
    for mode in MODES {
        let s = Sluice::start_with(SluiceOptions {
            routing_mode: mode,
            max_connections_per_backend: 2,
            ..SluiceOptions::default()
        });
        // Each lock with a statement it blocks (run directly, so the lock
        // is shown to be held, then shown to be gone) and its undoing.
        let insert = "INSERT INTO sluice_test.dropin_flush VALUES (1)";
        for (lock, blocked, undo) in [
            ("FLUSH TABLES dropin_flush WITH READ LOCK", insert, None),
            ("FLUSH TABLES dropin_flush FOR EXPORT", insert, None),
            (
                "BACKUP LOCK dropin_flush",
                "ALTER TABLE sluice_test.dropin_flush COMMENT 'x'",
                None,
            ),
            ("FLUSH TABLES WITH READ LOCK", insert, None),
            (
                "BACKUP STAGE START",
                "BACKUP STAGE START",
                Some("BACKUP STAGE END"),
            ),
        ] {
            let mut locker = Conn::new(s.opts()).await.expect("connect");
            locker.query_drop(lock).await.expect("lock");
            admin
                .query_drop("SET SESSION lock_wait_timeout = 1")
                .await
                .expect("set");
            let e = admin.query_drop(blocked).await.expect_err("the lock is held");
            assert_eq!(server_code(&e), Some(1205), "{mode}: {lock}: {e}");
            // Others keep working on the other connection.
            for _ in 0..3 {
                let mut other = Conn::new(s.opts()).await.expect("connect");
                let n: Option<u32> = other
                    .query_first("SELECT COUNT(*) FROM dropin_flush_other")
                    .await
                    .unwrap_or_else(|e| panic!("{mode}: {lock}: another client: {e}"));
                assert_eq!(n, Some(1));
                other.disconnect().await.expect("disconnect");
            }
            locker.disconnect().await.expect("disconnect");
            // The lock ended with its client.
            admin
                .query_drop("SET SESSION lock_wait_timeout = 5")
                .await
                .expect("set");
            let started = Instant::now();
            let done = admin.query_drop(blocked).await;
            assert!(
                done.is_ok(),
                "{mode}: {lock} outlived its client: {done:?} after {:?}",
                started.elapsed()
            );
            if let Some(undo) = undo {
                admin.query_drop(undo).await.expect("undo");
            }
        }
    }
}

/// Session variables whose value is NULL are reported empty by the server
/// (and `system_versioning_asof = DEFAULT` as the word): replayed as
/// written, the SET failed (1286 "Unknown storage engine ''") and every
/// later statement of the client with it.
#[tokio::test]
async fn variables_set_to_null_follow_the_client() {
    let topo = Topology::from_env();
    let statements = [
        "SET default_tmp_storage_engine = DEFAULT",
        "SET enforce_storage_engine = DEFAULT",
        "SET innodb_ft_user_stopword_table = DEFAULT",
        "SET system_versioning_asof = DEFAULT",
        "SET character_set_results = NULL",
        "SET time_zone = '+02:00'",
        "OTHER",
        "SELECT @@default_tmp_storage_engine IS NULL, @@enforce_storage_engine IS NULL, \
         @@innodb_ft_user_stopword_table IS NULL, @@system_versioning_asof, \
         @@character_set_results IS NULL, @@time_zone",
    ];
    let run = |opts: Opts| async move {
        let mut c = Conn::new(opts.clone()).await.expect("connect");
        let mut other = Conn::new(opts).await.expect("connect");
        let mut out = Vec::new();
        for sql in statements {
            if sql == "OTHER" {
                other.query_drop("SELECT 1").await.expect("other");
                continue;
            }
            out.extend(transcript(&mut c, &[sql]).await);
        }
        out
    };
    let expected = run(direct_opts(&topo.primary)).await;
    through_sluice_as_directly(&expected, run).await;
}

/// `SELECT LAST_INSERT_ID(expr)` sets the client's value, and no OK packet
/// reports it: read back, it follows the client (another client's value
/// was returned, and a new client saw it instead of 0).
#[tokio::test]
async fn last_insert_id_set_by_an_expression_stays_with_its_client() {
    let topo = Topology::from_env();
    let run = |opts: Opts| async move {
        let mut a = Conn::new(opts.clone()).await.expect("connect");
        let mut b = Conn::new(opts.clone()).await.expect("connect");
        let mut out = Vec::new();
        out.extend(transcript(&mut a, &["SELECT LAST_INSERT_ID(77)"]).await);
        out.extend(transcript(&mut b, &["SELECT LAST_INSERT_ID(55) AS b"]).await);
        out.extend(transcript(&mut a, &["SELECT LAST_INSERT_ID(), @@identity"]).await);
        out.extend(transcript(&mut b, &["SELECT @@identity, @@last_insert_id"]).await);
        out.extend(transcript(&mut b, &["SELECT LAST_INSERT_ID()"]).await);
        drop(a);
        let mut fresh = Conn::new(opts).await.expect("connect");
        out.extend(transcript(&mut fresh, &["SELECT LAST_INSERT_ID()"]).await);
        out
    };
    let expected = run(direct_opts(&topo.primary)).await;
    through_sluice_as_directly(&expected, run).await;
}

/// String user variables the server computed are read back byte for byte
/// with their charset and collation (`information_schema.USER_VARIABLES`
/// alone, a utf8 column of 2048 characters, double-encoded latin1, turned
/// binary values into their hex digits, 4-byte characters into '?', and
/// cut long values).
#[tokio::test]
async fn user_variables_keep_their_bytes_charset_and_collation() {
    let topo = Topology::from_env();
    let statements = [
        "SET @uv_a := _latin1'é'",
        "SELECT X'00ff' INTO @uv_b",
        "SET @uv_c := '😀'",
        "SET @uv_d := REPEAT('x', 3000)",
        "SET @uv_e := _utf8mb4'é' COLLATE utf8mb4_bin",
        "SELECT CONVERT('é' USING ucs2) INTO @uv_f",
        "SET @uv_g := -5 * 1",
        "SET @uv_h = X'00ff', @uv_i = b'1', @uv_j = 'plain'",
        "OTHER",
        "SELECT HEX(@uv_a), CHARSET(@uv_a), COLLATION(@uv_a), HEX(@uv_b), CHARSET(@uv_b), \
         HEX(@uv_c), LENGTH(@uv_d), COLLATION(@uv_e), HEX(@uv_f), CHARSET(@uv_f), @uv_g, \
         HEX(@uv_h), CHARSET(@uv_h), HEX(@uv_i), CHARSET(@uv_i), @uv_j",
    ];
    let run = |opts: Opts| async move {
        let mut c = Conn::new(opts.clone()).await.expect("connect");
        let mut other = Conn::new(opts).await.expect("connect");
        let mut out = Vec::new();
        for sql in statements {
            if sql == "OTHER" {
                other.query_drop("SET @uv_a = 1, @uv_z = 2").await.expect("other");
                continue;
            }
            out.extend(transcript(&mut c, &[sql]).await);
        }
        out
    };
    let expected = run(direct_opts(&topo.primary)).await;
    assert!(
        expected.last().is_some_and(|l| l.contains("F09F9880")),
        "{expected:?}"
    );
    through_sluice_as_directly(&expected, run).await;
}

/// A client pinned only for its user locks shares connections again once
/// it has released them all (ActiveRecord's advisory locks kept one
/// backend connection each until they disconnected, and other clients got
/// "pool exhausted"); a lock still held, or a name Sluice cannot read,
/// keeps the pin, and the locks behave as on the server throughout.
#[tokio::test]
async fn releasing_every_user_lock_ends_the_pin() {
    let topo = Topology::from_env();
    for mode in MODES {
        let s = Sluice::start_with(SluiceOptions {
            routing_mode: mode,
            max_connections_per_backend: 2,
            acquire_timeout_ms: 500,
            ..SluiceOptions::default()
        });
        let mut third = Conn::new(s.opts()).await.expect("connect");
        let mut holders = Vec::new();
        for i in 0..2 {
            let mut c = Conn::new(s.opts()).await.expect("connect");
            let got: Option<u8> = c
                .query_first(format!("SELECT GET_LOCK('dropin_lock_{mode}_{i}', 0)"))
                .await
                .expect("lock");
            assert_eq!(got, Some(1));
            holders.push(c);
        }
        // Both connections are pinned: a third client waits in vain.
        // (On the primary in both modes: the locks' connections are there.)
        let on_primary = "/* sluice:primary */ SELECT 1";
        let e = third
            .query_drop(on_primary)
            .await
            .expect_err("no connection left");
        assert_eq!(server_code(&e), Some(9001), "{mode}: {e}");
        // Released, taken twice and released once, released fully.
        let (a, b) = holders.split_at_mut(1);
        let (a, b) = (&mut a[0], &mut b[0]);
        a.query_drop(format!("DO RELEASE_LOCK('dropin_lock_{mode}_0')"))
            .await
            .expect("release");
        b.query_drop(format!("SELECT GET_LOCK('dropin_lock_{mode}_1', 0)"))
            .await
            .expect("again");
        b.query_drop(format!("SELECT RELEASE_LOCK('dropin_lock_{mode}_1')"))
            .await
            .expect("release once");
        // One connection is free again; the other is still b's.
        let one: Option<u8> = third.query_first(on_primary).await.expect("a connection is free");
        assert_eq!(one, Some(1));
        let mut direct = Conn::new(direct_opts(&topo.primary)).await.expect("direct");
        let used: Option<u8> = direct
            .query_first(format!("SELECT IS_USED_LOCK('dropin_lock_{mode}_1') IS NOT NULL"))
            .await
            .expect("check");
        assert_eq!(used, Some(1), "{mode}: b still holds its lock, taken twice");
        let free: Option<u8> = direct
            .query_first(format!("SELECT IS_FREE_LOCK('dropin_lock_{mode}_0')"))
            .await
            .expect("check");
        assert_eq!(free, Some(1), "{mode}: a's lock is free");
        b.query_drop("SELECT RELEASE_ALL_LOCKS()")
            .await
            .expect("release all");
        let free: Option<u8> = direct
            .query_first(format!("SELECT IS_FREE_LOCK('dropin_lock_{mode}_1')"))
            .await
            .expect("check");
        assert_eq!(free, Some(1));
        // Both clients share the pool with the third now.
        for c in [&mut *a, &mut *b, &mut third] {
            let one: Option<u8> = c.query_first(on_primary).await.expect("shared");
            assert_eq!(one, Some(1));
        }
        // An unreadable name keeps the pin after its release.
        a.query_drop("SET @dropin_lock_name = 'dropin_lock_x'")
            .await
            .expect("set");
        a.query_drop("DO GET_LOCK(@dropin_lock_name, 0)")
            .await
            .expect("lock");
        a.query_drop("DO RELEASE_LOCK(@dropin_lock_name)")
            .await
            .expect("release");
        let m = s.metrics();
        assert_eq!(
            metric_sum(&m, "sluice_session_unpins_total", &["reason=\"get_lock\""]),
            2.0,
            "{mode}: {m}"
        );
    }
}
