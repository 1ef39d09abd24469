//! Relays one command's response from a backend connection to the client,
//! packet by packet as it arrives. Rows are never decoded: the relay only
//! tracks packet boundaries, OK/EOF/ERR and status flags, renumbers sequence
//! ids, and translates what differs between the client's capabilities and
//! the pooled connection's (DEPRECATE_EOF, SESSION_TRACK, LOCAL_FILES).
//!
//! [`Relay`] is generic over both byte streams (plain TCP in production,
//! in-memory duplex streams in the fixture tests, TLS later): each pair of
//! stream types gets its own monomorphized copy, so the per-packet path
//! costs the same as with concrete types.

use crate::errors;
use bytes::Bytes;
use sluice_pool::{BackendConn, BackendStatement, ColumnDefs, SessionState};
use sluice_protocol::consts::{CapabilityFlags as Caps, status};
use sluice_protocol::packets::{self, ERR_HEADER, LOCAL_INFILE_HEADER, OK_HEADER};
use sluice_protocol::result_set::{Metadata, plan_columns};
use sluice_protocol::{Packet, PacketStream};
use std::io;
use tokio::io::{AsyncRead, AsyncWrite};

/// The shape of the response a command gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseKind {
    /// OK, ERR, LOCAL INFILE request or result sets (COM_QUERY, execute).
    Results,
    /// COM_STMT_PREPARE.
    Prepare,
    /// COM_FIELD_LIST.
    FieldList,
    /// COM_STMT_FETCH: rows then EOF.
    Fetch,
    /// One OK or ERR.
    Simple,
    /// One opaque packet (COM_STATISTICS).
    Single,
    /// No response at all (COM_STMT_SEND_LONG_DATA, COM_STMT_CLOSE).
    None,
}

/// What the response told Sluice.
#[derive(Debug, Default, Clone)]
pub struct Outcome {
    /// Server status flags of the final OK/EOF; None after an ERR.
    pub status: Option<u16>,
    pub warnings: u16,
    /// Some result of the response raised warnings (an earlier statement
    /// of a multi-statement, whose warnings the last may not clear).
    pub saw_warnings: bool,
    pub affected_rows: u64,
    pub last_insert_id: u64,
    /// The server reported session state Sluice cannot replay.
    pub untracked_change: bool,
    /// COM_STMT_EXECUTE opened a cursor.
    pub cursor_opened: bool,
    pub ended_with_error: bool,
    /// Some OK/EOF of this response said a transaction is open (an ERR
    /// later in a multi-statement does not close it).
    pub saw_in_transaction: bool,
    /// COM_STMT_PREPARE succeeded: the backend's statement (boxed: rare,
    /// and it would make every statement's outcome larger to move).
    pub prepared: Option<Box<BackendStatement>>,
    /// The GTID of the transaction this command committed (MariaDB's
    /// tracked `last_gtid`), for read-your-writes.
    pub last_gtid: Option<String>,
    /// The connection charset or collation changed and the other must be
    /// read back.
    pub connection_charset_unsure: bool,
    /// The last result was a result set (not an OK), and its row count.
    pub result_set: bool,
    pub rows: u64,
    /// With [`Relay::capturing_columns`]: the column count packet (without
    /// a metadata cache byte) and the column definitions of a response that
    /// was one complete result set.
    pub columns: Option<Vec<bytes::Bytes>>,
    /// An execute sent the client column definitions: what a client that
    /// caches metadata now holds for the statement (its last result set's;
    /// the inner None: not known to Sluice). None: unchanged.
    pub client_defs: Option<Option<ColumnDefs>>,
}

#[derive(Debug)]
pub enum RelayError {
    /// The backend failed or broke the protocol. `client_saw_any` says
    /// whether part of the response already reached the client.
    Backend { error: io::Error, client_saw_any: bool },
    /// The server skipped column definitions that Sluice's record of the
    /// statement on this connection cannot stand in for (none kept, or a
    /// different number). The backend is not at fault: the connection is
    /// closed, but the server is not marked down.
    Metadata { error: io::Error, client_saw_any: bool },
    /// The client went away or could not be written to.
    Client(io::Error),
}

