//! What a statement is and what it does to the session, from one pass of the
//! lexer. Anything that leaves state on the backend connection that Sluice
//! cannot replay on another connection is a [`PinReason`].

use crate::lexer::{Lexer, Token};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Select,
    Insert,
    Update,
    Delete,
    Replace,
    Set,
    Use,
    Begin,
    Commit,
    Rollback,
    Show,
    Ddl,
    Call,
    Load,
    Lock,
    Unlock,
    Prepare,
    Execute,
    Deallocate,
    Other,
    Empty,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Select => "select",
            Kind::Insert => "insert",
            Kind::Update => "update",
            Kind::Delete => "delete",
            Kind::Replace => "replace",
            Kind::Set => "set",
            Kind::Use => "use",
            Kind::Begin => "begin",
            Kind::Commit => "commit",
            Kind::Rollback => "rollback",
            Kind::Show => "show",
            Kind::Ddl => "ddl",
            Kind::Call => "call",
            Kind::Load => "load",
            Kind::Lock => "lock",
            Kind::Unlock => "unlock",
            Kind::Prepare => "prepare",
            Kind::Execute => "execute",
            Kind::Deallocate => "deallocate",
            Kind::Other => "other",
            Kind::Empty => "empty",
        }
    }
}

/// State a statement leaves on its connection that cannot follow the client
/// to another connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PinReason {
    TemporaryTable,
    LockTables,
    UserLock,
    SqlPrepare,
    UserVariable,
    Handler,
    /// COM_STMT_PREPARE (the binary protocol).
    PreparedStatement,
    /// A cursor opened by COM_STMT_EXECUTE.
    Cursor,
    /// The server reported a session change Sluice does not track.
    UntrackedState,
}

