#!/usr/bin/env bash
# Instructions per statement of the whole Sluice process, counted by valgrind's
# callgrind: exact and repeatable, unlike timings on a shared 2-core machine.
# Sluice runs with one worker thread (primary_only unless BENCH_ROUTING says);
# sysbench oltp_point_select
# (4 threads) runs BENCH_WARMUP statements, the counters are zeroed, then
# BENCH_EVENTS statements are counted.
#
#   bench/instructions.sh                       # starts its own topology
#   SLUICE_BENCH_PRIMARY=127.0.0.1:13306 bench/instructions.sh
#   BENCH_MODE=disable bench/instructions.sh    # text protocol (default: prepared)
#   BENCH_KEEP=/tmp/cg.out bench/instructions.sh   # keep the profile for callgrind_annotate
#   BENCH_ROUTING=split BENCH_GUARD=1 bench/instructions.sh   # present keys through the guard
#   BENCH_WORKLOAD=connect bench/instructions.sh   # per connect-per-query client (PHP PDO)
#   BENCH_CALLGRIND_ARGS="--cache-sim=yes --branch-sim=yes" bench/instructions.sh
#                                               # simulated cache and branch misses too
# Knobs: BENCH_EVENTS (20000), BENCH_WARMUP (2000), BENCH_MODE (auto = prepared |
#   disable = text), SLUICE_BIN, SLUICE_EXTRA_CONFIG (TOML appended to the config),
#   BENCH_ROUTING (primary_only | split: the topology's two replicas as backends too, reads
#   on them, read_your_writes = "off"; own topology only), BENCH_GUARD (0 | 1: the
#   empty-key guard on sbtest1..4 by id; sysbench looks up present ids, so this is the
#   guard's cost on lookups it passes; only with BENCH_ROUTING=split, where the guard
#   may answer: under primary_only it passes every lookup at once), BENCH_GUARD_SKIP_AFTER
#   (unset = Sluice's guard.skip_after_found; 0 = the filter checks every lookup), BENCH_WORKLOAD
#   (point_select | connect: bench/connect_per_query.php with 4 workers, each
#   iteration a login, one text point select and COM_QUIT; counted over
#   BENCH_CONNECT_SECONDS (10) after 3 s of warm-up, per connection).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd -P)
BENCH_EVENTS=${BENCH_EVENTS:-20000}
BENCH_WARMUP=${BENCH_WARMUP:-2000}
BENCH_MODE=${BENCH_MODE:-auto}
SLUICE_BIN=${SLUICE_BIN:-$root/target/dist/sluice}
export SLUICE_PORT_BASE=${SLUICE_PORT_BASE:-13306}
sluice_addr=127.0.0.1:6046
sluice_admin=127.0.0.1:9046

