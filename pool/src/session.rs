//! Session state that must follow a client from one pooled connection to the
//! next: the default schema, the multi-statement option, and session
//! variables. The values are the ones the server reports through session
//! tracking, so `SET sql_mode = CONCAT(@@sql_mode, ...)` is captured as its
//! result and replayed as a literal.

use crate::Vars;
use sluice_protocol::packets::{StateChange, state_changes};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionState {
    pub schema: Option<String>,
    /// Session variables by lower-case name, as the server formats them.
    pub vars: Vars,
    pub multi_statements: bool,
    /// Value LAST_INSERT_ID() returns, from the last OK packet that carried
    /// one. Replayed (`SET last_insert_id`) only for statements that call
    /// LAST_INSERT_ID(), so inserts cost no extra round trip.
    pub last_insert_id: u64,
    /// User variables set to literals: name → the literal's SQL text.
    pub user_vars: BTreeMap<String, String>,
    /// The id `CONNECTION_ID()` returns: the client's (its handshake's) id
    /// in the client's state; on a connection, the `pseudo_thread_id`
    /// Sluice last set there (0: the server's own id). Set only for
    /// statements that call CONNECTION_ID(), so others cost nothing.
    pub connection_id: u32,
}

/// Variables that are not state of their own: derived from the schema,
/// one-shot, or Sluice's own tracking settings.
const NOT_REPLAYED: &[&str] = &[
    "character_set_database",
    "collation_database",
    "last_gtid",
    "insert_id",
    "last_insert_id",
    "identity",
    "rand_seed1",
    "rand_seed2",
    "warning_count",
    "error_count",
    "gtid_seq_no",
    "pseudo_thread_id",
    "in_transaction",
    "session_track_schema",
    "session_track_state_change",
    "session_track_system_variables",
    "session_track_transaction_info",
];

/// Charset variables go first (and collation after its charset) because
/// setting a charset resets its collation.
const ORDER_FIRST: &[&str] = &[
    "character_set_client",
    "character_set_connection",
    "character_set_results",
    "collation_connection",
];

/// The collation `character_set_results` carries, kept among the variables
/// under a name no real variable has, as `charset collation`. The server
/// hides it (`@@character_set_results` shows only the charset) but sends
/// its id in every result column's definition: a handshake or `SET NAMES x
/// COLLATE y` sets it to y, `SET character_set_results = x` to x's default.
/// Absent when the results charset is NULL or the collation is unknown.
/// Replayed with `SET NAMES`, the only statement that sets it.
pub const RESULTS_COLLATION: &str = "results collation";

/// The variables a client's handshake charset sets.
pub fn charset_vars(charset: &str, collation: &str) -> [(String, String); 5] {
    [
        ("character_set_client".into(), charset.into()),
        ("character_set_connection".into(), charset.into()),
        ("character_set_results".into(), charset.into()),
        ("collation_connection".into(), collation.into()),
        (RESULTS_COLLATION.into(), format!("{charset} {collation}")),
    ]
}

/// What an OK packet's session-state block told us.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Absorbed {
    pub schema_or_vars_changed: bool,
    /// The server said "state changed" without naming a schema or variable:
    /// user variables, temporary tables, prepared statements, ...
    pub untracked_change: bool,
    /// One of `character_set_connection` / `collation_connection` changed
    /// without the other being reported (`SET NAMES` reports no collation),
    /// though setting one changes both, or `character_set_results` changed
    /// (its hidden collation): read them back.
    pub connection_charset_unsure: bool,
}

