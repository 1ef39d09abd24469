//! `KILL [QUERY] n` where n is a Sluice client id (what the handshake and
//! `CONNECTION_ID()` gave that client): the client's running statement is
//! stopped with `KILL QUERY` on the backend connection that runs it, and
//! KILL CONNECTION also closes the client (its open transaction rolls back
//! when its connection is reset). A KILL is never sent to a pooled
//! connection as written: the id there would be another client's.

use super::execute::kill_query;
use super::{End, Session};
use crate::errors;
use sluice_pool::AcquireError;
use sluice_router::Kill;

/// Finds whether the logged-in account may kill other users' threads.
const CAN_KILL_OTHERS: &str = "SELECT 1 FROM information_schema.USER_PRIVILEGES \
     WHERE PRIVILEGE_TYPE IN ('SUPER', 'CONNECTION ADMIN') AND GRANTEE = CONCAT('''', \
     SUBSTRING_INDEX(CURRENT_USER(), '@', 1), '''@''', SUBSTRING_INDEX(CURRENT_USER(), '@', -1), '''') LIMIT 1";

impl Session {
    pub(super) async fn kill(&mut self, kill: Kill) -> Result<(), End> {
        let count =
            |cause: &'static str| metrics::counter!("sluice_errors_total", "cause" => cause).increment(1);
        let (id, query_only) = match kill {
            Kill::Thread { id, query_only } => (id, query_only),
            Kill::Own { query_only } => (u64::from(self.id), query_only),
            Kill::Unsupported => {
                count("kill_refused");
                return self.reply(&errors::kill_unsupported()).await;
            }
        };
        if id == u64::from(self.id) {
            // As on the server: the KILL interrupts itself, and a KILL
            // CONNECTION then closes the connection.
            metrics::counter!("sluice_kills_total", "kind" => if query_only { "query" } else { "connection" })
                .increment(1);
            if query_only {
                return self.reply(&errors::query_interrupted()).await;
            }
            self.slot.kill();
            return self.reply(&errors::connection_killed()).await;
        }
        let Some(target) = self.shared.clients_by_id.get(id) else {
            count("kill_unknown_thread");
            return self.reply(&errors::unknown_thread(id)).await;
        };
        if target.user() != self.user {
            match self.may_kill_others().await {
                Ok(true) => {}
                Ok(false) => {
                    count("kill_not_owner");
                    return self.reply(&errors::not_owner_of_thread(id)).await;
                }
                // The privilege could not be checked: say why, not "not owner".
                Err(e) => {
                    count(e.cause());
                    return self.reply(&errors::acquire(&e)).await;
                }
            }
        }
        metrics::counter!("sluice_kills_total", "kind" => if query_only { "query" } else { "connection" })
            .increment(1);
        if target.id != self.id {
            // Until kill_landed, the connection cannot go back to the pool.
            if let Some((pool, backend_id)) = target.begin_kill() {
                let connect = pool.target().clone();
                let limit = connect.connect_timeout * 2;
                if tokio::time::timeout(limit, kill_query(connect, backend_id))
                    .await
                    .is_err()
                {
                    tracing::warn!(
                        conn_id = self.id,
                        "KILL QUERY for client {id} did not answer within {limit:?}"
                    );
                }
                target.kill_landed();
            }
        }
        if !query_only {
            target.kill();
        }
        self.reply_ok().await
    }

    /// COM_PROCESS_KILL (mysqli's `kill()`): `KILL CONNECTION` of a 4-byte id.
    pub(super) async fn process_kill(&mut self, payload: &[u8]) -> Result<(), End> {
        let Some(&[a, b, c, d]) = payload.get(1..5).and_then(|id| <&[u8; 4]>::try_from(id).ok()) else {
            metrics::counter!("sluice_errors_total", "cause" => "malformed_packet").increment(1);
            return self
                .reply(&errors::malformed_packet("COM_PROCESS_KILL without a 4-byte id"))
                .await;
        };
        let id = u64::from(u32::from_le_bytes([a, b, c, d]));
        self.kill(Kill::Thread {
            id,
            query_only: false,
        })
        .await
    }

    /// Asks the server whether this client's account has SUPER or
    /// CONNECTION ADMIN. A refused query means no; no connection is an error.
    async fn may_kill_others(&mut self) -> Result<bool, AcquireError> {
        let (pool, _) = self.writer_pool().await?;
        let mut conn = pool.acquire().await?;
        match conn.query_rows(CAN_KILL_OTHERS).await {
            Ok(rows) => Ok(!rows.is_empty()),
            Err(e) => {
                tracing::info!(conn_id = self.id, "checking the KILL privilege failed: {e}");
                if !matches!(e, sluice_pool::BackendError::Server { .. }) {
                    conn.broken = true;
                }
                Ok(false)
            }
        }
    }
}