# shellcheck source=scripts/topology.sh
source scripts/topology.sh
work=$(mktemp -d -t sluice-instr.XXXXXX)
pid=""
cleanup() {
  trap '' INT TERM
  [[ -z $pid ]] || kill "$pid" 2>/dev/null || true
  [[ -z $pid ]] || wait "$pid" 2>/dev/null || true
  topology_stop "$work/db" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
log() { echo "instructions: $*" >&2; }

command -v valgrind >/dev/null || { log "valgrind is not installed (apt-get install valgrind)"; exit 1; }
[[ -x $SLUICE_BIN ]] || { log "no sluice binary at $SLUICE_BIN (cargo build --profile dist --bin sluice)"; exit 1; }
BENCH_ROUTING=${BENCH_ROUTING:-primary_only}
[[ ${BENCH_GUARD:-0} != 1 || $BENCH_ROUTING == split ]] || { log "BENCH_GUARD=1 needs BENCH_ROUTING=split"; exit 1; }
replicas=()
if [[ -n ${SLUICE_BENCH_PRIMARY:-} ]]; then
  [[ $BENCH_ROUTING == primary_only ]] || { log "BENCH_ROUTING=split needs the script's own topology"; exit 1; }
  primary=$SLUICE_BENCH_PRIMARY
else
  topology_start "$work/db" >&2
  primary=127.0.0.1:$SLUICE_PORT_BASE
  [[ $BENCH_ROUTING == primary_only ]] ||
    replicas=("127.0.0.1:$((SLUICE_PORT_BASE + 1))" "127.0.0.1:$((SLUICE_PORT_BASE + 2))")
fi
sb() {
  local addr=$1
  shift
  timeout --foreground -k 5 900 sysbench oltp_point_select --db-driver=mysql \
    --mysql-host="${addr%:*}" --mysql-port="${addr##*:}" --mysql-user=app --mysql-password=app \
    --mysql-db=sluice_test --tables=4 --table-size=10000 "$@"
}
sb "$primary" cleanup >/dev/null
sb "$primary" --threads=4 prepare >/dev/null
# The replicas have the tables before Sluice reads from them.
((${#replicas[@]} == 0)) || topology_sync "$work/db"
extra=""
for i in "${!replicas[@]}"; do
  extra+=$(printf '\n[[backends]]\nname = "replica%d"\naddress = "%s"\nrole = "replica"\ntls = "disabled"\n' \
    "$((i + 1))" "${replicas[$i]}")
done
if [[ ${BENCH_GUARD:-0} == 1 ]]; then
  extra+=$'\n[guard]\nserver_id = 5152\nrebuild_interval_ms = 0\n'
  # BENCH_GUARD_SKIP_AFTER=0: the filter checks every lookup (default: Sluice's
  # guard.skip_after_found, which stops checking most lookups of a statement
  # whose lookups keep finding rows).
  [[ -z ${BENCH_GUARD_SKIP_AFTER:-} ]] || extra+="skip_after_found = $BENCH_GUARD_SKIP_AFTER"$'\n'
  for t in 1 2 3 4; do
    extra+=$(printf '\n[[guard.tables]]\ntable = "sluice_test.sbtest%d"\nkey = "id"\n' "$t")
  done
fi

cat >"$work/sluice.toml" <<EOF
[server]
listen = "$sluice_addr"
admin_listen = "$sluice_admin"
worker_threads = 1

[[users]]
name = "app"
password = "app"

[routing]
mode = "$BENCH_ROUTING"
read_your_writes = "off"

[[backends]]
name = "primary"
address = "$primary"
role = "primary"
tls = "disabled"
$extra
${SLUICE_EXTRA_CONFIG:-}
EOF
# shellcheck disable=SC2086 # BENCH_CALLGRIND_ARGS is a list of flags
valgrind --tool=callgrind --callgrind-out-file="$work/cg.out" ${BENCH_CALLGRIND_ARGS:-} \
  "$SLUICE_BIN" --config "$work/sluice.toml" >"$work/sluice.log" 2>&1 &
pid=$!
for ((i = 0; i < 600; i++)); do
  (: <"/dev/tcp/${sluice_addr%:*}/${sluice_addr##*:}") 2>/dev/null && break
  sleep 0.1
done
if [[ ${BENCH_GUARD:-0} == 1 ]]; then
  # The filters are built from a scan and the binlog: wait until every table is.
  for ((i = 0; i < 600; i++)); do
    ready=$(curl -fsS --max-time 5 "http://$sluice_admin/status" 2>/dev/null | grep -o '"state":"ready"' | wc -l || true)
    ((ready >= 4)) && break
    sleep 0.2
  done
  ((ready >= 4)) || { log "the guard did not get ready"; exit 1; }
fi
run() { sb "$sluice_addr" --db-ps-mode="$BENCH_MODE" --threads=4 --time=0 --events="$1" run >"$work/run.log"; }
connect() {
  php bench/connect_per_query.php "${sluice_addr%:*}" "${sluice_addr##*:}" app app sluice_test "$1" 4 >"$work/run.log"
}
if [[ ${BENCH_WORKLOAD:-point_select} == connect ]]; then
  connect 3
  callgrind_control -z "$pid" >/dev/null
  connect "${BENCH_CONNECT_SECONDS:-10}"
  callgrind_control -d "$pid" >/dev/null
  BENCH_EVENTS=$(awk '$1 == "queries:" { print $2 }' "$work/run.log")
  ((BENCH_EVENTS > 0)) || { log "no connection completed"; cat "$work/run.log" >&2; exit 1; }
else
  run "$BENCH_WARMUP"
  callgrind_control -z "$pid" >/dev/null
  run "$BENCH_EVENTS"
  callgrind_control -d "$pid" >/dev/null
fi
dump=$(ls "$work"/cg.out.* | sort | tail -1)
total=$(awk '/^summary:/ {print $2}' "$dump")
label=prepared
[[ $BENCH_MODE == auto ]] || label=text
[[ ${BENCH_WORKLOAD:-point_select} != connect ]] || label="connect-per-query (PHP PDO: login, text"
if [[ $SLUICE_BIN == "$root/target/dist/sluice" ]]; then
  built="commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD || echo ' dirty')"
else
  built=$SLUICE_BIN
fi
setup="$BENCH_ROUTING"
[[ ${BENCH_GUARD:-0} != 1 ]] || setup+=", guard on"
if [[ ${BENCH_WORKLOAD:-point_select} == connect ]]; then
  echo "$label point select, quit; $setup): $((total / BENCH_EVENTS)) instructions per connection ($total over $BENCH_EVENTS; $built)"
else
  echo "$label point select ($setup): $((total / BENCH_EVENTS)) instructions per statement ($total over $BENCH_EVENTS; $built)"
fi
[[ -z ${BENCH_KEEP:-} ]] || cp "$dump" "$BENCH_KEEP"
