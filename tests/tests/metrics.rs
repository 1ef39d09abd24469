//! `GET /metrics` and `GET /healthz` on the admin listener: the metric
//! families exist and move under a workload, and no SQL text is in labels;
//! every family has HELP text, `promtool check metrics` finds nothing to
//! say, and the README's Metrics section lists every metric.

use mysql_async::prelude::*;
use mysql_async::{Conn, OptsBuilder, TxOpts};
use sluice_tests::{Sluice, SluiceOptions, Topology, direct_opts, metric_sum, repo_path, wait_until};
use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[tokio::test]
async fn metrics_are_served_and_move() {
    let s = Sluice::start();
    assert_eq!(s.http_get("/healthz").as_deref(), Some("ok\n"));
    let mut c = Conn::new(s.opts()).await.unwrap();
    for i in 0..25 {
        let _: Option<i32> = c
            .query_first(format!("SELECT {i} /* secret_literal_marker */"))
            .await
            .unwrap();
    }
    let _ = c.query_drop("SELECT * FROM no_such_table_x").await;
    // The pool gauges are sampled every second.
    sluice_tests::wait_until(
        "the pool gauges are sampled",
        std::time::Duration::from_secs(10),
        || {
            s.metrics()
                .contains("sluice_pool_connections{backend=\"primary\",state=\"active\"}")
        },
    )
    .await;
    let m = s.metrics();
    assert!(metric_sum(&m, "sluice_client_connections", &[]) >= 1.0, "{m}");
    assert!(metric_sum(&m, "sluice_client_connections_accepted_total", &[]) >= 1.0);
    assert!(metric_sum(&m, "sluice_queries_total", &[]) >= 25.0, "{m}");
    assert!(
        metric_sum(&m, "sluice_query_duration_seconds_count", &[]) >= 25.0,
        "{m}"
    );
    assert!(
        m.contains("sluice_query_duration_seconds_bucket{"),
        "latency is a real histogram"
    );
    assert!(
        m.contains("sluice_pool_connections{backend=\"primary\",state=\"idle\"}"),
        "{m}"
    );
    assert!(
        m.contains("sluice_pool_connections{backend=\"primary\",state=\"active\"}"),
        "{m}"
    );
    assert!(m.contains("sluice_build_info{"));
    assert!(
        !m.contains("secret_literal_marker") && !m.contains("no_such_table_x"),
        "SQL text leaked into metrics"
    );
    c.disconnect().await.unwrap();
}

#[tokio::test]
async fn monitor_reports_backends_and_a_stopped_replica() {
    let s = Sluice::start();
    let wait_for = |pred: &dyn Fn(&str) -> bool| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        loop {
            let m = s.metrics();
            if pred(&m) {
                return m;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "monitor did not report in time:\n{m}"
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    };
    let m = wait_for(&|m| m.contains("sluice_backend_replication_lag_seconds{backend=\"replica2\"}"));
    assert_eq!(
        metric_sum(&m, "sluice_backend_up", &[]),
        3.0,
        "all three backends up"
    );
    assert_eq!(
        metric_sum(&m, "sluice_backend_read_only", &["backend=\"primary\""]),
        0.0
    );
    assert_eq!(
        metric_sum(&m, "sluice_backend_read_only", &["backend=\"replica1\""]),
        1.0
    );
    // A stopped SQL thread makes the replica infinitely stale.
    let [_, _, replica2] = sluice_tests::node::nodes();
    replica2.exec("STOP SLAVE SQL_THREAD").await;
    wait_for(&|m| m.contains("sluice_backend_replication_running{backend=\"replica2\"} 0"));
    wait_for(&|m| m.contains("sluice_backend_stale{backend=\"replica2\"} 1"));
    replica2.exec("START SLAVE SQL_THREAD").await;
    wait_for(&|m| m.contains("sluice_backend_replication_running{backend=\"replica2\"} 1"));
    wait_for(&|m| m.contains("sluice_backend_stale{backend=\"replica2\"} 0"));
    let status = s.http_get("/status").unwrap();
    assert!(status.contains("\"lag_ms\""), "{status}");
}

/// The files that describe every metric (HELP text and unit), one per crate.
const DESCRIPTIONS: &[&str] = &[
    "proxy/src/metrics/help.rs",
    "pool/src/metric.rs",
    "guard/src/metric.rs",
];

/// `"sluice_..."` string literals in `text`: metric names, in Sluice's sources.
fn name_literals(text: &str) -> BTreeSet<String> {
    text.split('"')
        .skip(1)
        .step_by(2)
        .filter(|s| {
            s.starts_with("sluice_")
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        })
        .map(str::to_string)
        .collect()
}

fn rust_sources(dir: &Path, out: &mut String) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display())) {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push_str(&std::fs::read_to_string(&path).expect("read source"));
            out.push('\n');
        }
    }
}

