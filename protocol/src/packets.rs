//! The packets Sluice builds or inspects itself: OK, EOF and ERR, the
//! session-state information in OK packets, and length-encoded integers.
//! Everything else is relayed as opaque bytes.

use crate::consts::status;
use mysql_common::io::ParseBuf;
use mysql_common::packets::{ErrPacket, ServerError, SqlState};
use mysql_common::proto::{MyDeserialize, MySerialize};

pub const OK_HEADER: u8 = 0x00;
pub const EOF_HEADER: u8 = 0xfe;
pub const ERR_HEADER: u8 = 0xff;
pub const LOCAL_INFILE_HEADER: u8 = 0xfb;

/// An ERR packet payload.
pub fn err(code: u16, sql_state: &[u8; 5], message: &str) -> Vec<u8> {
    let packet = ErrPacket::Error(ServerError::new(
        code,
        Some(SqlState::new(*sql_state)),
        message.as_bytes(),
    ));
    let mut out = Vec::with_capacity(9 + message.len());
    packet.serialize(&mut out);
    out
}

/// An OK packet payload with no info string (valid with and without
/// CLIENT_SESSION_TRACK).
pub fn ok(affected_rows: u64, last_insert_id: u64, status: u16, warnings: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(16);
    out.push(OK_HEADER);
    put_lenenc_int(&mut out, affected_rows);
    put_lenenc_int(&mut out, last_insert_id);
    out.extend_from_slice(&(status & !status::SESSION_STATE_CHANGED).to_le_bytes());
    out.extend_from_slice(&warnings.to_le_bytes());
    out
}

/// An EOF packet payload (for clients without CLIENT_DEPRECATE_EOF).
/// A fixed-size array: the relay sends these per result set, allocation-free.
pub fn eof(warnings: u16, status: u16) -> [u8; 5] {
    let [w0, w1] = warnings.to_le_bytes();
    let [s0, s1] = status.to_le_bytes();
    [EOF_HEADER, w0, w1, s0, s1]
}

/// The OK packet with an EOF header that ends a result set for clients with
/// CLIENT_DEPRECATE_EOF.
pub fn ok_as_eof(warnings: u16, status: u16) -> [u8; 7] {
    let [s0, s1] = (status & !status::SESSION_STATE_CHANGED).to_le_bytes();
    let [w0, w1] = warnings.to_le_bytes();
    [EOF_HEADER, 0, 0, s0, s1, w0, w1]
}

pub fn is_err(payload: &[u8]) -> bool {
    payload.first() == Some(&ERR_HEADER)
}

pub fn is_ok(payload: &[u8]) -> bool {
    payload.first() == Some(&OK_HEADER)
}

/// An old-style EOF packet (never a row: rows starting with 0xfe are longer).
pub fn is_eof(payload: &[u8]) -> bool {
    payload.first() == Some(&EOF_HEADER) && payload.len() < 9
}

/// Warnings and status of an EOF packet.
pub fn parse_eof(payload: &[u8]) -> (u16, u16) {
    let warnings = le16(payload, 1);
    let status = le16(payload, 3);
    (warnings, status)
}

/// Error code and message of an ERR packet, for logs and retries.
pub fn parse_err(payload: &[u8]) -> Option<(u16, String)> {
    let mut buf = ParseBuf(payload);
    let err = ErrPacket::deserialize(
        mysql_common::constants::CapabilityFlags::CLIENT_PROTOCOL_41,
        &mut buf,
    )
    .ok()?;
    match err {
        ErrPacket::Error(e) => Some((e.error_code(), e.message_str().into_owned())),
        ErrPacket::Progress(_) => None,
    }
}

/// The fields of an OK packet Sluice looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OkInfo<'a> {
    pub affected_rows: u64,
    pub last_insert_id: u64,
    pub status: u16,
    pub warnings: u16,
    pub info: &'a [u8],
    /// Raw session-state-change block (empty when none).
    pub session_state: &'a [u8],
}

