//! Frontend fuzz (issue 11, item 7), ported from
//! `shared/tools/frontend_fuzz.py` and extended: thousands of short raw
//! sessions against one Sluice, each either a mutated handshake response or
//! a real login (app/app, schema sluice_test) followed by a few mutated,
//! verbatim or random command packets (wrong sequence ids, lying lengths,
//! truncated bodies, split writes, abandoned commands), while a bystander
//! client (mysql_async) keeps a session, a user variable, a prepared
//! statement and, every other batch, an open transaction, and is checked
//! between batches.
//!
//! Per session it fails on a hang: no greeting, no answer to a complete
//! handshake response or to a complete command that has one, a refused
//! clean login, a connection left open after a refusal or COM_QUIT. At the
//! end: the process is alive, its log has no panic, the bystander works,
//! no client or backend connection is left over (`/status`, `/metrics` and
//! the servers' process lists) and no departed client's transaction or user
//! lock lives on in a pooled connection, each waited on with a deadline.
//!
//! Reproducible: every session draws from its own seed, derived from the
//! run's base seed and its index, and a failure prints that seed and the
//! bytes exchanged. `SLUICE_FUZZ_SEED` (base seed) and
//! `SLUICE_FUZZ_SESSIONS` change the run; `SLUICE_FUZZ_SESSION_SEED=0x...`
//! replays one session alone and prints what it sent and received (the
//! server's nonce and its answers still vary between runs; the client's
//! choices do not). `SLUICE_FUZZ_ROUTING=primary_only` and
//! `SLUICE_FUZZ_POOL_MODE=session` fuzz the other configurations.

use futures_util::StreamExt;
use mysql_async::prelude::Queryable;
use mysql_common::constants::{CapabilityFlags as Caps, MariadbCapabilities};
use mysql_common::io::ParseBuf;
use mysql_common::packets::{AuthPlugin, HandshakePacket, HandshakeResponse};
use mysql_common::proto::{MyDeserialize, MySerialize};
use mysql_common::scramble::scramble_native;
use sluice_protocol::MAX_PAYLOAD;
use sluice_tests::{Sluice, SluiceOptions, Topology, direct_opts, metric_sum};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Base seed of the run (SLUICE_FUZZ_SEED overrides it).
const BASE_SEED: u64 = 1;
/// Sessions in a run (SLUICE_FUZZ_SESSIONS overrides it).
const SESSIONS: usize = 4000;
/// Sessions between two bystander checks.
const BATCH: usize = 250;
/// Sessions in flight at once: below the pool size, so that a clean login
/// (which checks its schema on a backend) never waits for a connection.
const CONCURRENCY: usize = 12;
const POOL_MAX: usize = 16;
/// No new batch starts after this; the run reports how far it got.
const TIME_LIMIT: Duration = Duration::from_secs(150);
/// How long an answer that must come may take (Sluice's own limits are
/// `acquire_timeout_ms` = 1 s and `query_timeout_ms` = 3 s).
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// A whole session (a few commands, each bounded by REPLY_TIMEOUT).
const SESSION_LIMIT: Duration = Duration::from_secs(60);
/// After an answer, further packets are read until none came for this long.
const DRAIN_IDLE: Duration = Duration::from_millis(20);
/// Deadline for the leak checks at the end.
const SETTLE: Duration = Duration::from_secs(30);

const SCHEMA: &str = "sluice_test";

// ---------------------------------------------------------------------------
// Seeded randomness: SplitMix64, so a seed means the same draws forever
// (rand's StdRng promises no such thing across versions).

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in 0..n (n > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Uniform in lo..=hi.
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    fn byte(&mut self) -> u8 {
        self.next() as u8
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.byte()).collect()
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

fn session_seed(base: u64, index: usize) -> u64 {
    Rng(base ^ (index as u64).wrapping_mul(0xd1b5_4a32_d192_ed03)).next()
}

/// The Python tool's mutation (one to six edits: a byte replaced, a range
/// replaced by up to 40 random bytes, up to 10 bytes deleted, a run of
/// special bytes appended), plus a truncation. The Python deletion
/// (`del b[i:][:k]`) deleted from a copy and did nothing; here it deletes.
fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut b = input.to_vec();
    for _ in 0..rng.range(1, 6) {
        let op = rng.unit();
        if op < 0.35 && !b.is_empty() {
            let i = rng.below(b.len());
            b[i] = rng.byte();
        } else if op < 0.55 {
            let i = rng.below(b.len() + 1);
            let j = rng.below(b.len() + 1).max(i);
            let n = rng.range(0, 40);
            let fill = rng.bytes(n);
            b.splice(i..j, fill);
        } else if op < 0.72 && !b.is_empty() {
            let i = rng.below(b.len());
            let end = (i + rng.range(1, 10)).min(b.len());
            b.drain(i..end);
        } else if op < 0.8 && !b.is_empty() {
            let at = rng.below(b.len() + 1);
            b.truncate(at);
        } else {
            let special = *rng.pick(&[0xfb, 0xfc, 0xfd, 0xfe, 0xff, 0x00]);
            let n = rng.range(1, 9);
            b.extend(std::iter::repeat_n(special, n));
        }
    }
    b
}

// ---------------------------------------------------------------------------
// A raw connection that keeps a transcript.

enum Got {
    Packet(u8, Vec<u8>),
    Closed,
    TimedOut,
}

struct Wire {
    tcp: TcpStream,
    rbuf: Vec<u8>,
    transcript: String,
}

fn hex(bytes: &[u8], max: usize) -> String {
    let mut s = String::new();
    for b in bytes.iter().take(max) {
        let _ = write!(s, "{b:02x}");
    }
    if bytes.len() > max {
        let _ = write!(s, "... ({} bytes)", bytes.len());
    }
    s
}

fn frame(seq: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_le_bytes()[..3].to_vec();
    out.push(seq);
    out.extend_from_slice(payload);
    out
}

