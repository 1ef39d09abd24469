//! A primary that does not write its binlog in ROW format is refused (the
//! guard could not see every write's keys), with the reason in the status,
//! and taken once it does. A test binary of its own: it changes the primary's
//! global `binlog_format` for a moment, and test binaries run one at a time.

mod common;

use common::{conn, fresh_db, guard, primary, ready, table_toml, wait_for};
use mysql_async::prelude::Queryable;

/// Puts `binlog_format = ROW` back even when the test fails.
struct RowFormatAgain(String);

impl Drop for RowFormatAgain {
    fn drop(&mut self) {
        let (host, port) = self.0.rsplit_once(':').unwrap_or((&self.0, "3306"));
        let restored = std::process::Command::new("mariadb")
            .args(["-h", host, "-P", port, "-uapp", "-papp"])
            .args(["-e", "SET GLOBAL binlog_format = 'ROW'"])
            .status();
        if !restored.is_ok_and(|s| s.success()) {
            eprintln!("could not set binlog_format back to ROW on {}", self.0);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_without_row_binlog_is_refused_until_it_has_it() {
    let Some(p) = primary() else { return };
    let mut c = conn(&p).await;
    fresh_db(&mut c, "guard_test_format").await;
    c.query_drop("CREATE TABLE t (id INT PRIMARY KEY)")
        .await
        .expect("create");
    c.query_drop("SET GLOBAL binlog_format = 'MIXED'")
        .await
        .expect("set MIXED");
    let _restore = RowFormatAgain(p.clone());
    let g = guard(&p, 7201, &table_toml("guard_test_format.t", "id", ""), "", "");
    wait_for("the guard refuses the primary", 30, || {
        g.status()["refused"]
            .as_str()
            .is_some_and(|why| why.contains("binlog_format is MIXED"))
    })
    .await;
    assert!(
        g.table("guard_test_format", "t").is_none_or(|t| !t.ready()),
        "nothing is answered from a refused stream"
    );
    c.query_drop("SET GLOBAL binlog_format = 'ROW'")
        .await
        .expect("set ROW");
    ready(&g, "guard_test_format", "t").await;
    assert!(g.status()["refused"].is_null(), "{}", g.status());
    g.shutdown();
    c.query_drop("DROP DATABASE guard_test_format").await.ok();
}
