//! One raw backend connection: its packet stream, what the server told us at
//! connect, the session state currently applied on it, and whether it can be
//! reused. The proxy relays client commands over [`BackendConn::stream`];
//! the helpers here run Sluice's own small commands (SET, COM_INIT_DB, ...).

use crate::BackendStream;
use crate::connect::server_error;
use crate::{BackendError, BackendStatement, SessionState, StatementCache};
use sluice_protocol::PacketStream;
use sluice_protocol::consts::{CapabilityFlags, MariadbCapabilities, com, set_option};
use sluice_protocol::packets::{self, ERR_HEADER};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};

/// What the server announced in its handshake.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    pub version: String,
    pub connection_id: u32,
    /// Capabilities negotiated for this connection.
    pub capabilities: CapabilityFlags,
    /// Everything the server offered.
    pub server_capabilities: CapabilityFlags,
    /// MariaDB's extended capabilities negotiated for this connection.
    pub mariadb_capabilities: MariadbCapabilities,
    /// Every extended capability the server offered (empty for MySQL).
    pub server_mariadb_capabilities: MariadbCapabilities,
    pub default_collation: u8,
    /// The handshake's nonce and auth plugin (COM_CHANGE_USER scrambles
    /// with them).
    pub nonce: Vec<u8>,
    pub auth_plugin: mysql_common::packets::AuthPlugin<'static>,
}

/// Result of a command that answers with a single OK/EOF or ERR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandOutcome {
    Ok { status: u16, warnings: u16 },
    Err { payload: Vec<u8> },
}

/// The shortest keepalive interval: a connection idle for less is never
/// pinged, whatever the server's `wait_timeout`.
pub(crate) const MIN_KEEPALIVE_INTERVAL: Duration = Duration::from_millis(300);

/// Generic over the byte stream so the relay can run over in-memory streams
/// in tests; the default is the pool's TCP-or-TLS stream. Sluice's own
/// commands below are implemented for that stream only.
#[derive(Debug)]
pub struct BackendConn<S = BackendStream> {
    pub stream: PacketStream<S>,
    pub info: ServerInfo,
    /// Session state as it is on the server right now.
    pub state: SessionState,
    /// Last time a packet was exchanged; drives keepalive decisions.
    pub last_io: Instant,
    /// The connection's protocol position is unknown (error mid-response,
    /// client gone mid-result): it must be closed, never reused.
    pub broken: bool,
    /// Server's `wait_timeout` for this session, in seconds.
    pub wait_timeout_secs: u64,
    /// Values the login gave variables whose session default is not the
    /// global value (`sql_mode` with CLIENT_IGNORE_SPACE, `wait_timeout`
    /// with CLIENT_INTERACTIVE): what a variable another client changed
    /// goes back to, where others go back to DEFAULT.
    pub login_values: Vec<(String, String)>,
    /// Prepared statements on this connection, by SQL text.
    pub statements: StatementCache,
    pub created: Instant,
    /// A per-connection factor in [0.8, 1.0] so pings and lifetimes of
    /// connections opened together do not fire together.
    pub jitter: f64,
    /// The server refused `SET pseudo_thread_id` (no privilege).
    pub pseudo_thread_id_refused: bool,
    /// The column definitions of the statement last sent for execution
    /// here ([`BackendConn::prepared`]): what the server means if its
    /// answer skips them, at hand without a lookup by text.
    pub executing_defs: Option<crate::ColumnDefs>,
    /// The worker thread it was opened on (its socket's runtime).
    pub home: usize,
    /// Says goodbye (COM_QUIT) when the connection is dropped and not
    /// [`broken`](Self::broken): set for the pool's own connections.
    goodbye: Option<fn(&mut PacketStream<S>)>,
}

