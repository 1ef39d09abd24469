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

/// One bound parameter of a COM_STMT_EXECUTE, as [`execute_param`] reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamValue<'a> {
    /// The NULL bitmap's bit is set (or the type is MYSQL_TYPE_NULL).
    Null,
    /// TINY, SHORT, INT24, LONG, LONGLONG, signed or unsigned as the type's
    /// flag says.
    Int(i128),
    /// A length-encoded value: the string and blob types, and also DECIMAL,
    /// NEWDECIMAL, ENUM, SET, BIT, JSON and GEOMETRY (the type says which).
    Bytes(&'a [u8]),
    /// Any other type (FLOAT, DOUBLE, YEAR, the temporal types, unknown
    /// ones): its type byte.
    Other(u8),
}

/// Parameter type bytes (MYSQL_TYPE_*) [`execute_param`] reads.
pub mod param_type {
    pub const DECIMAL: u8 = 0x00;
    pub const TINY: u8 = 0x01;
    pub const SHORT: u8 = 0x02;
    pub const LONG: u8 = 0x03;
    pub const FLOAT: u8 = 0x04;
    pub const DOUBLE: u8 = 0x05;
    pub const NULL: u8 = 0x06;
    pub const TIMESTAMP: u8 = 0x07;
    pub const LONGLONG: u8 = 0x08;
    pub const INT24: u8 = 0x09;
    pub const DATE: u8 = 0x0a;
    pub const TIME: u8 = 0x0b;
    pub const DATETIME: u8 = 0x0c;
    pub const YEAR: u8 = 0x0d;
    pub const VARCHAR: u8 = 0x0f;
    pub const BIT: u8 = 0x10;
    pub const JSON: u8 = 0xf5;
    pub const NEWDECIMAL: u8 = 0xf6;
    pub const ENUM: u8 = 0xf7;
    pub const SET: u8 = 0xf8;
    pub const TINY_BLOB: u8 = 0xf9;
    pub const MEDIUM_BLOB: u8 = 0xfa;
    pub const LONG_BLOB: u8 = 0xfb;
    pub const BLOB: u8 = 0xfc;
    pub const VAR_STRING: u8 = 0xfd;
    pub const STRING: u8 = 0xfe;
    pub const GEOMETRY: u8 = 0xff;
    /// The flag byte's bit for an unsigned integer.
    pub const UNSIGNED_FLAG: u8 = 0x80;

    /// Types whose value is a length-encoded string.
    pub fn length_encoded(t: u8) -> bool {
        matches!(
            t,
            DECIMAL
                | VARCHAR
                | BIT
                | JSON
                | NEWDECIMAL
                | ENUM
                | SET
                | TINY_BLOB
                | MEDIUM_BLOB
                | LONG_BLOB
                | BLOB
                | VAR_STRING
                | STRING
                | GEOMETRY
        )
    }
}

