//! A whole result set found in a read buffer in one pass. Most answers (a
//! point select's column count, definitions, EOF, a row and the final EOF)
//! arrive in one read; relaying them packet by packet cost more than the
//! rest of the statement path. [`scan`] checks that the buffer holds one
//! complete, ordinary result set and says where its parts are, so the
//! frame layer can copy it in a few slices. Anything else (an error, more
//! results, a cursor, a packet not complete yet, a packet too large for
//! one frame) is left to the packet-by-packet relay.
//!
//! It also decides how a column count and its definitions cross between
//! the two sides of MariaDB's metadata cache ([`plan_columns`]), for both
//! the one-pass copy and the packet relay.

use crate::consts::status;
use crate::frame::MAX_PAYLOAD;
use crate::packets::{is_eof, parse_eof, read_lenenc_int};
use bytes::Bytes;

/// The two sides of MariaDB's metadata cache (`MARIADB_CLIENT_CACHE_METADATA`)
/// for one response. With it, every column count is followed by a
/// "metadata follows" byte, and an execute whose column definitions did
/// not change since the server last sent them for that statement sends 0
/// and skips them.
#[derive(Debug, Clone, Copy, Default)]
pub struct Metadata<'a> {
    /// The backend connection negotiated the cache.
    pub backend_flag: bool,
    /// The client did.
    pub client_flag: bool,
    /// What definitions the backend skips stand for (its statement's last
    /// ones), and whether the client already holds exactly those.
    pub skipped: Option<(&'a [Bytes], bool)>,
}

/// A column count packet's payload built for the client: the count as the
/// backend encoded it, and a "metadata follows" byte if the client caches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CountPacket {
    buf: [u8; 10],
    len: u8,
}

impl CountPacket {
    /// `lenenc`: an encoded count (at most 9 bytes); `flag`: the
    /// "metadata follows" byte for a client that caches metadata.
    pub fn new(lenenc: &[u8], flag: Option<u8>) -> CountPacket {
        let mut buf = [0; 10];
        buf[..lenenc.len()].copy_from_slice(lenenc);
        let mut len = lenenc.len();
        if let Some(flag) = flag {
            buf[len] = flag;
            len += 1;
        }
        CountPacket { buf, len: len as u8 }
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.buf[..usize::from(self.len)]
    }
}

/// A column count packet: the count, whether definitions follow, and the
/// length of the count's own encoding. With `flagged` (the sender caches
/// metadata) the count must be followed by a 0 or 1 byte, and nothing else.
pub fn parse_count(payload: &[u8], flagged: bool) -> Option<(u64, bool, usize)> {
    let mut pos = 0;
    let columns = read_lenenc_int(payload, &mut pos)?;
    let lenenc = pos;
    let follows = if flagged {
        let flag = *payload.get(pos)?;
        pos += 1;
        match flag {
            0 => false,
            1 => true,
            _ => return None,
        }
    } else {
        true
    };
    (pos == payload.len() && columns > 0).then_some((columns, follows, lenenc))
}

/// How one result set's column count and definitions reach the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ColumnsPlan<'a> {
    /// The column count packet to send instead of the backend's; None: the
    /// backend's as it is.
    pub count: Option<CountPacket>,
    /// Definitions the backend skipped that the client must be sent.
    pub insert: Option<&'a [Bytes]>,
}

/// Decides how the column count `payload` (and the definitions it
/// announces) goes to the client. None when the backend skipped
/// definitions Sluice does not know, or knows a different number of: a
/// protocol failure, never a guess.
pub fn plan_columns<'a>(payload: &[u8], meta: &Metadata<'a>) -> Option<ColumnsPlan<'a>> {
    let (columns, follows, lenenc) = parse_count(payload, meta.backend_flag)?;
    let client_count = || CountPacket::new(&payload[..lenenc], meta.client_flag.then_some(1));
    if follows {
        let count = (meta.backend_flag != meta.client_flag).then(client_count);
        return Some(ColumnsPlan { count, insert: None });
    }
    let (defs, client_current) = meta.skipped?;
    if defs.len() as u64 != columns {
        return None;
    }
    if meta.client_flag && client_current {
        // The client has them too: it gets the skip as the server sent it.
        return Some(ColumnsPlan {
            count: None,
            insert: None,
        });
    }
    Some(ColumnsPlan {
        count: Some(client_count()),
        insert: Some(defs),
    })
}

