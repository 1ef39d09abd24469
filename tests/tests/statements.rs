//! The binary-protocol commands a driver rarely shows: COM_STMT_RESET,
//! COM_STMT_SEND_LONG_DATA, cursors with COM_STMT_FETCH, MariaDB's
//! COM_STMT_BULK_EXECUTE, and COM_STMT_CLOSE; plus client capability flags
//! that change server behaviour (FOUND_ROWS, MULTI_STATEMENTS).

use mysql_async::prelude::*;
use mysql_common::constants::CapabilityFlags as Caps;
use sluice_tests::raw::{RawClient, err_code};
use sluice_tests::{Sluice, SluiceOptions};

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// Prepares `sql` and reads the whole prepare response; returns the id.
async fn prepare(c: &mut RawClient, sql: &str) -> u32 {
    let mut p = vec![0x16];
    p.extend_from_slice(sql.as_bytes());
    let ok = c.command(&p).await.unwrap();
    assert_eq!(ok.payload[0], 0, "{}", String::from_utf8_lossy(&ok.payload));
    let columns = u16::from_le_bytes([ok.payload[5], ok.payload[6]]);
    let params = u16::from_le_bytes([ok.payload[7], ok.payload[8]]);
    for n in [params, columns] {
        if n > 0 {
            // n definitions and an EOF
            for _ in 0..=n {
                c.stream.read_packet().await.unwrap();
            }
        }
    }
    le32(&ok.payload[1..5])
}

fn is_eof(p: &sluice_protocol::Packet) -> bool {
    p.payload[0] == 0xfe && p.payload.len() < 9
}

#[tokio::test]
async fn long_data_reset_cursor_fetch_bulk_and_close() {
    let s = Sluice::start();
    let mut c = RawClient::connect(s.port, "app", "app", Caps::CLIENT_MULTI_RESULTS)
        .await
        .unwrap();
    let r = c
        .command(b"\x03CREATE OR REPLACE TABLE stmt_t (id INT PRIMARY KEY, body TEXT)")
        .await
        .unwrap();
    assert_eq!(r.payload[0], 0);

    // SEND_LONG_DATA then EXECUTE: the data reaches the executing connection.
    let ins = prepare(&mut c, "INSERT INTO stmt_t VALUES (?, ?)").await;
    let mut long = vec![0x18];
    long.extend_from_slice(&ins.to_le_bytes());
    long.extend_from_slice(&1u16.to_le_bytes());
    long.extend_from_slice(b"hello ");
    c.stream.send(0, &long).await.unwrap();
    let mut long2 = long.clone();
    long2.truncate(7);
    long2.extend_from_slice(b"world");
    c.stream.send(0, &long2).await.unwrap();
    let mut exec = vec![0x17];
    exec.extend_from_slice(&ins.to_le_bytes());
    exec.push(0); // no cursor
    exec.extend_from_slice(&1u32.to_le_bytes());
    exec.push(0); // null bitmap
    exec.push(1); // new params bound
    exec.extend_from_slice(&[0x03, 0x00, 0xfc, 0x00]); // LONG, BLOB
    exec.extend_from_slice(&1i32.to_le_bytes());
    let r = c.command(&exec).await.unwrap();
    assert_eq!(r.payload[0], 0, "{}", String::from_utf8_lossy(&r.payload));

    // STMT_RESET answers OK.
    let mut reset = vec![0x1a];
    reset.extend_from_slice(&ins.to_le_bytes());
    let r = c.command(&reset).await.unwrap();
    assert_eq!(r.payload[0], 0);

    // BULK_EXECUTE (MariaDB): three rows in one command.
    let mut bulk = vec![0xfa];
    bulk.extend_from_slice(&ins.to_le_bytes());
    bulk.extend_from_slice(&128u16.to_le_bytes()); // send types
    bulk.extend_from_slice(&[0x03, 0x00, 0xfe, 0x00]); // LONG, STRING
    for id in 2..5i32 {
        bulk.push(0);
        bulk.extend_from_slice(&id.to_le_bytes());
        bulk.push(0);
        bulk.push(3);
        bulk.extend_from_slice(b"row");
    }
    let r = c.command(&bulk).await.unwrap();
    assert_eq!(
        r.payload[0],
        0,
        "bulk insert: {}",
        String::from_utf8_lossy(&r.payload)
    );

    // A read-only cursor and COM_STMT_FETCH, two rows at a time.
    let sel = prepare(&mut c, "SELECT id, body FROM stmt_t ORDER BY id").await;
    let mut exec = vec![0x17];
    exec.extend_from_slice(&sel.to_le_bytes());
    exec.push(1); // CURSOR_TYPE_READ_ONLY
    exec.extend_from_slice(&1u32.to_le_bytes());
    let head = c.command(&exec).await.unwrap();
    assert_eq!(&head.payload[..], &[2u8][..], "two columns");
    let rest = c.read_until(is_eof).await.unwrap();
    assert_eq!(rest.len(), 3, "column definitions then EOF, no rows yet");
    let mut rows = 0;
    let mut bodies = Vec::new();
    loop {
        let mut fetch = vec![0x1c];
        fetch.extend_from_slice(&sel.to_le_bytes());
        fetch.extend_from_slice(&2u32.to_le_bytes());
        c.stream.send(0, &fetch).await.unwrap();
        let packets = c.read_until(|p| is_eof(p) || p.payload[0] == 0xff).await.unwrap();
        let (last, data) = packets.split_last().unwrap();
        assert!(is_eof(last), "fetch ends with EOF");
        rows += data.len();
        bodies.extend(data.iter().map(|p| p.payload.to_vec()));
        let status = u16::from_le_bytes([last.payload[3], last.payload[4]]);
        if status & 0x80 != 0 {
            break; // SERVER_STATUS_LAST_ROW_SENT
        }
    }
    assert_eq!(rows, 4);
    assert!(
        String::from_utf8_lossy(&bodies[0]).contains("hello world"),
        "long data arrived whole"
    );

    // STMT_CLOSE has no response; the statement is gone afterwards.
    let mut close = vec![0x19];
    close.extend_from_slice(&sel.to_le_bytes());
    c.stream.send(0, &close).await.unwrap();
    let mut exec = vec![0x17];
    exec.extend_from_slice(&sel.to_le_bytes());
    exec.push(0);
    exec.extend_from_slice(&1u32.to_le_bytes());
    let r = c.command(&exec).await.unwrap();
    assert_eq!(err_code(&r.payload), Some(1243));
}

