//! One look at one backend on the monitor's own mysql_async connection:
//! reachable, `@@read_only`, replication threads and Seconds_Behind_Master,
//! the GTID position it has applied, and the newest heartbeat it holds.

use crate::{BackendError, BackendTls};
use mysql_async::SslOpts;
use mysql_async::prelude::Queryable;
use sluice_config::{BackendTls as BackendTlsSettings, BackendTlsMode as Mode};
use sluice_router::GtidPos;
use std::path::PathBuf;

/// What one probe saw.
#[derive(Debug, Clone, Default)]
pub struct Probe {
    pub read_only: Option<bool>,
    /// None when the backend replicates from nothing.
    pub replication: Option<Replication>,
    /// `@@gtid_slave_pos` (MariaDB replicas).
    pub position: Option<GtidPos>,
    /// Newest heartbeat timestamp (µs since the epoch) in the heartbeat
    /// table; None when there is no readable heartbeat.
    pub heartbeat_us: Option<u64>,
    /// The server refused `SHOW SLAVE STATUS` (privileges): replication
    /// state unknown.
    pub replication_refused: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Replication {
    pub io_running: bool,
    pub sql_running: bool,
    pub seconds_behind_master: Option<u64>,
}

impl Replication {
    pub fn running(&self) -> bool {
        self.io_running && self.sql_running
    }
}

/// A monitor-style connection (TCP, never the server's socket) to
/// `host:port` or `[v6]:port`, with the backend's TLS settings; the guard's
/// feed and scans use it too.
pub async fn connect(
    address: &str,
    user: &str,
    password: &str,
    tls: &BackendTlsSettings,
) -> Result<mysql_async::Conn, mysql_async::Error> {
    let (host, port) = address.rsplit_once(':').unwrap_or((address, "3306"));
    let host = host.trim_start_matches('[').trim_end_matches(']'); // [::1]:3306
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname(host.to_string())
        .tcp_port(port.parse().unwrap_or(3306))
        .user(Some(user))
        .pass(Some(password))
        .prefer_socket(false);
    let ssl = match ssl_opts(address, tls).await {
        Ok(ssl) => ssl,
        Err(e) => return Err(mysql_async::Error::Other(e.to_string().into())),
    };
    let Some(ssl) = ssl else {
        return mysql_async::Conn::new(opts).await;
    };
    match mysql_async::Conn::new(opts.clone().ssl_opts(ssl)).await {
        // mysql_async has no "preferred": TLS when offered, else plain.
        Err(mysql_async::Error::Driver(mysql_async::DriverError::NoClientSslFlagFromServer))
            if tls.mode == Mode::Preferred =>
        {
            mysql_async::Conn::new(opts).await
        }
        Err(mysql_async::Error::Driver(mysql_async::DriverError::NoClientSslFlagFromServer)) => Err(
            mysql_async::Error::Other(crate::tls::not_offered(tls.mode).to_string().into()),
        ),
        Err(mysql_async::Error::Io(mysql_async::IoError::Io(e))) if tls_failure(&e) => Err(
            mysql_async::Error::Other(format!("TLS handshake failed: {e}").into()),
        ),
        other => other,
    }
}

/// rustls errors reach mysql_async as I/O errors that carry them.
fn tls_failure(e: &std::io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<rustls::Error>())
}

/// mysql_async's TLS options for the backend's mode (None: plain).
async fn ssl_opts(address: &str, tls: &BackendTlsSettings) -> Result<Option<SslOpts>, BackendError> {
    let mut ssl = SslOpts::default();
    match tls.mode {
        Mode::Disabled => return Ok(None),
        Mode::Preferred | Mode::Required => ssl = ssl.with_danger_accept_invalid_certs(true),
        Mode::VerifyCa | Mode::VerifyIdentity => {
            let ca = tls.ca_file.clone().unwrap_or_default();
            ssl = ssl
                .with_root_certs(vec![PathBuf::from(ca).into()])
                .with_disable_built_in_roots(true);
            if tls.mode == Mode::VerifyCa {
                let name = crate::tls::presented_name(address, &BackendTls::new(tls, address)).await?;
                ssl = ssl.with_danger_tls_hostname_override(name);
            }
        }
    }
    if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
        ssl = ssl.with_client_identity(Some(mysql_async::ClientIdentity::new(
            PathBuf::from(cert).into(),
            PathBuf::from(key).into(),
        )));
    }
    Ok(Some(ssl))
}

pub async fn probe(
    conn: &mut mysql_async::Conn,
    heartbeat: Option<(&str, &str)>,
    instance: u32,
) -> Result<Probe, mysql_async::Error> {
    let (read_only, version): (Option<bool>, String) = conn
        .query_first("SELECT @@read_only, @@version")
        .await?
        .unwrap_or((None, String::new()));
    let mariadb = version.contains("MariaDB");
    let mut probe = Probe {
        read_only,
        ..Probe::default()
    };
    match replication(conn, mariadb).await {
        Ok(r) => probe.replication = r,
        Err(mysql_async::Error::Server(e)) => {
            probe.replication_refused = Some(format!(
                "replication status refused ({}): grant the monitor user SLAVE MONITOR / REPLICATION CLIENT",
                e.message
            ));
        }
        Err(e) => return Err(e),
    }
    if probe.replication.is_some() {
        if mariadb {
            let pos: Option<String> = conn.query_first("SELECT @@gtid_slave_pos").await?;
            probe.position = pos.as_deref().and_then(GtidPos::parse);
        }
        if let Some((schema, table)) = heartbeat {
            // A missing table (not created yet, or not replicated yet) just
            // means no heartbeat: the lag falls back to Seconds_Behind_Master.
            let sql = super::heartbeat::read_sql(schema, table, instance);
            probe.heartbeat_us = conn
                .query_first::<Option<u64>, _>(sql)
                .await
                .ok()
                .flatten()
                .flatten();
        }
    }
    Ok(probe)
}

async fn replication(
    conn: &mut mysql_async::Conn,
    mariadb: bool,
) -> Result<Option<Replication>, mysql_async::Error> {
    let rows: Vec<mysql_async::Row> = if mariadb {
        conn.query("SHOW SLAVE STATUS").await?
    } else {
        match conn.query("SHOW REPLICA STATUS").await {
            Ok(rows) => rows,
            Err(_) => conn.query("SHOW SLAVE STATUS").await?,
        }
    };
    let Some(row) = rows.first() else { return Ok(None) };
    let text = |names: &[&str]| {
        names.iter().find_map(|n| {
            row.get_opt::<Option<String>, _>(*n)
                .and_then(Result::ok)
                .flatten()
        })
    };
    let yes = |names: &[&str]| text(names).is_some_and(|v| v == "Yes");
    Ok(Some(Replication {
        io_running: yes(&["Slave_IO_Running", "Replica_IO_Running"]),
        sql_running: yes(&["Slave_SQL_Running", "Replica_SQL_Running"]),
        seconds_behind_master: text(&["Seconds_Behind_Master", "Seconds_Behind_Source"])
            .and_then(|v| v.parse().ok()),
    }))
}
