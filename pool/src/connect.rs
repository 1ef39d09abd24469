//! Opening a backend connection: TCP, the server's handshake, the TLS
//! upgrade the backend's `tls` mode asks for, and client-side
//! authentication (native, caching_sha2, ed25519 via mysql_common's helpers).

use crate::{BackendConn, BackendError, BackendStream, BackendTls, ServerInfo, SessionState};
use mysql_common::constants::{CapabilityFlags as Caps, MariadbCapabilities};
use mysql_common::crypto;
use mysql_common::io::ParseBuf;
use mysql_common::packets::{AuthPlugin, AuthSwitchRequest, HandshakePacket, HandshakeResponse, SslRequest};
use mysql_common::proto::{MyDeserialize, MySerialize};
use sluice_protocol::PacketStream;
use sluice_protocol::packets::{self, ERR_HEADER, OK_HEADER};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;

/// Capabilities Sluice asks of every backend connection. DEPRECATE_EOF is
/// left off (the relay translates for clients that use it); SESSION_TRACK is
/// on so OK packets report schema and variable changes; FOUND_ROWS is added
/// per pool because it changes affected-row counts.
pub const BACKEND_CAPABILITIES: Caps = Caps::from_bits_truncate(
    Caps::CLIENT_LONG_PASSWORD.bits()
        | Caps::CLIENT_LONG_FLAG.bits()
        | Caps::CLIENT_PROTOCOL_41.bits()
        | Caps::CLIENT_TRANSACTIONS.bits()
        | Caps::CLIENT_SECURE_CONNECTION.bits()
        | Caps::CLIENT_MULTI_STATEMENTS.bits()
        | Caps::CLIENT_MULTI_RESULTS.bits()
        | Caps::CLIENT_PS_MULTI_RESULTS.bits()
        | Caps::CLIENT_PLUGIN_AUTH.bits()
        | Caps::CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA.bits()
        | Caps::CLIENT_CONNECT_ATTRS.bits()
        | Caps::CLIENT_SESSION_TRACK.bits()
        | Caps::CLIENT_LOCAL_FILES.bits(),
);

/// The bits of a client's handshake that change how the server sets up
/// its session, and so which pooled connections may serve it; the pool key
/// carries them and a pool's connections are opened with them.
///
/// - The multi-result bits. Every current driver asks for
///   `CLIENT_MULTI_RESULTS` and `CLIENT_PS_MULTI_RESULTS`; their clients
///   share connections with all three multi-bits (multi-statements is then
///   switched per client with `COM_SET_OPTION`). A client without one of
///   them (an old libmysqlclient, Ruby's mysql gem by default) gets
///   connections with exactly its own bits, so a procedure that returns rows
///   gets it the server's error 1312, not result sets it cannot read.
/// - `CLIENT_FOUND_ROWS`: affected-row counts are rows matched, not changed.
/// - `CLIENT_IGNORE_SPACE`: the server adds `IGNORE_SPACE` to the session's
///   `sql_mode` (`mariadb --ignore-spaces`, an ODBC option).
/// - `CLIENT_INTERACTIVE`: the session's `wait_timeout` is the server's
///   `interactive_timeout` (the `mariadb` CLI at a terminal).
/// - MariaDB's `MARIADB_CLIENT_EXTENDED_METADATA`: every column definition
///   carries the column's extended type (`json`, `uuid`, ...), which drivers
///   such as mysql2 read to decode JSON; clients without it cannot parse
///   such definitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionCaps(Caps, MariadbCapabilities);

impl SessionCaps {
    const MULTI: Caps = Caps::from_bits_truncate(
        Caps::CLIENT_MULTI_STATEMENTS.bits()
            | Caps::CLIENT_MULTI_RESULTS.bits()
            | Caps::CLIENT_PS_MULTI_RESULTS.bits(),
    );
    const RESULTS: Caps =
        Caps::from_bits_truncate(Caps::CLIENT_MULTI_RESULTS.bits() | Caps::CLIENT_PS_MULTI_RESULTS.bits());
    const SESSION: Caps = Caps::from_bits_truncate(
        Caps::CLIENT_FOUND_ROWS.bits() | Caps::CLIENT_IGNORE_SPACE.bits() | Caps::CLIENT_INTERACTIVE.bits(),
    );

    const MARIADB: MariadbCapabilities = MariadbCapabilities::MARIADB_CLIENT_EXTENDED_METADATA;

