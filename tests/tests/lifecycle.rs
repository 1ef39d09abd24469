//! Pool lifecycle settings and timeouts: `pool.min_idle` keeps connections
//! warm, `pool.max_lifetime_ms` replaces old ones, `pool.max_queue` refuses
//! at once, `routing.query_timeout_ms` kills a long statement, and
//! `server.client_idle_timeout_ms` disconnects an idle client. Backend
//! connections Sluice closes on purpose quit with COM_QUIT.

use mysql_async::Conn;
use mysql_async::prelude::*;
use sluice_tests::node::Node;
use sluice_tests::raw::{RawClient, err_code};
use sluice_tests::{Sluice, SluiceOptions, Topology, direct_opts, metric_sum, pool_sizes};
use std::time::{Duration, Instant};

#[tokio::test]
async fn min_idle_keeps_connections_and_max_lifetime_replaces_them() {
    let s = Sluice::start_with(SluiceOptions {
        routing_mode: "primary_only",
        pool_extra: "min_idle = 3\nmax_lifetime_ms = 1000".into(),
        ..SluiceOptions::default()
    });
    let mut c = Conn::new(s.opts()).await.unwrap();
    c.query_drop("DO 1").await.unwrap();
    // Both happen within a few housekeeping sweeps (500 ms each).
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let status = s.http_get("/status").unwrap_or_default();
        let largest = pool_sizes(&status).into_iter().max().unwrap_or(0);
        let replaced = metric_sum(
            &s.metrics(),
            "sluice_pool_connections_replaced_total",
            &["reason=\"max_lifetime\""],
        );
        if largest >= 3 && replaced > 0.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "min_idle connections are open ({largest}) and connections older than \
             max_lifetime_ms were replaced ({replaced}): {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.query_drop("DO 2").await.expect("clients never notice");
}

/// The real id of the backend connection `c`'s statements run on (inside a
/// transaction, so the next statement runs there too): the query finds its
/// own row in the server's process list by a marker in its text.
async fn backend_id(c: &mut Conn, marker: &str) -> u64 {
    let sql = format!(
        "SELECT ID FROM information_schema.PROCESSLIST WHERE INFO LIKE '%{marker}%' AND COMMAND = 'Query'"
    );
    c.query_first(sql).await.unwrap().expect("the query sees itself")
}

/// Waits until the primary no longer has connection `id`.
async fn wait_gone(id: u64) {
    let mut direct = Conn::new(direct_opts(&Topology::from_env().primary))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let n: Option<u64> = direct
            .query_first(format!(
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = {id}"
            ))
            .await
            .unwrap();
        if n == Some(0) {
            return;
        }
        assert!(Instant::now() < deadline, "backend connection {id} still open");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn backend_connections_closed_on_purpose_quit_cleanly() {
    let mut s = Sluice::start_with(SluiceOptions {
        routing_mode: "primary_only",
        pool_extra: "max_lifetime_ms = 1000".into(),
        ..SluiceOptions::default()
    });
    let marker = format!("goodbye-{}", s.port);
    let primary = Node::new("primary", &Topology::from_env().primary);
    // Only what the server logs from now on: a restarted server (the fault
    // tests restart it) gives out the same ids again.
    let logged_before = primary.error_log().len();
    let aborted = |id: u64| {
        let log = primary.error_log();
        log.get(logged_before..)
            .unwrap_or(&log)
            .contains(&format!("Aborted connection {id} "))
    };

    // Replaced for its age (pool.max_lifetime_ms).
    let mut c = Conn::new(s.opts()).await.unwrap();
    c.query_drop("BEGIN").await.unwrap();
    let old = backend_id(&mut c, &marker).await;
    c.query_drop("COMMIT").await.unwrap();
    wait_gone(old).await;
    assert!(
        metric_sum(
            &s.metrics(),
            "sluice_pool_connections_replaced_total",
            &["reason=\"max_lifetime\""]
        ) > 0.0
    );
    assert!(
        !aborted(old),
        "connection {old}, replaced for its age, quit with COM_QUIT"
    );

    // Closed at shutdown: the pooled one and the monitor's (probe and
    // heartbeat writer), every connection Sluice has to the primary.
    c.query_drop("BEGIN").await.unwrap();
    let last = backend_id(&mut c, &marker).await;
    c.query_drop("COMMIT").await.unwrap();
    drop(c);
    let open = connections_of(s.pid(), primary_port()).await;
    assert!(open.contains(&last), "{last} is among {open:?}");
    assert!(
        open.len() >= 3,
        "pooled, probe and heartbeat connections: {open:?}"
    );
    s.signal(libc::SIGTERM);
    let exited = tokio::task::spawn_blocking(move || s.wait_exit(Duration::from_secs(20)))
        .await
        .unwrap();
    assert!(exited.is_some_and(|st| st.success()), "{exited:?}");
    for id in open {
        wait_gone(id).await;
        assert!(
            !aborted(id),
            "connection {id}, closed at shutdown, quit with COM_QUIT"
        );
    }
}

fn primary_port() -> u16 {
    sluice_tests::port_of(&Topology::from_env().primary)
}

/// The primary's ids of the connections process `pid` has open to `port`:
/// its sockets (`/proc/PID/fd`) matched by inode in `/proc/net/tcp`, whose
/// local ports the server's process list shows as `HOST`.
async fn connections_of(pid: u32, port: u16) -> Vec<u64> {
    let inodes: std::collections::HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
        })
        .collect();
    let hex_port = |addr: &str| u16::from_str_radix(addr.rsplit(':').next().unwrap_or(""), 16).ok();
    let local_ports: Vec<u16> = std::fs::read_to_string("/proc/net/tcp")
        .unwrap()
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (local, remote, inode) = (f.get(1)?, f.get(2)?, f.get(9)?);
            (hex_port(remote)? == port && inodes.contains(*inode)).then(|| hex_port(local))?
        })
        .collect();
    let mut direct = Conn::new(direct_opts(&Topology::from_env().primary))
        .await
        .unwrap();
    let rows: Vec<(u64, String)> = direct
        .query("SELECT ID, HOST FROM information_schema.PROCESSLIST")
        .await
        .unwrap();
    rows.into_iter()
        .filter(|(_, host)| {
            host.rsplit(':')
                .next()
                .and_then(|p| p.parse::<u16>().ok())
                .is_some_and(|p| local_ports.contains(&p))
        })
        .map(|(id, _)| id)
        .collect()
}

