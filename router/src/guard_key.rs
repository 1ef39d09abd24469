//! The empty-key guard's key: the kind of a guarded key column and the
//! bytes a key value is encoded to. The filter side (binlog rows, scans)
//! and the statement side ([`crate::probe`]) encode through these two
//! functions, so a value read from the binlog and the same value written in
//! a statement give the same bytes.

/// What a guarded key column holds, as far as comparing it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyKind {
    /// TINYINT (1), SMALLINT (2), MEDIUMINT (3), INT (4), BIGINT (8).
    Integer { unsigned: bool, bytes: u8 },
    /// A string column whose comparison is byte equality: `binary`
    /// (BINARY/VARBINARY/BLOB) or a `_bin` collation of `charset`, with
    /// trailing spaces ignored when the collation is PAD SPACE. Case- or
    /// accent-insensitive collations are never a `Bytes` key.
    Bytes { pad_space: bool, charset: String },
}

impl KeyKind {
    /// The smallest and largest value an integer column holds; None for a
    /// string column or an unknown width.
    pub fn int_range(&self) -> Option<(i128, i128)> {
        match *self {
            KeyKind::Integer { unsigned, bytes } => {
                if !matches!(bytes, 1 | 2 | 3 | 4 | 8) {
                    return None;
                }
                let bits = u32::from(bytes) * 8;
                Some(if unsigned {
                    (0, (1i128 << bits) - 1)
                } else {
                    (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1)
                })
            }
            KeyKind::Bytes { .. } => None,
        }
    }
}

/// Appends an integer key: 0x01 then the value as i128 little-endian.
pub fn encode_int(v: i128, out: &mut Vec<u8>) {
    out.push(0x01);
    out.extend_from_slice(&v.to_le_bytes());
}

/// Appends a string key: 0x02 then the bytes, trailing 0x20 trimmed when
/// the collation pads with spaces (`'a' = 'a  '`).
pub fn encode_bytes(pad_space: bool, b: &[u8], out: &mut Vec<u8>) {
    out.push(0x02);
    let end = if pad_space {
        b.iter().rposition(|&c| c != b' ').map_or(0, |i| i + 1)
    } else {
        b.len()
    };
    out.extend_from_slice(&b[..end]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_ranges() {
        let int = |unsigned, bytes| KeyKind::Integer { unsigned, bytes }.int_range();
        assert_eq!(int(false, 1), Some((-128, 127)));
        assert_eq!(int(true, 1), Some((0, 255)));
        assert_eq!(int(false, 3), Some((-8_388_608, 8_388_607)));
        assert_eq!(int(true, 4), Some((0, 4_294_967_295)));
        assert_eq!(int(false, 8), Some((i128::from(i64::MIN), i128::from(i64::MAX))));
        assert_eq!(int(true, 8), Some((0, i128::from(u64::MAX))));
        assert_eq!(int(false, 5), None);
        assert_eq!(int(false, 0), None);
        let bytes = KeyKind::Bytes {
            pad_space: true,
            charset: "binary".into(),
        };
        assert_eq!(bytes.int_range(), None);
    }

    #[test]
    fn encodings() {
        let mut out = Vec::new();
        encode_int(-2, &mut out);
        assert_eq!(out.len(), 17);
        assert_eq!(out[0], 0x01);
        assert_eq!(&out[1..], &(-2i128).to_le_bytes());
        out.clear();
        encode_bytes(true, b"ab  ", &mut out);
        assert_eq!(out, b"\x02ab");
        out.clear();
        encode_bytes(false, b"ab  ", &mut out);
        assert_eq!(out, b"\x02ab  ");
        out.clear();
        encode_bytes(true, b"   ", &mut out);
        assert_eq!(out, b"\x02", "only spaces is the empty string");
        out.clear();
        encode_bytes(true, b"a\t", &mut out);
        assert_eq!(out, b"\x02a\t", "only spaces are padding");
        // Appends.
        encode_int(1, &mut out);
        assert_eq!(out.len(), 3 + 17);
    }
}
