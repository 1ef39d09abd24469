//! Real faults against the real topology, each asserting what the clients
//! saw: idle connections past wait_timeout, a replica killed with -9, a
//! frozen replica (SIGSTOP), a primary restart, a connection storm against
//! a small max_connections, a table lock that starves the pool, and writes
//! cut by a backend kill that must never apply twice. The tests change
//! server-wide settings, so they run one at a time and restore them.

use futures_util::future::join_all;
use mysql_async::prelude::*;
use mysql_async::{Conn, OptsBuilder};
use sluice_tests::node::nodes;
use sluice_tests::raw::{DRIVER_CAPS, RawClient, err_code};
use sluice_tests::{Sluice, SluiceOptions, Topology, direct_opts, metric_sum, raise_fd_limit};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

static SERIAL: Mutex<()> = Mutex::const_new(());

fn split_no_ryw(extra_routing: &str, extra_pool: &str) -> Sluice {
    Sluice::start_with(SluiceOptions {
        routing_extra: format!("read_your_writes = \"off\"\n{extra_routing}"),
        pool_extra: extra_pool.to_string(),
        ..SluiceOptions::default()
    })
}

async fn set_global_everywhere(sql: &str) {
    for node in nodes() {
        node.exec(sql).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_clients_survive_wait_timeout() {
    let _serial = SERIAL.lock().await;
    set_global_everywhere("SET GLOBAL wait_timeout = 3").await;
    let s = split_no_ryw("", "");
    let mut clients = Vec::new();
    for _ in 0..10 {
        let mut c = Conn::new(s.opts()).await.unwrap();
        let _: Option<u32> = c.query_first("SELECT @@server_id").await.unwrap();
        c.query_drop("DO 1 /* sluice:primary */").await.unwrap();
        clients.push(c);
    }
    // A direct connection, for contrast, idles into the server's timeout.
    let mut direct = Conn::new(direct_opts(&Topology::from_env().primary))
        .await
        .unwrap();
    // Until the server closes the idle direct connection for wait_timeout:
    // every pooled connection was last used before it was opened, so each
    // one has idled as long, and only Sluice's keepalive saved it.
    let direct_id = direct.id();
    let mut watcher = Conn::new(direct_opts(&Topology::from_env().primary))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left: Option<u64> = watcher
            .exec_first(
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = ?",
                (direct_id,),
            )
            .await
            .unwrap();
        if left == Some(0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the server never closed the idle direct connection"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let direct_result = direct.query_drop("SELECT 1").await;
    for c in &mut clients {
        let id: Option<u32> = c
            .query_first("SELECT @@server_id")
            .await
            .expect("read after idling");
        assert!(id.is_some());
        c.query_drop("DO 2 /* sluice:primary */")
            .await
            .expect("primary statement after idling");
    }
    set_global_everywhere("SET GLOBAL wait_timeout = 28800").await;
    assert!(
        direct_result.is_err(),
        "a direct connection does hit wait_timeout=3"
    );
    let m = s.metrics();
    println!(
        "keepalive pings: {}",
        metric_sum(&m, "sluice_pool_keepalive_pings_total", &[])
    );
    assert!(metric_sum(&m, "sluice_pool_keepalive_pings_total", &[]) > 0.0);
    // Kept alive, not found dead and replaced: the pings reached every
    // pooled connection, including those last used just before the idle
    // spell (the pool's hot stack).
    assert_eq!(
        metric_sum(
            &m,
            "sluice_pool_connections_replaced_total",
            &["reason=\"closed_by_server\""]
        ),
        0.0
    );
    assert_eq!(metric_sum(&m, "sluice_errors_total", &[]), 0.0);
}

/// Reads `SELECT @@server_id` from `tasks` clients until `stop`, counting
/// answers per server and errors.
async fn read_load(s: &Sluice, tasks: usize, stop: Arc<AtomicBool>) -> (HashMap<u32, usize>, Vec<String>) {
    let workers = (0..tasks).map(|_| {
        let opts = s.opts();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut seen: HashMap<u32, usize> = HashMap::new();
            let mut errors = Vec::new();
            let mut c = Conn::new(opts).await.unwrap();
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                match tokio::time::timeout(
                    Duration::from_secs(20),
                    c.query_first::<u32, _>("SELECT @@server_id"),
                )
                .await
                {
                    Ok(Ok(Some(id))) => *seen.entry(id).or_default() += 1,
                    Ok(Ok(None)) => errors.push("no row".to_string()),
                    Ok(Err(e)) => errors.push(e.to_string()),
                    Err(_) => errors.push(format!("hung for {:?}", started.elapsed())),
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (seen, errors)
        })
    });
    let mut seen = HashMap::new();
    let mut errors = Vec::new();
    for r in join_all(workers).await {
        let (s, e) = r.unwrap();
        for (k, v) in s {
            *seen.entry(k).or_default() += v;
        }
        errors.extend(e);
    }
    (seen, errors)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_replica_reads_continue_and_it_comes_back() {
    let _serial = SERIAL.lock().await;
    let [_, replica1, _] = nodes();
    let s = split_no_ryw("", "");
    let stop = Arc::new(AtomicBool::new(false));
    let reader = read_load(&s, 8, stop.clone());
    let fault = async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        replica1.kill9();
        tokio::time::sleep(Duration::from_secs(3)).await;
        replica1.start().await;
        // Reads return to it once it is back (it is skipped for a moment
        // after failing).
        tokio::time::sleep(Duration::from_secs(4)).await;
        stop.store(true, Ordering::Relaxed);
    };
    let ((seen, errors), ()) = tokio::join!(reader, fault);
    println!(
        "killed replica: answers per server {seen:?}, errors {}",
        errors.len()
    );
    assert!(
        errors.is_empty(),
        "autocommit reads saw errors: {:?}",
        &errors[..errors.len().min(5)]
    );
    assert!(
        seen.get(&3).copied().unwrap_or(0) > 0,
        "the other replica kept answering"
    );
    // Fresh reads reach the restarted replica again.
    let mut c = Conn::new(s.opts()).await.unwrap();
    let mut back = false;
    for _ in 0..200 {
        if c.query_first::<u32, _>("SELECT @@server_id").await.unwrap() == Some(2) {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(back, "the restarted replica gets reads again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_replica_reads_move_away_without_hanging() {
    let _serial = SERIAL.lock().await;
    let [_, _, replica2] = nodes();
    let s = Sluice::start_with(SluiceOptions {
        routing_extra: "read_your_writes = \"off\"\nquery_timeout_ms = 1000".into(),
        pool_extra: "connect_timeout_ms = 500".into(),
        ..SluiceOptions::default()
    });
    let stop = Arc::new(AtomicBool::new(false));
    let reader = read_load(&s, 6, stop.clone());
    let fault = async {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        replica2.freeze();
        tokio::time::sleep(Duration::from_secs(5)).await;
        stop.store(true, Ordering::Relaxed);
    };
    let ((seen, errors), ()) = tokio::join!(reader, fault);
    replica2.thaw();
    println!("frozen replica: answers per server {seen:?}, errors {errors:?}");
    assert!(
        !errors.iter().any(|e| e.starts_with("hung")),
        "no client hangs: {errors:?}"
    );
    assert!(errors.is_empty(), "reads moved to the other replica: {errors:?}");
    assert!(seen.get(&2).copied().unwrap_or(0) > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_restart_fails_writes_clearly_then_recovers() {
    let _serial = SERIAL.lock().await;
    let [primary, _, _] = nodes();
    let s = split_no_ryw("", "connect_timeout_ms = 500");
    let mut c = Conn::new(s.opts()).await.unwrap();
    c.query_drop("CREATE TABLE IF NOT EXISTS fault_w (id INT PRIMARY KEY AUTO_INCREMENT, v INT)")
        .await
        .unwrap();
    c.query_drop("INSERT INTO fault_w (v) VALUES (1)").await.unwrap();
    primary.kill9();
    let err = c
        .query_drop("INSERT INTO fault_w (v) VALUES (2)")
        .await
        .unwrap_err();
    let text = err.to_string();
    println!("write during the outage: {text}");
    assert!(
        text.contains("backend 'primary'")
            && (text.contains("unreachable") || text.contains("outcome is unknown")),
        "a clear error naming the primary: {text}"
    );
    let read: Option<u32> = c
        .query_first("SELECT @@server_id")
        .await
        .expect("reads keep flowing from replicas");
    assert!(matches!(read, Some(2) | Some(3)));
    primary.start().await;
    let mut ok = false;
    for _ in 0..100 {
        if c.query_drop("INSERT INTO fault_w (v) VALUES (3)").await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "writes succeed again without restarting sluice");
    // Let the replicas reconnect to the restarted primary.
    for node in &nodes()[1..] {
        node.exec("STOP SLAVE; START SLAVE").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_clients_never_see_too_many_connections() {
    let _serial = SERIAL.lock().await;
    raise_fd_limit();
    set_global_everywhere("SET GLOBAL max_connections = 100").await;
    let s = Sluice::start_with(SluiceOptions {
        max_connections_per_backend: 20,
        acquire_timeout_ms: 60_000,
        ..SluiceOptions::default()
    });
    let clients = (0..5000).map(|i| {
        let opts = OptsBuilder::from_opts(s.opts()).stmt_cache_size(0);
        async move {
            let r: Result<(), mysql_async::Error> = async {
                let mut c = Conn::new(opts).await?;
                let _: Option<u32> = c.query_first("SELECT @@server_id").await?;
                c.query_drop(format!("DO {i} /* sluice:primary */")).await?;
                c.disconnect().await
            }
            .await;
            r.err().map(|e| e.to_string())
        }
    });
    let errors: Vec<String> = join_all(clients).await.into_iter().flatten().collect();
    set_global_everywhere("SET GLOBAL max_connections = 500").await;
    let too_many = errors
        .iter()
        .filter(|e| e.contains("Too many connections"))
        .count();
    println!(
        "5000 clients against max_connections=100: {} errors ({} too many connections)",
        errors.len(),
        too_many
    );
    assert_eq!(too_many, 0);
    assert!(errors.is_empty(), "{:?}", &errors[..errors.len().min(5)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_lock_starving_the_pool_gives_pool_exhausted() {
    let _serial = SERIAL.lock().await;
    let s = Sluice::start_with(SluiceOptions {
        max_connections_per_backend: 2,
        acquire_timeout_ms: 500,
        routing_mode: "primary_only",
        ..SluiceOptions::default()
    });
    let mut a = Conn::new(s.opts()).await.unwrap();
    a.query_drop("CREATE TABLE IF NOT EXISTS fault_lock (id INT)")
        .await
        .unwrap();
    a.query_drop("LOCK TABLES fault_lock WRITE").await.unwrap(); // pins connection 1
    // A driver's multi-result bits: the same pool as `a` and `c`.
    let mut b = RawClient::connect(s.port, "app", "app", DRIVER_CAPS)
        .await
        .unwrap();
    b.stream.send(0, b"\x03SELECT * FROM fault_lock").await.unwrap(); // blocks on connection 2
    sluice_tests::wait_until_running("SELECT * FROM fault_lock").await;
    let mut c = RawClient::connect_without_schema(s.port, "app", "app")
        .await
        .unwrap();
    let started = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(20), c.command(b"\x03SELECT 1"))
        .await
        .expect("no hang")
        .unwrap();
    println!("starved client answered after {:?}", started.elapsed());
    assert_eq!(err_code(&r.payload), Some(9001));
    assert!(String::from_utf8_lossy(&r.payload).contains("'primary'"));
    a.query_drop("UNLOCK TABLES").await.unwrap();
    let done = b
        .read_until(|p| p.payload[0] == 0xfe && p.payload.len() < 9)
        .await
        .unwrap();
    assert!(
        !done.is_empty(),
        "the blocked statement finishes once the lock is gone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_cut_by_a_backend_kill_never_apply_twice() {
    let _serial = SERIAL.lock().await;
    let [primary, _, _] = nodes();
    let s = split_no_ryw("", "connect_timeout_ms = 500");
    let mut setup = Conn::new(s.opts()).await.unwrap();
    // No unique key: a write applied twice would show as a duplicate token.
    setup
        .query_drop("CREATE OR REPLACE TABLE fault_once (token VARCHAR(40), INDEX (token))")
        .await
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writers = (0..4).map(|w| {
        let opts = s.opts();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut unknown = Vec::new();
            let mut c = Conn::new(opts).await.unwrap();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let token = format!("w{w}-{i}");
                i += 1;
                match c
                    .exec_drop("INSERT INTO fault_once (token) VALUES (?)", (&token,))
                    .await
                {
                    Ok(()) => acked.push(token),
                    Err(_) => unknown.push(token),
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            (acked, unknown)
        })
    });
    let writers: Vec<_> = writers.collect();
    tokio::time::sleep(Duration::from_millis(800)).await;
    primary.kill9();
    tokio::time::sleep(Duration::from_millis(500)).await;
    primary.start().await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, Ordering::Relaxed);
    let mut acked = HashSet::new();
    let mut unknown = HashSet::new();
    for w in writers {
        let (a, u) = w.await.unwrap();
        acked.extend(a);
        unknown.extend(u);
    }
    let rows: Vec<(String, i64)> = setup
        .query("SELECT /* sluice:primary */ token, COUNT(*) FROM fault_once GROUP BY token")
        .await
        .unwrap();
    let applied: HashMap<String, i64> = rows.into_iter().collect();
    println!(
        "acknowledged {}, failed {}, rows {}",
        acked.len(),
        unknown.len(),
        applied.len()
    );
    assert!(applied.values().all(|&n| n == 1), "no write applied twice");
    for t in &acked {
        assert!(applied.contains_key(t), "acknowledged write {t} is in the table");
    }
    assert!(
        applied.keys().all(|t| acked.contains(t) || unknown.contains(t)),
        "nothing was written that no client sent"
    );
    assert!(
        !unknown.is_empty() && acked.len() > 100,
        "the kill really cut writes"
    );
    for node in &nodes()[1..] {
        node.exec("STOP SLAVE; START SLAVE").await;
    }
}