/// Parameter `index` of a COM_STMT_EXECUTE `payload` for a statement of
/// `params` parameters, with the types the packet binds or, when it binds
/// none, `types` (remembered from an earlier execute; 2 bytes a parameter).
/// None when the packet is short, malformed, or a value before `index`
/// has a type whose length is unknown. Never panics.
///
/// A parameter sent with COM_STMT_SEND_LONG_DATA is not in the packet at
/// all (the values after it move up): when any parameter of the execution
/// was sent as long data, do not read this packet's values.
pub fn execute_param<'a>(
    payload: &'a [u8],
    params: u16,
    types: Option<&'a [u8]>,
    index: u16,
) -> Option<ParamValue<'a>> {
    if index >= params || payload.first() != Some(&com::STMT_EXECUTE) {
        return None;
    }
    let n = params as usize;
    let bitmap = payload.get(10..10 + n.div_ceil(8))?;
    let at = bound_flag_at(params);
    let (types, mut pos) = match payload.get(at)? {
        1 => (payload.get(at + 1..at + 1 + 2 * n)?, at + 1 + 2 * n),
        0 => (types.filter(|t| t.len() == 2 * n)?, at + 1),
        _ => return None,
    };
    let null = |i: usize| bitmap[i / 8] & (1 << (i % 8)) != 0;
    for i in 0..=index as usize {
        let (t, flags) = (types[2 * i], types[2 * i + 1]);
        let unsigned = flags & param_type::UNSIGNED_FLAG != 0;
        let here = i == index as usize;
        if null(i) || t == param_type::NULL {
            if here {
                return Some(ParamValue::Null);
            }
            continue;
        }
        let rest = payload.get(pos..)?;
        let (value, len) = match t {
            param_type::TINY => {
                let b = *rest.first()?;
                (
                    ParamValue::Int(if unsigned {
                        i128::from(b)
                    } else {
                        i128::from(b as i8)
                    }),
                    1,
                )
            }
            param_type::SHORT => {
                let b: [u8; 2] = rest.get(..2)?.try_into().ok()?;
                let v = if unsigned {
                    i128::from(u16::from_le_bytes(b))
                } else {
                    i128::from(i16::from_le_bytes(b))
                };
                (ParamValue::Int(v), 2)
            }
            param_type::LONG | param_type::INT24 => {
                let b: [u8; 4] = rest.get(..4)?.try_into().ok()?;
                let v = if unsigned {
                    i128::from(u32::from_le_bytes(b))
                } else {
                    i128::from(i32::from_le_bytes(b))
                };
                (ParamValue::Int(v), 4)
            }
            param_type::LONGLONG => {
                let b: [u8; 8] = rest.get(..8)?.try_into().ok()?;
                let v = if unsigned {
                    i128::from(u64::from_le_bytes(b))
                } else {
                    i128::from(i64::from_le_bytes(b))
                };
                (ParamValue::Int(v), 8)
            }
            param_type::YEAR => (ParamValue::Other(t), 2),
            param_type::FLOAT => (ParamValue::Other(t), 4),
            param_type::DOUBLE => (ParamValue::Other(t), 8),
            param_type::DATE | param_type::DATETIME | param_type::TIMESTAMP | param_type::TIME => {
                (ParamValue::Other(t), 1 + *rest.first()? as usize)
            }
            t if param_type::length_encoded(t) => {
                let (len, header) = lenenc(rest)?;
                let end = header.checked_add(usize::try_from(len).ok()?)?;
                (ParamValue::Bytes(rest.get(header..end)?), end)
            }
            t if here => return Some(ParamValue::Other(t)),
            _ => return None,
        };
        if rest.len() < len {
            return None;
        }
        if here {
            return Some(value);
        }
        pos += len;
    }
    None
}

