//! Metric names (with units) and their Prometheus HELP texts.

pub const KEYS: &str = "sluice_guard_keys";
pub const FILTER_BYTES: &str = "sluice_guard_filter_bytes";
pub const STATE: &str = "sluice_guard_state";
pub const REBUILDS: &str = "sluice_guard_rebuilds_total";
pub const EVENTS: &str = "sluice_guard_binlog_events_total";
pub const RECONNECTS: &str = "sluice_guard_stream_reconnects_total";
pub const DISABLED: &str = "sluice_guard_tables_disabled_total";
pub const CONNECTED: &str = "sluice_guard_stream_connected";
pub const HEARTBEAT: &str = "sluice_guard_heartbeat_timestamp_seconds";

/// Every state a table can be in (one `sluice_guard_state` series each).
pub const STATES: &[&str] = &[
    "building",
    "catching_up",
    "ready",
    "disabled",
    "refused",
    "memory_limit",
];

/// Registers the descriptions with the installed recorder (the proxy calls
/// it at start, with its own and the pool's).
pub fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge};
    describe_gauge!(
        KEYS,
        Unit::Count,
        "Keys inserted into the guard's live filter, by table"
    );
    describe_gauge!(
        FILTER_BYTES,
        Unit::Bytes,
        "Memory of the guard's live filter (its bit array), by table"
    );
    describe_gauge!(
        STATE,
        "1 for the guard table's current state, else 0; by table and state (building, \
         catching_up, ready, disabled, refused, memory_limit)"
    );
    describe_counter!(
        REBUILDS,
        Unit::Count,
        "Guard filter builds started, by table and reason (initial, interval, ddl, disabled, \
         purged, retry, superseded)"
    );
    describe_counter!(EVENTS, Unit::Count, "Binlog events the guard's stream has read");
    describe_counter!(
        RECONNECTS,
        Unit::Count,
        "Guard binlog stream reconnects, by reason (connect, timeout, end, error, panic, \
         purged, writer_changed)"
    );
    describe_counter!(
        DISABLED,
        Unit::Count,
        "Guard tables disabled (then rebuilt), by reason (statement_write, unparsed_event, \
         missing_key, layout)"
    );
    describe_gauge!(
        CONNECTED,
        "1 while the guard's binlog stream is connected, else 0"
    );
    describe_gauge!(
        HEARTBEAT,
        Unit::Seconds,
        "Timestamp (seconds since the Unix epoch) of the newest heartbeat row the guard's \
         stream saw in the binlog"
    );
}
