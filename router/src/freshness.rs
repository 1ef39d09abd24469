//! Which replica may serve a read: fresh enough (`routing.max_replica_lag_ms`
//! with hysteresis, or a statement's `/* sluice:max_lag_ms=N */`), reachable,
//! and, when the session must read its own write, known to have applied it
//! or close enough to wait for it. Among those, the least loaded for its
//! weight ([`pick_replica`]).

use crate::balance::{Candidate, pick_replica};
use crate::gtid::GtidPos;

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

/// One replica as the read decision sees it.
#[derive(Debug, Clone, Copy)]
pub struct ReplicaState<'a> {
    pub weight: u32,
    pub outstanding: usize,
    /// Not known to be down.
    pub reachable: bool,
    /// The hysteresis verdict against `routing.max_replica_lag_ms`.
    pub fresh: bool,
    pub lag_ms: Option<f64>,
    /// What it has applied, when known.
    pub position: Option<&'a GtidPos>,
}

/// What the read asks for.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadRequest<'a> {
    /// The statement's `max_lag_ms` hint (replaces the hysteresis verdict).
    pub max_lag_ms: Option<u64>,
    /// The session's last write, which the read must see.
    pub causal: Option<&'a GtidPos>,
    /// How long a read may wait on a replica for `causal`.
    pub causal_wait_ms: u64,
    /// The statement reads no table (`SELECT @@wait_timeout`): neither lag
    /// nor the session's writes matter to it.
    pub reads_no_data: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
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

/// The decision, and which replicas were passed over for lag (for metrics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadPlan {
    pub choice: ReadChoice,
    pub skipped_for_lag: Vec<usize>,
}

pub fn choose_read(replicas: &[ReplicaState<'_>], request: ReadRequest<'_>, turn: usize) -> ReadPlan {
    let lag_ok = |r: &ReplicaState<'_>| match request.max_lag_ms {
        _ if request.reads_no_data => true,
        Some(max) => r.lag_ms.is_some_and(|lag| lag <= max as f64),
        None => r.fresh,
    };
    let causal = request.causal.filter(|_| !request.reads_no_data);
    let usable = |r: &ReplicaState<'_>| r.reachable && r.weight > 0;
    let skipped_for_lag: Vec<usize> = (0..replicas.len())
        .filter(|&i| usable(&replicas[i]) && !lag_ok(&replicas[i]))
        .collect();
    // One buffer, re-marked for each narrower choice.
    let mut candidates: Vec<Candidate> = replicas
        .iter()
        .map(|r| Candidate {
            weight: r.weight,
            outstanding: r.outstanding,
            eligible: false,
        })
        .collect();
    let mut pick = |allowed: &dyn Fn(&ReplicaState<'_>) -> bool| {
        for (c, r) in candidates.iter_mut().zip(replicas) {
            c.eligible = usable(r) && lag_ok(r) && allowed(r);
        }
        pick_replica(&candidates, turn)
    };
    let choice = match pick(&|_| true) {
        None if !replicas.iter().any(|r| r.weight > 0) => ReadChoice::NoReplica(NoReplica::NoneConfigured),
        None if !replicas.iter().any(usable) => ReadChoice::NoReplica(NoReplica::Unreachable),
        None => ReadChoice::NoReplica(NoReplica::Lagging),
        Some(i) => match causal {
            None => ReadChoice::Replica(i),
            Some(needed) => {
                let applied = |r: &ReplicaState<'_>| r.position.is_some_and(|p| p.covers(needed));
                // Waiting only makes sense on a replica whose lag is within
                // the wait (unknown lag: worth one bounded try).
                let close = |r: &ReplicaState<'_>| {
                    request.causal_wait_ms > 0
                        && r.lag_ms.is_none_or(|lag| lag <= request.causal_wait_ms as f64)
                };
                if let Some(i) = pick(&applied) {
                    ReadChoice::Replica(i)
                } else if let Some(i) = pick(&close) {
                    ReadChoice::WaitOn(i)
                } else {
                    ReadChoice::NoReplica(NoReplica::NotCaughtUp)
                }
            }
        },
    };
    ReadPlan {
        choice,
        skipped_for_lag,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replica(lag_ms: Option<f64>, fresh: bool) -> ReplicaState<'static> {
        ReplicaState {
            weight: 1,
            outstanding: 0,
            reachable: true,
            fresh,
            lag_ms,
            position: None,
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
        assert_eq!(plan.skipped_for_lag, vec![0]);
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
        assert_eq!(plan.skipped_for_lag, vec![0]);
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
        let behind = GtidPos::parse("0-1-9").unwrap();
        let caught_up = GtidPos::parse("0-1-10").unwrap();
        let write = GtidPos::parse("0-1-10").unwrap();
        let mut a = replica(Some(0.0), true);
        a.position = Some(&behind);
        let mut b = replica(Some(0.0), true);
        b.position = Some(&caught_up);
        let request = ReadRequest {
            causal: Some(&write),
            causal_wait_ms: 100,
            ..ReadRequest::default()
        };
        for turn in 0..4 {
            assert_eq!(choose_read(&[a, b], request, turn).choice, ReadChoice::Replica(1));
        }
    }

    #[test]
    fn reads_after_a_write_wait_only_when_the_replica_is_close() {
        let behind = GtidPos::parse("0-1-9").unwrap();
        let write = GtidPos::parse("0-1-10").unwrap();
        let mut close = replica(Some(20.0), true);
        close.position = Some(&behind);
        let request = ReadRequest {
            causal: Some(&write),
            causal_wait_ms: 100,
            ..ReadRequest::default()
        };
        assert_eq!(choose_read(&[close], request, 0).choice, ReadChoice::WaitOn(0));
        // 2 s behind: waiting 100 ms cannot help; go to the primary.
        let mut far = replica(Some(2000.0), true);
        far.position = Some(&behind);
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
        let behind = GtidPos::parse("0-1-9").unwrap();
        let write = GtidPos::parse("0-1-10").unwrap();
        let mut stale = replica(Some(f64::INFINITY), false);
        stale.position = Some(&behind);
        let request = ReadRequest {
            causal: Some(&write),
            reads_no_data: true,
            ..ReadRequest::default()
        };
        let plan = choose_read(&[stale], request, 0);
        assert_eq!(plan.choice, ReadChoice::Replica(0));
        assert!(plan.skipped_for_lag.is_empty());
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