#[tokio::test]
async fn found_rows_flag_is_honoured_per_client() {
    let s = Sluice::start();
    let mut plain = mysql_async::Conn::new(s.opts()).await.unwrap();
    let found = mysql_async::OptsBuilder::from_opts(s.opts()).client_found_rows(true);
    let mut found = mysql_async::Conn::new(found).await.unwrap();
    plain
        .query_drop(
            "CREATE OR REPLACE TABLE fr_t (id INT PRIMARY KEY, v INT); INSERT INTO fr_t VALUES (1, 1)",
        )
        .await
        .unwrap();
    for _ in 0..5 {
        plain
            .query_drop("UPDATE fr_t SET v = 1 WHERE id = 1")
            .await
            .unwrap();
        assert_eq!(plain.affected_rows(), 0, "changed rows without CLIENT_FOUND_ROWS");
        found
            .query_drop("UPDATE fr_t SET v = 1 WHERE id = 1")
            .await
            .unwrap();
        assert_eq!(found.affected_rows(), 1, "matched rows with CLIENT_FOUND_ROWS");
    }
}

#[tokio::test]
async fn multi_statements_follow_the_client_flag_and_set_option() {
    let s = Sluice::start();
    let mut c = RawClient::connect(s.port, "app", "app", Caps::CLIENT_MULTI_RESULTS)
        .await
        .unwrap();
    let r = c.command(b"\x03SELECT 1; SELECT 2").await.unwrap();
    assert_eq!(
        err_code(&r.payload),
        Some(1064),
        "without CLIENT_MULTI_STATEMENTS this is a syntax error"
    );
    let r = c.command(&[0x1b, 0, 0]).await.unwrap(); // MYSQL_OPTION_MULTI_STATEMENTS_ON
    assert_eq!(r.payload[0], 0xfe);
    c.stream.send(0, b"\x03SELECT 1; SELECT 2").await.unwrap();
    // Two result sets of five packets: count, definition, EOF, row, EOF.
    let mut packets = Vec::new();
    for _ in 0..10 {
        packets.push(c.stream.read_packet().await.unwrap());
    }
    assert_eq!(&packets[8].payload[..], b"\x012", "the second set's row");
    let last = &packets[9];
    assert!(
        is_eof(last) && last.payload[3] & 0x08 == 0,
        "the last EOF ends the response"
    );
    let r = c.command(&[0x0e]).await.unwrap();
    assert_eq!(r.payload[0], 0, "nothing left over in the stream");
}

