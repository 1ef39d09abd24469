#!/usr/bin/env bash
# Instructions per statement of the whole Sluice process, counted by valgrind's
# callgrind: exact and repeatable, unlike timings on a shared 2-core machine.
# Sluice runs primary_only with one worker thread; sysbench oltp_point_select
# (4 threads) runs BENCH_WARMUP statements, the counters are zeroed, then
# BENCH_EVENTS statements are counted.
#
#   bench/instructions.sh                       # starts its own topology
#   SLUICE_BENCH_PRIMARY=127.0.0.1:13306 bench/instructions.sh
#   BENCH_MODE=disable bench/instructions.sh    # text protocol (default: prepared)
#   BENCH_KEEP=/tmp/cg.out bench/instructions.sh   # keep the profile for callgrind_annotate
# Knobs: BENCH_EVENTS (20000), BENCH_WARMUP (2000), BENCH_MODE (auto = prepared |
#   disable = text), SLUICE_BIN, SLUICE_EXTRA_CONFIG (TOML appended to the config).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd -P)
BENCH_EVENTS=${BENCH_EVENTS:-20000}
BENCH_WARMUP=${BENCH_WARMUP:-2000}
BENCH_MODE=${BENCH_MODE:-auto}
SLUICE_BIN=${SLUICE_BIN:-$root/target/release/sluice}
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
[[ -x $SLUICE_BIN ]] || { log "no sluice binary at $SLUICE_BIN (cargo build --release)"; exit 1; }
if [[ -n ${SLUICE_BENCH_PRIMARY:-} ]]; then
  primary=$SLUICE_BENCH_PRIMARY
else
  topology_start "$work/db" >&2
  primary=127.0.0.1:$SLUICE_PORT_BASE
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

cat >"$work/sluice.toml" <<EOF
[server]
listen = "$sluice_addr"
admin_listen = "$sluice_admin"
worker_threads = 1

[[users]]
name = "app"
password = "app"

[routing]
mode = "primary_only"

[[backends]]
name = "primary"
address = "$primary"
role = "primary"
tls = "disabled"
${SLUICE_EXTRA_CONFIG:-}
EOF
valgrind --tool=callgrind --callgrind-out-file="$work/cg.out" \
  "$SLUICE_BIN" --config "$work/sluice.toml" >"$work/sluice.log" 2>&1 &
pid=$!
for ((i = 0; i < 600; i++)); do
  (: <"/dev/tcp/${sluice_addr%:*}/${sluice_addr##*:}") 2>/dev/null && break
  sleep 0.1
done
run() { sb "$sluice_addr" --db-ps-mode="$BENCH_MODE" --threads=4 --time=0 --events="$1" run >"$work/run.log"; }
run "$BENCH_WARMUP"
callgrind_control -z "$pid" >/dev/null
run "$BENCH_EVENTS"
callgrind_control -d "$pid" >/dev/null
dump=$(ls "$work"/cg.out.* | sort | tail -1)
total=$(awk '/^summary:/ {print $2}' "$dump")
label=prepared
[[ $BENCH_MODE == auto ]] || label=text
if [[ $SLUICE_BIN == "$root/target/release/sluice" ]]; then
  built="commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD || echo ' dirty')"
else
  built=$SLUICE_BIN
fi
echo "$label point select: $((total / BENCH_EVENTS)) instructions per statement ($total over $BENCH_EVENTS; $built)"
[[ -z ${BENCH_KEEP:-} ]] || cp "$dump" "$BENCH_KEEP"
