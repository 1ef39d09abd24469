//! Every routing decision Sluice makes for a command, in one place. The
//! session executes what these functions return and reports outcomes back;
//! it makes no choice of its own. All pure (backend state, time and counters
//! are arguments), so every rule is a unit test below.
//!
//! [`plan`] decides a command once, before anything is sent, and returns a
//! [`Plan`]: the route, what a replica read must see, whether the read may
//! be retried and whether the empty-key guard may answer it. The rest of
//! this module are the rules it is made of, and the rules the session asks
//! as outcomes arrive. In the order a command meets them:
//! 1. [`route`]: where the statement belongs: the connection the client
//!    holds, the writer, or a replica.
//! 2. [`read_requirement`]: what a replica read must see under
//!    `read_your_writes` (the session's writes, every write through this
//!    instance, or the primary's position now).
//! 3. [`plan_read`]: which replica (lag, load, weight, the requirement; the
//!    rules themselves in [`crate::freshness`] and [`crate::balance`]), or
//!    the primary and why, or an error (`on_no_replica = "error"`).
//! 4. [`on_unreachable`], [`on_lost_before_send`], [`may_retry_read`],
//!    [`on_lost_mid_response`]: what happens when the backend fails before
//!    or while the command runs.
//! 5. [`new_pin`] and [`hold_after`]: what the client keeps afterwards.
//! 6. [`after_write`]: what a write leaves behind for read-your-writes.
//! 7. [`guard_may_answer`]: whether the empty-key guard may answer a read
//!    [`plan_read`] placed, instead of that backend: only when the guard is
//!    at least as fresh as the backend the read would use (the consistency
//!    contract; the statement's shape and key are [`crate::lookup`] and
//!    [`crate::probe`]).
//!
//! Which backend takes writes is the monitor's [`crate::choose_writer`].

use crate::analyze::TxControl;
use crate::classifier::Facts;
use crate::classify::{Kind, PinReason};
use crate::freshness::{NoReplica, ReadChoice, ReadRequest, ReplicaState, choose_read};
use crate::gtid::GtidPos;
use sluice_config::{OnNoReplica, PoolMode, ReadYourWrites, RoutingMode};
use std::time::Duration;

/// The session's side of a command, as [`plan`] sees it.
#[derive(Debug, Clone, Copy)]
pub struct SessionInput {
    pub mode: RoutingMode,
    pub pool_mode: PoolMode,
    pub read_your_writes: ReadYourWrites,
    /// `routing.read_your_writes_window_ms`.
    pub window_ms: u64,
    /// The client keeps its connection between statements (an open
    /// transaction, a pin, or `pool.mode = "session"`).
    pub bound: bool,
    /// The client runs with autocommit=0.
    pub autocommit_off: bool,
    /// Time since the session's last write that left no GTID to wait for
    /// (the primary window); None if there is none.
    pub since_last_write: Option<Duration>,
}

/// A command's plan, decided once before anything is sent. The session
/// carries it out; when a backend fails it asks [`on_unreachable`],
/// [`on_lost_before_send`] or [`on_lost_mid_response`], and afterwards
/// [`new_pin`], [`hold_after`] and [`after_write`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub route: Route,
    /// What a replica read must have applied ([`Requirement::None`] for
    /// every other route). The session resolves it to a position, then
    /// [`plan_read`] places the read.
    pub requirement: Requirement,
    /// A read of a client that holds no connection, whose backend fails
    /// before the client saw any of the answer, runs once more
    /// ([`Plan::retried`]).
    pub retry: bool,
}

impl Plan {
    /// The plan of the retry: the same decision, no further retry.
    pub fn retried(self) -> Plan {
        Plan { retry: false, ..self }
    }

    /// None: the empty-key guard may answer the statement, if
    /// [`guard_may_answer`] agrees once the read is placed. Otherwise why
    /// it passes: reads that must go to the primary (transactions, hints,
    /// locking reads, `primary_only`, a write's window) are never the
    /// guard's.
    pub fn guard_pass(&self) -> Option<&'static str> {
        (self.route != Route::Replica).then_some(guard_pass::PRIMARY_ROUTE)
    }
}

/// Plans a command: `facts` is None for commands that are not statements
/// (COM_INIT_DB, COM_FIELD_LIST, ...).
pub fn plan(facts: Option<&Facts>, session: SessionInput) -> Plan {
    let Some(facts) = facts else {
        return Plan {
            route: route_command(session.bound),
            requirement: Requirement::None,
            retry: false,
        };
    };
    let mode = match session.pool_mode {
        // One connection per client: it must be able to write.
        PoolMode::Session => RoutingMode::PrimaryOnly,
        PoolMode::Transaction => session.mode,
    };
    let window = Duration::from_millis(session.window_ms);
    let route = route(RouteInput {
        mode,
        facts,
        bound: session.bound,
        autocommit_off: session.autocommit_off,
        // In gtid modes only writes that reported no GTID use the window;
        // a read of no table needs no window at all.
        recent_write: session.read_your_writes != ReadYourWrites::Off
            && !facts.ast.reads_no_data
            && session.since_last_write.is_some_and(|since| since < window),
    });
    let replica = route == Route::Replica;
    Plan {
        route,
        requirement: if replica {
            read_requirement(session.read_your_writes, facts.ast.reads_no_data)
        } else {
            Requirement::None
        },
        retry: may_retry_read(Some(facts), session.bound),
    }
}

/// Checking the schema a client names at connect: on the writer, or on a
/// replica while no writer is known (any backend can answer it), seeing
/// what read-your-writes requires of a read.
pub fn plan_schema_check(writer_known: bool, ryw: ReadYourWrites) -> Plan {
    if writer_known {
        return Plan {
            route: Route::Primary,
            requirement: Requirement::None,
            retry: false,
        };
    }
    Plan {
        route: Route::Replica,
        requirement: read_requirement(ryw, false),
        retry: false,
    }
}

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
    // "May I write?" has the primary's answer: a replica says read_only = 1.
    if lexical.reads_read_only && hint != Some("replica") {
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

/// A command that is not a statement (COM_INIT_DB, COM_FIELD_LIST, ...)
/// runs where the client's connection is, or on the primary.
pub fn route_command(bound: bool) -> Route {
    if bound { Route::Held } else { Route::Primary }
}

/// What a replica read must have applied before it may serve the read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requirement {
    /// Nothing: any fresh replica.
    None,
    /// The session's own writes (`gtid`).
    Session,
    /// Every write through this instance (`global`).
    Global,
    /// The primary's position when the read arrives (`universal`; asked
    /// once for all reads arriving together).
    PrimaryNow,
}

pub fn read_requirement(ryw: ReadYourWrites, reads_no_data: bool) -> Requirement {
    if reads_no_data {
        return Requirement::None;
    }
    match ryw {
        ReadYourWrites::Gtid => Requirement::Session,
        ReadYourWrites::Global => Requirement::Global,
        ReadYourWrites::Universal => Requirement::PrimaryNow,
        ReadYourWrites::Off | ReadYourWrites::PrimaryWindow => Requirement::None,
    }
}