impl Wire {
    fn note(&mut self, line: impl AsRef<str>) {
        self.transcript.push_str(line.as_ref());
        self.transcript.push('\n');
    }

    /// Writes `bytes` (header included), in `pieces` writes when > 1.
    /// Whatever the server sends meanwhile is read into the buffer: a
    /// server blocked writing a large answer to a client that writes
    /// without reading would otherwise deadlock with it. False when the
    /// connection is gone; an error when the server has read nothing for
    /// REPLY_TIMEOUT.
    async fn send(&mut self, bytes: &[u8], pieces: usize) -> Result<bool, String> {
        self.note(format!("C> {}", hex(bytes, 400)));
        let mut cuts: Vec<usize> = (1..pieces).map(|k| k * bytes.len() / pieces).collect();
        cuts.push(bytes.len());
        let outcome = {
            let (mut rd, mut wr) = self.tcp.split();
            let rbuf = &mut self.rbuf;
            let write = async {
                let mut at = 0;
                for cut in cuts {
                    wr.write_all(&bytes[at..cut]).await?;
                    at = cut;
                    if at < bytes.len() {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
                Ok::<(), std::io::Error>(())
            };
            let write = tokio::time::timeout(REPLY_TIMEOUT, write);
            tokio::pin!(write);
            let mut eof = false;
            loop {
                tokio::select! {
                    done = &mut write => break done,
                    n = rd.read_buf(rbuf), if !eof => {
                        if !matches!(n, Ok(k) if k > 0) {
                            eof = true;
                        }
                    }
                }
            }
        };
        match outcome {
            Ok(Ok(())) => Ok(true),
            Ok(Err(_)) => {
                self.note("   (write failed: closed)");
                Ok(false)
            }
            Err(_) => Err(format!(
                "the server read nothing for {REPLY_TIMEOUT:?} while the client wrote ({} bytes)",
                bytes.len()
            )),
        }
    }

    async fn read(&mut self, limit: Duration) -> Got {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if self.rbuf.len() >= 4 {
                let len = u32::from_le_bytes([self.rbuf[0], self.rbuf[1], self.rbuf[2], 0]) as usize;
                if self.rbuf.len() >= 4 + len {
                    let seq = self.rbuf[3];
                    let payload = self.rbuf[4..4 + len].to_vec();
                    self.rbuf.drain(..4 + len);
                    self.note(format!("S< seq={seq} {}", hex(&payload, 120)));
                    return Got::Packet(seq, payload);
                }
            }
            match tokio::time::timeout_at(deadline, self.tcp.read_buf(&mut self.rbuf)).await {
                Err(_) => return Got::TimedOut,
                Ok(Ok(0)) | Ok(Err(_)) => {
                    self.note("S< (closed)");
                    return Got::Closed;
                }
                Ok(Ok(_)) => {}
            }
        }
    }

    /// Reads until nothing arrives for DRAIN_IDLE; the packets, and whether
    /// the server closed the connection.
    async fn drain(&mut self) -> (Vec<Vec<u8>>, bool) {
        let mut packets = Vec::new();
        loop {
            match self.read(DRAIN_IDLE).await {
                Got::Packet(_, p) => packets.push(p),
                Got::Closed => return (packets, true),
                Got::TimedOut => return (packets, false),
            }
        }
    }
}

// ---------------------------------------------------------------------------
// One session.

#[derive(Default, Debug, Clone)]
struct Stats {
    sessions: usize,
    handshakes_clean: usize,
    handshakes_mutated: usize,
    handshakes_abandoned: usize,
    logins: usize,
    logins_after_mutation: usize,
    commands: usize,
    commands_mutated: usize,
    commands_random: usize,
    answered: usize,
    lying_lengths: usize,
    big_commands: usize,
    abandoned_commands: usize,
    local_infile_requests: usize,
    closed_by_server: usize,
    quits: usize,
}

impl Stats {
    fn add(&mut self, o: &Stats) {
        self.sessions += o.sessions;
        self.handshakes_clean += o.handshakes_clean;
        self.handshakes_mutated += o.handshakes_mutated;
        self.handshakes_abandoned += o.handshakes_abandoned;
        self.logins += o.logins;
        self.logins_after_mutation += o.logins_after_mutation;
        self.commands += o.commands;
        self.commands_mutated += o.commands_mutated;
        self.commands_random += o.commands_random;
        self.answered += o.answered;
        self.lying_lengths += o.lying_lengths;
        self.big_commands += o.big_commands;
        self.abandoned_commands += o.abandoned_commands;
        self.local_infile_requests += o.local_infile_requests;
        self.closed_by_server += o.closed_by_server;
        self.quits += o.quits;
    }
}

struct Failure {
    index: usize,
    seed: u64,
    what: String,
    transcript: String,
}

type Outcome = Result<Stats, Failure>;

/// The Python tool's handshake response: fixed capabilities, native auth.
fn python_style_response(nonce: &[u8], schema: &[u8]) -> Vec<u8> {
    let caps: u32 = 0x000F_A68D | 0x0008_0000 | 0x0000_8000 | 0x0001_0000;
    let mut body = caps.to_le_bytes().to_vec();
    body.extend_from_slice(&(16u32 << 20).to_le_bytes());
    body.push(45);
    body.extend_from_slice(&[0; 23]);
    body.extend_from_slice(b"app\0");
    let scramble = scramble_native(nonce, b"app").unwrap();
    body.push(scramble.len() as u8);
    body.extend_from_slice(&scramble);
    body.extend_from_slice(schema);
    body.push(0);
    body.extend_from_slice(b"mysql_native_password\0");
    body
}

/// A response as mysql_common writes it, with random optional
/// capabilities, plugin, attributes, collation and MariaDB extensions.
fn library_response(rng: &mut Rng, nonce: &[u8], schema: Option<&[u8]>) -> Vec<u8> {
    let optional = [
        Caps::CLIENT_LONG_PASSWORD,
        Caps::CLIENT_FOUND_ROWS,
        Caps::CLIENT_LONG_FLAG,
        Caps::CLIENT_LOCAL_FILES,
        Caps::CLIENT_IGNORE_SPACE,
        Caps::CLIENT_INTERACTIVE,
        Caps::CLIENT_TRANSACTIONS,
        Caps::CLIENT_MULTI_STATEMENTS,
        Caps::CLIENT_MULTI_RESULTS,
        Caps::CLIENT_PS_MULTI_RESULTS,
        Caps::CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA,
        Caps::CLIENT_SESSION_TRACK,
        Caps::CLIENT_DEPRECATE_EOF,
    ];
    let mut caps = Caps::CLIENT_PROTOCOL_41 | Caps::CLIENT_SECURE_CONNECTION;
    for flag in optional {
        if rng.chance(0.5) {
            caps |= flag;
        }
    }
    let (plugin, data) = match rng.below(5) {
        0 => (
            Some(AuthPlugin::CachingSha2Password),
            AuthPlugin::CachingSha2Password.gen_data(Some("app"), nonce),
        ),
        1 => (None, AuthPlugin::MysqlNativePassword.gen_data(Some("app"), nonce)),
        _ => (
            Some(AuthPlugin::MysqlNativePassword),
            AuthPlugin::MysqlNativePassword.gen_data(Some("app"), nonce),
        ),
    };
    let data_bytes = data.as_deref().map(<[u8]>::to_vec).unwrap_or_default();
    let attrs = rng.chance(0.6).then(|| {
        let mut a = HashMap::new();
        a.insert("_client_name".to_string(), "sluice-fuzz".to_string());
        a.insert("_pid".to_string(), rng.below(100_000).to_string());
        if rng.chance(0.5) {
            let program = *rng.pick(&["fuzz-a", "fuzz-b", "fuzz-c"]);
            a.insert("program_name".to_string(), program.to_string());
        }
        if rng.chance(0.2) {
            a.insert(format!("app_key_{}", rng.below(40)), "v".repeat(rng.below(300)));
        }
        a
    });
    let mut resp = HandshakeResponse::new(
        Some(data_bytes),
        (10, 11, 0),
        Some(&b"app"[..]),
        schema,
        plugin,
        caps,
        attrs,
        rng.range(1024, 1 << 30) as u32,
    );
    if rng.chance(0.3) {
        // MariaDB extended capabilities: announced by clearing CLIENT_MYSQL.
        let ext = MariadbCapabilities::MARIADB_CLIENT_STMT_BULK_OPERATIONS;
        let mut c = resp.capabilities();
        c.remove(Caps::CLIENT_LONG_PASSWORD);
        resp = HandshakeResponse::new(
            Some(resp.scramble_buf().to_vec()),
            (10, 11, 0),
            Some(&b"app"[..]),
            schema,
            resp.auth_plugin().cloned(),
            c,
            resp.connect_attributes(),
            16 << 20,
        )
        .with_mariadb_ext_capabilities(ext);
    }
    let mut buf = Vec::new();
    resp.serialize(&mut buf);
    buf[8] = match rng.below(8) {
        0 => 8,
        1 => 33,
        2 => 63,
        3 => 224,
        4 => 255,
        5 => rng.byte(),
        _ => 45,
    };
    buf
}

/// Command packets: the Python tool's list (schema `sluice_test`), and
/// commands that reach Sluice's own state: transactions, pins, prepared
/// statements with cursors and bulk execution, COM_CHANGE_USER with a valid
/// scramble and with a plugin switch, LOAD DATA LOCAL.
fn corpus(nonce: &[u8]) -> Vec<Vec<u8>> {
    let id = 1u32.to_le_bytes();
    let cat = |parts: &[&[u8]]| parts.concat();
    let scramble = scramble_native(nonce, b"app").unwrap();
    let mut v: Vec<Vec<u8>> = [
        &b"\x03SELECT 1"[..],
        b"\x16SELECT ?",
        b"\x0e",
        b"\x02sluice_test",
        b"\x02no_such_db",
        b"\x04fuzz_load\0",
        b"\x1b\x00\x00",
        b"\x1b\x01\x00",
        b"\x1f",
        b"\x09",
        b"\x03LOAD DATA LOCAL INFILE 'fuzz.txt' INTO TABLE fuzz_load",
        b"\x03BEGIN",
        b"\x03COMMIT",
        b"\x03ROLLBACK",
        b"\x03SET @fuzz = 1",
        b"\x03SET @fuzz := (SELECT 2)",
        b"\x03SET autocommit = 0",
        b"\x03SET NAMES latin1",
        b"\x03SET time_zone = '+02:00'",
        b"\x03SELECT GET_LOCK('fuzz', 0)",
        b"\x03SELECT RELEASE_LOCK('fuzz')",
        b"\x03CREATE TEMPORARY TABLE IF NOT EXISTS fuzz_tmp (a INT)",
        b"\x03SELECT 1; SELECT 2",
        b"\x03INSERT INTO fuzz_load VALUES ('fuzz')",
        b"\x03SELECT * FROM fuzz_load LIMIT 3",
        b"\x03SHOW WARNINGS",
        b"\x03SELECT FOUND_ROWS(), ROW_COUNT(), LAST_INSERT_ID(), CONNECTION_ID()",
        b"\x03SELECT /* sluice:primary */ @@server_id",
        b"\x03SELECT /* sluice:max_lag_ms=1 */ 1",
        b"\x03SELECT SLEEP(0.2)",
        b"\x16SELECT * FROM fuzz_load LIMIT 5",
        b"\x16INSERT INTO fuzz_load VALUES (?)",
    ]
    .iter()
    .map(|c| c.to_vec())
    .collect();
    v.extend([
        // The Python tool's COM_STMT_EXECUTE (no NULL bitmap: malformed).
        cat(&[
            b"\x17",
            &id,
            b"\x00",
            &1u32.to_le_bytes(),
            b"\x01",
            b"\x03\x00",
            &1u32.to_le_bytes(),
        ]),
        // A well-formed one: one INT parameter, types bound.
        cat(&[
            b"\x17",
            &id,
            b"\x00",
            &1u32.to_le_bytes(),
            b"\x00\x01\x03\x00",
            &7u32.to_le_bytes(),
        ]),
        // A read-only cursor without parameters, then a fetch.
        cat(&[b"\x17", &id, b"\x01", &1u32.to_le_bytes()]),
        cat(&[b"\x1c", &id, &10u32.to_le_bytes()]),
        cat(&[b"\x18", &id, b"\x00\x00", b"data"]),
        cat(&[b"\x19", &id]),
        cat(&[b"\x1a", &id]),
        // MariaDB bulk execute: types sent, one string row.
        cat(&[b"\xfa", &id, b"\x80\x00", b"\xfe\x00", b"\x00\x03abc"]),
        // COM_CHANGE_USER: a wrong scramble (the Python tool's), a right one,
        // and caching_sha2_password without data, which Sluice answers with a
        // switch to caching_sha2_password.
        cat(&[b"\x11app\0", &[20], &[b'x'; 20], b"sluice_test\0"]),
        cat(&[
            b"\x11app\0",
            &[scramble.len() as u8],
            &scramble,
            b"sluice_test\0\x2d\x00mysql_native_password\0",
        ]),
        cat(&[
            b"\x11app\0",
            b"\x00",
            b"sluice_test\0\x2d\x00caching_sha2_password\0",
        ]),
    ]);
    v
}

/// Commands after which the server sends nothing (when well-formed, with
/// sequence id 0).
fn silent(payload: &[u8]) -> bool {
    matches!(payload.first(), Some(0x18 | 0x19))
}

async fn session(port: u16, index: usize, seed: u64, verbose: bool) -> Outcome {
    let mut rng = Rng(seed);
    let mut st = Stats {
        sessions: 1,
        ..Stats::default()
    };
    let tcp = match tokio::time::timeout(REPLY_TIMEOUT, TcpStream::connect(("127.0.0.1", port))).await {
        Ok(Ok(t)) => t,
        other => {
            return Err(Failure {
                index,
                seed,
                what: format!("connect failed: {other:?}"),
                transcript: String::new(),
            });
        }
    };
    let _ = tcp.set_nodelay(true);
    let mut w = Wire {
        tcp,
        rbuf: Vec::new(),
        transcript: String::new(),
    };
    let result = match tokio::time::timeout(SESSION_LIMIT, run_session(&mut rng, &mut w, &mut st)).await {
        Ok(r) => r,
        Err(_) => Err(format!("session still running after {SESSION_LIMIT:?}")),
    };
    if verbose && result.is_ok() {
        println!("session {seed:#x}:\n{}", w.transcript);
    }
    result.map(|()| st).map_err(|what| Failure {
        index,
        seed,
        what,
        transcript: std::mem::take(&mut w.transcript),
    })
}

/// Reads an answer that must come: a packet, or the server closing.
async fn must_answer(w: &mut Wire, what: &str) -> Result<Option<(u8, Vec<u8>)>, String> {
    match w.read(REPLY_TIMEOUT).await {
        Got::Packet(seq, p) => Ok(Some((seq, p))),
        Got::Closed => Ok(None),
        Got::TimedOut => Err(format!("no answer within {REPLY_TIMEOUT:?} to {what}")),
    }
}

/// After an ERR that ends the session, the server must close.
async fn must_close(w: &mut Wire, what: &str) -> Result<(), String> {
    loop {
        match w.read(REPLY_TIMEOUT).await {
            Got::Closed => return Ok(()),
            Got::Packet(..) => {}
            Got::TimedOut => return Err(format!("connection still open {REPLY_TIMEOUT:?} after {what}")),
        }
    }
}

async fn run_session(rng: &mut Rng, w: &mut Wire, st: &mut Stats) -> Result<(), String> {
    let greeting = match w.read(REPLY_TIMEOUT).await {
        Got::Packet(_, p) => p,
        Got::Closed => return Err("closed before the greeting".into()),
        Got::TimedOut => return Err("no greeting".into()),
    };
    let hs = HandshakePacket::deserialize((), &mut ParseBuf(&greeting))
        .map_err(|e| format!("greeting does not parse: {e}"))?;
    let nonce = hs.nonce();

    // The handshake response.
    let schema: Option<&[u8]> = match rng.below(20) {
        0 => None,
        1 => Some(b"no_such_db"),
        _ => Some(SCHEMA.as_bytes()),
    };
    let response = if rng.chance(0.5) {
        python_style_response(&nonce, schema.unwrap_or(SCHEMA.as_bytes()))
    } else {
        library_response(rng, &nonce, schema)
    };
    let plan = rng.unit();
    if plan < 0.03 {
        // Gone right after the greeting.
        st.handshakes_abandoned += 1;
        return Ok(());
    }
    if plan < 0.06 {
        // A header promising more than is sent.
        st.handshakes_abandoned += 1;
        st.lying_lengths += 1;
        let mut bytes = frame(1, &response);
        let claimed = response.len() + rng.range(1, 1 << 20);
        bytes[..3].copy_from_slice(&(claimed as u32).to_le_bytes()[..3]);
        w.send(&bytes, 1).await?;
        return Ok(());
    }
    let mutated = plan < 0.36;
    let logged_in = if mutated {
        st.handshakes_mutated += 1;
        let body = mutate(rng, &response);
        let seq = if rng.chance(0.1) { rng.byte() } else { 1 };
        let pieces = if rng.chance(0.1) { rng.range(2, 4) } else { 1 };
        if !w.send(&frame(seq, &body), pieces).await? {
            return Ok(());
        }
        let reply = must_answer(w, "a complete (mutated) handshake response").await?;
        match past_fast_auth(w, reply).await? {
            None => false,
            Some((_, p)) if p.first() == Some(&0) => true,
            Some((seq, p)) if p.first() == Some(&0xfe) => {
                // Auth switch: answer right (as user app) or with junk.
                let data = switch_nonce(&p);
                let answer = if rng.chance(0.5) {
                    scramble_native(&data, b"app")
                        .map(|s| s.to_vec())
                        .unwrap_or_default()
                } else {
                    let n = rng.range(0, 30);
                    rng.bytes(n)
                };
                if !w.send(&frame(seq.wrapping_add(1), &answer), 1).await? {
                    return Ok(());
                }
                let reply = must_answer(w, "the auth switch answer").await?;
                match past_fast_auth(w, reply).await? {
                    Some((_, p)) if p.first() == Some(&0) => true,
                    Some(_) => {
                        must_close(w, "a refused auth switch answer").await?;
                        false
                    }
                    None => false,
                }
            }
            Some(_) => {
                must_close(w, "refusing a handshake response").await?;
                false
            }
        }
    } else {
        st.handshakes_clean += 1;
        if !w.send(&frame(1, &response), 1).await? {
            return Err("write of a clean handshake response failed".into());
        }
        let reply = must_answer(w, "a clean handshake response").await?;
        let mut reply = past_fast_auth(w, reply).await?;
        let switch = reply.as_ref().filter(|(_, p)| p.first() == Some(&0xfe)).cloned();
        if let Some((seq, p)) = switch {
            let data = switch_nonce(&p);
            let answer = scramble_native(&data, b"app")
                .map(|s| s.to_vec())
                .unwrap_or_default();
            w.send(&frame(seq.wrapping_add(1), &answer), 1).await?;
            reply = must_answer(w, "the auth switch answer of a clean login").await?;
        }
        match reply {
            Some((_, p)) if p.first() == Some(&0) && schema != Some(b"no_such_db") => true,
            Some((_, p)) if schema == Some(b"no_such_db") && err_code(&p) == Some(1049) => {
                must_close(w, "refusing an unknown schema").await?;
                false
            }
            // A collation whose character set cannot be a client's (ucs2,
            // utf16, utf32): refused as MariaDB refuses it.
            Some((_, p)) if err_code(&p) == Some(1231) => {
                must_close(w, "refusing the client's character set").await?;
                false
            }
            Some((_, p)) => return Err(format!("clean login answered {}", describe(&p))),
            None => return Err("clean login: connection closed".into()),
        }
    };
    if !logged_in {
        return Ok(());
    }
    st.logins += 1;
    if mutated {
        st.logins_after_mutation += 1;
    }

    // Commands.
    let corpus = corpus(&nonce);
    let mut desynced = false;
    for _ in 0..rng.range(1, 8) {
        st.commands += 1;
        if rng.chance(0.01) {
            // A command of 16 MiB or more (continuation packets).
            st.big_commands += 1;
            let (bytes, framing) = big_command(rng);
            if !w.send(&bytes, 1).await? {
                st.closed_by_server += 1;
                return Ok(());
            }
            match framing {
                Framing::Truncated => desynced = true,
                Framing::Whole | Framing::OutOfOrder if !desynced => {
                    if must_answer(w, "a command of 16 MiB or more").await?.is_none() {
                        st.closed_by_server += 1;
                        return Ok(());
                    }
                    st.answered += 1;
                }
                _ => {}
            }
            if w.drain().await.1 {
                st.closed_by_server += 1;
                return Ok(());
            }
            continue;
        }
        let kind = rng.unit();
        let payload = if kind < 0.25 {
            rng.pick(&corpus).clone()
        } else if kind < 0.8 {
            st.commands_mutated += 1;
            let base = rng.pick(&corpus).clone();
            mutate(rng, &base)
        } else {
            st.commands_random += 1;
            let n = rng.range(0, 64);
            rng.bytes(n)
        };
        let seq = if rng.chance(0.9) { 0 } else { rng.byte() };
        let lying = rng.chance(0.05);
        let mut bytes = frame(seq, &payload);
        if lying {
            st.lying_lengths += 1;
            let claimed = rng.below(1 << 24) as u32;
            bytes[..3].copy_from_slice(&claimed.to_le_bytes()[..3]);
            // Sluice now waits for the rest, or reads the surplus as more
            // packets: nothing after this has a predictable answer.
            desynced = true;
        }
        let pieces = if rng.chance(0.08) { rng.range(2, 4) } else { 1 };
        let abandon = rng.chance(0.05);
        if !w.send(&bytes, pieces).await? {
            st.closed_by_server += 1;
            return Ok(());
        }
        if abandon {
            // Gone while the command runs.
            st.abandoned_commands += 1;
            return Ok(());
        }
        let expects_answer = !desynced && (seq != 0 || payload.is_empty() || !silent(&payload));
        let mut packets = Vec::new();
        if expects_answer {
            match must_answer(w, &format!("command {}", hex(&payload, 40))).await? {
                Some((_, p)) => packets.push(p),
                None => {
                    st.closed_by_server += 1;
                    return Ok(());
                }
            }
            st.answered += 1;
        }
        let (more, closed) = w.drain().await;
        packets.extend(more);
        // A LOCAL INFILE request (or anything that may be one: a row
        // starting with NULL): our next packets are file contents now.
        if packets.iter().any(|p| p.first() == Some(&0xfb)) {
            st.local_infile_requests += 1;
            desynced = true;
        }
        if closed {
            st.closed_by_server += 1;
            return Ok(());
        }
    }

    if rng.chance(0.3) {
        st.quits += 1;
        if !w.send(&frame(0, &[0x01]), 1).await? {
            return Ok(());
        }
        if !desynced {
            must_close(w, "COM_QUIT").await?;
        }
    }
    Ok(())
}

enum Framing {
    Whole,
    /// A continuation packet with the wrong sequence id.
    OutOfOrder,
    /// The last bytes never sent.
    Truncated,
}

/// `SELECT 'xxx...'` of MAX_PAYLOAD bytes or a little more, split into
/// physical packets (an exact multiple ends with an empty packet), framed
/// right or not.
fn big_command(rng: &mut Rng) -> (Vec<u8>, Framing) {
    let len = MAX_PAYLOAD + rng.range(0, 3) * rng.range(0, 1000);
    let mut payload = b"\x03SELECT '".to_vec();
    payload.resize(len - 1, b'x');
    payload.push(b'\'');
    let mut bytes = Vec::with_capacity(len + 16);
    let mut seq = 0u8;
    let mut rest = &payload[..];
    loop {
        let n = rest.len().min(MAX_PAYLOAD);
        bytes.extend_from_slice(&frame(seq, &rest[..n]));
        seq = seq.wrapping_add(1);
        rest = &rest[n..];
        if n < MAX_PAYLOAD {
            break;
        }
    }
    let framing = match rng.below(3) {
        0 => {
            bytes[4 + MAX_PAYLOAD + 3] = rng.range(2, 255) as u8;
            Framing::OutOfOrder
        }
        1 => {
            let cut = rng.range(1, 5000);
            bytes.truncate(bytes.len() - cut);
            Framing::Truncated
        }
        _ => Framing::Whole,
    };
    (bytes, framing)
}

/// caching_sha2_password's fast authentication succeeded (AuthMoreData
/// 0x03): the OK (or an error about the schema) follows.
async fn past_fast_auth(w: &mut Wire, reply: Option<(u8, Vec<u8>)>) -> Result<Option<(u8, Vec<u8>)>, String> {
    match reply {
        Some((_, p)) if p == [0x01, 0x03] => must_answer(w, "the packet after fast authentication").await,
        other => Ok(other),
    }
}

/// The nonce of an AuthSwitchRequest: 0xfe, plugin name, NUL, data (NUL).
fn switch_nonce(p: &[u8]) -> Vec<u8> {
    let rest = &p[1.min(p.len())..];
    let after_name = rest.iter().position(|&b| b == 0).map_or(rest.len(), |i| i + 1);
    let mut data = rest[after_name..].to_vec();
    if data.last() == Some(&0) {
        data.pop();
    }
    data
}

fn err_code(p: &[u8]) -> Option<u16> {
    (p.first() == Some(&0xff) && p.len() >= 3).then(|| u16::from_le_bytes([p[1], p[2]]))
}

fn describe(p: &[u8]) -> String {
    match err_code(p) {
        Some(code) => format!(
            "ERR {code}: {}",
            String::from_utf8_lossy(p.get(9..).unwrap_or(&[]))
        ),
        None => hex(p, 60),
    }
}

// ---------------------------------------------------------------------------
// The bystander and the end-of-run checks.

struct Bystander {
    conn: mysql_async::Conn,
    id: u32,
    stmt: mysql_async::Statement,
    rows: i64,
}

impl Bystander {
    async fn start(s: &Sluice) -> Bystander {
        let mut conn = mysql_async::Conn::new(s.opts())
            .await
            .expect("bystander connects");
        conn.query_drop("SET @fuzz_bystander = 4242").await.unwrap();
        let stmt = conn.prep("SELECT ? + 1, @fuzz_bystander").await.unwrap();
        let id = conn.id();
        Bystander {
            conn,
            id,
            stmt,
            rows: 0,
        }
    }

