//! The operators' Grafana dashboard (`ops/grafana/sluice-dashboard.json`)
//! only queries metrics Sluice really emits: every metric name in a panel's
//! PromQL is served by `GET /metrics` after a small workload, or, for the few
//! metrics that only appear after specific events, at least emitted somewhere
//! in the proxy or pool sources. A typo in the dashboard fails either way.

use mysql_async::prelude::*;
use mysql_async::{Conn, OptsBuilder, TxOpts};
use serde_json::Value;
use sluice_tests::{Sluice, repo_path};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

const DASHBOARD: &str = "ops/grafana/sluice-dashboard.json";

/// Metrics that only exist after a specific event the small workload does not
/// cause, with that event. For these the test only checks the Rust sources.
const EVENT_ONLY: &[(&str, &str)] = &[
    ("sluice_guard_answered_total", "a lookup of a [guard] table"),
    ("sluice_guard_passed_total", "a lookup of a [guard] table"),
    (
        "sluice_guard_false_positives_total",
        "a lookup of a [guard] table",
    ),
    ("sluice_guard_keys", "a [guard] table"),
    ("sluice_guard_filter_bytes", "a [guard] table"),
    ("sluice_guard_stream_connected", "a [guard] table"),
    ("sluice_guard_stream_reconnects_total", "a [guard] table"),
    ("sluice_guard_rebuilds_total", "a [guard] table"),
    ("sluice_config_reloads_total", "a config reload"),
    ("sluice_config_generation", "the first applied reload"),
    (
        "sluice_config_restart_required_total",
        "a reload changing a restart-only setting",
    ),
    ("sluice_route_fallbacks_total", "a read with no usable replica"),
    ("sluice_retries_total", "a read whose backend was lost"),
    (
        "sluice_pool_connections_replaced_total",
        "a pooled connection found broken, expired or closed at checkout",
    ),
    (
        "sluice_state_read_backs_total",
        "a statement that sets user variables from the server",
    ),
    (
        "sluice_backend_connections_closed_total",
        "a backend connection leaving its pool",
    ),
    (
        "sluice_pool_keepalive_pings_total",
        "a pooled connection idle past the keepalive interval",
    ),
    (
        "sluice_client_connections_closed_total",
        "a client idle timeout or a shutdown",
    ),
    (
        "sluice_reads_skipped_for_lag_total",
        "a replica lagging beyond the limit",
    ),
    (
        "sluice_read_your_writes_total",
        "a read after a write in gtid mode",
    ),
    ("sluice_backend_role_changes_total", "a promotion or demotion"),
    ("sluice_write_waits_total", "a write while no backend is writable"),
    (
        "sluice_monitor_probe_failures_total",
        "a backend the monitor cannot reach",
    ),
];

const HISTOGRAM_SUFFIXES: &[&str] = &["_bucket", "_sum", "_count"];

fn load_dashboard() -> Value {
    let path = repo_path(DASHBOARD);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{DASHBOARD} is not valid JSON: {e}"))
}

