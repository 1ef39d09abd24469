//! The client's diagnostics — its statement's warnings and errors,
//! `FOUND_ROWS()`, `ROW_COUNT()`, `@@warning_count` — kept by Sluice, since
//! the connection that ran the statement may serve another client by the
//! time the client asks. The rules follow MariaDB's:
//!
//! - a statement's conditions (SHOW WARNINGS rows) stay until a later
//!   statement raises its own or uses a table (`SELECT 1` or `SET @a = 1`
//!   keep them); SHOW WARNINGS/ERRORS never clear them;
//! - `ROW_COUNT()` is the affected rows of the last statement that ended
//!   with OK, -1 after a result set or an error;
//! - `FOUND_ROWS()` is the `SQL_CALC_FOUND_ROWS` total, else the rows of the
//!   last result set, else (a SELECT whose rows no client saw: `INSERT ...
//!   SELECT`, `SELECT ... INTO`, a procedure's) read back from the server.
//!
//! Reads of them are answered from these values: SHOW WARNINGS/ERRORS by
//! Sluice itself, the rest by substituting the value into the statement
//! (keeping the column name the client's text gives it) and running it.

use crate::classifier::Facts;
use crate::classify::Kind;
use crate::lexer::{Lexer, Token};

/// The values a later statement may read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Previous {
    pub found_rows: u64,
    pub row_count: i64,
    pub warning_count: u64,
    pub error_count: u64,
}

/// How a statement ended, as far as its diagnostics go.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ended {
    pub error: bool,
    pub result_set: bool,
    pub rows: u64,
    pub affected_rows: u64,
    /// The SQL_CALC_FOUND_ROWS total, when the statement asked for one.
    pub calc_found_rows: Option<u64>,
}

impl Previous {
    /// The values after a statement that ran on the server.
    pub fn after(self, ended: Ended) -> Previous {
        let row_count = if ended.error || ended.result_set {
            -1
        } else {
            i64::try_from(ended.affected_rows).unwrap_or(i64::MAX)
        };
        let found_rows = match ended.calc_found_rows {
            Some(total) => total,
            None if ended.result_set && !ended.error => ended.rows,
            None => self.found_rows,
        };
        Previous {
            found_rows,
            row_count,
            ..self
        }
    }
}

/// Whether the statement may have set `FOUND_ROWS()` to something the
/// relay did not see: a procedure (its last SELECT need not be the result
/// the client got last), or a SELECT that sent no result set of its own
/// (`INSERT ... SELECT`, `CREATE ... SELECT`, `SELECT ... INTO`, `SET @v =
/// (SELECT ...)`, `DO (SELECT ...)`). It is then read back on the same
/// connection.
pub fn found_rows_unseen(facts: &Facts, ended_with_result_set: bool) -> bool {
    facts.kind() == Kind::Call || (facts.lexical.mentions_select && !ended_with_result_set)
}

/// Whether a statement that raised no condition of its own clears the
/// previous statement's. MariaDB clears them for statements that use
/// tables, derived tables or table functions (not for a subquery or UNION
/// of no table; `FROM DUAL` is no table); diagnostics statements never
/// clear them.
pub fn clears_conditions(facts: &Facts) -> bool {
    if facts.lexical.needs_previous && facts.kind() == Kind::Show {
        return false;
    }
    if !facts.ast.parsed && !facts.ast.do_statement {
        // Unknown: assume it used a table (the capture is then empty,
        // which is what most statements leave).
        return true;
    }
    facts.ast.tables.iter().any(|t| !t.eq_ignore_ascii_case("dual"))
        || facts.ast.derived_tables
        || matches!(
            facts.kind(),
            Kind::Insert
                | Kind::Update
                | Kind::Delete
                | Kind::Replace
                | Kind::Ddl
                | Kind::Call
                | Kind::Load
                | Kind::Show
        )
}

/// `SHOW WARNINGS` / `SHOW ERRORS` with an optional LIMIT, or their
/// `SHOW COUNT(*)` forms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShowDiagnostics {
    List {
        errors_only: bool,
        offset: u64,
        limit: Option<u64>,
    },
    Count {
        errors_only: bool,
    },
}

