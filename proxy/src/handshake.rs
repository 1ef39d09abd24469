//! The server side of connection setup: send a v10 handshake carrying the
//! primary's version, upgrade to TLS when the client asks (and TLS is
//! configured), read the client's response, and check its password
//! (`auth`).

use crate::auth::{self, Exchange, NATIVE, Verdict};
use crate::errors;
use crate::shared::Shared;
use crate::tls::ClientStream;
use mysql_common::constants::StatusFlags;
use mysql_common::io::ParseBuf;
use mysql_common::packets::{ComChangeUser, HandshakePacket};
use mysql_common::proto::{MyDeserialize, MySerialize};
use rand::Rng;
use sluice_pool::Credential;
use sluice_protocol::PacketStream;
use sluice_protocol::consts::{CapabilityFlags as Caps, MariadbCapabilities};
use sluice_protocol::handshake as handshake_response;
use sluice_protocol::packets;
use std::io;
use std::net::IpAddr;

/// Capabilities Sluice can honour towards clients (intersected with the
/// primary's). CLIENT_SSL is added when `[server.tls]` is set; no
/// compression; DEPRECATE_EOF and SESSION_TRACK are translated by the relay.
pub const FRONTEND_CAPABILITIES: Caps = Caps::from_bits_truncate(
    Caps::CLIENT_LONG_PASSWORD.bits()
        | Caps::CLIENT_FOUND_ROWS.bits()
        | Caps::CLIENT_LONG_FLAG.bits()
        | Caps::CLIENT_CONNECT_WITH_DB.bits()
        | Caps::CLIENT_ODBC.bits()
        | Caps::CLIENT_LOCAL_FILES.bits()
        | Caps::CLIENT_IGNORE_SPACE.bits()
        | Caps::CLIENT_PROTOCOL_41.bits()
        | Caps::CLIENT_INTERACTIVE.bits()
        | Caps::CLIENT_TRANSACTIONS.bits()
        | Caps::CLIENT_SECURE_CONNECTION.bits()
        | Caps::CLIENT_MULTI_STATEMENTS.bits()
        | Caps::CLIENT_MULTI_RESULTS.bits()
        | Caps::CLIENT_PS_MULTI_RESULTS.bits()
        | Caps::CLIENT_PLUGIN_AUTH.bits()
        | Caps::CLIENT_CONNECT_ATTRS.bits()
        | Caps::CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA.bits()
        | Caps::CLIENT_SESSION_TRACK.bits()
        | Caps::CLIENT_DEPRECATE_EOF.bits(),
);

/// A client that passed authentication.
#[derive(Debug, Clone)]
pub struct ClientHello {
    pub user: String,
    pub schema: Option<String>,
    pub capabilities: Caps,
    pub mariadb_capabilities: MariadbCapabilities,
    pub collation: u16,
    /// Connection attributes, in the client's order.
    pub attributes: Vec<(String, String)>,
    /// Sequence id for the server's next packet (the OK).
    pub next_seq: u8,
    /// The nonce of the initial handshake (COM_CHANGE_USER scrambles with it).
    pub nonce: [u8; 20],
    /// What opens this user's backend connections.
    pub credential: Credential,
}

