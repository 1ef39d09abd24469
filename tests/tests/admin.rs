//! The admin endpoint as operators and balancers use it: the endpoints and
//! their errors (404, 405), the optional bearer token (`server.admin_token`,
//! hot-reloaded), `GET /readyz` with the drain on SIGTERM
//! (`server.drain_delay_ms`), and systemd's notifications over a real
//! NOTIFY_SOCKET.

use mysql_async::Conn;
use mysql_async::prelude::*;
use sluice_tests::{HttpAnswer, Sluice, SluiceOptions, http_request, metric_sum, sluice_bin, wait_until};
use std::os::unix::net::UnixDatagram;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const TOKEN: &str = "t0ken-for-the-admin-test";
const LIMIT: Duration = Duration::from_secs(20);

fn get(s: &Sluice, path: &str, headers: &[&str]) -> HttpAnswer {
    http_request(s.admin_port, "GET", path, headers).expect("the admin endpoint answers")
}

async fn wait_ready(s: &Sluice) {
    wait_until("/readyz answers 200", LIMIT, || {
        get(s, "/readyz", &[]).status == 200
    })
    .await;
}

/// Waits for the process to exit, off the async runtime.
async fn exit_status(mut s: Sluice, limit: Duration) -> (Option<std::process::ExitStatus>, String) {
    tokio::task::spawn_blocking(move || (s.wait_exit(limit), s.log()))
        .await
        .expect("wait for sluice")
}

#[tokio::test]
async fn endpoints_answer_and_unknown_paths_and_methods_are_refused() {
    let s = Sluice::start();
    let health = get(&s, "/healthz", &[]);
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
    assert_eq!(health.header("Content-Type"), Some("text/plain"));
    let metrics = get(&s, "/metrics", &[]);
    assert_eq!(metrics.status, 200);
    assert_eq!(metrics.header("Content-Type"), Some("text/plain; version=0.0.4"));
    assert!(metrics.body.contains("sluice_build_info{"), "{}", metrics.body);
    let status = get(&s, "/status", &[]);
    assert_eq!(status.header("Content-Type"), Some("application/json"));
    let json: serde_json::Value = serde_json::from_str(&status.body).expect("/status is JSON");
    assert_eq!(json["backends"].as_array().map(Vec::len), Some(3), "{json}");
    assert!(status.body.ends_with("}\n"));
    // Query parameters do not change which endpoint answers.
    assert_eq!(get(&s, "/healthz?verbose=1", &[]).body, "ok\n");

    wait_ready(&s).await;
    let ready = get(&s, "/readyz", &[]);
    assert_eq!(ready.body, "ready\n");
    let m = s.metrics();
    assert_eq!(metric_sum(&m, "sluice_ready", &[]), 1.0, "{m}");
    assert!(m.contains("# HELP sluice_ready "), "sluice_ready has HELP text");

    let missing = get(&s, "/nope", &[]);
    assert_eq!(missing.status, 404);
    for endpoint in ["GET /metrics", "GET /healthz", "GET /readyz", "GET /status"] {
        assert!(
            missing.body.contains(endpoint),
            "404 lists {endpoint}: {}",
            missing.body
        );
    }
    let wrong = http_request(s.admin_port, "POST", "/metrics", &[]).expect("answers");
    assert_eq!(wrong.status, 405, "{wrong:?}");
    assert_eq!(wrong.header("Allow"), Some("GET"));
    let wrong = http_request(s.admin_port, "DELETE", "/readyz", &[]).expect("answers");
    assert_eq!(wrong.status, 405, "{wrong:?}");
    let m = s.metrics();
    for reason in ["not_found", "method_not_allowed"] {
        assert!(
            metric_sum(
                &m,
                "sluice_admin_requests_refused_total",
                &[&format!("reason=\"{reason}\"")]
            ) >= 1.0,
            "{reason} is counted: {m}"
        );
    }
}

