# Shared by the point-select benchmarks (bench/cpu.sh, bench/connect_cpu.sh,
# bench/concurrent.sh, bench/digests.sh, bench/pool_size.sh, bench/profile.sh): a work
# directory cleaned up on exit with every started process, the database (the topology's
# own, or SLUICE_BENCH_PRIMARY), and sysbench oltp_point_select against an address.
# Source it from the repository root after setting BENCH_TIME (or call bench_defaults);
# call bench_init NAME, then bench_database.

# shellcheck source=scripts/topology.sh
source scripts/topology.sh

tables=4
table_size=10000

# Defaults of the knobs the CPU benchmarks share (call it from the repository root):
# BENCH_TIME (10 s per run), BENCH_ROUNDS (3), BENCH_THREADS (16), SLUICE_BIN
# (target/dist/sluice) and SLUICE_PORT_BASE (13306); $root is the repository.
bench_defaults() {
  root=$(pwd -P)
  BENCH_TIME=${BENCH_TIME:-10}
  BENCH_ROUNDS=${BENCH_ROUNDS:-3}
  BENCH_THREADS=${BENCH_THREADS:-16}
  SLUICE_BIN=${SLUICE_BIN:-$root/target/dist/sluice}
  export SLUICE_PORT_BASE=${SLUICE_PORT_BASE:-13306}
}

# A work directory ($work), PIDs to kill ($pids) and SIGSTOPped PIDs to continue
# ($stopped) on exit; log() prefixes NAME.
bench_init() {
  bench_name=$1
  work=$(mktemp -d -t "sluice-$bench_name.XXXXXX")
  pids=()
  stopped=()
  trap bench_cleanup EXIT
  trap 'exit 130' INT
}

bench_cleanup() {
  trap '' INT TERM
  for pid in "${stopped[@]}"; do kill -CONT "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  topology_stop "$work/db" >/dev/null 2>&1 || true
  rm -rf "$work"
}

log() { echo "$bench_name: $*" >&2; }

# Installs the tools, starts the topology unless SLUICE_BENCH_PRIMARY names a primary
# ($primary), and creates the sysbench tables there.
bench_database() {
  scripts/install-deps.sh >&2
  if [[ -n ${SLUICE_BENCH_PRIMARY:-} ]]; then
    primary=$SLUICE_BENCH_PRIMARY
  else
    topology_start "$work/db" >&2
    primary=127.0.0.1:$SLUICE_PORT_BASE
  fi
  sb "$primary" cleanup >/dev/null
  sb "$primary" --threads=$tables prepare >/dev/null
}

# sysbench oltp_point_select against ADDR; the rest of the args follow.
sb() {
  local addr=$1
  shift
  timeout --foreground -k 5 $((BENCH_TIME + 60)) sysbench oltp_point_select --db-driver=mysql \
    --mysql-host="${addr%:*}" --mysql-port="${addr##*:}" --mysql-user=app --mysql-password=app \
    --mysql-db=sluice_test --tables=$tables --table-size=$table_size "$@"
}

# A primary_only Sluice config on LISTEN / ADMIN with WORKER_THREADS (default 0) in
# front of $primary; backend TLS off (HAProxy relays plain bytes, and the topology offers
# TLS, which "preferred" would take) unless BENCH_BACKEND_TLS says otherwise.
sluice_config() {
  cat <<EOF2
[server]
listen = "$1"
admin_listen = "$2"
worker_threads = ${3:-0}

[[users]]
name = "app"
password = "app"

[routing]
mode = "primary_only"

[[backends]]
name = "primary"
address = "$primary"
role = "primary"
tls = "${BENCH_BACKEND_TLS:-disabled}"
EOF2
}

# Waits up to 10 s for ADDR to accept connections.
wait_port() {
  local i
  for ((i = 0; i < 100; i++)); do
    (: <"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}
