//! Prepared statements under multiplexing. Clients see Sluice's statement
//! ids; a statement is remembered by its SQL text and prepared lazily on
//! whichever backend connection runs it (see `sluice_pool::StatementCache`).
//! Long data is buffered here and sent to the executing connection; a
//! read-only statement runs on a replica like its text would.

use super::diagnostics::DiagnosticsRead;
use super::digest::DigestKey;
use super::execute::Work;
use super::guard::{Asked, Values};
use super::outgoing::Outgoing;
use super::{End, Session};
use crate::digests::{Fingerprint, Route};
use crate::errors;
use crate::relay::ResponseKind;
use bytes::Bytes;
use sluice_pool::Local;
use sluice_protocol::consts::com;
use sluice_router::Facts;
use std::collections::HashMap;
use std::sync::Arc;

/// A statement as the client prepared it.
pub(super) struct ClientStatement {
    pub sql: Arc<str>,
    /// The client's default schema when it prepared the statement: the
    /// server resolves its table names there for good, so every execute
    /// runs a backend statement prepared in that schema.
    pub schema: Option<Arc<str>>,
    /// The classifier's shared facts, through the session's own reference
    /// (cloned per execute).
    pub facts: Local<Facts>,
    pub params: u16,
    /// Types from the client's last execute that sent them.
    pub types: Option<Arc<[u8]>>,
    /// COM_STMT_SEND_LONG_DATA chunks waiting for the next execute.
    pub long_data: Vec<(u16, Vec<u8>)>,
    pub long_data_bytes: usize,
    /// Long data exceeded the limit: the next execute fails.
    pub long_data_overflow: bool,
    /// Literal spans of `sql`, for a lookup the guard may answer.
    pub literals: Option<Arc<[std::ops::Range<usize>]>>,
    /// Whether `sql` is an execution of its lookup shape (the guard's
    /// check of the text, done once here rather than per execute).
    pub shape_checked: Option<Result<(), &'static str>>,
    /// Its query digest's key, recorded at each execute.
    pub fingerprint: Arc<Fingerprint>,
    /// The result's column definitions the client was last sent (by the
    /// prepare or an execute): what a client that caches metadata holds.
    pub column_defs: Option<sluice_pool::ColumnDefs>,
}

#[derive(Default)]
pub(super) struct ClientStatements {
    /// By the id Sluice gave the client; looked up on every execute, so
    /// foldhash rather than SipHash.
    map: HashMap<u32, ClientStatement, foldhash::fast::RandomState>,
    next_id: u32,
    /// The statement the client prepared last, if that prepare succeeded:
    /// MariaDB's clients may name it as id 0xFFFFFFFF (pipelining an
    /// execute right behind its prepare, before they know the id).
    last_prepared: Option<u32>,
}

/// The statement id that means "the one just prepared".
const LAST_PREPARED: u32 = u32::MAX;

impl ClientStatements {
    pub fn clear(&mut self) {
        self.map.clear();
        self.last_prepared = None;
    }

    /// The id a statement command names, with 0xFFFFFFFF taken as the
    /// statement prepared last (still 0xFFFFFFFF, which is nobody's, when
    /// there is none, so the client gets the server's unknown-statement
    /// error).
    fn id_in(&self, payload: &[u8]) -> u32 {
        match statement_id(payload) {
            LAST_PREPARED => self.last_prepared.unwrap_or(LAST_PREPARED),
            id => id,
        }
    }

    fn allocate(&mut self) -> u32 {
        self.next_id = self.next_id.wrapping_add(1).max(1);
        self.next_id
    }
}

fn statement_id(payload: &[u8]) -> u32 {
    payload
        .get(1..5)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .unwrap_or(0)
}

