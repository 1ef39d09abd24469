#!/usr/bin/env bash
# Benchmarks: the same load against MariaDB directly, through HAProxy (plain TCP) and
# through Sluice, in ONE run, interleaved (each round runs every workload on every
# endpoint in turn), reporting the median of the rounds.
#
# BENCH_SUITE picks what is compared:
#   foundation (default)  point select (prepared / text), read_only (prepared),
#                         connect-per-query; endpoints direct, haproxy, sluice (primary_only)
#   split                 oltp_read_only and oltp_read_write (prepared, --db-ps-mode=auto),
#                         each with sysbench's transactions and with --skip_trx=on;
#                         endpoints direct (primary), haproxy (TCP to the primary), sluice
#                         in primary_only mode and sluice in split mode (reads to the two
#                         replicas, read_your_writes = "off"). Adds the ratio
#                         split / primary_only and the share of queries Sluice ran on
#                         replicas (from its /metrics). After every run the replicas are
#                         given time to catch up, so one run's replication lag does not
#                         slow the next.
#   guard                 the empty-key guard: point selects of absent ids (bench/absent_keys.lua)
#                         and of present ids (oltp_point_select), prepared and text; endpoints
#                         direct (primary), haproxy, Sluice in split mode with the guard on the
#                         sysbench tables and without it (read_your_writes = "off"). Adds the
#                         ratio guard / no guard, the statements the backends ran (Com_select
#                         and Handler_read_key summed over every backend, per 1000 client
#                         queries) and the guard's measured false positive rate.
#   tls                   TLS on the client leg: sysbench oltp_point_select (prepared) with
#                         --mysql-ssl=on and connect-per-query (PHP PDO, certificate verified);
#                         endpoints direct (TLS to MariaDB), haproxy (TCP: TLS end to end to
#                         MariaDB), sluice (Sluice's certificate; backend tls = "preferred",
#                         so the pooled backend leg is TLS too) and sluice-plainbackend (the
#                         same with backend tls = "disabled"). The topology's servers offer
#                         TLS (scripts/test-ca.sh); a primary given by SLUICE_BENCH_PRIMARY must too.
#                         Adds the server side's CPU per query: the primary mariadbd's plus the
#                         proxy's (utime + stime over the run; own topology only). With
#                         BENCH_TLS_KEY=ec the server certificate (MariaDB's, via FLUSH SSL, and
#                         Sluice's) is ECDSA P-256 instead of RSA 2048.
#   ryw                   the cost of read_your_writes: oltp_read_write (prepared, autocommit)
#                         and a write-then-read loop (bench/write_then_read.lua); endpoints
#                         direct, haproxy and Sluice in split mode with read_your_writes =
#                         off, gtid, global and universal. Adds the ratio to "off".
#
#   bench/run.sh                       # starts its own topology (ports SLUICE_PORT_BASE..+2)
#   BENCH_SUITE=split bench/run.sh
#   SLUICE_BENCH_PRIMARY=127.0.0.1:13306 bench/run.sh   # use a running primary (user app/app, db sluice_test)
#   SLUICE_BENCH_PRIMARY=127.0.0.1:13306 SLUICE_BENCH_REPLICAS="127.0.0.1:13307 127.0.0.1:13308" \
#     BENCH_SUITE=split bench/run.sh                    # ... and its replicas
#   BENCH_TIME=3 SKIP_SLUICE=1 bench/run.sh             # quick check without a sluice binary
# Knobs: BENCH_SUITE (foundation), BENCH_TIME (s per run, 10), BENCH_ROUNDS (3),
#   BENCH_THREADS (16), BENCH_WORKLOADS (space-separated subset of the suite's workloads),
#   BENCH_ENDPOINTS (space-separated subset of the suite's endpoints),
#   SLUICE_BIN, BENCH_HAPROXY_LISTEN (127.0.0.1:16033), BENCH_SLUICE_LISTEN (127.0.0.1:6034),
#   BENCH_SLUICE_ADMIN (127.0.0.1:9034), BENCH_SLUICE_SPLIT_LISTEN (127.0.0.1:6035),
#   BENCH_SLUICE_SPLIT_ADMIN (127.0.0.1:9035), BENCH_OUT (bench/results-SUITE-DATE.md),
#   BENCH_PIN (0; 1 = the clients on CPU 0, the databases and proxies on the other cores:
#   a load generator on the servers' own cores is charged to whichever endpoint answers
#   fastest, so pinning stands in for clients on their own machines; own topology only),
#   BENCH_CONCURRENT (guard suite; 0; 1 = sluice-guard and sluice-noguard run at the same
#   time, each with its own client of BENCH_THREADS threads, so the machine's speed, which
#   drifts by tens of percent here between runs, is the same for both; the per-round
#   ratio then compares their cost. Only those two endpoints unless BENCH_ENDPOINTS says),
#   BENCH_GUARD_AA (guard suite; 0; 1 = sluice-guard runs without [guard] too: an A/A run
#   that shows how far apart two identical instances measure),
#   BENCH_GUARD_SWAP (guard suite; 0; 1 = the two instances trade listen ports and start
#   order, so a run with and a run without it cancel whatever favours one of the two),
#   BENCH_GUARD_SKIP_AFTER (guard suite; unset = Sluice's guard.skip_after_found; 0 = the
#   filter checks every lookup, also those of statements whose lookups keep finding rows),
#   BENCH_WORKER_THREADS (every Sluice's server.worker_threads; 0 = one per core, the
#   default; 1 = Tokio's current-thread scheduler).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd -P)

