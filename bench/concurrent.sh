#!/usr/bin/env bash
# Two proxies compared at the same time: A and B serve sysbench oltp_point_select
# (prepared and text) at once, each with its own sysbench of BENCH_THREADS threads, so the
# machine's speed (which drifts by tens of percent here between runs) is the same for both;
# the per-round QPS ratio B / A then compares what each costs. Each round alternates which
# side starts first. Also each side's CPU per query (utime + stime from /proc/PID/stat).
#
#   bench/concurrent.sh                                   # A = HAProxy, B = Sluice
#   BENCH_A=sluice SLUICE_BIN_A=/path/to/old/sluice bench/concurrent.sh   # old build vs new
#   BENCH_A=sluice bench/concurrent.sh                    # A/A: the method's own bias
#   BENCH_A=sluice BENCH_WORKER_THREADS_A=1 bench/concurrent.sh
# Knobs: BENCH_A (haproxy or sluice), BENCH_B (sluice or haproxy), SLUICE_BIN_A / SLUICE_BIN_B
#   (default SLUICE_BIN, target/dist/sluice), BENCH_WORKER_THREADS_A / _B (0), BENCH_BACKEND_TLS,
#   BENCH_TIME (8 s per run), BENCH_ROUNDS (11), BENCH_THREADS (8 per side),
#   BENCH_MODES ("auto disable": sysbench --db-ps-mode), BENCH_OUT
#   (bench/results-concurrent-DATE.md), SLUICE_BENCH_PRIMARY (use a running primary).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd -P)
BENCH_TIME=${BENCH_TIME:-8}
BENCH_ROUNDS=${BENCH_ROUNDS:-11}
BENCH_THREADS=${BENCH_THREADS:-8}
BENCH_MODES=${BENCH_MODES:-auto disable}
BENCH_A=${BENCH_A:-haproxy}
BENCH_B=${BENCH_B:-sluice}
SLUICE_BIN=${SLUICE_BIN:-$root/target/dist/sluice}
SLUICE_BIN_A=${SLUICE_BIN_A:-$SLUICE_BIN}
SLUICE_BIN_B=${SLUICE_BIN_B:-$SLUICE_BIN}
out=${BENCH_OUT:-$root/bench/results-concurrent-$(date +%F).md}
export SLUICE_PORT_BASE=${SLUICE_PORT_BASE:-13306}
# shellcheck source=bench/common.sh
source bench/common.sh
bench_init concurrent
bench_database

declare -A addr_of=([A]=127.0.0.1:6051 [B]=127.0.0.1:6052) admin_of=([A]=127.0.0.1:9051 [B]=127.0.0.1:9052)
declare -A pid_of label_of
# Starts side SIDE (A or B) as KIND (haproxy or sluice).
start_side() {
  local side=$1 kind=$2 bin wt
  case $kind in
    haproxy)
      sed -e "s/@LISTEN@/${addr_of[$side]}/" -e "s/@PRIMARY@/$primary/" bench/haproxy.cfg >"$work/$side.cfg"
      haproxy -db -f "$work/$side.cfg" >"$work/$side.log" 2>&1 &
      label_of[$side]="HAProxy $(haproxy -v | awk 'NR == 1 { print $3 }')"
      ;;
    sluice)
      bin=SLUICE_BIN_$side wt=BENCH_WORKER_THREADS_$side
      sluice_config "${addr_of[$side]}" "${admin_of[$side]}" "${!wt:-0}" >"$work/$side.toml"
      "${!bin}" --config "$work/$side.toml" >"$work/$side.log" 2>&1 &
      label_of[$side]="Sluice ${!bin} (worker_threads = ${!wt:-0})"
      ;;
    *) log "BENCH_$side must be haproxy or sluice, not '$kind'"; exit 1 ;;
  esac
  pids+=($!)
  pid_of[$side]=$!
  wait_port "${addr_of[$side]}" || { tail -n 20 "$work/$side.log" >&2; log "side $side did not start"; exit 1; }
}
start_side A "$BENCH_A"
start_side B "$BENCH_B"

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
# One side's sysbench run, into $work/SIDE.run.
run_side() {
  sb "${addr_of[$1]}" --db-ps-mode="$2" --threads="$BENCH_THREADS" --time="$BENCH_TIME" run >"$work/$1.run"
}
queries() { awk '$1 == "queries:" { q = $2 } END { print q + 0 }' "$work/$1.run"; }

for mode in $BENCH_MODES; do
  # Warm-up: pools, statement caches.
  sb "${addr_of[A]}" --db-ps-mode="$mode" --threads="$BENCH_THREADS" --time=2 run >/dev/null
  sb "${addr_of[B]}" --db-ps-mode="$mode" --threads="$BENCH_THREADS" --time=2 run >/dev/null
  for ((round = 1; round <= BENCH_ROUNDS; round++)); do
    a0=$(ticks "${pid_of[A]}") b0=$(ticks "${pid_of[B]}")
    if ((round % 2)); then first=A second=B; else first=B second=A; fi
    run_side $first "$mode" &
    p1=$!
    run_side $second "$mode" &
    p2=$!
    wait $p1 $p2
    a1=$(ticks "${pid_of[A]}") b1=$(ticks "${pid_of[B]}")
    qa=$(queries A) qb=$(queries B)
    ((qa > 0 && qb > 0)) || { log "a run failed"; cat "$work/A.run" "$work/B.run" >&2; exit 1; }
    read -r ratio cpu_a cpu_b < <(awk -v qa="$qa" -v qb="$qb" -v ta=$((a1 - a0)) -v tb=$((b1 - b0)) -v hz="$hz" \
      'BEGIN { printf "%.3f %.2f %.2f\n", qb / qa, ta / hz / qa * 1e6, tb / hz / qb * 1e6 }')
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$mode" "$round" "$((qa / BENCH_TIME))" "$((qb / BENCH_TIME))" \
      "$ratio" "$cpu_a" "$cpu_b" >>"$work/results.tsv"
    log "ps-mode=$mode round $round: A $((qa / BENCH_TIME)) qps, B $((qb / BENCH_TIME)) qps, B/A $ratio; CPU us/query A $cpu_a B $cpu_b"
  done
done

{
  echo "# Two proxies at once: $(date +%F), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  echo
  echo "bench/concurrent.sh: A = ${label_of[A]}, B = ${label_of[B]}; each served by its own sysbench"
  echo "oltp_point_select of $BENCH_THREADS threads at the same time, $BENCH_TIME s per round,"
  echo "$BENCH_ROUNDS rounds per statement mode, the side started first alternating. CPU = the"
  echo "process's utime + stime per query. $(nproc) cores, shared by both proxies, both"
  echo "sysbenches and the primary."
  echo
  echo "| statements | B / A QPS, median | min-max | CPU µs/query A, median | B, median | rounds |"
  echo "|---|---:|---:|---:|---:|---:|"
  for mode in $BENCH_MODES; do
    name=$([[ $mode == auto ]] && echo prepared || echo text)
    col() { awk -F'\t' -v m="$mode" -v c="$1" '$1 == m { print $c }' "$work/results.tsv" | sort -g; }
    med() { awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
    echo "| $name | $(col 5 | med) | $(col 5 | head -1)-$(col 5 | tail -1) | $(col 6 | med) | $(col 7 | med) | $(col 5 | wc -l) |"
  done
  echo
  echo "Per round (mode, round, A qps, B qps, B/A, CPU A, CPU B):"
  echo
  echo '```'
  cat "$work/results.tsv"
  echo '```'
} >"$out"
cat "$out"
