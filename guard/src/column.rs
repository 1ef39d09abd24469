//! Column discovery: which column a guarded table's key is, where it sits in
//! the row (binlog images are positional), and how it compares. Only keys
//! whose equality the guard reproduces exactly are accepted: integers, and
//! byte strings under binary collations. Everything else is refused with a
//! message that names the table, the column and why.

use crate::key::KeyKind;
use mysql_async::prelude::Queryable;
use sluice_config::GuardTableConfig;

/// The key column of a guarded table, as the server describes it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyColumn {
    /// The column's name as the server spells it.
    pub name: String,
    /// 0-based position in the row (the binlog's column index).
    pub ordinal: usize,
    pub kind: KeyKind,
    /// A NULLable UNIQUE column: NULL keys are never looked up.
    pub nullable: bool,
    /// `PRIMARY` or the UNIQUE index's name.
    pub index: String,
}

/// Why a table cannot be guarded, and which config key is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// True when the table itself is the problem (missing), false for the key.
    pub about_table: bool,
    pub message: String,
}

/// Checks a guarded table against the server (for `sluice check-config`):
/// the column, its unique one-column index and its comparison rules. The
/// error names the table and the column; use [`verify_indexed`] to prefix it
/// with the config key.
pub async fn verify(conn: &mut mysql_async::Conn, table: &GuardTableConfig) -> Result<KeyColumn, String> {
    match discover(conn, table).await {
        Ok(Ok(column)) => Ok(column),
        Ok(Err(refusal)) => Err(refusal.message),
        Err(e) => Err(format!("cannot inspect `{}`: {e}", table.table)),
    }
}

/// [`verify`] with the message prefixed by `guard.tables[i].table` or
/// `guard.tables[i].key`.
pub async fn verify_indexed(
    conn: &mut mysql_async::Conn,
    i: usize,
    table: &GuardTableConfig,
) -> Result<KeyColumn, String> {
    match discover(conn, table).await {
        Ok(Ok(column)) => Ok(column),
        Ok(Err(r)) => {
            let field = if r.about_table { "table" } else { "key" };
            Err(format!("guard.tables[{i}].{field}: {}", r.message))
        }
        Err(e) => Err(format!(
            "guard.tables[{i}].table: cannot inspect `{}`: {e}",
            table.table
        )),
    }
}

/// What `sluice check-config` learns about `[guard]` from the primary.
pub enum Verified {
    /// Every table can be guarded.
    Ok(Vec<KeyColumn>),
    /// Problems, each naming its key (`guard.tables[i].table` / `.key`).
    Problems(Vec<String>),
    /// The primary could not be asked (the tables are not checked).
    Unreachable(String),
}

/// Checks every `[[guard.tables]]` entry against the primary, with the
/// monitor's account, within `limit`.
pub async fn verify_config(config: &sluice_config::Config, limit: std::time::Duration) -> Verified {
    let Some(primary) = config
        .backends
        .iter()
        .find(|b| b.role == sluice_config::Role::Primary)
    else {
        return Verified::Unreachable("no primary is configured".into());
    };
    let (user, password) = config.monitor_account().unwrap_or(("", ""));
    let work = async {
        let mut conn =
            sluice_pool::monitor::connect(&primary.address, user, password, &primary.tls_settings())
                .await
                .map_err(|e| e.to_string())?;
        let mut found = Vec::new();
        let mut problems = Vec::new();
        for (i, table) in config.guard.tables.iter().enumerate() {
            match verify_indexed(&mut conn, i, table).await {
                Ok(column) => found.push(column),
                Err(problem) => problems.push(problem),
            }
        }
        conn.disconnect().await.ok();
        Ok::<_, String>(if problems.is_empty() {
            Verified::Ok(found)
        } else {
            Verified::Problems(problems)
        })
    };
    match tokio::time::timeout(limit, work).await {
        Ok(Ok(verified)) => verified,
        Ok(Err(e)) => {
            Verified::Unreachable(format!("primary `{}` at {}: {e}", primary.name, primary.address))
        }
        Err(_) => Verified::Unreachable(format!(
            "primary `{}` at {}: no answer within {} ms",
            primary.name,
            primary.address,
            limit.as_millis()
        )),
    }
}

type ColumnRow = (String, String, Option<String>, Option<String>, u64, String);