/// Where the parts of a whole result set are in the buffer (byte offsets,
/// headers included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scanned {
    /// End of the column count packet.
    pub count_end: usize,
    /// The backend sent the definitions (false: skipped under the
    /// metadata cache, and none are in the buffer).
    pub follows: bool,
    /// End of the column count and definitions (start of their EOF).
    pub columns_end: usize,
    /// Start of the rows (end of the definitions' EOF).
    pub rows_start: usize,
    /// Start of the final EOF (end of the rows).
    pub final_eof: usize,
    /// End of the result set.
    pub len: usize,
    pub rows: u64,
    /// The final EOF's warnings and status flags.
    pub warnings: u16,
    pub status: u16,
}

/// The payload of the physical packet at `at`, when it is all in `buf`,
/// not empty and not continued.
fn packet(buf: &[u8], at: usize) -> Option<&[u8]> {
    let header = buf.get(at..at + 4)?;
    let len = usize::from(header[0]) | usize::from(header[1]) << 8 | usize::from(header[2]) << 16;
    if len == 0 || len >= MAX_PAYLOAD {
        return None;
    }
    buf.get(at + 4..at + 4 + len)
}

/// A complete single result set at the start of `buf` (text or binary
/// rows, EOF-terminated as Sluice's backend connections receive them), or
/// None. `flagged`: the backend caches metadata (its column count carries
/// a "metadata follows" byte).
pub fn scan(buf: &[u8], flagged: bool) -> Option<Scanned> {
    let count = packet(buf, 0)?;
    // OK, LOCAL INFILE, EOF and ERR are not a column count.
    if matches!(count[0], 0x00 | 0xfb | 0xfe | 0xff) {
        return None;
    }
    let (columns, follows, _) = parse_count(count, flagged)?;
    let count_end = 4 + count.len();
    let mut at = count_end;
    let in_buffer = if follows { columns } else { 0 };
    // Bounded by the buffer: a count larger than what is there fails at
    // the first missing packet.
    for _ in 0..in_buffer {
        let def = packet(buf, at)?;
        if def[0] == 0xff || is_eof(def) {
            return None;
        }
        at += 4 + def.len();
    }
    let columns_end = at;
    let eof = packet(buf, at)?;
    if !is_eof(eof) || parse_eof(eof).1 & status::CURSOR_EXISTS != 0 {
        return None;
    }
    at += 4 + eof.len();
    let rows_start = at;
    let mut rows = 0;
    let last = loop {
        let p = packet(buf, at)?;
        if p[0] == 0xff {
            return None;
        }
        if is_eof(p) {
            break p;
        }
        rows += 1;
        at += 4 + p.len();
    };
    let (warnings, status) = parse_eof(last);
    if status & status::MORE_RESULTS_EXISTS != 0 {
        return None;
    }
    Some(Scanned {
        count_end,
        follows,
        columns_end,
        rows_start,
        final_eof: at,
        len: at + 4 + last.len(),
        rows,
        warnings,
        status,
    })
}

