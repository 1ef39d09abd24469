//! Classification cost per statement, for typical OLTP statements:
//!
//! - hit:   `Classifier::classify` on a warmed cache; every call gets a
//!   statement with different literal values, so the fingerprint is computed
//!   each time but the template is found in the cache (checked);
//! - miss:  `Facts::of` (sqlparser parse + analysis + lexer), what a cache miss
//!   runs, and `Classifier::classify` on a fresh classifier (miss + insert);
//! - lexer: the one-pass lexer classification (`sluice_router::classify`).
//!
//! `cargo bench -p sluice-router --bench classify [-- FILTER]`
//! (FILTER: a substring of the statement names; `CLASSIFY_ONLY=hit` (or
//! miss, fresh, lexer) runs one measurement only, e.g. under `perf record`.)
//! Each measurement: warm-up (calibrating the iteration count to about
//! `ROUND_MS` per round), then `ROUNDS` rounds; best and median ns/op.

use sluice_router::{Classifier, Facts, Scratch, classify};
use std::hint::black_box;
use std::time::{Duration, Instant};

const ROUNDS: usize = 15;
const ROUND_MS: u64 = 20;
/// Distinct literal variants per statement (cycled through).
const VARIANTS: usize = 64;
/// The proxy's cache size (proxy/src/shared.rs).
const CACHE_ENTRIES: usize = 10_000;

/// A tiny deterministic generator for literal values.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn id(&mut self) -> u64 {
        1 + self.next() % 10_000
    }
    /// sysbench's `c` / `pad` shape: groups of 11 digits joined by '-'.
    fn sb_string(&mut self, groups: usize) -> String {
        (0..groups)
            .map(|_| format!("{:011}", self.next() % 100_000_000_000))
            .collect::<Vec<_>>()
            .join("-")
    }
}

/// Statement name and a generator of one variant (new literal values).
type Gen = fn(&mut Rng) -> String;

fn statements() -> Vec<(&'static str, Gen)> {
    vec![
        ("point select", |r| {
            format!("SELECT c FROM sbtest1 WHERE id={}", r.id())
        }),
        ("simple range", |r| {
            let a = r.id();
            format!("SELECT c FROM sbtest1 WHERE id BETWEEN {a} AND {}", a + 99)
        }),
        ("sum range", |r| {
            let a = r.id();
            format!("SELECT SUM(k) FROM sbtest1 WHERE id BETWEEN {a} AND {}", a + 99)
        }),
        ("order range", |r| {
            let a = r.id();
            format!(
                "SELECT c FROM sbtest1 WHERE id BETWEEN {a} AND {} ORDER BY c",
                a + 99
            )
        }),
        ("distinct range", |r| {
            let a = r.id();
            format!(
                "SELECT DISTINCT c FROM sbtest1 WHERE id BETWEEN {a} AND {} ORDER BY c",
                a + 99
            )
        }),
        ("update index", |r| {
            format!("UPDATE sbtest1 SET k=k+1 WHERE id={}", r.id())
        }),
        ("update non-index", |r| {
            let c = r.sb_string(10);
            format!("UPDATE sbtest1 SET c='{c}' WHERE id={}", r.id())
        }),
        ("delete", |r| format!("DELETE FROM sbtest1 WHERE id={}", r.id())),
        ("insert", |r| {
            let (id, k, c, pad) = (r.id(), r.id(), r.sb_string(10), r.sb_string(5));
            format!("INSERT INTO sbtest1 (id, k, c, pad) VALUES ({id}, {k}, '{c}', '{pad}')")
        }),
        ("BEGIN", |_| "BEGIN".to_string()),
        ("COMMIT", |_| "COMMIT".to_string()),
        ("insert 20 columns", |r| {
            let cols = (1..=20).map(|i| format!("col{i}")).collect::<Vec<_>>().join(", ");
            let vals = (1..=20)
                .map(|i| match i % 4 {
                    0 => format!("'{}'", r.sb_string(2)),
                    1 => r.id().to_string(),
                    2 => format!("{}.{:02}", r.id(), r.next() % 100),
                    _ => format!("'2026-11-{:02} 12:{:02}:00'", 1 + r.next() % 28, r.next() % 60),
                })
                .collect::<Vec<_>>()
                .join(", ");
            format!("INSERT INTO orders ({cols}) VALUES ({vals})")
        }),
        ("IN (100 ids)", |r| {
            let ids = (0..100)
                .map(|_| r.id().to_string())
                .collect::<Vec<_>>()
                .join(", ");
            format!("SELECT c FROM sbtest1 WHERE id IN ({ids})")
        }),
    ]
}

/// Whether measurement `kind` runs (`CLASSIFY_ONLY` unset or equal to it).
fn wanted(kind: &str) -> bool {
    std::env::var("CLASSIFY_ONLY").map_or(true, |only| only == kind)
}

struct Stats {
    best: f64,
    median: f64,
}

impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", fmt_ns(self.median), fmt_ns(self.best))
    }
}

/// A measurement that may have been skipped.
fn show(s: &Option<Stats>) -> String {
    s.as_ref().map_or_else(|| "-".to_string(), Stats::to_string)
}