/// A replica read, as [`plan_read`] sees it.
#[derive(Debug, Clone, Copy)]
pub struct ReadInput<'a> {
    /// Every backend by topology index (non-replicas with `replica: false`).
    pub backends: &'a [ReplicaState],
    /// The read must see a position (`ReplicaState::applied` says who has it).
    pub causal: bool,
    /// The statement's `/* sluice:max_lag_ms=N */`.
    pub max_lag_ms: Option<u64>,
    pub reads_no_data: bool,
    pub causal_wait_ms: u64,
    pub on_no_replica: OnNoReplica,
    /// A counter that rotates ties between equally loaded replicas.
    pub turn: usize,
}

/// Where a replica read goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadTarget {
    Replica(usize),
    /// Wait on this replica (`MASTER_GTID_WAIT`, at most `causal_wait_ms`)
    /// for the required position; if it does not get there, the primary.
    WaitOn(usize),
    Primary,
    /// `on_no_replica = "error"`: refuse the read.
    Refuse(NoReplica),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadPlan {
    pub target: ReadTarget,
    /// Counted in `sluice_route_fallbacks_total{reason}` (the read went to
    /// the primary for lack of a replica).
    pub fallback: Option<&'static str>,
    /// Counted in `sluice_read_your_writes_total{outcome}`.
    pub causal_outcome: Option<&'static str>,
    /// Bit i: replica i was passed over for lag.
    pub skipped_for_lag: u64,
    /// Every replica has applied the required position: a session's own
    /// requirement can be forgotten.
    pub all_applied: bool,
}

impl ReadPlan {
    /// The indexes of the replicas passed over for lag.
    pub fn skipped(&self) -> impl Iterator<Item = usize> + '_ {
        crate::freshness::indexes(self.skipped_for_lag)
    }
}

pub fn plan_read(input: ReadInput<'_>) -> ReadPlan {
    let replicas = || input.backends.iter().filter(|b| b.replica);
    let all_applied = input.causal && replicas().next().is_some() && replicas().all(|b| b.applied);
    let causal = input.causal && !all_applied && !input.reads_no_data;
    let request = ReadRequest {
        max_lag_ms: input.max_lag_ms,
        causal,
        causal_wait_ms: input.causal_wait_ms,
        reads_no_data: input.reads_no_data,
    };
    let chosen = choose_read(input.backends, request, input.turn);
    let mut plan = ReadPlan {
        target: ReadTarget::Primary,
        fallback: None,
        causal_outcome: None,
        skipped_for_lag: chosen.skipped_for_lag,
        all_applied,
    };
    match chosen.choice {
        ReadChoice::Replica(i) => {
            plan.target = ReadTarget::Replica(i);
            plan.causal_outcome = causal.then_some("replica");
        }
        // Counted once the wait ends (waited, or primary).
        ReadChoice::WaitOn(i) => plan.target = ReadTarget::WaitOn(i),
        ReadChoice::NoReplica(NoReplica::NotCaughtUp) => plan.causal_outcome = Some("primary"),
        ReadChoice::NoReplica(why) => {
            plan.causal_outcome = causal.then_some("primary");
            if input.on_no_replica == OnNoReplica::Error && why != NoReplica::NoneConfigured {
                plan.target = ReadTarget::Refuse(why);
            } else {
                plan.fallback = Some(why.label());
            }
        }
    }
    plan
}

/// What the empty-key guard's "may I answer" depends on, for a read that
/// [`route`] sent to a replica (autocommit, no locking clause, no primary
/// hint, not in a transaction) and [`plan_read`] placed.
#[derive(Debug, Clone, Copy)]
pub struct GuardInput<'a> {
    /// Where [`plan_read`] sent the read.
    pub target: ReadTarget,
    /// The position the guard's filter has applied from the binlog.
    pub guard_applied: &'a GtidPos,
    /// The last known position of the replica in `target` (Replica(i),
    /// WaitOn(i)); None if unknown.
    pub replica_applied: Option<&'a GtidPos>,
    /// What read-your-writes requires of this read, resolved to a position
    /// (the session's last write; the global or primary position).
    pub required: Option<&'a GtidPos>,
    /// The guard's lag, from the heartbeat rows it sees in the binlog; None
    /// when unknown.
    pub guard_lag_ms: Option<f64>,
    /// `routing.max_replica_lag_ms` or the statement's hint.
    pub max_lag_ms: u64,
    /// The table's filter is built and caught up.
    pub table_ready: bool,
    /// The binlog stream is connected.
    pub stream_connected: bool,
}

/// The guard's decision; `Pass` carries a stable metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuardVerdict {
    Answer,
    Pass(&'static str),
}

/// Labels of [`GuardVerdict::Pass`] from [`guard_may_answer`].
pub mod guard_pass {
    /// The table's filter is building, rebuilding or disabled.
    pub const NOT_READY: &str = "not_ready";
    /// The binlog stream is down: the filter stopped at some position.
    pub const STREAM_DOWN: &str = "stream_down";
    /// `on_no_replica = "error"` refuses the read: the client gets that.
    pub const NO_REPLICA: &str = "no_replica";
    /// The replica the read would use has no known position.
    pub const REPLICA_POSITION_UNKNOWN: &str = "replica_position_unknown";
    /// The guard has not applied what that replica has.
    pub const BEHIND_REPLICA: &str = "behind_replica";
    /// The guard has not applied what read-your-writes requires.
    pub const BEHIND_REQUIRED: &str = "behind_required";
    /// Falling back to the primary, the guard's own lag is unknown.
    pub const LAG_UNKNOWN: &str = "lag_unknown";
    /// Falling back to the primary, the guard lags more than a replica may.
    pub const LAGGING: &str = "lagging";
    /// The statement path's own reasons, before the rule above is asked:
    /// the read must go to the primary (transaction, hint, locking read,
    /// `primary_only`, a recent write's window),
    pub const PRIMARY_ROUTE: &str = "primary_route";
    /// no condition on the guarded key,
    pub const NO_KEY_CONDITION: &str = "no_key_condition";
    /// a prepared statement executed with a cursor,
    pub const CURSOR: &str = "cursor";
    /// the filter says a key may exist,
    pub const MAYBE_PRESENT: &str = "maybe_present";
    /// the statement's shape has not run yet (no server metadata to answer with),
    pub const NO_METADATA: &str = "no_metadata";
    /// `universal` read-your-writes could not learn the primary's position.
    pub const PRIMARY_POSITION_UNKNOWN: &str = "primary_position_unknown";
    /// The statement's recent lookups on this connection all found their
    /// row: not checked ([`super::GuardStreak`]).
    pub const RECENTLY_FOUND: &str = "recently_found";

