//! A single-pass SQL scanner for the fast path: it yields words and
//! punctuation and skips whitespace, comments and quoted text, so a keyword
//! inside a string literal or a comment never changes a decision.
//! Versioned comments (`/*!40101 ... */`) are code to MySQL, so their body
//! is scanned.

use crate::scan::{find, is_word, line_end, quoted_end};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Token<'a> {
    /// An unquoted word: keyword, identifier, number.
    Word(&'a str),
    /// `@name` (user variable) or `@@name` (system variable).
    Variable(&'a str),
    /// `:=`
    Assign,
    Punct(u8),
    /// A quoted string or quoted identifier, quotes included.
    Quoted(&'a str),
    /// A `/* sluice:... */` hint comment; the text after `sluice:`.
    Hint(&'a str),
}

pub struct Lexer<'a> {
    sql: &'a str,
    pos: usize,
    in_versioned: bool,
}

impl<'a> Lexer<'a> {
    pub fn new(sql: &'a str) -> Self {
        Lexer {
            sql,
            pos: 0,
            in_versioned: false,
        }
    }
}

impl<'a> Iterator for Lexer<'a> {
    type Item = Token<'a>;

    fn next(&mut self) -> Option<Token<'a>> {
        let b = self.sql.as_bytes();
        loop {
            let c = *b.get(self.pos)?;
            match c {
                b' ' | b'\t' | b'\n' | b'\r' | b'\x0c' => self.pos += 1,
                b'#' => self.skip_line(),
                b'-' if b.get(self.pos + 1) == Some(&b'-')
                    && b.get(self.pos + 2).is_none_or(|c| c.is_ascii_whitespace()) =>
                {
                    self.skip_line()
                }
                b'*' if self.in_versioned && b.get(self.pos + 1) == Some(&b'/') => {
                    self.in_versioned = false;
                    self.pos += 2;
                }
                b'/' if b.get(self.pos + 1) == Some(&b'*') => {
                    let versioned = match b.get(self.pos + 2) {
                        Some(&b'!') => Some(3),
                        // MariaDB's own executable comment `/*M!`.
                        Some(&b'M') if b.get(self.pos + 3) == Some(&b'!') => Some(4),
                        _ => None,
                    };
                    if let Some(skip) = versioned {
                        // Versioned comment: skip `/*!` and the version digits.
                        self.pos += skip;
                        while b.get(self.pos).is_some_and(u8::is_ascii_digit) {
                            self.pos += 1;
                        }
                        self.in_versioned = true;
                        continue;
                    }
                    let start = self.pos + 2;
                    let end = find(b, start, b"*/").unwrap_or(b.len());
                    self.pos = (end + 2).min(b.len());
                    let body = self.sql[start..end].trim();
                    if let Some(hint) = body.strip_prefix("sluice:") {
                        return Some(Token::Hint(hint.trim()));
                    }
                }
                b'\'' | b'"' | b'`' => {
                    let start = self.pos;
                    self.skip_quoted(c);
                    return Some(Token::Quoted(&self.sql[start..self.pos.min(self.sql.len())]));
                }
                b'@' => {
                    let start = self.pos;
                    self.pos += 1;
                    if b.get(self.pos) == Some(&b'@') {
                        self.pos += 1;
                    }
                    if let Some(&q @ (b'\'' | b'"' | b'`')) = b.get(self.pos) {
                        self.skip_quoted(q);
                    } else {
                        self.skip_word();
                    }
                    return Some(Token::Variable(&self.sql[start..self.pos]));
                }
                b':' if b.get(self.pos + 1) == Some(&b'=') => {
                    self.pos += 2;
                    return Some(Token::Assign);
                }
                c if is_word(c) => {
                    let start = self.pos;
                    self.skip_word();
                    return Some(Token::Word(&self.sql[start..self.pos]));
                }
                c => {
                    self.pos += 1;
                    return Some(Token::Punct(c));
                }
            }
        }
    }
}

impl Lexer<'_> {
    /// Byte offset just past the last token returned.
    pub fn offset(&self) -> usize {
        self.pos
    }

    fn skip_line(&mut self) {
        self.pos = line_end(self.sql.as_bytes(), self.pos);
    }

    fn skip_word(&mut self) {
        let b = self.sql.as_bytes();
        while self.pos < b.len() && (is_word(b[self.pos]) || b[self.pos] == b'.') {
            self.pos += 1;
        }
    }

    fn skip_quoted(&mut self, quote: u8) {
        self.pos = quoted_end(self.sql.as_bytes(), self.pos, quote);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Token::*;

    #[test]
    fn skips_comments_and_strings() {
        let t: Vec<_> = Lexer::new("/* x */ SELECT 'GET_LOCK(' -- c\n, `a b` # z").collect();
        assert_eq!(
            t,
            vec![
                Word("SELECT"),
                Quoted("'GET_LOCK('"),
                Punct(b','),
                Quoted("`a b`")
            ]
        );
    }

    #[test]
    fn versioned_comments_are_code_and_hints_are_kept() {
        let t: Vec<_> = Lexer::new("/*!40101 SET x=1*/ /* sluice:primary */").collect();
        let m: Vec<_> = Lexer::new("/*M!100000 KILL 5 */").collect();
        assert_eq!(m, vec![Word("KILL"), Word("5")]);
        assert_eq!(
            t,
            vec![Word("SET"), Word("x"), Punct(b'='), Word("1"), Hint("primary")]
        );
    }

    #[test]
    fn variables_and_assign() {
        let t: Vec<_> = Lexer::new("SELECT @a := @@session.x, 'it''s', \"q\\\"\"").collect();
        assert_eq!(
            t,
            vec![
                Word("SELECT"),
                Variable("@a"),
                Assign,
                Variable("@@session.x"),
                Punct(b','),
                Quoted("'it''s'"),
                Punct(b','),
                Quoted("\"q\\\"\"")
            ]
        );
    }
}