#[tokio::test]
async fn bearer_token_guards_all_but_the_probes_and_follows_reloads() {
    let s = Sluice::start_with(SluiceOptions {
        server_extra: format!("admin_token = \"{TOKEN}\""),
        ..SluiceOptions::default()
    });
    let good = format!("Authorization: Bearer {TOKEN}");
    for path in ["/metrics", "/status"] {
        let refused = get(&s, path, &[]);
        assert_eq!(refused.status, 401, "{path} without a token: {refused:?}");
        assert!(refused.body.contains("Authorization: Bearer"), "{}", refused.body);
        assert_eq!(refused.header("WWW-Authenticate"), Some("Bearer"));
        let wrong = get(&s, path, &["Authorization: Bearer not-the-token"]);
        assert_eq!(wrong.status, 401, "{path} with a wrong token");
        let basic = get(&s, path, &[&format!("Authorization: Basic {TOKEN}")]);
        assert_eq!(basic.status, 401, "{path} with another scheme");
        assert_eq!(
            get(&s, path, &[good.as_str()]).status,
            200,
            "{path} with the token"
        );
    }
    // Balancers probe these without a token.
    assert_eq!(get(&s, "/healthz", &[]).body, "ok\n");
    wait_ready(&s).await;
    let metrics = get(&s, "/metrics", &[good.as_str()]).body;
    assert!(
        metric_sum(
            &metrics,
            "sluice_admin_requests_refused_total",
            &["reason=\"unauthorized\""]
        ) >= 6.0,
        "{metrics}"
    );

    // A new token takes effect on reload, without a restart.
    let config = std::fs::read_to_string(s.config_path()).expect("read config");
    s.write_config(&config.replace(TOKEN, "a-rotated-token"));
    wait_until("the rotated token is accepted", LIMIT, || {
        get(&s, "/status", &["Authorization: Bearer a-rotated-token"]).status == 200
    })
    .await;
    assert_eq!(
        get(&s, "/status", &[good.as_str()]).status,
        401,
        "the old token is refused"
    );
    // And removing it opens the endpoint again.
    s.write_config(&config.replace(&format!("admin_token = \"{TOKEN}\""), ""));
    wait_until("no token needed", LIMIT, || {
        get(&s, "/metrics", &[]).status == 200
    })
    .await;
}

