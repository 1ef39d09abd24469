//! `KILL` statements, which Sluice answers itself: the ids clients see are
//! Sluice's (the handshake's), not a pooled backend connection's, so a KILL
//! is never passed to a backend as written.

use crate::lexer::{Lexer, Token};

/// What a `KILL` statement asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kill {
    /// `KILL [HARD|SOFT] [CONNECTION|QUERY] id`.
    Thread { id: u64, query_only: bool },
    /// `KILL [QUERY] CONNECTION_ID()`: the client's own connection.
    Own { query_only: bool },
    /// `KILL ... USER name` or `KILL QUERY ID query_id`: not supported
    /// through Sluice (they would reach pooled connections of others).
    Unsupported,
}

/// Parses a `KILL` statement; None when `sql` is not one.
pub fn parse_kill(sql: &str) -> Option<Kill> {
    let mut words = Lexer::new(sql).filter(|t| !matches!(t, Token::Hint(_)));
    match words.next()? {
        Token::Word(w) if w.eq_ignore_ascii_case("KILL") => {}
        _ => return None,
    }
    let mut query_only = false;
    let mut next = words.next();
    if let Some(Token::Word(w)) = next {
        if w.eq_ignore_ascii_case("HARD") || w.eq_ignore_ascii_case("SOFT") {
            next = words.next();
        }
    }
    if let Some(Token::Word(w)) = next {
        if w.eq_ignore_ascii_case("CONNECTION") {
            next = words.next();
        } else if w.eq_ignore_ascii_case("QUERY") {
            query_only = true;
            next = words.next();
        }
    }
    let target = match next {
        Some(Token::Word(w)) if w.eq_ignore_ascii_case("CONNECTION_ID") => {
            let call = (words.next(), words.next());
            (call == (Some(Token::Punct(b'(')), Some(Token::Punct(b')')))).then_some(Kill::Own { query_only })
        }
        Some(Token::Word(w)) => w.parse::<u64>().ok().map(|id| Kill::Thread { id, query_only }),
        _ => None,
    };
    let mut rest = words.next();
    if rest == Some(Token::Punct(b';')) {
        rest = words.next();
    }
    match (target, rest) {
        (Some(kill), None) => Some(kill),
        _ => Some(Kill::Unsupported),
    }
}

/// Whether a statement that is not itself a KILL would run one on the
/// backend: a KILL later in a multi-statement, or inside `PREPARE ... FROM`
/// / `EXECUTE IMMEDIATE` text. Such statements are refused, never passed on.
pub fn hides_kill(sql: &str) -> bool {
    let mut at_start = true;
    let mut first: Option<&str> = None;
    for token in Lexer::new(sql) {
        match token {
            Token::Word(w) if at_start => {
                if w.eq_ignore_ascii_case("KILL") && first.is_some() {
                    return true;
                }
                first.get_or_insert(w);
                at_start = false;
            }
            Token::Punct(b';') => at_start = true,
            Token::Hint(_) => {}
            _ => at_start = false,
        }
    }
    let dynamic =
        first.is_some_and(|w| w.eq_ignore_ascii_case("PREPARE") || w.eq_ignore_ascii_case("EXECUTE"));
    dynamic && sql.to_ascii_uppercase().contains("KILL")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kills_hidden_in_other_statements() {
        assert!(hides_kill("SELECT 1; KILL 5"));
        assert!(hides_kill("EXECUTE IMMEDIATE 'KILL 5'"));
        assert!(hides_kill("PREPARE s FROM 'kill query 5'"));
        assert!(!hides_kill("SELECT 'KILL 5'"));
        assert!(!hides_kill("KILL 5"));
        assert!(!hides_kill("SELECT killed FROM t"));
    }

    #[test]
    fn kill_forms() {
        let thread = |id, query_only| Some(Kill::Thread { id, query_only });
        assert_eq!(parse_kill("KILL 9"), thread(9, false));
        assert_eq!(parse_kill("kill connection 9"), thread(9, false));
        assert_eq!(parse_kill("KILL QUERY 12;"), thread(12, true));
        assert_eq!(
            parse_kill("KILL QUERY CONNECTION_ID()"),
            Some(Kill::Own { query_only: true })
        );
        assert_eq!(
            parse_kill("kill connection_id ( )"),
            Some(Kill::Own { query_only: false })
        );
        assert_eq!(parse_kill("KILL CONNECTION_ID() + 1"), Some(Kill::Unsupported));
        assert_eq!(parse_kill("KILL HARD QUERY 12"), thread(12, true));
        assert_eq!(parse_kill("/* c */ KILL SOFT 3"), thread(3, false));
        assert_eq!(parse_kill("KILL USER app"), Some(Kill::Unsupported));
        assert_eq!(parse_kill("KILL QUERY ID 5"), Some(Kill::Unsupported));
        assert_eq!(parse_kill("KILL (SELECT 1)"), Some(Kill::Unsupported));
        // A multi-statement is not cut short.
        assert_eq!(parse_kill("KILL 5; SELECT 1"), Some(Kill::Unsupported));
        assert_eq!(parse_kill("SELECT 'KILL 1'"), None);
        assert_eq!(parse_kill("KILLED"), None);
    }
}
