//! Fixture tests of the response relay: packet streams captured from a real
//! MariaDB (tests/fixtures/relay, see its README) are played by a fake
//! server over an in-memory stream, the relay forwards them to an in-memory
//! client, and each test checks the exact bytes the client receives (against
//! what MariaDB itself sends a client with the same capabilities, where the
//! fixture has that view), the bytes the server receives, and the
//! [`Outcome`].
//!
//! Every test runs twice: with the whole response buffered (rows take the
//! relay's fast path) and through pipes of a few bytes (every packet arrives
//! and leaves in pieces).

mod capture;
mod fixture;

use fixture::{Fixture, View, listing, payloads, renumber};
use mysql_common::packets::AuthPlugin;
use sluice_pool::{BackendConn, BackendStatement, ServerInfo, SessionState};
use sluice_protocol::PacketStream;
use sluice_protocol::consts::{CapabilityFlags as Caps, MariadbCapabilities, status};
use sluice_proxy::relay::{Outcome, Relay, RelayError, ResponseKind};
use std::sync::atomic::AtomicBool;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

/// Regenerates every fixture file from a live MariaDB (see README.md).
#[tokio::test]
#[ignore = "captures from a MariaDB: RELAY_CAPTURE_ADDR=127.0.0.1:24306"]
async fn regenerate_fixtures() {
    let addr = std::env::var("RELAY_CAPTURE_ADDR").expect("set RELAY_CAPTURE_ADDR to a MariaDB's host:port");
    if let Err(e) = capture::regenerate(&addr).await {
        panic!("capture failed: {e}");
    }
}

// ---------------------------------------------------------------------------
// Harness

/// How bytes move between the relay and the fake peers.
#[derive(Debug, Clone, Copy)]
enum Feed {
    /// Large pipes: a response is buffered whole before the relay reads it.
    Whole,
    /// Pipes of a few bytes: packets arrive and leave in pieces.
    Trickle,
}

const FEEDS: [Feed; 2] = [Feed::Whole, Feed::Trickle];

impl Feed {
    fn pipes(self) -> (usize, usize) {
        match self {
            Feed::Whole => (1 << 20, 1 << 20),
            // Backend, client: odd sizes so no packet lines up with a read.
            Feed::Trickle => (7, 5),
        }
    }
}

/// One command relayed: its response kind, the sequence id the relay starts
/// numbering the client's packets from, and the statement id shown to the
/// client for a COM_STMT_PREPARE.
#[derive(Debug, Clone, Copy)]
struct Exchange {
    kind: ResponseKind,
    seq: u8,
    statement_id: Option<u32>,
}

fn exchange(kind: ResponseKind) -> Exchange {
    Exchange {
        kind,
        seq: 1,
        statement_id: None,
    }
}

struct Play<'a> {
    /// The server's side: the view whose server segments are played and
    /// whose client segments must reach the server.
    backend: &'a View,
    server_version: &'a str,
    client_caps: Caps,
    exchanges: Vec<Exchange>,
    /// Bytes the client sends once it has received the given number of
    /// bytes (LOCAL INFILE data).
    client_sends: Vec<(usize, Vec<u8>)>,
}

/// What came out of relaying.
struct Played {
    /// Everything the client received.
    client: Vec<u8>,
    /// Everything the server received (commands and LOCAL INFILE data).
    server: Vec<u8>,
    outcomes: Vec<Result<Outcome, RelayError>>,
    desired: SessionState,
    backend_state: SessionState,
}

impl Played {
    fn outcome(&self, i: usize) -> &Outcome {
        match &self.outcomes[i] {
            Ok(outcome) => outcome,
            Err(e) => panic!("exchange {i} failed: {e:?}"),
        }
    }
}

fn server_info(version: &str, caps: Caps) -> ServerInfo {
    ServerInfo {
        version: version.to_string(),
        connection_id: 1,
        capabilities: caps,
        server_capabilities: caps,
        mariadb_capabilities: MariadbCapabilities::empty(),
        server_mariadb_capabilities: MariadbCapabilities::empty(),
        default_collation: 45,
        nonce: Vec::new(),
        auth_plugin: AuthPlugin::MysqlNativePassword,
    }
}

