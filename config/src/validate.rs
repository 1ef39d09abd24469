//! Checks that go beyond the file's shape; every error names the key.

use crate::{Config, Role, Secret};
use std::collections::HashSet;
use std::net::ToSocketAddrs;

/// A config problem and the key it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted path of the bad key, e.g. `backends[1].address`; empty when
    /// the problem is not about one key (unreadable file, TOML syntax).
    pub key: String,
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "invalid config key `{}`: {}", self.key, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    fn at(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            message: message.into(),
        }
    }

    /// TOML errors already name the key and line; keep their text.
    pub(crate) fn from_toml(e: toml::de::Error) -> Self {
        ConfigError {
            key: String::new(),
            message: e.to_string().trim_end().to_string(),
        }
    }
}

/// Validates the parsed config and resolves `password_env` via `env`.
/// Backends one instance routes to (the routing plan tracks them in a
/// 64-bit set).
pub const MAX_BACKENDS: usize = 64;

/// Each worker thread keeps up to this many fingerprints of up to 1 KiB.
const MAX_DIGEST_ENTRIES: usize = 100_000;

pub fn validate(config: &mut Config, env: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
    check_addr("server.listen", &config.server.listen)?;
    check_addr("server.admin_listen", &config.server.admin_listen)?;
    resolve_instance_name(&mut config.server)?;
    if config.guard.server_id.is_none() {
        config.guard.server_id = Some(crate::model::derived_guard_server_id(
            &config.server.instance_name,
        ));
    }
    if config
        .server
        .admin_token
        .as_ref()
        .is_some_and(|t| t.expose().is_empty())
    {
        config.server.admin_token = None;
    }
    if config.server.max_client_connections == 0 {
        return Err(ConfigError::at(
            "server.max_client_connections",
            "must be at least 1",
        ));
    }
    if config.server.max_packet_bytes < 1024 {
        return Err(ConfigError::at(
            "server.max_packet_bytes",
            "must be at least 1024",
        ));
    }
    if config.users.is_empty() {
        return Err(ConfigError::at(
            "users",
            "at least one [[users]] entry is required",
        ));
    }
    let mut names = HashSet::new();
    for (i, user) in config.users.iter_mut().enumerate() {
        let key = format!("users[{i}]");
        if user.name.is_empty() {
            return Err(ConfigError::at(format!("{key}.name"), "must not be empty"));
        }
        if !names.insert(user.name.clone()) {
            return Err(ConfigError::at(
                format!("{key}.name"),
                format!("duplicate user `{}`", user.name),
            ));
        }
        if let Some(hash) = &user.password_hash {
            if user.password.is_some() || user.password_env.is_some() {
                return Err(ConfigError::at(
                    key,
                    "set one of `password`, `password_env` or `password_hash`",
                ));
            }
            if crate::parse_native_hash(hash).is_none() {
                return Err(ConfigError::at(
                    format!("{key}.password_hash"),
                    "expected `*` and 40 hex digits, as `SELECT PASSWORD('...')` or `sluice hash-password` prints it",
                ));
            }
        } else {
            resolve_password(&key, &mut user.password, &user.password_env, &env)?;
        }
    }
    if config.monitor.user.is_none() && config.users.first().is_some_and(|u| u.password_hash.is_some()) {
        return Err(ConfigError::at(
            "monitor.user",
            "the monitor logs in as the first [[users]] entry unless [monitor] names an account, and that user has only a password_hash; set [monitor] user and password",
        ));
    }
    if let Some(tls) = &config.server.tls {
        validate_server_tls(tls)?;
    }
    for (file, key) in [
        (
            &config.server.caching_sha2_private_key_file,
            "server.caching_sha2_private_key_file",
        ),
        (
            &config.server.caching_sha2_public_key_file,
            "server.caching_sha2_public_key_file",
        ),
    ] {
        if let Some(path) = file {
            check_readable(key, path)?;
        }
    }
    if config.server.caching_sha2_private_key_file.is_some()
        != config.server.caching_sha2_public_key_file.is_some()
    {
        return Err(ConfigError::at(
            "server.caching_sha2_public_key_file",
            "set both caching_sha2_private_key_file and caching_sha2_public_key_file, or neither",
        ));
    }
    if config.pool.max_connections_per_backend == 0 {
        return Err(ConfigError::at(
            "pool.max_connections_per_backend",
            "must be at least 1",
        ));
    }
    if config.pool.acquire_timeout_ms == 0 {
        return Err(ConfigError::at("pool.acquire_timeout_ms", "must be at least 1"));
    }
    if config.pool.max_prepared_per_connection == 0 {
        return Err(ConfigError::at(
            "pool.max_prepared_per_connection",
            "must be at least 1",
        ));
    }
    if config.pool.connect_timeout_ms == 0 {
        return Err(ConfigError::at("pool.connect_timeout_ms", "must be at least 1"));
    }
    if config.backends.is_empty() {
        return Err(ConfigError::at(
            "backends",
            "at least one [[backends]] entry is required",
        ));
    }
    if config.backends.len() > MAX_BACKENDS {
        return Err(ConfigError::at(
            "backends",
            format!(
                "at most {MAX_BACKENDS} [[backends]] entries are supported ({} given); run more Sluice instances for more",
                config.backends.len()
            ),
        ));
    }
    let mut backend_names = HashSet::new();
    for (i, backend) in config.backends.iter().enumerate() {
        let key = format!("backends[{i}]");
        if backend.name.is_empty() {
            return Err(ConfigError::at(format!("{key}.name"), "must not be empty"));
        }
        if !backend_names.insert(backend.name.as_str()) {
            return Err(ConfigError::at(
                format!("{key}.name"),
                format!("duplicate backend `{}`", backend.name),
            ));
        }
        check_addr(&format!("{key}.address"), &backend.address)?;
        validate_backend_tls(&key, backend)?;
    }
    validate_monitor(config, &env)?;
    validate_guard(&config.guard)?;
    if !(1..=MAX_DIGEST_ENTRIES).contains(&config.digests.max_entries) {
        return Err(ConfigError::at(
            "digests.max_entries",
            format!("must be between 1 and {MAX_DIGEST_ENTRIES}"),
        ));
    }
    let primaries = config.backends.iter().filter(|b| b.role == Role::Primary).count();
    if primaries != 1 {
        return Err(ConfigError::at(
            "backends",
            format!("exactly one backend must have role = \"primary\" (found {primaries})"),
        ));
    }
    Ok(())
}

