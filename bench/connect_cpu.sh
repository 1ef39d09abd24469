#!/usr/bin/env bash
# Where a connect-per-query client's CPU goes: bench/connect_per_query.php (PHP PDO:
# login, one point select, disconnect) straight to MariaDB, through HAProxy (TCP mode)
# and through Sluice (primary_only), interleaved. Per connection: the whole machine's busy
# CPU (/proc/stat), the primary mariadbd's, the proxy's user and sys, and the rest (the
# PHP workers and whatever the kernel does outside the two servers). It shows how far
# a proxy's own cost can move the connect-per-query ratio to direct.
#
#   bench/connect_cpu.sh                          # starts its own topology (SLUICE_PORT_BASE..+2)
#   SLUICE_BENCH_PRIMARY=127.0.0.1:13306 bench/connect_cpu.sh
#   SLUICE_BIN_BEFORE=/path/to/old/sluice bench/connect_cpu.sh   # also an older build, interleaved
# Knobs: BENCH_TIME (10 s per run), BENCH_ROUNDS (3), BENCH_THREADS (16 PHP workers),
#   SLUICE_BIN, SLUICE_BIN_BEFORE, BENCH_OUT (bench/results-connect-cpu-DATE.md),
#   BENCH_WORKER_THREADS.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=bench/common.sh
source bench/common.sh
bench_defaults
out=${BENCH_OUT:-$root/bench/results-connect-cpu-$(date +%F).md}
haproxy_addr=127.0.0.1:16045
sluice_addr=127.0.0.1:6045
sluice_admin=127.0.0.1:9045
bench_init connect-cpu
[[ -x $SLUICE_BIN ]] || { log "no sluice binary at $SLUICE_BIN (cargo build --profile dist --bin sluice)"; exit 1; }
bench_database

sed -e "s/@LISTEN@/$haproxy_addr/" -e "s/@PRIMARY@/$primary/" bench/haproxy.cfg >"$work/haproxy.cfg"
haproxy -db -f "$work/haproxy.cfg" >"$work/haproxy.log" 2>&1 &
pids+=($!)
declare -A addr_of=([direct]=$primary [haproxy]=$haproxy_addr [sluice]=$sluice_addr)
declare -A pid_of=([direct]="" [haproxy]=$!)
sluice_config "$sluice_addr" "$sluice_admin" "${BENCH_WORKER_THREADS:-0}" >"$work/sluice.toml"
"$SLUICE_BIN" --config "$work/sluice.toml" >"$work/sluice.log" 2>&1 &
pids+=($!)
pid_of[sluice]=$!
endpoints=(direct haproxy sluice)
if [[ -n ${SLUICE_BIN_BEFORE:-} ]]; then
  addr_of[sluice-before]=127.0.0.1:6046
  sluice_config "${addr_of[sluice-before]}" 127.0.0.1:9046 "${BENCH_WORKER_THREADS:-0}" >"$work/sluice-before.toml"
  "$SLUICE_BIN_BEFORE" --config "$work/sluice-before.toml" >"$work/sluice-before.log" 2>&1 &
  pids+=($!)
  pid_of[sluice-before]=$!
  endpoints=(direct haproxy sluice-before sluice)
fi
for e in "${endpoints[@]:1}"; do
  wait_port "${addr_of[$e]}" || { log "$e did not start"; exit 1; }
done

# "USER SYS" clock ticks of PID (0 0 for none).
ticks() { if [[ -n $1 ]]; then awk '{print $14, $15}' "/proc/$1/stat"; else echo 0 0; fi; }
db_pid=$(ss -Hltnp "sport = :${primary##*:}" | sed -n 's/.*pid=\([0-9]*\).*/\1/p' | head -1)
db_ticks() { if [[ -n $db_pid ]]; then awk '{print $14 + $15}' "/proc/$db_pid/stat"; else echo 0; fi; }
# Busy ticks of the whole machine: user, nice, system, irq, softirq.
busy() { awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 }' /proc/stat; }
hz=$(getconf CLK_TCK)

for ((round = 1; round <= BENCH_ROUNDS; round++)); do
  for e in "${endpoints[@]}"; do
    addr=${addr_of[$e]} pid=${pid_of[$e]}
    read -r u0 s0 < <(ticks "$pid")
    d0=$(db_ticks) b0=$(busy)
    php bench/connect_per_query.php "${addr%:*}" "${addr##*:}" app app sluice_test "$BENCH_TIME" \
      "$BENCH_THREADS" 10000 >"$work/run.log" 2>&1
    read -r u1 s1 < <(ticks "$pid")
    d1=$(db_ticks) b1=$(busy)
    conns=$(awk '$1 == "queries:" { q = $2 } END { print q + 0 }' "$work/run.log")
    ((conns > 0)) || { log "$e: no connection completed"; cat "$work/run.log" >&2; exit 1; }
    awk -v hz="$hz" -v n="$conns" -v t="$BENCH_TIME" -v e="$e" -v r="$round" \
      -v b=$((b1 - b0)) -v d=$((d1 - d0)) -v u=$((u1 - u0)) -v s=$((s1 - s0)) 'BEGIN {
        us = 1e6 / hz / n
        printf "%s\t%s\t%.0f\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\n", e, r, n / t, b * us, d * us, u * us, s * us, (b - d - u - s) * us
      }' >>"$work/results.tsv"
    log "round $round $e: $(tail -1 "$work/results.tsv" | cut -f3-)"
  done
done

median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
col() { awk -F'\t' -v e="$1" -v c="$2" '$1 == e {print $c}' "$work/results.tsv" | median; }
{
  echo "# CPU per connect-per-query connection $(date '+%F %H:%M')"
  echo
  echo "bench/connect_per_query.php (PHP PDO: login, one point select, disconnect), $BENCH_THREADS" \
    "workers, ${BENCH_TIME} s per run, median of $BENCH_ROUNDS interleaved rounds; sluice at commit" \
    "$(git rev-parse --short HEAD)$(git diff --quiet HEAD || echo ' (dirty)')${SLUICE_BIN_BEFORE:+ (sluice-before: $SLUICE_BIN_BEFORE)} (primary_only," \
    "worker_threads = ${BENCH_WORKER_THREADS:-0}); $(nproc) cores. µs of CPU per connection:" \
    "machine = busy time of all cores (/proc/stat), MariaDB = the primary mariadbd's user + sys," \
    "proxy = the proxy process's user / sys, rest = machine less the two (the PHP workers," \
    "the kernel's work outside the two processes)."
  echo
  echo "| endpoint | connections/s | ratio to direct | machine | MariaDB | proxy user | proxy sys | rest |"
  echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
  direct=$(col direct 3)
  for e in "${endpoints[@]}"; do
    n=$(col "$e" 3)
    printf '| %s | %.0f | %.2f | %s | %s | %s | %s | %s |\n' "$e" "$n" "$(awk -v a="$n" -v b="$direct" 'BEGIN { print a / b }')" \
      "$(col "$e" 4)" "$(col "$e" 5)" "$(col "$e" 6)" "$(col "$e" 7)" "$(col "$e" 8)"
  done
} >"$out"
cat "$out"