/// The fake server: plays the view's segments in order, reading what the
/// client side must send and writing what the server sent.
async fn fake_server(mut io: DuplexStream, view: View) -> Vec<u8> {
    let mut received = Vec::new();
    for seg in &view.segments {
        if seg.from_client {
            let mut buf = vec![0; seg.bytes.len()];
            if io.read_exact(&mut buf).await.is_err() {
                break;
            }
            received.extend(buf);
        } else if io.write_all(&seg.bytes).await.is_err() {
            break;
        }
    }
    // Anything more the relay sends is wrong: keep it for the assertion.
    let _ = io.read_to_end(&mut received).await;
    received
}

/// The fake client: reads everything, sending its data at the given points.
async fn fake_client(mut io: DuplexStream, mut sends: Vec<(usize, Vec<u8>)>) -> Vec<u8> {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    sends.reverse();
    loop {
        while sends.last().is_some_and(|(after, _)| received.len() >= *after) {
            let (_, data) = sends.pop().expect("checked");
            if io.write_all(&data).await.is_err() {
                return received;
            }
        }
        match io.read(&mut buf).await {
            Ok(0) | Err(_) => return received,
            Ok(n) => received.extend_from_slice(&buf[..n]),
        }
    }
}

async fn play(p: Play<'_>, feed: Feed) -> Played {
    let (backend_pipe, client_pipe) = feed.pipes();
    let (proxy_backend, server_io) = tokio::io::duplex(backend_pipe);
    let (proxy_client, client_io) = tokio::io::duplex(client_pipe);
    let server = tokio::spawn(fake_server(server_io, p.backend.clone()));
    let client = tokio::spawn(fake_client(client_io, p.client_sends.clone()));

    let mut client_stream = PacketStream::new(proxy_client);
    let mut backend = BackendConn::from_stream(
        PacketStream::new(proxy_backend),
        server_info(p.server_version, p.backend.caps),
        SessionState::default(),
    );
    let mut desired = SessionState::default();
    // The commands are the client segments that start with sequence id 0
    // (the others are LOCAL INFILE data, which the relay forwards).
    let commands: Vec<&[u8]> = p
        .backend
        .client()
        .into_iter()
        .filter(|seg| seg.get(3) == Some(&0))
        .collect();
    assert_eq!(commands.len(), p.exchanges.len(), "one exchange per command");
    let mut outcomes = Vec::new();
    for (command, ex) in commands.into_iter().zip(&p.exchanges) {
        for payload in payloads(command) {
            backend.stream.send(0, payload).await.expect("command sent");
        }
        let sent_any = AtomicBool::new(false);
        let mut relay = Relay::new(
            &mut client_stream,
            &mut backend,
            p.client_caps,
            &mut desired,
            ex.seq,
            &sent_any,
        );
        if let Some(id) = ex.statement_id {
            relay = relay.with_statement_id(id);
        }
        let result = tokio::time::timeout(Duration::from_secs(10), relay.run(ex.kind))
            .await
            .expect("relay stalled");
        let failed = result.is_err();
        outcomes.push(result);
        if failed {
            break;
        }
    }
    let backend_state = backend.state.clone();
    // Closing both ends lets the fake peers finish.
    drop(client_stream);
    drop(backend);
    let wait = Duration::from_secs(10);
    let client = tokio::time::timeout(wait, client)
        .await
        .expect("client done")
        .expect("client task");
    let server = tokio::time::timeout(wait, server)
        .await
        .expect("server done")
        .expect("server task");
    Played {
        client,
        server,
        outcomes,
        desired,
        backend_state,
    }
}

#[track_caller]
fn assert_bytes(what: &str, got: &[u8], want: &[u8]) {
    assert!(
        got == want,
        "{what} differ\n--- got:\n{}--- want:\n{}",
        listing(got),
        listing(want)
    );
}

/// Compares every field (Outcome has no PartialEq: its Debug form is
/// compared).
#[track_caller]
fn assert_outcome(got: &Outcome, want: Outcome) {
    assert_eq!(format!("{got:#?}"), format!("{want:#?}"));
}

fn concat(segments: Vec<&[u8]>) -> Vec<u8> {
    segments.concat()
}