    /// What every current driver's clients share: all three multi-bits.
    pub const DRIVER: SessionCaps = SessionCaps(Self::MULTI, MariadbCapabilities::empty());

    /// The bits a client's connections need, from its handshake.
    pub fn of_client(caps: Caps, mariadb: MariadbCapabilities) -> SessionCaps {
        let multi = if caps.contains(Self::RESULTS) {
            Self::MULTI
        } else {
            caps & Self::MULTI
        };
        SessionCaps(multi | (caps & Self::SESSION), mariadb & Self::MARIADB)
    }

    /// Column definitions carry MariaDB's extended type information.
    pub fn extended_metadata(self) -> bool {
        self.1
            .contains(MariadbCapabilities::MARIADB_CLIENT_EXTENDED_METADATA)
    }

    /// The capabilities to ask of a server that offers `server_caps`, from
    /// Sluice's own set `caps`: its multi-bits replaced by these, and these
    /// session bits added where the server offers them.
    pub fn apply(self, caps: Caps, server_caps: Caps) -> Caps {
        (caps - (Self::MULTI - self.0)) | (self.0 & Self::SESSION & server_caps)
    }

    /// The bits, by name without `CLIENT_` (for `/status`).
    pub fn names(self) -> Vec<&'static str> {
        [
            (Caps::CLIENT_MULTI_STATEMENTS, "MULTI_STATEMENTS"),
            (Caps::CLIENT_MULTI_RESULTS, "MULTI_RESULTS"),
            (Caps::CLIENT_PS_MULTI_RESULTS, "PS_MULTI_RESULTS"),
            (Caps::CLIENT_FOUND_ROWS, "FOUND_ROWS"),
            (Caps::CLIENT_IGNORE_SPACE, "IGNORE_SPACE"),
            (Caps::CLIENT_INTERACTIVE, "INTERACTIVE"),
        ]
        .into_iter()
        .filter(|(bit, _)| self.0.contains(*bit))
        .map(|(_, name)| name)
        .chain(self.extended_metadata().then_some("MARIADB_EXTENDED_METADATA"))
        .collect()
    }
}

impl Default for SessionCaps {
    fn default() -> Self {
        Self::DRIVER
    }
}

/// Where and as whom to connect.
#[derive(Debug, Clone)]
pub struct ConnectTarget {
    pub backend: String,
    pub address: String,
    pub user: String,
    pub credential: crate::Credential,
    pub session_caps: SessionCaps,
    /// The clients' attributes to show the server; empty: Sluice's own.
    pub attrs: crate::ConnectAttrs,
    pub connect_timeout: Duration,
    /// The backend's TLS mode and client config (built once per config
    /// generation, shared by its pools).
    pub tls: Arc<BackendTls>,
}

impl BackendConn {
    /// Connects and authenticates within `target.connect_timeout`.
    pub async fn connect(target: &ConnectTarget) -> Result<BackendConn, BackendError> {
        let limit = target.connect_timeout;
        match tokio::time::timeout(limit, connect_inner(target)).await {
            Ok(result) => result,
            Err(_) => Err(BackendError::Timeout(limit.as_millis() as u64)),
        }
    }
}

/// The capabilities a pooled connection asks of this server: Sluice's
/// own ([`BACKEND_CAPABILITIES`]) that the server has, and MariaDB's
/// extended ones Sluice uses (announced by clearing CLIENT_MYSQL, which
/// the client then clears too): bulk operations, and the metadata cache,
/// so the server need not build and send an execute's column definitions
/// when they did not change (the relay restores them for clients that do
/// not cache); and extended metadata where `session_caps` (the pool's
/// clients) need it. Shared with the relay's fixture capture, so captured
/// traffic is what a pooled connection sees.
pub fn negotiate(handshake: &HandshakePacket<'_>, session_caps: SessionCaps) -> (Caps, MariadbCapabilities) {
    let server_caps = handshake.capabilities();
    let mut caps = BACKEND_CAPABILITIES & server_caps;
    let mariadb_caps = offered_mariadb(handshake)
        & (MariadbCapabilities::MARIADB_CLIENT_STMT_BULK_OPERATIONS
            | MariadbCapabilities::MARIADB_CLIENT_CACHE_METADATA
            | session_caps.1);
    if !mariadb_caps.is_empty() {
        caps.remove(Caps::CLIENT_LONG_PASSWORD);
    }
    (caps, mariadb_caps)
}