/// Every panel, including those nested in (collapsed) rows.
fn panels(dashboard: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for panel in list.as_array().into_iter().flatten() {
            out.push(panel);
            if let Some(nested) = panel.get("panels") {
                walk(nested, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

fn is_row(panel: &Value) -> bool {
    panel["type"] == "row"
}

/// Every PromQL expression: panel targets and the template variables' queries.
fn expressions(dashboard: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for panel in panels(dashboard) {
        let title = panel["title"].as_str().unwrap_or("?");
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                out.push((format!("panel {title:?}"), expr.to_string()));
            }
        }
    }
    for var in dashboard["templating"]["list"].as_array().into_iter().flatten() {
        if var["type"] == "query" {
            let name = var["name"].as_str().unwrap_or("?");
            let query = var["query"]["query"].as_str().or(var["query"].as_str());
            for q in [query, var["definition"].as_str()].into_iter().flatten() {
                out.push((format!("variable ${name}"), q.to_string()));
            }
        }
    }
    out
}

/// Identifiers starting with `sluice_` outside string literals (label values).
fn names_in(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut token = String::new();
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in expr.chars().chain(std::iter::once(' ')) {
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            token.push(c);
            continue;
        }
        if token.starts_with("sluice_") {
            names.push(std::mem::take(&mut token));
        }
        token.clear();
        if matches!(c, '"' | '\'' | '`') {
            quote = Some(c);
        }
    }
    names
}

/// Gauges whose names end in `_seconds` (not histograms).
const GAUGE_SECONDS: &[&str] = &["sluice_backend_replication_lag_seconds"];

/// A histogram series name (`*_seconds_bucket`, `_sum`, `_count`) → its base.
fn histogram_base(name: &str) -> Option<&str> {
    HISTOGRAM_SUFFIXES
        .iter()
        .filter_map(|suffix| name.strip_suffix(suffix))
        .find(|base| base.ends_with("_seconds"))
}

/// Metric names the dashboard uses (histograms by their base name), each with
/// where it is used and whether it is used as a histogram.
fn dashboard_metrics(dashboard: &Value) -> BTreeMap<String, (bool, String)> {
    let mut used = BTreeMap::new();
    for (place, expr) in expressions(dashboard) {
        for name in names_in(&expr) {
            let (base, histogram) = match histogram_base(&name) {
                Some(base) => (base.to_string(), true),
                None => {
                    // `_seconds` gauges exist too (replication lag); only the
                    // latency histograms must be used through their series.
                    assert!(
                        !name.ends_with("_seconds") || GAUGE_SECONDS.contains(&name.as_str()),
                        "{place} uses histogram {name} without _bucket/_sum/_count: {expr}"
                    );
                    (name, false)
                }
            };
            used.entry(base).or_insert((histogram, place.clone()));
        }
    }
    used
}

fn rust_sources(dir: &Path, out: &mut String) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push_str(&std::fs::read_to_string(&path).unwrap());
            out.push('\n');
        }
    }
}

/// The text of every Rust file under proxy/src, pool/src and guard/src.
fn emitting_sources() -> String {
    let mut text = String::new();
    for dir in ["proxy/src", "pool/src", "guard/src"] {
        rust_sources(&repo_path(dir), &mut text);
    }
    text
}

/// Sample names in a Prometheus text exposition, and `# TYPE` per family.
fn exposition(text: &str) -> (BTreeSet<String>, BTreeMap<String, String>) {
    let mut samples = BTreeSet::new();
    let mut types = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            if let (Some(name), Some(kind)) = (parts.next(), parts.next()) {
                types.insert(name.to_string(), kind.to_string());
            }
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            samples.insert(line[..end].to_string());
        }
    }
    (samples, types)
}

#[test]
fn dashboard_is_well_formed_and_its_metrics_are_emitted_in_source() {
    let dashboard = load_dashboard();
    let all = panels(&dashboard);
    let graphs: Vec<&Value> = all.iter().copied().filter(|p| !is_row(p)).collect();
    assert!(graphs.len() >= 12, "only {} panels in {DASHBOARD}", graphs.len());
    let mut titles = BTreeSet::new();
    for panel in &all {
        let title = panel["title"].as_str().expect("every panel has a title");
        assert!(!title.is_empty(), "a panel has an empty title");
        assert!(titles.insert(title), "panel title {title:?} is used twice");
    }
    for panel in &graphs {
        let title = &panel["title"];
        let targets = panel["targets"].as_array().map(Vec::as_slice).unwrap_or_default();
        assert!(
            !targets.is_empty()
                && targets
                    .iter()
                    .all(|t| t["expr"].as_str().is_some_and(|e| !e.is_empty())),
            "panel {title} needs targets with PromQL"
        );
        assert_eq!(
            panel["datasource"]["uid"], "${datasource}",
            "panel {title} uses the $datasource variable"
        );
    }
    let vars: BTreeMap<&str, &Value> = dashboard["templating"]["list"]
        .as_array()
        .expect("templating.list")
        .iter()
        .map(|v| (v["name"].as_str().unwrap_or_default(), v))
        .collect();
    assert_eq!(vars["datasource"]["type"], "datasource");
    assert_eq!(vars["datasource"]["query"], "prometheus");
    assert_eq!(
        vars["instance"]["definition"],
        "label_values(sluice_build_info, instance)"
    );

    let used = dashboard_metrics(&dashboard);
    assert!(used.contains_key("sluice_queries_total"), "{used:?}");
    assert!(
        used.get("sluice_query_duration_seconds").is_some_and(|(h, _)| *h),
        "latency comes from the histogram: {used:?}"
    );
    let source = emitting_sources();
    for (name, (_, place)) in &used {
        assert!(
            source.contains(&format!("\"{name}\"")),
            "{place} uses {name}, which nothing under proxy/src, pool/src or guard/src emits"
        );
    }
    for (name, event) in EVENT_ONLY {
        assert!(
            source.contains(&format!("\"{name}\"")),
            "allow-listed {name} (after {event}) is not emitted under proxy/src, pool/src or guard/src"
        );
    }
}