/// A fixture relayed to a client with `client_view`'s capabilities must give
/// the client exactly what MariaDB sent that view, and the server exactly
/// the commands; returns the run for further checks.
async fn relay_as(fx: &Fixture, client_view: &str, exchanges: &[Exchange], feed: Feed) -> Played {
    let backend = fx.view("backend");
    let view = fx.view(client_view);
    let played = play(
        Play {
            backend,
            server_version: &fx.server,
            client_caps: view.caps,
            exchanges: exchanges.to_vec(),
            client_sends: Vec::new(),
        },
        feed,
    )
    .await;
    assert_bytes(
        &format!("{} [{client_view}] {feed:?}: client bytes", fx.name),
        &played.client,
        &view.server_for_client().concat(),
    );
    assert_bytes(
        &format!("{} {feed:?}: server bytes", fx.name),
        &played.server,
        &concat(backend.client()),
    );
    played
}

const AUTOCOMMIT: u16 = status::AUTOCOMMIT;

// ---------------------------------------------------------------------------
// Result sets

#[tokio::test]
async fn multi_statement_result_sets() {
    let fx = Fixture::load("multi_select");
    for view in ["backend", "deprecate_eof"] {
        for feed in FEEDS {
            let played = relay_as(&fx, view, &[exchange(ResponseKind::Results)], feed).await;
            assert_outcome(
                played.outcome(0),
                Outcome {
                    status: Some(AUTOCOMMIT),
                    result_set: true,
                    rows: 1,
                    ..Outcome::default()
                },
            );
        }
    }
}

#[tokio::test]
async fn call_returning_result_sets() {
    let fx = Fixture::load("call_two_results");
    for view in ["backend", "deprecate_eof"] {
        for feed in FEEDS {
            let played = relay_as(&fx, view, &[exchange(ResponseKind::Results)], feed).await;
            // The CALL's own OK ends the response; `rows` still counts the
            // last result set's rows.
            assert_outcome(
                played.outcome(0),
                Outcome {
                    status: Some(AUTOCOMMIT),
                    result_set: false,
                    rows: 2,
                    ..Outcome::default()
                },
            );
        }
    }
}

#[tokio::test]
async fn warnings_of_the_final_eof() {
    let fx = Fixture::load("warning_in_eof");
    for view in ["backend", "deprecate_eof"] {
        for feed in FEEDS {
            let played = relay_as(&fx, view, &[exchange(ResponseKind::Results)], feed).await;
            assert_outcome(
                played.outcome(0),
                Outcome {
                    status: Some(AUTOCOMMIT),
                    warnings: 1,
                    saw_warnings: true,
                    result_set: true,
                    rows: 1,
                    ..Outcome::default()
                },
            );
        }
    }
}

#[tokio::test]
async fn error_after_some_rows() {
    let fx = Fixture::load("error_after_rows");
    for view in ["backend", "deprecate_eof"] {
        for feed in FEEDS {
            let played = relay_as(&fx, view, &[exchange(ResponseKind::Results)], feed).await;
            assert_outcome(
                played.outcome(0),
                Outcome {
                    status: None,
                    ended_with_error: true,
                    result_set: true,
                    rows: 2,
                    ..Outcome::default()
                },
            );
        }
    }
}

#[tokio::test]
async fn error_after_a_transaction_opened() {
    let fx = Fixture::load("error_in_transaction");
    for feed in FEEDS {
        let played = relay_as(&fx, "backend", &[exchange(ResponseKind::Results)], feed).await;
        // The ERR leaves no status, but the BEGIN's OK said IN_TRANS.
        assert_outcome(
            played.outcome(0),
            Outcome {
                status: None,
                ended_with_error: true,
                saw_in_transaction: true,
                result_set: true,
                rows: 1,
                ..Outcome::default()
            },
        );
    }
}

