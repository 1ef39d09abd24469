//! MariaDB's metadata cache (`MARIADB_CLIENT_CACHE_METADATA`) through
//! Sluice, with the server as the oracle: the same commands on a fresh
//! table give the same packets directly and through Sluice, for a client
//! that caches metadata and one that does not, with and without
//! DEPRECATE_EOF. Two clients share Sluice's one backend connection, so an
//! execute can meet definitions the server sent to the other client.
//! Covered: text results, executes whose definitions the server skips, a
//! result too large for the one-pass copy, definitions changed by ALTER
//! TABLE between a client's prepare and its execute, a prepared CALL (a
//! procedure's result sets, which the server always sends whole, then its
//! OUT parameters), a procedure called again with the same one result set
//! (still sent whole), and two clients with different result charsets (the
//! definitions depend on it; the server's check for a change does not).
//! The script also runs with one client that caches and one that does not
//! on the same statements (Sluice must fill in what the server skipped for
//! the one, and may skip for the other). Last, a cursor: its execute
//! answers with the definitions (skipped when the client holds them) and a
//! terminator even with DEPRECATE_EOF, and COM_STMT_FETCH with rows only.

use mysql_async::prelude::Queryable;
use mysql_common::constants::{CapabilityFlags as Caps, MariadbCapabilities as Mcaps};
use sluice_tests::raw::{DRIVER_CAPS, RawClient};
use sluice_tests::{Sluice, SluiceOptions, Topology, direct_opts, port_of};

const SMALL: &str = "SELECT id, c FROM mc_cache WHERE id = ?";
const LARGE: &str = "SELECT id, c FROM mc_cache WHERE id <= ?";

