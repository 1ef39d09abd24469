//! Property tests of the two parsers every client byte goes through first:
//! the packet framing (`PacketStream::read_packet` / `read_logical`) and the
//! handshake response (`parse_handshake_response`).
//!
//! Framing: whatever sizes the socket hands the bytes over in (one byte at a
//! time, odd sizes, reads that first return `Pending`), the same packets
//! come out; a stream cut anywhere yields the whole packets before the cut
//! and then `UnexpectedEof`; the size limit refuses exactly what is over it.
//! Continuations (16 MiB physical packets) are tested with real sizes in a
//! few cases only, since `MAX_PAYLOAD` is a constant.
//!
//! Handshake: arbitrary bytes (and mutated valid responses) never panic; a
//! response serialized by `mysql_common` with random user, schema, auth
//! data, plugin, attributes and capabilities parses back to the same fields.

use mysql_common::constants::MariadbCapabilities;
use mysql_common::packets::{AuthPlugin, HandshakeResponse};
use mysql_common::proto::MySerialize;
use proptest::prelude::*;
use sluice_protocol::consts::CapabilityFlags as Caps;
use sluice_protocol::handshake::{is_ssl_request, parse_handshake_response};
use sluice_protocol::{MAX_PAYLOAD, PacketStream};
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

// ---------------------------------------------------------------------------
// A socket that delivers its input in chosen read sizes.

/// Input handed over in `sizes` (cycled) per read; before a read whose
/// `pending` entry (cycled) is set, the first poll returns `Pending` (and
/// wakes itself), as a socket with nothing ready yet does. Writes are kept.
struct Chunked {
    input: Vec<u8>,
    pos: usize,
    sizes: Vec<usize>,
    pending: Vec<bool>,
    reads: usize,
    pended: bool,
    written: Vec<u8>,
}

impl Chunked {
    fn new(input: Vec<u8>, sizes: Vec<usize>, pending: Vec<bool>) -> Self {
        assert!(sizes.iter().all(|&s| s > 0), "a read of 0 bytes means EOF");
        Chunked {
            input,
            pos: 0,
            sizes,
            pending,
            reads: 0,
            pended: false,
            written: Vec::new(),
        }
    }

    fn writer() -> Self {
        Chunked::new(Vec::new(), vec![1], vec![false])
    }
}

impl AsyncRead for Chunked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let wants_pending = !this.pending.is_empty() && this.pending[this.reads % this.pending.len()];
        if wants_pending && !this.pended {
            this.pended = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        this.pended = false;
        let size = this.sizes[this.reads % this.sizes.len()];
        this.reads += 1;
        let n = size.min(buf.remaining()).min(this.input.len() - this.pos);
        buf.put_slice(&this.input[this.pos..this.pos + n]);
        this.pos += n;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Chunked {
    fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.written.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
        .block_on(f)
}

/// One physical packet, framed by hand (an oracle independent of the code
/// under test).
fn frame(out: &mut Vec<u8>, seq: u8, payload: &[u8]) {
    assert!(payload.len() <= MAX_PAYLOAD);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes()[..3]);
    out.push(seq);
    out.extend_from_slice(payload);
}

/// A logical packet framed as the protocol says: physical packets of
/// MAX_PAYLOAD bytes while it lasts, then the rest (possibly empty).
/// Returns the sequence id after its last packet.
fn frame_logical(out: &mut Vec<u8>, mut seq: u8, payload: &[u8]) -> u8 {
    let mut rest = payload;
    loop {
        let n = rest.len().min(MAX_PAYLOAD);
        frame(out, seq, &rest[..n]);
        seq = seq.wrapping_add(1);
        rest = &rest[n..];
        if n < MAX_PAYLOAD {
            return seq;
        }
    }
}

/// Packets read until the first error, and that error's kind.
async fn read_all_physical(stream: &mut PacketStream<Chunked>) -> (Vec<(u8, Vec<u8>)>, io::ErrorKind) {
    let mut out = Vec::new();
    loop {
        match stream.read_packet().await {
            Ok(p) => out.push((p.seq, p.payload.to_vec())),
            Err(e) => return (out, e.kind()),
        }
    }
}