impl PinReason {
    pub fn label(self) -> &'static str {
        match self {
            PinReason::TemporaryTable => "temporary_table",
            PinReason::LockTables => "lock_tables",
            PinReason::UserLock => "get_lock",
            PinReason::SqlPrepare => "sql_prepare",
            PinReason::UserVariable => "user_variable",
            PinReason::Handler => "handler",
            PinReason::PreparedStatement => "prepared_statement",
            PinReason::Cursor => "cursor",
            PinReason::UntrackedState => "untracked_state",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    pub kind: Kind,
    pub pin: Option<PinReason>,
    /// Reads state of the previous statement's connection: FOUND_ROWS(),
    /// ROW_COUNT(), SHOW WARNINGS/ERRORS.
    pub needs_previous: bool,
    /// Calls LAST_INSERT_ID(), which Sluice replays on any connection.
    pub reads_last_insert_id: bool,
    /// Calls LAST_INSERT_ID(expr), which sets the value (reported by an
    /// OK packet's insert id only when no result set answers it).
    pub sets_last_insert_id: bool,
    /// Calls CONNECTION_ID(), which must return the client's own id.
    pub reads_connection_id: bool,
    /// May create a temporary table: says TEMPORARY anywhere, or runs
    /// other statements (CALL, EXECUTE). The server files temporary tables
    /// under `pseudo_thread_id`, which Sluice sets to the client's id for
    /// CONNECTION_ID(): such a statement runs under that id from the start.
    pub may_create_temporary_table: bool,
    /// Leaves state for the next statement to read (SQL_CALC_FOUND_ROWS).
    pub feeds_next: bool,
    /// Calls GET_LOCK, RELEASE_LOCK or RELEASE_ALL_LOCKS: the client's
    /// user locks change (`user_locks`).
    pub user_lock_calls: bool,
    /// Says SELECT anywhere (a query, or one inside an INSERT, CREATE, SET,
    /// DO): whatever it ran sets `FOUND_ROWS()`.
    pub mentions_select: bool,
    /// `SET TRANSACTION ...` without SESSION or GLOBAL, anywhere in the
    /// text: characteristics for the connection's next transaction only.
    /// No tracked variable reports them, so Sluice cannot replay them on
    /// another connection: the client keeps this one (`plan::hold_after`).
    pub sets_next_transaction: bool,
    /// Reads the server's `read_only` setting (`@@read_only`,
    /// `@@GLOBAL.read_only`, `super_read_only`, `innodb_read_only`). It
    /// differs between the primary and its replicas, and applications ask
    /// it to learn whether they may write (MediaWiki does before every
    /// write), so the primary answers it.
    pub reads_read_only: bool,
    /// Session variables a `SET` assigns as `@@name` (no scope), lower
    /// case. The server sets them for the session but does not report them
    /// through session tracking (it tracks `SET name`, `SET SESSION name`
    /// and `@@session.name`), so Sluice reads them back.
    pub unscoped_sets: Vec<String>,
    /// A `COMMIT` / `ROLLBACK` that says whether the server closes the
    /// connection after it: `RELEASE` (true), `NO RELEASE`, `AND CHAIN` or
    /// `ROLLBACK TO` a savepoint (false). None: the session's
    /// `completion_type` decides (`plan::releases_connection`).
    pub release: Option<bool>,
    /// `/* sluice:... */` hint, if any.
    pub hint: Option<String>,
}

impl Statement {
    /// The `/* sluice:max_lag_ms=N */` override of `routing.max_replica_lag_ms`.
    pub fn max_lag_ms(&self) -> Option<u64> {
        let value = self.hint.as_deref()?.strip_prefix("max_lag_ms")?;
        value.trim_start().strip_prefix('=')?.trim().parse().ok()
    }
}

/// Classifies one statement (or the first of a multi-statement).
pub fn classify(sql: &str) -> Statement {
    let mut tokens = Lexer::new(sql).peekable();
    let mut hint = None;
    let mut kind = Kind::Empty;
    let mut pin = None;
    let mut needs_previous = false;
    let mut reads_last_insert_id = false;
    let mut sets_last_insert_id = false;
    let mut reads_connection_id = false;
    let mut says_temporary = false;
    let mut feeds_next = false;
    let mut mentions_select = false;
    let mut user_lock_calls = false;
    let mut sets_next_transaction = false;
    let mut reads_read_only = false;
    let mut unscoped_sets = Vec::new();
    let mut release = None;
    let mut first = true;
    // The statement's first word, for the locks FLUSH and BACKUP take.
    let mut lead = "";
    // A statement starts here (the text's start, or after a `;`), and the
    // word before, if it started one, was SET.
    let mut at_start = true;
    let mut set_started = false;
    let mut prev_word: Option<&str> = None;
    let mut pending_function: Option<&str> = None;

    while let Some(token) = tokens.next() {
        match token {
            Token::Hint(h) => hint = Some(h.to_string()),
            Token::Word(w) => {
                if first {
                    kind = first_keyword(w);
                    lead = if w.eq_ignore_ascii_case("FLUSH") {
                        "FLUSH"
                    } else if w.eq_ignore_ascii_case("BACKUP") {
                        "BACKUP"
                    } else {
                        ""
                    };
                    first = false;
                    if kind == Kind::Prepare {
                        pin = stronger(pin, PinReason::SqlPrepare);
                    }
                }
                let mut buf = [0u8; 24];
                let word = upper(w, &mut buf);
                if set_started && word == "TRANSACTION" {
                    sets_next_transaction = true;
                }
                set_started = at_start && word == "SET";
                at_start = false;
                match word {
                    "TEMPORARY" => {
                        says_temporary = true;
                        if kind == Kind::Ddl {
                            pin = stronger(pin, PinReason::TemporaryTable)
                        }
                    }
                    "TABLES" | "TABLE" if kind == Kind::Lock && prev_is(prev_word, "LOCK") => {
                        pin = stronger(pin, PinReason::LockTables)
                    }
                    "HANDLER" if prev_word.is_none() => pin = stronger(pin, PinReason::Handler),
                    // FLUSH TABLES [t] WITH READ LOCK / FOR EXPORT, BACKUP
                    // LOCK t / BACKUP STAGE: locks the session holds until
                    // it releases them (a reset does).
                    "LOCK" if lead == "FLUSH" && prev_is(prev_word, "READ") => {
                        pin = stronger(pin, PinReason::LockTables)
                    }
                    "EXPORT" if lead == "FLUSH" && prev_is(prev_word, "FOR") => {
                        pin = stronger(pin, PinReason::LockTables)
                    }
                    "LOCK" | "STAGE" if lead == "BACKUP" && prev_is(prev_word, "BACKUP") => {
                        pin = stronger(pin, PinReason::LockTables)
                    }
                    "SQL_CALC_FOUND_ROWS" => feeds_next = true,
                    "SELECT" => mentions_select = true,
                    "RELEASE" if matches!(kind, Kind::Commit | Kind::Rollback) => {
                        release = Some(!prev_is(prev_word, "NO"))
                    }
                    "CHAIN" if matches!(kind, Kind::Commit | Kind::Rollback) && !prev_is(prev_word, "NO") => {
                        release = Some(false)
                    }
                    "TO" if kind == Kind::Rollback => release = Some(false),
                    "WARNINGS" | "ERRORS" if kind == Kind::Show => needs_previous = true,
                    _ => {}
                }
                pending_function = Some(w);
                prev_word = Some(w);
                continue;
            }
            Token::Punct(b'(') => {
                if let Some(f) = pending_function {
                    let mut buf = [0u8; 24];
                    match upper(f, &mut buf) {
                        "GET_LOCK" => {
                            pin = stronger(pin, PinReason::UserLock);
                            user_lock_calls = true;
                        }
                        "RELEASE_LOCK" | "RELEASE_ALL_LOCKS" => user_lock_calls = true,
                        "LAST_INSERT_ID" => {
                            reads_last_insert_id = true;
                            sets_last_insert_id |= !matches!(tokens.peek(), Some(Token::Punct(b')')));
                        }
                        "CONNECTION_ID" => reads_connection_id = true,
                        "FOUND_ROWS" | "ROW_COUNT" => needs_previous = true,
                        _ => {}
                    }
                }
            }
            Token::Variable(v) => {
                if !v.starts_with("@@") && user_variable_written(kind, prev_word, tokens.peek()) {
                    pin = pin.or(Some(PinReason::UserVariable));
                }
                let lower = v.to_ascii_lowercase();
                if kind == Kind::Set
                    && !lower.contains('.')
                    && lower.len() > 2
                    && lower.starts_with("@@")
                    && matches!(tokens.peek(), Some(Token::Assign | Token::Punct(b'=')))
                {
                    unscoped_sets.push(lower[2..].to_string());
                }
                let name = lower
                    .strip_prefix("@@session.")
                    .or_else(|| lower.strip_prefix("@@local."))
                    .map_or(lower.as_str(), |n| n);
                if matches!(
                    name,
                    "@@warning_count" | "@@error_count" | "warning_count" | "error_count"
                ) {
                    needs_previous = true;
                }
                // `name` is bare after @@session. / @@local.; a user
                // variable keeps its single `@`.
                let var = name
                    .strip_prefix("@@global.")
                    .or_else(|| name.strip_prefix("@@"))
                    .unwrap_or(name);
                if matches!(var, "read_only" | "super_read_only" | "innodb_read_only") {
                    reads_read_only = true;
                }
                // `@@identity` and `@@last_insert_id` are LAST_INSERT_ID().
                if v.starts_with("@@") && matches!(var, "identity" | "last_insert_id") {
                    reads_last_insert_id = true;
                }
            }
            Token::Assign | Token::Punct(_) | Token::Quoted(_) => {}
        }
        if !matches!(token, Token::Hint(_)) {
            at_start = matches!(token, Token::Punct(b';'));
            set_started = false;
        }
        pending_function = None;
        if first && !matches!(token, Token::Hint(_) | Token::Punct(b'(')) {
            first = false;
            kind = Kind::Other;
        }
    }
    Statement {
        kind,
        pin,
        needs_previous,
        reads_last_insert_id,
        sets_last_insert_id,
        reads_connection_id,
        may_create_temporary_table: says_temporary || matches!(kind, Kind::Call | Kind::Execute),
        feeds_next,
        mentions_select,
        user_lock_calls,
        sets_next_transaction,
        reads_read_only,
        unscoped_sets,
        release,
        hint,
    }
}

/// A pin that user variables alone would not need (a lock, a temporary
/// table, ...) wins over the user-variable pin: user variables are read
/// back, the others cannot be.
fn stronger(current: Option<PinReason>, found: PinReason) -> Option<PinReason> {
    match current {
        None | Some(PinReason::UserVariable) => Some(found),
        other => other,
    }
}

fn prev_is(prev: Option<&str>, word: &str) -> bool {
    prev.is_some_and(|p| p.eq_ignore_ascii_case(word))
}

/// A user variable is written by `SET @v =`, `@v :=` and `INTO @v`.
fn user_variable_written(kind: Kind, prev_word: Option<&str>, next: Option<&Token<'_>>) -> bool {
    matches!(next, Some(Token::Assign))
        || (kind == Kind::Set && matches!(next, Some(Token::Punct(b'='))))
        || prev_is(prev_word, "INTO")
}

/// Upper-cases a short word into `buf` without allocating; longer words
/// (never keywords Sluice looks for) come back empty.
fn upper<'b>(word: &str, buf: &'b mut [u8; 24]) -> &'b str {
    let bytes = word.as_bytes();
    if bytes.len() > buf.len() {
        return "";
    }
    for (dst, src) in buf.iter_mut().zip(bytes) {
        *dst = src.to_ascii_uppercase();
    }
    std::str::from_utf8(&buf[..bytes.len()]).unwrap_or("")
}

