//! One client connection from handshake to quit: read a command, decide
//! where it runs, check out (or keep) a backend connection whose session
//! matches the client's, forward the command, relay the response, and decide
//! whether to keep the connection (transaction, pin, or a follow-up read of
//! the statement's state) or give it back to the pool.

use crate::errors;
use crate::handshake::{self, HandshakeError};
use crate::metrics::SessionMetrics;
use crate::relay::{Outcome, Relay, RelayError, ResponseKind};
use crate::shared::{ClientGuard, Shared};
use bytes::Bytes;
use mysql_common::collations::{Collation, CollationId};
use sluice_pool::{
    AcquireError, BackendPool, PoolKey, Pooled, SessionState, charset_vars, discard,
};
use sluice_protocol::PacketStream;
use sluice_protocol::consts::{CapabilityFlags as Caps, com, set_option, status};
use sluice_protocol::packets;
use sluice_router::{Kind, PinReason, Route, RouteInput, Statement, classify, route};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tracing::Instrument;

/// How often a connection kept for a follow-up statement (SHOW WARNINGS,
/// FOUND_ROWS(), ROW_COUNT()) checks whether other clients are waiting for
/// the pool; only then does it go back early (counted), because the
/// follow-up would otherwise read another connection's state.
const FOLLOW_UP_CHECK: Duration = Duration::from_millis(250);

/// Why a client keeps its backend connection between statements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HoldReason {
    Transaction,
    Pinned(PinReason),
    /// The next statement may read this one's state.
    FollowUp,
}

struct Held {
    conn: Pooled,
    pool: BackendPool,
    reason: HoldReason,
}

/// Why the session ended.
enum End {
    Quit,
    ClientGone,
}

pub async fn run(shared: Arc<Shared>, stream: TcpStream, peer: SocketAddr, guard: ClientGuard) {
    let id = shared.next_connection_id();
    // A debug-level span: entering a span on every poll is measurable on
    // the per-query path, so info and warn lines carry conn_id themselves.
    let span = tracing::debug_span!("client", conn_id = id);
    async move {
        tracing::debug!(%peer, "accepted");
        metrics::counter!("sluice_client_connections_accepted_total").increment(1);
        let mut client = PacketStream::new(stream);
        let config = shared.config.load_full();
        let profile = shared.profile.load_full();
        let peer_host = peer.ip().to_string();
        let hello = match handshake::accept(&mut client, id, &profile, &config, &peer_host).await {
            Ok(hello) => hello,
            Err(HandshakeError::Refused(why)) => {
                tracing::info!(
                    conn_id = id,
                    reason = why,
                    "connection refused at handshake"
                );
                return;
            }
            Err(HandshakeError::Io(e)) => {
                tracing::debug!("client left during handshake: {e}");
                return;
            }
        };
        let mut session = Session::new(shared, client, hello.clone(), peer_host, id);
        if !session.finish_handshake(hello.next_seq).await {
            return;
        }
        tracing::debug!(user = %session.user, "authenticated");
        let end = session.serve().await;
        session.close(end).await;
        drop(guard);
    }
    .instrument(span)
    .await
}

struct Session {
    shared: Arc<Shared>,
    id: u32,
    client: PacketStream<TcpStream>,
    caps: Caps,
    user: String,
    peer_host: String,
    nonce: [u8; 20],
    /// State right after connecting (for COM_RESET_CONNECTION).
    initial: SessionState,
    /// The state the client's statements must see.
    desired: SessionState,
    held: Option<Held>,
    pinned: Option<PinReason>,
    /// Cached pool handle for the primary.
    primary: Option<BackendPool>,
    metrics: SessionMetrics,
}

impl Session {
    fn new(
        shared: Arc<Shared>,
        client: PacketStream<TcpStream>,
        hello: handshake::ClientHello,
        peer_host: String,
        id: u32,
    ) -> Self {
        let default_collation = shared.profile.load().default_collation;
        let mut initial = SessionState {
            schema: None,
            vars: charset_vars_for(hello.collation, default_collation)
                .into_iter()
                .collect(),
            multi_statements: hello.capabilities.contains(Caps::CLIENT_MULTI_STATEMENTS),
            last_insert_id: 0,
        };
        let desired = SessionState {
            schema: hello.schema.clone(),
            ..initial.clone()
        };
        initial.schema = hello.schema.clone();
        Session {
            shared,
            id,
            client,
            caps: hello.capabilities,
            user: hello.user,
            peer_host,
            nonce: hello.nonce,
            initial,
            desired,
            held: None,
            pinned: None,
            primary: None,
            metrics: SessionMetrics::default(),
        }
    }