fn small_packets() -> impl Strategy<Value = Vec<(u8, Vec<u8>)>> {
    prop::collection::vec((any::<u8>(), prop::collection::vec(any::<u8>(), 0..600)), 0..24)
}

/// Read sizes: mostly small and odd, sometimes one byte, sometimes large.
fn read_sizes() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(
        prop_oneof![3 => 1usize..8, 3 => 1usize..700, 1 => 1usize..70_000],
        1..16,
    )
}

fn pendings() -> impl Strategy<Value = Vec<bool>> {
    prop::collection::vec(any::<bool>(), 1..8)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Any split of the byte stream into reads yields the same packets,
    /// then `UnexpectedEof` at the end of the input.
    #[test]
    fn physical_packets_survive_any_read_split(
        packets in small_packets(),
        sizes in read_sizes(),
        pending in pendings(),
        chunk in prop_oneof![Just(16 * 1024usize), 1usize..512],
    ) {
        let mut input = Vec::new();
        for (seq, payload) in &packets {
            frame(&mut input, *seq, payload);
        }
        let mut stream = PacketStream::with_chunk(Chunked::new(input, sizes, pending), chunk);
        let (got, end) = block_on(read_all_physical(&mut stream));
        prop_assert_eq!(got, packets);
        prop_assert_eq!(end, io::ErrorKind::UnexpectedEof);
    }

    /// `read_logical` over packets below the continuation size: each comes
    /// back whole with its sequence id as both first and last, whatever the
    /// read split; `readable` and `has_buffered_packet` agree with it.
    #[test]
    fn logical_packets_survive_any_read_split(
        packets in small_packets(),
        sizes in read_sizes(),
        pending in pendings(),
    ) {
        let mut input = Vec::new();
        for (seq, payload) in &packets {
            frame(&mut input, *seq, payload);
        }
        let mut stream = PacketStream::new(Chunked::new(input, sizes, pending));
        let got = block_on(async {
            let mut got = Vec::new();
            loop {
                if let Err(e) = stream.readable().await {
                    assert!(!stream.has_buffered_packet());
                    return (got, e.kind());
                }
                match stream.read_logical(1 << 20).await {
                    Ok((first, last, payload)) => got.push((first, last, payload.to_vec())),
                    Err(e) => return (got, e.kind()),
                }
            }
        });
        let want: Vec<_> = packets.iter().map(|(s, p)| (*s, *s, p.clone())).collect();
        prop_assert_eq!(got.0, want);
        prop_assert_eq!(got.1, io::ErrorKind::UnexpectedEof);
    }

    /// A stream cut at any byte yields the packets wholly before the cut,
    /// then `UnexpectedEof`: never a partial packet, never a panic.
    #[test]
    fn a_cut_stream_yields_whole_packets_then_eof(
        packets in small_packets(),
        cut in any::<prop::sample::Index>(),
        sizes in read_sizes(),
    ) {
        let mut input = Vec::new();
        let mut ends = Vec::new();
        for (seq, payload) in &packets {
            frame(&mut input, *seq, payload);
            ends.push(input.len());
        }
        let cut = cut.index(input.len() + 1);
        input.truncate(cut);
        let whole = ends.iter().filter(|&&e| e <= cut).count();
        let mut stream = PacketStream::new(Chunked::new(input, sizes, vec![false]));
        let (got, end) = block_on(read_all_physical(&mut stream));
        prop_assert_eq!(&got[..], &packets[..whole]);
        prop_assert_eq!(end, io::ErrorKind::UnexpectedEof);
    }

    /// Lying length headers (any 3-byte length, any sequence id, too few
    /// bytes behind them) and arbitrary garbage: reading never panics and
    /// ends in an error once the input is used up.
    #[test]
    fn arbitrary_bytes_never_panic(
        input in prop::collection::vec(any::<u8>(), 0..2000),
        sizes in read_sizes(),
        limit in 0usize..4096,
    ) {
        let mut stream = PacketStream::new(Chunked::new(input.clone(), sizes.clone(), vec![false]));
        let consumed: usize = block_on(async {
            let mut consumed = 0;
            while let Ok((_, _, p)) = stream.read_logical(limit).await {
                consumed += 4 + p.len();
            }
            consumed
        });
        prop_assert!(consumed <= input.len());
        let mut stream = PacketStream::new(Chunked::new(input.clone(), sizes, vec![false]));
        let (got, end) = block_on(read_all_physical(&mut stream));
        prop_assert!(got.iter().map(|(_, p)| 4 + p.len()).sum::<usize>() <= input.len());
        prop_assert_eq!(end, io::ErrorKind::UnexpectedEof);
    }

    /// `queue_logical` / `send` then `read_logical` round-trips every
    /// payload and numbers packets as the protocol does (sequence ids wrap).
    #[test]
    fn queued_packets_read_back(
        packets in small_packets(),
        sizes in read_sizes(),
    ) {
        let mut writer = PacketStream::new(Chunked::writer());
        let mut nexts = Vec::new();
        block_on(async {
            for (seq, payload) in &packets {
                nexts.push(writer.send(*seq, payload).await.unwrap());
            }
        });
        for ((seq, _), next) in packets.iter().zip(&nexts) {
            prop_assert_eq!(*next, seq.wrapping_add(1));
        }
        let mut expected = Vec::new();
        for (seq, payload) in &packets {
            frame(&mut expected, *seq, payload);
        }
        prop_assert_eq!(&writer.get_ref().written, &expected);
        let mut reader = PacketStream::new(Chunked::new(expected, sizes, vec![false]));
        let got = block_on(async {
            let mut got = Vec::new();
            while let Ok((first, last, payload)) = reader.read_logical(usize::MAX).await {
                got.push((first, last, payload.to_vec()));
            }
            got
        });
        let want: Vec<_> = packets.iter().map(|(s, p)| (*s, *s, p.clone())).collect();
        prop_assert_eq!(got, want);
    }

    /// The size limit refuses exactly the packets larger than it.
    #[test]
    fn the_limit_refuses_exactly_what_is_over_it(
        len in 0usize..3000,
        limit in 0usize..3000,
        seq in any::<u8>(),
        sizes in read_sizes(),
    ) {
        let mut input = Vec::new();
        frame(&mut input, seq, &vec![0x5a; len]);
        let mut stream = PacketStream::new(Chunked::new(input, sizes, vec![false]));
        match block_on(stream.read_logical(limit)) {
            Ok((first, last, payload)) => {
                prop_assert!(len <= limit);
                prop_assert_eq!((first, last, payload.len()), (seq, seq, len));
            }
            Err(e) => {
                prop_assert!(len > limit, "refused {len} bytes under a limit of {limit}: {e}");
                prop_assert_eq!(e.kind(), io::ErrorKind::InvalidData);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Continuations: real 16 MiB physical packets, so only a few cases.

/// Lengths around the continuation boundaries.
fn boundary_len() -> impl Strategy<Value = usize> {
    prop_oneof![
        Just(MAX_PAYLOAD - 1),
        Just(MAX_PAYLOAD),
        Just(MAX_PAYLOAD + 1),
        (1usize..4096).prop_map(|k| MAX_PAYLOAD + k),
        Just(2 * MAX_PAYLOAD),
        (1usize..4096).prop_map(|k| 2 * MAX_PAYLOAD + k),
    ]
}

/// A cheap deterministic payload (random 16 MiB vectors are slow to make).
fn filled(len: usize, salt: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(salt) ^ (i >> 16) as u8)
        .collect()
}

/// Large reads only: a byte at a time over 16 MiB would take seconds.
fn big_read_sizes() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(prop_oneof![1usize..4096, 4096usize..(1 << 20)], 1..6)
        .prop_filter("mostly large reads", |v| v.iter().sum::<usize>() >= 64 * 1024)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, max_shrink_iters: 16, ..ProptestConfig::default() })]

    /// A logical packet at or past 16 MiB is joined from its continuations
    /// whatever the read split (the last sequence id is the last physical
    /// packet's, wrapping past 255), and the packet after it is intact.
    #[test]
    fn continuations_join_across_any_read_split(
        len in boundary_len(),
        seq in prop_oneof![Just(255u8), Just(254u8), any::<u8>()],
        salt in any::<u8>(),
        sizes in big_read_sizes(),
        pending in pendings(),
    ) {
        let payload = filled(len, salt);
        let mut input = Vec::new();
        let next = frame_logical(&mut input, seq, &payload);
        frame(&mut input, next, b"\x0etail");
        let mut stream = PacketStream::new(Chunked::new(input, sizes, pending));
        let (first, last, got, tail) = block_on(async {
            let (first, last, got) = stream.read_logical(64 << 20).await.unwrap();
            let tail = stream.read_logical(64 << 20).await.unwrap();
            (first, last, got, tail)
        });
        prop_assert_eq!((first, last), (seq, next.wrapping_sub(1)));
        prop_assert!(got[..] == payload[..], "joined payload differs ({} bytes)", len);
        prop_assert_eq!((tail.0, tail.1, &tail.2[..]), (next, next, &b"\x0etail"[..]));

        // Written back by queue_logical: the same physical packets.
        let mut writer = PacketStream::new(Chunked::writer());
        let after = block_on(writer.send(seq, &payload)).unwrap();
        prop_assert_eq!(after, next);
        let mut expected = Vec::new();
        frame_logical(&mut expected, seq, &payload);
        prop_assert!(writer.get_ref().written == expected, "queue_logical framed differently");
    }

    /// Continuations: a total over the limit, or a sequence id out of order,
    /// is refused with InvalidData (not a panic, not a wrong join).
    #[test]
    fn continuations_are_limited_and_ordered(
        len in boundary_len().prop_filter("continued", |&l| l >= MAX_PAYLOAD),
        seq in any::<u8>(),
        bad_seq_delta in 2u8..=255,
        sizes in big_read_sizes(),
    ) {
        let payload = filled(len, 7);
        let mut input = Vec::new();
        frame_logical(&mut input, seq, &payload);

        // One byte under the total.
        let mut stream = PacketStream::new(Chunked::new(input.clone(), sizes.clone(), vec![false]));
        let err = block_on(stream.read_logical(len - 1)).unwrap_err();
        prop_assert_eq!(err.kind(), io::ErrorKind::InvalidData);

        // The second physical packet numbered wrongly.
        let second = 4 + MAX_PAYLOAD;
        input[second + 3] = seq.wrapping_add(bad_seq_delta);
        let mut stream = PacketStream::new(Chunked::new(input, sizes, vec![false]));
        let err = block_on(stream.read_logical(64 << 20)).unwrap_err();
        prop_assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }
}