/// Metric names in the README's "## Metrics" section.
fn readme_metrics() -> BTreeSet<String> {
    let readme = std::fs::read_to_string(repo_path("README.md")).expect("read README.md");
    let start = readme
        .find("\n## Metrics\n")
        .expect("README has a Metrics section");
    let section = &readme[start + 1..];
    let section = &section[..section[1..].find("\n## ").map_or(section.len(), |i| i + 1)];
    section
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("sluice_"))
        .map(str::to_string)
        .collect()
}

/// Fails listing every name the README's Metrics section does not mention.
fn assert_in_readme<'a>(names: impl IntoIterator<Item = &'a String>, whence: &str) {
    let readme = readme_metrics();
    let missing: Vec<&String> = names.into_iter().filter(|n| !readme.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "metrics ({whence}) the README's Metrics section does not mention: {missing:?}"
    );
}

/// Families (`# TYPE`) and the names that have a `# HELP` line.
fn families(text: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let name_after = |prefix: &str| {
        text.lines()
            .filter_map(|l| {
                l.strip_prefix(prefix)?
                    .split_whitespace()
                    .next()
                    .map(str::to_string)
            })
            .collect::<BTreeSet<String>>()
    };
    (name_after("# TYPE "), name_after("# HELP "))
}

#[test]
fn every_metric_in_the_sources_is_described_and_in_the_readme() {
    let mut emitting = String::new();
    for dir in ["proxy/src", "pool/src", "guard/src"] {
        rust_sources(&repo_path(dir), &mut emitting);
    }
    let mut described_text = String::new();
    for file in DESCRIPTIONS {
        described_text.push_str(&std::fs::read_to_string(repo_path(file)).expect("read a description file"));
    }
    let described = name_literals(&described_text);
    let emitted = name_literals(&emitting);
    let undescribed: Vec<&String> = emitted.difference(&described).collect();
    assert!(
        undescribed.is_empty(),
        "metrics emitted without a description in {DESCRIPTIONS:?}: {undescribed:?}"
    );
    assert!(
        described.len() >= 50,
        "only {} described metrics",
        described.len()
    );
    assert_in_readme(&described, "described in the sources");
}

/// Families a short workload of every kind must produce (the rest need
/// events such as a failover or a timeout; their HELP is checked in the
/// sources above).
const EXERCISED: &[&str] = &[
    "sluice_build_info",
    "sluice_client_connections",
    "sluice_client_connections_accepted_total",
    "sluice_client_connections_rejected_total",
    "sluice_queries_total",
    "sluice_query_duration_seconds",
    "sluice_errors_total",
    "sluice_classification_cache_total",
    "sluice_session_pins_total",
    "sluice_state_read_backs_total",
    "sluice_pool_connections",
    "sluice_pool_waiting",
    "sluice_pool_concurrency_limit",
    "sluice_pool_wait_seconds",
    "sluice_backend_connections_opened_total",
    "sluice_backend_up",
    "sluice_backend_read_only",
    "sluice_backend_replication_lag_seconds",
    "sluice_backend_replication_running",
    "sluice_backend_stale",
    "sluice_backend_writer",
    "sluice_heartbeat_writes_total",
    "sluice_config_reloads_total",
    "sluice_config_generation",
    "sluice_guard_state",
    "sluice_guard_keys",
    "sluice_guard_filter_bytes",
    "sluice_guard_stream_connected",
    "sluice_guard_binlog_events_total",
    "sluice_guard_rebuilds_total",
    "sluice_guard_answered_total",
    "sluice_guard_passed_total",
];

/// `promtool check metrics` on the exposition: its complaints, or None
/// when promtool is not installed.
fn promtool(exposition: &str) -> Option<String> {
    let mut child = match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => panic!("run promtool: {e}"),
    };
    child
        .stdin
        .take()
        .expect("promtool stdin")
        .write_all(exposition.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool runs");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(if out.status.success() && said.trim().is_empty() {
        String::new()
    } else {
        format!("exit {}: {said}", out.status)
    })
}

