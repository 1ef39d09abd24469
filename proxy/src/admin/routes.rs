//! The admin endpoints: one row per method and path. A new endpoint is a
//! row here and a `fn(&Call) -> Reply` (query parameters via
//! [`Call::param`], a POST's body in [`Call::body`]).

use super::{Call, Reply, status};
use hyper::{Method, StatusCode};

pub struct Route {
    pub method: Method,
    pub path: &'static str,
    /// Answers without the bearer token: load balancers probe it.
    pub open: bool,
    pub handler: fn(&Call) -> Reply,
}

static ROUTES: &[Route] = &[
    Route {
        method: Method::GET,
        path: "/metrics",
        open: false,
        handler: metrics,
    },
    Route {
        method: Method::GET,
        path: "/healthz",
        open: true,
        handler: healthz,
    },
    Route {
        method: Method::GET,
        path: "/readyz",
        open: true,
        handler: readyz,
    },
    Route {
        method: Method::GET,
        path: "/status",
        open: false,
        handler: status,
    },
    Route {
        method: Method::GET,
        path: "/digests",
        open: false,
        handler: digests,
    },
    Route {
        method: Method::POST,
        path: "/digests/reset",
        open: false,
        handler: digests_reset,
    },
];

/// The routes for `path` (one per method), None when the path is unknown.
pub fn by_path(path: &str) -> Option<Vec<&'static Route>> {
    let found: Vec<&Route> = ROUTES.iter().filter(|r| r.path == path).collect();
    (!found.is_empty()).then_some(found)
}

pub fn not_found_text() -> String {
    let endpoints: Vec<String> = ROUTES
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    format!("not found; endpoints: {}\n", endpoints.join(", "))
}

fn metrics(call: &Call) -> Reply {
    Reply::ok(
        "text/plain; version=0.0.4",
        crate::metrics::render(&call.admin.handle),
    )
}

fn healthz(_: &Call) -> Reply {
    Reply::ok("text/plain", "ok\n".to_string())
}

fn readyz(call: &Call) -> Reply {
    match call.admin.shared.readiness.check() {
        Ok(()) => Reply::ok("text/plain", "ready\n".to_string()),
        Err(reason) => Reply::text(StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")),
    }
}

fn status(call: &Call) -> Reply {
    Reply::ok("application/json", status::status_json(&call.admin.shared))
}

/// `GET /digests?sort=&limit=` (no limit: every row).
fn digests(call: &Call) -> Reply {
    let sort = call.param("sort").unwrap_or_default();
    let limit = match call.param("limit") {
        None => usize::MAX,
        Some(value) => match value.parse() {
            Ok(n) => n,
            Err(_) => {
                super::refused("bad_query");
                return Reply::text(
                    StatusCode::BAD_REQUEST,
                    format!("bad limit `{value}`: expected a number of rows\n"),
                );
            }
        },
    };
    match crate::digests_json::render_json(&sort, limit) {
        Ok(body) => Reply::ok("application/json", body),
        Err(e) => {
            super::refused("bad_query");
            Reply::text(StatusCode::BAD_REQUEST, format!("{e}\n"))
        }
    }
}

fn digests_reset(_: &Call) -> Reply {
    tracing::info!("query digests reset through the admin endpoint");
    Reply::ok("application/json", crate::digests_json::reset())
}
