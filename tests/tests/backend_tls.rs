//! TLS from Sluice to its backends, with the servers as the oracle: for each
//! `tls` mode, a statement run through Sluice reads its own session's
//! `Ssl_version` on the backend (empty = plain), and the primary's
//! `performance_schema.threads` shows whether the monitor's and the guard's
//! connections (found by the monitor account each test has to itself) came
//! over TLS. The refusals use servers of their own (a certificate with the
//! wrong name, no TLS at all), so the shared topology is never restarted:
//! a wrong name under `verify_identity`, another CA under `verify_ca`, and
//! `required` against a plain server each fail with an error that names the
//! backend and the reason, seen by the client and in `/status`.

use mysql_async::prelude::*;
use mysql_async::{Conn, Opts};
use sluice_tests::{Sluice, SluiceOptions, Topology, direct_opts, free_port};
use std::future::Future;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The topology's test CA and certificates (scripts/test-ca.sh).
fn tls_dir() -> PathBuf {
    let root = std::env::var("SLUICE_TEST_TOPOLOGY_DIR")
        .expect("SLUICE_TEST_TOPOLOGY_DIR is not set: run the tests through scripts/test.sh");
    PathBuf::from(root).join("tls")
}

fn tls_file(name: &str) -> String {
    tls_dir().join(name).display().to_string()
}

/// `[[backends]]` lines for `mode`, with the test CA where the mode uses one.
fn backend_tls(mode: &str, ca: &str) -> String {
    if mode == "verify_ca" || mode == "verify_identity" {
        format!("tls = \"{mode}\"\ntls_ca_file = \"{}\"", tls_file(ca))
    } else {
        format!("tls = \"{mode}\"")
    }
}

