//! Clients whose handshake bits change how the server sets up their
//! session, with the server as the oracle: the same commands give the same
//! packets directly and through Sluice.
//!
//! - Without the multi-result bits (`CLIENT_MULTI_RESULTS`,
//!   `CLIENT_PS_MULTI_RESULTS`). Every current driver asks for both; an old
//!   libmysqlclient or Ruby's mysql gem does not, and MariaDB then refuses a
//!   procedure that returns rows (error 1312) rather than send result sets
//!   the client cannot read. Sluice's pooled connections ask for both, so
//!   without care such a client would get the rows and a "more results"
//!   flag it does not understand.
//! - `CLIENT_IGNORE_SPACE` (`IGNORE_SPACE` in the session's `sql_mode`) and
//!   `CLIENT_INTERACTIVE` (`wait_timeout` from `interactive_timeout`).

use mysql_async::prelude::Queryable;
use mysql_common::constants::CapabilityFlags as Caps;
use sluice_protocol::Packet;
use sluice_protocol::consts::{MariadbCapabilities as Mcaps, status};
use sluice_protocol::packets::{self, read_lenenc_int};
use sluice_tests::raw::{DRIVER_CAPS, RawClient};
use sluice_tests::{Sluice, SluiceOptions, Topology, direct_opts, port_of, sql_now};

/// One step of the script: a text command, or a prepare and execute.
enum Step {
    Text(&'static str),
    Prepared(&'static str),
}

const SCRIPT: &[Step] = &[
    Step::Text("CALL mr_rows()"),
    Step::Text("SELECT 1"),
    Step::Text("CALL mr_no_rows()"),
    Step::Text("SELECT @mr_x"),
    Step::Prepared("CALL mr_rows()"),
    Step::Prepared("CALL mr_no_rows()"),
    Step::Text("SELECT 2"),
];

/// The status flags of an OK packet (the two fields before them are
/// length-encoded).
fn status_of_ok(p: &Packet) -> u16 {
    let mut at = 1;
    let skipped = read_lenenc_int(&p.payload, &mut at).and_then(|_| read_lenenc_int(&p.payload, &mut at));
    match (skipped, p.payload.get(at..at + 2)) {
        (Some(_), Some(b)) => u16::from_le_bytes([b[0], b[1]]),
        _ => panic!("malformed OK packet {:?}", p.payload),
    }
}

fn is_eof(p: &Packet) -> bool {
    packets::is_eof(&p.payload)
}

/// The packets of one response (all results of it), without DEPRECATE_EOF.
async fn response(c: &mut RawClient) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let first = c.stream.read_packet().await.expect("response");
        out.push(first.payload.to_vec());
        let flags = match first.payload.first() {
            Some(0xff) => return out,
            Some(0x00) => status_of_ok(&first),
            _ => {
                // Definitions up to EOF, then rows up to EOF.
                let defs = c.read_until(is_eof).await.expect("definitions");
                let rows = c
                    .read_until(|p| is_eof(p) || p.payload.first() == Some(&0xff))
                    .await
                    .expect("rows");
                let last = rows.last().expect("a terminator").clone();
                out.extend(defs.into_iter().chain(rows).map(|p| p.payload.to_vec()));
                if last.payload.first() == Some(&0xff) {
                    return out;
                }
                packets::parse_eof(&last.payload).1
            }
        };
        if flags & status::MORE_RESULTS_EXISTS == 0 {
            return out;
        }
    }
}

/// COM_STMT_PREPARE's answer: the OK (statement id masked: Sluice numbers
/// statements itself) and its definitions; and the id.
async fn prepare(c: &mut RawClient, sql: &str) -> (Vec<Vec<u8>>, u32) {
    let mut cmd = vec![0x16];
    cmd.extend_from_slice(sql.as_bytes());
    let ok = c.command(&cmd).await.expect("prepare");
    if ok.payload.first() != Some(&0x00) {
        return (vec![ok.payload.to_vec()], 0);
    }
    let id = u32::from_le_bytes([ok.payload[1], ok.payload[2], ok.payload[3], ok.payload[4]]);
    let columns = u16::from_le_bytes([ok.payload[5], ok.payload[6]]);
    let params = u16::from_le_bytes([ok.payload[7], ok.payload[8]]);
    let mut masked = ok.payload.to_vec();
    masked[1..5].fill(0);
    let mut out = vec![masked];
    for n in [params, columns] {
        if n > 0 {
            let defs = c.read_until(is_eof).await.expect("definitions");
            out.extend(defs.into_iter().map(|p| p.payload.to_vec()));
        }
    }
    (out, id)
}