#[tokio::test]
async fn client_leaving_mid_result_leaves_a_healthy_pool() {
    let s = Sluice::start_with(SluiceOptions {
        max_connections_per_backend: 1,
        ..SluiceOptions::default()
    });
    for _ in 0..3 {
        let mut c = RawClient::connect(s.port, "app", "app", Caps::empty())
            .await
            .unwrap();
        c.stream
            .send(0, b"\x03SELECT seq, REPEAT('x', 500) FROM seq_1_to_2000000")
            .await
            .unwrap();
        let _first = c.stream.read_packet().await.unwrap();
        drop(c); // gone mid-result
    }
    let mut after = mysql_async::Conn::new(s.opts()).await.unwrap();
    for i in 0..20 {
        let v: Option<i32> = after.query_first(format!("SELECT {i}")).await.unwrap();
        assert_eq!(v, Some(i), "the pool's only connection is in step");
    }
}

#[tokio::test]
async fn large_results_stream_in_bounded_memory() {
    let s = Sluice::start();
    let mut c = mysql_async::Conn::new(s.opts()).await.unwrap();
    // About 500 MB of rows through the proxy.
    let mut total = 0usize;
    let mut result = c
        .query_iter("SELECT seq, REPEAT('x', 1000) FROM seq_1_to_500000")
        .await
        .unwrap();
    result
        .for_each(|row| {
            let (_, x): (u64, Vec<u8>) = mysql_async::from_row(row);
            total += x.len();
        })
        .await
        .unwrap();
    drop(result);
    assert_eq!(total, 500_000 * 1000);
    let status = std::fs::read_to_string(format!("/proc/{}/status", s.pid())).unwrap();
    let hwm_kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap();
    println!("sluice peak RSS after streaming 500 MB: {} MB", hwm_kb / 1024);
    assert!(
        hwm_kb < 100 * 1024,
        "peak RSS {hwm_kb} kB: the result was buffered, not streamed"
    );
}

/// MariaDB's clients (Node's `mariadb`, Connector/C behind Python's
/// `mariadb`) pipeline an execute right behind its prepare, naming the
/// statement 0xFFFFFFFF: "the one just prepared". Sends prepare, execute,
/// a failing prepare and an execute of "the one just prepared" again, all
/// before reading; returns what came back (statement ids masked).
async fn prepare_then_execute_last(port: u16) -> Vec<String> {
    let mut c = RawClient::connect(port, "app", "app", Caps::CLIENT_MULTI_RESULTS)
        .await
        .unwrap();
    // SELECT ? + 1 with one BIGINT parameter, 41.
    let mut exec = vec![0x17];
    exec.extend_from_slice(&u32::MAX.to_le_bytes());
    exec.push(0); // no cursor
    exec.extend_from_slice(&1u32.to_le_bytes());
    exec.push(0); // null bitmap
    exec.push(1); // types follow
    exec.extend_from_slice(&[0x08, 0x00]);
    exec.extend_from_slice(&41i64.to_le_bytes());
    for packet in [
        b"\x16SELECT ? + 1 AS answer".to_vec(),
        exec.clone(),
        b"\x16SELECT ? + FROM nowhere".to_vec(),
        exec,
    ] {
        c.stream.send(0, &packet).await.unwrap();
    }
    let mut seen = Vec::new();
    for _ in 0..2 {
        // The prepare's answer.
        let ok = c.stream.read_packet().await.unwrap();
        if ok.payload[0] == 0xff {
            seen.push(format!("prepare error {:?}", err_code(&ok.payload)));
        } else {
            let columns = u16::from_le_bytes([ok.payload[5], ok.payload[6]]);
            let params = u16::from_le_bytes([ok.payload[7], ok.payload[8]]);
            for n in [params, columns] {
                if n > 0 {
                    c.read_until(is_eof).await.unwrap();
                }
            }
            seen.push(format!("prepared: {columns} columns, {params} parameters"));
        }
        // The execute's answer.
        let first = c.stream.read_packet().await.unwrap();
        if first.payload[0] == 0xff {
            seen.push(format!("execute error {:?}", err_code(&first.payload)));
            continue;
        }
        c.read_until(is_eof).await.unwrap(); // definitions
        let rows = c.read_until(is_eof).await.unwrap();
        let values: Vec<Vec<u8>> = rows[..rows.len() - 1]
            .iter()
            .map(|r| r.payload.to_vec())
            .collect();
        seen.push(format!("rows {values:?}"));
    }
    seen
}

