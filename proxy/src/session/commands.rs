//! Commands Sluice answers itself: COM_SET_OPTION (the client's
//! multi-statement flag is session state), COM_RESET_CONNECTION and
//! COM_CHANGE_USER (which reset the client's state and give back any held
//! connection).

use super::{End, Session, initial_vars};
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
        let schema = self.desired.schema.take();
        self.desired = SessionState {
            schema,
            ..(*self.initial).clone()
        };
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
        let Some(changed) = changed else {
            return Err(End::ClientGone);
        };
        self.binding.release(self.id).await;
        self.binding.statements.clear();
        self.diagnostics = Default::default();
        self.binding.in_transaction = false;
        self.user = changed.user;
        self.credential = changed.credential;
        self.slot.set_user(&self.user);
        self.pools.clear();
        let profile = self.shared.profile.load_full();
        let initial = Arc::make_mut(&mut self.initial);
        if let Some(collation) = changed.collation {
            initial.vars = initial_vars(collation, &profile);
        }
        initial.schema = changed.schema.clone();
        self.desired = (*self.initial).clone();
        self.client
            .send(changed.next_seq, &packets::ok(0, 0, self.client_status(), 0))
            .await
            .map(|_| ())
            .map_err(|_| End::ClientGone)
    }
}