/// Parses an OK payload (header 0x00 or 0xfe) sent on a connection with
/// CLIENT_SESSION_TRACK.
pub fn parse_ok(payload: &[u8]) -> Option<OkInfo<'_>> {
    let mut pos = 1;
    let affected_rows = read_lenenc_int(payload, &mut pos)?;
    let last_insert_id = read_lenenc_int(payload, &mut pos)?;
    if payload.len() < pos + 4 {
        return None;
    }
    let status = le16(payload, pos);
    let warnings = le16(payload, pos + 2);
    pos += 4;
    let mut info: &[u8] = &[];
    let mut session_state: &[u8] = &[];
    if pos < payload.len() {
        info = read_lenenc_bytes(payload, &mut pos)?;
        if status & status::SESSION_STATE_CHANGED != 0 && pos < payload.len() {
            session_state = read_lenenc_bytes(payload, &mut pos)?;
        }
    }
    Some(OkInfo {
        affected_rows,
        last_insert_id,
        status,
        warnings,
        info,
        session_state,
    })
}

/// Re-encodes an OK packet from a session-tracking backend for a client
/// without CLIENT_SESSION_TRACK: the session-state block is dropped. The
/// info stays length-encoded, as MariaDB and MySQL servers really send it
/// (the documented string<EOF> form breaks drivers such as mysql_async).
pub fn ok_for_client_without_session_track(ok: &OkInfo<'_>, header: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + ok.info.len());
    out.push(header);
    put_lenenc_int(&mut out, ok.affected_rows);
    put_lenenc_int(&mut out, ok.last_insert_id);
    out.extend_from_slice(&(ok.status & !status::SESSION_STATE_CHANGED).to_le_bytes());
    out.extend_from_slice(&ok.warnings.to_le_bytes());
    if !ok.info.is_empty() {
        put_lenenc_bytes(&mut out, ok.info);
    }
    out
}

/// Re-encodes an OK packet for a client that asked for session tracking,
/// keeping only the session-state entries `keep` accepts (what the
/// client's own tracking settings would have reported: Sluice's backend
/// connections track more). None when every entry is kept: the packet goes
/// as it is. With none left, the SESSION_STATE_CHANGED flag is cleared
/// too, as the server sends it.
pub fn ok_keeping_session_state(
    ok: &OkInfo<'_>,
    header: u8,
    keep: impl Fn(&StateChange<'_>) -> bool,
) -> Option<Vec<u8>> {
    if ok.session_state.is_empty() {
        return None;
    }
    let mut kept = Vec::new();
    let mut dropped = false;
    let mut pos = 0;
    while pos < ok.session_state.len() {
        let start = pos;
        pos += 1;
        read_lenenc_bytes(ok.session_state, &mut pos)?;
        let entry = &ok.session_state[start..pos];
        match state_changes(entry).next() {
            Some(change) if keep(&change) => kept.extend_from_slice(entry),
            _ => dropped = true,
        }
    }
    if !dropped {
        return None;
    }
    let mut out = Vec::with_capacity(16 + ok.info.len() + kept.len());
    out.push(header);
    put_lenenc_int(&mut out, ok.affected_rows);
    put_lenenc_int(&mut out, ok.last_insert_id);
    let status = if kept.is_empty() {
        ok.status & !status::SESSION_STATE_CHANGED
    } else {
        ok.status
    };
    out.extend_from_slice(&status.to_le_bytes());
    out.extend_from_slice(&ok.warnings.to_le_bytes());
    put_lenenc_bytes(&mut out, ok.info);
    if !kept.is_empty() {
        put_lenenc_bytes(&mut out, &kept);
    }
    Some(out)
}

/// One entry of the session-state-change block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateChange<'a> {
    SystemVariable {
        name: &'a [u8],
        value: &'a [u8],
    },
    Schema(&'a [u8]),
    /// Something else changed (user variables, temporary tables, ...).
    StateChanged,
    Gtids(&'a [u8]),
    Other(u8),
}

/// The value of one tracked system variable in a session-state block.
pub fn tracked_variable<'a>(block: &'a [u8], wanted: &[u8]) -> Option<&'a [u8]> {
    if block.is_empty() {
        return None;
    }
    state_changes(block).find_map(|change| match change {
        StateChange::SystemVariable { name, value } if name.eq_ignore_ascii_case(wanted) => Some(value),
        _ => None,
    })
}