// ---------------------------------------------------------------------------
// Handshake responses.

/// Every capability the parser knows of.
fn any_caps() -> impl Strategy<Value = Caps> {
    any::<u32>().prop_map(Caps::from_bits_truncate)
}

/// Bytes without NUL (user and schema names are NUL-terminated).
fn c_string(min: usize, max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(1u8..=255, min..max)
}

fn plugin() -> impl Strategy<Value = Option<AuthPlugin<'static>>> {
    prop_oneof![
        Just(None),
        Just(Some(AuthPlugin::MysqlNativePassword)),
        Just(Some(AuthPlugin::CachingSha2Password)),
        Just(Some(AuthPlugin::MysqlClearPassword)),
        Just(Some(AuthPlugin::Ed25519)),
        c_string(1, 40).prop_map(|name| Some(AuthPlugin::Other(name.into()))),
    ]
}

fn attributes() -> impl Strategy<Value = Option<HashMap<String, String>>> {
    prop::option::of(prop::collection::hash_map(any::<String>(), any::<String>(), 0..6))
}

/// A valid response as mysql_common writes it, and the fields the parser
/// must return for it. The auth data fits the encoding the flags select
/// (length-encoded, one length byte, or NUL-terminated).
#[derive(Debug, Clone)]
struct Valid {
    bytes: Vec<u8>,
    caps: Caps,
    max_packet: u32,
    collation: u8,
    mariadb_caps: u32,
    user: Vec<u8>,
    auth: Vec<u8>,
    db: Option<Vec<u8>>,
    plugin: Option<Vec<u8>>,
    attrs: Vec<(String, String)>,
}

