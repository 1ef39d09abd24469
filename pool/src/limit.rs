//! The adaptive concurrency limit: how many statements a backend runs at
//! once before more only make each one slower. Vegas-style: per window of
//! samples it takes the median latency, keeps the lowest window median seen
//! as the no-queue baseline, and estimates how many statements were queueing
//! in the server (`limit × (1 − baseline / median)`). Few queued: the limit
//! grows (only while clients actually use it); many: it shrinks. Medians of
//! windows, not single samples, are compared, so a mix of cheap and costly
//! statements reads as queueing only when the mix as a whole slows down.
//! Pure, no I/O and no clock of its own, so it is tested with made-up
//! latencies.
//!
//! A sample is the time from the last command sent on a connection to the
//! connection's return: the statement's round trip through the server and
//! the relay of its answer, without the client's think time between the
//! statements of a transaction.

use std::time::{Duration, Instant};

/// Samples kept per window for its median.
pub const KEPT: usize = 64;

/// Tuning, with defaults for a database on the same network.
#[derive(Debug, Clone, Copy)]
pub struct LimitParams {
    pub initial: usize,
    pub min: usize,
    pub max: usize,
    /// A window closes after this long and at least `window_samples`
    /// samples (its median is taken over its last [`KEPT`] samples).
    pub window: Duration,
    pub window_samples: u32,
    /// The baseline is forgotten and learnt again this often, so a lasting
    /// change (a slower network path, a bigger table) is followed.
    pub baseline_epoch: Duration,
}

