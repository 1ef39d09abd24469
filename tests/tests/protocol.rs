//! The commands of the MySQL protocol through Sluice with a real driver
//! (mysql_async): text and binary protocol, multi-statements, multi-result
//! CALL, large packets, LOAD DATA LOCAL, ping, reset, change user, init db.

use mysql_async::prelude::*;
use mysql_async::{Conn, OptsBuilder, Row, Value};
use sluice_tests::{Sluice, Topology, direct_opts};

async fn connect(s: &Sluice) -> Conn {
    Conn::new(s.opts()).await.expect("connect through sluice")
}

#[tokio::test]
async fn text_and_binary_protocol() {
    let s = Sluice::start();
    let mut c = connect(&s).await;
    let (v, n): (String, i64) = c.query_first("SELECT version(), 1+1").await.unwrap().unwrap();
    assert!(v.contains("MariaDB"), "advertises the primary's version: {v}");
    assert_eq!(n, 2);
    // The version in the handshake is the primary's real one.
    let direct = Conn::new(direct_opts(&Topology::from_env().primary))
        .await
        .unwrap();
    assert_eq!(c.server_version(), direct.server_version());

    c.query_drop("DROP TABLE IF EXISTS proto_t").await.unwrap();
    c.query_drop("CREATE TABLE proto_t (id INT PRIMARY KEY AUTO_INCREMENT, name VARCHAR(50), score DOUBLE, at DATETIME(6), data BLOB)")
        .await
        .unwrap();
    let stmt = c
        .prep("INSERT INTO proto_t (name, score, at, data) VALUES (?, ?, ?, ?)")
        .await
        .unwrap();
    for i in 0..20 {
        c.exec_drop(
            &stmt,
            (
                format!("n{i}"),
                i as f64 * 1.5,
                "2024-01-02 03:04:05.123456",
                vec![i as u8; 10],
            ),
        )
        .await
        .unwrap();
    }
    assert_eq!(c.last_insert_id(), Some(20));
    let rows: Vec<(i32, String, f64, Value, Vec<u8>)> = c
        .exec(
            "SELECT id, name, score, at, data FROM proto_t WHERE id > ? ORDER BY id",
            (15,),
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 5);
    assert_eq!(rows[0].1, "n15");
    assert_eq!(rows[0].2, 22.5);
    assert_eq!(rows[4].4, vec![19u8; 10]);
    // NULLs in the binary protocol.
    let r: Vec<Row> = c
        .exec("SELECT NULL, ?, CAST(? AS CHAR)", (Value::NULL, 5))
        .await
        .unwrap();
    assert_eq!(r[0].get::<Option<i32>, _>(0).unwrap(), None);
    assert_eq!(r[0].get::<Option<String>, _>(2).unwrap().as_deref(), Some("5"));
    c.close(stmt).await.unwrap();
    c.disconnect().await.unwrap();
    direct.disconnect().await.unwrap();
}

#[tokio::test]
async fn multi_statements_and_multi_results() {
    let s = Sluice::start();
    let mut c = connect(&s).await;
    let mut result = c
        .query_iter("SELECT 1; SELECT 2, 3; DO 1; SELECT 'x'")
        .await
        .unwrap();
    let mut sets = Vec::new();
    while !result.is_empty() {
        let rows: Vec<Row> = result.collect().await.unwrap();
        sets.push(rows.len());
    }
    drop(result);
    assert_eq!(sets, vec![1, 1, 0, 1]);

    c.query_drop("DROP PROCEDURE IF EXISTS proto_multi")
        .await
        .unwrap();
    c.query_drop("CREATE PROCEDURE proto_multi() BEGIN SELECT 1 AS a; SELECT 2 AS b, 3 AS c; END")
        .await
        .unwrap();
    let mut result = c.query_iter("CALL proto_multi()").await.unwrap();
    let first: Vec<(i32,)> = result.collect().await.unwrap();
    let second: Vec<(i32, i32)> = result.collect().await.unwrap();
    drop(result);
    assert_eq!(first, vec![(1,)]);
    assert_eq!(second, vec![(2, 3)]);
    // The connection is still in step afterwards.
    let one: Option<i32> = c.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1));
    c.disconnect().await.unwrap();
}

#[tokio::test]
async fn blob_of_20_mb_round_trips() {
    let s = Sluice::start();
    let mut c = connect(&s).await;
    c.query_drop("DROP TABLE IF EXISTS proto_blob").await.unwrap();
    c.query_drop("CREATE TABLE proto_blob (id INT PRIMARY KEY, b LONGBLOB)")
        .await
        .unwrap();
    let blob: Vec<u8> = (0..20 * 1024 * 1024).map(|i| (i * 7 % 251) as u8).collect();
    c.exec_drop("INSERT INTO proto_blob VALUES (1, ?)", (blob.clone(),))
        .await
        .unwrap();
    let back: Vec<u8> = c
        .exec_first("SELECT b FROM proto_blob WHERE id = ?", (1,))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back.len(), blob.len());
    assert!(back == blob, "blob differs after round trip");
    // The text protocol too (a row larger than one 16 MiB packet).
    let back: Vec<u8> = c
        .query_first("SELECT b FROM proto_blob WHERE id = 1")
        .await
        .unwrap()
        .unwrap();
    assert!(back == blob, "blob differs in the text protocol");
    c.query_drop("DROP TABLE proto_blob").await.unwrap();
    c.disconnect().await.unwrap();
}

