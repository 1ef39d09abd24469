//! The relay fixtures: what each one captures from MariaDB ([`SPECS`]), the
//! text file format they are stored in, and helpers to take packet streams
//! apart.
//!
//! A fixture file holds one or more *views*: the same statements run on
//! fresh connections that differ only in capabilities. The `backend` view
//! uses the pool's capabilities (what the relay reads); the others show what
//! MariaDB itself sends a client with other capabilities, which is what the
//! relay's translation must produce.
//!
//! File format (one item per line):
//!
//! ```text
//! # comment
//! server 10.11.19-MariaDB-0+deb12u1-log
//! [backend] caps=0x000ea28f        a view, with the capabilities it negotiated
//! @ last_gtid 0-1-17               a fact read back from the server afterwards
//! > 0f000000 0353454c...           bytes client -> server, one packet a line
//! < 01000001 01                    bytes server -> client, one packet a line
//! ```
//!
//! Consecutive lines of one direction form one segment: exactly what one
//! side wrote before waiting for the other.

use sluice_protocol::consts::CapabilityFlags as Caps;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

/// One command, as the capture sends it.
#[derive(Debug, Clone, Copy)]
pub enum Cmd {
    Query(&'static str),
    Prepare(&'static str),
    FieldList(&'static str),
    InitDb(&'static str),
    /// A command packet payload given byte by byte (COM_STMT_EXECUTE, ...)
    /// whose bytes 1..5 are replaced by the id of the statement the setup
    /// prepared.
    OnStatement(&'static [u8]),
}

impl Cmd {
    pub fn payload(&self) -> Vec<u8> {
        self.payload_for(0)
    }

    /// The payload, naming statement `id` if it names one.
    pub fn payload_for(&self, id: u32) -> Vec<u8> {
        let (command, body): (u8, &[u8]) = match self {
            Cmd::Query(sql) => (0x03, sql.as_bytes()),
            Cmd::Prepare(sql) => (0x16, sql.as_bytes()),
            Cmd::InitDb(schema) => (0x02, schema.as_bytes()),
            Cmd::FieldList(table) => {
                // Table name, NUL, wildcard (empty: all columns).
                let mut p = vec![0x04];
                p.extend_from_slice(table.as_bytes());
                p.push(0);
                return p;
            }
            Cmd::OnStatement(bytes) => {
                let mut p = bytes.to_vec();
                p[1..5].copy_from_slice(&id.to_le_bytes());
                return p;
            }
        };
        let mut p = vec![command];
        p.extend_from_slice(body);
        p
    }
}

/// Which capabilities a view's connection negotiates, relative to the
/// pool's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViewKind {
    /// The pool's capabilities and session tracking setup: the relay's input.
    Backend,
    /// A client with CLIENT_DEPRECATE_EOF.
    DeprecateEof,
    /// A client without CLIENT_SESSION_TRACK.
    NoSessionTrack,
    /// A client without CLIENT_LOCAL_FILES.
    NoLocalFiles,
}

impl ViewKind {
    pub fn name(self) -> &'static str {
        match self {
            ViewKind::Backend => "backend",
            ViewKind::DeprecateEof => "deprecate_eof",
            ViewKind::NoSessionTrack => "no_session_track",
            ViewKind::NoLocalFiles => "no_local_files",
        }
    }

    /// The view's capabilities, given the pool's.
    pub fn caps(self, backend: Caps) -> Caps {
        match self {
            ViewKind::Backend => backend,
            ViewKind::DeprecateEof => backend | Caps::CLIENT_DEPRECATE_EOF,
            ViewKind::NoSessionTrack => backend - Caps::CLIENT_SESSION_TRACK,
            ViewKind::NoLocalFiles => backend - Caps::CLIENT_LOCAL_FILES,
        }
    }
}

/// What one fixture captures.
pub struct Spec {
    pub name: &'static str,
    pub about: &'static str,
    /// Run on each view's connection before the capture, not recorded.
    pub setup: &'static [Cmd],
    /// Recorded, with their complete responses.
    pub commands: &'static [Cmd],
    /// The file a LOAD DATA LOCAL INFILE request is answered with.
    pub infile: Option<&'static [u8]>,
    pub views: &'static [ViewKind],
    /// Facts read back after the capture on the backend view's connection:
    /// (key, query returning one value).
    pub meta: &'static [(&'static str, &'static str)],
}

const USE: Cmd = Cmd::Query("USE relayfx");

/// The schema every fixture runs in, created anew by the capture before
/// anything else. Values that depend on the server's history (GTIDs) are
/// read back into `@` lines, so any server will do.
pub const SCHEMA: &[&str] = &[
    "DROP DATABASE IF EXISTS relayfx",
    "CREATE DATABASE relayfx",
    "CREATE TABLE relayfx.t (id INT PRIMARY KEY AUTO_INCREMENT, name VARCHAR(20))",
    "CREATE TABLE relayfx.loaded (a INT, b VARCHAR(10))",
    "CREATE PROCEDURE relayfx.two_results() BEGIN SELECT 1 AS a; SELECT 'x' AS b, 2 AS c UNION ALL SELECT 'y', 3; END",
];

pub const SPECS: &[Spec] = &[
    Spec {
        name: "multi_select",
        about: "A multi-statement: two result sets, the first with MORE_RESULTS_EXISTS.",
        setup: &[USE],
        commands: &[Cmd::Query("SELECT 1; SELECT 2")],
        infile: None,
        views: &[ViewKind::Backend, ViewKind::DeprecateEof],
        meta: &[],
    },
    Spec {
        name: "call_two_results",
        about: "CALL of a procedure returning two result sets, then the CALL's own OK.",
        setup: &[USE],
        commands: &[Cmd::Query("CALL two_results()")],
        infile: None,
        views: &[ViewKind::Backend, ViewKind::DeprecateEof],
        meta: &[],
    },
    Spec {
        name: "error_after_rows",
        about: "A result set that fails after two rows (BIGINT UNSIGNED overflow on the third): \
                column definitions, EOF, two rows, then ERR 1690 instead of the final EOF.",
        setup: &[USE],
        commands: &[Cmd::Query(
            "SELECT 18446744073709551613 + seq AS v FROM seq_1_to_5",
        )],
        infile: None,
        views: &[ViewKind::Backend, ViewKind::DeprecateEof],
        meta: &[],
    },
    Spec {
        name: "error_in_transaction",
        about: "A multi-statement that opens a transaction, returns a result set, then fails: \
                the OK and the EOF say IN_TRANS, the ERR ends the response.",
        setup: &[USE],
        commands: &[Cmd::Query("BEGIN; SELECT 1; SELECT * FROM no_such_table")],
        infile: None,
        views: &[ViewKind::Backend],
        meta: &[],
    },
    Spec {
        name: "warning_in_eof",
        about: "A result set whose final EOF carries a warning (division by zero).",
        setup: &[USE],
        commands: &[Cmd::Query("SELECT 1/0 AS d")],
        infile: None,
        views: &[ViewKind::Backend, ViewKind::DeprecateEof],
        meta: &[],
    },
    Spec {
        name: "many_rows",
        about: "300 rows: the sequence ids wrap past 255 and the rows take the relay's fast path.",
        setup: &[USE],
        commands: &[Cmd::Query("SELECT seq FROM seq_1_to_300")],
        infile: None,
        views: &[ViewKind::Backend],
        meta: &[],
    },
    Spec {
        name: "local_infile",
        about: "LOAD DATA LOCAL INFILE: the server's request, the file (one packet, then the \
                empty one), the server's OK with its info text and tracked state.",
        setup: &[USE],
        commands: &[Cmd::Query(
            "LOAD DATA LOCAL INFILE 'rows.csv' INTO TABLE loaded FIELDS TERMINATED BY ','",
        )],
        infile: Some(b"1,a\n2,b\n3,c\n"),
        views: &[
            ViewKind::Backend,
            ViewKind::NoSessionTrack,
            ViewKind::NoLocalFiles,
        ],
        meta: &[("last_gtid", "SELECT @@last_gtid")],
    },
    Spec {
        name: "local_infile_empty",
        about: "LOAD DATA LOCAL INFILE answered with an empty file, as the relay does for a \
                client without CLIENT_LOCAL_FILES.",
        setup: &[USE],
        commands: &[Cmd::Query(
            "LOAD DATA LOCAL INFILE 'none.csv' INTO TABLE loaded FIELDS TERMINATED BY ','",
        )],
        infile: Some(b""),
        views: &[ViewKind::Backend],
        meta: &[],
    },
    Spec {
        name: "insert_gtid",
        about: "An autocommitted INSERT: affected rows, insert id, and last_gtid in the \
                session-state block.",
        // Each view inserts id 1 (TRUNCATE resets the counter).
        setup: &[USE, Cmd::Query("TRUNCATE TABLE t")],
        commands: &[Cmd::Query("INSERT INTO t (name) VALUES ('a')")],
        infile: None,
        views: &[ViewKind::Backend, ViewKind::NoSessionTrack],
        meta: &[
            ("last_gtid", "SELECT @@last_gtid"),
            ("last_insert_id", "SELECT LAST_INSERT_ID()"),
        ],
    },
    Spec {
        name: "use_schema",
        about: "USE as a query: an OK whose session-state block names the schema.",
        setup: &[],
        commands: &[Cmd::Query("USE relayfx")],
        infile: None,
        views: &[ViewKind::Backend, ViewKind::NoSessionTrack],
        meta: &[],
    },
    Spec {
        name: "init_db",
        about: "COM_INIT_DB: one OK whose session-state block names the schema.",
        setup: &[],
        commands: &[Cmd::InitDb("relayfx")],
        infile: None,
        views: &[ViewKind::Backend, ViewKind::NoSessionTrack],
        meta: &[],
    },
    Spec {
        name: "prepare",
        about: "COM_STMT_PREPARE with two parameters and two columns: the prepare OK, \
                parameter definitions, EOF, column definitions, EOF.",
        setup: &[USE],
        commands: &[Cmd::Prepare("SELECT ? AS a, CONCAT(?, 'x') AS b")],
        infile: None,
        views: &[ViewKind::Backend, ViewKind::DeprecateEof],
        meta: &[],
    },
    Spec {
        name: "prepare_params_only",
        about: "COM_STMT_PREPARE with one parameter and no columns.",
        setup: &[USE],
        commands: &[Cmd::Prepare("INSERT INTO t (name) VALUES (?)")],
        infile: None,
        views: &[ViewKind::Backend, ViewKind::DeprecateEof],
        meta: &[],
    },
    Spec {
        name: "prepare_error",
        about: "COM_STMT_PREPARE of bad SQL: one ERR.",
        setup: &[USE],
        commands: &[Cmd::Prepare("SELEC 1")],
        infile: None,
        views: &[ViewKind::Backend],
        meta: &[],
    },
    Spec {
        name: "cursor_fetch",
        about: "COM_STMT_EXECUTE with a read-only cursor (column definitions, then an EOF \
                saying CURSOR_EXISTS), then two COM_STMT_FETCH of 2 rows (the last one \
                says LAST_ROW_SENT). The statement is prepared in the setup.",
        setup: &[USE, Cmd::Prepare("SELECT seq FROM seq_1_to_3")],
        commands: &[
            // CURSOR_TYPE_READ_ONLY, iteration count 1.
            Cmd::OnStatement(&[0x17, 0, 0, 0, 0, 1, 1, 0, 0, 0]),
            // Fetch 2 rows, twice.
            Cmd::OnStatement(&[0x1c, 0, 0, 0, 0, 2, 0, 0, 0]),
            Cmd::OnStatement(&[0x1c, 0, 0, 0, 0, 2, 0, 0, 0]),
        ],
        infile: None,
        views: &[ViewKind::Backend, ViewKind::DeprecateEof],
        meta: &[],
    },
    Spec {
        name: "field_list",
        about: "COM_FIELD_LIST: column definitions then EOF.",
        setup: &[USE],
        commands: &[Cmd::FieldList("t")],
        infile: None,
        views: &[ViewKind::Backend, ViewKind::DeprecateEof],
        meta: &[],
    },
];

pub fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/relay")
}

/// Bytes one side wrote before waiting for the other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub from_client: bool,
    pub bytes: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct View {
    pub name: String,
    pub caps: Caps,
    pub meta: BTreeMap<String, String>,
    pub segments: Vec<Segment>,
}

impl View {
    /// The bytes server -> client of each exchange, in order.
    pub fn server(&self) -> Vec<&[u8]> {
        self.segments
            .iter()
            .filter(|s| !s.from_client)
            .map(|s| &s.bytes[..])
            .collect()
    }

    /// What a client with this view's capabilities is to get for each of
    /// the server's segments: the server's bytes, except that the final OK
    /// of a session-tracking client keeps only the entries its own
    /// session's tracking would report (`relay::client_tracks`; checked
    /// against a live server by
    /// `client_caps::session_tracking_clients_get_the_servers_state_blocks`).
    /// The capture set up full tracking, as Sluice's backend connections do.
    pub fn server_for_client(&self) -> Vec<Vec<u8>> {
        self.server()
            .into_iter()
            .map(|segment| {
                let (packets, rest) = split_packets(segment);
                let Some((last, before)) = packets.split_last() else {
                    return segment.to_vec();
                };
                let payload = &last[4..];
                let fewer = self
                    .caps
                    .contains(Caps::CLIENT_SESSION_TRACK)
                    .then(|| sluice_protocol::packets::parse_ok(payload))
                    .flatten()
                    .filter(|_| matches!(payload.first(), Some(0x00 | 0xfe)))
                    .and_then(|ok| {
                        sluice_protocol::packets::ok_keeping_session_state(
                            &ok,
                            payload[0],
                            sluice_proxy::relay::client_tracks,
                        )
                    });
                let Some(fewer) = fewer else {
                    return segment.to_vec();
                };
                let mut out: Vec<u8> = before.concat();
                let len = fewer.len();
                out.extend_from_slice(&[len as u8, (len >> 8) as u8, (len >> 16) as u8, last[3]]);
                out.extend_from_slice(&fewer);
                out.extend_from_slice(rest);
                out
            })
            .collect()
    }

    /// The bytes client -> server, in order (commands, LOCAL INFILE data).
    pub fn client(&self) -> Vec<&[u8]> {
        self.segments
            .iter()
            .filter(|s| s.from_client)
            .map(|s| &s.bytes[..])
            .collect()
    }

    pub fn meta(&self, key: &str) -> &str {
        self.meta
            .get(key)
            .unwrap_or_else(|| panic!("view {} has no `@ {key}`", self.name))
    }
}

#[derive(Debug, Clone)]
pub struct Fixture {
    pub name: String,
    pub server: String,
    pub views: Vec<View>,
}

impl Fixture {
    pub fn load(name: &str) -> Fixture {
        let path = dir().join(format!("{name}.txt"));
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (see tests/fixtures/relay/README.md)", path.display()));
        parse(name, &text)
    }

    pub fn view(&self, name: &str) -> &View {
        self.views
            .iter()
            .find(|v| v.name == name)
            .unwrap_or_else(|| panic!("fixture {} has no view [{name}]", self.name))
    }
}

pub fn parse(name: &str, text: &str) -> Fixture {
    let mut server = String::new();
    let mut views: Vec<View> = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        macro_rules! bad {
            () => {
                panic!("{name}.txt:{}: cannot parse {raw:?}", n + 1)
            };
        }
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("server ") {
            server = rest.trim().to_string();
        } else if let Some(rest) = line.strip_prefix('[') {
            let (view, caps) = rest.split_once("] caps=0x").unwrap_or_else(|| bad!());
            let caps = u32::from_str_radix(caps.trim(), 16).unwrap_or_else(|_| bad!());
            views.push(View {
                name: view.to_string(),
                caps: Caps::from_bits_truncate(caps),
                meta: BTreeMap::new(),
                segments: Vec::new(),
            });
        } else if let Some(rest) = line.strip_prefix("@ ") {
            let (key, value) = rest.split_once(' ').unwrap_or((rest, ""));
            let view = views.last_mut().unwrap_or_else(|| bad!());
            view.meta.insert(key.to_string(), value.trim().to_string());
        } else if line.starts_with('<') || line.starts_with('>') {
            let from_client = line.starts_with('>');
            let bytes = unhex(&line[1..]).unwrap_or_else(|| bad!());
            let view = views.last_mut().unwrap_or_else(|| bad!());
            match view.segments.last_mut() {
                Some(seg) if seg.from_client == from_client => seg.bytes.extend(bytes),
                _ => view.segments.push(Segment { from_client, bytes }),
            }
        } else {
            bad!();
        }
    }
    Fixture {
        name: name.to_string(),
        server,
        views,
    }
}

/// Writes a fixture file's text: the spec's description, then each view,
/// one physical packet per line.
pub fn render(spec: &Spec, server: &str, views: &[View]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# {}", spec.name);
    for line in wrap(spec.about, 76) {
        let _ = writeln!(out, "# {line}");
    }
    out.push_str(
        "# Captured from a real MariaDB by `regenerate_fixtures` in\n\
         # proxy/tests/relay_fixtures/main.rs; see README.md here. Do not edit by hand.\n",
    );
    let _ = writeln!(out, "server {server}");
    for view in views {
        let _ = writeln!(out, "\n[{}] caps=0x{:08x}", view.name, view.caps.bits());
        for (key, value) in &view.meta {
            let _ = writeln!(out, "@ {key} {value}");
        }
        for seg in &view.segments {
            let arrow = if seg.from_client { '>' } else { '<' };
            let (packets, rest) = split_packets(&seg.bytes);
            for p in packets {
                let _ = writeln!(out, "{arrow} {} {}", hex(&p[..4]), hex(&p[4..]));
            }
            if !rest.is_empty() {
                // Not a whole packet: kept as it came, so the test sees it.
                let _ = writeln!(out, "{arrow} {}  # incomplete packet", hex(rest));
            }
        }
    }
    out
}

fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = vec![String::new()];
    for word in text.split_whitespace() {
        let line = lines.last_mut().expect("never empty");
        if !line.is_empty() && line.len() + 1 + word.len() > width {
            lines.push(word.to_string());
        } else {
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
    }
    lines
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn unhex(text: &str) -> Option<Vec<u8>> {
    let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if digits.len() % 2 != 0 {
        return None;
    }
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok())
        .collect()
}

/// Splits a byte stream into whole physical packets (header included) and
/// whatever trails them.
pub fn split_packets(mut bytes: &[u8]) -> (Vec<&[u8]>, &[u8]) {
    let mut packets = Vec::new();
    while bytes.len() >= 4 {
        let len = usize::from(bytes[0]) | usize::from(bytes[1]) << 8 | usize::from(bytes[2]) << 16;
        if bytes.len() < 4 + len {
            break;
        }
        packets.push(&bytes[..4 + len]);
        bytes = &bytes[4 + len..];
    }
    (packets, bytes)
}

/// The payloads of a stream of whole packets.
pub fn payloads(bytes: &[u8]) -> Vec<&[u8]> {
    let (packets, rest) = split_packets(bytes);
    assert!(rest.is_empty(), "trailing partial packet: {}", hex(rest));
    packets.into_iter().map(|p| &p[4..]).collect()
}

/// The same packets numbered from `seq` (wrapping), as the relay numbers
/// what it sends the client.
pub fn renumber(bytes: &[u8], seq: u8) -> Vec<u8> {
    let (packets, rest) = split_packets(bytes);
    assert!(rest.is_empty(), "trailing partial packet: {}", hex(rest));
    let mut out = Vec::with_capacity(bytes.len());
    for (i, p) in packets.into_iter().enumerate() {
        out.extend_from_slice(p);
        let at = out.len() - p.len() + 3;
        out[at] = seq.wrapping_add(i as u8);
    }
    out
}

/// A readable listing of a packet stream for assertion failures.
pub fn listing(bytes: &[u8]) -> String {
    let (packets, rest) = split_packets(bytes);
    let mut out = String::new();
    for p in packets {
        let _ = writeln!(out, "  {} {}", hex(&p[..4]), hex(&p[4..]));
    }
    if !rest.is_empty() {
        let _ = writeln!(out, "  partial: {}", hex(rest));
    }
    out
}
