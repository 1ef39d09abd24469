//! Facts about a statement taken from sqlparser's AST (MySqlDialect): what
//! kind it is, whether a replica may run it, the tables it touches, locking
//! clauses, functions with side effects or bound to the connection, how it
//! changes the session, and the point-lookup shape. Runs only on a
//! classification-cache miss.

use crate::classify::Kind;
use crate::lookup::{LookupShape, lookup_shape};
use sqlparser::ast::{
    BinaryOperator, ContextModifier, Expr, FunctionArguments, ObjectName, Set, SetExpr, Statement,
    TableFactor, TransactionAccessMode, TransactionMode, UnaryOperator, visit_expressions, visit_relations,
};
use sqlparser::dialect::MySqlDialect;
use sqlparser::parser::Parser;
use std::ops::ControlFlow;

/// Functions that write, take locks or depend on the connection: a SELECT
/// that calls one runs on the primary.
const PRIMARY_FUNCTIONS: &[&str] = &[
    "GET_LOCK",
    "RELEASE_LOCK",
    "RELEASE_ALL_LOCKS",
    "IS_USED_LOCK",
    "IS_FREE_LOCK",
    "NEXTVAL",
    "LASTVAL",
    "SETVAL",
    "NEXT_VALUE",
    "MASTER_POS_WAIT",
    "MASTER_GTID_WAIT",
    "LOAD_FILE",
];

/// A transaction-control statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxControl {
    Begin { read_only: bool },
    End,
}

/// `WHERE key = literal` or `WHERE key IN (literals)` on one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PointLookup {
    pub table: String,
    pub column: String,
}

/// What the AST says. `parsed == false` means sqlparser failed and only
/// the lexical facts are known.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AstFacts {
    pub parsed: bool,
    pub statements: usize,
    pub kind: Option<Kind>,
    /// Safe to run on a replica.
    pub read_only: bool,
    pub tables: Vec<String>,
    /// A derived table (`FROM (SELECT ...) x`) or a table function
    /// (`JSON_TABLE`): MariaDB counts such a statement as using tables even
    /// without a real one (it clears the warnings the previous statement
    /// left); a subquery or UNION of no table does not count.
    pub derived_tables: bool,
    /// `DO expr, ...`, which sqlparser does not parse: its tables and
    /// levels are those of `SELECT expr, ...` (for the diagnostics rule
    /// only; it still counts as unparsed).
    pub do_statement: bool,
    /// FOR UPDATE / FOR SHARE / LOCK IN SHARE MODE.
    pub locking: bool,
    /// SELECT ... INTO (variables or files).
    pub select_into: bool,
    /// Calls a function from [`PRIMARY_FUNCTIONS`].
    pub primary_function: bool,
    pub transaction: Option<TxControl>,
    pub set_global: bool,
    /// `SET @v = literal`: variable names, one per literal, in order.
    pub user_var_literals: Vec<String>,
    /// A SET whose value is not a literal (user variables only).
    pub user_var_expression: bool,
    pub point_lookup: Option<PointLookup>,
    /// The point lookup the empty-key guard may answer (a single SELECT).
    pub lookup: Option<LookupShape>,
    /// A SELECT of literals and variables only (no table, no function):
    /// it cannot read stale data, so replica lag does not matter to it.
    pub reads_no_data: bool,
}

/// Finds derived tables and table functions (see
/// [`AstFacts::derived_tables`]).
struct DerivedTables;

impl sqlparser::ast::Visitor for DerivedTables {
    type Break = ();

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
        match factor {
            TableFactor::Derived { .. }
            | TableFactor::JsonTable { .. }
            | TableFactor::OpenJsonTable { .. }
            | TableFactor::TableFunction { .. }
            | TableFactor::Function { .. } => ControlFlow::Break(()),
            _ => ControlFlow::Continue(()),
        }
    }
}

fn derived_tables(statement: &Statement) -> bool {
    use sqlparser::ast::Visit;
    statement.visit(&mut DerivedTables).is_break()
}