/// MariaDB's extended capabilities a server offers: none unless it
/// cleared CLIENT_MYSQL (MySQL sets it and uses those bytes otherwise).
fn offered_mariadb(handshake: &HandshakePacket<'_>) -> MariadbCapabilities {
    if handshake.capabilities().contains(Caps::CLIENT_LONG_PASSWORD) {
        MariadbCapabilities::empty()
    } else {
        handshake.mariadb_ext_capabilities()
    }
}

async fn connect_inner(target: &ConnectTarget) -> Result<BackendConn, BackendError> {
    let tcp = TcpStream::connect(&target.address).await?;
    tcp.set_nodelay(true)?;
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(60))
        .with_interval(Duration::from_secs(10));
    socket2::SockRef::from(&tcp).set_tcp_keepalive(&keepalive)?;
    let mut stream = PacketStream::new(BackendStream::Plain(tcp));

    let greeting = stream.read_packet().await?;
    if greeting.first_byte() == Some(ERR_HEADER) {
        return Err(server_error(&greeting.payload));
    }
    let handshake = HandshakePacket::deserialize((), &mut ParseBuf(&greeting.payload))
        .map_err(|e| BackendError::protocol(format!("bad server handshake: {e}")))?;
    let server_caps = handshake.capabilities();
    let (caps, mariadb_caps) = negotiate(&handshake, target.session_caps);
    let caps = target.session_caps.apply(caps, server_caps);
    // Definitions without the extended type would be unreadable to the
    // clients of this pool: no connection rather than a wrong one.
    if !mariadb_caps.contains(target.session_caps.1) {
        return Err(BackendError::protocol(
            "the server lacks MARIADB_CLIENT_EXTENDED_METADATA (MariaDB 10.5 and later have it), which \
             clients of this pool use",
        ));
    }
    if !caps.contains(Caps::CLIENT_PROTOCOL_41 | Caps::CLIENT_SECURE_CONNECTION | Caps::CLIENT_PLUGIN_AUTH) {
        return Err(BackendError::protocol(
            "server lacks PROTOCOL_41 / SECURE_CONNECTION / PLUGIN_AUTH",
        ));
    }
    let version = handshake.server_version_parsed().unwrap_or((5, 7, 0));
    let nonce = handshake.nonce();
    let plugin = handshake
        .auth_plugin()
        .map(|p| p.into_owned())
        .unwrap_or(AuthPlugin::MysqlNativePassword);
    let tls = target.tls.wanted(server_caps.contains(Caps::CLIENT_SSL))?;
    // CLIENT_SSL only on the wire: the negotiated capabilities the relay
    // compares with clients' stay those of the protocol on top.
    let wire_caps = if tls { caps | Caps::CLIENT_SSL } else { caps };
    let scramble = target.credential.auth_data(&plugin, &nonce)?;
    let attrs = backend_attributes(&target.attrs);
    let response = HandshakeResponse::new(
        scramble.as_deref(),
        version,
        Some(target.user.as_bytes()),
        None::<&[u8]>,
        Some(plugin.clone()),
        wire_caps,
        Some(attrs),
        1 << 30,
    )
    .with_mariadb_ext_capabilities(mariadb_caps);
    let mut seq = greeting.seq.wrapping_add(1);
    if tls {
        // SSLRequest (the handshake response's fixed part), then TLS; the
        // full response follows inside it.
        let request =
            SslRequest::new(wire_caps, 1 << 30, response.collation()).with_mariadb_capabilities(mariadb_caps);
        let mut buf = Vec::new();
        request.serialize(&mut buf);
        stream.send(seq, &buf).await?;
        seq = seq.wrapping_add(1);
        let BackendStream::Plain(tcp) = stream.into_inner()? else {
            return Err(BackendError::protocol(
                "TLS upgrade of a stream that is not plain TCP",
            ));
        };
        stream = PacketStream::new(target.tls.upgrade(tcp).await?);
    }
    let mut buf = Vec::new();
    response.serialize(&mut buf);
    stream.send(seq, &buf).await?;
    authenticate(&mut stream, plugin.clone(), nonce.clone(), &target.credential).await?;

    let info = ServerInfo {
        version: handshake.server_version_str().into_owned(),
        connection_id: handshake.connection_id(),
        capabilities: caps,
        server_capabilities: server_caps,
        mariadb_capabilities: mariadb_caps,
        server_mariadb_capabilities: offered_mariadb(&handshake),
        default_collation: handshake.default_collation(),
        nonce,
        auth_plugin: plugin,
    };
    let mut conn = BackendConn::new(stream, info, SessionState::default());
    conn.quit_on_drop();
    conn.setup().await?;
    Ok(conn)
}