    /// Sends the final OK of the handshake; a requested schema is checked on
    /// a backend first, as the server would. Returns false if the client was
    /// refused.
    async fn finish_handshake(&mut self, seq: u8) -> bool {
        if self.desired.schema.is_some() {
            match self.checkout(false).await {
                Ok(Some(err)) => {
                    let _ = self.client.send(seq, &err).await;
                    return false;
                }
                Ok(None) => {}
                Err(e) => {
                    let _ = self.client.send(seq, &errors::acquire(&e)).await;
                    return false;
                }
            }
        }
        self.client
            .send(seq, &packets::ok(0, 0, status::AUTOCOMMIT, 0))
            .await
            .is_ok()
    }

    async fn serve(&mut self) -> End {
        let max_packet = self.shared.config.load().server.max_packet_bytes;
        loop {
            let read = match self.read_command(max_packet).await {
                Ok(r) => r,
                Err(e) => return self.on_read_error(e, max_packet).await,
            };
            let (seq, payload) = read;
            if seq != 0 {
                self.refuse_and_close(&errors::packets_out_of_order(), "out_of_order")
                    .await;
                return End::ClientGone;
            }
            let Some(&command) = payload.first() else {
                self.refuse_and_close(
                    &errors::malformed_packet("empty command packet"),
                    "malformed_packet",
                )
                .await;
                return End::ClientGone;
            };
            let result = match command {
                com::QUIT => return End::Quit,
                com::PING => self.reply_ok().await,
                com::QUERY => self.query(payload).await,
                com::INIT_DB | com::STMT_RESET => {
                    self.execute(payload, ResponseKind::Simple, None).await
                }
                com::FIELD_LIST => self.execute(payload, ResponseKind::FieldList, None).await,
                com::STATISTICS => self.execute(payload, ResponseKind::Single, None).await,
                com::SET_OPTION => self.set_option(&payload).await,
                com::RESET_CONNECTION => self.reset_connection().await,
                com::CHANGE_USER => self.change_user(&payload).await,
                com::STMT_PREPARE => self.execute(payload, ResponseKind::Prepare, None).await,
                com::STMT_EXECUTE | com::STMT_BULK_EXECUTE => {
                    self.statement_command(payload, ResponseKind::Results).await
                }
                com::STMT_FETCH => self.statement_command(payload, ResponseKind::Fetch).await,
                com::STMT_SEND_LONG_DATA | com::STMT_CLOSE => {
                    self.statement_command(payload, ResponseKind::None).await
                }
                other => {
                    metrics::counter!("sluice_errors_total", "cause" => "unsupported_command")
                        .increment(1);
                    self.reply(&errors::unsupported_command(other)).await
                }
            };
            if let Err(end) = result {
                return end;
            }
        }
    }

    /// Reads the next command. A connection kept only for a follow-up goes
    /// back to the pool early if other clients are queueing for it.
    async fn read_command(&mut self, max_packet: usize) -> io::Result<(u8, Bytes)> {
        while let Some(held) = self
            .held
            .as_ref()
            .filter(|h| h.reason == HoldReason::FollowUp)
        {
            if held.pool.waiting() > 0 {
                metrics::counter!("sluice_follow_up_released_total", "reason" => "pool_waiters")
                    .increment(1);
                self.held = None;
                break;
            }
            // `readable` is cancel-safe: on timeout nothing is lost.
            match tokio::time::timeout(FOLLOW_UP_CHECK, self.client.readable()).await {
                Ok(ready) => {
                    ready?;
                    break;
                }
                Err(_elapsed) => continue,
            }
        }
        self.client
            .read_logical(max_packet)
            .await
            .map(|(seq, _, payload)| (seq, payload))
    }

    async fn on_read_error(&mut self, e: io::Error, max_packet: usize) -> End {
        match e.kind() {
            io::ErrorKind::InvalidData if e.to_string().contains("max_allowed_packet") => {
                self.refuse_and_close(&errors::packet_too_large(max_packet), "packet_too_large")
                    .await;
            }
            io::ErrorKind::InvalidData => {
                self.refuse_and_close(&errors::packets_out_of_order(), "out_of_order")
                    .await;
            }
            _ => tracing::debug!("client gone: {e}"),
        }
        End::ClientGone
    }