async fn run_script(port: u16, caps: Caps, script: &[Step]) -> Vec<Vec<Vec<u8>>> {
    run_script_mariadb(port, caps, Mcaps::empty(), script).await
}

async fn run_script_mariadb(port: u16, caps: Caps, mcaps: Mcaps, script: &[Step]) -> Vec<Vec<Vec<u8>>> {
    let mut c = RawClient::connect_mariadb(port, caps, mcaps)
        .await
        .expect("login");
    let mut transcript = Vec::new();
    for step in script {
        run_step(&mut c, step, &mut transcript).await;
    }
    transcript
}

/// Runs one step, adding its answers (a prepared step: the prepare's, then
/// the execute's) to `transcript`.
async fn run_step(c: &mut RawClient, step: &Step, transcript: &mut Vec<Vec<Vec<u8>>>) {
    match step {
        Step::Text(sql) => {
            let mut cmd = vec![0x03];
            cmd.extend_from_slice(sql.as_bytes());
            c.stream.send(0, &cmd).await.expect("send");
            transcript.push(response(c).await);
        }
        Step::Prepared(sql) => {
            let (answer, id) = prepare(c, sql).await;
            transcript.push(answer);
            let mut exec = vec![0x17];
            exec.extend_from_slice(&id.to_le_bytes());
            exec.push(0); // no cursor
            exec.extend_from_slice(&1u32.to_le_bytes());
            c.stream.send(0, &exec).await.expect("send");
            transcript.push(response(c).await);
        }
    }
}

#[tokio::test]
async fn clients_without_multi_results_get_the_servers_answers() {
    let topo = Topology::from_env();
    sql_now(
        &topo.primary,
        "CREATE OR REPLACE PROCEDURE sluice_test.mr_rows() SELECT 1 AS a, 'x' AS b",
    );
    sql_now(
        &topo.primary,
        "CREATE OR REPLACE PROCEDURE sluice_test.mr_no_rows() SET @mr_x = 7",
    );
    let s = Sluice::start();
    let variants = [
        ("no multi-result bits", Caps::empty()),
        ("CLIENT_MULTI_RESULTS only", Caps::CLIENT_MULTI_RESULTS),
        ("CLIENT_MULTI_STATEMENTS only", Caps::CLIENT_MULTI_STATEMENTS),
        ("both result bits", DRIVER_CAPS),
    ];
    let mut refused = 0;
    for (name, caps) in variants {
        let direct = run_script(port_of(&topo.primary), caps, SCRIPT).await;
        let through = run_script(s.port, caps, SCRIPT).await;
        for (i, (d, t)) in direct.iter().zip(&through).enumerate() {
            assert_eq!(d, t, "{name}: answer {i} differs from the server's");
        }
        assert_eq!(direct.len(), through.len(), "{name}");
        refused += direct
            .iter()
            .filter(|r| {
                r.last()
                    .is_some_and(|p| p.first() == Some(&0xff) && p[1..3] == 1312u16.to_le_bytes())
            })
            .count();
    }
    // The oracle did refuse some: the script tests what it claims.
    assert!(refused >= 2, "the server refused {refused} calls");
}

const SESSION_SCRIPT: &[Step] = &[
    Step::Text("SELECT @@session.sql_mode, @@session.wait_timeout"),
    Step::Text("SELECT COUNT (*) FROM (SELECT 1 AS a) AS t"),
    Step::Text("SELECT 1"),
];

