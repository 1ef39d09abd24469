//! Keys as the filters hash them: the router's canonical encoding
//! ([`sluice_router::guard_key`]) applied to values from the scan (text
//! protocol) and from binlog row images (typed, but with unsigned columns
//! decoded as signed when the binlog carries no signedness metadata).

pub use sluice_router::guard_key::{KeyKind, encode_bytes, encode_int};

use mysql_common::value::Value;

/// Encodes a value from the scan (text protocol: integers arrive as decimal
/// text). None for NULL (never looked up) or a value the kind cannot hold.
pub fn encode_text(kind: &KeyKind, value: &Value, out: &mut Vec<u8>) -> Option<()> {
    out.clear();
    match (kind, value) {
        (_, Value::NULL) => None,
        (KeyKind::Integer { .. }, Value::Bytes(b)) => {
            let v: i128 = std::str::from_utf8(b).ok()?.trim().parse().ok()?;
            kind.encode_int_checked(v, out)
        }
        (KeyKind::Integer { .. }, Value::Int(v)) => kind.encode_int_checked(i128::from(*v), out),
        (KeyKind::Integer { .. }, Value::UInt(v)) => kind.encode_int_checked(i128::from(*v), out),
        (KeyKind::Bytes { pad_space, .. }, Value::Bytes(b)) => {
            encode_bytes(*pad_space, b, out);
            Some(())
        }
        _ => None,
    }
}

/// What a binlog value turned out to be.
#[derive(Debug, PartialEq, Eq)]
pub enum Binlogged {
    /// Encoded into `out`.
    Key,
    /// NULL: nothing to add.
    Null,
    /// The value's type does not match the key column (the table changed
    /// under the stream): the filter cannot be trusted.
    Mismatch,
}

/// Encodes a value from a binlog row image. Integers are reinterpreted by
/// the column's width when it is unsigned (an unsigned INT 4294967295 may
/// decode as -1).
pub fn encode_binlog(kind: &KeyKind, value: &Value, out: &mut Vec<u8>) -> Binlogged {
    out.clear();
    let v: i128 = match (kind, value) {
        (_, Value::NULL) => return Binlogged::Null,
        (KeyKind::Integer { unsigned, bytes }, Value::Int(v)) => {
            if *unsigned {
                let bits = u32::from((*bytes).clamp(1, 8)) * 8;
                let mask: u64 = if bits >= 64 { u64::MAX } else { (1u64 << bits) - 1 };
                i128::from((*v as u64) & mask)
            } else {
                i128::from(*v)
            }
        }
        (KeyKind::Integer { .. }, Value::UInt(v)) => i128::from(*v),
        (KeyKind::Bytes { pad_space, .. }, Value::Bytes(b)) => {
            encode_bytes(*pad_space, b, out);
            return Binlogged::Key;
        }
        _ => return Binlogged::Mismatch,
    };
    match kind.encode_int_checked(v, out) {
        Some(()) => Binlogged::Key,
        None => Binlogged::Mismatch,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc_int(v: i128) -> Vec<u8> {
        let mut out = Vec::new();
        encode_int(v, &mut out);
        out
    }

    #[test]
    fn unsigned_binlog_values_are_reinterpreted_by_width() {
        let mut out = Vec::new();
        let u32k = KeyKind::Integer {
            unsigned: true,
            bytes: 4,
        };
        assert_eq!(encode_binlog(&u32k, &Value::Int(-1), &mut out), Binlogged::Key);
        assert_eq!(out, enc_int(4_294_967_295));
        let u64k = KeyKind::Integer {
            unsigned: true,
            bytes: 8,
        };
        assert_eq!(encode_binlog(&u64k, &Value::Int(-1), &mut out), Binlogged::Key);
        assert_eq!(out, enc_int(u64::MAX as i128));
        assert_eq!(
            encode_binlog(&u64k, &Value::UInt(u64::MAX), &mut out),
            Binlogged::Key
        );
        assert_eq!(out, enc_int(u64::MAX as i128));
        let u24 = KeyKind::Integer {
            unsigned: true,
            bytes: 3,
        };
        assert_eq!(
            encode_binlog(&u24, &Value::Int(16_777_215), &mut out),
            Binlogged::Key
        );
        assert_eq!(out, enc_int(16_777_215));
        let s8 = KeyKind::Integer {
            unsigned: false,
            bytes: 1,
        };
        assert_eq!(encode_binlog(&s8, &Value::Int(-128), &mut out), Binlogged::Key);
        assert_eq!(out, enc_int(-128));
        assert_eq!(
            encode_binlog(&s8, &Value::Int(300), &mut out),
            Binlogged::Mismatch
        );
        assert_eq!(encode_binlog(&s8, &Value::NULL, &mut out), Binlogged::Null);
        assert_eq!(
            encode_binlog(&s8, &Value::Bytes(b"1".to_vec()), &mut out),
            Binlogged::Mismatch
        );
    }

    #[test]
    fn scan_and_binlog_agree() {
        let k = KeyKind::Integer {
            unsigned: true,
            bytes: 4,
        };
        let mut a = Vec::new();
        let mut b = Vec::new();
        encode_text(&k, &Value::Bytes(b"4294967295".to_vec()), &mut a).unwrap();
        encode_binlog(&k, &Value::Int(-1), &mut b);
        assert_eq!(a, b);
        let s = KeyKind::Bytes {
            pad_space: true,
            charset: "utf8mb4".into(),
        };
        encode_text(&s, &Value::Bytes(b"ab ".to_vec()), &mut a).unwrap();
        encode_binlog(&s, &Value::Bytes(b"ab".to_vec()), &mut b);
        assert_eq!(a, b);
        assert_eq!(encode_text(&k, &Value::NULL, &mut a), None);
        assert_eq!(encode_text(&k, &Value::Bytes(b"x".to_vec()), &mut a), None);
    }
}
