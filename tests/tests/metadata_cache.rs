//! MariaDB's metadata cache (`MARIADB_CLIENT_CACHE_METADATA`) through
//! Sluice, with the server as the oracle: the same commands on a fresh
//! table give the same packets directly and through Sluice, for a client
//! that caches metadata and one that does not, with and without
//! DEPRECATE_EOF. Two clients share Sluice's one backend connection, so an
//! execute can meet definitions the server sent to the other client.
//! Covered: text results, executes whose definitions the server skips, a
//! result too large for the one-pass copy, and definitions changed by
//! ALTER TABLE between a client's prepare and its execute.

use mysql_async::prelude::Queryable;
use mysql_common::constants::{CapabilityFlags as Caps, MariadbCapabilities as Mcaps};
use sluice_tests::raw::RawClient;
use sluice_tests::{Sluice, SluiceOptions, Topology, direct_opts, port_of};

const SMALL: &str = "SELECT id, c FROM mc_cache WHERE id = ?";
const LARGE: &str = "SELECT id, c FROM mc_cache WHERE id <= ?";

/// One step: which client (0 or 1) sends what.
enum Step {
    Text(&'static str),
    Prepare(&'static str),
    /// Execute the statement prepared from this text with one INT parameter.
    Execute(&'static str, i32),
}

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
    conn.disconnect().await.unwrap();
}

fn execute_packet(id: u32, value: i32) -> Vec<u8> {
    let mut p = vec![0x17];
    p.extend_from_slice(&id.to_le_bytes());
    p.push(0); // no cursor
    p.extend_from_slice(&1u32.to_le_bytes());
    p.push(0); // null bitmap
    p.push(1); // types follow
    p.extend_from_slice(&[0x03, 0x00]); // MYSQL_TYPE_LONG
    p.extend_from_slice(&value.to_le_bytes());
    p
}

/// Reads one response, as a client with these capabilities parses it.
async fn response(c: &mut RawClient, caching: bool, deprecate_eof: bool, prepare: bool) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let first = c.stream.read_packet().await.unwrap().payload.to_vec();
    let head = first[0];
    out.push(first.clone());
    if head == 0xff || (head == 0x00 && !prepare) {
        return out;
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
    for _ in 0..defs {
        out.push(c.stream.read_packet().await.unwrap().payload.to_vec());
    }
    if !rows {
        return out;
    }
    loop {
        let p = c.stream.read_packet().await.unwrap().payload.to_vec();
        let end = p[0] == 0xfe && p.len() < 0xff_ffff || p[0] == 0xff;
        out.push(p);
        if end {
            return out;
        }
    }
}

/// Runs the script against `port` from two fresh clients; the packets
/// each received, a prepare's statement id zeroed.
async fn transcript(port: u16, caching: bool, deprecate_eof: bool) -> Vec<Vec<Vec<u8>>> {
    fresh_table().await;
    let caps = if deprecate_eof {
        Caps::CLIENT_DEPRECATE_EOF
    } else {
        Caps::empty()
    };
    let mcaps = if caching {
        Mcaps::MARIADB_CLIENT_CACHE_METADATA
    } else {
        Mcaps::empty()
    };
    let mut clients = Vec::new();
    for _ in 0..2 {
        clients.push(RawClient::connect_mariadb(port, caps, mcaps).await.unwrap());
    }
    let mut ids: [Vec<(&str, u32)>; 2] = [Vec::new(), Vec::new()];
    let mut out = Vec::new();
    for (who, step) in SCRIPT {
        let c = &mut clients[*who];
        let (packet, prepare) = match step {
            Step::Text(sql) => ([&[0x03], sql.as_bytes()].concat(), false),
            Step::Prepare(sql) => ([&[0x16], sql.as_bytes()].concat(), true),
            Step::Execute(sql, value) => {
                let id = ids[*who]
                    .iter()
                    .find(|(s, _)| s == sql)
                    .map(|(_, id)| *id)
                    .unwrap();
                (execute_packet(id, *value), false)
            }
        };
        c.stream.send(0, &packet).await.unwrap();
        let mut packets = response(c, caching, deprecate_eof, prepare).await;
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

#[tokio::test]
async fn the_metadata_cache_gives_what_the_server_gives() {
    let s = Sluice::start_with(SluiceOptions {
        routing_mode: "primary_only",
        max_connections_per_backend: 1,
        ..SluiceOptions::default()
    });
    let direct = port_of(&Topology::from_env().primary);
    for caching in [true, false] {
        for deprecate_eof in [false, true] {
            let want = transcript(direct, caching, deprecate_eof).await;
            let got = transcript(s.port, caching, deprecate_eof).await;
            for (i, (w, g)) in want.iter().zip(&got).enumerate() {
                assert_eq!(
                    g, w,
                    "step {i} of the script (caching = {caching}, deprecate_eof = {deprecate_eof})"
                );
            }
            if caching {
                // The server skipped definitions at least once: the case
                // where Sluice must know what they were.
                let skipped = want.iter().filter(|r| r[0].len() == 2 && r[0][1] == 0).count();
                assert!(skipped >= 3, "skipped definitions {skipped} times");
            }
        }
    }
}
