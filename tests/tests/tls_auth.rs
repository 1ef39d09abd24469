//! TLS towards clients and the ways a client proves its password, with real
//! clients: the mariadb CLI, PyMySQL, mysql-connector-python (pure and C
//! extension), PHP PDO and MariaDB Connector/J log in over TLS and verify
//! Sluice's certificate against a test CA (`scripts/test-ca.sh`);
//! caching_sha2_password is answered without an auth switch (fast auth,
//! full auth inside TLS, full auth by RSA without it); a `password_hash`
//! user works end to end through split routing; `require_tls` refuses
//! plain text as the server refuses a REQUIRE SSL account; mutual TLS,
//! `min_version`, and a certificate replaced on disk while clients stay
//! connected.
//!
//! The server is the oracle where it has an answer: the hash
//! `sluice hash-password` prints is the one `PASSWORD()` returns, and a
//! refused login carries the server's error code and SQLSTATE.

use mysql_async::prelude::*;
use serde_json::{Value, json};
use sluice_tests::{
    Sluice, SluiceOptions, Topology, direct_opts, metric_sum, repo_path, sluice_bin, wait_until,
};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const CONNECTOR_J_JAR: &str = "/usr/share/java/mariadb-java-client.jar";

/// A fresh test CA and certificates for one test.
fn certificates(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sluice-tls-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let ok = Command::new("bash")
        .arg(repo_path("scripts/test-ca.sh"))
        .arg(&dir)
        .status()
        .expect("run scripts/test-ca.sh");
    assert!(ok.success(), "scripts/test-ca.sh failed");
    dir
}

fn file(dir: &Path, name: &str) -> String {
    dir.join(name).to_string_lossy().into_owned()
}

/// `[server.tls]` with the test CA's server certificate, plus `more` lines.
fn tls_table(dir: &Path, more: &str) -> String {
    format!(
        "\n[server.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n{more}\n",
        file(dir, "server.pem"),
        file(dir, "server.key")
    )
}

fn start_tls(dir: &Path, more_tls: &str, opts: SluiceOptions) -> Sluice {
    let mut opts = opts;
    opts.extra.push_str(&tls_table(dir, more_tls));
    Sluice::start_with(opts)
}

