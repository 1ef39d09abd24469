#!/usr/bin/env bash
# README demo: a MariaDB primary + 2 replicas with Sluice in front, until Ctrl-C.
#   scripts/demo.sh
#   SLUICE_PORT_BASE=23306 DEMO_LISTEN=127.0.0.1:7033 DEMO_ADMIN=127.0.0.1:10033 scripts/demo.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd -P)
export SLUICE_PORT_BASE=${SLUICE_PORT_BASE:-13306}
listen=${DEMO_LISTEN:-127.0.0.1:6033}
admin=${DEMO_ADMIN:-127.0.0.1:9033}

# shellcheck source=scripts/topology.sh
source scripts/topology.sh

scripts/install-deps.sh
# Build first: if it fails there is nothing to clean up.
cargo build --release --bin sluice
bin=${CARGO_TARGET_DIR:-$root/target}/release/sluice
[[ $bin == /* ]] || bin=$root/$bin

work=$(mktemp -d -t sluice-demo.XXXXXX)
sluice_pid=""
cleanup() {
  trap '' INT TERM HUP # a second Ctrl-C must not cut the cleanup short
  if [[ -n $sluice_pid ]] && kill "$sluice_pid" 2>/dev/null; then
    # give it 5 s to shut down gracefully
    for _ in {1..50}; do kill -0 "$sluice_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$sluice_pid" 2>/dev/null || true
  fi
  topology_stop "$work/db" || true
  rm -rf "$work"
  echo "demo: stopped sluice and MariaDB, removed $work" >&2
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP # terminal closed

topology_start "$work/db"
# A table for the empty-key guard to watch.
mariadb --no-defaults -h127.0.0.1 -P"$SLUICE_PORT_BASE" -uapp -papp sluice_test -e "
  CREATE TABLE IF NOT EXISTS users (id BIGINT PRIMARY KEY, name VARCHAR(50) NOT NULL);
  INSERT IGNORE INTO users VALUES (1, 'ada'), (2, 'grace'), (3, 'edsger');"
topology_sluice_config "$work/db" "$listen" "$admin" >"$work/sluice.toml"

"$bin" --config "$work/sluice.toml" &
sluice_pid=$!
# Wait until sluice accepts connections (or died).
for ((i = 0; ; i++)); do
  (: <"/dev/tcp/${listen%:*}/${listen##*:}") 2>/dev/null && break
  kill -0 "$sluice_pid" 2>/dev/null || { echo "demo: sluice exited at startup" >&2; exit 1; }
  ((i < 100)) || { echo "demo: sluice is not listening on $listen after 10 s" >&2; exit 1; }
  sleep 0.1
done

cat >&2 <<EOF

Sluice is running (pid $sluice_pid), config $work/sluice.toml
  connect:  mariadb -h${listen%:*} -P${listen##*:} -uapp -papp sluice_test
  metrics:  curl http://$admin/metrics
  status:   curl http://$admin/status   (writer, replica lag in ms, GTID positions)
  lag:      mariadb -h127.0.0.1 -P$((SLUICE_PORT_BASE + 2)) -uapp -papp -e "STOP SLAVE; CHANGE MASTER TO MASTER_DELAY=3; START SLAVE"
            makes replica2 lag 3 s: it stops getting reads (max_replica_lag_ms = 1000)
  guard:    mariadb -h${listen%:*} -P${listen##*:} -uapp -papp sluice_test -e "SELECT * FROM users WHERE id = 1; SELECT * FROM users WHERE id = 42; SELECT * FROM users WHERE id = 43"
            ids 42 and 43 do not exist: once the shape has run, the guard answers such lookups
            without the database (curl -s http://$admin/metrics | grep sluice_guard_answered_total)
  backends: primary 127.0.0.1:$SLUICE_PORT_BASE, replicas :$((SLUICE_PORT_BASE + 1)) :$((SLUICE_PORT_BASE + 2))
Press Ctrl-C to stop everything.
EOF
# Returns when sluice exits or Ctrl-C arrives (then the INT trap and cleanup run).
wait "$sluice_pid"
