//! Choosing a replica: least outstanding requests relative to weight, among
//! the eligible ones, rotating on ties so equal replicas share the load.

/// One replica as the balancer sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    pub weight: u32,
    pub outstanding: usize,
    /// Reachable (and, with the freshness issue, fresh enough).
    pub eligible: bool,
}

/// The index of the replica to use, or None when none is eligible. The
/// least loaded for its weight wins; among equally loaded ones (the usual
/// case at low concurrency) `turn` picks in proportion to weight, so pass a
/// counter that increases per decision.
pub fn pick_replica(candidates: &[Candidate], turn: usize) -> Option<usize> {
    pick_replica_by(candidates.len(), |i| candidates[i], turn)
}

/// [`pick_replica`] over candidates computed on demand (no buffer needed).
pub fn pick_replica_by(n: usize, candidate: impl Fn(usize) -> Candidate, turn: usize) -> Option<usize> {
    let usable = |c: &Candidate| c.eligible && c.weight > 0;
    // Outstanding per unit of weight, compared by cross-multiplication.
    let lighter = |a: &Candidate, b: &Candidate| {
        (a.outstanding as u128) * u128::from(b.weight) < (b.outstanding as u128) * u128::from(a.weight)
    };
    let best =
        (0..n)
            .map(&candidate)
            .filter(|c| usable(c))
            .fold(None::<Candidate>, |best, c| match best {
                Some(b) if !lighter(&c, &b) => Some(b),
                _ => Some(c),
            })?;
    let tied = |c: &Candidate| usable(c) && !lighter(&best, c) && !lighter(c, &best);
    let total: u64 = (0..n)
        .map(&candidate)
        .filter(|c| tied(c))
        .map(|c| u64::from(c.weight))
        .sum();
    let mut point = (turn as u64) % total.max(1);
    for i in 0..n {
        let c = candidate(i);
        if !tied(&c) {
            continue;
        }
        if point < u64::from(c.weight) {
            return Some(i);
        }
        point -= u64::from(c.weight);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(weight: u32, outstanding: usize, eligible: bool) -> Candidate {
        Candidate {
            weight,
            outstanding,
            eligible,
        }
    }

    #[test]
    fn least_outstanding_wins() {
        assert_eq!(pick_replica(&[c(1, 5, true), c(1, 2, true)], 0), Some(1));
    }

    #[test]
    fn ties_rotate() {
        let cands = [c(1, 0, true), c(1, 0, true)];
        assert_eq!(pick_replica(&cands, 0), Some(0));
        assert_eq!(pick_replica(&cands, 1), Some(1));
    }

    #[test]
    fn weight_scales_load() {
        // Weight 3 with 2 outstanding beats weight 1 with 1 outstanding.
        assert_eq!(pick_replica(&[c(1, 1, true), c(3, 2, true)], 0), Some(1));
    }

    #[test]
    fn idle_replicas_share_reads_by_weight() {
        let cands = [c(1, 0, true), c(3, 0, true)];
        let picks: Vec<_> = (0..400).map(|t| pick_replica(&cands, t).unwrap()).collect();
        let second = picks.iter().filter(|&&i| i == 1).count();
        assert_eq!(second, 300, "three quarters go to the weight-3 replica");
    }

    #[test]
    fn ineligible_and_zero_weight_are_skipped() {
        assert_eq!(pick_replica(&[c(1, 0, false), c(0, 0, true)], 0), None);
        assert_eq!(pick_replica(&[c(1, 0, false), c(1, 9, true)], 0), Some(1));
        assert_eq!(pick_replica(&[], 0), None);
    }
}