/// Runs `program` with `args`; stdout parsed as the one JSON line scripts print.
fn run_json(mut cmd: Command) -> Value {
    let out = cmd.stderr(Stdio::piped()).output().expect("run the client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| {
            panic!(
                "no JSON from the client; stdout: {stdout}\nstderr: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    serde_json::from_str(line).unwrap_or_else(|e| panic!("bad JSON {line}: {e}"))
}

/// One login with a Python driver (tests/drivers/tls_login.py).
fn python_login(args: Value) -> Value {
    let mut c = Command::new(repo_path("tests/drivers/.venv/bin/python"));
    c.arg(repo_path("tests/drivers/tls_login.py"))
        .arg(args.to_string());
    run_json(c)
}

fn tls_handshakes(s: &Sluice) -> f64 {
    metric_sum(
        &s.metrics(),
        "sluice_client_tls_handshakes_total",
        &["result=\"ok\""],
    )
}

fn assert_logged_in(v: &Value, user: &str) {
    assert_eq!(v["ok"], true, "login failed: {v}");
    assert_eq!(
        v["rows"][0][0].as_str().map(|u| u.split('@').next()),
        Some(Some(user)),
        "{v}"
    );
}

async fn primary() -> mysql_async::Conn {
    mysql_async::Conn::new(direct_opts(&Topology::from_env().primary))
        .await
        .expect("connect to the primary")
}

/// Creates `user` on the primary (replicated to the replicas) with a
/// mysql_native_password password and `extra` (e.g. REQUIRE SSL).
async fn create_user(user: &str, password: &str, extra: &str) {
    let mut admin = primary().await;
    admin
        .query_drop(format!(
            "CREATE OR REPLACE USER '{user}'@'%' IDENTIFIED BY '{password}' {extra}; \
             GRANT ALL ON *.* TO '{user}'@'%'"
        ))
        .await
        .expect("create the test user");
    admin.disconnect().await.ok();
}

#[tokio::test]
async fn mariadb_cli_verifies_sluices_certificate() {
    let dir = certificates("cli");
    let s = start_tls(&dir, "", SluiceOptions::default());
    let cli = |ca: &str| {
        Command::new("mariadb")
            .args(["-h127.0.0.1", &format!("-P{}", s.port), "-uapp", "-papp"])
            .args(["--ssl", &format!("--ssl-ca={ca}"), "--ssl-verify-server-cert"])
            .args(["-e", "status"])
            .output()
            .expect("run the mariadb CLI")
    };
    let out = cli(&file(&dir, "ca.pem"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        text.contains("Cipher in use is"),
        "the CLI reports an encrypted connection: {text}"
    );
    // A CA that did not sign the certificate: the client refuses Sluice.
    let out = cli(&file(&dir, "other-ca.pem"));
    assert!(
        !out.status.success(),
        "verification against the wrong CA must fail"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("2026") || err.contains("TLS") || err.contains("SSL"),
        "{err}"
    );
}

#[tokio::test]
async fn python_drivers_log_in_over_tls_with_each_plugin() {
    let dir = certificates("python");
    let s = start_tls(&dir, "", SluiceOptions::default());
    let ca = file(&dir, "ca.pem");
    for (driver, plugin) in [
        ("pymysql", None),
        ("connector", Some("caching_sha2_password")),
        ("connector", Some("mysql_native_password")),
        ("cext", Some("caching_sha2_password")),
        ("cext", Some("mysql_native_password")),
    ] {
        let before = tls_handshakes(&s);
        let mut args = json!({"driver": driver, "port": s.port, "user": "app", "password": "app", "ca": ca});
        if let Some(p) = plugin {
            args["auth_plugin"] = json!(p);
        }
        let v = python_login(args);
        assert_logged_in(&v, "app");
        assert!(
            v["tls"].as_str().is_some_and(|t| t.starts_with("TLS")),
            "{driver}: {v}"
        );
        assert_eq!(
            tls_handshakes(&s),
            before + 1.0,
            "{driver} {plugin:?}: one more TLS handshake"
        );
    }
    // The wrong password over TLS: the server's refusal.
    let v = python_login(
        json!({"driver": "pymysql", "port": s.port, "user": "app", "password": "nope", "ca": ca}),
    );
    assert_eq!(v["code"], 1045, "{v}");
}

#[tokio::test]
async fn php_pdo_and_connector_j_verify_the_certificate() {
    sluice_tests::require_program("php", &["--version"]);
    sluice_tests::require_program("java", &["-version"]);
    let dir = certificates("php-java");
    let s = start_tls(&dir, "", SluiceOptions::default());
    let ca = file(&dir, "ca.pem");
    let before = tls_handshakes(&s);
    let mut php = Command::new("php");
    php.arg(repo_path("tests/drivers/tls_login.php"))
        .args([&s.port.to_string(), "app", "app", &ca]);
    assert_logged_in(&run_json(php), "app");
    assert_eq!(tls_handshakes(&s), before + 1.0, "PDO used TLS");

    // Debian's Connector/J is 2.7: useSsl with serverSslCert checks the
    // chain and the host name (3.x spells it sslMode=verify-full, which
    // 2.7 ignores; both are given).
    let java = |ca: &str| {
        let mut c = Command::new("java");
        c.args(["-cp", CONNECTOR_J_JAR])
            .arg(repo_path("tests/drivers/TlsLogin.java"))
            .arg(format!(
                "jdbc:mariadb://127.0.0.1:{}/?useSsl=true&sslMode=verify-full&serverSslCert={ca}",
                s.port
            ))
            .args(["app", "app"]);
        run_json(c)
    };
    assert_logged_in(&java(&ca), "app");
    assert_eq!(tls_handshakes(&s), before + 2.0, "Connector/J used TLS");
    let v = java(&file(&dir, "other-ca.pem"));
    assert_eq!(
        v["ok"], false,
        "a CA that did not sign Sluice's certificate is refused: {v}"
    );
}

#[tokio::test]
async fn a_certificate_for_another_name_is_refused_by_verifying_clients() {
    let dir = certificates("wrongname");
    let mut opts = SluiceOptions::default();
    opts.extra.push_str(&format!(
        "\n[server.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        file(&dir, "wrongname.pem"),
        file(&dir, "wrongname.key")
    ));
    let s = Sluice::start_with(opts);
    let ca = file(&dir, "ca.pem");
    let out = Command::new("mariadb")
        .args(["-h127.0.0.1", &format!("-P{}", s.port), "-uapp", "-papp"])
        .args([
            "--ssl",
            &format!("--ssl-ca={ca}"),
            "--ssl-verify-server-cert",
            "-e",
            "SELECT 1",
        ])
        .output()
        .expect("run the mariadb CLI");
    assert!(
        !out.status.success(),
        "the CLI checks the name (127.0.0.1) against the certificate's"
    );
    let v = python_login(
        json!({"driver": "pymysql", "port": s.port, "user": "app", "password": "app", "ca": ca}),
    );
    assert_eq!(v["ok"], false, "PyMySQL checks the name too: {v}");
    let unchecked = python_login(
        json!({"driver": "pymysql", "port": s.port, "user": "app", "password": "app",
        "ca": ca, "verify_identity": false}),
    );
    assert_logged_in(&unchecked, "app");
}

#[tokio::test]
async fn require_tls_refuses_plain_text_as_the_server_does() {
    let dir = certificates("require");
    create_user("tlsonly", "tls-only-pw", "REQUIRE SSL").await;
    // The oracle: the server itself, asked in plain text.
    let direct = mysql_async::OptsBuilder::from_opts(direct_opts(&Topology::from_env().primary))
        .user(Some("tlsonly"))
        .pass(Some("tls-only-pw"))
        .db_name(None::<String>);
    let server_err = match mysql_async::Conn::new(direct).await {
        Err(mysql_async::Error::Server(e)) => e,
        other => panic!("the server must refuse a REQUIRE SSL account in plain text: {other:?}"),
    };
    let s = start_tls(
        &dir,
        "",
        SluiceOptions {
            extra_users: "[[users]]\nname = \"tlsonly\"\npassword = \"tls-only-pw\"\nrequire_tls = true\n"
                .into(),
            ..SluiceOptions::default()
        },
    );
    let plain = mysql_async::OptsBuilder::from_opts(s.opts())
        .user(Some("tlsonly"))
        .pass(Some("tls-only-pw"))
        .db_name(None::<String>);
    match mysql_async::Conn::new(plain).await {
        Err(mysql_async::Error::Server(e)) => {
            assert_eq!(
                (e.code, &e.state),
                (server_err.code, &server_err.state),
                "{e:?} vs {server_err:?}"
            );
            assert!(
                e.message.starts_with("Access denied for user 'tlsonly'"),
                "{}",
                e.message
            );
        }
        other => panic!("a require_tls user in plain text must be refused: {other:?}"),
    }
    assert!(
        metric_sum(
            &s.metrics(),
            "sluice_client_connections_rejected_total",
            &["cause=\"tls_required\""]
        ) >= 1.0,
        "counted by cause"
    );
    // Over TLS the same user gets in (and reaches the backend, which
    // requires SSL of it too, over Sluice's own TLS to the backend).
    let v = python_login(json!({"driver": "pymysql", "port": s.port, "user": "tlsonly",
        "password": "tls-only-pw", "ca": file(&dir, "ca.pem")}));
    assert_logged_in(&v, "tlsonly");
}

#[test]
fn hash_password_prints_what_the_server_prints() {
    let ours = hash_of("correct horse");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let servers: String = rt.block_on(async {
        let mut c = primary().await;
        let h: Option<String> = c
            .query_first("SELECT PASSWORD('correct horse')")
            .await
            .expect("PASSWORD()");
        h.expect("a hash")
    });
    assert_eq!(ours, servers);
}

/// `sluice hash-password` for `password`.
fn hash_of(password: &str) -> String {
    use std::io::Write;
    let mut child = Command::new(sluice_bin())
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run sluice hash-password");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{password}\n").as_bytes())
        .expect("write the password");
    let out = child.wait_with_output().expect("hash-password output");
    assert!(out.status.success(), "sluice hash-password failed");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test]
async fn hashed_password_user_works_end_to_end_through_split_routing() {
    let dir = certificates("hashed");
    create_user("hashuser", "hash-user-pw", "").await;
    let hash = hash_of("hash-user-pw");
    let s = start_tls(
        &dir,
        "",
        SluiceOptions {
            server_extra: "default_auth_plugin = \"caching_sha2_password\"".into(),
            pool_extra: "min_idle = 1".into(),
            routing_extra: "read_your_writes = \"gtid\"".into(),
            extra_users: format!("[[users]]\nname = \"hashuser\"\npassword_hash = \"{hash}\"\n"),
            ..SluiceOptions::default()
        },
    );
    assert!(
        !std::fs::read_to_string(s.config_path())
            .unwrap()
            .contains("hash-user-pw")
    );
    assert!(
        s.log().contains("user 'hashuser' has only a password_hash"),
        "min_idle cannot warm a hash-only user before its first login, and says so"
    );
    // caching_sha2_password without TLS: the first login is a full
    // authentication by RSA (PyMySQL asks for the public key), the next a
    // fast one from Sluice's cache. Each reaches the backend with the
    // SHA1(password) token the login proved, never the clear password.
    let rsa = python_login(
        json!({"driver": "pymysql", "port": s.port, "user": "hashuser", "password": "hash-user-pw"}),
    );
    assert_logged_in(&rsa, "hashuser");
    assert!(rsa["tls"].is_null(), "plain text: {rsa}");
    let fast = python_login(
        json!({"driver": "pymysql", "port": s.port, "user": "hashuser", "password": "hash-user-pw"}),
    );
    assert_logged_in(&fast, "hashuser");
    // Full authentication inside TLS (mysql-connector-python sends the clear
    // password there).
    let tls = python_login(json!({"driver": "connector", "port": s.port, "user": "hashuser",
        "password": "hash-user-pw", "auth_plugin": "caching_sha2_password", "ca": file(&dir, "ca.pem")}));
    assert_logged_in(&tls, "hashuser");
    let wrong =
        python_login(json!({"driver": "pymysql", "port": s.port, "user": "hashuser", "password": "guess"}));
    assert_eq!(wrong["code"], 1045, "{wrong}");

    // mysql_native_password (mysql_async) through split routing: a write on
    // the primary, read back on a replica.
    let opts = mysql_async::OptsBuilder::from_opts(s.opts())
        .user(Some("hashuser"))
        .pass(Some("hash-user-pw"));
    let mut c = mysql_async::Conn::new(opts).await.expect("hashed user logs in");
    c.query_drop("CREATE TABLE IF NOT EXISTS sluice_test.hashed_rw (id INT PRIMARY KEY, v VARCHAR(20))")
        .await
        .unwrap();
    c.query_drop("REPLACE INTO sluice_test.hashed_rw VALUES (1, 'written')")
        .await
        .unwrap();
    let mut admin = primary().await;
    let primary_id: u32 = admin.query_first("SELECT @@server_id").await.unwrap().unwrap();
    // Once the replicas have applied the write, the session's reads may go
    // to them (read_your_writes = "gtid").
    let written: String = admin
        .query_first("SELECT @@gtid_binlog_pos")
        .await
        .unwrap()
        .unwrap();
    wait_until("the replicas have the write", Duration::from_secs(20), || {
        s.monitor_knows(&written)
    })
    .await;
    // A new session of the user reads it from the replicas (its backend
    // connections there are opened with the token too).
    let mut reader = mysql_async::Conn::new(
        mysql_async::OptsBuilder::from_opts(s.opts())
            .user(Some("hashuser"))
            .pass(Some("hash-user-pw")),
    )
    .await
    .expect("hashed user logs in again");
    let mut replica_reads = 0;
    for _ in 0..6 {
        let row: Option<(String, u32)> = reader
            .query_first("SELECT v, @@server_id FROM sluice_test.hashed_rw WHERE id = 1")
            .await
            .unwrap();
        let (v, server) = row.expect("the write is there");
        assert_eq!(v, "written");
        if server != primary_id {
            replica_reads += 1;
        }
    }
    assert!(
        replica_reads > 0,
        "reads went to a replica as this user; metrics:\n{}",
        s.metrics()
            .lines()
            .filter(|l| l.contains("route") || l.contains("pin") || l.contains("fallback"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // The wrong password in native: the server's answer.
    let bad = mysql_async::OptsBuilder::from_opts(s.opts())
        .user(Some("hashuser"))
        .pass(Some("guess"));
    match mysql_async::Conn::new(bad).await {
        Err(mysql_async::Error::Server(e)) => assert_eq!((e.code, e.state.as_str()), (1045, "28000")),
        other => panic!("a wrong password must be refused: {other:?}"),
    }
}

#[tokio::test]
async fn mutual_tls_requires_a_certificate_the_ca_signed() {
    let dir = certificates("mtls");
    let ca = file(&dir, "ca.pem");
    let s = start_tls(
        &dir,
        &format!("client_ca_file = \"{ca}\""),
        SluiceOptions::default(),
    );
    let with_cert = python_login(
        json!({"driver": "pymysql", "port": s.port, "user": "app", "password": "app",
        "ca": ca, "cert": file(&dir, "client.pem"), "key": file(&dir, "client.key")}),
    );
    assert_logged_in(&with_cert, "app");
    let without = python_login(
        json!({"driver": "pymysql", "port": s.port, "user": "app", "password": "app", "ca": ca}),
    );
    assert_eq!(without["ok"], false, "no client certificate: refused: {without}");
    assert!(
        metric_sum(
            &s.metrics(),
            "sluice_client_tls_handshakes_total",
            &["result=\"error\""]
        ) >= 1.0,
        "the failed handshake is counted"
    );
}

#[tokio::test]
async fn min_version_refuses_older_tls() {
    let dir = certificates("minver");
    let s = start_tls(&dir, "min_version = \"1.3\"", SluiceOptions::default());
    let ca = file(&dir, "ca.pem");
    let v13 = python_login(
        json!({"driver": "pymysql", "port": s.port, "user": "app", "password": "app", "ca": ca}),
    );
    assert_logged_in(&v13, "app");
    assert_eq!(v13["tls"], "TLSv1.3");
    let v12 = python_login(
        json!({"driver": "pymysql", "port": s.port, "user": "app", "password": "app", "ca": ca, "max_tls": "1.2"}),
    );
    assert_eq!(v12["ok"], false, "TLS 1.2 refused with min_version 1.3: {v12}");
}

/// The serial number of the certificate Sluice shows a new client.
fn served_serial(s: &Sluice, ca: &str) -> Option<String> {
    let script = format!(
        "import socket, ssl, struct, sys\n\
         s = socket.create_connection(('127.0.0.1', {port}))\n\
         hdr = s.recv(4); n = hdr[0] | hdr[1] << 8 | hdr[2] << 16\n\
         body = b''\n\
         while len(body) < n: body += s.recv(n - len(body))\n\
         caps = 0x200 | 0x800 | 0x8000 | 0x80000\n\
         s.sendall(struct.pack('<I', 32)[:3] + b'\\x01' + struct.pack('<IIB', caps, 1 << 24, 45) + b'\\0' * 23)\n\
         ctx = ssl.create_default_context(cafile='{ca}')\n\
         t = ctx.wrap_socket(s, server_hostname='127.0.0.1')\n\
         print(t.getpeercert()['serialNumber'])\n",
        port = s.port
    );
    let out = Command::new(repo_path("tests/drivers/.venv/bin/python"))
        .args(["-c", &script])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[tokio::test]
async fn a_certificate_replaced_on_disk_is_served_to_new_clients_only() {
    let dir = certificates("swap");
    let ca = file(&dir, "ca.pem");
    let s = start_tls(&dir, "", SluiceOptions::default());
    let first = served_serial(&s, &ca).expect("a TLS handshake with the first certificate");
    // A session opened before the swap, over TLS.
    let ssl = mysql_async::SslOpts::default().with_root_certs(vec![PathBuf::from(&ca).into()]);
    let mut open = mysql_async::Conn::new(mysql_async::OptsBuilder::from_opts(s.opts()).ssl_opts(Some(ssl)))
        .await
        .expect("a TLS session before the swap");
    // A new certificate from the same CA, renamed into place as certificate
    // renewal tools do.
    let ok = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source {} && test_ca_cert {} renewed IP:127.0.0.1,DNS:localhost",
            repo_path("scripts/test-ca.sh").display(),
            dir.display()
        ))
        .status()
        .unwrap();
    assert!(ok.success());
    std::fs::rename(dir.join("renewed.key"), dir.join("server.key")).unwrap();
    std::fs::rename(dir.join("renewed.pem"), dir.join("server.pem")).unwrap();
    wait_until(
        "new clients see the new certificate",
        Duration::from_secs(20),
        || served_serial(&s, &ca).is_some_and(|serial| serial != first),
    )
    .await;
    let one: Option<u8> = open
        .query_first("SELECT 1")
        .await
        .expect("the open session is untouched");
    assert_eq!(one, Some(1));
    // Now a key that does not match: the reload is refused and the last good
    // certificate is still served.
    let serving = served_serial(&s, &ca).expect("handshake");
    std::fs::copy(dir.join("client.key"), dir.join("mismatch.key")).unwrap();
    std::fs::rename(dir.join("mismatch.key"), dir.join("server.key")).unwrap();
    wait_until("the bad key is refused", Duration::from_secs(20), || {
        metric_sum(&s.metrics(), "sluice_config_reloads_total", &["result=\"error\""]) >= 1.0
    })
    .await;
    assert_eq!(
        served_serial(&s, &ca),
        Some(serving),
        "the last good certificate stays"
    );
    assert!(s.log().contains("server.tls"), "the log names what is wrong");
}

#[test]
fn check_config_names_a_bad_certificate() {
    let dir = certificates("check");
    let example = std::fs::read_to_string(repo_path("examples/sluice.toml")).unwrap();
    let cases = [
        (
            // A certificate where the key belongs.
            tls_table_with(&dir, "server.pem", "server.pem"),
            "server.tls.key_file",
        ),
        (
            tls_table_with(&dir, "missing.pem", "server.key"),
            "server.tls.cert_file",
        ),
        (
            format!(
                "{}min_version = \"1.1\"\n",
                tls_table_with(&dir, "server.pem", "server.key")
            ),
            "server.tls.min_version",
        ),
    ];
    for (i, (table, key)) in cases.iter().enumerate() {
        let path = dir.join(format!("bad{i}.toml"));
        std::fs::write(&path, format!("{example}\n{table}")).unwrap();
        let out = Command::new(sluice_bin())
            .arg("check-config")
            .arg(&path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "case {i} must fail");
        assert!(err.contains(key), "case {i}: `{key}` named in: {err}");
    }
    let good = dir.join("good.toml");
    std::fs::write(
        &good,
        format!("{example}\n{}", tls_table_with(&dir, "server.pem", "server.key")),
    )
    .unwrap();
    let out = Command::new(sluice_bin())
        .arg("check-config")
        .arg(&good)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

fn tls_table_with(dir: &Path, cert: &str, key: &str) -> String {
    format!(
        "[server.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        file(dir, cert),
        file(dir, key)
    )
}