pub fn parse_show_diagnostics(sql: &str) -> Option<ShowDiagnostics> {
    let mut t = Lexer::new(sql).filter(|t| !matches!(t, Token::Hint(_)));
    let word = |t: Option<Token<'_>>, w: &str| matches!(t, Some(Token::Word(x)) if x.eq_ignore_ascii_case(w));
    if !word(t.next(), "SHOW") {
        return None;
    }
    let mut next = t.next();
    let count = word(next, "COUNT");
    if count {
        let star = [t.next(), t.next(), t.next()];
        if star
            != [
                Some(Token::Punct(b'(')),
                Some(Token::Punct(b'*')),
                Some(Token::Punct(b')')),
            ]
        {
            return None;
        }
        next = t.next();
    }
    let errors_only = if word(next, "WARNINGS") {
        false
    } else if word(next, "ERRORS") {
        true
    } else {
        return None;
    };
    let number = |t: Option<Token<'_>>| match t {
        Some(Token::Word(w)) => w.parse::<u64>().ok(),
        _ => None,
    };
    let next = t.next();
    if count {
        return at_end(next, &mut t).then_some(ShowDiagnostics::Count { errors_only });
    }
    if at_end(next, &mut t) {
        return Some(ShowDiagnostics::List {
            errors_only,
            offset: 0,
            limit: None,
        });
    }
    if !word(next, "LIMIT") {
        return None;
    }
    let first = number(t.next())?;
    let (offset, limit) = match t.next() {
        Some(Token::Punct(b',')) => (first, number(t.next())?),
        Some(Token::Word(w)) if w.eq_ignore_ascii_case("OFFSET") => {
            let offset = number(t.next())?;
            let last = t.next();
            if !at_end(last, &mut t) {
                return None;
            }
            (offset, first)
        }
        other if at_end(other, &mut t) => {
            return Some(ShowDiagnostics::List {
                errors_only,
                offset: 0,
                limit: Some(first),
            });
        }
        _ => return None,
    };
    if !at_end(t.next(), &mut t) {
        return None;
    }
    Some(ShowDiagnostics::List {
        errors_only,
        offset,
        limit: Some(limit),
    })
}

/// True at the end of the statement: nothing, or a `;` with nothing after.
fn at_end<'a>(token: Option<Token<'a>>, rest: &mut impl Iterator<Item = Token<'a>>) -> bool {
    match token {
        None => true,
        Some(Token::Punct(b';')) => rest.next().is_none(),
        _ => false,
    }
}

/// Words after a select item that mean it has no alias.
const ITEM_ENDS: &[&str] = &[
    "FROM",
    "LIMIT",
    "UNION",
    "INTO",
    "WHERE",
    "ORDER",
    "GROUP",
    "HAVING",
    "FOR",
    "LOCK",
    "WINDOW",
    "EXCEPT",
    "INTERSECT",
];

/// The statement with every read of a previous statement's value replaced
/// by the value (`FOUND_ROWS()`, `ROW_COUNT()`, `@@warning_count`,
/// `@@error_count` and their `@@session.` forms; `SHOW COUNT(*)
/// WARNINGS|ERRORS`). A select item that was only the read keeps its
/// column name through an alias of the client's own text. None when the
/// statement reads none of them.
pub fn substitute_previous(sql: &str, prev: &Previous) -> Option<String> {
    if let Some(ShowDiagnostics::Count { errors_only }) = parse_show_diagnostics(sql) {
        let (value, name) = if errors_only {
            (prev.error_count, "@@session.error_count")
        } else {
            (prev.warning_count, "@@session.warning_count")
        };
        return Some(format!("SELECT {} AS `{name}`", unsigned_count(value)));
    }
    let base = sql.as_ptr() as usize;
    let mut lexer = Lexer::new(sql);
    // (start, end, value) of each read to replace.
    let mut reads: Vec<(usize, usize, String)> = Vec::new();
    let mut prev_token: Option<Token<'_>> = None;
    // Index into `reads` of a read that may still need an alias.
    let mut pending: Option<(usize, bool)> = None;
    while let Some(token) = lexer.next() {
        let end = lexer.offset();
        if let Some((i, item_start)) = pending.take() {
            let bare = match token {
                Token::Punct(b',' | b';' | b')') => true,
                Token::Word(w) => ITEM_ENDS.iter().any(|e| e.eq_ignore_ascii_case(w)),
                _ => false,
            };
            if item_start && bare {
                alias(sql, &mut reads[i]);
            }
        }
        let item_start = matches!(prev_token, Some(Token::Punct(b',')))
            || matches!(prev_token, Some(Token::Word(w)) if w.eq_ignore_ascii_case("SELECT") || w.eq_ignore_ascii_case("DISTINCT"));
        match token {
            Token::Variable(v) => {
                let value = match v.to_ascii_lowercase().as_str() {
                    "@@warning_count" | "@@session.warning_count" | "@@local.warning_count" => {
                        Some(unsigned_count(prev.warning_count))
                    }
                    "@@error_count" | "@@session.error_count" | "@@local.error_count" => {
                        Some(unsigned_count(prev.error_count))
                    }
                    _ => None,
                };
                if let Some(value) = value {
                    let start = v.as_ptr() as usize - base;
                    reads.push((start, end, value));
                    pending = Some((reads.len() - 1, item_start));
                }
            }
            Token::Word(w) => {
                let value = if w.eq_ignore_ascii_case("FOUND_ROWS") {
                    Some(bigint(&prev.found_rows.to_string()))
                } else if w.eq_ignore_ascii_case("ROW_COUNT") {
                    Some(bigint(&prev.row_count.to_string()))
                } else {
                    None
                };
                if let Some(value) = value {
                    let start = w.as_ptr() as usize - base;
                    // Only a call with no arguments: `name ( )`.
                    let mut ahead = Lexer::new(&sql[end..]);
                    if ahead.next() == Some(Token::Punct(b'(')) && ahead.next() == Some(Token::Punct(b')')) {
                        let call_end = end + ahead.offset();
                        while lexer.offset() < call_end && lexer.next().is_some() {}
                        reads.push((start, call_end, value));
                        pending = Some((reads.len() - 1, item_start));
                    }
                }
            }
            _ => {}
        }
        prev_token = Some(token);
    }
    if let Some((i, true)) = pending {
        alias(sql, &mut reads[i]);
    }
    if reads.is_empty() {
        return None;
    }
    let mut out = String::with_capacity(sql.len() + 32);
    let mut at = 0;
    for (start, end, value) in &reads {
        out.push_str(&sql[at..*start]);
        out.push_str(value);
        at = *end;
    }
    out.push_str(&sql[at..]);
    Some(out)
}

