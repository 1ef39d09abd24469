//! HELP text and unit of every metric the pool and the monitor emit, in one
//! list. `sluice_route_fallbacks_total` (also counted here, for
//! `connection_id_not_settable`) is described with the proxy's metrics.

use metrics::{Unit, describe_counter, describe_gauge};

/// Registers the descriptions with the installed recorder (call once, after
/// installing it: descriptions given before are lost).
pub fn describe() {
    // Backend connections and their pools.
    describe_counter!(
        "sluice_backend_connections_opened_total",
        Unit::Count,
        "Connections opened to a backend for its pools, by backend"
    );
    describe_counter!(
        "sluice_backend_connections_closed_total",
        Unit::Count,
        "Pooled backend connections closed (left their pool), by backend"
    );
    describe_counter!(
        "sluice_backend_quit_unsent_total",
        Unit::Count,
        "Backend connections closed without COM_QUIT although Sluice meant to say it (the \
         server logs them as aborted), by reason (half_written: a command was cut off \
         mid-packet; socket_full: the socket or TLS layer did not take it at once)"
    );
    describe_counter!(
        "sluice_pool_keepalive_pings_total",
        Unit::Count,
        "Pings sent on pooled connections idle past the keepalive interval, by backend"
    );
    describe_counter!(
        "sluice_pool_connections_replaced_total",
        Unit::Count,
        "Pooled connections discarded at checkout and replaced, by backend and reason \
         (broken, max_lifetime, closed_by_server, ping_failed)"
    );
    describe_counter!(
        "sluice_statements_reprepared_total",
        Unit::Count,
        "Backend statements closed and prepared again before an execute, by reason \
         (result_charsets: their recorded column definitions were sent under other result \
         charsets than the connection has now; schema: prepared under another default schema, \
         in which the server resolved their table names)"
    );
    describe_counter!(
        "sluice_schema_resets_total",
        Unit::Count,
        "Backend connections whose default schema was unset (COM_CHANGE_USER) for a client \
         connected without one"
    );

    // The monitor's view of each backend.
    describe_gauge!(
        "sluice_backend_up",
        "1 when the monitor's last probe reached the backend, else 0; by backend"
    );
    describe_gauge!(
        "sluice_backend_read_only",
        "The backend's @@read_only as the monitor last read it (1 or 0), by backend"
    );
    describe_gauge!(
        "sluice_backend_writer",
        "1 for the backend that takes writes, else 0; by backend (set on role changes)"
    );
    describe_gauge!(
        "sluice_backend_replication_running",
        "1 while both replication threads (IO and SQL) of a replica run, else 0; by backend"
    );
    describe_gauge!(
        "sluice_backend_replication_lag_seconds",
        Unit::Seconds,
        "Replication lag of a replica, by backend: from the heartbeat table (millisecond \
         precision) or else Seconds_Behind_Master; NaN while unknown or a thread is stopped"
    );
    describe_gauge!(
        "sluice_backend_stale",
        "1 while a replica lags beyond routing.max_replica_lag_ms and gets no reads, else 0; \
         by backend"
    );
    describe_counter!(
        "sluice_backend_role_changes_total",
        Unit::Count,
        "Changes of which backend takes writes, by backend and role (writer, none_writable, \
         conflict)"
    );
    describe_counter!(
        "sluice_monitor_probe_failures_total",
        Unit::Count,
        "Monitor probes that could not reach a backend, by backend"
    );
    describe_counter!(
        "sluice_heartbeat_writes_total",
        Unit::Count,
        "Heartbeat rows written to the primary for lag measurement, by result (ok, error)"
    );
}
