//! Counters cheap to bump from every worker thread at once. The exporter's
//! counter is one atomic: a counter bumped on every guarded lookup by two
//! worker threads bounced its cache line between the cores on each bump.
//! These count into stripes, one per worker thread (as the latency
//! histograms do), and are summed when `/metrics` is scraped.

use super::latency::escape;
use super::registry::{Registry, family_header};
use crate::per_thread::PerThread;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A counter family: its name and HELP text.
pub struct CounterFamily {
    pub name: &'static str,
    pub help: &'static str,
}

/// One series of a family (one set of label values).
pub struct Striped {
    family: &'static CounterFamily,
    /// `name="value"` pairs, escaped, joined with commas.
    labels: String,
    stripes: Box<PerThread<AtomicU64>>,
}

impl Striped {
    pub fn increment(&self) {
        self.stripes.mine().fetch_add(1, Relaxed);
    }

    fn total(&self) -> u64 {
        self.stripes.all().map(|s| s.load(Relaxed)).sum()
    }
}

static COUNTERS: Registry<Striped> = Registry::new();

/// The series of `family` with `labels`, registered on first use.
pub fn counter(family: &'static CounterFamily, labels: &[(&str, &str)]) -> Arc<Striped> {
    let mut text = String::new();
    for (i, (name, value)) in labels.iter().enumerate() {
        if i > 0 {
            text.push(',');
        }
        let _ = write!(text, "{name}=\"{}\"", escape(value));
    }
    COUNTERS.get_or_add(
        |c| std::ptr::eq(c.family, family) && c.labels == text,
        || Striped {
            family,
            labels: text.clone(),
            stripes: Box::default(),
        },
    )
}

/// Appends every registered series in the Prometheus text format, a family's
/// series under one HELP and TYPE.
pub fn render(out: &mut String) {
    let mut last = None;
    for c in COUNTERS.sorted(|c| (c.family.name, c.labels.clone())) {
        let f = c.family;
        family_header(out, &mut last, f.name, f.help, "counter");
        if c.labels.is_empty() {
            let _ = writeln!(out, "{} {}", f.name, c.total());
        } else {
            let _ = writeln!(out, "{}{{{}}} {}", f.name, c.labels, c.total());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static TEST: CounterFamily = CounterFamily {
        name: "test_striped_total",
        help: "a test family",
    };

    #[test]
    fn every_threads_bumps_are_summed_under_one_series() {
        let c = counter(&TEST, &[("table", "app.t\"1"), ("reason", "r")]);
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let c = counter(&TEST, &[("table", "app.t\"1"), ("reason", "r")]);
                std::thread::spawn(move || (0..1000).for_each(|_| c.increment()))
            })
            .collect();
        for t in threads {
            t.join().expect("a counting thread panicked");
        }
        c.increment();
        let mut out = String::new();
        render(&mut out);
        assert!(out.contains("# HELP test_striped_total a test family\n# TYPE test_striped_total counter\n"));
        assert!(
            out.contains("test_striped_total{table=\"app.t\\\"1\",reason=\"r\"} 4001\n"),
            "{out}"
        );
        assert_eq!(out.matches("# TYPE test_striped_total").count(), 1);
    }
}