impl Session {
    pub(super) async fn prepare(&mut self, payload: Bytes) -> Result<(), End> {
        let Ok(text) = std::str::from_utf8(&payload[1..]) else {
            return self
                .reply(&errors::malformed_packet(
                    "prepared statement text must be valid UTF-8",
                ))
                .await;
        };
        let sql: Arc<str> = Arc::from(text);
        let classified = self.shared.classifier.classify(text, &mut self.scratch);
        // The statement keeps its own reference: the memo gets a copy.
        self.scratch.give_back(classified.lent, classified.facts.clone());
        self.metrics
            .classified(classified.cache_hit, classified.facts.unparsed());
        let fingerprint = Arc::new(Fingerprint::new(classified.hash, &self.scratch.normalized));
        let facts = classified.facts;
        if facts.kind() == sluice_router::Kind::Other && sluice_router::parse_kill(text).is_some() {
            metrics::counter!("sluice_errors_total", "cause" => "kill_refused").increment(1);
            return self.reply(&errors::kill_not_preparable()).await;
        }
        let literals = facts
            .ast
            .lookup
            .is_some()
            .then(|| Arc::from(self.scratch.literals.as_slice()));
        let client_id = self.binding.statements.allocate();
        let label = facts.kind().label();
        let plan = self.plan(Some(&facts));
        let done = self
            .run(
                Work {
                    facts: Some(&facts),
                    literals: Vec::new(),
                    response: ResponseKind::Prepare,
                    outgoing: Outgoing::Prepare {
                        sql: sql.clone(),
                        packet: payload,
                        client_id,
                    },
                    label,
                    capture_columns: false,
                },
                plan,
            )
            .await?;
        let prepared = done.outcome.and_then(|o| o.prepared);
        // As on the server, a failed prepare leaves no "last statement".
        self.binding.statements.last_prepared = prepared.is_some().then_some(client_id);
        if let Some(stmt) = prepared {
            let shape_checked = match (&facts.ast.lookup, &literals) {
                (Some(shape), Some(literals)) => Some(
                    shape
                        .resolve(&sql, literals, usize::from(stmt.params))
                        .map(|_| ()),
                ),
                _ => None,
            };
            self.binding.statements.map.insert(
                client_id,
                ClientStatement {
                    sql,
                    schema: self.desired.schema.as_deref().map(Arc::from),
                    facts: Local::new(facts),
                    params: stmt.params,
                    types: None,
                    long_data: Vec::new(),
                    long_data_bytes: 0,
                    long_data_overflow: false,
                    literals,
                    shape_checked,
                    fingerprint,
                    column_defs: stmt.column_defs,
                },
            );
        }
        Ok(())
    }

    /// COM_STMT_EXECUTE (and BULK_EXECUTE), recorded in its query digest.
    pub(super) async fn execute_statement(&mut self, payload: Bytes) -> Result<(), End> {
        let started = self.digest_start();
        let ended = self.execute_prepared(payload).await;
        self.digest_end(started, &ended);
        ended
    }

    async fn execute_prepared(&mut self, payload: Bytes) -> Result<(), End> {
        let id = self.binding.statements.id_in(&payload);
        let command = com::name(payload[0]);
        let max_packet = self.config.server.max_packet_bytes;
        let Some(stmt) = self.binding.statements.map.get_mut(&id) else {
            return self.reply(&errors::unknown_statement(id, command)).await;
        };
        if self.config.digests.enabled {
            self.digest.key = DigestKey::Prepared(stmt.fingerprint.clone());
        }
        if std::mem::take(&mut stmt.long_data_overflow) {
            stmt.long_data.clear();
            stmt.long_data_bytes = 0;
            return self.reply(&errors::packet_too_large(max_packet)).await;
        }
        // Remember types the client sends; later executes may omit them.
        if payload[0] == com::STMT_EXECUTE {
            if let Some(types) = sluice_protocol::statement::bound_types(&payload, stmt.params) {
                if stmt.types.as_deref() != Some(types) {
                    stmt.types = Some(types.into());
                }
            }
        }
        let facts = stmt.facts.clone();
        // A read of the previous statement's diagnostics: SHOW WARNINGS
        // answered from the capture, FOUND_ROWS(), ROW_COUNT() or
        // @@warning_count run with the value in their text.
        let mut substituted = None;
        if facts.lexical.needs_previous
            && facts.kind() != sluice_router::Kind::Ddl
            && facts.ast.statements <= 1
        {
            let sql = stmt.sql.clone();
            match self.diagnostics_read(&sql) {
                Some(DiagnosticsRead::Local {
                    errors_only,
                    offset,
                    limit,
                }) => {
                    // Answered here with definitions of Sluice's copy: a
                    // caching client's count as unknown afterwards.
                    if let Some(stmt) = self.binding.statements.map.get_mut(&id) {
                        stmt.column_defs = None;
                    }
                    return self.show_diagnostics(errors_only, offset, limit, true).await;
                }
                Some(DiagnosticsRead::Rewritten(text)) => substituted = Some(text),
                None => {}
            }
        }
        let Some(stmt) = self.binding.statements.map.get_mut(&id) else {
            return self.reply(&errors::unknown_statement(id, command)).await;
        };
        let own_text = substituted.is_none();
        let outgoing = Outgoing::Execute {
            sql: substituted.map_or_else(|| stmt.sql.clone(), Arc::from),
            packet: payload.clone(),
            params: stmt.params,
            types: stmt.types.clone(),
            long_data: std::mem::take(&mut stmt.long_data),
            client_defs: stmt.column_defs.clone(),
            schema: stmt.schema.clone(),
        };
        stmt.long_data_bytes = 0;
        let literals = stmt.literals.clone();
        // The check done at prepare holds for the statement's own text.
        let shape_checked = stmt.shape_checked.filter(|_| own_text);
        let label = facts.kind().label();
        let plan = self.plan(Some(&facts));
        // A lookup of a guarded table: perhaps answered without the database.
        let follow_up = match (&outgoing, literals) {
            (
                Outgoing::Execute {
                    sql,
                    params,
                    types,
                    long_data,
                    ..
                },
                Some(literals),
            ) if payload[0] == com::STMT_EXECUTE && self.guard_may_apply(&facts) => {
                let values = Values::Binary {
                    sql,
                    literals: &literals,
                    payload: &payload,
                    params: *params,
                    shape_checked,
                    types: types.as_deref(),
                    long_data: !long_data.is_empty(),
                };
                match self.ask_guard(facts.shared(), values, &plan).await? {
                    Asked::Answered => {
                        self.digest.route = Route::Guard;
                        if self.caches_metadata {
                            // The client now holds the guard's copy of the
                            // definitions: the next execute that the server
                            // skips sends the server's, rather than assume
                            // the two are the same bytes.
                            if let Some(stmt) = self.binding.statements.map.get_mut(&id) {
                                stmt.column_defs = None;
                            }
                        }
                        return Ok(());
                    }
                    Asked::Pass(follow_up) => Some(follow_up),
                    Asked::NotGuarded => None,
                }
            }
            _ => None,
        };
        // A cursor pins the client once the server reports it open.
        let done = self
            .run(
                Work {
                    facts: Some(&facts),
                    literals: Vec::new(),
                    response: ResponseKind::Results,
                    outgoing,
                    label,
                    capture_columns: follow_up.as_ref().is_some_and(|f| f.wants_columns()),
                },
                plan,
            )
            .await?;
        if let Some(defs) = done.outcome.as_ref().and_then(|o| o.client_defs.clone()) {
            // The definitions the client holds now (None: not known here).
            if let Some(stmt) = self.binding.statements.map.get_mut(&id) {
                stmt.column_defs = defs;
            }
        }
        if let Some(follow_up) = follow_up {
            self.guard_follow_up(follow_up, &done);
        }
        Ok(())
    }

