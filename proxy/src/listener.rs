//! Accepting clients: bind, enforce `max_client_connections` (1040 before
//! the handshake, as MySQL does), and start a session per client.

use crate::shared::Shared;
use crate::{admin, errors, metrics, profile, session};
use anyhow::Context;
use sluice_config::Config;
use sluice_protocol::PacketStream;
use std::path::PathBuf;
use std::time::Duration;
use tokio::net::TcpListener;

pub async fn serve(config: Config, _config_path: PathBuf) -> anyhow::Result<()> {
    let handle = metrics::install()?;
    let listen = config.server.listen.clone();
    let admin_listen = config.server.admin_listen.clone();
    let shared = Shared::new(config);
    let listener = TcpListener::bind(&listen)
        .await
        .with_context(|| format!("cannot listen on {listen} (server.listen)"))?;
    admin::spawn(&admin_listen, handle, shared.clone()).await?;
    profile::spawn_learner(shared.clone());
    metrics::spawn_pool_gauges(shared.clone());
    metrics::build_info();
    tracing::info!(%listen, admin = %admin_listen, "sluice {} ready", env!("CARGO_PKG_VERSION"));

    let shutdown = tokio::signal::ctrl_c();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                match shared.admit_client() {
                    Some(guard) => {
                        tokio::spawn(session::run(shared.clone(), stream, peer, guard));
                    }
                    None => {
                        ::metrics::counter!("sluice_client_connections_rejected_total", "cause" => "max_client_connections").increment(1);
                        ::metrics::counter!("sluice_errors_total", "cause" => "max_client_connections").increment(1);
                        let max = shared.config.load().server.max_client_connections;
                        tokio::spawn(async move {
                            let mut client = PacketStream::new(stream);
                            let _ = client.send(0, &errors::too_many_connections(max)).await;
                            client.shutdown().await;
                        });
                    }
                }
            }
            _ = &mut shutdown => {
                tracing::info!("shutting down");
                shared.pools.close();
                return Ok(());
            }
        }
    }
}