/// The facts of `DO ...` (see [`AstFacts::do_statement`]).
fn do_statement(sql: &str) -> Option<AstFacts> {
    let text = sql.trim_start();
    let rest = text
        .get(..3)
        .filter(|w| w.eq_ignore_ascii_case("DO ") || w.eq_ignore_ascii_case("DO\t"))?;
    let select = format!("SELECT {}", &text[rest.len()..]);
    let mut statements = Parser::parse_sql(&MySqlDialect {}, &select).ok()?;
    let statement = statements.pop().filter(|_| statements.is_empty())?;
    let mut facts = AstFacts {
        do_statement: true,
        derived_tables: derived_tables(&statement),
        ..AstFacts::default()
    };
    let _ = visit_relations(&statement, |name: &ObjectName| {
        facts.tables.push(name.to_string());
        ControlFlow::<()>::Continue(())
    });
    Some(facts)
}

pub fn analyze(sql: &str) -> AstFacts {
    let statements = match Parser::parse_sql(&MySqlDialect {}, sql) {
        Ok(s) => s,
        Err(_) => return do_statement(sql).unwrap_or_default(),
    };
    let mut facts = AstFacts {
        parsed: true,
        statements: statements.len(),
        ..AstFacts::default()
    };
    if statements.len() != 1 {
        // Multi-statements run on the primary as a unit.
        return facts;
    }
    let statement = &statements[0];
    let _ = visit_relations(statement, |name: &ObjectName| {
        facts.tables.push(name.to_string());
        ControlFlow::<()>::Continue(())
    });
    facts.derived_tables = derived_tables(statement);
    let mut calls_function = false;
    let _ = visit_expressions(statement, |expr: &Expr| {
        if let Expr::Function(f) = expr {
            calls_function = true;
            let name = f.name.to_string().to_ascii_uppercase();
            if PRIMARY_FUNCTIONS.contains(&name.as_str()) {
                facts.primary_function = true;
            }
            let _ = &f.args as &FunctionArguments;
        }
        ControlFlow::<()>::Continue(())
    });
    match statement {
        Statement::Query(query) => {
            facts.kind = Some(Kind::Select);
            facts.locking = !query.locks.is_empty();
            if let SetExpr::Select(select) = query.body.as_ref() {
                facts.select_into = select.into.is_some();
                facts.point_lookup = point_lookup(&select.from, select.selection.as_ref());
            }
            facts.lookup = lookup_shape(sql, statement);
            facts.read_only = !facts.locking && !facts.select_into && !facts.primary_function;
            facts.reads_no_data = facts.read_only && facts.tables.is_empty() && !calls_function;
        }
        Statement::ShowVariable { .. }
        | Statement::ShowVariables { .. }
        | Statement::ShowStatus { .. }
        | Statement::ShowCreate { .. }
        | Statement::ShowColumns { .. }
        | Statement::ShowDatabases { .. }
        | Statement::ShowSchemas { .. }
        | Statement::ShowTables { .. }
        | Statement::ShowViews { .. }
        | Statement::ShowCollation { .. }
        | Statement::ShowCharset(_)
        | Statement::ShowFunctions { .. }
        | Statement::ShowProcessList { .. }
        | Statement::ShowObjects(_)
        | Statement::ExplainTable { .. } => {
            facts.kind = Some(Kind::Show);
            facts.read_only = true;
        }
        Statement::Explain {
            analyze, statement, ..
        } => {
            facts.kind = Some(Kind::Show);
            // EXPLAIN ANALYZE runs the statement; plain EXPLAIN of a read is a read.
            facts.read_only = !analyze && matches!(statement.as_ref(), Statement::Query(_));
        }
        Statement::Insert(_) => facts.kind = Some(Kind::Insert),
        Statement::Update(_) => facts.kind = Some(Kind::Update),
        Statement::Delete(_) => facts.kind = Some(Kind::Delete),
        Statement::Call(_) => facts.kind = Some(Kind::Call),
        Statement::StartTransaction { modes, .. } => {
            facts.kind = Some(Kind::Begin);
            let read_only = modes.contains(&TransactionMode::AccessMode(TransactionAccessMode::ReadOnly));
            facts.transaction = Some(TxControl::Begin { read_only });
        }
        Statement::Commit { .. } => {
            facts.kind = Some(Kind::Commit);
            facts.transaction = Some(TxControl::End);
        }
        Statement::Rollback { savepoint, .. } => {
            facts.kind = Some(Kind::Rollback);
            if savepoint.is_none() {
                facts.transaction = Some(TxControl::End);
            }
        }
        Statement::Set(set) => {
            facts.kind = Some(Kind::Set);
            analyze_set(set, &mut facts);
        }
        Statement::Use(_) => facts.kind = Some(Kind::Use),
        Statement::LockTables { .. } | Statement::Lock(_) => facts.kind = Some(Kind::Lock),
        Statement::UnlockTables => facts.kind = Some(Kind::Unlock),
        Statement::Prepare { .. } => facts.kind = Some(Kind::Prepare),
        Statement::Execute { .. } => facts.kind = Some(Kind::Execute),
        Statement::Deallocate { .. } => facts.kind = Some(Kind::Deallocate),
        _ => {}
    }
    facts
}