    async fn refuse_and_close(&mut self, err: &[u8], cause: &'static str) {
        tracing::info!(
            conn_id = self.id,
            cause,
            "closing client after a protocol error"
        );
        metrics::counter!("sluice_errors_total", "cause" => cause).increment(1);
        let _ = self.client.send(1, err).await;
        self.client.shutdown().await;
    }

    async fn reply(&mut self, payload: &[u8]) -> Result<(), End> {
        self.client
            .send(1, payload)
            .await
            .map(|_| ())
            .map_err(|_| End::ClientGone)
    }

    async fn reply_ok(&mut self) -> Result<(), End> {
        let in_trans = if self
            .held
            .as_ref()
            .is_some_and(|h| h.reason == HoldReason::Transaction)
        {
            status::IN_TRANS
        } else {
            0
        };
        self.reply(&packets::ok(0, 0, status::AUTOCOMMIT | in_trans, 0))
            .await
    }

    async fn query(&mut self, payload: Bytes) -> Result<(), End> {
        let sql = String::from_utf8_lossy(&payload[1..]);
        let statement = classify(&sql);
        self.execute(payload.clone(), ResponseKind::Results, Some(&statement))
            .await
    }

    /// Binary-protocol commands need the connection the statement was
    /// prepared on, which the client holds (prepared statements pin).
    async fn statement_command(&mut self, payload: Bytes, kind: ResponseKind) -> Result<(), End> {
        if self.held.is_some() {
            return self.execute(payload, kind, None).await;
        }
        if kind == ResponseKind::None {
            return Ok(()); // no response expected, nothing to close
        }
        let id = u32::from_le_bytes(
            payload
                .get(1..5)
                .and_then(|b| b.try_into().ok())
                .unwrap_or([0; 4]),
        );
        let name = com::name(payload[0]);
        self.reply(&errors::unknown_statement(id, name)).await
    }

    async fn set_option(&mut self, payload: &[u8]) -> Result<(), End> {
        match packets::le16(payload, 1) {
            set_option::MULTI_STATEMENTS_ON => self.desired.multi_statements = true,
            set_option::MULTI_STATEMENTS_OFF => self.desired.multi_statements = false,
            _ => {
                return self
                    .reply(&errors::malformed_packet("unknown COM_SET_OPTION value"))
                    .await;
            }
        }
        if self.caps.contains(Caps::CLIENT_DEPRECATE_EOF) {
            self.reply(&packets::ok(0, 0, status::AUTOCOMMIT, 0)).await
        } else {
            self.reply(&packets::eof(0, status::AUTOCOMMIT)).await
        }
    }

    async fn reset_connection(&mut self) -> Result<(), End> {
        self.release_held().await;
        let schema = self.desired.schema.take();
        self.desired = SessionState {
            schema,
            ..self.initial.clone()
        };
        self.reply_ok().await
    }

    async fn change_user(&mut self, payload: &[u8]) -> Result<(), End> {
        let config = self.shared.config.load_full();
        let changed = handshake::change_user(
            &mut self.client,
            payload,
            self.caps,
            &self.nonce,
            &config,
            &self.peer_host,
        )
        .await
        .map_err(|_| End::ClientGone)?;
        let Some(changed) = changed else {
            return Err(End::ClientGone);
        };
        self.release_held().await;
        self.user = changed.user;
        self.primary = None;
        let default_collation = self.shared.profile.load().default_collation;
        if let Some(collation) = changed.collation {
            self.initial.vars = charset_vars_for(collation, default_collation)
                .into_iter()
                .collect();
        }
        self.initial.schema = changed.schema.clone();
        self.desired = self.initial.clone();
        self.client
            .send(changed.next_seq, &packets::ok(0, 0, status::AUTOCOMMIT, 0))
            .await
            .map(|_| ())
            .map_err(|_| End::ClientGone)
    }

