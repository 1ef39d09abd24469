//! The empty-key guard under real faults (issue 12, items 7 and 9): a
//! primary killed with -9 and started again, a promotion followed with
//! `monitor.follow_read_only`, and a binlog purged past the guard's
//! position. Each runs a background workload through Sluice (lookups of
//! absent and present keys, text and prepared, long-lived and
//! per-request connections; inserts, key updates, deletes, REPLACE,
//! upserts and multi-statement transactions) and checks that no lookup
//! ever misses a row it must see (a key is "visible" once a write of it
//! through Sluice returned, under `global` read-your-writes, or once a
//! write around Sluice is applied by the replicas as Sluice knows them),
//! that the guard's stream comes back (resuming from its GTID, or
//! rebuilding when the position is gone), and that it answers again.
//!
//! The tests change the shared topology, so they run one at a time, and
//! each puts back what it changed even when it fails.

use mysql_async::prelude::*;
use mysql_async::{Conn, Opts};
use sluice_tests::node::nodes;
use sluice_tests::{Sluice, SluiceOptions, Topology, direct_opts, gtid_covers, metric_sum, wait_until};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

static SERIAL: Mutex<()> = Mutex::const_new(());

/// Keys looked up and written: 0..KEYS.
const KEYS: i64 = 4000;
/// Pause between one worker's statements (keeps a test to a few thousand
/// lookups).
const PACE: Duration = Duration::from_millis(3);

// ---------------------------------------------------------------- config

/// `server_id`: each test's stream has its own (two streams with one id
/// kick each other off the server).
fn options(server_id: u32, tables: &[&str], monitor_extra: &str) -> SluiceOptions {
    let mut extra = format!("\n[guard]\nserver_id = {server_id}\nrebuild_interval_ms = 0\n");
    for table in tables {
        extra.push_str(&format!(
            "\n[[guard.tables]]\ntable = \"sluice_test.{table}\"\nkey = \"id\"\n"
        ));
    }
    SluiceOptions {
        routing_extra: "read_your_writes = \"global\"\nwrite_wait_ms = 5000".into(),
        monitor_extra: format!("interval_ms = 200\nheartbeat_interval_ms = 100\n{monitor_extra}"),
        extra,
        ..SluiceOptions::default()
    }
}

// ---------------------------------------------------------------- status and metrics

fn table_state(s: &Sluice, table: &str) -> serde_json::Value {
    s.status()["guard"]["tables"][format!("sluice_test.{table}")]["state"].clone()
}

fn connected(s: &Sluice) -> bool {
    s.status()["guard"]["connected"] == true
}

fn writer(s: &Sluice) -> serde_json::Value {
    s.status()["writer"].clone()
}

fn answered(s: &Sluice, table: &str) -> f64 {
    let label = format!("table=\"sluice_test.{table}\"");
    metric_sum(&s.metrics(), "sluice_guard_answered_total", &[&label])
}

fn passed(s: &Sluice, table: &str, reason: &str) -> f64 {
    let label = format!("table=\"sluice_test.{table}\"");
    let reason = format!("reason=\"{reason}\"");
    metric_sum(&s.metrics(), "sluice_guard_passed_total", &[&label, &reason])
}

fn reconnects(s: &Sluice, reason: Option<&str>) -> f64 {
    let label = reason.map(|r| format!("reason=\"{r}\"")).unwrap_or_default();
    metric_sum(&s.metrics(), "sluice_guard_stream_reconnects_total", &[&label])
}

fn rebuilds(s: &Sluice, table: &str, reason: &str) -> f64 {
    let label = format!("table=\"sluice_test.{table}\"");
    let reason = format!("reason=\"{reason}\"");
    metric_sum(&s.metrics(), "sluice_guard_rebuilds_total", &[&label, &reason])
}

