//! A key value as the guard's filter knows it, or why the guard must pass
//! the statement through. The rule everywhere: a value becomes a key only
//! where MariaDB's comparison of the column with that value is exactly the
//! equality of encoded keys ([`crate::guard_key`]); anything else (a
//! conversion, a collation, a mode that changes the reading of the text) is
//! a pass-through with one of the [`reason`]s, counted by it.

use crate::guard_key::{KeyKind, encode_bytes, encode_int};
use sluice_protocol::statement::{ParamValue, param_type};

/// Pass-through reasons: a fixed set of metric labels.
pub mod reason {
    /// An integer outside the key column's range (`tinyint_col = 300`).
    pub const OUT_OF_RANGE: &str = "out_of_range";
    /// `5.0`, `1e1`, a DECIMAL/FLOAT/DOUBLE parameter: compared as numbers
    /// that are not integers (`5.0 = 5`).
    pub const NON_INTEGER_LITERAL: &str = "non_integer_literal";
    /// `0x10`, `X'10'`, `b'1'`, a BIT parameter: a binary string or a
    /// number by context.
    pub const HEX_LITERAL: &str = "hex_literal";
    /// NULL: `= NULL` matches nothing, but the answer is the server's to give.
    pub const NULL: &str = "null";
    /// A string against an integer key that is not a canonical integer
    /// below 2^53 (`'5abc' = 5`, `'1e1' = 10`, `' 5'`, `'05'`).
    pub const STRING_ON_INTEGER_KEY: &str = "string_on_integer_key";
    /// A number against a string key (`'5.0' = 5`, `'05' = 5`).
    pub const NUMBER_ON_STRING_KEY: &str = "number_on_string_key";
    /// A backslash in a literal: NO_BACKSLASH_ESCAPES changes what it means
    /// (and where the literal ends).
    pub const BACKSLASH_ESCAPE: &str = "backslash_escape";
    /// `"..."`: an identifier under ANSI_QUOTES.
    pub const DOUBLE_QUOTED: &str = "double_quoted";
    /// `_utf8mb4'x'`, `N'x'`: a charset the literal names itself.
    pub const INTRODUCER: &str = "introducer";
    /// A string key whose charset is not the connection's (the literal is
    /// converted before comparing).
    pub const CHARSET_MISMATCH: &str = "charset_mismatch";
    /// A string key in a charset the guard does not reproduce.
    pub const UNSUPPORTED_CHARSET: &str = "unsupported_charset";
    /// Bytes that are not a valid string of the key's charset (the server
    /// would replace or reject them).
    pub const INVALID_STRING: &str = "invalid_string";
    /// A parameter sent with COM_STMT_SEND_LONG_DATA.
    pub const LONG_DATA: &str = "long_data";
    /// Any other value or parameter type (TRUE, temporal types, JSON, ...).
    pub const UNSUPPORTED_VALUE: &str = "unsupported_value";
    /// The execution does not line up with the template its shape came
    /// from ([`crate::lookup::LookupShape::resolve`]).
    pub const SHAPE_MISMATCH: &str = "shape_mismatch";
    /// `/*! ... */` or `/*M! ... */` in the execution's text.
    pub const VERSIONED_COMMENT: &str = "versioned_comment";

    /// Every reason above, for registering the metric's labels.
    pub const ALL: &[&str] = &[
        OUT_OF_RANGE,
        NON_INTEGER_LITERAL,
        HEX_LITERAL,
        NULL,
        STRING_ON_INTEGER_KEY,
        NUMBER_ON_STRING_KEY,
        BACKSLASH_ESCAPE,
        DOUBLE_QUOTED,
        INTRODUCER,
        CHARSET_MISMATCH,
        UNSUPPORTED_CHARSET,
        INVALID_STRING,
        LONG_DATA,
        UNSUPPORTED_VALUE,
        SHAPE_MISMATCH,
        VERSIONED_COMMENT,
    ];
}

