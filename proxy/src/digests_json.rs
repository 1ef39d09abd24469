//! `GET /digests` as JSON: the merged digest view sorted and limited, and
//! `POST /digests/reset`. Independent of the HTTP server that serves it.

use crate::digests::{self, Route, Row};
use serde_json::{Value, json};

/// The `?sort=` values, the default first.
pub const SORTS: &[&str] = &[
    "total_time",
    "count",
    "mean",
    "max",
    "errors",
    "rows",
    "last_seen",
];

/// The digests, largest first by `sort` (empty: `total_time`), at most
/// `limit` rows. An unknown sort is an error naming the allowed values.
pub fn render_json(sort: &str, limit: usize) -> Result<String, String> {
    let sort = if sort.is_empty() { SORTS[0] } else { sort };
    if !SORTS.contains(&sort) {
        return Err(format!("unknown sort `{sort}`; use one of: {}", SORTS.join(", ")));
    }
    let mut rows = digests::snapshot();
    let fingerprints = rows.len();
    rows.sort_by(|a, b| key(b, sort).cmp(&key(a, sort)).then_with(|| a.text.cmp(&b.text)));
    rows.truncate(limit);
    let body = json!({
        "enabled": digests::enabled(),
        "max_entries": digests::max_entries(),
        "sort": sort,
        "fingerprints": fingerprints,
        "digests": rows.iter().map(row_json).collect::<Vec<_>>(),
    });
    Ok(format!("{body}\n"))
}

/// Empties the view; the JSON answer to `POST /digests/reset`.
pub fn reset() -> String {
    digests::reset();
    "{\"reset\":true}\n".to_string()
}

fn key(row: &Row, sort: &str) -> u64 {
    let s = &row.stats;
    match sort {
        "count" => s.count,
        "mean" => s.mean_ns(),
        "max" => s.max_ns,
        "errors" => s.errors,
        "rows" => s.rows,
        "last_seen" => s.last_seen.map_or(0, digests::unix_seconds),
        _ => s.total_ns,
    }
}

fn row_json(row: &Row) -> Value {
    let s = &row.stats;
    let us = |ns: u64| ns / 1000;
    let routes: serde_json::Map<String, Value> = Route::ALL
        .iter()
        .map(|r| (r.label().to_string(), json!(s.routes[*r as usize])))
        .collect();
    json!({
        "digest": row.hash.map(|h| format!("{h:016x}")),
        "fingerprint": row.text,
        "truncated": row.truncated,
        "count": s.count,
        "errors": s.errors,
        "total_time_us": us(s.total_ns),
        "mean_time_us": us(s.mean_ns()),
        "max_time_us": us(s.max_ns),
        "rows_sent": s.rows,
        "routes": routes,
        "first_seen": s.first_seen.map(digests::unix_seconds),
        "last_seen": s.last_seen.map(digests::unix_seconds),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_sort_names_the_allowed_values() {
        let e = render_json("bogus", 10).unwrap_err();
        assert!(
            e.contains("bogus") && e.contains("total_time") && e.contains("last_seen"),
            "{e}"
        );
        assert!(render_json("", 10).is_ok());
        assert!(render_json("count", 0).is_ok());
    }
}