    /// Runs a command on a backend and relays its response.
    async fn execute(
        &mut self,
        payload: Bytes,
        kind: ResponseKind,
        statement: Option<&Statement>,
    ) -> Result<(), End> {
        let needs_previous = statement.is_some_and(|s| s.needs_previous);
        if self
            .held
            .as_ref()
            .is_some_and(|h| h.reason == HoldReason::FollowUp)
            && !needs_previous
        {
            self.held = None;
        }
        let config = self.shared.config.load();
        let routed = route(RouteInput {
            mode: config.routing.mode,
            statement: statement.unwrap_or(&NO_STATEMENT),
            holds_connection: self.held.is_some(),
        });
        let route_label = match routed {
            Route::Held => "held",
            Route::Primary => "primary",
        };
        let started = Instant::now();
        // A fresh connection that fails before the command is sent is
        // replaced once: nothing of the client's has reached the server.
        let mut attempts = 0;
        loop {
            attempts += 1;
            let fresh = self.held.is_none();
            let with_last_insert_id = statement.is_some_and(|s| s.reads_last_insert_id);
            match self.checkout(with_last_insert_id).await {
                Ok(None) => {}
                Ok(Some(err)) => {
                    self.after_statement(
                        &Outcome {
                            ended_with_error: true,
                            ..Outcome::default()
                        },
                        statement,
                    );
                    return self.reply(&err).await;
                }
                Err(e) => {
                    tracing::warn!(conn_id = self.id, "{e}");
                    metrics::counter!("sluice_errors_total", "cause" => e.cause()).increment(1);
                    return self.reply(&errors::acquire(&e)).await;
                }
            }
            let held = self.held.as_mut().expect("checkout holds a connection");
            if let Err(e) = held.conn.send_command(&payload).await {
                let backend = held.pool.key.backend.clone();
                self.drop_broken_connection();
                if fresh && attempts < 2 {
                    tracing::info!(
                        conn_id = self.id,
                        backend,
                        "backend connection failed before the command was sent ({e}); retrying"
                    );
                    continue;
                }
                metrics::counter!("sluice_errors_total", "cause" => "backend_lost").increment(1);
                return self
                    .reply(&errors::backend_lost(&backend, &e.to_string()))
                    .await;
            }
            break;
        }
        let held = self.held.as_mut().expect("connection is held");
        let backend = held.pool.key.backend.clone();
        let relay = Relay::new(
            &mut self.client,
            &mut held.conn,
            self.caps,
            &mut self.desired,
            1,
        );
        let result = relay.run(kind).await;
        let elapsed = started.elapsed();
        let kind_label = statement
            .map(|s| s.kind.label())
            .unwrap_or_else(|| com::name(payload[0]));
        self.metrics
            .query(&backend, route_label, kind_label, elapsed);
        match result {
            Ok(outcome) => {
                self.after_statement(&outcome, statement);
                Ok(())
            }
            Err(RelayError::Client(e)) => {
                tracing::debug!("client gone mid-response: {e}");
                self.drop_broken_connection();
                Err(End::ClientGone)
            }
            Err(RelayError::Backend {
                error,
                client_saw_any,
            }) => {
                tracing::warn!(
                    conn_id = self.id,
                    backend,
                    "backend connection failed mid-response: {error}"
                );
                metrics::counter!("sluice_errors_total", "cause" => "backend_lost").increment(1);
                self.drop_broken_connection();
                if client_saw_any {
                    // The client's stream is mid-result; it cannot take an ERR.
                    self.client.shutdown().await;
                    return Err(End::ClientGone);
                }
                self.reply(&errors::backend_lost(&backend, &error.to_string()))
                    .await
            }
        }
    }

    /// The primary's pool for this client's user and FOUND_ROWS profile,
    /// looked up once per session (and again after COM_CHANGE_USER).
    fn primary_pool(&mut self) -> Result<BackendPool, AcquireError> {
        if let Some(pool) = &self.primary {
            return Ok(pool.clone());
        }
        let config = self.shared.config.load();
        let primary = config.primary().ok_or_else(|| AcquireError::Closed {
            backend: "primary".into(),
        })?;
        let password = config
            .user(&self.user)
            .map(|u| u.secret())
            .unwrap_or_default();
        let key = PoolKey {
            backend: primary.name.clone(),
            user: self.user.clone(),
            found_rows: self.caps.contains(Caps::CLIENT_FOUND_ROWS),
        };
        let pool = self.shared.pools.handle(&key, &primary.address, password);
        self.primary = Some(pool.clone());
        Ok(pool)
    }