#[test]
fn check_config_warns_about_an_open_endpoint_without_a_token() {
    let dir = std::env::temp_dir().join(format!("sluice-admin-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create dir");
    let config = |admin: &str, token: &str| {
        format!(
            "[server]\nlisten = \"127.0.0.1:6033\"\nadmin_listen = \"{admin}\"\n{token}\n\
             [[users]]\nname = \"app\"\npassword = \"app\"\n\
             [[backends]]\nname = \"primary\"\naddress = \"127.0.0.1:3306\"\nrole = \"primary\"\n"
        )
    };
    let check = |text: String| {
        let path = dir.join("sluice.toml");
        std::fs::write(&path, text).expect("write config");
        let out = std::process::Command::new(sluice_bin())
            .args(["check-config", path.to_str().expect("utf-8 path")])
            .output()
            .expect("run sluice check-config");
        assert!(out.status.success(), "a warning is not a failure: {out:?}");
        (
            String::from_utf8_lossy(&out.stderr).into_owned(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (warned, _) = check(config("0.0.0.0:9033", ""));
    assert!(
        warned.contains("warning") && warned.contains("server.admin_token"),
        "{warned}"
    );
    let (quiet, effective) = check(config("0.0.0.0:9033", "admin_token = \"s3cret-x\""));
    assert!(!quiet.contains("admin_token"), "{quiet}");
    assert!(
        !effective.contains("s3cret-x"),
        "the token is redacted: {effective}"
    );
    let (loopback, _) = check(config("127.0.0.1:9033", ""));
    assert!(!loopback.contains("admin_token"), "{loopback}");
}

#[tokio::test]
async fn sigterm_drains_while_serving_old_and_new_clients_then_exits() {
    let s = Sluice::start_with(SluiceOptions {
        server_extra: "drain_delay_ms = 5000".into(),
        ..SluiceOptions::default()
    });
    wait_ready(&s).await;
    let mut before = Conn::new(s.opts()).await.expect("connect");
    let one: Option<i32> = before.query_first("SELECT 1").await.expect("query");
    assert_eq!(one, Some(1));

    s.signal(libc::SIGTERM);
    wait_until("/readyz answers 503 once draining", LIMIT, || {
        get(&s, "/readyz", &[]).status == 503
    })
    .await;
    assert_eq!(get(&s, "/readyz", &[]).body, "draining: shutting down\n");
    assert_eq!(metric_sum(&s.metrics(), "sluice_ready", &[]), 0.0);
    assert_eq!(get(&s, "/healthz", &[]).body, "ok\n", "still alive");
    // Within the delay the process goes on serving: the connected client,
    // and a client that connects now.
    let two: Option<i32> = before
        .query_first("SELECT 2")
        .await
        .expect("connected client queries");
    assert_eq!(two, Some(2));
    let mut after = Conn::new(s.opts())
        .await
        .expect("a new client connects while draining");
    let three: Option<i32> = after.query_first("SELECT 3").await.expect("and queries");
    assert_eq!(three, Some(3));
    drop(before);
    drop(after);

    let (status, log) = exit_status(s, Duration::from_secs(60)).await;
    assert!(
        status.is_some_and(|st| st.success()),
        "exits 0: {status:?}\n{log}"
    );
    for phase in [
        "draining:",
        "drain delay over",
        "shutting down; waiting",
        "stopped",
    ] {
        assert!(log.contains(phase), "the log shows `{phase}`:\n{log}");
    }
}

#[tokio::test]
async fn a_second_sigterm_skips_the_rest_of_the_drain_delay() {
    let s = Sluice::start_with(SluiceOptions {
        server_extra: "drain_delay_ms = 600000".into(),
        ..SluiceOptions::default()
    });
    wait_ready(&s).await;
    s.signal(libc::SIGTERM);
    wait_until("draining", LIMIT, || get(&s, "/readyz", &[]).status == 503).await;
    s.signal(libc::SIGTERM);
    // Well under the ten-minute delay: the second signal cut it short.
    let (status, log) = exit_status(s, Duration::from_secs(60)).await;
    assert!(
        status.is_some_and(|st| st.success()),
        "exits 0: {status:?}\n{log}"
    );
    assert!(log.contains("skipping the rest of the drain delay"), "{log}");
}

/// Datagrams received on a NOTIFY_SOCKET, each split into its lines.
struct NotifySocket {
    path: std::path::PathBuf,
    received: Arc<Mutex<Vec<String>>>,
}

impl NotifySocket {
    fn bind() -> NotifySocket {
        let path = std::env::temp_dir().join(format!("sluice-notify-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("set timeout");
        let received: Arc<Mutex<Vec<String>>> = Default::default();
        let sink = received.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            // Ends when the test process does.
            loop {
                if let Ok(n) = socket.recv(&mut buf) {
                    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                    let mut lines = sink.lock().unwrap_or_else(|e| e.into_inner());
                    lines.extend(text.lines().map(str::to_string));
                }
            }
        });
        NotifySocket { path, received }
    }

    fn lines(&self) -> Vec<String> {
        self.received.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Index of the first line equal to (or, ending in '=', starting with)
    /// `wanted` at or after `from`.
    fn find(&self, wanted: &str, from: usize) -> Option<usize> {
        self.lines()
            .iter()
            .enumerate()
            .skip(from)
            .find(|(_, l)| *l == wanted || (wanted.ends_with('=') && l.starts_with(wanted)))
            .map(|(i, _)| i)
    }

    async fn wait_for(&self, wanted: &str, from: usize) -> usize {
        wait_until(&format!("{wanted} arrives on NOTIFY_SOCKET"), LIMIT, || {
            self.find(wanted, from).is_some()
        })
        .await;
        self.find(wanted, from).expect("found")
    }
}

#[tokio::test]
async fn systemd_hears_ready_watchdog_reloading_and_stopping() {
    let notify = NotifySocket::bind();
    let s = Sluice::start_with(SluiceOptions {
        env: vec![
            ("NOTIFY_SOCKET".into(), notify.path.display().to_string()),
            ("WATCHDOG_USEC".into(), "2000000".into()),
        ],
        ..SluiceOptions::default()
    });
    let ready = notify.wait_for("READY=1", 0).await;
    assert_eq!(
        get(&s, "/readyz", &[]).status,
        200,
        "ready by the time systemd hears it"
    );
    assert!(notify.find("STATUS=", ready).is_some(), "{:?}", notify.lines());
    notify.wait_for("WATCHDOG=1", 0).await;

    s.signal(libc::SIGHUP);
    let reloading = notify.wait_for("RELOADING=1", ready + 1).await;
    assert!(
        notify.find("MONOTONIC_USEC=", reloading).is_some(),
        "{:?}",
        notify.lines()
    );
    notify.wait_for("READY=1", reloading + 1).await;

    s.signal(libc::SIGTERM);
    notify.wait_for("STOPPING=1", reloading + 1).await;
    let (status, log) = exit_status(s, Duration::from_secs(60)).await;
    assert!(
        status.is_some_and(|st| st.success()),
        "exits 0: {status:?}\n{log}"
    );
    let _ = std::fs::remove_file(&notify.path);
}