/// `SET GLOBAL interactive_timeout` on every server (it is not replicated,
/// and reads go to the replicas), returning the old values.
async fn set_interactive_timeout(servers: &[&str], value: Option<&[u64]>) -> Vec<u64> {
    let mut old = Vec::new();
    for (i, addr) in servers.iter().enumerate() {
        let mut c = mysql_async::Conn::new(direct_opts(addr)).await.expect("direct");
        let was: Option<u64> = c
            .query_first("SELECT @@GLOBAL.interactive_timeout")
            .await
            .expect("read");
        old.push(was.unwrap_or(28_800));
        let to = value.map_or(2_345, |v| v[i]);
        c.query_drop(format!("SET GLOBAL interactive_timeout = {to}"))
            .await
            .expect("set interactive_timeout");
        c.disconnect().await.ok();
    }
    old
}

#[tokio::test]
async fn ignore_space_and_interactive_sessions_match_the_server() {
    let topo = Topology::from_env();
    let servers = [
        topo.primary.as_str(),
        topo.replica1.as_str(),
        topo.replica2.as_str(),
    ];
    // Unlike wait_timeout, so the interactive session's value shows.
    let old = set_interactive_timeout(&servers, None).await;
    let s = Sluice::start();
    let driver = DRIVER_CAPS;
    let variants = [
        ("a driver's bits", driver),
        ("IGNORE_SPACE", driver | Caps::CLIENT_IGNORE_SPACE),
        ("INTERACTIVE", driver | Caps::CLIENT_INTERACTIVE),
        (
            "both",
            driver | Caps::CLIENT_IGNORE_SPACE | Caps::CLIENT_INTERACTIVE,
        ),
    ];
    let mut answers = Vec::new();
    for (name, caps) in variants {
        let direct = run_script(port_of(&topo.primary), caps, SESSION_SCRIPT).await;
        let through = run_script(s.port, caps, SESSION_SCRIPT).await;
        assert_eq!(direct.len(), through.len(), "{name}");
        for (i, (d, t)) in direct.iter().zip(&through).enumerate() {
            assert_eq!(
                String::from_utf8_lossy(&d.concat()),
                String::from_utf8_lossy(&t.concat()),
                "{name}: answer {i} differs from the server's"
            );
        }
        answers.push(direct[0].concat());
    }
    set_interactive_timeout(&servers, Some(&old)).await;
    // The operator sees why there is more than one pool.
    let status = s.status();
    let flags: Vec<String> = status["pools"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| p["client_flags"].to_string())
        .collect();
    assert!(
        flags
            .iter()
            .any(|f| f.contains("IGNORE_SPACE") && f.contains("INTERACTIVE")),
        "{flags:?}"
    );
    // The oracle's sessions did differ: the test shows what it claims.
    assert_ne!(
        answers[0], answers[1],
        "IGNORE_SPACE changed nothing on the server"
    );
    assert_ne!(
        answers[0], answers[2],
        "INTERACTIVE changed nothing on the server"
    );
}

const EXTENDED_SCRIPT: &[Step] = &[
    Step::Text("SELECT id, doc, u, n FROM ext_meta ORDER BY id"),
    Step::Prepared("SELECT id, doc, u, n FROM ext_meta ORDER BY id"),
    Step::Prepared("SELECT id, doc, u, n FROM ext_meta ORDER BY id"),
    // Sluice answers SHOW WARNINGS itself, with the server's definitions.
    Step::Text("SELECT CAST('x1' AS INT) AS w"),
    Step::Text("SHOW WARNINGS"),
    Step::Text("SELECT CAST('x2' AS INT) AS w"),
    Step::Prepared("SHOW WARNINGS"),
    Step::Text("SELECT 1"),
];