    /// Makes sure the client holds a connection whose session matches
    /// `desired`. Returns the server's ERR if applying the state failed
    /// (e.g. the schema no longer exists).
    async fn checkout(
        &mut self,
        with_last_insert_id: bool,
    ) -> Result<Option<Vec<u8>>, AcquireError> {
        if self.held.is_none() {
            let pool = self.primary_pool()?;
            let waited = Instant::now();
            let conn = pool.acquire().await?;
            self.metrics.pool_wait(pool.backend(), waited.elapsed());
            self.held = Some(Held {
                conn,
                pool,
                reason: HoldReason::FollowUp,
            });
        }
        let held = self.held.as_mut().expect("held above");
        match held.conn.apply(&self.desired, with_last_insert_id).await {
            Ok(None) => Ok(None),
            Ok(Some(err)) => {
                // Keep the client's view consistent: the schema it asked for is gone.
                if packets::parse_err(&err).is_some_and(|(code, _)| code == 1049) {
                    self.desired.schema = held.conn.state.schema.clone();
                }
                Ok(Some(err))
            }
            Err(e) => {
                let backend = held.pool.key.backend.clone();
                self.drop_broken_connection();
                Err(AcquireError::Unreachable {
                    backend,
                    address: String::new(),
                    reason: format!("connection failed while restoring the session: {e}"),
                })
            }
        }
    }

    /// Decides whether the client keeps its connection after a statement.
    fn after_statement(&mut self, outcome: &Outcome, statement: Option<&Statement>) {
        let Some(held) = self.held.as_mut() else {
            return;
        };
        let new_pin = statement
            .and_then(|s| s.pin)
            .or(outcome.prepared.then_some(PinReason::PreparedStatement))
            .or(outcome.cursor_opened.then_some(PinReason::Cursor))
            .or(outcome
                .untracked_change
                .then_some(PinReason::UntrackedState));
        if let (None, Some(reason)) = (self.pinned, new_pin) {
            tracing::debug!(
                reason = reason.label(),
                "client pinned to its backend connection"
            );
            metrics::counter!("sluice_session_pins_total", "reason" => reason.label()).increment(1);
            self.pinned = Some(reason);
        }
        let in_transaction = match outcome.status {
            Some(st) => st & status::IN_TRANS != 0,
            // An ERR does not say; a transaction stays open until it is ended.
            None => held.reason == HoldReason::Transaction,
        };
        let follow_up = statement.is_some_and(|s| {
            s.feeds_next
                || matches!(
                    s.kind,
                    Kind::Insert | Kind::Update | Kind::Delete | Kind::Replace
                )
        }) || outcome.warnings > 0
            || outcome.last_insert_id != 0;
        held.reason = if let Some(reason) = self.pinned {
            HoldReason::Pinned(reason)
        } else if in_transaction {
            HoldReason::Transaction
        } else if follow_up {
            HoldReason::FollowUp
        } else {
            self.held = None; // back to the pool
            return;
        };
    }

    /// The connection's protocol state is unknown: close it, never reuse it.
    fn drop_broken_connection(&mut self) {
        if let Some(mut held) = self.held.take() {
            held.conn.broken = true;
            discard(held.conn);
        }
        // Whatever was pinned or open on it is gone.
        self.pinned = None;
    }

    /// Gives the held connection back, first resetting state that must not
    /// leak to the next client (open transaction, temporary tables, locks).
    async fn release_held(&mut self) {
        self.pinned = None;
        let Some(mut held) = self.held.take() else {
            return;
        };
        if held.reason == HoldReason::FollowUp {
            return;
        }
        if let Err(e) = held.conn.reset().await {
            tracing::info!(
                conn_id = self.id,
                backend = held.pool.key.backend,
                "could not reset a backend connection, closing it: {e}"
            );
            held.conn.broken = true;
            discard(held.conn);
        }
    }

    async fn close(mut self, end: End) {
        self.release_held().await;
        if matches!(end, End::Quit) {
            self.client.shutdown().await;
        }
        tracing::debug!(conn_id = self.id, "closed");
    }
}

static NO_STATEMENT: Statement = Statement {
    kind: Kind::Other,
    pin: None,
    needs_previous: false,
    reads_last_insert_id: false,
    feeds_next: false,
    hint: None,
};

/// Charset variables for a handshake collation id, falling back to the
/// server default for ids mysql_common does not know.
fn charset_vars_for(collation: u16, default_collation: u8) -> [(String, String); 4] {
    let id = CollationId::from(collation);
    let id = if id == CollationId::UNKNOWN_COLLATION_ID {
        CollationId::from(u16::from(default_collation))
    } else {
        id
    };
    let c = Collation::from(id);
    charset_vars(c.charset(), c.collation())
}