/// A value with the metadata the server gives `FOUND_ROWS()` and
/// `ROW_COUNT()` (BIGINT, length 21, NOT NULL): a 21-character literal.
/// A short literal, or a CAST of one, would be an INT, which drivers
/// decode differently.
fn bigint(value: &str) -> String {
    match value.strip_prefix('-') {
        Some(digits) => format!("-{digits:0>20}"),
        None => format!("{value:0>21}"),
    }
}

/// A value with the metadata the server gives `@@warning_count` and
/// `@@error_count` (BIGINT UNSIGNED, length 21, nullable), which some
/// drivers (Connector/J) decode to a different type than a signed BIGINT.
fn unsigned_count(value: u64) -> String {
    format!("NULLIF(CAST({value:0>22} AS UNSIGNED), 18446744073709551615)")
}

/// Gives a substituted select item the column name the server would.
fn alias(sql: &str, read: &mut (usize, usize, String)) {
    let name = sql[read.0..read.1].replace('`', "``");
    read.2 = format!("{} AS `{name}`", read.2);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prev() -> Previous {
        Previous {
            found_rows: 42,
            row_count: -1,
            warning_count: 3,
            error_count: 1,
        }
    }

    #[test]
    fn substitutes_keeping_column_names() {
        let s = |sql| substitute_previous(sql, &prev());
        assert_eq!(
            s("SELECT FOUND_ROWS()").unwrap(),
            "SELECT 000000000000000000042 AS `FOUND_ROWS()`"
        );
        assert_eq!(
            s("select found_rows( )").unwrap(),
            "select 000000000000000000042 AS `found_rows( )`"
        );
        assert_eq!(
            s("SELECT FOUND_ROWS() AS total").unwrap(),
            "SELECT 000000000000000000042 AS total"
        );
        assert_eq!(
            s("SELECT FOUND_ROWS() total").unwrap(),
            "SELECT 000000000000000000042 total"
        );
        assert_eq!(
            s("SELECT ROW_COUNT(), @@warning_count;").unwrap(),
            "SELECT -00000000000000000001 AS `ROW_COUNT()`, NULLIF(CAST(0000000000000000000003 AS UNSIGNED), 18446744073709551615) AS `@@warning_count`;"
        );
        assert_eq!(
            s("SELECT @@session.error_count + 1").unwrap(),
            "SELECT NULLIF(CAST(0000000000000000000001 AS UNSIGNED), 18446744073709551615) + 1"
        );
        assert_eq!(
            s("SELECT * FROM t WHERE n > FOUND_ROWS()").unwrap(),
            "SELECT * FROM t WHERE n > 000000000000000000042"
        );
        assert_eq!(
            s("SELECT FOUND_ROWS() FROM dual").unwrap(),
            "SELECT 000000000000000000042 AS `FOUND_ROWS()` FROM dual"
        );
        assert_eq!(
            s("SHOW COUNT(*) WARNINGS").unwrap(),
            "SELECT NULLIF(CAST(0000000000000000000003 AS UNSIGNED), 18446744073709551615) AS `@@session.warning_count`"
        );
        assert_eq!(
            s("show count(*) errors").unwrap(),
            "SELECT NULLIF(CAST(0000000000000000000001 AS UNSIGNED), 18446744073709551615) AS `@@session.error_count`"
        );
        // Not reads of previous values.
        assert_eq!(s("SELECT found_rows FROM t"), None);
        assert_eq!(s("SELECT 'FOUND_ROWS()'"), None);
        assert_eq!(s("SELECT @@warning_countx"), None);
    }

    #[test]
    fn show_diagnostics_forms() {
        let list = |errors_only, offset, limit| {
            Some(ShowDiagnostics::List {
                errors_only,
                offset,
                limit,
            })
        };
        assert_eq!(parse_show_diagnostics("SHOW WARNINGS"), list(false, 0, None));
        assert_eq!(parse_show_diagnostics("show errors;"), list(true, 0, None));
        assert_eq!(
            parse_show_diagnostics("SHOW WARNINGS LIMIT 2"),
            list(false, 0, Some(2))
        );
        assert_eq!(
            parse_show_diagnostics("SHOW WARNINGS LIMIT 1, 2"),
            list(false, 1, Some(2))
        );
        assert_eq!(
            parse_show_diagnostics("SHOW WARNINGS LIMIT 2 OFFSET 1"),
            list(false, 1, Some(2))
        );
        assert_eq!(
            parse_show_diagnostics("SHOW COUNT(*) WARNINGS"),
            Some(ShowDiagnostics::Count { errors_only: false })
        );
        assert_eq!(parse_show_diagnostics("SHOW WARNINGS; SELECT 1"), None);
        assert_eq!(parse_show_diagnostics("SHOW TABLES"), None);
    }

    #[test]
    fn found_rows_the_relay_did_not_see_are_read_back() {
        let unseen = |sql: &str, result_set: bool| found_rows_unseen(&Facts::of(sql), result_set);
        assert!(unseen("INSERT INTO t SELECT * FROM u", false));
        assert!(unseen("CREATE TEMPORARY TABLE t SELECT * FROM u LIMIT 4", false));
        assert!(unseen("SELECT a INTO @x FROM t", false));
        assert!(unseen("SET @q = (SELECT COUNT(*) FROM t)", false));
        assert!(unseen("DO (SELECT COUNT(*) FROM t)", false));
        assert!(unseen("CALL p()", true));
        assert!(!unseen("SELECT * FROM t", true), "the relay counted its rows");
        assert!(!unseen("UPDATE t SET a = 1", false));
        assert!(!unseen("INSERT INTO t VALUES (1)", false));
    }

    #[test]
    fn conditions_are_cleared_by_statements_that_use_tables() {
        assert!(clears_conditions(&Facts::of("SELECT * FROM t")));
        assert!(clears_conditions(&Facts::of("INSERT INTO t VALUES (1)")));
        assert!(clears_conditions(&Facts::of("SHOW TABLES")));
        assert!(!clears_conditions(&Facts::of("SELECT 1")));
        assert!(!clears_conditions(&Facts::of("SET @x = 1")));
        assert!(!clears_conditions(&Facts::of("SHOW WARNINGS")));
        assert!(!clears_conditions(&Facts::of("SELECT @@warning_count")));
        // MariaDB's rule: tables, derived tables, table functions.
        assert!(clears_conditions(&Facts::of("SELECT * FROM (SELECT 1) x")));
        assert!(clears_conditions(&Facts::of(
            "WITH c AS (SELECT 1) SELECT * FROM c"
        )));
        assert!(clears_conditions(&Facts::of("SELECT (SELECT COUNT(*) FROM t)")));
        assert!(!clears_conditions(&Facts::of("SELECT (SELECT 1)")));
        assert!(!clears_conditions(&Facts::of("SELECT 1 UNION SELECT 2")));
        assert!(!clears_conditions(&Facts::of("SET @a = (SELECT 1)")));
        assert!(clears_conditions(&Facts::of(
            "SELECT * FROM JSON_TABLE('[1]', '$[*]' COLUMNS (v INT PATH '$')) j"
        )));
        assert!(!clears_conditions(&Facts::of("SELECT 1 FROM DUAL")));
        assert!(!clears_conditions(&Facts::of("DO 1")));
        assert!(clears_conditions(&Facts::of("DO (SELECT COUNT(*) FROM t)")));
    }

    #[test]
    fn row_count_and_found_rows_follow_the_last_statement() {
        let p = Previous::default();
        let ok = p.after(Ended {
            affected_rows: 4,
            ..Ended::default()
        });
        assert_eq!((ok.row_count, ok.found_rows), (4, 0));
        let select = ok.after(Ended {
            result_set: true,
            rows: 1,
            ..Ended::default()
        });
        assert_eq!((select.row_count, select.found_rows), (-1, 1));
        let calc = select.after(Ended {
            result_set: true,
            rows: 1,
            calc_found_rows: Some(9),
            ..Ended::default()
        });
        assert_eq!(calc.found_rows, 9);
        let err = calc.after(Ended {
            error: true,
            ..Ended::default()
        });
        assert_eq!((err.row_count, err.found_rows), (-1, 9));
    }
}
