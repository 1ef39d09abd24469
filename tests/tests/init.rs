//! `sluice init`: a starting config discovered from the running primary
//! passes `check-config`, and Sluice started with it serves queries.

use mysql_async::prelude::Queryable;
use sluice_tests::{Sluice, Topology, free_port, sluice_bin};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const PLACEHOLDER: &str = "CHANGE-ME";

/// `sluice init ARGS` with `stdin` as its standard input.
fn init(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(sluice_bin())
        .arg("init")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run sluice init");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write the password");
    child.wait_with_output().expect("sluice init exits")
}

fn check_config(path: &Path) -> Output {
    Command::new(sluice_bin())
        .arg("check-config")
        .arg(path)
        .output()
        .expect("run sluice check-config")
}

fn test_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sluice-init-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create test dir");
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_finds_the_replicas_and_its_config_serves_queries() {
    let topo = Topology::from_env();
    let dir = test_dir("hosts");
    let (port, admin_port) = (free_port(), free_port());
    let path = dir.join("written.toml");
    let (listen, admin) = (format!("127.0.0.1:{port}"), format!("127.0.0.1:{admin_port}"));
    let args = [
        "--primary",
        &topo.primary,
        "--user",
        "app",
        "--output",
        path.to_str().unwrap(),
        "--listen",
        &listen,
        "--admin-listen",
        &admin,
    ];
    let out = init(&args, "app\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let text = std::fs::read_to_string(&path).expect("the config is written");
    for replica in [&topo.replica1, &topo.replica2] {
        assert!(
            text.contains(&format!("address = \"{replica}\"")),
            "{replica} is found: {text}"
        );
    }
    assert!(text.contains("from SHOW SLAVE HOSTS"), "{text}");
    assert!(!text.contains("port assumed"), "{text}");
    assert!(text.contains("mode = \"split\""), "{text}");

    // An existing file is never overwritten.
    let again = init(&args, "app\n");
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);

    // Valid as written; the placeholders are pointed out.
    let check = check_config(&path);
    let check_err = String::from_utf8_lossy(&check.stderr);
    assert!(check.status.success(), "{check_err}");
    assert!(check_err.contains("placeholder"), "{check_err}");

    // With the passwords filled in (the operator's step), Sluice starts and serves.
    let placeholder = format!("password = \"{PLACEHOLDER}\"");
    let filled = text.replacen(&placeholder, "password = \"app\"", 1).replacen(
        &placeholder,
        "password = \"monitor\"",
        1,
    );
    let filled_path = dir.join("filled.toml");
    std::fs::write(&filled_path, filled).unwrap();
    let check = check_config(&filled_path);
    assert!(check.status.success());
    assert!(!String::from_utf8_lossy(&check.stderr).contains("placeholder"));
    let proxy = Sluice::start_file(dir.clone(), &filled_path, port, admin_port);
    let mut conn = mysql_async::Conn::new(proxy.opts())
        .await
        .expect("connect through Sluice");
    let two: Option<i64> = conn.query_first("SELECT 1 + 1").await.expect("query");
    assert_eq!(two, Some(2));
    let server_id: Option<u32> = conn.query_first("SELECT @@server_id").await.expect("read");
    assert!(server_id.is_some());
    conn.disconnect().await.expect("disconnect");
}

/// Without REPLICATION MASTER ADMIN, SHOW SLAVE HOSTS is refused: the
/// replicas come from the Binlog Dump threads (PROCESS), their port assumed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_falls_back_to_the_processlist() {
    let topo = Topology::from_env();
    let mut admin = mysql_async::Conn::new(sluice_tests::direct_opts(&topo.primary))
        .await
        .expect("connect to the primary");
    for sql in [
        "CREATE USER IF NOT EXISTS 'sluice_init_ps'@'%' IDENTIFIED BY 'ps'",
        "GRANT PROCESS ON *.* TO 'sluice_init_ps'@'%'",
    ] {
        admin.query_drop(sql).await.expect(sql);
    }
    admin.disconnect().await.expect("disconnect");

    let dir = test_dir("processlist");
    let password_file = dir.join("password");
    std::fs::write(&password_file, "ps\n").unwrap();
    let out = init(
        &[
            "--primary",
            &topo.primary,
            "--user",
            "sluice_init_ps",
            "--password-file",
            password_file.to_str().unwrap(),
        ],
        "",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("SHOW SLAVE HOSTS failed"), "{stderr}");
    assert!(stderr.contains("is assumed"), "{stderr}");
    // The replicas connect from 127.0.0.1; the port is the primary's.
    assert!(
        text.contains(&format!(
            "address = \"127.0.0.1:{}\"  # from the processlist's Binlog Dump threads: port assumed",
            topo.primary_port()
        )),
        "{text}"
    );
    let path = dir.join("printed.toml");
    std::fs::write(&path, text.as_bytes()).unwrap();
    let check = check_config(&path);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}