    pub const ALL: &[&str] = &[
        RECENTLY_FOUND,
        PRIMARY_ROUTE,
        NO_KEY_CONDITION,
        CURSOR,
        MAYBE_PRESENT,
        NO_METADATA,
        PRIMARY_POSITION_UNKNOWN,
        NOT_READY,
        STREAM_DOWN,
        NO_REPLICA,
        REPLICA_POSITION_UNKNOWN,
        BEHIND_REPLICA,
        BEHIND_REQUIRED,
        LAG_UNKNOWN,
        LAGGING,
    ];
}

/// Whether a statement's next lookup on a connection is worth checking
/// against the guard's filter. A filter that filters nothing is skipped, as
/// databases skip a runtime filter that does not pay: once `after` lookups
/// of the statement in a row found their row, only one in `one_in` is
/// checked, until a lookup finds no row (an absent key the guard could
/// have answered, or a false positive) or the guard answers one. Passing a
/// lookup to the database is always safe; this trades the guard's cost on
/// keys that exist against letting through, per connection and statement,
/// the first absent keys of a flood until one reaches the database.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct GuardStreak {
    /// Lookups in a row that found their row.
    found: u32,
    /// Lookups since the streak reached `after`.
    since: u32,
}

impl GuardStreak {
    /// Whether to check this lookup (`after` = 0: every lookup).
    pub fn check(&mut self, after: u32, one_in: u32) -> bool {
        if after == 0 || self.found < after {
            return true;
        }
        self.since = self.since.wrapping_add(1);
        self.since % one_in.max(1) == 0
    }

    /// A lookup of the statement ran on a backend: whether it found a row.
    pub fn ran(&mut self, found_a_row: bool) {
        if found_a_row {
            self.found = self.found.saturating_add(1);
        } else {
            *self = GuardStreak::default();
        }
    }

    /// The guard answered a lookup of the statement: its keys are absent.
    pub fn answered(&mut self) {
        *self = GuardStreak::default();
    }
}

/// The guard's consistency contract: it answers only when it is never
/// staler than the read's alternative. For a replica (Replica(i), or
/// WaitOn(i) which reads there once it has `required`), the guard must have
/// applied the replica's known position and `required`. For the primary
/// (chosen for lack of an eligible replica), the guard is held to the
/// replica rule itself: its lag known and within `max_lag_ms`, and
/// `required` applied. A refused read is refused, not answered.
pub fn guard_may_answer(input: GuardInput<'_>) -> GuardVerdict {
    use guard_pass::*;
    if !input.table_ready {
        return GuardVerdict::Pass(NOT_READY);
    }
    if !input.stream_connected {
        return GuardVerdict::Pass(STREAM_DOWN);
    }
    match input.target {
        ReadTarget::Refuse(_) => return GuardVerdict::Pass(NO_REPLICA),
        ReadTarget::Replica(_) | ReadTarget::WaitOn(_) => match input.replica_applied {
            None => return GuardVerdict::Pass(REPLICA_POSITION_UNKNOWN),
            Some(replica) if !input.guard_applied.covers(replica) => {
                return GuardVerdict::Pass(BEHIND_REPLICA);
            }
            Some(_) => {}
        },
        ReadTarget::Primary => match input.guard_lag_ms {
            None => return GuardVerdict::Pass(LAG_UNKNOWN),
            // NaN is not within any limit.
            Some(lag)
                if lag
                    .partial_cmp(&(input.max_lag_ms as f64))
                    .is_none_or(|o| o.is_gt()) =>
            {
                return GuardVerdict::Pass(LAGGING);
            }
            Some(_) => {}
        },
    }
    match input.required {
        Some(required) if !input.guard_applied.covers(required) => GuardVerdict::Pass(BEHIND_REQUIRED),
        _ => GuardVerdict::Answer,
    }
}

/// A backend refused a connection before anything of the client's reached
/// it. What next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// Mark the replica down for a moment and plan the read again.
    SkipReplica,
    /// Wait (`routing.write_wait_ms`) for the monitor to name another
    /// writer, then try again.
    WaitForWriter,
    /// Give the client the error.
    Fail,
}

/// Attempts at checking a connection out for one command.
pub const MAX_CHECKOUT_ATTEMPTS: u32 = 3;

pub fn on_unreachable(route: Route, writer: bool, follow_read_only: bool, attempt: u32) -> Recovery {
    if attempt > MAX_CHECKOUT_ATTEMPTS {
        return Recovery::Fail;
    }
    if route == Route::Replica && !writer {
        Recovery::SkipReplica
    } else if writer && follow_read_only {
        Recovery::WaitForWriter
    } else {
        Recovery::Fail
    }
}

/// A connection failed before the command was sent (restoring the session,
/// preparing the statement). A connection fresh from the pool is replaced,
/// at most twice: the route to try again, or None to give the client the
/// error. A held connection's state is gone with it: a retry runs on the
/// primary.
pub fn on_lost_before_send(routed: Route, fresh: bool, attempt: u32) -> Option<Route> {
    if !fresh || attempt >= MAX_CHECKOUT_ATTEMPTS {
        return None;
    }
    Some(if routed == Route::Held {
        Route::Primary
    } else {
        routed
    })
}

/// An autocommit read whose backend failed before the client saw any of
/// the answer runs once more; nothing else is retried.
pub fn may_retry_read(facts: Option<&Facts>, bound: bool) -> bool {
    facts.is_some_and(|f| f.replica_safe()) && !bound
}

/// The backend failed while the command ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lost {
    /// Part of the answer reached the client: its stream cannot take an
    /// ERR; close it.
    CloseClient,
    /// Run the read again (skipping the replica for a moment if it was one).
    Retry { mark_down: bool },
    /// Tell the client.
    Error,
}

pub fn on_lost_mid_response(client_saw_any: bool, retryable: bool, on_replica: bool) -> Lost {
    if client_saw_any {
        Lost::CloseClient
    } else if retryable {
        Lost::Retry {
            mark_down: on_replica,
        }
    } else {
        Lost::Error
    }
}

/// Why a client keeps its backend connection between statements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldReason {
    Transaction,
    Pinned(PinReason),
    /// `pool.mode = "session"`: one backend connection for the client's life.
    Session,
    /// A one-shot `SET TRANSACTION` set the characteristics of the
    /// connection's next transaction: the client keeps the connection until
    /// a transaction after it ends (the server has then forgotten them), or
    /// until it leaves (the connection is reset), so they apply to the
    /// client's own next transaction and never to another client's.
    NextTransaction,
    /// Checked out for the statement running now; back to the pool after
    /// it (what a later statement may read of it, Sluice captured).
    Statement,
}

/// What a statement left on its connection that only that connection has.
#[derive(Debug, Clone, Copy, Default)]
pub struct Leftovers {
    /// COM_STMT_EXECUTE opened a cursor.
    pub cursor_opened: bool,
    /// The server reported session state Sluice cannot replay.
    pub untracked_change: bool,
    /// The user variables were read back after the statement.
    pub user_vars_captured: bool,
}