/// The files must be PEM of the right kind here; whether certificate and
/// key make a pair is checked when they are loaded (at start, on reload
/// and by `check-config`).
fn validate_server_tls(tls: &crate::ServerTlsConfig) -> Result<(), ConfigError> {
    check_pem("server.tls.cert_file", &tls.cert_file, Pem::Certificates)?;
    check_pem("server.tls.key_file", &tls.key_file, Pem::PrivateKey)?;
    if !tls.client_ca_file.is_empty() {
        check_pem(
            "server.tls.client_ca_file",
            &tls.client_ca_file,
            Pem::Certificates,
        )?;
    }
    if tls.min_version != "1.2" && tls.min_version != "1.3" {
        return Err(ConfigError::at(
            "server.tls.min_version",
            format!("`{}` is not supported: use \"1.2\" or \"1.3\"", tls.min_version),
        ));
    }
    Ok(())
}

/// A backend's TLS keys: files only where the mode uses them (a CA file
/// with `required` would suggest a check that is not made), a CA for the
/// verifying modes, a client certificate with its key, and every file
/// readable PEM of the right kind.
fn validate_backend_tls(key: &str, backend: &crate::BackendConfig) -> Result<(), ConfigError> {
    use crate::BackendTlsMode as Mode;
    let mode = backend.tls;
    match (&backend.tls_ca_file, mode.verifies()) {
        (None, true) => {
            return Err(ConfigError::at(
                format!("{key}.tls_ca_file"),
                format!(
                    "required with tls = \"{}\": the CA certificate (PEM) that signed the server's certificate",
                    mode.as_str()
                ),
            ));
        }
        (Some(_), false) => {
            return Err(ConfigError::at(
                format!("{key}.tls_ca_file"),
                format!(
                    "is only used with tls = \"verify_ca\" or \"verify_identity\"; with tls = \"{}\" the server's certificate is not checked",
                    mode.as_str()
                ),
            ));
        }
        (Some(path), true) => check_pem(&format!("{key}.tls_ca_file"), path, Pem::Certificates)?,
        (None, false) => {}
    }
    match (&backend.tls_cert_file, &backend.tls_key_file) {
        (None, None) => {}
        (Some(_), None) => {
            return Err(ConfigError::at(
                format!("{key}.tls_key_file"),
                "required with tls_cert_file (the client certificate's private key)",
            ));
        }
        (None, Some(_)) => {
            return Err(ConfigError::at(
                format!("{key}.tls_cert_file"),
                "required with tls_key_file (the client certificate for that key)",
            ));
        }
        (Some(_), Some(_)) if mode == Mode::Disabled => {
            return Err(ConfigError::at(
                format!("{key}.tls_cert_file"),
                "is not used with tls = \"disabled\"",
            ));
        }
        (Some(cert), Some(private)) => {
            check_pem(&format!("{key}.tls_cert_file"), cert, Pem::Certificates)?;
            check_pem(&format!("{key}.tls_key_file"), private, Pem::PrivateKey)?;
        }
    }
    if mode == Mode::VerifyIdentity {
        let host = host_of(&backend.address);
        if rustls_pki_types::ServerName::try_from(host).is_err() {
            return Err(ConfigError::at(
                format!("{key}.address"),
                format!(
                    "`{host}` is neither an IP address nor a DNS name a certificate can name (tls = \"verify_identity\")"
                ),
            ));
        }
    }
    Ok(())
}

