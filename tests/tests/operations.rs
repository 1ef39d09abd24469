//! Operating Sluice live: hot reloads (valid and invalid, by file change
//! and SIGHUP) under load with no client error, a removed backend that
//! drains without cutting a transaction, a weight change that shifts reads,
//! SIGTERM that lets an open transaction commit, and logs without terminal
//! colour codes when stderr is a file.

use mysql_async::Conn;
use mysql_async::prelude::*;
use sluice_tests::{Sluice, SluiceOptions, Topology, metric_sum};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

fn generation(s: &Sluice) -> f64 {
    metric_sum(&s.metrics(), "sluice_config_generation", &[])
}

async fn wait_generation(s: &Sluice, above: f64) {
    for _ in 0..100 {
        if generation(s) > above {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the reload was not applied; log:\n{}", s.log());
}

/// Reads per replica over `n` sequential reads.
async fn read_shares(c: &mut Conn, n: usize) -> HashMap<u32, usize> {
    let mut seen = HashMap::new();
    for _ in 0..n {
        let id: u32 = c.query_first("SELECT @@server_id").await.unwrap().unwrap();
        *seen.entry(id).or_default() += 1;
    }
    seen
}

fn no_ryw() -> SluiceOptions {
    SluiceOptions {
        routing_extra: "read_your_writes = \"off\"".into(),
        ..SluiceOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_reloads_valid_and_invalid_under_load_without_client_errors() {
    let s = Sluice::start_with(no_ryw());
    let original = std::fs::read_to_string(s.config_path()).unwrap();
    let mut setup = Conn::new(s.opts()).await.unwrap();
    setup
        .query_drop("CREATE OR REPLACE TABLE ops_load (id INT PRIMARY KEY, v INT)")
        .await
        .unwrap();
    setup
        .query_drop("INSERT INTO ops_load VALUES (1,0),(2,0),(3,0),(4,0)")
        .await
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (1..=4)
        .map(|id| {
            let opts = s.opts();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut errors = Vec::new();
                let mut done = 0;
                let mut c = Conn::new(opts).await.unwrap();
                while !stop.load(Ordering::Relaxed) {
                    let r: Result<(), mysql_async::Error> = async {
                        let _: Option<u32> = c.query_first("SELECT @@server_id").await?;
                        c.exec_drop("UPDATE ops_load SET v = v + 1 WHERE id = ?", (id,))
                            .await?;
                        c.query_drop("BEGIN").await?;
                        let _: Option<i32> = c
                            .query_first(format!("SELECT v FROM ops_load WHERE id = {id}"))
                            .await?;
                        c.query_drop("COMMIT").await
                    }
                    .await;
                    match r {
                        Ok(()) => done += 1,
                        Err(e) => errors.push(e.to_string()),
                    }
                }
                (done, errors)
            })
        })
        .collect();
    for i in 0..50 {
        let text = if i % 2 == 0 {
            // Valid: pool size and replica weight change.
            original.replace(
                "max_connections_per_backend = 20",
                &format!("max_connections_per_backend = {}", 10 + i),
            )
        } else {
            original.replace(
                "max_connections_per_backend = 20",
                "max_connections_per_backend = \"lots\"",
            )
        };
        s.write_config(&text);
        if i % 10 == 9 {
            s.signal(libc::SIGHUP);
        }
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut done = 0;
    let mut errors = Vec::new();
    for w in workers {
        let (d, e) = w.await.unwrap();
        done += d;
        errors.extend(e);
    }
    let m = s.metrics();
    let ok = metric_sum(&m, "sluice_config_reloads_total", &["result=\"ok\""]);
    let bad = metric_sum(&m, "sluice_config_reloads_total", &["result=\"error\""]);
    println!(
        "50 reloads under load: {done} client iterations, {} errors; reloads ok {ok}, rejected {bad}",
        errors.len()
    );
    assert!(
        errors.is_empty(),
        "client errors during reloads: {:?}",
        &errors[..errors.len().min(5)]
    );
    assert!(
        ok >= 20.0 && bad >= 20.0,
        "both kinds of reload happened (ok {ok}, rejected {bad})"
    );
    assert!(
        s.log().contains("max_connections_per_backend"),
        "the rejection names the bad key"
    );
}

#[tokio::test]
async fn removed_backend_drains_without_cutting_a_transaction() {
    let s = Sluice::start_with(no_ryw());
    let original = std::fs::read_to_string(s.config_path()).unwrap();
    let mut a = Conn::new(s.opts()).await.unwrap();
    a.query_drop("START TRANSACTION READ ONLY").await.unwrap();
    let replica: u32 = a.query_first("SELECT @@server_id").await.unwrap().unwrap();
    assert!(replica == 2 || replica == 3);
    let topo = Topology::from_env();
    let (removed_addr, removed_name) = if replica == 2 {
        (topo.replica1.clone(), "replica1")
    } else {
        (topo.replica2.clone(), "replica2")
    };
    // Drop that replica's [[backends]] entry.
    let block = format!(
        "\n[[backends]]\nname = \"{removed_name}\"\naddress = \"{removed_addr}\"\nrole = \"replica\"\n"
    );
    assert!(original.contains(&block), "config layout:\n{original}");
    let before = generation(&s);
    s.write_config(&original.replace(&block, "\n"));
    wait_generation(&s, before).await;
    // The open transaction finishes on its connection.
    let again: u32 = a.query_first("SELECT @@server_id").await.unwrap().unwrap();
    assert_eq!(again, replica, "the transaction keeps its connection");
    a.query_drop("COMMIT").await.unwrap();
    // New reads never reach the removed backend.
    let shares = read_shares(&mut a, 30).await;
    assert!(
        !shares.contains_key(&replica),
        "removed backend still got reads: {shares:?}"
    );
}

#[tokio::test]
async fn weight_change_shifts_the_read_distribution() {
    let s = Sluice::start_with(no_ryw());
    let original = std::fs::read_to_string(s.config_path()).unwrap();
    let mut c = Conn::new(s.opts()).await.unwrap();
    let even = read_shares(&mut c, 100).await;
    println!("weights 1:1 -> {even:?}");
    assert!(even.get(&2).copied().unwrap_or(0) >= 30 && even.get(&3).copied().unwrap_or(0) >= 30);
    let weighted = original.replace("name = \"replica2\"", "name = \"replica2\"\nweight = 9");
    let before = generation(&s);
    s.write_config(&weighted);
    wait_generation(&s, before).await;
    let shifted = read_shares(&mut c, 100).await;
    println!("weights 1:9 -> {shifted:?}");
    assert!(
        shifted.get(&3).copied().unwrap_or(0) >= 80,
        "replica2 (weight 9) takes most reads: {shifted:?}"
    );
}

#[tokio::test]
async fn sigterm_lets_an_open_transaction_commit() {
    let mut s = Sluice::start();
    let mut setup = Conn::new(s.opts()).await.unwrap();
    setup
        .query_drop("CREATE TABLE IF NOT EXISTS ops_term (id INT PRIMARY KEY)")
        .await
        .unwrap();
    setup.query_drop("DELETE FROM ops_term").await.unwrap();
    let mut idle = Conn::new(s.opts()).await.unwrap();
    let mut a = Conn::new(s.opts()).await.unwrap();
    a.query_drop("BEGIN").await.unwrap();
    a.query_drop("INSERT INTO ops_term VALUES (1)").await.unwrap();
    s.signal(libc::SIGTERM);
    let port = s.port;
    sluice_tests::wait_until("the listening socket is closed", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
    })
    .await;
    // New clients are no longer accepted; idle ones are told and closed.
    assert!(
        Conn::new(s.opts()).await.is_err(),
        "no new connections while stopping"
    );
    let idle_err = idle.query_drop("SELECT 1").await.unwrap_err();
    println!("idle client during shutdown: {idle_err}");
    // The transaction goes on and commits.
    a.query_drop("INSERT INTO ops_term VALUES (2)").await.unwrap();
    a.query_drop("COMMIT").await.unwrap();
    drop(a);
    let status = tokio::task::spawn_blocking(move || {
        let st = s.wait_exit(Duration::from_secs(20));
        (st, s)
    })
    .await
    .unwrap();
    assert!(
        status.0.is_some_and(|st| st.success()),
        "sluice exits 0 after the transaction: {:?}",
        status.0
    );
    let mut direct = Conn::new(sluice_tests::direct_opts(&Topology::from_env().primary))
        .await
        .unwrap();
    let n: Option<i64> = direct.query_first("SELECT COUNT(*) FROM ops_term").await.unwrap();
    assert_eq!(n, Some(2), "both rows of the committed transaction are there");
}

#[tokio::test]
async fn log_to_a_file_has_no_colour_codes() {
    // The harness sends stderr to a file, as journald or `docker logs` would.
    let s = Sluice::start();
    let mut c = Conn::new(s.opts()).await.unwrap();
    let _: Option<i32> = c.query_first("SELECT 1").await.unwrap();
    c.disconnect().await.unwrap();
    sluice_tests::wait_until("the startup line is logged", Duration::from_secs(15), || {
        s.log().contains(" ready")
    })
    .await;
    let log = std::fs::read(s.dir.join("sluice.log")).unwrap();
    let text = String::from_utf8_lossy(&log);
    let coloured = text.lines().find(|l| l.contains('\u{1b}'));
    assert!(
        coloured.is_none(),
        "an ESC byte (terminal colour code) in the log: {:?}",
        coloured.unwrap_or_default()
    );
    assert!(
        text.contains(" ready listen=127.0.0.1:"),
        "no startup line:\n{text}"
    );
}
