//! The errors a client can meet and what it is told: bad credentials,
//! unreachable backend, exhausted pool, too many clients. No password ever
//! reaches the log.

use mysql_async::prelude::*;
use mysql_async::{Conn, Error, OptsBuilder};
use sluice_tests::raw::{RawClient, err_code};
use sluice_tests::{Sluice, SluiceOptions, free_port, metric_sum};
use std::time::{Duration, Instant};

fn server_error(e: Error) -> (u16, String) {
    match e {
        Error::Server(se) => (se.code, se.message),
        other => panic!("expected a server error, got {other:?}"),
    }
}

#[tokio::test]
async fn wrong_password_and_unknown_user_get_1045() {
    sluice_tests::ensure_other_user().await;
    let s = Sluice::start();
    let bad = OptsBuilder::from_opts(s.opts()).pass(Some("not-the-password-123"));
    let (code, msg) = server_error(Conn::new(bad).await.unwrap_err());
    assert_eq!(code, 1045);
    assert_eq!(
        msg,
        "Access denied for user 'app'@'127.0.0.1' (using password: YES)"
    );
    let unknown = OptsBuilder::from_opts(s.opts())
        .user(Some("nobody"))
        .pass(Some("x"));
    let (code, msg) = server_error(Conn::new(unknown).await.unwrap_err());
    assert_eq!(code, 1045);
    assert!(msg.starts_with("Access denied for user 'nobody'"), "{msg}");
    // The user configured with password_env logs in with the environment's password.
    let other = OptsBuilder::from_opts(s.opts())
        .user(Some("other"))
        .pass(Some("secret-other-pw"))
        .db_name(None::<String>);
    let mut c = Conn::new(other).await.unwrap();
    c.ping().await.unwrap();
    assert!(metric_sum(&s.metrics(), "sluice_errors_total", &["cause=\"access_denied\""]) >= 2.0);
    let log = s.log();
    assert!(
        !log.contains("not-the-password-123"),
        "a password reached the log"
    );
    assert!(!log.contains("secret-other-pw"), "a password reached the log");
}

#[tokio::test]
async fn unreachable_backend_is_named_without_hanging() {
    let dead = format!("127.0.0.1:{}", free_port());
    let s = Sluice::start_with(SluiceOptions {
        primary: dead.clone(),
        routing_mode: "primary_only",
        acquire_timeout_ms: 500,
        ..SluiceOptions::default()
    });
    // mysql_async queries the server while connecting, so the error
    // arrives at connect.
    let opts = OptsBuilder::from_opts(s.opts()).db_name(None::<String>);
    let started = Instant::now();
    let err = tokio::time::timeout(Duration::from_secs(30), Conn::new(opts))
        .await
        .expect("no hang")
        .unwrap_err();
    let (code, msg) = server_error(err);
    println!(
        "unreachable backend answered in {:?}: {code} {msg}",
        started.elapsed()
    );
    assert_eq!(code, 2003);
    assert!(msg.contains("'primary'") && msg.contains(&dead), "{msg}");
    // A client that only logs in (no schema) gets the same error per
    // statement and keeps its connection.
    let mut raw = RawClient::connect_without_schema(s.port, "app", "app")
        .await
        .unwrap();
    let r = raw.command(b"\x03SELECT 1").await.unwrap();
    assert_eq!(err_code(&r.payload), Some(2003));
    let r = raw.command(&[0x0e]).await.unwrap();
    assert_eq!(r.payload[0], 0, "the client connection survives the error");
    assert!(
        metric_sum(
            &s.metrics(),
            "sluice_errors_total",
            &["cause=\"backend_unreachable\""]
        ) >= 1.0
    );
}

#[tokio::test]
async fn exhausted_pool_is_named() {
    let s = Sluice::start_with(SluiceOptions {
        max_connections_per_backend: 1,
        acquire_timeout_ms: 300,
        routing_mode: "primary_only",
        ..SluiceOptions::default()
    });
    let mut holder = Conn::new(s.opts()).await.unwrap();
    holder.query_drop("BEGIN").await.unwrap();
    // mysql_async would query while connecting; the raw client only logs in.
    let mut waiter = RawClient::connect_without_schema(s.port, "app", "app")
        .await
        .unwrap();
    let r = tokio::time::timeout(Duration::from_secs(30), waiter.command(b"\x03SELECT 1"))
        .await
        .expect("no hang")
        .unwrap();
    let msg = String::from_utf8_lossy(&r.payload).into_owned();
    assert_eq!(err_code(&r.payload), Some(9001));
    assert!(
        msg.contains("'primary'") && msg.contains("pool exhausted"),
        "{msg}"
    );
    holder.query_drop("COMMIT").await.unwrap();
    let r = waiter.command(b"\x03SELECT 1").await.unwrap();
    assert_ne!(
        err_code(&r.payload),
        Some(9001),
        "works again once the pool frees up"
    );
    assert!(metric_sum(&s.metrics(), "sluice_errors_total", &["cause=\"pool_exhausted\""]) >= 1.0);
}

#[tokio::test]
async fn max_client_connections_gives_1040() {
    let s = Sluice::start_with(SluiceOptions {
        max_client_connections: 3,
        ..SluiceOptions::default()
    });
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(Conn::new(s.opts()).await.unwrap());
    }
    let (code, msg) = server_error(Conn::new(s.opts()).await.unwrap_err());
    assert_eq!(code, 1040);
    assert!(msg.contains("max_client_connections"), "{msg}");
    for c in &mut held {
        c.ping().await.expect("admitted clients are unaffected");
    }
    held.pop().unwrap().disconnect().await.unwrap();
    // The slot frees up once Sluice has seen the client leave.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut again = loop {
        match Conn::new(s.opts()).await {
            Ok(c) => break c,
            Err(e) if std::time::Instant::now() < deadline => {
                assert_eq!(server_error(e).0, 1040, "refused only for the limit");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("a slot frees up when a client leaves: {e}"),
        }
    };
    again.ping().await.unwrap();
}

#[tokio::test]
async fn unknown_schema_at_connect_is_refused_like_the_server() {
    let s = Sluice::start();
    let opts = OptsBuilder::from_opts(s.opts()).db_name(Some("no_such_db_here"));
    let (code, _) = server_error(Conn::new(opts).await.unwrap_err());
    assert_eq!(code, 1049);
}
