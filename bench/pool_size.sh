#!/usr/bin/env bash
# Pool size against throughput and CPU: sysbench oltp_point_select through Sluice
# (primary_only) with pool.max_connections_per_backend = each of BENCH_POOL_SIZES,
# one Sluice per size, all running, rounds interleaved. Each run reads utime/stime
# of Sluice and of the MariaDB primary from /proc before and after and divides by
# the queries sysbench reports; with the adaptive limit on, it also reads the
# current limit from /metrics (sluice_pool_concurrency_limit) after each run.
#
#   bench/pool_size.sh                          # own MariaDB on SLUICE_PORT_BASE (25306)..+2
#   SLUICE_BENCH_PRIMARY=127.0.0.1:13306 bench/pool_size.sh   # (then no server CPU column)
#   SLUICE_BIN_BEFORE=/path/to/old/sluice bench/pool_size.sh  # also an older build, same run
# Knobs: BENCH_TIME (10 s per run), BENCH_ROUNDS (3), BENCH_THREADS (16),
#   BENCH_POOL_SIZES ("2 4 8 16 50"), BENCH_PS_MODE (auto = prepared; disable = text),
#   BENCH_POOL_EXTRA (extra lines for [pool], e.g. 'adaptive_limit = true'),
#   BENCH_ADAPTIVE_SIZES (also these sizes with pool.adaptive_limit on, e.g. "16 50"),
#   SLUICE_BIN, SLUICE_BIN_BEFORE, BENCH_LABEL (the build column; commit by default), BENCH_OUT (bench/results-pool-size-DATE.md).
# Run it under the build lock so no compile shares the cores with a measurement:
#   flock /tmp/sluice-cargo.lock bench/pool_size.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd -P)
BENCH_TIME=${BENCH_TIME:-10}
BENCH_ROUNDS=${BENCH_ROUNDS:-3}
BENCH_THREADS=${BENCH_THREADS:-16}
BENCH_POOL_SIZES=${BENCH_POOL_SIZES:-2 4 8 16 50}
BENCH_PS_MODE=${BENCH_PS_MODE:-auto}
BENCH_POOL_EXTRA=${BENCH_POOL_EXTRA:-}
BENCH_ADAPTIVE_SIZES=${BENCH_ADAPTIVE_SIZES:-}
SLUICE_BIN=${SLUICE_BIN:-$root/target/dist/sluice}
out=${BENCH_OUT:-$root/bench/results-pool-size-$(date +%F).md}
export SLUICE_PORT_BASE=${SLUICE_PORT_BASE:-25306}
listen_base=$((SLUICE_PORT_BASE + 1000))
# shellcheck source=bench/common.sh
source bench/common.sh
bench_init pool-size
[[ -x $SLUICE_BIN ]] || { log "no sluice binary at $SLUICE_BIN (cargo build --profile dist --bin sluice)"; exit 1; }
bench_database
server_pid=""
[[ -n ${SLUICE_BENCH_PRIMARY:-} ]] || server_pid=$(_topo_pid "$work/db" primary)
if [[ -z ${SLUICE_BENCH_PRIMARY:-} ]]; then
  # The replicas take no part: once they have the tables, stop them so they use
  # no CPU during the runs.
  topology_sync "$work/db" >/dev/null 2>&1 || true
  for node in replica1 replica2; do
    if pid=$(_topo_pid "$work/db" "$node"); then
      kill -STOP "$pid"
      stopped+=("$pid")
    fi
  done
fi

pool_sluice_config() {
  cat <<EOF2
[server]
listen = "$1"
admin_listen = "$2"

[[users]]
name = "app"
password = "app"

[pool]
max_connections_per_backend = $3
$BENCH_POOL_EXTRA

[routing]
mode = "primary_only"

[monitor]
heartbeat_table = ""

[[backends]]
name = "primary"
address = "$primary"
role = "primary"
tls = "disabled"  # like HAProxy's plain leg; the topology offers TLS
EOF2
}

# One Sluice per (binary, pool size).
declare -A addr_of admin_of pid_of
endpoints=()
label=${BENCH_LABEL:-$(git rev-parse --short HEAD)$(git diff --quiet HEAD || echo +)}
builds=("$label")
declare -A bin_of=([$label]=$SLUICE_BIN)
if [[ -n ${SLUICE_BIN_BEFORE:-} ]]; then
  builds=(before "$label")
  bin_of[before]=$SLUICE_BIN_BEFORE
fi
i=0
start_sluice() { # build, pool size, endpoint name, extra [pool] lines
  local e=$3
  addr_of[$e]=127.0.0.1:$((listen_base + i))
  admin_of[$e]=127.0.0.1:$((listen_base + 50 + i))
  BENCH_POOL_EXTRA=$4 pool_sluice_config "${addr_of[$e]}" "${admin_of[$e]}" "$2" >"$work/sluice-$i.toml"
  "${bin_of[$1]}" --config "$work/sluice-$i.toml" >"$work/sluice-$i.log" 2>&1 &
  pids+=($!)
  pid_of[$e]=$!
  endpoints+=("$e")
  i=$((i + 1))
}
for b in "${builds[@]}"; do
  for size in $BENCH_POOL_SIZES; do
    start_sluice "$b" "$size" "$b/$size" "$BENCH_POOL_EXTRA"
  done
