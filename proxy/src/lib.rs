//! The Sluice binary's parts: the listener and per-client sessions (the
//! frontend half of the MySQL protocol), the relay of backend responses, the
//! admin HTTP endpoint and the CLI. Decisions come from `sluice-router`,
//! backend connections from `sluice-pool`, settings from `sluice-config`.

pub mod admin;
pub mod answers;
pub mod attributes;
pub mod auth;
pub mod cli;
pub mod clients;
pub mod digests;
pub mod digests_json;
pub mod errors;
pub mod handshake;
pub mod healthcheck;
pub mod init;
pub mod listener;
pub mod metrics;
pub mod per_thread;
pub mod positions;
pub mod profile;
pub mod readiness;
pub mod relay;
pub mod reload;
pub mod session;
pub mod shared;
pub mod systemd;
pub mod tls;
pub mod top;
pub mod topology;
pub mod workers;
