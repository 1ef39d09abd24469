//! What Sluice tells clients about "the server": the primary's real version
//! string and capabilities, learned from a connection to it. Drivers
//! choose MariaDB or MySQL behaviour from the version, so it must be real.

use crate::shared::Shared;
use sluice_protocol::consts::{CapabilityFlags as Caps, MariadbCapabilities};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct ServerProfile {
    pub version: String,
    pub capabilities: Caps,
    pub mariadb_capabilities: MariadbCapabilities,
    pub default_collation: u8,
    /// The collations the server knows: id → (charset, collation). A
    /// client's handshake may name one the server does not have (MySQL 8
    /// drivers send 255, utf8mb4_0900_ai_ci); the server then uses its
    /// defaults, and so must Sluice. Empty until learned.
    pub collations: Arc<HashMap<u16, (String, String)>>,
    /// False until the primary has been reached once.
    pub learned: bool,
}

impl ServerProfile {
    /// Used until the primary answers: a MariaDB-like profile.
    pub fn fallback() -> Self {
        ServerProfile {
            version: "5.5.5-10.11.0-MariaDB-sluice".into(),
            capabilities: Caps::all(),
            mariadb_capabilities: MariadbCapabilities::MARIADB_CLIENT_STMT_BULK_OPERATIONS,
            default_collation: 45,
            collations: Arc::default(),
            learned: false,
        }
    }
}

/// Learns the profile from the primary, retrying in the background until it
/// succeeds, so startup never blocks on a backend for long. The returned
/// notification fires once it is learned: the listener waits for it a
/// moment, so the first clients see the primary's version, not the default.
pub fn spawn_learner(shared: Arc<Shared>) -> Arc<tokio::sync::Notify> {
    let learned = Arc::new(tokio::sync::Notify::new());
    let done = learned.clone();
    tokio::spawn(async move {
        loop {
            match learn(&shared).await {
                Ok(profile) => {
                    tracing::info!(version = %profile.version, "learned the primary's server version");
                    shared.profile.store(Arc::new(profile));
                    done.notify_one();
                    return;
                }
                Err(e) => {
                    tracing::warn!(
                        "cannot reach the primary yet ({e}); advertising a default version meanwhile"
                    );
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            }
        }
    });
    learned
}

async fn learn(shared: &Shared) -> Result<ServerProfile, String> {
    let config = shared.config.load_full();
    let primary = config.primary().ok_or("no primary configured")?;
    // The first user Sluice has a password for; else the monitor's account
    // (validation requires one when the first user has only a hash).
    let (user, password) = match config.users.iter().find(|u| u.password_hash.is_none()) {
        Some(u) => (u.name.as_str(), u.secret()),
        None => config.monitor_account().ok_or("no users configured")?,
    };
    let tls = match shared.topology.load().by_name(&primary.name) {
        Some(backend) => backend.tls.clone(),
        None => sluice_pool::BackendTls::new(&primary.tls_settings(), &primary.address),
    };
    // Its own connection, not a pooled one: this runs on the main thread,
    // whose runtime would own the socket, and a worker reading a pooled
    // connection of the main runtime's wakes that thread for every packet.
    let target = sluice_pool::ConnectTarget {
        backend: primary.name.clone(),
        address: primary.address.clone(),
        user: user.to_string(),
        credential: sluice_pool::Credential::Password(password.to_string()),
        session_caps: Default::default(),
        attrs: sluice_pool::ConnectAttrs::from(Vec::new()),
        connect_timeout: Duration::from_millis(config.pool.connect_timeout_ms),
        tls,
    };
    let mut conn = sluice_pool::BackendConn::connect(&target)
        .await
        .map_err(|e| format!("backend '{}' ({}): {e}", primary.name, primary.address))?;
    let rows = conn
        .query_rows("SELECT ID, CHARACTER_SET_NAME, COLLATION_NAME FROM information_schema.COLLATIONS")
        .await
        .map_err(|e| format!("reading the server's collations: {e}"))?;
    let collations = rows
        .into_iter()
        .filter_map(|r| {
            let id = r.first()?.as_deref()?.parse().ok()?;
            Some((id, (r.get(1)?.clone()?, r.get(2)?.clone()?)))
        })
        .collect();
    let info = &conn.info;
    Ok(ServerProfile {
        version: info.version.clone(),
        capabilities: info.server_capabilities,
        mariadb_capabilities: info.mariadb_capabilities
            | (info.server_mariadb_capabilities & MariadbCapabilities::MARIADB_CLIENT_EXTENDED_METADATA),
        default_collation: info.default_collation,
        collations: Arc::new(collations),
        learned: true,
    })
}
