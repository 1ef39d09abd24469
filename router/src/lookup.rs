//! The point lookup the empty-key guard may answer: the shape, taken once
//! per template from sqlparser's AST ([`lookup_shape`], on a classification
//! cache miss), and where each execution's key values are in its text
//! ([`LookupShape::resolve`]). What a value means against a key column is
//! [`crate::probe`].
//!
//! A shape is `SELECT <projection> FROM <one table> [alias] WHERE
//! <conjuncts> [ORDER BY ...] [LIMIT ...]` with at least one top-level AND
//! conjunct `column = value` (either side) or `column IN (values)`. If the
//! key is absent, every such conjunct is false, so the statement returns no
//! row whatever the other conjuncts say. Not a shape: joins or several
//! tables, subqueries, UNION/EXCEPT/INTERSECT, CTEs, aggregates and GROUP
//! BY/HAVING (they return a row for no match), window functions, any
//! function call at all (the simplest sound rule), SQL_CALC_FOUND_ROWS
//! (FOUND_ROWS() afterwards), INTO, locking clauses, user or system
//! variables, versioned comments (`/*! */`, `/*M! */`: the server's
//! version decides what runs), `&&` and `||` (their precedence depends on
//! sql_mode and sqlparser's differs from the server's), operators beyond a
//! short list in WHERE. A conjunct under OR, `<=>`, `IS NULL`, `NOT IN`
//! is no key conjunct (the statement is a shape only if another is).
//!
//! Values are literals, located by their ordinal in the execution's
//! literal spans ([`crate::fingerprint`]), or `?` placeholders (prepared
//! statements). The fingerprint folds `?, ?, ?` lists into one `?`, so
//! executions of one template may have different literal counts: a shape
//! allows one variable list (its IN list) and [`LookupShape::resolve`]
//! checks each execution against the template before any ordinal is used.

use crate::fingerprint::fingerprint_groups;
use crate::lexer::{Lexer, Token};
use sqlparser::ast::{
    BinaryOperator, Distinct, Expr, GroupByExpr, ObjectNamePart, Query, Select, SelectFlavor, SetExpr,
    Statement, TableFactor, UnaryOperator, Value, visit_expressions, visit_relations,
};
use sqlparser::tokenizer::{Location, Span};
use std::ops::{ControlFlow, Range};

/// A point lookup the guard may answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupShape {
    /// The schema as written (`app` of `app.users`), unquoted.
    pub schema: Option<String>,
    /// The table as written, unquoted.
    pub table: String,
    /// The key conjuncts, in text order. Column names compare
    /// case-insensitively ([`KeyConjunct::is_column`]).
    pub conjuncts: Vec<KeyConjunct>,
    /// Literals in the text the shape was taken from.
    pub literal_count: usize,
    /// `?` placeholders in the statement.
    pub param_count: usize,
}

/// `column = value` or `column IN (values)`, a top-level AND conjunct.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyConjunct {
    /// Unquoted, without its qualifier.
    pub column: String,
    pub values: KeyValues,
}

impl KeyConjunct {
    pub fn is_column(&self, name: &str) -> bool {
        self.column.eq_ignore_ascii_case(name)
    }
}

/// Where a key conjunct's values are in an execution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyValues {
    /// The literal with this ordinal in the template text; in an execution
    /// see [`LiteralMap::ordinals`].
    Literal(usize),
    /// An IN list of literals: it starts at ordinal `first`, and `after`
    /// literals follow it. Its length is per execution.
    LiteralList { first: usize, after: usize },
    /// A `?` placeholder: its index among the statement's placeholders.
    Param(u16),
    /// `IN (?, ?, ...)`: placeholder indexes.
    ParamList(Vec<u16>),
}

impl LookupShape {
    /// Checks one execution of this shape's template (`sql`, its literal
    /// spans from [`crate::fingerprint`], and how many parameters it
    /// binds: 0 over the text protocol) and says where the literals are.
    /// The reason is a pass-through label ([`crate::probe::reason`]).
    pub fn resolve(
        &self,
        sql: &str,
        literals: &[Range<usize>],
        params: usize,
    ) -> Result<LiteralMap, &'static str> {
        use crate::probe::reason;
        if params != self.param_count {
            return Err(reason::SHAPE_MISMATCH);
        }
        // The fingerprint drops the markers of `/*! */` and `/*M! */`: a
        // template without them may run with them, and then the server
        // (by its version) may run less or more than the template says.
        if has_versioned_comment(sql) {
            return Err(reason::VERSIONED_COMMENT);
        }
        // Under NO_BACKSLASH_ESCAPES a backslash ends no quote: the server
        // may split the text differently from Sluice.
        let b = sql.as_bytes();
        if literals.iter().any(|r| b.get(r.clone()).is_none()) {
            return Err(reason::SHAPE_MISMATCH);
        }
        if literals.iter().any(|r| b[r.clone()].contains(&b'\\')) {
            return Err(reason::BACKSLASH_ESCAPE);
        }
        let list = self.conjuncts.iter().find_map(|c| match c.values {
            KeyValues::LiteralList { first, after } => Some((first, after)),
            _ => None,
        });
        let Some((first, after)) = list else {
            // Every group of the template was one literal: with as many
            // literals, every group of this execution is one literal too.
            return if literals.len() == self.literal_count {
                Ok(LiteralMap { list: None })
            } else {
                Err(reason::SHAPE_MISMATCH)
            };
        };
        let template_len = self.literal_count.saturating_sub(first + after);
        let len = literals
            .len()
            .checked_sub(first + after)
            .filter(|&n| n >= 1)
            .ok_or(reason::SHAPE_MISMATCH)?;
        // The literals [first, first + len) must be exactly a parenthesized
        // list: if another group grew or shrank, the window crosses from one
        // group into the next and the text between them is not a comma.
        let window = &literals[first..first + len];
        if !is_literal_list(b, window) {
            return Err(reason::SHAPE_MISMATCH);
        }
        Ok(LiteralMap {
            list: Some(ListAt {
                first,
                template_len,
                len,
            }),
        })
    }

    /// Whether the statement names `schema.table`, given the session's
    /// current schema for an unqualified name. Names compare exactly.
    pub fn names(&self, schema: &str, table: &str, current_schema: Option<&str>) -> bool {
        self.table == table && self.schema.as_deref().or(current_schema) == Some(schema)
    }
}

