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

/// The index of the replica to use, or None when none is eligible. `turn`
/// breaks ties (pass a counter that increases per decision).
pub fn pick_replica(candidates: &[Candidate], turn: usize) -> Option<usize> {
    let n = candidates.len();
    let mut best: Option<(usize, u128)> = None;
    for k in 0..n {
        let i = (turn + k) % n;
        let c = candidates[i];
        if !c.eligible || c.weight == 0 {
            continue;
        }
        // outstanding / weight, compared without division: scale by the
        // product of the other weights via cross-multiplication.
        let score = (c.outstanding as u128 + 1) * 1_000_000 / u128::from(c.weight);
        if best.is_none_or(|(_, s)| score < s) {
            best = Some((i, score));
        }
    }
    best.map(|(i, _)| i)
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
    fn ineligible_and_zero_weight_are_skipped() {
        assert_eq!(pick_replica(&[c(1, 0, false), c(0, 0, true)], 0), None);
        assert_eq!(pick_replica(&[c(1, 0, false), c(1, 9, true)], 0), Some(1));
        assert_eq!(pick_replica(&[], 0), None);
    }
}
