//! Heap allocations per statement on the hot path: one COM_QUERY point
//! select, one COM_STMT_EXECUTE of a prepared point select, and COM_QUERY
//! point selects of twelve different statements in turn, relayed by
//! Sluice (session, routing, pool checkout, relay, metrics) to the real
//! MariaDB primary of the test topology. The test fails when a statement
//! allocates more than it does today, so the hot path cannot silently
//! regress.
//!
//! How it counts:
//! - Sluice runs in this process (`sluice_proxy::listener::serve_on`) on a
//!   `current_thread` tokio runtime on its own thread. The counting global
//!   allocator below counts every `alloc`, `alloc_zeroed` and `realloc`
//!   call made on that thread only (a thread-local flag): everything Sluice
//!   and the libraries it calls allocate while serving, nothing of the test
//!   client, which runs on the test thread with a blocking
//!   `std::net::TcpStream` and speaks the protocol by hand (with the
//!   capabilities mysql_async sends, and parameter types on every execute
//!   as most drivers do).
//! - The counter is read only when Sluice's thread is idle (parked in the
//!   runtime with nothing to run, seen through `on_thread_park`): once
//!   before the first measured statement and after each statement's
//!   response has arrived. Consecutive readings tile the time, so work a
//!   statement does after its answer was sent is counted too.
//! - Background tasks share the thread. Those the config can quiet are
//!   quieted (primary-only routing, no heartbeats, a monitor probe once an
//!   hour); the rest wake rarely (pool gauges every second, the pool's
//!   keepalive sweep every 500 ms, metrics upkeep every 5 s) compared with
//!   a statement (well under a millisecond). Each statement runs `ROUNDS`
//!   times after `WARM_UP` statements (which open the pool connection,
//!   prepare the statement on it, fill the classification cache and the
//!   metric handles), and the count per statement is the MEDIAN over the
//!   rounds: a background wake-up or an amortized allocation lands in a
//!   few rounds, not in half of them. Every measurement is printed with the rounds by
//!   count (`cargo test -p sluice-proxy --test allocations -- --nocapture`).
//!   An allocation that every statement makes moves the median by one: the
//!   count is exact, not a tolerance.
//!
//! Where the allocations come from: run with `SLUICE_ALLOC_TRACE=1` (and
//! `--nocapture`); the test then prints a backtrace for each allocation of
//! one median round of each statement.
//!
//! Needs the MariaDB primary of `scripts/test.sh` (`SLUICE_TEST_PRIMARY`,
//! user `app`/`app`).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

use mysql_common::constants::CapabilityFlags as Caps;
use mysql_common::io::ParseBuf;
use mysql_common::packets::{AuthPlugin, HandshakePacket, HandshakeResponse};
use mysql_common::proto::{MyDeserialize, MySerialize};

/// The allocation bounds per statement. They equal today's counts.
///
/// When you remove allocations from the path, the test prints the lower
/// count: lower the bound to it in the same change, so the gain is kept.
/// Raising a bound needs a reason that a reviewer accepts (a feature that
/// cannot work without it), written next to the number: an allocation per
/// statement is paid by every statement of every client.
///
/// The one left on each path: the command's future is boxed
/// (`session/mod.rs`, `serve`) so that an idle client's task stays small
/// (10,000 idle clients in well under 80 MB).
const QUERY_BOUND: u64 = 1;
const EXECUTE_BOUND: u64 = 1;

/// Statements before measuring, and measured statements of each kind.
const WARM_UP: u64 = 50;
/// Different statements a client cycles through in the third measurement.
const SHAPES: u64 = 12;
const ROUNDS: u64 = 1000;

// ---------------------------------------------------------------------------
// The counting allocator.

struct Counting;

/// Allocations on Sluice's thread since it started.
static COUNT: AtomicU64 = AtomicU64::new(0);
/// `SLUICE_ALLOC_TRACE=1`: record a backtrace per counted allocation of
/// the round in `ROUND` (0 = none).
static TRACE: AtomicBool = AtomicBool::new(false);
static ROUND: AtomicU64 = AtomicU64::new(0);
static TRACES: Mutex<Vec<(u64, std::backtrace::Backtrace)>> = Mutex::new(Vec::new());