fn fmt_ns(ns: f64) -> String {
    if ns < 100.0 {
        format!("{ns:.1}")
    } else {
        format!("{ns:.0}")
    }
}

/// Times `op(i)` for i in 0..n per round; returns ns per call.
fn measure(mut op: impl FnMut(usize)) -> Stats {
    let run = |n: usize, op: &mut dyn FnMut(usize)| {
        let t = Instant::now();
        for i in 0..n {
            op(i);
        }
        t.elapsed()
    };
    // Warm-up doubles as calibration: grow n until a round takes ROUND_MS.
    let target = Duration::from_millis(ROUND_MS);
    let mut n = 1;
    loop {
        let d = run(n, &mut op);
        if d >= target {
            break;
        }
        let scale = if d.is_zero() {
            10.0
        } else {
            (target.as_secs_f64() / d.as_secs_f64()).min(10.0)
        };
        n = ((n as f64 * scale * 1.1) as usize).max(n + 1);
    }
    let mut per_op: Vec<f64> = (0..ROUNDS)
        .map(|_| run(n, &mut op).as_nanos() as f64 / n as f64)
        .collect();
    per_op.sort_by(f64::total_cmp);
    Stats {
        best: per_op[0],
        median: per_op[ROUNDS / 2],
    }
}

/// `Classifier::classify` on a fresh classifier: the setup (a new
/// classifier per call) is outside the timed region, so it is timed per call.
fn measure_fresh(variants: &[String]) -> Stats {
    const BATCH: usize = 64;
    let mut scratch = Scratch::default();
    let round = |scratch: &mut Scratch| {
        let classifiers: Vec<Classifier> = (0..BATCH).map(|_| Classifier::new(CACHE_ENTRIES)).collect();
        let t = Instant::now();
        for (i, c) in classifiers.iter().enumerate() {
            let r = c.classify(black_box(&variants[i % variants.len()]), scratch);
            assert!(!r.cache_hit);
            black_box(r);
        }
        let d = t.elapsed();
        drop(classifiers);
        d.as_nanos() as f64 / BATCH as f64
    };
    for _ in 0..3 {
        round(&mut scratch);
    }
    let mut per_op: Vec<f64> = (0..ROUNDS).map(|_| round(&mut scratch)).collect();
    per_op.sort_by(f64::total_cmp);
    Stats {
        best: per_op[0],
        median: per_op[ROUNDS / 2],
    }
}

fn main() {
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut rows = Vec::new();
    for (name, generate) in statements() {
        if filter.as_deref().is_some_and(|f| !name.contains(f)) {
            continue;
        }
        let variants: Vec<String> = (0..VARIANTS).map(|_| generate(&mut rng)).collect();
        let len = variants.iter().map(String::len).sum::<usize>() / variants.len();

        // Hit: warm the cache, check that every variant shares one template.
        let classifier = Classifier::new(CACHE_ENTRIES);
        let mut scratch = Scratch::default();
        classifier.classify(&variants[0], &mut scratch);
        for v in &variants {
            let r = classifier.classify(v, &mut scratch);
            assert!(r.cache_hit, "{name}: variant missed the cache: {v}");
        }
        let hit = wanted("hit").then(|| {
            measure(|i| {
                let r = classifier.classify(black_box(&variants[i % VARIANTS]), &mut scratch);
                black_box(r);
            })
        });
        let miss = wanted("miss").then(|| {
            measure(|i| {
                black_box(Facts::of(black_box(&variants[i % VARIANTS])));
            })
        });
        let fresh = wanted("fresh").then(|| measure_fresh(&variants));
        let lexer = wanted("lexer").then(|| {
            measure(|i| {
                black_box(classify(black_box(&variants[i % VARIANTS])));
            })
        });
        eprintln!(
            "{name}: hit {}, miss {}, fresh {}, lexer {}",
            show(&hit),
            show(&miss),
            show(&fresh),
            show(&lexer)
        );
        rows.push((name, len, hit, miss, fresh, lexer));
    }

    println!();
    println!(
        "ns/op, median (best) of {ROUNDS} rounds of ~{ROUND_MS} ms; {VARIANTS} literal variants per statement."
    );
    println!(
        "hit = Classifier::classify on a warmed cache; miss = Facts::of (sqlparser + analysis + lexer);"
    );
    println!(
        "fresh = Classifier::classify on a fresh classifier (miss + insert); lexer = sluice_router::classify."
    );
    println!();
    println!(
        "| statement | bytes | hit ns | miss ns (Facts::of) | miss ns (fresh Classifier) | lexer ns | hit < 1 µs |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | :---: |");
    for (name, len, hit, miss, fresh, lexer) in &rows {
        let under = match hit {
            Some(h) if h.median < 1000.0 => "yes",
            Some(_) => "**no**",
            None => "-",
        };
        println!(
            "| {name} | {len} | {} | {} | {} | {} | {under} |",
            show(hit),
            show(miss),
            show(fresh),
            show(lexer)
        );
    }
}