/// A literal's source text (a span of the statement) against a key column,
/// for a connection whose `character_set_connection` is
/// `connection_charset`. On success `out` holds exactly the key.
pub fn probe_literal(
    kind: &KeyKind,
    text: &str,
    connection_charset: &str,
    out: &mut Vec<u8>,
) -> Result<(), &'static str> {
    out.clear();
    let b = text.as_bytes();
    match b {
        [b'"', ..] => Err(reason::DOUBLE_QUOTED),
        [b'\'', ..] => {
            let content = single_quoted(text)?;
            string_value(kind, content.as_bytes(), connection_charset, out)
        }
        _ if text.eq_ignore_ascii_case("null") => Err(reason::NULL),
        [b'x' | b'X' | b'b' | b'B', b'\'', ..] => Err(reason::HEX_LITERAL),
        [b'_', ..] | [b'n' | b'N', b'\'', ..] => Err(reason::INTRODUCER),
        [b'0'..=b'9' | b'-' | b'.', ..] => number_value(kind, text, out),
        _ => Err(reason::UNSUPPORTED_VALUE),
    }
}

/// A bound parameter of COM_STMT_EXECUTE against a key column:
/// `param_type` and `unsigned` from the parameter's type bytes, `value`
/// from [`sluice_protocol::statement::execute_param`]. `long_data`: some
/// parameter of this execution was sent with COM_STMT_SEND_LONG_DATA (the
/// packet does not hold it). `connection_charset` is
/// `character_set_client`, the charset of string parameters. On success
/// `out` holds exactly the key.
pub fn probe_param(
    kind: &KeyKind,
    param_type: u8,
    unsigned: bool,
    value: ParamValue<'_>,
    long_data: bool,
    connection_charset: &str,
    out: &mut Vec<u8>,
) -> Result<(), &'static str> {
    use param_type::*;
    out.clear();
    if long_data {
        return Err(reason::LONG_DATA);
    }
    match value {
        ParamValue::Null => Err(reason::NULL),
        ParamValue::Int(v) => {
            if !matches!(param_type, TINY | SHORT | INT24 | LONG | LONGLONG) || (unsigned && v < 0) {
                return Err(reason::UNSUPPORTED_VALUE);
            }
            match kind {
                KeyKind::Integer { .. } => int_key(kind, v, out),
                KeyKind::Bytes { .. } => Err(reason::NUMBER_ON_STRING_KEY),
            }
        }
        ParamValue::Bytes(b) => match param_type {
            VARCHAR | VAR_STRING | STRING | TINY_BLOB | MEDIUM_BLOB | LONG_BLOB | BLOB => {
                string_value(kind, b, connection_charset, out)
            }
            DECIMAL | NEWDECIMAL => Err(reason::NON_INTEGER_LITERAL),
            BIT => Err(reason::HEX_LITERAL),
            _ => Err(reason::UNSUPPORTED_VALUE),
        },
        ParamValue::Other(FLOAT | DOUBLE) => Err(reason::NON_INTEGER_LITERAL),
        ParamValue::Other(_) => Err(reason::UNSUPPORTED_VALUE),
    }
}

/// The content of `'...'` with `''` read as `'`. A backslash passes.
fn single_quoted(text: &str) -> Result<String, &'static str> {
    let inner = text
        .strip_prefix('\'')
        .and_then(|t| t.strip_suffix('\''))
        .ok_or(reason::UNSUPPORTED_VALUE)?;
    if inner.contains('\\') {
        return Err(reason::BACKSLASH_ESCAPE);
    }
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\'' && chars.next() != Some('\'') {
            // A lone quote inside: not one literal.
            return Err(reason::UNSUPPORTED_VALUE);
        }
        out.push(c);
    }
    Ok(out)
}

/// A number literal: an integer (optional `-`, digits) against an integer key.
fn number_value(kind: &KeyKind, text: &str, out: &mut Vec<u8>) -> Result<(), &'static str> {
    let unsigned = text.strip_prefix('-').unwrap_or(text);
    if unsigned.len() > 1
        && unsigned.as_bytes()[0] == b'0'
        && matches!(unsigned.as_bytes()[1], b'x' | b'X' | b'b' | b'B')
    {
        return Err(reason::HEX_LITERAL);
    }
    let integer = !unsigned.is_empty() && unsigned.bytes().all(|c| c.is_ascii_digit());
    let numeric = !unsigned.is_empty()
        && unsigned.bytes().any(|c| c.is_ascii_digit())
        && unsigned
            .bytes()
            .all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'e' | b'E' | b'-' | b'+'));
    if !integer && !numeric {
        return Err(reason::UNSUPPORTED_VALUE);
    }
    if let KeyKind::Bytes { .. } = kind {
        return Err(reason::NUMBER_ON_STRING_KEY);
    }
    if !integer {
        return Err(reason::NON_INTEGER_LITERAL);
    }
    let v = parse_decimal(unsigned).ok_or(reason::OUT_OF_RANGE)?;
    int_key(kind, if text.starts_with('-') { -v } else { v }, out)
}