thread_local! {
    /// Set on Sluice's thread: its allocations are counted.
    static COUNTED: Cell<bool> = const { Cell::new(false) };
    /// Inside the allocator's own bookkeeping (recording a backtrace).
    static BUSY: Cell<bool> = const { Cell::new(false) };
}

fn counted() {
    if !COUNTED.try_with(Cell::get).unwrap_or(false) {
        return;
    }
    if BUSY.try_with(Cell::get).unwrap_or(true) {
        return;
    }
    COUNT.fetch_add(1, SeqCst);
    if TRACE.load(SeqCst) {
        let round = ROUND.load(SeqCst);
        if round != 0 {
            BUSY.with(|b| b.set(true));
            let trace = std::backtrace::Backtrace::force_capture();
            TRACES
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((round, trace));
            BUSY.with(|b| b.set(false));
        }
    }
}

// SAFETY: every call is passed to the system allocator unchanged; the
// bookkeeping around it allocates only with counting suspended (BUSY).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        counted();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        counted();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        counted();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

// ---------------------------------------------------------------------------
// Sluice in-process.

/// Sluice's runtime thread is parked with nothing to run.
static PARKED: AtomicBool = AtomicBool::new(false);

/// Waits until Sluice's thread is idle and returns the count then.
fn count_when_idle() -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !PARKED.load(SeqCst) {
        assert!(Instant::now() < deadline, "Sluice's thread never went idle");
        std::thread::yield_now();
    }
    COUNT.load(SeqCst)
}

struct Server {
    port: u16,
    stop: Option<tokio::sync::mpsc::UnboundedSender<&'static str>>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
}

impl Server {
    fn start(primary: &str) -> Server {
        let config = sluice_config::Config::parse(&format!(
            r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
shutdown_timeout_ms = 2000

[[users]]
name = "app"
password = "app"

[pool]
max_connections_per_backend = 4

[routing]
mode = "primary_only"

[monitor]
interval_ms = 3600000
heartbeat_table = ""

# The statement path in plain TCP: TLS on the backend leg (the default
# "preferred" against the test servers, which offer it) adds rustls's
# record buffers, two allocations per statement, measured 3 in all.
[[backends]]
name = "primary"
address = "{primary}"
role = "primary"
tls = "disabled"
"#
        ))
        .expect("valid config");
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let (stop, stop_rx) = tokio::sync::mpsc::unbounded_channel();
        let thread = std::thread::Builder::new()
            .name("sluice".into())
            .spawn(move || {
                COUNTED.with(|c| c.set(true));
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .on_thread_park(|| PARKED.store(true, SeqCst))
                    .on_thread_unpark(|| PARKED.store(false, SeqCst))
                    .build()?;
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                    port_tx.send(listener.local_addr()?.port())?;
                    sluice_proxy::listener::serve_on(
                        config,
                        None,
                        listener,
                        stop_rx,
                        &sluice_proxy::workers::Workers::local(),
                    )
                    .await
                })
            })
            .expect("start Sluice's thread");
        let port = port_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("Sluice listens");
        Server {
            port,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send("end of test");
        }
        if let Some(thread) = self.thread.take() {
            thread
                .join()
                .expect("Sluice's thread panicked")
                .expect("Sluice ran and stopped");
        }
    }
}

// ---------------------------------------------------------------------------
// A blocking MySQL client, just enough for the statements measured.

