//! The client's diagnostics follow the client, not the pooled connection
//! (rules in `sluice_router::diagnostics`): after a statement that raised
//! warnings or an error, its SHOW WARNINGS rows are captured on the same
//! connection, and a SQL_CALC_FOUND_ROWS total is read there too. Later
//! SHOW WARNINGS / SHOW ERRORS are answered from the capture, and
//! `FOUND_ROWS()`, `ROW_COUNT()`, `@@warning_count` are substituted into
//! the statement, however long after and whatever connection runs it.

use super::Session;
use super::execute::Work;
use crate::relay::Outcome;
use bytes::Bytes;
use sluice_pool::BackendError;
use sluice_protocol::consts::CapabilityFlags as Caps;
use sluice_protocol::packets;
use sluice_router::diagnostics::{Ended, Previous, ShowDiagnostics};

/// What the client's statements left for later ones to read.
#[derive(Debug, Default)]
pub(super) struct Diagnostics {
    pub previous: Previous,
    /// SHOW WARNINGS of the statement that raised them: the server's
    /// column definitions and rows (Level, Code, Message).
    columns: Vec<Bytes>,
    conditions: Vec<Vec<Option<String>>>,
}

impl Session {
    /// Updates the diagnostics after a statement that ran on the held
    /// connection, capturing there what the client may read later.
    pub(super) async fn capture_diagnostics(
        &mut self,
        outcome: &Outcome,
        work: &Work<'_>,
    ) -> Result<(), BackendError> {
        let Some(held) = self.binding.held.as_mut() else {
            return Ok(());
        };
        let calc_found_rows = match work.facts {
            Some(f)
                if (f.lexical.feeds_next
                    || sluice_router::diagnostics::found_rows_unseen(f, outcome.result_set))
                    && !outcome.ended_with_error
                    && work.ran() =>
            {
                let rows = Box::pin(held.conn.query_rows("SELECT FOUND_ROWS()")).await?;
                rows.first()
                    .and_then(|r| r.first().cloned().flatten())
                    .and_then(|v| v.parse().ok())
            }
            _ => None,
        };
        let diag = &mut self.diagnostics;
        if outcome.warnings > 0 || outcome.saw_warnings || outcome.ended_with_error {
            let (columns, rows) = Box::pin(held.conn.query_result("SHOW WARNINGS")).await?;
            metrics::counter!("sluice_diagnostics_captured_total").increment(1);
            let errors = rows
                .iter()
                .filter(|r| r.first().cloned().flatten().as_deref() == Some("Error"))
                .count() as u64;
            // After a multi-statement, what is left of earlier statements'
            // warnings counts too.
            diag.previous.warning_count = if outcome.ended_with_error {
                rows.len() as u64
            } else {
                u64::from(outcome.warnings).max(rows.len() as u64)
            };
            diag.previous.error_count = errors;
            diag.columns = columns;
            diag.conditions = rows;
        } else if work
            .facts
            .is_some_and(sluice_router::diagnostics::clears_conditions)
        {
            diag.previous.warning_count = 0;
            diag.previous.error_count = 0;
            diag.conditions.clear();
        }
        // Preparing a statement leaves ROW_COUNT() and FOUND_ROWS() alone.
        let prepare = matches!(work.outgoing, super::outgoing::Outgoing::Prepare { .. });
        if work.facts.is_some() && !prepare {
            diag.previous = diag.previous.after(Ended {
                error: outcome.ended_with_error,
                result_set: outcome.result_set,
                rows: outcome.rows,
                affected_rows: outcome.affected_rows,
                calc_found_rows,
            });
        }
        Ok(())
    }

    /// The statement to run instead of `sql` when it reads a previous
    /// statement's diagnostics, or a local answer (SHOW WARNINGS/ERRORS
    /// when there is something to show). None: run `sql` as it is.
    pub(super) fn diagnostics_read(&self, sql: &str) -> Option<DiagnosticsRead> {
        match sluice_router::diagnostics::parse_show_diagnostics(sql) {
            Some(ShowDiagnostics::List {
                errors_only,
                offset,
                limit,
            }) => {
                if self.diagnostics.conditions.is_empty() || self.diagnostics.columns.is_empty() {
                    // Nothing to show: the server's own empty answer.
                    let what = if errors_only { "ERRORS" } else { "WARNINGS" };
                    return Some(DiagnosticsRead::Rewritten(format!("SHOW {what} LIMIT 0")));
                }
                Some(DiagnosticsRead::Local {
                    errors_only,
                    offset,
                    limit,
                })
            }
            _ => sluice_router::diagnostics::substitute_previous(sql, &self.diagnostics.previous)
                .map(DiagnosticsRead::Rewritten),
        }
    }

