#!/usr/bin/env bash
# Benchmark for issue "foundation": the same load against MariaDB directly, through
# HAProxy (plain TCP) and through Sluice, in ONE run, interleaved (each round runs
# every workload on every endpoint in turn), reporting the median of the rounds.
#
#   bench/run.sh                       # starts its own topology (ports SLUICE_PORT_BASE..+2)
#   SLUICE_BENCH_PRIMARY=127.0.0.1:13306 bench/run.sh   # use a running primary (user app/app, db sluice_test)
#   BENCH_TIME=3 SKIP_SLUICE=1 bench/run.sh             # quick check without a sluice binary
# Knobs: BENCH_TIME (s per run, 10), BENCH_ROUNDS (3), BENCH_THREADS (16), SLUICE_BIN,
#   BENCH_HAPROXY_LISTEN (127.0.0.1:16033), BENCH_SLUICE_LISTEN (127.0.0.1:6034),
#   BENCH_SLUICE_ADMIN (127.0.0.1:9034), BENCH_OUT (bench/results-DATE.md).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd -P)

BENCH_TIME=${BENCH_TIME:-10}
BENCH_ROUNDS=${BENCH_ROUNDS:-3}
BENCH_THREADS=${BENCH_THREADS:-16}
SLUICE_BIN=${SLUICE_BIN:-$root/target/release/sluice}
haproxy_addr=${BENCH_HAPROXY_LISTEN:-127.0.0.1:16033}
sluice_addr=${BENCH_SLUICE_LISTEN:-127.0.0.1:6034}
sluice_admin=${BENCH_SLUICE_ADMIN:-127.0.0.1:9034}
out=${BENCH_OUT:-$root/bench/results-$(date +%F).md}
export SLUICE_PORT_BASE=${SLUICE_PORT_BASE:-13306}
tables=4
table_size=10000
workloads=(point_select_ps point_select_noprep read_only_ps connect_per_query)
endpoints=(direct haproxy)
[[ ${SKIP_SLUICE:-0} == 1 ]] || endpoints+=(sluice)

# shellcheck source=scripts/topology.sh
source scripts/topology.sh

work=$(mktemp -d -t sluice-bench.XXXXXX)
pids=() # haproxy, sluice
exec 3>&2 # the real stderr, for cleanup messages even when a run's output is redirected
cleanup() {
  trap '' INT TERM HUP # a second Ctrl-C must not cut the cleanup short
  exec 2>&3
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    for _ in {1..50}; do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  topology_stop "$work/db" || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP # terminal closed

log() { echo "bench: $*" >&2; }

# Wait until ADDR accepts TCP connections, failing early if PID died.
wait_port() {
  local addr=$1 pid=$2 i
  for ((i = 0; i < 100; i++)); do
    (: <"/dev/tcp/${addr%:*}/${addr##*:}") 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

# Every client run is bounded, so an endpoint that hangs costs one failed run
# (--foreground: stay in our process group so Ctrl-C still reaches the client).
limit=(timeout --foreground -k 5 $((BENCH_TIME + 60)))

# sysbench against ADDR with the common options; the rest of the args follow.
sb() {
  local addr=$1 test=$2
  shift 2
  "${limit[@]}" sysbench "$test" --db-driver=mysql --mysql-host="${addr%:*}" --mysql-port="${addr##*:}" \
    --mysql-user=app --mysql-password=app --mysql-db=sluice_test \
    --tables=$tables --table-size=$table_size "$@"
}

# One measured run of WORKLOAD against ADDR; output in sysbench's format.
run_workload() {
  local w=$1 addr=$2 load=(--threads="$BENCH_THREADS" --time="$BENCH_TIME")
  case $w in
    point_select_ps) sb "$addr" oltp_point_select --db-ps-mode=auto "${load[@]}" run ;;
    point_select_noprep) sb "$addr" oltp_point_select --db-ps-mode=disable "${load[@]}" run ;;
    read_only_ps) sb "$addr" oltp_read_only --db-ps-mode=auto "${load[@]}" run ;;
    connect_per_query)
      "${limit[@]}" php bench/connect_per_query.php "${addr%:*}" "${addr##*:}" app app sluice_test \
        "$BENCH_TIME" "$BENCH_THREADS" "$table_size"
      ;;
  esac
}

# "QPS P95" from sysbench-format output on stdin.
parse() {
  awk '$1 == "queries:" { q = $3; sub(/^\(/, "", q) }
       $1 == "95th" && $2 == "percentile:" { p = $3 }
       END { if (q == "" || p == "") exit 1; print q, p }'
}

# Column COL (4 = QPS, 5 = p95) of the recorded runs of WORKLOAD via ENDPOINT.
column() {
  awk -F'\t' -v w="$1" -v e="$2" -v c="$3" '$1 == w && $2 == e {print $c}' "$work/results.tsv" 2>/dev/null
}

sluice_version() {
  if [[ ${SKIP_SLUICE:-0} == 1 ]]; then echo skipped; return; fi
  echo "at commit $(git rev-parse --short HEAD 2>/dev/null || echo none)$(git diff --quiet HEAD 2>/dev/null || echo ' (dirty)')"
}

