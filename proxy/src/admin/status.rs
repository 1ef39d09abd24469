//! `GET /status`: the JSON view of backends, pools, clients, the config
//! generation and the guard.

use crate::shared::Shared;
use sluice_pool::monitor::WriterState;

pub fn status_json(shared: &Shared) -> String {
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
                    .map_or(0, |t| t.in_flight.get()),
                size.saturating_sub(idle),
            )
        })
        .collect();
    let pool_list: Vec<String> = pools
        .iter()
        .map(|s| {
            format!(
                "{{\"backend\":{:?},\"user\":{:?},\"client_flags\":{},\"size\":{},\"idle\":{},\"waiting\":{},\"max\":{}}}",
                s.key.backend,
                s.key.user,
                serde_json::Value::from(s.key.session_caps.names()),
                s.size,
                s.idle,
                s.waiting,
                s.max
            )
        })
        .collect();
    let writer = match &view.writer {
        WriterState::Backend(name) => format!("{name:?}"),
        WriterState::NoneWritable => "null".to_string(),
        WriterState::Conflict(names) => format!("{:?}", names.join(",")),
    };
    format!(
        "{{\"version\":{:?},\"writer\":{writer},\"uptime_seconds\":{},\"clients\":{},\"worker_sessions\":{:?},\"server_version\":{:?},\"config\":{{\"generation\":{},\"loaded_at_unix\":{}}},\"backends\":[{}],\"pools\":[{}],\"guard\":{}}}\n",
        env!("CARGO_PKG_VERSION"),
        shared.started.elapsed().as_secs(),
        shared.client_count(),
        shared.worker_session_counts(),
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