impl SessionState {
    /// Records the changes of a session-state block.
    pub fn absorb(&mut self, block: &[u8]) -> Absorbed {
        let mut out = Absorbed::default();
        let mut state_changed = false;
        let (mut charset, mut collation, mut results) = (false, false, false);
        for change in state_changes(block) {
            match change {
                StateChange::SystemVariable { name, value } => {
                    let name = String::from_utf8_lossy(name).to_ascii_lowercase();
                    charset |= name == "character_set_connection";
                    collation |= name == "collation_connection";
                    results |= name == "character_set_results";
                    if NOT_REPLAYED.contains(&name.as_str()) {
                        continue;
                    }
                    self.vars
                        .insert(name, String::from_utf8_lossy(value).into_owned());
                    out.schema_or_vars_changed = true;
                }
                StateChange::Schema(name) => {
                    self.schema = Some(String::from_utf8_lossy(name).into_owned());
                    out.schema_or_vars_changed = true;
                }
                StateChange::StateChanged => state_changed = true,
                StateChange::Gtids(_) | StateChange::Other(_) => {}
            }
        }
        out.untracked_change = state_changed && !out.schema_or_vars_changed;
        out.connection_charset_unsure = charset != collation || results;
        if results {
            // Until read back: absent replays the charset, whose default
            // collation is what a plain `SET character_set_results` gives.
            self.vars.update(|vars| {
                vars.remove(RESULTS_COLLATION);
            });
        }
        out
    }

    /// Records session variables read back from the server, as a tracker
    /// report of them would (Sluice's own tracking settings are skipped).
    pub fn record_vars(&mut self, read: &[(String, String)]) {
        self.vars.update(|vars| {
            for (name, value) in read {
                if !NOT_REPLAYED.contains(&name.as_str()) {
                    vars.insert(name.clone(), value.clone());
                }
            }
        });
    }

    /// Records the connection charset and collation read back from the
    /// server after a change that reported only one of them, and the
    /// results collation ([`RESULTS_COLLATION`]'s format; None: unknown).
    pub fn set_connection_charset(&mut self, charset: String, collation: String, results: Option<String>) {
        self.vars.update(|vars| {
            vars.insert("character_set_connection".into(), charset);
            vars.insert("collation_connection".into(), collation);
            match results {
                Some(results) => vars.insert(RESULTS_COLLATION.into(), results),
                None => vars.remove(RESULTS_COLLATION),
            };
        });
    }

    /// The `SET` statement that turns this state's variables into
    /// `desired`'s, or None when they already match. Variables this side has
    /// but `desired` does not go back to the value the connection's login
    /// gave them: `login` where named, else the server default.
    pub fn set_statement_towards(
        &self,
        desired: &SessionState,
        login: &[(String, String)],
    ) -> Option<String> {
        if self.vars == desired.vars && self.user_vars == desired.user_vars {
            return None;
        }
        let mut assignments: Vec<String> = Vec::new();
        let changed = |name: &str| desired.vars.get(name) != self.vars.get(name);
        // The results collation: `SET NAMES` sets it, and the charset
        // variables after it (all four, since NAMES changed them) put the
        // rest back; none wanted: setting the results charset clears it.
        let names = match desired.vars.get(RESULTS_COLLATION) {
            Some(pair) if changed(RESULTS_COLLATION) => pair.split_once(' '),
            _ => None,
        };
        if let Some((charset, collation)) = names {
            assignments.push(format!(
                "NAMES {} COLLATE {}",
                sql_value(charset),
                sql_value(collation)
            ));
        }
        // After NAMES the other three are set again (NAMES changed them),
        // and the results charset is NAMES's own: setting it again would
        // put the charset's default collation back. Without NAMES, a
        // results collation no longer wanted goes with the results charset.
        let emit = |name: &str| match (name, names.is_some()) {
            ("character_set_results", true) => false,
            ("character_set_results", false) => changed(name) || changed(RESULTS_COLLATION),
            (_, true) => true,
            (_, false) => changed(name),
        };
        for name in ORDER_FIRST.iter().copied().filter(|n| emit(n)) {
            if let Some(value) = desired.vars.get(name) {
                assignments.push(format!("@@session.{name}={}", variable_value(name, value)));
            }
        }
        for (name, value) in desired.vars.iter() {
            if ORDER_FIRST.contains(&name.as_str()) || !changed(name) || !is_identifier(name) {
                continue;
            }
            assignments.push(format!("@@session.{name}={}", variable_value(name, value)));
        }
        for name in self.vars.keys() {
            if !desired.vars.contains_key(name) && is_identifier(name) {
                match login.iter().find(|(n, _)| n == name) {
                    Some((_, value)) => {
                        assignments.push(format!("@@session.{name}={}", variable_value(name, value)))
                    }
                    None => assignments.push(format!("@@session.{name}=DEFAULT")),
                }
            }
        }
        // User variables hold literal SQL text already (quoted as written).
        for (name, literal) in &desired.user_vars {
            if self.user_vars.get(name) != Some(literal) {
                assignments.push(format!("{}={literal}", user_variable(name)));
            }
        }
        for name in self.user_vars.keys() {
            if !desired.user_vars.contains_key(name) {
                assignments.push(format!("{}=NULL", user_variable(name)));
            }
        }
        if assignments.is_empty() {
            return None;
        }
        Some(format!("SET {}", assignments.join(", ")))
    }
}

