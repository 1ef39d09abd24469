//! The config file's shape. Every key here is documented in the README;
//! unknown keys are rejected so a typo never silently falls back to a default.

use crate::Secret;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    #[serde(default)]
    pub users: Vec<UserConfig>,
    #[serde(default)]
    pub pool: PoolConfig,
    #[serde(default)]
    pub routing: RoutingConfig,
    #[serde(default)]
    pub backends: Vec<BackendConfig>,
    #[serde(default)]
    pub monitor: MonitorConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub guard: GuardConfig,
    #[serde(default)]
    pub digests: DigestsConfig,
}

/// `[digests]`: per-fingerprint statement statistics (`GET /digests`,
/// `sluice top`). Both keys take effect on reload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DigestsConfig {
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Fingerprints kept; beyond it the one with the least total time is
    /// folded into the `(other)` row.
    #[serde(default = "default_digest_entries")]
    pub max_entries: usize,
}

impl Default for DigestsConfig {
    fn default() -> Self {
        DigestsConfig {
            enabled: true,
            max_entries: default_digest_entries(),
        }
    }
}

fn default_true() -> bool {
    true
}

fn default_digest_entries() -> usize {
    1000
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address clients connect to.
    pub listen: String,
    /// Address of the admin HTTP endpoint (/metrics, /healthz, /readyz,
    /// /status).
    #[serde(default = "default_admin_listen")]
    pub admin_listen: String,
    /// Bearer token the admin endpoint requires (except /healthz and
    /// /readyz); None (absent or empty): no token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_token: Option<Secret>,
    #[serde(default = "default_max_clients")]
    pub max_client_connections: usize,
    /// Largest command a client may send (the proxy's max_allowed_packet).
    #[serde(default = "default_max_packet")]
    pub max_packet_bytes: usize,
    /// Worker threads for client sessions, each with its own current-thread
    /// runtime: 0 = one per CPU core, 1 = everything on a single thread.
    #[serde(default)]
    pub worker_threads: usize,
    /// Disconnect a client idle this long (0 = never).
    #[serde(default)]
    pub client_idle_timeout_ms: u64,
    /// On SIGTERM/SIGINT, how long running statements and open
    /// transactions may take to finish before Sluice exits anyway.
    #[serde(default = "default_shutdown_timeout")]
    pub shutdown_timeout_ms: u64,
    /// On SIGTERM/SIGINT, how long Sluice goes on serving and accepting
    /// clients with /readyz answering 503 (so a balancer stops sending new
    /// clients) before the graceful shutdown starts.
    #[serde(default)]
    pub drain_delay_ms: u64,
    /// TLS for clients; absent: clients connect in plain text only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ServerTlsConfig>,
    /// RSA key pair (PEM) for caching_sha2_password's full authentication
    /// without TLS; unset: a pair is generated at start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caching_sha2_private_key_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caching_sha2_public_key_file: Option<String>,
    /// The plugin the initial handshake names (MySQL's
    /// `default_authentication_plugin`): clients that follow the server's
    /// choice answer with it.
    #[serde(default)]
    pub default_auth_plugin: AuthPluginName,
    /// This instance's name among several behind a balancer: it keys this
    /// instance's heartbeat rows and derives the guard's default binlog
    /// server_id. Default (filled in by validation): `hostname:listen port`.
    #[serde(default)]
    pub instance_name: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthPluginName {
    #[default]
    MysqlNativePassword,
    CachingSha2Password,
}

/// `[server.tls]`: the certificate Sluice shows clients.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert_file: String,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: String,
    /// Set: mutual TLS; a TLS client must present a certificate this CA
    /// signed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub client_ca_file: String,
    /// Oldest TLS version accepted: "1.2" or "1.3".
    #[serde(default = "default_tls_min_version")]
    pub min_version: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// Name of an environment variable holding the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// The mysql_native_password hash (`*` and 40 hex digits, as
    /// `SELECT PASSWORD('...')` prints it) instead of the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_hash: Option<String>,
    /// Refuse this user's logins that are not over TLS.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_tls: bool,
}

impl UserConfig {
    /// The password after validation resolved `password_env` ("" for a
    /// user known only by `password_hash`).
    pub fn secret(&self) -> &str {
        self.password.as_ref().map(Secret::expose).unwrap_or("")
    }

