//! Latency histograms cheap enough to record on every statement.
//!
//! The exporter's histograms push each sample into a shared lock-free list
//! (an epoch guard and contended atomics, about 150 instructions a sample).
//! These count straight into fixed buckets, striped by worker thread so two
//! threads never write the same cache line, and are summed when `/metrics`
//! is scraped. A series (one family and one label value) is registered once
//! and lives for the process, as the exporter's series do.

use super::registry::{Registry, family_header};
use crate::per_thread::PerThread;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds of the buckets in seconds (Prometheus `le`), shared by every
/// latency family.
pub const BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The bounds in nanoseconds, for a compare per bucket without floats.
const BOUNDS_NS: [u64; 16] = {
    let mut out = [0u64; 16];
    let mut i = 0;
    while i < 16 {
        out[i] = (BUCKETS[i] * 1e9) as u64;
        i += 1;
    }
    out
};

/// One thread's counts of one series.
#[derive(Default)]
struct Stripe {
    /// Samples per bucket; the last one is `+Inf`.
    buckets: [AtomicU64; 17],
    sum_ns: AtomicU64,
}

/// A histogram family: its name and HELP text.
pub struct Family {
    pub name: &'static str,
    pub help: &'static str,
    /// The one label that tells its series apart.
    pub label: &'static str,
}

/// One series of a family; record through a handle kept per session.
pub struct Series {
    family: &'static Family,
    value: String,
    stripes: Box<PerThread<Stripe>>,
}

impl Series {
    pub fn record(&self, took: Duration) {
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let bucket = BOUNDS_NS.iter().position(|&b| ns <= b).unwrap_or(BOUNDS_NS.len());
        let stripe = self.stripes.mine();
        stripe.buckets[bucket].fetch_add(1, Relaxed);
        stripe.sum_ns.fetch_add(ns, Relaxed);
    }

    /// Cumulative bucket counts (the last is the total) and the sum in
    /// seconds.
    fn snapshot(&self) -> ([u64; 17], f64) {
        let mut counts = [0u64; 17];
        let mut sum_ns = 0u128;
        for stripe in self.stripes.all() {
            for (c, b) in counts.iter_mut().zip(&stripe.buckets) {
                *c += b.load(Relaxed);
            }
            sum_ns += u128::from(stripe.sum_ns.load(Relaxed));
        }
        for i in 1..counts.len() {
            counts[i] += counts[i - 1];
        }
        (counts, sum_ns as f64 / 1e9)
    }
}

static SERIES: Registry<Series> = Registry::new();

/// The series of `family` for `value`, registered on first use.
pub fn series(family: &'static Family, value: &str) -> Arc<Series> {
    SERIES.get_or_add(
        |s| std::ptr::eq(s.family, family) && s.value == value,
        || Series {
            family,
            value: value.to_string(),
            stripes: Box::default(),
        },
    )
}

/// Appends every registered series in the Prometheus text format, a family's
/// series under one HELP and TYPE.
pub fn render(out: &mut String) {
    let mut last = None;
    for s in SERIES.sorted(|s| (s.family.name, s.value.clone())) {
        let f = s.family;
        family_header(out, &mut last, f.name, f.help, "histogram");
        let value = escape(&s.value);
        let (counts, sum) = s.snapshot();
        for (le, count) in BUCKETS.iter().zip(counts) {
            let _ = writeln!(
                out,
                "{}_bucket{{{}=\"{value}\",le=\"{le}\"}} {count}",
                f.name, f.label
            );
        }
        let total = counts[16];
        let _ = writeln!(
            out,
            "{}_bucket{{{}=\"{value}\",le=\"+Inf\"}} {total}",
            f.name, f.label
        );
        let _ = writeln!(out, "{}_sum{{{}=\"{value}\"}} {sum}", f.name, f.label);
        let _ = writeln!(out, "{}_count{{{}=\"{value}\"}} {total}", f.name, f.label);
    }
}

/// A label value as the text format wants it.
pub(super) fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    static TEST: Family = Family {
        name: "test_latency_seconds",
        help: "a test family",
        label: "route",
    };

    #[test]
    fn samples_land_in_cumulative_buckets_and_the_sum() {
        let s = series(&TEST, "a\"b");
        s.record(Duration::from_micros(50)); // <= 0.0001
        s.record(Duration::from_micros(100)); // the bound itself counts in it
        s.record(Duration::from_millis(3)); // <= 0.005
        s.record(Duration::from_secs(60)); // +Inf only
        let (counts, sum) = s.snapshot();
        assert_eq!(counts[0], 2);
        assert_eq!(counts[4], 2, "0.0025 holds the first two");
        assert_eq!(counts[5], 3);
        assert_eq!(counts[15], 3);
        assert_eq!(counts[16], 4);
        assert!((sum - 60.00315).abs() < 1e-9, "{sum}");

        assert!(Arc::ptr_eq(&s, &series(&TEST, "a\"b")), "one series per value");
        let mut text = String::new();
        render(&mut text);
        assert!(text.contains("# TYPE test_latency_seconds histogram\n"), "{text}");
        assert!(
            text.contains("test_latency_seconds_bucket{route=\"a\\\"b\",le=\"0.0001\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("test_latency_seconds_bucket{route=\"a\\\"b\",le=\"+Inf\"} 4\n"),
            "{text}"
        );
        assert!(
            text.contains("test_latency_seconds_count{route=\"a\\\"b\"} 4\n"),
            "{text}"
        );
    }

    #[test]
    fn every_threads_samples_are_summed() {
        let s = series(&TEST, "threads");
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let s = s.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        s.record(Duration::from_millis(1));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("recording thread");
        }
        let (counts, _) = s.snapshot();
        assert_eq!(counts[3], 4000, "1 ms is within le=0.001");
        assert_eq!(counts[2], 0);
        assert_eq!(counts[16], 4000);
    }
}