/// A literal that recreates a user variable read from
/// `information_schema.USER_VARIABLES` (value given in hex) with the same
/// type: integers and decimals as numbers, doubles with an exponent, strings
/// with their charset introducer, NULL as NULL.
pub fn user_variable_literal(hex_value: Option<&str>, var_type: &str, charset: &str) -> String {
    let Some(hex) = hex_value.filter(|h| h.len() % 2 == 0 && h.bytes().all(|b| b.is_ascii_hexdigit())) else {
        return "NULL".into();
    };
    let text = || {
        let bytes: Vec<u8> = (0..hex.len() / 2)
            .filter_map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok())
            .collect();
        String::from_utf8(bytes).ok()
    };
    let numeric = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b));
    match var_type.to_ascii_uppercase().as_str() {
        "INT" | "INT UNSIGNED" | "DECIMAL" => match text() {
            Some(t) if numeric(&t) => return t,
            _ => {}
        },
        "DOUBLE" | "REAL" => match text() {
            Some(t) if numeric(&t) && t.contains(['e', 'E']) => return t,
            Some(t) if numeric(&t) => return format!("{t}e0"),
            _ => {}
        },
        _ => {}
    }
    let charset = if is_identifier(charset) { charset } else { "binary" };
    if hex.is_empty() {
        return format!("_{charset}''");
    }
    format!("_{charset} X'{hex}'")
}

/// A literal that recreates a string user variable exactly: its bytes
/// (`HEX(@v)`, which keeps what `USER_VARIABLES` loses: bytes its utf8
/// column cannot hold, binary values, values over 2048 bytes), in its
/// charset and collation. None when the server's answer is not usable.
pub fn user_string_literal(hex: &str, charset: &str, collation: &str) -> Option<String> {
    if hex.len() % 2 != 0 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) || !is_identifier(charset) {
        return None;
    }
    let value = if hex.is_empty() {
        format!("_{charset}''")
    } else {
        format!("_{charset} X'{hex}'")
    };
    Some(match collation {
        c if is_identifier(c) && c != "binary" => format!("{value} COLLATE {c}"),
        _ => value,
    })
}

/// A user variable's name as SQL: quoted, so any name the server accepts
/// (`@a.b`, ``@`my-var` ``) is replayed as itself.
fn user_variable(name: &str) -> String {
    format!("@`{}`", name.replace('`', "``"))
}