/// What mysql_async asks for (`Opts::get_capabilities`) with a schema.
fn client_caps() -> Caps {
    Caps::CLIENT_PROTOCOL_41
        | Caps::CLIENT_SECURE_CONNECTION
        | Caps::CLIENT_LONG_PASSWORD
        | Caps::CLIENT_TRANSACTIONS
        | Caps::CLIENT_LOCAL_FILES
        | Caps::CLIENT_MULTI_STATEMENTS
        | Caps::CLIENT_MULTI_RESULTS
        | Caps::CLIENT_PS_MULTI_RESULTS
        | Caps::CLIENT_DEPRECATE_EOF
        | Caps::CLIENT_PLUGIN_AUTH
        | Caps::CLIENT_CONNECT_WITH_DB
}

const MORE_RESULTS_EXISTS: u16 = 0x0008;
const MYSQL_TYPE_LONGLONG: u8 = 0x08;

struct Client {
    stream: TcpStream,
}

struct Prepared {
    id: u32,
    params: u16,
}

impl Client {
    /// Logs in with mysql_native_password. None when the greeting does not
    /// satisfy `greeting_ok` (the connection is dropped).
    fn connect(
        port: u16,
        user: &str,
        password: &str,
        schema: &str,
        greeting_ok: impl Fn(&HandshakePacket) -> bool,
    ) -> Option<Client> {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("read timeout");
        let mut client = Client { stream };
        let (_, greeting) = client.read_packet();
        let hs = HandshakePacket::deserialize((), &mut ParseBuf(&greeting)).expect("handshake packet");
        if !greeting_ok(&hs) {
            return None;
        }
        let nonce = hs.nonce();
        let plugin = AuthPlugin::MysqlNativePassword;
        let data = plugin.gen_data(Some(password), &nonce);
        let response = HandshakeResponse::new(
            data.as_deref(),
            (10, 11, 0),
            Some(user.as_bytes()),
            Some(schema.as_bytes()),
            Some(plugin),
            client_caps(),
            None,
            1 << 24,
        );
        let mut buf = Vec::new();
        response.serialize(&mut buf);
        client.write_packet(1, &buf);
        let (_, reply) = client.read_packet();
        assert_eq!(
            reply.first(),
            Some(&0),
            "login failed: {:?}",
            String::from_utf8_lossy(&reply)
        );
        Some(client)
    }

    fn read_packet(&mut self) -> (u8, Vec<u8>) {
        let mut header = [0u8; 4];
        self.stream.read_exact(&mut header).expect("read packet header");
        let len = u32::from_le_bytes([header[0], header[1], header[2], 0]) as usize;
        assert!(len < 0xff_ffff, "no packet here is 16 MiB");
        let mut payload = vec![0; len];
        self.stream.read_exact(&mut payload).expect("read packet");
        (header[3], payload)
    }

    fn write_packet(&mut self, seq: u8, payload: &[u8]) {
        let len = payload.len() as u32;
        let mut packet = Vec::with_capacity(4 + payload.len());
        packet.extend_from_slice(&len.to_le_bytes()[..3]);
        packet.push(seq);
        packet.extend_from_slice(payload);
        self.stream.write_all(&packet).expect("write packet");
    }

    fn query(&mut self, sql: &str) -> u64 {
        let mut packet = vec![0x03];
        packet.extend_from_slice(sql.as_bytes());
        self.write_packet(0, &packet);
        self.results(sql)
    }

    fn prepare(&mut self, sql: &str) -> Prepared {
        let mut packet = vec![0x16];
        packet.extend_from_slice(sql.as_bytes());
        self.write_packet(0, &packet);
        let (_, ok) = self.read_packet();
        fail_on_err(&ok, sql);
        assert_eq!(ok.first(), Some(&0), "prepare OK expected");
        let id = u32::from_le_bytes([ok[1], ok[2], ok[3], ok[4]]);
        let columns = u16::from_le_bytes([ok[5], ok[6]]);
        let params = u16::from_le_bytes([ok[7], ok[8]]);
        // With CLIENT_DEPRECATE_EOF the definitions have no EOF after them.
        for _ in 0..params + columns {
            self.read_packet();
        }
        Prepared { id, params }
    }

