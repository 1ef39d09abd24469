//! Physical packet framing: a 3-byte little-endian length, a sequence id, and
//! the payload. A payload of exactly [`MAX_PAYLOAD`] bytes continues in the
//! next packet; the relay forwards physical packets one by one, so a logical
//! packet of any size passes through in bounded memory.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::io;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest payload of one physical packet (16 MiB - 1).
pub const MAX_PAYLOAD: usize = 0xff_ff_ff;

/// Flush the write buffer once it holds this much, even mid-response.
const FLUSH_THRESHOLD: usize = 64 * 1024;
const READ_CHUNK: usize = 16 * 1024;

/// One physical packet.
#[derive(Debug, Clone)]
pub struct Packet {
    pub seq: u8,
    pub payload: Bytes,
}

impl Packet {
    /// True when the logical packet continues in the next physical packet.
    pub fn is_continued(&self) -> bool {
        self.payload.len() == MAX_PAYLOAD
    }

    pub fn first_byte(&self) -> Option<u8> {
        self.payload.first().copied()
    }
}

/// A byte stream with a read buffer and a write buffer, read and written in
/// whole packets.
#[derive(Debug)]
pub struct PacketStream<S> {
    io: S,
    rbuf: BytesMut,
    wbuf: BytesMut,
    /// Bytes reserved per read when the buffer is empty: large for backend
    /// connections (throughput), small for clients (thousands sit idle).
    chunk: usize,
    /// How long one flush may wait for the peer to take the bytes (the
    /// server's `net_write_timeout`): a client that stops reading must not
    /// hold its session, and the backend connection it uses, forever.
    write_timeout: Option<std::time::Duration>,
    /// How long one read inside a packet may wait (the server's
    /// `net_read_timeout`); waiting for the next packet to start is not
    /// limited here (`readable` is the idle wait).
    read_timeout: Option<std::time::Duration>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> PacketStream<S> {
    pub fn new(io: S) -> Self {
        Self::with_chunk(io, READ_CHUNK)
    }

    /// A stream whose read buffer grows from `chunk` bytes.
    pub fn with_chunk(io: S, chunk: usize) -> Self {
        Self {
            io,
            rbuf: BytesMut::new(),
            wbuf: BytesMut::new(),
            chunk,
            write_timeout: None,
            read_timeout: None,
        }
    }

    /// Fails a read that waits longer than `limit` once a packet has begun
    /// or is awaited by `read_packet` (TimedOut).
    pub fn with_read_timeout(mut self, limit: std::time::Duration) -> Self {
        self.read_timeout = Some(limit);
        self
    }

    /// Fails a flush that cannot complete within `limit` (TimedOut).
    pub fn with_write_timeout(mut self, limit: std::time::Duration) -> Self {
        self.write_timeout = Some(limit);
        self
    }

    /// The stream itself, to change its transport (a TLS upgrade after the
    /// SSLRequest packet). Fails when bytes are buffered either way: bytes
    /// the peer sent before the upgrade must not be read as if they had
    /// come over the upgraded stream.
    pub fn into_inner(self) -> io::Result<S> {
        if !self.rbuf.is_empty() || !self.wbuf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "unexpected bytes around a transport upgrade",
            ));
        }
        Ok(self.io)
    }

    pub fn get_ref(&self) -> &S {
        &self.io
    }

    pub fn io_mut(&mut self) -> &mut S {
        &mut self.io
    }

    /// Takes the bytes read but not yet consumed as packets (a TLS
    /// upgrade hands them to the TLS layer).
    pub fn take_read_buffer(&mut self) -> bytes::Bytes {
        self.rbuf.split().freeze()
    }

    /// Reads one physical packet. A clean EOF before any byte of a packet is
    /// `UnexpectedEof` like any other EOF: the peer went away.
    pub async fn read_packet(&mut self) -> io::Result<Packet> {
        loop {
            if let Some(packet) = self.take_buffered() {
                return Ok(packet);
            }
            if self.rbuf.len() >= 4 {
                let need = 4 + payload_len(&self.rbuf);
                self.rbuf.reserve(need.saturating_sub(self.rbuf.len()));
            } else {
                self.rbuf.reserve(self.chunk);
            }
            let read = match self.read_timeout {
                None => self.io.read_buf(&mut self.rbuf).await?,
                Some(limit) => {
                    // The timer is armed only when the bytes are not there
                    // yet: most reads complete at once, and a timer per
                    // read is measurable on the per-query path.
                    let mut read = std::pin::pin!(self.io.read_buf(&mut self.rbuf));
                    match poll_once(read.as_mut()).await {
                        Some(done) => done?,
                        None => tokio::time::timeout(limit, read).await.map_err(|_| {
                            io::Error::new(io::ErrorKind::TimedOut, "peer stalled in the middle of a packet")
                        })??,
                    }
                }
            };
            if read == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed by peer",
                ));
            }
        }
    }

    /// Reads a whole logical packet (joining continuations), refusing one
    /// larger than `limit` bytes. Returns the first sequence id, the last
    /// one, and the payload.
    pub async fn read_logical(&mut self, limit: usize) -> io::Result<(u8, u8, Bytes)> {
        let first = self.read_packet().await?;
        if first.payload.len() > limit {
            return Err(too_large());
        }
        if !first.is_continued() {
            return Ok((first.seq, first.seq, first.payload));
        }
        let mut joined = BytesMut::from(&first.payload[..]);
        let mut last_seq = first.seq;
        loop {
            let next = self.read_packet().await?;
            if next.seq != last_seq.wrapping_add(1) {
                return Err(out_of_order());
            }
            last_seq = next.seq;
            if joined.len() + next.payload.len() > limit {
                return Err(too_large());
            }
            joined.extend_from_slice(&next.payload);
            if !next.is_continued() {
                return Ok((first.seq, last_seq, joined.freeze()));
            }
        }
    }

    /// Waits until some input is buffered. Cancel-safe (bytes read stay in
    /// the buffer), unlike `read_logical`, which may have taken part of a
    /// large packet when cancelled.
    pub async fn readable(&mut self) -> io::Result<()> {
        if !self.rbuf.is_empty() {
            return Ok(());
        }
        // The stream's own chunk: a client waiting for its next command
        // must not hold a large buffer (thousands of them sit idle).
        self.rbuf.reserve(self.chunk);
        if self.io.read_buf(&mut self.rbuf).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed by peer",
            ));
        }
        Ok(())
    }

    /// True when a complete packet is already buffered, so reading it will
    /// not wait on the socket.
    pub fn has_buffered_packet(&self) -> bool {
        self.rbuf.len() >= 4 && self.rbuf.len() >= 4 + payload_len(&self.rbuf)
    }

    fn take_buffered(&mut self) -> Option<Packet> {
        if !self.has_buffered_packet() {
            return None;
        }
        let len = payload_len(&self.rbuf);
        let seq = self.rbuf[3];
        self.rbuf.advance(4);
        let payload = self.rbuf.split_to(len).freeze();
        Some(Packet { seq, payload })
    }

    /// Moves every complete row-like packet already buffered here (not
    /// EOF, ERR, empty or continued) into `dst`'s write buffer, numbering
    /// them from `seq`. Returns how many moved. This is the relay's hot
    /// loop for result sets: one copy per packet, no allocation.
    pub fn move_rows_to<T>(&mut self, dst: &mut PacketStream<T>, seq: &mut u8) -> usize {
        let mut moved = 0;
        while self.rbuf.len() >= 4 {
            let len = payload_len(&self.rbuf);
            if len == 0 || len == MAX_PAYLOAD || self.rbuf.len() < 4 + len {
                break;
            }
            let first = self.rbuf[4];
            if first == 0xff || (first == 0xfe && len < 9) {
                break;
            }
            let at = dst.wbuf.len();
            dst.wbuf.extend_from_slice(&self.rbuf[..4 + len]);
            dst.wbuf[at + 3] = *seq;
            *seq = seq.wrapping_add(1);
            self.rbuf.advance(4 + len);
            moved += 1;
        }
        moved
    }

    /// Moves a whole result set already buffered here to `dst` in a few
    /// copies, renumbered from `seq`; for a DEPRECATE_EOF client the EOF
    /// after the definitions is dropped and the final one becomes an OK.
    /// The column count and definitions cross the metadata cache as
    /// [`crate::result_set::plan_columns`] says. None, moving nothing,
    /// unless [`crate::result_set::scan`] finds one, or when the backend
    /// sent new definitions and `keep_new_defs` (the caller records them).
    /// Otherwise the result set, and whether skipped definitions were sent
    /// to the client.
    pub fn move_result_set_to<T>(
        &mut self,
        dst: &mut PacketStream<T>,
        seq: &mut u8,
        deprecate_eof: bool,
        meta: &crate::result_set::Metadata<'_>,
        keep_new_defs: bool,
    ) -> Option<(crate::result_set::Scanned, bool)> {
        let found = crate::result_set::scan(&self.rbuf, meta.backend_flag)?;
        if keep_new_defs && meta.backend_flag && found.follows {
            return None;
        }
        let buf = &self.rbuf[..found.len];
        let plan = crate::result_set::plan_columns(&buf[4..found.count_end], meta)?;
        let inserted: usize = plan
            .insert
            .map_or(0, |defs| defs.iter().map(|d| 4 + d.len()).sum());
        dst.wbuf.reserve(found.len + inserted + 8);
        let copy = |wbuf: &mut BytesMut, part: &[u8], seq: &mut u8| {
            let start = wbuf.len();
            wbuf.extend_from_slice(part);
            crate::result_set::renumber(&mut wbuf[start..], seq);
        };
        match (plan.count, plan.insert) {
            // The common case: count and definitions as they came.
            (None, None) => copy(&mut dst.wbuf, &buf[..found.columns_end], seq),
            (count, insert) => {
                match count {
                    None => copy(&mut dst.wbuf, &buf[..found.count_end], seq),
                    Some(count) => {
                        put_packet(&mut dst.wbuf, *seq, count.as_slice());
                        *seq = seq.wrapping_add(1);
                    }
                }
                for def in insert.unwrap_or_default() {
                    put_packet(&mut dst.wbuf, *seq, def);
                    *seq = seq.wrapping_add(1);
                }
                copy(&mut dst.wbuf, &buf[found.count_end..found.columns_end], seq);
            }
        }
        if deprecate_eof {
            copy(&mut dst.wbuf, &buf[found.rows_start..found.final_eof], seq);
            put_packet(
                &mut dst.wbuf,
                *seq,
                &crate::packets::ok_as_eof(found.warnings, found.status),
            );
            *seq = seq.wrapping_add(1);
        } else {
            copy(&mut dst.wbuf, &buf[found.columns_end..], seq);
        }
        self.rbuf.advance(found.len);
        Some((found, plan.insert.is_some()))
    }

    /// Bytes queued for writing.
    pub fn pending_write(&self) -> usize {
        self.wbuf.len()
    }

    /// Queues one physical packet; the payload must fit in one packet.
    pub fn queue_packet(&mut self, seq: u8, payload: &[u8]) {
        put_packet(&mut self.wbuf, seq, payload);
    }

    /// Queues a logical packet, splitting it into physical packets as needed.
    /// Returns the sequence id the next packet should carry.
    pub fn queue_logical(&mut self, mut seq: u8, payload: &[u8]) -> u8 {
        let mut chunks = payload.chunks(MAX_PAYLOAD);
        let mut last_len = 0;
        for chunk in chunks.by_ref() {
            self.queue_packet(seq, chunk);
            seq = seq.wrapping_add(1);
            last_len = chunk.len();
        }
        // A payload that is an exact multiple of MAX_PAYLOAD (or empty) ends
        // with an empty packet.
        if last_len == MAX_PAYLOAD || payload.is_empty() {
            self.queue_packet(seq, &[]);
            seq = seq.wrapping_add(1);
        }
        seq
    }

    /// Queues a logical packet given in pieces (written straight into the
    /// write buffer when it fits one physical packet). Returns the sequence
    /// id the next packet should carry.
    pub fn queue_parts(&mut self, seq: u8, parts: &[&[u8]]) -> u8 {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if len >= MAX_PAYLOAD {
            return self.queue_logical(seq, &parts.concat());
        }
        self.wbuf.reserve(4 + len);
        self.wbuf.put_slice(&header(len, seq));
        for part in parts {
            self.wbuf.put_slice(part);
        }
        seq.wrapping_add(1)
    }

    /// Queues one physical packet and flushes if the buffer grew large.
    pub async fn write_packet(&mut self, seq: u8, payload: &[u8]) -> io::Result<()> {
        self.queue_packet(seq, payload);
        if self.wbuf.len() >= FLUSH_THRESHOLD {
            self.flush().await?;
        }
        Ok(())
    }

    pub async fn flush(&mut self) -> io::Result<()> {
        if !self.wbuf.is_empty() {
            // `write_all` alone is not enough over TLS: a TLS stream may
            // accept every byte yet hold the last records until it is
            // flushed (when the socket was full), and the peer would wait
            // for them forever. On plain TCP the flush costs nothing.
            let io = &mut self.io;
            let wbuf = &self.wbuf;
            let mut write = std::pin::pin!(async move {
                io.write_all(wbuf).await?;
                io.flush().await
            });
            match self.write_timeout {
                None => write.await?,
                Some(limit) => {
                    // As for reads: a timer only when the peer is slow.
                    match poll_once(write.as_mut()).await {
                        Some(done) => done?,
                        None => tokio::time::timeout(limit, write)
                            .await
                            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "peer stopped reading"))??,
                    }
                }
            }
            self.wbuf.clear();
        }
        Ok(())
    }

    /// Queues and flushes one logical packet.
    pub async fn send(&mut self, seq: u8, payload: &[u8]) -> io::Result<u8> {
        let next = self.queue_logical(seq, payload);
        self.flush().await?;
        Ok(next)
    }

    /// Bytes held in the buffers; used to keep idle connections small.
    pub fn buffered_capacity(&self) -> usize {
        self.rbuf.capacity() + self.wbuf.capacity()
    }

    /// Releases buffer memory of an idle connection that grew during a big
    /// result.
    pub fn shrink_buffers(&mut self) {
        if self.rbuf.is_empty() && self.rbuf.capacity() > 4 * self.chunk {
            self.rbuf = BytesMut::new();
        }
        if self.wbuf.is_empty() && self.wbuf.capacity() > 4 * READ_CHUNK {
            self.wbuf = BytesMut::new();
        }
    }

    pub async fn shutdown(&mut self) {
        let _ = self.flush().await;
        let _ = self.io.shutdown().await;
    }
}