impl LimitParams {
    pub fn new(max: usize) -> Self {
        LimitParams {
            initial: max.clamp(1, 8),
            min: 1,
            max: max.max(1),
            window: Duration::from_millis(20),
            window_samples: 32,
            baseline_epoch: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone)]
pub struct AdaptiveLimit {
    params: LimitParams,
    limit: usize,
    /// Lowest latency of this epoch and of the previous one (the baseline
    /// is the lower of the two, so a new epoch never starts blind).
    min_now: Option<Duration>,
    min_before: Option<Duration>,
    epoch_start: Option<Instant>,
    window_start: Option<Instant>,
    samples: u32,
    kept: [Duration; KEPT],
    /// Most permits out during the window: below half the limit, the
    /// clients (not the limit) bound the concurrency and it must not grow.
    busiest: usize,
}

/// The queue estimate's thresholds for `limit`: grow below `alpha`,
/// shrink above `beta` (Vegas with logarithmic thresholds).
fn thresholds(limit: usize) -> (f64, f64) {
    let log = (limit as f64).log10().max(0.5);
    (3.0 * log, 6.0 * log)
}

impl AdaptiveLimit {
    pub fn new(params: LimitParams) -> Self {
        AdaptiveLimit {
            limit: params.initial.clamp(params.min, params.max),
            params,
            min_now: None,
            min_before: None,
            epoch_start: None,
            window_start: None,
            samples: 0,
            kept: [Duration::ZERO; KEPT],
            busiest: 0,
        }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    pub fn set_max(&mut self, max: usize) {
        self.params.max = max.max(1);
        self.params.min = self.params.min.min(self.params.max);
        self.limit = self.limit.clamp(self.params.min, self.params.max);
    }

    fn baseline(&self) -> Option<Duration> {
        match (self.min_now, self.min_before) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Records one statement's latency with `out` permits out; returns the
    /// new limit when it changes.
    pub fn on_sample(&mut self, rtt: Duration, out: usize, now: Instant) -> Option<usize> {
        let window_start = *self.window_start.get_or_insert(now);
        self.kept[self.samples as usize % KEPT] = rtt;
        self.samples += 1;
        self.busiest = self.busiest.max(out);
        if self.samples < self.params.window_samples || now.duration_since(window_start) < self.params.window
        {
            return None;
        }
        let n = (self.samples as usize).min(KEPT);
        let kept = &mut self.kept[..n];
        let median = *kept.select_nth_unstable(n / 2).1;
        let busiest = self.busiest;
        self.window_start = Some(now);
        self.samples = 0;
        self.busiest = 0;

        let epoch_start = *self.epoch_start.get_or_insert(now);
        if now.duration_since(epoch_start) >= self.params.baseline_epoch {
            self.min_before = self.min_now.take();
            self.epoch_start = Some(now);
        }
        self.min_now = Some(self.min_now.map_or(median, |m| m.min(median)));
        let baseline = self.baseline()?;
        let limit = self.limit as f64;
        let queued = limit * (1.0 - baseline.as_secs_f64() / median.as_secs_f64().max(1e-9));
        let (alpha, beta) = thresholds(self.limit);
        let step = (limit.log10().floor() as usize).max(1);
        let new = if queued > beta {
            self.limit.saturating_sub(step)
        } else if queued < alpha && busiest * 2 >= self.limit {
            self.limit + step
        } else {
            self.limit
        }
        .clamp(self.params.min, self.params.max);
        if new == self.limit {
            return None;
        }
        self.limit = new;
        Some(new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);
    const US: Duration = Duration::from_micros(1);

    /// Feeds `windows` full windows, latency from `latency(limit)`, with
    /// the limit fully used; returns the limit after each window.
    fn drive(
        a: &mut AdaptiveLimit,
        start: &mut Instant,
        windows: usize,
        mut latency: impl FnMut(usize) -> Duration,
    ) -> Vec<usize> {
        let mut seen = Vec::new();
        for _ in 0..windows {
            let per = a.params.window / a.params.window_samples;
            for _ in 0..a.params.window_samples {
                *start += per;
                let limit = a.limit();
                a.on_sample(latency(limit), limit, *start);
            }
            seen.push(a.limit());
        }
        seen
    }

    #[test]
    fn grows_while_latency_stays_at_the_baseline() {
        let mut a = AdaptiveLimit::new(LimitParams::new(50));
        let mut now = Instant::now();
        let seen = drive(&mut a, &mut now, 200, |_| 100 * US);
        assert_eq!(*seen.last().unwrap(), 50, "{seen:?}");
        // Monotone growth up to the bound.
        assert!(seen.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn shrinks_when_latency_grows_with_concurrency() {
        // A server with 2 cores: latency stays at 100 us up to 2 in flight
        // and grows linearly past that.
        let server = |limit: usize| 100 * US * (limit.max(2) as u32) / 2;
        let mut a = AdaptiveLimit::new(LimitParams {
            initial: 50,
            ..LimitParams::new(50)
        });
        let mut now = Instant::now();
        // Learn the baseline at low concurrency first.
        drive(&mut a, &mut now, 1, |_| 100 * US);
        let seen = drive(&mut a, &mut now, 400, server);
        let last = *seen.last().unwrap();
        assert!((2..=8).contains(&last), "settled at {last}: {seen:?}");
        // And stays there.
        let later = drive(&mut a, &mut now, 100, server);
        assert!(later.iter().all(|l| (2..=8).contains(l)), "{later:?}");
    }

    #[test]
    fn does_not_grow_when_clients_use_little_of_it() {
        let mut a = AdaptiveLimit::new(LimitParams::new(50));
        let mut now = Instant::now();
        let start = a.limit();
        for _ in 0..10_000 {
            now += MS;
            assert_eq!(a.on_sample(100 * US, 1, now), None);
        }
        assert_eq!(a.limit(), start);
    }

    #[test]
    fn stays_within_its_bounds() {
        let mut a = AdaptiveLimit::new(LimitParams::new(4));
        let mut now = Instant::now();
        assert!(drive(&mut a, &mut now, 100, |_| 100 * US).iter().all(|&l| l <= 4));
        // Latency exploding: down to where the whole limit counts as
        // queued, never below the minimum.
        assert!(drive(&mut a, &mut now, 100, |_| 100 * MS).iter().all(|&l| l >= 1));
        assert!(a.limit() <= 3, "{}", a.limit());
        let mut tight = AdaptiveLimit::new(LimitParams {
            min: 3,
            ..LimitParams::new(50)
        });
        drive(&mut tight, &mut now, 1, |_| 100 * US);
        assert!(
            drive(&mut tight, &mut now, 200, |_| 100 * MS)
                .iter()
                .all(|&l| l >= 3)
        );
        // A smaller bound applies at once.
        let mut b = AdaptiveLimit::new(LimitParams::new(50));
        drive(&mut b, &mut now, 200, |_| 100 * US);
        b.set_max(10);
        assert_eq!(b.limit(), 10);
    }

    #[test]
    fn a_lasting_change_in_latency_becomes_the_new_baseline() {
        let mut a = AdaptiveLimit::new(LimitParams::new(50));
        let mut now = Instant::now();
        drive(&mut a, &mut now, 100, |_| 100 * US);
        // The network path gets slower for good (same for any concurrency):
        // after a dip, the limit recovers once the old baseline is forgotten.
        let seen = drive(&mut a, &mut now, 2000, |_| 400 * US);
        assert_eq!(*seen.last().unwrap(), 50, "{:?}", &seen[seen.len() - 20..]);
    }

    #[test]
    fn a_steady_mix_of_cheap_and_costly_statements_is_not_queueing() {
        let mut a = AdaptiveLimit::new(LimitParams::new(50));
        let mut now = Instant::now();
        let mut n = 0u32;
        let seen = drive(&mut a, &mut now, 300, |_| {
            n += 1;
            if n % 3 == 0 { 100 * US } else { 2 * MS }
        });
        assert_eq!(*seen.last().unwrap(), 50, "{seen:?}");
    }

    #[test]
    fn no_change_without_a_full_window() {
        let mut a = AdaptiveLimit::new(LimitParams::new(50));
        let now = Instant::now();
        // Many samples, no time passing: no window closes.
        for _ in 0..1000 {
            assert_eq!(a.on_sample(100 * US, 50, now), None);
        }
    }
}