/// The cache's two sides for one response; `skipped`: what definitions
/// the backend does not resend stand for.
fn metadata<'d>(
    backend_flag: bool,
    client_flag: bool,
    client_holds: Option<&ColumnDefs>,
    skipped: Option<&'d ColumnDefs>,
) -> Metadata<'d> {
    Metadata {
        backend_flag,
        client_flag,
        skipped: skipped.map(|defs| (&defs[..], holds(client_holds, defs))),
    }
}

/// Whether the client holds exactly these definitions.
fn holds(client_holds: Option<&ColumnDefs>, defs: &ColumnDefs) -> bool {
    client_holds.is_some_and(|h| std::sync::Arc::ptr_eq(h, defs) || h[..] == defs[..])
}

/// `C` is the client's byte stream, `B` the backend connection's.
pub struct Relay<'a, C, B> {
    pub client: &'a mut PacketStream<C>,
    pub backend: &'a mut BackendConn<B>,
    pub client_caps: Caps,
    pub desired: &'a mut SessionState,
    /// Next sequence id towards the client.
    pub seq: u8,
    /// Set once any byte of the response was queued for the client; outlives
    /// the relay so a caller that abandons it still knows.
    sent_any: &'a std::sync::atomic::AtomicBool,
    outcome: Outcome,
    /// For COM_STMT_PREPARE: the id the client sees instead of the backend's.
    client_statement_id: Option<u32>,
    /// Keep the result set's column definitions (the guard answers later
    /// lookups of the same shape with them).
    capture_columns: bool,
    seen_result_set: bool,
    /// The client negotiated MariaDB's metadata cache.
    client_caches_metadata: bool,
    /// For an execute: its statement's text (the backend connection's
    /// record of its definitions is found by it).
    execute: Option<&'a str>,
    /// The execute is of a CALL: the server sends its procedure's result
    /// sets whole every time and keeps no record of them (only of its OUT
    /// parameters).
    procedure: bool,
    /// For an execute: the definitions the client holds for the statement,
    /// as each result set sent it more (None: unknown).
    client_holds: Option<ColumnDefs>,
    client_changed: bool,
}

