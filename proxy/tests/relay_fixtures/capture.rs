//! Captures the relay fixtures from a real MariaDB: a bare client on a raw
//! TCP socket that negotiates exactly the capabilities of each view, sends
//! each fixture's commands and records every byte the server sends back.
//!
//! A response is taken to be complete when the server has sent nothing more
//! for [`QUIET`]: the recording does not depend on parsing the protocol (so
//! it cannot share a bug with the relay). Local servers answer these
//! statements within milliseconds.

use super::fixture::{self, Cmd, SCHEMA, SPECS, Segment, Spec, View, ViewKind};
use mysql_common::constants::MariadbCapabilities;
use mysql_common::io::ParseBuf;
use mysql_common::packets::{AuthPlugin, AuthSwitchRequest, HandshakePacket, HandshakeResponse};
use mysql_common::proto::{MyDeserialize, MySerialize};
use sluice_protocol::consts::CapabilityFlags as Caps;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Silence that ends a response.
const QUIET: Duration = Duration::from_millis(300);
/// How long the first byte of a response may take.
const FIRST_BYTE: Duration = Duration::from_secs(10);

/// The pool's session tracking setup (`BackendConn::setup`).
const TRACKING: &str = "SET SESSION session_track_schema=ON, session_track_state_change=ON, \
                        session_track_system_variables='*'";

type Result<T> = std::result::Result<T, String>;

/// Captures every fixture into `tests/fixtures/relay/`.
pub async fn regenerate(addr: &str) -> Result<()> {
    let (mut admin, server, _) = connect(addr, ViewKind::Backend).await?;
    for sql in SCHEMA {
        run(&mut admin, &Cmd::Query(sql)).await?;
    }
    std::fs::create_dir_all(fixture::dir()).map_err(|e| e.to_string())?;
    for spec in SPECS {
        let mut views = Vec::new();
        for &kind in spec.views {
            views.push(
                capture(addr, spec, kind)
                    .await
                    .map_err(|e| format!("{} [{}]: {e}", spec.name, kind.name()))?,
            );
        }
        let path = fixture::dir().join(format!("{}.txt", spec.name));
        std::fs::write(&path, fixture::render(spec, &server, &views)).map_err(|e| e.to_string())?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

async fn capture(addr: &str, spec: &Spec, kind: ViewKind) -> Result<View> {
    let (mut conn, _, caps) = connect(addr, kind).await?;
    if caps.contains(Caps::CLIENT_SESSION_TRACK) {
        run(&mut conn, &Cmd::Query(TRACKING)).await?;
    }
    // The id of the statement the setup prepared (ids are not 1 on a
    // fresh connection: MariaDB counts every query).
    let mut statement = 0;
    for cmd in spec.setup {
        let reply = run(&mut conn, cmd).await?;
        if let Cmd::Prepare(_) = cmd {
            let id = reply.get(5..9).ok_or("short prepare response")?;
            statement = u32::from_le_bytes([id[0], id[1], id[2], id[3]]);
        }
    }
    let mut segments = Vec::new();
    for cmd in spec.commands {
        let sent = packet(0, &cmd.payload_for(statement));
        conn.write_all(&sent).await.map_err(|e| e.to_string())?;
        segments.push(Segment {
            from_client: true,
            bytes: sent,
        });
        let reply = read_response(&mut conn).await?;
        let request = fixture::split_packets(&reply).0.first().map(|p| (p[3], p[4]));
        segments.push(Segment {
            from_client: false,
            bytes: reply,
        });
        if let (Some((seq, 0xfb)), Some(file)) = (request, spec.infile) {
            // The file as one packet (unless empty), then the empty packet.
            let mut data = Vec::new();
            let mut next = seq.wrapping_add(1);
            if !file.is_empty() {
                data.extend(packet(next, file));
                next = next.wrapping_add(1);
            }
            data.extend(packet(next, &[]));
            conn.write_all(&data).await.map_err(|e| e.to_string())?;
            segments.push(Segment {
                from_client: true,
                bytes: data,
            });
            segments.push(Segment {
                from_client: false,
                bytes: read_response(&mut conn).await?,
            });
        }
    }
    let mut meta = BTreeMap::new();
    for (key, sql) in spec.meta.iter().filter(|_| kind == ViewKind::Backend) {
        meta.insert(key.to_string(), query_value(&mut conn, caps, sql).await?);
    }
    Ok(View {
        name: kind.name().to_string(),
        caps,
        meta,
        segments,
    })
}

/// Runs a command whose response is not recorded; fails on ERR.
async fn run(conn: &mut TcpStream, cmd: &Cmd) -> Result<Vec<u8>> {
    conn.write_all(&packet(0, &cmd.payload()))
        .await
        .map_err(|e| e.to_string())?;
    let reply = read_response(conn).await?;
    if reply.get(4) == Some(&0xff) {
        return Err(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&reply[4..])
        ));
    }
    Ok(reply)
}