fn analyze_set(set: &Set, facts: &mut AstFacts) {
    let mut assign = |scope: Option<&ContextModifier>, name: &ObjectName, value: &Expr| {
        if scope == Some(&ContextModifier::Global) {
            facts.set_global = true;
        }
        let name = name.to_string();
        if let Some(var) = name.strip_prefix('@').filter(|n| !n.starts_with('@')) {
            if is_literal(value) {
                facts.user_var_literals.push(var.to_string());
            } else {
                facts.user_var_expression = true;
            }
        } else if name.to_ascii_lowercase().starts_with("@@global.") {
            facts.set_global = true;
        }
    };
    match set {
        Set::SingleAssignment {
            scope,
            variable,
            values,
            ..
        } => match values.as_slice() {
            [value] => assign(scope.as_ref(), variable, value),
            _ => facts.user_var_expression = true,
        },
        Set::MultipleAssignments { assignments } => {
            for a in assignments {
                assign(a.scope.as_ref(), &a.name, &a.value);
            }
        }
        _ => {}
    }
}

/// A number, a plain string, a boolean or NULL, possibly negated: exactly
/// one `?` in the fingerprint, replayed as written. Hex and bit strings
/// (`X'00ff'`, `b'1'`) and the like are binary values the text would turn
/// into characters: their variables are read back instead.
fn is_literal(expr: &Expr) -> bool {
    use sqlparser::ast::Value;
    let plain = |e: &Expr| match e {
        Expr::Value(v) => matches!(
            v.value,
            Value::Number(..)
                | Value::SingleQuotedString(_)
                | Value::DoubleQuotedString(_)
                | Value::Boolean(_)
                | Value::Null
        ),
        _ => false,
    };
    match expr {
        Expr::UnaryOp {
            op: UnaryOperator::Minus | UnaryOperator::Plus,
            expr,
        } => plain(expr),
        other => plain(other),
    }
}

fn point_lookup(from: &[sqlparser::ast::TableWithJoins], selection: Option<&Expr>) -> Option<PointLookup> {
    let [table] = from else { return None };
    if !table.joins.is_empty() {
        return None;
    }
    let TableFactor::Table { name, .. } = &table.relation else {
        return None;
    };
    let column = match selection? {
        Expr::BinaryOp {
            left,
            op: BinaryOperator::Eq,
            right,
        } => match (left.as_ref(), right.as_ref()) {
            (col, Expr::Value(_)) | (Expr::Value(_), col) => column_name(col)?,
            _ => return None,
        },
        Expr::InList {
            expr,
            list,
            negated: false,
        } if list.iter().all(|e| matches!(e, Expr::Value(_))) => column_name(expr)?,
        _ => return None,
    };
    Some(PointLookup {
        table: name.to_string(),
        column,
    })
}

