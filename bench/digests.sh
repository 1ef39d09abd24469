#!/usr/bin/env bash
# The cost of query digests on the hottest path: sysbench oltp_point_select (prepared
# and text) through two Sluice processes of the same build, one with [digests]
# enabled and one with them disabled, in one run, interleaved; median of the rounds.
# Reported per endpoint: QPS, and the proxy's CPU per query (utime+stime from
# /proc/PID/stat before and after each run, divided by the queries sysbench reports).
# The enabled instance's /digests is shown at the end as a check that it recorded.
# With perf installed, the enabled instance is then profiled under each statement kind
# and the share of its CPU samples in digest recording (`sluice_proxy::digests::record`,
# kept out of line for this) is reported: a direct reading that the QPS and CPU
# comparison, noisy on a shared machine, cannot give to within 2 %.
#
#   flock -o /tmp/sluice-cargo.lock bench/digests.sh       # own topology (SLUICE_PORT_BASE..+2)
#   SLUICE_BENCH_PRIMARY=127.0.0.1:13306 bench/digests.sh
# Knobs: BENCH_TIME (10 s per run), BENCH_ROUNDS (3), BENCH_THREADS (16), SLUICE_BIN,
#   BENCH_OUT (bench/results-digests-DATE.md).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd -P)
BENCH_TIME=${BENCH_TIME:-10}
BENCH_ROUNDS=${BENCH_ROUNDS:-3}
BENCH_THREADS=${BENCH_THREADS:-16}
SLUICE_BIN=${SLUICE_BIN:-$root/target/dist/sluice}
out=${BENCH_OUT:-$root/bench/results-digests-$(date +%F).md}
export SLUICE_PORT_BASE=${SLUICE_PORT_BASE:-13306}
# shellcheck source=bench/common.sh
source bench/common.sh
bench_init digests
[[ -x $SLUICE_BIN ]] || { log "no sluice binary at $SLUICE_BIN (cargo build --profile dist --bin sluice)"; exit 1; }
bench_database
# Ports above the topology's, away from the other bench scripts'.
declare -A addr_of=([on]=127.0.0.1:$((SLUICE_PORT_BASE + 40)) [off]=127.0.0.1:$((SLUICE_PORT_BASE + 41)))
declare -A admin_of=([on]=127.0.0.1:$((SLUICE_PORT_BASE + 42)) [off]=127.0.0.1:$((SLUICE_PORT_BASE + 43)))
declare -A enabled_of=([on]=true [off]=false)
declare -A pid_of=()
endpoints=(on off)

for e in "${endpoints[@]}"; do
  cat >"$work/$e.toml" <<EOF2
[server]
listen = "${addr_of[$e]}"
admin_listen = "${admin_of[$e]}"

[[users]]
name = "app"
password = "app"

[routing]
mode = "primary_only"

[digests]
enabled = ${enabled_of[$e]}

[[backends]]
name = "primary"
address = "$primary"
role = "primary"
tls = "disabled"  # like HAProxy's plain leg; the topology offers TLS
EOF2
  "$SLUICE_BIN" --config "$work/$e.toml" >"$work/$e.log" 2>&1 &
  pids+=($!)
  pid_of[$e]=$!
done
for e in "${endpoints[@]}"; do
  wait_port "${addr_of[$e]}" || { log "sluice ($e) did not start"; exit 1; }
done

# utime+stime in clock ticks of PID (fields 14 and 15 of /proc/PID/stat).
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)

for ((round = 1; round <= BENCH_ROUNDS; round++)); do
  for mode in auto disable; do
    # Alternate which endpoint goes first, so neither always runs on a warmer machine.
    order=("${endpoints[@]}")
    ((round % 2)) || order=(off on)
    for e in "${order[@]}"; do
      addr=${addr_of[$e]} pid=${pid_of[$e]}
      t0=$(ticks "$pid")
      sb "$addr" --db-ps-mode=$mode --threads="$BENCH_THREADS" --time="$BENCH_TIME" run >"$work/run.log"
      t1=$(ticks "$pid")
      queries=$(awk '$1 == "queries:" { q = $2 } END { print q + 0 }' "$work/run.log")
      qps=$(awk '$1 == "queries:" { q = $3; sub(/^\(/, "", q) } END { print q + 0 }' "$work/run.log")
      cpu=$(awk -v t=$((t1 - t0)) -v q="$queries" -v hz="$hz" 'BEGIN { printf "%.2f\n", t / hz / q * 1e6 }')
      printf '%s\t%s\t%s\t%s\t%s\n' "$mode" "$e" "$round" "$qps" "$cpu" >>"$work/results.tsv"
      log "round $round ps-mode=$mode digests $e: $qps qps, $cpu us CPU per query"
    done
  done
