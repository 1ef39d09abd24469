//! MariaDB GTID positions (`domain-server-seq`, comma separated): what a
//! session wrote last (`last_gtid` from the primary's OK packets) and what a
//! replica has applied (`@@gtid_slave_pos`). Sequence numbers grow within a
//! domain, so "has applied" is a per-domain comparison.

/// One GTID per replication domain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GtidPos {
    /// (domain, server_id, seq), sorted by domain, one entry per domain.
    entries: Vec<(u32, u32, u64)>,
}

impl GtidPos {
    /// Parses `0-1-12,1-2-5`; an empty string is the empty position. None
    /// for anything else (MySQL's `uuid:1-5` sets included).
    pub fn parse(text: &str) -> Option<GtidPos> {
        let mut pos = GtidPos::default();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let mut fields = part.split('-');
            let domain = fields.next()?.parse().ok()?;
            let server = fields.next()?.parse().ok()?;
            let seq = fields.next()?.parse().ok()?;
            if fields.next().is_some() {
                return None;
            }
            pos.advance(domain, server, seq);
        }
        Some(pos)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Records that `domain-server-seq` was applied (a later sequence in
    /// the same domain wins; an earlier one changes nothing).
    pub fn advance(&mut self, domain: u32, server: u32, seq: u64) {
        match self.entries.binary_search_by_key(&domain, |e| e.0) {
            Ok(i) if self.entries[i].2 < seq => self.entries[i] = (domain, server, seq),
            Ok(_) => {}
            Err(i) => self.entries.insert(i, (domain, server, seq)),
        }
    }

    /// Adds `other`'s progress (per domain, the later GTID wins).
    pub fn merge(&mut self, other: &GtidPos) {
        for &(domain, server, seq) in &other.entries {
            self.advance(domain, server, seq);
        }
    }

    /// Whether a server at this position has applied everything in `needed`.
    pub fn covers(&self, needed: &GtidPos) -> bool {
        needed.entries.iter().all(|&(domain, _, seq)| {
            self.entries
                .binary_search_by_key(&domain, |e| e.0)
                .is_ok_and(|i| self.entries[i].2 >= seq)
        })
    }
}

impl std::fmt::Display for GtidPos {
    /// The text form MASTER_GTID_WAIT takes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (domain, server, seq)) in self.entries.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{domain}-{server}-{seq}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(s: &str) -> GtidPos {
        GtidPos::parse(s).unwrap()
    }

    #[test]
    fn parses_and_prints() {
        assert_eq!(pos("1-2-5, 0-1-12").to_string(), "0-1-12,1-2-5");
        assert!(pos("").is_empty());
        assert_eq!(GtidPos::parse("3E11FA47-71CA-11E1-9E33-C80AA9429562:23"), None);
        assert_eq!(GtidPos::parse("0-1"), None);
        assert_eq!(GtidPos::parse("0-1-2-3"), None);
    }

    #[test]
    fn covers_compares_sequence_per_domain() {
        let replica = pos("0-1-100,1-3-7");
        assert!(replica.covers(&pos("0-1-100")));
        assert!(replica.covers(&pos("0-1-99")));
        assert!(!replica.covers(&pos("0-1-101")));
        assert!(
            replica.covers(&pos("0-2-50")),
            "a different server id in the same domain"
        );
        assert!(
            !replica.covers(&pos("2-1-1")),
            "a domain the replica has never seen"
        );
        assert!(replica.covers(&pos("")));
        assert!(!pos("").covers(&pos("0-1-1")));
    }

    #[test]
    fn merge_keeps_the_latest_per_domain() {
        let mut p = pos("0-1-10");
        p.merge(&pos("0-1-9,1-2-3"));
        assert_eq!(p.to_string(), "0-1-10,1-2-3");
        p.merge(&pos("0-1-11"));
        assert_eq!(p.to_string(), "0-1-11,1-2-3");
    }
}
