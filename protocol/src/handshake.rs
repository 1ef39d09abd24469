//! The client's handshake response (Protocol::HandshakeResponse41), read the
//! way the server reads it: field by field as the client's capability flags
//! say, tolerating what the server tolerates (a missing plugin name, no
//! attributes, trailing bytes), and refusing only what it refuses (a
//! truncated user name or auth response, an attribute block longer than the
//! packet).

use crate::consts::CapabilityFlags as Caps;
use crate::packets::{read_lenenc_bytes, read_lenenc_int};

/// The fields of a handshake response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HandshakeResponse41 {
    pub capabilities: Caps,
    /// Every capability the client set, offered or not.
    pub asked: Caps,
    pub max_packet: u32,
    pub collation: u8,
    /// MariaDB's extended capabilities (bytes 28..32 of the filler), when
    /// the client cleared CLIENT_MYSQL to announce them.
    pub mariadb_capabilities: u32,
    pub user: Vec<u8>,
    pub auth_response: Vec<u8>,
    pub database: Option<Vec<u8>>,
    pub auth_plugin: Option<Vec<u8>>,
    /// Connection attributes in the order the client sent them.
    pub attributes: Vec<(String, String)>,
}

/// Why a handshake response was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeParseError {
    TooShort,
    NoProtocol41,
    Truncated(&'static str),
}

impl std::fmt::Display for HandshakeParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandshakeParseError::TooShort => f.write_str("handshake response shorter than 32 bytes"),
            HandshakeParseError::NoProtocol41 => f.write_str("client does not speak protocol 4.1"),
            HandshakeParseError::Truncated(what) => write!(f, "handshake response truncated in {what}"),
        }
    }
}

/// Fixed part: capabilities, max packet, collation, 23 filler bytes.
const FIXED_LEN: usize = 32;

/// True for an SSL request: the fixed part alone with CLIENT_SSL set.
pub fn is_ssl_request(payload: &[u8]) -> bool {
    payload.len() == FIXED_LEN && capabilities(payload).contains(Caps::CLIENT_SSL)
}

fn capabilities(payload: &[u8]) -> Caps {
    let raw = u32::from_le_bytes([payload[0], payload[1], payload[2], payload[3]]);
    Caps::from_bits_truncate(raw)
}

fn nul_terminated<'a>(buf: &'a [u8], pos: &mut usize) -> Option<&'a [u8]> {
    let rest = buf.get(*pos..)?;
    let end = rest.iter().position(|&b| b == 0)?;
    *pos += end + 1;
    Some(&rest[..end])
}

/// A NUL-terminated string that may also end at the end of the packet
/// (some clients omit the final NUL of the last field).
fn nul_or_end<'a>(buf: &'a [u8], pos: &mut usize) -> &'a [u8] {
    let rest = buf.get(*pos..).unwrap_or(&[]);
    let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
    *pos += (end + 1).min(rest.len());
    &rest[..end]
}