/// The pin a statement adds (None: nothing that pins). A state change the
/// read-back explains (user variables of one statement) does not pin; a
/// procedure or multi-statement may also have left prepared statements or
/// temporary tables, which do.
pub fn new_pin(facts: Option<&Facts>, literal_count: usize, left: Leftovers) -> Option<PinReason> {
    let explained = facts.is_some_and(|f| {
        f.tracked_user_vars(literal_count)
            || (left.user_vars_captured && f.kind() != Kind::Call && f.ast.statements <= 1)
    });
    facts
        .and_then(|f| f.pin_reason(literal_count))
        .filter(|&reason| !(reason == PinReason::UserVariable && left.user_vars_captured))
        .or(left.cursor_opened.then_some(PinReason::Cursor))
        .or((left.untracked_change && !explained).then_some(PinReason::UntrackedState))
}

/// Whether a client pinned for its user locks (`GET_LOCK`) is unpinned
/// after a statement that released some: only when it certainly holds none
/// now and nothing else pinned it (a temporary table, a cursor, state the
/// server reported that Sluice cannot replay). Its connection then goes
/// back to the pool like any other (counted in
/// `sluice_session_unpins_total`).
pub fn unpin_after_release(
    pinned: Option<PinReason>,
    pinned_for_more: bool,
    locks_none_held: bool,
    released: bool,
) -> bool {
    pinned == Some(PinReason::UserLock) && !pinned_for_more && locks_none_held && released
}

/// The session after a statement, as [`hold_after`] needs it.
#[derive(Debug, Clone, Copy)]
pub struct HoldInput {
    /// Pinned before or by this statement.
    pub pinned: Option<PinReason>,
    /// The final OK/EOF's IN_TRANS flag; None after an ERR.
    pub in_trans_flag: Option<bool>,
    /// The connection was held for a transaction before this statement.
    pub was_in_transaction: bool,
    /// Some OK/EOF of this response said a transaction is open.
    pub saw_in_transaction: bool,
    pub autocommit_off: bool,
    /// `pool.mode = "session"`.
    pub session_mode: bool,
    /// A one-shot `SET TRANSACTION` was pending on the connection before
    /// this statement.
    pub next_transaction_pending: bool,
    /// This statement's text has a one-shot `SET TRANSACTION` (whatever
    /// its outcome: a failed one only holds the connection a little longer).
    pub sets_next_transaction: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hold {
    /// A transaction is open on the connection.
    pub in_transaction: bool,
    /// A one-shot `SET TRANSACTION` is still pending on the connection.
    pub next_transaction_pending: bool,
    /// Why the client keeps the connection; None gives it back to the pool.
    pub keep: Option<HoldReason>,
}

/// Whether the client keeps its connection after a statement: pins first,
/// then session mode, then an open transaction, then a pending one-shot
/// `SET TRANSACTION`.
pub fn hold_after(input: HoldInput) -> Hold {
    let in_transaction = match input.in_trans_flag {
        Some(open) => open,
        // An ERR does not say: a transaction stays open until it ends, one
        // opened earlier in this response is open, and with autocommit=0
        // the failed statement may have opened one.
        None => input.was_in_transaction || input.saw_in_transaction || input.autocommit_off,
    };
    // A one-shot SET TRANSACTION is only accepted outside a transaction, so
    // any transaction that ends while it is pending came after it and used
    // it up. An autocommit statement may use it up too (one that touches a
    // transactional table), but nothing says so: it stays pending.
    let transaction_ended = (input.was_in_transaction || input.saw_in_transaction) && !in_transaction;
    let next_transaction_pending =
        input.sets_next_transaction || (input.next_transaction_pending && !transaction_ended);
    let keep = if let Some(reason) = input.pinned {
        Some(HoldReason::Pinned(reason))
    } else if input.session_mode {
        Some(HoldReason::Session)
    } else if in_transaction {
        Some(HoldReason::Transaction)
    } else if next_transaction_pending {
        Some(HoldReason::NextTransaction)
    } else {
        None
    };
    Hold {
        in_transaction,
        next_transaction_pending,
        keep,
    }
}

/// What a statement that ran on the writer leaves for read-your-writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteNote {
    /// Nothing to remember (not a write, not on the writer, or `off`).
    Nothing,
    /// `gtid`: the session's reads must see this GTID.
    SessionGtid,
    /// `global`: every read through this instance must see it.
    GlobalGtid,
    /// No GTID to wait for (nothing was written, or the server does not
    /// report it), or `primary_window`: the session reads from the primary
    /// for `read_your_writes_window_ms`. `counted`: a GTID mode fell back
    /// to the window (`sluice_read_your_writes_total{outcome="write_without_gtid"}`).
    Window { counted: bool },
}

/// Whether to read `@@last_gtid` back after a statement, because its GTID
/// could not arrive with it: a write that answered with rows (`INSERT ...
/// RETURNING`, or a multi-statement ending in a SELECT) ends with an EOF,
/// which carries no session state. Only when the write committed (no
/// transaction is open after it: inside one, the GTID comes with the
/// COMMIT) and a GTID is what read-your-writes waits for (`gtid`,
/// `global`). Without it the write would only start the primary window,
/// and other connections' reads (`global`) would not wait for it.
pub fn read_back_gtid(
    on_writer: bool,
    kind: Option<Kind>,
    ran: bool,
    ryw: ReadYourWrites,
    ended_with_rows: bool,
    gtid_seen: bool,
    in_transaction: bool,
) -> bool {
    ended_with_rows
        && !gtid_seen
        && !in_transaction
        && matches!(ryw, ReadYourWrites::Gtid | ReadYourWrites::Global)
        && after_write(on_writer, kind, ran, ryw, false) == WriteNote::Window { counted: true }
}

/// Whether to read `LAST_INSERT_ID()` back after a statement: an insert
/// that answered with rows (`INSERT ... RETURNING`) sends no OK packet, so
/// the id it generated did not arrive, and a later `LAST_INSERT_ID()` on
/// another connection would be replayed with the one before.
pub fn read_back_insert_id(kind: Option<Kind>, ran: bool, ended_with_rows: bool, failed: bool) -> bool {
    ended_with_rows && ran && !failed && matches!(kind, Some(Kind::Insert | Kind::Replace))
}

/// Whether the server closed the connection after the statement answered
/// OK: `COMMIT RELEASE` / `ROLLBACK RELEASE`, or a plain `COMMIT` /
/// `ROLLBACK` when the session's `completion_type` is `RELEASE` (2).
/// Sluice then closes the client too, as the server would have, and the
/// backend connection is not pooled again.
pub fn releases_connection(kind: Option<Kind>, release: Option<bool>, completion_type: Option<&str>) -> bool {
    matches!(kind, Some(Kind::Commit | Kind::Rollback))
        && release
            .unwrap_or_else(|| completion_type.is_some_and(|c| c.eq_ignore_ascii_case("RELEASE") || c == "2"))
}

