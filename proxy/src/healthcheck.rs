//! `sluice healthcheck`: one HTTP GET of the admin endpoint's `/healthz`,
//! exit 0 on 200 and 1 otherwise, so a container's HEALTHCHECK needs no curl.
//! Also where the CLI's admin clients (`healthcheck`, `top`) find the admin
//! endpoint and get their HTTP agent.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

/// `server.admin_listen`'s default (sluice-config's).
const DEFAULT_ADMIN: &str = "127.0.0.1:9033";
/// Short: a health check that hangs is a failed one.
const TIMEOUT: Duration = Duration::from_secs(3);

pub fn run(url: Option<String>, config: Option<&Path>) -> ExitCode {
    let url = match url {
        Some(url) => url,
        None => match admin_address(config) {
            Ok(addr) => format!("http://{addr}/healthz"),
            Err(e) => {
                eprintln!("sluice healthcheck: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    match agent(TIMEOUT).get(&url).call() {
        Ok(response) if response.status() == 200 => ExitCode::SUCCESS,
        Ok(response) => {
            eprintln!("sluice healthcheck: {url}: HTTP {}", response.status());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("sluice healthcheck: {url}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// An HTTP agent for the admin endpoint: statuses are answers, not errors,
/// and no proxy from the environment stands between it and loopback.
pub(crate) fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .proxy(None)
        .max_redirects(0)
        .build()
        .into()
}

/// The admin endpoint as a client on this host reaches it: `config`'s
/// `server.admin_listen` (the default without a config or the key), a
/// wildcard address replaced by loopback.
pub(crate) fn admin_address(config: Option<&Path>) -> Result<String, String> {
    admin_listen(config).map(|addr| loopback_for(&addr))
}

/// Only `server.admin_listen` is read (not the whole config), so a check
/// never fails on what the check does not use, such as a backend's DNS name.
fn admin_listen(config: Option<&Path>) -> Result<String, String> {
    let Some(path) = config else {
        return Ok(DEFAULT_ADMIN.to_string());
    };
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let table: toml::Table = text.parse().map_err(|e| format!("{}: {e}", path.display()))?;
    match table.get("server").and_then(|s| s.get("admin_listen")) {
        None => Ok(DEFAULT_ADMIN.to_string()),
        Some(toml::Value::String(addr)) => Ok(addr.clone()),
        Some(_) => Err(format!("{}: server.admin_listen is not a string", path.display())),
    }
}

/// A wildcard listen is reached on loopback.
fn loopback_for(addr: &str) -> String {
    match addr.rsplit_once(':') {
        Some(("0.0.0.0" | "", port)) => format!("127.0.0.1:{port}"),
        Some(("[::]", port)) => format!("[::1]:{port}"),
        _ => addr.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_become_loopback() {
        assert_eq!(loopback_for("0.0.0.0:9033"), "127.0.0.1:9033");
        assert_eq!(loopback_for("[::]:9"), "[::1]:9");
        assert_eq!(loopback_for("10.0.0.5:9033"), "10.0.0.5:9033");
        assert_eq!(loopback_for(":9033"), "127.0.0.1:9033");
    }

    #[test]
    fn admin_address_comes_from_the_config() {
        let dir = std::env::temp_dir().join(format!("sluice-admin-address-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sluice.toml");
        std::fs::write(&path, "[server]\nadmin_listen = \"0.0.0.0:9100\"\n").unwrap();
        assert_eq!(admin_address(Some(&path)).unwrap(), "127.0.0.1:9100");
        std::fs::write(&path, "[server]\n").unwrap();
        assert_eq!(admin_address(Some(&path)).unwrap(), DEFAULT_ADMIN);
        std::fs::write(&path, "[server]\nadmin_listen = 9100\n").unwrap();
        assert!(admin_address(Some(&path)).unwrap_err().contains("not a string"));
        assert_eq!(admin_address(None).unwrap(), DEFAULT_ADMIN);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
