//! Accepting clients: bind, enforce `max_client_connections` (1040 before
//! the handshake, as MySQL does), and start a session per client (the
//! worker threads accept, see [`crate::workers`]).

use crate::shared::Shared;
use crate::workers::{Accepted, Placer, Workers};
use crate::{admin, errors, metrics, profile, readiness, reload, session, systemd};
use anyhow::Context;
use sluice_config::Config;
use sluice_protocol::PacketStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::mpsc::UnboundedReceiver;

/// Runs Sluice as the `sluice` binary does: binds `server.listen`, watches
/// `config_path` for reloads, and on SIGTERM/SIGINT drains
/// (`server.drain_delay_ms`), then shuts down gracefully. Client sessions
/// run on `workers`.
pub async fn serve(config: Config, config_path: PathBuf, workers: &Workers) -> anyhow::Result<()> {
    let listen = config.server.listen.clone();
    let listener = bind(&listen).with_context(|| format!("cannot listen on {listen} (server.listen)"))?;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let (stop, stops) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let signal = tokio::select! {
                _ = terminate.recv() => "SIGTERM",
                _ = interrupt.recv() => "SIGINT",
            };
            if stop.send(signal).is_err() {
                return;
            }
        }
    });
    serve_on(config, Some(config_path), listener, stops, workers).await
}

