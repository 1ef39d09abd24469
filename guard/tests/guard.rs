//! The guard against the running topology (`scripts/test.sh` sets
//! SLUICE_TEST_PRIMARY; without it every test says so and passes). Each test
//! owns a `guard_test_<name>` database and a Guard with its own server_id.

mod common;

use common::{INSTANCE, conn, fresh_db, guard, primary, ready, table_toml, wait_for, write};
use mysql_async::prelude::Queryable;
use sluice_guard::{Guard, KeyKind};
use sluice_router::GtidPos;
use sluice_router::guard_key::{encode_bytes, encode_int};
use std::sync::Arc;
use std::time::Instant;

async fn covered(g: &Arc<Guard>, gtid: &GtidPos) {
    wait_for(&format!("applied covers {gtid}"), 30, || g.applied().covers(gtid)).await;
}

fn int(v: i128) -> Vec<u8> {
    let mut out = Vec::new();
    encode_int(v, &mut out);
    out
}

fn bytes(pad: bool, b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_bytes(pad, b, &mut out);
    out
}

fn state(g: &Guard, table: &str) -> String {
    g.table_status(table)
        .and_then(|s| s.get("state").and_then(|v| v.as_str()).map(str::to_string))
        .unwrap_or_default()
}

fn status_u64(g: &Guard, table: &str, field: &str) -> u64 {
    g.table_status(table)
        .and_then(|s| s.get(field).and_then(|v| v.as_u64()))
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_every_kind_of_write() {
    let Some(p) = primary() else { return };
    let mut c = conn(&p).await;
    let db = "guard_test_writes";
    fresh_db(&mut c, db).await;
    c.query_drop("CREATE TABLE t (id INT UNSIGNED PRIMARY KEY, v VARCHAR(20), u INT UNIQUE)")
        .await
        .unwrap();
    c.query_drop("CREATE TABLE o (id BIGINT PRIMARY KEY)")
        .await
        .unwrap();
    c.query_drop("CREATE TABLE src (id INT UNSIGNED PRIMARY KEY)")
        .await
        .unwrap();
    c.query_drop("INSERT INTO t (id, v) SELECT seq, 'x' FROM seq_1_to_1000")
        .await
        .unwrap();
    c.query_drop("INSERT INTO src SELECT seq FROM seq_5001_to_5010")
        .await
        .unwrap();
    let tables = table_toml(&format!("{db}.t"), "id", "") + &table_toml(&format!("{db}.o"), "id", "");
    let g = guard(&p, 7101, &tables, "", "");
    let t = ready(&g, db, "t").await;
    let o = ready(&g, db, "o").await;
    assert_eq!(
        t.kind(),
        &KeyKind::Integer {
            unsigned: true,
            bytes: 4
        }
    );
    assert_eq!(t.key_column(), "id");
    assert!((1..=1000).all(|k| t.may_contain(&int(k))), "every scanned key");
    let mut last = write(&mut c, "INSERT INTO t (id) VALUES (2001)").await;
    last.merge(&write(&mut c, "INSERT INTO t (id) VALUES (2002), (2003), (4294967295)").await);
    last.merge(&write(&mut c, "INSERT INTO t (id) SELECT id FROM src").await);
    last.merge(&write(&mut c, "UPDATE t SET id = 3001 WHERE id = 1").await);
    last.merge(&write(&mut c, "REPLACE INTO t (id, v) VALUES (3002, 'r'), (2, 'r')").await);
    last.merge(
        &write(
            &mut c,
            "INSERT INTO t (id) VALUES (3003) ON DUPLICATE KEY UPDATE v = 'd'",
        )
        .await,
    );
    last.merge(
        &write(
            &mut c,
            "INSERT INTO t (id) VALUES (3) ON DUPLICATE KEY UPDATE id = 3004",
        )
        .await,
    );
    let file = std::env::temp_dir().join("guard_test_load.txt");
    std::fs::write(&file, "3005\tl\n3006\tl\n").unwrap();
    last.merge(
        &write(
            &mut c,
            &format!("LOAD DATA LOCAL INFILE '{}' INTO TABLE t (id, v)", file.display()),
        )
        .await,
    );
    c.query_drop("BEGIN").await.unwrap();
    c.query_drop("INSERT INTO t (id) VALUES (3007)").await.unwrap();
    c.query_drop("INSERT INTO o (id) VALUES (-5), (9223372036854775807)")
        .await
        .unwrap();
    last.merge(&write(&mut c, "COMMIT").await);
    covered(&g, &last).await;
    // The live filter may have been swapped meanwhile: look it up again.
    let t = g.table(db, "t").expect("t");
    for k in [
        2001,
        2002,
        2003,
        4_294_967_295,
        5001,
        5010,
        3001,
        3002,
        2,
        3003,
        3004,
        3005,
        3006,
        3007,
    ] {
        assert!(t.may_contain(&int(k)), "key {k} after its write");
    }
    assert!(o.may_contain(&int(-5)) && o.may_contain(&int(9_223_372_036_854_775_807)));
    let absent = (10_000_000..10_010_000)
        .filter(|k| t.may_contain(&int(*k)))
        .count();
    assert!(absent < 500, "{absent} of 10000 absent keys seem present");
    let status = g.status();
    assert_eq!(status["connected"], true, "{status}");
    assert!(
        status["tables"][format!("{db}.t")]["keys"].as_u64().unwrap_or(0) >= 1000,
        "{status}"
    );
    g.shutdown();
    assert!(!t.ready());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn false_positive_rate_and_build_time() {
    let Some(p) = primary() else { return };
    let mut c = conn(&p).await;
    let db = "guard_test_fpr";
    fresh_db(&mut c, db).await;
    let n: i128 = 200_000;
    c.query_drop("CREATE TABLE t (id BIGINT PRIMARY KEY)")
        .await
        .unwrap();
    c.query_drop(format!("INSERT INTO t SELECT seq FROM seq_1_to_{n}"))
        .await
        .unwrap();
    let start = Instant::now();
    let g = guard(
        &p,
        7102,
        &table_toml(&format!("{db}.t"), "id", "false_positive_rate = 0.01"),
        "",
        "",
    );
    let t = ready(&g, db, "t").await;
    let built = start.elapsed();
    assert!((1..=n).all(|k| t.may_contain(&int(k))));
    let probes = 100_000;
    let fp = (0..probes)
        .filter(|i| t.may_contain(&int(1_000_000_000 + i)))
        .count();
    let rate = fp as f64 / probes as f64;
    eprintln!(
        "guard: {n} keys ready in {built:?} (build {} ms), {} bytes, measured fpr {rate:.4} (configured 0.01, expected_keys {})",
        status_u64(&g, &format!("{db}.t"), "build_ms"),
        t.memory_bytes(),
        status_u64(&g, &format!("{db}.t"), "expected_keys"),
    );
    assert!(rate <= 0.015, "false positive rate {rate}");
    // Sized exactly for n keys, the rate is near the configured one.
    let g2 = guard(
        &p,
        7103,
        &table_toml(
            &format!("{db}.t"),
            "id",
            &format!("false_positive_rate = 0.01\nexpected_keys = {n}"),
        ),
        "",
        "",
    );
    let t2 = ready(&g2, db, "t").await;
    let fp = (0..probes)
        .filter(|i| t2.may_contain(&int(1_000_000_000 + i)))
        .count();
    let rate = fp as f64 / probes as f64;
    eprintln!(
        "guard: sized for {n}: measured fpr {rate:.4}, {} bytes",
        t2.memory_bytes()
    );
    assert!(rate <= 0.015, "false positive rate {rate}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn string_keys() {
    let Some(p) = primary() else { return };
    let mut c = conn(&p).await;
    let db = "guard_test_strings";
    fresh_db(&mut c, db).await;
    c.query_drop("CREATE TABLE b (k VARBINARY(16) PRIMARY KEY)")
        .await
        .unwrap();
    c.query_drop(
        "CREATE TABLE s (id INT PRIMARY KEY, k VARCHAR(20) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin UNIQUE)",
    )
    .await
    .unwrap();
    c.query_drop("INSERT INTO b VALUES (x'00ff'), ('ab ')")
        .await
        .unwrap();
    c.query_drop("INSERT INTO s VALUES (1, 'héllo'), (2, 'pad  '), (3, NULL)")
        .await
        .unwrap();
    let tables = table_toml(&format!("{db}.b"), "k", "") + &table_toml(&format!("{db}.s"), "k", "");
    let g = guard(&p, 7104, &tables, "", "");
    let b = ready(&g, db, "b").await;
    let s = ready(&g, db, "s").await;
    assert_eq!(
        s.kind(),
        &KeyKind::Bytes {
            pad_space: true,
            charset: "utf8mb4".into()
        }
    );
    assert_eq!(
        b.kind(),
        &KeyKind::Bytes {
            pad_space: false,
            charset: "binary".into()
        }
    );
    assert!(b.may_contain(&bytes(false, b"\x00\xff")) && b.may_contain(&bytes(false, b"ab ")));
    assert!(s.may_contain(&bytes(true, "héllo".as_bytes())) && s.may_contain(&bytes(true, b"pad")));
    let mut last = write(&mut c, "INSERT INTO b VALUES (x'0000'), ('zz  ')").await;
    last.merge(&write(&mut c, "INSERT INTO s VALUES (4, 'Straße'), (5, 'tail ')").await);
    last.merge(&write(&mut c, "UPDATE s SET k = 'Changed' WHERE id = 1").await);
    covered(&g, &last).await;
    // Only a ready table answers; another test's DDL that names a `b` or
    // an `s` rebuilds these (the guard errs on the safe side), so wait.
    let (b, s) = (ready(&g, db, "b").await, ready(&g, db, "s").await);
    assert!(b.may_contain(&bytes(false, b"\x00\x00")) && b.may_contain(&bytes(false, b"zz  ")));
    assert!(s.may_contain(&bytes(true, "Straße".as_bytes())));
    assert!(s.may_contain(&bytes(true, b"tail")) && s.may_contain(&bytes(true, b"Changed")));
    assert!(
        !s.may_contain(&bytes(true, b"never-inserted-key-xyz")) || !s.may_contain(&bytes(true, b"nope-2"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_tables_it_cannot_guard() {
    let Some(p) = primary() else { return };
    let mut c = conn(&p).await;
    let db = "guard_test_refuse";
    fresh_db(&mut c, db).await;
    c.query_drop("CREATE TABLE ci (k VARCHAR(20) COLLATE utf8mb4_general_ci PRIMARY KEY)")
        .await
        .unwrap();
    c.query_drop("CREATE TABLE nu (id INT PRIMARY KEY, v INT, KEY (v))")
        .await
        .unwrap();
    c.query_drop("CREATE TABLE two (a INT, b INT, PRIMARY KEY (a, b))")
        .await
        .unwrap();
    c.query_drop("CREATE TABLE ok (id INT PRIMARY KEY)")
        .await
        .unwrap();
    let cases = [
        ("ci", "k", "collation utf8mb4_general_ci is case-insensitive"),
        (
            "nu",
            "v",
            "is not the only column of the PRIMARY KEY or of a UNIQUE index",
        ),
        ("two", "a", "is not the only column"),
        ("ok", "missing", "has no column `missing`"),
        ("absent", "id", "does not exist"),
    ];
    let mut tables = String::new();
    for (i, (t, k, why)) in cases.iter().enumerate() {
        let cfg = sluice_config::GuardTableConfig {
            table: format!("{db}.{t}"),
            key: k.to_string(),
            false_positive_rate: 0.01,
            expected_keys: None,
        };
        let err = sluice_guard::verify_indexed(&mut c, i, &cfg)
            .await
            .expect_err("refused");
        assert!(err.contains(why), "{err}");
        assert!(err.starts_with(&format!("guard.tables[{i}].")), "{err}");
        tables += &table_toml(&format!("{db}.{t}"), k, "");
    }
    let g = guard(&p, 7105, &tables, "", "");
    for (t, _, why) in cases {
        let name = format!("{db}.{t}");
        wait_for("refused", 30, || state(&g, &name) == "refused").await;
        let reason = g.table_status(&name).unwrap()["reason"]
            .as_str()
            .unwrap_or("")
            .to_string();
        assert!(reason.contains(why), "{reason}");
        assert!(g.table(db, t).is_none());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ddl_rebuilds_and_keys_move_with_the_column() {
    let Some(p) = primary() else { return };
    let mut c = conn(&p).await;
    let db = "guard_test_ddl";
    fresh_db(&mut c, db).await;
    c.query_drop("CREATE TABLE t (id INT PRIMARY KEY, v INT)")
        .await
        .unwrap();
    c.query_drop("INSERT INTO t VALUES (1, 10), (2, 20)")
        .await
        .unwrap();
    let g = guard(
        &p,
        7106,
        &table_toml(&format!("{db}.t"), "id", "false_positive_rate = 0.0001"),
        "",
        "",
    );
    let t = ready(&g, db, "t").await;
    let generation = t.ddl_generation();
    let ddl = write(&mut c, "ALTER TABLE t ADD COLUMN pre VARCHAR(10) FIRST").await;
    covered(&g, &ddl).await;
    assert!(
        !t.ready(),
        "the pre-DDL filter is not ready once the DDL is applied"
    );
    assert!(t.ddl_generation() > generation);
    let ins = write(&mut c, "INSERT INTO t (pre, id, v) VALUES ('x', 77, 1)").await;
    let t2 = ready(&g, db, "t").await;
    covered(&g, &ins).await;
    let t2 = if t2.ready() { g.table(db, "t").unwrap() } else { t2 };
    assert!(t2.may_contain(&int(1)) && t2.may_contain(&int(77)));
    let ins = write(&mut c, "INSERT INTO t (pre, id, v) VALUES ('y', 78, 1)").await;
    covered(&g, &ins).await;
    assert!(
        g.table(db, "t").unwrap().may_contain(&int(78)),
        "a key at the new ordinal"
    );
    // TRUNCATE: a rebuild that sheds every key.
    let generation = g.table(db, "t").unwrap().ddl_generation();
    let tr = write(&mut c, "TRUNCATE TABLE t").await;
    covered(&g, &tr).await;
    wait_for("rebuilt after TRUNCATE", 60, || {
        g.table(db, "t")
            .is_some_and(|t| t.ready() && t.ddl_generation() > generation && !t.may_contain(&int(77)))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_format_write_disables_then_rebuilds() {
    let Some(p) = primary() else { return };
    let mut c = conn(&p).await;
    let db = "guard_test_stmt";
    fresh_db(&mut c, db).await;
    c.query_drop("CREATE TABLE t (id INT PRIMARY KEY)").await.unwrap();
    let g = guard(&p, 7107, &table_toml(&format!("{db}.t"), "id", ""), "", "");
    let t = ready(&g, db, "t").await;
    let rebuilds = status_u64(&g, &format!("{db}.t"), "rebuilds");
    c.query_drop("SET SESSION binlog_format = STATEMENT")
        .await
        .unwrap();
    let w = write(&mut c, "INSERT INTO t VALUES (42)").await;
    c.query_drop("SET SESSION binlog_format = ROW").await.unwrap();
    covered(&g, &w).await;
    assert!(!t.ready(), "disabled before the write's position was published");
    wait_for("rebuilt", 60, || {
        g.table(db, "t").is_some_and(|t| t.ready())
            && status_u64(&g, &format!("{db}.t"), "rebuilds") > rebuilds
    })
    .await;
    assert!(
        g.table(db, "t").unwrap().may_contain(&int(42)),
        "the scan found the statement's row"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interval_rebuild_sheds_deleted_keys() {
    let Some(p) = primary() else { return };
    let mut c = conn(&p).await;
    let db = "guard_test_interval";
    fresh_db(&mut c, db).await;
    c.query_drop("CREATE TABLE t (id INT PRIMARY KEY)").await.unwrap();
    c.query_drop("INSERT INTO t VALUES (1), (2)").await.unwrap();
    let g = guard(
        &p,
        7108,
        &table_toml(&format!("{db}.t"), "id", "false_positive_rate = 0.0001"),
        "rebuild_interval_ms = 300",
        "",
    );
    ready(&g, db, "t").await;
    let d = write(&mut c, "DELETE FROM t WHERE id = 1").await;
    covered(&g, &d).await;
    wait_for("a rebuild without key 1", 60, || {
        g.table(db, "t")
            .is_some_and(|t| t.ready() && !t.may_contain(&int(1)) && t.may_contain(&int(2)))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_position_rebuilds_everything() {
    let Some(p) = primary() else { return };
    let mut c = conn(&p).await;
    let db = "guard_test_lost";
    fresh_db(&mut c, db).await;
    c.query_drop("CREATE TABLE t (id INT PRIMARY KEY)").await.unwrap();
    c.query_drop("INSERT INTO t VALUES (5)").await.unwrap();
    let g = guard(&p, 7109, &table_toml(&format!("{db}.t"), "id", ""), "", "");
    let t = ready(&g, db, "t").await;
    let rebuilds = status_u64(&g, &format!("{db}.t"), "rebuilds");
    // A position beyond the server's binlog: the server answers 1236, as for a purged one.
    let mut ahead = GtidPos::clone(&g.applied());
    ahead.advance(0, 1, 4_000_000_000);
    g.debug_resume_from(ahead.clone());
    wait_for("not ready after the lost position", 30, || !t.ready()).await;
    wait_for("rebuilt", 60, || {
        g.table(db, "t").is_some_and(|t| t.ready())
            && status_u64(&g, &format!("{db}.t"), "rebuilds") > rebuilds
            && !g.applied().covers(&ahead)
    })
    .await;
    let w = write(&mut c, "INSERT INTO t VALUES (6)").await;
    covered(&g, &w).await;
    let t = g.table(db, "t").unwrap();
    assert!(t.may_contain(&int(5)) && t.may_contain(&int(6)));
    assert!(g.connected());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_rows_and_memory_limit() {
    let Some(p) = primary() else { return };
    let mut c = conn(&p).await;
    let db = "guard_test_hb";
    fresh_db(&mut c, db).await;
    c.query_drop("CREATE TABLE heartbeat (id INT UNSIGNED PRIMARY KEY, ts BIGINT UNSIGNED NOT NULL)")
        .await
        .unwrap();
    c.query_drop("CREATE TABLE big (id INT PRIMARY KEY)")
        .await
        .unwrap();
    c.query_drop("CREATE TABLE small (id INT PRIMARY KEY)")
        .await
        .unwrap();
    let tables = table_toml(&format!("{db}.big"), "id", "expected_keys = 100000000")
        + &table_toml(&format!("{db}.small"), "id", "");
    let g = guard(&p, 7110, &tables, "max_memory_mb = 2", &format!("{db}.heartbeat"));
    ready(&g, db, "small").await;
    wait_for("memory_limit", 30, || {
        state(&g, &format!("{db}.big")) == "memory_limit"
    })
    .await;
    assert!(g.table(db, "big").is_none());
    let ts = 1_700_000_000_123_456u64;
    let me = sluice_config::instance_id(INSTANCE);
    let w = write(
        &mut c,
        &format!("INSERT INTO heartbeat VALUES ({me}, {ts}) ON DUPLICATE KEY UPDATE ts = VALUES(ts)"),
    )
    .await;
    covered(&g, &w).await;
    assert_eq!(g.last_heartbeat_us(), Some(ts));
    // Another instance's row (its clock ahead) is not this one's heartbeat.
    let other = me.wrapping_add(1);
    let w = write(
        &mut c,
        &format!(
            "INSERT INTO heartbeat VALUES ({other}, {}) ON DUPLICATE KEY UPDATE ts = VALUES(ts)",
            ts + 1_000_000
        ),
    )
    .await;
    covered(&g, &w).await;
    assert_eq!(g.last_heartbeat_us(), Some(ts));
    let w = write(
        &mut c,
        &format!("UPDATE heartbeat SET ts = {} WHERE id = {me}", ts + 1),
    )
    .await;
    covered(&g, &w).await;
    assert_eq!(g.last_heartbeat_us(), Some(ts + 1));
}
