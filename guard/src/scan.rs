//! The initial scan of a key column inside a consistent snapshot, and the
//! GTID position that snapshot corresponds to: every transaction up to it
//! is in the scan, every later one reaches the filter through the stream.

use crate::filter::Filter;
use crate::key::{KeyKind, encode_text};
use mysql_async::prelude::Queryable;
use sluice_router::GtidPos;

/// What a scan saw.
#[derive(Debug)]
pub struct Scanned {
    pub snapshot: GtidPos,
    pub rows: u64,
}

/// Scans `column` of `schema.table` into `filter`.
pub async fn scan(
    conn: &mut mysql_async::Conn,
    schema: &str,
    table: &str,
    column: &str,
    kind: &KeyKind,
    filter: &Filter,
) -> Result<Result<Scanned, String>, mysql_async::Error> {
    conn.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .await?;
    conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT")
        .await?;
    let result = scan_in_snapshot(conn, schema, table, column, kind, filter).await;
    // Ends the read view whatever happened; a broken connection reports the
    // first error.
    let _ = conn.query_drop("COMMIT").await;
    result
}

async fn scan_in_snapshot(
    conn: &mut mysql_async::Conn,
    schema: &str,
    table: &str,
    column: &str,
    kind: &KeyKind,
    filter: &Filter,
) -> Result<Result<Scanned, String>, mysql_async::Error> {
    let status: Vec<(String, String)> = conn.query("SHOW STATUS LIKE 'binlog_snapshot_%'").await?;
    let get = |name: &str| {
        status
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let (Some(file), Some(pos)) = (get("binlog_snapshot_file"), get("binlog_snapshot_position")) else {
        return Ok(Err(
            "the server reports no binlog_snapshot_file/position (binary log disabled?)".into(),
        ));
    };
    if file.is_empty() {
        return Ok(Err("the server has no binary log (log_bin is off)".into()));
    }
    let gtid: Option<Option<String>> = conn
        .exec_first("SELECT BINLOG_GTID_POS(?, ?)", (file.as_str(), pos.as_str()))
        .await?;
    let Some(snapshot) = gtid.flatten().as_deref().and_then(GtidPos::parse) else {
        return Ok(Err(format!(
            "BINLOG_GTID_POS('{file}', {pos}) gave no GTID position"
        )));
    };
    let sql = format!("SELECT `{column}` FROM `{schema}`.`{table}`");
    let mut result = conn.query_iter(sql).await?;
    let mut rows = 0u64;
    let mut buf = Vec::with_capacity(32);
    while let Some(row) = result.next().await? {
        rows += 1;
        if let Some(value) = row.as_ref(0)
            && encode_text(kind, value, &mut buf).is_some()
        {
            filter.insert(&buf);
        }
    }
    drop(result);
    Ok(Ok(Scanned { snapshot, rows }))
}