/// Gives the packets in `bytes` (whole packets, headers included) the
/// sequence ids from `seq` on.
pub fn renumber(bytes: &mut [u8], seq: &mut u8) {
    let mut at = 0;
    while let Some(header) = bytes.get_mut(at..at + 4) {
        let len = usize::from(header[0]) | usize::from(header[1]) << 8 | usize::from(header[2]) << 16;
        header[3] = *seq;
        *seq = seq.wrapping_add(1);
        at += 4 + len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(seq: u8, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut out = vec![len as u8, (len >> 8) as u8, (len >> 16) as u8, seq];
        out.extend_from_slice(payload);
        out
    }

    fn eof(status: u16) -> Vec<u8> {
        let [s0, s1] = status.to_le_bytes();
        vec![0xfe, 0, 0, s0, s1]
    }

    /// count 1, one definition, EOF, `rows` rows, EOF with `last_status`.
    fn result(rows: &[&[u8]], last_status: u16) -> Vec<u8> {
        let mut out = frame(1, &[1]);
        out.extend(frame(2, b"\x03def\x00\x00\x00\x01c\x00\x0c\x08\x00"));
        out.extend(frame(3, &eof(2)));
        let mut seq = 4;
        for row in rows {
            out.extend(frame(seq, row));
            seq += 1;
        }
        out.extend(frame(seq, &eof(last_status)));
        out
    }

    #[test]
    fn finds_the_parts_of_a_whole_result_set() {
        let buf = result(&[b"\x01a", b"\x00\x00\x05"], 0x22);
        let s = scan(&buf, false).expect("a whole result set");
        assert_eq!(s.rows, 2);
        assert_eq!(s.status, 0x22);
        assert_eq!(s.len, buf.len());
        assert_eq!(&buf[s.columns_end + 4..s.columns_end + 5], &[0xfe]);
        assert_eq!(&buf[s.final_eof + 4..s.final_eof + 5], &[0xfe]);
        // Trailing bytes of another answer are not part of it.
        let mut more = buf.clone();
        more.extend(frame(1, &[0]));
        assert_eq!(scan(&more, false), Some(s));
    }

    #[test]
    fn leaves_anything_unusual_to_the_packet_relay() {
        let whole = result(&[b"\x01a"], 0x02);
        for cut in 0..whole.len() {
            assert_eq!(scan(&whole[..cut], false), None, "cut at {cut}");
        }
        // More results, a cursor, an error among the rows.
        assert_eq!(
            scan(&result(&[b"\x01a"], status::MORE_RESULTS_EXISTS), false),
            None
        );
        let mut cursor = frame(1, &[1]);
        cursor.extend(frame(2, b"\x03def"));
        cursor.extend(frame(3, &eof(status::CURSOR_EXISTS)));
        cursor.extend(frame(4, &eof(0)));
        assert_eq!(scan(&cursor, false), None);
        assert_eq!(scan(&result(&[b"\xff\x10\x04"], 0), false), None);
        // OK, ERR, LOCAL INFILE, a count with trailing bytes.
        for first in [
            &[0u8, 0, 0, 2, 0, 0, 0][..],
            b"\xff\x10\x04#",
            b"\xfbfile",
            &[1, 1],
        ] {
            let mut buf = frame(1, first);
            buf.extend(result(&[], 0));
            assert_eq!(scan(&buf, false), None);
        }
        // A continued (maximum size) packet.
        let mut big = frame(1, &[1]);
        big.extend([0xff, 0xff, 0xff, 2]);
        big.extend(vec![3; MAX_PAYLOAD]);
        assert_eq!(scan(&big, false), None);
    }

    #[test]
    fn a_huge_column_count_stops_at_the_buffer() {
        let mut buf = frame(1, &[0xfd, 0xff, 0xff, 0xff]);
        buf.extend(frame(2, b"\x03def"));
        assert_eq!(scan(&buf, false), None);
    }

    #[test]
    fn renumbers_every_packet() {
        let mut buf = result(&[b"\x01a"], 0);
        let mut seq = 9;
        renumber(&mut buf, &mut seq);
        assert_eq!(seq, 14);
        let mut at = 0;
        let mut want = 9;
        while at < buf.len() {
            assert_eq!(buf[at + 3], want);
            want += 1;
            at += 4 + usize::from(buf[at]);
        }
    }

    /// count 1 with a "metadata follows" byte, the definition only when it
    /// follows, EOF, one row, EOF.
    fn flagged_result(follows: bool) -> Vec<u8> {
        let mut out = frame(1, &[1, u8::from(follows)]);
        let mut seq = 2;
        if follows {
            out.extend(frame(seq, b"\x03def\x00\x00\x00\x01c\x00\x0c\x08\x00"));
            seq += 1;
        }
        out.extend(frame(seq, &eof(2)));
        out.extend(frame(seq + 1, b"\x01a"));
        out.extend(frame(seq + 2, &eof(2)));
        out
    }

    #[test]
    fn a_flagged_count_says_whether_definitions_follow() {
        assert_eq!(parse_count(&[3], false), Some((3, true, 1)));
        assert_eq!(parse_count(&[3, 1], true), Some((3, true, 1)));
        assert_eq!(parse_count(&[3, 0], true), Some((3, false, 1)));
        assert_eq!(parse_count(&[0xfc, 0x2c, 0x01, 0], true), Some((300, false, 3)));
        // A missing, unknown or unexpected byte is not a count.
        for bad in [&[3][..], &[3, 2], &[3, 1, 0]] {
            assert_eq!(parse_count(bad, true), None, "{bad:?}");
        }
        assert_eq!(parse_count(&[3, 1], false), None);
        assert_eq!(parse_count(&[0, 1], true), None);

        let skipped = scan(&flagged_result(false), true).expect("a skipped result set");
        assert!(!skipped.follows);
        assert_eq!((skipped.count_end, skipped.columns_end, skipped.rows), (6, 6, 1));
        let sent = scan(&flagged_result(true), true).expect("a full result set");
        assert!(sent.follows);
        assert_eq!(sent.rows, 1);
        // Read without the flag in mind, the count has a trailing byte.
        assert_eq!(scan(&flagged_result(true), false), None);
    }

    #[test]
    fn columns_cross_the_metadata_cache_as_each_side_needs() {
        let defs = [Bytes::from_static(b"\x03def-a"), Bytes::from_static(b"\x03def-b")];
        let meta = |backend_flag, client_flag, skipped| Metadata {
            backend_flag,
            client_flag,
            skipped,
        };
        let count = |bytes: &[u8]| {
            Some(CountPacket::new(
                &bytes[..bytes.len() - 1],
                Some(bytes[bytes.len() - 1]),
            ))
        };
        let plain = |bytes: &[u8]| Some(CountPacket::new(bytes, None));
        // Sent definitions: the count as it is when both sides agree, the
        // byte dropped or added when they do not.
        let as_is = ColumnsPlan {
            count: None,
            insert: None,
        };
        assert_eq!(plan_columns(&[2], &meta(false, false, None)), Some(as_is));
        assert_eq!(plan_columns(&[2, 1], &meta(true, true, None)), Some(as_is));
        assert_eq!(
            plan_columns(&[2, 1], &meta(true, false, None)),
            Some(ColumnsPlan {
                count: plain(&[2]),
                insert: None
            })
        );
        assert_eq!(
            plan_columns(&[2], &meta(false, true, None)),
            Some(ColumnsPlan {
                count: count(&[2, 1]),
                insert: None
            })
        );
        // Skipped definitions: kept skipped for a client holding the same
        // ones, sent (with "follows" for a caching client) otherwise.
        assert_eq!(
            plan_columns(&[2, 0], &meta(true, true, Some((&defs, true)))),
            Some(as_is)
        );
        assert_eq!(
            plan_columns(&[2, 0], &meta(true, true, Some((&defs, false)))),
            Some(ColumnsPlan {
                count: count(&[2, 1]),
                insert: Some(&defs[..])
            })
        );
        assert_eq!(
            plan_columns(&[2, 0], &meta(true, false, Some((&defs, true)))),
            Some(ColumnsPlan {
                count: plain(&[2]),
                insert: Some(&defs[..])
            })
        );
        // Unknown or a different number of definitions: no guess.
        assert_eq!(plan_columns(&[2, 0], &meta(true, true, None)), None);
        assert_eq!(
            plan_columns(&[3, 0], &meta(true, false, Some((&defs, true)))),
            None
        );
    }
}