/// `kind` None: a command that is not a statement (writes nothing). `ran`:
/// the statement executed (not a COM_STMT_PREPARE or a fetch).
pub fn after_write(
    on_writer: bool,
    kind: Option<Kind>,
    ran: bool,
    ryw: ReadYourWrites,
    gtid: bool,
) -> WriteNote {
    let read_only_kind = kind.is_none_or(|k| matches!(k, Kind::Select | Kind::Show | Kind::Set | Kind::Use));
    if !on_writer || read_only_kind || !ran {
        return WriteNote::Nothing;
    }
    match (ryw, gtid) {
        (ReadYourWrites::Gtid, true) => WriteNote::SessionGtid,
        (ReadYourWrites::Global, true) => WriteNote::GlobalGtid,
        // `universal` asks the primary at read time.
        (ReadYourWrites::Universal, true) => WriteNote::Nothing,
        (ReadYourWrites::Gtid | ReadYourWrites::Global | ReadYourWrites::Universal, false) => {
            WriteNote::Window { counted: true }
        }
        (ReadYourWrites::Off | ReadYourWrites::PrimaryWindow, _) => WriteNote::Window { counted: false },
    }
}

#[cfg(test)]
mod streak_tests {
    use super::GuardStreak;

    #[test]
    fn every_lookup_is_checked_until_the_streak_of_found_rows_is_long() {
        let mut s = GuardStreak::default();
        for _ in 0..4 {
            assert!(s.check(4, 8));
            s.ran(true);
        }
        // Now one in eight.
        let checked = (0..64).filter(|_| s.check(4, 8)).count();
        assert_eq!(checked, 8);
    }

    #[test]
    fn a_lookup_that_finds_no_row_or_an_answer_brings_the_checks_back() {
        let mut s = GuardStreak::default();
        (0..10).for_each(|_| s.ran(true));
        assert!(!s.check(10, 16), "relaxed");
        s.ran(false);
        assert!(s.check(10, 16), "an empty result: checked again");
        (0..10).for_each(|_| s.ran(true));
        assert!(!s.check(10, 16));
        s.answered();
        assert!(s.check(10, 16), "the guard answered: checked again");
    }

    #[test]
    fn after_zero_checks_every_lookup_and_one_in_one_checks_every_lookup() {
        let mut s = GuardStreak::default();
        (0..1000).for_each(|_| s.ran(true));
        assert!((0..100).all(|_| s.check(0, 16)));
        assert!((0..100).all(|_| s.check(10, 1)));
        assert!((0..100).all(|_| s.check(10, 0)), "0 is read as 1");
    }
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

    fn session() -> SessionInput {
        SessionInput {
            mode: RoutingMode::Split,
            pool_mode: PoolMode::Transaction,
            read_your_writes: ReadYourWrites::Gtid,
            window_ms: 1000,
            bound: false,
            autocommit_off: false,
            since_last_write: None,
        }
    }

    #[test]
    fn a_plan_decides_route_requirement_retry_and_guard_at_once() {
        let lookup = Facts::of("SELECT c FROM t WHERE id = 1");
        let p = plan(Some(&lookup), session());
        assert_eq!(
            p,
            Plan {
                route: Route::Replica,
                requirement: Requirement::Session,
                retry: true,
            }
        );
        assert_eq!(p.guard_pass(), None, "a replica read may be the guard's");
        let write = Facts::of("UPDATE t SET c = 1 WHERE id = 1");
        let p = plan(Some(&write), session());
        assert_eq!(p.route, Route::Primary);
        assert_eq!(p.requirement, Requirement::None, "only replica reads wait");
        assert!(!p.retry, "a write is never run twice");
        assert_eq!(p.guard_pass(), Some(guard_pass::PRIMARY_ROUTE));
        assert!(!p.retried().retry, "one retry at most");
        assert_eq!(p.retried().route, p.route);
    }

    #[test]
    fn a_plan_for_a_command_that_is_no_statement() {
        let p = plan(None, session());
        assert_eq!(p.route, Route::Primary);
        assert!(!p.retry);
        assert_eq!(p.guard_pass(), Some(guard_pass::PRIMARY_ROUTE));
        let bound = SessionInput {
            bound: true,
            ..session()
        };
        assert_eq!(plan(None, bound).route, Route::Held);
    }

    #[test]
    fn the_schema_check_at_connect_runs_on_the_writer_or_a_replica() {
        let p = plan_schema_check(true, ReadYourWrites::Global);
        assert_eq!((p.route, p.requirement), (Route::Primary, Requirement::None));
        let p = plan_schema_check(false, ReadYourWrites::Global);
        assert_eq!(
            (p.route, p.requirement),
            (Route::Replica, Requirement::Global),
            "with no writer known, a replica that has seen every write"
        );
        assert!(!p.retry);
    }

    #[test]
    fn a_bound_client_reads_on_its_connection_without_retry_or_guard() {
        let lookup = Facts::of("SELECT c FROM t WHERE id = 1");
        let bound = SessionInput {
            bound: true,
            ..session()
        };
        let p = plan(Some(&lookup), bound);
        assert_eq!(p.route, Route::Held);
        assert!(!p.retry, "the held connection's state died with it");
        assert_eq!(p.guard_pass(), Some(guard_pass::PRIMARY_ROUTE));
    }

    #[test]
    fn session_pooling_sends_everything_to_the_primary() {
        let lookup = Facts::of("SELECT c FROM t WHERE id = 1");
        let p = plan(
            Some(&lookup),
            SessionInput {
                pool_mode: PoolMode::Session,
                ..session()
            },
        );
        assert_eq!(p.route, Route::Primary, "one connection per client must write");
    }