/// Parses a handshake response. `server_caps` are the capabilities the
/// server offered: a field is read only when both sides set its flag.
pub fn parse_handshake_response(
    payload: &[u8],
    server_caps: Caps,
) -> Result<HandshakeResponse41, HandshakeParseError> {
    if payload.len() < FIXED_LEN {
        return Err(HandshakeParseError::TooShort);
    }
    let client_caps = capabilities(payload);
    if !client_caps.contains(Caps::CLIENT_PROTOCOL_41) {
        return Err(HandshakeParseError::NoProtocol41);
    }
    let caps = client_caps & (server_caps | Caps::CLIENT_SSL);
    let max_packet = u32::from_le_bytes([payload[4], payload[5], payload[6], payload[7]]);
    let collation = payload[8];
    let mariadb_capabilities = if client_caps.contains(Caps::CLIENT_LONG_PASSWORD) {
        0
    } else {
        u32::from_le_bytes([payload[28], payload[29], payload[30], payload[31]])
    };
    let mut pos = FIXED_LEN;
    let user = nul_terminated(payload, &mut pos)
        .ok_or(HandshakeParseError::Truncated("user name"))?
        .to_vec();
    let auth_response = if caps.contains(Caps::CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA) {
        read_lenenc_bytes(payload, &mut pos).ok_or(HandshakeParseError::Truncated("auth response"))?
    } else if caps.contains(Caps::CLIENT_SECURE_CONNECTION) {
        let len = *payload
            .get(pos)
            .ok_or(HandshakeParseError::Truncated("auth response"))? as usize;
        pos += 1;
        let data = payload
            .get(pos..pos + len)
            .ok_or(HandshakeParseError::Truncated("auth response"))?;
        pos += len;
        data
    } else {
        nul_or_end(payload, &mut pos)
    }
    .to_vec();
    let database = if caps.contains(Caps::CLIENT_CONNECT_WITH_DB) && pos < payload.len() {
        Some(nul_or_end(payload, &mut pos).to_vec())
    } else {
        None
    };
    let auth_plugin = if caps.contains(Caps::CLIENT_PLUGIN_AUTH) && pos < payload.len() {
        Some(nul_or_end(payload, &mut pos).to_vec())
    } else {
        None
    };
    let mut attributes = Vec::new();
    if caps.contains(Caps::CLIENT_CONNECT_ATTRS) && pos < payload.len() {
        let total = read_lenenc_int(payload, &mut pos).ok_or(HandshakeParseError::Truncated("attributes"))?;
        // The server refuses attribute blocks over 64 KiB.
        if total > 65_535 {
            return Err(HandshakeParseError::Truncated("attributes (over 65535 bytes)"));
        }
        let end = pos
            .checked_add(usize::try_from(total).unwrap_or(usize::MAX))
            .filter(|&e| e <= payload.len())
            .ok_or(HandshakeParseError::Truncated("attributes"))?;
        let block = &payload[..end];
        while pos < end {
            let key =
                read_lenenc_bytes(block, &mut pos).ok_or(HandshakeParseError::Truncated("attributes"))?;
            let value =
                read_lenenc_bytes(block, &mut pos).ok_or(HandshakeParseError::Truncated("attributes"))?;
            attributes.push((
                String::from_utf8_lossy(key).into_owned(),
                String::from_utf8_lossy(value).into_owned(),
            ));
        }
    }
    Ok(HandshakeResponse41 {
        capabilities: caps,
        asked: client_caps,
        max_packet,
        collation,
        mariadb_capabilities,
        user,
        auth_response,
        database: database.filter(|d| !d.is_empty()),
        auth_plugin: auth_plugin.filter(|p| !p.is_empty()),
        attributes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packets::put_lenenc_bytes;

    fn fixed(caps: Caps) -> Vec<u8> {
        let mut p = caps.bits().to_le_bytes().to_vec();
        p.extend_from_slice(&(1u32 << 24).to_le_bytes());
        p.push(45);
        p.extend_from_slice(&[0; 23]);
        p
    }

    fn all() -> Caps {
        Caps::CLIENT_PROTOCOL_41
            | Caps::CLIENT_SECURE_CONNECTION
            | Caps::CLIENT_PLUGIN_AUTH
            | Caps::CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
            | Caps::CLIENT_CONNECT_WITH_DB
            | Caps::CLIENT_CONNECT_ATTRS
            | Caps::CLIENT_LONG_PASSWORD
    }

    #[test]
    fn full_response_with_attributes() {
        let mut p = fixed(all());
        p.extend_from_slice(b"app\0");
        put_lenenc_bytes(&mut p, &[7; 20]);
        p.extend_from_slice(b"db1\0mysql_native_password\0");
        let mut attrs = Vec::new();
        for (k, v) in [("_client_name", "mysql-connector-python"), ("app_name", "x")] {
            put_lenenc_bytes(&mut attrs, k.as_bytes());
            put_lenenc_bytes(&mut attrs, v.as_bytes());
        }
        put_lenenc_bytes(&mut p, &attrs);
        let r = parse_handshake_response(&p, all()).unwrap();
        assert_eq!(r.user, b"app");
        assert_eq!(r.auth_response, vec![7; 20]);
        assert_eq!(r.database.as_deref(), Some(&b"db1"[..]));
        assert_eq!(r.auth_plugin.as_deref(), Some(&b"mysql_native_password"[..]));
        assert_eq!(r.attributes.len(), 2);
        assert_eq!(r.attributes[1], ("app_name".into(), "x".into()));
        assert_eq!(r.collation, 45);
    }

    #[test]
    fn optional_tail_fields_may_be_missing() {
        // Plugin and attribute flags set, but the packet ends after the
        // auth response (as some clients send): accepted, as the server does.
        let mut p = fixed(all());
        p.extend_from_slice(b"app\0");
        put_lenenc_bytes(&mut p, b"");
        let r = parse_handshake_response(&p, all()).unwrap();
        assert_eq!((r.database, r.auth_plugin, r.attributes.len()), (None, None, 0));
        // A plugin name without its final NUL.
        let mut p = fixed(all() - Caps::CLIENT_CONNECT_WITH_DB);
        p.extend_from_slice(b"app\0");
        put_lenenc_bytes(&mut p, b"");
        p.extend_from_slice(b"mysql_native_password");
        let r = parse_handshake_response(&p, all()).unwrap();
        assert_eq!(r.auth_plugin.as_deref(), Some(&b"mysql_native_password"[..]));
    }

    #[test]
    fn flags_the_server_did_not_offer_are_ignored() {
        // The client sets CONNECT_ATTRS but the server did not offer it:
        // the bytes after the plugin are not read as attributes.
        let mut p = fixed(all());
        p.extend_from_slice(b"app\0");
        put_lenenc_bytes(&mut p, b"");
        p.extend_from_slice(b"mysql_native_password\0\xff\xff");
        let r = parse_handshake_response(
            &p,
            all() - Caps::CLIENT_CONNECT_ATTRS - Caps::CLIENT_CONNECT_WITH_DB,
        );
        assert!(r.unwrap().attributes.is_empty());
    }

    #[test]
    fn malformed_responses_are_refused() {
        assert_eq!(
            parse_handshake_response(&[0; 10], all()),
            Err(HandshakeParseError::TooShort)
        );
        let mut p = fixed(all());
        p.extend_from_slice(b"no-terminator");
        assert!(parse_handshake_response(&p, all()).is_err());
        let mut p = fixed(all());
        p.extend_from_slice(b"app\0");
        p.push(30); // lenenc auth of 30 bytes, only 2 present
        p.extend_from_slice(&[1, 2]);
        assert!(parse_handshake_response(&p, all()).is_err());
        let mut p = fixed(all() - Caps::CLIENT_CONNECT_WITH_DB);
        p.extend_from_slice(b"app\0");
        put_lenenc_bytes(&mut p, b"");
        p.extend_from_slice(b"x\0");
        p.push(50); // attribute block longer than the packet
        p.extend_from_slice(&[1, b'a']);
        assert!(parse_handshake_response(&p, all()).is_err());
        let no41 = fixed(Caps::CLIENT_SECURE_CONNECTION);
        assert_eq!(
            parse_handshake_response(&no41, all()),
            Err(HandshakeParseError::NoProtocol41)
        );
    }
}