/// Polls `fut` once: its output if it is ready now, else None (it stays
/// registered for a wake-up, so it can be awaited further).
async fn poll_once<F: std::future::Future>(mut fut: std::pin::Pin<&mut F>) -> Option<F::Output> {
    std::future::poll_fn(|cx| match fut.as_mut().poll(cx) {
        std::task::Poll::Ready(out) => std::task::Poll::Ready(Some(out)),
        std::task::Poll::Pending => std::task::Poll::Ready(None),
    })
    .await
}

/// Appends one physical packet; the payload must fit in one packet.
fn put_packet(wbuf: &mut BytesMut, seq: u8, payload: &[u8]) {
    debug_assert!(payload.len() <= MAX_PAYLOAD);
    wbuf.reserve(4 + payload.len());
    wbuf.put_slice(&header(payload.len(), seq));
    wbuf.put_slice(payload);
}

/// A packet header in one 4-byte value: the payload length (3 bytes, little
/// endian) and the sequence id. `put_uint_le` would copy its 3 bytes through
/// a memcpy call on every packet.
fn header(len: usize, seq: u8) -> [u8; 4] {
    ((len as u32 & 0x00ff_ffff) | u32::from(seq) << 24).to_le_bytes()
}

fn payload_len(buf: &[u8]) -> usize {
    buf[0] as usize | (buf[1] as usize) << 8 | (buf[2] as usize) << 16
}

