#!/usr/bin/env bash
# Where Sluice's CPU goes on the point-select path: perf samples (with call
# graphs) of the Sluice process during sysbench oltp_point_select through it
# (primary_only, prepared statements), summarized as the split between kernel
# and user space and the top user-space functions by self time.
#
#   bench/profile.sh                                   # starts its own topology
#   SLUICE_BENCH_PRIMARY=127.0.0.1:13306 bench/profile.sh
#   SLUICE_BIN_BEFORE=/path/to/old/sluice bench/profile.sh   # also an older build
# Needs perf (Debian's linux-perf). Knobs: BENCH_TIME (8 s), BENCH_THREADS (16),
#   SLUICE_BIN, SLUICE_BIN_BEFORE, BENCH_OUT (bench/results-profile-DATE.md).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd -P)
BENCH_TIME=${BENCH_TIME:-8}
BENCH_THREADS=${BENCH_THREADS:-16}
SLUICE_BIN=${SLUICE_BIN:-$root/target/dist/sluice}
out=${BENCH_OUT:-$root/bench/results-profile-$(date +%F).md}
export SLUICE_PORT_BASE=${SLUICE_PORT_BASE:-13306}
sluice_port=6045

# shellcheck source=bench/common.sh
source bench/common.sh
bench_init profile
command -v perf >/dev/null || { log "perf is not installed (apt-get install linux-perf)"; exit 1; }
[[ -x $SLUICE_BIN ]] || { log "no sluice binary at $SLUICE_BIN (cargo build --profile dist --bin sluice)"; exit 1; }
bench_database

# One profile: the DSO split and the top 25 user-space symbols by self time.
profile() {
  local name=$1 bin=$2
  local sluice_addr=127.0.0.1:$sluice_port
  # One config per build, each on its own ports (a stopped Sluice may still be draining).
  sluice_config "$sluice_addr" "127.0.0.1:$((sluice_port + 3000))" >"$work/$name.toml"
  sluice_port=$((sluice_port + 1))
  "$bin" --config "$work/$name.toml" >"$work/$name.log" 2>&1 &
  local pid=$!
  pids+=("$pid")
  wait_port "$sluice_addr" || { log "$name did not start listening on $sluice_addr"; exit 1; }
  sb "$sluice_addr" --threads="$BENCH_THREADS" --time=3 run >/dev/null # warm up
  perf record -F 2000 -g -p "$pid" -o "$work/$name.data" -- sleep "$BENCH_TIME" >/dev/null 2>&1 &
  local perf_pid=$!
  sb "$sluice_addr" --threads="$BENCH_THREADS" --time="$BENCH_TIME" run >"$work/$name.run"
  wait "$perf_pid" || true
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  echo "## $name ($(awk '$1 == "queries:" {print $3}' "$work/$name.run" | tr -d '(') queries per second)"
  echo
  echo "Samples by where they ran:"
  echo
  echo '```'
  perf report -i "$work/$name.data" --no-children --sort dso --stdio -g none 2>/dev/null |
    grep -v '^#' | grep -v '^$' | head -5 || true # head closes the pipe early
  echo '```'
  echo
  echo "Top user-space functions by self time (share of all samples):"
  echo
  echo '```'
  perf report -i "$work/$name.data" --no-children --dsos "$(basename "$bin"),libc.so.6" --sort sym --stdio -g none 2>/dev/null |
    grep -v '^#' | grep -v '^$' | head -25 | cut -c1-150 || true
  echo '```'
  echo
}

{
  echo "# Where Sluice's CPU goes: perf profile of oltp_point_select $(date '+%F %H:%M')"
  echo
  echo "sysbench oltp_point_select (prepared), $BENCH_THREADS threads, ${BENCH_TIME} s sampled at 2 kHz;" \
    "Sluice primary_only at commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD || echo ' (dirty)'); $(nproc) cores."
  echo "Kernel time is mostly the TCP send/receive path (a wake-up of the peer per packet), which a" \
    "TCP relay pays as well; user time is Sluice's own work."
  echo
  if [[ -n ${SLUICE_BIN_BEFORE:-} ]]; then profile before "$SLUICE_BIN_BEFORE"; fi
  profile sluice "$SLUICE_BIN"
} >"$out"
log "wrote $out"