/// Where one execution's literals are ([`LookupShape::resolve`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiteralMap {
    list: Option<ListAt>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ListAt {
    first: usize,
    template_len: usize,
    len: usize,
}

impl LiteralMap {
    /// The ordinals, in the execution's literal spans, of a conjunct's
    /// values (empty for placeholders).
    pub fn ordinals(&self, values: &KeyValues) -> Range<usize> {
        match *values {
            KeyValues::Literal(o) => {
                let o = match self.list {
                    Some(l) if o >= l.first + l.template_len => o - l.template_len + l.len,
                    _ => o,
                };
                o..o + 1
            }
            KeyValues::LiteralList { first, .. } => first..first + self.list.map_or(0, |l| l.len),
            KeyValues::Param(_) | KeyValues::ParamList(_) => 0..0,
        }
    }
}

fn has_versioned_comment(sql: &str) -> bool {
    sql.contains("/*!") || sql.contains("/*M!")
}

/// `( lit , lit , ... )` with only whitespace around the commas.
fn is_literal_list(b: &[u8], window: &[Range<usize>]) -> bool {
    let (Some(first), Some(last)) = (window.first(), window.last()) else {
        return false;
    };
    let gap_ok = |from: usize, to: usize, want: u8| -> bool {
        b.get(from..to).is_some_and(|gap| {
            let mut seen = false;
            for &c in gap {
                if c == want && !seen {
                    seen = true;
                } else if !c.is_ascii_whitespace() {
                    return false;
                }
            }
            seen
        })
    };
    let before = b
        .get(..first.start)
        .and_then(|s| s.iter().rposition(|c| !c.is_ascii_whitespace()));
    let after = b
        .get(last.end..)
        .and_then(|s| s.iter().position(|c| !c.is_ascii_whitespace()));
    before.is_some_and(|i| b[i] == b'(')
        && after.is_some_and(|i| b[last.end + i] == b')')
        && window
            .windows(2)
            .all(|w| w[0].end <= w[1].start && gap_ok(w[0].end, w[1].start, b','))
}

/// The shape of one parsed statement, if it is a point lookup.
pub fn lookup_shape(sql: &str, statement: &Statement) -> Option<LookupShape> {
    if has_versioned_comment(sql) {
        return None;
    }
    let mut normalized = Vec::new();
    let mut literals = Vec::new();
    let mut heads = Vec::new();
    fingerprint_groups(sql, &mut normalized, &mut literals, &mut heads);
    if normalized.windows(2).any(|w| w == b"&&" || w == b"||") {
        return None;
    }
    let Statement::Query(query) = statement else {
        return None;
    };
    let select = plain_select(query)?;
    let (schema, table, alias) = one_table(select)?;
    if !pure(statement) {
        return None;
    }
    let selection = select.selection.as_ref()?;
    if !where_ok(selection) {
        return None;
    }
    let text = Text::new(sql, &literals, &heads);
    let params = text.placeholders();
    if !placeholders_agree(statement, &text, &params) {
        return None;
    }
    let mut conjuncts_exprs = Vec::new();
    split_and(selection, &mut conjuncts_exprs);
    let qualifier_ok = |q: &[&str]| match (q, alias.as_deref()) {
        ([], _) => true,
        ([a], Some(alias)) => *a == alias,
        ([t], None) => *t == table,
        ([s, t], None) => Some(*s) == schema.as_deref() && *t == table,
        _ => false,
    };
    let mut conjuncts = Vec::new();
    let mut list_literals: Option<Range<usize>> = None;
    for expr in conjuncts_exprs {
        let Some((column, values)) = key_conjunct(expr, &text, &params, &qualifier_ok) else {
            continue;
        };
        if let KeyValues::LiteralList { first, after } = values {
            if list_literals.is_some() {
                // Two variable lists: no ordinal can be placed.
                return None;
            }
            list_literals = Some(first..literals.len() - after);
        }
        conjuncts.push(KeyConjunct { column, values });
    }
    // Any other folded literal is a list whose length may differ in another
    // execution with the same count (see `resolve`).
    let folded_elsewhere = heads
        .iter()
        .enumerate()
        .any(|(i, &head)| !head && !list_literals.as_ref().is_some_and(|l| l.contains(&i)));
    if conjuncts.is_empty() || folded_elsewhere {
        return None;
    }
    Some(LookupShape {
        schema,
        table,
        conjuncts,
        literal_count: literals.len(),
        param_count: params.len(),
    })
}