/// Polls an async condition every 50 ms until it holds.
async fn eventually<F, Fut>(what: &str, limit: Duration, mut ok: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !ok().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The TLS version of the backend session a statement through Sluice runs
/// on ("" = plain TCP).
async fn ssl_version_through(s: &Sluice, hint: &str) -> String {
    let mut c = Conn::new(s.opts()).await.expect("connect to sluice");
    let row: Option<(String, String)> = c
        .query_first(format!("{hint}SHOW SESSION STATUS LIKE 'Ssl_version'"))
        .await
        .expect("SHOW STATUS through sluice");
    c.disconnect().await.ok();
    row.map(|(_, v)| v).unwrap_or_default()
}

/// (user, command, connection type) of every connection of the monitor
/// account `user` (monitor, heartbeat, guard) that the primary has now.
async fn sluice_threads(user: &str) -> Vec<(String, String, String)> {
    let mut c = Conn::new(direct_opts(&Topology::from_env().primary))
        .await
        .expect("connect to the primary");
    let rows = c
        .exec(
            "SELECT t.PROCESSLIST_USER, t.PROCESSLIST_COMMAND, t.CONNECTION_TYPE \
             FROM performance_schema.threads t WHERE t.PROCESSLIST_USER = ?",
            (user,),
        )
        .await
        .expect("read performance_schema");
    c.disconnect().await.ok();
    rows
}

/// Starts Sluice with every backend in `mode` and a guarded table, and
/// checks what the servers saw: pooled connections on the primary and on a
/// replica, the monitor's and the guard's binlog connection on the primary.
async fn check_mode(mode: &str, server_id: u32, want_tls: bool) {
    let table = format!("tls_{mode}");
    // A monitor account of this test's own: its connections are this
    // Sluice's monitor and guard, whatever other tests run meanwhile.
    let monitor = format!("mon_{mode}");
    let primary = Topology::from_env().primary;
    let mut admin = Conn::new(direct_opts(&primary)).await.expect("primary");
    admin
        .query_drop(format!(
            "CREATE TABLE IF NOT EXISTS sluice_test.{table} (id INT PRIMARY KEY); \
             CREATE USER IF NOT EXISTS '{monitor}'@'%' IDENTIFIED BY 'monitor'; \
             GRANT SLAVE MONITOR, BINLOG MONITOR, REPLICATION SLAVE, SELECT ON *.* TO '{monitor}'@'%'; \
             GRANT CREATE, INSERT, UPDATE ON sluice.* TO '{monitor}'@'%'"
        ))
        .await
        .expect("create the guarded table and the monitor account");
    admin.disconnect().await.ok();
    let s = Sluice::start_with(SluiceOptions {
        monitor_user: monitor.clone(),
        backend_extra: backend_tls(mode, "ca.pem"),
        extra: format!(
            "\n[guard]\nserver_id = {server_id}\nrebuild_interval_ms = 0\n\n[[guard.tables]]\ntable = \"sluice_test.{table}\"\nkey = \"id\"\n"
        ),
        ..SluiceOptions::default()
    });

    for hint in ["/* sluice:primary */ ", ""] {
        let version = ssl_version_through(&s, hint).await;
        assert_eq!(
            !version.is_empty(),
            want_tls,
            "tls = \"{mode}\": the backend session ({hint:?}) has Ssl_version {version:?}"
        );
    }

    // The monitor (user sluice_monitor) and the guard's binlog stream
    // (command "Binlog Dump") are both on the primary.
    eventually(
        "the monitor's and the guard's connections are on the primary",
        Duration::from_secs(30),
        || async {
            let threads = sluice_threads(&monitor).await;
            threads.iter().any(|(_, cmd, _)| cmd == "Binlog Dump")
                && threads.iter().any(|(_, cmd, _)| cmd != "Binlog Dump")
        },
    )
    .await;
    let threads = sluice_threads(&monitor).await;
    let want = if want_tls { "SSL/TLS" } else { "TCP/IP" };
    for (user, cmd, kind) in &threads {
        assert_eq!(
            kind, want,
            "tls = \"{mode}\": {user} ({cmd}) came over {kind}; all: {threads:?}"
        );
    }
    // The monitor reaches every backend (the replicas too) in this mode.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = s.status();
        let clean = status["backends"].as_array().is_some_and(|b| {
            b.len() == 3
                && b.iter()
                    .all(|b| b["monitor_error"].is_null() && b["read_only"].is_boolean())
        });
        if clean {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "tls = \"{mode}\": a backend still has a monitor error: {}",
            status["backends"]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn disabled_is_plain_everywhere() {
    check_mode("disabled", 5301, false).await;
}

#[tokio::test]
async fn preferred_uses_tls_the_server_offers() {
    check_mode("preferred", 5302, true).await;
}

#[tokio::test]
async fn required_uses_tls() {
    check_mode("required", 5303, true).await;
}

#[tokio::test]
async fn verify_ca_uses_tls() {
    check_mode("verify_ca", 5304, true).await;
}

#[tokio::test]
async fn verify_identity_uses_tls() {
    check_mode("verify_identity", 5305, true).await;
}

/// A mariadbd of a test's own (not the shared topology), with or without
/// TLS, with the topology's accounts `app` and `sluice_monitor`; stopped
/// and removed on drop.
struct OwnServer {
    dir: PathBuf,
    address: String,
}

impl OwnServer {
    fn start(name: &str, cert: Option<(&str, &str)>) -> OwnServer {
        let dir = std::env::temp_dir().join(format!("sluice-btls-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("tmp")).expect("server dir");
        let port = free_port();
        let mut cnf = format!(
            "[mysqld]\ndatadir={d}/data\ntmpdir={d}/tmp\nsocket={d}/mysql.sock\npid-file={d}/mariadbd.pid\n\
             log-error={d}/error.log\nport={port}\nbind-address=127.0.0.1\nskip-name-resolve\n\
             skip-log-bin\nperformance_schema=OFF\ninnodb_buffer_pool_size=16M\ninnodb_log_file_size=8M\n",
            d = dir.display()
        );
        if let Some((cert, key)) = cert {
            cnf.push_str(&format!(
                "ssl_ca={}\nssl_cert={}\nssl_key={}\n",
                tls_file("ca.pem"),
                tls_file(cert),
                tls_file(key)
            ));
        }
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            cnf.push_str("user=root\n");
        }
        cnf.push_str(&format!(
            "[client]\nsocket={}/mysql.sock\nuser=root\n",
            dir.display()
        ));
        let my_cnf = dir.join("my.cnf");
        std::fs::write(&my_cnf, cnf).expect("write my.cnf");
        let defaults = format!("--defaults-file={}", my_cnf.display());
        let out = Command::new("mariadb-install-db")
            .args([
                defaults.as_str(),
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ])
            .output()
            .expect("run mariadb-install-db");
        assert!(
            out.status.success(),
            "mariadb-install-db: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let status = Command::new("sh")
            .arg("-c")
            .arg(format!("mariadbd '{defaults}' </dev/null >/dev/null 2>&1 &"))
            .stdin(Stdio::null())
            .status()
            .expect("start mariadbd");
        assert!(status.success());
        let server = OwnServer {
            dir,
            address: format!("127.0.0.1:{port}"),
        };
        let setup = "CREATE USER 'app'@'%' IDENTIFIED BY 'app'; GRANT ALL ON *.* TO 'app'@'%'; \
                     CREATE USER 'sluice_monitor'@'%' IDENTIFIED BY 'monitor'; \
                     GRANT SLAVE MONITOR, BINLOG MONITOR, SELECT ON *.* TO 'sluice_monitor'@'%'; \
                     CREATE DATABASE sluice_test";
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ran = Command::new("mariadb")
                .args([defaults.as_str(), "-e", setup])
                .output()
                .is_ok_and(|o| o.status.success());
            if ran {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{name} did not start: {}",
                std::fs::read_to_string(server.dir.join("error.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    /// Sluice with this server as its only backend (the primary).
    fn sluice(&self, tls: String) -> Sluice {
        Sluice::start_with(SluiceOptions {
            primary: self.address.clone(),
            replicas: Vec::new(),
            routing_mode: "primary_only",
            backend_extra: tls,
            ..SluiceOptions::default()
        })
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        let pid = std::fs::read_to_string(self.dir.join("mariadbd.pid"))
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok());
        if let Some(pid) = pid {
            // SAFETY: kill(2) with the pid our own server wrote.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let deadline = Instant::now() + Duration::from_secs(10);
            // SAFETY: kill(pid, 0) only probes for existence.
            while unsafe { libc::kill(pid, 0) } == 0 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The error a client gets for its first statement through `s` (the
/// driver's own first statement, run while it connects, may be the one).
async fn client_error(s: &Sluice) -> String {
    let mut c = match Conn::new(s.opts()).await {
        Ok(c) => c,
        Err(e) => return e.to_string(),
    };
    let err = c
        .query_drop("SELECT 1")
        .await
        .expect_err("the backend connection must fail");
    c.disconnect().await.ok();
    err.to_string()
}

/// The primary's `monitor_error` in `/status`, once the monitor has one
/// containing `needle`.
async fn monitor_error(s: &Sluice, needle: &str) -> String {
    let error = || {
        s.status()["backends"][0]["monitor_error"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    eventually(
        &format!("/status shows a monitor error with {needle:?}"),
        Duration::from_secs(20),
        || async { error().contains(needle) },
    )
    .await;
    assert_eq!(s.status()["backends"][0]["name"], "primary");
    error()
}

fn assert_names_backend(err: &str, server: &OwnServer) {
    assert!(
        err.contains(&format!("backend 'primary' ({})", server.address)),
        "the error names the backend: {err}"
    );
}

#[tokio::test]
async fn verify_identity_refuses_a_certificate_for_another_name() {
    let server = OwnServer::start("wrongname", Some(("wrongname.pem", "wrongname.key")));
    let s = server.sluice(backend_tls("verify_identity", "ca.pem"));
    let err = client_error(&s).await;
    assert_names_backend(&err, &server);
    assert!(
        err.contains("TLS handshake failed")
            && err.contains("certificate not valid for name \"127.0.0.1\"")
            && err.contains("wrong.example"),
        "the reason: {err}"
    );
    let status = monitor_error(&s, "not valid for name").await;
    assert!(status.contains("TLS handshake failed"), "{status}");
    drop(s);

    // The same certificate passes verify_ca: its chain is good, its name is
    // not checked (also on the monitor's connection).
    let s = server.sluice(backend_tls("verify_ca", "ca.pem"));
    let version = ssl_version_through(&s, "").await;
    assert!(!version.is_empty(), "verify_ca connects over TLS");
    eventually(
        "the monitor reaches the server",
        Duration::from_secs(20),
        || async {
            let b = &s.status()["backends"][0];
            b["monitor_error"].is_null() && b["read_only"].is_boolean()
        },
    )
    .await;
}

#[tokio::test]
async fn verify_ca_refuses_a_certificate_of_another_ca() {
    let topo = Topology::from_env();
    let s = Sluice::start_with(SluiceOptions {
        replicas: Vec::new(),
        routing_mode: "primary_only",
        backend_extra: backend_tls("verify_ca", "other-ca.pem"),
        ..SluiceOptions::default()
    });
    let err = client_error(&s).await;
    assert!(
        err.contains(&format!("backend 'primary' ({})", topo.primary)),
        "the error names the backend: {err}"
    );
    assert!(
        err.contains("TLS handshake failed") && err.contains("UnknownIssuer"),
        "the reason: {err}"
    );
    let status = monitor_error(&s, "UnknownIssuer").await;
    assert!(status.contains("TLS handshake failed"), "{status}");
}

#[tokio::test]
async fn required_refuses_a_server_without_tls_and_preferred_goes_plain() {
    let server = OwnServer::start("plain", None);
    let s = server.sluice(backend_tls("required", ""));
    let err = client_error(&s).await;
    assert_names_backend(&err, &server);
    assert!(
        err.contains("TLS is required (tls = \"required\") but the server does not offer it"),
        "the reason: {err}"
    );
    monitor_error(
        &s,
        "TLS is required (tls = \"required\") but the server does not offer it",
    )
    .await;
    drop(s);

    // The default mode works with it, in plain text.
    let s = server.sluice(String::new());
    assert_eq!(
        ssl_version_through(&s, "").await,
        "",
        "preferred without TLS is plain"
    );
    eventually(
        "the monitor reaches the server",
        Duration::from_secs(20),
        || async {
            let b = &s.status()["backends"][0];
            b["monitor_error"].is_null() && b["read_only"].is_boolean()
        },
    )
    .await;
}

/// A client certificate reaches the server: an account that REQUIRE X509
/// logs in only when the backend has `tls_cert_file` / `tls_key_file`.
#[tokio::test]
async fn client_certificate_is_presented() {
    let primary = Topology::from_env().primary;
    let mut admin = Conn::new(direct_opts(&primary)).await.expect("primary");
    admin
        .query_drop(
            "CREATE USER IF NOT EXISTS 'x509app'@'%' IDENTIFIED BY 'x509pw' REQUIRE X509; \
             GRANT ALL ON sluice_test.* TO 'x509app'@'%'",
        )
        .await
        .expect("create the X509 user");
    admin.disconnect().await.ok();
    let user = "\n[[users]]\nname = \"x509app\"\npassword = \"x509pw\"\n".to_string();
    let opts = |s: &Sluice| -> Opts {
        mysql_async::OptsBuilder::from_opts(
            Opts::from_url(&s.url("x509app", "x509pw", "sluice_test")).expect("url"),
        )
        .prefer_socket(false)
        .into()
    };
    let query = |o: Opts| async move {
        let mut c = Conn::new(o).await.map_err(|e| e.to_string())?;
        let r: Result<Option<String>, _> = c.query_first("SELECT CURRENT_USER()").await;
        c.disconnect().await.ok();
        r.map_err(|e| e.to_string())
    };
    let with_cert = format!(
        "{}\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"",
        backend_tls("verify_identity", "ca.pem"),
        tls_file("client.pem"),
        tls_file("client.key")
    );
    let s = Sluice::start_with(SluiceOptions {
        replicas: Vec::new(),
        routing_mode: "primary_only",
        extra_users: user.clone(),
        backend_extra: with_cert,
        ..SluiceOptions::default()
    });
    let who = query(opts(&s))
        .await
        .expect("the X509 account logs in with the certificate");
    assert_eq!(who.as_deref(), Some("x509app@%"));
    drop(s);

    let s = Sluice::start_with(SluiceOptions {
        replicas: Vec::new(),
        routing_mode: "primary_only",
        extra_users: user,
        backend_extra: backend_tls("verify_identity", "ca.pem"),
        ..SluiceOptions::default()
    });
    let err = query(opts(&s)).await.expect_err("no certificate, no login");
    assert!(err.contains("Access denied"), "{err}");
}