BENCH_TIME=${BENCH_TIME:-10}
BENCH_ROUNDS=${BENCH_ROUNDS:-3}
BENCH_THREADS=${BENCH_THREADS:-16}
SLUICE_BIN=${SLUICE_BIN:-$root/target/dist/sluice}
haproxy_addr=${BENCH_HAPROXY_LISTEN:-127.0.0.1:16033}
sluice_addr=${BENCH_SLUICE_LISTEN:-127.0.0.1:6034}
sluice_admin=${BENCH_SLUICE_ADMIN:-127.0.0.1:9034}
split_addr=${BENCH_SLUICE_SPLIT_LISTEN:-127.0.0.1:6035}
split_admin=${BENCH_SLUICE_SPLIT_ADMIN:-127.0.0.1:9035}
BENCH_SUITE=${BENCH_SUITE:-foundation}
out=${BENCH_OUT:-$root/bench/results-$BENCH_SUITE-$(date +%F).md}
export SLUICE_PORT_BASE=${SLUICE_PORT_BASE:-13306}
tables=4
table_size=10000
endpoints=(direct haproxy)
case $BENCH_SUITE in
  foundation)
    workloads=(point_select_ps point_select_noprep read_only_ps connect_per_query)
    [[ ${SKIP_SLUICE:-0} == 1 ]] || endpoints+=(sluice)
    ;;
  split)
    workloads=(read_only_ps read_write_ps read_only_ps_notrx read_write_ps_notrx)
    [[ ${SKIP_SLUICE:-0} == 1 ]] || endpoints+=(sluice-primary_only sluice-split)
    ;;
  guard)
    workloads=(absent_ps absent_noprep point_select_ps point_select_noprep)
    [[ ${SKIP_SLUICE:-0} == 1 ]] || endpoints+=(sluice-guard sluice-noguard)
    [[ ${BENCH_CONCURRENT:-0} != 1 || ${SKIP_SLUICE:-0} == 1 ]] || endpoints=(sluice-guard sluice-noguard)
    ;;
  tls)
    workloads=(point_select_ps_tls connect_per_query_tls)
    [[ ${SKIP_SLUICE:-0} == 1 ]] || endpoints+=(sluice sluice-plainbackend)
    ;;
  ryw)
    workloads=(read_write_ps_notrx write_then_read)
    [[ ${SKIP_SLUICE:-0} == 1 ]] || endpoints+=(sluice-off sluice-gtid sluice-global sluice-universal)
    ;;
  *)
    echo "bench: unknown BENCH_SUITE '$BENCH_SUITE' (foundation, split, guard, tls or ryw)" >&2
    exit 2
    ;;
esac
if [[ -n ${BENCH_WORKLOADS:-} ]]; then
  read -ra workloads <<<"$BENCH_WORKLOADS"
fi
if [[ -n ${BENCH_ENDPOINTS:-} ]]; then
  read -ra endpoints <<<"$BENCH_ENDPOINTS"
fi

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

# Refuse an address somebody else already listens on: we would measure their server.
port_free() {
  if (: <"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null; then
    log "$1 is already in use (set the BENCH_*_LISTEN / BENCH_*_ADMIN knobs)"
    return 1
  fi
}

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

# BENCH_PIN=1: clients on CPU 0, servers (databases, proxies) on the rest.
BENCH_PIN=${BENCH_PIN:-0}
client_cpus=0
server_cpus=1-$(($(nproc) - 1))
if [[ $BENCH_PIN == 1 ]]; then
  (($(nproc) >= 2)) || { log "BENCH_PIN=1 needs at least 2 cores"; exit 1; }
  [[ -z ${SLUICE_BENCH_PRIMARY:-} ]] || { log "BENCH_PIN=1 pins the bench's own topology only"; exit 1; }
  limit+=(taskset -c "$client_cpus")
fi
# Pins PID (all its threads) to the servers' cores under BENCH_PIN=1.
pin_server() {
  [[ $BENCH_PIN == 1 ]] || return 0
  taskset -a -p -c "$server_cpus" "$1" >/dev/null
}

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
    read_write_ps) sb "$addr" oltp_read_write --db-ps-mode=auto "${load[@]}" run ;;
    read_only_ps_notrx) sb "$addr" oltp_read_only --db-ps-mode=auto --skip_trx=on "${load[@]}" run ;;
    # Without transactions two threads may delete and re-insert the same id at once:
    # the duplicate key (1062) is sysbench's race, direct too, so it is ignored (and
    # counted) like sysbench's default deadlock / lock-wait errors.
    read_write_ps_notrx)
      sb "$addr" oltp_read_write --db-ps-mode=auto --skip_trx=on \
        --mysql-ignore-errors=1213,1020,1205,1062 "${load[@]}" run
      ;;
    absent_ps) sb "$addr" "$root/bench/absent_keys.lua" --db-ps-mode=auto "${load[@]}" run ;;
    absent_noprep) sb "$addr" "$root/bench/absent_keys.lua" --db-ps-mode=disable "${load[@]}" run ;;
    write_then_read)
      sb "$addr" "$root/bench/write_then_read.lua" --mysql-ignore-errors=1213,1205 "${load[@]}" run
      ;;
    connect_per_query)
      "${limit[@]}" php bench/connect_per_query.php "${addr%:*}" "${addr##*:}" app app sluice_test \
        "$BENCH_TIME" "$BENCH_THREADS" "$table_size"
      ;;
    # sysbench 1.0's --mysql-ssl=on reads client-key.pem, client-cert.pem and cacert.pem
    # from its working directory ($work/tls, made by scripts/test-ca.sh).
    point_select_ps_tls)
      (cd "$work/tls" && sb "$addr" oltp_point_select --db-ps-mode=auto --mysql-ssl=on "${load[@]}" run)
      ;;
    connect_per_query_tls)
      BENCH_SSL_CA=$work/tls/ca.pem "${limit[@]}" php bench/connect_per_query.php "${addr%:*}" "${addr##*:}" \
        app app sluice_test "$BENCH_TIME" "$BENCH_THREADS" "$table_size"
      ;;
  esac
}