#[tokio::test]
async fn sequence_ids_wrap_and_are_renumbered() {
    let fx = Fixture::load("many_rows");
    let backend = fx.view("backend");
    let response = concat(backend.server());
    // The server's own numbering wraps past 255.
    assert!(payloads(&response).len() > 256);
    for seq in [1u8, 200] {
        for feed in FEEDS {
            let played = play(
                Play {
                    backend,
                    server_version: &fx.server,
                    client_caps: backend.caps,
                    exchanges: vec![Exchange {
                        seq,
                        ..exchange(ResponseKind::Results)
                    }],
                    client_sends: Vec::new(),
                },
                feed,
            )
            .await;
            assert_bytes(
                &format!("seq {seq} {feed:?}"),
                &played.client,
                &renumber(&response, seq),
            );
            assert_outcome(
                played.outcome(0),
                Outcome {
                    status: Some(AUTOCOMMIT | 0x0020), // NO_INDEX_USED
                    result_set: true,
                    rows: 300,
                    ..Outcome::default()
                },
            );
        }
    }
}

// ---------------------------------------------------------------------------
// OK packets and session state

#[tokio::test]
async fn insert_reports_gtid_and_insert_id() {
    let fx = Fixture::load("insert_gtid");
    let gtid = fx.view("backend").meta("last_gtid").to_string();
    assert_eq!(fx.view("backend").meta("last_insert_id"), "1");
    for view in ["backend", "no_session_track"] {
        for feed in FEEDS {
            let played = relay_as(&fx, view, &[exchange(ResponseKind::Results)], feed).await;
            assert_outcome(
                played.outcome(0),
                Outcome {
                    status: Some(status::SESSION_STATE_CHANGED | AUTOCOMMIT),
                    affected_rows: 1,
                    last_insert_id: 1,
                    last_gtid: Some(gtid.clone()),
                    ..Outcome::default()
                },
            );
            // Kept for LAST_INSERT_ID() on the next connection; last_gtid
            // is not session state to replay.
            assert_eq!(played.desired.last_insert_id, 1);
            assert_eq!(played.backend_state.last_insert_id, 1);
            assert!(played.desired.vars.is_empty(), "{:?}", played.desired.vars);
        }
    }
}

/// USE and COM_INIT_DB report the schema in the session-state block; a
/// client without CLIENT_SESSION_TRACK gets the OK without it.
#[tokio::test]
async fn schema_change_is_tracked() {
    for (name, kind) in [
        ("use_schema", ResponseKind::Results),
        ("init_db", ResponseKind::Simple),
    ] {
        let fx = Fixture::load(name);
        for view in ["backend", "no_session_track"] {
            for feed in FEEDS {
                let played = relay_as(&fx, view, &[exchange(kind)], feed).await;
                assert_outcome(
                    played.outcome(0),
                    Outcome {
                        status: Some(status::SESSION_STATE_CHANGED | AUTOCOMMIT),
                        ..Outcome::default()
                    },
                );
                assert_eq!(played.desired.schema.as_deref(), Some("relayfx"), "{name}");
                assert_eq!(played.backend_state.schema.as_deref(), Some("relayfx"), "{name}");
            }
        }
    }
}

// ---------------------------------------------------------------------------
// LOCAL INFILE

/// The client's LOCAL INFILE data renumbered to follow a request the client
/// saw with sequence id `request_seq`.
fn client_data(view: &View, request_seq: u8) -> Vec<u8> {
    renumber(view.client()[1], request_seq.wrapping_add(1))
}

#[tokio::test]
async fn local_infile_round_trip() {
    let fx = Fixture::load("local_infile");
    let backend = fx.view("backend");
    let gtid = backend.meta("last_gtid").to_string();
    // Relayed as is, then numbered from 9 (the client's data follows the
    // request's number; the server still sees its own numbering).
    for seq in [1u8, 9] {
        for (client_view, client_caps) in [
            ("backend", backend.caps),
            ("no_session_track", fx.view("no_session_track").caps),
        ] {
            for feed in FEEDS {
                let view = fx.view(client_view);
                let request = renumber(view.server()[0], seq);
                let data = client_data(backend, seq);
                let data_packets = payloads(&data).len() as u8;
                let played = play(
                    Play {
                        backend,
                        server_version: &fx.server,
                        client_caps,
                        exchanges: vec![Exchange {
                            seq,
                            ..exchange(ResponseKind::Results)
                        }],
                        client_sends: vec![(request.len(), data)],
                    },
                    feed,
                )
                .await;
                let what = format!("seq {seq} [{client_view}] {feed:?}");
                let ok = renumber(&view.server_for_client()[1], seq.wrapping_add(1 + data_packets));
                assert_bytes(
                    &format!("{what}: client bytes"),
                    &played.client,
                    &[request, ok].concat(),
                );
                assert_bytes(
                    &format!("{what}: server bytes"),
                    &played.server,
                    &concat(backend.client()),
                );
                assert_outcome(
                    played.outcome(0),
                    Outcome {
                        status: Some(status::SESSION_STATE_CHANGED | AUTOCOMMIT),
                        affected_rows: 3,
                        last_gtid: Some(gtid.clone()),
                        ..Outcome::default()
                    },
                );
            }
        }
    }
}