done

# Share of the enabled instance's samples in digest recording, per statement kind.
declare -A share_of=()
if command -v perf >/dev/null; then
  for mode in auto disable; do
    perf record -F 2000 -p "${pid_of[on]}" -o "$work/perf-$mode.data" -- sleep "$BENCH_TIME" >/dev/null 2>&1 &
    perf_pid=$!
    sb "${addr_of[on]}" --db-ps-mode=$mode --threads="$BENCH_THREADS" --time="$BENCH_TIME" run >/dev/null
    wait "$perf_pid" || true
    share_of[$mode]=$(perf report -i "$work/perf-$mode.data" --no-children --sort sym --stdio 2>/dev/null |
      awk '/digests::/ { sub(/%/, "", $1); s += $1 } END { printf "%.2f", s }')
    log "ps-mode=$mode: ${share_of[$mode]} % of Sluice's samples in digest recording"
  done
fi

median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
col() { awk -F'\t' -v m="$1" -v e="$2" -v c="$3" '$1 == m && $2 == e {print $c}' "$work/results.tsv" | median; }
# The recorded view, as `sluice top --once` prints it (a check that digests were on).
top=$("$SLUICE_BIN" top --once --sort count --limit 5 --admin "${admin_of[on]}" || true)
{
  echo "# Query digest cost $(date '+%F %H:%M')"
  echo
  echo "sysbench oltp_point_select, $BENCH_THREADS threads, ${BENCH_TIME} s per run, median of $BENCH_ROUNDS" \
    "interleaved rounds; two Sluice processes of one build (commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD || echo ' (dirty)'))," \
    "primary_only, \`[digests] enabled = true\` and \`false\`; $(nproc) cores shared with MariaDB and sysbench." \
    "CPU is the proxy process's utime+stime over the run divided by the queries."
  echo
  echo "| statements | digests | QPS | CPU us/query | QPS on/off | CPU on/off |"
  echo "| --- | --- | ---: | ---: | ---: | ---: |"
  for mode in auto disable; do
    label=prepared
    [[ $mode == auto ]] || label=text
    q_off=$(col "$mode" off 4) c_off=$(col "$mode" off 5)
    for e in "${endpoints[@]}"; do
      q=$(col "$mode" "$e" 4) c=$(col "$mode" "$e" 5)
      r="" s=""
      if [[ $e == on ]]; then
        r=$(awk -v a="$q" -v b="$q_off" 'BEGIN { printf "%.3f", a / b }')
        s=$(awk -v a="$c" -v b="$c_off" 'BEGIN { printf "%.3f", a / b }')
      fi
      printf '| %s | %s | %.0f | %s | %s | %s |\n' "$label" "$e" "$q" "$c" "$r" "$s"
    done
  done
  if ((${#share_of[@]})); then
    echo
    echo "perf profile of the enabled instance (${BENCH_TIME} s per statement kind, 2000 Hz): share of" \
      "Sluice's CPU samples in \`sluice_proxy::digests::*\` (the per-statement table update: thread-local" \
      "table, its uncontended mutex, the hash lookup, the counters). Not included: the two clock" \
      "reads per statement (\`Instant::now\`, a vDSO call of some 20-50 ns)."
    echo
    echo "| statements | share of Sluice's CPU in digest recording |"
    echo "| --- | ---: |"
    echo "| prepared | ${share_of[auto]} % |"
    echo "| text | ${share_of[disable]} % |"
  fi
  echo
  echo "Every run (mode, digests, round, QPS, CPU us/query):"
  echo
  echo '```'
  cat "$work/results.tsv"
  echo '```'
  echo
  echo "The enabled instance afterwards (\`sluice top --once --sort count --limit 5\`):"
  echo
  echo '```'
  echo "$top"
  echo '```'
} >"$out"
cat "$out"