# BENCH_CONCURRENT: sluice-guard's run of WORKLOAD (output on stdout), with
# sluice-noguard's beside it (output in its own log, pid in $pair). Which of the two
# starts first alternates by ROUND, so starting first favours neither.
run_concurrent() {
  local w=$1 round=$2 plog="$work/$1-sluice-noguard-$2.log" g
  if ((round % 2)); then
    run_workload "$w" "${endpoint_addr[sluice-noguard]}" >"$plog" 2>&1 &
    pair=$!
    run_workload "$w" "${endpoint_addr[sluice-guard]}"
  else
    run_workload "$w" "${endpoint_addr[sluice-guard]}" &
    g=$!
    run_workload "$w" "${endpoint_addr[sluice-noguard]}" >"$plog" 2>&1 &
    pair=$!
    wait "$g"
  fi
}

# Records that WORKLOAD via ENDPOINT failed in ROUND, with the end of its LOG.
run_failed() {
  failures+=("$1 via $2, round $3")
  log "round $3/$BENCH_ROUNDS $1 via $2 FAILED:"
  tail -n 5 "$4" >&2
  { echo "$1 via $2, round $3:"; tail -n 5 "$4" | sed 's/^/    /'; } >>"$work/failed.txt"
}

# One run of WORKLOAD via ENDPOINT in ROUND (beside its pair when $pair is set).
run_endpoint() {
  if [[ -n $pair ]]; then run_concurrent "$1" "$3"; else run_workload "$1" "${endpoint_addr[$2]}"; fi
}

# "QPS P95 ERRORS" from sysbench-format output on stdin (ERRORS: ignored errors plus
# reconnects, which sysbench counts but does not fail on; connect_per_query's errors).
parse() {
  awk '$1 == "queries:" { q = $3; sub(/^\(/, "", q) }
       $1 == "95th" && $2 == "percentile:" { p = $3 }
       $1 == "ignored" && $2 == "errors:" { e += $3 }
       $1 == "reconnects:" { e += $2 }
       $1 == "connections+queries:" { e += $4 }
       END { if (q == "" || p == "") exit 1; print q, p, e + 0 }'
}

# Column COL (4 = QPS, 5 = p95, 6 = errors, 7 = share of queries on replicas) of the
# recorded runs of WORKLOAD via ENDPOINT.
column() {
  awk -F'\t' -v w="$1" -v e="$2" -v c="$3" '$1 == w && $2 == e {print $c}' "$work/results.tsv" 2>/dev/null
}

sluice_version() {
  if [[ ${SKIP_SLUICE:-0} == 1 ]]; then echo skipped; return; fi
  echo "at commit $(git rev-parse --short HEAD 2>/dev/null || echo none)$(git diff --quiet HEAD 2>/dev/null || echo ' (dirty)')"
}

sum() { awk '{ s += $1 } END { print s + 0 }'; }

