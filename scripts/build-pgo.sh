#!/usr/bin/env bash
# A profile-guided build of Sluice (rustc's PGO): builds an instrumented binary,
# trains it on the workloads of bench/ against a topology this script starts
# (point selects prepared and text, oltp_read_only, oltp_read_write, a login per
# query, then the empty-key guard), merges the profile and builds
# `target/dist/sluice` with it. LLVM then lays out the hot statement path together
# and the cold code apart (bench/results-cpu-pgo-*.md has the numbers).
# A training run that fails stops the script with its output and Sluice's log.
#
#   scripts/build-pgo.sh                  # writes target/dist/sluice
#   PGO_OUT=/tmp/sluice-pgo scripts/build-pgo.sh   # a copy elsewhere too
#
# Needs llvm-profdata of rustc's LLVM version: rustup's llvm-tools component, or
# Debian's llvm-N package (N = the major version `rustc -vV` names). Knobs: PGO_TIME
# (seconds per training workload, 8), SLUICE_PORT_BASE (the topology's ports, 13306),
# PGO_INSTRUMENTED (an instrumented binary built already: skip that build).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd -P)
PGO_TIME=${PGO_TIME:-8}
export SLUICE_PORT_BASE=${SLUICE_PORT_BASE:-13306}
BENCH_TIME=$PGO_TIME
target=$(rustc -vV | awk '$1 == "host:" { print $2 }')
llvm_major=$(rustc -vV | awk '$1 == "LLVM" { split($3, v, "."); print v[1] }')
sluice_addr=127.0.0.1:6047
sluice_admin=127.0.0.1:9047

# shellcheck source=bench/common.sh
source bench/common.sh
bench_init pgo

profdata=$(ls "$(rustc --print sysroot)/lib/rustlib/$target/bin/llvm-profdata" 2>/dev/null ||
  command -v "llvm-profdata-$llvm_major" || true)
if [[ -z $profdata ]]; then
  log "no llvm-profdata for LLVM $llvm_major: rustup component add llvm-tools, or apt-get install llvm-$llvm_major"
  exit 1
fi

instrumented=${PGO_INSTRUMENTED:-}
if [[ -z $instrumented ]]; then
  log "building the instrumented binary (target/pgo-gen)"
  # The binary writes where LLVM_PROFILE_FILE says (below), not to this built-in path.
  RUSTFLAGS="-Cprofile-generate=$root/target/pgo-gen/profiles" cargo build --profile dist -p sluice-proxy \
    --bin sluice --target "$target" --target-dir target/pgo-gen >&2
  instrumented=target/pgo-gen/$target/dist/sluice
fi

bench_database
replicas=(127.0.0.1:$((SLUICE_PORT_BASE + 1)) 127.0.0.1:$((SLUICE_PORT_BASE + 2)))
[[ -z ${SLUICE_BENCH_PRIMARY:-} ]] || replicas=()
mkdir -p "$work/profiles"

# Split routing (reads on the replicas, writes and transactions on the primary)
# trains both paths; primary_only sessions take the same relay. GUARD=1 adds the
# empty-key guard on the sysbench tables.
config() {
  local t
  sluice_config "$sluice_addr" "$sluice_admin" 0 | sed 's/mode = "primary_only"/mode = "split"/'
  for t in "${!replicas[@]}"; do
    printf '\n[[backends]]\nname = "replica%d"\naddress = "%s"\nrole = "replica"\ntls = "disabled"\n' \
      "$((t + 1))" "${replicas[$t]}"
  done
  [[ $1 == 1 ]] || return 0
  printf '\n[guard]\nserver_id = 5152\n'
  for ((t = 1; t <= tables; t++)); do
    printf '\n[[guard.tables]]\ntable = "sluice_test.sbtest%d"\nkey = "id"\n' "$t"
  done
}

# Starts the instrumented Sluice with config(GUARD); $sluice_pid.
start() {
  config "$1" >"$work/sluice.toml"
  LLVM_PROFILE_FILE="$work/profiles/sluice-%p-%m.profraw" \
    "$instrumented" --config "$work/sluice.toml" >"$work/sluice.log" 2>&1 &
  sluice_pid=$!
  pids+=("$sluice_pid")
  wait_port "$sluice_addr" || fail "the instrumented Sluice did not start"
}

