#!/usr/bin/env bash
# Throwaway MariaDB topology for Sluice tests: one primary and two GTID replicas,
# everything (datadirs, sockets, pid files, logs) inside one directory.
#
#   scripts/topology.sh start  DIR   # ports ${SLUICE_PORT_BASE:-13306} .. +2
#   scripts/topology.sh stop   DIR   # safe to call twice
#   scripts/topology.sh status DIR
#
# Sourced, it only defines functions (and leaves the caller's shell options alone):
#   topology_start DIR / topology_stop DIR / topology_status DIR
#   topology_client PORT [mariadb args...]   # root client for one of our servers
#   topology_sync DIR                        # wait until replicas have caught up
#   topology_sluice_config DIR [LISTEN [ADMIN]]  # print a sluice.toml for it
# After start, DIR/topology.env holds TOPOLOGY_DIR, PRIMARY_PORT, REPLICA1_PORT,
# REPLICA2_PORT and ED25519 (1 if user edapp exists).
#
# Every server offers TLS (not required) with DIR/tls/server.pem (SAN IP:127.0.0.1,
# DNS:localhost) signed by the test CA DIR/tls/ca.pem; scripts/test-ca.sh writes
# these and the client and wrong-name certificates next to them.

TOPOLOGY_NODES=(primary replica1 replica2)

# shellcheck source=scripts/test-ca.sh
source "$(dirname "${BASH_SOURCE[0]}")/test-ca.sh"

_topo_log() { echo "topology: $*" >&2; }

# Node index doubles as port offset; server_id is index + 1.
_topo_index() {
  case "$1" in primary) echo 0 ;; replica1) echo 1 ;; replica2) echo 2 ;; *) return 1 ;; esac
}

# Root client for one node, over its unix socket (options come from its my.cnf).
_topo_sql() {
  local dir=$1 node=$2
  shift 2
  mariadb --defaults-file="$dir/$node/my.cnf" --batch --skip-column-names "$@"
}

# Alive and not a zombie (kill -0 succeeds on zombies).
_topo_alive() {
  local state
  state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) && [[ -n $state && $state != Z ]]
}

