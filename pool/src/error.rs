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
}

impl AcquireError {
    /// Short cause label for metrics.
    pub fn cause(&self) -> &'static str {
        match self {
            AcquireError::PoolExhausted { .. } => "pool_exhausted",
            AcquireError::QueueFull { .. } => "queue_full",
            AcquireError::Unreachable { .. } => "backend_unreachable",
            AcquireError::Closed { .. } => "backend_closed",
        }
    }
}