fn column_name(expr: &Expr) -> Option<String> {
    match expr {
        Expr::Identifier(ident) => Some(ident.value.clone()),
        Expr::CompoundIdentifier(parts) => parts.last().map(|i| i.value.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_select_is_read_only_with_point_lookup() {
        let f = analyze("SELECT c FROM sbtest1 WHERE id = 5");
        assert!(f.parsed && f.read_only);
        assert_eq!(f.tables, vec!["sbtest1"]);
        assert_eq!(
            f.point_lookup,
            Some(PointLookup {
                table: "sbtest1".into(),
                column: "id".into()
            })
        );
        let f = analyze("SELECT * FROM t WHERE t.k IN (1, 2, 3)");
        assert_eq!(f.point_lookup.unwrap().column, "k");
    }

    #[test]
    fn locking_into_and_functions_are_not_read_only() {
        assert!(!analyze("SELECT * FROM t WHERE id = 1 FOR UPDATE").read_only);
        assert!(!analyze("SELECT * FROM t WHERE id = 1 FOR SHARE").read_only);
        assert!(!analyze("SELECT c INTO @v FROM t").read_only);
        assert!(!analyze("SELECT GET_LOCK('a', 1)").read_only);
        assert!(!analyze("SELECT NEXTVAL(seq)").read_only);
        assert!(analyze("SELECT NOW(), CONCAT('a', 'b')").read_only);
    }

    #[test]
    fn selects_of_literals_and_variables_read_no_data() {
        assert!(analyze("SELECT 1").reads_no_data);
        assert!(analyze("SELECT @@max_allowed_packet, @@wait_timeout").reads_no_data);
        assert!(!analyze("SELECT @@server_id FROM t").reads_no_data);
        assert!(!analyze("SELECT (SELECT v FROM t WHERE id = 1), @@server_id").reads_no_data);
        assert!(
            !analyze("SELECT my_function()").reads_no_data,
            "a function may read tables"
        );
        assert!(!analyze("SHOW TABLES").reads_no_data);
    }

    #[test]
    fn show_explain_and_cte_are_reads() {
        assert!(analyze("SHOW TABLES").read_only);
        assert!(analyze("SHOW FULL PROCESSLIST").read_only);
        assert!(analyze("DESCRIBE t").read_only);
        assert!(analyze("EXPLAIN SELECT * FROM t").read_only);
        assert!(analyze("WITH x AS (SELECT 1) SELECT * FROM x").read_only);
        assert!(!analyze("EXPLAIN ANALYZE SELECT * FROM t").read_only);
    }

    #[test]
    fn writes_and_transactions() {
        assert!(!analyze("INSERT INTO t VALUES (1)").read_only);
        assert!(!analyze("UPDATE t SET a = 1").read_only);
        assert_eq!(
            analyze("START TRANSACTION READ ONLY").transaction,
            Some(TxControl::Begin { read_only: true })
        );
        assert_eq!(
            analyze("BEGIN").transaction,
            Some(TxControl::Begin { read_only: false })
        );
        assert_eq!(analyze("COMMIT").transaction, Some(TxControl::End));
        assert_eq!(analyze("ROLLBACK TO SAVEPOINT s").transaction, None);
    }

    #[test]
    fn set_statements() {
        let f = analyze("SET @a = 5, @b = 'x', @c = -1");
        assert_eq!(f.user_var_literals, vec!["a", "b", "c"]);
        assert!(!f.user_var_expression);
        assert!(analyze("SET @a = NOW()").user_var_expression);
        assert!(analyze("SET GLOBAL max_connections = 10").set_global);
        assert!(analyze("SET @@global.max_connections = 10").set_global);
        assert!(!analyze("SET SESSION sql_mode = 'ANSI'").set_global);
    }

    #[test]
    fn known_gaps_do_not_parse() {
        assert!(!analyze("SELECT * FROM t WHERE id = 1 LOCK IN SHARE MODE").parsed);
        assert!(!analyze("LOAD DATA LOCAL INFILE 'x' INTO TABLE t").parsed);
    }
}
