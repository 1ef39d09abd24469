//! Commands Sluice answers itself: COM_SET_OPTION (the client's
//! multi-statement flag is session state), COM_RESET_CONNECTION and
//! COM_CHANGE_USER (which reset the client's state and give back any held
//! connection).

use super::{End, Session, charset_vars_for, initial_vars};
use crate::errors;
use crate::handshake;
use sluice_pool::SessionState;
use sluice_protocol::consts::{CapabilityFlags as Caps, set_option};
use sluice_protocol::packets;
use std::sync::Arc;

impl Session {
    pub(super) async fn set_option(&mut self, payload: &[u8]) -> Result<(), End> {
        match packets::le16(payload, 1) {
            set_option::MULTI_STATEMENTS_ON => self.desired.multi_statements = true,
            set_option::MULTI_STATEMENTS_OFF => self.desired.multi_statements = false,
            _ => {
                return self
                    .reply(&errors::malformed_packet("unknown COM_SET_OPTION value"))
                    .await;
            }
        }
        let status = self.client_status();
        if self.caps.contains(Caps::CLIENT_DEPRECATE_EOF) {
            self.reply(&packets::ok(0, 0, status, 0)).await
        } else {
            self.reply(&packets::eof(0, status)).await
        }
    }

    pub(super) async fn reset_connection(&mut self) -> Result<(), End> {
        self.binding.release(self.id).await;
        self.binding.statements.clear();
        self.diagnostics = Default::default();
        self.binding.in_transaction = false;
        self.reset_state_keeping_schema();
        self.reply_ok().await
    }

    pub(super) async fn change_user(&mut self, payload: &[u8]) -> Result<(), End> {
        let changed = handshake::change_user(
            &mut self.client,
            payload,
            self.caps,
            &self.nonce,
            &self.shared,
            self.peer_host,
        )
        .await
        .map_err(|_| End::ClientGone)?;
        // The server resets the session whether or not the change succeeds.
        self.binding.release(self.id).await;
        self.binding.statements.clear();
        self.diagnostics = Default::default();
        self.binding.in_transaction = false;
        let Some(changed) = changed else {
            // Refused, and told so: as on the server, the connection stays
            // the previous user's, reset, in its schema.
            self.reset_after_refused_change_user();
            return Ok(());
        };
        let schema_before = self.desired.schema.clone();
        let previous = (
            std::mem::replace(&mut self.user, changed.user),
            std::mem::replace(&mut self.credential, changed.credential),
            self.initial.clone(),
        );
        self.slot.set_user(&self.user);
        self.pools.clear();
        let profile = self.shared.profile.load_full();
        let initial = Arc::make_mut(&mut self.initial);
        if let Some(collation) = changed.collation {
            initial.vars = initial_vars(collation, &profile);
        }
        initial.schema = changed.schema.clone();
        self.desired = (*self.initial).clone();
        // A schema that does not exist fails the change, as on the server
        // (error 1049), and the previous user stays.
        let refusal = match changed.schema {
            Some(_) => match self.check_schema().await {
                Ok(refused) => refused,
                Err(e) => {
                    tracing::warn!(conn_id = self.id, "checking the schema of a COM_CHANGE_USER: {e}");
                    metrics::counter!("sluice_errors_total", "cause" => e.cause()).increment(1);
                    Some(errors::acquire(&e))
                }
            },
            None => None,
        };
        let answer = match refusal {
            Some(err) => {
                (self.user, self.credential, self.initial) = previous;
                self.slot.set_user(&self.user);
                self.pools.clear();
                self.desired.schema = schema_before;
                self.reset_after_refused_change_user();
                err
            }
            None => packets::ok(0, 0, self.client_status(), 0),
        };
        self.client
            .send(changed.next_seq, &answer)
            .await
            .map(|_| ())
            .map_err(|_| End::ClientGone)
    }

    /// The session after a refused COM_CHANGE_USER: reset, in its schema,
    /// with the server's own charset (the server has dropped the client's
    /// by then: a refused change leaves latin1 on a latin1 server, whatever
    /// the handshake said).
    fn reset_after_refused_change_user(&mut self) {
        self.reset_state_keeping_schema();
        let profile = self.shared.profile.load_full();
        let server_charset = charset_vars_for(u16::from(profile.default_collation), &profile);
        self.desired.vars.update(|vars| vars.extend(server_charset));
    }

    /// The client's session as after a reset: its initial state, in the
    /// schema it is in now.
    fn reset_state_keeping_schema(&mut self) {
        let schema = self.desired.schema.take();
        self.desired = SessionState {
            schema,
            ..(*self.initial).clone()
        };
    }
}