    /// SHA1(SHA1(password)) from `password_hash`, once validated.
    pub fn native_hash(&self) -> Option<[u8; 20]> {
        self.password_hash.as_deref().and_then(crate::parse_native_hash)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    #[serde(default = "default_max_per_backend")]
    pub max_connections_per_backend: usize,
    /// How long a statement waits for a backend connection.
    #[serde(default = "default_acquire_timeout")]
    pub acquire_timeout_ms: u64,
    /// TCP connect + handshake limit for a new backend connection.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_ms: u64,
    /// "transaction" (multiplexing) or "session" (one connection per client).
    #[serde(default)]
    pub mode: PoolMode,
    /// Server-side prepared statements kept per backend connection.
    #[serde(default = "default_max_prepared")]
    pub max_prepared_per_connection: usize,
    /// Replace backend connections older than this (0 = never).
    #[serde(default = "default_max_lifetime")]
    pub max_lifetime_ms: u64,
    /// Connections per backend kept open and warm even when idle.
    #[serde(default)]
    pub min_idle: usize,
    /// Requests allowed to queue for a connection before new ones are
    /// refused at once (0 = no limit beyond acquire_timeout_ms).
    #[serde(default)]
    pub max_queue: usize,
    /// Find how many connections per backend run statements at once from
    /// their latency (at most max_connections_per_backend); past that,
    /// requests queue in Sluice instead of on the server.
    #[serde(default)]
    pub adaptive_limit: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PoolMode {
    /// A client holds a backend connection only inside a transaction or
    /// while pinned.
    #[default]
    Transaction,
    /// A client keeps one backend connection (on the primary) for its life.
    Session,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            max_connections_per_backend: default_max_per_backend(),
            acquire_timeout_ms: default_acquire_timeout(),
            connect_timeout_ms: default_connect_timeout(),
            mode: PoolMode::default(),
            max_prepared_per_connection: default_max_prepared(),
            max_lifetime_ms: default_max_lifetime(),
            min_idle: 0,
            max_queue: 0,
            adaptive_limit: false,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingConfig {
    #[serde(default)]
    pub mode: RoutingMode,
    /// How a session reads its own writes when reads go to replicas.
    #[serde(default)]
    pub read_your_writes: ReadYourWrites,
    /// For `primary_window`: how long after a write the session reads from
    /// the primary.
    #[serde(default = "default_ryw_window")]
    pub read_your_writes_window_ms: u64,
    /// Kill a statement running longer than this on its backend (KILL
    /// QUERY) and tell the client (0 = off).
    #[serde(default)]
    pub query_timeout_ms: u64,
    /// A replica lagging more than this gets no new reads (it gets them
    /// back once its lag is below 80 % of it).
    #[serde(default = "default_max_replica_lag")]
    pub max_replica_lag_ms: u64,
    /// What a read does when no replica is eligible.
    #[serde(default)]
    pub on_no_replica: OnNoReplica,
    /// For `read_your_writes = "gtid"`: how long a read may wait on a
    /// replica for the session's last write before it goes to the primary.
    #[serde(default = "default_causal_wait")]
    pub causal_wait_ms: u64,
    /// With `monitor.follow_read_only`: how long a write waits for a
    /// writable primary before it fails.
    #[serde(default = "default_write_wait")]
    pub write_wait_ms: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnNoReplica {
    /// Read from the primary (counted as a fallback).
    #[default]
    Primary,
    /// Fail the read with an error that says why no replica qualified.
    Error,
}

/// The backend monitor: its own connections, polling every backend.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitorConfig {
    /// Account the monitor connects as; the first `[[users]]` entry when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    #[serde(default = "default_monitor_interval")]
    pub interval_ms: u64,
    /// `schema.table` the monitor writes heartbeats to on the primary and
    /// reads on replicas (millisecond lag); "" = Seconds_Behind_Master only.
    #[serde(default = "default_heartbeat_table")]
    pub heartbeat_table: String,
    #[serde(default = "default_heartbeat_interval")]
    pub heartbeat_interval_ms: u64,
    /// Send writes to whichever backend is writable (`@@read_only = 0`)
    /// instead of always the configured primary.
    #[serde(default)]
    pub follow_read_only: bool,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        MonitorConfig {
            user: None,
            password: None,
            password_env: None,
            interval_ms: default_monitor_interval(),
            heartbeat_table: default_heartbeat_table(),
            heartbeat_interval_ms: default_heartbeat_interval(),
            follow_read_only: false,
        }
    }
}

impl ServerConfig {
    /// The key of this instance's heartbeat row ([`instance_id`]).
    pub fn instance_id(&self) -> u32 {
        instance_id(&self.instance_name)
    }
}

impl MonitorConfig {
    /// The heartbeat table as (schema, table), None when disabled.
    pub fn heartbeat(&self) -> Option<(&str, &str)> {
        self.heartbeat_table.split_once('.')
    }
}

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig {
            mode: RoutingMode::default(),
            read_your_writes: ReadYourWrites::default(),
            read_your_writes_window_ms: default_ryw_window(),
            query_timeout_ms: 0,
            max_replica_lag_ms: default_max_replica_lag(),
            on_no_replica: OnNoReplica::default(),
            causal_wait_ms: default_causal_wait(),
            write_wait_ms: default_write_wait(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadYourWrites {
    /// Reads may go to a replica that has not applied the session's write.
    Off,
    /// After a write, the session's reads go to the primary for a while.
    #[default]
    PrimaryWindow,
    /// After a write, the session's reads go only to replicas that have
    /// applied its GTID (or wait for it briefly, or go to the primary).
    Gtid,
    /// Every read sees every write committed through this Sluice instance
    /// (any session, any connection): reads need the highest GTID per
    /// domain written through it.
    Global,
    /// Every read sees every write committed anywhere before it arrived
    /// (through other instances or around Sluice): reads need the primary's
    /// `@@gtid_binlog_pos`, learned by one query shared by all reads that
    /// arrive while it is asked.
    Universal,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoutingMode {
    /// Every statement runs on the primary.
    #[default]
    PrimaryOnly,
    /// Reads go to replicas (the read/write split).
    Split,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    pub name: String,
    /// host:port
    pub address: String,
    pub role: Role,
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// TLS from Sluice to this backend, named as MySQL's `--ssl-mode`.
    #[serde(default)]
    pub tls: BackendTlsMode,
    /// CA certificates (PEM) the server's certificate must chain to
    /// (`verify_ca`, `verify_identity`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_ca_file: Option<String>,
    /// Client certificate chain (PEM) presented to the server; with
    /// `tls_key_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_cert_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_key_file: Option<String>,
}

impl BackendConfig {
    /// The backend's TLS settings as one value (pooled connections, the
    /// monitor and the guard all connect with these).
    pub fn tls_settings(&self) -> BackendTls {
        BackendTls {
            mode: self.tls,
            ca_file: self.tls_ca_file.clone(),
            cert_file: self.tls_cert_file.clone(),
            key_file: self.tls_key_file.clone(),
        }
    }
}

/// How Sluice uses TLS to a backend; the values and meanings of the MySQL
/// clients' `--ssl-mode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendTlsMode {
    /// Plain TCP, even when the server offers TLS.
    Disabled,
    /// TLS when the server offers it (CLIENT_SSL), plain otherwise; the
    /// certificate is not verified.
    #[default]
    Preferred,
    /// TLS or no connection; the certificate is not verified.
    Required,
    /// TLS, and the certificate must chain to `tls_ca_file` (any name).
    VerifyCa,
    /// As `verify_ca`, and the certificate must name the host (or IP) of
    /// the backend's `address`.
    VerifyIdentity,
}

impl BackendTlsMode {
    /// The config value, for messages.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendTlsMode::Disabled => "disabled",
            BackendTlsMode::Preferred => "preferred",
            BackendTlsMode::Required => "required",
            BackendTlsMode::VerifyCa => "verify_ca",
            BackendTlsMode::VerifyIdentity => "verify_identity",
        }
    }

    /// The mode checks the server's certificate against `tls_ca_file`.
    pub fn verifies(self) -> bool {
        matches!(self, BackendTlsMode::VerifyCa | BackendTlsMode::VerifyIdentity)
    }
}

/// One backend's TLS settings (validated: the files exist and parse, and
/// the verifying modes have a CA file).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct BackendTls {
    pub mode: BackendTlsMode,
    pub ca_file: Option<String>,
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Primary,
    Replica,
}

/// The empty-key guard: Bloom filters of the keys that exist in chosen
/// tables, fed from the primary's binlog, that answer lookups of absent
/// keys without a backend round trip.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardConfig {
    #[serde(default)]
    pub tables: Vec<GuardTableConfig>,
    /// Build each filter again this often (0 = never): deleted keys only
    /// cause false positives, and a fresh filter sheds them.
    #[serde(default = "default_guard_rebuild")]
    pub rebuild_interval_ms: u64,
    /// All filters together may use at most this much memory (a rebuild
    /// briefly needs room for two filters of a table).
    #[serde(default = "default_guard_memory")]
    pub max_memory_mb: u64,
    /// Once this many lookups of one statement in a row on a connection
    /// found their row, the guard checks only one in `skip_check_one_in`
    /// of them (0 = check every lookup): a filter that filters nothing
    /// costs only a little. A lookup that finds no row ends the streak.
    #[serde(default = "default_guard_skip_after")]
    pub skip_after_found: u32,
    #[serde(default = "default_guard_skip_one_in")]
    pub skip_check_one_in: u32,
    /// The binlog stream registers as a replica with this server_id; it
    /// must differ from every server's and every other Sluice instance's.
    /// Default (filled in by validation): derived from
    /// `server.instance_name`, so instances differ without configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_id: Option<u32>,
}

