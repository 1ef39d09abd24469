//! The backend side of Sluice: raw MySQL client connections to MariaDB/MySQL
//! ([`BackendConn`]), the session state each one carries ([`SessionState`]),
//! and the pools that hold them, one per (backend, user, capability
//! profile) ([`Pools`]): deadpool for the connections' life, a gate in
//! front of it for waiting (first come, first served, a returned connection
//! handed straight to the oldest waiter) and the optional adaptive limit.
//!
//! The [`monitor`] watches every backend (health, read_only, lag, GTID
//! position) and decides which one takes writes.
//!
//! Connections speak the wire protocol directly so the proxy can relay
//! response packets without decoding rows.

mod conn;
mod connect;
mod credential;
mod error;
mod gate;
mod home;
mod keepalive;
mod limit;
mod local;
mod manager;
pub mod metric;
pub mod monitor;
mod session;
mod statements;
mod stream;
mod tls;
mod vars;

pub use conn::{BackendConn, CommandOutcome, Prepared, ServerInfo, query_packet};
pub use connect::{BACKEND_CAPABILITIES, ConnectTarget, SessionCaps, negotiate};
pub use credential::{Credential, native_from_token, sha1};
pub use error::{AcquireError, BackendError};
pub use home::{OFF_WORKERS, set_worker, worker};
pub use limit::{AdaptiveLimit, LimitParams};
pub use local::Local;
pub use manager::{BackendPool, ConnectAttrs, PoolKey, PoolSettings, PoolStatus, Pooled, Pools, discard};
pub use session::{RESULTS_COLLATION, SessionState, charset_vars};
pub use statements::{BackendStatement, ColumnDefs, StatementCache};
pub use stream::BackendStream;
pub use tls::BackendTls;
pub use vars::Vars;
