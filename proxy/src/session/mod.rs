//! One client connection from handshake to quit. Each command is read,
//! classified and routed; the session checks out (or keeps) a backend
//! connection whose session state matches the client's, forwards the
//! command, relays the response, and decides whether to keep the connection
//! (transaction, pin) or give it back to the pool.
//!
//! - `commands`: commands Sluice answers itself (ping, set option, reset,
//!   change user).
//! - `kill`: `KILL [QUERY] n` for Sluice's client ids.
//! - `capture` / `diagnostics`: what the server changed or reported that
//!   must follow the client (user variables, charset, warnings,
//!   FOUND_ROWS(), ROW_COUNT()), read on the statement's connection.
//! - `execute`: runs a command as `sluice_router::plan` decides: checkout,
//!   state replay and send, the relay, what the client keeps afterwards.
//! - `checkout`: the connection the plan names (the writer, or a replica
//!   fresh enough for the read and read-your-writes).
//! - `outgoing`: the packet sent on it (statement ids rewritten).
//! - `binding`: what ties the client to backend connections (held
//!   connection, pins, transaction, prepared statements).
//! - `prepared`: prepared statements under multiplexing (Sluice's ids, lazy
//!   prepare per backend connection).

mod binding;
mod capture;
mod checkout;
mod commands;
mod diagnostics;
mod digest;
mod execute;
mod guard;
mod kill;
mod outgoing;
mod prepared;
mod query;

use crate::errors;
use crate::handshake::{self, HandshakeError};
use crate::metrics::SessionMetrics;
use crate::profile::ServerProfile;
use crate::shared::{ClientGuard, Shared};
use crate::tls::ClientStream;
use crate::topology::Topology;
use binding::Binding;
use bytes::Bytes;
use mysql_common::collations::{Collation, CollationId};
use sluice_config::Config;
use sluice_pool::{SessionState, Vars, charset_vars};
use sluice_protocol::PacketStream;
use sluice_protocol::consts::{CapabilityFlags as Caps, com, status};
use sluice_protocol::packets;
use sluice_router::{ReplicaState, Scratch};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tracing::Instrument;

const CLIENT_READ_CHUNK: usize = 256;

/// A client that has not finished its login in this long is closed
/// (MariaDB's default `connect_timeout`).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a read in the middle of a command may wait for the client
/// (MariaDB's default `net_read_timeout`): a client stalled mid-packet
/// cannot dodge the idle timeout while it holds a transaction.
const COMMAND_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// A client that takes no bytes for this long is disconnected (MariaDB's
/// default `net_write_timeout`); its backend connection is closed.
const CLIENT_WRITE_TIMEOUT: Duration = Duration::from_secs(60);

/// Why the session ended.
enum End {
    Quit,
    ClientGone,
    /// The server closed the session after `COMMIT RELEASE`.
    Released,
}

pub async fn run(shared: Arc<Shared>, stream: TcpStream, peer: SocketAddr, guard: ClientGuard) {
    // The id the handshake announces is the client's identity
    // (CONNECTION_ID(), KILL): registered from the start, removed when the
    // connection ends however it ends.
    let slot = shared.clients_by_id.register("");
    let registered = Registered {
        shared: shared.clone(),
        id: slot.id,
    };
    let id = slot.id;
    // A debug-level span: entering a span on every poll is measurable on
    // the per-query path, so info and warn lines carry conn_id themselves.
    let span = tracing::debug_span!("client", conn_id = id);
    async move {
        tracing::debug!(%peer, "accepted");
        metrics::counter!("sluice_client_connections_accepted_total").increment(1);
        // Small read chunks: thousands of idle clients must stay cheap.
        let mut client = PacketStream::with_chunk(ClientStream::Plain(stream), CLIENT_READ_CHUNK)
            .with_write_timeout(CLIENT_WRITE_TIMEOUT)
            .with_read_timeout(COMMAND_READ_TIMEOUT);
        // Formatted only for an error message that names it.
        let peer_host = peer.ip();
        // Boxed sub-futures keep the per-client future small while it idles
        // (10,000 idle clients must fit in well under 100 MB).
        let accept = Box::pin(handshake::accept(&mut client, id, &shared, peer_host));
        let Ok(accepted) = tokio::time::timeout(HANDSHAKE_TIMEOUT, accept).await else {
            // The server's connect_timeout: a client that never finishes
            // its login must not hold a client slot forever.
            tracing::info!(
                conn_id = id,
                "closing a client that did not finish its login in {HANDSHAKE_TIMEOUT:?}"
            );
            metrics::counter!("sluice_client_connections_closed_total", "cause" => "handshake_timeout")
                .increment(1);
            return;
        };
        let hello = match accepted {
            Ok(hello) => hello,
            Err(HandshakeError::Refused(why)) => {
                tracing::info!(conn_id = id, reason = why, "connection refused at handshake");
                return;
            }
            Err(HandshakeError::Io(e)) => {
                tracing::debug!("client left during handshake: {e}");
                return;
            }
        };
        let next_seq = hello.next_seq;
        slot.set_user(&hello.user);
        let mut session = Session::new(shared, client, hello, peer_host, slot);
        if !Box::pin(session.finish_handshake(next_seq)).await {
            return;
        }
        tracing::debug!(user = %session.user, "authenticated");
        let end = session.serve().await;
        Box::pin(session.close(end)).await;
        drop(registered);
        drop(guard);
    }
    .instrument(span)
    .await
}