# PID of a node's mariadbd, found by its --defaults-file rather than the pid file
# (which does not exist yet right after launch, and pids get reused).
_topo_pid() {
  local cnf="$1/$2/my.cnf" f pid
  while read -r f; do
    pid=${f#/proc/}
    pid=${pid%/cmdline}
    if [[ $(cat "/proc/$pid/comm" 2>/dev/null) == mariadbd ]] && _topo_alive "$pid"; then
      echo "$pid"
      return 0
    fi
  done < <(grep -lsF -e "--defaults-file=$cnf" /proc/[0-9]*/cmdline)
  return 1
}

_topo_port_in_use() { (: <"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

_topo_write_cnf() {
  local dir=$1 node=$2 port=$3 id=$4 extra=""
  # mariadbd refuses to run as root unless told to
  if [[ $EUID -eq 0 ]]; then extra+=$'user=root\n'; fi
  if [[ $node != primary ]]; then extra+=$'read_only=1\nperformance_schema=OFF\n'; fi
  # The primary shows the connection attributes Sluice forwards.
  if [[ $node == primary ]]; then extra+=$'performance_schema=ON\n'; fi
  cat >"$dir/$node/my.cnf" <<EOF
[mysqld]
datadir=$dir/$node/data
tmpdir=$dir/$node/tmp
socket=$dir/$node/mysql.sock
pid-file=$dir/$node/mariadbd.pid
log-error=$dir/$node/error.log
port=$port
bind-address=127.0.0.1
server_id=$id
log_bin=mysql-bin
relay_log=relay-bin
binlog_format=ROW
log_slave_updates=1
gtid_strict_mode=1
max_allowed_packet=64M
local_infile=1
max_connections=500
ssl_ca=$dir/tls/ca.pem
ssl_cert=$dir/tls/server.pem
ssl_key=$dir/tls/server.key
skip-name-resolve
innodb_buffer_pool_size=64M
innodb_log_file_size=8M
innodb_flush_log_at_trx_commit=2
sync_binlog=0
$extra
[client]
socket=$dir/$node/mysql.sock
user=root
EOF
}

_topo_start_failed() {
  local rc=$1 dir=$2 node
  ((rc)) || return 0
  for node in "${TOPOLOGY_NODES[@]}"; do
    tail -n 15 "$dir/$node/error.log" 2>/dev/null | sed "s/^/  $node: /" >&2
  done
  topology_stop "$dir" || true
}

# Runs in a subshell so errors abort only this function, even when sourced.
topology_start() (
  set -euo pipefail
  [[ $# -eq 1 ]] || { _topo_log "usage: topology_start DIR"; exit 2; }
  mkdir -p "$1"
  local dir base node i port t0
  dir=$(cd "$1" && pwd -P)
  base=${SLUICE_PORT_BASE:-13306}
  t0=$(date +%s%N)

  if [[ -e "$dir/topology.env" || -e "$dir/primary" ]]; then
    _topo_log "ERROR: $dir already holds a topology; stop it and use a fresh directory"
    exit 1
  fi
  for i in 0 1 2; do
    port=$((base + i))
    [[ $port -ne 3306 ]] || { _topo_log "ERROR: refusing to use port 3306"; exit 1; }
    if _topo_port_in_use "$port"; then
      _topo_log "ERROR: port $port already in use (set SLUICE_PORT_BASE)"
      exit 1
    fi
  done
  # unix socket paths are limited to 107 bytes
  if ((${#dir} + 20 > 107)); then
    _topo_log "ERROR: directory path too long for unix sockets: $dir"
    exit 1
  fi

  # On failure, show why and stop whatever already runs.
  trap '_topo_start_failed $? "$dir"' EXIT

  test_ca "$dir/tls"
  for node in "${TOPOLOGY_NODES[@]}"; do
    i=$(_topo_index "$node")
    mkdir -p "$dir/$node/tmp"
    _topo_write_cnf "$dir" "$node" $((base + i)) $((i + 1))
  done

  # Bootstrap once (the slow part: ~1 s idle, 3-4 s on a busy machine) and copy the
  # datadir to the replicas: the bootstrap writes no binlog, so all three start from
  # the same empty state.
  mariadb-install-db --defaults-file="$dir/primary/my.cnf" \
    --auth-root-authentication-method=normal --skip-test-db \
    >"$dir/install-db.log" 2>&1 ||
    { _topo_log "ERROR: mariadb-install-db failed:"; tail -n 20 "$dir/install-db.log" >&2; exit 1; }
  for node in replica1 replica2; do
    cp -a "$dir/primary/data" "$dir/$node/data"
  done

  # Background children of a script ignore SIGINT, and mariadbd treats SIGHUP as
  # "flush logs", so the servers outlive this script until topology_stop.
  local -A pid
  for node in "${TOPOLOGY_NODES[@]}"; do
    mariadbd --defaults-file="$dir/$node/my.cnf" </dev/null >>"$dir/$node/error.log" 2>&1 &
    pid[$node]=$!
  done
  for node in "${TOPOLOGY_NODES[@]}"; do
    for ((i = 0; ; i++)); do
      mariadb-admin --defaults-file="$dir/$node/my.cnf" --connect-timeout=1 ping >/dev/null 2>&1 && break
      _topo_alive "${pid[$node]}" || { _topo_log "ERROR: $node exited during startup"; exit 1; }
      ((i < 300)) || { _topo_log "ERROR: $node did not come up within 15 s"; exit 1; }
      sleep 0.05
    done
  done

  # INSTALL SONAME is not binlogged, so the plugin must be installed on every server
  # before the primary creates an ed25519 user that the replicas must replay.
  local ed=1
  for node in "${TOPOLOGY_NODES[@]}"; do
    _topo_sql "$dir" "$node" -e "INSTALL SONAME 'auth_ed25519'" 2>/dev/null || ed=0
  done

  # Created on the primary before replication starts: the replicas replay the
  # whole binlog, so the end state is identical everywhere.
  _topo_sql "$dir" primary <<EOF
CREATE USER 'repl'@'%' IDENTIFIED BY 'repl';
GRANT REPLICATION SLAVE ON *.* TO 'repl'@'%';
CREATE USER 'app'@'%' IDENTIFIED BY 'app';
GRANT ALL PRIVILEGES ON *.* TO 'app'@'%' WITH GRANT OPTION;
CREATE USER 'app'@'localhost' IDENTIFIED BY 'app';
GRANT ALL PRIVILEGES ON *.* TO 'app'@'localhost' WITH GRANT OPTION;
CREATE USER 'sluice_monitor'@'%' IDENTIFIED BY 'monitor';
GRANT SLAVE MONITOR, BINLOG MONITOR ON *.* TO 'sluice_monitor'@'%';
GRANT CREATE, SELECT, INSERT, UPDATE ON sluice.* TO 'sluice_monitor'@'%';
-- The empty-key guard (same account): the binlog stream and the key scans.
GRANT REPLICATION SLAVE ON *.* TO 'sluice_monitor'@'%';
GRANT SELECT ON *.* TO 'sluice_monitor'@'%';
CREATE DATABASE sluice_test;
EOF
  if ((ed)); then
    _topo_sql "$dir" primary -e "CREATE USER 'edapp'@'%' IDENTIFIED VIA ed25519 USING PASSWORD('edpass');
      GRANT ALL PRIVILEGES ON *.* TO 'edapp'@'%';" 2>/dev/null || ed=0
  fi

  for node in replica1 replica2; do
    _topo_sql "$dir" "$node" <<EOF
CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=$base, MASTER_USER='repl',
  MASTER_PASSWORD='repl', MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1;
START SLAVE;
EOF
  done
  topology_sync "$dir"

  cat >"$dir/topology.env" <<EOF
TOPOLOGY_DIR=$dir
PRIMARY_PORT=$base
REPLICA1_PORT=$((base + 1))
REPLICA2_PORT=$((base + 2))
ED25519=$ed
EOF
  _topo_log "started in $((($(date +%s%N) - t0) / 1000000)) ms (ed25519 user: $ed)"
  echo "primary  127.0.0.1:$base"
  echo "replica1 127.0.0.1:$((base + 1))"
  echo "replica2 127.0.0.1:$((base + 2))"
)

# Wait until both replicas run both threads and have applied the primary's binlog.
topology_sync() (
  set -euo pipefail
  local dir=$1 node status io sql i pos
  for node in replica1 replica2; do
    for ((i = 0; ; i++)); do
      status=$(_topo_sql "$dir" "$node" --column-names --vertical -e "SHOW SLAVE STATUS")
      io=$(awk '$1 == "Slave_IO_Running:" {print $2}' <<<"$status")
      sql=$(awk '$1 == "Slave_SQL_Running:" {print $2}' <<<"$status")
      [[ $io == Yes && $sql == Yes ]] && break
      # IO errors may be transient (connect retry); an SQL error is not.
      if ((i >= 200)) || ! grep -q 'Last_SQL_Errno: 0$' <<<"$status"; then
        _topo_log "ERROR: replication on $node not running (IO=$io SQL=$sql):"
        grep -E 'Last_(IO|SQL)_Error:' <<<"$status" >&2
        exit 1
      fi
      sleep 0.05
    done
  done
  pos=$(_topo_sql "$dir" primary -e "SELECT @@gtid_binlog_pos")
  for node in replica1 replica2; do
    [[ $(_topo_sql "$dir" "$node" -e "SELECT MASTER_GTID_WAIT('$pos', 20)") == 0 ]] ||
      { _topo_log "ERROR: $node did not catch up to $pos"; exit 1; }
  done
)

topology_stop() (
  set -uo pipefail
  [[ $# -eq 1 ]] || { _topo_log "usage: topology_stop DIR"; exit 2; }
  [[ -d "$1" ]] || exit 0
  local dir node pid i pids=()
  dir=$(cd "$1" && pwd -P)
  # Ask politely, all at once (each shutdown takes about a second).
  for node in "${TOPOLOGY_NODES[@]}"; do
    pid=$(_topo_pid "$dir" "$node") || continue
    pids+=("$pid")
    timeout 20 mariadb-admin --defaults-file="$dir/$node/my.cnf" --connect-timeout=2 \
      shutdown >/dev/null 2>&1 &
  done
  wait
  # Then insist: TERM, and KILL after 10 s.
  for pid in "${pids[@]}"; do
    _topo_alive "$pid" && kill -TERM "$pid" 2>/dev/null
    for ((i = 0; i < 100; i++)); do _topo_alive "$pid" || break; sleep 0.1; done
    _topo_alive "$pid" && kill -KILL "$pid" 2>/dev/null
  done
  ((${#pids[@]})) && _topo_log "stopped ${#pids[@]} server(s) in $dir"
  exit 0
)

topology_status() (
  set -uo pipefail
  local dir=$1 node pid port rc=0 repl
  [[ -f "$dir/topology.env" ]] || { _topo_log "no topology in $dir"; exit 1; }
  for node in "${TOPOLOGY_NODES[@]}"; do
    port=$(sed -n 's/^port=//p' "$dir/$node/my.cnf")
    if pid=$(_topo_pid "$dir" "$node"); then
      repl=""
      if [[ $node != primary ]]; then
        repl=$(_topo_sql "$dir" "$node" --column-names --vertical -e "SHOW SLAVE STATUS" |
          awk '$1 ~ /^Slave_(IO|SQL)_Running:$/ {sub(/^Slave_/, "", $1); printf " %s%s", $1, $2}')
      fi
      echo "$node 127.0.0.1:$port pid $pid up$repl"
    else
      echo "$node 127.0.0.1:$port down"
      rc=1
    fi
  done
  exit $rc
)

# Root client for one of our servers, by port: over the socket when the topology
# dir is known ($TOPOLOGY_DIR or $SLUICE_TEST_TOPOLOGY_DIR), else over TCP
# (install-db creates a password-less root@127.0.0.1).
topology_client() {
  local port=$1 dir=${TOPOLOGY_DIR:-${SLUICE_TEST_TOPOLOGY_DIR:-}} node
  shift
  if [[ -n "$dir" ]]; then
    for node in "${TOPOLOGY_NODES[@]}"; do
      if grep -qx "port=$port" "$dir/$node/my.cnf" 2>/dev/null; then
        mariadb --defaults-file="$dir/$node/my.cnf" "$@"
        return
      fi
    done
  fi
  mariadb --no-defaults -h127.0.0.1 -P"$port" -uroot "$@"
}

# Print a Sluice config (same shape as examples/sluice.toml) for the topology in DIR.
# (Subshell, so sourcing topology.env leaks nothing.)
topology_sluice_config() (
  set -euo pipefail
  local dir=$1 client_addr=${2:-127.0.0.1:6033} admin_addr=${3:-127.0.0.1:9033}
  # shellcheck disable=SC1091
  source "$dir/topology.env"
  cat <<EOF
[server]
listen = "$client_addr"
admin_listen = "$admin_addr"
max_client_connections = 10000

[[users]]
name = "app"
password = "app"

[pool]
max_connections_per_backend = 50
acquire_timeout_ms = 2000

[routing]
mode = "split"                     # reads to replicas, writes to the primary
read_your_writes = "gtid"          # a session's reads see its own writes
max_replica_lag_ms = 1000          # replicas further behind get no reads
causal_wait_ms = 100

[monitor]
user = "sluice_monitor"            # SLAVE MONITOR + CREATE/INSERT/UPDATE/SELECT on sluice.*
password = "monitor"
interval_ms = 500
heartbeat_table = "sluice.heartbeat"
follow_read_only = true            # writes follow a promotion (never two writers)

[[backends]]
name = "primary"
address = "127.0.0.1:$PRIMARY_PORT"
role = "primary"

[[backends]]
name = "replica1"
address = "127.0.0.1:$REPLICA1_PORT"
role = "replica"

[[backends]]
name = "replica2"
address = "127.0.0.1:$REPLICA2_PORT"
role = "replica"

# The empty-key guard: lookups of ids that do not exist in sluice_test.users
# are answered without the database (scripts/demo.sh creates the table).
[guard]
server_id = 5151                   # the guard's binlog stream registers as this replica

[[guard.tables]]
table = "sluice_test.users"
key = "id"
EOF
)

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  set -euo pipefail
  case "${1:-}" in
    start | stop | status)
      [[ $# -eq 2 ]] || { echo "usage: $0 start|stop|status DIR" >&2; exit 2; }
      "topology_$1" "$2"
      ;;
    *)
      echo "usage: $0 start|stop|status DIR" >&2
      exit 2
      ;;
  esac
fi