    #[test]
    fn the_write_window_is_measured_from_the_time_given() {
        let lookup = Facts::of("SELECT c FROM t WHERE id = 1");
        let after = |ms: u64, ryw: ReadYourWrites| {
            plan(
                Some(&lookup),
                SessionInput {
                    read_your_writes: ryw,
                    since_last_write: Some(Duration::from_millis(ms)),
                    ..session()
                },
            )
            .route
        };
        assert_eq!(after(999, ReadYourWrites::PrimaryWindow), Route::Primary);
        assert_eq!(after(1000, ReadYourWrites::PrimaryWindow), Route::Replica);
        assert_eq!(after(10, ReadYourWrites::Off), Route::Replica, "off: no window");
        let no_table = Facts::of("SELECT 1");
        let p = plan(
            Some(&no_table),
            SessionInput {
                since_last_write: Some(Duration::from_millis(1)),
                ..session()
            },
        );
        assert_eq!(p.route, Route::Replica, "a read of no table needs no window");
        assert_eq!(p.requirement, Requirement::None, "nor a position");
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
    fn the_read_only_setting_is_the_primarys() {
        for sql in [
            "SELECT @@GLOBAL.read_only AS Value",
            "SELECT @@read_only",
            "SELECT @@global.super_read_only",
            "SELECT @@innodb_read_only, @@version",
        ] {
            assert_eq!(split(sql), Route::Primary, "{sql}");
        }
        // Other settings of no table are any server's; a hint still wins.
        assert_eq!(split("SELECT @@tx_read_only"), Route::Replica);
        assert_eq!(split("SELECT @@server_id"), Route::Replica);
        assert_eq!(split("SELECT /* sluice:replica */ @@read_only"), Route::Replica);
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

    fn replica(applied: bool) -> ReplicaState {
        ReplicaState {
            replica: true,
            weight: 1,
            reachable: true,
            fresh: true,
            lag_ms: Some(0.0),
            applied,
            ..ReplicaState::default()
        }
    }

    fn read(backends: &[ReplicaState], causal: bool, on_no_replica: OnNoReplica) -> ReadPlan {
        plan_read(ReadInput {
            backends,
            causal,
            max_lag_ms: None,
            reads_no_data: false,
            causal_wait_ms: 0,
            on_no_replica,
            turn: 0,
        })
    }

    #[test]
    fn read_requirement_follows_the_mode() {
        assert_eq!(
            read_requirement(ReadYourWrites::Gtid, false),
            Requirement::Session
        );
        assert_eq!(
            read_requirement(ReadYourWrites::Global, false),
            Requirement::Global
        );
        assert_eq!(
            read_requirement(ReadYourWrites::Universal, false),
            Requirement::PrimaryNow
        );
        assert_eq!(
            read_requirement(ReadYourWrites::PrimaryWindow, false),
            Requirement::None
        );
        assert_eq!(read_requirement(ReadYourWrites::Off, false), Requirement::None);
        assert_eq!(
            read_requirement(ReadYourWrites::Universal, true),
            Requirement::None,
            "a read of no table needs nothing"
        );
    }

    #[test]
    fn reads_skip_the_primary_and_use_indexes_of_the_topology() {
        let primary = ReplicaState::default();
        let plan = read(&[primary, replica(false)], false, OnNoReplica::Primary);
        assert_eq!(plan.target, ReadTarget::Replica(1));
        assert_eq!(plan.fallback, None);
        assert_eq!(plan.causal_outcome, None);
    }

    #[test]
    fn no_replica_falls_back_to_the_primary_or_refuses() {
        let mut down = replica(false);
        down.reachable = false;
        let plan = read(&[ReplicaState::default(), down], false, OnNoReplica::Primary);
        assert_eq!(plan.target, ReadTarget::Primary);
        assert_eq!(plan.fallback, Some("replicas_unreachable"));
        let plan = read(&[ReplicaState::default(), down], false, OnNoReplica::Error);
        assert_eq!(plan.target, ReadTarget::Refuse(NoReplica::Unreachable));
        // No replica configured at all: the primary even with "error".
        let plan = read(&[ReplicaState::default()], false, OnNoReplica::Error);
        assert_eq!(plan.target, ReadTarget::Primary);
        assert_eq!(plan.fallback, Some("no_replica"));
    }

    #[test]
    fn causal_reads_count_their_outcome_and_forget_a_requirement_everyone_has() {
        let plan = read(&[replica(false), replica(true)], true, OnNoReplica::Primary);
        assert_eq!(plan.target, ReadTarget::Replica(1));
        assert_eq!(plan.causal_outcome, Some("replica"));
        assert!(!plan.all_applied);
        let plan = read(&[replica(false)], true, OnNoReplica::Primary);
        assert_eq!(plan.target, ReadTarget::Primary);
        assert_eq!(plan.causal_outcome, Some("primary"));
        assert_eq!(plan.fallback, None, "behind the session is not a fallback");
        let plan = read(
            &[ReplicaState::default(), replica(true), replica(true)],
            true,
            OnNoReplica::Primary,
        );
        assert!(plan.all_applied);
        assert_eq!(plan.causal_outcome, None, "nothing left to wait for");
        assert!(!read(&[ReplicaState::default()], true, OnNoReplica::Primary).all_applied);
    }

    fn gtid(s: &str) -> GtidPos {
        GtidPos::parse(s).unwrap()
    }

    #[test]
    fn guard_answers_only_when_as_fresh_as_the_alternative() {
        use guard_pass::*;
        let guard = gtid("0-1-100");
        let behind = gtid("0-1-101");
        let same = gtid("0-1-100");
        let older = gtid("0-1-90");
        let base = GuardInput {
            target: ReadTarget::Replica(1),
            guard_applied: &guard,
            replica_applied: Some(&older),
            required: None,
            guard_lag_ms: None,
            max_lag_ms: 1000,
            table_ready: true,
            stream_connected: true,
        };
        assert_eq!(guard_may_answer(base), GuardVerdict::Answer);
        let at = |replica, required| GuardInput {
            replica_applied: replica,
            required,
            ..base
        };
        assert_eq!(
            guard_may_answer(at(Some(&same), Some(&same))),
            GuardVerdict::Answer
        );
        assert_eq!(
            guard_may_answer(at(Some(&behind), None)),
            GuardVerdict::Pass(BEHIND_REPLICA)
        );
        assert_eq!(
            guard_may_answer(at(None, None)),
            GuardVerdict::Pass(REPLICA_POSITION_UNKNOWN)
        );
        assert_eq!(
            guard_may_answer(at(Some(&older), Some(&behind))),
            GuardVerdict::Pass(BEHIND_REQUIRED)
        );
        let other_domain = gtid("1-2-1");
        assert_eq!(
            guard_may_answer(at(Some(&other_domain), None)),
            GuardVerdict::Pass(BEHIND_REPLICA),
            "a domain the guard has not seen"
        );
        // WaitOn reads on the replica once it has `required`: both count.
        let wait = GuardInput {
            target: ReadTarget::WaitOn(2),
            ..at(Some(&older), Some(&behind))
        };
        assert_eq!(guard_may_answer(wait), GuardVerdict::Pass(BEHIND_REQUIRED));
        let wait = GuardInput {
            target: ReadTarget::WaitOn(2),
            ..at(Some(&older), Some(&same))
        };
        assert_eq!(guard_may_answer(wait), GuardVerdict::Answer);
        let wait = GuardInput {
            target: ReadTarget::WaitOn(2),
            ..at(None, Some(&same))
        };
        assert_eq!(
            guard_may_answer(wait),
            GuardVerdict::Pass(REPLICA_POSITION_UNKNOWN)
        );
    }

    #[test]
    fn guard_in_place_of_the_primary_is_held_to_the_replica_rule() {
        use guard_pass::*;
        let guard = gtid("0-1-100");
        let behind = gtid("0-1-101");
        let primary = |lag, required| GuardInput {
            target: ReadTarget::Primary,
            guard_applied: &guard,
            replica_applied: None,
            required,
            guard_lag_ms: lag,
            max_lag_ms: 1000,
            table_ready: true,
            stream_connected: true,
        };
        assert_eq!(guard_may_answer(primary(Some(20.0), None)), GuardVerdict::Answer);
        assert_eq!(
            guard_may_answer(primary(Some(1000.0), None)),
            GuardVerdict::Answer
        );
        assert_eq!(
            guard_may_answer(primary(Some(1000.5), None)),
            GuardVerdict::Pass(LAGGING)
        );
        assert_eq!(
            guard_may_answer(primary(Some(f64::NAN), None)),
            GuardVerdict::Pass(LAGGING)
        );
        assert_eq!(
            guard_may_answer(primary(None, None)),
            GuardVerdict::Pass(LAG_UNKNOWN)
        );
        assert_eq!(
            guard_may_answer(primary(Some(0.0), Some(&behind))),
            GuardVerdict::Pass(BEHIND_REQUIRED)
        );
        assert_eq!(
            guard_may_answer(primary(Some(0.0), Some(&guard))),
            GuardVerdict::Answer
        );
        let hinted = GuardInput {
            max_lag_ms: 10,
            ..primary(Some(20.0), None)
        };
        assert_eq!(
            guard_may_answer(hinted),
            GuardVerdict::Pass(LAGGING),
            "the statement's hint"
        );
    }

    #[test]
    fn guard_passes_when_not_ready_down_or_refused() {
        use guard_pass::*;
        let guard = gtid("0-1-100");
        let base = GuardInput {
            target: ReadTarget::Replica(0),
            guard_applied: &guard,
            replica_applied: Some(&guard),
            required: None,
            guard_lag_ms: Some(0.0),
            max_lag_ms: 1000,
            table_ready: true,
            stream_connected: true,
        };
        assert_eq!(
            guard_may_answer(GuardInput {
                table_ready: false,
                ..base
            }),
            GuardVerdict::Pass(NOT_READY)
        );
        assert_eq!(
            guard_may_answer(GuardInput {
                stream_connected: false,
                ..base
            }),
            GuardVerdict::Pass(STREAM_DOWN)
        );
        assert_eq!(
            guard_may_answer(GuardInput {
                target: ReadTarget::Refuse(NoReplica::Lagging),
                ..base
            }),
            GuardVerdict::Pass(NO_REPLICA)
        );
        let mut all = ALL.to_vec();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), ALL.len());
    }

