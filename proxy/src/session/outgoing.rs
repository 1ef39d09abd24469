//! What goes to the backend once a connection is chosen, and sending it:
//! the client's packet as is, or a statement packet rewritten for the
//! backend connection's statement id (prepared there first if it is not
//! yet, with buffered long data re-sent), written straight into the
//! connection's write buffer.

use crate::errors;
use bytes::Bytes;
use sluice_pool::{BackendConn, BackendError, BackendStatement, ColumnDefs};
use sluice_protocol::consts::com;
use sluice_protocol::statement::{self, ForBackend};
use std::sync::Arc;

pub(super) enum Outgoing {
    /// The client's packet, unchanged.
    Raw(Bytes),
    /// COM_STMT_PREPARE: relayed with Sluice's statement id.
    Prepare {
        sql: Arc<str>,
        packet: Bytes,
        client_id: u32,
    },
    /// COM_STMT_EXECUTE / COM_STMT_BULK_EXECUTE: the statement is prepared
    /// on the chosen connection first, long data and parameter types are
    /// re-sent as needed, and the id is rewritten.
    Execute {
        sql: Arc<str>,
        packet: Bytes,
        params: u16,
        types: Option<Arc<[u8]>>,
        long_data: Vec<(u16, Vec<u8>)>,
        /// The column definitions the client holds for the statement (a
        /// client that caches metadata is sent them again only if the
        /// server's differ).
        client_defs: Option<ColumnDefs>,
        /// The client's schema when it prepared the statement.
        schema: Option<Arc<str>>,
    },
    /// COM_STMT_FETCH / COM_STMT_RESET on the held connection.
    ForStatement { sql: Arc<str>, packet: Bytes },
}

pub(super) enum SendError {
    /// Nothing reached the server: safe to retry on another connection.
    NotSent(BackendError),
    /// The command may have run.
    Unknown(BackendError),
}

/// Sends the command on the chosen connection. `Ok(Some(err))` is a server
/// refusal (for example the statement no longer prepares).
pub(super) async fn send(
    conn: &mut BackendConn,
    outgoing: &Outgoing,
    capacity: usize,
) -> Result<Option<Vec<u8>>, SendError> {
    match outgoing {
        Outgoing::Raw(packet) => {
            conn.send_command(packet).await.map_err(SendError::NotSent)?;
        }
        Outgoing::Prepare { packet, .. } => {
            conn.make_room(capacity).await.map_err(SendError::NotSent)?;
            conn.send_command(packet).await.map_err(SendError::NotSent)?;
        }
        Outgoing::ForStatement { sql, packet } => {
            let Some(id) = conn.statements.id_of(sql) else {
                // The client's id is still in the packet (not rewritten yet).
                let client_id = u32::from_le_bytes([packet[1], packet[2], packet[3], packet[4]]);
                return Ok(Some(errors::unknown_statement(client_id, com::name(packet[0]))));
            };
            let p = ForBackend::new(packet, id, 0, None, None);
            conn.send_command_parts(&p.parts())
                .await
                .map_err(SendError::NotSent)?;
        }
        Outgoing::Execute {
            sql,
            packet,
            params,
            types,
            long_data,
            schema,
            ..
        } => {
            let prepared = conn.prepared(sql, capacity, schema.as_deref()).await;
            let stmt = match prepared.map_err(SendError::NotSent)? {
                Ok(stmt) => stmt,
                Err(server_err) => return Ok(Some(server_err)),
            };
            for (param, data) in long_data {
                let header = statement::long_data_header(stmt.id, *param);
                // No response.
                conn.send_command_parts(&[&header, data])
                    .await
                    .map_err(SendError::NotSent)?;
            }
            let p = ForBackend::new(packet, stmt.id, *params, types.as_deref(), stmt.types.as_deref());
            if let Some(binds) = p.binds {
                if let Some(entry) = conn.statements.get(sql) {
                    if entry.types.as_deref() != Some(binds) {
                        entry.types = Some(binds.into());
                    }
                }
            }
            conn.send_command_parts(&p.parts())
                .await
                .map_err(SendError::Unknown)?;
        }
    }
    Ok(None)
}

/// Records a statement the client prepared on this connection; if the
/// connection already had the same text prepared, the duplicate is closed.
pub(super) async fn remember(
    conn: &mut BackendConn,
    sql: &Arc<str>,
    stmt: BackendStatement,
    capacity: usize,
) -> Result<(), BackendError> {
    // The connection already has it, prepared in the same schema: keep
    // that one (one in another schema is replaced).
    if conn
        .statements
        .peek_mut(sql)
        .is_some_and(|held| held.schema == stmt.schema)
    {
        return conn.send_command(&statement::close(stmt.id)).await;
    }
    conn.remember_statement(sql.clone(), stmt, capacity).await
}
