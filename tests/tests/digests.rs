//! Query digests end to end: `GET /digests`, `POST /digests/reset` and
//! `sluice top --once` against a real Sluice in front of the MariaDB test
//! topology, with mysql_async clients (text and prepared statements).
//! A statement is recorded right after its answer is sent, so every check
//! waits for the counts it expects instead of sleeping.

use mysql_async::Conn;
use mysql_async::prelude::*;
use serde_json::Value;
use sluice_tests::{Sluice, SluiceOptions, Topology, direct_opts, http_request, sluice_bin, wait_until};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(20);

/// One HTTP request to the admin endpoint: (status code, body).
fn http(s: &Sluice, method: &str, path: &str) -> (u16, String) {
    let answer =
        http_request(s.admin_port, method, path, &[]).expect("an HTTP answer from the admin endpoint");
    (answer.status, answer.body)
}

fn digests(s: &Sluice, query: &str) -> Value {
    let (code, body) = http(s, "GET", &format!("/digests{query}"));
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

fn rows(view: &Value) -> Vec<Value> {
    view["digests"].as_array().cloned().unwrap_or_default()
}

/// The row whose fingerprint is exactly `text`.
fn row(view: &Value, text: &str) -> Option<Value> {
    rows(view).into_iter().find(|r| r["fingerprint"] == text)
}

fn count(view: &Value, text: &str) -> u64 {
    row(view, text).map_or(0, |r| r["count"].as_u64().unwrap())
}

/// Waits until `text` has been counted `n` times, and returns the view.
async fn wait_count(s: &Sluice, text: &str, n: u64) -> Value {
    let deadline = std::time::Instant::now() + LIMIT;
    loop {
        let view = digests(s, "");
        if count(&view, text) >= n {
            assert_eq!(count(&view, text), n, "{text}: {view}");
            return view;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting until `{text}` is counted {n} times: {view}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn route(row: &Value, name: &str) -> u64 {
    row["routes"][name].as_u64().unwrap()
}

/// A table on the primary, with rows, that both replicas have applied.
async fn table(name: &str, rows: u32) {
    let topo = Topology::from_env();
    let mut p = Conn::new(direct_opts(&topo.primary)).await.unwrap();
    p.query_drop(format!(
        "CREATE TABLE IF NOT EXISTS sluice_test.{name} (id INT PRIMARY KEY, v INT NOT NULL DEFAULT 0, name VARCHAR(64))"
    ))
    .await
    .unwrap();
    p.query_drop(format!("DELETE FROM sluice_test.{name}"))
        .await
        .unwrap();
    for id in 1..=rows {
        p.query_drop(format!("INSERT INTO sluice_test.{name} (id) VALUES ({id})"))
            .await
            .unwrap();
    }
    p.disconnect().await.unwrap();
    for replica in [topo.replica1, topo.replica2] {
        let mut r = Conn::new(direct_opts(&replica)).await.unwrap();
        let sql = format!("SELECT COUNT(*) FROM sluice_test.{name}");
        let deadline = std::time::Instant::now() + LIMIT;
        loop {
            let n: Option<u32> = r.query_first(&sql).await.unwrap_or(None);
            if n == Some(rows) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{replica} never applied {name}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        r.disconnect().await.unwrap();
    }
}

fn split_off() -> Sluice {
    Sluice::start_with(SluiceOptions {
        routing_extra: "read_your_writes = \"off\"".into(),
        ..SluiceOptions::default()
    })
}

#[tokio::test]
async fn literals_never_appear_and_counts_are_right() {
    table("dg_lit", 3).await;
    let s = split_off();
    let mut c = Conn::new(s.opts()).await.unwrap();
    for i in 0..5 {
        let _: Vec<String> = c
            .query(format!(
                "SELECT name FROM dg_lit WHERE id = {} AND name = 'zebra_secret_{i}'",
                9876500 + i
            ))
            .await
            .unwrap();
    }
    c.query_drop("INSERT INTO dg_lit (id, name) VALUES (7777001, 'quokka_secret'), (7777002, \"quokka_dq\")")
        .await
        .unwrap();
    for list in ["1234567, 2345678, 3456789", "4567891", "-8765432.25, 0x5EC2E7"] {
        let _: Vec<u32> = c
            .query(format!("SELECT id FROM dg_lit WHERE id IN ({list})"))
            .await
            .unwrap();
    }
    for i in 0..4 {
        let _: Option<(u32, Option<String>)> = c
            .exec_first(
                "SELECT id, name FROM dg_lit WHERE id = ? AND name <> ?",
                (5550123 + i, "marmot_secret"),
            )
            .await
            .unwrap();
    }
    for _ in 0..2 {
        let _: Option<u32> = c
            .exec_first("SELECT id FROM dg_lit WHERE id = ? AND 31415926 > 0", (1,))
            .await
            .unwrap();
    }
    // A prepared statement's placeholders show as `?p`, literals as `?`.
    let text = "SELECT name FROM dg_lit WHERE id = ? AND name = ?";
    let view = wait_count(&s, text, 5).await;
    let prepared = "SELECT id FROM dg_lit WHERE id = ?p AND ? > ?";
    let view = if count(&view, prepared) < 2 {
        wait_count(&s, prepared, 2).await
    } else {
        view
    };
    assert_eq!(
        count(&view, "SELECT id , name FROM dg_lit WHERE id = ?p AND name <> ?p"),
        4,
        "{view}"
    );
    assert_eq!(count(&view, prepared), 2, "{view}");
    assert_eq!(
        count(&view, "SELECT id FROM dg_lit WHERE id IN ( ? )"),
        3,
        "{view}"
    );
    let insert = rows(&view)
        .into_iter()
        .find(|r| {
            r["fingerprint"]
                .as_str()
                .unwrap()
                .starts_with("INSERT INTO dg_lit")
        })
        .expect("the insert's digest");
    assert_eq!(insert["count"], 1);
    let body = view.to_string();
    for secret in [
        "98765", "zebra", "quokka", "7777001", "1234567", "2345678", "4567891", "8765432", "5EC2E7",
        "5550123", "marmot", "31415926",
    ] {
        assert!(!body.contains(secret), "`{secret}` leaked into /digests: {body}");
    }
    for r in rows(&view) {
        assert!(r["first_seen"].as_u64().unwrap() > 1_700_000_000, "{r}");
        assert!(r["last_seen"].as_u64() >= r["first_seen"].as_u64(), "{r}");
        assert!(r["max_time_us"].as_u64() <= r["total_time_us"].as_u64(), "{r}");
    }
    c.disconnect().await.unwrap();
}

#[tokio::test]
async fn errors_rows_and_routes_in_split_mode() {
    table("dg_rt", 4).await;
    let s = split_off();
    let mut c = Conn::new(s.opts()).await.unwrap();
    for _ in 0..3 {
        let ids: Vec<u32> = c.query("SELECT id FROM dg_rt WHERE id < 100").await.unwrap();
        assert_eq!(ids.len(), 4);
    }
    for _ in 0..2 {
        c.query_drop("UPDATE dg_rt SET v = v + 1 WHERE id = 1")
            .await
            .unwrap();
    }
    c.query_drop("BEGIN").await.unwrap();
    for _ in 0..2 {
        let _: Option<u32> = c.query_first("SELECT v FROM dg_rt WHERE id = 2").await.unwrap();
    }
    c.query_drop("COMMIT").await.unwrap();
    for _ in 0..2 {
        assert!(
            c.query_drop("SELECT id FROM dg_no_such_table WHERE id = 5")
                .await
                .is_err()
        );
    }
    // Answered by Sluice itself, with an error: no backend was involved.
    assert!(c.query_drop("KILL 4000000000").await.is_err());
    for _ in 0..2 {
        let _: Vec<u32> = c.exec("SELECT id FROM dg_rt WHERE id <= ?", (3,)).await.unwrap();
    }

    let view = wait_count(&s, "SELECT id FROM dg_rt WHERE id <= ?p", 2).await;
    let read = row(&view, "SELECT id FROM dg_rt WHERE id < ?").expect("the read");
    assert_eq!(read["count"], 3, "{read}");
    assert_eq!(read["rows_sent"], 12, "{read}");
    assert_eq!(read["errors"], 0, "{read}");
    assert_eq!(route(&read, "replica"), 3, "{read}");
    let prepared = row(&view, "SELECT id FROM dg_rt WHERE id <= ?p").unwrap();
    assert_eq!(prepared["rows_sent"], 6, "{prepared}");
    assert_eq!(route(&prepared, "replica"), 2, "{prepared}");
    let write = row(&view, "UPDATE dg_rt SET v = v + ? WHERE id = ?").expect("the write");
    assert_eq!(
        (write["count"].as_u64(), route(&write, "primary")),
        (Some(2), 2),
        "{write}"
    );
    assert_eq!(write["rows_sent"], 0, "{write}");
    let held = row(&view, "SELECT v FROM dg_rt WHERE id = ?").expect("the read in a transaction");
    assert_eq!(
        (held["count"].as_u64(), route(&held, "held")),
        (Some(2), 2),
        "{held}"
    );
    let failed = row(&view, "SELECT id FROM dg_no_such_table WHERE id = ?").expect("the failing read");
    assert_eq!(
        (failed["count"].as_u64(), failed["errors"].as_u64()),
        (Some(2), Some(2)),
        "{failed}"
    );
    assert_eq!(route(&failed, "replica"), 2, "{failed}");
    let kill = row(&view, "KILL ?").expect("the KILL");
    assert_eq!(
        (kill["errors"].as_u64(), route(&kill, "none")),
        (Some(1), 1),
        "{kill}"
    );
    c.disconnect().await.unwrap();
}

#[tokio::test]
async fn primary_only_mode_routes_everything_to_the_primary() {
    table("dg_po", 2).await;
    let s = Sluice::start_with(SluiceOptions {
        routing_mode: "primary_only",
        ..SluiceOptions::default()
    });
    let mut c = Conn::new(s.opts()).await.unwrap();
    for _ in 0..3 {
        let _: Vec<u32> = c.query("SELECT id FROM dg_po WHERE id > 0").await.unwrap();
    }
    let view = wait_count(&s, "SELECT id FROM dg_po WHERE id > ?", 3).await;
    let read = row(&view, "SELECT id FROM dg_po WHERE id > ?").unwrap();
    assert_eq!(route(&read, "primary"), 3, "{read}");
    assert_eq!(route(&read, "replica"), 0, "{read}");
    assert_eq!(read["rows_sent"], 6, "{read}");
    c.disconnect().await.unwrap();
}

#[tokio::test]
async fn sort_limit_bad_sort_and_reset() {
    let s = split_off();
    let mut c = Conn::new(s.opts()).await.unwrap();
    for i in 0..6 {
        let _: Option<u32> = c.query_first(format!("SELECT {i} AS dg_many")).await.unwrap();
    }
    let _: Option<u32> = c.query_first("SELECT SLEEP(0.05) AS dg_slow").await.unwrap();
    assert!(c.query_drop("SELECT * FROM dg_sort_missing").await.is_err());
    wait_count(&s, "SELECT ? AS dg_many", 6).await;
    wait_count(&s, "SELECT * FROM dg_sort_missing", 1).await;
    for (sort, key) in [
        ("total_time", "total_time_us"),
        ("count", "count"),
        ("mean", "mean_time_us"),
        ("max", "max_time_us"),
        ("errors", "errors"),
        ("rows", "rows_sent"),
        ("last_seen", "last_seen"),
    ] {
        let view = digests(&s, &format!("?sort={sort}"));
        assert_eq!(view["sort"], sort);
        let keys: Vec<u64> = rows(&view).iter().map(|r| r[key].as_u64().unwrap()).collect();
        assert!(keys.len() >= 3, "{view}");
        assert!(keys.windows(2).all(|w| w[0] >= w[1]), "{sort}: {keys:?}");
    }
    let by_count = digests(&s, "?sort=count&limit=1");
    assert_eq!(rows(&by_count).len(), 1, "{by_count}");
    assert!(by_count["fingerprints"].as_u64().unwrap() >= 3);
    assert_eq!(rows(&by_count)[0]["fingerprint"], "SELECT ? AS dg_many");
    let by_errors = digests(&s, "?sort=errors&limit=1");
    assert_eq!(
        rows(&by_errors)[0]["fingerprint"],
        "SELECT * FROM dg_sort_missing"
    );
    assert_eq!(rows(&digests(&s, "?limit=2")).len(), 2);

    let (code, body) = http(&s, "GET", "/digests?sort=fastest");
    assert_eq!(code, 400, "{body}");
    for allowed in [
        "total_time",
        "count",
        "mean",
        "max",
        "errors",
        "rows",
        "last_seen",
    ] {
        assert!(body.contains(allowed), "{body}");
    }
    assert_eq!(http(&s, "GET", "/digests?limit=many").0, 400);
    assert_eq!(http(&s, "GET", "/digests/reset").0, 405);

    let (code, body) = http(&s, "POST", "/digests/reset");
    assert_eq!(code, 200, "{body}");
    let view = digests(&s, "");
    assert_eq!(view["fingerprints"], 0, "{view}");
    assert!(rows(&view).is_empty(), "{view}");
    let _: Option<u32> = c.query_first("SELECT 1 AS dg_after").await.unwrap();
    wait_count(&s, "SELECT ? AS dg_after", 1).await;
    c.disconnect().await.unwrap();
}

#[tokio::test]
async fn max_entries_bounds_the_view_and_other_keeps_the_counts() {
    let s = Sluice::start_with(SluiceOptions {
        extra: "\n[digests]\nmax_entries = 3\n".into(),
        ..SluiceOptions::default()
    });
    let mut c = Conn::new(s.opts()).await.unwrap();
    assert_eq!(http(&s, "POST", "/digests/reset").0, 200);
    let mut statements = 0;
    for shape in 0..10 {
        for _ in 0..=shape % 3 {
            let _: Option<u32> = c
                .query_first(format!("SELECT 1 AS dg_shape_{shape}"))
                .await
                .unwrap();
            statements += 1;
        }
    }
    let total = |view: &Value| -> u64 { rows(view).iter().map(|r| r["count"].as_u64().unwrap()).sum() };
    wait_until("every statement counted", LIMIT, || {
        total(&digests(&s, "")) >= statements
    })
    .await;
    let view = digests(&s, "");
    assert_eq!(total(&view), statements, "no count is lost: {view}");
    assert_eq!(view["max_entries"], 3);
    let fingerprints: Vec<&str> = view["digests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["fingerprint"].as_str().unwrap())
        .collect();
    assert!(
        fingerprints.len() <= 4,
        "3 fingerprints and (other): {fingerprints:?}"
    );
    let other = row(&view, "(other)").expect("an (other) row");
    assert!(other["count"].as_u64().unwrap() >= 7, "{other}");
    assert!(other["digest"].is_null(), "{other}");
    c.disconnect().await.unwrap();
}

#[tokio::test]
async fn disabled_by_reload_records_nothing_and_enabled_again_records() {
    let s = split_off();
    let mut c = Conn::new(s.opts()).await.unwrap();
    let config = std::fs::read_to_string(s.config_path()).unwrap();
    s.write_config(&format!("{config}\n[digests]\nenabled = false\n"));
    s.signal(libc::SIGHUP);
    wait_until("digests disabled", LIMIT, || digests(&s, "")["enabled"] == false).await;
    // A session picks a reload up between its commands.
    let _: Option<u32> = c.query_first("SELECT 1").await.unwrap();
    for _ in 0..3 {
        let _: Option<u32> = c.query_first("SELECT 2 AS dg_while_off").await.unwrap();
    }
    s.write_config(&format!("{config}\n[digests]\nenabled = true\n"));
    s.signal(libc::SIGHUP);
    wait_until("digests enabled", LIMIT, || digests(&s, "")["enabled"] == true).await;
    let _: Option<u32> = c.query_first("SELECT 1").await.unwrap();
    let _: Option<u32> = c.query_first("SELECT 3 AS dg_back_on").await.unwrap();
    let view = wait_count(&s, "SELECT ? AS dg_back_on", 1).await;
    assert_eq!(count(&view, "SELECT ? AS dg_while_off"), 0, "{view}");
    c.disconnect().await.unwrap();
}

#[tokio::test]
async fn concurrent_clients_add_up_exactly() {
    table("dg_cc", 10).await;
    let s = split_off();
    const CLIENTS: u64 = 8;
    const EACH: u64 = 150;
    let mut tasks = Vec::new();
    for client in 0..CLIENTS {
        let opts = s.opts();
        tasks.push(tokio::spawn(async move {
            let mut c = Conn::new(opts).await.unwrap();
            for i in 0..EACH {
                let id = (client + i) % 10 + 1;
                let _: Option<u32> = c
                    .query_first(format!("SELECT v FROM dg_cc WHERE id = {id}"))
                    .await
                    .unwrap();
                let _: Option<u32> = c
                    .exec_first("SELECT id FROM dg_cc WHERE id = ?", (id,))
                    .await
                    .unwrap();
                if i % 10 == 0 {
                    c.query_drop(format!("UPDATE dg_cc SET v = v + 1 WHERE id = {id}"))
                        .await
                        .unwrap();
                }
            }
            c.disconnect().await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let n = CLIENTS * EACH;
    let view = wait_count(&s, "SELECT v FROM dg_cc WHERE id = ?", n).await;
    let view = if count(&view, "SELECT id FROM dg_cc WHERE id = ?p") < n {
        wait_count(&s, "SELECT id FROM dg_cc WHERE id = ?p", n).await
    } else {
        view
    };
    assert_eq!(count(&view, "SELECT id FROM dg_cc WHERE id = ?p"), n, "{view}");
    let update = row(&view, "UPDATE dg_cc SET v = v + ? WHERE id = ?").unwrap();
    assert_eq!(update["count"], CLIENTS * EACH / 10, "{update}");
    for text in [
        "SELECT v FROM dg_cc WHERE id = ?",
        "SELECT id FROM dg_cc WHERE id = ?p",
    ] {
        let r = row(&view, text).unwrap();
        let routed: u64 = r["routes"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum();
        assert_eq!(routed, n, "every statement has one route: {r}");
        assert_eq!(r["rows_sent"], n, "{r}");
        assert_eq!(r["errors"], 0, "{r}");
    }
}

#[tokio::test]
async fn sluice_top_once_prints_the_fingerprints() {
    let s = split_off();
    let mut c = Conn::new(s.opts()).await.unwrap();
    for _ in 0..2 {
        let _: Option<u32> = c.query_first("SELECT 424242 AS dg_top_marker").await.unwrap();
    }
    wait_count(&s, "SELECT ? AS dg_top_marker", 2).await;
    let admin = format!("127.0.0.1:{}", s.admin_port);
    let by_address = std::process::Command::new(sluice_bin())
        .args(["top", "--once", "--sort", "count", "--admin", &admin])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&by_address.stdout);
    assert!(
        by_address.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&by_address.stderr)
    );
    assert!(out.contains("SELECT ? AS dg_top_marker"), "{out}");
    assert!(out.contains("FINGERPRINT") && out.contains("COUNT"), "{out}");
    assert!(!out.contains("424242"), "{out}");
    assert!(
        !out.contains('\x1b'),
        "no escape codes when not a terminal: {out:?}"
    );
    // Not a terminal: one snapshot, even without --once; the address from
    // the config file.
    let by_config = std::process::Command::new(sluice_bin())
        .arg("top")
        .arg("--config")
        .arg(s.config_path())
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&by_config.stdout);
    assert!(
        by_config.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&by_config.stderr)
    );
    assert!(out.contains("SELECT ? AS dg_top_marker"), "{out}");
    let bad = std::process::Command::new(sluice_bin())
        .args(["top", "--once", "--sort", "fastest", "--admin", &admin])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("total_time"));
    c.disconnect().await.unwrap();
}

#[tokio::test]
async fn lookups_the_guard_answers_have_the_guard_route() {
    table("dg_guard", 5).await;
    let s = Sluice::start_with(SluiceOptions {
        extra: "\n[guard]\nserver_id = 42424\nrebuild_interval_ms = 0\n\n[[guard.tables]]\n\
                table = \"sluice_test.dg_guard\"\nkey = \"id\"\n"
            .into(),
        ..SluiceOptions::default()
    });
    wait_until("the guard is ready", Duration::from_secs(30), || {
        let status = s.status();
        let t = &status["guard"]["tables"]["sluice_test.dg_guard"];
        t["state"] == "ready"
            && status["guard"]["connected"] == true
            && t["snapshot_gtid"].as_str().is_some_and(|at| s.monitor_knows(at))
    })
    .await;
    let mut c = Conn::new(s.opts()).await.unwrap();
    for id in [900001, 900002, 900003, 3] {
        let v: Option<u32> = c
            .query_first(format!("SELECT v FROM dg_guard WHERE id = {id}"))
            .await
            .unwrap();
        assert_eq!(v.is_some(), id == 3);
    }
    let text = "SELECT v FROM dg_guard WHERE id = ?";
    let view = wait_count(&s, text, 4).await;
    let r = row(&view, text).unwrap();
    let answered = sluice_tests::metric_sum(&s.metrics(), "sluice_guard_answered_total", &[]);
    assert!(answered >= 1.0, "the guard answered none of the absent keys");
    assert_eq!(route(&r, "guard") as f64, answered, "{r}");
    assert_eq!(
        route(&r, "guard") + route(&r, "replica") + route(&r, "primary"),
        4,
        "{r}"
    );
    assert_eq!(r["rows_sent"], 1, "{r}");
    c.disconnect().await.unwrap();
}
