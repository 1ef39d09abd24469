//! The admin HTTP endpoint: `GET /metrics` (Prometheus text),
//! `GET /healthz`, `GET /status`, `GET /digests?sort=&limit=` and
//! `POST /digests/reset` (the digests are rendered by
//! [`crate::digests_json`]). A few lines of HTTP/1.1 on a tokio listener keep hyper
//! out of the binary.

use crate::shared::Shared;
use anyhow::Context;
use metrics_exporter_prometheus::PrometheusHandle;
use sluice_pool::monitor::WriterState;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub async fn spawn(addr: &str, handle: PrometheusHandle, shared: Arc<Shared>) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (server.admin_listen)"))?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            };
            let handle = handle.clone();
            let shared = shared.clone();
            tokio::spawn(async move {
                let _ =
                    tokio::time::timeout(Duration::from_secs(10), respond(stream, &handle, &shared)).await;
            });
        }
    });
    Ok(())
}

async fn respond(mut stream: TcpStream, handle: &PrometheusHandle, shared: &Shared) -> std::io::Result<()> {
    let mut buf = vec![0u8; 4096];
    let mut len = 0;
    while !buf[..len].windows(4).any(|w| w == b"\r\n\r\n") && len < buf.len() {
        let n = stream.read(&mut buf[len..]).await?;
        if n == 0 {
            break;
        }
        len += n;
    }
    let request = String::from_utf8_lossy(&buf[..len]);
    let mut words = request.split_whitespace();
    let method = words.next().unwrap_or("GET");
    let target = words.next().unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let (code, content_type, body) = match (method, path) {
        ("GET", "/metrics") => ("200 OK", "text/plain; version=0.0.4", handle.render()),
        ("GET", "/healthz") => ("200 OK", "text/plain", "ok\n".to_string()),
        ("GET", "/status") => ("200 OK", "application/json", status_json(shared)),
        ("GET", "/digests") => digests(query),
        ("POST", "/digests/reset") => ("200 OK", "application/json", crate::digests_json::reset()),
        (_, "/metrics" | "/healthz" | "/status" | "/digests" | "/digests/reset") => (
            "405 Method Not Allowed",
            "text/plain",
            "method not allowed; POST /digests/reset, GET for the rest\n".to_string(),
        ),
        _ => (
            "404 Not Found",
            "text/plain",
            "not found; try /metrics, /healthz, /status or /digests\n".to_string(),
        ),
    };
    let head = format!(
        "HTTP/1.1 {code}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

/// `GET /digests?sort=&limit=` (no limit: every row).
fn digests(query: &str) -> (&'static str, &'static str, String) {
    let mut sort = "";
    let mut limit = usize::MAX;
    for (key, value) in query.split('&').filter_map(|kv| kv.split_once('=')) {
        match key {
            "sort" => sort = value,
            "limit" => match value.parse() {
                Ok(n) => limit = n,
                Err(_) => {
                    return (
                        "400 Bad Request",
                        "text/plain",
                        format!("bad limit `{value}`: expected a number of rows\n"),
                    );
                }
            },
            _ => {}
        }
    }
    match crate::digests_json::render_json(sort, limit) {
        Ok(body) => ("200 OK", "application/json", body),
        Err(e) => ("400 Bad Request", "text/plain", format!("{e}\n")),
    }
}

fn status_json(shared: &Shared) -> String {
    let config = shared.config.load();
    let pools = shared.pools.status();
    let view = shared.monitor.view();
    let topology = shared.topology.load();
    let backends: Vec<String> = config
        .backends
        .iter()
        .map(|b| {
            let mine: Vec<_> = pools.iter().filter(|p| p.key.backend == b.name).collect();
            let size: usize = mine.iter().map(|p| p.size).sum();
            let idle: usize = mine.iter().map(|p| p.idle).sum();
            let waiting: usize = mine.iter().map(|p| p.waiting).sum();
            let health = view.health(&b.name);
            let state = match health.and_then(|h| h.up) {
                Some(false) => "down",
                _ if topology.by_name(&b.name).is_some_and(|t| topology.is_down(t)) => "down",
                Some(true) => "up",
                None => "unknown",
            };
            let lag_ms = match health.and_then(|h| h.lag_ms) {
                Some(l) if l.is_finite() => format!("{l:.1}"),
                Some(_) => "\"stopped\"".to_string(),
                None => "null".to_string(),
            };
            let json_opt = |v: Option<String>| v.unwrap_or_else(|| "null".to_string());
            let read_only = json_opt(health.and_then(|h| h.read_only).map(|r| r.to_string()));
            let position = json_opt(health.and_then(|h| h.position.as_ref()).map(|p| format!("\"{p}\"")));
            let error = json_opt(health.and_then(|h| h.error.as_ref()).map(|e| serde_json::Value::from(e.as_str()).to_string()));
            let source = health.map_or("none", |h| h.lag_source.label());
            let stale = health.is_some_and(|h| h.stale);
            let writer = view.writer == WriterState::Backend(b.name.clone());
            format!(
                "{{\"name\":{:?},\"address\":{:?},\"role\":\"{}\",\"writer\":{writer},\"weight\":{},\"state\":\"{state}\",\"read_only\":{read_only},\"lag_ms\":{lag_ms},\"lag_source\":\"{source}\",\"stale\":{stale},\"gtid_position\":{position},\"monitor_error\":{error},\"in_flight\":{},\"pool\":{{\"size\":{size},\"idle\":{idle},\"active\":{},\"waiting\":{waiting}}}}}",
                b.name,
                b.address,
                if b.role == sluice_config::Role::Primary { "primary" } else { "replica" },
                b.weight,
                topology
                    .by_name(&b.name)
                    .map_or(0, |t| t.in_flight.load(std::sync::atomic::Ordering::Relaxed)),
                size.saturating_sub(idle),
            )
        })
        .collect();
    let pool_list: Vec<String> = pools
        .iter()
        .map(|s| {
            format!(
                "{{\"backend\":{:?},\"user\":{:?},\"size\":{},\"idle\":{},\"waiting\":{},\"max\":{}}}",
                s.key.backend, s.key.user, s.size, s.idle, s.waiting, s.max
            )
        })
        .collect();
    let writer = match &view.writer {
        WriterState::Backend(name) => format!("{name:?}"),
        WriterState::NoneWritable => "null".to_string(),
        WriterState::Conflict(names) => format!("{:?}", names.join(",")),
    };
    format!(
        "{{\"version\":{:?},\"writer\":{writer},\"uptime_seconds\":{},\"clients\":{},\"server_version\":{:?},\"config\":{{\"generation\":{},\"loaded_at_unix\":{}}},\"backends\":[{}],\"pools\":[{}],\"guard\":{}}}\n",
        env!("CARGO_PKG_VERSION"),
        shared.started.elapsed().as_secs(),
        shared.client_count(),
        shared.profile.load().version,
        shared.generation(),
        shared.loaded_at(),
        backends.join(","),
        pool_list.join(","),
        guard_json(shared)
    )
}

/// The guard's state per table, with the lag Sluice measures for its feed.
fn guard_json(shared: &Shared) -> String {
    let mut status = shared.guard.status();
    let config = shared.config.load();
    let lag_ms = shared
        .guard
        .last_heartbeat_us()
        .and_then(|us| shared.monitor.heartbeat_lag_ms(&config, us));
    if let Some(map) = status.as_object_mut() {
        map.insert("lag_ms".into(), serde_json::json!(lag_ms));
        map.insert(
            "never_answers".into(),
            serde_json::json!(crate::shared::guard_never_answers(&config)),
        );
    }
    status.to_string()
}
