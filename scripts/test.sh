#!/usr/bin/env bash
# The project's one test command (README and CI): lint, start a throwaway MariaDB
# primary + 2 replicas, build, run every test against them, clean up.
#
#   scripts/test.sh                  # everything
#   scripts/test.sh some_filter      # extra args go to the test binaries
#   scripts/test.sh -- --nocapture   #   (after cargo test's own "--")
#   SLUICE_PORT_BASE=23306 scripts/test.sh   # MariaDB ports base..base+2
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd -P)

# Passed to the test binaries after `--`, e.g. a name filter or --nocapture.
TEST_ARGS=("$@")
if [[ ${TEST_ARGS[0]:-} == -- ]]; then TEST_ARGS=("${TEST_ARGS[@]:1}"); fi
export SLUICE_PORT_BASE=${SLUICE_PORT_BASE:-13306}

# shellcheck source=scripts/topology.sh
source scripts/topology.sh

t0=$SECONDS
step=""
summary=()
work=""
tests_line=""

# Run one named step and remember how long it took.
run() {
  local name=$1 t=$SECONDS
  shift
  step=$name
  echo "==> $name" >&2
  "$@"
  summary+=("  ok  $name ($((SECONDS - t)) s)")
}

# Sum cargo test's "test result:" lines.
count_tests() {
  awk '/^test result:/ { for (i = 2; i <= NF; i++) if ($i ~ /^(passed|failed|ignored);$/) n[$i] += $(i - 1) }
       END { printf "tests: %d passed, %d failed, %d ignored\n", n["passed;"], n["failed;"], n["ignored;"] }' "$1"
}

finish() {
  local rc=$?
  # A second Ctrl-C must not cut the cleanup short (it is bounded anyway).
  trap '' INT TERM HUP
  trap - EXIT
  if [[ -n $work ]]; then
    if [[ -f $work/test.log ]]; then tests_line=$(count_tests "$work/test.log"); fi
    topology_stop "$work/db" || true
    rm -rf "$work"
  fi
  echo "==== summary" >&2
  if ((${#summary[@]})); then printf '%s\n' "${summary[@]}" >&2; fi
  [[ -z $tests_line ]] || echo "  $tests_line" >&2
  if ((rc)); then
    echo "FAILED in step '$step' (exit $rc) after $((SECONDS - t0)) s" >&2
  else
    echo "PASSED in $((SECONDS - t0)) s" >&2
  fi
  exit "$rc"
}
trap finish EXIT
# Ctrl-C / kill: exit (after the current child stops) so that finish cleans up.
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP # terminal closed

run "install deps" scripts/install-deps.sh
run "cargo fmt" cargo fmt --all -- --check
run "cargo clippy" cargo clippy --workspace --all-targets -- -D warnings

work=$(mktemp -d -t sluice-test.XXXXXX)
run "start topology" topology_start "$work/db"
export SLUICE_TEST_TOPOLOGY_DIR=$work/db
export SLUICE_TEST_PRIMARY=127.0.0.1:$SLUICE_PORT_BASE
export SLUICE_TEST_REPLICA1=127.0.0.1:$((SLUICE_PORT_BASE + 1))
export SLUICE_TEST_REPLICA2=127.0.0.1:$((SLUICE_PORT_BASE + 2))
SLUICE_TEST_ED25519=$(sed -n 's/^ED25519=//p' "$work/db/topology.env")
export SLUICE_TEST_ED25519 # 1 if user edapp/edpass (ed25519 auth) exists

run "cargo build" cargo build --release --workspace --bins
export SLUICE_BIN=${CARGO_TARGET_DIR:-$root/target}/release/sluice
[[ $SLUICE_BIN == /* ]] || SLUICE_BIN=$root/$SLUICE_BIN
[[ -x $SLUICE_BIN ]] || { echo "no sluice binary at $SLUICE_BIN" >&2; exit 1; }

# The .deb from this release build, installed here and checked (then purged).
run "package check" scripts/package-check.sh

# Keep cargo's output visible and also keep it for the summary's test counts.
cargo_test() {
  cargo test --release --workspace -- --test-threads=2 "${TEST_ARGS[@]}" 2>&1 | tee "$work/test.log"
}
run "cargo test" cargo_test