struct Session {
    shared: Arc<Shared>,
    id: u32,
    client: PacketStream<ClientStream>,
    caps: Caps,
    /// The client negotiated MariaDB's metadata cache: its column counts
    /// carry a "metadata follows" byte, and it keeps each prepared
    /// statement's definitions between executes.
    caches_metadata: bool,
    /// The client negotiated MariaDB's extended metadata: its column
    /// definitions carry the extended type (`json`, ...), so it gets
    /// connections that send them (its own pool).
    extended_metadata: bool,
    /// What opens this client's backend connections (its user's password,
    /// or the token its login proved for a `password_hash` user).
    credential: sluice_pool::Credential,
    user: String,
    peer_host: IpAddr,
    nonce: [u8; 20],
    /// State right after connecting (for COM_RESET_CONNECTION); shared
    /// until it changes, so an idle client costs less.
    initial: Arc<SessionState>,
    /// The state the client's statements must see.
    desired: SessionState,
    binding: Binding,
    /// Sequence id of the next packet to the client in the current command:
    /// one past the command's last packet (a command of 16 MiB or more
    /// spans several), as the server numbers its answer.
    seq: u8,
    /// The config and backends of the generation this session works with
    /// (refreshed between commands, after a reload).
    config: Arc<Config>,
    topology: Arc<Topology>,
    /// This client's pool handles by backend index (its user, FOUND_ROWS
    /// flag and attributes), for `topology`.
    pools: Vec<Option<checkout::Handles>>,
    /// Reused per replica read: the plan's view of the backends.
    replica_states: Vec<ReplicaState>,
    /// This client in the registry other clients' KILL statements use.
    slot: Arc<crate::clients::ClientSlot>,
    /// Connection attributes its backend connections carry.
    attrs: sluice_pool::ConnectAttrs,
    /// Warnings, FOUND_ROWS(), ROW_COUNT() of the client's statements.
    diagnostics: diagnostics::Diagnostics,
    /// When the session last ran something that may have written.
    last_write: Option<std::time::Instant>,
    /// `read_your_writes = "gtid"`: the session's writes that its reads
    /// must see, until every replica has applied them.
    causal: Option<sluice_router::GtidPos>,
    scratch: Scratch,
    metrics: SessionMetrics,
    /// Reused per guarded lookup: one key, encoded, and the statement's
    /// shape text (the metadata cache's key).
    guard_key: Vec<u8>,
    guard_text: Vec<u8>,
    guard_memo: Vec<guard::ShapeMemo>,
    guard_tables: Vec<guard::TableMemo>,
    guard_charsets: Option<guard::Charsets>,
    /// Whether `desired.vars` turns autocommit off, for the set it was
    /// worked out from (asked twice per statement; the sets are interned).
    autocommit_memo: Option<(Vars, bool)>,
    /// What the current statement did, for its query digest.
    digest: digest::DigestNote,
    /// When the current command arrived: the one clock reading its
    /// digest, duration metric and pool checkout share.
    command_started: Instant,
    /// A `COMMIT RELEASE` (or `completion_type = RELEASE`) ended the
    /// session: the server closed its connection, and the client's closes
    /// after the answer.
    released: bool,
}

