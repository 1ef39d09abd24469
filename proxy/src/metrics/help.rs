//! HELP text and unit of every metric the proxy emits, in one list, and the
//! call that registers the pool's and the guard's lists too. A metric added
//! anywhere gets its line here (or in pool/src/metric.rs, guard/src/metric.rs):
//! tests/tests/metrics.rs fails on a family without HELP.

use super::latency::Family;
use super::striped::CounterFamily;
use metrics::{Unit, describe_counter, describe_gauge};

/// `sluice_query_duration_seconds` (rendered by [`super::latency`]).
pub static QUERY_DURATION: Family = Family {
    name: "sluice_query_duration_seconds",
    help: "Time from a statement's arrival to the end of its answer, by route",
    label: "route",
};

/// `sluice_pool_wait_seconds` (rendered by [`super::latency`]).
pub static POOL_WAIT: Family = Family {
    name: "sluice_pool_wait_seconds",
    help: "Time a statement waited for a backend connection from the pool, by backend",
    label: "backend",
};

/// `sluice_guard_answered_total` (rendered by [`super::striped`]).
pub static GUARD_ANSWERED: CounterFamily = CounterFamily {
    name: "sluice_guard_answered_total",
    help: "Lookups of a [guard] table answered by the empty-key guard without the database, by table",
};

/// `sluice_queries_total` (rendered by [`super::striped`]: bumped by every
/// statement on every worker thread).
pub static QUERIES: CounterFamily = CounterFamily {
    name: "sluice_queries_total",
    help: "Statements and commands run, by backend (guard for the guard's answers), route \
           (primary, replica, held, guard) and kind (statement kind or command)",
};

/// `sluice_classification_cache_total` (rendered by [`super::striped`]).
pub static CLASSIFICATION: CounterFamily = CounterFamily {
    name: "sluice_classification_cache_total",
    help: "Statement classifications, by result of the classification cache lookup (hit, miss)",
};

/// `sluice_unparsed_statements_total` (rendered by [`super::striped`]).
pub static UNPARSED: CounterFamily = CounterFamily {
    name: "sluice_unparsed_statements_total",
    help: "Statements the SQL parser could not parse (they run on the primary)",
};

/// `sluice_guard_passed_total` (rendered by [`super::striped`]).
pub static GUARD_PASSED: CounterFamily = CounterFamily {
    name: "sluice_guard_passed_total",
    help: "Lookups of a [guard] table passed to the database, by table and reason (maybe_present: \
           the filter could not rule the key out; others: the guard could not answer)",
};

/// Registers every description with the installed recorder (descriptions
/// given before the recorder is installed are lost).
pub fn describe() {
    clients();
    statements();
    routing();
    pools();
    operations();
    guard();
    admin();
    sluice_pool::metric::describe();
    sluice_guard::metric::describe();
}

fn clients() {
    describe_gauge!(
        "sluice_client_connections",
        Unit::Count,
        "Client connections open now"
    );
    describe_gauge!(
        "sluice_worker_sessions",
        Unit::Count,
        "Client sessions on each worker thread (server.worker_threads), by worker: a client \
         stays on its worker, so one far above the others is a core doing the work of two"
    );
    describe_counter!(
        "sluice_client_connections_accepted_total",
        Unit::Count,
        "Client connections accepted by the listener"
    );
    describe_counter!(
        "sluice_client_connections_rejected_total",
        Unit::Count,
        "Client connections refused at connect or login, by cause (max_client_connections, \
         access_denied, tls_required, worker_handoff, ...)"
    );
    describe_counter!(
        "sluice_client_connections_closed_total",
        Unit::Count,
        "Client connections Sluice closed, by cause (idle_timeout, shutdown, killed, \
         handshake_timeout, read_timeout, write_timeout, release)"
    );
    describe_counter!(
        "sluice_client_tls_handshakes_total",
        Unit::Count,
        "TLS upgrades of client connections, by result (ok, error)"
    );
    describe_counter!(
        "sluice_connect_attrs_not_forwarded_total",
        Unit::Count,
        "Clients whose connection attribute set found no pool of its own (16 sets at most), \
         so their attributes were not forwarded"
    );
}