    /// COM_STMT_EXECUTE with one BIGINT parameter, its type sent.
    fn execute(&mut self, stmt: &Prepared, value: i64) -> u64 {
        assert_eq!(stmt.params, 1);
        let mut packet = vec![0x17];
        packet.extend_from_slice(&stmt.id.to_le_bytes());
        packet.push(0); // no cursor
        packet.extend_from_slice(&1u32.to_le_bytes()); // iterations
        packet.push(0); // null bitmap
        packet.push(1); // new params bound
        packet.extend_from_slice(&[MYSQL_TYPE_LONGLONG, 0]);
        packet.extend_from_slice(&value.to_le_bytes());
        self.write_packet(0, &packet);
        self.results("COM_STMT_EXECUTE")
    }

    /// Reads a whole response (OK, or result sets ending in an OK-as-EOF);
    /// returns the rows.
    fn results(&mut self, what: &str) -> u64 {
        let mut rows = 0;
        loop {
            let (_, first) = self.read_packet();
            fail_on_err(&first, what);
            let status = if first[0] == 0x00 {
                ok_status(&first)
            } else {
                let columns = lenenc(&first, &mut 0);
                for _ in 0..columns {
                    self.read_packet();
                }
                loop {
                    let (_, row) = self.read_packet();
                    fail_on_err(&row, what);
                    if row[0] == 0xfe {
                        break ok_status(&row);
                    }
                    rows += 1;
                }
            };
            if status & MORE_RESULTS_EXISTS == 0 {
                return rows;
            }
        }
    }

    fn quit(mut self) {
        self.write_packet(0, &[0x01]);
    }
}

fn fail_on_err(payload: &[u8], what: &str) {
    if payload.first() == Some(&0xff) {
        panic!("{what}: {}", String::from_utf8_lossy(&payload[3..]));
    }
}

fn lenenc(buf: &[u8], pos: &mut usize) -> u64 {
    let first = buf[*pos];
    *pos += 1;
    let n = match first {
        0xfc => 2,
        0xfd => 3,
        0xfe => 8,
        v => return u64::from(v),
    };
    let mut bytes = [0u8; 8];
    bytes[..n].copy_from_slice(&buf[*pos..*pos + n]);
    *pos += n;
    u64::from_le_bytes(bytes)
}

/// Status flags of an OK packet (or an OK-as-EOF).
fn ok_status(ok: &[u8]) -> u16 {
    let mut pos = 1;
    lenenc(ok, &mut pos); // affected rows
    lenenc(ok, &mut pos); // last insert id
    u16::from_le_bytes([ok[pos], ok[pos + 1]])
}

// ---------------------------------------------------------------------------
// The measurement.

/// Per-round counts of one statement kind.
struct Measured {
    counts: Vec<u64>,
    /// The rounds whose backtraces are printed: one with the median count
    /// and one with more (an occasional allocation), if any.
    traced_round: Option<u64>,
    occasional_round: Option<u64>,
}

impl Measured {
    fn median(&self) -> u64 {
        let mut sorted = self.counts.clone();
        sorted.sort_unstable();
        sorted[sorted.len() / 2]
    }

    fn report(&self, name: &str) {
        let mut histogram = BTreeMap::new();
        for &c in &self.counts {
            *histogram.entry(c).or_insert(0u64) += 1;
        }
        let total: u64 = self.counts.iter().sum();
        println!(
            "{name}: {} allocations per statement (median of {} rounds; min {}, max {}, mean {:.2}); \
             rounds by count: {histogram:?}",
            self.median(),
            self.counts.len(),
            self.counts.iter().min().unwrap_or(&0),
            self.counts.iter().max().unwrap_or(&0),
            total as f64 / self.counts.len() as f64,
        );
    }
}

