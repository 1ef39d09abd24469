//! Binary-protocol statement packets as Sluice forwards them: the client's
//! COM_STMT_* packet with the statement id of the backend connection that
//! runs it (and, on a connection that has not seen them, the parameter
//! types the client bound earlier). Built as slices of the client's packet,
//! so the rewritten packet is written straight into the backend's write
//! buffer without an intermediate copy.

use crate::consts::com;

/// Offset of the new-params-bound flag in COM_STMT_EXECUTE: command (1),
/// statement id (4), flags (1), iteration count (4), then the NULL bitmap.
fn bound_flag_at(params: u16) -> usize {
    10 + (params as usize).div_ceil(8)
}

/// The parameter types an execute packet binds, if it binds new ones.
pub fn bound_types(packet: &[u8], params: u16) -> Option<&[u8]> {
    if params == 0 || packet.first() != Some(&com::STMT_EXECUTE) {
        return None;
    }
    let at = bound_flag_at(params);
    match packet.get(at) {
        Some(1) => packet.get(at + 1..at + 1 + 2 * params as usize),
        _ => None,
    }
}

/// A client's statement packet (COM_STMT_EXECUTE, BULK_EXECUTE, FETCH,
/// RESET, CLOSE, SEND_LONG_DATA) for a backend statement id.
pub struct ForBackend<'a> {
    command: &'a [u8],
    id: [u8; 4],
    /// Up to the new-params-bound flag (or the end).
    middle: &'a [u8],
    /// `[1]` when types are added, else empty.
    flag: &'static [u8],
    types: &'a [u8],
    tail: &'a [u8],
    /// The types the backend connection knows after this packet, when the
    /// packet binds them (sent by the client, or added here).
    pub binds: Option<&'a [u8]>,
}

impl<'a> ForBackend<'a> {
    /// `packet` with `backend_id` in place of the client's id. For an
    /// execute that relies on types bound earlier (`client_types`) on a
    /// connection that does not know them (`conn_types` differs), the
    /// types are added. A packet shorter than its header is passed as is.
    pub fn new(
        packet: &'a [u8],
        backend_id: u32,
        params: u16,
        client_types: Option<&'a [u8]>,
        conn_types: Option<&[u8]>,
    ) -> ForBackend<'a> {
        let plain = |binds| ForBackend {
            command: packet.get(..1).unwrap_or_default(),
            id: backend_id.to_le_bytes(),
            middle: packet.get(5..).unwrap_or_default(),
            flag: &[],
            types: &[],
            tail: &[],
            binds,
        };
        if packet.len() < 5 || packet[0] != com::STMT_EXECUTE || params == 0 {
            return plain(None);
        }
        let at = bound_flag_at(params);
        match packet.get(at) {
            Some(1) => plain(bound_types(packet, params)),
            Some(0) => match client_types {
                Some(types) if conn_types != Some(types) && types.len() == 2 * params as usize => {
                    ForBackend {
                        command: &packet[..1],
                        id: backend_id.to_le_bytes(),
                        middle: &packet[5..at],
                        flag: &[1],
                        types,
                        tail: &packet[at + 1..],
                        binds: Some(types),
                    }
                }
                _ => plain(None),
            },
            _ => plain(None),
        }
    }

    /// The packet's pieces, in order.
    pub fn parts(&self) -> [&[u8]; 6] {
        [
            self.command,
            &self.id,
            self.middle,
            self.flag,
            self.types,
            self.tail,
        ]
    }

    pub fn to_vec(&self) -> Vec<u8> {
        self.parts().concat()
    }
}

/// COM_STMT_CLOSE for a backend statement.
pub fn close(backend_id: u32) -> [u8; 5] {
    let id = backend_id.to_le_bytes();
    [com::STMT_CLOSE, id[0], id[1], id[2], id[3]]
}

/// COM_STMT_SEND_LONG_DATA's header for a backend statement; the data follows.
pub fn long_data_header(backend_id: u32, param: u16) -> [u8; 7] {
    let id = backend_id.to_le_bytes();
    let p = param.to_le_bytes();
    [com::STMT_SEND_LONG_DATA, id[0], id[1], id[2], id[3], p[0], p[1]]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn execute_packet(id: u32, bound: u8, types: &[u8], values: &[u8]) -> Vec<u8> {
        let mut p = vec![com::STMT_EXECUTE];
        p.extend_from_slice(&id.to_le_bytes());
        p.push(0);
        p.extend_from_slice(&1u32.to_le_bytes());
        p.push(0); // null bitmap for 2 params
        p.push(bound);
        p.extend_from_slice(types);
        p.extend_from_slice(values);
        p
    }

    #[test]
    fn execute_gets_backend_id_and_missing_types() {
        let types = [0x03, 0, 0xfe, 0];
        let client = execute_packet(7, 0, &[], &[1, 2]);
        let p = ForBackend::new(&client, 99, 2, Some(&types), None);
        assert_eq!(p.to_vec(), execute_packet(99, 1, &types, &[1, 2]));
        assert_eq!(p.binds, Some(&types[..]));
        // The connection already knows them: nothing added.
        let p = ForBackend::new(&client, 99, 2, Some(&types), Some(&types));
        assert_eq!(p.to_vec(), execute_packet(99, 0, &[], &[1, 2]));
        assert_eq!(p.binds, None);
        // Types sent by the client are what the connection knows next.
        let with = execute_packet(7, 1, &types, &[1, 2]);
        let p = ForBackend::new(&with, 5, 2, Some(&types), None);
        assert_eq!(p.to_vec(), execute_packet(5, 1, &types, &[1, 2]));
        assert_eq!(p.binds, Some(&types[..]));
        assert_eq!(bound_types(&with, 2), Some(&types[..]));
        assert_eq!(bound_types(&client, 2), None);
    }

    #[test]
    fn other_statement_packets_only_change_the_id() {
        let fetch = [com::STMT_FETCH, 7, 0, 0, 0, 10, 0, 0, 0];
        let p = ForBackend::new(&fetch, 0x0102_0304, 0, None, None);
        assert_eq!(p.to_vec(), [com::STMT_FETCH, 4, 3, 2, 1, 10, 0, 0, 0]);
        assert_eq!(close(2), [com::STMT_CLOSE, 2, 0, 0, 0]);
        assert_eq!(
            long_data_header(2, 1),
            [com::STMT_SEND_LONG_DATA, 2, 0, 0, 0, 1, 0]
        );
        // Truncated packets do not panic.
        let _ = ForBackend::new(&[com::STMT_EXECUTE, 1], 3, 2, None, None).to_vec();
        let _ = ForBackend::new(&[], 3, 2, None, None).to_vec();
    }
}