/// MariaDB's extended metadata: each column definition carries the
/// extended type (`json`, `uuid`), which mysql2 and MariaDB's own
/// connectors read (mysql2 decodes JSON only with it). The definitions must
/// be the server's, and a client without the capability must still get
/// definitions without it.
#[tokio::test]
async fn extended_metadata_clients_get_the_servers_definitions() {
    let topo = Topology::from_env();
    sql_now(
        &topo.primary,
        "CREATE OR REPLACE TABLE sluice_test.ext_meta (id INT PRIMARY KEY, doc JSON, u UUID, n VARCHAR(10)); \
         INSERT INTO sluice_test.ext_meta VALUES (1, '{\"a\": [1, 2]}', UUID(), 'x'), (2, NULL, NULL, NULL)",
    );
    sluice_tests::replicas_caught_up().await;
    let s = Sluice::start();
    let ext = Mcaps::MARIADB_CLIENT_EXTENDED_METADATA;
    let cache = Mcaps::MARIADB_CLIENT_CACHE_METADATA;
    let mut seen_json = false;
    for (name, mcaps) in [
        ("extended metadata", ext),
        ("extended metadata and the metadata cache", ext | cache),
        ("neither", Mcaps::empty()),
        ("the metadata cache only", cache),
    ] {
        let direct = run_script_mariadb(port_of(&topo.primary), DRIVER_CAPS, mcaps, EXTENDED_SCRIPT).await;
        let through = run_script_mariadb(s.port, DRIVER_CAPS, mcaps, EXTENDED_SCRIPT).await;
        for (i, (d, t)) in direct.iter().zip(&through).enumerate() {
            assert_eq!(d, t, "{name}: answer {i} differs from the server's");
        }
        assert_eq!(direct.len(), through.len(), "{name}");
        let says_json = direct
            .iter()
            .flatten()
            .any(|p| p.windows(6).any(|w| w == b"\x01\x04json"));
        assert_eq!(
            says_json,
            mcaps.contains(ext),
            "{name}: the server's own definitions"
        );
        seen_json |= says_json;
    }
    assert!(seen_json, "the script tests what it claims");
}

const SESSION_TRACK_SCRIPT: &[Step] = &[
    Step::Text("SET NAMES utf8mb4"),
    Step::Text("USE mysql"),
    Step::Text("USE sluice_test"),
    Step::Text("SET time_zone = '+01:00'"),
    Step::Text("SET sql_mode = 'ANSI_QUOTES'"),
    Step::Text("SET @tracked_here = 1"),
    Step::Text("CREATE TEMPORARY TABLE track_tmp (v INT)"),
    Step::Text("INSERT INTO track_tmp VALUES (1)"),
    Step::Text("SET autocommit = 0"),
    Step::Text("SET autocommit = 1"),
    Step::Text("SELECT 1"),
];

/// A client that asks for session tracking gets in its OK packets what its
/// own session's tracking reports (the server's defaults: the schema and
/// five variables), not everything Sluice's backend connections track
/// (every variable, every state change): Node's `mariadb` connector
/// misread the extra entries and lost track of its database.
#[tokio::test]
async fn session_tracking_clients_get_the_servers_state_blocks() {
    let topo = Topology::from_env();
    let s = Sluice::start();
    let caps = DRIVER_CAPS | Caps::CLIENT_SESSION_TRACK;
    let direct = run_script(port_of(&topo.primary), caps, SESSION_TRACK_SCRIPT).await;
    let through = run_script(s.port, caps, SESSION_TRACK_SCRIPT).await;
    for (i, (d, t)) in direct.iter().zip(&through).enumerate() {
        // The server lists a block's variables in its tracker's hash
        // order, which depends on what else it tracks: compared as sets.
        assert_eq!(
            d.iter().map(|p| comparable(p)).collect::<Vec<_>>(),
            t.iter().map(|p| comparable(p)).collect::<Vec<_>>(),
            "answer {i} differs from the server's"
        );
    }
    assert_eq!(direct.len(), through.len());
    // The server did report state: the script tests what it claims.
    let with_state = direct
        .iter()
        .filter(|r| {
            r.last()
                .is_some_and(|p| p[0] == 0 && status_of_ok_bytes(p) & status::SESSION_STATE_CHANGED != 0)
        })
        .count();
    assert!(with_state >= 4, "{with_state} answers carried session state");
}

/// An OK packet as its fields and its session-state entries in order of
/// their bytes; any other packet as it is.
fn comparable(p: &[u8]) -> (Vec<u8>, Vec<Vec<u8>>) {
    let Some(ok) = packets::parse_ok(p).filter(|_| p.first() == Some(&0)) else {
        return (p.to_vec(), Vec::new());
    };
    let mut fields = Vec::new();
    packets::put_lenenc_int(&mut fields, ok.affected_rows);
    packets::put_lenenc_int(&mut fields, ok.last_insert_id);
    fields.extend_from_slice(&ok.status.to_le_bytes());
    fields.extend_from_slice(&ok.warnings.to_le_bytes());
    fields.extend_from_slice(ok.info);
    let mut entries: Vec<Vec<u8>> = packets::state_changes(ok.session_state)
        .map(|c| format!("{c:?}").into_bytes())
        .collect();
    entries.sort();
    (fields, entries)
}

