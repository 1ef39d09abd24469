//! The canonical bytes a guarded key is hashed as, shared by the guard's
//! filters (keys from the scan and the binlog) and the statement matcher
//! (literals from queries): one encoding, so a key found by one is found by
//! the other. Integers are encoded by value (width and signedness only
//! decide which values are in range); strings by their exact bytes, with
//! trailing spaces trimmed where the collation pads with spaces.

/// How the key column compares, decided from information_schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyKind {
    /// tinyint (1), smallint (2), mediumint (3), int (4), bigint (8).
    Integer { unsigned: bool, bytes: u8 },
    /// binary/varbinary (charset "binary", no padding) or char/varchar
    /// with a `_bin` collation (`pad_space` unless the collation is NO PAD).
    Bytes { pad_space: bool, charset: String },
}

impl KeyKind {
    /// The values an integer column can hold (inclusive); None for byte keys.
    pub fn int_range(&self) -> Option<(i128, i128)> {
        match *self {
            KeyKind::Integer { unsigned, bytes } => {
                let bits = u32::from(bytes.clamp(1, 8)) * 8;
                if unsigned {
                    Some((0, (1i128 << bits) - 1))
                } else {
                    Some((-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1))
                }
            }
            KeyKind::Bytes { .. } => None,
        }
    }

    /// Appends the encoding of `v` for an integer key, None when `v` is out
    /// of the column's range (no row can hold it) or the key is not an
    /// integer.
    pub fn encode_int_checked(&self, v: i128, out: &mut Vec<u8>) -> Option<()> {
        let (lo, hi) = self.int_range()?;
        if v < lo || v > hi {
            return None;
        }
        encode_int(v, out);
        Some(())
    }
}

/// Tag of an integer key's encoding.
pub const TAG_INT: u8 = 0x01;
/// Tag of a byte-string key's encoding.
pub const TAG_BYTES: u8 = 0x02;

/// The bytes an integer key is hashed as: 0x01 + the value as i128
/// little-endian (so the same number encodes the same whatever its width).
pub fn encode_int(v: i128, out: &mut Vec<u8>) {
    out.push(TAG_INT);
    out.extend_from_slice(&v.to_le_bytes());
}

/// The bytes a string key is hashed as: 0x02 + the bytes, with trailing
/// 0x20 trimmed when the collation is PAD SPACE (`'a' = 'a  '` there).
pub fn encode_bytes(kind_pad_space: bool, b: &[u8], out: &mut Vec<u8>) {
    out.push(TAG_BYTES);
    let mut end = b.len();
    if kind_pad_space {
        while end > 0 && b[end - 1] == b' ' {
            end -= 1;
        }
    }
    out.extend_from_slice(&b[..end]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn int(v: i128) -> Vec<u8> {
        let mut out = Vec::new();
        encode_int(v, &mut out);
        out
    }

    fn bytes(pad: bool, b: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_bytes(pad, b, &mut out);
        out
    }

    #[test]
    fn integer_encoding_is_by_value() {
        assert_eq!(int(5).len(), 17);
        assert_eq!(int(5)[0], TAG_INT);
        assert_eq!(int(5), int(5));
        assert_ne!(int(5), int(-5));
        assert_eq!(&int(-1)[1..], &[0xff; 16][..]);
        assert_eq!(&int(0x0102)[1..3], &[0x02, 0x01]);
        // An unsigned 4294967295 is not the signed -1.
        assert_ne!(int(4_294_967_295), int(-1));
    }

    #[test]
    fn string_encoding_trims_pad_space_only() {
        assert_eq!(bytes(true, b"ab  "), bytes(true, b"ab"));
        assert_ne!(bytes(false, b"ab  "), bytes(false, b"ab"));
        assert_eq!(bytes(true, b"   "), vec![TAG_BYTES]);
        assert_eq!(bytes(true, b"a\t"), vec![TAG_BYTES, b'a', b'\t']);
        assert_ne!(bytes(false, b"ab\0"), bytes(false, b"ab"));
        // Never the same as an integer's encoding.
        assert_ne!(bytes(false, &int(5)[1..]), int(5));
    }

    #[test]
    fn ranges_by_width_and_sign() {
        let r = |unsigned, bytes| KeyKind::Integer { unsigned, bytes }.int_range();
        assert_eq!(r(false, 1), Some((-128, 127)));
        assert_eq!(r(true, 1), Some((0, 255)));
        assert_eq!(r(false, 3), Some((-8_388_608, 8_388_607)));
        assert_eq!(r(true, 4), Some((0, 4_294_967_295)));
        assert_eq!(r(false, 8), Some((i64::MIN as i128, i64::MAX as i128)));
        assert_eq!(r(true, 8), Some((0, u64::MAX as i128)));
        let b = KeyKind::Bytes {
            pad_space: true,
            charset: "utf8mb4".into(),
        };
        assert_eq!(b.int_range(), None);
        let k = KeyKind::Integer {
            unsigned: true,
            bytes: 1,
        };
        let mut out = Vec::new();
        assert_eq!(k.encode_int_checked(256, &mut out), None);
        assert_eq!(k.encode_int_checked(-1, &mut out), None);
        assert!(out.is_empty());
        assert_eq!(k.encode_int_checked(255, &mut out), Some(()));
        assert_eq!(out, int(255));
    }
}