/// Digits as an integer; None past i128 (far out of any column's range).
fn parse_decimal(digits: &str) -> Option<i128> {
    digits
        .bytes()
        .try_fold(0i128, |v, c| v.checked_mul(10)?.checked_add(i128::from(c - b'0')))
}

fn int_key(kind: &KeyKind, v: i128, out: &mut Vec<u8>) -> Result<(), &'static str> {
    let (min, max) = kind.int_range().ok_or(reason::UNSUPPORTED_VALUE)?;
    if v < min || v > max {
        return Err(reason::OUT_OF_RANGE);
    }
    encode_int(v, out);
    Ok(())
}

/// Below 2^53 every integer is exactly a double.
const EXACT_DOUBLE: i128 = 1 << 53;

/// A string value (literal content or parameter bytes) against a key.
fn string_value(
    kind: &KeyKind,
    b: &[u8],
    connection_charset: &str,
    out: &mut Vec<u8>,
) -> Result<(), &'static str> {
    match kind {
        KeyKind::Integer { .. } => {
            // MariaDB compares an integer column with a string as DOUBLEs.
            // A canonical decimal integer v with |v| < 2^53 (no sign but
            // `-`, no leading zero, no space, no exponent, not empty) converts
            // to exactly v. A column value w converts to exactly w when
            // |w| < 2^53 and otherwise to a double of magnitude >= 2^53
            // (rounding is monotonic and 2^53 is a double), so
            // double(w) == double(v) exactly when w == v: the comparison is
            // integer equality. (Were the string converted to an integer
            // instead, it would be v as well.) Anything else ('5abc' = 5,
            // '1e1' = 10, ' 5', '05', '' = 0, '-0', big values that round)
            // passes through.
            let s = std::str::from_utf8(b).map_err(|_| reason::STRING_ON_INTEGER_KEY)?;
            let digits = s.strip_prefix('-').unwrap_or(s);
            let canonical = !digits.is_empty()
                && digits.len() <= 16
                && digits.bytes().all(|c| c.is_ascii_digit())
                && (digits == "0" || !digits.starts_with('0'))
                && s != "-0";
            if !canonical {
                return Err(reason::STRING_ON_INTEGER_KEY);
            }
            let v = parse_decimal(digits).ok_or(reason::STRING_ON_INTEGER_KEY)?;
            let v = if s.starts_with('-') { -v } else { v };
            if v.abs() >= EXACT_DOUBLE {
                return Err(reason::STRING_ON_INTEGER_KEY);
            }
            int_key(kind, v, out)
        }
        KeyKind::Bytes { pad_space, charset } => {
            let charset = canonical_charset(charset);
            if charset != "binary" {
                if charset != canonical_charset(connection_charset) {
                    return Err(reason::CHARSET_MISMATCH);
                }
                let valid = match charset.as_str() {
                    "utf8mb4" => std::str::from_utf8(b).is_ok(),
                    // Three bytes at most per character.
                    "utf8mb3" => std::str::from_utf8(b).is_ok() && b.iter().all(|&c| c < 0xf0),
                    "ascii" => b.is_ascii(),
                    "latin1" => true,
                    _ => return Err(reason::UNSUPPORTED_CHARSET),
                };
                if !valid {
                    return Err(reason::INVALID_STRING);
                }
            }
            encode_bytes(*pad_space, b, out);
            Ok(())
        }
    }
}

