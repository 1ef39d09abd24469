//! What ties a client to backend connections: the connection it holds (for
//! the statement running now, a transaction, a pin or the whole session),
//! why, what pins it, and its prepared statements. One type, changed only
//! through its methods, so what the client keeps is decided in one place
//! (`sluice_router::plan::hold_after`) and applied here.

use super::prepared::ClientStatements;
use crate::topology::Backend;
use sluice_config::Role;
use sluice_pool::{BackendConn, BackendPool, Local, Pooled, discard};
use sluice_router::plan::Hold;
use sluice_router::user_locks::UserLocks;
use sluice_router::{HoldReason, PinReason};
use std::sync::Arc;

/// A checked-out backend connection.
pub(super) struct Held {
    pub conn: Pooled,
    pub pool: Arc<BackendPool>,
    pub backend: Local<Backend>,
    /// What it was checked out as (the writer or a replica), for metrics.
    pub role: Role,
    pub reason: HoldReason,
}

#[derive(Default)]
pub(super) struct Binding {
    pub held: Option<Held>,
    pub pinned: Option<PinReason>,
    /// A prepared statement opened a cursor on the held connection (the
    /// client may be pinned for another reason too).
    pub cursor_open: bool,
    /// The server's IN_TRANS flag after the client's last statement (also
    /// while pinned or in `pool.mode = "session"`).
    pub in_transaction: bool,
    /// A one-shot `SET TRANSACTION` is pending on the held connection.
    pub next_transaction: bool,
    /// The client's prepared statements (Sluice's ids).
    pub statements: ClientStatements,
    /// The user locks it may hold on the held connection.
    pub user_locks: UserLocks,
    /// Something other than user locks pinned it too: the pin stays when
    /// the locks are released.
    pub pinned_for_more: bool,
}

impl Binding {
    /// The client keeps its connection between statements.
    pub fn bound(&self) -> bool {
        self.held
            .as_ref()
            .is_some_and(|h| h.reason != HoldReason::Statement)
    }

    pub fn reason(&self) -> Option<HoldReason> {
        self.held.as_ref().map(|h| h.reason)
    }

    /// Bound by state only its connection has: a transaction, a pin or a
    /// pending one-shot `SET TRANSACTION` (not just `pool.mode = "session"`).
    pub fn holds_state(&self) -> bool {
        matches!(
            self.reason(),
            Some(HoldReason::Transaction | HoldReason::Pinned(_) | HoldReason::NextTransaction)
        )
    }

    pub fn conn(&mut self) -> Option<&mut BackendConn> {
        self.held.as_mut().map(|h| &mut *h.conn)
    }

    /// Holds a connection for the statement about to run.
    pub fn hold(&mut self, conn: Pooled, pool: Arc<BackendPool>, backend: Local<Backend>, role: Role) {
        self.held = Some(Held {
            conn,
            pool,
            backend,
            role,
            reason: HoldReason::Statement,
        });
    }

    /// A connection held only for the previous statement goes back to the
    /// pool before the next one checks out its own.
    pub fn release_statement_hold(&mut self) {
        if self.reason() == Some(HoldReason::Statement) {
            self.held = None;
        }
    }

    /// Pins the client (the first reason is the one reported).
    pub fn pin(&mut self, reason: PinReason) -> bool {
        if self.pinned.is_some() {
            return false;
        }
        self.pinned = Some(reason);
        true
    }

    /// Applies [`sluice_router::plan::hold_after`]'s decision.
    pub fn apply(&mut self, hold: Hold) {
        self.in_transaction = hold.in_transaction;
        if hold.next_transaction_pending && !self.next_transaction {
            metrics::counter!("sluice_next_transaction_holds_total").increment(1);
        }
        self.next_transaction = hold.next_transaction_pending;
        match (hold.keep, self.held.as_mut()) {
            (Some(reason), Some(held)) => held.reason = reason,
            (None, _) => self.held = None, // back to the pool
            (Some(_), None) => {}
        }
    }

    /// The connection's protocol state is unknown: close it, never reuse it.
    pub fn drop_broken(&mut self) {
        if let Some(mut held) = self.held.take() {
            held.conn.broken = true;
            discard(held.conn);
        }
        // Whatever was pinned or open on it is gone.
        self.pinned = None;
        self.user_locks = UserLocks::default();
        self.pinned_for_more = false;
        self.cursor_open = false;
        self.next_transaction = false;
    }

    /// Gives the held connection back, first resetting state that must not
    /// leak to the next client (open transaction, temporary tables, locks).
    pub async fn release(&mut self, conn_id: u32) {
        self.pinned = None;
        self.user_locks = UserLocks::default();
        self.pinned_for_more = false;
        self.cursor_open = false;
        self.next_transaction = false;
        let Some(mut held) = self.held.take() else { return };
        if held.reason == HoldReason::Statement {
            return;
        }
        if let Err(e) = held.conn.reset().await {
            tracing::info!(
                conn_id,
                backend = &*held.backend.name,
                "could not reset a backend connection, closing it: {e}"
            );
            held.conn.broken = true;
            discard(held.conn);
        }
    }
}