/// The attributes a backend connection announces: the application's (its
/// program name and own keys, so the server's
/// `performance_schema.session_connect_attrs` names it), with Sluice as the
/// driver and `_proxy` saying Sluice opened it.
fn backend_attributes(client: &[(String, String)]) -> HashMap<String, String> {
    let mut attrs: HashMap<String, String> = client.iter().cloned().collect();
    attrs.insert("_client_name".into(), "sluice".into());
    attrs.insert("_client_version".into(), env!("CARGO_PKG_VERSION").into());
    attrs.insert("_proxy".into(), "sluice".into());
    attrs
}

/// Runs the auth exchange after the handshake response until OK or ERR.
pub(crate) async fn authenticate(
    stream: &mut PacketStream<BackendStream>,
    mut plugin: AuthPlugin<'static>,
    mut nonce: Vec<u8>,
    credential: &crate::Credential,
) -> Result<(), BackendError> {
    loop {
        let packet = stream.read_packet().await?;
        let mut seq = packet.seq.wrapping_add(1);
        match packet.first_byte() {
            Some(OK_HEADER) => return Ok(()),
            Some(ERR_HEADER) => return Err(server_error(&packet.payload)),
            Some(0xfe) => {
                let switch = AuthSwitchRequest::deserialize((), &mut ParseBuf(&packet.payload))
                    .map_err(|e| BackendError::protocol(format!("bad auth switch: {e}")))?;
                plugin = switch.auth_plugin().into_owned();
                // plugin_data() already drops the trailing NUL.
                nonce = switch.plugin_data().to_vec();
                let data = credential.auth_data(&plugin, &nonce)?;
                stream.send(seq, data.as_deref().unwrap_or(&[])).await?;
            }
            Some(0x01) => match (packet.payload.get(1), &plugin) {
                // caching_sha2_password: fast auth succeeded, OK follows.
                (Some(0x03), _) => continue,
                // Full auth: ask for the RSA key and send the encrypted password.
                (Some(0x04), AuthPlugin::CachingSha2Password) => {
                    let password = credential.clear().ok_or_else(|| {
                        BackendError::protocol(
                            "the backend wants caching_sha2_password's full authentication, which needs the clear \
                             password; this user has only a password_hash in Sluice's config",
                        )
                    })?;
                    stream.send(seq, &[0x02]).await?;
                    let key = stream.read_packet().await?;
                    seq = key.seq.wrapping_add(1);
                    let pem = key.payload.get(1..).unwrap_or(&[]);
                    let mut pass: Vec<u8> = password.bytes().chain(std::iter::once(0)).collect();
                    for (i, b) in pass.iter_mut().enumerate() {
                        *b ^= nonce[i % nonce.len().max(1)];
                    }
                    let encrypted = crypto::encrypt(&pass, pem);
                    stream.send(seq, &encrypted).await?;
                }
                _ => return Err(BackendError::protocol("unexpected auth-more-data packet")),
            },
            _ => {
                return Err(BackendError::protocol("unexpected packet during authentication"));
            }
        }
    }
}