fn statements() {
    describe_counter!(
        "sluice_digests_evicted_total",
        Unit::Count,
        "Query digest entries folded into the (other) row because digests.max_entries \
         fingerprints were already kept"
    );
    describe_counter!(
        "sluice_errors_total",
        Unit::Count,
        "Errors Sluice sent to clients or met on their behalf, by cause (access_denied, \
         pool_exhausted, backend_lost, metadata_cache, query_timeout, kill_refused, ...)"
    );
    describe_counter!(
        "sluice_session_pins_total",
        Unit::Count,
        "Client sessions pinned to their backend connection, by reason (temporary_table, \
         lock_tables, get_lock, sql_prepare, user_variable, handler, prepared_statement, \
         cursor, untracked_state)"
    );
    describe_counter!(
        "sluice_session_unpins_total",
        Unit::Count,
        "Pinned client sessions that share connections again, by reason (get_lock: every \
         user lock released, nothing else pinned them)"
    );
    describe_counter!(
        "sluice_next_transaction_holds_total",
        Unit::Count,
        "Clients that kept their backend connection after a one-shot SET TRANSACTION (the \
         next transaction's characteristics) until a later transaction ended or they left"
    );
    describe_counter!(
        "sluice_state_read_backs_total",
        Unit::Count,
        "Session state read back from the server after a statement, by what \
         (user_variables, user_variables_unavailable, system_variables, last_gtid, last_insert_id)"
    );
    describe_counter!(
        "sluice_diagnostics_captured_total",
        Unit::Count,
        "Statements whose warnings or error were captured for a later SHOW WARNINGS"
    );
    describe_counter!(
        "sluice_kills_total",
        Unit::Count,
        "KILL statements Sluice carried out, by kind (query, connection)"
    );
    describe_counter!(
        "sluice_retries_total",
        Unit::Count,
        "Statements retried on another backend, by reason (read_backend_lost)"
    );
}

fn routing() {
    describe_counter!(
        "sluice_route_fallbacks_total",
        Unit::Count,
        "Reads (or session setups) that could not go where they would have, by reason \
         (replica_unreachable, no_replica, replicas_unreachable, replicas_lagging, \
         replicas_behind_session, primary_position_unknown, connection_id_not_settable)"
    );
    describe_counter!(
        "sluice_reads_skipped_for_lag_total",
        Unit::Count,
        "Reads that passed a replica over because it lagged, by backend"
    );
    describe_counter!(
        "sluice_read_your_writes_total",
        Unit::Count,
        "Reads after a write of the session, by outcome (replica, waited, primary, \
         write_without_gtid)"
    );
    describe_counter!(
        "sluice_primary_position_queries_total",
        Unit::Count,
        "@@gtid_binlog_pos queries to the primary for universal read-your-writes"
    );
    describe_counter!(
        "sluice_write_waits_total",
        Unit::Count,
        "Writes that waited for a writable primary"
    );
}

fn pools() {
    describe_gauge!(
        "sluice_pool_connections",
        Unit::Count,
        "Pooled backend connections, by backend and state (idle, active), summed over the \
         backend's pools"
    );
    describe_gauge!(
        "sluice_pool_waiting",
        Unit::Count,
        "Clients waiting for a backend connection, by backend"
    );
    describe_gauge!(
        "sluice_pool_concurrency_limit",
        Unit::Count,
        "Backend connections allowed to run statements at once, by backend (summed over its \
         pools): pool.max_connections_per_backend, or with pool.adaptive_limit the limit \
         found from latency"
    );
}

fn operations() {
    describe_gauge!(
        "sluice_build_info",
        "Always 1; the running Sluice's version in the version label"
    );
    describe_counter!(
        "sluice_config_reloads_total",
        Unit::Count,
        "Config reloads (file change or SIGHUP), by result (ok, error)"
    );
    describe_counter!(
        "sluice_config_restart_required_total",
        Unit::Count,
        "Reloads that changed a setting only a restart applies, by key"
    );
    describe_gauge!(
        "sluice_config_generation",
        Unit::Count,
        "Config generation in use: 1 at start, plus 1 per applied reload (set from the first reload on)"
    );
}

fn guard() {
    describe_counter!(
        "sluice_guard_false_positives_total",
        Unit::Count,
        "Lookups passed as maybe present for which the server returned no row (Bloom false \
         positives and keys deleted since the filter was built), by table"
    );
    describe_gauge!(
        "sluice_guard_lag_seconds",
        Unit::Seconds,
        "How far the empty-key guard's binlog feed is behind the primary, from the heartbeat \
         rows it sees (NaN when unknown)"
    );
}

fn admin() {
    describe_gauge!(
        "sluice_ready",
        "1 when GET /readyz answers 200: the client listener accepts, every backend has been \
         probed once, and Sluice is not draining for shutdown"
    );
    describe_counter!(
        "sluice_admin_requests_refused_total",
        Unit::Count,
        "Admin endpoint requests refused, by reason (not_found, method_not_allowed, \
         unauthorized: missing or wrong bearer token, bad_body, bad_query)"
    );
    describe_counter!(
        "sluice_systemd_notify_failures_total",
        Unit::Count,
        "sd_notify messages (READY, STOPPING, RELOADING, WATCHDOG) that could not be sent to \
         NOTIFY_SOCKET"
    );
}