# Stops with WHY, the last training output and Sluice's log.
fail() {
  log "$1"
  [[ ! -s $work/train.log ]] || { log "training output:"; tail -20 "$work/train.log" >&2; }
  log "Sluice's log:"
  tail -20 "$work/sluice.log" >&2
  exit 1
}

# The profile is written when the process exits normally (SIGTERM drains and
# exits 0): any other end (a crash) loses it.
stop() {
  kill -TERM "$sluice_pid"
  local status=0
  wait "$sluice_pid" || status=$?
  ((status == 0)) || fail "the instrumented Sluice exited with status $status"
}

# Runs a training command, its output kept for fail().
train() {
  log "training: $*"
  "$@" >"$work/train.log" 2>&1 || fail "training failed: $*"
}

# sysbench TEST against Sluice; the rest of the args follow.
sysb() {
  train timeout --foreground -k 5 $((PGO_TIME + 60)) sysbench "$1" --db-driver=mysql \
    --mysql-host="${sluice_addr%:*}" --mysql-port="${sluice_addr##*:}" --mysql-user=app \
    --mysql-password=app --mysql-db=sluice_test --tables=$tables --table-size=$table_size \
    --time="${train_time:-$PGO_TIME}" "${@:2}" run
}

start 0
sysb oltp_point_select --db-ps-mode=auto --threads=16
sysb oltp_point_select --db-ps-mode=disable --threads=16
sysb oltp_read_only --threads=8
sysb oltp_read_write --threads=8
if command -v php >/dev/null; then
  train php bench/connect_per_query.php "${sluice_addr%:*}" "${sluice_addr##*:}" app app sluice_test \
    "$PGO_TIME" 8
fi
stop

# The guard: present keys passed to the database, absent keys answered (own
# topology only: the guard needs the primary's binlog in ROW format). A quarter of
# the time: trained as hot, but the guard-off path (the default) weighs more where
# the two share code (trained as long, text point selects took 5 % more instructions).
if [[ -z ${SLUICE_BENCH_PRIMARY:-} ]]; then
  train_time=$(((PGO_TIME + 3) / 4))
  start 1
  for ((i = 0; i < 300; i++)); do
    ready=$(curl -fsS --max-time 5 "http://$sluice_admin/status" | grep -o '"state":"ready"' | wc -l || true)
    ((ready >= tables)) && break
    sleep 0.2
  done
  ((ready >= tables)) || fail "the guard did not get ready: $(curl -fsS --max-time 5 "http://$sluice_admin/status" || true)"
  for mode in auto disable; do
    sysb oltp_point_select --db-ps-mode=$mode --threads=16
    sysb "$root/bench/absent_keys.lua" --db-ps-mode=$mode --threads=16
  done
  stop
fi

ls "$work"/profiles/*.profraw >/dev/null 2>&1 || { log "the instrumented Sluice wrote no profile"; exit 1; }
"$profdata" merge -o "$work/sluice.profdata" "$work"/profiles/*.profraw
# Named by its content: cargo does not track the file a flag names, so a new
# profile must change RUSTFLAGS to rebuild with it.
sum=$(sha256sum "$work/sluice.profdata" | cut -c1-16)
mkdir -p target/pgo-use
rm -f target/pgo-use/sluice-*.profdata # earlier runs' profiles
profile=$root/target/pgo-use/sluice-$sum.profdata
cp "$work/sluice.profdata" "$profile"
log "merged $(ls "$work"/profiles/*.profraw | wc -l) profiles into $profile"

log "building target/dist/sluice with the profile"
# -no-pgo-warn-mismatch: functions that changed since the training (none, when
# run as one step) are built without a profile instead of warned about.
RUSTFLAGS="-Cprofile-use=$profile -Cllvm-args=-no-pgo-warn-mismatch" \
  cargo build --profile dist -p sluice-proxy --bin sluice --target "$target" --target-dir target/pgo-use >&2
mkdir -p target/dist
cp "target/pgo-use/$target/dist/sluice" target/dist/sluice
[[ -z ${PGO_OUT:-} ]] || cp target/dist/sluice "$PGO_OUT"
log "done: target/dist/sluice (profile-guided)"
