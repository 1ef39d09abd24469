//! Real drivers, run against MariaDB directly and through Sluice, compared
//! check by check: PyMySQL, mysql-connector-python (pure Python and its C
//! extension), Node mysql2 (`query` and `execute`), MariaDB Connector/J
//! (client- and server-side prepared statements), PHP PDO (native and
//! emulated prepares) and mysqli (prepared and plain queries).
//!
//! The server is the oracle. Each driver has a script in tests/drivers/ that
//! runs a fixed list of named checks (20 MB BLOBs, OUT parameters into user
//! variables, SET NAMES, warnings / FOUND_ROWS / ROW_COUNT after a delay,
//! read-after-write from a new connection, CONNECTION_ID, KILL QUERY,
//! connection attributes, and basics: types, parameters, transactions, last
//! insert id, a client without a default schema) and prints one JSON object
//! per check, with nothing that legitimately differs between connections.
//! The same script runs directly against the primary, then through Sluice in
//! `primary_only` and in `split` mode; every check must print exactly what it
//! printed directly.
//!
//! The one check that is inherently different in `split` mode is
//! read_after_write_new_conn: a new connection may read a replica that has not
//! applied another session's commit yet, unless Sluice is configured for it.
//! So split mode runs it on its own against a Sluice with
//! `routing.read_your_writes = "global"`, and every other check against a
//! Sluice with `read_your_writes = "gtid"` (a session reads its own writes
//! with no time window: the 20 MB BLOB read back a second after its INSERT
//! must not depend on how fast the replicas apply it).
//!
//! The drivers come from scripts/install-deps.sh (Debian's libmariadb-java and
//! PHP, PyPI into tests/drivers/.venv, npm into tests/drivers/node); a missing
//! one fails the test. Tables and routines: drv_<driver>_* in sluice_test.

use serde_json::Value;
use sluice_tests::{Sluice, SluiceOptions, Topology, port_of, repo_path, sluice_bin};
use std::io::Read;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Debian's MariaDB Connector/J (package libmariadb-java).
const CONNECTOR_J_JAR: &str = "/usr/share/java/mariadb-java-client.jar";

/// The longest one script run may take (a run against a Sluice that hangs
/// must fail, not block the suite).
const RUN_LIMIT: Duration = Duration::from_secs(300);

/// The check that split mode runs against a `read_your_writes = "global"` Sluice.
const CROSS_CONNECTION: &str = "read_after_write_new_conn";

#[derive(Debug, Clone, Copy)]
enum Driver {
    PyMySql,
    ConnectorPure,
    ConnectorCext,
    Mysql2,
    ConnectorJ,
    Pdo,
    Mysqli,
}