impl GuardConfig {
    /// The binlog stream's server_id (explicit, or derived from
    /// `instance_name` when validation has not filled it in).
    pub fn server_id(&self, instance_name: &str) -> u32 {
        self.server_id
            .unwrap_or_else(|| derived_guard_server_id(instance_name))
    }
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig {
            tables: Vec::new(),
            rebuild_interval_ms: default_guard_rebuild(),
            max_memory_mb: default_guard_memory(),
            skip_after_found: default_guard_skip_after(),
            skip_check_one_in: default_guard_skip_one_in(),
            server_id: None,
        }
    }
}

/// One guarded table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardTableConfig {
    /// `schema.table`.
    pub table: String,
    /// A column with a one-column PRIMARY KEY or UNIQUE index.
    pub key: String,
    #[serde(default = "default_false_positive_rate")]
    pub false_positive_rate: f64,
    /// Keys the filter is sized for; by default the table's row count at
    /// build time, with headroom.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_keys: Option<u64>,
}

impl GuardTableConfig {
    /// (schema, table); validation makes sure both are there.
    pub fn schema_table(&self) -> (&str, &str) {
        self.table.split_once('.').unwrap_or(("", &self.table))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    #[serde(default)]
    pub format: LogFormat,
    /// A tracing filter such as "info" or "sluice=debug".
    #[serde(default = "default_log_level")]
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: default_log_level(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

fn default_admin_listen() -> String {
    "127.0.0.1:9033".into()
}
fn default_tls_min_version() -> String {
    "1.2".to_string()
}
fn default_shutdown_timeout() -> u64 {
    30_000
}
fn default_max_clients() -> usize {
    10_000
}
fn default_max_packet() -> usize {
    64 * 1024 * 1024
}
fn default_max_per_backend() -> usize {
    50
}
fn default_acquire_timeout() -> u64 {
    2000
}
fn default_connect_timeout() -> u64 {
    2000
}
fn default_ryw_window() -> u64 {
    1000
}
fn default_max_replica_lag() -> u64 {
    10_000
}
fn default_causal_wait() -> u64 {
    100
}
fn default_write_wait() -> u64 {
    3000
}
fn default_monitor_interval() -> u64 {
    1000
}
fn default_heartbeat_table() -> String {
    "sluice.heartbeat".into()
}
fn default_heartbeat_interval() -> u64 {
    250
}
fn default_max_lifetime() -> u64 {
    3_600_000
}
fn default_max_prepared() -> usize {
    256
}
fn default_weight() -> u32 {
    1
}
fn default_guard_rebuild() -> u64 {
    6 * 3_600_000
}
fn default_guard_memory() -> u64 {
    256
}
fn default_guard_skip_after() -> u32 {
    256
}
fn default_guard_skip_one_in() -> u32 {
    16
}
/// A number for the instance name (FNV-1a, stable across releases): the
/// key of this instance's heartbeat row.
pub fn instance_id(instance_name: &str) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for b in instance_name.bytes() {
        hash = (hash ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    hash
}

/// A guard server_id derived from the instance name, in 2^30..2^31 where
/// servers' own ids rarely are.
pub fn derived_guard_server_id(instance_name: &str) -> u32 {
    0x4000_0000 | (instance_id(instance_name) & 0x3fff_ffff)
}
fn default_false_positive_rate() -> f64 {
    0.01
}
fn default_log_level() -> String {
    "info".into()
}