/// Runs `statement` `ROUNDS` times and counts each round. `first_round`
/// numbers the rounds for the traces.
fn measure(first_round: u64, mut statement: impl FnMut(u64)) -> Measured {
    let mut counts = Vec::with_capacity(ROUNDS as usize);
    let mut before = count_when_idle();
    for i in 0..ROUNDS {
        ROUND.store(first_round + i, SeqCst);
        statement(i);
        let after = count_when_idle();
        ROUND.store(0, SeqCst);
        counts.push(after - before);
        before = after;
    }
    let mut measured = Measured {
        counts,
        traced_round: None,
        occasional_round: None,
    };
    let median = measured.median();
    measured.traced_round = measured
        .counts
        .iter()
        .position(|&c| c == median)
        .map(|i| first_round + i as u64);
    measured.occasional_round = measured
        .counts
        .iter()
        .position(|&c| c > median)
        .map(|i| first_round + i as u64);
    measured
}

/// Prints the backtraces of one round: the standard library function that
/// allocated (Box::new, Vec growth...), then the frames outside the
/// standard library up to the session.
fn print_traces(name: &str, round: Option<u64>) {
    let Some(round) = round else { return };
    let traces = TRACES.lock().unwrap_or_else(|e| e.into_inner());
    let mine: Vec<_> = traces.iter().filter(|(r, _)| *r == round).collect();
    println!("==== {name}: {} allocations in round {round}", mine.len());
    for (n, (_, trace)) in mine.iter().enumerate() {
        let text = trace.to_string();
        let mut lines = text.lines().peekable();
        let mut frames = Vec::new();
        while let Some(line) = lines.next() {
            let symbol = line.trim();
            let symbol = symbol.split_once(": ").map_or(symbol, |(_, s)| s).to_string();
            let location = lines
                .next_if(|l| l.trim_start().starts_with("at "))
                .map(|l| l.trim().trim_start_matches("at ").to_string());
            frames.push((symbol, location.unwrap_or_default()));
        }
        // Past the allocator and the backtrace machinery.
        let allocator = |(s, l): &(String, String)| {
            l.contains("/tests/allocations.rs") || s.contains("__rust_") || s.contains("__rdl_")
        };
        let mut start = frames.iter().position(allocator).unwrap_or(0);
        while frames.get(start).is_some_and(allocator) {
            start += 1;
        }
        let frames = &frames[start..];
        let first_ours = frames
            .iter()
            .position(|(_, l)| !l.is_empty() && !l.starts_with("/rustc/"))
            .unwrap_or(0);
        let via = frames[..first_ours]
            .iter()
            .rev()
            .map(|(s, _)| s.as_str())
            .find(|s| !s.contains("alloc_impl") && !s.contains("do_alloc"))
            .unwrap_or("?");
        println!("-- allocation {} (via {via})", n + 1);
        for (symbol, location) in frames[first_ours..].iter().take(14) {
            if location.is_empty() || location.starts_with("/rustc/") {
                continue;
            }
            println!("   {location}  {symbol}");
            if symbol.contains("session::run") || location.contains("/src/session/mod.rs") {
                break;
            }
        }
    }
}

fn primary_address() -> String {
    std::env::var("SLUICE_TEST_PRIMARY").unwrap_or_else(|_| {
        panic!(
            "SLUICE_TEST_PRIMARY is not set: run the integration tests through scripts/test.sh, \
             which starts MariaDB"
        )
    })
}

fn port_of(address: &str) -> u16 {
    address
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("SLUICE_TEST_PRIMARY has a port")
}

/// The table the point selects read, in a schema of its own.
fn create_table(primary_port: u16) {
    let mut direct =
        Client::connect(primary_port, "app", "app", "mysql", |_| true).expect("log in to the primary");
    direct.query("CREATE DATABASE IF NOT EXISTS sluice_alloc");
    direct.query(
        "CREATE TABLE IF NOT EXISTS sluice_alloc.sbtest1 (id INT NOT NULL PRIMARY KEY, \
         k INT NOT NULL DEFAULT 0, c CHAR(120) NOT NULL DEFAULT '', pad CHAR(60) NOT NULL DEFAULT '')",
    );
    let values: Vec<String> = (1..=100)
        .map(|id| format!("({id}, {id}, '{:0>119}', 'pad')", id * 7919))
        .collect();
    direct.query(&format!(
        "REPLACE INTO sluice_alloc.sbtest1 (id, k, c, pad) VALUES {}",
        values.join(", ")
    ));
    direct.quit();
}

