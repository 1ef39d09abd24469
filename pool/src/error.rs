//! Errors of backend connections and of checking one out of a pool.

use std::io;

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The server answered with an ERR packet.
    #[error("server error {code} ({state}): {message}")]
    Server {
        code: u16,
        state: String,
        message: String,
    },
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("timed out after {0} ms")]
    Timeout(u64),
    /// TLS could not be set up as the backend's `tls` mode asks.
    #[error("{0}")]
    Tls(String),
}

impl BackendError {
    pub fn protocol(msg: impl Into<String>) -> Self {
        BackendError::Protocol(msg.into())
    }
}

/// Why no backend connection could be handed out.
#[derive(Debug, thiserror::Error)]
pub enum AcquireError {
    /// Every connection of the pool stayed busy for the whole wait.
    #[error(
        "backend '{backend}' pool exhausted: all {max} connections stayed busy for {waited_ms} ms; retry later or raise pool.max_connections_per_backend"
    )]
    PoolExhausted {
        backend: String,
        max: usize,
        waited_ms: u64,
    },
    /// `pool.max_queue` requests already wait for this pool.
    #[error(
        "backend '{backend}' pool exhausted: {waiting} requests are already queued (pool.max_queue); retry later"
    )]
    QueueFull { backend: String, waiting: usize },
    /// A new connection could not be made.
    #[error("backend '{backend}' ({address}) is unreachable: {reason}")]
    Unreachable {
        backend: String,
        address: String,
        reason: String,
    },
    #[error("backend '{backend}' is shutting down")]
    Closed { backend: String },
    /// No replica qualifies for a read and `routing.on_no_replica = "error"`.
    #[error(
        "no replica can serve this read: {detail} (routing.on_no_replica = \"error\"); retry later, raise routing.max_replica_lag_ms, or send the read to the primary with /* sluice:primary */"
    )]
    NoReplica { detail: String },
    /// No backend is writable (`monitor.follow_read_only`).
    #[error(
        "no writable primary: {detail}; waited {waited_ms} ms (routing.write_wait_ms). Reads still go to replicas; retry the write once a primary is writable"
    )]
    NoWriter { detail: String, waited_ms: u64 },
    /// More than one backend is writable (`monitor.follow_read_only`).
    #[error(
        "writes refused: backends {backends} are all writable (@@read_only = 0) and Sluice will not split the brain; make all but one read-only"
    )]
    WriterConflict { backends: String },
}

impl AcquireError {
    /// Short cause label for metrics.
    pub fn cause(&self) -> &'static str {
        match self {
            AcquireError::PoolExhausted { .. } => "pool_exhausted",
            AcquireError::QueueFull { .. } => "queue_full",
            AcquireError::Unreachable { .. } => "backend_unreachable",
            AcquireError::Closed { .. } => "backend_closed",
            AcquireError::NoReplica { .. } => "no_replica",
            AcquireError::NoWriter { .. } => "no_writable_primary",
            AcquireError::WriterConflict { .. } => "multiple_writable",
        }
    }
}