impl Session {
    fn new(
        shared: Arc<Shared>,
        client: PacketStream<ClientStream>,
        hello: handshake::ClientHello,
        peer_host: IpAddr,
        slot: Arc<crate::clients::ClientSlot>,
    ) -> Self {
        let id = slot.id;
        let profile = shared.profile.load_full();
        let attrs = shared.attribute_sets.forwardable(&hello.attributes);
        let topology = shared.topology.load_full();
        let initial = SessionState {
            schema: hello.schema.clone(),
            vars: initial_vars(hello.collation, &profile),
            multi_statements: hello.capabilities.contains(Caps::CLIENT_MULTI_STATEMENTS),
            connection_id: id,
            ..SessionState::default()
        };
        Session {
            shared,
            id,
            client,
            caps: hello.capabilities,
            caches_metadata: hello
                .mariadb_capabilities
                .contains(sluice_protocol::consts::MariadbCapabilities::MARIADB_CLIENT_CACHE_METADATA),
            extended_metadata: hello
                .mariadb_capabilities
                .contains(sluice_protocol::consts::MariadbCapabilities::MARIADB_CLIENT_EXTENDED_METADATA),
            credential: hello.credential,
            user: hello.user,
            peer_host,
            nonce: hello.nonce,
            desired: initial.clone(),
            initial: Arc::new(initial),
            binding: Binding::default(),
            seq: 1,
            attrs,
            slot,
            config: topology.config.clone(),
            topology,
            pools: Vec::new(),
            replica_states: Vec::new(),
            diagnostics: Default::default(),
            last_write: None,
            causal: None,
            scratch: Scratch::default(),
            guard_key: Vec::new(),
            guard_text: Vec::new(),
            guard_memo: Vec::new(),
            guard_tables: Vec::new(),
            guard_charsets: None,
            autocommit_memo: None,
            digest: Default::default(),
            metrics: SessionMetrics::default(),
            command_started: Instant::now(),
            released: false,
        }
    }

    /// Sends the final OK of the handshake; a requested schema is checked on
    /// a backend first, as the server would. Returns false if the client was
    /// refused.
    async fn finish_handshake(&mut self, seq: u8) -> bool {
        if self.desired.schema.is_some() {
            match self.check_schema().await {
                Ok(None) => {}
                Ok(Some(err)) => {
                    let _ = self.client.send(seq, &err).await;
                    return false;
                }
                Err(e) => {
                    tracing::warn!(conn_id = self.id, "checking the client's schema at connect: {e}");
                    metrics::counter!("sluice_errors_total", "cause" => e.cause()).increment(1);
                    let _ = self.client.send(seq, &errors::acquire(&e)).await;
                    return false;
                }
            }
        }
        self.client
            .send(seq, &packets::ok(0, 0, self.client_status(), 0))
            .await
            .is_ok()
    }