#[test]
fn statement_path_allocations() {
    let primary = primary_address();
    create_table(port_of(&primary));
    let trace = std::env::var("SLUICE_ALLOC_TRACE").is_ok_and(|v| v == "1");
    TRACE.store(trace, SeqCst);

    let server = Server::start(&primary);
    // Until Sluice has learned the primary's version (its profile learner
    // allocates plenty), it greets with a placeholder.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut client = loop {
        let learned = |hs: &HandshakePacket| !hs.server_version_ref().ends_with(b"-sluice");
        if let Some(c) = Client::connect(server.port, "app", "app", "sluice_alloc", learned) {
            break c;
        }
        assert!(
            Instant::now() < deadline,
            "Sluice never learned the primary's version"
        );
        std::thread::sleep(Duration::from_millis(50));
    };

    let point_select = |client: &mut Client, i: u64| {
        let rows = client.query(&format!("SELECT c FROM sbtest1 WHERE id = {}", 1 + i % 100));
        assert_eq!(rows, 1);
    };
    let stmt = client.prepare("SELECT c FROM sbtest1 WHERE id = ?");
    let execute = |client: &mut Client, i: u64| {
        let rows = client.execute(&stmt, 1 + (i % 100) as i64);
        assert_eq!(rows, 1);
    };
    // Point selects of SHAPES different statements in turn: more than a
    // session's per-statement memos hold, so a memo that allocates on a
    // miss would show here (the guard is off in this config).
    let many_shapes = |client: &mut Client, i: u64| {
        let shape = i % SHAPES;
        let rows = client.query(&format!(
            "SELECT c AS c{shape} FROM sbtest1 WHERE id = {}",
            1 + i % 100
        ));
        assert_eq!(rows, 1);
    };
    for i in 0..WARM_UP {
        point_select(&mut client, i);
        execute(&mut client, i);
        many_shapes(&mut client, i);
    }
    let query = measure(1, |i| point_select(&mut client, i));
    let executed = measure(1 + ROUNDS, |i| execute(&mut client, i));
    let shapes = measure(1 + 2 * ROUNDS, |i| many_shapes(&mut client, i));
    client.quit();
    server.stop();

    query.report("COM_QUERY point select");
    executed.report("COM_STMT_EXECUTE point select");
    shapes.report(&format!("COM_QUERY point selects of {SHAPES} statements in turn"));
    if trace {
        print_traces("COM_QUERY point select", query.traced_round);
        print_traces("COM_QUERY point select (occasional)", query.occasional_round);
        print_traces("COM_STMT_EXECUTE point select", executed.traced_round);
        print_traces(
            "COM_STMT_EXECUTE point select (occasional)",
            executed.occasional_round,
        );
        print_traces("COM_QUERY point selects of many shapes", shapes.traced_round);
    }
    assert!(
        query.median() <= QUERY_BOUND,
        "a COM_QUERY point select allocates {} times, more than QUERY_BOUND = {QUERY_BOUND}: \
         find the new allocations with SLUICE_ALLOC_TRACE=1 (see the file's doc comment)",
        query.median()
    );
    assert!(
        executed.median() <= EXECUTE_BOUND,
        "a COM_STMT_EXECUTE point select allocates {} times, more than EXECUTE_BOUND = {EXECUTE_BOUND}: \
         find the new allocations with SLUICE_ALLOC_TRACE=1 (see the file's doc comment)",
        executed.median()
    );
    assert!(
        shapes.median() <= QUERY_BOUND,
        "a COM_QUERY point select among {SHAPES} statements in turn allocates {} times, more than \
         QUERY_BOUND = {QUERY_BOUND}: find the new allocations with SLUICE_ALLOC_TRACE=1",
        shapes.median()
    );
}