fn status_of_ok_bytes(p: &[u8]) -> u16 {
    let mut pos = 1;
    let _ = read_lenenc_int(p, &mut pos);
    let _ = read_lenenc_int(p, &mut pos);
    packets::le16(p, pos)
}

/// One client's step in [`RESULTS_COLLATION_SCRIPT`]: 0 is the client that
/// logged in with utf8mb4_unicode_ci (224), 1 the one with the server's
/// utf8mb4_general_ci (45).
const RESULTS_COLLATION_SCRIPT: &[(usize, Step)] = &[
    (0, Step::Text("SELECT 'abc' AS s, n FROM coll_t")),
    (1, Step::Text("SELECT 'abc' AS s, n FROM coll_t")),
    (0, Step::Prepared("SELECT n, 'x' AS s FROM coll_t")),
    (1, Step::Prepared("SELECT n, 'x' AS s FROM coll_t")),
    (0, Step::Text("SET NAMES latin1")),
    (1, Step::Text("SELECT 'abc' AS s, n FROM coll_t")),
    (0, Step::Text("SELECT 'abc' AS s, n FROM coll_t")),
    (0, Step::Text("SET NAMES utf8mb4 COLLATE utf8mb4_bin")),
    (1, Step::Text("SET collation_connection = utf8mb4_unicode_ci")),
    (0, Step::Text("SELECT 'abc' AS s, n FROM coll_t")),
    (1, Step::Text("SELECT 'abc' AS s, n FROM coll_t")),
    (0, Step::Text("SET character_set_results = utf8mb4")),
    (0, Step::Prepared("SELECT n, 'x' AS s FROM coll_t")),
    (1, Step::Text("SET CHARACTER SET latin1")),
    (0, Step::Text("SELECT 'abc' AS s, n FROM coll_t")),
    (1, Step::Text("SELECT 'abc' AS s, n FROM coll_t")),
    (
        1,
        Step::Text("SET NAMES utf8mb4 COLLATE utf8mb4_unicode_ci, character_set_results = latin1"),
    ),
    (0, Step::Text("SELECT 'abc' AS s, n FROM coll_t")),
    (1, Step::Text("SELECT 'abc' AS s, n FROM coll_t")),
    (0, Step::Text("SET NAMES utf8mb3 COLLATE utf8mb3_bin")),
    (1, Step::Text("SELECT 'abc' AS s, n FROM coll_t")),
    (0, Step::Text("SELECT 'abc' AS s, n FROM coll_t")),
    (1, Step::Text("SET character_set_results = NULL")),
    (0, Step::Text("SELECT 'abc' AS s, n FROM coll_t")),
    (1, Step::Text("SELECT 'abc' AS s, n FROM coll_t")),
];

/// Runs [`RESULTS_COLLATION_SCRIPT`] with two clients on `port`.
async fn run_collation_script(port: u16) -> Vec<Vec<Vec<u8>>> {
    let mut clients = [
        RawClient::connect_with_collation(port, DRIVER_CAPS, 224)
            .await
            .expect("login"),
        RawClient::connect_with_collation(port, DRIVER_CAPS, 45)
            .await
            .expect("login"),
    ];
    let mut transcript = Vec::new();
    for (who, step) in RESULTS_COLLATION_SCRIPT {
        run_step(&mut clients[*who], step, &mut transcript).await;
    }
    transcript
}