    async fn serve(&mut self) -> End {
        let max_packet = self.shared.config.load().server.max_packet_bytes;
        loop {
            let (seq, last_seq, payload) = match self.read_command(max_packet).await {
                Ok(r) => r,
                Err(e) => return self.on_read_error(e, max_packet).await,
            };
            self.seq = last_seq.wrapping_add(1);
            self.command_started = Instant::now();
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
                com::PING => {
                    self.ok_without_rows();
                    Box::pin(self.reply_ok()).await
                }
                com::QUERY => Box::pin(self.query(payload)).await,
                com::INIT_DB | com::FIELD_LIST | com::STATISTICS => {
                    Box::pin(self.plain_command(payload)).await
                }
                com::SET_OPTION => Box::pin(self.set_option(&payload)).await,
                com::RESET_CONNECTION => Box::pin(self.reset_connection()).await,
                com::CHANGE_USER => Box::pin(self.change_user(&payload)).await,
                com::STMT_PREPARE => Box::pin(self.prepare(payload)).await,
                com::STMT_EXECUTE | com::STMT_BULK_EXECUTE => Box::pin(self.execute_statement(payload)).await,
                com::STMT_SEND_LONG_DATA => self.send_long_data(&payload),
                com::STMT_RESET => Box::pin(self.reset_statement(&payload)).await,
                com::STMT_CLOSE => self.close_statement(&payload),
                com::STMT_FETCH => Box::pin(self.fetch(payload)).await,
                com::PROCESS_KILL => Box::pin(self.process_kill(&payload)).await,
                other => {
                    metrics::counter!("sluice_errors_total", "cause" => "unsupported_command").increment(1);
                    self.reply(&errors::unsupported_command(other)).await
                }
            };
            if let Err(end) = result {
                return end;
            }
            if self.released {
                tracing::info!(
                    conn_id = self.id,
                    "closing a client whose COMMIT or ROLLBACK released the connection"
                );
                metrics::counter!("sluice_client_connections_closed_total", "cause" => "release")
                    .increment(1);
                return End::Released;
            }
        }
    }

    /// Reads the next command. An idle client may time out; a killed
    /// client, or on shutdown a client outside a transaction, is closed.
    async fn read_command(&mut self, max_packet: usize) -> io::Result<(u8, u8, Bytes)> {
        // Between commands: give back buffer memory a big result grew.
        self.client.shrink_buffers();
        // A reload may have changed backends or passwords: look pools up again.
        if self.shared.generation() != self.topology.generation {
            self.topology = self.shared.topology.load_full();
            self.config = self.topology.config.clone();
            self.pools.clear();
        }
        let idle_limit = self.config.server.client_idle_timeout_ms;
        let idle_deadline =
            (idle_limit > 0).then(|| tokio::time::Instant::now() + Duration::from_millis(idle_limit));
        loop {
            let bound = self.binding.holds_state();
            if self.shared.shutting_down() && !bound {
                return Err(io::Error::new(io::ErrorKind::Interrupted, "server shutdown"));
            }
            if self.slot.killed() {
                return Err(io::Error::new(io::ErrorKind::ConnectionAborted, "killed"));
            }
            // `readable` is cancel-safe: when another branch wins nothing
            // of the client's input is lost. Biased, in this order: no
            // random number per command, and a KILL is still seen at the
            // top of the loop before the command runs.
            tokio::select! {
                biased;
                ready = self.client.readable() => {
                    ready?;
                    break;
                }
                // A KILL or the shutdown: checked at the top of the loop.
                _ = self.slot.woken() => {}
                _ = sleep_until(idle_deadline) => {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "client idle timeout"));
                }
            }
        }
        // Killed while the command arrived: the KILL wins, as on the server.
        if self.slot.killed() {
            return Err(io::Error::new(io::ErrorKind::ConnectionAborted, "killed"));
        }
        self.client.read_logical(max_packet).await
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
            io::ErrorKind::Interrupted => {
                metrics::counter!("sluice_client_connections_closed_total", "cause" => "shutdown")
                    .increment(1);
                let _ = self.client.send(1, &errors::shutting_down()).await;
                self.client.shutdown().await;
            }
            io::ErrorKind::ConnectionAborted => {
                // KILL CONNECTION from another client: closed without a
                // word, as the server closes a killed idle connection.
                tracing::info!(conn_id = self.id, "closing a client killed by KILL CONNECTION");
                metrics::counter!("sluice_client_connections_closed_total", "cause" => "killed").increment(1);
                self.client.shutdown().await;
            }
            io::ErrorKind::TimedOut if !e.to_string().contains("client idle timeout") => {
                // Stalled in the middle of a command (net_read_timeout).
                tracing::info!(conn_id = self.id, "closing a client stalled mid-command: {e}");
                metrics::counter!("sluice_client_connections_closed_total", "cause" => "read_timeout")
                    .increment(1);
                self.client.shutdown().await;
            }
            io::ErrorKind::TimedOut => {
                let limit = self.shared.config.load().server.client_idle_timeout_ms;
                tracing::info!(conn_id = self.id, "closing a client idle for {limit} ms");
                metrics::counter!("sluice_client_connections_closed_total", "cause" => "idle_timeout")
                    .increment(1);
                let _ = self.client.send(1, &errors::idle_timeout(limit)).await;
                self.client.shutdown().await;
            }
            _ => tracing::debug!("client gone: {e}"),
        }
        End::ClientGone
    }

    async fn refuse_and_close(&mut self, err: &[u8], cause: &'static str) {
        tracing::info!(conn_id = self.id, cause, "closing client after a protocol error");
        metrics::counter!("sluice_errors_total", "cause" => cause).increment(1);
        let _ = self.client.send(self.seq, err).await;
        self.client.shutdown().await;
    }

    async fn reply(&mut self, payload: &[u8]) -> Result<(), End> {
        if payload.first() == Some(&0xFF) {
            self.digest.error = true;
        }
        self.client
            .send(self.seq, payload)
            .await
            .map(|_| ())
            .map_err(|_| End::ClientGone)
    }

    /// Server status flags for packets Sluice builds: the client's real
    /// autocommit mode and whether its transaction is open.
    fn client_status(&self) -> u16 {
        let autocommit_off = self
            .desired
            .vars
            .get("autocommit")
            .is_some_and(|v| v.eq_ignore_ascii_case("OFF") || v == "0");
        let in_trans = self.binding.in_transaction && self.binding.held.is_some();
        let mut flags = 0;
        if !autocommit_off {
            flags |= status::AUTOCOMMIT;
        }
        if in_trans {
            flags |= status::IN_TRANS;
        }
        flags
    }

    async fn reply_ok(&mut self) -> Result<(), End> {
        self.reply(&packets::ok(0, 0, self.client_status(), 0)).await
    }

    async fn close(mut self, end: End) {
        self.binding.release(self.id).await;
        if matches!(end, End::Quit | End::Released) {
            if self.client.get_ref().is_tls() {
                // TLS owes the client its close_notify.
                self.client.shutdown().await;
            } else {
                // Dropping a plain socket sends the FIN a shutdown would:
                // one system call fewer for every connect-per-request client.
                let _ = self.client.flush().await;
            }
        }
        tracing::debug!(conn_id = self.id, "closed");
    }
}