impl<'a, C, B> Relay<'a, C, B>
where
    C: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    pub fn new(
        client: &'a mut PacketStream<C>,
        backend: &'a mut BackendConn<B>,
        client_caps: Caps,
        desired: &'a mut SessionState,
        seq: u8,
        sent_any: &'a std::sync::atomic::AtomicBool,
    ) -> Self {
        Relay {
            client,
            backend,
            client_caps,
            desired,
            seq,
            sent_any,
            outcome: Outcome::default(),
            client_statement_id: None,
            capture_columns: false,
            seen_result_set: false,
            client_caches_metadata: false,
            execute: None,
            procedure: false,
            client_holds: None,
            client_changed: false,
        }
    }

    /// The client negotiated MariaDB's metadata cache.
    pub fn client_caches_metadata(mut self, caches: bool) -> Self {
        self.client_caches_metadata = caches;
        self
    }

    /// Relaying an execute of `sql`, whose column definitions the client
    /// holds as `client_defs`.
    /// `procedure`: the statement is a CALL.
    pub fn for_execute(mut self, sql: &'a str, client_defs: Option<&ColumnDefs>, procedure: bool) -> Self {
        self.execute = Some(sql);
        self.procedure = procedure;
        self.client_holds = client_defs.cloned();
        self
    }

    /// An execute's result set sent the client definitions (`defs`; None
    /// when Sluice has no copy): a caching client keeps them now.
    fn client_now_holds(&mut self, defs: Option<ColumnDefs>) {
        if self.execute.is_some() {
            self.client_holds = defs;
            self.client_changed = true;
        }
    }

    /// Records definitions the server sent for the executing statement:
    /// what it means when it next skips them on this connection.
    fn record_backend_defs(&mut self, defs: ColumnDefs) {
        let Some(sql) = self.execute else {
            return;
        };
        if let Some(stmt) = self.backend.statements.peek_mut(sql) {
            stmt.column_defs = Some(defs.clone());
            stmt.defs_vars = Some(self.backend.state.vars.clone());
        }
        self.backend.executing_defs = Some(defs);
    }

    /// The backend's definitions an execute's skip stands for (only an
    /// execute can skip them).
    fn skipped_defs(&self) -> Option<ColumnDefs> {
        self.execute?;
        self.backend.executing_defs.clone()
    }

    /// The cache's two sides for this response, with `skipped` standing in
    /// for definitions the backend does not resend.
    fn metadata<'d>(&self, skipped: Option<&'d ColumnDefs>) -> Metadata<'d> {
        metadata(
            self.backend.caches_metadata(),
            self.client_caches_metadata,
            self.client_holds.as_ref(),
            skipped,
        )
    }

    /// Keeps the column definitions of a one-result-set response in
    /// `Outcome::columns`.
    pub fn capturing_columns(mut self, capture: bool) -> Self {
        self.capture_columns = capture;
        self
    }

    /// Shows the client `id` in a COM_STMT_PREPARE response.
    pub fn with_statement_id(mut self, id: u32) -> Self {
        self.client_statement_id = Some(id);
        self
    }

    /// Relays the whole response and flushes it to the client.
    pub async fn run(mut self, kind: ResponseKind) -> Result<Outcome, RelayError> {
        match kind {
            ResponseKind::Results => self.results().await?,
            ResponseKind::Prepare => self.prepare().await?,
            ResponseKind::FieldList => self.field_list().await?,
            ResponseKind::Fetch => self.rows().await?,
            ResponseKind::Simple => self.simple().await?,
            ResponseKind::Single => {
                let p = self.read().await?;
                self.send(&p.payload).await?;
            }
            ResponseKind::None => {}
        }
        self.client.flush().await.map_err(RelayError::Client)?;
        if self.client_changed {
            self.outcome.client_defs = Some(self.client_holds.take());
        }
        Ok(self.outcome)
    }

    fn deprecate_eof(&self) -> bool {
        self.client_caps.contains(Caps::CLIENT_DEPRECATE_EOF)
    }

    async fn read(&mut self) -> Result<Packet, RelayError> {
        self.flush_before_waiting().await?;
        let lost = self.backend_error();
        self.backend.stream.read_packet().await.map_err(lost)
    }

    /// About to wait on the backend: let the client have what we have.
    async fn flush_before_waiting(&mut self) -> Result<(), RelayError> {
        if !self.backend.stream.has_buffered_packet() {
            self.client.flush().await.map_err(RelayError::Client)?;
        }
        Ok(())
    }

    /// A backend failure, with whether the client has seen part of the
    /// answer yet (then the statement cannot be retried).
    fn backend_error(&self) -> impl FnOnce(io::Error) -> RelayError + use<C, B> {
        let client_saw_any = self.sent_any.load(std::sync::atomic::Ordering::Relaxed);
        move |error| RelayError::Backend {
            error,
            client_saw_any,
        }
    }

    async fn send(&mut self, payload: &[u8]) -> Result<(), RelayError> {
        self.sent_any.store(true, std::sync::atomic::Ordering::Relaxed);
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        self.client
            .write_packet(seq, payload)
            .await
            .map_err(RelayError::Client)
    }

    /// Sends a packet and, when it is the start of a logical packet larger
    /// than one physical packet, its continuations.
    async fn forward(&mut self, first: &Packet) -> Result<(), RelayError> {
        self.send(&first.payload).await?;
        let mut continued = first.is_continued();
        while continued {
            let next = self.read().await?;
            self.send(&next.payload).await?;
            continued = next.is_continued();
        }
        Ok(())
    }

    fn metadata_error(&self, what: String) -> RelayError {
        RelayError::Metadata {
            error: io::Error::new(io::ErrorKind::InvalidData, what),
            client_saw_any: self.sent_any.load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    fn protocol_error(&self, what: &str) -> RelayError {
        self.backend_error()(io::Error::new(io::ErrorKind::InvalidData, what.to_string()))
    }

    async fn results(&mut self) -> Result<(), RelayError> {
        if self.whole_result_set().await? {
            return Ok(());
        }
        loop {
            let p = self.read().await?;
            match p.first_byte() {
                Some(ERR_HEADER) => return self.error(&p).await,
                Some(OK_HEADER) => {
                    if !self.ok(&p).await? {
                        return Ok(());
                    }
                }
                Some(LOCAL_INFILE_HEADER) => {
                    if !self.local_infile(&p).await? {
                        return Ok(());
                    }
                }
                Some(_) => {
                    // Boxed: the packet-by-packet result set is the rare
                    // path (the one-pass copy takes the common answers),
                    // and its state would otherwise enlarge every command's
                    // future.
                    if !Box::pin(self.result_set(&p)).await? {
                        return Ok(());
                    }
                }
                None => return Err(self.protocol_error("empty packet where a result was expected")),
            }
        }
    }

    /// The common answer in one pass: once the first bytes are here, a
    /// single result set that arrived whole is copied as it is (renumbered,
    /// EOFs translated). Returns false, having consumed nothing, for
    /// anything else, which the packet-by-packet relay then takes.
    async fn whole_result_set(&mut self) -> Result<bool, RelayError> {
        if self.capture_columns || self.seen_result_set {
            return Ok(false);
        }
        // Waits only when nothing of the answer is here yet.
        self.flush_before_waiting().await?;
        let lost = self.backend_error();
        self.backend.stream.readable().await.map_err(lost)?;
        Ok(self.move_whole_result_set())
    }

    /// The synchronous part of [`Relay::whole_result_set`], kept out of
    /// the async state machine so the relay's future stays small enough
    /// to be inlined into its caller.
    #[inline(never)]
    fn move_whole_result_set(&mut self) -> bool {
        let deprecate_eof = self.deprecate_eof();
        let execute = self.execute.is_some();
        // Borrowed, not cloned: the backend's definitions are needed by
        // value only when they are sent.
        let backend = &mut *self.backend;
        let skipped = backend.executing_defs.as_ref().filter(|_| execute);
        let meta = metadata(
            backend.caches_metadata(),
            self.client_caches_metadata,
            self.client_holds.as_ref(),
            skipped,
        );
        let Some((moved, inserted)) =
            backend
                .stream
                .move_result_set_to(self.client, &mut self.seq, deprecate_eof, &meta, execute)
        else {
            return false;
        };
        let sent = inserted.then(|| skipped.cloned()).flatten();
        if inserted {
            self.client_now_holds(sent);
        } else if moved.follows {
            // Definitions from a backend without the cache: the client
            // has them now, and Sluice kept no copy.
            self.client_now_holds(None);
        }
        self.sent_any.store(true, std::sync::atomic::Ordering::Relaxed);
        self.seen_result_set = true;
        self.outcome.result_set = true;
        self.outcome.rows = moved.rows;
        self.outcome.status = Some(moved.status);
        self.outcome.warnings = moved.warnings;
        self.outcome.saw_warnings |= moved.warnings > 0;
        true
    }

    async fn error(&mut self, p: &Packet) -> Result<(), RelayError> {
        self.outcome.ended_with_error = true;
        self.outcome.status = None;
        self.send(&p.payload).await
    }

    /// Relays an OK packet; returns whether more results follow.
    async fn ok(&mut self, p: &Packet) -> Result<bool, RelayError> {
        let Some(ok) = packets::parse_ok(&p.payload) else {
            return Err(self.protocol_error("malformed OK packet"));
        };
        let absorbed = self.backend.state.absorb(ok.session_state);
        self.desired.absorb(ok.session_state);
        if let Some(gtid) = packets::tracked_variable(ok.session_state, b"last_gtid") {
            self.outcome.last_gtid = Some(String::from_utf8_lossy(gtid).into_owned());
        }
        self.outcome.untracked_change |= absorbed.untracked_change;
        self.outcome.connection_charset_unsure |= absorbed.connection_charset_unsure;
        self.outcome.result_set = false;
        self.outcome.status = Some(ok.status);
        self.outcome.saw_in_transaction |= ok.status & status::IN_TRANS != 0;
        self.outcome.warnings = ok.warnings;
        self.outcome.saw_warnings |= ok.warnings > 0;
        self.outcome.affected_rows = ok.affected_rows;
        if ok.last_insert_id != 0 {
            self.outcome.last_insert_id = ok.last_insert_id;
            self.backend.state.last_insert_id = ok.last_insert_id;
            self.desired.last_insert_id = ok.last_insert_id;
        }
        if self.client_caps.contains(Caps::CLIENT_SESSION_TRACK) {
            match packets::ok_keeping_session_state(&ok, p.payload[0], client_tracks) {
                None => self.send(&p.payload).await?,
                Some(fewer) => self.send(&fewer).await?,
            }
        } else {
            let header = p.payload[0];
            self.send(&packets::ok_for_client_without_session_track(&ok, header))
                .await?;
        }
        Ok(ok.status & status::MORE_RESULTS_EXISTS != 0)
    }

    /// One result set: column count, definitions, rows, terminator. Returns
    /// whether more results follow.
    async fn result_set(&mut self, count: &Packet) -> Result<bool, RelayError> {
        let backend_flag = self.backend.caches_metadata();
        let Some((columns, follows, lenenc)) =
            sluice_protocol::result_set::parse_count(&count.payload, backend_flag)
        else {
            return Err(self.protocol_error("bad column count"));
        };
        let skipped = if follows { None } else { self.skipped_defs() };
        let meta = self.metadata(skipped.as_ref());
        let Some(plan) = plan_columns(&count.payload, &meta) else {
            let known = skipped
                .as_ref()
                .map_or("none".to_string(), |d| d.len().to_string());
            return Err(self.metadata_error(format!(
                "metadata cache: the server skipped the definitions of {columns} columns, \
                 and Sluice's record of the statement on this connection has {known}"
            )));
        };
        self.outcome.result_set = true;
        self.outcome.rows = 0;
        // Only a first result set can be a whole response's.
        let first = !std::mem::replace(&mut self.seen_result_set, true);
        let mut captured = (self.capture_columns && first).then(|| {
            let mut defs = Vec::with_capacity(columns.min(64) as usize + 1);
            defs.push(Bytes::copy_from_slice(&count.payload[..lenenc]));
            defs
        });
        let mut pending_record = None;
        if let (true, true, Some(_)) = (follows, backend_flag, self.execute) {
            // New definitions of an execute, read whole first: they are
            // what the server means when it next skips them on this
            // connection. A caching client that holds the same ones is told
            // to keep them, as the server tells a client of its own.
            let mut defs = Vec::with_capacity(columns.min(64) as usize);
            for _ in 0..columns {
                let def = self.read().await?;
                if def.is_continued() {
                    return Err(self.protocol_error("a column definition larger than a packet"));
                }
                defs.push(Bytes::copy_from_slice(&def.payload));
            }
            let defs: ColumnDefs = std::sync::Arc::new(defs);
            pending_record = Some(defs.clone());
            let holds_them = holds(self.client_holds.as_ref(), &defs);
            // Never within a CALL: the server sends a procedure's result
            // sets whole every time.
            if self.client_caches_metadata && holds_them && !self.procedure {
                let skip = sluice_protocol::result_set::CountPacket::new(&count.payload[..lenenc], Some(0));
                self.send(skip.as_slice()).await?;
            } else {
                match plan.count {
                    Some(count) => self.send(count.as_slice()).await?,
                    None => self.send(&count.payload).await?,
                }
                for def in defs.iter() {
                    self.send(def).await?;
                }
                self.client_now_holds(Some(defs.clone()));
            }
            if let Some(captured) = captured.as_mut() {
                captured.extend(defs.iter().cloned());
            }
        } else {
            match plan.count {
                Some(count) => self.send(count.as_slice()).await?,
                None => self.send(&count.payload).await?,
            }
            if let Some(insert) = plan.insert {
                for def in insert {
                    self.send(def).await?;
                }
                self.client_now_holds(skipped.clone());
            } else if follows {
                // Forwarded from the stream below, with no copy kept.
                self.client_now_holds(None);
            }
            if let (Some(defs), Some(skipped)) = (captured.as_mut(), &skipped) {
                defs.extend(skipped.iter().cloned());
            }
            let in_stream = if follows { columns } else { 0 };
            for _ in 0..in_stream {
                let def = self.read().await?;
                if def.is_continued() {
                    captured = None;
                }
                if let Some(defs) = captured.as_mut() {
                    // A copy: a slice would keep the whole read buffer
                    // (and the rows read with it) alive in the cache.
                    defs.push(Bytes::copy_from_slice(&def.payload));
                }
                self.forward(&def).await?;
            }
        }
        let eof = self.read().await?;
        if !packets::is_eof(&eof.payload) {
            return Err(self.protocol_error("missing EOF after column definitions"));
        }
        let (warnings, st) = packets::parse_eof(&eof.payload);
        // The server keeps a record of what it sent for a statement's own
        // result set, not for a procedure's (only for its OUT parameters).
        let out_params = st & status::PS_OUT_PARAMS != 0;
        if let Some(defs) = pending_record.take().filter(|_| !self.procedure || out_params) {
            self.record_backend_defs(defs);
        }
        if st & status::CURSOR_EXISTS != 0 {
            // A cursor was opened: rows come later through COM_STMT_FETCH.
            // The packet saying so stays even for DEPRECATE_EOF clients,
            // which MariaDB sends it as an OK with the EOF header.
            self.outcome.cursor_opened = true;
            self.outcome.status = Some(st);
            if self.deprecate_eof() {
                self.send(&packets::ok_as_eof(warnings, st)).await?;
            } else {
                self.send(&eof.payload).await?;
            }
            return Ok(false);
        }
        if !self.deprecate_eof() {
            self.send(&eof.payload).await?;
        }
        self.rows().await?;
        let more = self
            .outcome
            .status
            .is_some_and(|s| s & status::MORE_RESULTS_EXISTS != 0);
        if !more && !self.outcome.ended_with_error {
            self.outcome.columns = captured;
        }
        Ok(more)
    }

    /// Rows until the terminating EOF (translated for DEPRECATE_EOF
    /// clients) or an ERR.
    async fn rows(&mut self) -> Result<(), RelayError> {
        loop {
            // Fast path: copy every complete row already buffered.
            let moved = self.backend.stream.move_rows_to(self.client, &mut self.seq);
            if moved > 0 {
                self.outcome.rows += moved as u64;
                self.sent_any.store(true, std::sync::atomic::Ordering::Relaxed);
                if self.client.pending_write() >= 64 * 1024 {
                    self.client.flush().await.map_err(RelayError::Client)?;
                }
            }
            let row = self.read().await?;
            if packets::is_eof(&row.payload) {
                let (warnings, st) = packets::parse_eof(&row.payload);
                self.outcome.status = Some(st);
                self.outcome.warnings = warnings;
                self.outcome.saw_warnings |= warnings > 0;
                if self.deprecate_eof() {
                    self.send(&packets::ok_as_eof(warnings, st)).await?;
                } else {
                    self.send(&row.payload).await?;
                }
                return Ok(());
            }
            if row.first_byte() == Some(ERR_HEADER) {
                return self.error(&row).await;
            }
            self.outcome.rows += 1;
            self.forward(&row).await?;
        }
    }

    async fn prepare(&mut self) -> Result<(), RelayError> {
        let p = self.read().await?;
        if p.first_byte() == Some(ERR_HEADER) {
            return self.error(&p).await;
        }
        if p.first_byte() != Some(OK_HEADER) || p.payload.len() < 12 {
            return Err(self.protocol_error("bad COM_STMT_PREPARE response"));
        }
        let columns = packets::le16(&p.payload, 5);
        let params = packets::le16(&p.payload, 7);
        let backend_id = u32::from_le_bytes([p.payload[1], p.payload[2], p.payload[3], p.payload[4]]);
        match self.client_statement_id {
            Some(id) => {
                let mut ok = p.payload.to_vec();
                ok[1..5].copy_from_slice(&id.to_le_bytes());
                self.send(&ok).await?;
            }
            None => self.send(&p.payload).await?,
        }
        let mut column_defs = Vec::new();
        for (count, keep) in [(params, false), (columns, true)] {
            if count == 0 {
                continue;
            }
            for _ in 0..count {
                let def = self.read().await?;
                if keep {
                    column_defs.push(Bytes::copy_from_slice(&def.payload));
                }
                self.forward(&def).await?;
            }
            let eof = self.read().await?;
            if !packets::is_eof(&eof.payload) {
                return Err(self.protocol_error("missing EOF after prepared statement definitions"));
            }
            if !self.deprecate_eof() {
                self.send(&eof.payload).await?;
            }
        }
        self.outcome.prepared = Some(Box::new(BackendStatement {
            id: backend_id,
            params,
            columns,
            types: None,
            defs_vars: (!column_defs.is_empty()).then(|| self.backend.state.vars.clone()),
            column_defs: (!column_defs.is_empty()).then(|| std::sync::Arc::new(column_defs)),
            schema: self.backend.state.schema.clone(),
        }));
        Ok(())
    }

    async fn field_list(&mut self) -> Result<(), RelayError> {
        loop {
            let p = self.read().await?;
            if p.first_byte() == Some(ERR_HEADER) {
                return self.error(&p).await;
            }
            if packets::is_eof(&p.payload) {
                let (warnings, st) = packets::parse_eof(&p.payload);
                self.outcome.status = Some(st);
                if self.deprecate_eof() {
                    return self.send(&packets::ok_as_eof(warnings, st)).await;
                }
                return self.send(&p.payload).await;
            }
            self.forward(&p).await?;
        }
    }

    async fn simple(&mut self) -> Result<(), RelayError> {
        let p = self.read().await?;
        match p.first_byte() {
            Some(OK_HEADER) => self.ok(&p).await.map(|_| ()),
            Some(ERR_HEADER) => self.error(&p).await,
            _ if packets::is_eof(&p.payload) => self.send(&p.payload).await,
            _ => Err(self.protocol_error("unexpected reply")),
        }
    }

    /// LOAD DATA LOCAL INFILE: the server asks for a file. Relay the request
    /// to the client and the file back, or refuse for clients that did not
    /// enable LOCAL INFILE. Returns whether to keep reading results.
    async fn local_infile(&mut self, request: &Packet) -> Result<bool, RelayError> {
        let mut backend_seq = request.seq.wrapping_add(1);
        let backend_err = |error: io::Error| RelayError::Backend {
            error,
            client_saw_any: true,
        };
        if !self.client_caps.contains(Caps::CLIENT_LOCAL_FILES) {
            // Give the server an empty file, swallow its answer, tell the client.
            self.backend
                .stream
                .send(backend_seq, &[])
                .await
                .map_err(backend_err)?;
            let answer = self.read().await?;
            if packets::parse_ok(&answer.payload)
                .is_some_and(|ok| ok.status & status::MORE_RESULTS_EXISTS != 0)
            {
                return Err(self.protocol_error("LOCAL INFILE refusal inside a multi-statement"));
            }
            self.outcome.ended_with_error = true;
            let mariadb = self.backend.info.version.contains("MariaDB");
            self.send(&errors::local_infile_disabled(mariadb)).await?;
            return Ok(false);
        }
        self.send(&request.payload).await?;
        self.client.flush().await.map_err(RelayError::Client)?;
        loop {
            let chunk = self.client.read_packet().await.map_err(RelayError::Client)?;
            self.backend
                .stream
                .write_packet(backend_seq, &chunk.payload)
                .await
                .map_err(backend_err)?;
            backend_seq = backend_seq.wrapping_add(1);
            self.seq = chunk.seq.wrapping_add(1);
            if chunk.payload.is_empty() {
                break;
            }
        }
        self.backend.stream.flush().await.map_err(backend_err)?;
        Ok(true)
    }
}

/// What a client's own session tracking reports, with the server's
/// defaults (`session_track_schema=ON`, `session_track_state_change=OFF`,
/// `session_track_system_variables` the list below): Sluice's backend
/// connections track every variable and every state change, and a driver
/// that reads the block (Node's `mariadb`) must get only what the server
/// would have sent it. A client that changes its own `session_track_*`
/// settings still gets these.
pub fn client_tracks(change: &packets::StateChange<'_>) -> bool {
    const DEFAULT_TRACKED: [&[u8]; 5] = [
        b"autocommit",
        b"character_set_client",
        b"character_set_connection",
        b"character_set_results",
        b"time_zone",
    ];
    match change {
        packets::StateChange::Schema(_) => true,
        packets::StateChange::SystemVariable { name, .. } => {
            DEFAULT_TRACKED.iter().any(|t| t.eq_ignore_ascii_case(name))
        }
        _ => false,
    }
}