#[tokio::test]
async fn dashboard_metrics_are_served() {
    let dashboard = load_dashboard();
    let used = dashboard_metrics(&dashboard);
    let s = Sluice::start();

    // A failed login first: a rejected client and an access_denied error.
    let bad = OptsBuilder::from_opts(s.opts()).pass(Some("not-the-dashboard-password"));
    assert!(Conn::new(bad).await.is_err(), "a wrong password is refused");

    let mut c = Conn::new(s.opts()).await.unwrap();
    for i in 0..10 {
        let v: Option<i32> = c.query_first(format!("SELECT {i}")).await.unwrap();
        assert_eq!(v, Some(i));
    }
    c.query_drop("CREATE TABLE IF NOT EXISTS dashboard_t (id INT AUTO_INCREMENT PRIMARY KEY, v INT)")
        .await
        .unwrap();
    c.query_drop("INSERT INTO dashboard_t (v) VALUES (1)")
        .await
        .unwrap();
    let mut tx = c.start_transaction(TxOpts::default()).await.unwrap();
    tx.query_drop("INSERT INTO dashboard_t (v) VALUES (2)")
        .await
        .unwrap();
    let _: Option<i64> = tx.query_first("SELECT COUNT(*) FROM dashboard_t").await.unwrap();
    tx.commit().await.unwrap();
    let two: Option<i64> = c.exec_first("SELECT ? + 1", (1,)).await.unwrap();
    assert_eq!(two, Some(2));
    assert!(
        c.query_drop("SELECT * FROM no_such_table_dashboard")
            .await
            .is_err(),
        "a query on a missing table fails"
    );
    // A literal user variable is replayed on other connections; one set
    // from an expression pins the session (sluice_session_pins_total).
    c.query_drop("SET @v = 1").await.unwrap();
    let v: Option<i32> = c.query_first("SELECT @v").await.unwrap();
    assert_eq!(v, Some(1));
    c.query_drop("SET @w = CONCAT('a', 'b')").await.unwrap();
    // A temporary table pins too (either counts for sluice_session_pins_total).
    c.query_drop("CREATE TEMPORARY TABLE dashboard_tmp (a INT)")
        .await
        .unwrap();
    let w: Option<String> = c.query_first("SELECT @w").await.unwrap();
    assert_eq!(w.as_deref(), Some("ab"));

    // Pool gauges are sampled every second: wait until everything shows up.
    let wanted: Vec<(&String, bool)> = used
        .iter()
        .filter(|(name, _)| !EVENT_ONLY.iter().any(|(n, _)| n == name))
        .map(|(name, (histogram, _))| (name, *histogram))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    let (text, missing) = loop {
        let text = s.metrics();
        let (samples, _) = exposition(&text);
        let missing: Vec<&String> = wanted
            .iter()
            .filter(|(name, histogram)| {
                let series = if *histogram {
                    format!("{name}_bucket")
                } else {
                    name.to_string()
                };
                !samples.contains(&series)
            })
            .map(|(name, _)| *name)
            .collect();
        if missing.is_empty() || Instant::now() > deadline {
            break (text, missing);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        missing.is_empty(),
        "the dashboard uses metrics /metrics does not serve: {missing:?}\n{text}"
    );

    let (samples, types) = exposition(&text);
    for (name, histogram) in &wanted {
        if *histogram {
            assert_eq!(
                types.get(*name).map(String::as_str),
                Some("histogram"),
                "{name} is a Prometheus histogram"
            );
            for suffix in HISTOGRAM_SUFFIXES {
                assert!(samples.contains(&format!("{name}{suffix}")), "{name}{suffix}");
            }
        } else if name.ends_with("_total") {
            assert_eq!(types.get(*name).map(String::as_str), Some("counter"), "{name}");
        }
    }
    c.disconnect().await.unwrap();
}