#[tokio::test]
async fn every_served_family_has_help_and_promtool_finds_nothing() {
    let mut primary = Conn::new(direct_opts(&Topology::from_env().primary))
        .await
        .unwrap();
    primary
        .query_drop(
            "CREATE OR REPLACE TABLE metrics_guarded (id INT PRIMARY KEY, v INT);
             INSERT INTO metrics_guarded VALUES (1, 10), (2, 20)",
        )
        .await
        .unwrap();
    let s = Sluice::start_with(SluiceOptions {
        // A server_id of its own: two binlog streams with one id kick each other off.
        extra: "\n[guard]\nserver_id = 4301\nrebuild_interval_ms = 0\n\n[[guard.tables]]\n\
                table = \"sluice_test.metrics_guarded\"\nkey = \"id\"\n"
            .into(),
        ..SluiceOptions::default()
    });

    // A refused login, then reads, writes, a transaction, a prepared
    // statement, an error and a pin, in split mode.
    let bad = OptsBuilder::from_opts(s.opts()).pass(Some("wrong-password"));
    assert!(Conn::new(bad).await.is_err(), "a wrong password is refused");
    let mut c = Conn::new(s.opts()).await.unwrap();
    for i in 0..5 {
        let v: Option<i32> = c.query_first(format!("SELECT {i}")).await.unwrap();
        assert_eq!(v, Some(i));
    }
    c.query_drop("CREATE OR REPLACE TABLE metrics_t (id INT AUTO_INCREMENT PRIMARY KEY, v INT)")
        .await
        .unwrap();
    let mut tx = c.start_transaction(TxOpts::default()).await.unwrap();
    tx.query_drop("INSERT INTO metrics_t (v) VALUES (1)")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let two: Option<i64> = c.exec_first("SELECT ? + 1", (1,)).await.unwrap();
    assert_eq!(two, Some(2));
    assert!(c.query_drop("SELECT * FROM no_such_table_metrics").await.is_err());
    c.query_drop("SET @w = CONCAT('a', 'b')").await.unwrap();
    c.query_drop("CREATE TEMPORARY TABLE metrics_tmp (a INT)")
        .await
        .unwrap();

    // A reload (SIGHUP, same file): sluice_config_generation goes to 2.
    s.signal(libc::SIGHUP);
    wait_until("the reload is applied", Duration::from_secs(15), || {
        metric_sum(&s.metrics(), "sluice_config_generation", &[]) >= 2.0
    })
    .await;

    // Guarded lookups once the guard's table is ready (answered or passed:
    // either way both counters' families are created below only if used).
    wait_until("the guard table is ready", Duration::from_secs(30), || {
        let st = s.status();
        st["guard"]["tables"]["sluice_test.metrics_guarded"]["state"] == "ready"
            && st["guard"]["connected"] == true
    })
    .await;
    let mut g = Conn::new(s.opts()).await.unwrap();
    let mut answered = false;
    let mut passed = false;
    let deadline = Instant::now() + Duration::from_secs(15);
    while !(answered && passed) {
        let none: Option<i32> = g
            .query_first("SELECT v FROM metrics_guarded WHERE id = 999")
            .await
            .unwrap();
        assert_eq!(none, None);
        let ten: Option<i32> = g
            .query_first("SELECT v FROM metrics_guarded WHERE id = 1")
            .await
            .unwrap();
        assert_eq!(ten, Some(10));
        let m = s.metrics();
        answered = metric_sum(&m, "sluice_guard_answered_total", &[]) > 0.0;
        passed = metric_sum(&m, "sluice_guard_passed_total", &[]) > 0.0;
        assert!(
            Instant::now() < deadline,
            "the guard neither answered nor passed a lookup:\n{m}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Sampled gauges (every second) and monitor gauges show up in time.
    let deadline = Instant::now() + Duration::from_secs(15);
    let text = loop {
        let text = s.metrics();
        let (typed, _) = families(&text);
        let missing: Vec<&&str> = EXERCISED.iter().filter(|f| !typed.contains(**f)).collect();
        if missing.is_empty() {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "families not served: {missing:?}\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    let (typed, helped) = families(&text);
    let without_help: Vec<&String> = typed.difference(&helped).collect();
    assert!(
        without_help.is_empty(),
        "families without # HELP: {without_help:?}\n{text}"
    );
    assert_in_readme(&typed, "served by /metrics");
    match promtool(&text) {
        None => println!("promtool is not installed (scripts/install-deps.sh installs it): lint skipped"),
        Some(said) => assert!(said.is_empty(), "promtool check metrics: {said}\n{text}"),
    }
    c.disconnect().await.unwrap();
    g.disconnect().await.unwrap();
    drop(s);
    primary
        .query_drop("DROP TABLE IF EXISTS metrics_guarded, metrics_t")
        .await
        .unwrap();
    primary.disconnect().await.unwrap();
}
