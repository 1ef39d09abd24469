#!/usr/bin/env bash
# CPU per query of the proxies themselves: sysbench oltp_point_select (prepared and
# text) through HAProxy (TCP mode) and through Sluice (primary_only), in one run,
# interleaved; each run reads the proxy's utime and stime from /proc/PID/stat before
# and after and divides by the queries sysbench reports.
#
#   bench/cpu.sh                          # starts its own topology (SLUICE_PORT_BASE..+2)
#   SLUICE_BENCH_PRIMARY=127.0.0.1:13306 bench/cpu.sh
#   SLUICE_BIN_BEFORE=/path/to/old/sluice bench/cpu.sh   # also an older build, same run
# Knobs: BENCH_TIME (10 s per run), BENCH_ROUNDS (3), BENCH_THREADS (16), SLUICE_BIN,
#   SLUICE_BIN_BEFORE, BENCH_OUT (bench/results-cpu-DATE.md), BENCH_BACKEND_TLS (Sluice's
#   backend tls mode, default disabled like HAProxy's leg), BENCH_WORKER_THREADS (both
#   Sluice builds' server.worker_threads, default 0 = one per core).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=bench/common.sh
source bench/common.sh
bench_defaults
out=${BENCH_OUT:-$root/bench/results-cpu-$(date +%F).md}
haproxy_addr=127.0.0.1:16043
sluice_addr=127.0.0.1:6043
sluice_admin=127.0.0.1:9043
bench_init cpu
[[ -x $SLUICE_BIN ]] || { log "no sluice binary at $SLUICE_BIN (cargo build --profile dist --bin sluice)"; exit 1; }
bench_database

sed -e "s/@LISTEN@/$haproxy_addr/" -e "s/@PRIMARY@/$primary/" bench/haproxy.cfg >"$work/haproxy.cfg"
haproxy -db -f "$work/haproxy.cfg" >"$work/haproxy.log" 2>&1 &
pids+=($!)
haproxy_pid=$!
declare -A addr_of=([haproxy]=$haproxy_addr [sluice]=$sluice_addr [sluice-before]=127.0.0.1:6044)
declare -A pid_of=([haproxy]=$haproxy_pid)
endpoints=(haproxy sluice)
sluice_config "$sluice_addr" "$sluice_admin" "${BENCH_WORKER_THREADS:-0}" >"$work/sluice.toml"
"$SLUICE_BIN" --config "$work/sluice.toml" >"$work/sluice.log" 2>&1 &
pids+=($!)
pid_of[sluice]=$!
if [[ -n ${SLUICE_BIN_BEFORE:-} ]]; then
  sluice_config "${addr_of[sluice-before]}" 127.0.0.1:9044 "${BENCH_WORKER_THREADS:-0}" >"$work/before.toml"
  "$SLUICE_BIN_BEFORE" --config "$work/before.toml" >"$work/before.log" 2>&1 &
  pids+=($!)
  pid_of[sluice-before]=$!
  endpoints+=(sluice-before)
fi
for e in "${endpoints[@]}"; do
  wait_port "${addr_of[$e]}" || { log "$e did not start"; exit 1; }
done

# utime+stime in clock ticks of PID (fields 14 and 15 of /proc/PID/stat).
ticks() { awk '{print $14, $15}' "/proc/$1/stat"; }
# The primary's mariadbd: what the database itself spends per query behind
# each proxy (a proxy can make the server's work larger or smaller).
db_pid=$(ss -Hltnp "sport = :${primary##*:}" | sed -n 's/.*pid=\([0-9]*\).*/\1/p' | head -1)
db_ticks() { if [[ -n $db_pid ]]; then awk '{print $14 + $15}' "/proc/$db_pid/stat"; else echo 0; fi; }
hz=$(getconf CLK_TCK)

for ((round = 1; round <= BENCH_ROUNDS; round++)); do
  for mode in auto disable; do
    for e in "${endpoints[@]}"; do
      addr=${addr_of[$e]} pid=${pid_of[$e]}
      read -r u0 s0 < <(ticks "$pid")
      d0=$(db_ticks)
      sb "$addr" --db-ps-mode=$mode --threads="$BENCH_THREADS" --time="$BENCH_TIME" run >"$work/run.log"
      read -r u1 s1 < <(ticks "$pid")
      d1=$(db_ticks)
      queries=$(awk '$1 == "queries:" { q = $2 } END { print q + 0 }' "$work/run.log")
      qps=$(awk '$1 == "queries:" { q = $3; sub(/^\(/, "", q) } END { print q + 0 }' "$work/run.log")
      read -r user sys < <(awk -v u=$((u1 - u0)) -v s=$((s1 - s0)) -v q="$queries" -v hz="$hz" \
        'BEGIN { printf "%.2f %.2f\n", u / hz / q * 1e6, s / hz / q * 1e6 }')
      db=$(awk -v d=$((d1 - d0)) -v q="$queries" -v hz="$hz" 'BEGIN { printf "%.2f", d / hz / q * 1e6 }')
      printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$mode" "$e" "$round" "$qps" "$user" "$sys" "$db" >>"$work/results.tsv"
      log "round $round ps-mode=$mode $e: $qps qps, $user us user + $sys us sys per query"
    done
  done
done

median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
col() { awk -F'\t' -v m="$1" -v e="$2" -v c="$3" '$1 == m && $2 == e {print $c}' "$work/results.tsv" | median; }
{
  echo "# Proxy CPU per query $(date '+%F %H:%M')"
  echo
  echo "sysbench oltp_point_select, $BENCH_THREADS threads, ${BENCH_TIME} s per run, median of $BENCH_ROUNDS" \
    "interleaved rounds; sluice at commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD || echo ' (dirty)')" \
    "(primary_only, worker_threads = ${BENCH_WORKER_THREADS:-0}); $(haproxy -v | awk 'NR == 1 {print $1, $3}'); $(nproc) cores. CPU is the proxy" \
    "process's utime/stime over the run divided by the queries; MariaDB is the primary's mariadbd," \
    "user + sys, the same way."
  echo
  echo "| statements | proxy | QPS | user us/query | sys us/query | MariaDB us/query | Sluice/HAProxy QPS |"
  echo "| --- | --- | ---: | ---: | ---: | ---: | ---: |"
  for mode in auto disable; do
    label=prepared
    [[ $mode == auto ]] || label=text
    h=$(col "$mode" haproxy 4)
    for e in "${endpoints[@]}"; do
      q=$(col "$mode" "$e" 4)
      r=""
      [[ $e == haproxy ]] || r=$(awk -v a="$q" -v b="$h" 'BEGIN { printf "%.2f", a / b }')
      printf '| %s | %s | %.0f | %s | %s | %s | %s |\n' "$label" "$e" "$q" "$(col "$mode" "$e" 5)" "$(col "$mode" "$e" 6)" \
        "$(col "$mode" "$e" 7)" "$r"
    done
  done
} >"$out"
cat "$out"
