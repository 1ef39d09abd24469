//! Hot reload: on SIGHUP or when the config file changes (its directory is
//! watched, events debounced), the whole file is parsed and validated; an
//! invalid file changes nothing and says why, a valid one is swapped in
//! atomically. Pools follow (resized, or closed and drained for removed
//! backends); settings that only take effect at start are reported as
//! needing a restart, never silently ignored.

use crate::shared::{Shared, pool_settings};
use sluice_config::Config;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

const DEBOUNCE: Duration = Duration::from_millis(300);

/// Starts the SIGHUP handler and the file watcher.
pub fn spawn(shared: Arc<Shared>, path: PathBuf) -> anyhow::Result<()> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<&'static str>();
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let sig_tx = tx.clone();
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            let _ = sig_tx.send("SIGHUP");
        }
    });
    let watcher = watch(&path, tx)?;
    tokio::spawn(async move {
        let _watcher = watcher; // keep watching while this task lives
        while let Some(mut trigger) = rx.recv().await {
            // Editors write in several steps: wait for quiet, then read once.
            while let Ok(Some(t)) = tokio::time::timeout(DEBOUNCE, rx.recv()).await {
                trigger = t;
            }
            reload(&shared, &path, trigger);
        }
    });
    Ok(())
}

/// Watches the file's directory (editors and config management replace
/// files by rename, which a watch on the file itself would miss).
fn watch(
    path: &Path,
    tx: tokio::sync::mpsc::UnboundedSender<&'static str>,
) -> anyhow::Result<notify::RecommendedWatcher> {
    use notify::Watcher;
    let name = path.file_name().map(|n| n.to_os_string());
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event {
            let ours = event
                .paths
                .iter()
                .any(|p| p.file_name().map(|n| n.to_os_string()) == name);
            if ours && !event.kind.is_access() {
                let _ = tx.send("file change");
            }
        }
    })?;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    watcher.watch(dir, notify::RecursiveMode::NonRecursive)?;
    Ok(watcher)
}

/// Reads, validates and applies the file. Returns whether it was applied.
pub fn reload(shared: &Shared, path: &Path, trigger: &str) -> bool {
    let new = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(%trigger, "config reload rejected, nothing changed: {e}");
            metrics::counter!("sluice_config_reloads_total", "result" => "error").increment(1);
            return false;
        }
    };
    let old = shared.config.load_full();
    for key in needs_restart(&old, &new) {
        tracing::warn!(
            key,
            "config reload: `{key}` changed but only takes effect after a restart"
        );
        metrics::counter!("sluice_config_restart_required_total", "key" => key).increment(1);
    }
    let settings = pool_settings(&new);
    let new_for_pools = new.clone();
    shared.pools.reconfigure(settings, move |key, target| {
        let backend = new_for_pools.backends.iter().find(|b| b.name == key.backend);
        let user = new_for_pools.user(&key.user);
        match (backend, user) {
            (Some(b), Some(u)) => {
                b.address == target.address
                    && u.secret() == target.password
                    && target.tls.unchanged(&b.tls_settings())
            }
            _ => false,
        }
    });
    shared.install_config(new);
    tracing::info!(%trigger, generation = shared.generation(), "config reloaded");
    metrics::counter!("sluice_config_reloads_total", "result" => "ok").increment(1);
    true
}

/// Settings that only take effect when Sluice starts.
fn needs_restart(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut keys = Vec::new();
    if old.server.listen != new.server.listen {
        keys.push("server.listen");
    }
    if old.server.admin_listen != new.server.admin_listen {
        keys.push("server.admin_listen");
    }
    if old.server.worker_threads != new.server.worker_threads {
        keys.push("server.worker_threads");
    }
    if old.log.format != new.log.format || old.log.level != new.log.level {
        keys.push("log");
    }
    keys
}