median() {
  sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) exit 1
    print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

if [[ ${SKIP_SLUICE:-0} != 1 && ! -x $SLUICE_BIN ]]; then
  log "no sluice binary at $SLUICE_BIN (cargo build --release, or SKIP_SLUICE=1)"
  exit 1
fi
scripts/install-deps.sh >&2

# --- the database
if [[ -n ${SLUICE_BENCH_PRIMARY:-} ]]; then
  primary=$SLUICE_BENCH_PRIMARY
else
  topology_start "$work/db" >&2
  primary=127.0.0.1:$SLUICE_PORT_BASE
fi
log "preparing $tables x $table_size rows on $primary"
sb "$primary" oltp_read_only cleanup >/dev/null
sb "$primary" oltp_read_only --threads=$tables prepare >"$work/prepare.log" ||
  { cat "$work/prepare.log" >&2; exit 1; }

# --- the proxies
sed -e "s/@LISTEN@/$haproxy_addr/" -e "s/@PRIMARY@/$primary/" bench/haproxy.cfg >"$work/haproxy.cfg"
haproxy -db -f "$work/haproxy.cfg" >"$work/haproxy.log" 2>&1 &
pids+=($!)
wait_port "$haproxy_addr" "$!" || { cat "$work/haproxy.log" >&2; log "haproxy did not start"; exit 1; }
declare -A endpoint_addr=([direct]=$primary [haproxy]=$haproxy_addr [sluice]=$sluice_addr)

if [[ ${SKIP_SLUICE:-0} != 1 ]]; then
  cat >"$work/sluice.toml" <<EOF
[server]
listen = "$sluice_addr"
admin_listen = "$sluice_admin"
max_client_connections = 10000

[[users]]
name = "app"
password = "app"

[pool]
max_connections_per_backend = 50
acquire_timeout_ms = 2000

[routing]
mode = "primary_only"

[[backends]]
name = "primary"
address = "$primary"
role = "primary"
EOF
  "$SLUICE_BIN" --config "$work/sluice.toml" >"$work/sluice.log" 2>&1 &
  pids+=($!)
  wait_port "$sluice_addr" "$!" || { tail -n 30 "$work/sluice.log" >&2; log "sluice did not start"; exit 1; }
fi

# --- the runs: interleaved so that drift (thermal, noisy neighbours) hits all endpoints alike
failures=()
for ((round = 1; round <= BENCH_ROUNDS; round++)); do
  for w in "${workloads[@]}"; do
    for e in "${endpoints[@]}"; do
      logf="$work/$w-$e-$round.log"
      if run_workload "$w" "${endpoint_addr[$e]}" >"$logf" 2>&1 && res=$(parse <"$logf"); then
        read -r qps p95 <<<"$res"
        printf '%s\t%s\t%s\t%s\t%s\n' "$w" "$e" "$round" "$qps" "$p95" >>"$work/results.tsv"
        log "round $round/$BENCH_ROUNDS $w via $e: $qps qps, p95 $p95 ms"
      else
        failures+=("$w via $e, round $round")
        log "round $round/$BENCH_ROUNDS $w via $e FAILED:"
        tail -n 5 "$logf" >&2
      fi
    done
  done
done

# --- the table
{
  echo "# Sluice benchmark $(date '+%F %H:%M')"
  echo
  echo "sysbench $(sysbench --version | awk '{print $2}'), $BENCH_THREADS threads, ${BENCH_TIME} s per run," \
    "median of $BENCH_ROUNDS interleaved rounds; $tables tables x $table_size rows;" \
    "MariaDB $(mariadb --no-defaults -h"${primary%:*}" -P"${primary##*:}" -uapp -papp -N -e 'SELECT VERSION()')," \
    "$(haproxy -v | awk 'NR == 1 {print $1, $3}'), sluice $(sluice_version)," \
    "$(nproc) cores."
  echo
  echo "| workload | endpoint | QPS (median) | p95 ms (median) | ratio to direct (QPS) |"
  echo "| --- | --- | ---: | ---: | ---: |"
  for w in "${workloads[@]}"; do
    direct=$(column "$w" direct 4 | median || true)
    for e in "${endpoints[@]}"; do
      qps=$(column "$w" "$e" 4 | median || true)
      p95=$(column "$w" "$e" 5 | median || true)
      ratio=n/a
      if [[ -n $qps && -n $direct ]]; then ratio=$(awk -v a="$qps" -v b="$direct" 'BEGIN {printf "%.2f", a / b}'); fi
      printf '| %s | %s | %s | %s | %s |\n' "$w" "$e" \
        "$([[ -n $qps ]] && printf '%.0f' "$qps" || echo failed)" \
        "$([[ -n $p95 ]] && printf '%.2f' "$p95" || echo failed)" "$ratio"
    done
  done
  if ((${#failures[@]})); then
    echo
    echo "Failed runs (left out of the medians):"
    printf -- '- %s\n' "${failures[@]}"
  fi
} >"$work/table.md"

cp "$work/table.md" "$out"
cat "$work/table.md"
log "written to $out"
((${#failures[@]} == 0)) || { log "${#failures[@]} run(s) failed"; exit 1; }
