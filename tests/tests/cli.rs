//! The `sluice` command line: --version, --help, check-config.

use sluice_tests::sluice_bin;
use std::process::Command;

fn sluice(args: &[&str]) -> std::process::Output {
    Command::new(sluice_bin())
        .args(args)
        .output()
        .expect("run sluice")
}

#[test]
fn version_and_help() {
    let out = sluice(&["--version"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("sluice "));
    let out = sluice(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("--config") && help.contains("check-config"),
        "{help}"
    );
}

#[test]
fn check_config_prints_the_effective_config_without_passwords() {
    let out = sluice(&[
        "check-config",
        sluice_tests::repo_path("examples/sluice.toml").to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("max_connections_per_backend = 50"), "{stdout}");
    assert!(
        stdout.contains("acquire_timeout_ms = 2000"),
        "defaults are shown: {stdout}"
    );
    assert!(
        stdout.contains("<redacted>") && !stdout.contains("password = \"app\""),
        "{stdout}"
    );
}

#[test]
fn check_config_names_the_bad_key() {
    let dir = std::env::temp_dir().join(format!("sluice-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let example = std::fs::read_to_string(sluice_tests::repo_path("examples/sluice.toml")).unwrap();
    let cases = [
        (
            example.replace("acquire_timeout_ms", "acquire_timout_ms"),
            "acquire_timout_ms",
        ),
        (example.replace("role = \"replica\"", "role = \"leader\""), "role"),
        (
            example.replace("127.0.0.1:13307", "not-an-address"),
            "backends[1].address",
        ),
        (
            example.replace(
                "max_client_connections = 10000",
                "max_client_connections = \"many\"",
            ),
            "max_client_connections",
        ),
    ];
    for (i, (text, key)) in cases.iter().enumerate() {
        let path = dir.join(format!("bad{i}.toml"));
        std::fs::write(&path, text).unwrap();
        let out = sluice(&["check-config", path.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "case {i} must fail");
        assert!(
            stderr.contains(key),
            "case {i}: error must name `{key}`: {stderr}"
        );
    }
    // Running with a bad config fails the same way, before listening.
    let out = sluice(&["--config", dir.join("bad0.toml").to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("acquire_timout_ms"));
}

/// `[guard]` tables are checked against the primary: a table that does
/// not exist, a column that is not there or cannot be a guard's key, each
/// named by its key; a valid one passes.
#[test]
fn check_config_names_a_bad_guard_table_or_key() {
    let topo = sluice_tests::Topology::from_env();
    let setup = Command::new("mariadb")
        .args([
            "-h",
            "127.0.0.1",
            "-P",
            &topo.primary_port().to_string(),
            "-uapp",
            "-papp",
        ])
        .args([
            "-e",
            "CREATE TABLE IF NOT EXISTS sluice_test.guard_cli (id INT PRIMARY KEY, \
             name VARCHAR(20) COLLATE utf8mb4_general_ci UNIQUE, note INT)",
        ])
        .output()
        .expect("run mariadb");
    assert!(
        setup.status.success(),
        "{}",
        String::from_utf8_lossy(&setup.stderr)
    );
    let dir = std::env::temp_dir().join(format!("sluice-cli-guard-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = |table: &str, key: &str| {
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n\n[[users]]\nname = \"app\"\npassword = \"app\"\n\n\
             [monitor]\nuser = \"sluice_monitor\"\npassword = \"monitor\"\n\n\
             [[backends]]\nname = \"primary\"\naddress = \"{}\"\nrole = \"primary\"\n\n\
             [[guard.tables]]\ntable = \"{table}\"\nkey = \"{key}\"\n",
            topo.primary
        )
    };
    let cases = [
        ("sluice_test.guard_missing", "id", Some("guard.tables[0].table")),
        ("sluice_test.guard_cli", "nope", Some("guard.tables[0].key")),
        ("sluice_test.guard_cli", "note", Some("guard.tables[0].key")),
        ("sluice_test.guard_cli", "name", Some("guard.tables[0].key")),
        ("sluice_test.guard_cli", "id", None),
    ];
    for (i, (table, key, named)) in cases.iter().enumerate() {
        let path = dir.join(format!("guard{i}.toml"));
        std::fs::write(&path, config(table, key)).unwrap();
        let out = sluice(&["check-config", path.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        match named {
            Some(named) => {
                assert!(!out.status.success(), "{table}.{key} must fail");
                assert!(
                    stderr.contains(named),
                    "{table}.{key}: must name `{named}`: {stderr}"
                );
            }
            None => {
                assert!(out.status.success(), "{table}.{key}: {stderr}");
                assert!(
                    !stderr.contains("not checked"),
                    "checked against the primary: {stderr}"
                );
            }
        }
    }
}

/// `sluice healthcheck`: exit 0 when `/healthz` answers 200 (the URL given,
/// or derived from `--config`'s admin_listen, before or after the
/// subcommand), 1 on another status or no answer.
#[test]
fn healthcheck_exits_by_the_admin_endpoint_answer() {
    let proxy = sluice_tests::Sluice::start();
    let config = proxy.config_path();
    let config = config.to_str().unwrap();
    let url = |path: &str| format!("http://127.0.0.1:{}{path}", proxy.admin_port);
    for args in [
        vec!["healthcheck".to_string(), "--url".into(), url("/healthz")],
        vec!["--config".into(), config.into(), "healthcheck".into()],
        vec!["healthcheck".into(), "--config".into(), config.into()],
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = sluice(&args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = sluice(&["healthcheck", "--url", &url("/nowhere")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("404"));
    let nobody = format!("http://127.0.0.1:{}/healthz", sluice_tests::free_port());
    let out = sluice(&["healthcheck", "--url", &nobody]);
    assert_eq!(out.status.code(), Some(1));
}
