//! The statement fingerprint that keys the classification cache: literals
//! become `?` (their spans are kept, in order), whitespace folds to one
//! space, comments are dropped except `/* sluice:... */` hints, and lists of
//! literals collapse (`IN (?, ?, ?)` and `IN (?)` share an entry). One pass,
//! no allocation once the caller's buffers have grown.

use crate::scan::{find, is_word, line_end, quoted_end};
use std::ops::Range;

/// Normalizes `sql` into `out` and records literal spans into `literals`.
/// Returns the xxh3 hash of the normalized text.
pub fn fingerprint(sql: &str, out: &mut Vec<u8>, literals: &mut Vec<Range<usize>>) -> u64 {
    fingerprint_with(sql, out, literals, |_| {})
}

/// [`fingerprint`], also saying for each literal whether it starts a new
/// `?` in the normalized text (`true`) or was folded into the list before
/// it (`false`: it followed `?` and a comma). A run of literals starting
/// with `true` is one group: its size may differ between executions of the
/// same fingerprint. Used on a cache miss only ([`crate::lookup`]).
pub fn fingerprint_groups(
    sql: &str,
    out: &mut Vec<u8>,
    literals: &mut Vec<Range<usize>>,
    heads: &mut Vec<bool>,
) -> u64 {
    heads.clear();
    fingerprint_with(sql, out, literals, |head| heads.push(head))
}

#[inline(always)]
fn fingerprint_with(
    sql: &str,
    out: &mut Vec<u8>,
    literals: &mut Vec<Range<usize>>,
    mut literal_pushed: impl FnMut(bool),
) -> u64 {
    out.clear();
    literals.clear();
    let b = sql.as_bytes();
    let mut i = 0;
    let mut in_versioned = false;
    while i < b.len() {
        let c = b[i];
        match c {
            b' ' | b'\t' | b'\n' | b'\r' | b'\x0c' => i += 1,
            b'#' => i = line_end(b, i),
            b'-' if b.get(i + 1) == Some(&b'-') && b.get(i + 2).is_none_or(|c| c.is_ascii_whitespace()) => {
                i = line_end(b, i)
            }
            b'*' if in_versioned && b.get(i + 1) == Some(&b'/') => {
                in_versioned = false;
                i += 2;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                // Versioned comments (`/*!`, MariaDB's `/*M!`) are code, as
                // the lexer reads them: keep the body, or `... /*M! FOR
                // UPDATE */` would share the plain statement's entry.
                let versioned = match b.get(i + 2) {
                    Some(&b'!') => Some(3),
                    Some(&b'M') if b.get(i + 3) == Some(&b'!') => Some(4),
                    _ => None,
                };
                if let Some(skip) = versioned {
                    i += skip;
                    while b.get(i).is_some_and(u8::is_ascii_digit) {
                        i += 1;
                    }
                    in_versioned = true;
                    continue;
                }
                let end = find(b, i + 2, b"*/").unwrap_or(b.len());
                let body = sql[i + 2..end].trim();
                if body.starts_with("sluice:") {
                    push_token(out, b"/*");
                    out.extend_from_slice(body.as_bytes());
                    out.extend_from_slice(b"*/");
                }
                i = (end + 2).min(b.len());
            }
            b'\'' | b'"' => {
                let end = quoted_end(b, i, c);
                literals.push(i..end);
                literal_pushed(push_literal(out));
                i = end;
            }
            b'`' => {
                let end = quoted_end(b, i, c);
                push_token(out, &b[i..end]);
                i = end;
            }
            // A prepared statement's placeholder is not a literal: `id = ?`
            // and `id = 5` are different templates (the guard reads the
            // value from the parameters in one, from the text in the other).
            b'?' => {
                push_token(out, b"?p");
                i += 1;
            }
            // A minus right after an operator, `(` or `,` belongs to the number.
            b'-' if b.get(i + 1).is_some_and(u8::is_ascii_digit)
                && !out
                    .last()
                    .is_some_and(|&l| is_word(l) || matches!(l, b'?' | b')' | b'`')) =>
            {
                let end = number_end(b, i + 1);
                literals.push(i..end);
                literal_pushed(push_literal(out));
                i = end;
            }
            b'0'..=b'9' => {
                let end = number_end(b, i);
                literals.push(i..end);
                literal_pushed(push_literal(out));
                i = end;
            }
            b'.' if b.get(i + 1).is_some_and(u8::is_ascii_digit)
                && !out.last().is_some_and(|&l| is_word(l)) =>
            {
                let end = number_end(b, i + 1);
                literals.push(i..end);
                literal_pushed(push_literal(out));
                i = end;
            }
            c if is_word(c) || c == b'@' => {
                let start = i;
                i += 1;
                while i < b.len() && (is_word(b[i]) || b[i] == b'@' || b[i] == b'.') {
                    i += 1;
                }
                push_token(out, &b[start..i]);
            }
            _ => {
                // Operators: keep multi-byte ones (<=, :=, ->>) together.
                let start = i;
                i += 1;
                while i < b.len() && is_operator(b[i]) && is_operator(c) {
                    i += 1;
                }
                push_token(out, &b[start..i]);
            }
        }
    }
    xxhash_rust::xxh3::xxh3_64(out)
}

fn push_token(out: &mut Vec<u8>, token: &[u8]) {
    if !out.is_empty() {
        out.push(b' ');
    }
    out.extend_from_slice(token);
}