fn check_readable(key: &str, path: &str) -> Result<(), ConfigError> {
    if path.is_empty() {
        return Err(ConfigError::at(key, "must not be empty"));
    }
    std::fs::File::open(path)
        .map(|_| ())
        .map_err(|e| ConfigError::at(key, format!("cannot read `{path}`: {e}")))
}

/// The host part of `host:port` or `[v6]:port`.
pub fn host_of(address: &str) -> &str {
    let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

enum Pem {
    Certificates,
    PrivateKey,
}

/// The file at `path` is readable PEM with at least one certificate, or
/// with a private key.
fn check_pem(key: &str, path: &str, kind: Pem) -> Result<(), ConfigError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let bytes =
        std::fs::read(path).map_err(|e| ConfigError::at(key, format!("cannot read `{path}`: {e}")))?;
    match kind {
        Pem::Certificates => {
            let mut count = 0;
            for cert in CertificateDer::pem_slice_iter(&bytes) {
                cert.map_err(|e| ConfigError::at(key, format!("`{path}` is not valid PEM: {e}")))?;
                count += 1;
            }
            if count == 0 {
                return Err(ConfigError::at(
                    key,
                    format!("`{path}` holds no PEM certificate (-----BEGIN CERTIFICATE-----)"),
                ));
            }
        }
        Pem::PrivateKey => {
            PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| {
                ConfigError::at(
                    key,
                    format!("`{path}` holds no PEM private key (PKCS#8, PKCS#1 or SEC1): {e}"),
                )
            })?;
        }
    }
    Ok(())
}