impl Driver {
    /// Also the table prefix: drv_<name>.
    fn name(self) -> &'static str {
        match self {
            Driver::PyMySql => "pymysql",
            Driver::ConnectorPure => "connector_pure",
            Driver::ConnectorCext => "connector_cext",
            Driver::Mysql2 => "mysql2",
            Driver::ConnectorJ => "connectorj",
            Driver::Pdo => "pdo",
            Driver::Mysqli => "mysqli",
        }
    }

    /// The script's command line, up to its options and connection arguments.
    fn command(self) -> Command {
        let python = || {
            let mut c = Command::new(repo_path("tests/drivers/.venv/bin/python"));
            c.arg(repo_path("tests/drivers/py_checks.py"));
            c
        };
        let php = || {
            let mut c = Command::new("php");
            c.arg(repo_path("tests/drivers/php_checks.php"));
            c
        };
        let mut c = match self {
            Driver::PyMySql => python(),
            Driver::ConnectorPure => python(),
            Driver::ConnectorCext => python(),
            Driver::Mysql2 => {
                let mut c = Command::new("node");
                c.arg(repo_path("tests/drivers/node/checks.js"));
                c
            }
            Driver::ConnectorJ => {
                // A single-file source program (Java 11+): no build step.
                let mut c = Command::new("java");
                c.args(["-cp", CONNECTOR_J_JAR])
                    .arg(repo_path("tests/drivers/DriverChecks.java"));
                c
            }
            Driver::Pdo | Driver::Mysqli => php(),
        };
        match self {
            Driver::PyMySql => c.args(["--driver", "pymysql"]),
            Driver::ConnectorPure => c.args(["--driver", "connector-pure"]),
            Driver::ConnectorCext => c.args(["--driver", "connector-cext"]),
            Driver::Pdo => c.args(["--driver", "pdo"]),
            Driver::Mysqli => c.args(["--driver", "mysqli"]),
            Driver::Mysql2 | Driver::ConnectorJ => &mut c,
        };
        c.args(["--prefix", &format!("drv_{}", self.name())]);
        c
    }

    /// Fails clearly when the driver is not installed.
    fn require(self) {
        let python_has = |code: &str, what: &str| {
            let venv = repo_path("tests/drivers/.venv/bin/python");
            let ok = Command::new(&venv)
                .args(["-c", code])
                .output()
                .is_ok_and(|o| o.status.success());
            assert!(
                ok,
                "{what} is not installed in {} (or does not import): run scripts/install-deps.sh",
                venv.display()
            );
        };
        match self {
            Driver::PyMySql => python_has("import pymysql", "PyMySQL"),
            Driver::ConnectorPure => python_has("import mysql.connector", "mysql-connector-python"),
            Driver::ConnectorCext => python_has(
                "import sys, mysql.connector; sys.exit(0 if mysql.connector.HAVE_CEXT else 1)",
                "mysql-connector-python with its C extension",
            ),
            Driver::Mysql2 => {
                sluice_tests::require_program("node", &["--version"]);
                let module = repo_path("tests/drivers/node/node_modules/mysql2/package.json");
                assert!(
                    module.exists(),
                    "Node mysql2 is not installed ({} is missing): run scripts/install-deps.sh",
                    module.display()
                );
            }
            Driver::ConnectorJ => {
                sluice_tests::require_program("java", &["-version"]);
                assert!(
                    std::path::Path::new(CONNECTOR_J_JAR).exists(),
                    "MariaDB Connector/J is not installed ({CONNECTOR_J_JAR} is missing): \
                     run scripts/install-deps.sh"
                );
            }
            Driver::Pdo | Driver::Mysqli => {
                sluice_tests::require_program("php", &["--version"]);
                let ok = Command::new("php")
                    .args([
                        "-r",
                        "exit(extension_loaded('pdo_mysql') && extension_loaded('mysqli') ? 0 : 1);",
                    ])
                    .output()
                    .is_ok_and(|o| o.status.success());
                assert!(ok, "PHP lacks pdo_mysql or mysqli: run scripts/install-deps.sh");
            }
        }
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Which checks a run does.
#[derive(Debug, Clone, Copy)]
enum Filter {
    All,
    Only(&'static str),
    Skip(&'static str),
}

impl Filter {
    fn args(self) -> Vec<&'static str> {
        match self {
            Filter::All => vec![],
            Filter::Only(name) => vec!["--only", name],
            Filter::Skip(name) => vec!["--skip", name],
        }
    }

    fn wants(self, check: &str) -> bool {
        match self {
            Filter::All => true,
            Filter::Only(name) => check == name,
            Filter::Skip(name) => check != name,
        }
    }
}

/// One run of a driver's script: the checks in the order printed.
struct Run {
    checks: Vec<(String, Value)>,
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Run {
    fn get(&self, check: &str) -> Option<&Value> {
        self.checks.iter().find(|(n, _)| n == check).map(|(_, v)| v)
    }
}

/// Runs the driver's script against `addr` (host:port), user app, database sluice_test.
fn run_checks(driver: Driver, addr: &str, filter: Filter) -> Run {
    let mut cmd = driver.command();
    cmd.args(filter.args())
        .args([
            "127.0.0.1",
            &port_of(addr).to_string(),
            "app",
            "app",
            "sluice_test",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (run scripts/install-deps.sh)"));
    let reader = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            text(&buf)
        })
    };
    let out_reader = reader(Box::new(child.stdout.take().expect("piped stdout")));
    let err_reader = reader(Box::new(child.stderr.take().expect("piped stderr")));
    let deadline = Instant::now() + RUN_LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the driver script") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = out_reader.join().expect("stdout reader");
    let mut stderr = err_reader.join().expect("stderr reader");
    if status.is_none() {
        stderr.push_str(&format!("\n(killed after {RUN_LIMIT:?})"));
    }
    let mut checks = Vec::new();
    for line in stdout.lines().filter(|l| l.starts_with('{')) {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("{driver:?} printed a line that is not JSON ({e}): {line}"));
        let name = v["check"]
            .as_str()
            .unwrap_or_else(|| panic!("{driver:?} printed a line without \"check\": {line}"))
            .to_string();
        checks.push((name, v));
    }
    Run {
        checks,
        ok: status.is_some_and(|s| s.success()),
        stdout,
        stderr,
    }
}

/// Every `{"error": [...]}` inside a check's result, with its path, except
/// those the checks provoke on purpose (`unknown_id`: KILL QUERY 999999).
fn unexpected_errors(v: &Value, path: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, x) in map {
                if k == "error" && path.ends_with("unknown_id") {
                    continue;
                }
                if k == "error" {
                    out.push(format!("{path}: {x}"));
                } else {
                    unexpected_errors(x, &format!("{path}.{k}"), out);
                }
            }
        }
        Value::Array(items) => {
            for (i, x) in items.iter().enumerate() {
                unexpected_errors(x, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// The direct run is the oracle: it must have run cleanly.
fn check_oracle(driver: Driver, direct: &Run) {
    assert!(
        direct.ok && !direct.checks.is_empty(),
        "{driver:?} against MariaDB directly failed:\nstdout:\n{}\nstderr:\n{}",
        direct.stdout,
        tail(&direct.stderr, 60)
    );
    let mut errors = Vec::new();
    for (name, v) in &direct.checks {
        unexpected_errors(v, name, &mut errors);
    }
    assert!(
        errors.is_empty(),
        "{driver:?} against MariaDB directly got errors (the harness, not Sluice, is wrong):\n{}\nstderr:\n{}",
        errors.join("\n"),
        tail(&direct.stderr, 60)
    );
}

fn short(v: Option<&Value>) -> String {
    let s = v.map_or_else(|| "(not printed)".to_string(), Value::to_string);
    if s.len() > 3000 {
        let mut end = 3000;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}… ({} bytes)", &s[..end], s.len())
    } else {
        s
    }
}

/// Compares a run through Sluice with the direct one, check by check.
/// Appends one line per check to `report` and a description of each
/// difference to `diffs`.
fn compare(
    label: &str,
    direct: &Run,
    through: &Run,
    filter: Filter,
    sluice: &Sluice,
    report: &mut String,
    diffs: &mut Vec<String>,
) {
    let mut differ = false;
    for (name, want) in direct.checks.iter().filter(|(n, _)| filter.wants(n)) {
        let got = through.get(name);
        if got == Some(want) {
            report.push_str(&format!("  {label:<12} same  {name}\n"));
        } else {
            differ = true;
            report.push_str(&format!("  {label:<12} DIFF  {name}\n"));
            diffs.push(format!(
                "[{label}] {name}:\n    direct: {}\n    sluice: {}",
                short(Some(want)),
                short(got)
            ));
        }
    }
    if differ || !through.ok {
        diffs.push(format!(
            "[{label}] script exit ok: {}; stderr tail:\n{}\n[{label}] sluice log tail:\n{}",
            through.ok,
            tail(&through.stderr, 20),
            tail(&sluice.log(), 25)
        ));
    }
}

/// Whether this sluice accepts `routing.read_your_writes = "global"`, and
/// its complaint if not (checked once, without starting a proxy).
fn global_ryw_rejected() -> Option<String> {
    static ANSWER: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    ANSWER
        .get_or_init(|| {
            let dir = std::env::temp_dir().join(format!("sluice-drivers-{}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("create temp dir");
            let path = dir.join("global.toml");
            std::fs::write(
                &path,
                "[server]\nlisten = \"127.0.0.1:1\"\n\n[[users]]\nname = \"app\"\npassword = \"app\"\n\n\
                 [routing]\nmode = \"split\"\nread_your_writes = \"global\"\n\n\
                 [[backends]]\nname = \"primary\"\naddress = \"127.0.0.1:2\"\nrole = \"primary\"\n",
            )
            .expect("write config");
            let out = Command::new(sluice_bin())
                .arg("check-config")
                .arg(&path)
                .output()
                .expect("run sluice check-config");
            let _ = std::fs::remove_dir_all(&dir);
            (!out.status.success()).then(|| text(&out.stderr).trim().to_string())
        })
        .clone()
}

fn start(mode: &'static str, routing_extra: &str) -> Sluice {
    Sluice::start_with(SluiceOptions {
        routing_mode: mode,
        routing_extra: routing_extra.into(),
        ..SluiceOptions::default()
    })
}

/// Runs the driver directly, then through Sluice in both modes, and fails
/// with every difference at once.
fn driver_matches_server(driver: Driver) {
    driver.require();
    let topo = Topology::from_env();
    let t0 = Instant::now();
    let direct = run_checks(driver, &topo.primary, Filter::All);
    check_oracle(driver, &direct);

    let mut report = String::new();
    let mut diffs = Vec::new();

    let s = start("primary_only", "");
    let run = run_checks(driver, &format!("127.0.0.1:{}", s.port), Filter::All);
    compare(
        "primary_only",
        &direct,
        &run,
        Filter::All,
        &s,
        &mut report,
        &mut diffs,
    );
    drop(s);

    let s = start("split", "read_your_writes = \"gtid\"");
    let filter = Filter::Skip(CROSS_CONNECTION);
    let run = run_checks(driver, &format!("127.0.0.1:{}", s.port), filter);
    compare("split/gtid", &direct, &run, filter, &s, &mut report, &mut diffs);
    drop(s);

    // Another session's commit, read from a new connection: only a Sluice
    // that orders reads after every write it has seen commit can promise it.
    let label = "split/global";
    match global_ryw_rejected() {
        Some(why) => {
            report.push_str(&format!("  {label:<12} DIFF  {CROSS_CONNECTION}\n"));
            diffs.push(format!(
                "[{label}] {CROSS_CONNECTION}: this sluice rejects the config: {why}"
            ));
        }
        None => {
            let started = catch_unwind(AssertUnwindSafe(|| {
                start("split", "read_your_writes = \"global\"")
            }));
            match started {
                Ok(s) => {
                    let filter = Filter::Only(CROSS_CONNECTION);
                    let run = run_checks(driver, &format!("127.0.0.1:{}", s.port), filter);
                    compare(label, &direct, &run, filter, &s, &mut report, &mut diffs);
                }
                Err(_) => {
                    report.push_str(&format!("  {label:<12} DIFF  {CROSS_CONNECTION}\n"));
                    diffs.push(format!(
                        "[{label}] {CROSS_CONNECTION}: sluice did not start (see above)"
                    ));
                }
            }
        }
    }

    println!(
        "{driver:?}: direct vs Sluice, {} checks, {:.1} s\n{report}",
        direct.checks.len(),
        t0.elapsed().as_secs_f64()
    );
    assert!(
        diffs.is_empty(),
        "{driver:?} through Sluice differs from MariaDB directly:\n{report}\n{}",
        diffs.join("\n\n")
    );
}

#[test]
fn pymysql() {
    driver_matches_server(Driver::PyMySql);
}

#[test]
fn mysql_connector_python_pure() {
    driver_matches_server(Driver::ConnectorPure);
}

#[test]
fn mysql_connector_python_cext() {
    driver_matches_server(Driver::ConnectorCext);
}

#[test]
fn node_mysql2() {
    driver_matches_server(Driver::Mysql2);
}

#[test]
fn mariadb_connector_j() {
    driver_matches_server(Driver::ConnectorJ);
}

#[test]
fn php_pdo() {
    driver_matches_server(Driver::Pdo);
}

#[test]
fn php_mysqli() {
    driver_matches_server(Driver::Mysqli);
}
