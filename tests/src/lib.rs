//! Integration-test harness: the real MariaDB topology started by
//! `scripts/test.sh` (a primary and two replicas, addresses in
//! `SLUICE_TEST_*`), Sluice processes started per test with their own config
//! and ports, and small helpers for the clients the tests drive.

pub mod node;
pub mod raw;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The backend topology, from the environment `scripts/test.sh` sets.
#[derive(Debug, Clone)]
pub struct Topology {
    pub primary: String,
    pub replica1: String,
    pub replica2: String,
}

impl Topology {
    pub fn from_env() -> Topology {
        let get = |name: &str| {
            std::env::var(name).unwrap_or_else(|_| {
                panic!("{name} is not set: run the integration tests through scripts/test.sh, which starts MariaDB")
            })
        };
        Topology {
            primary: get("SLUICE_TEST_PRIMARY"),
            replica1: get("SLUICE_TEST_REPLICA1"),
            replica2: get("SLUICE_TEST_REPLICA2"),
        }
    }

    pub fn primary_port(&self) -> u16 {
        port_of(&self.primary)
    }
}

pub fn port_of(addr: &str) -> u16 {
    addr.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("address has a port")
}

/// A port nobody listens on right now, handed out once per test process.
///
/// Taken below the kernel's ephemeral range (Linux: 32768 and up): a port
/// from that range can be taken by any outgoing connection between this
/// check and the bind that needs it, which once failed a full run with
/// "Address already in use" on a Sluice admin port. Each process walks the
/// range from its own starting point, so parallel test processes rarely
/// meet, and skips the topology's MariaDB ports (free while a test has a
/// server stopped).
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id().wrapping_mul(2_654_435_761) % SPAN;
    let topology = std::env::var("SLUICE_PORT_BASE")
        .ok()
        .and_then(|b| b.parse::<u32>().ok())
        .unwrap_or(13306);
    for _ in 0..SPAN {
        let offset = (start + NEXT.fetch_add(1, Ordering::Relaxed)) % SPAN;
        let port = LOW + offset;
        if (topology..topology + 10).contains(&port) {
            continue;
        }
        let port = u16::try_from(port).expect("below 32768");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {LOW}..{}", LOW + SPAN);
}

/// A running Sluice process, killed on drop.
pub struct Sluice {
    pub port: u16,
    pub admin_port: u16,
    pub dir: PathBuf,
    child: Child,
}

/// Config pieces a test can override.
#[derive(Debug, Clone)]
pub struct SluiceOptions {
    pub max_client_connections: usize,
    pub max_connections_per_backend: usize,
    pub acquire_timeout_ms: u64,
    pub primary: String,
    pub replicas: Vec<String>,
    /// `routing.mode`: "split" unless a test says otherwise.
    pub routing_mode: &'static str,
    /// Extra lines inside `[server]`, `[pool]` and `[routing]`.
    pub server_extra: String,
    pub pool_extra: String,
    pub routing_extra: String,
    /// The monitor's (and the guard's) account; its password is "monitor".
    pub monitor_user: String,
    /// Lines inside `[monitor]` (after the monitor account).
    pub monitor_extra: String,
    /// Appended after the built-in `[[users]]` entries.
    pub extra_users: String,
    /// Lines added to every `[[backends]]` entry (such as its `tls` keys).
    pub backend_extra: String,
    /// Appended at the end of the file.
    pub extra: String,
    /// (client port, admin port); None: free ones. A restarted instance
    /// reuses its predecessor's, as behind a balancer.
    pub ports: Option<(u16, u16)>,
    /// Environment variables set for the Sluice process.
    pub env: Vec<(String, String)>,
}

impl Default for SluiceOptions {
    fn default() -> Self {
        let topo = Topology::from_env();
        SluiceOptions {
            max_client_connections: 10_000,
            max_connections_per_backend: 20,
            acquire_timeout_ms: 2000,
            primary: topo.primary,
            replicas: vec![topo.replica1, topo.replica2],
            routing_mode: "split",
            server_extra: String::new(),
            pool_extra: String::new(),
            routing_extra: String::new(),
            monitor_user: "sluice_monitor".into(),
            monitor_extra: "interval_ms = 200\nheartbeat_interval_ms = 100".into(),
            extra_users: String::new(),
            backend_extra: String::new(),
            extra: String::new(),
            ports: None,
            env: Vec::new(),
        }
    }
}