fn is_identifier(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Variables the server reports as empty when they are NULL (`SET
/// character_set_results = NULL`: results sent unconverted; a storage
/// engine or path set to DEFAULT), where '' is no valid value.
const NULL_WHEN_EMPTY: &[&str] = &[
    "default_tmp_storage_engine",
    "enforce_storage_engine",
    "innodb_ft_user_stopword_table",
    "innodb_tmpdir",
];

/// A variable's value as SQL: NULL for the variables reported empty when
/// NULL, the keyword for `system_versioning_asof = DEFAULT` (reported as
/// the word), else the value as a literal.
fn variable_value(name: &str, value: &str) -> String {
    if value.is_empty() && (name.starts_with("character_set_") || NULL_WHEN_EMPTY.contains(&name)) {
        return "NULL".into();
    }
    if name == "system_versioning_asof" && value.eq_ignore_ascii_case("DEFAULT") {
        return "DEFAULT".into();
    }
    sql_value(value)
}

/// A variable value as SQL: numbers bare, everything else a quoted string.
fn sql_value(value: &str) -> String {
    let numeric = !value.is_empty()
        && value
            .trim_start_matches('-')
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b'.')
        && value
            .trim_start_matches('-')
            .starts_with(|c: char| c.is_ascii_digit());
    if numeric {
        return value.to_string();
    }
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            _ => out.push(c),
        }
    }
    out.push('\'');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(vars: &[(&str, &str)]) -> SessionState {
        SessionState {
            vars: vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn no_statement_when_equal() {
        let a = state(&[("sql_mode", "ANSI")]);
        assert_eq!(a.set_statement_towards(&a.clone(), &[]), None);
    }

    #[test]
    fn sets_difference_charset_first_and_restores_defaults() {
        let conn = state(&[("character_set_client", "utf8mb4"), ("time_zone", "+01:00")]);
        let client = state(&[
            ("character_set_client", "latin1"),
            ("sql_mode", "it's"),
            ("wait_timeout", "30"),
        ]);
        assert_eq!(
            conn.set_statement_towards(&client, &[]).unwrap(),
            "SET @@session.character_set_client='latin1', @@session.sql_mode='it''s', \
             @@session.wait_timeout=30, @@session.time_zone=DEFAULT"
        );
    }

    #[test]
    fn a_variable_goes_back_to_the_value_the_login_gave_it() {
        let conn = state(&[("sql_mode", "ANSI"), ("time_zone", "+01:00")]);
        let login = [(
            "sql_mode".to_string(),
            "IGNORE_SPACE,STRICT_TRANS_TABLES".to_string(),
        )];
        assert_eq!(
            conn.set_statement_towards(&state(&[]), &login).unwrap(),
            "SET @@session.sql_mode='IGNORE_SPACE,STRICT_TRANS_TABLES', @@session.time_zone=DEFAULT"
        );
    }

    #[test]
    fn user_variables_are_set_and_cleared() {
        let mut conn = state(&[]);
        conn.user_vars.insert("old".into(), "1".into());
        let mut client = state(&[]);
        client.user_vars.insert("v".into(), "'x'".into());
        assert_eq!(
            conn.set_statement_towards(&client, &[]).unwrap(),
            "SET @`v`='x', @`old`=NULL"
        );
    }

    #[test]
    fn string_user_variables_keep_their_bytes_charset_and_collation() {
        assert_eq!(
            user_string_literal("E9", "latin1", "latin1_swedish_ci").unwrap(),
            "_latin1 X'E9' COLLATE latin1_swedish_ci"
        );
        assert_eq!(
            user_string_literal("00FF", "binary", "binary").unwrap(),
            "_binary X'00FF'"
        );
        assert_eq!(
            user_string_literal("", "utf8mb4", "utf8mb4_bin").unwrap(),
            "_utf8mb4'' COLLATE utf8mb4_bin"
        );
        assert_eq!(user_string_literal("0G", "utf8mb4", "utf8mb4_bin"), None);
        assert_eq!(user_string_literal("41", "x; DROP", "utf8mb4_bin"), None);
    }

    #[test]
    fn user_variable_literals_keep_their_type() {
        assert_eq!(user_variable_literal(Some("3130"), "INT", "latin1"), "10");
        assert_eq!(
            user_variable_literal(Some("312E3530"), "DECIMAL", "latin1"),
            "1.50"
        );
        assert_eq!(user_variable_literal(Some("312E35"), "DOUBLE", "latin1"), "1.5e0");
        assert_eq!(
            user_variable_literal(Some("3165313030"), "DOUBLE", "latin1"),
            "1e100"
        );
        assert_eq!(
            user_variable_literal(Some("616263"), "VARCHAR", "utf8mb4"),
            "_utf8mb4 X'616263'"
        );
        assert_eq!(user_variable_literal(Some(""), "VARCHAR", "binary"), "_binary''");
        assert_eq!(user_variable_literal(None, "VARCHAR", "binary"), "NULL");
        // Nothing from the server is pasted into SQL unquoted.
        assert_eq!(
            user_variable_literal(Some("3B"), "INT", "x; DROP"),
            "_binary X'3B'"
        );
    }

    #[test]
    fn collation_follows_charset() {
        let conn = state(&[]);
        let client = state(&[
            ("collation_connection", "latin1_swedish_ci"),
            ("character_set_connection", "latin1"),
        ]);
        let sql = conn.set_statement_towards(&client, &[]).unwrap();
        assert!(sql.find("character_set_connection").unwrap() < sql.find("collation_connection").unwrap());
    }

    #[test]
    fn the_results_collation_is_set_with_names_and_the_charsets_put_back() {
        let conn: Vec<(String, String)> = charset_vars("utf8mb4", "utf8mb4_general_ci").into();
        let conn = SessionState {
            vars: conn.into_iter().collect(),
            ..Default::default()
        };
        let mut client = conn.clone();
        client
            .vars
            .insert(RESULTS_COLLATION.into(), "utf8mb4 utf8mb4_unicode_ci".into());
        client.vars.insert("character_set_client".into(), "latin1".into());
        assert_eq!(
            conn.set_statement_towards(&client, &[]).unwrap(),
            "SET NAMES 'utf8mb4' COLLATE 'utf8mb4_unicode_ci', @@session.character_set_client='latin1', \
             @@session.character_set_connection='utf8mb4', @@session.collation_connection='utf8mb4_general_ci'"
        );
        // Another results charset: NAMES sets it, nothing after it does.
        let mut mb3 = client.clone();
        mb3.vars
            .insert(RESULTS_COLLATION.into(), "utf8mb3 utf8mb3_bin".into());
        mb3.vars.insert("character_set_results".into(), "utf8mb3".into());
        let sql = conn.set_statement_towards(&mb3, &[]).unwrap();
        assert!(
            sql.starts_with("SET NAMES 'utf8mb3' COLLATE 'utf8mb3_bin', "),
            "{sql}"
        );
        assert!(!sql.contains("character_set_results"), "{sql}");
        // Back to the charset's default (as `SET character_set_results`
        // leaves it): setting the results charset does it.
        let mut plain = conn.clone();
        plain.vars.update(|vars| {
            vars.remove(RESULTS_COLLATION);
        });
        assert_eq!(
            client.set_statement_towards(&plain, &[]).unwrap(),
            "SET @@session.character_set_client='utf8mb4', @@session.character_set_results='utf8mb4'"
        );
    }

    #[test]
    fn variables_reported_empty_when_null_are_replayed_as_null() {
        let conn = state(&[]);
        let client = state(&[
            ("default_tmp_storage_engine", ""),
            ("innodb_tmpdir", ""),
            ("system_versioning_asof", "DEFAULT"),
        ]);
        assert_eq!(
            conn.set_statement_towards(&client, &[]).unwrap(),
            "SET @@session.default_tmp_storage_engine=NULL, @@session.innodb_tmpdir=NULL, \
             @@session.system_versioning_asof=DEFAULT"
        );
    }

    #[test]
    fn a_charset_variable_reported_empty_is_null() {
        let conn = state(&[("character_set_results", "utf8mb4")]);
        let client = state(&[("character_set_results", ""), ("sql_mode", "")]);
        assert_eq!(
            conn.set_statement_towards(&client, &[]).unwrap(),
            "SET @@session.character_set_results=NULL, @@session.sql_mode=''"
        );
    }

    #[test]
    fn a_results_charset_change_leaves_its_collation_to_be_read_back() {
        use sluice_protocol::packets::put_lenenc_bytes;
        let mut var = Vec::new();
        put_lenenc_bytes(&mut var, b"character_set_results");
        put_lenenc_bytes(&mut var, b"latin1");
        let mut block = vec![0];
        put_lenenc_bytes(&mut block, &var);
        let mut s = SessionState::default();
        s.vars
            .insert(RESULTS_COLLATION.into(), "utf8mb4 utf8mb4_unicode_ci".into());
        assert!(s.absorb(&block).connection_charset_unsure);
        assert_eq!(s.vars.get(RESULTS_COLLATION), None);
    }

    #[test]
    fn absorb_ignores_derived_variables_and_flags_untracked_changes() {
        use sluice_protocol::packets::put_lenenc_bytes;
        let mut block = Vec::new();
        let mut var = Vec::new();
        put_lenenc_bytes(&mut var, b"character_set_database");
        put_lenenc_bytes(&mut var, b"latin1");
        block.push(0);
        put_lenenc_bytes(&mut block, &var);
        block.push(2);
        put_lenenc_bytes(&mut block, b"1");
        let mut s = SessionState::default();
        let absorbed = s.absorb(&block);
        assert!(s.vars.is_empty());
        assert!(absorbed.untracked_change);
    }
}