pub(crate) fn server_error(payload: &[u8]) -> BackendError {
    let state = payload
        .get(4..9)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .unwrap_or_default();
    match packets::parse_err(payload) {
        Some((code, message)) => BackendError::Server { code, state, message },
        None => BackendError::protocol("malformed ERR packet"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVER: Caps = Caps::all();

    #[test]
    fn driver_clients_share_the_full_set() {
        let driver = Caps::CLIENT_MULTI_RESULTS | Caps::CLIENT_PS_MULTI_RESULTS;
        assert_eq!(
            SessionCaps::of_client(driver, MariadbCapabilities::empty()),
            SessionCaps::DRIVER
        );
        assert_eq!(
            SessionCaps::of_client(
                driver | Caps::CLIENT_MULTI_STATEMENTS | Caps::CLIENT_LOCAL_FILES,
                MariadbCapabilities::empty()
            ),
            SessionCaps::DRIVER
        );
        assert_eq!(
            SessionCaps::DRIVER.apply(BACKEND_CAPABILITIES, SERVER),
            BACKEND_CAPABILITIES
        );
    }

    #[test]
    fn other_clients_get_exactly_their_multi_bits() {
        let old = SessionCaps::of_client(
            Caps::CLIENT_PROTOCOL_41 | Caps::CLIENT_MULTI_STATEMENTS,
            MariadbCapabilities::empty(),
        );
        assert_ne!(old, SessionCaps::DRIVER);
        let caps = old.apply(BACKEND_CAPABILITIES, SERVER);
        assert!(caps.contains(Caps::CLIENT_MULTI_STATEMENTS));
        assert!(!caps.intersects(Caps::CLIENT_MULTI_RESULTS | Caps::CLIENT_PS_MULTI_RESULTS));
        // Everything else Sluice asks for stays.
        assert!(caps.contains(Caps::CLIENT_SESSION_TRACK | Caps::CLIENT_PLUGIN_AUTH));
        let text_only = SessionCaps::of_client(Caps::CLIENT_MULTI_RESULTS, MariadbCapabilities::empty())
            .apply(BACKEND_CAPABILITIES, SERVER);
        assert!(text_only.contains(Caps::CLIENT_MULTI_RESULTS));
        assert!(!text_only.intersects(Caps::CLIENT_MULTI_STATEMENTS | Caps::CLIENT_PS_MULTI_RESULTS));
    }

    #[test]
    fn extended_metadata_keys_a_pool_of_its_own() {
        let driver = Caps::CLIENT_MULTI_RESULTS | Caps::CLIENT_PS_MULTI_RESULTS;
        let all = MariadbCapabilities::all();
        let ext = SessionCaps::of_client(driver, all);
        assert_ne!(ext, SessionCaps::DRIVER);
        assert!(ext.extended_metadata());
        assert!(!SessionCaps::DRIVER.extended_metadata());
        // Only that bit: bulk operations and the metadata cache are the
        // same for every pooled connection.
        let bulk = MariadbCapabilities::MARIADB_CLIENT_STMT_BULK_OPERATIONS
            | MariadbCapabilities::MARIADB_CLIENT_CACHE_METADATA;
        assert_eq!(SessionCaps::of_client(driver, bulk), SessionCaps::DRIVER);
        assert!(ext.names().contains(&"MARIADB_EXTENDED_METADATA"));
    }

    #[test]
    fn session_bits_are_passed_on_where_the_server_offers_them() {
        let driver = Caps::CLIENT_MULTI_RESULTS | Caps::CLIENT_PS_MULTI_RESULTS;
        let cli = SessionCaps::of_client(
            driver | Caps::CLIENT_INTERACTIVE | Caps::CLIENT_IGNORE_SPACE | Caps::CLIENT_FOUND_ROWS,
            MariadbCapabilities::empty(),
        );
        assert_ne!(cli, SessionCaps::DRIVER);
        let caps = cli.apply(BACKEND_CAPABILITIES, SERVER);
        assert!(caps.contains(
            Caps::CLIENT_INTERACTIVE
                | Caps::CLIENT_IGNORE_SPACE
                | Caps::CLIENT_FOUND_ROWS
                | Caps::CLIENT_MULTI_RESULTS
        ));
        assert_eq!(
            cli.names(),
            [
                "MULTI_STATEMENTS",
                "MULTI_RESULTS",
                "PS_MULTI_RESULTS",
                "FOUND_ROWS",
                "IGNORE_SPACE",
                "INTERACTIVE"
            ]
        );
        let without = SERVER - Caps::CLIENT_IGNORE_SPACE;
        assert!(
            !cli.apply(BACKEND_CAPABILITIES, without)
                .contains(Caps::CLIENT_IGNORE_SPACE)
        );
        // Sluice's own connections never ask for them.
        assert!(!BACKEND_CAPABILITIES.intersects(SessionCaps::SESSION));
    }

    #[test]
    fn applying_never_adds_a_multi_bit_the_server_lacks() {
        let negotiated = BACKEND_CAPABILITIES - Caps::CLIENT_PS_MULTI_RESULTS;
        let all = SessionCaps::of_client(
            Caps::CLIENT_MULTI_RESULTS | Caps::CLIENT_PS_MULTI_RESULTS,
            MariadbCapabilities::empty(),
        );
        assert!(
            !all.apply(negotiated, SERVER)
                .contains(Caps::CLIENT_PS_MULTI_RESULTS)
        );
    }
}