/// One step: which client (0 or 1) sends what.
enum Step {
    Text(&'static str),
    Prepare(&'static str),
    /// Execute the statement prepared from this text with one INT parameter.
    Execute(&'static str, i32),
    /// Execute it with a NULL parameter (a procedure's OUT parameter).
    Call(&'static str),
    /// Execute it with a read-only cursor and one INT parameter.
    Cursor(&'static str, i32),
    /// COM_STMT_FETCH this many rows of its open cursor.
    Fetch(&'static str, u32),
}

const CALL: &str = "CALL mc_proc(?)";
/// A procedure with one result set, the same at every call.
const ONE: &str = "CALL mc_one(?)";
/// Read through a cursor.
const CURSOR: &str = "SELECT id, c FROM mc_cache WHERE id <= ? ORDER BY id";

const SCRIPT: &[(usize, Step)] = &[
    (0, Step::Text("SELECT id, c FROM mc_cache WHERE id = 1")),
    (0, Step::Prepare(SMALL)),
    (1, Step::Prepare(SMALL)),
    (0, Step::Execute(SMALL, 5)),
    (1, Step::Execute(SMALL, 6)),
    (0, Step::Prepare(LARGE)),
    (0, Step::Execute(LARGE, 3000)),
    (1, Step::Text("ALTER TABLE mc_cache MODIFY c VARCHAR(40)")),
    // New definitions for client 0; client 1 still holds the old ones,
    // though the connection Sluice shares last sent the new ones.
    (0, Step::Execute(SMALL, 5)),
    (1, Step::Execute(SMALL, 6)),
    (0, Step::Execute(SMALL, 7)),
    (0, Step::Execute(LARGE, 3000)),
    (0, Step::Execute(LARGE, 2999)),
    (0, Step::Prepare(CALL)),
    (0, Step::Call(CALL)),
    (0, Step::Call(CALL)),
    (1, Step::Prepare(CALL)),
    (1, Step::Call(CALL)),
    (0, Step::Call(CALL)),
    // The server sends a procedure's result set whole at every call, even
    // the same one the client holds from the last.
    (0, Step::Prepare(ONE)),
    (0, Step::Execute(ONE, 1)),
    (0, Step::Execute(ONE, 1)),
    (1, Step::Prepare(ONE)),
    (1, Step::Execute(ONE, 2)),
    (0, Step::Execute(ONE, 3)),
    // Client 1 reads results in latin1; the definitions say so.
    (1, Step::Text("SET character_set_results = latin1")),
    (0, Step::Execute(SMALL, 5)),
    (1, Step::Execute(SMALL, 6)),
    (0, Step::Execute(SMALL, 7)),
    (1, Step::Prepare(SMALL)),
    (1, Step::Execute(SMALL, 8)),
    (0, Step::Execute(SMALL, 9)),
    // A cursor pins its client to the one backend connection for good, so
    // client 1 speaks no more.
    (0, Step::Prepare(CURSOR)),
    (0, Step::Cursor(CURSOR, 3)),
    (0, Step::Fetch(CURSOR, 2)),
    (0, Step::Fetch(CURSOR, 2)),
    // The client holds the definitions now: the server skips them.
    (0, Step::Cursor(CURSOR, 2)),
    (0, Step::Fetch(CURSOR, 5)),
    (0, Step::Execute(CURSOR, 2)),
];

async fn fresh_table() {
    let mut conn = mysql_async::Conn::new(direct_opts(&Topology::from_env().primary))
        .await
        .unwrap();
    conn.query_drop("DROP TABLE IF EXISTS mc_cache").await.unwrap();
    conn.query_drop("CREATE TABLE mc_cache (id INT PRIMARY KEY, c VARCHAR(20))")
        .await
        .unwrap();
    conn.query_drop("INSERT INTO mc_cache SELECT seq, CONCAT('row-', seq) FROM seq_1_to_3000")
        .await
        .unwrap();
    conn.query_drop("DROP PROCEDURE IF EXISTS mc_proc").await.unwrap();
    conn.query_drop(
        "CREATE PROCEDURE mc_proc(OUT total INT) BEGIN \
         SELECT id FROM mc_cache WHERE id = 1; \
         SELECT c, id FROM mc_cache WHERE id = 2; \
         SET total = 42; END",
    )
    .await
    .unwrap();
    conn.query_drop("DROP PROCEDURE IF EXISTS mc_one").await.unwrap();
    conn.query_drop("CREATE PROCEDURE mc_one(IN k INT) BEGIN SELECT id, c FROM mc_cache WHERE id = k; END")
        .await
        .unwrap();
    conn.disconnect().await.unwrap();
}

fn execute_packet(id: u32, value: Option<i32>, cursor: bool) -> Vec<u8> {
    let mut p = vec![0x17];
    p.extend_from_slice(&id.to_le_bytes());
    p.push(u8::from(cursor)); // CURSOR_TYPE_READ_ONLY or none
    p.extend_from_slice(&1u32.to_le_bytes());
    p.push(u8::from(value.is_none())); // null bitmap
    p.push(1); // types follow
    p.extend_from_slice(&[0x03, 0x00]); // MYSQL_TYPE_LONG
    if let Some(value) = value {
        p.extend_from_slice(&value.to_le_bytes());
    }
    p
}

/// Whether an OK or EOF packet says more results follow.
fn more_results(p: &[u8]) -> bool {
    let status = if p[0] == 0xfe && p.len() < 7 {
        u16::from_le_bytes([p[3], p[4]])
    } else {
        // OK, or OK as EOF.
        sluice_protocol::packets::parse_ok(p).map_or(0, |ok| ok.status)
    };
    status & 0x0008 != 0
}

/// A cursor's execute: the column count, the definitions unless skipped,
/// and a terminator (with or without DEPRECATE_EOF: no rows follow).
async fn cursor_response(c: &mut RawClient, caching: bool) -> Vec<Vec<u8>> {
    let first = c.stream.read_packet().await.unwrap().payload.to_vec();
    let mut out = vec![first.clone()];
    if first[0] == 0xff {
        return out;
    }
    let follows = !caching || first[1] == 1;
    let defs = if follows { usize::from(first[0]) } else { 0 };
    for _ in 0..=defs {
        out.push(c.stream.read_packet().await.unwrap().payload.to_vec());
    }
    out
}

/// COM_STMT_FETCH's answer: rows, then a terminator (or an error).
async fn fetch_response(c: &mut RawClient) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let p = c.stream.read_packet().await.unwrap().payload.to_vec();
        let end = p[0] == 0xfe && p.len() < 0xff_ffff || p[0] == 0xff;
        out.push(p);
        if end {
            return out;
        }
    }
}

/// Reads one response (every result of it), as a client with these
/// capabilities parses it.
async fn response(c: &mut RawClient, caching: bool, deprecate_eof: bool, prepare: bool) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let last = one_result(c, caching, deprecate_eof, prepare, &mut out).await;
        if prepare || !more_results(&last) {
            return out;
        }
    }
}

/// Reads one result into `out`; returns its last packet.
async fn one_result(
    c: &mut RawClient,
    caching: bool,
    deprecate_eof: bool,
    prepare: bool,
    out: &mut Vec<Vec<u8>>,
) -> Vec<u8> {
    let first = c.stream.read_packet().await.unwrap().payload.to_vec();
    let head = first[0];
    out.push(first.clone());
    if head == 0xff || (head == 0x00 && !prepare) {
        return first;
    }
    let defs_then_eof = |n: usize| n + usize::from(!deprecate_eof && n > 0);
    let (defs, rows) = if prepare {
        let columns = u16::from_le_bytes([first[5], first[6]]);
        let params = u16::from_le_bytes([first[7], first[8]]);
        (
            defs_then_eof(usize::from(params)) + defs_then_eof(usize::from(columns)),
            false,
        )
    } else {
        let (columns, follows) = (usize::from(head), !caching || first[1] == 1);
        assert!(columns < 0xfb, "a small column count");
        let defs = if follows { columns } else { 0 };
        (defs + usize::from(!deprecate_eof), true)
    };
    let mut last = first;
    for _ in 0..defs {
        last = c.stream.read_packet().await.unwrap().payload.to_vec();
        out.push(last.clone());
    }
    if !rows {
        return last;
    }
    loop {
        let p = c.stream.read_packet().await.unwrap().payload.to_vec();
        let end = p[0] == 0xfe && p.len() < 0xff_ffff || p[0] == 0xff;
        out.push(p.clone());
        if end {
            return p;
        }
    }
}

/// The id of the client's latest statement prepared from `sql`.
fn latest(ids: &[(&str, u32)], sql: &str) -> u32 {
    ids.iter()
        .rev()
        .find(|(s, _)| *s == sql)
        .map(|(_, id)| *id)
        .unwrap()
}

/// Runs the script against `port` from two fresh clients (`caching[i]`:
/// client i asks for the metadata cache); the packets each received, a
/// prepare's statement id zeroed.
async fn transcript(port: u16, caching: [bool; 2], deprecate_eof: bool) -> Vec<Vec<Vec<u8>>> {
    fresh_table().await;
    // Multi-results as every driver asks (the procedure needs them).
    let mut caps = DRIVER_CAPS;
    if deprecate_eof {
        caps |= Caps::CLIENT_DEPRECATE_EOF;
    }
    let mut clients = Vec::new();
    for caches in caching {
        let mcaps = if caches {
            Mcaps::MARIADB_CLIENT_CACHE_METADATA
        } else {
            Mcaps::empty()
        };
        clients.push(RawClient::connect_mariadb(port, caps, mcaps).await.unwrap());
    }
    let mut ids: [Vec<(&str, u32)>; 2] = [Vec::new(), Vec::new()];
    let mut out = Vec::new();
    for (who, step) in SCRIPT {
        let c = &mut clients[*who];
        let packet = match step {
            Step::Text(sql) => [&[0x03], sql.as_bytes()].concat(),
            Step::Prepare(sql) => [&[0x16], sql.as_bytes()].concat(),
            Step::Execute(sql, value) => execute_packet(latest(&ids[*who], sql), Some(*value), false),
            Step::Call(sql) => execute_packet(latest(&ids[*who], sql), None, false),
            Step::Cursor(sql, value) => execute_packet(latest(&ids[*who], sql), Some(*value), true),
            Step::Fetch(sql, rows) => {
                let mut p = vec![0x1c];
                p.extend_from_slice(&latest(&ids[*who], sql).to_le_bytes());
                p.extend_from_slice(&rows.to_le_bytes());
                p
            }
        };
        c.stream.send(0, &packet).await.unwrap();
        let mut packets = match step {
            Step::Cursor(..) => cursor_response(c, caching[*who]).await,
            Step::Fetch(..) => fetch_response(c).await,
            _ => response(c, caching[*who], deprecate_eof, matches!(step, Step::Prepare(_))).await,
        };
        if let Step::Prepare(sql) = step {
            let ok = &mut packets[0];
            assert_eq!(ok[0], 0, "prepare failed: {:?}", String::from_utf8_lossy(ok));
            ids[*who].push((sql, u32::from_le_bytes([ok[1], ok[2], ok[3], ok[4]])));
            ok[1..5].fill(0);
        }
        out.push(packets);
    }
    out
}

/// Steps at which the client has changed its `character_set_results`.
fn after_charset_change(step: usize) -> bool {
    SCRIPT[..step].iter().any(|(who, s)| {
        *who == SCRIPT[step].0 && matches!(s, Step::Text(sql) if sql.starts_with("SET character_set_results"))
    })
}

#[tokio::test]
async fn the_metadata_cache_gives_what_the_server_gives() {
    let s = Sluice::start_with(SluiceOptions {
        routing_mode: "primary_only",
        max_connections_per_backend: 1,
        ..SluiceOptions::default()
    });
    let direct = port_of(&Topology::from_env().primary);
    // Both clients caching, neither, and one of each.
    for caching in [[true, true], [false, false], [true, false]] {
        for deprecate_eof in [false, true] {
            let want = transcript(direct, caching, deprecate_eof).await;
            // What a client that does not cache gets: the definitions as
            // the server builds them for each step.
            let plain = transcript(direct, [false, false], deprecate_eof).await;
            let got = transcript(s.port, caching, deprecate_eof).await;
            for (i, (w, g)) in want.iter().zip(&got).enumerate() {
                let what = format!(
                    "step {i} of the script (caching = {caching:?}, deprecate_eof = {deprecate_eof})"
                );
                let skipped = |r: &Vec<Vec<u8>>| r[0].len() == 2 && r[0][1] == 0;
                if caching[SCRIPT[i].0] && skipped(w) && !skipped(g) && after_charset_change(i) {
                    // MariaDB's own check for changed definitions ignores
                    // character_set_results, so it keeps its client on the
                    // old ones; Sluice, sharing the statement between
                    // clients, must send the ones the server builds now.
                    let columns = usize::from(w[0][0]);
                    let mut expected = vec![vec![w[0][0], 1]];
                    expected.extend(plain[i][1..=columns].iter().cloned());
                    expected.extend(w[1..].iter().cloned());
                    assert_eq!(g, &expected, "{what}: the current definitions");
                    continue;
                }
                assert_eq!(g, w, "{what}");
            }
            if caching == [true, true] {
                // The server skipped definitions at least once: the case
                // where Sluice must know what they were.
                let skipped = want.iter().filter(|r| r[0].len() == 2 && r[0][1] == 0).count();
                assert!(skipped >= 3, "skipped definitions {skipped} times");
            }
        }
    }
}
