//! Compressed binlog events (`log_bin_compress`) hide their rows from the
//! guard: a compressed row event for a guarded table takes the table out of
//! service (rebuilt from a scan), so no key written that way is ever missed.
//! A test binary of its own: it turns compression on for the primary for a
//! moment, and test binaries run one at a time.

mod common;

use common::{conn, fresh_db, guard, primary, ready, table_toml, wait_for, write};
use mysql_async::prelude::Queryable;
use sluice_router::guard_key::encode_int;

/// Turns compression off again even when the test fails.
struct Uncompressed(String);

impl Drop for Uncompressed {
    fn drop(&mut self) {
        let (host, port) = self.0.rsplit_once(':').unwrap_or((&self.0, "3306"));
        let restored = std::process::Command::new("mariadb")
            .args(["-h", host, "-P", port, "-uapp", "-papp"])
            .args(["-e", "SET GLOBAL log_bin_compress = OFF"])
            .status();
        if !restored.is_ok_and(|s| s.success()) {
            eprintln!("could not turn log_bin_compress off on {}", self.0);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_row_events_never_hide_a_key() {
    let Some(p) = primary() else { return };
    let mut c = conn(&p).await;
    fresh_db(&mut c, "guard_test_compressed").await;
    c.query_drop("CREATE TABLE t (id INT PRIMARY KEY, pad VARCHAR(200))")
        .await
        .expect("create");
    let g = guard(&p, 7202, &table_toml("guard_test_compressed.t", "id", ""), "", "");
    ready(&g, "guard_test_compressed", "t").await;
    let rebuilds = |g: &sluice_guard::Guard| {
        g.table_status("guard_test_compressed.t")
            .and_then(|s| s["rebuilds"].as_u64())
            .unwrap_or(0)
    };
    let before = rebuilds(&g);

    c.query_drop("SET GLOBAL log_bin_compress = ON, GLOBAL log_bin_compress_min_len = 10")
        .await
        .expect("compress");
    let _restore = Uncompressed(p.clone());
    let pad = "x".repeat(150);
    for id in 1..=20 {
        let gtid = write(&mut c, &format!("INSERT INTO t VALUES ({id}, '{pad}')")).await;
        wait_for("the stream passes the write", 30, || g.applied().covers(&gtid)).await;
        // Never "certainly absent" for a key that exists: either the table
        // is out of service, or it was rebuilt from a scan that has the key.
        let mut key = Vec::new();
        encode_int(id.into(), &mut key);
        if let Some(t) = g.table("guard_test_compressed", "t") {
            assert!(!t.ready() || t.may_contain(&key), "key {id} hidden");
        }
    }
    assert!(rebuilds(&g) > before, "a compressed row event rebuilt the table");

    c.query_drop("SET GLOBAL log_bin_compress = OFF")
        .await
        .expect("uncompress");
    let t = ready(&g, "guard_test_compressed", "t").await;
    for id in 1..=20 {
        let mut key = Vec::new();
        encode_int(id.into(), &mut key);
        assert!(t.may_contain(&key), "key {id} after the rebuild");
    }
    g.shutdown();
    c.query_drop("DROP DATABASE guard_test_compressed").await.ok();
}
