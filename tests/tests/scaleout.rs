//! Several Sluice instances in front of one topology, as behind an L4
//! balancer: each reads only its own heartbeats (another instance's clock
//! may be ahead of its own), and their guards' binlog streams coexist
//! (each registers with its own server_id, derived from its instance name).

use mysql_async::Conn;
use mysql_async::prelude::*;
use sluice_tests::{Sluice, SluiceOptions, Topology, direct_opts, wait_until};
use std::time::Duration;

/// Runs SQL on a topology server with the mariadb CLI; used from `Drop`.
fn sql_now(addr: &str, sql: &str) {
    let (host, port) = addr.rsplit_once(':').unwrap_or((addr, "3306"));
    match std::process::Command::new("mariadb")
        .args(["-h", host, "-P", port, "-uapp", "-papp", "-e", sql])
        .output()
    {
        Ok(o) if o.status.success() => {}
        Ok(o) => eprintln!(
            "restore `{sql}` on {addr}: {}",
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => eprintln!("restore `{sql}` on {addr}: {e}"),
    }
}

/// Statements that put the topology back when the test ends.
struct Restore(Vec<(String, &'static str)>);

impl Drop for Restore {
    fn drop(&mut self) {
        for (addr, sql) in &self.0 {
            sql_now(addr, sql);
        }
    }
}

fn backend(s: &Sluice, name: &str) -> serde_json::Value {
    s.status()["backends"]
        .as_array()
        .and_then(|b| b.iter().find(|b| b["name"] == name).cloned())
        .unwrap_or_default()
}

/// Another instance whose clock is an hour ahead writes its heartbeat; a
/// replica then falls 3 s behind. Reading every instance's rows (the
/// newest timestamp wins) would show that replica as fresh; reading its
/// own rows, the instance sees the lag and stops reading from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_instances_heartbeats_are_not_read_as_its_own() {
    let t = Topology::from_env();
    let s = Sluice::start_with(SluiceOptions {
        server_extra: "instance_name = \"scaleout-a\"".into(),
        routing_extra: "max_replica_lag_ms = 1000".into(),
        ..SluiceOptions::default()
    });
    wait_until(
        "replica2's lag comes from heartbeats",
        Duration::from_secs(30),
        || backend(&s, "replica2")["lag_source"] == "heartbeat",
    )
    .await;

    let mut primary = Conn::new(direct_opts(&t.primary)).await.expect("primary");
    let mine = sluice_config::instance_id("scaleout-a");
    let rows: Vec<u32> = primary
        .query("SELECT id FROM sluice.heartbeat")
        .await
        .expect("heartbeat rows");
    assert!(rows.contains(&mine), "no heartbeat row {mine} in {rows:?}");

    let _restore = Restore(vec![
        (
            t.replica2.clone(),
            "STOP SLAVE; CHANGE MASTER TO MASTER_DELAY = 0; START SLAVE",
        ),
        (t.primary.clone(), "DELETE FROM sluice.heartbeat WHERE id = 7"),
    ]);
    let ahead = sluice_tests::now_us() + 3_600_000_000;
    primary
        .query_drop(format!(
            "INSERT INTO sluice.heartbeat (id, ts) VALUES (7, {ahead}) \
             ON DUPLICATE KEY UPDATE ts = VALUES(ts)"
        ))
        .await
        .expect("skewed heartbeat");
    let pos: String = primary
        .query_first("SELECT @@gtid_binlog_pos")
        .await
        .expect("position")
        .unwrap_or_default();
    let mut replica2 = Conn::new(direct_opts(&t.replica2)).await.expect("replica2");
    let waited: Option<i64> = replica2
        .query_first(format!("SELECT MASTER_GTID_WAIT('{pos}', 30)"))
        .await
        .expect("wait");
    assert_eq!(waited, Some(0), "replica2 never applied the skewed heartbeat");

    replica2
        .query_drop("STOP SLAVE; CHANGE MASTER TO MASTER_DELAY = 3; START SLAVE")
        .await
        .expect("delay replica2");
    wait_until(
        "replica2 is stale for lagging over 1000 ms by its own heartbeats",
        Duration::from_secs(30),
        || {
            let b = backend(&s, "replica2");
            b["stale"] == true
                && b["lag_source"] == "heartbeat"
                && b["lag_ms"].as_f64().is_some_and(|l| l > 1000.0)
        },
    )
    .await;
}

/// Two instances with guarded tables and no `guard.server_id` set: each
/// derives its own, so neither stream kicks the other off the primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_guards_stream_side_by_side() {
    let t = Topology::from_env();
    let mut primary = Conn::new(direct_opts(&t.primary)).await.expect("primary");
    primary
        .query_drop(
            "CREATE TABLE IF NOT EXISTS sluice_test.scaleout_guard (id BIGINT PRIMARY KEY, v INT) ENGINE=InnoDB",
        )
        .await
        .expect("table");
    let options = || {
        SluiceOptions {
        extra: "\n[guard]\nrebuild_interval_ms = 0\n\n[[guard.tables]]\ntable = \"sluice_test.scaleout_guard\"\nkey = \"id\"\n"
            .into(),
        ..SluiceOptions::default()
    }
    };
    let a = Sluice::start_with(options());
    let b = Sluice::start_with(options());
    let ready = |s: &Sluice| {
        let g = &s.status()["guard"];
        g["connected"] == true && g["tables"]["sluice_test.scaleout_guard"]["state"] == "ready"
    };
    wait_until("both guards are ready", Duration::from_secs(30), || {
        ready(&a) && ready(&b)
    })
    .await;
    let reconnects = |s: &Sluice| s.status()["guard"]["reconnects"].as_u64().unwrap_or(0);
    let before = (reconnects(&a), reconnects(&b));

    // Writes both streams must see; then both have applied them.
    for i in 0..50 {
        primary
            .query_drop(format!(
                "INSERT INTO sluice_test.scaleout_guard VALUES ({i}, {i}) ON DUPLICATE KEY UPDATE v = v + 1"
            ))
            .await
            .expect("insert");
    }
    let pos: String = primary
        .query_first("SELECT @@gtid_binlog_pos")
        .await
        .expect("position")
        .unwrap_or_default();
    let applied = |s: &Sluice| {
        s.status()["guard"]["applied_gtid"]
            .as_str()
            .is_some_and(|have| sluice_tests::gtid_covers(have, &pos))
    };
    wait_until("both guards applied the writes", Duration::from_secs(30), || {
        applied(&a) && applied(&b)
    })
    .await;
    assert_eq!(
        (reconnects(&a), reconnects(&b)),
        before,
        "a guard stream was cut while both ran: their server_ids collide"
    );
    assert!(ready(&a) && ready(&b));
    let (ida, idb) = (server_id(&a), server_id(&b));
    assert_ne!(ida, idb, "derived guard server_ids");
}

/// The guard server_id an instance runs with (`check-config` prints the
/// effective config, derived defaults included).
fn server_id(s: &Sluice) -> u64 {
    let out = std::process::Command::new(sluice_tests::sluice_bin())
        .arg("check-config")
        .arg(s.config_path())
        .env("SLUICE_TEST_OTHER_PASSWORD", "secret-other-pw")
        .output()
        .expect("check-config");
    let text = String::from_utf8_lossy(&out.stdout);
    let id = text
        .split("[guard]")
        .nth(1)
        .and_then(|g| g.lines().find_map(|l| l.strip_prefix("server_id = ")))
        .and_then(|v| v.trim().parse().ok());
    id.unwrap_or_else(|| panic!("no guard server_id in:\n{text}"))
}