/// A client without CLIENT_LOCAL_FILES: the relay answers the server's
/// request with an empty file, swallows the server's OK, and gives the
/// client the error MariaDB itself gives such a client.
#[tokio::test]
async fn local_infile_refused_for_client_without_local_files() {
    let empty = Fixture::load("local_infile_empty");
    let refused = Fixture::load("local_infile");
    let backend = empty.view("backend");
    let client = refused.view("no_local_files");
    for feed in FEEDS {
        let played = play(
            Play {
                backend,
                server_version: &empty.server,
                client_caps: client.caps,
                exchanges: vec![exchange(ResponseKind::Results)],
                client_sends: Vec::new(),
            },
            feed,
        )
        .await;
        assert_bytes(
            "client bytes",
            &played.client,
            &client.server_for_client().concat(),
        );
        // The command, then the empty packet (sequence id 2).
        assert_bytes("server bytes", &played.server, &concat(backend.client()));
        assert_eq!(backend.client()[1], [0, 0, 0, 2]);
        assert_outcome(
            played.outcome(0),
            Outcome {
                ended_with_error: true,
                ..Outcome::default()
            },
        );
    }
}

// ---------------------------------------------------------------------------
// Prepared statements

/// The response with the statement id in the prepare OK replaced.
fn with_statement_id(response: &[u8], id: u32) -> Vec<u8> {
    let mut out = response.to_vec();
    out[5..9].copy_from_slice(&id.to_le_bytes());
    out
}

fn backend_statement_id(view: &View) -> u32 {
    let ok = payloads(view.server()[0])[0];
    u32::from_le_bytes([ok[1], ok[2], ok[3], ok[4]])
}

#[tokio::test]
async fn prepare_shows_the_client_its_statement_id() {
    let fx = Fixture::load("prepare");
    let backend = fx.view("backend");
    for view in ["backend", "deprecate_eof"] {
        for feed in FEEDS {
            let played = play(
                Play {
                    backend,
                    server_version: &fx.server,
                    client_caps: fx.view(view).caps,
                    exchanges: vec![Exchange {
                        statement_id: Some(42),
                        ..exchange(ResponseKind::Prepare)
                    }],
                    client_sends: Vec::new(),
                },
                feed,
            )
            .await;
            let want = with_statement_id(fx.view(view).server()[0], 42);
            assert_bytes(&format!("[{view}] {feed:?}"), &played.client, &want);
            assert_outcome(
                played.outcome(0),
                Outcome {
                    prepared: Some(Box::new(BackendStatement {
                        id: backend_statement_id(backend),
                        params: 2,
                        columns: 2,
                        types: None,
                        // OK, two parameters and EOF, then the columns kept.
                        column_defs: Some(std::sync::Arc::new(
                            payloads(backend.server()[0])[4..6]
                                .iter()
                                .map(|p| bytes::Bytes::copy_from_slice(p))
                                .collect(),
                        )),
                        // The session the relay saw (the fixture's default).
                        defs_vars: Some(sluice_pool::Vars::default()),
                        schema: None,
                    })),
                    ..Outcome::default()
                },
            );
        }
    }
}