/// Iterates the entries of a session-state-change block.
pub fn state_changes(block: &[u8]) -> impl Iterator<Item = StateChange<'_>> {
    let mut pos = 0;
    std::iter::from_fn(move || {
        if pos >= block.len() {
            return None;
        }
        let kind = block[pos];
        pos += 1;
        let data = read_lenenc_bytes(block, &mut pos)?;
        let mut at = 0;
        Some(match kind {
            0 => {
                let name = read_lenenc_bytes(data, &mut at)?;
                let value = read_lenenc_bytes(data, &mut at)?;
                StateChange::SystemVariable { name, value }
            }
            1 => StateChange::Schema(read_lenenc_bytes(data, &mut at)?),
            2 => StateChange::StateChanged,
            3 => {
                // One byte of encoding specification, then the GTID text.
                let rest = data.get(1..).unwrap_or(&[]);
                let mut p = 0;
                StateChange::Gtids(read_lenenc_bytes(rest, &mut p).unwrap_or(rest))
            }
            other => StateChange::Other(other),
        })
    })
}

pub fn le16(buf: &[u8], at: usize) -> u16 {
    match buf.get(at..at + 2) {
        Some(b) => u16::from_le_bytes([b[0], b[1]]),
        None => 0,
    }
}

/// Reads a length-encoded integer at `pos`, advancing it.
pub fn read_lenenc_int(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let first = *buf.get(*pos)?;
    let (len, value) = match first {
        0..=0xfa => (1, first as u64),
        0xfc => (3, u64::from(le16(buf, *pos + 1))),
        0xfd => {
            let b = buf.get(*pos + 1..*pos + 4)?;
            (4, u64::from(b[0]) | u64::from(b[1]) << 8 | u64::from(b[2]) << 16)
        }
        0xfe => {
            let b: [u8; 8] = buf.get(*pos + 1..*pos + 9)?.try_into().ok()?;
            (9, u64::from_le_bytes(b))
        }
        _ => return None,
    };
    if *pos + len > buf.len() {
        return None;
    }
    *pos += len;
    Some(value)
}

pub fn read_lenenc_bytes<'a>(buf: &'a [u8], pos: &mut usize) -> Option<&'a [u8]> {
    let len = usize::try_from(read_lenenc_int(buf, pos)?).ok()?;
    let bytes = buf.get(*pos..pos.checked_add(len)?)?;
    *pos += len;
    Some(bytes)
}