impl Sluice {
    pub fn start() -> Sluice {
        Sluice::start_with(SluiceOptions::default())
    }

    pub fn start_with(opts: SluiceOptions) -> Sluice {
        let (port, admin_port) = opts.ports.unwrap_or_else(|| (free_port(), free_port()));
        let dir = std::env::temp_dir().join(format!("sluice-test-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create test dir");
        let mut config = format!(
            r#"
[server]
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:{admin_port}"
max_client_connections = {max_clients}
{server_extra}

[[users]]
name = "app"
password = "app"

[[users]]
name = "other"
password_env = "SLUICE_TEST_OTHER_PASSWORD"

{extra_users}
[pool]
max_connections_per_backend = {max_pool}
acquire_timeout_ms = {acquire}
{pool_extra}

[routing]
mode = "{routing_mode}"
{routing_extra}

[monitor]
user = "{monitor_user}"
password = "monitor"
{monitor_extra}

[[backends]]
name = "primary"
address = "{primary}"
role = "primary"
{backend_extra}
"#,
            routing_mode = opts.routing_mode,
            pool_extra = opts.pool_extra,
            routing_extra = opts.routing_extra,
            monitor_user = opts.monitor_user,
            monitor_extra = opts.monitor_extra,
            max_clients = opts.max_client_connections,
            extra_users = opts.extra_users,
            server_extra = opts.server_extra,
            max_pool = opts.max_connections_per_backend,
            acquire = opts.acquire_timeout_ms,
            primary = opts.primary,
            backend_extra = opts.backend_extra,
        );
        for (i, replica) in opts.replicas.iter().enumerate() {
            config.push_str(&format!(
                "\n[[backends]]\nname = \"replica{}\"\naddress = \"{replica}\"\nrole = \"replica\"\n{}\n",
                i + 1,
                opts.backend_extra
            ));
        }
        config.push_str(&opts.extra);
        let config_path = dir.join("sluice.toml");
        std::fs::write(&config_path, config).expect("write config");
        Sluice::start_file_with_env(dir, &config_path, port, admin_port, &opts.env)
    }

    /// Starts Sluice with a config file of the test's own, which must listen on
    /// `127.0.0.1:port` and `127.0.0.1:admin_port`; its log goes into `dir`.
    pub fn start_file(dir: PathBuf, config_path: &std::path::Path, port: u16, admin_port: u16) -> Sluice {
        Sluice::start_file_with_env(dir, config_path, port, admin_port, &[])
    }

    /// [`Sluice::start_file`] with environment variables for the process.
    pub fn start_file_with_env(
        dir: PathBuf,
        config_path: &std::path::Path,
        port: u16,
        admin_port: u16,
        env: &[(String, String)],
    ) -> Sluice {
        let log = std::fs::File::create(dir.join("sluice.log")).expect("create log");
        let child = Command::new(sluice_bin())
            .arg("--config")
            .arg(config_path)
            .env("SLUICE_TEST_OTHER_PASSWORD", "secret-other-pw")
            // sqlparser's debug lines print whole statements token by token
            // (a 20 MB literal several times over): Sluice's own at debug.
            .env("RUST_LOG", "debug,sqlparser=info")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start sluice (set SLUICE_BIN or build target/release/sluice)");
        let sluice = Sluice {
            port,
            admin_port,
            dir,
            child,
        };
        sluice.wait_ready();
        sluice
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() && self.http_get("/healthz").is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("sluice did not start; log:\n{}", self.log());
    }

    pub fn url(&self, user: &str, password: &str, db: &str) -> String {
        format!("mysql://{user}:{password}@127.0.0.1:{}/{db}", self.port)
    }

    /// Driver options for Sluice. `prefer_socket` is off: otherwise
    /// mysql_async asks for @@socket and silently reconnects to the server's
    /// unix socket, bypassing the proxy.
    pub fn opts(&self) -> mysql_async::Opts {
        let url = mysql_async::Opts::from_url(&self.url("app", "app", "sluice_test")).expect("valid url");
        mysql_async::OptsBuilder::from_opts(url)
            .prefer_socket(false)
            .into()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("sluice.log")).unwrap_or_default()
    }

