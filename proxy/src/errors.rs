//! The ERR packets Sluice sends itself, each with a code and text that say
//! what happened and what to do. Where MySQL has a code for the situation it
//! is used, so drivers react as they would to the server.

use sluice_pool::AcquireError;
use sluice_protocol::packets::err;

/// Sluice's own code for "no backend connection free in time".
pub const POOL_EXHAUSTED: u16 = 9001;
/// No replica is fresh enough and `routing.on_no_replica = "error"`.
pub const NO_REPLICA: u16 = 9002;
/// No backend is writable.
pub const NO_WRITABLE_PRIMARY: u16 = 9003;
/// More than one backend is writable: writes refused.
pub const MULTIPLE_WRITABLE: u16 = 9004;

pub fn access_denied(user: &str, host: &str, used_password: bool) -> Vec<u8> {
    let using = if used_password { "YES" } else { "NO" };
    err(
        1045,
        b"28000",
        &format!("Access denied for user '{user}'@'{host}' (using password: {using})"),
    )
}

pub fn too_many_connections(max: usize) -> Vec<u8> {
    err(
        1040,
        b"08004",
        &format!("Too many connections (sluice: server.max_client_connections = {max} reached)"),
    )
}

pub fn packet_too_large(limit: usize) -> Vec<u8> {
    err(
        1153,
        b"08S01",
        &format!(
            "Got a packet bigger than 'max_allowed_packet' bytes (sluice: server.max_packet_bytes = {limit})"
        ),
    )
}

pub fn packets_out_of_order() -> Vec<u8> {
    err(1156, b"08S01", "Got packets out of order")
}

pub fn malformed_packet(what: &str) -> Vec<u8> {
    err(
        1835,
        b"HY000",
        &format!("Malformed communication packet (sluice: {what})"),
    )
}

pub fn unsupported_command(byte: u8) -> Vec<u8> {
    let name = sluice_protocol::consts::com::name(byte);
    err(
        1047,
        b"08S01",
        &format!("Unknown command: sluice does not support {name} (0x{byte:02x})"),
    )
}

pub fn unknown_statement(id: u32, command: &str) -> Vec<u8> {
    err(
        1243,
        b"HY000",
        &format!("Unknown prepared statement handler ({id}) given to {command}"),
    )
}

/// What the server itself says when the client did not enable LOCAL INFILE.
pub fn shutting_down() -> Vec<u8> {
    err(
        1053,
        b"08S01",
        "Server shutdown in progress (sluice is stopping; reconnect to another instance)",
    )
}

pub fn idle_timeout(limit_ms: u64) -> Vec<u8> {
    err(
        4031,
        b"HY000",
        &format!(
            "The client was disconnected by the server because of inactivity (sluice: server.client_idle_timeout_ms = {limit_ms})"
        ),
    )
}

pub fn no_open_cursor(id: u32) -> Vec<u8> {
    err(
        1421,
        b"HY000",
        &format!("The statement ({id}) has no open cursor"),
    )
}

pub fn local_infile_disabled(mariadb: bool) -> Vec<u8> {
    if mariadb {
        err(
            4166,
            b"HY000",
            "The used command is not allowed because the MariaDB server or client has disabled the local infile capability",
        )
    } else {
        err(
            3948,
            b"42000",
            "Loading local data is disabled; this must be enabled on both the client and server sides",
        )
    }
}

pub fn acquire(e: &AcquireError) -> Vec<u8> {
    match e {
        AcquireError::PoolExhausted { .. } | AcquireError::QueueFull { .. } => {
            err(POOL_EXHAUSTED, b"HY000", &format!("sluice: {e}"))
        }
        AcquireError::Unreachable { .. } => err(2003, b"HY000", &format!("sluice: {e}")),
        AcquireError::Closed { .. } => err(2003, b"HY000", &format!("sluice: {e}")),
        AcquireError::NoReplica { .. } => err(NO_REPLICA, b"HY000", &format!("sluice: {e}")),
        AcquireError::NoWriter { .. } => err(NO_WRITABLE_PRIMARY, b"HY000", &format!("sluice: {e}")),
        AcquireError::WriterConflict { .. } => err(MULTIPLE_WRITABLE, b"HY000", &format!("sluice: {e}")),
    }
}

pub fn backend_lost(backend: &str, detail: &str) -> Vec<u8> {
    err(
        2013,
        b"HY000",
        &format!(
            "Lost connection to backend '{backend}' during query (sluice: {detail}); the statement's outcome is unknown"
        ),
    )
}

/// `KILL n` for an id that is no client of this Sluice (as the server says).
pub fn unknown_thread(id: u64) -> Vec<u8> {
    err(1094, b"HY000", &format!("Unknown thread id: {id}"))
}

/// `KILL n` of another user's client without the privilege to.
pub fn not_owner_of_thread(id: u64) -> Vec<u8> {
    err(1095, b"HY000", &format!("You are not owner of thread {id}"))
}

/// A KILL inside a multi-statement, an executable comment or dynamic SQL.
pub fn kill_hidden() -> Vec<u8> {
    err(
        1235,
        b"42000",
        "This version of MariaDB doesn't yet support 'KILL inside a multi-statement or dynamic SQL through sluice' (send KILL [QUERY] <connection id> as a statement of its own)",
    )
}

pub fn kill_unsupported() -> Vec<u8> {
    err(
        1235,
        b"42000",
        "This version of MariaDB doesn't yet support 'KILL USER, KILL QUERY ID or KILL of an expression through sluice' (use KILL [QUERY] <connection id> or KILL [QUERY] CONNECTION_ID())",
    )
}

/// A client that asked for the compressed protocol, which Sluice does not
/// offer (mysqlnd asks even so when told to compress).
pub fn compression_unsupported() -> Vec<u8> {
    err(
        1043,
        b"08S01",
        "Bad handshake: sluice does not support the compressed protocol; connect without compression \
         (MYSQLI_CLIENT_COMPRESS, PDO::MYSQL_ATTR_COMPRESS, --compress)",
    )
}

/// A `KILL QUERY` of the client's own connection: it interrupts itself.
pub fn query_interrupted() -> Vec<u8> {
    err(1317, b"70100", "Query execution was interrupted")
}

/// A `KILL` of the client's own connection, just before it is closed.
pub fn connection_killed() -> Vec<u8> {
    err(1927, b"70100", "Connection was killed")
}

/// A KILL sent as a prepared statement: Sluice answers KILL itself, from
/// the text protocol only (prepared, it would reach a pooled connection).
pub fn kill_not_preparable() -> Vec<u8> {
    err(
        1295,
        b"HY000",
        "This command is not supported in the prepared statement protocol yet (sluice answers KILL itself: send it as a plain query)",
    )
}
