//! Several Sluice instances in front of one topology, as behind an L4
//! balancer: each reads only its own heartbeats (another instance's clock
//! may be ahead of its own), their guards' binlog streams coexist (each
//! registers with its own server_id, derived from its instance name), and
//! behind the shipped HAProxy example under sysbench one drains on SIGTERM
//! without a client error while the other is killed.

use mysql_async::Conn;
use mysql_async::prelude::*;
use sluice_tests::{Sluice, SluiceOptions, Topology, direct_opts, sql_now, wait_until};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

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
    let _serial = SERIAL.lock().await;
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
    let _serial = SERIAL.lock().await;
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

// ------------------------------------------------ behind HAProxy, under load

/// Counts of one phase of the connect-per-request clients.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
    /// Failures that are not a lost connection or an instance's 1053.
    wrong: AtomicU64,
}

impl Tally {
    /// A lost connection (kill -9, a drained instance closing) and an
    /// instance's 1053 are what a client of a stopping instance may see;
    /// anything else (an SQL error, a protocol error) is wrong.
    fn failed(&self, e: &mysql_async::Error) {
        use mysql_async::{DriverError, Error};
        self.failed.fetch_add(1, Ordering::Relaxed);
        let expected = match e {
            Error::Io(_) | Error::Driver(DriverError::ConnectionClosed) => true,
            Error::Server(s) => s.code == 1053,
            _ => false,
        };
        if !expected {
            eprintln!("scale-out: unexpected client error: {e}");
            self.wrong.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// One test at a time: the heartbeat test delays a replica.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// HAProxy on `ops/haproxy/haproxy.cfg` (the shipped example), with its
/// addresses replaced: clients on `port`, instances `a` and `b`.
struct Haproxy(std::process::Child);

impl Haproxy {
    fn start(port: u16, a: &Sluice, b: &Sluice) -> Haproxy {
        let example = std::fs::read_to_string(sluice_tests::repo_path("ops/haproxy/haproxy.cfg"))
            .expect("ops/haproxy/haproxy.cfg");
        let config = example
            .replace("127.0.0.1:3306", &format!("127.0.0.1:{port}"))
            .replace(
                "10.0.0.11:6033 check port 9033",
                &format!("127.0.0.1:{} check port {}", a.port, a.admin_port),
            )
            .replace(
                "10.0.0.12:6033 check port 9033",
                &format!("127.0.0.1:{} check port {}", b.port, b.admin_port),
            );
        assert!(
            config.contains(&format!("check port {}", b.admin_port)),
            "{config}"
        );
        let path = a.dir.join("haproxy.cfg");
        std::fs::write(&path, config).expect("write haproxy.cfg");
        let child = std::process::Command::new("haproxy")
            .arg("-f")
            .arg(&path)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(a.dir.join("haproxy.log")).expect("haproxy log"))
            .spawn()
            .expect("start haproxy");
        Haproxy(child)
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn scaleout_options(ports: Option<(u16, u16)>) -> SluiceOptions {
    SluiceOptions {
        // Longer than HAProxy's fall x inter (2 x 500 ms) in the example,
        // and than what is left of the persistent sysbench run at SIGTERM.
        server_extra: "drain_delay_ms = 6000\nshutdown_timeout_ms = 10000".into(),
        ports,
        ..SluiceOptions::default()
    }
}

fn accepted(s: &Sluice) -> f64 {
    s.http_get("/metrics").map_or(0.0, |m| {
        sluice_tests::metric_sum(&m, "sluice_client_connections_accepted_total", &[])
    })
}

/// Two instances behind the shipped HAProxy example, sysbench's persistent
/// connections and connect-per-request clients through it. SIGTERM one:
/// it turns not-ready, HAProxy stops sending it clients while it still
/// serves, and it exits cleanly: no connect-per-request client fails.
/// Start it again, then kill -9 the other: only clients connected to the
/// killed one lose their connection; they reconnect through HAProxy and go
/// on, and sysbench finishes without a fatal error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_behind_haproxy_drain_and_die_under_sysbench() {
    let _serial = SERIAL.lock().await;
    sluice_tests::require_program("haproxy", &["-v"]);
    sluice_tests::require_program("sysbench", &["--version"]);
    let t = Topology::from_env();
    let mut primary = Conn::new(direct_opts(&t.primary)).await.expect("primary");
    primary
        .query_drop("CREATE DATABASE IF NOT EXISTS sluice_scaleout")
        .await
        .expect("schema");
    let (host, port) = t.primary.rsplit_once(':').expect("primary address");
    let sysbench = |port: &str, host: &str| {
        let mut cmd = std::process::Command::new("sysbench");
        cmd.arg("oltp_point_select").args([
            "--db-driver=mysql".to_string(),
            format!("--mysql-host={host}"),
            format!("--mysql-port={port}"),
            "--mysql-user=app".into(),
            "--mysql-password=app".into(),
            "--mysql-db=sluice_scaleout".into(),
            "--tables=1".into(),
            "--table-size=1000".into(),
        ]);
        cmd
    };
    let _ = sysbench(port, host).arg("cleanup").output();
    let prepared = sysbench(port, host)
        .arg("prepare")
        .output()
        .expect("sysbench prepare");
    assert!(
        prepared.status.success(),
        "{}",
        String::from_utf8_lossy(&prepared.stderr)
    );

    let mut a = Sluice::start_with(scaleout_options(None));
    let b = Sluice::start_with(scaleout_options(None));
    let front = sluice_tests::free_port();
    let _haproxy = Haproxy::start(front, &a, &b);
    let front_opts = || -> mysql_async::Opts {
        mysql_async::OptsBuilder::default()
            .ip_or_hostname("127.0.0.1")
            .tcp_port(front)
            .user(Some("app"))
            .pass(Some("app"))
            .db_name(Some("sluice_scaleout"))
            .prefer_socket(false)
            .into()
    };
    // Both instances take clients through HAProxy (the harness's own
    // readiness probe counted as one accepted connection each).
    let (a0, b0) = (accepted(&a), accepted(&b));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !(accepted(&a) > a0 && accepted(&b) > b0) {
        assert!(
            std::time::Instant::now() < deadline,
            "HAProxy never sent clients to both instances:\n{}",
            std::fs::read_to_string(a.dir.join("haproxy.log")).unwrap_or_default()
        );
        if let Ok(mut c) = Conn::new(front_opts()).await {
            let _ = c.query_drop("SELECT 1").await;
            let _ = c.disconnect().await;
        } else {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // Connect-per-request clients, counted per phase.
    let phases: Arc<[Tally; 3]> = Arc::default();
    let phase = Arc::new(AtomicUsize::new(0));
    let running = Arc::new(AtomicBool::new(true));
    let mut clients = Vec::new();
    // Paced (about 100 connections a second in all): every connection
    // leaves two loopback ports in TIME_WAIT for a minute, and an unpaced
    // loop exhausts the ephemeral range.
    for i in 0..2u64 {
        let (phases, phase, running, opts) = (phases.clone(), phase.clone(), running.clone(), front_opts());
        clients.push(tokio::spawn(async move {
            let mut n = i;
            while running.load(Ordering::Relaxed) {
                let at = phase.load(Ordering::Relaxed);
                n += 1;
                let outcome = async {
                    let mut c = Conn::new(opts.clone()).await?;
                    let _: Option<String> = c
                        .exec_first("SELECT c FROM sbtest1 WHERE id = ?", (n % 1000 + 1,))
                        .await?;
                    c.disconnect().await
                }
                .await;
                tokio::time::sleep(Duration::from_millis(20)).await;
                let tally = &phases[at];
                match outcome {
                    Ok(()) => tally.ok.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        eprintln!("connect-per-request client, phase {at}: {e}");
                        tally.failed(&e);
                        0
                    }
                };
            }
        }));
    }

    // Persistent connections, as an application's pool holds them: on a
    // lost connection a client reconnects through HAProxy and goes on.
    let persistent: Arc<[Tally; 3]> = Arc::default();
    let mut pooled = Vec::new();
    for i in 0..4u64 {
        let (tally, phase, running, opts) =
            (persistent.clone(), phase.clone(), running.clone(), front_opts());
        pooled.push(tokio::spawn(async move {
            let mut conn: Option<Conn> = None;
            let mut n = i;
            while running.load(Ordering::Relaxed) {
                n += 1;
                let at = phase.load(Ordering::Relaxed);
                let c = match conn.as_mut() {
                    Some(c) => c,
                    None => match Conn::new(opts.clone()).await {
                        Ok(c) => conn.insert(c),
                        Err(e) => {
                            eprintln!("persistent client, phase {at}, connecting: {e}");
                            tally[at].failed(&e);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                match c
                    .exec_first::<String, _, _>("SELECT c FROM sbtest1 WHERE id = ?", (n % 1000 + 1,))
                    .await
                {
                    Ok(_) => tally[at].ok.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        eprintln!("persistent client, phase {at}: {e}");
                        conn = None;
                        tally[at].failed(&e);
                        0
                    }
                };
            }
        }));
    }

    // sysbench, one connection per event (tests/drivers/connect_per_event.lua),
    // across the drain: any error ends it with a non-zero status.
    let report = a.dir.join("sysbench.out");
    let sysbench_err = a.dir.join("sysbench.err");
    let mut load = std::process::Command::new("sysbench")
        .arg(sluice_tests::repo_path("tests/drivers/connect_per_event.lua"))
        .args([
            "--db-driver=mysql".to_string(),
            "--mysql-host=127.0.0.1".into(),
            format!("--mysql-port={front}"),
            "--mysql-user=app".into(),
            "--mysql-password=app".into(),
            "--mysql-db=sluice_scaleout".into(),
            "--threads=4".into(),
            "--time=20".into(),
            "--report-interval=1".into(),
            "--rate=400".into(),
            "run".into(),
        ])
        .stdout(std::fs::File::create(&report).expect("sysbench output"))
        .stderr(std::fs::File::create(&sysbench_err).expect("sysbench errors"))
        .spawn()
        .expect("start sysbench");
    let sysbench_text = || {
        std::fs::read_to_string(&report).unwrap_or_default()
            + &std::fs::read_to_string(&sysbench_err).unwrap_or_default()
    };
    wait_until("sysbench is running", Duration::from_secs(30), || {
        sysbench_text().lines().filter(|l| l.starts_with('[')).count() >= 2
    })
    .await;

    // sysbench's own persistent connections (prepared statements, no error
    // ignored), spread over both instances, for 4 s: they end within the
    // drain delay, so draining costs them nothing.
    let persistent_report = a.dir.join("sysbench-persistent.out");
    let mut steady = sysbench(&front.to_string(), "127.0.0.1")
        .args([
            "--threads=4",
            "--time=4",
            "--report-interval=1",
            "--rate=1000",
            "run",
        ])
        .stdout(std::fs::File::create(&persistent_report).expect("sysbench output"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start sysbench");
    wait_until("persistent sysbench is running", Duration::from_secs(30), || {
        std::fs::read_to_string(&persistent_report).is_ok_and(|r| r.lines().any(|l| l.starts_with('[')))
    })
    .await;

    // Phase 1: SIGTERM a; it turns not-ready, drains and exits.
    phase.store(1, Ordering::Relaxed);
    a.signal(libc::SIGTERM);
    let a_exit = tokio::task::block_in_place(|| a.wait_exit(Duration::from_secs(30)));
    assert!(
        a_exit.is_some_and(|s| s.success()),
        "a did not exit cleanly: {a_exit:?}\n{}",
        a.log()
    );
    let early = load.try_wait().expect("sysbench status");
    assert!(
        early.is_none(),
        "sysbench ended ({early:?}) before the drain was over:\n{}",
        sysbench_text()
    );
    let sysbench_status = tokio::task::block_in_place(|| load.wait()).expect("sysbench ran");
    let steady_status = tokio::task::block_in_place(|| steady.wait()).expect("sysbench ran");
    let steady_out = std::fs::read_to_string(&persistent_report).unwrap_or_default();
    let (a_port, a_admin) = (a.port, a.admin_port);
    let a_log = a.log();
    drop(a);

    // Phase 2: a comes back on its address and takes clients; then b is
    // killed.
    phase.store(2, Ordering::Relaxed);
    let a2 = Sluice::start_with(scaleout_options(Some((a_port, a_admin))));
    let a2_0 = accepted(&a2);
    wait_until(
        "HAProxy sends clients to the restarted instance",
        Duration::from_secs(30),
        || accepted(&a2) > a2_0,
    )
    .await;
    b.signal(libc::SIGKILL);
    let (cpr_before, pooled_before) = (
        phases[2].ok.load(Ordering::Relaxed),
        persistent[2].ok.load(Ordering::Relaxed),
    );
    wait_until("clients go on after the kill", Duration::from_secs(30), || {
        phases[2].ok.load(Ordering::Relaxed) > cpr_before + 20
            && persistent[2].ok.load(Ordering::Relaxed) > pooled_before + 200
    })
    .await;
    running.store(false, Ordering::Relaxed);
    for c in clients.into_iter().chain(pooled) {
        c.await.expect("client task");
    }

    let out = sysbench_text();
    let number = |label: &str| {
        out.lines()
            .map(str::trim_start)
            .find_map(|l| l.strip_prefix(label))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
    };
    let counts = |t: &[Tally; 3], i: usize| {
        (
            t[i].ok.load(Ordering::Relaxed),
            t[i].failed.load(Ordering::Relaxed),
        )
    };
    println!(
        "scale-out: sysbench (connect per event) across the drain: exit {sysbench_status}, events {:?}, \
         errors {:?}; connect-per-request (ok, failed): before {:?}, SIGTERM + drain {:?}, restart + kill -9 {:?}; \
         persistent (ok, failed): before {:?}, SIGTERM + drain {:?}, restart + kill -9 {:?}",
        number("total number of events:"),
        number("errors:"),
        counts(&phases, 0),
        counts(&phases, 1),
        counts(&phases, 2),
        counts(&persistent, 0),
        counts(&persistent, 1),
        counts(&persistent, 2),
    );
    assert!(
        sysbench_status.success(),
        "sysbench failed during the drain:\n{out}"
    );
    println!("persistent sysbench across the drain: exit {steady_status}\n{steady_out}");
    assert!(
        steady_status.success(),
        "persistent sysbench failed during the drain:\n{steady_out}"
    );
    assert_eq!(
        counts(&phases, 0).1 + counts(&persistent, 0).1,
        0,
        "client errors before any fault"
    );
    assert_eq!(
        counts(&phases, 1).1,
        0,
        "connect-per-request errors while an instance drained"
    );
    // A persistent connection to the drained instance is closed at the end
    // of the delay: at most one error each, then it reconnects elsewhere.
    assert!(
        counts(&persistent, 1).1 <= 4,
        "persistent clients failed more than once each in the drain"
    );
    // After the kill, failures are lost connections (some reconnects also
    // fail while HAProxy still tries the dead instance), never wrong answers.
    let wrong = |t: &[Tally; 3]| t.iter().map(|t| t.wrong.load(Ordering::Relaxed)).sum::<u64>();
    assert_eq!(
        wrong(&phases) + wrong(&persistent),
        0,
        "a client got an error other than a lost connection or 1053"
    );
    assert!(
        a_log.contains("drain delay over"),
        "a's log does not show the drain delay running out:\n{a_log}"
    );
    drop(a2);
}