    /// A statement that uses a table clears the warnings and errors.
    pub(super) fn clear_conditions_of_previous(&mut self) {
        let diag = &mut self.diagnostics;
        diag.previous.warning_count = 0;
        diag.previous.error_count = 0;
        diag.conditions.clear();
    }

    /// COM_PING and the like end with an OK that sets `ROW_COUNT()` to 0
    /// on the server.
    pub(super) fn ok_without_rows(&mut self) {
        self.diagnostics.previous.row_count = 0;
    }

    /// Answers SHOW WARNINGS / SHOW ERRORS from the capture, in the text
    /// protocol or (for a prepared SHOW WARNINGS) the binary one.
    pub(super) async fn show_diagnostics(
        &mut self,
        errors_only: bool,
        offset: u64,
        limit: Option<u64>,
        binary: bool,
    ) -> Result<(), super::End> {
        let rows: Vec<&Vec<Option<String>>> = self
            .diagnostics
            .conditions
            .iter()
            .filter(|r| !errors_only || r.first().cloned().flatten().as_deref() == Some("Error"))
            .skip(usize::try_from(offset).unwrap_or(usize::MAX))
            .take(limit.map_or(usize::MAX, |l| usize::try_from(l).unwrap_or(usize::MAX)))
            .collect();
        let status = self.client_status();
        let deprecate_eof = self.caps.contains(Caps::CLIENT_DEPRECATE_EOF);
        let mut seq = self.seq;
        let mut queue = |client: &mut sluice_protocol::PacketStream<crate::tls::ClientStream>,
                         payload: &[u8]| {
            client.queue_packet(seq, payload);
            seq = seq.wrapping_add(1);
        };
        let mut count = Vec::new();
        packets::put_lenenc_int(&mut count, self.diagnostics.columns.len() as u64);
        if self.caches_metadata {
            count.push(1); // metadata follows
        }
        queue(&mut self.client, &count);
        for column in &self.diagnostics.columns {
            queue(&mut self.client, column);
        }
        if !deprecate_eof {
            queue(&mut self.client, &packets::eof(0, status));
        }
        let extended = self.extended_metadata;
        let types: Vec<u8> = self
            .diagnostics
            .columns
            .iter()
            .map(|c| column_type(c, extended))
            .collect();
        for row in &rows {
            let p = if binary {
                binary_row(row, &types)
            } else {
                text_row(row)
            };
            queue(&mut self.client, &p);
        }
        // SHOW WARNINGS raises no warning of its own: the server's EOF
        // says 0 (a client showing warnings would otherwise ask again).
        if deprecate_eof {
            queue(&mut self.client, &packets::ok_as_eof(0, status));
        } else {
            queue(&mut self.client, &packets::eof(0, status));
        }
        let sent = rows.len() as u64;
        self.diagnostics.previous = self.diagnostics.previous.after(Ended {
            result_set: true,
            rows: sent,
            ..Ended::default()
        });
        self.client.flush().await.map_err(|_| super::End::ClientGone)
    }
}

fn text_row(row: &[Option<String>]) -> Vec<u8> {
    let mut p = Vec::new();
    for value in row {
        match value {
            Some(v) => packets::put_lenenc_bytes(&mut p, v.as_bytes()),
            None => p.push(0xfb),
        }
    }
    p
}

/// A binary-protocol row (COM_STMT_EXECUTE result) for text values of
/// columns of the given types: integers in their fixed widths, the rest as
/// length-encoded strings.
fn binary_row(row: &[Option<String>], types: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8];
    let mut nulls = vec![0u8; (row.len() + 7 + 2) / 8];
    for (i, value) in row.iter().enumerate() {
        if value.is_none() {
            nulls[(i + 2) / 8] |= 1 << ((i + 2) % 8);
        }
    }
    p.extend_from_slice(&nulls);
    for (value, &ty) in row.iter().zip(types) {
        let Some(v) = value else { continue };
        let int = v.parse::<i64>().ok();
        match (ty, int) {
            (1, Some(n)) => p.push(n as u8),
            (2 | 13, Some(n)) => p.extend_from_slice(&(n as u16).to_le_bytes()),
            (3 | 9, Some(n)) => p.extend_from_slice(&(n as u32).to_le_bytes()),
            (8, Some(n)) => p.extend_from_slice(&n.to_le_bytes()),
            _ => packets::put_lenenc_bytes(&mut p, v.as_bytes()),
        }
    }
    p
}

/// The type byte of a column definition packet; `extended`: it carries
/// MariaDB's extended type information after the names.
fn column_type(def: &[u8], extended: bool) -> u8 {
    packets::column_type(def, extended).unwrap_or(253)
}

/// How a read of diagnostics is served.
pub(super) enum DiagnosticsRead {
    /// Run this text instead.
    Rewritten(String),
    /// Answer SHOW WARNINGS / SHOW ERRORS locally.
    Local {
        errors_only: bool,
        offset: u64,
        limit: Option<u64>,
    },
}