/// Why a connection did not get past setup.
#[derive(Debug)]
pub enum HandshakeError {
    Io(io::Error),
    /// Already answered with an ERR packet (access denied, bad packet...).
    Refused(&'static str),
}

impl From<io::Error> for HandshakeError {
    fn from(e: io::Error) -> Self {
        HandshakeError::Io(e)
    }
}

pub fn nonce() -> [u8; 20] {
    let mut rng = rand::rng();
    let mut n = [0u8; 20];
    for b in &mut n {
        // Printable, never 0: some clients treat the nonce as a C string.
        *b = rng.random_range(33..127);
    }
    n
}

/// Runs the handshake and authentication. On success nothing has been sent
/// after the auth exchange but queued packets: the caller sends the OK (or
/// an error if the requested schema does not exist).
pub async fn accept(
    client: &mut PacketStream<ClientStream>,
    connection_id: u32,
    shared: &Shared,
    peer_host: IpAddr,
) -> Result<ClientHello, HandshakeError> {
    let profile = shared.profile.load_full();
    let tls_config = shared.tls.load_full();
    let plugin = match shared.config.load().server.default_auth_plugin {
        sluice_config::AuthPluginName::MysqlNativePassword => NATIVE,
        sluice_config::AuthPluginName::CachingSha2Password => auth::CACHING_SHA2,
    };
    let nonce = nonce();
    let mut caps = FRONTEND_CAPABILITIES & profile.capabilities;
    if tls_config.is_some() {
        caps |= Caps::CLIENT_SSL;
    }
    // The metadata cache is offered when the primary has it; replicas may
    // not (a rolling upgrade): the relay translates between a client that
    // caches and a server that does not, and back.
    // Extended metadata is offered when the primary has it: a client that
    // takes it gets pooled connections that negotiated it too.
    let mariadb_caps = profile.mariadb_capabilities
        & (MariadbCapabilities::MARIADB_CLIENT_STMT_BULK_OPERATIONS
            | MariadbCapabilities::MARIADB_CLIENT_CACHE_METADATA
            | MariadbCapabilities::MARIADB_CLIENT_EXTENDED_METADATA);
    if !mariadb_caps.is_empty() {
        // MariaDB signals extended capabilities by clearing CLIENT_MYSQL.
        caps.remove(Caps::CLIENT_LONG_PASSWORD);
    }
    let mut scramble_2 = nonce[8..].to_vec();
    scramble_2.push(0);
    let mut scramble_1 = [0u8; 8];
    scramble_1.copy_from_slice(&nonce[..8]);
    let handshake = HandshakePacket::new(
        10,
        profile.version.as_bytes(),
        connection_id,
        scramble_1,
        Some(scramble_2),
        caps,
        profile.default_collation,
        StatusFlags::SERVER_STATUS_AUTOCOMMIT,
        Some(plugin),
    )
    .with_mariadb_ext_capabilities(mariadb_caps);
    let mut buf = Vec::with_capacity(128);
    handshake.serialize(&mut buf);
    client.send(0, &buf).await?;

    let mut reply = client.read_packet().await?;
    let mut seq = reply.seq.wrapping_add(1);
    let mut tls = false;
    if handshake_response::is_ssl_request(&reply.payload) {
        let Some(tls_config) = tls_config else {
            client
                .send(
                    seq,
                    &errors::malformed_packet("TLS was requested but is not offered"),
                )
                .await?;
            return Err(HandshakeError::Refused("client asked for TLS"));
        };
        // Bytes of the TLS ClientHello may already sit behind the request.
        let early = client.take_read_buffer();
        if let Err(e) = client.io_mut().upgrade(tls_config, early).await {
            metrics::counter!("sluice_client_tls_handshakes_total", "result" => "error").increment(1);
            tracing::info!("TLS handshake with a client failed: {e}");
            return Err(HandshakeError::Refused("TLS handshake failed"));
        }
        metrics::counter!("sluice_client_tls_handshakes_total", "result" => "ok").increment(1);
        tracing::debug!(tls = ?client.get_ref().tls_summary(), "client connection encrypted");
        tls = true;
        reply = client.read_packet().await?;
        seq = reply.seq.wrapping_add(1);
    }
    let response = match handshake_response::parse_handshake_response(&reply.payload, caps) {
        Ok(r) => r,
        Err(e @ handshake_response::HandshakeParseError::NoProtocol41) => {
            client
                .send(seq, &errors::malformed_packet(&e.to_string()))
                .await?;
            return Err(HandshakeError::Refused("client without PROTOCOL_41"));
        }
        Err(e) => {
            tracing::info!("refusing a malformed handshake response: {e}");
            client
                .send(
                    seq,
                    &errors::malformed_packet(&format!("bad handshake response: {e}")),
                )
                .await?;
            return Err(HandshakeError::Refused("malformed handshake response"));
        }
    };
    if response.asked.contains(Caps::CLIENT_COMPRESS) && !caps.contains(Caps::CLIENT_COMPRESS) {
        // Sluice does not offer compression, yet mysqlnd asks for it when
        // told to and then compresses: refuse now, with the reason, rather
        // than misread its packets.
        metrics::counter!("sluice_errors_total", "cause" => "compression_requested").increment(1);
        client.send(seq, &errors::compression_unsupported()).await?;
        return Err(HandshakeError::Refused("client asked for compression"));
    }
    let client_caps = response.capabilities & caps;
    let user = String::from_utf8_lossy(&response.user).into_owned();
    let config = shared.config.load_full();
    let entry = config.user(&user);
    let used_password = !response.auth_response.is_empty();
    let mut ex = Exchange { client, seq, tls };
    let verdict = auth::verify(
        &mut ex,
        &shared.auth,
        entry,
        response.auth_plugin.as_deref(),
        &nonce,
        response.auth_response.clone(),
    )
    .await?;
    let seq = ex.seq;
    let credential = match verdict {
        Verdict::Accepted(c) => c,
        Verdict::Denied => {
            client
                .send(
                    seq,
                    &auth::refusal("access_denied", &user, &peer_host.to_string(), used_password),
                )
                .await?;
            return Err(HandshakeError::Refused("access denied"));
        }
    };
    if entry.is_some_and(|u| u.require_tls) && !tls {
        // The server's answer to a REQUIRE SSL account over plain text.
        client
            .send(
                seq,
                &auth::refusal("tls_required", &user, &peer_host.to_string(), used_password),
            )
            .await?;
        return Err(HandshakeError::Refused("user requires TLS"));
    }
    let schema = response
        .database
        .as_deref()
        .map(|d| String::from_utf8_lossy(d).into_owned());
    Ok(ClientHello {
        user,
        schema,
        capabilities: client_caps,
        mariadb_capabilities: MariadbCapabilities::from_bits_truncate(response.mariadb_capabilities)
            & mariadb_caps,
        collation: u16::from(response.collation),
        attributes: response.attributes,
        next_seq: seq,
        nonce,
        credential,
    })
}

/// A verified COM_CHANGE_USER.
pub struct ChangedUser {
    pub user: String,
    pub schema: Option<String>,
    pub collation: Option<u16>,
    pub next_seq: u8,
    pub credential: Credential,
}

/// Handles COM_CHANGE_USER: verifies the new user's password with the
/// plugin the client used (switching others to mysql_native_password). On
/// failure the client has been sent 1045.
pub async fn change_user(
    client: &mut PacketStream<ClientStream>,
    payload: &[u8],
    caps: Caps,
    handshake_nonce: &[u8; 20],
    shared: &Shared,
    peer_host: IpAddr,
) -> Result<Option<ChangedUser>, io::Error> {
    // mysql_common validates the packet; it has no getters, so the fields
    // are then read from the bytes: user\0, 1-byte-length auth data, db\0,
    // charset, plugin\0, attributes.
    let fields = ComChangeUser::deserialize(caps, &mut ParseBuf(payload))
        .ok()
        .and_then(|_| split_change_user(payload));
    let Some((user, auth_data, schema, collation, plugin)) = fields else {
        client
            .send(1, &errors::malformed_packet("bad COM_CHANGE_USER"))
            .await?;
        return Ok(None);
    };
    let config = shared.config.load_full();
    let entry = config.user(&user);
    let tls = client.get_ref().is_tls();
    let used_password = !auth_data.is_empty();
    let mut ex = Exchange { client, seq: 1, tls };
    let verdict = auth::verify(
        &mut ex,
        &shared.auth,
        entry,
        plugin.as_deref(),
        handshake_nonce,
        auth_data,
    )
    .await?;
    let seq = ex.seq;
    let cause = match verdict {
        Verdict::Accepted(_) if entry.is_some_and(|u| u.require_tls) && !tls => "tls_required",
        Verdict::Accepted(credential) => {
            return Ok(Some(ChangedUser {
                user,
                schema,
                collation,
                next_seq: seq,
                credential,
            }));
        }
        Verdict::Denied => "access_denied",
    };
    metrics::counter!("sluice_errors_total", "cause" => cause).increment(1);
    client
        .send(
            seq,
            &errors::access_denied(&user, &peer_host.to_string(), used_password),
        )
        .await?;
    Ok(None)
}

type ChangeUserFields = (String, Vec<u8>, Option<String>, Option<u16>, Option<Vec<u8>>);

fn split_change_user(payload: &[u8]) -> Option<ChangeUserFields> {
    let mut pos = 1;
    let user_end = pos + payload.get(pos..)?.iter().position(|&b| b == 0)?;
    let user = String::from_utf8_lossy(&payload[pos..user_end]).into_owned();
    pos = user_end + 1;
    let auth_len = *payload.get(pos)? as usize;
    pos += 1;
    let auth = payload.get(pos..pos + auth_len)?.to_vec();
    pos += auth_len;
    let db_end = pos + payload.get(pos..)?.iter().position(|&b| b == 0)?;
    let schema = Some(String::from_utf8_lossy(&payload[pos..db_end]).into_owned()).filter(|s| !s.is_empty());
    pos = db_end + 1;
    let mut collation = None;
    let mut plugin = None;
    if payload.len() >= pos + 2 {
        collation = Some(packets::le16(payload, pos));
        pos += 2;
        if let Some(rest) = payload.get(pos..) {
            let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
            if end > 0 {
                plugin = Some(rest[..end].to_vec());
            }
        }
    }
    Some((user, auth, schema, collation, plugin))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_user_fields_are_split() {
        let mut p = vec![0x11];
        p.extend_from_slice(b"app\0");
        p.push(3);
        p.extend_from_slice(&[1, 2, 3]);
        p.extend_from_slice(b"db1\0");
        p.extend_from_slice(&45u16.to_le_bytes());
        p.extend_from_slice(b"mysql_native_password\0");
        let (user, auth, schema, collation, plugin) = split_change_user(&p).unwrap();
        assert_eq!(user, "app");
        assert_eq!(auth, vec![1, 2, 3]);
        assert_eq!(schema.as_deref(), Some("db1"));
        assert_eq!(collation, Some(45));
        assert_eq!(plugin.as_deref(), Some(NATIVE));
    }
}