fn plain_select(query: &Query) -> Option<&Select> {
    let plain = query.with.is_none()
        && query.fetch.is_none()
        && query.locks.is_empty()
        && query.for_clause.is_none()
        && query.settings.is_none()
        && query.format_clause.is_none()
        && query.pipe_operators.is_empty();
    let SetExpr::Select(select) = query.body.as_ref() else {
        return None;
    };
    let s = select.as_ref();
    let plain = plain
        && matches!(s.distinct, None | Some(Distinct::Distinct) | Some(Distinct::All))
        && !s.select_modifiers.as_ref().is_some_and(|m| m.sql_calc_found_rows)
        && s.top.is_none()
        && s.exclude.is_none()
        && s.into.is_none()
        && s.lateral_views.is_empty()
        && s.prewhere.is_none()
        && s.connect_by.is_empty()
        && matches!(&s.group_by, GroupByExpr::Expressions(e, m) if e.is_empty() && m.is_empty())
        && s.cluster_by.is_empty()
        && s.distribute_by.is_empty()
        && s.sort_by.is_empty()
        && s.having.is_none()
        && s.named_window.is_empty()
        && s.qualify.is_none()
        && s.value_table_mode.is_none()
        && s.flavor == SelectFlavor::Standard;
    plain.then_some(s)
}

/// (schema, table, alias) of the one plain table in FROM.
fn one_table(select: &Select) -> Option<(Option<String>, String, Option<String>)> {
    let [from] = select.from.as_slice() else {
        return None;
    };
    if !from.joins.is_empty() {
        return None;
    }
    let TableFactor::Table {
        name,
        alias,
        args: None,
        with_hints,
        version: None,
        with_ordinality: false,
        partitions,
        json_path: None,
        sample: None,
        ..
    } = &from.relation
    else {
        return None;
    };
    if !with_hints.is_empty() || !partitions.is_empty() {
        return None;
    }
    let mut parts = Vec::new();
    for part in &name.0 {
        match part {
            ObjectNamePart::Identifier(ident) => parts.push(ident.value.clone()),
            _ => return None,
        }
    }
    let alias = match alias {
        None => None,
        Some(a) if a.columns.is_empty() => Some(a.name.value.clone()),
        Some(_) => return None,
    };
    match <[String; 1]>::try_from(parts) {
        Ok([table]) => Some((None, table, alias)),
        Err(parts) => match <[String; 2]>::try_from(parts) {
            Ok([schema, table]) => Some((Some(schema), table, alias)),
            Err(_) => None,
        },
    }
}

/// No function, subquery, variable or named placeholder anywhere, and one
/// relation.
fn pure(statement: &Statement) -> bool {
    let mut relations = 0;
    let _ = visit_relations(statement, |_| {
        relations += 1;
        ControlFlow::<()>::Continue(())
    });
    let variable = |name: &str| name.starts_with('@');
    let impure = visit_expressions(statement, |expr: &Expr| {
        let bad = match expr {
            Expr::Function(_) | Expr::Subquery(_) | Expr::Exists { .. } | Expr::InSubquery { .. } => true,
            Expr::Identifier(i) => variable(&i.value),
            Expr::CompoundIdentifier(parts) => parts.iter().any(|i| variable(&i.value)),
            Expr::Value(v) => matches!(&v.value, Value::Placeholder(p) if p != "?"),
            _ => false,
        };
        if bad {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    });
    relations == 1 && impure.is_continue()
}

/// Only expressions whose meaning and precedence sqlparser and MariaDB
/// agree on, so the top-level AND split is the server's.
fn where_ok(expr: &Expr) -> bool {
    use BinaryOperator as B;
    match expr {
        Expr::Identifier(_) | Expr::CompoundIdentifier(_) | Expr::Value(_) => true,
        Expr::Nested(e) | Expr::IsNull(e) | Expr::IsNotNull(e) | Expr::IsTrue(e) | Expr::IsFalse(e) => {
            where_ok(e)
        }
        Expr::UnaryOp {
            op: UnaryOperator::Not | UnaryOperator::Minus | UnaryOperator::Plus,
            expr,
        } => where_ok(expr),
        Expr::BinaryOp { left, op, right } => {
            matches!(
                op,
                B::Eq
                    | B::NotEq
                    | B::Lt
                    | B::LtEq
                    | B::Gt
                    | B::GtEq
                    | B::Spaceship
                    | B::And
                    | B::Or
                    | B::Plus
                    | B::Minus
                    | B::Multiply
                    | B::Divide
            ) && where_ok(left)
                && where_ok(right)
        }
        Expr::InList { expr, list, .. } => where_ok(expr) && list.iter().all(where_ok),
        Expr::Between { expr, low, high, .. } => where_ok(expr) && where_ok(low) && where_ok(high),
        Expr::Like {
            expr,
            pattern,
            escape_char: None,
            any: false,
            ..
        } => where_ok(expr) && where_ok(pattern),
        _ => false,
    }
}

fn split_and<'e>(expr: &'e Expr, out: &mut Vec<&'e Expr>) {
    match expr {
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            split_and(left, out);
            split_and(right, out);
        }
        Expr::Nested(e) => split_and(e, out),
        e => out.push(e),
    }
}