/// Lowercase, `utf8` read as `utf8mb3` (MariaDB's name for it).
fn canonical_charset(name: &str) -> String {
    let lower = name.to_ascii_lowercase();
    if lower == "utf8" { "utf8mb3".into() } else { lower }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INT: KeyKind = KeyKind::Integer {
        unsigned: false,
        bytes: 4,
    };
    const TINY_U: KeyKind = KeyKind::Integer {
        unsigned: true,
        bytes: 1,
    };
    const BIG: KeyKind = KeyKind::Integer {
        unsigned: false,
        bytes: 8,
    };

    fn utf8_bin() -> KeyKind {
        KeyKind::Bytes {
            pad_space: true,
            charset: "utf8mb4".into(),
        }
    }

    fn binary() -> KeyKind {
        KeyKind::Bytes {
            pad_space: false,
            charset: "binary".into(),
        }
    }

    fn lit(kind: &KeyKind, text: &str) -> Result<Vec<u8>, &'static str> {
        let mut out = vec![9, 9];
        probe_literal(kind, text, "utf8mb4", &mut out).map(|()| out)
    }

    fn int_key_of(v: i128) -> Vec<u8> {
        let mut out = Vec::new();
        encode_int(v, &mut out);
        out
    }

    fn bytes_key_of(pad: bool, b: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_bytes(pad, b, &mut out);
        out
    }

    #[test]
    fn integer_literals_on_integer_keys() {
        assert_eq!(lit(&INT, "5"), Ok(int_key_of(5)));
        assert_eq!(lit(&INT, "-5"), Ok(int_key_of(-5)));
        assert_eq!(
            lit(&INT, "007"),
            Ok(int_key_of(7)),
            "a number literal, not a string"
        );
        assert_eq!(lit(&INT, "-0"), Ok(int_key_of(0)));
        assert_eq!(lit(&INT, "2147483647"), Ok(int_key_of(2_147_483_647)));
        assert_eq!(lit(&INT, "2147483648"), Err(reason::OUT_OF_RANGE));
        assert_eq!(lit(&INT, "-2147483649"), Err(reason::OUT_OF_RANGE));
        assert_eq!(lit(&TINY_U, "-1"), Err(reason::OUT_OF_RANGE));
        assert_eq!(lit(&TINY_U, "255"), Ok(int_key_of(255)));
        assert_eq!(
            lit(&BIG, "99999999999999999999999999999999999999999999"),
            Err(reason::OUT_OF_RANGE)
        );
    }

    #[test]
    fn other_numbers_on_integer_keys_pass() {
        for text in ["5.0", "5.", ".5", "1e1", "1E1", "1e-1", "-5.5", "1.5e+3"] {
            assert_eq!(lit(&INT, text), Err(reason::NON_INTEGER_LITERAL), "{text}");
        }
        for text in ["0x10", "0X10", "0b1", "X'10'", "x'10'", "b'1'", "B'1'"] {
            assert_eq!(lit(&INT, text), Err(reason::HEX_LITERAL), "{text}");
            assert_eq!(lit(&utf8_bin(), text), Err(reason::HEX_LITERAL), "{text}");
        }
        assert_eq!(lit(&INT, "NULL"), Err(reason::NULL));
        assert_eq!(lit(&INT, "null"), Err(reason::NULL));
        assert_eq!(lit(&INT, "TRUE"), Err(reason::UNSUPPORTED_VALUE));
        assert_eq!(lit(&INT, "?"), Err(reason::UNSUPPORTED_VALUE));
        assert_eq!(lit(&INT, "1abc"), Err(reason::UNSUPPORTED_VALUE));
        assert_eq!(lit(&INT, "-"), Err(reason::UNSUPPORTED_VALUE));
        assert_eq!(lit(&INT, ""), Err(reason::UNSUPPORTED_VALUE));
    }

    #[test]
    fn strings_on_integer_keys_only_when_canonical_below_2_53() {
        assert_eq!(lit(&INT, "'5'"), Ok(int_key_of(5)));
        assert_eq!(lit(&INT, "'-5'"), Ok(int_key_of(-5)));
        assert_eq!(lit(&INT, "'0'"), Ok(int_key_of(0)));
        assert_eq!(lit(&TINY_U, "'300'"), Err(reason::OUT_OF_RANGE));
        let max_exact = (1i64 << 53) - 1;
        assert_eq!(
            lit(&BIG, &format!("'{max_exact}'")),
            Ok(int_key_of(i128::from(max_exact)))
        );
        for text in [
            "'5abc'",
            "'1e1'",
            "'5.0'",
            "' 5'",
            "'5 '",
            "'+5'",
            "'05'",
            "'-0'",
            "''",
            "'0x10'",
            "'9007199254740992'",
            "'-9007199254740992'",
            "'99999999999999999999'",
        ] {
            assert_eq!(lit(&BIG, text), Err(reason::STRING_ON_INTEGER_KEY), "{text}");
        }
        assert_eq!(lit(&INT, "\"5\""), Err(reason::DOUBLE_QUOTED));
        assert_eq!(lit(&INT, "'5\\0'"), Err(reason::BACKSLASH_ESCAPE));
    }

    #[test]
    fn strings_on_string_keys() {
        assert_eq!(lit(&utf8_bin(), "'abc'"), Ok(bytes_key_of(true, b"abc")));
        assert_eq!(
            lit(&utf8_bin(), "'abc  '"),
            Ok(bytes_key_of(true, b"abc")),
            "PAD SPACE"
        );
        assert_eq!(lit(&binary(), "'abc  '"), Ok(bytes_key_of(false, b"abc  ")));
        assert_eq!(lit(&utf8_bin(), "'it''s'"), Ok(bytes_key_of(true, b"it's")));
        assert_eq!(lit(&utf8_bin(), "'é'"), Ok(bytes_key_of(true, "é".as_bytes())));
        assert_eq!(lit(&utf8_bin(), "'a\\'b'"), Err(reason::BACKSLASH_ESCAPE));
        assert_eq!(lit(&utf8_bin(), "'a\\\\'"), Err(reason::BACKSLASH_ESCAPE));
        assert_eq!(lit(&utf8_bin(), "\"abc\""), Err(reason::DOUBLE_QUOTED));
        assert_eq!(lit(&utf8_bin(), "_utf8mb4'abc'"), Err(reason::INTRODUCER));
        assert_eq!(lit(&utf8_bin(), "_binary'abc'"), Err(reason::INTRODUCER));
        assert_eq!(lit(&utf8_bin(), "N'abc'"), Err(reason::INTRODUCER));
        assert_eq!(lit(&utf8_bin(), "5"), Err(reason::NUMBER_ON_STRING_KEY));
        assert_eq!(lit(&utf8_bin(), "-5.5"), Err(reason::NUMBER_ON_STRING_KEY));
        assert_eq!(lit(&utf8_bin(), "NULL"), Err(reason::NULL));
        assert_eq!(lit(&utf8_bin(), "'a'b'"), Err(reason::UNSUPPORTED_VALUE));
        assert_eq!(lit(&utf8_bin(), "'abc"), Err(reason::UNSUPPORTED_VALUE));
        assert_eq!(lit(&utf8_bin(), "'"), Err(reason::UNSUPPORTED_VALUE));
    }

    #[test]
    fn charsets() {
        let mut out = Vec::new();
        let latin1 = KeyKind::Bytes {
            pad_space: true,
            charset: "latin1".into(),
        };
        assert_eq!(
            probe_literal(&latin1, "'a'", "utf8mb4", &mut out),
            Err(reason::CHARSET_MISMATCH)
        );
        assert_eq!(probe_literal(&latin1, "'a'", "LATIN1", &mut out), Ok(()));
        assert_eq!(
            probe_literal(&binary(), "'a'", "latin1", &mut out),
            Ok(()),
            "a binary key compares bytes whatever the connection"
        );
        let utf8 = KeyKind::Bytes {
            pad_space: true,
            charset: "utf8mb3".into(),
        };
        assert_eq!(probe_literal(&utf8, "'é'", "utf8", &mut out), Ok(()));
        assert_eq!(
            probe_literal(&utf8, "'😀'", "utf8mb3", &mut out),
            Err(reason::INVALID_STRING),
            "no 4-byte characters in utf8mb3"
        );
        let ascii = KeyKind::Bytes {
            pad_space: true,
            charset: "ascii".into(),
        };
        assert_eq!(
            probe_literal(&ascii, "'é'", "ascii", &mut out),
            Err(reason::INVALID_STRING)
        );
        let sjis = KeyKind::Bytes {
            pad_space: true,
            charset: "sjis".into(),
        };
        assert_eq!(
            probe_literal(&sjis, "'a'", "sjis", &mut out),
            Err(reason::UNSUPPORTED_CHARSET)
        );
    }

    fn param(kind: &KeyKind, t: u8, unsigned: bool, value: ParamValue<'_>) -> Result<Vec<u8>, &'static str> {
        let mut out = vec![7];
        probe_param(kind, t, unsigned, value, false, "utf8mb4", &mut out).map(|()| out)
    }

    #[test]
    fn parameters() {
        use param_type::*;
        assert_eq!(param(&INT, LONG, false, ParamValue::Int(-3)), Ok(int_key_of(-3)));
        assert_eq!(
            param(&INT, LONGLONG, false, ParamValue::Int(1 << 40)),
            Err(reason::OUT_OF_RANGE)
        );
        assert_eq!(
            param(&TINY_U, TINY, true, ParamValue::Int(200)),
            Ok(int_key_of(200))
        );
        assert_eq!(
            param(&TINY_U, TINY, true, ParamValue::Int(-1)),
            Err(reason::UNSUPPORTED_VALUE)
        );
        assert_eq!(
            param(&utf8_bin(), LONG, false, ParamValue::Int(5)),
            Err(reason::NUMBER_ON_STRING_KEY)
        );
        assert_eq!(
            param(&INT, VAR_STRING, false, ParamValue::Bytes(b"42")),
            Ok(int_key_of(42))
        );
        assert_eq!(
            param(&INT, STRING, false, ParamValue::Bytes(b"42abc")),
            Err(reason::STRING_ON_INTEGER_KEY)
        );
        assert_eq!(
            param(&INT, STRING, false, ParamValue::Bytes(b"\xff")),
            Err(reason::STRING_ON_INTEGER_KEY)
        );
        assert_eq!(
            param(&INT, NEWDECIMAL, false, ParamValue::Bytes(b"5")),
            Err(reason::NON_INTEGER_LITERAL)
        );
        assert_eq!(
            param(&INT, DOUBLE, false, ParamValue::Other(DOUBLE)),
            Err(reason::NON_INTEGER_LITERAL)
        );
        assert_eq!(
            param(&INT, BIT, false, ParamValue::Bytes(b"\x05")),
            Err(reason::HEX_LITERAL)
        );
        assert_eq!(
            param(&INT, DATE, false, ParamValue::Other(DATE)),
            Err(reason::UNSUPPORTED_VALUE)
        );
        assert_eq!(
            param(&INT, JSON, false, ParamValue::Bytes(b"5")),
            Err(reason::UNSUPPORTED_VALUE)
        );
        assert_eq!(param(&INT, LONG, false, ParamValue::Null), Err(reason::NULL));
        assert_eq!(
            param(&INT, VAR_STRING, false, ParamValue::Int(5)),
            Err(reason::UNSUPPORTED_VALUE),
            "an integer value must come from an integer type"
        );
        // Strings: bytes as sent, no escaping in the binary protocol.
        assert_eq!(
            param(&utf8_bin(), VAR_STRING, false, ParamValue::Bytes(b"a\\b ")),
            Ok(bytes_key_of(true, b"a\\b"))
        );
        assert_eq!(
            param(&utf8_bin(), BLOB, false, ParamValue::Bytes(b"a\xff")),
            Err(reason::INVALID_STRING)
        );
        assert_eq!(
            param(&binary(), BLOB, false, ParamValue::Bytes(b"a\xff")),
            Ok(bytes_key_of(false, b"a\xff"))
        );
        let mut out = Vec::new();
        assert_eq!(
            probe_param(&INT, LONG, false, ParamValue::Int(1), true, "utf8mb4", &mut out),
            Err(reason::LONG_DATA)
        );
    }

    #[test]
    fn reasons_are_distinct_labels() {
        let mut all = reason::ALL.to_vec();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), reason::ALL.len());
        assert!(
            all.iter()
                .all(|r| r.bytes().all(|c| c.is_ascii_lowercase() || c == b'_'))
        );
    }
}
