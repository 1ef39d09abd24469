//! Where a statement runs. The foundation sends everything to the primary;
//! what stays decided here is whether the statement needs the connection the
//! client already holds.

use crate::Statement;
use sluice_config::RoutingMode;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// The connection the client already holds (transaction, pin, or a read
    /// of the previous statement's state).
    Held,
    Primary,
}

/// Everything the decision depends on.
#[derive(Debug, Clone, Copy)]
pub struct RouteInput<'a> {
    pub mode: RoutingMode,
    pub statement: &'a Statement,
    /// The client holds a backend connection (transaction, pin, or kept for
    /// this statement).
    pub holds_connection: bool,
}

pub fn route(input: RouteInput<'_>) -> Route {
    if input.holds_connection {
        return Route::Held;
    }
    match input.mode {
        RoutingMode::PrimaryOnly | RoutingMode::Split => Route::Primary,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify;

    #[test]
    fn held_connection_wins() {
        let s = classify("SELECT 1");
        let r = route(RouteInput {
            mode: RoutingMode::PrimaryOnly,
            statement: &s,
            holds_connection: true,
        });
        assert_eq!(r, Route::Held);
    }

    #[test]
    fn primary_only_sends_everything_to_the_primary() {
        for sql in [
            "SELECT 1",
            "INSERT INTO t VALUES (1)",
            "SHOW TABLES",
            "garbage",
        ] {
            let s = classify(sql);
            let r = route(RouteInput {
                mode: RoutingMode::PrimaryOnly,
                statement: &s,
                holds_connection: false,
            });
            assert_eq!(r, Route::Primary, "{sql}");
        }
    }
}
