//! The server side of connection setup: send a v10 handshake carrying the
//! primary's version, read the client's response, and check its password
//! with mysql_native_password (switching clients that start with another
//! plugin, such as caching_sha2_password, over to it).

use crate::errors;
use crate::profile::ServerProfile;
use mysql_common::constants::StatusFlags;
use mysql_common::io::ParseBuf;
use mysql_common::packets::{AuthSwitchRequest, ComChangeUser, HandshakePacket};
use mysql_common::proto::{MyDeserialize, MySerialize};
use mysql_common::scramble::scramble_native;
use rand::Rng;
use sluice_config::Config;
use sluice_protocol::PacketStream;
use sluice_protocol::consts::{CapabilityFlags as Caps, MariadbCapabilities};
use sluice_protocol::handshake as handshake_response;
use sluice_protocol::packets;
use std::io;
use tokio::net::TcpStream;

/// Capabilities Sluice can honour towards clients (intersected with the
/// primary's). No SSL or compression; DEPRECATE_EOF and SESSION_TRACK are
/// translated by the relay.
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

const NATIVE: &[u8] = b"mysql_native_password";

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
/// after the auth exchange: the caller sends the OK (or an error if the
/// requested schema does not exist).
pub async fn accept(
    client: &mut PacketStream<TcpStream>,
    connection_id: u32,
    profile: &ServerProfile,
    config: &Config,
    peer_host: &str,
) -> Result<ClientHello, HandshakeError> {
    let nonce = nonce();
    let mut caps = FRONTEND_CAPABILITIES & profile.capabilities;
    let mariadb_caps =
        profile.mariadb_capabilities & MariadbCapabilities::MARIADB_CLIENT_STMT_BULK_OPERATIONS;
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
        Some(NATIVE),
    )
    .with_mariadb_ext_capabilities(mariadb_caps);
    let mut buf = Vec::with_capacity(128);
    handshake.serialize(&mut buf);
    client.send(0, &buf).await?;

    let reply = client.read_packet().await?;
    let mut seq = reply.seq.wrapping_add(1);
    if handshake_response::is_ssl_request(&reply.payload) {
        client
            .send(
                seq,
                &errors::malformed_packet("TLS was requested but is not offered"),
            )
            .await?;
        return Err(HandshakeError::Refused("client asked for TLS"));
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
    let client_caps = response.capabilities & caps;
    let user = String::from_utf8_lossy(&response.user).into_owned();
    let mut auth_data = response.auth_response.clone();
    let native = match response.auth_plugin.as_deref() {
        None => true,
        Some(p) => p == NATIVE,
    };
    if !native {
        let switch = AuthSwitchRequest::new(NATIVE, {
            let mut d = nonce.to_vec();
            d.push(0);
            d
        });
        let mut buf = Vec::new();
        switch.serialize(&mut buf);
        client.send(seq, &buf).await?;
        let answer = client.read_packet().await?;
        seq = answer.seq.wrapping_add(1);
        auth_data = answer.payload.to_vec();
    }
    if !password_matches(config, &user, &nonce, &auth_data) {
        metrics::counter!("sluice_client_connections_rejected_total", "cause" => "access_denied")
            .increment(1);
        metrics::counter!("sluice_errors_total", "cause" => "access_denied").increment(1);
        let e = errors::access_denied(&user, peer_host, !auth_data.is_empty());
        client.send(seq, &e).await?;
        return Err(HandshakeError::Refused("access denied"));
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
    })
}

/// Checks a mysql_native_password response for `user` against the config.
pub fn password_matches(config: &Config, user: &str, nonce: &[u8], response: &[u8]) -> bool {
    let Some(entry) = config.user(user) else {
        return false;
    };
    match scramble_native(nonce, entry.secret().as_bytes()) {
        Some(expected) => constant_time_eq(&expected, response),
        // An empty password scrambles to an empty response.
        None => response.is_empty(),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A verified COM_CHANGE_USER.
pub struct ChangedUser {
    pub user: String,
    pub schema: Option<String>,
    pub collation: Option<u16>,
    pub next_seq: u8,
}

/// Handles COM_CHANGE_USER: verifies the new user's password (switching to
/// mysql_native_password with a fresh nonce when the client used another
/// plugin). On failure the client has been sent 1045.
pub async fn change_user(
    client: &mut PacketStream<TcpStream>,
    payload: &[u8],
    caps: Caps,
    handshake_nonce: &[u8; 20],
    config: &Config,
    peer_host: &str,
) -> Result<Option<ChangedUser>, io::Error> {
    // mysql_common validates the packet; it has no getters, so the fields
    // are then read from the bytes: user\0, 1-byte-length auth data, db\0,
    // charset, plugin\0, attributes.
    let fields = ComChangeUser::deserialize(caps, &mut ParseBuf(payload))
        .ok()
        .and_then(|_| split_change_user(payload));
    let Some((user, auth, schema, collation, plugin)) = fields else {
        client
            .send(1, &errors::malformed_packet("bad COM_CHANGE_USER"))
            .await?;
        return Ok(None);
    };
    let mut seq = 1u8;
    let mut nonce = *handshake_nonce;
    let mut auth_data = auth;
    if plugin.as_deref().is_some_and(|p| p != NATIVE) {
        nonce = self::nonce();
        let mut d = nonce.to_vec();
        d.push(0);
        let mut buf = Vec::new();
        AuthSwitchRequest::new(NATIVE, d).serialize(&mut buf);
        client.send(seq, &buf).await?;
        let answer = client.read_packet().await?;
        seq = answer.seq.wrapping_add(1);
        auth_data = answer.payload.to_vec();
    }
    if !password_matches(config, &user, &nonce, &auth_data) {
        metrics::counter!("sluice_errors_total", "cause" => "access_denied").increment(1);
        client
            .send(
                seq,
                &errors::access_denied(&user, peer_host, !auth_data.is_empty()),
            )
            .await?;
        return Ok(None);
    }
    Ok(Some(ChangedUser {
        user,
        schema,
        collation,
        next_seq: seq,
    }))
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

    #[test]
    fn native_password_check() {
        let config = sluice_config::Config::parse(
            "[server]\nlisten='127.0.0.1:1'\n[[users]]\nname='u'\npassword='pw'\n[[backends]]\nname='p'\naddress='127.0.0.1:2'\nrole='primary'\n",
        )
        .unwrap();
        let n = nonce();
        let good = scramble_native(&n, b"pw").unwrap();
        assert!(password_matches(&config, "u", &n, &good));
        assert!(!password_matches(&config, "u", &n, &[0; 20]));
        assert!(!password_matches(&config, "nobody", &n, &good));
    }
}