pub fn put_lenenc_int(out: &mut Vec<u8>, v: u64) {
    match v {
        0..=0xfa => out.push(v as u8),
        0xfb..=0xffff => {
            out.push(0xfc);
            out.extend_from_slice(&(v as u16).to_le_bytes());
        }
        0x1_0000..=0xff_ffff => {
            out.push(0xfd);
            out.extend_from_slice(&(v as u32).to_le_bytes()[..3]);
        }
        _ => {
            out.push(0xfe);
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
}

pub fn put_lenenc_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_lenenc_int(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// Where a column definition's fixed-length fields start (after catalog,
/// schema, table, original table, name and original name, and MariaDB's
/// extended type information when the connection asked for it).
pub fn column_def_fixed_fields(def: &[u8], extended: bool) -> Option<usize> {
    let mut pos = 0;
    for _ in 0..6 + usize::from(extended) {
        read_lenenc_bytes(def, &mut pos)?;
    }
    // The fixed fields' length byte, then charset (2), length (4), type.
    (def.len() > pos + 1 + 2 + 4).then_some(pos + 1)
}

/// A column definition's character set field: the collation id of the
/// result as sent (for a string column, that of `character_set_results`).
pub fn column_charset(def: &[u8], extended: bool) -> Option<u16> {
    column_def_fixed_fields(def, extended).map(|at| le16(def, at))
}

/// A column definition's type byte.
pub fn column_type(def: &[u8], extended: bool) -> Option<u8> {
    column_def_fixed_fields(def, extended).and_then(|at| def.get(at + 6).copied())
}

/// Decodes a text-protocol row into optional strings (for Sluice's own
/// control queries; client rows are never decoded).
pub fn parse_text_row(payload: &[u8]) -> Option<Vec<Option<String>>> {
    let mut pos = 0;
    let mut values = Vec::new();
    while pos < payload.len() {
        if payload[pos] == 0xfb {
            pos += 1;
            values.push(None);
        } else {
            let bytes = read_lenenc_bytes(payload, &mut pos)?;
            values.push(Some(String::from_utf8_lossy(bytes).into_owned()));
        }
    }
    Some(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenenc_roundtrip() {
        for v in [0u64, 250, 251, 65535, 65536, 0xff_ffff, 0x100_0000, u64::MAX] {
            let mut out = Vec::new();
            put_lenenc_int(&mut out, v);
            let mut pos = 0;
            assert_eq!(read_lenenc_int(&out, &mut pos), Some(v));
            assert_eq!(pos, out.len());
        }
    }

    #[test]
    fn parses_ok_with_session_state() {
        // OK, 1 row, insert id 7, status SESSION_STATE_CHANGED|AUTOCOMMIT, 0 warnings,
        // empty info, then a state block: schema "db" and sql_mode=ANSI.
        let mut block = Vec::new();
        block.push(1);
        put_lenenc_bytes(&mut block, &[2, b'd', b'b']);
        let mut var = Vec::new();
        put_lenenc_bytes(&mut var, b"sql_mode");
        put_lenenc_bytes(&mut var, b"ANSI");
        block.push(0);
        put_lenenc_bytes(&mut block, &var);
        block.push(2);
        put_lenenc_bytes(&mut block, b"1");
        let mut p = vec![0, 1, 7];
        p.extend_from_slice(&(status::SESSION_STATE_CHANGED | status::AUTOCOMMIT).to_le_bytes());
        p.extend_from_slice(&0u16.to_le_bytes());
        put_lenenc_bytes(&mut p, b"");
        put_lenenc_bytes(&mut p, &block);

        let ok = parse_ok(&p).unwrap();
        assert_eq!((ok.affected_rows, ok.last_insert_id), (1, 7));
        let changes: Vec<_> = state_changes(ok.session_state).collect();
        assert_eq!(
            changes,
            vec![
                StateChange::Schema(b"db"),
                StateChange::SystemVariable {
                    name: b"sql_mode",
                    value: b"ANSI"
                },
                StateChange::StateChanged,
            ]
        );
        let plain = ok_for_client_without_session_track(&ok, OK_HEADER);
        assert_eq!(plain, vec![0, 1, 7, 2, 0, 0, 0]);

        // For a session-tracking client: only the entries it would get.
        assert_eq!(ok_keeping_session_state(&ok, OK_HEADER, |_| true), None);
        let schema_only =
            ok_keeping_session_state(&ok, OK_HEADER, |c| matches!(c, StateChange::Schema(_))).unwrap();
        let kept = parse_ok(&schema_only).unwrap();
        assert_eq!(kept.status, ok.status);
        assert_eq!(
            state_changes(kept.session_state).collect::<Vec<_>>(),
            vec![StateChange::Schema(b"db")]
        );
        let none = ok_keeping_session_state(&ok, OK_HEADER, |_| false).unwrap();
        // Flag cleared, the (empty) info still length-encoded, no block.
        assert_eq!(none, vec![0, 1, 7, 2, 0, 0, 0, 0]);
        let with_info = OkInfo {
            info: b"Records: 1",
            ..ok
        };
        let plain = ok_for_client_without_session_track(&with_info, OK_HEADER);
        assert_eq!(&plain[7..], b"\x0aRecords: 1");
    }

    #[test]
    fn eof_detection_ignores_long_rows() {
        assert!(is_eof(&eof(1, 2)));
        let mut row = vec![0xfe];
        row.extend_from_slice(&[0; 8]);
        assert!(!is_eof(&row));
        assert_eq!(parse_eof(&eof(3, 0x22)), (3, 0x22));
    }

    #[test]
    fn err_packet_roundtrip() {
        let p = err(
            1045,
            b"28000",
            "Access denied for user 'x'@'h' (using password: YES)",
        );
        assert!(is_err(&p));
        let (code, msg) = parse_err(&p).unwrap();
        assert_eq!(code, 1045);
        assert!(msg.starts_with("Access denied"));
    }
}