fn key_conjunct(
    expr: &Expr,
    text: &Text<'_>,
    params: &[usize],
    qualifier_ok: &dyn Fn(&[&str]) -> bool,
) -> Option<(String, KeyValues)> {
    // An unquoted name starting with a digit is a literal to the server
    // (`0b11`), whatever sqlparser makes of it.
    let name = |i: &sqlparser::ast::Ident| {
        (i.quote_style.is_some() || !i.value.starts_with(|c: char| c.is_ascii_digit()))
            .then(|| i.value.clone())
    };
    let column = |e: &Expr| -> Option<String> {
        match e {
            Expr::Identifier(i) => name(i),
            Expr::CompoundIdentifier(parts) => {
                let (last, qualifier) = parts.split_last()?;
                let q: Vec<&str> = qualifier.iter().map(|i| i.value.as_str()).collect();
                if qualifier_ok(&q) { name(last) } else { None }
            }
            Expr::Nested(e) => match e.as_ref() {
                Expr::Identifier(i) => name(i),
                _ => None,
            },
            _ => None,
        }
    };
    match expr {
        Expr::BinaryOp {
            left,
            op: BinaryOperator::Eq,
            right,
        } => {
            let (col, value) = match (column(left), column(right)) {
                (Some(c), None) => (c, right.as_ref()),
                (None, Some(c)) => (c, left.as_ref()),
                _ => return None,
            };
            let values = match text.value(value, params)? {
                Mapped::Literal(o) => KeyValues::Literal(o),
                Mapped::Param(p) => KeyValues::Param(p),
            };
            Some((col, values))
        }
        Expr::InList {
            expr,
            list,
            negated: false,
        } => {
            let col = column(expr)?;
            let mapped: Vec<Mapped> = list
                .iter()
                .map(|v| text.value(v, params))
                .collect::<Option<_>>()?;
            if let Some(ps) = mapped
                .iter()
                .map(|m| match m {
                    Mapped::Param(p) => Some(*p),
                    Mapped::Literal(_) => None,
                })
                .collect::<Option<Vec<u16>>>()
            {
                return Some((col, KeyValues::ParamList(ps)));
            }
            let ordinals: Vec<usize> = mapped
                .iter()
                .map(|m| match m {
                    Mapped::Literal(o) => Some(*o),
                    Mapped::Param(_) => None,
                })
                .collect::<Option<_>>()?;
            let first = *ordinals.first()?;
            let end = first + ordinals.len();
            // Consecutive ordinals forming exactly one group of the fingerprint.
            let consecutive = ordinals.iter().enumerate().all(|(i, &o)| o == first + i);
            let one_group = text.heads.get(first) == Some(&true)
                && text
                    .heads
                    .get(first + 1..end)
                    .is_some_and(|h| h.iter().all(|&x| !x))
                && text.heads.get(end).is_none_or(|&h| h);
            (consecutive && one_group).then(|| {
                (
                    col,
                    KeyValues::LiteralList {
                        first,
                        after: text.literals.len() - end,
                    },
                )
            })
        }
        Expr::Nested(e) => key_conjunct(e, text, params, qualifier_ok),
        _ => None,
    }
}

enum Mapped {
    Literal(usize),
    Param(u16),
}

/// The statement's text with its literal spans, and byte offsets of
/// sqlparser's (line, column) locations.
struct Text<'a> {
    sql: &'a str,
    literals: &'a [Range<usize>],
    heads: &'a [bool],
    line_starts: Vec<usize>,
}

impl<'a> Text<'a> {
    fn new(sql: &'a str, literals: &'a [Range<usize>], heads: &'a [bool]) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(
            sql.bytes()
                .enumerate()
                .filter(|&(_, c)| c == b'\n')
                .map(|(i, _)| i + 1),
        );
        Text {
            sql,
            literals,
            heads,
            line_starts,
        }
    }

    /// sqlparser counts lines at `\n` and columns in characters, from 1.
    fn offset(&self, at: Location) -> Option<usize> {
        let line = usize::try_from(at.line).ok()?.checked_sub(1)?;
        let column = usize::try_from(at.column).ok()?.checked_sub(1)?;
        let start = *self.line_starts.get(line)?;
        let rest = self.sql.get(start..)?;
        match rest.char_indices().nth(column) {
            Some((i, _)) => Some(start + i),
            None if rest.chars().count() == column => Some(self.sql.len()),
            None => None,
        }
    }

    fn range(&self, span: Span) -> Option<Range<usize>> {
        Some(self.offset(span.start)?..self.offset(span.end)?)
    }

    /// Byte offsets of the `?` placeholders, in text order.
    fn placeholders(&self) -> Vec<usize> {
        let mut lexer = Lexer::new(self.sql);
        let mut out = Vec::new();
        while let Some(token) = lexer.next() {
            if token == Token::Punct(b'?') {
                out.push(lexer.offset() - 1);
            }
        }
        out
    }

    /// The literal whose span is exactly `range`.
    fn literal_at(&self, range: &Range<usize>) -> Option<usize> {
        let i = self.literals.partition_point(|l| l.start < range.start);
        (self.literals.get(i) == Some(range)).then_some(i)
    }

    /// Where a value expression comes from, when certain: a fingerprint
    /// literal with exactly the value's text, or a placeholder.
    fn value(&self, expr: &Expr, params: &[usize]) -> Option<Mapped> {
        match expr {
            Expr::Value(v) => {
                let range = self.range(v.span)?;
                match &v.value {
                    Value::Placeholder(p) if p == "?" => {
                        let i = params.binary_search(&range.start).ok()?;
                        Some(Mapped::Param(u16::try_from(i).ok()?))
                    }
                    Value::Number(n, false) => {
                        let o = self.literal_at(&range)?;
                        (self.sql.get(range)? == n.as_str()).then_some(Mapped::Literal(o))
                    }
                    Value::SingleQuotedString(s) => self.quoted(range, b'\'', s),
                    Value::DoubleQuotedString(s) => self.quoted(range, b'"', s),
                    // `0x1F` (X'1F' spans more than the fingerprint's literal).
                    Value::HexStringLiteral(_) => {
                        let o = self.literal_at(&range)?;
                        self.sql
                            .get(range)?
                            .get(..2)?
                            .eq_ignore_ascii_case("0x")
                            .then_some(Mapped::Literal(o))
                    }
                    _ => None,
                }
            }
            // `-5` is one fingerprint literal when the minus touches the
            // number (and follows an operator, `(` or `,`); `- 5` is not.
            Expr::UnaryOp {
                op: UnaryOperator::Minus,
                expr,
            } => {
                let Expr::Value(v) = expr.as_ref() else {
                    return None;
                };
                let Value::Number(n, false) = &v.value else {
                    return None;
                };
                let number = self.range(v.span)?;
                let range = number.start.checked_sub(1)?..number.end;
                let o = self.literal_at(&range)?;
                let text = self.sql.get(range)?;
                (text.strip_prefix('-') == Some(n.as_str())).then_some(Mapped::Literal(o))
            }
            Expr::Nested(e) => self.value(e, params),
            _ => None,
        }
    }

    /// A quoted string: one literal (sqlparser joins adjacent strings, `'a'
    /// 'b'`, under the first one's span) whose decoded text is the value.
    fn quoted(&self, range: Range<usize>, quote: u8, value: &str) -> Option<Mapped> {
        let o = self.literal_at(&range)?;
        let b = self.sql.as_bytes();
        let text = b.get(range.clone())?;
        if text.len() < 2 || text[0] != quote || text[text.len() - 1] != quote {
            return None;
        }
        let next = b[range.end..]
            .iter()
            .position(|c| !c.is_ascii_whitespace())
            .map(|i| &b[range.end + i..]);
        if let Some(next) = next {
            let comment = next.starts_with(b"/*") || next.starts_with(b"#") || next.starts_with(b"--");
            if next[0] == b'\'' || next[0] == b'"' || comment {
                return None;
            }
        }
        // With a backslash the probe passes it through; the value is not used.
        if !text.contains(&b'\\') {
            let inner = std::str::from_utf8(&text[1..text.len() - 1]).ok()?;
            let q = quote as char;
            if inner.replace(&format!("{q}{q}"), &q.to_string()) != value {
                return None;
            }
        }
        Some(Mapped::Literal(o))
    }
}