#[tokio::test]
async fn full_queue_is_refused_at_once() {
    let s = Sluice::start_with(SluiceOptions {
        max_connections_per_backend: 1,
        acquire_timeout_ms: 5000,
        routing_mode: "primary_only",
        pool_extra: "max_queue = 1".into(),
        ..SluiceOptions::default()
    });
    let mut holder = Conn::new(s.opts()).await.unwrap();
    holder.query_drop("BEGIN").await.unwrap();
    let mut queued = RawClient::connect_without_schema(s.port, "app", "app")
        .await
        .unwrap();
    queued.stream.send(0, b"\x03SELECT 1").await.unwrap(); // waits in the queue
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric_sum(&s.metrics(), "sluice_pool_waiting", &[]) < 1.0 {
        assert!(Instant::now() < deadline, "the statement queues for the pool");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut refused = RawClient::connect_without_schema(s.port, "app", "app")
        .await
        .unwrap();
    let started = Instant::now();
    let r = refused.command(b"\x03SELECT 1").await.unwrap();
    let msg = String::from_utf8_lossy(&r.payload).into_owned();
    println!("refused after {:?}: {msg}", started.elapsed());
    assert_eq!(err_code(&r.payload), Some(9001));
    assert!(msg.contains("pool.max_queue"), "{msg}");
    holder.query_drop("COMMIT").await.unwrap();
    let answer = queued.stream.read_packet().await.unwrap();
    assert_ne!(
        answer.payload[0], 0xff,
        "the queued statement runs once the connection frees"
    );
    assert!(metric_sum(&s.metrics(), "sluice_errors_total", &["cause=\"queue_full\""]) >= 1.0);
}

#[tokio::test]
async fn query_timeout_kills_a_long_statement() {
    let s = Sluice::start_with(SluiceOptions {
        routing_extra: "query_timeout_ms = 500".into(),
        ..SluiceOptions::default()
    });
    let mut c = Conn::new(s.opts()).await.unwrap();
    let started = Instant::now();
    let err = c.query_drop("SELECT SLEEP(20) /* sluice:primary */").await;
    println!(
        "SLEEP(20) with query_timeout_ms=500 answered after {:?}: {err:?}",
        started.elapsed()
    );
    // The server's own answer to KILL QUERY, relayed: 1317 "Query execution
    // was interrupted" (a SLEEP that ran to its end would return a row).
    match err {
        Err(mysql_async::Error::Server(e)) => assert_eq!(e.code, 1317, "{e:?}"),
        other => panic!("expected the statement to be killed, got {other:?}"),
    }
    assert!(metric_sum(&s.metrics(), "sluice_errors_total", &["cause=\"query_timeout\""]) >= 1.0);
    let one: Option<i32> = c.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1), "the client connection goes on");
}

#[tokio::test]
async fn idle_clients_are_disconnected_after_the_idle_timeout() {
    let s = Sluice::start_with(SluiceOptions {
        server_extra: "client_idle_timeout_ms = 500".into(),
        ..SluiceOptions::default()
    });
    let mut c = RawClient::connect_without_schema(s.port, "app", "app")
        .await
        .unwrap();
    let notice = tokio::time::timeout(Duration::from_secs(10), c.stream.read_packet())
        .await
        .expect("the idle client is told within 10 s")
        .unwrap();
    assert_eq!(err_code(&notice.payload), Some(4031));
    assert!(
        c.stream.read_packet().await.is_err(),
        "then the connection is closed"
    );
}