/// Runs Sluice from `config` on an already bound `listener`, inside the
/// caller's tokio runtime (any flavour), until told to stop. Each message
/// on `stops` is a stop request naming its reason (for the log), as a
/// signal is: the first one makes Sluice not ready and, after
/// `server.drain_delay_ms` (during which it still serves and accepts
/// clients), shut down gracefully; another one during that delay cuts it
/// short. The channel closing counts as a stop request only before the
/// first one. `server.listen` is not used; `server.admin_listen` is bound
/// here. With a `config_path` the file is watched for reloads (and SIGHUP
/// reloads it). Client sessions run on `workers` ([`Workers::local`]: on
/// the caller's runtime).
///
/// For embedding Sluice in a process and for in-process tests. Installs
/// the process-wide metrics recorder, so it can run once per process.
pub async fn serve_on(
    config: Config,
    config_path: Option<PathBuf>,
    listener: TcpListener,
    mut stops: UnboundedReceiver<&'static str>,
    workers: &Workers,
) -> anyhow::Result<()> {
    let handle = metrics::install()?;
    let listen = listener.local_addr()?;
    let admin_listen = config.server.admin_listen.clone();
    let shared = Shared::new(config, workers.sessions());
    shared
        .configure_security(&shared.config.load())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    warn_unwarmable_users(&shared.config.load());
    systemd::spawn_watchdog();
    admin::spawn(&admin_listen, handle, shared.clone()).await?;
    let learned = profile::spawn_learner(shared.clone());
    metrics::spawn_pool_gauges(shared.clone());
    metrics::build_info();
    if let Some(path) = config_path {
        reload::spawn(shared.clone(), path)?;
    }
    shared.spawn_monitor();
    readiness::spawn(shared.clone());
    shared.spawn_guard();
    // Clients that connect before the primary's version is known would be
    // greeted with a default one (drivers choose behaviour from it): wait for
    // it as long as one backend connection may take, then serve anyway.
    let wait = Duration::from_millis(shared.config.load().pool.connect_timeout_ms);
    if tokio::time::timeout(wait, learned.notified()).await.is_err() {
        tracing::warn!(
            "serving before the primary's version is known; clients see a default one until it is"
        );
    }
    let on_client = {
        let shared = shared.clone();
        move |placer: &Placer, client: Accepted| start_session(&shared, placer, client)
    };
    // The acceptors end when shutdown begins (`shared.shutdown`).
    let acceptors = listener
        .into_std()
        .and_then(|listener| workers.accept(listener, shared.shutdown.subscribe(), on_client))
        .with_context(|| format!("cannot accept clients on {listen} from the worker threads"))?;
    tracing::info!(%listen, admin = %admin_listen, "sluice {} ready", env!("CARGO_PKG_VERSION"));
    shared.readiness.accepting();

    // Set by the first stop request: when draining ends, and why it began.
    let mut draining: Option<(tokio::time::Instant, &'static str)> = None;
    let mut stops_open = true;
    loop {
        tokio::select! {
            request = stops.recv(), if stops_open => {
                let reason = match request {
                    Some(reason) => reason,
                    None if draining.is_some() => {
                        stops_open = false;
                        continue;
                    }
                    None => "stop channel closed",
                };
                if let Some((_, first)) = draining {
                    tracing::info!(signal = reason, "{reason} again: skipping the rest of the drain delay");
                    return shut_down(&shared, acceptors, first).await;
                }
                let delay = Duration::from_millis(shared.config.load().server.drain_delay_ms);
                shared.readiness.drain();
                systemd::stopping();
                if delay.is_zero() {
                    return shut_down(&shared, acceptors, reason).await;
                }
                tracing::info!(
                    signal = reason,
                    "draining: /readyz answers 503; still serving and accepting clients for {} ms (server.drain_delay_ms), then shutting down; send {reason} again to skip the wait",
                    delay.as_millis()
                );
                draining = Some((tokio::time::Instant::now() + delay, reason));
            }
            () = sleep_until(draining.map(|(until, _)| until)), if draining.is_some() => {
                let reason = draining.map_or("stop", |(_, reason)| reason);
                tracing::info!("drain delay over");
                return shut_down(&shared, acceptors, reason).await;
            }
        }
    }
}

/// A client an acceptor took: admitted (`server.max_client_connections`),
/// its session started on a worker; or refused with error 1040.
fn start_session(shared: &Arc<Shared>, placer: &Placer, client: Accepted) {
    let _ = client.stream.set_nodelay(true);
    let peer = client.peer;
    match shared.admit_client() {
        Some(guard) => {
            let shared = shared.clone();
            placer.spawn(client, move |stream| session::run(shared, stream, peer, guard));
        }
        None => {
            ::metrics::counter!("sluice_client_connections_rejected_total", "cause" => "max_client_connections").increment(1);
            ::metrics::counter!("sluice_errors_total", "cause" => "max_client_connections").increment(1);
            let max = shared.config.load().server.max_client_connections;
            let stream = client.stream;
            tokio::spawn(async move {
                let mut client = PacketStream::new(stream);
                let _ = client.send(0, &errors::too_many_connections(max)).await;
                client.shutdown().await;
            });
        }
    }
}

/// Sleeps until `until` (forever when None).
async fn sleep_until(until: Option<tokio::time::Instant>) {
    match until {
        Some(until) => tokio::time::sleep_until(until).await,
        None => std::future::pending().await,
    }
}

/// `pool.min_idle` cannot open connections for a user known only by its
/// `password_hash` until that user has logged in once: say so.
pub fn warn_unwarmable_users(config: &Config) {
    if config.pool.min_idle == 0 {
        return;
    }
    for user in config.users.iter().filter(|u| u.password_hash.is_some()) {
        tracing::warn!(
            user = %user.name,
            "pool.min_idle = {}: user '{}' has only a password_hash, so its backend connections open after its first login (Sluice learns what it needs from that login)",
            config.pool.min_idle,
            user.name
        );
    }
}

/// Graceful shutdown: stop accepting, let running statements and open
/// transactions finish (idle clients are told and closed at once), then
/// close the pools. Gives up waiting after `server.shutdown_timeout_ms`.
async fn shut_down(
    shared: &Shared,
    acceptors: Vec<tokio::task::JoinHandle<()>>,
    signal: &str,
) -> anyhow::Result<()> {
    // The acceptors end on the flag; once all have, the listening socket is
    // closed and new connections are refused.
    shared.shutdown.send_replace(true);
    for acceptor in acceptors {
        let _ = acceptor.await;
    }
    let limit = Duration::from_millis(shared.config.load().server.shutdown_timeout_ms);
    tracing::info!(
        signal,
        clients = shared.client_count(),
        "shutting down; waiting up to {} ms for clients",
        limit.as_millis()
    );
    // Sessions waiting for a command check the flag when woken.
    shared.clients_by_id.wake_all();
    let deadline = tokio::time::Instant::now() + limit;
    while shared.client_count() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if shared.client_count() > 0 {
        tracing::warn!(
            clients = shared.client_count(),
            "shutdown deadline reached; closing the remaining clients"
        );
    }
    shared.pools.close();
    shared.monitor.stop(Duration::from_secs(1)).await;
    tracing::info!("stopped");
    Ok(())
}

/// Binds with a deep accept queue: a connection storm (thousands of clients
/// connecting at once) must queue in the kernel, not have its SYNs dropped
/// and retried seconds later.
fn bind(address: &str) -> std::io::Result<TcpListener> {
    use std::net::ToSocketAddrs;
    let addr = address
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "no address"))?;
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(ACCEPT_BACKLOG)
}

/// The kernel caps this at net.core.somaxconn.
const ACCEPT_BACKLOG: u32 = 8192;