prop_compose! {
    fn valid_response()(
        raw_caps in any_caps(),
        max_packet in any::<u32>(),
        collation in any::<u8>(),
        mariadb in any::<u32>(),
        user in c_string(0, 40),
        db in prop::option::of(c_string(1, 40)),
        plugin in plugin(),
        attrs in attributes(),
        lenenc_auth in prop::collection::vec(any::<u8>(), 0..300),
        short_auth in prop::collection::vec(any::<u8>(), 0..=255),
        nul_free_auth in c_string(0, 40),
    ) -> Valid {
        let requested = raw_caps | Caps::CLIENT_PROTOCOL_41;
        let auth = if requested.contains(Caps::CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA) {
            lenenc_auth
        } else if requested.contains(Caps::CLIENT_SECURE_CONNECTION) {
            short_auth
        } else {
            nul_free_auth
        };
        let mariadb_caps = MariadbCapabilities::from_bits_truncate(mariadb);
        let resp = HandshakeResponse::new(
            Some(auth.clone()),
            (10, 11, 0),
            Some(user.clone()),
            db.clone(),
            plugin.clone(),
            requested,
            attrs.clone(),
            max_packet,
        )
        .with_mariadb_ext_capabilities(mariadb_caps);
        let caps = resp.capabilities();
        let mut bytes = Vec::new();
        resp.serialize(&mut bytes);
        bytes[8] = collation;
        let mut attrs: Vec<(String, String)> = attrs.unwrap_or_default().into_iter().collect();
        attrs.sort();
        Valid {
            bytes,
            caps,
            max_packet,
            collation,
            mariadb_caps: if caps.contains(Caps::CLIENT_LONG_PASSWORD) { 0 } else { mariadb_caps.bits() },
            user,
            auth,
            db,
            plugin: plugin.map(|p| p.as_bytes().to_vec()),
            attrs,
        }
    }
}

