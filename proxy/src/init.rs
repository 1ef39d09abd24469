//! `sluice init`: a starting config from a running primary. Its replicas come
//! from `SHOW SLAVE HOSTS`, or, when that lists none (or is not permitted),
//! from the primary's Binlog Dump threads, whose host carries no port.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// What `init` was asked for (the CLI's arguments).
#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// The primary, HOST:PORT.
    #[arg(long, value_name = "HOST:PORT")]
    pub primary: String,
    /// Account to connect as (SHOW SLAVE HOSTS needs REPLICATION MASTER ADMIN,
    /// the processlist fallback PROCESS).
    #[arg(long, value_name = "USER")]
    pub user: String,
    /// Read the password from this file's first line instead of stdin.
    #[arg(long, value_name = "PATH")]
    pub password_file: Option<PathBuf>,
    /// Write the config here (never overwrites an existing file) instead of stdout.
    #[arg(long, value_name = "PATH")]
    pub output: Option<PathBuf>,
    /// The config's server.listen.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:6033")]
    pub listen: String,
    /// The config's server.admin_listen.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:9033")]
    pub admin_listen: String,
}

/// The placeholder password in the config `init` writes; `check-config` warns about it.
pub const PLACEHOLDER: &str = "CHANGE-ME";

/// Limit for connecting to the primary and asking it.
const TIMEOUT: Duration = Duration::from_secs(10);

struct Replica {
    host: String,
    port: u16,
    server_id: Option<u32>,
    /// From the processlist: the port is the primary's, not known.
    port_assumed: bool,
}

struct Discovery {
    server_id: u32,
    version: String,
    read_only: bool,
    /// Where the replicas came from, for the config's comment.
    source: &'static str,
    replicas: Vec<Replica>,
    notes: Vec<String>,
}