    /// GET on the admin endpoint; the body, or None if it did not answer.
    pub fn http_get(&self, path: &str) -> Option<String> {
        http_get_port(self.admin_port, path)
    }

    /// `/status` as JSON (Null when it does not answer).
    pub fn status(&self) -> serde_json::Value {
        self.http_get("/status")
            .and_then(|b| serde_json::from_str(&b).ok())
            .unwrap_or(serde_json::Value::Null)
    }

    /// Both replicas' positions, as this Sluice's monitor last saw them,
    /// cover the GTID position `need`.
    pub fn monitor_knows(&self, need: &str) -> bool {
        let st = self.status();
        let Some(backends) = st["backends"].as_array() else {
            return false;
        };
        let replicas: Vec<_> = backends.iter().filter(|b| b["role"] == "replica").collect();
        !replicas.is_empty()
            && replicas.iter().all(|b| {
                b["gtid_position"]
                    .as_str()
                    .is_some_and(|have| gtid_covers(have, need))
            })
    }

    pub fn metrics(&self) -> String {
        self.http_get("/metrics").expect("metrics endpoint answers")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("sluice.toml")
    }

    /// Replaces the config file (atomically, as config management would).
    pub fn write_config(&self, text: &str) {
        let tmp = self.dir.join("sluice.toml.new");
        std::fs::write(&tmp, text).expect("write config");
        std::fs::rename(&tmp, self.config_path()).expect("replace config");
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child process.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Waits for the process to exit, up to `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Sluice {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sum of every sample of a metric whose labels contain all of `labels`.
pub fn metric_sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| labels.iter().all(|lab| l.contains(lab)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

pub fn sluice_bin() -> PathBuf {
    if let Ok(bin) = std::env::var("SLUICE_BIN") {
        return PathBuf::from(bin);
    }
    // Otherwise the most recently built of target/{release,debug}/sluice.
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    ["release", "debug"]
        .iter()
        .map(|profile| root.join("target").join(profile).join("sluice"))
        .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
        .max()
        .map(|(_, p)| p)
        .expect("no sluice binary: set SLUICE_BIN or run cargo build")
}

/// Direct connection options to a backend (bypassing Sluice).
pub fn direct_opts(addr: &str) -> mysql_async::Opts {
    let url = mysql_async::Opts::from_url(&format!("mysql://app:app@{addr}/sluice_test")).expect("valid url");
    mysql_async::OptsBuilder::from_opts(url)
        .prefer_socket(false)
        .into()
}

/// Fails clearly when a client program is not installed (`args` make it
/// print its version).
pub fn require_program(program: &str, args: &[&str]) {
    let found = Command::new(program)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "`{program}` is not installed (or does not run): run scripts/install-deps.sh"
    );
}

/// Path of a file in the repository.
pub fn repo_path(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

/// Creates the second configured user (`other`) on the topology; the
/// primary replicates it to the replicas.
pub async fn ensure_other_user() {
    use mysql_async::prelude::Queryable;
    let mut admin = mysql_async::Conn::new(direct_opts(&Topology::from_env().primary))
        .await
        .expect("connect to the primary");
    admin
        .query_drop(
            "CREATE USER IF NOT EXISTS 'other'@'%' IDENTIFIED BY 'secret-other-pw'; \
             GRANT ALL ON *.* TO 'other'@'%'",
        )
        .await
        .expect("create user other");
    admin.disconnect().await.ok();
}

/// Lifts this process's open-file soft limit to the hard limit (tests that
/// open thousands of client connections).
pub fn raise_fd_limit() {
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            let wanted = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            libc::setrlimit(libc::RLIMIT_NOFILE, &wanted);
        }
    }
}

/// GET on an admin port; the body, or None if it did not answer.
pub fn http_get_port(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out.split_once("\r\n\r\n")?.1.to_string())
}

/// An admin endpoint's answer.
#[derive(Debug, Clone)]
pub struct HttpAnswer {
    pub status: u16,
    /// The header lines, as sent.
    pub head: String,
    pub body: String,
}

impl HttpAnswer {
    /// The value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }
}

/// Sends `method path` with `headers` (each `Name: value`) to an admin
/// port; None if it did not answer.
pub fn http_request(port: u16, method: &str, path: &str, headers: &[&str]) -> Option<HttpAnswer> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for header in headers {
        request.push_str(header);
        request.push_str("\r\n");
    }
    if method == "POST" {
        request.push_str("Content-Length: 0\r\n");
    }
    request.push_str("\r\n");
    s.write_all(request.as_bytes()).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some(HttpAnswer {
        status,
        head: head.to_string(),
        body: body.to_string(),
    })
}

/// The `size` of every pool in a `/status` body.
pub fn pool_sizes(status: &str) -> Vec<usize> {
    status
        .split("\"size\":")
        .skip(1)
        .filter_map(|rest| rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
        .collect()
}

/// Polls `ok` every 50 ms until it holds, failing the test after `limit`.
pub async fn wait_until(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (up to 15 s) until a statement whose text is exactly `sql` runs on
/// one of the topology's three servers: a client's statement has reached the
/// database, on whichever server its route chose. Give the statement a text
/// no other test uses (tests run at once).
pub async fn wait_until_running(sql: &str) {
    use mysql_async::prelude::Queryable;
    let topo = Topology::from_env();
    let mut servers = Vec::new();
    for addr in [&topo.primary, &topo.replica1, &topo.replica2] {
        let conn = mysql_async::Conn::new(direct_opts(addr)).await;
        servers.push(conn.unwrap_or_else(|e| panic!("direct connection to {addr}: {e}")));
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    'poll: loop {
        for server in &mut servers {
            let n: Option<u64> = server
                .exec_first(
                    "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO = ?",
                    (sql,),
                )
                .await
                .unwrap_or_else(|e| panic!("process list: {e}"));
            if n.unwrap_or(0) > 0 {
                break 'poll;
            }
        }
        assert!(Instant::now() < deadline, "`{sql}` never reached a server");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for server in servers {
        let _ = server.disconnect().await;
    }
}

/// Waits (up to 15 s, `MASTER_GTID_WAIT`) until both replicas have applied
/// everything the primary had written when it was called.
pub async fn replicas_caught_up() {
    use mysql_async::prelude::Queryable;
    let topo = Topology::from_env();
    let mut primary = mysql_async::Conn::new(direct_opts(&topo.primary))
        .await
        .expect("direct connection to the primary");
    let pos: String = primary
        .query_first("SELECT @@gtid_binlog_pos")
        .await
        .expect("@@gtid_binlog_pos")
        .unwrap_or_default();
    let _ = primary.disconnect().await;
    for addr in [&topo.replica1, &topo.replica2] {
        let mut replica = mysql_async::Conn::new(direct_opts(addr))
            .await
            .unwrap_or_else(|e| panic!("direct connection to {addr}: {e}"));
        let waited: Option<i64> = replica
            .exec_first("SELECT MASTER_GTID_WAIT(?, 15)", (&pos,))
            .await
            .unwrap_or_else(|e| panic!("MASTER_GTID_WAIT on {addr}: {e}"));
        assert_eq!(waited, Some(0), "{addr} did not apply {pos} within 15 s");
        let _ = replica.disconnect().await;
    }
}

/// Per replication domain, the MariaDB GTID position `have` has applied at
/// least `need`'s sequence number (the test's own reading of the text, so it
/// does not trust Sluice's).
pub fn gtid_covers(have: &str, need: &str) -> bool {
    let parse = |text: &str| -> Vec<(u64, u64)> {
        text.split(',')
            .filter_map(|p| {
                let mut f = p.trim().split('-');
                let domain = f.next()?.parse().ok()?;
                let _server: u64 = f.next()?.parse().ok()?;
                Some((domain, f.next()?.parse().ok()?))
            })
            .collect()
    };
    let have = parse(have);
    parse(need)
        .iter()
        .all(|(d, seq)| have.iter().any(|(hd, hs)| hd == d && hs >= seq))
}

/// Microseconds since the epoch (the unit of Sluice's heartbeat rows).
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Runs SQL on a topology server with the mariadb CLI, for restoring the
/// topology from `Drop`: synchronous, and it never panics (a failure is
/// printed).
pub fn sql_now(addr: &str, sql: &str) {
    let (host, port) = addr.rsplit_once(':').unwrap_or((addr, "3306"));
    match Command::new("mariadb")
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
