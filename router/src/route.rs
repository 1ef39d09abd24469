//! Where a statement runs: the connection the client holds, the primary, or
//! a replica. A pure function of the statement's facts and the session's
//! situation, so every rule below is a unit test.

use crate::analyze::TxControl;
use crate::classifier::Facts;
use crate::classify::Kind;
use sluice_config::RoutingMode;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// The connection the client already holds.
    Held,
    Primary,
    Replica,
}

impl Route {
    pub fn label(self) -> &'static str {
        match self {
            Route::Held => "held",
            Route::Primary => "primary",
            Route::Replica => "replica",
        }
    }
}

/// Everything the decision depends on.
#[derive(Debug, Clone, Copy)]
pub struct RouteInput<'a> {
    pub mode: RoutingMode,
    pub facts: &'a Facts,
    /// The client keeps its connection between statements (an open
    /// transaction, a pin, or `pool.mode = "session"`).
    pub bound: bool,
    /// The client runs with autocommit=0: every statement is in a transaction.
    pub autocommit_off: bool,
    /// The session wrote recently and must read its own writes from the
    /// primary (`read_your_writes = "primary_window"`).
    pub recent_write: bool,
}

pub fn route(input: RouteInput<'_>) -> Route {
    let facts = input.facts;
    let lexical = &facts.lexical;
    if input.bound {
        return Route::Held;
    }
    let hint = lexical.hint.as_deref();
    if hint == Some("primary") || input.mode == RoutingMode::PrimaryOnly || input.autocommit_off {
        return Route::Primary;
    }
    if input.recent_write && hint != Some("replica") {
        return Route::Primary;
    }
    if let Some(TxControl::Begin { read_only }) = facts.ast.transaction {
        return if read_only { Route::Replica } else { Route::Primary };
    }
    // An explicit replica hint may send a locking or side-effect read to a
    // replica, never a write or a SELECT ... INTO.
    let hinted_read = hint == Some("replica")
        && facts.ast.parsed
        && matches!(facts.kind(), Kind::Select | Kind::Show)
        && !facts.ast.select_into;
    let reads = facts.replica_safe() || hinted_read;
    if reads { Route::Replica } else { Route::Primary }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(sql: &str) -> Route {
        route(RouteInput {
            mode: RoutingMode::Split,
            facts: &Facts::of(sql),
            bound: false,
            autocommit_off: false,
            recent_write: false,
        })
    }

    #[test]
    fn writes_ddl_and_procedures_go_to_the_primary() {
        for sql in [
            "INSERT INTO t VALUES (1)",
            "UPDATE t SET a = 1 WHERE id = 2",
            "DELETE FROM t WHERE id = 1",
            "REPLACE INTO t VALUES (1)",
            "CREATE TABLE x (a INT)",
            "ALTER TABLE t ADD COLUMN b INT",
            "DROP TABLE t",
            "TRUNCATE TABLE t",
            "CALL proc(1)",
            "LOAD DATA LOCAL INFILE 'f' INTO TABLE t",
            "LOCK TABLES t WRITE",
            "UNLOCK TABLES",
        ] {
            assert_eq!(split(sql), Route::Primary, "{sql}");
        }
    }

    #[test]
    fn locking_reads_and_side_effects_go_to_the_primary() {
        for sql in [
            "SELECT * FROM t WHERE id = 1 FOR UPDATE",
            "SELECT * FROM t WHERE id = 1 FOR SHARE",
            "SELECT * FROM t WHERE id = 1 LOCK IN SHARE MODE",
            "SELECT c INTO @v FROM t WHERE id = 1",
            "SELECT * FROM t INTO OUTFILE '/tmp/x'",
            "SELECT GET_LOCK('x', 1)",
            "SELECT RELEASE_LOCK('x')",
            "SELECT IS_USED_LOCK('x')",
            "SELECT NEXTVAL(s)",
            "SET GLOBAL max_connections = 100",
            "this is not sql",
        ] {
            assert_eq!(split(sql), Route::Primary, "{sql}");
        }
    }

    #[test]
    fn plain_reads_go_to_a_replica() {
        for sql in [
            "SELECT c FROM sbtest1 WHERE id = 5",
            "SELECT 1",
            "SHOW TABLES",
            "DESCRIBE t",
            "EXPLAIN SELECT * FROM t",
            "WITH x AS (SELECT 1) SELECT * FROM x",
            "SELECT COUNT(*) FROM t JOIN u ON t.id = u.id",
        ] {
            assert_eq!(split(sql), Route::Replica, "{sql}");
        }
    }

    #[test]
    fn transactions() {
        assert_eq!(split("BEGIN"), Route::Primary);
        assert_eq!(split("START TRANSACTION"), Route::Primary);
        assert_eq!(split("START TRANSACTION READ ONLY"), Route::Replica);
        let facts = Facts::of("SELECT 1");
        let held = route(RouteInput {
            mode: RoutingMode::Split,
            facts: &facts,
            bound: true,
            autocommit_off: false,
            recent_write: false,
        });
        assert_eq!(
            held,
            Route::Held,
            "inside a transaction everything stays on its connection"
        );
        let ac0 = route(RouteInput {
            mode: RoutingMode::Split,
            facts: &facts,
            bound: false,
            autocommit_off: true,
            recent_write: false,
        });
        assert_eq!(
            ac0,
            Route::Primary,
            "autocommit=0 opens a transaction with the next statement"
        );
    }

    #[test]
    fn hints() {
        assert_eq!(split("SELECT /* sluice:primary */ c FROM t"), Route::Primary);
        assert_eq!(split("/* sluice:primary */ SELECT 1"), Route::Primary);
        assert_eq!(
            split("SELECT * FROM t WHERE id = 1 FOR UPDATE /* sluice:replica */"),
            Route::Replica
        );
        assert_eq!(
            split("SELECT c INTO @v FROM t /* sluice:replica */"),
            Route::Primary
        );
        assert_eq!(
            split("INSERT /* sluice:replica */ INTO t VALUES (1)"),
            Route::Primary,
            "never a write on a replica"
        );
    }

    #[test]
    fn reads_after_a_write_stay_on_the_primary_within_the_window() {
        let facts = Facts::of("SELECT c FROM t WHERE id = 1");
        let input = RouteInput {
            mode: RoutingMode::Split,
            facts: &facts,
            bound: false,
            autocommit_off: false,
            recent_write: true,
        };
        assert_eq!(route(input), Route::Primary);
        let hinted = Facts::of("SELECT /* sluice:replica */ c FROM t WHERE id = 1");
        assert_eq!(
            route(RouteInput {
                facts: &hinted,
                ..input
            }),
            Route::Replica,
            "an explicit hint wins"
        );
    }

    #[test]
    fn primary_only_mode() {
        let facts = Facts::of("SELECT 1");
        let r = route(RouteInput {
            mode: RoutingMode::PrimaryOnly,
            facts: &facts,
            bound: false,
            autocommit_off: false,
            recent_write: false,
        });
        assert_eq!(r, Route::Primary);
    }
}