/// Every placeholder sqlparser saw is one the lexer saw, and as many.
fn placeholders_agree(statement: &Statement, text: &Text<'_>, params: &[usize]) -> bool {
    let mut seen = Vec::new();
    let mut ok = true;
    let _ = visit_expressions(statement, |expr: &Expr| {
        if let Expr::Value(v) = expr {
            if matches!(&v.value, Value::Placeholder(_)) {
                match text.range(v.span) {
                    Some(r) => seen.push(r.start),
                    None => ok = false,
                }
            }
        }
        ControlFlow::<()>::Continue(())
    });
    seen.sort_unstable();
    ok && seen == params
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::analyze;
    use crate::fingerprint::fingerprint;

    fn shape(sql: &str) -> Option<LookupShape> {
        analyze(sql).lookup
    }

    fn conj(column: &str, values: KeyValues) -> KeyConjunct {
        KeyConjunct {
            column: column.into(),
            values,
        }
    }

    /// The literal texts of each conjunct in an execution of `template`'s
    /// shape, or the pass-through reason.
    fn values_in(template: &str, sql: &str) -> Result<Vec<Vec<String>>, &'static str> {
        let shape = shape(template).expect("a shape");
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let mut lits = Vec::new();
        assert_eq!(
            fingerprint(template, &mut a, &mut lits),
            fingerprint(sql, &mut b, &mut lits),
            "one template"
        );
        let map = shape.resolve(sql, &lits, 0)?;
        Ok(shape
            .conjuncts
            .iter()
            .map(|c| {
                map.ordinals(&c.values)
                    .map(|o| sql[lits[o].clone()].to_string())
                    .collect()
            })
            .collect())
    }

    #[test]
    fn point_lookups_and_where_their_values_are() {
        let s = shape("SELECT c, d FROM app.users WHERE id = 5").unwrap();
        assert_eq!(s.schema.as_deref(), Some("app"));
        assert_eq!(s.table, "users");
        assert_eq!(s.conjuncts, vec![conj("id", KeyValues::Literal(0))]);
        assert_eq!((s.literal_count, s.param_count), (1, 0));
        assert!(s.names("app", "users", None));
        assert!(!s.names("app", "Users", None));

        let s = shape("SELECT * FROM `my db`.`t` AS x WHERE 'a' = x.name AND x.`id` IN (1, -2, 3) AND c > 7")
            .unwrap();
        assert_eq!(s.schema.as_deref(), Some("my db"));
        assert_eq!(s.table, "t");
        assert_eq!(
            s.conjuncts,
            vec![
                conj("name", KeyValues::Literal(0)),
                conj("id", KeyValues::LiteralList { first: 1, after: 1 })
            ]
        );
        assert!(s.conjuncts[1].is_column("ID"));

        let s = shape("SELECT c FROM t WHERE (id = -5) AND k = ? AND (j IN (?, ?)) LIMIT ?").unwrap();
        assert_eq!(
            s.conjuncts,
            vec![
                conj("id", KeyValues::Literal(0)),
                conj("k", KeyValues::Param(0)),
                conj("j", KeyValues::ParamList(vec![1, 2]))
            ]
        );
        assert_eq!(s.param_count, 4);
        assert!(s.names("db", "t", Some("db")));
        assert!(!s.names("db", "t", None));
    }

    #[test]
    fn allowed_around_the_lookup() {
        for sql in [
            "SELECT DISTINCT c FROM t WHERE id = 1",
            "SELECT c FROM t WHERE id = 1 ORDER BY c DESC LIMIT 10",
            "SELECT c FROM t WHERE id = 1 LIMIT 0",
            "SELECT c FROM t WHERE id = 1 LIMIT 10 OFFSET 5",
            "SELECT t.c, c + 1 AS d FROM t WHERE t.id = 1",
            "SELECT c FROM t WHERE id = 1 AND (a = 2 OR b = 3)",
            "SELECT c FROM t WHERE id = 1 AND a <=> 2 AND b IS NULL AND d BETWEEN 1 AND 5",
            "SELECT c FROM t WHERE id = 1 AND name LIKE 'a%' AND NOT x = 2",
            "SELECT c FROM t FORCE INDEX (PRIMARY) WHERE id = 1",
            "SELECT SQL_NO_CACHE c FROM t WHERE id = 1",
            "SELECT c FROM t WHERE id = 'x' AND n = N'y'",
            "SELECT c FROM t\n WHERE\n id = 1",
        ] {
            assert!(shape(sql).is_some(), "{sql}");
        }
        let s = shape("SELECT c FROM t WHERE id = 1 AND (a = 2 OR b = 3)").unwrap();
        assert_eq!(s.conjuncts.len(), 1, "a conjunct under OR is not used");
        // Characters before a value, on later lines, count as characters.
        let s = shape("SELECT 'é' FROM t\nWHERE 'ü' = c AND\n  id = 7").unwrap();
        assert_eq!(
            s.conjuncts,
            vec![
                conj("c", KeyValues::Literal(1)),
                conj("id", KeyValues::Literal(2))
            ]
        );
    }

    #[test]
    fn not_lookups() {
        for sql in [
            // Several tables, joins, subqueries, set operations, CTEs.
            "SELECT * FROM t, u WHERE t.id = 1",
            "SELECT * FROM t JOIN u ON t.id = u.id WHERE t.id = 1",
            "SELECT * FROM (SELECT * FROM t) x WHERE id = 1",
            "SELECT * FROM t WHERE id = 1 AND x IN (SELECT a FROM u)",
            "SELECT * FROM t WHERE id = 1 AND EXISTS (SELECT 1 FROM u)",
            "SELECT (SELECT 1 FROM u) FROM t WHERE id = 1",
            "SELECT * FROM t WHERE id = 1 UNION SELECT * FROM t WHERE id = 2",
            "SELECT * FROM t WHERE id = 1 EXCEPT SELECT * FROM t WHERE id = 2",
            "SELECT * FROM t WHERE id = 1 INTERSECT SELECT * FROM t WHERE id = 2",
            "WITH x AS (SELECT 1) SELECT * FROM t WHERE id = 1",
            "(SELECT * FROM t WHERE id = 1)",
            // A row for no match.
            "SELECT COUNT(*) FROM t WHERE id = 1",
            "SELECT SUM(c) FROM t WHERE id = 1",
            "SELECT c FROM t WHERE id = 1 GROUP BY c",
            "SELECT c FROM t WHERE id = 1 HAVING c > 1",
            "SELECT ROW_NUMBER() OVER () FROM t WHERE id = 1",
            // State beyond the result.
            "SELECT SQL_CALC_FOUND_ROWS c FROM t WHERE id = 1",
            "SELECT c INTO @v FROM t WHERE id = 1",
            "SELECT c FROM t WHERE id = 1 INTO OUTFILE '/tmp/x'",
            "SELECT c FROM t WHERE id = 1 FOR UPDATE",
            "SELECT c FROM t WHERE id = 1 FOR SHARE",
            "SELECT c FROM t WHERE id = 1 LOCK IN SHARE MODE",
            "SELECT @a FROM t WHERE id = 1",
            "SELECT c FROM t WHERE id = @id",
            "SELECT c FROM t WHERE id = 1 AND @a := 1",
            "SELECT @@server_id FROM t WHERE id = 1",
            // Functions anywhere.
            "SELECT NOW() FROM t WHERE id = 1",
            "SELECT c FROM t WHERE id = ABS(-1)",
            "SELECT c FROM t WHERE id = 1 AND f(c)",
            "SELECT c FROM t WHERE id = 1 ORDER BY RAND()",
            // No usable conjunct.
            "SELECT c FROM t",
            "SELECT 1",
            "SELECT 1 WHERE 1 = 1",
            "SELECT c FROM t WHERE id = 1 OR id = 2",
            "SELECT c FROM t WHERE id <=> 1",
            "SELECT c FROM t WHERE id IS NULL",
            "SELECT c FROM t WHERE id NOT IN (1, 2)",
            "SELECT c FROM t WHERE id != 1",
            "SELECT c FROM t WHERE id = NULL",
            "SELECT c FROM t WHERE id = TRUE",
            "SELECT c FROM t WHERE id = X'01'",
            "SELECT c FROM t WHERE id = b'1'",
            "SELECT c FROM t WHERE id = - 5",
            "SELECT c FROM t WHERE id = 1 + 1",
            "SELECT c FROM t WHERE id = c2",
            "SELECT c FROM t WHERE id = 'a' 'b'",
            "SELECT c FROM t WHERE id IN (1, ?)",
            "SELECT c FROM t WHERE 0b11 = 1",
            "SELECT c FROM t AS x WHERE t.id = 1",
            "SELECT c FROM t WHERE u.id = 1",
            "SELECT c FROM t WHERE other.t.id = 1",
            // Introducers and COLLATE.
            "SELECT c FROM t WHERE id = _utf8mb4'a'",
            "SELECT c FROM t WHERE id = 'a' COLLATE utf8mb4_bin",
            // Text whose meaning depends on the server or sql_mode.
            "SELECT c FROM t WHERE id = 1 /*!99999 AND x = 2 */",
            "SELECT c FROM t WHERE id = 1 /*M! OR 1 = 1 */",
            "SELECT c FROM t WHERE id = 1 AND a || b",
            "SELECT c FROM t WHERE id = 1 && a",
            "SELECT c FROM t WHERE id = 1 AND a XOR b",
            "SELECT c FROM t WHERE id = 1 AND CASE WHEN a THEN 1 END",
            "SELECT c FROM t WHERE id = 1 AND a REGEXP 'x'",
            "SELECT c FROM t PARTITION (p0) WHERE id = 1",
            // Lists whose lengths cannot be told apart.
            "SELECT c FROM t WHERE id IN (1, 2) AND k IN (3, 4)",
            "SELECT c FROM t WHERE id = 1 LIMIT 5, 10",
            "SELECT 1, 2, c FROM t WHERE id = 1",
            "SELECT c FROM t WHERE id = 1 AND (a, b) = (1, 2)",
            // Other statements.
            "UPDATE t SET c = 1 WHERE id = 1",
            "DELETE FROM t WHERE id = 1",
            "SELECT c FROM t WHERE id = 1; SELECT 2",
            "EXPLAIN SELECT c FROM t WHERE id = 1",
        ] {
            assert_eq!(shape(sql), None, "{sql}");
        }
    }

    #[test]
    fn executions_of_a_template() {
        let t = "SELECT c FROM t WHERE id = 5 AND name = 'x'";
        assert_eq!(
            values_in(t, "SELECT c FROM t WHERE id = 77 AND name = 'it''s'"),
            Ok(vec![vec!["77".into()], vec!["'it''s'".into()]])
        );
        assert_eq!(
            values_in(t, "SELECT c FROM t WHERE id = -1 AND name = 'a\\'b'"),
            Err("backslash_escape")
        );
        // `/*M! */` is code to the fingerprint too: another template.
        let (mut a, mut b, mut lits) = (Vec::new(), Vec::new(), Vec::new());
        assert_ne!(
            fingerprint(t, &mut a, &mut lits),
            fingerprint(
                "SELECT c FROM t WHERE id = 5 AND name = 'x' /*M! OR 1 = 1 */",
                &mut b,
                &mut lits
            )
        );
        // The markers of `/*! */` are dropped: the body must not count.
        let k = "SELECT c FROM t WHERE id = 5 AND name = 'x' AND k = 1";
        assert_eq!(
            values_in(
                k,
                "SELECT c FROM t WHERE id = 5 AND name = 'x' /*!99999 AND k = 1 */"
            ),
            Err("versioned_comment")
        );
        // `id = 5, 6` is no statement the server runs, but fingerprints as `id = ?`.
        assert_eq!(
            values_in(t, "SELECT c FROM t WHERE id = 5, 6 AND name = 'x'"),
            Err("shape_mismatch")
        );
    }

    #[test]
    fn in_lists_of_any_length() {
        let t = "SELECT c FROM t WHERE a = 1 AND id IN (5, 6) AND b = 'z' LIMIT 3";
        assert_eq!(
            values_in(t, "SELECT c FROM t WHERE a = 2 AND id IN (7) AND b = 'y' LIMIT 4"),
            Ok(vec![vec!["2".into()], vec!["7".into()], vec!["'y'".into()]])
        );
        assert_eq!(
            values_in(
                t,
                "SELECT c FROM t WHERE a = 2 AND id IN ( 7 ,8,\n-9 ) AND b = 'y' LIMIT 4"
            ),
            Ok(vec![
                vec!["2".into()],
                vec!["7".into(), "8".into(), "-9".into()],
                vec!["'y'".into()]
            ])
        );
        // Another list that grew while this one shrank: same literal count.
        let t = "SELECT c FROM t WHERE id IN (5, 6) ORDER BY 1";
        assert_eq!(
            values_in(t, "SELECT c FROM t WHERE id IN (5) ORDER BY 1, 2"),
            Err("shape_mismatch")
        );
        let t = "SELECT 1 FROM t WHERE a = 3 AND id IN (5, 6)";
        assert_eq!(
            values_in(t, "SELECT 1, 2 FROM t WHERE a = 3 AND id IN (5)"),
            Err("shape_mismatch")
        );
        assert_eq!(
            values_in(t, "SELECT 1, 2 FROM t WHERE a = 3 AND id IN (5, 6, 7)"),
            Err("shape_mismatch")
        );
        // A comment inside the list is not trusted.
        assert_eq!(
            values_in(t, "SELECT 1 FROM t WHERE a = 3 AND id IN (5, /* x */ 6)"),
            Err("shape_mismatch")
        );
    }

    #[test]
    fn resolve_checks_parameters_and_counts() {
        let s = shape("SELECT c FROM t WHERE id = ?").unwrap();
        assert_eq!(
            s.resolve("SELECT c FROM t WHERE id = ?", &[], 1),
            Ok(LiteralMap { list: None })
        );
        assert_eq!(
            s.resolve("SELECT c FROM t WHERE id = ?", &[], 0),
            Err("shape_mismatch")
        );
        // `IN (?)` and `IN (7)` share a fingerprint.
        let s = shape("SELECT c FROM t WHERE id IN (?)").unwrap();
        let sql = "SELECT c FROM t WHERE id IN (7)";
        let mut lits = Vec::new();
        fingerprint(sql, &mut Vec::new(), &mut lits);
        assert_eq!(s.resolve(sql, &lits, 0), Err("shape_mismatch"));
        let s = shape("SELECT c FROM t WHERE id IN (7)").unwrap();
        assert_eq!(
            s.resolve("SELECT c FROM t WHERE id IN (?)", &[], 1),
            Err("shape_mismatch")
        );
        // Spans that are not in the text do not panic.
        let s = shape("SELECT c FROM t WHERE id = 5").unwrap();
        let outside = vec![Range { start: 5, end: 90 }];
        assert_eq!(s.resolve("x", &outside, 0), Err("shape_mismatch"));
        let s = shape("SELECT c FROM t WHERE id IN (5)").unwrap();
        let reversed = vec![0..1, Range { start: 3, end: 2 }];
        assert_eq!(s.resolve("x", &reversed, 0), Err("shape_mismatch"));
    }

    #[test]
    fn literal_texts_must_be_the_values() {
        let mut lits = Vec::new();
        let heads = vec![true; 8];
        let sql = "SELECT 'a''b', \"q\", -5, 0x1F, 1e3";
        fingerprint(sql, &mut Vec::new(), &mut lits);
        let text = Text::new(sql, &lits, &heads);
        assert_eq!(text.offset(Location::new(1, 1)), Some(0));
        let end = sql.chars().count() as u64 + 1;
        assert_eq!(text.offset(Location::new(1, end)), Some(sql.len()));
        assert_eq!(text.offset(Location::new(1, end + 1)), None);
        assert_eq!(text.offset(Location::new(2, 1)), None);
        assert_eq!(text.offset(Location::new(0, 1)), None);
        assert_eq!(text.placeholders(), Vec::<usize>::new());
        let q = Text::new("SELECT '?', ? /* ? */, `?`, ?", &[], &[]);
        assert_eq!(q.placeholders(), vec![12, 28]);
    }

    #[test]
    fn random_texts_never_panic() {
        let seeds = [
            "SELECT c FROM t WHERE id IN (1, -2, 3) AND k = 'é''x' AND j = ? LIMIT 4",
            "SELECT a.c FROM db.t a WHERE a.id = -5 AND\n n = \"q\" ORDER BY 1",
        ];
        let pieces = [
            "'", "\"", "-", "(", ")", ",", " ", "\n", "é", "?", "1", "0x1", "/*", "*/", "\\", "AND", "OR",
            "IN",
        ];
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as usize
        };
        let (mut out, mut lits) = (Vec::new(), Vec::new());
        for _ in 0..3000 {
            let mut sql = seeds[next() % seeds.len()].to_string();
            for _ in 0..next() % 4 {
                let at = next() % (sql.len() + 1);
                if sql.is_char_boundary(at) {
                    sql.insert_str(at, pieces[next() % pieces.len()]);
                }
            }
            let Some(shape) = shape(&sql) else { continue };
            let mut other = sql.clone();
            let at = next() % (other.len() + 1);
            if other.is_char_boundary(at) {
                other.insert_str(at, pieces[next() % pieces.len()]);
            }
            fingerprint(&other, &mut out, &mut lits);
            if let Ok(map) = shape.resolve(&other, &lits, shape.param_count) {
                for c in &shape.conjuncts {
                    for o in map.ordinals(&c.values) {
                        assert!(o < lits.len(), "{sql} / {other}");
                    }
                }
            }
        }
    }

    #[test]
    fn resolved_values_are_the_executions_own() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as usize
        };
        let values = ["1", "-7", "'x'", "'y''z'", "42", "0x1F", "2.5"];
        // Between 1 and `max` values.
        let mut value = |max: usize| -> Vec<String> {
            let n = 1 + next() % max;
            (0..n)
                .map(|_| values[next() % values.len()].to_string())
                .collect()
        };
        let (mut out, mut lits, mut out2) = (Vec::new(), Vec::new(), Vec::new());
        let (mut resolved, mut mismatched) = (0, 0);
        let mut executions = Vec::new();
        for _ in 0..400 {
            let (p, a, list, b, o) = (value(2), value(1), value(4), value(1), value(2));
            let sql = format!(
                "SELECT {} FROM t WHERE a = {} AND id IN ({}) AND b = {} ORDER BY {}",
                p.join(", "),
                a[0],
                list.join(", "),
                b[0],
                o.join(",")
            );
            executions.push((sql, vec![a, list, b]));
        }
        for (template, _) in &executions {
            let Some(shape) = shape(template) else { continue };
            let hash = fingerprint(template, &mut out, &mut lits);
            for (sql, expected) in &executions {
                if fingerprint(sql, &mut out2, &mut lits) != hash {
                    continue;
                }
                match shape.resolve(sql, &lits, 0) {
                    Ok(map) => {
                        resolved += 1;
                        let got: Vec<Vec<String>> = shape
                            .conjuncts
                            .iter()
                            .map(|c| {
                                map.ordinals(&c.values)
                                    .map(|o| sql[lits[o].clone()].to_string())
                                    .collect()
                            })
                            .collect();
                        assert_eq!(&got, expected, "{template} -> {sql}");
                    }
                    Err(_) => mismatched += 1,
                }
            }
        }
        assert!(resolved > 100 && mismatched > 100, "{resolved} {mismatched}");
    }
}