/// Looks the key column up in information_schema. The outer error is the
/// connection's (retry); the inner one is a refusal (the table as it is
/// cannot be guarded).
pub async fn discover(
    conn: &mut mysql_async::Conn,
    table: &GuardTableConfig,
) -> Result<Result<KeyColumn, Refusal>, mysql_async::Error> {
    let (schema, name) = table.table.split_once('.').unwrap_or(("", table.table.as_str()));
    let refuse = |about_table: bool, why: String| {
        Ok(Err(Refusal {
            about_table,
            message: why,
        }))
    };
    let exists: Option<u64> = conn
        .exec_first(
            "SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
            (schema, name),
        )
        .await?;
    if exists.is_none() {
        return refuse(
            true,
            format!(
                "table `{}` does not exist (or the guard's account cannot see it)",
                table.table
            ),
        );
    }
    let row: Option<ColumnRow> = conn
        .exec_first(
            "SELECT DATA_TYPE, COLUMN_TYPE, CHARACTER_SET_NAME, COLLATION_NAME, ORDINAL_POSITION, IS_NULLABLE \
             FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND COLUMN_NAME = ?",
            (schema, name, table.key.as_str()),
        )
        .await?;
    let Some((data_type, column_type, charset, collation, ordinal, nullable)) = row else {
        return refuse(false, format!("`{}` has no column `{}`", table.table, table.key));
    };
    let indexes: Vec<(String, u64, u64, u64)> = conn
        .exec(
            "SELECT INDEX_NAME, MAX(NON_UNIQUE), COUNT(*), SUM(COLUMN_NAME = ?) \
             FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? \
             GROUP BY INDEX_NAME ORDER BY INDEX_NAME = 'PRIMARY' DESC, INDEX_NAME",
            (table.key.as_str(), schema, name),
        )
        .await?;
    let index = indexes
        .iter()
        .find(|(_, non_unique, columns, ours)| *non_unique == 0 && *columns == 1 && *ours == 1);
    let Some((index, ..)) = index else {
        return refuse(
            false,
            format!(
                "`{}`.`{}` is not the only column of the PRIMARY KEY or of a UNIQUE index: \
                 a filter of its values would not say whether a row exists",
                table.table, table.key
            ),
        );
    };
    let kind = match key_kind(&data_type, &column_type, charset.as_deref(), collation.as_deref()) {
        Ok(kind) => kind,
        Err(why) => {
            return refuse(
                false,
                format!(
                    "`{}`.`{}`: {why}; the guard could hide rows that compare equal: \
                     use a _bin collation or an integer key, or drop this table from [guard]",
                    table.table, table.key
                ),
            );
        }
    };
    Ok(Ok(KeyColumn {
        name: table.key.clone(),
        ordinal: usize::try_from(ordinal.saturating_sub(1)).unwrap_or(usize::MAX),
        kind,
        nullable: nullable.eq_ignore_ascii_case("YES"),
        index: index.clone(),
    }))
}

/// Charsets whose space is the byte 0x20 and whose bytes the connection
/// sends as they are stored.
const CHARSETS: &[&str] = &["utf8mb4", "utf8mb3", "utf8", "latin1", "ascii"];

/// Maps information_schema's description to a [`KeyKind`], or says why not.
pub fn key_kind(
    data_type: &str,
    column_type: &str,
    charset: Option<&str>,
    collation: Option<&str>,
) -> Result<KeyKind, String> {
    let data_type = data_type.to_ascii_lowercase();
    let unsigned = column_type.to_ascii_lowercase().contains("unsigned");
    let bytes = match data_type.as_str() {
        "tinyint" => 1,
        "smallint" => 2,
        "mediumint" => 3,
        "int" | "integer" => 4,
        "bigint" => 8,
        "varbinary" => {
            return Ok(KeyKind::Bytes {
                pad_space: false,
                charset: "binary".into(),
            });
        }
        "binary" => {
            return Err(
                "type BINARY(n) pads values with zero bytes that the binlog drops; use VARBINARY".into(),
            );
        }
        "char" | "varchar" => {
            let collation = collation.unwrap_or("").to_ascii_lowercase();
            let charset = charset.unwrap_or("").to_ascii_lowercase();
            if !collation.ends_with("_bin") {
                let how = if collation.contains("_ci") {
                    "case-insensitive"
                } else if collation.contains("_ai") {
                    "accent-insensitive"
                } else {
                    "not binary"
                };
                return Err(format!("collation {collation} is {how}"));
            }
            if !CHARSETS.contains(&charset.as_str()) {
                return Err(format!(
                    "charset {charset} is not supported (only {})",
                    CHARSETS.join(", ")
                ));
            }
            return Ok(KeyKind::Bytes {
                pad_space: !collation.contains("nopad"),
                charset,
            });
        }
        other => return Err(format!("type {other} is not compared byte for byte")),
    };
    Ok(KeyKind::Integer { unsigned, bytes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_types() {
        assert_eq!(
            key_kind("int", "int(10) unsigned", None, None),
            Ok(KeyKind::Integer {
                unsigned: true,
                bytes: 4
            })
        );
        assert_eq!(
            key_kind("bigint", "bigint(20)", None, None),
            Ok(KeyKind::Integer {
                unsigned: false,
                bytes: 8
            })
        );
        assert_eq!(
            key_kind("mediumint", "mediumint(8) unsigned", None, None),
            Ok(KeyKind::Integer {
                unsigned: true,
                bytes: 3
            })
        );
        assert_eq!(
            key_kind("varbinary", "varbinary(16)", None, None),
            Ok(KeyKind::Bytes {
                pad_space: false,
                charset: "binary".into()
            })
        );
        assert_eq!(
            key_kind("varchar", "varchar(20)", Some("utf8mb4"), Some("utf8mb4_bin")),
            Ok(KeyKind::Bytes {
                pad_space: true,
                charset: "utf8mb4".into()
            })
        );
        assert_eq!(
            key_kind(
                "varchar",
                "varchar(20)",
                Some("utf8mb4"),
                Some("utf8mb4_nopad_bin")
            ),
            Ok(KeyKind::Bytes {
                pad_space: false,
                charset: "utf8mb4".into()
            })
        );
        let ci = key_kind(
            "varchar",
            "varchar(20)",
            Some("utf8mb4"),
            Some("utf8mb4_general_ci"),
        );
        assert_eq!(ci, Err("collation utf8mb4_general_ci is case-insensitive".into()));
        assert!(key_kind("varchar", "varchar(2)", Some("utf16"), Some("utf16_bin")).is_err());
        assert!(key_kind("decimal", "decimal(10,0)", None, None).is_err());
        assert!(key_kind("binary", "binary(4)", None, None).is_err());
        assert!(key_kind("datetime", "datetime", None, None).is_err());
    }
}
