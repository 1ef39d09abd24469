//! The binlog feed: one stream from the writer for every guarded table,
//! registered as a replica with `guard.server_id`. Row events add the key
//! of every after image to the table's filters; the applied GTID advances
//! at each transaction's end, after its keys are in. DDL on a guarded table
//! rebuilds it; a statement-format write or an event the guard cannot read
//! disables it until rebuilt. The stream reconnects (to a new writer too)
//! from the applied GTID; a position the server no longer has (error 1236)
//! rebuilds everything on that server.
//!
//! Events are read and applied inside a spawned task: mysql_common can
//! panic on a truncated packet, and a panic there is one more stream error.

use crate::key::{Binlogged, encode_binlog};
use crate::metric as m;
use crate::state::{HeartbeatColumns, Registry, Settings, Shared, lock};
use futures_util::StreamExt;
use mysql_async::BinlogStreamRequest;
use mysql_async::prelude::Queryable;
use mysql_common::binlog::events::{Event, EventData, QueryEvent, RowsEventData};
use mysql_common::binlog::row::BinlogRow;
use mysql_common::binlog::value::BinlogValue;
use mysql_common::value::Value;
use sluice_router::GtidPos;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// No event (heartbeats come every second when idle) for this long = the
/// connection is dead.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a stream session ended.
#[derive(Debug)]
enum End {
    /// Error 1236: our position is not in this server's binlog.
    Purged(String),
    Lost(&'static str, String),
}

/// Aborts the task when dropped (a restarted feed takes its session along).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Keeps one stream running until aborted.
pub(crate) async fn supervise(shared: Arc<Shared>) {
    let mut backoff = Duration::from_millis(100);
    let mut purged = false;
    loop {
        shared.connected.store(false, Ordering::SeqCst);
        metrics::gauge!(m::CONNECTED).set(0.0);
        let Some(address) = shared.writer_address() else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let (reason, detail) = match connect_and_stream(&shared, &address, purged).await {
            Ok(End::Purged(why)) => {
                tracing::warn!(%address, "guard binlog position not on the writer, rebuilding every table: {why}");
                purged = true;
                backoff = Duration::from_millis(100);
                ("purged", why)
            }
            Ok(End::Lost(reason, why)) => {
                purged = false;
                (reason, why)
            }
            Err(Setup::Refused(why)) => {
                tracing::error!(%address, "guard refuses to start: {why}");
                *lock(&shared.refused) = Some(why.clone());
                tokio::time::sleep(Duration::from_secs(5)).await;
                continue;
            }
            Err(Setup::Failed(reason, why)) => (reason, why),
        };
        if reason != "purged" {
            tracing::info!(%address, reason, "guard binlog stream lost: {detail}");
        }
        *lock(&shared.last_error) = Some(format!("{reason}: {detail}"));
        shared.reconnects.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(m::RECONNECTS, "reason" => reason).increment(1);
        if reason != "purged" {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
        if reason == "writer_changed" || reason == "end" {
            backoff = Duration::from_millis(100);
        }
    }
}

enum Setup {
    Refused(String),
    Failed(&'static str, String),
}

async fn connect_and_stream(shared: &Arc<Shared>, address: &str, purged: bool) -> Result<End, Setup> {
    let settings = shared.settings.load_full();
    let failed = |e: mysql_async::Error| Setup::Failed("connect", e.to_string());
    let mut conn = sluice_pool::monitor::connect(
        address,
        &settings.user,
        &settings.password,
        &settings.tls_for(address),
    )
    .await
    .map_err(failed)?;
    let format: Option<String> = conn
        .query_first("SELECT @@GLOBAL.binlog_format")
        .await
        .map_err(failed)?;
    let format = format.unwrap_or_default();
    if !format.eq_ignore_ascii_case("ROW") {
        return Err(Setup::Refused(format!(
            "binlog_format is {format} on {address}: the guard needs ROW (every write as row events)"
        )));
    }
    *lock(&shared.refused) = None;
    let heartbeat = heartbeat_columns(&mut conn, &settings).await;
    lock(&shared.registry).heartbeat = heartbeat;
    let epoch = *shared.epoch.borrow();
    let start = if epoch == 0 || purged {
        // The stream starts at or before every snapshot taken from now on.
        let pos: Option<String> = conn
            .query_first("SELECT @@GLOBAL.gtid_binlog_pos")
            .await
            .map_err(failed)?;
        let pos = pos.unwrap_or_default();
        let Some(start) = GtidPos::parse(&pos) else {
            return Err(Setup::Refused(format!(
                "@@gtid_binlog_pos `{pos}` is not a MariaDB GTID position"
            )));
        };
        let mut reg = lock(&shared.registry);
        if purged {
            let keys: Vec<String> = reg.tables.keys().cloned().collect();
            for key in keys {
                if let Some(ctl) = reg.forget_filters(&key) {
                    shared.mark_not_ready(&key);
                    ctl.set_state(
                        "building",
                        Some("the binlog position was purged: rebuilding".into()),
                    );
                    ctl.request_rebuild("purged");
                }
            }
        }
        shared.applied.store(Arc::new(start.clone()));
        shared.epoch.send_modify(|e| *e += 1);
        drop(reg);
        start
    } else {
        (*shared.applied.load_full()).clone()
    };
    let setup = async {
        conn.query_drop("SET @mariadb_slave_capability=4").await?;
        conn.query_drop("SET @master_heartbeat_period=1000000000").await?;
        conn.query_drop(format!("SET @slave_connect_state='{start}'"))
            .await?;
        conn.query_drop("SET @slave_gtid_strict_mode=1").await?;
        conn.get_binlog_stream(
            BinlogStreamRequest::new(settings.server_id)
                .with_filename(b"")
                .with_pos(4),
        )
        .await
    };
    let stream = match setup.await {
        Ok(stream) => stream,
        Err(e) if server_code(&e) == Some(1236) => return Ok(End::Purged(e.to_string())),
        Err(e) => return Err(Setup::Failed("connect", e.to_string())),
    };
    let session = Session {
        shared: shared.clone(),
        applied: start,
        txn: None,
        buf: Vec::with_capacity(64),
    };
    let task = AbortOnDrop(tokio::spawn(session.run(stream)));
    let writer = lock(&shared.writer).clone();
    let changed = async {
        let Some(mut writer) = writer else {
            return std::future::pending::<()>().await;
        };
        loop {
            if writer.changed().await.is_err() {
                return std::future::pending::<()>().await;
            }
            if writer.borrow_and_update().as_deref() != Some(address) {
                return;
            }
        }
    };
    let mut task = task;
    tokio::select! {
        joined = &mut task.0 => match joined {
            Ok(end) => Ok(end),
            Err(e) if e.is_panic() => Ok(End::Lost("panic", "the event reader panicked (truncated packet?)".into())),
            Err(e) => Ok(End::Lost("aborted", e.to_string())),
        },
        _ = changed => Ok(End::Lost("writer_changed", format!("the writer is no longer {address}"))),
    }
}

fn server_code(e: &mysql_async::Error) -> Option<u16> {
    match e {
        mysql_async::Error::Server(s) => Some(s.code),
        _ => None,
    }
}

/// Where this instance's heartbeats are in the heartbeat table's rows,
/// when one is configured (a table not created yet: as the monitor
/// creates it, `id` then `ts`).
async fn heartbeat_columns(conn: &mut mysql_async::Conn, settings: &Settings) -> Option<HeartbeatColumns> {
    let (schema, name) = settings.heartbeat_table.split_once('.')?;
    let columns: Vec<(String, u64)> = conn
        .exec(
            "SELECT COLUMN_NAME, ORDINAL_POSITION FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND COLUMN_NAME IN ('id', 'ts')",
            (schema, name),
        )
        .await
        .unwrap_or_default();
    let index = |column: &str, default: usize| {
        columns
            .iter()
            .find(|(c, _)| c.eq_ignore_ascii_case(column))
            .and_then(|(_, p)| usize::try_from(p.saturating_sub(1)).ok())
            .unwrap_or(default)
    };
    Some(HeartbeatColumns {
        table: settings.heartbeat_table.to_ascii_lowercase(),
        id: index("id", 0),
        ts: index("ts", 1),
        instance: settings.instance_id,
    })
}

/// The transaction being read.
struct Txn {
    domain: u32,
    server: u32,
    seq: u64,
    standalone: bool,
}

/// One connected stream.
struct Session {
    shared: Arc<Shared>,
    applied: GtidPos,
    txn: Option<Txn>,
    buf: Vec<u8>,
}

impl Session {
    async fn run(mut self, mut stream: mysql_async::BinlogStream) -> End {
        loop {
            let next = match tokio::time::timeout(READ_TIMEOUT, stream.next()).await {
                Err(_) => return End::Lost("timeout", format!("no event for {READ_TIMEOUT:?}")),
                Ok(None) => return End::Lost("end", "the server ended the stream".into()),
                Ok(Some(Err(e))) => {
                    return match server_code(&e) {
                        Some(1236) => End::Purged(e.to_string()),
                        _ => End::Lost("error", e.to_string()),
                    };
                }
                Ok(Some(Ok(event))) => event,
            };
            if !self.shared.connected.swap(true, Ordering::SeqCst) {
                metrics::gauge!(m::CONNECTED).set(1.0);
            }
            self.shared.events.fetch_add(1, Ordering::Relaxed);
            self.apply(&stream, &next);
        }
    }

    fn apply(&mut self, stream: &mysql_async::BinlogStream, event: &Event) {
        let header = event.header();
        match header.event_type_raw() {
            // GTID: a transaction starts.
            162 => {
                let d = event.data();
                if d.len() >= 13 {
                    let seq = u64::from_le_bytes(d[0..8].try_into().unwrap_or([0; 8]));
                    let domain = u32::from_le_bytes(d[8..12].try_into().unwrap_or([0; 4]));
                    self.txn = Some(Txn {
                        domain,
                        server: header.server_id(),
                        seq,
                        standalone: d[12] & 1 != 0,
                    });
                } else {
                    // Without it the transaction's end cannot be placed.
                    self.disable_everything("unparsed_event", format!("a GTID event of {} bytes", d.len()));
                }
            }
            // XID, XA PREPARE: the transaction ends.
            16 | 38 => self.end_txn(),
            2 => {
                match event.read_event::<QueryEvent<'_>>() {
                    Ok(q) => self.query(&q),
                    Err(e) => self
                        .disable_everything("unparsed_event", format!("a QUERY event failed to parse: {e}")),
                }
                if self.txn.as_ref().is_some_and(|t| t.standalone) {
                    self.end_txn();
                }
            }
            165 => {
                self.disable_everything(
                    "unparsed_event",
                    "a compressed QUERY event (log_bin_compress): its statement cannot be read".into(),
                );
                if self.txn.as_ref().is_some_and(|t| t.standalone) {
                    self.end_txn();
                }
            }
            23..=25 | 30..=32 => self.rows(stream, event),
            166..=171 => self.unreadable_rows(stream, event, "a compressed row event (log_bin_compress)"),
            20..=22 => self.unreadable_rows(stream, event, "a pre-GA row event"),
            // Statement-format LOAD DATA (EXECUTE_LOAD_QUERY, and the old
            // LOAD / NEW_LOAD events): rows the guard cannot see.
            6 | 12 | 18 => self.disable_everything(
                "statement_write",
                "a statement-format LOAD DATA reached the binlog (binlog_format=STATEMENT in a session?)"
                    .into(),
            ),
            _ => {}
        }
    }

    fn end_txn(&mut self) {
        let Some(t) = self.txn.take() else { return };
        self.applied.advance(t.domain, t.server, t.seq);
        let mut reg = lock(&self.shared.registry);
        let applied = Arc::new(self.applied.clone());
        self.shared.applied.store(applied.clone());
        reg.release_covered(&applied);
    }

    fn query(&mut self, q: &QueryEvent<'_>) {
        let text = q.query();
        let first = first_word(&text).to_ascii_uppercase();
        match first.as_str() {
            "BEGIN" | "XA" | "SAVEPOINT" | "SET" | "" => {}
            // `ROLLBACK TO SAVEPOINT` stays inside the transaction.
            "ROLLBACK" if rolls_back_to_savepoint(&text) => {}
            "COMMIT" | "ROLLBACK" => self.end_txn(),
            // A statement-format write may change a guarded table without
            // naming it (a view, a trigger, a procedure): every table goes.
            "INSERT" | "UPDATE" | "REPLACE" | "DELETE" | "LOAD" | "WITH" | "CALL" | "DO" => self
                .disable_everything(
                    "statement_write",
                    "a statement-format write reached the binlog (binlog_format=STATEMENT in a session?)"
                        .into(),
                ),
            _ => {
                let schema = q.schema();
                let database_level = mentions(&text, "DATABASE") || mentions(&text, "SCHEMA");
                let mut reg = lock(&self.shared.registry);
                let hit: Vec<String> = reg
                    .tables
                    .iter()
                    .filter(|(_, t)| {
                        mentions(&text, &t.ctl.table) || (database_level && mentions(&text, &t.ctl.schema))
                    })
                    .map(|(k, _)| k.clone())
                    .collect();
                let at = self.txn.as_ref().map(|t| {
                    let mut at = GtidPos::default();
                    at.advance(t.domain, t.server, t.seq);
                    at
                });
                for key in hit {
                    ddl(&self.shared, &mut reg, &key, &schema, &text, at.as_ref());
                }
            }
        }
    }

    fn rows(&mut self, stream: &mysql_async::BinlogStream, event: &Event) {
        let data = match event.read_data() {
            Ok(Some(EventData::RowsEvent(r))) => r,
            Ok(_) => return self.unreadable_rows(stream, event, "a row event of an unknown kind"),
            Err(_) => return self.unreadable_rows(stream, event, "a row event that failed to parse"),
        };
        let write = match &data {
            RowsEventData::WriteRowsEventV1(_) | RowsEventData::WriteRowsEvent(_) => true,
            RowsEventData::UpdateRowsEventV1(_)
            | RowsEventData::UpdateRowsEvent(_)
            | RowsEventData::PartialUpdateRowsEvent(_) => false,
            // A delete adds nothing.
            _ => return,
        };
        let Some(tme) = stream.get_tme(data.table_id()) else {
            // Rows of a table the stream never saw mapped: whose keys they
            // are is unknown, so no filter can be trusted past them.
            self.disable_everything(
                "unparsed_event",
                format!(
                    "a row event for table id {} without its table map",
                    data.table_id()
                ),
            );
            return;
        };
        let name = format!("{}.{}", tme.database_name(), tme.table_name()).to_ascii_lowercase();
        let shared = self.shared.clone();
        let mut reg = lock(&shared.registry);
        let heartbeat = reg
            .heartbeat
            .as_ref()
            .filter(|h| h.table == name)
            .map(|h| (h.ts, h.id, h.instance));
        let guarded = reg.tables.get(&name).is_some_and(|t| !t.sinks.is_empty());
        if heartbeat.is_none() && !guarded {
            return;
        }
        let Some(bitmap) = data.columns_after_image() else {
            if guarded {
                drop(reg);
                self.disable_everything(
                    "unparsed_event",
                    format!("a write or update event for {name} without an after image"),
                );
            }
            return;
        };
        let index_of = |ordinal: usize| -> Option<usize> {
            if ordinal < bitmap.len() && bitmap[ordinal] {
                Some(bitmap[..ordinal].count_ones())
            } else {
                None
            }
        };
        let mut afters: Vec<BinlogRow> = Vec::new();
        for row in data.rows(tme) {
            match row {
                Ok((_, Some(after))) => afters.push(after),
                Ok(_) => {}
                Err(e) => {
                    if guarded {
                        disable(
                            &shared,
                            &mut reg,
                            &name,
                            "unparsed_event",
                            format!("a row event failed to decode: {e}"),
                        );
                    }
                    return;
                }
            }
        }
        if let Some((ordinal, id_ordinal, instance)) = heartbeat
            && let Some(i) = index_of(ordinal)
        {
            // Another instance's rows carry its clock, not ours.
            let mine = |row: &BinlogRow| {
                index_of(id_ordinal).is_some_and(|j| match row.as_ref(j) {
                    // Without full row metadata an INT UNSIGNED arrives
                    // as a signed 32-bit value: compare the low 32 bits.
                    Some(BinlogValue::Value(Value::UInt(v))) => *v as u32 == instance,
                    Some(BinlogValue::Value(Value::Int(v))) => *v as u32 == instance,
                    _ => false,
                })
            };
            for row in afters.iter().filter(|r| mine(r)) {
                let ts = match row.as_ref(i) {
                    Some(BinlogValue::Value(Value::UInt(v))) => *v,
                    Some(BinlogValue::Value(Value::Int(v))) => *v as u64,
                    _ => continue,
                };
                shared.heartbeat_us.fetch_max(ts, Ordering::Relaxed);
            }
        }
        if !guarded {
            return;
        }
        let mut problem: Option<(&'static str, String)> = None;
        if let Some(t) = reg.tables.get_mut(&name) {
            t.sinks.retain(|s| s.filter.strong_count() > 0);
            'sinks: for sink in &t.sinks {
                let Some(filter) = sink.filter.upgrade() else {
                    continue;
                };
                let Some(i) = index_of(sink.ordinal) else {
                    if write {
                        problem = Some((
                            "missing_key",
                            format!(
                                "a row image lacks the key column (position {}): binlog_row_image=MINIMAL?",
                                sink.ordinal + 1
                            ),
                        ));
                        break;
                    }
                    // An update's after image without the key: the key did not change.
                    continue;
                };
                for row in &afters {
                    let value = match row.as_ref(i) {
                        Some(BinlogValue::Value(v)) => v,
                        _ => {
                            problem = Some((
                                "layout",
                                "the key column's binlog value is not a plain value".into(),
                            ));
                            break 'sinks;
                        }
                    };
                    match encode_binlog(&sink.kind, value, &mut self.buf) {
                        Binlogged::Key => filter.insert(&self.buf),
                        Binlogged::Null => {}
                        Binlogged::Mismatch => {
                            problem = Some((
                                "layout",
                                format!(
                                    "the key column's binlog value {value:?} does not match its type (the table changed?)"
                                ),
                            ));
                            break 'sinks;
                        }
                    }
                }
            }
        }
        if let Some((reason, why)) = problem {
            disable(&shared, &mut reg, &name, reason, why);
        }
    }

    /// A row event the guard cannot decode: if it is for a guarded table,
    /// that table's filter may miss keys.
    fn unreadable_rows(&mut self, stream: &mysql_async::BinlogStream, event: &Event, what: &str) {
        let d = event.data();
        if d.len() < 6 {
            return self.disable_everything("unparsed_event", format!("{what} too short to name its table"));
        }
        let mut id = [0u8; 8];
        id[..6].copy_from_slice(&d[..6]);
        let table_id = u64::from_le_bytes(id);
        let Some(tme) = stream.get_tme(table_id) else {
            return self.disable_everything("unparsed_event", format!("{what} for an unknown table"));
        };
        let name = format!("{}.{}", tme.database_name(), tme.table_name()).to_ascii_lowercase();
        let mut reg = lock(&self.shared.registry);
        if reg.tables.contains_key(&name) {
            disable(
                &self.shared,
                &mut reg,
                &name,
                "unparsed_event",
                format!("{what} the guard cannot read"),
            );
        }
    }

    fn disable_everything(&mut self, reason: &'static str, why: String) {
        let mut reg = lock(&self.shared.registry);
        let keys: Vec<String> = reg.tables.keys().cloned().collect();
        for key in keys {
            disable(&self.shared, &mut reg, &key, reason, why.clone());
        }
    }
}

/// Stops trusting a table's filters (not ready, no longer fed) and asks for
/// a rebuild. Called before the position of the event is published.
fn disable(shared: &Shared, reg: &mut Registry, key: &str, reason: &'static str, why: String) {
    let Some(ctl) = reg.forget_filters(key) else {
        return;
    };
    shared.mark_not_ready(key);
    tracing::warn!(table = %ctl.config.table, reason, "guard disables the table until rebuilt: {why}");
    metrics::counter!(m::DISABLED, "reason" => reason).increment(1);
    ctl.set_state("disabled", Some(why));
    ctl.request_rebuild("disabled");
}

/// DDL on a guarded table: its cached metadata and filters are stale.
fn ddl(shared: &Shared, reg: &mut Registry, key: &str, schema: &str, text: &str, at: Option<&GtidPos>) {
    let Some(ctl) = reg.forget_filters(key) else {
        return;
    };
    shared.mark_not_ready(key);
    if let Some(at) = at {
        lock(&ctl.structure_at).merge(at);
    }
    ctl.ddl_generation.fetch_add(1, Ordering::SeqCst);
    let shown: String = text.chars().take(200).collect();
    tracing::info!(table = %ctl.config.table, schema, "guard rebuilds the table after DDL: {shown}");
    ctl.set_state("building", Some(format!("DDL: {shown}")));
    ctl.request_rebuild("ddl");
}

/// `ROLLBACK [WORK] TO [SAVEPOINT] name`: undoes part of a transaction
/// that goes on.
fn rolls_back_to_savepoint(text: &str) -> bool {
    let mut words = text.split_whitespace().map(str::to_ascii_uppercase).skip(1);
    match words.next().as_deref() {
        Some("WORK") => words.next().as_deref() == Some("TO"),
        Some("TO") => true,
        _ => false,
    }
}

/// The statement's first word, after whitespace and comments.
pub(crate) fn first_word(text: &str) -> &str {
    let mut rest = text;
    loop {
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix("/*") {
            // `/*!` and `/*M!` version comments hold the statement itself.
            if let Some(inner) = after.strip_prefix("M!").or_else(|| after.strip_prefix('!')) {
                rest = inner.trim_start_matches(|c: char| c.is_ascii_digit());
                continue;
            }
            match after.find("*/") {
                Some(end) => rest = &after[end + 2..],
                None => return "",
            }
        } else if rest.starts_with("--") || rest.starts_with('#') {
            match rest.find('\n') {
                Some(end) => rest = &rest[end + 1..],
                None => return "",
            }
        } else {
            break;
        }
    }
    let end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(rest.len());
    &rest[..end]
}

/// Whether `name` occurs in `text` as a whole identifier (any case, quoted
/// or not, alone or after `schema.`). Deliberately generous: a mention in a
/// comment or a string counts too.
pub(crate) fn mentions(text: &str, name: &str) -> bool {
    text.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$'))
        .any(|word| word.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_words() {
        assert_eq!(first_word("  insert into t values (1)"), "insert");
        assert_eq!(first_word("/* x */ ALTER TABLE t"), "ALTER");
        assert_eq!(first_word("/*!40000 ALTER TABLE t DISABLE KEYS */"), "ALTER");
        assert_eq!(first_word("-- c\nDROP TABLE t"), "DROP");
        assert_eq!(first_word("BEGIN"), "BEGIN");
        assert_eq!(first_word(""), "");
        assert_eq!(first_word("/* open"), "");
    }

    #[test]
    fn mentions_whole_names_only() {
        assert!(mentions("ALTER TABLE `app`.`Users` ADD c INT", "users"));
        assert!(mentions("TRUNCATE users", "users"));
        assert!(mentions("RENAME TABLE a.users TO a.old", "users"));
        assert!(!mentions("ALTER TABLE users2 ADD c INT", "users"));
        assert!(!mentions("ALTER TABLE my_users ADD c INT", "users"));
        assert!(mentions("DROP DATABASE app", "app"));
    }
}
