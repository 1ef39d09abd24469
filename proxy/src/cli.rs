//! Command line: `sluice --config PATH`, `sluice check-config PATH`,
//! `sluice healthcheck`, `sluice init`, `sluice hash-password`, `sluice top`.

use clap::{Parser, Subcommand};
use sluice_config::{Config, LogFormat};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "sluice",
    version,
    about = "A MySQL-wire proxy: pooling, read/write split, Prometheus metrics"
)]
struct Cli {
    /// Config file (TOML) to run with (`healthcheck` and `top` read its
    /// admin_listen).
    #[arg(long, short = 'c', value_name = "PATH", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate a config file and print the effective config (passwords redacted).
    CheckConfig {
        #[arg(value_name = "PATH")]
        path: PathBuf,
    },
    /// Print the `password_hash` for the password read from stdin (the
    /// mysql_native_password hash `SELECT PASSWORD('...')` prints).
    HashPassword,
    /// GET the admin endpoint's /healthz once: exit 0 on HTTP 200, 1 otherwise
    /// (a container HEALTHCHECK without curl).
    Healthcheck {
        /// Default: http://ADMIN/healthz, ADMIN being --config's server.admin_listen
        /// (a wildcard address becomes loopback), else 127.0.0.1:9033.
        #[arg(long, value_name = "URL")]
        url: Option<String>,
    },
    /// Print (or write) a starting config from a running primary: its replicas
    /// come from SHOW SLAVE HOSTS, else from its Binlog Dump threads. The
    /// password is read from stdin or --password-file.
    Init(crate::init::InitArgs),
    /// Show the query digests of a running Sluice live, like `top`
    /// (polls its admin endpoint's /digests every second).
    Top {
        /// Admin endpoint HOST:PORT [default: server.admin_listen of
        /// --config, else 127.0.0.1:9033].
        #[arg(long, value_name = "HOST:PORT")]
        admin: Option<String>,
        /// Bearer token for the admin endpoint (sent as `Authorization: Bearer ...`).
        #[arg(long, value_name = "TOKEN")]
        token: Option<String>,
        /// Order, largest first.
        #[arg(long, default_value = "total_time",
              value_parser = clap::builder::PossibleValuesParser::new(crate::digests_json::SORTS))]
        sort: String,
        /// Rows to show [default: what fits the terminal; all with --once].
        #[arg(long)]
        limit: Option<usize>,
        /// Print one plain snapshot and exit (also what happens when stdout
        /// is not a terminal).
        #[arg(long)]
        once: bool,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match (cli.command, cli.config) {
        (Some(Command::CheckConfig { path }), _) => check_config(&path),
        (Some(Command::HashPassword), _) => hash_password(),
        (Some(Command::Healthcheck { url }), config) => crate::healthcheck::run(url, config.as_deref()),
        (Some(Command::Init(args)), _) => crate::init::run(args),
        (
            Some(Command::Top {
                admin,
                token,
                sort,
                limit,
                once,
            }),
            config,
        ) => {
            let admin = match admin.map_or_else(|| crate::healthcheck::admin_address(config.as_deref()), Ok) {
                Ok(admin) => admin,
                Err(e) => {
                    eprintln!("sluice top: {e}");
                    return ExitCode::FAILURE;
                }
            };
            crate::top::run(&crate::top::Options {
                admin,
                token,
                sort,
                once,
                limit,
            })
        }
        (None, Some(path)) => run(&path),
        (None, None) => {
            eprintln!("sluice: missing --config PATH (see sluice --help)");
            ExitCode::from(2)
        }
    }
}

