//! Sluice's typed configuration: the TOML file as serde structs, defaults,
//! and validation that names the offending key. The proxy holds the current
//! [`Config`] behind an `ArcSwap` and replaces it whole on reload, so
//! everything here is plain immutable data.

mod model;
mod secret;
mod validate;

pub use model::{
    AuthPluginName, BackendConfig, BackendTls, BackendTlsMode, Config, DigestsConfig, GuardConfig,
    GuardTableConfig, LogConfig, LogFormat, MonitorConfig, OnNoReplica, PoolConfig, PoolMode, ReadYourWrites,
    Role, RoutingConfig, RoutingMode, ServerConfig, ServerTlsConfig, UserConfig, instance_id,
};
pub use secret::Secret;
pub use validate::{ConfigError, host_of};

/// Parses a mysql_native_password hash as `SELECT PASSWORD('...')` prints
/// it: `*` and 40 hex digits (either case), SHA1(SHA1(password)).
pub fn parse_native_hash(text: &str) -> Option<[u8; 20]> {
    let hex = text.strip_prefix('*')?.as_bytes();
    if hex.len() != 40 {
        return None;
    }
    let mut out = [0u8; 20];
    for (i, pair) in hex.chunks(2).enumerate() {
        let digits = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(digits, 16).ok()?;
    }
    Some(out)
}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &std::path::Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            key: String::new(),
            message: format!("cannot read {}: {e}", path.display()),
        })?;
        Config::parse(&text)
    }

    /// Parses and validates TOML text, resolving `password_env`.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(ConfigError::from_toml)?;
        validate::validate(&mut config, |name| std::env::var(name).ok())?;
        Ok(config)
    }

    /// The effective configuration as TOML, passwords redacted.
    pub fn to_effective_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }

    pub fn primary(&self) -> Option<&BackendConfig> {
        self.backends.iter().find(|b| b.role == Role::Primary)
    }

    pub fn user(&self, name: &str) -> Option<&UserConfig> {
        self.users.iter().find(|u| u.name == name)
    }

    /// The account the monitor uses: `[monitor]` user, else the first user.
    pub fn monitor_account(&self) -> Option<(&str, &str)> {
        match &self.monitor.user {
            Some(user) => Some((
                user.as_str(),
                self.monitor.password.as_ref().map(Secret::expose).unwrap_or(""),
            )),
            None => self.users.first().map(|u| (u.name.as_str(), u.secret())),
        }
    }
}