pub fn run(args: InitArgs) -> ExitCode {
    let password = match read_password(args.password_file.as_deref()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("sluice init: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sluice init: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let found = runtime.block_on(async {
        tokio::time::timeout(TIMEOUT, discover(&args.primary, &args.user, &password)).await
    });
    let found = match found {
        Ok(Ok(found)) => found,
        Ok(Err(e)) => {
            eprintln!("sluice init: {}: {e}", args.primary);
            return ExitCode::FAILURE;
        }
        Err(_) => {
            eprintln!(
                "sluice init: {}: no answer within {} s",
                args.primary,
                TIMEOUT.as_secs()
            );
            return ExitCode::FAILURE;
        }
    };
    for note in &found.notes {
        eprintln!("sluice init: {note}");
    }
    let text = render(&args, &found);
    match &args.output {
        None => print!("{text}"),
        Some(path) => {
            if let Err(e) = write_new(path, &text) {
                eprintln!("sluice init: {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
            eprintln!(
                "sluice init: wrote {} (the primary and {} replica(s), from {}); replace the {PLACEHOLDER} \
                 passwords, then run `sluice check-config {}`",
                path.display(),
                found.replicas.len(),
                found.source,
                path.display()
            );
        }
    }
    ExitCode::SUCCESS
}

/// The password from the file, or one line of stdin (echo off on a terminal);
/// a trailing newline is not part of it.
fn read_password(file: Option<&Path>) -> Result<String, String> {
    let raw = match file {
        Some(path) => std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?,
        None => {
            let _echo = EchoOff::on_terminal();
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .map_err(|e| format!("cannot read the password from stdin: {e}"))?;
            line
        }
    };
    let line = raw.lines().next().unwrap_or("");
    Ok(line.strip_suffix('\r').unwrap_or(line).to_string())
}

/// Terminal echo off while the password is typed, restored on drop.
struct EchoOff(Option<libc::termios>);

impl EchoOff {
    fn on_terminal() -> EchoOff {
        // SAFETY: isatty/tcgetattr/tcsetattr on fd 0 only read and write the struct we pass.
        unsafe {
            if libc::isatty(0) != 1 {
                return EchoOff(None);
            }
            eprint!("password: ");
            let mut saved: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut saved) != 0 {
                return EchoOff(None);
            }
            let mut quiet = saved;
            quiet.c_lflag &= !libc::ECHO;
            if libc::tcsetattr(0, libc::TCSANOW, &quiet) != 0 {
                return EchoOff(None);
            }
            EchoOff(Some(saved))
        }
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        if let Some(saved) = self.0 {
            // SAFETY: restores the attributes read in on_terminal.
            unsafe { libc::tcsetattr(0, libc::TCSANOW, &saved) };
            eprintln!();
        }
    }
}

async fn discover(primary: &str, user: &str, password: &str) -> anyhow::Result<Discovery> {
    use mysql_async::prelude::Queryable;
    let tls = sluice_config::BackendTls {
        mode: sluice_config::BackendTlsMode::Preferred,
        ca_file: None,
        cert_file: None,
        key_file: None,
    };
    let mut conn = sluice_pool::monitor::connect(primary, user, password, &tls).await?;
    let (server_id, version, read_only, port): (u32, String, bool, u16) = conn
        .query_first("SELECT @@server_id, @@version, @@read_only, @@port")
        .await?
        .ok_or_else(|| anyhow::anyhow!("SELECT @@server_id returned no row"))?;
    let mut notes = Vec::new();
    if read_only {
        notes.push(format!(
            "warning: {primary} is read-only (@@read_only = 1): is it a replica? Sluice sends writes to the primary"
        ));
    }
    let mut replicas = Vec::new();
    // Server_id, Host, Port, ... in MariaDB and MySQL alike.
    match conn.query::<mysql_async::Row, _>("SHOW SLAVE HOSTS").await {
        Ok(rows) => {
            for row in rows {
                let id: Option<u32> = row.get(0);
                let host: Option<String> = row.get(1);
                let rport: Option<u16> = row.get(2);
                let (Some(host), Some(rport)) = (host.filter(|h| !h.is_empty()), rport) else {
                    notes.push(format!(
                        "SHOW SLAVE HOSTS: server_id {} reports no host (set report_host on it); not included",
                        id.unwrap_or(0)
                    ));
                    continue;
                };
                if rport == 0 {
                    // Binlog readers that are not servers (another Sluice's guard, CDC tools).
                    notes.push(format!(
                        "SHOW SLAVE HOSTS: server_id {} at {host} reports port 0 (a binlog reader, not a server); not included",
                        id.unwrap_or(0)
                    ));
                    continue;
                }
                replicas.push(Replica {
                    host,
                    port: rport,
                    server_id: id,
                    port_assumed: false,
                });
            }
        }
        Err(e) => notes.push(format!("SHOW SLAVE HOSTS failed ({e}); trying the processlist")),
    }
    let mut source = "SHOW SLAVE HOSTS";
    if replicas.is_empty() {
        source = "the processlist's Binlog Dump threads";
        let hosts: Vec<String> = conn
            .query(
                "SELECT DISTINCT HOST FROM information_schema.PROCESSLIST \
                 WHERE COMMAND LIKE 'Binlog Dump%' ORDER BY HOST",
            )
            .await?;
        let mut seen: Vec<String> = Vec::new();
        for host in hosts {
            let host = strip_client_port(&host);
            if host.is_empty() || seen.contains(&host) {
                continue;
            }
            seen.push(host.clone());
            replicas.push(Replica {
                host,
                port,
                server_id: None,
                port_assumed: true,
            });
        }
        if !replicas.is_empty() {
            notes.push(format!(
                "the processlist shows no replica's port: port {port} (the primary's) is assumed for each; check them \
                 (setting report_host on the replicas makes SHOW SLAVE HOSTS list them with their ports)"
            ));
        } else {
            notes.push(
                "no replica found (SHOW SLAVE HOSTS and the processlist list none; the processlist needs the PROCESS \
                 privilege): the config routes everything to the primary"
                    .to_string(),
            );
        }
    }
    replicas.sort_by(|a, b| (a.server_id, &a.host, a.port).cmp(&(b.server_id, &b.host, b.port)));
    // COM_QUIT, so the server does not log an aborted connection; a failure
    // here changes nothing about what was found.
    let _ = conn.disconnect().await;
    Ok(Discovery {
        server_id,
        version,
        read_only,
        source,
        replicas,
        notes,
    })
}

/// `10.0.0.7:51234` or `[::1]:51234` is the replica's own ephemeral port.
fn strip_client_port(host: &str) -> String {
    let bare = match host.rsplit_once(':') {
        Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    bare.trim_start_matches('[').trim_end_matches(']').to_string()
}

fn address(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn render(args: &InitArgs, found: &Discovery) -> String {
    let mode = if found.replicas.is_empty() {
        r#"mode = "primary_only"                # no replica was found: everything to the primary"#
    } else {
        r#"mode = "split"                       # reads to replicas, writes to the primary"#
    };
    let mut out = format!(
        r#"# Sluice config written by `sluice init` from the primary {primary}
# (server_id {server_id}, {version}). Every key is described in the README's
# "Configuration". Replace each "{PLACEHOLDER}", then: sluice check-config THIS_FILE

[server]
listen = "{listen}"            # where applications connect
admin_listen = "{admin}"      # /metrics, /healthz, /status: keep it on loopback
max_client_connections = 10000
shutdown_timeout_ms = 30000          # SIGTERM: how long running statements may finish

# The account(s) applications log in with. Each must exist with the same password
# on every backend: Sluice logs in to them as that user. Instead of the clear
# password: password_env = "VAR" or password_hash (`sluice hash-password`).
[[users]]
name = "app"
password = "{PLACEHOLDER}"

[pool]
max_connections_per_backend = 50     # per backend and user
acquire_timeout_ms = 2000            # then error 9001

[routing]
{mode}
read_your_writes = "gtid"            # a session's reads see its own writes ("universal"
                                     # across connections and Sluice instances)
max_replica_lag_ms = 1000            # replicas further behind get no reads
causal_wait_ms = 100

# The monitor's account (the replicas' lag, read_only, the heartbeat):
#   CREATE USER 'sluice_monitor'@'%' IDENTIFIED BY '...';
#   GRANT SLAVE MONITOR ON *.* TO 'sluice_monitor'@'%';
#   GRANT CREATE, INSERT, UPDATE, SELECT ON sluice.* TO 'sluice_monitor'@'%';
[monitor]
user = "sluice_monitor"
password = "{PLACEHOLDER}"
interval_ms = 500
heartbeat_table = "sluice.heartbeat"
follow_read_only = true              # writes follow a promotion (never two writers)

[[backends]]
name = "primary"
address = "{primary_addr}"{primary_note}
role = "primary"
# tls = "preferred"                  # disabled | preferred | required | verify_ca | verify_identity
"#,
        primary = args.primary,
        server_id = found.server_id,
        version = found.version,
        listen = args.listen,
        admin = args.admin_listen,
        primary_addr = args.primary,
        primary_note = if found.read_only {
            "  # read-only when `sluice init` ran: check it is the primary"
        } else {
            ""
        },
    );
    for (i, replica) in found.replicas.iter().enumerate() {
        let why = match (replica.server_id, replica.port_assumed) {
            (_, true) => format!("# from {}: port assumed, check it", found.source),
            (Some(id), false) => format!("# server_id {id}, from {}", found.source),
            (None, false) => format!("# from {}", found.source),
        };
        out.push_str(&format!(
            "\n[[backends]]\nname = \"replica{}\"\naddress = \"{}\"  {why}\nrole = \"replica\"\n",
            i + 1,
            address(&replica.host, replica.port)
        ));
    }
    out
}

/// Never overwrites: a config is an operator's file. Group-readable, so
/// the `sluice` group can read it once the file is given to it.
fn write_new(path: &Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o640)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => std::io::Error::new(
                e.kind(),
                "already exists; not overwritten (choose another --output)",
            ),
            _ => e,
        })?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_port_is_dropped() {
        assert_eq!(strip_client_port("10.0.0.7:51234"), "10.0.0.7");
        assert_eq!(strip_client_port("[::1]:51234"), "::1");
        assert_eq!(strip_client_port("db-2.example"), "db-2.example");
        assert_eq!(address("::1", 3306), "[::1]:3306");
    }
}