fn check_config(path: &std::path::Path) -> ExitCode {
    match Config::load(path) {
        Ok(config) => {
            if let Err(e) = security_files_ok(&config) {
                eprintln!("sluice: {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
            if !guard_tables_ok(path, &config) {
                return ExitCode::FAILURE;
            }
            warn_placeholders(&config);
            print!("{}", config.to_effective_toml());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sluice: {}: {e}", path.display());
            ExitCode::FAILURE
        }
    }
}

/// The certificate, key and RSA files load as they would at start.
fn security_files_ok(config: &Config) -> Result<(), String> {
    if let Some(tls) = &config.server.tls {
        crate::tls::server_config(tls)?;
    }
    crate::auth::AuthState::default().configure(config)?;
    if let Some(warning) = crate::admin::exposure_warning(config) {
        eprintln!("sluice: warning: {warning}");
    }
    if config.pool.min_idle > 0 {
        for user in config.users.iter().filter(|u| u.password_hash.is_some()) {
            eprintln!(
                "sluice: warning: pool.min_idle = {}: user '{}' has only a password_hash; its backend connections open after its first login",
                config.pool.min_idle, user.name
            );
        }
    }
    Ok(())
}

/// `sluice init`'s placeholder passwords left in: valid, but no login works.
fn warn_placeholders(config: &Config) {
    let placeholder = |p: &Option<sluice_config::Secret>| {
        p.as_ref().is_some_and(|p| p.expose() == crate::init::PLACEHOLDER)
    };
    for (i, user) in config.users.iter().enumerate() {
        if placeholder(&user.password) {
            eprintln!(
                "sluice: warning: users[{i}].password is still the `sluice init` placeholder \"{}\"",
                crate::init::PLACEHOLDER
            );
        }
    }
    if placeholder(&config.monitor.password) {
        eprintln!(
            "sluice: warning: monitor.password is still the `sluice init` placeholder \"{}\"",
            crate::init::PLACEHOLDER
        );
    }
}

/// Reads one password from stdin (a trailing newline is not part of it)
/// and prints its hash.
fn hash_password() -> ExitCode {
    let mut line = String::new();
    if let Err(e) = std::io::stdin().read_line(&mut line) {
        eprintln!("sluice: cannot read the password from stdin: {e}");
        return ExitCode::FAILURE;
    }
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.is_empty() {
        eprintln!("sluice: empty password: a user with no password needs `password = \"\"`, not a hash");
        return ExitCode::FAILURE;
    }
    println!("{}", crate::auth::native_hash_text(password));
    ExitCode::SUCCESS
}

/// `[guard]` tables are checked against the primary when it answers: a
/// missing table, a missing column or a key the guard cannot use fails the
/// check with the key named. An unreachable primary is only a warning (the
/// file itself is valid).
fn guard_tables_ok(path: &std::path::Path, config: &Config) -> bool {
    if config.guard.tables.is_empty() {
        return true;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sluice: cannot start the runtime: {e}");
            return false;
        }
    };
    let limit = std::time::Duration::from_millis(config.pool.connect_timeout_ms.max(1000) * 2);
    match runtime.block_on(sluice_guard::verify_config(config, limit)) {
        sluice_guard::Verified::Ok(_) => true,
        sluice_guard::Verified::Problems(problems) => {
            for problem in problems {
                match problem.split_once(": ") {
                    Some((key, why)) => {
                        eprintln!("sluice: {}: invalid config key `{key}`: {why}", path.display())
                    }
                    None => eprintln!("sluice: {}: {problem}", path.display()),
                }
            }
            false
        }
        sluice_guard::Verified::Unreachable(why) => {
            eprintln!(
                "sluice: warning: [guard] tables not checked against the database ({why}); \
                 Sluice checks them again when it starts"
            );
            true
        }
    }
}

fn run(path: &std::path::Path) -> ExitCode {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sluice: {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    };
    init_logging(&config);
    raise_fd_limit();
    // 1: everything on one thread, on Tokio's current-thread scheduler.
    // Otherwise (0: one per CPU core) client sessions run on worker threads
    // with a current-thread runtime each (`workers`), which also accept
    // them, and the admin endpoint and the background tasks on this
    // thread's own.
    let threads = match config.server.worker_threads {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => n,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sluice: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let workers = match threads {
        1 => crate::workers::Workers::local(),
        n => match crate::workers::Workers::start(n) {
            Ok(w) => w,
            Err(e) => {
                eprintln!("sluice: cannot start {n} worker threads (server.worker_threads): {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    // Which scheduler runs, for the operator (and the runtime test).
    match workers.count() {
        0 => tracing::info!(
            "runtime: CurrentThread scheduler, one thread (server.worker_threads = {})",
            config.server.worker_threads
        ),
        n => tracing::info!(
            "runtime: {n} worker threads, each with a CurrentThread scheduler (server.worker_threads = {})",
            config.server.worker_threads
        ),
    }
    let served = runtime.block_on(crate::listener::serve(config, path.to_path_buf(), &workers));
    // The workers' sessions end before the main runtime's tasks.
    drop(workers);
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&config.log.level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(log_colours())
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// Colour codes only for a person at a terminal: journald, log files and
/// `docker logs` would keep them as raw escape bytes. `NO_COLOR` (set and
/// not empty, per no-color.org) turns them off there too.
fn log_colours() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Every client and backend connection is a file descriptor: lift the soft
/// limit to the hard one so `max_client_connections` is reachable.
fn raise_fd_limit() {
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            let wanted = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) != 0 {
                tracing::warn!("cannot raise the open-file limit above {}", lim.rlim_cur);
            }
        }
    }
}