/// A length-encoded integer: its value and how many bytes it took.
fn lenenc(b: &[u8]) -> Option<(u64, usize)> {
    match *b.first()? {
        v @ 0..=0xfa => Some((u64::from(v), 1)),
        0xfc => Some((u64::from(u16::from_le_bytes(b.get(1..3)?.try_into().ok()?)), 3)),
        0xfd => {
            let x = b.get(1..4)?;
            Some((u64::from(x[0]) | u64::from(x[1]) << 8 | u64::from(x[2]) << 16, 4))
        }
        0xfe => Some((u64::from_le_bytes(b.get(1..9)?.try_into().ok()?), 9)),
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

    fn params_packet(nulls: &[u8], bound: Option<&[u8]>, values: &[u8]) -> Vec<u8> {
        let mut p = vec![com::STMT_EXECUTE, 1, 0, 0, 0, 0, 1, 0, 0, 0];
        p.extend_from_slice(nulls);
        match bound {
            Some(types) => {
                p.push(1);
                p.extend_from_slice(types);
            }
            None => p.push(0),
        }
        p.extend_from_slice(values);
        p
    }

    #[test]
    fn execute_params_are_read_by_type() {
        use param_type::*;
        let types = [
            TINY,
            0,
            TINY,
            UNSIGNED_FLAG,
            SHORT,
            0,
            LONG,
            UNSIGNED_FLAG,
            LONGLONG,
            0,
            VAR_STRING,
            0,
            DOUBLE,
            0,
            LONGLONG,
            UNSIGNED_FLAG,
            DATETIME,
            0,
            STRING,
            0,
        ];
        let mut values = vec![0xff, 0xff, 0xfe, 0xff];
        values.extend_from_slice(&u32::MAX.to_le_bytes());
        values.extend_from_slice(&(-7i64).to_le_bytes());
        values.extend_from_slice(&[3, b'a', b'b', b'c']);
        values.extend_from_slice(&1.5f64.to_le_bytes());
        // param 7 (LONGLONG unsigned) is NULL; DATETIME with 4 bytes.
        values.extend_from_slice(&[4, 0xe8, 0x07, 1, 2]);
        values.extend_from_slice(&[0xfc, 2, 0, b'x', b'y']);
        let packet = params_packet(&[0b1000_0000, 0], Some(&types), &values);
        let get = |i| execute_param(&packet, 10, None, i);
        assert_eq!(get(0), Some(ParamValue::Int(-1)));
        assert_eq!(get(1), Some(ParamValue::Int(255)));
        assert_eq!(get(2), Some(ParamValue::Int(-2)));
        assert_eq!(get(3), Some(ParamValue::Int(i128::from(u32::MAX))));
        assert_eq!(get(4), Some(ParamValue::Int(-7)));
        assert_eq!(get(5), Some(ParamValue::Bytes(b"abc")));
        assert_eq!(get(6), Some(ParamValue::Other(DOUBLE)));
        assert_eq!(get(7), Some(ParamValue::Null));
        assert_eq!(get(8), Some(ParamValue::Other(DATETIME)));
        assert_eq!(get(9), Some(ParamValue::Bytes(b"xy")));
        assert_eq!(get(10), None, "past the last parameter");
        // The same values with the types remembered from an earlier execute.
        let unbound = params_packet(&[0b1000_0000, 0], None, &values);
        assert_eq!(
            execute_param(&unbound, 10, Some(&types), 5),
            Some(ParamValue::Bytes(b"abc"))
        );
        assert_eq!(execute_param(&unbound, 10, None, 5), None, "types unknown");
        assert_eq!(
            execute_param(&unbound, 10, Some(&types[..4]), 0),
            None,
            "types of another statement"
        );
        // Unsigned BIGINT above i64::MAX.
        let big = params_packet(&[0], Some(&[LONGLONG, UNSIGNED_FLAG]), &u64::MAX.to_le_bytes());
        assert_eq!(
            execute_param(&big, 1, None, 0),
            Some(ParamValue::Int(i128::from(u64::MAX)))
        );
        // An unknown type: itself is Other, what follows it cannot be found.
        let odd = params_packet(&[0], Some(&[0x42, 0, TINY, 0]), &[1, 2]);
        assert_eq!(execute_param(&odd, 2, None, 0), Some(ParamValue::Other(0x42)));
        assert_eq!(execute_param(&odd, 2, None, 1), None);
        // Truncated values.
        let short = params_packet(&[0], Some(&[LONG, 0]), &[1, 2]);
        assert_eq!(execute_param(&short, 1, None, 0), None);
        let short = params_packet(&[0], Some(&[VARCHAR, 0]), &[5, b'a']);
        assert_eq!(execute_param(&short, 1, None, 0), None);
        assert_eq!(execute_param(&[com::STMT_FETCH], 1, None, 0), None);
        assert_eq!(execute_param(&[], 1, None, 0), None);
    }

    #[test]
    fn execute_param_never_panics() {
        use proptest::prelude::*;
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let strategy = (
            proptest::collection::vec(any::<u8>(), 0..64),
            0u16..20,
            0u16..24,
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..48)),
        );
        runner
            .run(&strategy, |(mut packet, params, index, types)| {
                if let Some(first) = packet.first_mut() {
                    *first = com::STMT_EXECUTE;
                }
                let _ = execute_param(&packet, params, types.as_deref(), index);
                Ok(())
            })
            .unwrap();
        // Well-formed headers with random types and values.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..20_000 {
            let params = (next() % 6 + 1) as u16;
            let mut types = Vec::new();
            for _ in 0..params {
                let t =
                    [0x01, 0x02, 0x03, 0x08, 0x0f, 0xfe, 0xfc, 0x05, 0x0c, 0x06, 0x42][next() as usize % 11];
                types.extend_from_slice(&[t, (next() % 2) as u8 * 0x80]);
            }
            let values: Vec<u8> = (0..next() % 40).map(|_| next() as u8).collect();
            let nulls = [next() as u8];
            let packet = params_packet(&nulls, Some(&types), &values);
            for index in 0..=params {
                let _ = execute_param(&packet, params, None, index);
            }
        }
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