impl<S> Drop for BackendConn<S> {
    /// A connection closed between commands (replaced, shrunk away, at
    /// shutdown) quits like a client that is done: the server then ends
    /// the session quietly instead of counting an aborted client
    /// (`Aborted_clients`) and logging "Aborted connection ... (Got an
    /// error reading communication packets)" for each one.
    fn drop(&mut self) {
        if let (false, Some(goodbye)) = (self.broken, self.goodbye) {
            goodbye(&mut self.stream);
        }
    }
}

/// COM_QUIT, written only if the socket takes it at once and nothing is
/// half-written before it (a command cut off mid-packet would swallow
/// these bytes). The server reads it after whatever it is still answering.
/// A goodbye that cannot go out is counted: the server then logs the
/// connection as aborted.
fn say_goodbye(stream: &mut PacketStream<BackendStream>) {
    // One packet: a 1-byte payload, sequence id 0.
    const QUIT: [u8; 5] = [1, 0, 0, 0, com::QUIT];
    let unsent = if stream.pending_write() != 0 {
        "half_written"
    } else if !stream.io_mut().send_now(&QUIT) {
        "socket_full"
    } else {
        return;
    };
    metrics::counter!("sluice_backend_quit_unsent_total", "reason" => unsent).increment(1);
}

/// A statement ready to execute on a connection: its id there and the
/// parameter types the server last saw with it.
#[derive(Debug)]
pub struct Prepared {
    pub id: u32,
    pub types: Option<std::sync::Arc<[u8]>>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> BackendConn<S> {
    /// Whether this connection negotiated MariaDB's metadata cache: every
    /// column count it receives carries a "metadata follows" byte, and an
    /// execute may skip definitions that did not change.
    pub fn caches_metadata(&self) -> bool {
        self.info
            .mariadb_capabilities
            .contains(MariadbCapabilities::MARIADB_CLIENT_CACHE_METADATA)
    }

    pub(crate) fn new(stream: PacketStream<S>, info: ServerInfo, state: SessionState) -> Self {
        BackendConn {
            stream,
            info,
            state,
            last_io: Instant::now(),
            broken: false,
            wait_timeout_secs: 28_800,
            login_values: Vec::new(),
            statements: StatementCache::default(),
            created: Instant::now(),
            jitter: 0.8 + rand::random::<f64>() * 0.2,
            pseudo_thread_id_refused: false,
            executing_defs: None,
            home: crate::home::worker(),
            goodbye: None,
        }
    }

    /// A connection over an already authenticated stream (no setup query is
    /// run): for relaying over something other than the pool's TCP
    /// connections, such as in-memory streams in tests. `state` should be
    /// what the server's session really is.
    pub fn from_stream(stream: PacketStream<S>, info: ServerInfo, state: SessionState) -> Self {
        Self::new(stream, info, state)
    }
}

impl BackendConn {
    /// Quit with COM_QUIT when dropped between commands (see the `Drop` impl).
    pub(crate) fn quit_on_drop(&mut self) {
        self.goodbye = Some(say_goodbye);
    }

    /// Turns on session-state tracking (so OK packets report schema and
    /// variable changes) and records the session's starting state.
    pub(crate) async fn setup(&mut self) -> Result<(), BackendError> {
        self.expect_ok(
            "SET SESSION session_track_schema=ON, session_track_state_change=ON, \
             session_track_system_variables='*'",
        )
        .await?;
        let rows = self
            .query_rows(
                "SELECT @@character_set_client, @@character_set_connection, \
                 @@character_set_results, @@collation_connection, @@wait_timeout, @@sql_mode",
            )
            .await?;
        let row = rows
            .first()
            .ok_or_else(|| BackendError::protocol("setup query returned no row"))?;
        let get = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
        self.state.vars.update(|vars| {
            vars.insert("character_set_client".into(), get(0));
            vars.insert("character_set_connection".into(), get(1));
            vars.insert("character_set_results".into(), get(2));
            vars.insert("collation_connection".into(), get(3));
            // Right after a handshake, change-user or reset, the results
            // carry the connection's collation.
            vars.insert(
                crate::session::RESULTS_COLLATION.into(),
                format!("{} {}", get(2), get(3)),
            );
        });
        self.wait_timeout_secs = get(4).parse().unwrap_or(28_800);
        self.login_values = vec![("wait_timeout".into(), get(4)), ("sql_mode".into(), get(5))];
        self.state.multi_statements = self
            .info
            .capabilities
            .contains(CapabilityFlags::CLIENT_MULTI_STATEMENTS);
        Ok(())
    }