    /// Before a batch: a row written; in odd batches inside a transaction
    /// that stays open while the batch runs.
    async fn before(&mut self, batch: usize) -> anyhow::Result<()> {
        if batch % 2 == 1 {
            self.conn.query_drop("BEGIN").await?;
        }
        self.conn
            .exec_drop("INSERT INTO fuzz_bystander (k) VALUES (?)", (batch,))
            .await?;
        self.rows += 1;
        if batch % 2 == 0 {
            // Read right after the write: the session reads its own write.
            let n: Option<i64> = self
                .conn
                .query_first("SELECT COUNT(*) FROM fuzz_bystander")
                .await?;
            anyhow::ensure!(
                n == Some(self.rows),
                "count after write: {n:?}, want {}",
                self.rows
            );
        }
        Ok(())
    }

    /// After a batch: the transaction sees its row and commits; the user
    /// variable, the connection id, the prepared statement and a read (to a
    /// replica) answer as before.
    async fn after(&mut self, batch: usize) -> anyhow::Result<()> {
        if batch % 2 == 1 {
            let n: Option<i64> = self
                .conn
                .query_first("SELECT COUNT(*) FROM fuzz_bystander")
                .await?;
            anyhow::ensure!(
                n == Some(self.rows),
                "count in the transaction: {n:?}, want {}",
                self.rows
            );
            self.conn.query_drop("COMMIT").await?;
        }
        let row: Option<(i64, u32)> = self
            .conn
            .query_first("SELECT @fuzz_bystander, CONNECTION_ID()")
            .await?;
        anyhow::ensure!(
            row == Some((4242, self.id)),
            "variable and id: {row:?}, want (4242, {})",
            self.id
        );
        let row: Option<(i64, i64)> = self.conn.exec_first(&self.stmt, (batch as i64,)).await?;
        anyhow::ensure!(row == Some((batch as i64 + 1, 4242)), "prepared: {row:?}");
        let two: Option<i64> = self.conn.query_first("SELECT 1 + 1").await?;
        anyhow::ensure!(two == Some(2), "read: {two:?}");
        Ok(())
    }
}

async fn bounded<T>(
    what: &str,
    f: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    tokio::time::timeout(Duration::from_secs(15), f)
        .await
        .map_err(|_| anyhow::anyhow!("{what}: no answer within 15 s"))?
}

fn status(s: &Sluice) -> serde_json::Value {
    let body = s.http_get("/status").expect("/status answers");
    serde_json::from_str(&body).expect("/status is JSON")
}

/// Connections of user app on a server, other than the asking one.
async fn app_connections(addr: &str) -> i64 {
    let mut c = mysql_async::Conn::new(direct_opts(addr))
        .await
        .expect("direct connection");
    let n: Option<i64> = c
        .query_first(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST \
             WHERE USER = 'app' AND ID <> CONNECTION_ID()",
        )
        .await
        .expect("process list");
    c.disconnect().await.ok();
    n.unwrap_or(0)
}

/// What a departed client may have left on a pooled connection of a
/// server: a transaction of user app, or the `fuzz` user lock.
async fn leftover_state(addr: &str) -> Result<(), String> {
    let mut c = mysql_async::Conn::new(direct_opts(addr))
        .await
        .map_err(|e| e.to_string())?;
    let row: Option<(i64, Option<i64>)> = c
        .query_first(
            "SELECT (SELECT COUNT(*) FROM information_schema.INNODB_TRX t \
                     JOIN information_schema.PROCESSLIST p ON p.ID = t.trx_mysql_thread_id \
                     WHERE p.USER = 'app' AND p.ID <> CONNECTION_ID()), \
                    IS_USED_LOCK('fuzz')",
        )
        .await
        .map_err(|e| e.to_string())?;
    c.disconnect().await.ok();
    match row {
        Some((0, None)) => Ok(()),
        other => Err(format!(
            "{addr}: (open transactions of app, holder of GET_LOCK('fuzz')) = {other:?}"
        )),
    }
}

/// Waits until `check` passes, polling; the last complaint if it never does.
async fn settle<F, Fut>(limit: Duration, mut check: F) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let deadline = Instant::now() + limit;
    loop {
        match check().await {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    match v.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => v.parse().ok(),
    }
}

fn report(failures: &[Failure], base: u64) -> String {
    let mut out = format!("{} fuzz session(s) failed (base seed {base}):\n", failures.len());
    for f in failures.iter().take(5) {
        let _ = writeln!(
            out,
            "--- session {} seed {:#018x}: {}\n    replay: SLUICE_FUZZ_SESSION_SEED={:#x} cargo test --release -p sluice-tests --test fuzz -- --nocapture\n{}",
            f.index, f.seed, f.what, f.seed, f.transcript
        );
    }
    for f in failures.iter().skip(5) {
        let _ = writeln!(out, "--- session {} seed {:#018x}: {}", f.index, f.seed, f.what);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frontend_fuzz_leaves_sluice_healthy() {
    sluice_tests::raise_fd_limit();
    let topo = Topology::from_env();
    let backends = [topo.primary.clone(), topo.replica1.clone(), topo.replica2.clone()];
    {
        let mut admin = mysql_async::Conn::new(direct_opts(&topo.primary)).await.unwrap();
        admin
            .query_drop(
                "CREATE TABLE IF NOT EXISTS fuzz_load (line TEXT); \
                 DROP TABLE IF EXISTS fuzz_bystander; \
                 CREATE TABLE fuzz_bystander (k INT PRIMARY KEY)",
            )
            .await
            .unwrap();
        admin.disconnect().await.ok();
    }
    let mut baseline = Vec::new();
    for addr in &backends {
        baseline.push(app_connections(addr).await);
    }

    // For hunting: SLUICE_FUZZ_ROUTING=primary_only, SLUICE_FUZZ_POOL_MODE=session.
    let primary_only = std::env::var("SLUICE_FUZZ_ROUTING").is_ok_and(|m| m == "primary_only");
    let session_mode = std::env::var("SLUICE_FUZZ_POOL_MODE").is_ok_and(|m| m == "session");
    let s = Sluice::start_with(SluiceOptions {
        max_connections_per_backend: POOL_MAX,
        acquire_timeout_ms: 1000,
        routing_mode: if primary_only { "primary_only" } else { "split" },
        routing_extra: "query_timeout_ms = 3000".into(),
        pool_extra: format!(
            "connect_timeout_ms = 2000\n{}",
            if session_mode { "mode = \"session\"" } else { "" }
        ),
        ..SluiceOptions::default()
    });
    let rss_start = rss_kib(s.pid());

    // One session replayed alone.
    if let Some(seed) = env_u64("SLUICE_FUZZ_SESSION_SEED") {
        let port = s.port;
        let outcome = session(port, 0, seed, true).await;
        match outcome {
            Ok(st) => println!("session {seed:#x} passed: {st:?}"),
            Err(f) => panic!("{}", report(&[f], 0)),
        }
        return;
    }

    let base = env_u64("SLUICE_FUZZ_SEED").unwrap_or(BASE_SEED);
    let total = env_u64("SLUICE_FUZZ_SESSIONS").map_or(SESSIONS, |n| n as usize);
    let mut by = Bystander::start(&s).await;
    let active_baseline = settle_active(&s).await;

    let started = Instant::now();
    let mut stats = Stats::default();
    let mut failures: Vec<Failure> = Vec::new();
    let mut ran = 0;
    for (batch, first) in (0..total).step_by(BATCH).enumerate() {
        if started.elapsed() > TIME_LIMIT {
            println!("time limit: stopping after {ran} of {total} sessions");
            break;
        }
        let last = (first + BATCH).min(total);
        if let Err(e) = bounded("bystander before the batch", by.before(batch)).await {
            panic!(
                "bystander failed before batch {batch} (sessions {first}..{last}, base seed {base}): {e:#}\n{}",
                report(&failures, base)
            );
        }
        let port = s.port;
        let outcomes: Vec<Outcome> = futures_util::stream::iter(first..last)
            .map(|i| session(port, i, session_seed(base, i), false))
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        ran = last;
        for o in outcomes {
            match o {
                Ok(st) => stats.add(&st),
                Err(f) => failures.push(f),
            }
        }
        if let Err(e) = bounded("bystander after the batch", by.after(batch)).await {
            panic!(
                "bystander failed after batch {batch} (sessions {first}..{last}, base seed {base}): {e:#}\n{}",
                report(&failures, base)
            );
        }
        assert!(
            s.http_get("/healthz").is_some(),
            "admin endpoint gone after batch {batch}\n{}",
            s.log().lines().rev().take(30).collect::<Vec<_>>().join("\n")
        );
        if !failures.is_empty() {
            break;
        }
    }
    let fuzz_time = started.elapsed();
    println!(
        "fuzz: {ran} sessions in {:.1} s (base seed {base}, {CONCURRENCY} at a time): {stats:?}",
        fuzz_time.as_secs_f64()
    );
    failures.sort_by_key(|f| f.index);
    assert!(failures.is_empty(), "{}", report(&failures, base));

    // The process, its log, the bystander.
    let mut s = s;
    assert!(
        s.wait_exit(Duration::from_millis(100)).is_none(),
        "sluice exited during the fuzz; log tail:\n{}",
        s.log().lines().rev().take(40).collect::<Vec<_>>().join("\n")
    );
    let log = s.log();
    if let Some(at) = log.find("panicked") {
        panic!(
            "sluice panicked:\n{}",
            &log[at.saturating_sub(2000)..(at + 3000).min(log.len())]
        );
    }
    by.after(1 << 40).await.expect("bystander works after the fuzz");

    // No client left over: only the bystander.
    settle(SETTLE, || async {
        let st = status(&s);
        let clients = st["clients"].as_u64();
        let gauge = metric_sum(&s.metrics(), "sluice_client_connections", &[]);
        if clients == Some(1) && gauge == 1.0 {
            Ok(())
        } else {
            Err(format!(
                "clients {clients:?}, sluice_client_connections {gauge} (want 1: the bystander)"
            ))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("clients left over after the fuzz: {e}"));

    // Pools: none over its maximum, nobody waiting, nothing checked out
    // beyond what the idle bystander held before the fuzz.
    settle(SETTLE, || async {
        let st = status(&s);
        for p in st["pools"].as_array().into_iter().flatten() {
            let (size, max, waiting) = (p["size"].as_u64(), p["max"].as_u64(), p["waiting"].as_u64());
            if size > max || waiting != Some(0) {
                return Err(format!("pool over its maximum or waited on: {p}"));
            }
        }
        let active = active_connections(&st);
        if active != active_baseline {
            return Err(format!(
                "{active} backend connections checked out, {active_baseline} before the fuzz: {st}"
            ));
        }
        Ok(())
    })
    .await
    .unwrap_or_else(|e| panic!("backend connections leaked: {e}"));

    // The servers: no connection of Sluice's beyond its pools.
    settle(SETTLE, || {
        let backends = backends.clone();
        let baseline = baseline.clone();
        let sizes = pool_sizes_by_backend(&status(&s));
        async move {
            for (i, addr) in backends.iter().enumerate() {
                let open = app_connections(addr).await;
                let pooled = sizes.get(i).copied().unwrap_or(0) as i64;
                if open > baseline[i] + pooled {
                    return Err(format!(
                        "{addr}: {open} connections of user app, {} before the test + {pooled} in Sluice's pools",
                        baseline[i]
                    ));
                }
            }
            Ok(())
        }
    })
    .await
    .unwrap_or_else(|e| panic!("backend connections left open: {e}"));

    // Nothing a fuzz client did outlives it on a pooled connection: no open
    // transaction, no user lock (Sluice resets or discards such connections).
    settle(SETTLE, || {
        let backends = backends.clone();
        async move {
            for addr in &backends {
                leftover_state(addr).await?;
            }
            Ok(())
        }
    })
    .await
    .unwrap_or_else(|e| panic!("a departed client's state outlived it: {e}"));

    let rss_end = rss_kib(s.pid());
    let pooled: u64 = pool_sizes_by_backend(&status(&s)).iter().sum();
    println!(
        "sluice RSS {} MiB before, {} MiB after; {pooled} pooled backend connections; \
         {} WARN and {} ERROR lines in its log; checks passed in {:.1} s total",
        rss_start / 1024,
        rss_end / 1024,
        log.lines().filter(|l| level_of(l) == Some("WARN")).count(),
        log.lines().filter(|l| level_of(l) == Some("ERROR")).count(),
        started.elapsed().as_secs_f64()
    );
}

/// The level of a log line (its second word, colour codes removed).
fn level_of(line: &str) -> Option<&'static str> {
    let plain: String = {
        let mut out = String::new();
        let mut chars = line.chars();
        while let Some(c) = chars.next() {
            if c == '\x1b' {
                for c in chars.by_ref() {
                    if c == 'm' {
                        break;
                    }
                }
            } else {
                out.push(c);
            }
        }
        out
    };
    let word = plain.split_whitespace().nth(1)?;
    ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"]
        .into_iter()
        .find(|l| *l == word)
}

/// Checked-out backend connections over all backends (`/status`).
fn active_connections(st: &serde_json::Value) -> u64 {
    st["backends"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|b| b["pool"]["active"].as_u64())
        .sum()
}

/// Pool sizes per backend, in config order (primary, replica1, replica2).
fn pool_sizes_by_backend(st: &serde_json::Value) -> Vec<u64> {
    st["backends"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|b| b["pool"]["size"].as_u64().unwrap_or(0))
        .collect()
}

/// The bystander's checked-out connections once it is idle (it may hold one
/// for a pin); read when the count has been stable for a moment.
async fn settle_active(s: &Sluice) -> u64 {
    let mut last = active_connections(&status(s));
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = active_connections(&status(s));
        if now == last {
            return now;
        }
        last = now;
    }
    last
}