#[tokio::test]
async fn prepare_with_parameters_only() {
    let fx = Fixture::load("prepare_params_only");
    let backend = fx.view("backend");
    let id = backend_statement_id(backend);
    for view in ["backend", "deprecate_eof"] {
        for feed in FEEDS {
            let played = play(
                Play {
                    backend,
                    server_version: &fx.server,
                    client_caps: fx.view(view).caps,
                    exchanges: vec![exchange(ResponseKind::Prepare)],
                    client_sends: Vec::new(),
                },
                feed,
            )
            .await;
            // Without a client id the backend's passes through.
            let want = with_statement_id(fx.view(view).server()[0], id);
            assert_bytes(&format!("[{view}] {feed:?}"), &played.client, &want);
            assert_outcome(
                played.outcome(0),
                Outcome {
                    prepared: Some(Box::new(BackendStatement {
                        id,
                        params: 1,
                        columns: 0,
                        types: None,
                        column_defs: None,
                        defs_vars: None,
                        schema: None,
                    })),
                    ..Outcome::default()
                },
            );
        }
    }
}

#[tokio::test]
async fn prepare_error() {
    let fx = Fixture::load("prepare_error");
    for feed in FEEDS {
        let played = relay_as(
            &fx,
            "backend",
            &[Exchange {
                statement_id: Some(42),
                ..exchange(ResponseKind::Prepare)
            }],
            feed,
        )
        .await;
        assert_outcome(
            played.outcome(0),
            Outcome {
                ended_with_error: true,
                ..Outcome::default()
            },
        );
    }
}

/// COM_STMT_EXECUTE opening a cursor, then two COM_STMT_FETCH.
#[tokio::test]
async fn cursor_then_fetches() {
    let fx = Fixture::load("cursor_fetch");
    let exchanges = [
        exchange(ResponseKind::Results),
        exchange(ResponseKind::Fetch),
        exchange(ResponseKind::Fetch),
    ];
    for view in ["backend", "deprecate_eof"] {
        for feed in FEEDS {
            let played = relay_as(&fx, view, &exchanges, feed).await;
            assert_outcome(
                played.outcome(0),
                Outcome {
                    // AUTOCOMMIT | CURSOR_EXISTS | NO_INDEX_USED
                    status: Some(AUTOCOMMIT | status::CURSOR_EXISTS | 0x0020),
                    cursor_opened: true,
                    result_set: true,
                    ..Outcome::default()
                },
            );
            assert_outcome(
                played.outcome(1),
                Outcome {
                    status: Some(AUTOCOMMIT | status::CURSOR_EXISTS),
                    rows: 2,
                    ..Outcome::default()
                },
            );
            assert_outcome(
                played.outcome(2),
                Outcome {
                    status: Some(AUTOCOMMIT | 0x0080), // LAST_ROW_SENT
                    rows: 1,
                    ..Outcome::default()
                },
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Other responses

#[tokio::test]
async fn field_list() {
    let fx = Fixture::load("field_list");
    for view in ["backend", "deprecate_eof"] {
        for feed in FEEDS {
            let played = relay_as(&fx, view, &[exchange(ResponseKind::FieldList)], feed).await;
            assert_outcome(
                played.outcome(0),
                Outcome {
                    status: Some(AUTOCOMMIT),
                    ..Outcome::default()
                },
            );
        }
    }
}

/// The pool never negotiates CLIENT_DEPRECATE_EOF with backends, and the
/// relay does not translate from such a backend: fed one, it reports a
/// protocol error rather than sending the client a malformed response.
#[tokio::test]
async fn deprecate_eof_backend_is_a_protocol_error() {
    let fx = Fixture::load("multi_select");
    let backend = fx.view("deprecate_eof");
    for feed in FEEDS {
        let played = play(
            Play {
                backend,
                server_version: &fx.server,
                client_caps: fx.view("backend").caps,
                exchanges: vec![exchange(ResponseKind::Results)],
                client_sends: Vec::new(),
            },
            feed,
        )
        .await;
        match &played.outcomes[0] {
            Err(RelayError::Backend {
                error,
                client_saw_any,
            }) => {
                assert_eq!(error.kind(), std::io::ErrorKind::InvalidData);
                assert!(error.to_string().contains("missing EOF"), "{error}");
                assert!(client_saw_any, "the column count was already sent");
            }
            other => panic!("{feed:?}: expected a protocol error, got {other:?}"),
        }
    }
}