/// The one value a query returns (text protocol, first column of the only
/// row).
async fn query_value(conn: &mut TcpStream, caps: Caps, sql: &'static str) -> Result<String> {
    let reply = run(conn, &Cmd::Query(sql)).await?;
    let payloads = fixture::payloads(&reply);
    // Column count, one definition, EOF unless deprecated, the row.
    let row = if caps.contains(Caps::CLIENT_DEPRECATE_EOF) {
        2
    } else {
        3
    };
    let row = payloads.get(row).ok_or("no row")?;
    let values = sluice_protocol::packets::parse_text_row(row).ok_or("bad row")?;
    values
        .into_iter()
        .next()
        .flatten()
        .ok_or_else(|| format!("{sql}: no value"))
}

fn packet(seq: u8, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut p = len.to_le_bytes()[..3].to_vec();
    p.push(seq);
    p.extend_from_slice(payload);
    p
}

/// Everything the server sends until it goes quiet.
async fn read_response(conn: &mut TcpStream) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut wait = FIRST_BYTE;
    let mut buf = [0u8; 64 * 1024];
    loop {
        match tokio::time::timeout(wait, conn.read(&mut buf)).await {
            Err(_) if out.is_empty() => return Err("no response".into()),
            Err(_) => break,
            Ok(Ok(0)) => return Err("server closed the connection".into()),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Ok(Err(e)) => return Err(e.to_string()),
        }
        wait = QUIET;
    }
    let (_, rest) = fixture::split_packets(&out);
    if !rest.is_empty() {
        return Err("response ended inside a packet".into());
    }
    Ok(out)
}

/// Reads one packet (handshake and authentication only).
async fn read_packet(conn: &mut TcpStream) -> Result<(u8, Vec<u8>)> {
    let mut header = [0u8; 4];
    conn.read_exact(&mut header).await.map_err(|e| e.to_string())?;
    let len = usize::from(header[0]) | usize::from(header[1]) << 8 | usize::from(header[2]) << 16;
    let mut payload = vec![0; len];
    conn.read_exact(&mut payload).await.map_err(|e| e.to_string())?;
    Ok((header[3], payload))
}

/// Connects as password-less root with the view's capabilities, derived
/// from the pool's exactly as `pool::connect` derives them. Returns the
/// connection, the server version and the capabilities negotiated.
async fn connect(addr: &str, kind: ViewKind) -> Result<(TcpStream, String, Caps)> {
    let mut conn = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("{addr}: {e}"))?;
    conn.set_nodelay(true).map_err(|e| e.to_string())?;
    let (seq, greeting) = read_packet(&mut conn).await?;
    let handshake = HandshakePacket::deserialize((), &mut ParseBuf(&greeting)).map_err(|e| e.to_string())?;
    let server_caps = handshake.capabilities();
    let (caps, mariadb_caps) = sluice_pool::negotiate(&handshake, sluice_pool::SessionCaps::DRIVER);
    // The fixtures are replayed to a relay that negotiated no MariaDB
    // capabilities (`server_info`): without the metadata cache, so column
    // counts carry no "metadata follows" byte. The cache's translation is
    // tested against a live server (tests/tests/metadata_cache.rs).
    let mariadb_caps = mariadb_caps - MariadbCapabilities::MARIADB_CLIENT_CACHE_METADATA;
    let caps = kind.caps(caps) & (server_caps | Caps::CLIENT_LONG_PASSWORD);
    let nonce = handshake.nonce();
    let plugin = handshake
        .auth_plugin()
        .map(|p| p.into_owned())
        .unwrap_or(AuthPlugin::MysqlNativePassword);
    let scramble = plugin.gen_data(Some(""), &nonce);
    let response = HandshakeResponse::new(
        scramble.as_deref(),
        handshake.server_version_parsed().unwrap_or((5, 7, 0)),
        Some(&b"root"[..]),
        None::<&[u8]>,
        Some(plugin),
        caps,
        None,
        1 << 30,
    )
    .with_mariadb_ext_capabilities(mariadb_caps);
    let mut buf = Vec::new();
    response.serialize(&mut buf);
    conn.write_all(&packet(seq.wrapping_add(1), &buf))
        .await
        .map_err(|e| e.to_string())?;
    loop {
        let (seq, reply) = read_packet(&mut conn).await?;
        match reply.first() {
            Some(0x00) => break,
            Some(0xfe) => {
                let switch =
                    AuthSwitchRequest::deserialize((), &mut ParseBuf(&reply)).map_err(|e| e.to_string())?;
                let data = switch.auth_plugin().gen_data(Some(""), switch.plugin_data());
                conn.write_all(&packet(seq.wrapping_add(1), data.as_deref().unwrap_or(&[])))
                    .await
                    .map_err(|e| e.to_string())?;
            }
            _ => return Err(format!("login failed: {}", String::from_utf8_lossy(&reply))),
        }
    }
    Ok((conn, handshake.server_version_str().into_owned(), caps))
}