fn too_large() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        "packet larger than max_allowed_packet",
    )
}

pub fn out_of_order() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "packets out of order")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One packet's bytes.
    fn framed(seq: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        put_packet(&mut out, seq, payload);
        out.to_vec()
    }

    #[tokio::test]
    async fn a_whole_result_set_moves_in_one_pass_as_the_packet_relay_would_send_it() {
        let def = b"\x03def\x00\x00\x00\x01c\x00\x0c\x08\x00";
        let (eof1, eof2) = ([0xfe, 0, 0, 0x02, 0], [0xfe, 1, 0, 0x22, 0]);
        let packets: [&[u8]; 6] = [&[1], def, &eof1, b"\x01a", b"\x02bc", &eof2];
        let wire: Vec<u8> = packets
            .iter()
            .enumerate()
            .flat_map(|(i, p)| framed(i as u8 + 1, p))
            .collect();
        let plain = crate::result_set::Metadata::default();
        for deprecate_eof in [false, true] {
            let (mut server, backend_side) = tokio::io::duplex(1 << 16);
            let (client_side, _peer) = tokio::io::duplex(1 << 16);
            tokio::io::AsyncWriteExt::write_all(&mut server, &wire)
                .await
                .unwrap();
            let mut backend = PacketStream::new(backend_side);
            let mut client = PacketStream::new(client_side);
            // Not all there yet: nothing moves, nothing is consumed.
            backend.readable().await.unwrap();
            while backend.rbuf.len() < wire.len() {
                backend.io.read_buf(&mut backend.rbuf).await.unwrap();
            }
            let mut seq = 7;
            let mut cut = backend.rbuf.split_off(wire.len() - 1);
            assert!(
                backend
                    .move_result_set_to(&mut client, &mut seq, deprecate_eof, &plain, false)
                    .is_none()
            );
            assert_eq!(
                (seq, client.wbuf.len(), backend.rbuf.len()),
                (7, 0, wire.len() - 1)
            );
            backend.rbuf.unsplit(cut.split());
            let (moved, inserted) = backend
                .move_result_set_to(&mut client, &mut seq, deprecate_eof, &plain, false)
                .expect("the whole result set");
            assert!(!inserted);
            assert_eq!((moved.rows, moved.warnings, moved.status), (2, 1, 0x22));
            assert!(backend.rbuf.is_empty());
            // What the packet-by-packet relay sends: every packet renumbered
            // from 7; for DEPRECATE_EOF no EOF after the definitions and the
            // last EOF as an OK.
            let mut want = Vec::new();
            let mut next = 7u8;
            for (i, p) in packets.iter().enumerate() {
                let p: Vec<u8> = match (deprecate_eof, i) {
                    (true, 2) => continue,
                    (true, 5) => crate::packets::ok_as_eof(1, 0x22).to_vec(),
                    _ => p.to_vec(),
                };
                want.extend(framed(next, &p));
                next += 1;
            }
            assert_eq!(&client.wbuf[..], &want[..], "deprecate_eof = {deprecate_eof}");
            assert_eq!(seq, next);
        }
    }

    /// Moves `wire` (already all read) to a fresh client stream from seq 7.
    async fn moved(
        wire: &[u8],
        deprecate_eof: bool,
        meta: &crate::result_set::Metadata<'_>,
        keep_new_defs: bool,
    ) -> Option<(Vec<u8>, bool)> {
        let (mut server, backend_side) = tokio::io::duplex(1 << 16);
        let (client_side, _peer) = tokio::io::duplex(1 << 16);
        tokio::io::AsyncWriteExt::write_all(&mut server, wire)
            .await
            .unwrap();
        let mut backend = PacketStream::new(backend_side);
        let mut client = PacketStream::new(client_side);
        while backend.rbuf.len() < wire.len() {
            backend.io.read_buf(&mut backend.rbuf).await.unwrap();
        }
        let mut seq = 7;
        let (_, inserted) =
            backend.move_result_set_to(&mut client, &mut seq, deprecate_eof, meta, keep_new_defs)?;
        Some((client.wbuf.to_vec(), inserted))
    }

    #[tokio::test]
    async fn a_whole_result_set_crosses_the_metadata_cache() {
        use crate::result_set::Metadata;
        let def = Bytes::from_static(b"\x03def\x00\x00\x00\x01c\x00\x0c\x08\x00");
        let defs = [def.clone()];
        let eof: &[u8] = &[0xfe, 0, 0, 0x02, 0];
        // Packets numbered from `first`: as the server sends them (from 1)
        // and as the client must get them (from 7).
        let numbered = |first: u8, packets: &[&[u8]]| -> Vec<u8> {
            packets
                .iter()
                .enumerate()
                .flat_map(|(i, p)| framed(i as u8 + first, p))
                .collect()
        };
        let wire = |packets: &[&[u8]]| numbered(1, packets);
        let expect = |packets: &[&[u8]]| numbered(7, packets);
        let skipped = wire(&[&[1, 0], eof, b"\x01a", eof]);
        let sent = wire(&[&[1, 1], &def, eof, b"\x01a", eof]);
        let caching = |current| Metadata {
            backend_flag: true,
            client_flag: true,
            skipped: Some((&defs[..], current)),
        };
        let plain_client = Metadata {
            backend_flag: true,
            client_flag: false,
            skipped: Some((&defs[..], false)),
        };
        // A caching client holding the definitions gets the skip as it is.
        assert_eq!(
            moved(&skipped, false, &caching(true), true).await,
            Some((expect(&[&[1, 0], eof, b"\x01a", eof]), false))
        );
        // One holding others gets them, announced.
        assert_eq!(
            moved(&skipped, false, &caching(false), true).await,
            Some((expect(&[&[1, 1], &def, eof, b"\x01a", eof]), true))
        );
        // A client without the cache gets them with a plain count, EOFs
        // translated for DEPRECATE_EOF.
        assert_eq!(
            moved(&skipped, true, &plain_client, true).await,
            Some((
                expect(&[&[1], &def, b"\x01a", &crate::packets::ok_as_eof(0, 2)]),
                true
            ))
        );
        // Sent definitions lose the byte for it (a text result, say)...
        assert_eq!(
            moved(&sent, false, &plain_client, false).await,
            Some((expect(&[&[1], &def, eof, b"\x01a", eof]), false))
        );
        // ...and gain it from a backend without the cache.
        let unflagged = wire(&[&[1], &def, eof, b"\x01a", eof]);
        let to_caching = Metadata {
            backend_flag: false,
            client_flag: true,
            skipped: None,
        };
        assert_eq!(
            moved(&unflagged, false, &to_caching, true).await,
            Some((expect(&[&[1, 1], &def, eof, b"\x01a", eof]), false))
        );
        // New definitions of an execute are left to the packet relay, which
        // records them; so is a skip Sluice has no definitions for.
        assert_eq!(moved(&sent, false, &caching(true), true).await, None);
        let unknown = Metadata {
            backend_flag: true,
            client_flag: true,
            skipped: None,
        };
        assert_eq!(moved(&skipped, false, &unknown, true).await, None);
    }

    #[tokio::test]
    async fn splits_and_joins_large_packets() {
        let (a, b) = tokio::io::duplex(1 << 20);
        let mut w = PacketStream::new(a);
        let mut r = PacketStream::new(b);
        let big = vec![7u8; MAX_PAYLOAD + 10];
        let writer = tokio::spawn(async move {
            let next = w.send(0, &big).await.unwrap();
            assert_eq!(next, 2);
            w.send(2, &[1, 2, 3]).await.unwrap();
            w
        });
        let (first, last, payload) = r.read_logical(64 << 20).await.unwrap();
        assert_eq!((first, last, payload.len()), (0, 1, MAX_PAYLOAD + 10));
        let small = r.read_packet().await.unwrap();
        assert_eq!((small.seq, &small.payload[..]), (2, &[1u8, 2, 3][..]));
        writer.await.unwrap();
    }

    #[tokio::test]
    async fn exact_multiple_ends_with_empty_packet() {
        let (a, b) = tokio::io::duplex(1 << 20);
        let mut w = PacketStream::new(a);
        let mut r = PacketStream::new(b);
        let big = vec![1u8; MAX_PAYLOAD];
        let writer = tokio::spawn(async move { w.send(5, &big).await.unwrap() });
        let (_, last, payload) = r.read_logical(64 << 20).await.unwrap();
        assert_eq!((last, payload.len()), (6, MAX_PAYLOAD));
        assert_eq!(writer.await.unwrap(), 7);
    }

    #[tokio::test]
    async fn oversized_single_packet_is_refused() {
        let (a, b) = tokio::io::duplex(1 << 20);
        let mut w = PacketStream::new(a);
        let mut r = PacketStream::new(b);
        tokio::spawn(async move { w.send(0, &[1u8; 5000]).await });
        let err = r.read_logical(4096).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[tokio::test]
    async fn oversized_logical_packet_is_refused() {
        let (a, b) = tokio::io::duplex(1 << 20);
        let mut w = PacketStream::new(a);
        let mut r = PacketStream::new(b);
        let big = vec![1u8; MAX_PAYLOAD + 100];
        tokio::spawn(async move { w.send(0, &big).await });
        let err = r.read_logical(MAX_PAYLOAD + 1).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    /// A stream that, like TLS, keeps written bytes until it is flushed.
    struct HoldsUntilFlush {
        held: Vec<u8>,
        delivered: Vec<u8>,
    }

    impl AsyncRead for HoldsUntilFlush {
        fn poll_read(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            _: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::task::Poll::Pending
        }
    }

    impl AsyncWrite for HoldsUntilFlush {
        fn poll_write(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<io::Result<usize>> {
            self.get_mut().held.extend_from_slice(buf);
            std::task::Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            let this = self.get_mut();
            let held = std::mem::take(&mut this.held);
            this.delivered.extend_from_slice(&held);
            std::task::Poll::Ready(Ok(()))
        }

        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_sent_packet_reaches_a_stream_that_holds_bytes_until_flushed() {
        let io = HoldsUntilFlush {
            held: Vec::new(),
            delivered: Vec::new(),
        };
        let mut s = PacketStream::new(io).with_write_timeout(std::time::Duration::from_secs(5));
        s.send(3, b"ping").await.unwrap();
        assert_eq!(s.get_ref().delivered, b"\x04\x00\x00\x03ping");
        assert!(s.get_ref().held.is_empty());
    }
}