    /// COM_STMT_SEND_LONG_DATA has no response: buffer the chunk for the
    /// executing connection.
    pub(super) fn send_long_data(&mut self, payload: &[u8]) -> Result<(), End> {
        let max_packet = self.config.server.max_packet_bytes;
        let id = self.binding.statements.id_in(payload);
        if let (Some(stmt), Some(rest)) = (self.binding.statements.map.get_mut(&id), payload.get(5..)) {
            if rest.len() < 2 {
                return Ok(());
            }
            let param = u16::from_le_bytes([rest[0], rest[1]]);
            let data = &rest[2..];
            stmt.long_data_bytes += data.len();
            if stmt.long_data_bytes > max_packet {
                stmt.long_data_overflow = true;
                return Ok(());
            }
            match stmt.long_data.iter_mut().find(|(p, _)| *p == param) {
                Some((_, buf)) => buf.extend_from_slice(data),
                None => stmt.long_data.push((param, data.to_vec())),
            }
        }
        Ok(())
    }

    pub(super) async fn reset_statement(&mut self, payload: &Bytes) -> Result<(), End> {
        let id = self.binding.statements.id_in(payload);
        let Some(stmt) = self.binding.statements.map.get_mut(&id) else {
            return self
                .reply(&errors::unknown_statement(id, "mysqld_stmt_reset"))
                .await;
        };
        stmt.long_data.clear();
        stmt.long_data_bytes = 0;
        stmt.long_data_overflow = false;
        let sql = stmt.sql.clone();
        if self.binding.cursor_open {
            // Closes the cursor on the connection that holds it.
            let outgoing = Outgoing::ForStatement {
                sql,
                packet: payload.clone(),
            };
            let work = Work {
                facts: None,
                literals: Vec::new(),
                response: ResponseKind::Simple,
                outgoing,
                label: "COM_STMT_RESET",
                capture_columns: false,
            };
            let plan = self.plan(None);
            return self.run(work, plan).await.map(|_| ());
        }
        self.reply_ok().await
    }

    /// COM_STMT_CLOSE has no response. Backend statements stay cached on
    /// their connections for other clients with the same text.
    pub(super) fn close_statement(&mut self, payload: &[u8]) -> Result<(), End> {
        let statements = &mut self.binding.statements;
        let id = statements.id_in(payload);
        statements.map.remove(&id);
        if statements.last_prepared == Some(id) {
            statements.last_prepared = None;
        }
        Ok(())
    }

    pub(super) async fn fetch(&mut self, payload: Bytes) -> Result<(), End> {
        let id = self.binding.statements.id_in(&payload);
        let sql = self.binding.statements.map.get(&id).map(|s| s.sql.clone());
        let on_cursor = self.binding.cursor_open && self.binding.bound();
        let Some(sql) = sql.filter(|_| on_cursor) else {
            return self.reply(&errors::no_open_cursor(id)).await;
        };
        let outgoing = Outgoing::ForStatement { sql, packet: payload };
        let work = Work {
            facts: None,
            literals: Vec::new(),
            response: ResponseKind::Fetch,
            outgoing,
            label: "COM_STMT_FETCH",
            capture_columns: false,
        };
        let plan = self.plan(None);
        self.run(work, plan).await.map(|_| ())
    }
}