    #[test]
    fn failures_before_sending() {
        assert_eq!(
            on_unreachable(Route::Replica, false, false, 1),
            Recovery::SkipReplica
        );
        assert_eq!(on_unreachable(Route::Replica, false, false, 4), Recovery::Fail);
        assert_eq!(
            on_unreachable(Route::Primary, true, true, 1),
            Recovery::WaitForWriter
        );
        assert_eq!(on_unreachable(Route::Primary, true, false, 1), Recovery::Fail);
        // A replica read that fell back to the writer does not skip it.
        assert_eq!(on_unreachable(Route::Replica, true, false, 1), Recovery::Fail);
        assert_eq!(on_lost_before_send(Route::Replica, true, 1), Some(Route::Replica));
        assert_eq!(on_lost_before_send(Route::Held, true, 2), Some(Route::Primary));
        assert_eq!(on_lost_before_send(Route::Primary, true, 3), None);
        assert_eq!(
            on_lost_before_send(Route::Held, false, 1),
            None,
            "a held connection's state is gone with it"
        );
    }

    #[test]
    fn failures_while_running() {
        let read = Facts::of("SELECT c FROM t WHERE id = 1");
        let write = Facts::of("UPDATE t SET c = 1");
        assert!(may_retry_read(Some(&read), false));
        assert!(!may_retry_read(Some(&read), true), "not inside a transaction");
        assert!(!may_retry_read(Some(&write), false));
        assert!(!may_retry_read(None, false));
        assert_eq!(on_lost_mid_response(true, true, true), Lost::CloseClient);
        assert_eq!(
            on_lost_mid_response(false, true, true),
            Lost::Retry { mark_down: true }
        );
        assert_eq!(on_lost_mid_response(false, false, true), Lost::Error);
    }

    #[test]
    fn pins() {
        let none = Leftovers::default();
        let temp = Facts::of("CREATE TEMPORARY TABLE x (a INT)");
        assert_eq!(new_pin(Some(&temp), 0, none), Some(PinReason::TemporaryTable));
        let into = Facts::of("SELECT c INTO @v FROM t");
        let captured = Leftovers {
            user_vars_captured: true,
            untracked_change: true,
            ..none
        };
        assert_eq!(
            new_pin(Some(&into), 0, captured),
            None,
            "the read-back explains it"
        );
        assert_eq!(new_pin(Some(&into), 0, none), Some(PinReason::UserVariable));
        let cursor = Leftovers {
            cursor_opened: true,
            ..none
        };
        assert_eq!(new_pin(None, 0, cursor), Some(PinReason::Cursor));
        let untracked = Leftovers {
            untracked_change: true,
            ..none
        };
        let select = Facts::of("SELECT 1");
        assert_eq!(
            new_pin(Some(&select), 0, untracked),
            Some(PinReason::UntrackedState)
        );
        let call = Facts::of("CALL p()");
        assert_eq!(
            new_pin(Some(&call), 0, captured),
            Some(PinReason::UntrackedState),
            "a procedure may leave more than variables"
        );
    }

    /// After an autocommit statement: nothing pending, nothing pinned.
    fn idle_hold() -> HoldInput {
        HoldInput {
            pinned: None,
            in_trans_flag: Some(false),
            was_in_transaction: false,
            saw_in_transaction: false,
            autocommit_off: false,
            session_mode: false,
            next_transaction_pending: false,
            sets_next_transaction: false,
        }
    }

    #[test]
    fn what_the_client_keeps() {
        let base = idle_hold();
        assert_eq!(hold_after(base).keep, None);
        let open = HoldInput {
            in_trans_flag: Some(true),
            ..base
        };
        assert_eq!(hold_after(open).keep, Some(HoldReason::Transaction));
        let pinned = HoldInput {
            pinned: Some(PinReason::LockTables),
            ..open
        };
        assert_eq!(
            hold_after(pinned).keep,
            Some(HoldReason::Pinned(PinReason::LockTables))
        );
        let session = HoldInput {
            session_mode: true,
            ..base
        };
        assert_eq!(hold_after(session).keep, Some(HoldReason::Session));
        // After an ERR: open if it was, if this response opened one, or
        // with autocommit=0.
        let err = HoldInput {
            in_trans_flag: None,
            ..base
        };
        assert_eq!(hold_after(err).keep, None);
        for open in [
            HoldInput {
                was_in_transaction: true,
                ..err
            },
            HoldInput {
                saw_in_transaction: true,
                ..err
            },
            HoldInput {
                autocommit_off: true,
                ..err
            },
        ] {
            let hold = hold_after(open);
            assert!(hold.in_transaction);
            assert_eq!(hold.keep, Some(HoldReason::Transaction));
        }
    }