# "TOTAL ON_REPLICAS": sluice_queries_total from the admin endpoint ADDR, summed over
# all labels, and over the backends that are not the primary.
query_counts() {
  curl -fsS --max-time 5 "http://$1/metrics" | awk '
    /^sluice_queries_total\{/ { t += $NF; if ($0 !~ /backend="primary"/) r += $NF }
    END { printf "%d %d\n", t, r }'
}

# "COM_SELECT HANDLER_READ_KEY" summed over every backend (the database's own count
# of the statements it ran and the index lookups it did).
db_counters() {
  local b
  for b in "$primary" "${replicas[@]}"; do
    mariadb --no-defaults -h"${b%:*}" -P"${b##*:}" -uapp -papp -N \
      -e "SHOW GLOBAL STATUS WHERE Variable_name IN ('Com_select', 'Handler_read_key')"
  done | awk '$1 == "Com_select" { s += $2 } $1 == "Handler_read_key" { k += $2 } END { print s + 0, k + 0 }'
}

# "ANSWERED MAYBE_PRESENT": the guard's counters from the admin endpoint ADDR.
guard_counts() {
  curl -fsS --max-time 5 "http://$1/metrics" | awk '
    /^sluice_guard_answered_total\{/ { a += $NF }
    /^sluice_guard_passed_total\{/ && /reason="maybe_present"/ { m += $NF }
    END { printf "%d %d\n", a, m }'
}

# "DB PROXY": CPU clock ticks (utime + stime) of the primary mariadbd and of PROXY_PID
# (0 when unknown or none).
server_ticks() {
  local t
  for p in "$primary_pid" "$1"; do
    t=0
    [[ -z $p || ! -r /proc/$p/stat ]] || t=$(awk '{print $14 + $15}' "/proc/$p/stat")
    printf '%s ' "$t"
  done
  echo
}

# The [guard] section for the sysbench tables.
guard_config() {
  local t
  printf '\n[guard]\nserver_id = 5151\nrebuild_interval_ms = 0\n'
  # BENCH_GUARD_SKIP_AFTER=0: check every lookup against the filter.
  [[ -z ${BENCH_GUARD_SKIP_AFTER:-} ]] || printf 'skip_after_found = %s\n' "$BENCH_GUARD_SKIP_AFTER"
  for ((t = 1; t <= tables; t++)); do
    printf '\n[[guard.tables]]\ntable = "sluice_test.sbtest%d"\nkey = "id"\nfalse_positive_rate = %s\n' \
      "$t" "${BENCH_GUARD_FPR:-0.01}"
  done
}

# Sluice's config: MODE is primary_only or split. The split suite gives both modes the
# same backends (primary and replicas); the foundation suite only the primary.
sluice_config() {
  # Backend TLS off unless asked: HAProxy relays plain bytes, and the topology's
  # servers offer TLS, which Sluice's default ("preferred") would take.
  local listen=$1 admin=$2 mode=$3 ryw=${4:-off} guard=${5:-} backend_tls=${6:-disabled} r i=0 backends=()
  [[ $BENCH_SUITE == foundation || $BENCH_SUITE == tls ]] || backends=("${replicas[@]}")
  local tls_line="tls = \"$backend_tls\""
  cat <<EOF
[server]
listen = "$listen"
admin_listen = "$admin"
max_client_connections = 10000
worker_threads = ${BENCH_WORKER_THREADS:-0}

[[users]]
name = "app"
password = "app"

[pool]
max_connections_per_backend = 50
acquire_timeout_ms = 2000

[routing]
mode = "$mode"
read_your_writes = "$ryw"

[[backends]]
name = "primary"
address = "$primary"
role = "primary"
$tls_line
EOF
  if [[ $BENCH_SUITE == tls ]]; then
    printf '\n[server.tls]\ncert_file = "%s"\nkey_file = "%s"\n' "$work/tls/server.pem" "$work/tls/server.key"
  fi
  for r in "${backends[@]}"; do
    i=$((i + 1))
    printf '\n[[backends]]\nname = "replica%d"\naddress = "%s"\nrole = "replica"\n%s\n' "$i" "$r" "$tls_line"
  done
  [[ -z $guard ]] || guard_config
}

# Start a Sluice named NAME (for files) on LISTEN / ADMIN in routing MODE.
start_sluice() {
  local name=$1 listen=$2 admin=$3 mode=$4 ryw=${5:-off} guard=${6:-} backend_tls=${7:-}
  port_free "$listen" && port_free "$admin" || exit 1
  sluice_config "$listen" "$admin" "$mode" "$ryw" "$guard" "$backend_tls" >"$work/$name.toml"
  "$SLUICE_BIN" --config "$work/$name.toml" >"$work/$name.log" 2>&1 &
  pids+=($!)
  endpoint_pid[$name]=$!
  pin_server "$!"
  wait_port "$listen" "$!" || { tail -n 30 "$work/$name.log" >&2; log "$name did not start"; exit 1; }
}

# Wait until every replica has applied what the primary has written so far; logs
# how long that took when it was noticeable.
sync_replicas() {
  ((${#replicas[@]})) || return 0
  local pos r t0=$SECONDS res
  pos=$(mariadb --no-defaults -h"${primary%:*}" -P"${primary##*:}" -uapp -papp -N -e 'SELECT @@gtid_binlog_pos')
  for r in "${replicas[@]}"; do
    res=$(mariadb --no-defaults -h"${r%:*}" -P"${r##*:}" -uapp -papp -N \
      -e "SELECT MASTER_GTID_WAIT('$pos', 300)") || res=error
    [[ $res == 0 ]] || { log "replica $r did not reach $pos within 300 s ($res)"; return 1; }
  done
  ((SECONDS - t0 < 2)) || log "replicas caught up in $((SECONDS - t0)) s"
}

median() {
  sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) exit 1
    print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

if [[ ${SKIP_SLUICE:-0} != 1 && ! -x $SLUICE_BIN ]]; then
  log "no sluice binary at $SLUICE_BIN (cargo build --profile dist --bin sluice, or SKIP_SLUICE=1)"
  exit 1
fi
scripts/install-deps.sh >&2

# --- the database
replicas=()
if [[ -n ${SLUICE_BENCH_PRIMARY:-} ]]; then
  primary=$SLUICE_BENCH_PRIMARY
  # Space- or comma-separated; none is fine for the foundation suite.
  read -ra replicas <<<"$(tr ',' ' ' <<<"${SLUICE_BENCH_REPLICAS:-}")"
else
  topology_start "$work/db" >&2
  for node in primary replica1 replica2; do pin_server "$(_topo_pid "$work/db" "$node")"; done
  primary=127.0.0.1:$SLUICE_PORT_BASE
  replicas=("127.0.0.1:$((SLUICE_PORT_BASE + 1))" "127.0.0.1:$((SLUICE_PORT_BASE + 2))")
fi
if [[ $BENCH_SUITE == tls ]]; then
  # One CA for everything: the topology's (its servers' certificates and the client
  # certificate they accept), or a new one for a primary given by SLUICE_BENCH_PRIMARY
  # (whose own CA then needs adding to $work/tls/ca.pem for PDO's verification).
  mkdir -p "$work/tls"
  if [[ -s $work/db/tls/ca.pem ]]; then cp "$work/db/tls/"*.pem "$work/db/tls/"*.key "$work/tls/"; fi
  bash scripts/test-ca.sh "$work/tls" >&2
  # sysbench opens these names in its working directory.
  cp "$work/tls/client.key" "$work/tls/client-key.pem"
  cp "$work/tls/client.pem" "$work/tls/client-cert.pem"
  cp "$work/tls/ca.pem" "$work/tls/cacert.pem"
  if [[ ${BENCH_TLS_KEY:-rsa} == ec ]]; then
    # An ECDSA P-256 server certificate from the same CA, for Sluice and (swapped in,
    # then FLUSH SSL) for the topology's primary.
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=sluice-bench-ec" \
      -keyout "$work/tls/server.key" -out "$work/tls/server.csr" 2>/dev/null
    printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n' \
      >"$work/tls/server.ext"
    openssl x509 -req -in "$work/tls/server.csr" -CA "$work/tls/ca.pem" -CAkey "$work/tls/ca.key" \
      -CAcreateserial -CAserial "$work/tls/ca.srl" -days 30 -sha256 -extfile "$work/tls/server.ext" \
      -out "$work/tls/server.pem" 2>/dev/null
    [[ -d $work/db/tls ]] || { log "BENCH_TLS_KEY=ec needs the bench's own topology"; exit 1; }
    cp "$work/tls/server.pem" "$work/db/tls/server.pem"
    cp "$work/tls/server.key" "$work/db/tls/server.key"
    mariadb --no-defaults -uroot -h"${primary%:*}" -P"${primary##*:}" -e 'FLUSH SSL'
  fi
fi
if [[ $BENCH_SUITE != foundation && $BENCH_SUITE != tls && ${#replicas[@]} == 0 ]]; then
  log "the split suite needs replicas: set SLUICE_BENCH_REPLICAS with SLUICE_BENCH_PRIMARY"
  exit 1
fi
log "preparing $tables x $table_size rows on $primary"
sb "$primary" oltp_read_only cleanup >/dev/null
sb "$primary" oltp_read_only --threads=$tables prepare >"$work/prepare.log" ||
  { cat "$work/prepare.log" >&2; exit 1; }
sync_replicas

# --- the proxies
port_free "$haproxy_addr" || exit 1
sed -e "s/@LISTEN@/$haproxy_addr/" -e "s/@PRIMARY@/$primary/" bench/haproxy.cfg >"$work/haproxy.cfg"
haproxy -db -f "$work/haproxy.cfg" >"$work/haproxy.log" 2>&1 &
pids+=($!)
haproxy_pid=$!
pin_server "$haproxy_pid"
wait_port "$haproxy_addr" "$!" || { cat "$work/haproxy.log" >&2; log "haproxy did not start"; exit 1; }
declare -A endpoint_addr=([direct]=$primary [haproxy]=$haproxy_addr [sluice]=$sluice_addr
  [sluice-primary_only]=$sluice_addr [sluice-split]=$split_addr
  [sluice-guard]=$sluice_addr [sluice-noguard]=$split_addr [sluice-plainbackend]=$split_addr)
declare -A endpoint_pid=([haproxy]=$haproxy_pid)
primary_pid=""
[[ -z ${SLUICE_BENCH_PRIMARY:-} ]] && primary_pid=$(_topo_pid "$work/db" primary || true)
declare -A endpoint_admin=([sluice]=$sluice_admin [sluice-primary_only]=$sluice_admin
  [sluice-split]=$split_admin [sluice-guard]=$sluice_admin [sluice-noguard]=$split_admin
  [sluice-plainbackend]=$split_admin)
ryw_modes=(off gtid global universal)
for i in "${!ryw_modes[@]}"; do
  endpoint_addr[sluice-${ryw_modes[$i]}]=127.0.0.1:$((6036 + i))
  endpoint_admin[sluice-${ryw_modes[$i]}]=127.0.0.1:$((9036 + i))
done

if [[ ${SKIP_SLUICE:-0} != 1 ]]; then
  case $BENCH_SUITE in
    foundation) start_sluice sluice "$sluice_addr" "$sluice_admin" primary_only ;;
    tls)
      start_sluice sluice "$sluice_addr" "$sluice_admin" primary_only off "" preferred
      start_sluice sluice-plainbackend "$split_addr" "$split_admin" primary_only off "" disabled
      ;;
    split)
      start_sluice sluice-primary_only "$sluice_addr" "$sluice_admin" primary_only
      start_sluice sluice-split "$split_addr" "$split_admin" split
      ;;
    guard)
      # BENCH_GUARD_AA=1: both without the guard (an A/A run).
      with_guard=$([[ ${BENCH_GUARD_AA:-0} == 1 ]] || echo guard)
      if [[ ${BENCH_GUARD_SWAP:-0} == 1 ]]; then
        endpoint_addr[sluice-guard]=$split_addr endpoint_admin[sluice-guard]=$split_admin
        endpoint_addr[sluice-noguard]=$sluice_addr endpoint_admin[sluice-noguard]=$sluice_admin
        start_sluice sluice-noguard "$sluice_addr" "$sluice_admin" split off
        start_sluice sluice-guard "$split_addr" "$split_admin" split off "$with_guard"
      else
        start_sluice sluice-guard "$sluice_addr" "$sluice_admin" split off "$with_guard"
        start_sluice sluice-noguard "$split_addr" "$split_admin" split off
      fi
      guard_admin=${endpoint_admin[sluice-guard]}
      # The filters are built from a scan and the binlog: wait until every table is.
      for ((i = 0; i < 300; i++)); do
        [[ ${BENCH_GUARD_AA:-0} != 1 ]] || { ready=$tables; break; }
        ready=$(curl -fsS --max-time 5 "http://$guard_admin/status" | grep -o '"state":"ready"' | wc -l || true)
        ((ready >= tables)) && break
        sleep 0.1
      done
      ((ready >= tables)) || { log "the guard did not get ready"; curl -fsS "http://$guard_admin/status" >&2; exit 1; }
      ;;
    ryw)
      for m in "${ryw_modes[@]}"; do
        start_sluice "sluice-$m" "${endpoint_addr[sluice-$m]}" "${endpoint_admin[sluice-$m]}" split "$m"
      done
      ;;
  esac
fi

# --- the runs: interleaved so that drift (thermal, noisy neighbours) hits all endpoints alike
failures=()
for ((round = 1; round <= BENCH_ROUNDS; round++)); do
  for w in "${workloads[@]}"; do
    for e in "${endpoints[@]}"; do
      pair=""
      if [[ ${BENCH_CONCURRENT:-0} == 1 && $BENCH_SUITE == guard ]]; then
        # sluice-noguard runs beside sluice-guard (run_concurrent).
        [[ $e != sluice-noguard ]] || continue
        [[ $e != sluice-guard ]] || pair=started
      fi
      logf="$work/$w-$e-$round.log"
      admin=${endpoint_admin[$e]:-}
      before=""
      [[ -z $admin || $BENCH_SUITE == foundation || $BENCH_SUITE == guard || $BENCH_SUITE == tls ]] || before=$(query_counts "$admin" || true)
      db_before=""
      [[ $BENCH_SUITE != guard || -n $pair ]] || db_before=$(db_counters)
      guard_before=""
      [[ $BENCH_SUITE != guard || $e != sluice-guard ]] || guard_before=$(guard_counts "$admin")
      cpu_before=""
      [[ $BENCH_SUITE != tls ]] || cpu_before=$(server_ticks "${endpoint_pid[$e]:-}")
      if run_endpoint "$w" "$e" "$round" >"$logf" 2>&1 && res=$(parse <"$logf"); then
        read -r qps p95 errors <<<"$res"
        share=""
        if [[ -n $before ]] && after=$(query_counts "$admin"); then
          share=$(awk -v b="$before" -v a="$after" 'BEGIN { split(b, x, " "); split(a, y, " ")
            t = y[1] - x[1]; if (t > 0) printf "%.1f", 100 * (y[2] - x[2]) / t }')
        fi
        db="" fp=""
        if [[ -n $db_before ]]; then
          # Backend statements and index lookups per 1000 client queries.
          db=$(awk -v b="$db_before" -v a="$(db_counters)" -v q="$qps" -v t="$BENCH_TIME" 'BEGIN {
            split(b, x, " "); split(a, y, " "); n = q * t
            if (n > 0) printf "%.1f/%.1f", 1000 * (y[1] - x[1]) / n, 1000 * (y[2] - x[2]) / n }')
        fi
        if [[ -n $cpu_before ]]; then
          # Server-side CPU (ms) per query: mariadbd's, and the proxy's.
          db=$(awk -v b="$cpu_before" -v a="$(server_ticks "${endpoint_pid[$e]:-}")" -v q="$qps" \
            -v t="$BENCH_TIME" -v hz="$(getconf CLK_TCK)" 'BEGIN {
            split(b, x, " "); split(a, y, " "); n = q * t
            if (n > 0) printf "%.3f/%.3f", 1000 * (y[1] - x[1]) / hz / n, 1000 * (y[2] - x[2]) / hz / n }')
        fi
        if [[ -n $guard_before && $w == absent_* ]]; then
          fp=$(awk -v b="$guard_before" -v a="$(guard_counts "$admin")" 'BEGIN {
            split(b, x, " "); split(a, y, " "); n = (y[1] - x[1]) + (y[2] - x[2])
            if (n > 0) printf "%.4f", (y[2] - x[2]) / n }')
        fi
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$w" "$e" "$round" "$qps" "$p95" "$errors" "$share" \
          "$db" "$fp" >>"$work/results.tsv"
        log "round $round/$BENCH_ROUNDS $w via $e: $qps qps, p95 $p95 ms, $errors errors${share:+, $share% on replicas}"
      else
        run_failed "$w" "$e" "$round" "$logf"
      fi
      if [[ -n $pair ]]; then
        plog="$work/$w-sluice-noguard-$round.log"
        if wait "$pair" && res=$(parse <"$plog"); then
          read -r qps p95 errors <<<"$res"
          printf '%s\t%s\t%s\t%s\t%s\t%s\t\t\t\n' "$w" sluice-noguard "$round" "$qps" "$p95" "$errors" >>"$work/results.tsv"
          log "round $round/$BENCH_ROUNDS $w via sluice-noguard (at the same time): $qps qps, p95 $p95 ms, $errors errors"
        else
          run_failed "$w" sluice-noguard "$round" "$plog"
        fi
        grep -E 'FATAL|ALERT|WARNING' "$plog" | sed "s/^/$w via sluice-noguard: /" >>"$work/messages.txt" || true
      fi
      # Messages the client printed, even on success.
      grep -E 'FATAL|ALERT|WARNING|connect_per_query:' "$logf" | sed "s/^/$w via $e: /" >>"$work/messages.txt" || true
      if [[ $BENCH_SUITE != foundation && $BENCH_SUITE != tls ]]; then sync_replicas || failures+=("replicas lagged after $w via $e, round $round"); fi
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
    "$(haproxy -v | awk 'NR == 1 {print $1, $3}'), sluice $(sluice_version)" \
    "(server.worker_threads = ${BENCH_WORKER_THREADS:-0}), $(nproc) cores."
  echo
  if [[ $BENCH_PIN == 1 ]]; then
    echo "Pinned (BENCH_PIN=1): the clients run on CPU $client_cpus, the databases and proxies on" \
      "CPU $server_cpus, so each endpoint's QPS is what its server side does with the same cores."
    echo
  fi
  if [[ $BENCH_SUITE == split ]]; then
    echo "Sluice in both modes has the primary and ${#replicas[@]} replica(s) as backends," \
      "read_your_writes = \"off\"; haproxy and direct go to the primary only." \
      "*_notrx runs use sysbench --skip_trx=on (autocommit; otherwise every query is inside" \
      "BEGIN ... COMMIT, which Sluice runs on the primary). \"on replicas\" is the share of" \
      "Sluice's queries that ran on a replica (median, from sluice_queries_total)." \
      "\"errors\" sums sysbench's ignored errors and reconnects over the rounds."
    echo
    echo "| workload | endpoint | QPS (median) | p95 ms (median) | ratio to direct (QPS) | split / primary_only (QPS) | on replicas | errors |"
    echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"
  elif [[ $BENCH_SUITE == guard ]]; then
    if [[ ${BENCH_CONCURRENT:-0} == 1 ]]; then
      echo "Concurrent (BENCH_CONCURRENT=1): in every round sluice-guard and sluice-noguard ran at the" \
        "same time, each with its own sysbench of $BENCH_THREADS threads (which one started first" \
        "alternating by round), so both saw the same machine; \"per round\" is the median of each" \
        "round's guard / no guard ratio, and every round's ratio is listed below the table. QPS are" \
        "per instance while sharing the machine, so they are not comparable to a run alone or to direct."
      [[ $BENCH_PIN != 1 ]] || echo "Both clients ran on CPU $client_cpus."
      echo
    fi
    if [[ ${BENCH_GUARD_SWAP:-0} == 1 ]]; then
      echo "Swapped (BENCH_GUARD_SWAP=1): sluice-noguard listened on $sluice_addr and started first," \
        "sluice-guard on $split_addr."
      echo
    fi
    if [[ ${BENCH_GUARD_AA:-0} == 1 ]]; then
      echo "A/A (BENCH_GUARD_AA=1): sluice-guard ran WITHOUT [guard], identical to sluice-noguard; the" \
        "ratio shows how far apart two identical instances measure."
      echo
    fi
    if [[ ${BENCH_GUARD_AA:-0} == 1 ]]; then
      guarded="neither instance guards anything"
    else
      guarded="sluice-guard guards sbtest1..$tables on id (false_positive_rate ${BENCH_GUARD_FPR:-0.01}), sluice-noguard is the same without [guard]"
    fi
    echo "Sluice runs in split mode with the primary and ${#replicas[@]} replica(s), read_your_writes = \"off\";" \
      "$guarded; haproxy and direct (when run) go to the primary only. absent_* look up ids" \
      "above the table size (bench/absent_keys.lua); point_select_* are sysbench's oltp_point_select." \
      "\"db selects / key reads\" is Com_select / Handler_read_key summed over every backend per 1000" \
      "client queries during the run (the monitor's own probes included); \"fp rate\" is the share of" \
      "absent-key lookups the filter passed as maybe present."
    echo
    echo "| workload | endpoint | QPS (median) | p95 ms (median) | ratio to direct (QPS) | guard / no guard (QPS) | db selects / key reads per 1000 | fp rate | errors |"
    echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
  elif [[ $BENCH_SUITE == tls ]]; then
    echo "Every client connection uses TLS: sysbench --mysql-ssl=on, PDO with the certificate" \
      "verified (connect-per-query: connect + TLS handshake + login + one point select + close)." \
      "direct and haproxy (TCP) reach MariaDB's own TLS; Sluice (primary_only) terminates the" \
      "client's TLS and reuses pooled backend connections: sluice's are TLS (tls = \"preferred\")," \
      "sluice-plainbackend's plain (tls = \"disabled\"). Server certificate: ${BENCH_TLS_KEY:-rsa}" \
      "(rsa = RSA 2048, ec = ECDSA P-256). \"server CPU\" is milliseconds of CPU per query (per" \
      "connection for connect_per_query) of the primary mariadbd / of the proxy, median; the" \
      "clients' own CPU (PHP's TLS handshakes, sysbench) is the same for every endpoint."
    echo
    echo "| workload | endpoint | QPS (median) | p95 ms (median) | ratio to direct (QPS) | server CPU ms: db / proxy |"
    echo "| --- | --- | ---: | ---: | ---: | ---: |"
  elif [[ $BENCH_SUITE == ryw ]]; then
    echo "Sluice runs in split mode with the primary and ${#replicas[@]} replica(s), one instance per" \
      "read_your_writes mode; haproxy and direct go to the primary only. read_write_ps_notrx is" \
      "sysbench oltp_read_write with --skip_trx=on (autocommit, so reads may go to replicas);" \
      "write_then_read updates a row and reads it back on the same connection." \
      "\"on replicas\" is the share of Sluice's queries that ran on a replica."
    echo
    echo "| workload | endpoint | QPS (median) | p95 ms (median) | ratio to direct (QPS) | ratio to off (QPS) | on replicas | errors |"
    echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"
  else
    echo "| workload | endpoint | QPS (median) | p95 ms (median) | ratio to direct (QPS) |"
    echo "| --- | --- | ---: | ---: | ---: |"
  fi
  ratio() {
    if [[ -n $1 && -n $2 ]]; then awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; else echo n/a; fi
  }
  for w in "${workloads[@]}"; do
    direct=$(column "$w" direct 4 | median || true)
    primary_only=$(column "$w" sluice-primary_only 4 | median || true)
    off=$(column "$w" sluice-off 4 | median || true)
    for e in "${endpoints[@]}"; do
      qps=$(column "$w" "$e" 4 | median || true)
      p95=$(column "$w" "$e" 5 | median || true)
      printf '| %s | %s | %s | %s | %s |' "$w" "$e" \
        "$([[ -n $qps ]] && printf '%.0f' "$qps" || echo failed)" \
        "$([[ -n $p95 ]] && printf '%.2f' "$p95" || echo failed)" "$(ratio "$qps" "$direct")"
      if [[ $BENCH_SUITE == guard ]]; then
        vs=""
        if [[ $e == sluice-guard ]]; then
          # Also the median of each round's own ratio: the two runs of a round are
          # back to back (or at the same time), so the machine's slow drifts cancel out.
          paired=$(awk -F'\t' -v w="$w" '$1 == w && $2 == "sluice-guard" { g[$3] = $4 }
            $1 == w && $2 == "sluice-noguard" { n[$3] = $4 }
            END { for (r in g) if (n[r] > 0) printf "%.4f\n", g[r] / n[r] }' "$work/results.tsv" | median || true)
          vs="$(ratio "$qps" "$(column "$w" sluice-noguard 4 | median || true)")${paired:+ (per round $(printf '%.3f' "$paired"))}"
        fi
        printf ' %s | %s | %s | %s |' "$vs" "$(column "$w" "$e" 8 | grep . | tail -n 1 || true)" \
          "$(column "$w" "$e" 9 | grep . | median || true)" "$(column "$w" "$e" 6 | sum)"
      elif [[ $BENCH_SUITE == tls ]]; then
        cpu_db=$(column "$w" "$e" 8 | grep . | cut -d/ -f1 | median || true)
        cpu_proxy=$(column "$w" "$e" 8 | grep . | cut -d/ -f2 | median || true)
        printf ' %s |' "${cpu_db:+$cpu_db / $cpu_proxy}"
      elif [[ $BENCH_SUITE != foundation && $BENCH_SUITE != tls ]]; then
        vs=""
        [[ $e != sluice-split ]] || vs=$(ratio "$qps" "$primary_only")
        [[ $BENCH_SUITE != ryw || $e != sluice-* ]] || vs=$(ratio "$qps" "$off")
        share=$(column "$w" "$e" 7 | grep . | median || true)
        printf ' %s | %s | %s |' "$vs" "${share:+$share%}" "$(column "$w" "$e" 6 | sum)"
      fi
      echo
    done
  done
  if [[ $BENCH_SUITE == guard ]] && grep -q sluice-noguard "$work/results.tsv" 2>/dev/null; then
    echo
    echo "Each round's guard / no guard QPS ratio, in round order:"
    echo
    for w in "${workloads[@]}"; do
      printf -- '- %s: %s\n' "$w" "$(awk -F'\t' -v w="$w" '$1 == w && $2 == "sluice-guard" { g[$3] = $4 }
        $1 == w && $2 == "sluice-noguard" { n[$3] = $4 }
        END { for (r = 1; r in g || r in n; r++) if (n[r] > 0 && g[r] > 0) printf "%s%.3f", (c++ ? " " : ""), g[r] / n[r] }' \
        "$work/results.tsv")"
    done
  fi
  if ((${#failures[@]})); then
    echo
    echo "Failed runs (left out of the medians):"
    printf -- '- %s\n' "${failures[@]}"
    [[ ! -s $work/failed.txt ]] || { echo; echo '```'; cat "$work/failed.txt"; echo '```'; }
  fi
  if [[ -s $work/messages.txt ]]; then
    echo
    echo "Messages from the clients (count, first 20 distinct):"
    echo
    echo '```'
    sort "$work/messages.txt" | uniq -c | sort -rn | head -n 20
    echo '```'
  fi
} >"$work/table.md"

cp "$work/table.md" "$out"
cat "$work/table.md"
log "written to $out"
((${#failures[@]} == 0)) || { log "${#failures[@]} run(s) failed"; exit 1; }
