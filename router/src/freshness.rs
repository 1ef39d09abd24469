//! Which replica may serve a read: fresh enough (`routing.max_replica_lag_ms`
//! with hysteresis, or a statement's `/* sluice:max_lag_ms=N */`), reachable,
//! and, when the session must read its own write, known to have applied it
//! or close enough to wait for it. Among those, the least loaded for its
//! weight ([`pick_replica`]).

use crate::balance::{Candidate, pick_replica_by};

/// A stale replica is readmitted once its lag falls below this share of the
/// limit, so a replica hovering at the threshold does not flap.
pub const READMIT_PERCENT: u64 = 80;

/// The replica's freshness after a new lag measurement. `lag_ms` is None
/// when unknown (not measured yet, or not readable): the previous verdict
/// stands. Infinite lag (a stopped replication thread) is never fresh.
pub fn fresh_after(was_fresh: bool, lag_ms: Option<f64>, max_lag_ms: u64) -> bool {
    let Some(lag) = lag_ms else { return was_fresh };
    let limit = if was_fresh {
        max_lag_ms as f64
    } else {
        max_lag_ms as f64 * READMIT_PERCENT as f64 / 100.0
    };
    lag <= limit
}

/// One backend as the read decision sees it. Backends that take no reads
/// (the primary, a promoted replica) are passed with weight 0, so indexes
/// are the topology's.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReplicaState {
    /// A replica that may take reads (not the primary, not promoted).
    pub replica: bool,
    pub weight: u32,
    pub outstanding: usize,
    /// Not known to be down.
    pub reachable: bool,
    /// The hysteresis verdict against `routing.max_replica_lag_ms`.
    pub fresh: bool,
    pub lag_ms: Option<f64>,
    /// Known to have applied what the read must see (the request's causal
    /// position).
    pub applied: bool,
}

/// What the read asks for.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadRequest {
    /// The statement's `max_lag_ms` hint (replaces the hysteresis verdict).
    pub max_lag_ms: Option<u64>,
    /// The read must see a position (its session's writes, or the
    /// primary's); `ReplicaState::applied` says who has it.
    pub causal: bool,
    /// How long a read may wait on a replica for that position.
    pub causal_wait_ms: u64,
    /// The statement reads no table (`SELECT @@wait_timeout`): neither lag
    /// nor the session's writes matter to it.
    pub reads_no_data: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadChoice {
    /// Read on this replica.
    Replica(usize),
    /// Fresh, but not known to have the session's write: wait for it there
    /// (at most `causal_wait_ms`) before reading.
    WaitOn(usize),
    NoReplica(NoReplica),
}

/// Why no replica can serve the read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoReplica {
    /// No replica is configured (or all have weight 0).
    NoneConfigured,
    /// Every replica is down.
    Unreachable,
    /// Every reachable replica lags too much.
    Lagging,
    /// None has applied the session's last write, and none is close enough
    /// to wait for it.
    NotCaughtUp,
}

impl NoReplica {
    pub fn label(self) -> &'static str {
        match self {
            NoReplica::NoneConfigured => "no_replica",
            NoReplica::Unreachable => "replicas_unreachable",
            NoReplica::Lagging => "replicas_lagging",
            NoReplica::NotCaughtUp => "replicas_behind_session",
        }
    }
}

/// The decision, and which replicas were passed over for lag (for metrics;
/// bit i is backend i, so at most 64 backends, as the config allows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadPlan {
    pub choice: ReadChoice,
    pub skipped_for_lag: u64,
}

impl ReadPlan {
    /// The indexes of the replicas skipped for lag.
    pub fn skipped(&self) -> impl Iterator<Item = usize> + '_ {
        indexes(self.skipped_for_lag)
    }
}

/// The set bits of a backend mask.
pub fn indexes(mask: u64) -> impl Iterator<Item = usize> {
    (0..64).filter(move |i| mask & (1 << i) != 0)
}