/// Removes a client from the registry when its connection ends.
struct Registered {
    shared: Arc<Shared>,
    id: u32,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.shared.clients_by_id.remove(self.id);
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The variable set a login with `collation` starts with. Remembered per
/// worker thread: clients connect with the same collation again and again
/// (PHP's connect-per-request), and building and interning the set each
/// time was a measurable part of a login.
fn initial_vars(collation: u16, profile: &Arc<ServerProfile>) -> Vars {
    thread_local! {
        static LAST: std::cell::RefCell<Option<(u16, Arc<ServerProfile>, Vars)>> =
            const { std::cell::RefCell::new(None) };
    }
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        if let Some((c, p, vars)) = last.as_ref()
            && *c == collation
            && Arc::ptr_eq(p, profile)
        {
            return vars.clone();
        }
        let vars: Vars = charset_vars_for(collation, profile).into_iter().collect();
        *last = Some((collation, profile.clone(), vars.clone()));
        vars
    })
}

/// Charset variables for a handshake collation id, as the server sets
/// them: a collation the server does not know (MySQL 8's 255 on MariaDB)
/// gives the server's default, as `thd_init_client_charset` does.
fn charset_vars_for(collation: u16, profile: &ServerProfile) -> [(String, String); 5] {
    let (charset, name) = collation_names(collation, profile)
        .or_else(|| collation_names(u16::from(profile.default_collation), profile))
        .unwrap_or_else(|| ("utf8mb4".into(), "utf8mb4_general_ci".into()));
    charset_vars(&charset, &name)
}

/// A collation id's (charset, collation) names: the server's own list once
/// learned, else mysql_common's table of MySQL's ids.
pub(crate) fn collation_names(id: u16, profile: &ServerProfile) -> Option<(String, String)> {
    if !profile.collations.is_empty() {
        return profile.collations.get(&id).cloned();
    }
    let id = CollationId::from(id);
    (id != CollationId::UNKNOWN_COLLATION_ID).then(|| {
        let c = Collation::from(id);
        (c.charset().to_string(), c.collation().to_string())
    })
}