    /// Sends one command packet (sequence 0) and flushes it.
    pub async fn send_command(&mut self, payload: &[u8]) -> Result<(), BackendError> {
        self.stream.send(0, payload).await?;
        self.last_io = Instant::now();
        Ok(())
    }

    /// Sends one command packet given in pieces (sequence 0), written
    /// straight into the write buffer, and flushes it.
    pub async fn send_command_parts(&mut self, parts: &[&[u8]]) -> Result<(), BackendError> {
        self.stream.queue_parts(0, parts);
        self.stream.flush().await?;
        self.last_io = Instant::now();
        Ok(())
    }

    /// Runs a command that answers with one OK, EOF or ERR packet, recording
    /// any session-state change it reports.
    pub async fn simple_command(&mut self, payload: &[u8]) -> Result<CommandOutcome, BackendError> {
        self.send_command(payload).await?;
        let reply = self.stream.read_packet().await?;
        self.last_io = Instant::now();
        match reply.first_byte() {
            Some(ERR_HEADER) => Ok(CommandOutcome::Err {
                payload: reply.payload.to_vec(),
            }),
            Some(_) if packets::is_eof(&reply.payload) => {
                let (warnings, status) = packets::parse_eof(&reply.payload);
                Ok(CommandOutcome::Ok { status, warnings })
            }
            Some(packets::OK_HEADER) => {
                let ok = packets::parse_ok(&reply.payload)
                    .ok_or_else(|| BackendError::protocol("malformed OK packet"))?;
                self.state.absorb(ok.session_state);
                Ok(CommandOutcome::Ok {
                    status: ok.status,
                    warnings: ok.warnings,
                })
            }
            _ => {
                self.broken = true;
                Err(BackendError::protocol("unexpected reply to a simple command"))
            }
        }
    }

    /// Runs a statement that must succeed with OK.
    pub async fn expect_ok(&mut self, sql: &str) -> Result<(), BackendError> {
        match self.simple_command(&query_packet(sql)).await? {
            CommandOutcome::Ok { .. } => Ok(()),
            CommandOutcome::Err { payload } => Err(server_error(&payload)),
        }
    }

