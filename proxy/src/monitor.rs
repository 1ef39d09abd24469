//! The backend monitor: every second, on its own connections (mysql_async,
//! as the first configured user), each backend is checked for reachability,
//! `@@read_only` and, on replicas, replication state and
//! `Seconds_Behind_Master`. It feeds the metrics and `/status`; it never
//! blocks client traffic (failures only mark the backend down).

use crate::shared::Shared;
use mysql_async::prelude::Queryable;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

const INTERVAL: Duration = Duration::from_secs(1);
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// What the monitor last saw of a backend.
#[derive(Debug, Clone, Default)]
pub struct Health {
    pub up: bool,
    pub read_only: Option<bool>,
    /// Replication lag in seconds; infinite when a replication thread is
    /// stopped; None on the primary or when unknown.
    pub lag_seconds: Option<f64>,
}

#[derive(Default)]
pub struct Monitor {
    health: RwLock<HashMap<String, Health>>,
}

impl Monitor {
    pub fn health(&self, backend: &str) -> Option<Health> {
        self.health
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(backend)
            .cloned()
    }
}

pub fn spawn(shared: Arc<Shared>) {
    tokio::spawn(async move {
        let mut conns: HashMap<String, mysql_async::Conn> = HashMap::new();
        let mut tick = tokio::time::interval(INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let config = shared.config.load_full();
            let Some(user) = config.users.first() else {
                continue;
            };
            conns.retain(|name, _| config.backends.iter().any(|b| &b.name == name));
            for backend in &config.backends {
                let probe = probe(
                    &mut conns,
                    &backend.name,
                    &backend.address,
                    &user.name,
                    user.secret(),
                );
                let health = match tokio::time::timeout(PROBE_TIMEOUT, probe).await {
                    Ok(Ok(h)) => h,
                    Ok(Err(e)) => {
                        tracing::debug!(backend = backend.name, "monitor probe failed: {e}");
                        conns.remove(&backend.name);
                        Health::default()
                    }
                    Err(_) => {
                        conns.remove(&backend.name);
                        Health::default()
                    }
                };
                let name = backend.name.clone();
                metrics::gauge!("sluice_backend_up", "backend" => name.clone())
                    .set(f64::from(u8::from(health.up)));
                if let Some(ro) = health.read_only {
                    metrics::gauge!("sluice_backend_read_only", "backend" => name.clone())
                        .set(f64::from(u8::from(ro)));
                }
                if let Some(lag) = health.lag_seconds {
                    // A stopped thread is infinitely stale; the exporter would
                    // print "inf", which Prometheus does not parse, so the
                    // gauge says NaN and `..._replication_running` says why.
                    let running = lag.is_finite();
                    metrics::gauge!("sluice_backend_replication_running", "backend" => name.clone())
                        .set(f64::from(u8::from(running)));
                    metrics::gauge!("sluice_backend_replication_lag_seconds", "backend" => name.clone())
                        .set(if running { lag } else { f64::NAN });
                }
                shared
                    .monitor
                    .health
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(name, health);
            }
        }
    });
}

async fn probe(
    conns: &mut HashMap<String, mysql_async::Conn>,
    name: &str,
    address: &str,
    user: &str,
    password: &str,
) -> Result<Health, mysql_async::Error> {
    if !conns.contains_key(name) {
        let (host, port) = address.rsplit_once(':').unwrap_or((address, "3306"));
        let opts = mysql_async::OptsBuilder::default()
            .ip_or_hostname(host.to_string())
            .tcp_port(port.parse().unwrap_or(3306))
            .user(Some(user))
            .pass(Some(password))
            .prefer_socket(false);
        conns.insert(name.to_string(), mysql_async::Conn::new(opts).await?);
    }
    let conn = conns.get_mut(name).expect("inserted above");
    let read_only: Option<bool> = conn.query_first("SELECT @@read_only").await?;
    let status: Vec<mysql_async::Row> = conn.query("SHOW SLAVE STATUS").await?;
    let lag_seconds = status.first().map(|row| {
        let running = |col: &str| {
            row.get_opt::<String, _>(col)
                .and_then(Result::ok)
                .is_some_and(|v| v == "Yes")
        };
        if !running("Slave_IO_Running") || !running("Slave_SQL_Running") {
            return f64::INFINITY;
        }
        row.get_opt::<Option<u64>, _>("Seconds_Behind_Master")
            .and_then(Result::ok)
            .flatten()
            .map(|s| s as f64)
            .unwrap_or(f64::INFINITY)
    });
    Ok(Health {
        up: true,
        read_only,
        lag_seconds,
    })
}
