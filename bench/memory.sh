#!/usr/bin/env bash
# Memory of Sluice with many clients: RSS with 10,000 idle client
# connections, and with 10,000 clients running a light load (one
# SELECT 1 per client per second). Target: under 100 MB for 10,000 idle.
#
#   bench/memory.sh                 # starts its own topology (SLUICE_PORT_BASE..+2)
#   MEM_CLIENTS=2000 bench/memory.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd -P)
clients=${MEM_CLIENTS:-10000}
hold=${MEM_HOLD_SECS:-20}
export SLUICE_PORT_BASE=${SLUICE_PORT_BASE:-13306}
out=${BENCH_OUT:-$root/bench/results-memory-$(date +%F).md}

# shellcheck source=scripts/topology.sh
source scripts/topology.sh
work=$(mktemp -d -t sluice-mem.XXXXXX)
pids=()
cleanup() {
  trap '' INT TERM
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  topology_stop "$work/db" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT

cargo build --profile dist --bin sluice --bin idle_clients >&2
topology_start "$work/db" >&2
port=$((SLUICE_PORT_BASE + 100))
cat >"$work/sluice.toml" <<TOML
[server]
listen = "127.0.0.1:$port"
admin_listen = "127.0.0.1:$((port + 1))"
max_client_connections = 20000

[[users]]
name = "app"
password = "app"

[pool]
max_connections_per_backend = 50

[routing]
mode = "split"

[[backends]]
name = "primary"
address = "127.0.0.1:$SLUICE_PORT_BASE"
role = "primary"
tls = "disabled"  # like HAProxy's plain leg; the topology offers TLS

[[backends]]
name = "replica1"
address = "127.0.0.1:$((SLUICE_PORT_BASE + 1))"
role = "replica"

[[backends]]
name = "replica2"
address = "127.0.0.1:$((SLUICE_PORT_BASE + 2))"
role = "replica"
TOML
target/dist/sluice --config "$work/sluice.toml" 2>"$work/sluice.log" &
sluice_pid=$!
pids+=("$sluice_pid")
for _ in {1..100}; do (: <"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done

rss_mb() { awk '/^VmRSS:/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }
hwm_mb() { awk '/^VmHWM:/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }

baseline=$(rss_mb "$sluice_pid")
# Idle: connect, then measure while they sit.
target/dist/idle_clients "$port" "$clients" "$hold" >"$work/idle.out" &
pids+=("$!")
until grep -q '^ready' "$work/idle.out" 2>/dev/null; do sleep 0.5; done
sleep 3
idle=$(rss_mb "$sluice_pid")
wait "${pids[-1]}" || true
sleep 2
# Light load: every client runs SELECT 1 once a second.
target/dist/idle_clients "$port" "$clients" "$hold" 1000 >"$work/load.out" &
pids+=("$!")
until grep -q '^ready' "$work/load.out" 2>/dev/null; do sleep 0.5; done
sleep $((hold / 2))
loaded=$(rss_mb "$sluice_pid")
wait "${pids[-1]}" || true
errors=$(sed -n 's/^errors //p' "$work/load.out")
peak=$(hwm_mb "$sluice_pid")

{
  echo "# Sluice memory $(date '+%F %H:%M')"
  echo
  echo "$clients client connections, $(nproc) cores, sluice at commit $(git rev-parse --short HEAD)."
  echo
  echo "| state | RSS MB |"
  echo "| --- | ---: |"
  echo "| started, no clients | $baseline |"
  echo "| $clients idle clients | $idle |"
  echo "| $clients clients, SELECT 1 each per second | $loaded |"
  echo "| peak (VmHWM) | $peak |"
  echo
  echo "Light-load errors: ${errors:-n/a}."
} | tee "$out"