/// `server.instance_name`: given, or `hostname:listen port`. It goes into
/// SQL text (the heartbeat rows), so only a hostname's characters and `:`.
fn resolve_instance_name(server: &mut crate::ServerConfig) -> Result<(), ConfigError> {
    if server.instance_name.is_empty() {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".to_string());
        let port = server.listen.rsplit(':').next().unwrap_or("");
        server.instance_name = format!("{host}:{port}");
        server.instance_name.retain(instance_name_char);
        server.instance_name.truncate(64);
        return Ok(());
    }
    if server.instance_name.len() > 64 || !server.instance_name.chars().all(instance_name_char) {
        return Err(ConfigError::at(
            "server.instance_name",
            "at most 64 characters from a-z, A-Z, 0-9, `.`, `-`, `_` and `:`",
        ));
    }
    Ok(())
}

fn instance_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':')
}

fn validate_guard(guard: &crate::GuardConfig) -> Result<(), ConfigError> {
    if guard.server_id == Some(0) {
        return Err(ConfigError::at(
            "guard.server_id",
            "must not be 0 (the binlog stream registers as a replica with it)",
        ));
    }
    if guard.max_memory_mb == 0 {
        return Err(ConfigError::at("guard.max_memory_mb", "must be at least 1"));
    }
    if guard.skip_check_one_in == 0 {
        return Err(ConfigError::at(
            "guard.skip_check_one_in",
            "must be at least 1 (1 = check every lookup; to never skip, set guard.skip_after_found = 0)",
        ));
    }
    let mut seen = HashSet::new();
    for (i, table) in guard.tables.iter().enumerate() {
        let key = format!("guard.tables[{i}]");
        let parts = table.table.split_once('.');
        if !parts.is_some_and(|(s, t)| is_identifier(s) && is_identifier(t)) {
            return Err(ConfigError::at(
                format!("{key}.table"),
                format!("`{}` must be `schema.table` (unquoted names)", table.table),
            ));
        }
        if !is_identifier(&table.key) {
            return Err(ConfigError::at(
                format!("{key}.key"),
                format!("`{}` must be one column name (unquoted)", table.key),
            ));
        }
        if !(table.false_positive_rate > 0.0 && table.false_positive_rate <= 0.5) {
            return Err(ConfigError::at(
                format!("{key}.false_positive_rate"),
                "must be above 0 and at most 0.5",
            ));
        }
        if table.expected_keys == Some(0) {
            return Err(ConfigError::at(
                format!("{key}.expected_keys"),
                "must be at least 1 (leave it out to size from the table)",
            ));
        }
        if !seen.insert(table.table.to_ascii_lowercase()) {
            return Err(ConfigError::at(
                format!("{key}.table"),
                format!("`{}` is guarded twice", table.table),
            ));
        }
    }
    Ok(())
}

/// A name the guard can match against statements and information_schema
/// without quoting rules: letters, digits, `_` and `$`, not all digits.
fn is_identifier(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'$')
        && !name.bytes().all(|b| b.is_ascii_digit())
}

fn validate_monitor(config: &mut Config, env: &impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
    let monitor = &mut config.monitor;
    if monitor.interval_ms < 10 {
        return Err(ConfigError::at("monitor.interval_ms", "must be at least 10"));
    }
    if monitor.heartbeat_interval_ms < 10 {
        return Err(ConfigError::at(
            "monitor.heartbeat_interval_ms",
            "must be at least 10",
        ));
    }
    let table = &monitor.heartbeat_table;
    let plain = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !table.is_empty() && !table.split_once('.').is_some_and(|(s, t)| plain(s) && plain(t)) {
        return Err(ConfigError::at(
            "monitor.heartbeat_table",
            format!("`{table}` must be `schema.table` (letters, digits, _) or \"\" to disable heartbeats"),
        ));
    }
    if monitor.user.is_none() && (monitor.password.is_some() || monitor.password_env.is_some()) {
        return Err(ConfigError::at(
            "monitor.user",
            "a monitor password is set but no monitor user",
        ));
    }
    if monitor.user.is_some() {
        resolve_password("monitor", &mut monitor.password, &monitor.password_env, env)?;
    }
    Ok(())
}

