//! A whole result set found in a read buffer in one pass. Most answers (a
//! point select's column count, definitions, EOF, a row and the final EOF)
//! arrive in one read; relaying them packet by packet cost more than the
//! rest of the statement path. [`scan`] checks that the buffer holds one
//! complete, ordinary result set and says where its parts are, so the
//! frame layer can copy it in a few slices. Anything else (an error, more
//! results, a cursor, a packet not complete yet, a packet too large for
//! one frame) is left to the packet-by-packet relay.

use crate::consts::status;
use crate::frame::MAX_PAYLOAD;
use crate::packets::{is_eof, parse_eof, read_lenenc_int};

/// Where the parts of a whole result set are in the buffer (byte offsets,
/// headers included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scanned {
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
/// None.
pub fn scan(buf: &[u8]) -> Option<Scanned> {
    let count = packet(buf, 0)?;
    // OK, LOCAL INFILE, EOF and ERR are not a column count.
    if matches!(count[0], 0x00 | 0xfb | 0xfe | 0xff) {
        return None;
    }
    let mut pos = 0;
    let columns = read_lenenc_int(count, &mut pos)?;
    if pos != count.len() {
        return None;
    }
    let mut at = 4 + count.len();
    // Bounded by the buffer: a count larger than what is there fails at
    // the first missing packet.
    for _ in 0..columns {
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
        let s = scan(&buf).expect("a whole result set");
        assert_eq!(s.rows, 2);
        assert_eq!(s.status, 0x22);
        assert_eq!(s.len, buf.len());
        assert_eq!(&buf[s.columns_end + 4..s.columns_end + 5], &[0xfe]);
        assert_eq!(&buf[s.final_eof + 4..s.final_eof + 5], &[0xfe]);
        // Trailing bytes of another answer are not part of it.
        let mut more = buf.clone();
        more.extend(frame(1, &[0]));
        assert_eq!(scan(&more), Some(s));
    }

    #[test]
    fn leaves_anything_unusual_to_the_packet_relay() {
        let whole = result(&[b"\x01a"], 0x02);
        for cut in 0..whole.len() {
            assert_eq!(scan(&whole[..cut]), None, "cut at {cut}");
        }
        // More results, a cursor, an error among the rows.
        assert_eq!(scan(&result(&[b"\x01a"], status::MORE_RESULTS_EXISTS)), None);
        let mut cursor = frame(1, &[1]);
        cursor.extend(frame(2, b"\x03def"));
        cursor.extend(frame(3, &eof(status::CURSOR_EXISTS)));
        cursor.extend(frame(4, &eof(0)));
        assert_eq!(scan(&cursor), None);
        assert_eq!(scan(&result(&[b"\xff\x10\x04"], 0)), None);
        // OK, ERR, LOCAL INFILE, a count with trailing bytes.
        for first in [
            &[0u8, 0, 0, 2, 0, 0, 0][..],
            b"\xff\x10\x04#",
            b"\xfbfile",
            &[1, 1],
        ] {
            let mut buf = frame(1, first);
            buf.extend(result(&[], 0));
            assert_eq!(scan(&buf), None);
        }
        // A continued (maximum size) packet.
        let mut big = frame(1, &[1]);
        big.extend([0xff, 0xff, 0xff, 2]);
        big.extend(vec![3; MAX_PAYLOAD]);
        assert_eq!(scan(&big), None);
    }

    #[test]
    fn a_huge_column_count_stops_at_the_buffer() {
        let mut buf = frame(1, &[0xfd, 0xff, 0xff, 0xff]);
        buf.extend(frame(2, b"\x03def"));
        assert_eq!(scan(&buf), None);
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
}
