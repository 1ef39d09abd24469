//! `sluice top`: a running Sluice's query digests (`GET /digests` on its
//! admin endpoint), redrawn every second like `top`. With `--once`, or when
//! stdout is not a terminal, one plain snapshot without escape codes.

use serde_json::Value;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

pub struct Options {
    /// `HOST:PORT` of the admin endpoint.
    pub admin: String,
    pub token: Option<String>,
    pub sort: String,
    pub once: bool,
    /// Rows to show; by default what fits the terminal (all when plain).
    pub limit: Option<usize>,
}

const REFRESH: Duration = Duration::from_secs(1);

pub fn run(opts: &Options) -> ExitCode {
    let live = !opts.once && std::io::stdout().is_terminal();
    let agent = crate::healthcheck::agent(Duration::from_secs(5));
    loop {
        let (width, height) = if live { terminal_size() } else { (usize::MAX, 0) };
        // Two header lines and one for the cursor.
        let fits = height.saturating_sub(3).max(1);
        let limit = opts.limit.unwrap_or(if live { fits } else { usize::MAX });
        let fetched = fetch(&agent, opts, limit);
        if !live {
            return match fetched {
                Ok(view) => {
                    print!("{}", render(&view, opts, width));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("sluice top: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        let screen = match fetched {
            Ok(view) => render(&view, opts, width),
            Err(e) => format!("sluice top: {e} (retrying every second)\n"),
        };
        // Home, clear, draw.
        let mut out = std::io::stdout().lock();
        let _ = write!(out, "\x1b[H\x1b[2J{screen}");
        let _ = out.flush();
        drop(out);
        std::thread::sleep(REFRESH);
    }
}

fn fetch(agent: &ureq::Agent, opts: &Options, limit: usize) -> Result<Value, String> {
    let mut url = format!("http://{}/digests?sort={}", opts.admin, opts.sort);
    if limit != usize::MAX {
        url.push_str(&format!("&limit={limit}"));
    }
    let mut request = agent.get(&url);
    if let Some(token) = &opts.token {
        request = request.header("Authorization", &format!("Bearer {token}"));
    }
    let mut response = request
        .call()
        .map_err(|e| format!("cannot reach the admin endpoint {}: {e}", opts.admin))?;
    let status = response.status();
    let body = response
        .body_mut()
        .read_to_string()
        .map_err(|e| format!("reading the answer of {}: {e}", opts.admin))?;
    if !status.is_success() {
        return Err(format!("{} answered {status}: {}", opts.admin, body.trim()));
    }
    serde_json::from_str(&body)
        .map_err(|e| format!("{} answered something that is not digests JSON: {e}", opts.admin))
}

/// The table; fingerprints are cut to `width` columns.
fn render(view: &Value, opts: &Options, width: usize) -> String {
    let rows = view["digests"].as_array().map(Vec::as_slice).unwrap_or_default();
    let title = format!(
        "sluice top - {} - {} fingerprints (max {}){} - sorted by {} - {} UTC",
        opts.admin,
        view["fingerprints"].as_u64().unwrap_or(0),
        view["max_entries"].as_u64().unwrap_or(0),
        if view["enabled"].as_bool() == Some(false) {
            " - RECORDING DISABLED"
        } else {
            ""
        },
        view["sort"].as_str().unwrap_or(&opts.sort),
        clock(),
    );
    let mut out = cut(&title, width);
    out.push('\n');
    let routes: Vec<String> = rows.iter().map(|r| routes(&r["routes"])).collect();
    let routes_width = routes.iter().map(String::len).max().unwrap_or(0).max(6);
    let head = format!(
        "{:>9} {:>6} {:>9} {:>9} {:>9} {:>10} {:<routes_width$} ",
        "COUNT", "ERRORS", "MEAN_MS", "MAX_MS", "TOTAL_S", "ROWS", "ROUTES"
    );
    let room = width.saturating_sub(head.len()).max(12);
    out.push_str(&head);
    out.push_str("FINGERPRINT\n");
    for (row, routes) in rows.iter().zip(routes) {
        let n = |k: &str| row[k].as_u64().unwrap_or(0);
        let mut text = row["fingerprint"].as_str().unwrap_or("").to_string();
        if row["truncated"].as_bool() == Some(true) {
            text.push_str("...");
        }
        out.push_str(&format!(
            "{:>9} {:>6} {:>9.3} {:>9.3} {:>9.3} {:>10} {:<routes_width$} {}\n",
            n("count"),
            n("errors"),
            n("mean_time_us") as f64 / 1000.0,
            n("max_time_us") as f64 / 1000.0,
            n("total_time_us") as f64 / 1e6,
            n("rows_sent"),
            routes,
            cut(&text, room),
        ));
    }
    out
}

/// Nonzero routes as `replica=40 primary=2`.
fn routes(routes: &Value) -> String {
    let Some(map) = routes.as_object() else {
        return String::new();
    };
    map.iter()
        .filter_map(|(k, v)| v.as_u64().filter(|n| *n > 0).map(|n| format!("{k}={n}")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// At most `room` characters; a cut one ends in `~`.
fn cut(text: &str, room: usize) -> String {
    if text.chars().count() <= room {
        return text.to_string();
    }
    let mut s: String = text.chars().take(room.saturating_sub(1)).collect();
    s.push('~');
    s
}

/// The wall clock as HH:MM:SS (UTC).
fn clock() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!("{:02}:{:02}:{:02}", secs / 3600 % 24, secs / 60 % 60, secs % 60)
}

/// (columns, rows) of the terminal on stdout; 80x24 if unknown.
fn terminal_size() -> (usize, usize) {
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ only writes the winsize struct we pass.
    let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size) } == 0;
    if ok && size.ws_col > 0 && size.ws_row > 0 {
        (usize::from(size.ws_col), usize::from(size.ws_row))
    } else {
        (80, 24)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_table_has_every_fingerprint_uncut() {
        let view = serde_json::json!({
            "enabled": true, "max_entries": 10, "sort": "count", "fingerprints": 1,
            "digests": [{"fingerprint": "SELECT c FROM t WHERE id = ?", "truncated": false,
                "count": 3, "errors": 1, "total_time_us": 3000, "mean_time_us": 1000,
                "max_time_us": 2000, "rows_sent": 3,
                "routes": {"primary": 0, "replica": 3, "held": 0, "guard": 0, "local": 0, "none": 0}}]
        });
        let opts = Options {
            admin: "x".into(),
            token: None,
            sort: "count".into(),
            once: true,
            limit: None,
        };
        let text = render(&view, &opts, usize::MAX);
        assert!(text.contains("SELECT c FROM t WHERE id = ?"), "{text}");
        assert!(text.contains("replica=3"), "{text}");
        assert!(!text.contains('\x1b'));
        assert_eq!(cut("abcdef", 4), "abc~");
    }
}
