#!/usr/bin/env python3
"""The guard's present-key cost from four concurrent runs of `BENCH_SUITE=guard
BENCH_CONCURRENT=1 bench/run.sh`: guard / no guard and an A/A run
(BENCH_GUARD_AA=1), each once as is and once with BENCH_GUARD_SWAP=1. Each guard
run is divided by its own A/A (which cancels whatever favours one port or start
order); the two are combined by their geometric mean. The interval is a bootstrap
over the rounds (resampled with replacement), 90 %.

    bench/guard_ab.py GUARD.md AA.md GUARD_SWAPPED.md AA_SWAPPED.md

Each argument may list several sittings' files of the same kind, joined with commas
(GUARD1.md,GUARD2.md ...): their rounds are pooled.
"""
import random
import re
import statistics
import sys


def rounds(paths):
    """Each workload's per-round ratios, as listed below run.sh's table, pooled over
    the comma-separated files in `paths`."""
    found = {}
    for path in paths.split(","):
        for line in open(path, encoding="utf-8"):
            m = re.match(r"- (\w+): ([0-9. ]+)$", line.strip())
            if m:
                found.setdefault(m.group(1), []).extend(float(x) for x in m.group(2).split())
    return found


def corrected(g0, a0, g1, a1, pick=statistics.median):
    return ((pick(g0) / pick(a0)) * (pick(g1) / pick(a1))) ** 0.5


def main():
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    runs = [rounds(p) for p in sys.argv[1:]]
    rng = random.Random(1)
    for w in runs[0]:
        data = [r.get(w) for r in runs]
        if not all(data):
            print(f"{w}: missing from a run")
            continue
        samples = sorted(
            corrected(*[[rng.choice(d) for _ in d] for d in data])
            for _ in range(4000)
        )
        print(
            f"{w}: guard / no guard corrected {corrected(*data):.3f} "
            f"(90 % interval {samples[200]:.3f}-{samples[3800]:.3f}; "
            f"by geometric means {corrected(*data, pick=statistics.geometric_mean):.3f}; "
            f"{min(len(d) for d in data)} rounds per run)"
        )


main()