fn first_keyword(word: &str) -> Kind {
    let mut buf = [0u8; 24];
    match upper(word, &mut buf) {
        "SELECT" | "WITH" | "VALUES" | "TABLE" => Kind::Select,
        "INSERT" => Kind::Insert,
        "UPDATE" => Kind::Update,
        "DELETE" => Kind::Delete,
        "REPLACE" => Kind::Replace,
        "SET" => Kind::Set,
        "USE" => Kind::Use,
        "BEGIN" | "START" => Kind::Begin,
        "COMMIT" => Kind::Commit,
        "ROLLBACK" => Kind::Rollback,
        "SHOW" | "DESCRIBE" | "DESC" | "EXPLAIN" => Kind::Show,
        "CREATE" | "ALTER" | "DROP" | "TRUNCATE" | "RENAME" => Kind::Ddl,
        "CALL" => Kind::Call,
        "LOAD" => Kind::Load,
        "LOCK" => Kind::Lock,
        "UNLOCK" => Kind::Unlock,
        "PREPARE" => Kind::Prepare,
        "EXECUTE" => Kind::Execute,
        "DEALLOCATE" => Kind::Deallocate,
        "HANDLER" => Kind::Other,
        _ => Kind::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pin(sql: &str) -> Option<PinReason> {
        classify(sql).pin
    }

    #[test]
    fn kinds() {
        assert_eq!(classify("  select 1").kind, Kind::Select);
        assert_eq!(classify("/* c */ INSERT INTO t VALUES (1)").kind, Kind::Insert);
        assert_eq!(classify("start transaction").kind, Kind::Begin);
        assert_eq!(classify("(SELECT 1) UNION (SELECT 2)").kind, Kind::Select);
        assert_eq!(classify("").kind, Kind::Empty);
    }

    #[test]
    fn flush_and_backup_locks_pin() {
        for sql in [
            "FLUSH TABLES WITH READ LOCK",
            "flush tables t1, t2 with read lock",
            "FLUSH TABLES t FOR EXPORT",
            "BACKUP LOCK t",
            "BACKUP STAGE START",
        ] {
            assert_eq!(pin(sql), Some(PinReason::LockTables), "{sql}");
        }
        assert_eq!(pin("FLUSH TABLES"), None);
        assert_eq!(pin("FLUSH PRIVILEGES"), None);
        assert_eq!(pin("SELECT 1 FROM t WHERE x = 'FLUSH'"), None);
    }

    #[test]
    fn one_shot_set_transaction_is_seen_anywhere_in_the_text() {
        let next = |sql: &str| classify(sql).sets_next_transaction;
        assert!(next("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE"));
        assert!(next("set transaction read only"));
        assert!(next("/* c */ SET /* sluice:primary */ TRANSACTION READ WRITE"));
        assert!(next("SELECT 1; SET TRANSACTION READ ONLY"));
        // Session and global characteristics are variables Sluice tracks.
        assert!(!next("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED"));
        assert!(!next("SET GLOBAL TRANSACTION READ ONLY"));
        // A column or a string named so is not the statement.
        assert!(!next("UPDATE t SET transaction = 1"));
        assert!(!next("INSERT INTO t SET transaction = 1"));
        assert!(!next("SELECT 'SET TRANSACTION READ ONLY'"));
        assert!(!next("SET @transaction = 1"));
    }

    #[test]
    fn reads_of_the_read_only_setting_are_seen() {
        let asks = |sql: &str| classify(sql).reads_read_only;
        assert!(asks("SELECT @@GLOBAL.read_only AS Value"));
        assert!(asks("select @@read_only"));
        assert!(asks("SELECT @@global.super_read_only, @@innodb_read_only"));
        assert!(asks("SELECT 1, @@session.read_only"));
        assert!(!asks("SELECT @@tx_read_only, @@transaction_read_only"));
        assert!(!asks("SELECT @read_only"));
        assert!(!asks("SELECT read_only FROM t"));
        assert!(!asks("SELECT '@@read_only'"));
    }

    #[test]
    fn unscoped_system_variable_assignments_are_listed() {
        let sets = |sql: &str| classify(sql).unscoped_sets;
        assert_eq!(sets("SET @@time_zone = '+05:00'"), ["time_zone"]);
        assert_eq!(
            sets("SET @@SQL_MODE='ANSI', @@session.wait_timeout = 5, @@Max_Statement_Time := 2"),
            ["sql_mode", "max_statement_time"]
        );
        assert!(sets("SET time_zone = '+05:00'").is_empty());
        assert!(sets("SET @@session.time_zone = '+05:00'").is_empty());
        assert!(sets("SET @@global.max_connections = 10").is_empty());
        assert!(sets("SET @v = @@time_zone").is_empty());
        assert!(sets("SELECT @@time_zone = '+05:00'").is_empty());
    }

    #[test]
    fn temporary_tables_pin() {
        assert_eq!(
            pin("CREATE TEMPORARY TABLE t (a int)"),
            Some(PinReason::TemporaryTable)
        );
        assert_eq!(pin("CREATE TABLE temporary_stuff (a int)"), None);
    }

    #[test]
    fn lock_tables_pin() {
        assert_eq!(pin("LOCK TABLES t WRITE"), Some(PinReason::LockTables));
        assert_eq!(pin("SELECT * FROM t LOCK IN SHARE MODE"), None);
    }

    #[test]
    fn get_lock_pins_but_not_in_strings() {
        assert_eq!(pin("SELECT GET_LOCK('a', 1)"), Some(PinReason::UserLock));
        assert_eq!(pin("SELECT 'GET_LOCK(1)'"), None);
    }

    #[test]
    fn user_variables_pin() {
        assert_eq!(pin("SET @a = 1"), Some(PinReason::UserVariable));
        assert_eq!(pin("SELECT @a := 1"), Some(PinReason::UserVariable));
        assert_eq!(pin("SELECT c INTO @v FROM t"), Some(PinReason::UserVariable));
        assert_eq!(pin("SELECT @a"), None);
        assert_eq!(pin("SET @a = 1, @b = 2"), Some(PinReason::UserVariable));
        assert_eq!(pin("SET SESSION sql_mode = @saved"), None);
        assert_eq!(pin("SET SESSION sql_mode = 'ANSI'"), None);
        assert_eq!(pin("SET @@session.sql_mode = 'ANSI'"), None);
    }

    #[test]
    fn sql_prepare_pins() {
        assert_eq!(pin("PREPARE s FROM 'SELECT 1'"), Some(PinReason::SqlPrepare));
    }

    #[test]
    fn reads_of_previous_statement_state() {
        assert!(classify("SELECT LAST_INSERT_ID()").reads_last_insert_id);
        assert!(!classify("SELECT LAST_INSERT_ID()").sets_last_insert_id);
        assert!(classify("SELECT @@identity").reads_last_insert_id);
        assert!(classify("SELECT @@session.last_insert_id").reads_last_insert_id);
        assert!(!classify("SELECT @identity").reads_last_insert_id);
        assert!(classify("SELECT LAST_INSERT_ID(42)").sets_last_insert_id);
        assert!(classify("UPDATE t SET id = LAST_INSERT_ID(id + 1)").sets_last_insert_id);
        assert!(classify("select connection_id()").reads_connection_id);
        assert!(!classify("SELECT connection_id FROM t").reads_connection_id);
        assert!(!classify("SELECT LAST_INSERT_ID()").needs_previous);
        assert!(classify("select found_rows()").needs_previous);
        assert!(classify("SHOW WARNINGS").needs_previous);
        assert!(classify("SELECT @@warning_count").needs_previous);
        assert!(!classify("SELECT last_insert_id FROM t").reads_last_insert_id);
        assert!(classify("SELECT SQL_CALC_FOUND_ROWS * FROM t LIMIT 1").feeds_next);
    }

    #[test]
    fn hints_are_read() {
        assert_eq!(
            classify("SELECT /* sluice:primary */ 1").hint.as_deref(),
            Some("primary")
        );
        assert_eq!(
            classify("/* sluice:max_lag_ms=250 */ SELECT 1").max_lag_ms(),
            Some(250)
        );
        assert_eq!(
            classify("SELECT 1 /* sluice:max_lag_ms = 0 */").max_lag_ms(),
            Some(0)
        );
        assert_eq!(classify("SELECT /* sluice:max_lag_ms=x */ 1").max_lag_ms(), None);
        assert_eq!(classify("SELECT /* sluice:replica */ 1").max_lag_ms(), None);
    }
}