done
for size in $BENCH_ADAPTIVE_SIZES; do
  start_sluice "$label" "$size" "$label+adaptive/$size" "adaptive_limit = true"
done
index_of() {
  local i
  for i in "${!endpoints[@]}"; do [[ ${endpoints[$i]} == "$1" ]] && echo "$i"; done
}
for e in "${endpoints[@]}"; do
  wait_port "${addr_of[$e]}" || { log "$e did not start"; cat "$work"/sluice-*.log >&2; exit 1; }
done

# utime+stime in clock ticks of PID (fields 14 and 15 of /proc/PID/stat).
ticks() { if [[ -n $1 ]]; then awk '{print $14, $15}' "/proc/$1/stat"; else echo 0 0; fi; }
hz=$(getconf CLK_TCK)
per_query() { awk -v t="$1" -v q="$2" -v hz="$hz" 'BEGIN { printf "%.2f\n", t / hz / q * 1e6 }'; }
limit_of() {
  local v
  v=$(curl -s "http://$1/metrics" 2>/dev/null | awk '$1 ~ /^sluice_pool_concurrency_limit/ { print $2; exit }') || true
  echo "${v:--}"
}

# A warm-up run per endpoint so every pool has opened its connections.
for e in "${endpoints[@]}"; do
  sb "${addr_of[$e]}" --db-ps-mode="$BENCH_PS_MODE" --threads="$BENCH_THREADS" --time=2 run >/dev/null ||
    { log "warm-up against $e failed"; tail -20 "$work/sluice-$(index_of "$e").log" >&2; exit 1; }
done

for ((round = 1; round <= BENCH_ROUNDS; round++)); do
  for e in "${endpoints[@]}"; do
    addr=${addr_of[$e]} pid=${pid_of[$e]}
    read -r u0 s0 < <(ticks "$pid")
    read -r mu0 ms0 < <(ticks "$server_pid")
    if ! sb "$addr" --db-ps-mode="$BENCH_PS_MODE" --threads="$BENCH_THREADS" --time="$BENCH_TIME" \
      --percentile=99 run >"$work/run.log" 2>&1; then
      log "sysbench failed against $e ($addr):"
      tail -20 "$work/run.log" >&2
      log "its Sluice's log:"
      tail -20 "$work/sluice-$(index_of "$e").log" >&2
      exit 1
    fi
    read -r u1 s1 < <(ticks "$pid")
    read -r mu1 ms1 < <(ticks "$server_pid")
    queries=$(awk '$1 == "queries:" { q = $2 } END { print q + 0 }' "$work/run.log")
    qps=$(awk '$1 == "queries:" { q = $3; sub(/^\(/, "", q) } END { print q + 0 }' "$work/run.log")
    p99=$(awk '$1 == "99th" { print $3 }' "$work/run.log")
    user=$(per_query $((u1 - u0)) "$queries")
    sys=$(per_query $((s1 - s0)) "$queries")
    server=$(per_query $((mu1 - mu0 + ms1 - ms0)) "$queries")
    limit=$(limit_of "${admin_of[$e]}")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$e" "$round" "$qps" "$user" "$sys" "$server" "$p99" "$limit" \
      >>"$work/results.tsv"
    log "round $round $e: $qps qps, sluice $user us user + $sys us sys, server $server us per query, p99 $p99 ms, limit $limit"
  done
done

median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
col() { awk -F'\t' -v e="$1" -v c="$2" '$1 == e {print $c}' "$work/results.tsv" | median; }
last() { awk -F'\t' -v e="$1" -v c="$2" '$1 == e {v = $c} END {print v}' "$work/results.tsv"; }
{
  echo "# Pool size against QPS and CPU $(date '+%F %H:%M')"
  echo
  echo "sysbench oltp_point_select (ps-mode $BENCH_PS_MODE), $BENCH_THREADS threads, ${BENCH_TIME} s per run," \
    "median of $BENCH_ROUNDS interleaved rounds; sluice at commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD || echo ' (dirty)')" \
    "(primary_only)${SLUICE_BIN_BEFORE:+, before = $SLUICE_BIN_BEFORE}${BENCH_POOL_EXTRA:+, [pool] $BENCH_POOL_EXTRA};" \
    "$(nproc) cores shared by sysbench, Sluice and MariaDB. CPU is utime/stime of the process over the run divided by the queries."
  echo
  echo "| build | max_connections_per_backend | QPS | Sluice user us/query | Sluice sys us/query | MariaDB us/query | p99 ms | limit at end |"
  echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
  for e in "${endpoints[@]}"; do
    printf '| %s | %s | %.0f | %s | %s | %s | %s | %s |\n' "${e%/*}" "${e#*/}" "$(col "$e" 3)" "$(col "$e" 4)" \
      "$(col "$e" 5)" "$(col "$e" 6)" "$(col "$e" 7)" "$(last "$e" 8)"
  done
} >"$out"
cat "$out"