    #[test]
    fn a_one_shot_set_transaction_holds_the_connection_until_a_transaction_ends() {
        let idle = idle_hold();
        // SET TRANSACTION ISOLATION LEVEL ...: kept, pending; even if it
        // failed (an ERR says nothing of it).
        let set = HoldInput {
            sets_next_transaction: true,
            ..idle
        };
        for input in [
            set,
            HoldInput {
                in_trans_flag: None,
                ..set
            },
        ] {
            let hold = hold_after(input);
            assert!(hold.next_transaction_pending);
            assert_eq!(hold.keep, Some(HoldReason::NextTransaction));
        }
        let pending = HoldInput {
            next_transaction_pending: true,
            ..idle
        };
        // Statements outside a transaction (SELECT 1, SET @a, an autocommit
        // write) may or may not have used it up: still kept.
        assert_eq!(hold_after(pending).keep, Some(HoldReason::NextTransaction));
        assert_eq!(
            hold_after(HoldInput {
                in_trans_flag: None,
                ..pending
            })
            .keep,
            Some(HoldReason::NextTransaction)
        );
        // BEGIN: the transaction hold; still pending until it ends.
        let begun = hold_after(HoldInput {
            in_trans_flag: Some(true),
            ..pending
        });
        assert_eq!(begun.keep, Some(HoldReason::Transaction));
        assert!(begun.next_transaction_pending);
        // COMMIT / ROLLBACK, or a multi-statement that opened and closed
        // one: used up, back to the pool.
        for ended in [
            HoldInput {
                was_in_transaction: true,
                ..pending
            },
            HoldInput {
                saw_in_transaction: true,
                ..pending
            },
        ] {
            let hold = hold_after(ended);
            assert!(!hold.next_transaction_pending);
            assert_eq!(hold.keep, None);
        }
        // A failed statement inside the transaction: it stays open.
        let failed_inside = hold_after(HoldInput {
            was_in_transaction: true,
            in_trans_flag: None,
            ..pending
        });
        assert!(failed_inside.next_transaction_pending);
        // A SET TRANSACTION after a transaction ended in the same
        // multi-statement is pending.
        let set_after_commit = hold_after(HoldInput {
            saw_in_transaction: true,
            ..set
        });
        assert!(set_after_commit.next_transaction_pending);
        // Pins and session mode come first.
        let pinned = HoldInput {
            pinned: Some(PinReason::TemporaryTable),
            ..set
        };
        assert_eq!(
            hold_after(pinned).keep,
            Some(HoldReason::Pinned(PinReason::TemporaryTable))
        );
    }

    #[test]
    fn writes_leave_what_read_your_writes_needs() {
        use ReadYourWrites::*;
        let update = Some(Kind::Update);
        assert_eq!(
            after_write(true, update, true, Gtid, true),
            WriteNote::SessionGtid
        );
        assert_eq!(
            after_write(true, update, true, Global, true),
            WriteNote::GlobalGtid
        );
        assert_eq!(
            after_write(true, update, true, Universal, true),
            WriteNote::Nothing
        );
        assert_eq!(
            after_write(true, update, true, Gtid, false),
            WriteNote::Window { counted: true }
        );
        assert_eq!(
            after_write(true, update, true, PrimaryWindow, false),
            WriteNote::Window { counted: false }
        );
        assert_eq!(after_write(false, update, true, Gtid, true), WriteNote::Nothing);
        assert_eq!(
            after_write(true, Some(Kind::Select), true, Gtid, true),
            WriteNote::Nothing
        );
        assert_eq!(after_write(true, None, true, Gtid, true), WriteNote::Nothing);
        assert_eq!(after_write(true, update, false, Gtid, true), WriteNote::Nothing);
    }

    #[test]
    fn an_insert_that_answered_with_rows_has_its_insert_id_read_back() {
        assert!(read_back_insert_id(Some(Kind::Insert), true, true, false));
        assert!(read_back_insert_id(Some(Kind::Replace), true, true, false));
        assert!(
            !read_back_insert_id(Some(Kind::Insert), true, false, false),
            "its OK said"
        );
        assert!(
            !read_back_insert_id(Some(Kind::Insert), false, true, false),
            "a prepare"
        );
        assert!(
            !read_back_insert_id(Some(Kind::Insert), true, true, true),
            "failed"
        );
        assert!(!read_back_insert_id(Some(Kind::Delete), true, true, false));
        assert!(!read_back_insert_id(Some(Kind::Select), true, true, false));
    }

    #[test]
    fn a_client_pinned_for_its_locks_is_unpinned_once_it_released_them_all() {
        let lock = Some(PinReason::UserLock);
        assert!(unpin_after_release(lock, false, true, true));
        assert!(
            !unpin_after_release(lock, false, false, true),
            "a lock still held"
        );
        assert!(!unpin_after_release(lock, true, true, true), "pinned for more");
        assert!(!unpin_after_release(lock, false, true, false), "nothing released");
        assert!(!unpin_after_release(
            Some(PinReason::TemporaryTable),
            false,
            true,
            true
        ));
        assert!(!unpin_after_release(None, false, true, true));
    }

    #[test]
    fn commit_release_and_completion_type_release_close_the_connection() {
        use crate::classify::classify;
        let releases = |sql: &str, completion_type: Option<&str>| {
            let c = classify(sql);
            releases_connection(Some(c.kind), c.release, completion_type)
        };
        assert!(releases("COMMIT RELEASE", None));
        assert!(releases("rollback work release", None));
        assert!(releases("COMMIT AND NO CHAIN RELEASE", None));
        assert!(!releases("COMMIT NO RELEASE", None));
        assert!(!releases("COMMIT", None));
        assert!(!releases("COMMIT", Some("NO_CHAIN")));
        assert!(releases("COMMIT", Some("RELEASE")));
        assert!(releases("ROLLBACK", Some("RELEASE")));
        assert!(!releases("COMMIT NO RELEASE", Some("RELEASE")));
        assert!(!releases("COMMIT AND CHAIN", Some("RELEASE")));
        assert!(!releases("ROLLBACK TO SAVEPOINT s", Some("RELEASE")));
        assert!(!releases("RELEASE SAVEPOINT s", Some("RELEASE")));
        assert!(!releases("SELECT 1", Some("RELEASE")));
    }

    #[test]
    fn a_write_that_answered_with_rows_has_its_gtid_read_back() {
        use ReadYourWrites::*;
        let insert = Some(Kind::Insert);
        // INSERT ... RETURNING on the writer, autocommit, gtid or global.
        assert!(read_back_gtid(true, insert, true, Gtid, true, false, false));
        assert!(read_back_gtid(
            true,
            Some(Kind::Delete),
            true,
            Global,
            true,
            false,
            false
        ));
        // Not when the GTID came with it, the answer was an OK, a
        // transaction is still open, it ran on a replica, it wrote nothing,
        // or the mode waits for no GTID.
        assert!(!read_back_gtid(true, insert, true, Gtid, true, true, false));
        assert!(!read_back_gtid(true, insert, true, Gtid, false, false, false));
        assert!(!read_back_gtid(true, insert, true, Gtid, true, false, true));
        assert!(!read_back_gtid(false, insert, true, Gtid, true, false, false));
        assert!(!read_back_gtid(
            true,
            Some(Kind::Select),
            true,
            Gtid,
            true,
            false,
            false
        ));
        assert!(!read_back_gtid(true, insert, false, Gtid, true, false, false));
        for ryw in [Universal, PrimaryWindow, Off] {
            assert!(
                !read_back_gtid(true, insert, true, ryw, true, false, false),
                "{ryw:?}"
            );
        }
    }
}
