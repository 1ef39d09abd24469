//! Byte-level scanning shared by the lexer and the fingerprint: word bytes,
//! line comments, quoted text (with doubled-quote and backslash escapes),
//! and substring search.

/// Letters, digits, `_`, `$` and every byte of a multi-byte UTF-8
/// character: one table load per byte (the fingerprint asks for every byte
/// of every word of every statement).
static WORD: [bool; 256] = {
    let mut table = [false; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        table[c] = b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80;
        c += 1;
    }
    table
};

#[inline]
pub(crate) fn is_word(c: u8) -> bool {
    WORD[c as usize]
}

pub(crate) fn line_end(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && b[i] != b'\n' {
        i += 1;
    }
    i
}

/// The index just past the quoted text starting at `start`.
pub(crate) fn quoted_end(b: &[u8], start: usize, quote: u8) -> usize {
    let mut i = start + 1;
    while i < b.len() {
        let c = b[i];
        if c == b'\\' && quote != b'`' {
            i += 2;
            continue;
        }
        i += 1;
        if c == quote {
            if b.get(i) == Some(&quote) {
                i += 1;
                continue;
            }
            return i;
        }
    }
    b.len()
}

pub(crate) fn find(haystack: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    haystack
        .get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_bytes_are_letters_digits_underscore_dollar_and_non_ascii() {
        for c in 0..=255u8 {
            let expected = c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80;
            assert_eq!(is_word(c), expected, "byte {c:#04x}");
        }
    }
}
