//! Helpers the guard's test binaries share: the topology's primary, a
//! connection to it, a fresh database, and a Guard configured for it.
#![allow(dead_code)]

use mysql_async::prelude::Queryable;
use sluice_guard::{Guard, TableGuard};
use sluice_router::GtidPos;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub fn primary() -> Option<String> {
    match std::env::var("SLUICE_TEST_PRIMARY") {
        Ok(p) => Some(p),
        Err(_) => {
            eprintln!(
                "SLUICE_TEST_PRIMARY is not set: skipping (run through scripts/test.sh, which starts MariaDB)"
            );
            None
        }
    }
}

pub async fn conn(primary: &str) -> mysql_async::Conn {
    let (host, port) = primary.rsplit_once(':').expect("host:port");
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname(host.to_string())
        .tcp_port(port.parse().expect("port"))
        .user(Some("app"))
        .pass(Some("app"))
        .prefer_socket(false)
        .local_infile_handler(Some(mysql_async::WhiteListFsHandler::new(vec![
            std::env::temp_dir().join("guard_test_load.txt"),
        ])));
    mysql_async::Conn::new(opts).await.expect("connect as app")
}

pub async fn fresh_db(c: &mut mysql_async::Conn, db: &str) {
    c.query_drop(format!("DROP DATABASE IF EXISTS {db}"))
        .await
        .unwrap();
    c.query_drop(format!("CREATE DATABASE {db}")).await.unwrap();
    c.query_drop(format!("USE {db}")).await.unwrap();
}

/// Runs a write and returns the GTID it produced.
pub async fn write(c: &mut mysql_async::Conn, sql: &str) -> GtidPos {
    c.query_drop(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    let gtid: Option<String> = c.query_first("SELECT @@last_gtid").await.unwrap();
    GtidPos::parse(&gtid.unwrap_or_default()).expect("a MariaDB GTID")
}

/// The instance name the tests' guards run as: their heartbeat rows are
/// the ones with id `sluice_config::instance_id(INSTANCE)`.
pub const INSTANCE: &str = "guard-test";

pub fn guard(primary: &str, server_id: u32, tables: &str, extra_guard: &str, heartbeat: &str) -> Arc<Guard> {
    let toml = format!(
        r#"
[server]
listen = "127.0.0.1:0"
instance_name = "{INSTANCE}"
[[users]]
name = "app"
password = "app"
[monitor]
user = "app"
password = "app"
heartbeat_table = "{heartbeat}"
[[backends]]
name = "primary"
address = "{primary}"
role = "primary"
[guard]
server_id = {server_id}
{extra_guard}
{tables}
"#
    );
    let config = sluice_config::Config::parse(&toml).unwrap_or_else(|e| panic!("config: {e:?}\n{toml}"));
    let g = Guard::new();
    let (_tx, rx) = tokio::sync::watch::channel(Some(primary.to_string()));
    // The sender may go: the receiver keeps the last address.
    g.configure(&config, rx);
    g
}

pub fn table_toml(table: &str, key: &str, extra: &str) -> String {
    format!("[[guard.tables]]\ntable = \"{table}\"\nkey = \"{key}\"\n{extra}\n")
}

pub async fn wait_for<F: FnMut() -> bool>(what: &str, secs: u64, mut cond: F) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn ready(g: &Arc<Guard>, schema: &str, table: &str) -> Arc<TableGuard> {
    let what = format!("{schema}.{table} ready");
    wait_for(&what, 60, || g.table(schema, table).is_some_and(|t| t.ready())).await;
    g.table(schema, table).expect("ready table")
}
