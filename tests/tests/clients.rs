//! Real clients through Sluice: the mariadb command-line client, PHP (PDO
//! with native prepared statements, and mysqli) and sysbench's
//! oltp_read_write, over both the binary and the text protocol.
//!
//! The clients are system packages (scripts/install-deps.sh installs them);
//! a missing one fails the test rather than skipping it. Tables used here:
//! cli_*, pdo_t, pdo_p and sysbench's sbtest1..2 (all in sluice_test).

use sluice_tests::{Sluice, Topology, repo_path};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn require(program: &str) {
    sluice_tests::require_program(program, &["--version"]);
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs a command, and returns its stdout after checking that it succeeded.
fn run_ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// A private temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("sluice-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    fn write(&self, file: &str, contents: &str) -> PathBuf {
        let path = self.0.join(file);
        std::fs::write(&path, contents).expect("write temp file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ------------------------------------------------------------ mariadb CLI

/// The mariadb client against a port over TCP (never the unix socket), in
/// batch mode (tab-separated, with column names), ignoring option files.
fn mariadb(port: u16) -> Command {
    let mut cmd = Command::new("mariadb");
    cmd.arg("--no-defaults")
        .arg("-h127.0.0.1")
        .arg(format!("-P{port}"))
        .args(["--protocol=TCP", "-uapp", "-papp", "--batch"]);
    cmd
}

fn sql_path(path: &Path) -> String {
    let s = path.to_str().expect("utf-8 temp path");
    assert!(!s.contains(['\'', '\\']), "temp path needs no quoting: {s}");
    s.to_string()
}

#[test]
fn mariadb_cli() {
    require("mariadb");
    // Each `mariadb` run is a new connection: a later run must see an
    // earlier run's writes, which in split mode takes `global`.
    let s = Sluice::start_with(sluice_tests::SluiceOptions {
        routing_extra: "read_your_writes = \"global\"".into(),
        ..sluice_tests::SluiceOptions::default()
    });
    let cli = |args: &[&str]| run_ok(mariadb(s.port).args(args).arg("sluice_test"));
    let tmp = TempDir::new("cli");

    // A multi-statement batch: both result sets, in order.
    assert_eq!(cli(&["-e", "SELECT 1; SELECT 2"]), "1\n1\n2\n2\n");
    assert_eq!(
        cli(&["-N", "-e", "SELECT 'a' AS x; SELECT 'b', 'c'; SELECT 3 AS y"]),
        "a\nb\tc\n3\n"
    );

    let dbs = cli(&["-e", "SHOW DATABASES"]);
    let dbs: Vec<&str> = dbs.lines().collect();
    assert_eq!(dbs[0], "Database");
    assert!(dbs.contains(&"sluice_test"), "{dbs:?}");
    assert!(dbs.contains(&"information_schema"), "{dbs:?}");

    // Create and insert in one session; read back from another.
    cli(&[
        "-e",
        "DROP TABLE IF EXISTS cli_t; \
         CREATE TABLE cli_t (id INT PRIMARY KEY, name VARCHAR(40)); \
         INSERT INTO cli_t VALUES (1, 'one'), (2, 'two'), (3, 'it''s three')",
    ]);
    assert_eq!(
        cli(&["-e", "SELECT id, name FROM cli_t ORDER BY id"]),
        "id\tname\n1\tone\n2\ttwo\n3\tit's three\n"
    );

    // SOURCE: a script with DELIMITER, CREATE PROCEDURE and a CALL that
    // returns two result sets, then one more statement.
    let script = tmp.write(
        "source.sql",
        "DROP TABLE IF EXISTS cli_src_t;\n\
         CREATE TABLE cli_src_t (id INT PRIMARY KEY, v VARCHAR(20));\n\
         INSERT INTO cli_src_t VALUES (1, 'one'), (2, 'two'), (3, 'three');\n\
         DROP PROCEDURE IF EXISTS cli_src_p;\n\
         DELIMITER //\n\
         CREATE PROCEDURE cli_src_p()\n\
         BEGIN\n\
         \x20 SELECT COUNT(*) AS cnt FROM cli_src_t;\n\
         \x20 SELECT v FROM cli_src_t ORDER BY id;\n\
         END //\n\
         DELIMITER ;\n\
         CALL cli_src_p();\n\
         SELECT 'after call' AS marker;\n",
    );
    assert_eq!(
        cli(&["-e", &format!("SOURCE {}", sql_path(&script))]),
        "cnt\n3\nv\none\ntwo\nthree\nmarker\nafter call\n"
    );

    // LOAD DATA LOCAL INFILE of a CSV with quoted fields.
    let csv: String = (1..=1000)
        .map(|i| format!("{i},name {i},\"quoted, {i}\"\n"))
        .collect();
    let csv = tmp.write("data.csv", &csv);
    let load = format!(
        "DROP TABLE IF EXISTS cli_load_t; \
         CREATE TABLE cli_load_t (id INT PRIMARY KEY, name VARCHAR(50), note VARCHAR(50)); \
         LOAD DATA LOCAL INFILE '{}' INTO TABLE cli_load_t \
         FIELDS TERMINATED BY ',' OPTIONALLY ENCLOSED BY '\"' LINES TERMINATED BY '\\n'; \
         SELECT COUNT(*), SUM(id), MAX(note) FROM cli_load_t",
        sql_path(&csv)
    );
    assert_eq!(
        cli(&["--local-infile=1", "-N", "-e", &load]),
        "1000\t500500\tquoted, 999\n"
    );
    // A new connection may read a replica that has not applied the load
    // yet (read-your-writes is per session): ask the primary.
    assert_eq!(
        cli(&[
            "-c",
            "-N",
            "-e",
            "SELECT /* sluice:primary */ COUNT(*) FROM cli_load_t"
        ]),
        "1000\n"
    );
    // A client that did not enable LOCAL INFILE is refused, and nothing is loaded.
    let refused = run(mariadb(s.port).args([
        "--local-infile=0",
        "sluice_test",
        "-e",
        &format!(
            "LOAD DATA LOCAL INFILE '{}' INTO TABLE cli_load_t",
            sql_path(&csv)
        ),
    ]));
    assert!(
        !refused.status.success(),
        "LOAD DATA LOCAL without local-infile succeeded"
    );
    let err = text(&refused.stderr);
    assert!(err.contains("not allowed"), "{err}");

    // status / \s report the primary's real server version.
    let topo = Topology::from_env();
    let version = run_ok(mariadb(topo.primary_port()).args(["-N", "-e", "SELECT VERSION()"]));
    let version = version.trim();
    assert!(version.contains("MariaDB"), "{version}");
    for command in ["status", "\\s"] {
        let status = cli(&["-e", command]);
        let line = |label: &str| {
            status
                .lines()
                .find(|l| l.starts_with(label))
                .unwrap_or_else(|| panic!("no {label:?} in `{command}` output:\n{status}"))
                .to_string()
        };
        assert!(line("Server version:").contains(version), "{status}");
        assert!(line("Server:").contains("MariaDB"), "{status}");
        assert!(line("Current database:").ends_with("sluice_test"), "{status}");
        assert!(line("Connection:").contains("TCP/IP"), "{status}");
        assert!(line("TCP port:").ends_with(&s.port.to_string()), "{status}");
    }

    cli(&[
        "-e",
        "DROP TABLE cli_t, cli_src_t, cli_load_t; DROP PROCEDURE cli_src_p",
    ]);
}

// ------------------------------------------------------------ PHP

#[test]
fn php_pdo_and_mysqli() {
    require("php");
    let has_drivers = run(Command::new("php").args([
        "-r",
        "exit(extension_loaded('pdo_mysql') && extension_loaded('mysqli') ? 0 : 1);",
    ]));
    assert!(
        has_drivers.status.success(),
        "PHP lacks pdo_mysql or mysqli: run scripts/install-deps.sh"
    );
    let s = Sluice::start();
    let script = repo_path("tests/php/pdo_test.php");
    let out = run(Command::new("php").arg(&script).args([
        "127.0.0.1",
        &s.port.to_string(),
        "app",
        "app",
        "sluice_test",
    ]));
    let stdout = text(&out.stdout);
    println!("{stdout}");
    eprintln!("{}", text(&out.stderr));
    assert!(
        out.status.success(),
        "{} failed ({}):\n{stdout}\n{}\nsluice log tail:\n{}",
        script.display(),
        out.status,
        text(&out.stderr),
        tail(&s.log(), 40)
    );
    assert!(!stdout.contains("FAIL"), "{stdout}");
    assert!(stdout.contains("all PHP checks passed"), "{stdout}");
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

// ------------------------------------------------------------ sysbench

fn sysbench(s: &Sluice, command: &str, extra: &[&str]) -> Output {
    let mut cmd = Command::new("sysbench");
    cmd.arg("oltp_read_write")
        .args([
            "--db-driver=mysql",
            "--mysql-host=127.0.0.1",
            &format!("--mysql-port={}", s.port),
            "--mysql-user=app",
            "--mysql-password=app",
            "--mysql-db=sluice_test",
            "--tables=2",
            "--table-size=2000",
        ])
        .args(extra)
        .arg(command);
    run(&mut cmd)
}

/// The first number after `label` on the report line that starts with it,
/// e.g. `transactions:  3293 (328.73 per sec.)` gives 3293.
fn report_number(report: &str, label: &str) -> f64 {
    report
        .lines()
        .map(str::trim_start)
        .find_map(|l| l.strip_prefix(label))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {label:?} in sysbench's report:\n{report}"))
}

fn report_line<'a>(report: &'a str, label: &str) -> &'a str {
    report
        .lines()
        .find(|l| l.trim_start().starts_with(label))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {label:?} in sysbench's report:\n{report}"))
}

/// Runs oltp_read_write and checks its final report.
fn sysbench_run(s: &Sluice, seconds: u32, extra: &[&str]) {
    let time = format!("--time={seconds}");
    let mut args = vec![
        "--threads=8",
        time.as_str(),
        "--report-interval=0",
        // Debug verbosity prints each ignored error ("Ignoring error 1213 ...").
        "--verbosity=5",
    ];
    args.extend_from_slice(extra);
    let out = sysbench(s, "run", &args);
    let report = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        out.status.success() && !report.contains("FATAL"),
        "sysbench run {extra:?} failed ({}):\n{report}\nsluice log tail:\n{}",
        out.status,
        tail(&s.log(), 40)
    );
    println!("sysbench oltp_read_write, 8 threads, {seconds} s {extra:?}:");
    for label in ["transactions:", "queries:", "ignored errors:", "reconnects:"] {
        println!("    {}", report_line(&report, label));
    }

    assert!(report_number(&report, "total:") > 0.0, "no queries:\n{report}");
    assert!(report_number(&report, "transactions:") > 0.0, "{report}");
    assert_eq!(report_number(&report, "reconnects:"), 0.0, "{report}");
    // sysbench 1.0 aborts on any error but a deadlock or lock wait timeout,
    // which it counts as "ignored errors" and retries. InnoDB produces a few
    // deadlocks under this load against the primary directly too, so these
    // must be deadlocks only, and rare.
    let errors = report_number(&report, "ignored errors:");
    let transactions = report_number(&report, "transactions:");
    for line in report.lines().filter(|l| l.contains("Ignoring error")) {
        assert!(line.contains("Ignoring error 1213 "), "not a deadlock: {line}");
    }
    assert!(
        errors <= transactions / 50.0,
        "{errors} errors in {transactions} transactions:\n{report}"
    );
}

#[test]
fn sysbench_oltp_read_write() {
    require("sysbench");
    let s = Sluice::start();
    // Leftovers of an interrupted run would make prepare fail.
    let cleanup = |when: &str| {
        let out = sysbench(&s, "cleanup", &[]);
        assert!(
            out.status.success(),
            "sysbench cleanup ({when}) failed:\n{}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
    };
    cleanup("before");
    let out = sysbench(&s, "prepare", &[]);
    assert!(
        out.status.success(),
        "sysbench prepare failed ({}):\n{}{}\nsluice log tail:\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr),
        tail(&s.log(), 40)
    );

    // Binary protocol (sysbench prepares its statements by default)...
    sysbench_run(&s, 10, &[]);
    // ...and the text protocol.
    sysbench_run(&s, 5, &["--db-ps-mode=disable"]);

    cleanup("after");
}