    /// Runs a query and decodes its text rows (Sluice's own small queries
    /// only; client results are relayed, never decoded).
    pub async fn query_rows(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, BackendError> {
        Ok(self.query_result(sql).await?.1)
    }

    /// Runs a query and returns its column definition packets (as the
    /// server sent them) and its decoded text rows.
    pub async fn query_result(
        &mut self,
        sql: &str,
    ) -> Result<(Vec<bytes::Bytes>, Vec<Vec<Option<String>>>), BackendError> {
        self.send_command(&query_packet(sql)).await?;
        let first = self.stream.read_packet().await?;
        if first.first_byte() == Some(ERR_HEADER) {
            return Err(server_error(&first.payload));
        }
        if packets::is_ok(&first.payload) {
            return Ok((Vec::new(), Vec::new()));
        }
        // Column definitions, then EOF.
        let mut columns = Vec::new();
        loop {
            let p = self.stream.read_packet().await?;
            if packets::is_eof(&p.payload) {
                break;
            }
            columns.push(bytes::Bytes::copy_from_slice(&p.payload));
        }
        let mut rows = Vec::new();
        loop {
            let p = self.stream.read_packet().await?;
            if packets::is_eof(&p.payload) {
                break;
            }
            if p.first_byte() == Some(ERR_HEADER) {
                return Err(server_error(&p.payload));
            }
            rows.push(packets::parse_text_row(&p.payload).ok_or_else(|| BackendError::protocol("bad row"))?);
        }
        self.last_io = Instant::now();
        Ok((columns, rows))
    }

    /// Makes the server's session match `desired`: schema, multi-statement
    /// mode and session variables, sending only the difference. Returns the
    /// server's ERR payload if it refused (for example the schema was
    /// dropped), which the caller relays to the client.
    pub async fn apply(
        &mut self,
        desired: &SessionState,
        with_last_insert_id: bool,
        with_connection_id: bool,
        target: &crate::ConnectTarget,
    ) -> Result<Option<Vec<u8>>, BackendError> {
        if self.already_has(desired, with_last_insert_id, with_connection_id) {
            return Ok(None);
        }
        // Boxed: the statement path's future stays small when nothing
        // needs restoring, which is nearly always.
        Box::pin(self.apply_changes(desired, with_last_insert_id, with_connection_id, target)).await
    }

    /// Nothing to restore (conservative: anything unusual goes the long way).
    fn already_has(
        &self,
        desired: &SessionState,
        with_last_insert_id: bool,
        with_connection_id: bool,
    ) -> bool {
        let state = &self.state;
        let foreign_id = state.connection_id != 0 && state.connection_id != desired.connection_id;
        state.schema == desired.schema
            && state.multi_statements == desired.multi_statements
            && (!with_connection_id || state.connection_id == desired.connection_id)
            && !foreign_id
            && (!with_last_insert_id || state.last_insert_id == desired.last_insert_id)
            && state.vars == desired.vars
            && state.user_vars == desired.user_vars
    }

    async fn apply_changes(
        &mut self,
        desired: &SessionState,
        with_last_insert_id: bool,
        with_connection_id: bool,
        target: &crate::ConnectTarget,
    ) -> Result<Option<Vec<u8>>, BackendError> {
        if desired.schema.is_none() && self.state.schema.is_some() {
            // A client without a default schema must not see the previous
            // client's: only a change-user unsets it (rare: the pools mix
            // clients with and without a schema).
            metrics::counter!("sluice_schema_resets_total").increment(1);
            self.change_user(target).await?;
        }
        // CONNECTION_ID() returns pseudo_thread_id: set to the client's id
        // for statements that call it, and put back when another client's
        // id is still set (a CONNECTION_ID() inside a routine or view must
        // never name someone else). Setting it needs a privilege (SUPER /
        // BINLOG REPLAY); refused once, it is not tried again on this
        // connection, and the backend's own id is reported (counted).
        let foreign = self.state.connection_id != 0 && self.state.connection_id != desired.connection_id;
        if (with_connection_id || foreign)
            && !self.pseudo_thread_id_refused
            && desired.connection_id != 0
            && self.state.connection_id != desired.connection_id
        {
            let sql = format!("SET @@session.pseudo_thread_id={}", desired.connection_id);
            match self.simple_command(&query_packet(&sql)).await? {
                CommandOutcome::Ok { .. } => self.state.connection_id = desired.connection_id,
                CommandOutcome::Err { .. } => {
                    self.pseudo_thread_id_refused = true;
                    metrics::counter!("sluice_route_fallbacks_total", "reason" => "connection_id_not_settable")
                        .increment(1);
                }
            }
        }
        if let Some(schema) = &desired.schema {
            if self.state.schema.as_ref() != Some(schema) {
                if let Err(payload) = self.init_db(schema).await? {
                    return Ok(Some(payload));
                }
            }
        }
        if desired.multi_statements != self.state.multi_statements {
            let option = if desired.multi_statements {
                set_option::MULTI_STATEMENTS_ON
            } else {
                set_option::MULTI_STATEMENTS_OFF
            };
            let mut p = vec![com::SET_OPTION];
            p.extend_from_slice(&option.to_le_bytes());
            if let CommandOutcome::Err { payload } = self.simple_command(&p).await? {
                return Ok(Some(payload));
            }
            self.state.multi_statements = desired.multi_statements;
        }
        let mut sql = self.state.set_statement_towards(desired, &self.login_values);
        let replay_id = with_last_insert_id && desired.last_insert_id != self.state.last_insert_id;
        if replay_id {
            let assignment = format!("@@session.last_insert_id={}", desired.last_insert_id);
            sql = Some(match sql {
                Some(s) => format!("{s}, {assignment}"),
                None => format!("SET {assignment}"),
            });
        }
        if let Some(sql) = sql {
            if let CommandOutcome::Err { payload } = self.simple_command(&query_packet(&sql)).await? {
                return Ok(Some(payload));
            }
            self.state.vars = desired.vars.clone();
            self.state.user_vars = desired.user_vars.clone();
            if replay_id {
                self.state.last_insert_id = desired.last_insert_id;
            }
        }
        Ok(None)
    }

    /// Reads the connection charset and collation back after a change that
    /// reported only one of them, and the results collation (the id in the
    /// answer's column definitions, named by `collation`: id → (charset,
    /// collation)), and records them.
    pub async fn read_back_connection_charset(
        &mut self,
        collation: impl Fn(u16) -> Option<(String, String)>,
    ) -> Result<(String, String, Option<String>), BackendError> {
        let (columns, rows) = self
            .query_result(
                "SELECT @@character_set_connection, @@collation_connection, \
                 @@character_set_results IS NULL",
            )
            .await?;
        let row = rows.first().ok_or_else(|| BackendError::protocol("no row"))?;
        let get = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
        let (charset, connection_collation) = (get(0), get(1));
        let extended = self
            .info
            .mariadb_capabilities
            .contains(MariadbCapabilities::MARIADB_CLIENT_EXTENDED_METADATA);
        // Without a results charset, definitions carry the values' own.
        let results = (get(2) == "0")
            .then(|| columns.first())
            .flatten()
            .and_then(|def| packets::column_charset(def, extended))
            .and_then(collation)
            .map(|(charset, collation)| format!("{charset} {collation}"));
        self.state
            .set_connection_charset(charset.clone(), connection_collation.clone(), results.clone());
        Ok((charset, connection_collation, results))
    }

    /// Reads session variables back after a change the server did not
    /// report (`SET @@name = ...`), in the tracker's format (that of SHOW
    /// VARIABLES, which `information_schema.SESSION_VARIABLES` shares), and
    /// records them. Returns them by lower-case name.
    pub async fn read_back_variables(
        &mut self,
        names: &[String],
    ) -> Result<Vec<(String, String)>, BackendError> {
        // Names come from the lexer: letters, digits and `_` only here.
        let list: Vec<String> = names
            .iter()
            .filter(|n| n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
            .map(|n| format!("'{}'", n.to_ascii_uppercase()))
            .collect();
        if list.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT VARIABLE_NAME, VARIABLE_VALUE FROM information_schema.SESSION_VARIABLES \
             WHERE VARIABLE_NAME IN ({})",
            list.join(",")
        );
        let read: Vec<(String, String)> = self
            .query_rows(&sql)
            .await?
            .into_iter()
            .filter_map(|row| {
                let mut row = row.into_iter();
                let name = row.next().flatten()?.to_ascii_lowercase();
                Some((name, row.next().flatten().unwrap_or_default()))
            })
            .collect();
        self.state.record_vars(&read);
        Ok(read)
    }

    /// Every user variable of this session as a literal that recreates it
    /// with its type (integer, decimal, double, string in its charset), from
    /// MariaDB's `information_schema.USER_VARIABLES`. `Ok(None)` when the
    /// server has no such table (MySQL): the values cannot be captured.
    pub async fn read_back_user_variables(
        &mut self,
    ) -> Result<Option<std::collections::BTreeMap<String, String>>, BackendError> {
        let sql = "SELECT VARIABLE_NAME, HEX(VARIABLE_VALUE), VARIABLE_TYPE, CHARACTER_SET_NAME \
                   FROM information_schema.USER_VARIABLES";
        let rows = match self.query_rows(sql).await {
            Ok(rows) => rows,
            Err(BackendError::Server { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut vars = std::collections::BTreeMap::new();
        for row in rows {
            let get = |i: usize| row.get(i).cloned().flatten();
            // A variable set to NULL is kept: the server describes it
            // differently from one never set (column length).
            let Some(name) = get(0) else { continue };
            let literal = crate::session::user_variable_literal(
                get(1).as_deref(),
                get(2).as_deref().unwrap_or(""),
                get(3).as_deref().unwrap_or("binary"),
            );
            vars.insert(name.to_ascii_lowercase(), literal);
        }
        // Strings again, exactly: the table's utf8 column loses bytes.
        let strings: Vec<String> = vars
            .iter()
            .filter(|(_, literal)| literal.starts_with('_'))
            .map(|(name, _)| name.clone())
            .collect();
        if !strings.is_empty() {
            let columns: Vec<String> = strings
                .iter()
                .map(|name| {
                    let v = format!("@`{}`", name.replace('`', "``"));
                    format!("HEX({v}), CHARSET({v}), COLLATION({v})")
                })
                .collect();
            let rows = self.query_rows(&format!("SELECT {}", columns.join(", "))).await?;
            if let Some(row) = rows.first() {
                for (i, name) in strings.iter().enumerate() {
                    let get = |k: usize| row.get(3 * i + k).cloned().flatten().unwrap_or_default();
                    if let Some(literal) = crate::session::user_string_literal(&get(0), &get(1), &get(2)) {
                        vars.insert(name.clone(), literal);
                    }
                }
            }
        }
        self.state.user_vars = vars.clone();
        Ok(Some(vars))
    }

    /// COM_CHANGE_USER to the same user with no default schema: the only
    /// way to unset one. The server resets the whole session, so the setup
    /// runs again and statements prepared here are gone.
    pub async fn change_user(&mut self, target: &crate::ConnectTarget) -> Result<(), BackendError> {
        use mysql_common::packets::{ComChangeUser, ComChangeUserMoreData};
        use mysql_common::proto::MySerialize;
        let plugin = self.info.auth_plugin.clone();
        let scramble = target.credential.auth_data(&plugin, &self.info.nonce)?;
        let packet = ComChangeUser::new()
            .with_user(Some(target.user.as_bytes()))
            .with_auth_plugin_data(scramble.as_deref())
            .with_database(None::<&[u8]>)
            .with_more_data(Some(
                ComChangeUserMoreData::new(u16::from(self.info.default_collation))
                    .with_auth_plugin(Some(plugin.clone())),
            ));
        let mut buf = Vec::new();
        packet.serialize(&mut buf);
        self.send_command(&buf).await?;
        crate::connect::authenticate(
            &mut self.stream,
            plugin,
            self.info.nonce.clone(),
            &target.credential,
        )
        .await?;
        // The server keeps COM_SET_OPTION's multi-statement setting.
        let multi_statements = self.state.multi_statements;
        self.state = SessionState::default();
        self.statements.clear();
        self.setup().await?;
        self.state.multi_statements = multi_statements;
        Ok(())
    }

    /// COM_RESET_CONNECTION, then the setup again (a reset also resets the
    /// session-tracking variables). Used when a pinned client leaves.
    pub async fn reset(&mut self) -> Result<(), BackendError> {
        if let CommandOutcome::Err { payload } = self.simple_command(&[com::RESET_CONNECTION]).await? {
            return Err(server_error(&payload));
        }
        let schema = self.state.schema.take();
        let multi_statements = self.state.multi_statements;
        self.state = SessionState::default();
        self.statements.clear(); // the server deallocated them
        // A reset keeps the current database and the multi-statement option.
        self.state.schema = schema;
        self.setup().await?;
        self.state.multi_statements = multi_statements;
        Ok(())
    }

    /// The server-side id of `sql` on this connection and the parameter
    /// types it last saw, preparing it first if needed (closing the least
    /// recently used statement beyond `capacity`). `schema`: the client's
    /// default schema when it prepared the statement, where the server
    /// resolves its table names for good, whatever the client's schema is
    /// now (None: the connection's). `Ok(Err(payload))` is the server's
    /// ERR for the prepare.
    pub async fn prepared(
        &mut self,
        sql: &std::sync::Arc<str>,
        capacity: usize,
        schema: Option<&str>,
    ) -> Result<Result<Prepared, Vec<u8>>, BackendError> {
        let caches = self.caches_metadata();
        let vars = &self.state.vars;
        if let Some(stmt) = self.statements.get(sql) {
            let stale = if stmt.schema.as_deref() != schema.or(self.state.schema.as_deref()) {
                // Its table names were resolved in another schema: it
                // would run on that schema's tables.
                Some("schema")
            } else if caches
                && !stmt
                    .defs_vars
                    .as_ref()
                    .is_none_or(|v| same_result_charsets(v, vars))
            {
                // Its definitions were sent under other result charsets:
                // a skip would mean those. Prepared again, the server
                // sends them as they are now.
                Some("result_charsets")
            } else {
                None
            };
            let Some(reason) = stale else {
                self.executing_defs = stmt.column_defs.clone();
                return Ok(Ok(Prepared {
                    id: stmt.id,
                    types: stmt.types.clone(),
                }));
            };
            if let Some(id) = self.statements.remove(sql) {
                metrics::counter!("sluice_statements_reprepared_total", "reason" => reason).increment(1);
                self.send_command(&sluice_protocol::statement::close(id)).await?;
            }
        }
        self.make_room(capacity).await?;
        // Prepared in its schema, then the connection's is put back.
        let current = self.state.schema.clone();
        let away = schema.filter(|s| current.as_deref() != Some(*s));
        if let Some(schema) = &away {
            if let Err(refused) = self.init_db(schema).await? {
                return Ok(Err(refused));
            }
        }
        let mut p = vec![com::STMT_PREPARE];
        p.extend_from_slice(sql.as_bytes());
        self.send_command(&p).await?;
        let ok = self.stream.read_packet().await?;
        let prepared = if ok.first_byte() == Some(ERR_HEADER) {
            Err(ok.payload.to_vec())
        } else {
            Ok(self.read_prepare_ok(&ok.payload).await?)
        };
        // (read_prepare_ok recorded the schema it was prepared in.)
        if let (Some(_), Some(back)) = (away, &current) {
            if let Err(refused) = self.init_db(back).await? {
                // The client's own schema is gone: it gets the server's
                // error, and the statement is not kept half-way.
                if let Ok(stmt) = &prepared {
                    self.send_command(&sluice_protocol::statement::close(stmt.id))
                        .await?;
                }
                return Ok(Err(refused));
            }
        }
        let stmt = match prepared {
            Ok(stmt) => stmt,
            Err(refused) => return Ok(Err(refused)),
        };
        self.executing_defs = stmt.column_defs.clone();
        let prepared = Prepared {
            id: stmt.id,
            types: None,
        };
        self.remember_statement(sql.clone(), stmt, capacity).await?;
        Ok(Ok(prepared))
    }

    /// COM_INIT_DB; `Ok(Err(payload))` is the server's refusal. The
    /// connection's recorded schema follows.
    async fn init_db(&mut self, schema: &str) -> Result<Result<(), Vec<u8>>, BackendError> {
        let mut p = vec![com::INIT_DB];
        p.extend_from_slice(schema.as_bytes());
        if let CommandOutcome::Err { payload } = self.simple_command(&p).await? {
            return Ok(Err(payload));
        }
        self.state.schema = Some(schema.to_string());
        Ok(Ok(()))
    }

    /// Reads the rest of a COM_STMT_PREPARE response after its first
    /// packet, keeping the result's column definitions (an execute under
    /// MariaDB's metadata cache may refer to them instead of resending).
    pub async fn read_prepare_ok(&mut self, first: &[u8]) -> Result<BackendStatement, BackendError> {
        if first.len() < 12 || first[0] != packets::OK_HEADER {
            self.broken = true;
            return Err(BackendError::protocol("bad COM_STMT_PREPARE response"));
        }
        let id = u32::from_le_bytes([first[1], first[2], first[3], first[4]]);
        let columns = packets::le16(first, 5);
        let params = packets::le16(first, 7);
        if params > 0 {
            for _ in 0..=params {
                self.stream.read_packet().await?;
            }
        }
        let mut column_defs = None;
        let mut defs_vars = None;
        if columns > 0 {
            let mut defs = Vec::with_capacity(usize::from(columns));
            for _ in 0..columns {
                let def = self.stream.read_packet().await?;
                defs.push(bytes::Bytes::copy_from_slice(&def.payload));
            }
            self.stream.read_packet().await?; // EOF
            column_defs = Some(std::sync::Arc::new(defs));
            defs_vars = Some(self.state.vars.clone());
        }
        self.last_io = Instant::now();
        Ok(BackendStatement {
            id,
            params,
            columns,
            types: None,
            column_defs,
            defs_vars,
            schema: self.state.schema.clone(),
        })
    }

    /// Closes least recently used statements until one more fits within
    /// `capacity`: the server never holds more than `capacity` of ours.
    pub async fn make_room(&mut self, capacity: usize) -> Result<(), BackendError> {
        while let Some(id) = self.statements.evict_for_one_more(capacity) {
            let mut close = vec![com::STMT_CLOSE];
            close.extend_from_slice(&id.to_le_bytes());
            self.send_command(&close).await?; // no response
        }
        Ok(())
    }

    /// Records a statement prepared on this connection, closing any evicted
    /// to stay within `capacity`.
    pub async fn remember_statement(
        &mut self,
        sql: std::sync::Arc<str>,
        stmt: BackendStatement,
        capacity: usize,
    ) -> Result<(), BackendError> {
        for id in self.statements.insert(sql, stmt, capacity) {
            let mut close = vec![com::STMT_CLOSE];
            close.extend_from_slice(&id.to_le_bytes());
            self.send_command(&close).await?; // no response
        }
        Ok(())
    }

    /// Idle time after which the connection is pinged: well before the
    /// server's `wait_timeout` (a third of it, jittered), and at least every
    /// minute.
    pub fn keepalive_interval(&self) -> Duration {
        let third = Duration::from_secs(self.wait_timeout_secs.max(1)).mul_f64(self.jitter / 3.0);
        third.min(Duration::from_secs(60)).max(MIN_KEEPALIVE_INTERVAL)
    }

    /// True when the server has closed the connection (or sent something
    /// unprompted, such as a timeout error before closing): a non-blocking
    /// peek, no round trip.
    pub fn peer_closed(&self) -> bool {
        let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 1];
        match socket2::SockRef::from(self.stream.get_ref().tcp()).peek(&mut buf) {
            Ok(_) => true, // 0 = EOF; >0 = unexpected data
            Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
        }
    }

    /// COM_PING.
    pub async fn ping(&mut self) -> Result<(), BackendError> {
        match self.simple_command(&[com::PING]).await? {
            CommandOutcome::Ok { .. } => Ok(()),
            CommandOutcome::Err { payload } => Err(server_error(&payload)),
        }
    }
}

pub fn query_packet(sql: &str) -> Vec<u8> {
    let mut p = Vec::with_capacity(1 + sql.len());
    p.push(com::QUERY);
    p.extend_from_slice(sql.as_bytes());
    p
}

/// Whether two sets of session variables give the same result-set
/// metadata: the same charsets towards the client.
fn same_result_charsets(a: &crate::Vars, b: &crate::Vars) -> bool {
    a.same(b)
        || [
            crate::session::RESULTS_COLLATION,
            "character_set_results",
            "character_set_client",
            "collation_connection",
        ]
        .iter()
        .all(|name| a.get(*name) == b.get(*name))
}