/// A result column's definition names the collation the session's results
/// are sent in, a hidden part of the session: a handshake with collation
/// 224 (mysql2's default, utf8mb4_unicode_ci) or `SET NAMES x COLLATE y`
/// sets it, and `@@character_set_results` shows only the charset. Two such
/// clients sharing one backend connection get the definitions their own
/// sessions would get from the server (mysql2's clients saw 45).
#[tokio::test]
async fn result_columns_carry_the_clients_own_collation() {
    let topo = Topology::from_env();
    sql_now(
        &topo.primary,
        "CREATE OR REPLACE TABLE sluice_test.coll_t (n VARCHAR(10)); INSERT INTO sluice_test.coll_t VALUES ('é')",
    );
    sluice_tests::replicas_caught_up().await;
    for mode in ["primary_only", "split"] {
        let s = Sluice::start_with(SluiceOptions {
            max_connections_per_backend: 1,
            routing_mode: mode,
            ..SluiceOptions::default()
        });
        let direct = run_collation_script(port_of(&topo.primary)).await;
        let through = run_collation_script(s.port).await;
        for (i, (d, t)) in direct.iter().zip(&through).enumerate() {
            assert_eq!(d, t, "{mode}: answer {i} differs from the server's");
        }
        assert_eq!(direct.len(), through.len(), "{mode}");
        let charset_of_first_column =
            |answer: &Vec<Vec<u8>>| packets::column_charset(&answer[1], false).expect("a column definition");
        assert_eq!(
            charset_of_first_column(&direct[0]),
            224,
            "the server's own answer"
        );
        assert_eq!(charset_of_first_column(&direct[1]), 45, "the server's own answer");
    }
}

const CHANGES_SCRIPT: &[Step] = &[
    Step::Text("SET sql_mode = CONCAT(@@sql_mode, ',ANSI_QUOTES')"),
    Step::Text("SET wait_timeout = 100"),
    Step::Text("SELECT @@session.sql_mode, @@session.wait_timeout"),
];

/// A variable another client changed on a pooled connection goes back to
/// the value the login gave it, not to the global value: `sql_mode` keeps
/// the IGNORE_SPACE a CLIENT_IGNORE_SPACE login adds (MariaDB Connector/J
/// 2.7 always asks for it, then changes `sql_mode`: the next client's
/// `COUNT (*)` failed with 1064), `wait_timeout` the interactive timeout.
#[tokio::test]
async fn a_variable_another_client_changed_goes_back_to_its_login_value() {
    let topo = Topology::from_env();
    let servers = [
        topo.primary.as_str(),
        topo.replica1.as_str(),
        topo.replica2.as_str(),
    ];
    let old = set_interactive_timeout(&servers, None).await;
    for mode in ["primary_only", "split"] {
        let s = Sluice::start_with(SluiceOptions {
            routing_mode: mode,
            max_connections_per_backend: 1,
            ..SluiceOptions::default()
        });
        for (name, caps) in [
            ("IGNORE_SPACE", DRIVER_CAPS | Caps::CLIENT_IGNORE_SPACE),
            ("INTERACTIVE", DRIVER_CAPS | Caps::CLIENT_INTERACTIVE),
        ] {
            let mut answers = Vec::new();
            for port in [port_of(&topo.primary), s.port] {
                // The first client's changes stay on the only connection.
                let changed = run_script(port, caps, CHANGES_SCRIPT).await;
                let next = run_script(port, caps, SESSION_SCRIPT).await;
                answers.push((changed, next));
            }
            assert_eq!(answers[1], answers[0], "{mode}, {name}: the server's answers");
        }
    }
    set_interactive_timeout(&servers, Some(&old)).await;
}

/// Sluice does not offer the compressed protocol, yet mysqlnd asks for it
/// when told to (MYSQLI_CLIENT_COMPRESS, PDO::MYSQL_ATTR_COMPRESS) and then
/// compresses: such a login is refused at once with the reason (it hung
/// for 30 s on the first query, then failed with "gone away"), and other
/// clients are unaffected.
#[tokio::test]
async fn a_client_asking_for_compression_is_told_it_is_not_offered() {
    let s = Sluice::start();
    let refused = RawClient::connect(s.port, "app", "app", DRIVER_CAPS | Caps::CLIENT_COMPRESS).await;
    let message = match refused {
        Ok(_) => panic!("a compressing client was let in"),
        Err(e) => e.to_string(),
    };
    assert!(message.contains("compressed protocol"), "{message}");
    let mut c = mysql_async::Conn::new(s.opts()).await.expect("others connect");
    let one: Option<u8> = c.query_first("SELECT 1").await.expect("and run");
    assert_eq!(one, Some(1));
    let m = s.metrics();
    assert_eq!(
        sluice_tests::metric_sum(&m, "sluice_errors_total", &["cause=\"compression_requested\""]),
        1.0
    );
}