#[tokio::test]
async fn an_execute_may_name_the_statement_just_prepared() {
    let t = sluice_tests::Topology::from_env();
    let direct = prepare_then_execute_last(t.primary_port()).await;
    assert!(
        direct[1].starts_with("rows") && direct[3].starts_with("execute error"),
        "the server runs the statement just prepared, and none after a failed prepare: {direct:?}"
    );
    for mode in ["primary_only", "split"] {
        let s = Sluice::start_with(SluiceOptions {
            routing_mode: mode,
            ..SluiceOptions::default()
        });
        assert_eq!(prepare_then_execute_last(s.port).await, direct, "{mode}");
    }
}

/// The server resolves a prepared statement's table names in the schema
/// that was current when it was prepared. Two clients in two databases
/// running the same text over one backend connection must each reach
/// their own tables.
#[tokio::test]
async fn prepared_statements_run_in_each_clients_own_schema() {
    let t = sluice_tests::Topology::from_env();
    let mut setup = mysql_async::Conn::new(sluice_tests::direct_opts(&t.primary))
        .await
        .unwrap();
    for db in ["stmt_db_a", "stmt_db_b"] {
        setup
            .query_drop(format!(
                "CREATE DATABASE IF NOT EXISTS {db}; CREATE OR REPLACE TABLE {db}.t (v VARCHAR(20))"
            ))
            .await
            .unwrap();
    }
    sluice_tests::replicas_caught_up().await;
    let in_db = |opts: mysql_async::Opts, db: &str| -> mysql_async::Opts {
        mysql_async::OptsBuilder::from_opts(opts).db_name(Some(db)).into()
    };
    for mode in ["primary_only", "split"] {
        let s = Sluice::start_with(SluiceOptions {
            routing_mode: mode,
            max_connections_per_backend: 1,
            routing_extra: "read_your_writes = \"primary_window\"".into(),
            ..SluiceOptions::default()
        });
        let mut a = mysql_async::Conn::new(in_db(s.opts(), "stmt_db_a"))
            .await
            .unwrap();
        let mut b = mysql_async::Conn::new(in_db(s.opts(), "stmt_db_b"))
            .await
            .unwrap();
        for round in 0..3 {
            for (c, me) in [(&mut a, "a"), (&mut b, "b")] {
                c.exec_drop("INSERT INTO t VALUES (?)", (format!("{mode}-{me}-{round}"),))
                    .await
                    .unwrap();
                let schema: Option<String> = c.exec_first("SELECT DATABASE()", ()).await.unwrap();
                assert_eq!(schema.as_deref(), Some(format!("stmt_db_{me}").as_str()));
            }
        }
        for (db, me) in [("stmt_db_a", "a"), ("stmt_db_b", "b")] {
            let rows: Vec<String> = setup
                .query(format!("SELECT v FROM {db}.t WHERE v LIKE '{mode}-%' ORDER BY v"))
                .await
                .unwrap();
            let want: Vec<String> = (0..3).map(|r| format!("{mode}-{me}-{r}")).collect();
            assert_eq!(
                rows, want,
                "{mode}: each client's prepared INSERT wrote its own {db}.t"
            );
        }
        // Reads too (on the primary, within the write window), taking turns.
        for turn in 0..4 {
            let (c, me) = if turn % 2 == 0 {
                (&mut a, "a")
            } else {
                (&mut b, "b")
            };
            let first: Option<String> = c
                .exec_first(
                    "SELECT v FROM t WHERE v LIKE ? ORDER BY v LIMIT 1",
                    (format!("{mode}-%"),),
                )
                .await
                .unwrap();
            assert_eq!(
                first,
                Some(format!("{mode}-{me}-0")),
                "{mode}: {me} read its own table"
            );
        }
    }
}