pub fn choose_read(replicas: &[ReplicaState], request: ReadRequest, turn: usize) -> ReadPlan {
    let lag_ok = |r: &ReplicaState| match request.max_lag_ms {
        _ if request.reads_no_data => true,
        Some(max) => r.lag_ms.is_some_and(|lag| lag <= max as f64),
        None => r.fresh,
    };
    let causal = request.causal && !request.reads_no_data;
    let usable = |r: &ReplicaState| r.replica && r.reachable && r.weight > 0;
    let skipped_for_lag = replicas
        .iter()
        .enumerate()
        .take(64)
        .filter(|(_, r)| usable(r) && !lag_ok(r))
        .fold(0u64, |mask, (i, _)| mask | 1 << i);
    let pick = |allowed: &dyn Fn(&ReplicaState) -> bool| {
        pick_replica_by(
            replicas.len(),
            |i| {
                let r = &replicas[i];
                Candidate {
                    weight: r.weight,
                    outstanding: r.outstanding,
                    eligible: usable(r) && lag_ok(r) && allowed(r),
                }
            },
            turn,
        )
    };
    let choice = match pick(&|_| true) {
        None if !replicas.iter().any(|r| r.replica && r.weight > 0) => {
            ReadChoice::NoReplica(NoReplica::NoneConfigured)
        }
        None if !replicas.iter().any(usable) => ReadChoice::NoReplica(NoReplica::Unreachable),
        None => ReadChoice::NoReplica(NoReplica::Lagging),
        Some(i) if !causal => ReadChoice::Replica(i),
        Some(_) => {
            // Waiting only makes sense on a replica whose lag is within
            // the wait (unknown lag: worth one bounded try).
            let close = |r: &ReplicaState| {
                request.causal_wait_ms > 0 && r.lag_ms.is_none_or(|lag| lag <= request.causal_wait_ms as f64)
            };
            if let Some(i) = pick(&|r| r.applied) {
                ReadChoice::Replica(i)
            } else if let Some(i) = pick(&close) {
                ReadChoice::WaitOn(i)
            } else {
                ReadChoice::NoReplica(NoReplica::NotCaughtUp)
            }
        }
    };
    ReadPlan {
        choice,
        skipped_for_lag,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replica(lag_ms: Option<f64>, fresh: bool) -> ReplicaState {
        ReplicaState {
            replica: true,
            weight: 1,
            outstanding: 0,
            reachable: true,
            fresh,
            lag_ms,
            applied: false,
        }
    }

    #[test]
    fn hysteresis() {
        // Fresh until above the limit.
        assert!(fresh_after(true, Some(1000.0), 1000));
        assert!(!fresh_after(true, Some(1001.0), 1000));
        // Stale until below 80 % of it.
        assert!(!fresh_after(false, Some(900.0), 1000));
        assert!(fresh_after(false, Some(800.0), 1000));
        // A stopped thread is infinitely stale.
        assert!(!fresh_after(true, Some(f64::INFINITY), 1000));
        // Unknown lag keeps the last verdict.
        assert!(fresh_after(true, None, 1000));
        assert!(!fresh_after(false, None, 1000));
    }

    #[test]
    fn lagging_replicas_get_no_reads_and_are_reported() {
        let replicas = [replica(Some(5000.0), false), replica(Some(3.0), true)];
        let plan = choose_read(&replicas, ReadRequest::default(), 0);
        assert_eq!(plan.choice, ReadChoice::Replica(1));
        assert_eq!(plan.skipped().collect::<Vec<_>>(), vec![0]);
    }

    #[test]
    fn no_eligible_replica_says_why() {
        let lagging = [replica(Some(5000.0), false), replica(Some(f64::INFINITY), false)];
        assert_eq!(
            choose_read(&lagging, ReadRequest::default(), 0).choice,
            ReadChoice::NoReplica(NoReplica::Lagging)
        );
        let mut down = replica(Some(0.0), true);
        down.reachable = false;
        assert_eq!(
            choose_read(&[down], ReadRequest::default(), 0).choice,
            ReadChoice::NoReplica(NoReplica::Unreachable)
        );
        assert_eq!(
            choose_read(&[], ReadRequest::default(), 0).choice,
            ReadChoice::NoReplica(NoReplica::NoneConfigured)
        );
    }

    #[test]
    fn the_hint_replaces_the_limit() {
        let replicas = [replica(Some(400.0), true), replica(Some(20.0), true)];
        let strict = ReadRequest {
            max_lag_ms: Some(100),
            ..ReadRequest::default()
        };
        let plan = choose_read(&replicas, strict, 0);
        assert_eq!(plan.choice, ReadChoice::Replica(1));
        assert_eq!(plan.skipped().collect::<Vec<_>>(), vec![0]);
        // A looser hint admits a replica the config's limit keeps out.
        let stale = [replica(Some(4000.0), false)];
        let loose = ReadRequest {
            max_lag_ms: Some(60_000),
            ..ReadRequest::default()
        };
        assert_eq!(choose_read(&stale, loose, 0).choice, ReadChoice::Replica(0));
        // Unknown lag does not satisfy an explicit bound.
        assert_eq!(
            choose_read(&[replica(None, true)], strict, 0).choice,
            ReadChoice::NoReplica(NoReplica::Lagging)
        );
    }

    #[test]
    fn reads_after_a_write_go_to_a_replica_that_has_it() {
        let mut a = replica(Some(0.0), true);
        a.applied = false;
        let mut b = replica(Some(0.0), true);
        b.applied = true;
        let request = ReadRequest {
            causal: true,
            causal_wait_ms: 100,
            ..ReadRequest::default()
        };
        for turn in 0..4 {
            assert_eq!(choose_read(&[a, b], request, turn).choice, ReadChoice::Replica(1));
        }
    }

    #[test]
    fn reads_after_a_write_wait_only_when_the_replica_is_close() {
        let mut close = replica(Some(20.0), true);
        close.applied = false;
        let request = ReadRequest {
            causal: true,
            causal_wait_ms: 100,
            ..ReadRequest::default()
        };
        assert_eq!(choose_read(&[close], request, 0).choice, ReadChoice::WaitOn(0));
        // 2 s behind: waiting 100 ms cannot help; go to the primary.
        let mut far = replica(Some(2000.0), true);
        far.applied = false;
        assert_eq!(
            choose_read(&[far], request, 0).choice,
            ReadChoice::NoReplica(NoReplica::NotCaughtUp)
        );
        // Waiting disabled.
        let no_wait = ReadRequest {
            causal_wait_ms: 0,
            ..request
        };
        assert_eq!(
            choose_read(&[close], no_wait, 0).choice,
            ReadChoice::NoReplica(NoReplica::NotCaughtUp)
        );
    }

    #[test]
    fn reads_of_no_data_ignore_lag_and_causality() {
        let mut stale = replica(Some(f64::INFINITY), false);
        stale.applied = false;
        let request = ReadRequest {
            causal: true,
            reads_no_data: true,
            ..ReadRequest::default()
        };
        let plan = choose_read(&[stale], request, 0);
        assert_eq!(plan.choice, ReadChoice::Replica(0));
        assert_eq!(plan.skipped_for_lag, 0);
    }

    #[test]
    fn load_and_weight_still_apply_among_eligible() {
        let mut busy = replica(Some(0.0), true);
        busy.outstanding = 5;
        let idle = replica(Some(0.0), true);
        assert_eq!(
            choose_read(&[busy, idle], ReadRequest::default(), 0).choice,
            ReadChoice::Replica(1)
        );
    }
}