#[tokio::test]
async fn load_data_local_infile() {
    let s = Sluice::start();
    let path = s.dir.join("load.csv");
    let body: String = (1..=1000).map(|i| format!("{i},name{i}\n")).collect();
    std::fs::write(&path, body).unwrap();
    let opts = OptsBuilder::from_opts(s.opts())
        .local_infile_handler(Some(mysql_async::WhiteListFsHandler::new(vec![path.clone()])));
    let mut c = Conn::new(opts).await.unwrap();
    c.query_drop("DROP TABLE IF EXISTS proto_load").await.unwrap();
    c.query_drop("CREATE TABLE proto_load (id INT PRIMARY KEY, name VARCHAR(20))")
        .await
        .unwrap();
    c.query_drop(format!(
        "LOAD DATA LOCAL INFILE '{}' INTO TABLE proto_load FIELDS TERMINATED BY ','",
        path.display()
    ))
    .await
    .unwrap();
    assert_eq!(c.affected_rows(), 1000);
    assert!(c.info().contains("Records: 1000"), "{}", c.info());
    let n: Option<i64> = c.query_first("SELECT COUNT(*) FROM proto_load").await.unwrap();
    assert_eq!(n, Some(1000));
    c.disconnect().await.unwrap();
}

#[tokio::test]
async fn ping_reset_change_user_and_init_db() {
    let s = Sluice::start();
    sluice_tests::ensure_other_user().await;
    let mut c = connect(&s).await;
    c.ping().await.unwrap();
    c.query_drop("SET SESSION sql_mode = 'ANSI_QUOTES'")
        .await
        .unwrap();
    assert!(c.reset().await.unwrap(), "COM_RESET_CONNECTION is supported");
    let mode: Option<String> = c.query_first("SELECT @@SESSION.sql_mode").await.unwrap();
    assert!(
        !mode.unwrap().contains("ANSI_QUOTES"),
        "reset restores session variables"
    );

    c.query_drop("CREATE DATABASE IF NOT EXISTS sluice_other")
        .await
        .unwrap();
    c.query_drop("USE sluice_other").await.unwrap();
    let db: Option<String> = c.query_first("SELECT DATABASE()").await.unwrap();
    assert_eq!(db.as_deref(), Some("sluice_other"));

    c.change_user(
        mysql_async::ChangeUserOpts::default()
            .with_user(Some("other".into()))
            .with_pass(Some("secret-other-pw".into()))
            .with_db_name(Some("sluice_test".into())),
    )
    .await
    .expect("change user to another configured user");
    let (db, user): (String, String) = c
        .query_first("SELECT DATABASE(), CURRENT_USER()")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(db, "sluice_test");
    assert!(
        user.starts_with("other@"),
        "backend sessions run as the new user: {user}"
    );

    let bad = c
        .change_user(
            mysql_async::ChangeUserOpts::default()
                .with_user(Some("app".into()))
                .with_pass(Some("wrong".into())),
        )
        .await;
    assert!(bad.is_err(), "wrong password on change user is refused");
}

/// A refused COM_CHANGE_USER (a wrong password, or a schema that does not
/// exist) leaves the connection open, as the previous user, reset, in the
/// schema it was in: the same answers directly and through Sluice.
async fn refused_change_user_transcript(opts: mysql_async::Opts) -> Vec<String> {
    let mut c = mysql_async::Conn::new(opts).await.unwrap();
    let mut seen = Vec::new();
    // The charset too: the server drops the client's for its own.
    let state = "SELECT CONCAT_WS(' ', IFNULL(@x, 'no @x'), @@time_zone, @@character_set_client, \
                 @@collation_connection, DATABASE(), CURRENT_USER())";
    for attempt in [
        // Another user with a wrong password: the connection stays app's.
        mysql_async::ChangeUserOpts::default()
            .with_user(Some("other".into()))
            .with_pass(Some("wrong".into())),
        mysql_async::ChangeUserOpts::default()
            .with_user(Some("app".into()))
            .with_pass(Some("app".into()))
            .with_db_name(Some("no_such_db_for_change_user".into())),
    ] {
        c.query_drop("SET @x = 5, time_zone = '+03:00'").await.unwrap();
        seen.push(match c.change_user(attempt).await {
            Ok(()) => "changed".to_string(),
            Err(mysql_async::Error::Server(e)) => format!("error {}", e.code),
            Err(e) => format!("failed: {e}"),
        });
        let now: Result<Option<String>, _> = c.query_first(state).await;
        seen.push(match now {
            Ok(v) => v.unwrap_or_default(),
            Err(e) => format!("failed: {e}"),
        });
    }
    seen
}

#[tokio::test]
async fn a_refused_change_user_keeps_the_previous_user() {
    sluice_tests::ensure_other_user().await;
    let t = sluice_tests::Topology::from_env();
    let direct_opts: mysql_async::Opts =
        mysql_async::OptsBuilder::from_opts(sluice_tests::direct_opts(&t.primary))
            .db_name(Some("sluice_test"))
            .into();
    let direct = refused_change_user_transcript(direct_opts).await;
    assert_eq!(direct[0], "error 1045", "{direct:?}");
    assert_eq!(direct[2], "error 1049", "{direct:?}");
    assert!(
        direct[1].ends_with("app@%"),
        "still the previous user: {direct:?}"
    );
    let s = Sluice::start();
    let through = refused_change_user_transcript(s.opts()).await;
    assert_eq!(through, direct);
}