/// Every `sluice_guard_stream_reconnects_total` sample, for the report.
fn reconnect_lines(s: &Sluice) -> String {
    s.metrics()
        .lines()
        .filter(|l| l.starts_with("sluice_guard_stream_reconnects_total{"))
        .map(|l| l.trim_start_matches("sluice_guard_stream_reconnects_total"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The table is ready and the stream connected (the guard answers nothing
/// otherwise).
async fn wait_ready(s: &Sluice, table: &str) {
    wait_until(&format!("{table} is ready"), Duration::from_secs(60), || {
        table_state(s, table) == "ready" && connected(s)
    })
    .await;
}

/// Waits until the guard has answered `more` lookups of `table` since
/// `from`.
async fn wait_answers(s: &Sluice, table: &str, from: f64, more: f64) -> f64 {
    let mut now = from;
    wait_until(
        &format!("the guard answers {more} more lookups of {table}"),
        Duration::from_secs(60),
        || {
            now = answered(s, table);
            now >= from + more
        },
    )
    .await;
    now
}

fn no_panic(s: &Sluice) {
    let log = s.log();
    assert!(
        !log.contains("panicked"),
        "sluice panicked:\n{}",
        log.lines()
            .filter(|l| l.contains("panicked"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

// ---------------------------------------------------------------- positions

async fn binlog_pos(addr: &str) -> String {
    let mut c = Conn::new(direct_opts(addr)).await.expect("connect");
    let pos: Option<String> = c.query_first("SELECT @@gtid_binlog_pos").await.expect("position");
    c.disconnect().await.ok();
    pos.unwrap_or_default()
}

/// Waits until both replicas have applied everything the primary has.
async fn replicas_caught_up() -> String {
    let t = Topology::from_env();
    let pos = binlog_pos(&t.primary).await;
    for replica in [&t.replica1, &t.replica2] {
        let mut c = Conn::new(direct_opts(replica)).await.expect("replica");
        let waited: Option<i64> = c
            .query_first(format!("SELECT MASTER_GTID_WAIT('{pos}', 60)"))
            .await
            .expect("wait");
        assert_eq!(waited, Some(0), "{replica} did not catch up to {pos}");
        c.disconnect().await.ok();
    }
    pos
}

/// Both replicas run both replication threads.
async fn replication_running(addr: &str) -> bool {
    let Ok(mut c) = Conn::new(direct_opts(addr)).await else {
        return false;
    };
    let row: Option<mysql_async::Row> = c.query_first("SHOW SLAVE STATUS").await.ok().flatten();
    c.disconnect().await.ok();
    let Some(row) = row else { return false };
    let yes = |name: &str| row.get_opt::<String, _>(name).and_then(Result::ok).as_deref() == Some("Yes");
    yes("Slave_IO_Running") && yes("Slave_SQL_Running")
}

// ---------------------------------------------------------------- sync SQL (for Drop)

fn cli(addr: &str, sql: &str) -> Result<String, String> {
    let (host, port) = addr.rsplit_once(':').unwrap_or((addr, "3306"));
    let out = std::process::Command::new("mariadb")
        .args(["-N", "-h", host, "-P", port, "-uapp", "-papp", "-e", sql])
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// Runs SQL on a server; used from `Drop`, so it never panics.
fn sql_now(addr: &str, sql: &str) {
    if let Err(e) = cli(addr, sql) {
        eprintln!("restore `{sql}` on {addr}: {e}");
    }
}

fn wait_now(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("restore: timed out waiting until {what}");
    false
}

fn wait_replicas_in_sync_now() {
    let t = Topology::from_env();
    wait_now("the replicas are in sync", Duration::from_secs(60), || {
        let Ok(primary) = cli(&t.primary, "SELECT @@gtid_binlog_pos") else {
            return false;
        };
        [&t.replica1, &t.replica2]
            .iter()
            .all(|r| cli(r, "SELECT @@gtid_slave_pos").is_ok_and(|have| gtid_covers(&have, &primary)))
    });
}

fn change_master_to(port: u16) -> String {
    format!(
        "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={port}, MASTER_USER='repl', \
         MASTER_PASSWORD='repl', MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1"
    )
}

// ---------------------------------------------------------------- the workload

type Visible = Arc<StdMutex<HashSet<i64>>>;

/// Keys with `k % 4 == 0` move and are deleted; the others, once written,
/// stay.
fn stays(k: i64) -> bool {
    k % 4 != 0
}

/// A fresh table with every 7th key, and the keys that must be found.
async fn setup_table(table: &str) -> Visible {
    let t = Topology::from_env();
    let mut primary = Conn::new(direct_opts(&t.primary)).await.expect("primary");
    primary
        .query_drop(format!(
            "DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (id BIGINT PRIMARY KEY, v INT NOT NULL)"
        ))
        .await
        .expect("create");
    let initial: Vec<i64> = (0..KEYS).step_by(7).collect();
    let values: Vec<String> = initial.iter().map(|k| format!("({k}, 0)")).collect();
    primary
        .query_drop(format!("INSERT INTO {table} VALUES {}", values.join(",")))
        .await
        .expect("initial rows");
    primary.disconnect().await.ok();
    replicas_caught_up().await;
    Arc::new(StdMutex::new(initial.into_iter().filter(|&k| stays(k)).collect()))
}

#[derive(Default, Debug)]
struct Lookups {
    done: u64,
    empty: u64,
    errors: u64,
    first_errors: Vec<String>,
    false_negatives: Vec<i64>,
}

async fn reader(
    opts: Opts,
    table: &'static str,
    visible: Visible,
    stop: Arc<AtomicBool>,
    prepared: bool,
    reconnect_every: u64,
) -> Lookups {
    use rand::Rng;
    let mut out = Lookups::default();
    let mut conn: Option<Conn> = None;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        if conn.is_none() {
            match Conn::new(opts.clone()).await {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    out.errors += 1;
                    if out.first_errors.len() < 3 {
                        out.first_errors.push(format!("connect: {e}"));
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        let k = rand::rng().random_range(0..KEYS);
        // Visible before the lookup starts: it must be found.
        let must = visible.lock().expect("visible").contains(&k);
        let found: Result<Option<(i64, i64)>, _> = if prepared {
            c.exec_first(format!("SELECT id, v FROM {table} WHERE id = ?"), (k,))
                .await
        } else {
            c.query_first(format!("SELECT id, v FROM {table} WHERE id = {k}"))
                .await
        };
        match found {
            Ok(found) => {
                out.done += 1;
                if found.is_none() {
                    out.empty += 1;
                    if must {
                        out.false_negatives.push(k);
                    }
                }
            }
            Err(e) => {
                // A fault may fail a lookup; it must never hide a row.
                out.errors += 1;
                if out.first_errors.len() < 3 {
                    out.first_errors.push(e.to_string());
                }
                conn = None;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        n += 1;
        if reconnect_every > 0
            && n % reconnect_every == 0
            && let Some(c) = conn.take()
        {
            c.disconnect().await.ok();
        }
        tokio::time::sleep(PACE).await;
    }
    if let Some(c) = conn {
        c.disconnect().await.ok();
    }
    out
}

#[derive(Default, Debug)]
struct Writes {
    ok: u64,
    errors: u64,
    first_errors: Vec<String>,
}

/// One write through Sluice; the keys it made certainly exist.
async fn write_once(c: &mut Conn, table: &str, op: u64) -> Result<Vec<i64>, mysql_async::Error> {
    use rand::Rng;
    let (a, b, a2) = {
        let mut rng = rand::rng();
        let pick = |rng: &mut rand::rngs::ThreadRng, staying: bool| loop {
            let k = rng.random_range(0..KEYS);
            if stays(k) == staying {
                break k;
            }
        };
        (pick(&mut rng, true), pick(&mut rng, false), pick(&mut rng, true))
    };
    Ok(match op % 6 {
        0 => {
            c.exec_drop(format!("INSERT IGNORE INTO {table} (id, v) VALUES (?, 1)"), (a,))
                .await?;
            vec![a]
        }
        1 => {
            c.exec_drop(format!("INSERT IGNORE INTO {table} (id, v) VALUES (?, 2)"), (b,))
                .await?;
            c.exec_drop(format!("DELETE FROM {table} WHERE id = ?"), (b + 4,))
                .await?;
            vec![]
        }
        2 => {
            // A moving key lands on a staying one (the key changes).
            c.query_drop(format!("UPDATE IGNORE {table} SET id = {a} WHERE id = {b}"))
                .await?;
            if c.affected_rows() == 1 { vec![a] } else { vec![] }
        }
        3 => {
            c.query_drop(format!("REPLACE INTO {table} (id, v) VALUES ({a}, 3)"))
                .await?;
            vec![a]
        }
        4 => {
            c.exec_drop(
                format!("INSERT INTO {table} (id, v) VALUES (?, 4) ON DUPLICATE KEY UPDATE v = v + 1"),
                (a,),
            )
            .await?;
            vec![a]
        }
        _ => {
            let mut tx = c.start_transaction(mysql_async::TxOpts::default()).await?;
            tx.exec_drop(format!("INSERT IGNORE INTO {table} (id, v) VALUES (?, 5)"), (a,))
                .await?;
            tx.exec_drop(format!("INSERT IGNORE INTO {table} (id, v) VALUES (?, 5)"), (a2,))
                .await?;
            tx.commit().await?;
            vec![a, a2]
        }
    })
}

async fn writer_task(opts: Opts, table: &'static str, visible: Visible, stop: Arc<AtomicBool>) -> Writes {
    let mut out = Writes::default();
    let mut conn: Option<Conn> = None;
    let mut op = 0u64;
    while !stop.load(Ordering::Relaxed) {
        if conn.is_none() {
            match Conn::new(opts.clone()).await {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    out.errors += 1;
                    if out.first_errors.len() < 3 {
                        out.first_errors.push(format!("connect: {e}"));
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        op += 1;
        match write_once(c, table, op).await {
            Ok(keys) => {
                out.ok += 1;
                visible.lock().expect("visible").extend(keys);
            }
            Err(e) => {
                // Failed (or unknown): its keys are not counted as visible.
                out.errors += 1;
                if out.first_errors.len() < 3 {
                    out.first_errors.push(e.to_string());
                }
                conn = None;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        tokio::time::sleep(PACE).await;
    }
    if let Some(c) = conn {
        c.disconnect().await.ok();
    }
    out
}

/// Lookups (text and prepared, long-lived and per-request connections)
/// and writes through Sluice, until stopped.
struct Workload {
    table: &'static str,
    stop: Arc<AtomicBool>,
    readers: Vec<JoinHandle<Lookups>>,
    writer: JoinHandle<Writes>,
}

impl Workload {
    fn start(s: &Sluice, table: &'static str, visible: &Visible) -> Workload {
        let stop = Arc::new(AtomicBool::new(false));
        let readers = [(false, 0), (true, 0), (false, 40), (true, 40)]
            .into_iter()
            .map(|(prepared, every)| {
                tokio::spawn(reader(
                    s.opts(),
                    table,
                    visible.clone(),
                    stop.clone(),
                    prepared,
                    every,
                ))
            })
            .collect();
        let writer = tokio::spawn(writer_task(s.opts(), table, visible.clone(), stop.clone()));
        Workload {
            table,
            stop,
            readers,
            writer,
        }
    }

    /// Stops the workload and checks that no lookup missed a visible row.
    async fn finish(self, s: &Sluice, test: &str) {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = Lookups::default();
        for r in self.readers {
            let l = r.await.expect("reader task");
            total.done += l.done;
            total.empty += l.empty;
            total.errors += l.errors;
            total.first_errors.extend(l.first_errors);
            total.false_negatives.extend(l.false_negatives);
        }
        let writes = self.writer.await.expect("writer task");
        let distinct = |errors: Vec<String>| {
            errors
                .into_iter()
                .map(|e| e.chars().take(120).collect::<String>())
                .collect::<std::collections::BTreeSet<_>>()
        };
        let (lookup_errors, write_errors) = (distinct(total.first_errors), distinct(writes.first_errors));
        eprintln!(
            "{test}: {} lookups ({} empty, {} failed during the fault: {:?}), {} answered by the guard; \
             {} writes through Sluice ({} failed: {:?}); {} false negatives",
            total.done,
            total.empty,
            total.errors,
            lookup_errors,
            answered(s, self.table),
            writes.ok,
            writes.errors,
            write_errors,
            total.false_negatives.len()
        );
        assert!(
            total.false_negatives.is_empty(),
            "{test}: rows hidden from lookups: {:?}",
            total.false_negatives
        );
        assert!(total.done >= 500, "{test}: the workload ran: {}", total.done);
        assert!(writes.ok > 0, "{test}: writes went through");
    }
}

/// After the workload: every visible key, looked up once through Sluice
/// (text and prepared alternately), is found.
async fn sweep(s: &Sluice, table: &str, visible: &Visible) -> u64 {
    let keys: Vec<i64> = {
        let v = visible.lock().expect("visible");
        let mut keys: Vec<i64> = v.iter().copied().collect();
        keys.sort_unstable();
        keys
    };
    let mut c = Conn::new(s.opts()).await.expect("sweep connection");
    let mut missing = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        let found: Option<i64> = if i % 2 == 0 {
            c.exec_first(format!("SELECT id FROM {table} WHERE id = ?"), (k,))
                .await
                .expect("sweep lookup")
        } else {
            c.query_first(format!("SELECT id FROM {table} WHERE id = {k}"))
                .await
                .expect("sweep lookup")
        };
        if found.is_none() {
            missing.push(*k);
        }
    }
    c.disconnect().await.ok();
    assert!(missing.is_empty(), "visible keys not found: {missing:?}");
    keys.len() as u64
}

// ---------------------------------------------------------------- restores

/// Starts the primary again if a test left it down.
struct PrimaryComesBack;

impl Drop for PrimaryComesBack {
    fn drop(&mut self) {
        let t = Topology::from_env();
        if cli(&t.primary, "SELECT 1").is_ok() {
            return;
        }
        let started = std::thread::spawn(|| {
            let [primary, _, _] = nodes();
            match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt.block_on(primary.start()),
                Err(e) => eprintln!("restore: no runtime to start the primary: {e}"),
            }
        })
        .join();
        if started.is_err() {
            eprintln!("restore: starting the primary failed");
        }
        wait_replicas_in_sync_now();
    }
}

/// Puts replica1 (promoted) back under the primary, with replica2, and the
/// primary writable again.
struct UndoPromotion;

impl Drop for UndoPromotion {
    fn drop(&mut self) {
        let t = Topology::from_env();
        // The promoted server stops taking writes ...
        sql_now(&t.replica1, "SET GLOBAL read_only = 1");
        // ... the old primary (its replica meanwhile) applies all it wrote
        // (until replica1's position holds still: a write routed just
        // before may still land) ...
        let mut last = String::new();
        for _ in 0..20 {
            let Ok(pos) = cli(&t.replica1, "SELECT @@gtid_binlog_pos") else {
                break;
            };
            if pos == last {
                break;
            }
            wait_now(
                "the old primary has what replica1 wrote",
                Duration::from_secs(30),
                || cli(&t.primary, "SELECT @@gtid_binlog_pos").is_ok_and(|have| gtid_covers(&have, &pos)),
            );
            last = pos;
        }
        // ... and is the primary again (no replication of its own, as
        // before); both replicas follow it. One statement per call: a
        // failing one must not skip the rest.
        for sql in [
            "STOP SLAVE",
            "RESET SLAVE ALL",
            "SET GLOBAL gtid_slave_pos = ''",
            "SET GLOBAL read_only = 0",
        ] {
            sql_now(&t.primary, sql);
        }
        // replica1 continues from what it has itself (its binlog holds its
        // own writes as primary, which gtid_slave_pos does not).
        let own = cli(&t.replica1, "SELECT @@gtid_binlog_pos").unwrap_or_default();
        let change = change_master_to(t.primary_port());
        sql_now(
            &t.replica1,
            &format!("STOP SLAVE; SET GLOBAL gtid_slave_pos = '{own}'; {change}; START SLAVE"),
        );
        sql_now(&t.replica2, &format!("STOP SLAVE; {change}; START SLAVE"));
        wait_replicas_in_sync_now();
    }
}

/// SIGCONT for a stopped Sluice.
struct Thaw<'a>(&'a Sluice);

impl Drop for Thaw<'_> {
    fn drop(&mut self) {
        self.0.signal(libc::SIGCONT);
    }
}

// ---------------------------------------------------------------- tests

/// kill -9 the primary mid-run and start it again: the guard's stream
/// reconnects and resumes from its GTID (no rebuild), the tables stay
/// ready, and the guard answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn primary_restart_mid_run() {
    let _serial = SERIAL.lock().await;
    const TABLE: &str = "guard_fault_restart";
    let visible = setup_table(TABLE).await;
    let s = Sluice::start_with(options(4201, &[TABLE], ""));
    wait_ready(&s, TABLE).await;
    let work = Workload::start(&s, TABLE, &visible);
    let warm = wait_answers(&s, TABLE, 0.0, 200.0).await;

    let [primary, _, _] = nodes();
    let reconnects_before = reconnects(&s, None);
    let _back = PrimaryComesBack;
    primary.kill9();
    wait_until("the guard sees its stream down", Duration::from_secs(20), || {
        !connected(&s)
    })
    .await;
    // The stream retries while the primary is down. (So do the lookups:
    // with the primary gone the replicas' IO threads stop, Sluice sees
    // them as infinitely stale and falls back to the primary, so lookups
    // fail until it is back; a failure is never an empty answer.)
    let connect_before = reconnects(&s, Some("connect"));
    wait_until(
        "the guard's stream retries while the primary is down",
        Duration::from_secs(20),
        || reconnects(&s, Some("connect")) >= connect_before + 2.0,
    )
    .await;
    let answered_down = answered(&s, TABLE);
    primary.start().await;
    replicas_caught_up().await;
    wait_until("the guard's stream reconnects", Duration::from_secs(60), || {
        reconnects(&s, None) > reconnects_before && connected(&s)
    })
    .await;
    wait_ready(&s, TABLE).await;
    let back = answered(&s, TABLE);
    let after = wait_answers(&s, TABLE, back, 200.0).await;
    let stream_down = passed(&s, TABLE, "stream_down");
    work.finish(&s, "primary_restart_mid_run").await;
    eprintln!("primary_restart_mid_run: answered {answered_down} when the primary was down");
    let swept = sweep(&s, TABLE, &visible).await;
    eprintln!(
        "primary_restart_mid_run: answered {warm} before the kill, {back} when the stream was back, \
         {after} after; {stream_down} passed while the stream was down; reconnects {}; \
         {swept} visible keys swept",
        reconnect_lines(&s)
    );
    assert_eq!(
        reconnects(&s, Some("purged")) + rebuilds(&s, TABLE, "purged"),
        0.0,
        "the stream resumed from its GTID, no rebuild"
    );
    assert_eq!(table_state(&s, TABLE), "ready");
    no_panic(&s);
}

/// A promotion mid-run, followed with `follow_read_only`: the old primary
/// goes read-only, replica1 (caught up) becomes the writer, replica2 and
/// the old primary replicate from it. The guard follows the writer and
/// resumes from its GTID on replica1 (same domain, server id 2 from then
/// on), without a rebuild, and answers again; then the original topology
/// is put back, which the guard follows too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn promotion_mid_run() {
    let _serial = SERIAL.lock().await;
    const TABLE: &str = "guard_fault_promotion";
    let t = Topology::from_env();
    let visible = setup_table(TABLE).await;
    let s = Sluice::start_with(options(4202, &[TABLE], "follow_read_only = true"));
    wait_ready(&s, TABLE).await;
    wait_until("the primary is the writer", Duration::from_secs(10), || {
        writer(&s) == "primary"
    })
    .await;
    let work = Workload::start(&s, TABLE, &visible);
    let warm = wait_answers(&s, TABLE, 0.0, 200.0).await;
    let [primary, replica1, replica2] = nodes();
    let changed_before = reconnects(&s, Some("writer_changed"));

    let undo = UndoPromotion;
    primary.exec("SET GLOBAL read_only = 1").await;
    wait_until("no backend is writable", Duration::from_secs(10), || {
        writer(&s).is_null()
    })
    .await;
    // A write routed just before may still land: wait until the old
    // primary's position holds still and both replicas have it.
    let mut last = String::new();
    loop {
        let pos = replicas_caught_up().await;
        if pos == last {
            break;
        }
        last = pos;
    }
    let old_pos = last;
    replica1
        .exec("STOP SLAVE; RESET SLAVE ALL; SET GLOBAL read_only = 0")
        .await;
    let change = change_master_to(sluice_tests::port_of(&t.replica1));
    replica2.exec(&format!("STOP SLAVE; {change}; START SLAVE")).await;
    primary
        .exec(&format!(
            "SET GLOBAL gtid_slave_pos = '{old_pos}'; {change}; START SLAVE"
        ))
        .await;
    wait_until("replica1 is the writer", Duration::from_secs(20), || {
        writer(&s) == "replica1"
    })
    .await;
    wait_until("the guard follows the writer", Duration::from_secs(30), || {
        reconnects(&s, Some("writer_changed")) > changed_before && connected(&s)
    })
    .await;
    // Writes through Sluice now carry replica1's server id (2).
    wait_until(
        "the guard applies replica1's transactions",
        Duration::from_secs(30),
        || {
            s.status()["guard"]["applied_gtid"]
                .as_str()
                .is_some_and(|g| g.starts_with("0-2-"))
        },
    )
    .await;
    wait_ready(&s, TABLE).await;
    let promoted = answered(&s, TABLE);
    let after_promotion = wait_answers(&s, TABLE, promoted, 200.0).await;
    let applied_on_new = s.status()["guard"]["applied_gtid"].clone();
    assert_eq!(
        rebuilds(&s, TABLE, "purged") + reconnects(&s, Some("purged")),
        0.0,
        "the stream resumed from its GTID on the new primary"
    );
    for addr in [&t.replica2, &t.primary] {
        assert!(replication_running(addr).await, "{addr} replicates from replica1");
    }

    // Back to the original topology, with the workload still running.
    let changed_mid = reconnects(&s, Some("writer_changed"));
    drop(undo);
    wait_until("the primary is the writer again", Duration::from_secs(20), || {
        writer(&s) == "primary"
    })
    .await;
    wait_until(
        "the guard follows the writer back",
        Duration::from_secs(30),
        || reconnects(&s, Some("writer_changed")) > changed_mid && connected(&s),
    )
    .await;
    wait_until(
        "the guard applies the primary's transactions again",
        Duration::from_secs(30),
        || {
            s.status()["guard"]["applied_gtid"]
                .as_str()
                .is_some_and(|g| g.starts_with("0-1-"))
        },
    )
    .await;
    wait_ready(&s, TABLE).await;
    let restored = answered(&s, TABLE);
    let after_restore = wait_answers(&s, TABLE, restored, 200.0).await;
    work.finish(&s, "promotion_mid_run").await;
    let swept = sweep(&s, TABLE, &visible).await;
    eprintln!(
        "promotion_mid_run: answered {warm} before, {promoted} at the promotion, {after_promotion} on \
         replica1's stream (applied {applied_on_new}), {after_restore} after the restore; old primary \
         position {old_pos}; reconnects {}; {swept} visible keys swept",
        reconnect_lines(&s)
    );
    assert_eq!(
        rebuilds(&s, TABLE, "purged") + reconnects(&s, Some("purged")),
        0.0,
        "the stream resumed from its GTID on the original primary"
    );
    for addr in [&t.replica1, &t.replica2] {
        assert!(replication_running(addr).await, "{addr} replicates again");
    }
    replicas_caught_up().await;
    no_panic(&s);
}

/// The guard's binlog position is purged while Sluice is stopped: its
/// dump thread killed, rows written, the binlog flushed and purged to the
/// newest file. On SIGCONT the stream gets error 1236 and every table
/// rebuilds; the rows written meanwhile are found; the guard answers
/// again; the replicas (caught up before the purge) keep replicating.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn binlog_purge_forces_a_rebuild() {
    let _serial = SERIAL.lock().await;
    const TABLE: &str = "guard_fault_purge";
    const OTHER: &str = "guard_fault_purge_other";
    let t = Topology::from_env();
    let visible = setup_table(TABLE).await;
    let other_visible = setup_table(OTHER).await;
    let s = Sluice::start_with(options(4203, &[TABLE, OTHER], ""));
    wait_ready(&s, TABLE).await;
    wait_ready(&s, OTHER).await;
    let work = Workload::start(&s, TABLE, &visible);
    let warm = wait_answers(&s, TABLE, 0.0, 200.0).await;
    let mut primary = Conn::new(direct_opts(&t.primary)).await.expect("primary");
    // The guard's stream, and only it (replicas stream as `repl`; a dump
    // thread of an earlier test's Sluice goes away within a heartbeat).
    const DUMP: &str = "SELECT ID FROM information_schema.PROCESSLIST \
                        WHERE COMMAND = 'Binlog Dump' AND USER = 'sluice_monitor'";
    let mut dump: Vec<u64> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while dump.len() != 1 {
        assert!(Instant::now() < deadline, "one guard dump thread: {dump:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
        dump = primary.query(DUMP).await.expect("processlist");
    }
    let purged_before = reconnects(&s, Some("purged"));

    s.signal(libc::SIGSTOP);
    let thaw = Thaw(&s);
    primary
        .query_drop(format!("KILL {}", dump[0]))
        .await
        .expect("kill the guard's dump thread");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left: Vec<u64> = primary.query(DUMP).await.expect("processlist");
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "the dump thread is gone: {left:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Rows the guard never streams: keys absent so far.
    let fresh: Vec<i64> = {
        let v = visible.lock().expect("visible");
        (1..KEYS)
            .filter(|&k| stays(k) && k % 7 != 0 && !v.contains(&k))
            .take(100)
            .collect()
    };
    let fresh_other: Vec<i64> = (1..KEYS).filter(|k| k % 7 == 3).take(20).collect();
    for (table, keys) in [(TABLE, &fresh[..50]), (OTHER, &fresh_other[..10])] {
        let values: Vec<String> = keys.iter().map(|k| format!("({k}, 7)")).collect();
        primary
            .query_drop(format!("INSERT IGNORE INTO {table} VALUES {}", values.join(",")))
            .await
            .expect("insert while frozen");
    }
    primary.query_drop("FLUSH BINARY LOGS").await.expect("flush");
    for (table, keys) in [(TABLE, &fresh[50..]), (OTHER, &fresh_other[10..])] {
        let values: Vec<String> = keys.iter().map(|k| format!("({k}, 8)")).collect();
        primary
            .query_drop(format!("INSERT IGNORE INTO {table} VALUES {}", values.join(",")))
            .await
            .expect("insert while frozen");
    }
    primary.query_drop("FLUSH BINARY LOGS").await.expect("flush");
    // One transaction in the newest file: a replica that applied it reads
    // that file, and needs none before it.
    primary
        .query_drop(format!("INSERT IGNORE INTO {OTHER} VALUES ({}, 9)", KEYS - 1))
        .await
        .expect("insert into the newest file");
    let pos = replicas_caught_up().await;
    let (newest, _): (String, u64) = primary
        .query_first("SHOW MASTER STATUS")
        .await
        .expect("master status")
        .map(|row: mysql_async::Row| {
            (
                row.get::<String, _>(0).unwrap_or_default(),
                row.get::<u64, _>(1).unwrap_or_default(),
            )
        })
        .expect("a binlog");
    // A file is purged once the engine has checkpointed its transactions
    // and no dump thread reads it: until then PURGE skips it (a warning).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        primary
            .query_drop(format!("PURGE BINARY LOGS TO '{newest}'"))
            .await
            .expect("purge");
        let logs: Vec<mysql_async::Row> = primary.query("SHOW BINARY LOGS").await.expect("logs");
        let files: Vec<String> = logs.iter().filter_map(|r| r.get::<String, _>(0)).collect();
        if files == [newest.clone()] {
            break;
        }
        assert!(Instant::now() < deadline, "purged to {newest}: {files:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(thaw);

    // Written around Sluice: visible once the replicas have them as Sluice
    // knows them.
    wait_until(
        "Sluice knows the replicas have the rows",
        Duration::from_secs(30),
        || s.monitor_knows(&pos),
    )
    .await;
    visible.lock().expect("visible").extend(fresh.iter().copied());
    other_visible
        .lock()
        .expect("visible")
        .extend(fresh_other.iter().copied().chain([KEYS - 1]));
    wait_until(
        "the stream gets error 1236 and every table rebuilds",
        Duration::from_secs(30),
        || {
            (reconnects(&s, Some("purged")) > purged_before)
                && rebuilds(&s, TABLE, "purged") >= 1.0
                && rebuilds(&s, OTHER, "purged") >= 1.0
        },
    )
    .await;
    wait_ready(&s, TABLE).await;
    wait_ready(&s, OTHER).await;
    let rebuilt = answered(&s, TABLE);
    let after = wait_answers(&s, TABLE, rebuilt, 200.0).await;
    work.finish(&s, "binlog_purge_forces_a_rebuild").await;
    let swept = sweep(&s, TABLE, &visible).await + sweep(&s, OTHER, &other_visible).await;
    // The frozen period's keys, once more, on their own.
    let mut c = Conn::new(s.opts()).await.expect("sluice");
    for k in &fresh {
        let found: Option<i64> = c
            .exec_first(format!("SELECT id FROM {TABLE} WHERE id = ?"), (k,))
            .await
            .expect("lookup");
        assert_eq!(found, Some(*k), "a key written while Sluice was stopped");
    }
    c.disconnect().await.ok();
    // Lookups of absent keys of the other table are answered too.
    let mut c = Conn::new(s.opts()).await.expect("sluice");
    let other_before = answered(&s, OTHER);
    for k in (KEYS..KEYS + 20).chain(KEYS..KEYS + 20) {
        let found: Option<i64> = c
            .query_first(format!("SELECT id FROM {OTHER} WHERE id = {k}"))
            .await
            .expect("lookup");
        assert_eq!(found, None);
    }
    c.disconnect().await.ok();
    let other_answered = answered(&s, OTHER) - other_before;
    eprintln!(
        "binlog_purge_forces_a_rebuild: answered {warm} before, {rebuilt} once rebuilt, {after} after; \
         {other_answered} of 40 lookups of the other table answered; rebuilds purged {} + {}; \
         reconnects {}; binlog purged to {newest}; {swept} visible keys swept",
        rebuilds(&s, TABLE, "purged"),
        rebuilds(&s, OTHER, "purged"),
        reconnect_lines(&s)
    );
    assert!(other_answered > 0.0, "the other table answers again");
    // The replicas keep replicating.
    primary
        .query_drop(format!("INSERT IGNORE INTO {OTHER} VALUES ({}, 10)", KEYS - 2))
        .await
        .expect("insert after the purge");
    replicas_caught_up().await;
    for addr in [&t.replica1, &t.replica2] {
        assert!(
            replication_running(addr).await,
            "{addr} replicates after the purge"
        );
    }
    primary.disconnect().await.ok();
    no_panic(&s);
}
