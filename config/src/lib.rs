//! Sluice's typed configuration: the TOML file as serde structs, defaults,
//! and validation that names the offending key. The proxy holds the current
//! [`Config`] behind an `ArcSwap` and replaces it whole on reload, so
//! everything here is plain immutable data.

mod model;
mod secret;
mod validate;

pub use model::{
    BackendConfig, BackendTls, BackendTlsMode, Config, GuardConfig, GuardTableConfig, LogConfig, LogFormat,
    MonitorConfig, OnNoReplica, PoolConfig, PoolMode, ReadYourWrites, Role, RoutingConfig, RoutingMode,
    ServerConfig, UserConfig,
};
pub use secret::Secret;
pub use validate::{ConfigError, host_of};

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