/// Emits `?`, folding a literal that continues a `? , ` list into it.
/// False when folded.
fn push_literal(out: &mut Vec<u8>) -> bool {
    if out.ends_with(b"? ,") {
        out.truncate(out.len() - 2);
        return false;
    }
    push_token(out, b"?");
    true
}

fn is_operator(c: u8) -> bool {
    matches!(c, b'<' | b'>' | b'=' | b'!' | b':' | b'|' | b'&' | b'-')
}

fn number_end(b: &[u8], mut i: usize) -> usize {
    if b.get(i) == Some(&b'0') && matches!(b.get(i + 1), Some(b'x' | b'X' | b'b' | b'B')) {
        i += 2;
        while i < b.len() && b[i].is_ascii_hexdigit() {
            i += 1;
        }
        return i;
    }
    while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.') {
        i += 1;
    }
    if i < b.len()
        && matches!(b[i], b'e' | b'E')
        && b.get(i + 1)
            .is_some_and(|c| c.is_ascii_digit() || *c == b'-' || *c == b'+')
    {
        i += 2;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
    }
    // An identifier that starts with digits (`1abc`) is not a number.
    while i < b.len() && is_word(b[i]) {
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(sql: &str) -> (String, Vec<String>) {
        let mut out = Vec::new();
        let mut lits = Vec::new();
        fingerprint(sql, &mut out, &mut lits);
        (
            String::from_utf8(out).unwrap(),
            lits.into_iter().map(|r| sql[r].to_string()).collect(),
        )
    }

    #[test]
    fn mariadb_versioned_comments_are_code() {
        let (plain, _) = norm("SELECT c FROM t WHERE id = 1");
        let (locking, _) = norm("SELECT c FROM t WHERE id = 1 /*M!100000 FOR UPDATE */");
        assert_ne!(plain, locking);
        assert_eq!(locking, "SELECT c FROM t WHERE id = ? FOR UPDATE");
        let (mysql, _) = norm("SELECT c FROM t WHERE id = 1 /*!50000 FOR UPDATE */");
        assert_eq!(mysql, locking);
    }

    #[test]
    fn placeholders_and_literals_are_different_templates() {
        let (with_literal, _) = norm("SELECT c FROM t WHERE id = 5");
        let (with_placeholder, lits) = norm("SELECT c FROM t WHERE id = ?");
        assert_ne!(with_literal, with_placeholder);
        assert!(lits.is_empty());
        // A literal after a placeholder does not fold into it.
        let (n, l) = norm("SELECT c FROM t WHERE id IN (?, 5)");
        assert_eq!(n, "SELECT c FROM t WHERE id IN ( ?p , ? )");
        assert_eq!(l, vec!["5"]);
    }

    #[test]
    fn literals_become_placeholders_in_order() {
        let (n, l) = norm("SELECT c FROM sbtest1 WHERE id=12345 AND name = 'it''s'");
        assert_eq!(n, "SELECT c FROM sbtest1 WHERE id = ? AND name = ?");
        assert_eq!(l, vec!["12345", "'it''s'"]);
    }

    #[test]
    fn whitespace_and_comments_fold_but_hints_stay() {
        let (a, _) = norm("select  /* x */ 1 -- y\n from t # z");
        let (b, _) = norm("select 2\nfrom t");
        assert_eq!(a, b);
        let (h, _) = norm("SELECT /* sluice:replica */ 1");
        assert_eq!(h, "SELECT /*sluice:replica*/ ?");
    }

    #[test]
    fn in_lists_collapse() {
        let (a, la) = norm("SELECT * FROM t WHERE id IN (1, 2, 3)");
        let (b, _) = norm("SELECT * FROM t WHERE id IN (7)");
        assert_eq!(a, b);
        assert_eq!(la.len(), 3);
    }

    #[test]
    fn groups_say_which_literals_were_folded() {
        let mut out = Vec::new();
        let mut lits = Vec::new();
        let mut heads = Vec::new();
        let sql = "SELECT 1, c FROM t WHERE id IN (1, -2, 3) AND x = ? , 5 LIMIT 5, 10";
        let a = fingerprint_groups(sql, &mut out, &mut lits, &mut heads);
        assert_eq!(
            heads,
            vec![true, true, false, false, true, true, false],
            "a literal after a placeholder and a comma starts a group of its own"
        );
        let mut out2 = Vec::new();
        assert_eq!(a, fingerprint(sql, &mut out2, &mut lits));
        assert_eq!(out, out2);
    }

    #[test]
    fn identifiers_with_digits_are_not_literals() {
        let (n, l) = norm("SELECT t1.c2 FROM `db`.t1 WHERE x = 1.5e3 AND y = 0xFF");
        assert_eq!(n, "SELECT t1.c2 FROM `db` . t1 WHERE x = ? AND y = ?");
        assert_eq!(l, vec!["1.5e3", "0xFF"]);
    }

    #[test]
    fn user_variables_and_operators() {
        let (_, l) = norm("SET @a = -5, @b = 3-1");
        assert_eq!(l, vec!["-5", "3", "1"]);
        let (n, l) = norm("SET @a := 5, @@session.sql_mode='ANSI'");
        assert_eq!(n, "SET @a := ? , @@session.sql_mode = ?");
        assert_eq!(l, vec!["5", "'ANSI'"]);
    }
}