/// Exactly one of `password` / `password_env` at `key`; the variable's
/// value becomes the password.
fn resolve_password(
    key: &str,
    password: &mut Option<Secret>,
    password_env: &Option<String>,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    match (&password, password_env) {
        (Some(_), Some(_)) => Err(ConfigError::at(
            key,
            "set either `password` or `password_env`, not both",
        )),
        (None, None) => Err(ConfigError::at(
            key,
            "one of `password` or `password_env` is required",
        )),
        (None, Some(var)) => match env(var) {
            Some(value) => {
                *password = Some(Secret::new(value));
                Ok(())
            }
            None => Err(ConfigError::at(
                format!("{key}.password_env"),
                format!("environment variable `{var}` is not set"),
            )),
        },
        (Some(_), None) => Ok(()),
    }
}

fn check_addr(key: &str, value: &str) -> Result<(), ConfigError> {
    match value.to_socket_addrs().map(|mut addrs| addrs.next()) {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(ConfigError::at(key, format!("`{value}` resolves to no address"))),
        Err(e) => Err(ConfigError::at(
            key,
            format!("`{value}` is not a host:port address ({e})"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use crate::{Config, RoutingMode};

    const EXAMPLE: &str = r#"
[server]
listen = "127.0.0.1:6033"
admin_listen = "127.0.0.1:9033"    # GET /metrics (Prometheus text), GET /healthz
max_client_connections = 10000

[[users]]
name = "app"
password = "app"                   # or password_env = "ENV_VAR_NAME"; used for clients and backends

[pool]
max_connections_per_backend = 50
acquire_timeout_ms = 2000

[routing]
mode = "primary_only"              # the split issue adds "split"

[[backends]]
name = "primary"
address = "127.0.0.1:13306"
role = "primary"

[[backends]]
name = "replica1"
address = "127.0.0.1:13307"
role = "replica"
"#;

    #[test]
    fn the_documented_example_parses() {
        let c = Config::parse(EXAMPLE).unwrap();
        assert_eq!(c.users[0].secret(), "app");
        assert_eq!(c.pool.max_connections_per_backend, 50);
        assert_eq!(c.routing.mode, RoutingMode::PrimaryOnly);
        assert_eq!(c.primary().unwrap().name, "primary");
        assert!(!c.to_effective_toml().contains("\"app\"\npassword = \"app\""));
        assert!(c.to_effective_toml().contains("<redacted>"));
    }

    #[test]
    fn admin_token_is_redacted_and_empty_means_none() {
        let with = EXAMPLE.replace(
            "max_client_connections = 10000",
            "admin_token = \"s3cret-token\"\ndrain_delay_ms = 5000",
        );
        let c = Config::parse(&with).unwrap();
        assert_eq!(
            c.server.admin_token.as_ref().map(|t| t.expose()),
            Some("s3cret-token")
        );
        assert_eq!(c.server.drain_delay_ms, 5000);
        assert!(!c.to_effective_toml().contains("s3cret-token"));
        let empty = EXAMPLE.replace("max_client_connections = 10000", "admin_token = \"\"");
        assert!(Config::parse(&empty).unwrap().server.admin_token.is_none());
        assert_eq!(Config::parse(EXAMPLE).unwrap().server.drain_delay_ms, 0);
    }

    #[test]
    fn unknown_key_is_named() {
        let bad = EXAMPLE.replace("acquire_timeout_ms", "acquire_timeout");
        let err = Config::parse(&bad).unwrap_err();
        assert!(err.to_string().contains("acquire_timeout"), "{err}");
    }

    #[test]
    fn guard_skip_settings_default_and_a_zero_one_in_is_named() {
        let c = Config::parse(EXAMPLE).unwrap();
        assert_eq!((c.guard.skip_after_found, c.guard.skip_check_one_in), (256, 16));
        let bad = format!("{EXAMPLE}\n[guard]\nskip_check_one_in = 0\n");
        let err = Config::parse(&bad).unwrap_err();
        assert_eq!(err.key, "guard.skip_check_one_in");
        let never = format!("{EXAMPLE}\n[guard]\nskip_after_found = 0\n");
        assert_eq!(Config::parse(&never).unwrap().guard.skip_after_found, 0);
    }

    #[test]
    fn bad_address_is_named() {
        let bad = EXAMPLE.replace("127.0.0.1:13307", "nowhere");
        let err = Config::parse(&bad).unwrap_err();
        assert_eq!(err.key, "backends[1].address");
    }

    #[test]
    fn two_primaries_are_refused() {
        let bad = EXAMPLE.replace("role = \"replica\"", "role = \"primary\"");
        assert_eq!(Config::parse(&bad).unwrap_err().key, "backends");
    }

    #[test]
    fn missing_password_env_is_named() {
        let bad = EXAMPLE.replace(
            "password = \"app\"",
            "password_env = \"SLUICE_TEST_SURELY_UNSET\"",
        );
        let err = Config::parse(&bad).unwrap_err();
        assert_eq!(err.key, "users[0].password_env");
    }

    #[test]
    fn monitor_and_freshness_keys() {
        let text = format!(
            "{EXAMPLE}\n[monitor]\nuser = \"mon\"\npassword = \"pw\"\ninterval_ms = 200\nfollow_read_only = true\n"
        )
        .replace(
            "mode = \"primary_only\"",
            "mode = \"split\"\nread_your_writes = \"gtid\"\nmax_replica_lag_ms = 500\non_no_replica = \"error\"",
        );
        let c = Config::parse(&text).unwrap();
        assert_eq!(c.monitor_account(), Some(("mon", "pw")));
        assert_eq!(c.monitor.interval_ms, 200);
        assert_eq!(c.monitor.heartbeat(), Some(("sluice", "heartbeat")));
        assert_eq!(c.routing.max_replica_lag_ms, 500);
        assert_eq!(c.routing.read_your_writes, crate::ReadYourWrites::Gtid);
        assert_eq!(c.routing.on_no_replica, crate::OnNoReplica::Error);
        let plain = Config::parse(EXAMPLE).unwrap();
        assert_eq!(
            plain.monitor_account(),
            Some(("app", "app")),
            "defaults to the first user"
        );
        let bad = format!("{EXAMPLE}\n[monitor]\nheartbeat_table = \"no-dots\"\n");
        assert_eq!(Config::parse(&bad).unwrap_err().key, "monitor.heartbeat_table");
    }

    #[test]
    fn digests_keys() {
        let plain = Config::parse(EXAMPLE).unwrap();
        assert!(plain.digests.enabled);
        assert_eq!(plain.digests.max_entries, 1000);
        let set = Config::parse(&format!(
            "{EXAMPLE}\n[digests]\nenabled = false\nmax_entries = 5\n"
        ))
        .unwrap();
        assert!(!set.digests.enabled);
        assert_eq!(set.digests.max_entries, 5);
        let zero = format!("{EXAMPLE}\n[digests]\nmax_entries = 0\n");
        assert_eq!(Config::parse(&zero).unwrap_err().key, "digests.max_entries");
    }

    /// A directory with a CA certificate and a key in PEM (the content is
    /// only parsed as PEM here, so fixed test blocks are enough).
    fn tls_files(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("sluice-config-tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("ca.pem"),
            "-----BEGIN CERTIFICATE-----\nAAEC\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("client.key"),
            "-----BEGIN PRIVATE KEY-----\nAAEC\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        std::fs::write(dir.join("empty.pem"), "not pem\n").unwrap();
        dir
    }

    fn with_replica_tls(extra: &str) -> String {
        EXAMPLE.replace("role = \"replica\"", &format!("role = \"replica\"\n{extra}"))
    }

    #[test]
    fn backend_tls_defaults_to_preferred() {
        let c = Config::parse(EXAMPLE).unwrap();
        assert_eq!(c.backends[1].tls, crate::BackendTlsMode::Preferred);
        assert_eq!(c.backends[1].tls_settings(), crate::BackendTls::default());
        let c = Config::parse(&with_replica_tls("tls = \"disabled\"")).unwrap();
        assert_eq!(c.backends[1].tls, crate::BackendTlsMode::Disabled);
        let c = Config::parse(&with_replica_tls("tls = \"required\"")).unwrap();
        assert_eq!(c.backends[1].tls, crate::BackendTlsMode::Required);
    }

    #[test]
    fn backend_tls_keys_are_checked() {
        let dir = tls_files("keys");
        let ca = dir.join("ca.pem").display().to_string();
        let key = dir.join("client.key").display().to_string();
        let empty = dir.join("empty.pem").display().to_string();
        let err = |extra: &str| Config::parse(&with_replica_tls(extra)).unwrap_err();

        // Verifying modes need a CA; other modes refuse one (it would check nothing).
        let e = err("tls = \"verify_ca\"");
        assert_eq!(e.key, "backends[1].tls_ca_file");
        assert!(e.message.contains("required with tls = \"verify_ca\""), "{e}");
        assert_eq!(err("tls = \"verify_identity\"").key, "backends[1].tls_ca_file");
        let e = err(&format!("tls = \"required\"\ntls_ca_file = \"{ca}\""));
        assert_eq!(e.key, "backends[1].tls_ca_file");
        assert!(e.message.contains("not checked"), "{e}");
        let c = Config::parse(&with_replica_tls(&format!(
            "tls = \"verify_ca\"\ntls_ca_file = \"{ca}\""
        )))
        .unwrap();
        assert_eq!(c.backends[1].tls_settings().ca_file.as_deref(), Some(ca.as_str()));

        // Files must exist and hold the right PEM.
        let e = err("tls = \"verify_ca\"\ntls_ca_file = \"/nonexistent/ca.pem\"");
        assert_eq!(e.key, "backends[1].tls_ca_file");
        assert!(e.message.contains("cannot read"), "{e}");
        let e = err(&format!("tls = \"verify_identity\"\ntls_ca_file = \"{empty}\""));
        assert_eq!(e.key, "backends[1].tls_ca_file");
        assert!(e.message.contains("no PEM certificate"), "{e}");

        // A client certificate comes with its key, both readable.
        assert_eq!(
            err(&format!("tls_cert_file = \"{ca}\"")).key,
            "backends[1].tls_key_file"
        );
        assert_eq!(
            err(&format!("tls_key_file = \"{key}\"")).key,
            "backends[1].tls_cert_file"
        );
        let e = err(&format!("tls_cert_file = \"{ca}\"\ntls_key_file = \"{ca}\""));
        assert_eq!(e.key, "backends[1].tls_key_file");
        assert!(e.message.contains("no PEM private key"), "{e}");
        let e = err(&format!(
            "tls = \"disabled\"\ntls_cert_file = \"{ca}\"\ntls_key_file = \"{key}\""
        ));
        assert_eq!(e.key, "backends[1].tls_cert_file");
        Config::parse(&with_replica_tls(&format!(
            "tls = \"required\"\ntls_cert_file = \"{ca}\"\ntls_key_file = \"{key}\""
        )))
        .unwrap();

        // Unknown modes and keys are refused by name.
        assert!(err("tls = \"on\"").to_string().contains("tls"));
        assert!(err("tls_ca = \"x\"").to_string().contains("tls_ca"));
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn bad_enum_value_is_named() {
        let bad = EXAMPLE.replace("\"primary_only\"", "\"sideways\"");
        let err = Config::parse(&bad).unwrap_err();
        assert!(err.to_string().contains("mode"), "{err}");
    }
}