/// One client's view of statements prepared before it changed its schema.
async fn prepared_then_schema_changed(opts: mysql_async::Opts, tag: &str) -> Vec<String> {
    let opts: mysql_async::Opts = mysql_async::OptsBuilder::from_opts(opts)
        .db_name(Some("stmt_db_a"))
        .into();
    let mut c = mysql_async::Conn::new(opts).await.unwrap();
    let count = c.prep("SELECT COUNT(*) FROM t").await.unwrap();
    let insert = c.prep("INSERT INTO t VALUES (?)").await.unwrap();
    let database = c.prep("SELECT DATABASE()").await.unwrap();
    let mut out = Vec::new();
    let n: Option<u64> = c.exec_first(&count, ()).await.unwrap();
    out.push(format!("count in a: {n:?}"));
    c.query_drop("USE stmt_db_b").await.unwrap();
    let n: Option<u64> = c.exec_first(&count, ()).await.unwrap();
    out.push(format!("count after USE b: {n:?}"));
    c.exec_drop(&insert, (format!("{tag}-after-use"),)).await.unwrap();
    let db: Option<String> = c.exec_first(&database, ()).await.unwrap();
    out.push(format!("DATABASE() prepared in a: {db:?}"));
    let db: Option<String> = c.exec_first("SELECT DATABASE() AS now", ()).await.unwrap();
    out.push(format!("DATABASE() prepared in b: {db:?}"));
    out
}

/// The server resolves a prepared statement's names in the schema current
/// when it was prepared, for good: after `USE b`, a statement prepared in
/// `a` still reads and writes `a`'s tables (JDBC's `setCatalog` with
/// server-side prepared statements). Through Sluice it ran in `b`.
#[tokio::test]
async fn a_prepared_statement_keeps_the_schema_it_was_prepared_in() {
    let t = sluice_tests::Topology::from_env();
    let mut setup = mysql_async::Conn::new(sluice_tests::direct_opts(&t.primary))
        .await
        .unwrap();
    let reset = "CREATE DATABASE IF NOT EXISTS stmt_db_a; CREATE DATABASE IF NOT EXISTS stmt_db_b; \
                 CREATE OR REPLACE TABLE stmt_db_a.t (v VARCHAR(40)); \
                 CREATE OR REPLACE TABLE stmt_db_b.t (v VARCHAR(40)); \
                 INSERT INTO stmt_db_a.t VALUES ('a1'); \
                 INSERT INTO stmt_db_b.t VALUES ('b1'), ('b2'), ('b3')";
    let rows_of = |db: &str| format!("SELECT v FROM {db}.t ORDER BY v");
    setup.query_drop(reset).await.unwrap();
    let expected = prepared_then_schema_changed(sluice_tests::direct_opts(&t.primary), "x").await;
    let expected_rows: (Vec<String>, Vec<String>) = (
        setup.query(rows_of("stmt_db_a")).await.unwrap(),
        setup.query(rows_of("stmt_db_b")).await.unwrap(),
    );
    assert_eq!(
        expected[1], "count after USE b: Some(1)",
        "the server's own answer"
    );
    for mode in ["primary_only", "split"] {
        setup.query_drop(reset).await.unwrap();
        sluice_tests::replicas_caught_up().await;
        let s = Sluice::start_with(SluiceOptions {
            routing_mode: mode,
            max_connections_per_backend: 1,
            ..SluiceOptions::default()
        });
        let through = prepared_then_schema_changed(s.opts(), "x").await;
        assert_eq!(through, expected, "{mode}");
        let rows: (Vec<String>, Vec<String>) = (
            setup.query(rows_of("stmt_db_a")).await.unwrap(),
            setup.query(rows_of("stmt_db_b")).await.unwrap(),
        );
        assert_eq!(
            rows, expected_rows,
            "{mode}: the INSERT wrote where the server's did"
        );
    }
}
