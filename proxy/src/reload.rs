//! Hot reload: on SIGHUP or when the config file changes (its directory is
//! watched, events debounced), the whole file is parsed and validated; an
//! invalid file changes nothing and says why, a valid one is swapped in
//! atomically. Pools follow (resized, or closed and drained for removed
//! backends); settings that only take effect at start are reported as
//! needing a restart, never silently ignored.

use crate::shared::{Shared, pool_settings};
use sluice_config::Config;
use std::collections::HashSet;
use std::ffi::OsString;
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
    let mut watch = Watch::new(tx)?;
    watch.follow(&watched_files(&path, &shared.config.load()));
    tokio::spawn(async move {
        while let Some(mut trigger) = rx.recv().await {
            // Editors write in several steps: wait for quiet, then read once.
            while let Ok(Some(t)) = tokio::time::timeout(DEBOUNCE, rx.recv()).await {
                trigger = t;
            }
            // systemd hears of reloads only once it was told READY=1.
            let notify = shared.readiness.serving();
            if notify {
                crate::systemd::reloading();
            }
            if reload(&shared, &path, trigger) {
                watch.follow(&watched_files(&path, &shared.config.load()));
            }
            if notify && !shared.readiness.draining() {
                crate::systemd::ready("serving clients; config reloaded");
            }
        }
    });
    Ok(())
}

/// The config file and the files it names whose change is a reload:
/// certificates and keys.
fn watched_files(path: &Path, config: &Config) -> Vec<PathBuf> {
    let mut files = vec![path.to_path_buf()];
    if let Some(tls) = &config.server.tls {
        files.push(PathBuf::from(&tls.cert_file));
        files.push(PathBuf::from(&tls.key_file));
        if !tls.client_ca_file.is_empty() {
            files.push(PathBuf::from(&tls.client_ca_file));
        }
    }
    for file in [
        &config.server.caching_sha2_private_key_file,
        &config.server.caching_sha2_public_key_file,
    ]
    .into_iter()
    .flatten()
    {
        files.push(PathBuf::from(file));
    }
    files
}

/// Watches the files' directories (editors, config management and
/// certificate renewal replace files by rename, which a watch on the file
/// itself would miss) and reports changes to the files by name.
struct Watch {
    watcher: notify::RecommendedWatcher,
    names: Arc<std::sync::Mutex<HashSet<OsString>>>,
    dirs: HashSet<PathBuf>,
}

impl Watch {
    fn new(tx: tokio::sync::mpsc::UnboundedSender<&'static str>) -> anyhow::Result<Self> {
        let names: Arc<std::sync::Mutex<HashSet<OsString>>> = Default::default();
        let ours = names.clone();
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if let Ok(event) = event {
                let names = ours.lock().unwrap_or_else(|e| e.into_inner());
                let hit = event
                    .paths
                    .iter()
                    .any(|p| p.file_name().is_some_and(|n| names.contains(n)));
                if hit && !event.kind.is_access() {
                    let _ = tx.send("file change");
                }
            }
        })?;
        Ok(Watch {
            watcher,
            names,
            dirs: HashSet::new(),
        })
    }

    /// Watches `files` from now on (directories already watched stay).
    fn follow(&mut self, files: &[PathBuf]) {
        use notify::Watcher;
        {
            // Not held across `watch`: that call waits for the watcher's
            // thread, which may be in the callback waiting for this lock.
            let mut names = self.names.lock().unwrap_or_else(|e| e.into_inner());
            names.extend(
                files
                    .iter()
                    .filter_map(|f| f.file_name())
                    .map(|n| n.to_os_string()),
            );
        }
        for file in files {
            let dir = file
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
                .to_path_buf();
            if !self.dirs.contains(&dir) {
                match self.watcher.watch(&dir, notify::RecursiveMode::NonRecursive) {
                    Ok(()) => {
                        self.dirs.insert(dir);
                    }
                    Err(e) => tracing::warn!(
                        "cannot watch {} for changes (SIGHUP still reloads): {e}",
                        dir.display()
                    ),
                }
            }
        }
    }
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
    if let Err(e) = shared.configure_security(&new) {
        tracing::error!(%trigger, "config reload rejected, nothing changed: {e}");
        metrics::counter!("sluice_config_reloads_total", "result" => "error").increment(1);
        return false;
    }
    crate::listener::warn_unwarmable_users(&new);
    let old = shared.config.load_full();
    if old.server.admin_token != new.server.admin_token {
        if let Some(warning) = crate::admin::exposure_warning(&new) {
            tracing::warn!("{warning}");
        }
    }
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
                    && target.credential.matches(u)
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
