//! `GET /metrics` and `GET /healthz` on the admin listener: the metric
//! families exist and move under a workload, and no SQL text is in labels.

use mysql_async::Conn;
use mysql_async::prelude::*;
use sluice_tests::{Sluice, metric_sum};

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
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await; // pool gauges sample every second
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