/// One edit of a valid response: a byte changed, a cut, an insertion.
#[derive(Debug, Clone)]
enum Edit {
    Set(prop::sample::Index, u8),
    Truncate(prop::sample::Index),
    Insert(prop::sample::Index, Vec<u8>),
    Remove(prop::sample::Index, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        4 => (any::<prop::sample::Index>(), prop_oneof![Just(0u8), Just(0xfb), Just(0xfc), Just(0xfd), Just(0xfe), Just(0xff), any::<u8>()])
            .prop_map(|(i, b)| Edit::Set(i, b)),
        2 => any::<prop::sample::Index>().prop_map(Edit::Truncate),
        1 => (any::<prop::sample::Index>(), prop::collection::vec(any::<u8>(), 1..12)).prop_map(|(i, b)| Edit::Insert(i, b)),
        1 => (any::<prop::sample::Index>(), 1usize..16).prop_map(|(i, n)| Edit::Remove(i, n)),
    ]
}

fn apply(bytes: &mut Vec<u8>, edit: &Edit) {
    match edit {
        Edit::Set(i, b) if !bytes.is_empty() => {
            let i = i.index(bytes.len());
            bytes[i] = *b;
        }
        Edit::Set(..) => {}
        Edit::Truncate(i) => bytes.truncate(i.index(bytes.len() + 1)),
        Edit::Insert(i, b) => {
            let i = i.index(bytes.len() + 1);
            bytes.splice(i..i, b.iter().copied());
        }
        Edit::Remove(i, n) => {
            let i = i.index(bytes.len() + 1);
            let end = (i + n).min(bytes.len());
            bytes.drain(i..end);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    /// Arbitrary bytes and capabilities: an answer, never a panic.
    #[test]
    fn handshake_parser_never_panics(
        bytes in prop::collection::vec(any::<u8>(), 0..400),
        protocol41 in any::<bool>(),
        server_caps in any_caps(),
    ) {
        let mut bytes = bytes;
        if protocol41 && bytes.len() >= 4 {
            // Past the first check more often.
            bytes[1] |= (Caps::CLIENT_PROTOCOL_41.bits() >> 8) as u8;
        }
        let _ = is_ssl_request(&bytes);
        let _ = parse_handshake_response(&bytes, server_caps);
    }

    /// Valid responses with a few edits (bytes changed, cut, inserted,
    /// removed), against any server capabilities: never a panic.
    #[test]
    fn mutated_handshake_responses_never_panic(
        valid in valid_response(),
        edits in prop::collection::vec(edit(), 1..6),
        server_caps in any_caps(),
    ) {
        let mut bytes = valid.bytes.clone();
        for e in &edits {
            apply(&mut bytes, e);
        }
        let _ = is_ssl_request(&bytes);
        let _ = parse_handshake_response(&bytes, server_caps);
        let _ = parse_handshake_response(&bytes, valid.caps);
    }

    /// A response mysql_common serialized parses back to the same fields
    /// when the server offered at least what the client asked for; every
    /// prefix of it parses or is refused without a panic.
    #[test]
    fn handshake_responses_round_trip(
        valid in valid_response(),
        extra_server_caps in any_caps(),
    ) {
        let server_caps = valid.caps | extra_server_caps;
        let parsed = parse_handshake_response(&valid.bytes, server_caps);
        let parsed = match parsed {
            Ok(p) => p,
            Err(e) => return Err(TestCaseError::fail(format!("refused: {e}; bytes {:02x?}", valid.bytes))),
        };
        prop_assert!(!is_ssl_request(&valid.bytes));
        prop_assert_eq!(parsed.capabilities, valid.caps);
        prop_assert_eq!(parsed.max_packet, valid.max_packet);
        prop_assert_eq!(parsed.collation, valid.collation);
        prop_assert_eq!(parsed.mariadb_capabilities, valid.mariadb_caps);
        prop_assert_eq!(&parsed.user, &valid.user);
        prop_assert_eq!(&parsed.auth_response, &valid.auth);
        prop_assert_eq!(&parsed.database, &valid.db);
        prop_assert_eq!(&parsed.auth_plugin, &valid.plugin);
        let mut attrs = parsed.attributes.clone();
        attrs.sort();
        prop_assert_eq!(&attrs, &valid.attrs);
        prop_assert_eq!(parsed.attributes.len(), valid.attrs.len(), "no attribute read twice");

        for cut in 0..valid.bytes.len() {
            let _ = parse_handshake_response(&valid.bytes[..cut], server_caps);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// An attribute block is accepted up to 65535 bytes and refused past
    /// that (as the server refuses it), wherever the boundary falls in a
    /// key or a value.
    #[test]
    fn attribute_blocks_over_64_kib_are_refused(
        value_len in 65_400usize..65_700,
        key_len in 1usize..300,
        server_extra in any_caps(),
    ) {
        let caps = Caps::CLIENT_PROTOCOL_41
            | Caps::CLIENT_SECURE_CONNECTION
            | Caps::CLIENT_PLUGIN_AUTH
            | Caps::CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
            | Caps::CLIENT_CONNECT_ATTRS;
        let mut block = Vec::new();
        sluice_protocol::packets::put_lenenc_bytes(&mut block, &vec![b'k'; key_len]);
        sluice_protocol::packets::put_lenenc_bytes(&mut block, &vec![b'v'; value_len]);
        let mut p = caps.bits().to_le_bytes().to_vec();
        p.extend_from_slice(&(1u32 << 24).to_le_bytes());
        p.push(45);
        p.extend_from_slice(&[0; 23]);
        p.extend_from_slice(b"app\0");
        sluice_protocol::packets::put_lenenc_bytes(&mut p, &[7; 20]);
        p.extend_from_slice(b"mysql_native_password\0");
        sluice_protocol::packets::put_lenenc_bytes(&mut p, &block);
        let parsed = parse_handshake_response(&p, caps | server_extra);
        if block.len() <= 65_535 {
            let parsed = parsed.map_err(|e| TestCaseError::fail(format!("{} bytes refused: {e}", block.len())))?;
            prop_assert_eq!(parsed.attributes.len(), 1);
            prop_assert_eq!(parsed.attributes[0].1.len(), value_len);
        } else {
            prop_assert!(parsed.is_err(), "{} bytes accepted", block.len());
        }
    }
}
