//! The empty-key guard on the statement path. A point lookup whose keys the
//! guard's filter says are certainly absent is answered here with an empty
//! result set (the server's own column definitions from the last real run
//! of the same shape, the status flags the server would send, no warnings),
//! but only when `plan::guard_may_answer` says the backend the read would
//! have gone to could not have returned a row the guard has not seen. Every
//! other lookup of a guarded table goes to the database as usual, counted
//! in `sluice_guard_passed_total{reason}`; a "maybe present" that the server
//! answers with no row is counted as a false positive.

use super::digest::DigestKey;
use super::{End, Session};
use crate::answers::ShapeKey;
use crate::metrics::striped::Striped;
use bytes::Bytes;
use sluice_guard::{TableGuard, Tables};
use sluice_pool::Vars;
use sluice_protocol::consts::CapabilityFlags as Caps;
use sluice_protocol::packets;
use sluice_router::diagnostics::Ended;
use sluice_router::lookup::{KeyConjunct, KeyValues, LookupShape};
use sluice_router::plan::{self, GuardInput, GuardStreak, GuardVerdict, ReadTarget, guard_pass};
use sluice_router::probe::{probe_literal, probe_param, reason};
use sluice_router::{Facts, GtidPos, Plan};
use std::ops::Range;
use std::sync::Arc;

/// Where this execution's key values are.
pub(super) enum Values<'a> {
    /// COM_QUERY: literal spans of the text (from the fingerprint).
    Text {
        sql: &'a str,
        literals: &'a [Range<usize>],
    },
    /// COM_STMT_EXECUTE: the bound parameters.
    Binary {
        sql: &'a str,
        /// Literal spans of the prepared text.
        literals: &'a [Range<usize>],
        payload: &'a [u8],
        params: u16,
        /// The shape check of `sql`, when done at prepare.
        shape_checked: Option<Result<(), &'static str>>,
        /// Types an earlier execute sent (this one may omit them).
        types: Option<&'a [u8]>,
        /// Some parameter was sent as long data (not in the packet).
        long_data: bool,
    },
}

/// What the statement path does after asking the guard.
pub(super) enum Asked {
    /// Not a lookup of a guarded table.
    NotGuarded,
    /// The client has its answer.
    Answered,
    /// Run it; afterwards [`Session::guard_follow_up`].
    Pass(FollowUp),
}

/// What to learn from a guarded table's lookup that ran on a backend. It
/// holds no reference to the table unless it captures metadata: a lookup
/// that only passes writes nothing another worker thread reads.
pub(super) struct FollowUp {
    /// The statement's entry in the session's table memo (its table's
    /// name), and the statement, to check it is still that entry.
    memo: usize,
    facts: usize,
    /// Keep the result's column definitions under this shape.
    capture: Option<(Arc<TableGuard>, OwnedShape)>,
    /// The filter said "maybe present": no row back is a false positive.
    maybe_present: bool,
}

impl FollowUp {
    pub fn wants_columns(&self) -> bool {
        self.capture.is_some()
    }
}

/// Shapes a session remembers the metadata of (a client's few lookups of a
/// few tables).
const SHAPES_REMEMBERED: usize = 8;

/// Statements a session remembers the guarded table of.
const TABLES_REMEMBERED: usize = 8;

/// Which guarded table (if any) a statement's lookup names, as the guard's
/// table set of `version` said. It keeps the table's position in that set,
/// not the table: an idle session keeps no filter alive, and a lookup takes
/// no reference count another thread also writes.
pub(super) struct TableMemo {
    /// The statement (a classified fingerprint); held, so its address is
    /// not reused by another while remembered.
    facts: Arc<Facts>,
    version: u64,
    /// The session's schema it was resolved in, when it names none.
    session_schema: Option<Box<str>>,
    /// None: not a guarded table.
    table: Option<MemoTable>,
    /// Whether its lookups are worth checking (they keep finding rows).
    streak: GuardStreak,
    /// `sluice_guard_passed_total{reason="recently_found"}` of its table,
    /// kept once its lookups are skipped.
    skipped: Option<Arc<Striped>>,
}

struct MemoTable {
    /// In the table set of the memo's version ([`sluice_guard::Tables::at`]).
    position: usize,
    name: Box<str>,
    /// The lookup's condition on the table's key column (an index into its
    /// conjuncts); None: it has none.
    conjunct: Option<usize>,
}

/// A shape the session found in [`crate::answers::Answers`].
pub(super) struct ShapeMemo {
    /// The statement's fingerprint hash: a cheap "seen this statement"
    /// (coarser than the shape: other literals may differ).
    fingerprint: u64,
    text: Vec<u8>,
    table: Box<str>,
    charset: [Box<str>; 3],
    binary: bool,
    extended: bool,
    generation: u64,
    columns: Arc<[Bytes]>,
}

impl ShapeMemo {
    fn new(key: &ShapeKey<'_>, fingerprint: u64, columns: Arc<[Bytes]>) -> ShapeMemo {
        ShapeMemo {
            fingerprint,
            text: key.text.to_vec(),
            table: key.table.into(),
            charset: key.charset.map(Into::into),
            binary: key.binary,
            extended: key.extended,
            generation: key.generation,
            columns,
        }
    }

    fn matches(&self, key: &ShapeKey<'_>) -> bool {
        self.text == key.text
            && *self.table == *key.table
            && self.charset.iter().zip(key.charset).all(|(a, b)| **a == *b)
            && self.binary == key.binary
            && self.extended == key.extended
            && self.generation == key.generation
    }
}

/// The metadata key of a passed lookup, kept until its result arrives.
struct OwnedShape {
    text: Vec<u8>,
    charset: [String; 3],
    binary: bool,
    generation: u64,
    /// Where the table's structure was established: only a backend known
    /// to have applied it returns the current columns.
    structure_at: GtidPos,
}

impl Session {
    /// Whether the statement could be a guarded lookup at all: checked
    /// before [`Session::ask_guard`], so that with the guard off (or for
    /// anything but a lookup) no guard future is built per statement.
    pub(super) fn guard_may_apply(&self, facts: &Facts) -> bool {
        facts.ast.lookup.is_some() && self.shared.guard.tables_version() != 0
    }

    /// Asks the guard about a statement before it runs.
    pub(super) async fn ask_guard(
        &mut self,
        facts: &Arc<Facts>,
        values: Values<'_>,
        plan: &Plan,
    ) -> Result<Asked, End> {
        // Everything up to "certainly absent" is decided without awaiting
        // (the lookups it passes, most of them, build no further future).
        let (memo, decision) = match self.decide(facts, &values, plan) {
            Decision::NotGuarded => return Ok(Asked::NotGuarded),
            Decision::Skip { memo } => {
                return Ok(Asked::Pass(FollowUp {
                    memo,
                    facts: Arc::as_ptr(facts) as usize,
                    capture: None,
                    maybe_present: false,
                }));
            }
            Decision::Pass {
                memo,
                reason,
                capture,
            } => (memo, Err((reason, capture))),
            Decision::Absent {
                memo,
                table,
                applied,
                columns,
            } => {
                let verdict = self.consistent(facts, &table, &applied, plan.requirement).await;
                match verdict {
                    GuardVerdict::Answer => (memo, Ok(columns)),
                    GuardVerdict::Pass(reason) => (memo, Err((reason, None))),
                }
            }
        };
        let started = self.command_started;
        if let Ok(columns) = &decision {
            self.answer_empty(facts, columns).await?;
            // Its keys are absent: every lookup of it is checked again.
            if let Some(m) = self.guard_tables.get_mut(memo) {
                m.streak.answered();
            }
        }
        let name = self
            .guard_tables
            .get(memo)
            .and_then(|m| m.table.as_ref())
            .map(|t| &t.name);
        match decision {
            Ok(_) => {
                if let Some(name) = name {
                    self.metrics.guard(name, None);
                }
                self.metrics
                    .query("guard", "guard", facts.kind().label(), started.elapsed());
                Ok(Asked::Answered)
            }
            Err((reason, capture)) => {
                let name = name.map_or("", |n| n);
                tracing::debug!(
                    conn_id = self.id,
                    table = name,
                    reason,
                    "lookup passed to the database"
                );
                self.metrics.guard(name, Some(reason));
                let capture = capture.map(|(table, text)| {
                    let shape = OwnedShape {
                        text,
                        charset: charsets(&mut self.guard_charsets, &self.desired.vars)
                            .result()
                            .map(str::to_string),
                        binary: matches!(values, Values::Binary { .. }),
                        generation: table.ddl_generation(),
                        structure_at: table.structure_at(),
                    };
                    (table, shape)
                });
                Ok(Asked::Pass(FollowUp {
                    memo,
                    facts: Arc::as_ptr(facts) as usize,
                    capture,
                    maybe_present: reason == guard_pass::MAYBE_PRESENT,
                }))
            }
        }
    }

    /// The entry of the session's table memo for a lookup under the table
    /// set's `version`, if the session has one: most statements repeat, and
    /// finding the table takes a walk over the guard's tables, name
    /// comparisons and a walk over the lookup's conditions.
    fn find_memo(&self, facts: &Arc<Facts>, shape: &LookupShape, version: u64) -> Option<usize> {
        let session_schema = self.schema_for(shape)?;
        self.guard_tables.iter().position(|m| {
            Arc::ptr_eq(&m.facts, facts)
                && m.version == version
                && m.session_schema.as_deref() == session_schema
        })
    }

    /// The session's schema where the lookup names none (Some(None): it
    /// names one; None: neither has one, so there is no table to look in).
    fn schema_for(&self, shape: &LookupShape) -> Option<Option<&str>> {
        match shape.schema {
            Some(_) => Some(None),
            None => Some(Some(self.desired.schema.as_deref()?)),
        }
    }

    /// Looks the lookup's table up in `tables` and remembers it (None: no
    /// schema to look in).
    fn add_memo(&mut self, facts: &Arc<Facts>, shape: &LookupShape, tables: &Tables) -> Option<usize> {
        let session_schema = self.schema_for(shape)?;
        let schema = shape.schema.as_deref().or(session_schema)?;
        let table = tables.position(schema, &shape.table).and_then(|position| {
            let table = tables.at(position)?;
            Some(MemoTable {
                position,
                name: table.name().into(),
                conjunct: shape
                    .conjuncts
                    .iter()
                    .position(|c| c.is_column(table.key_column())),
            })
        });
        let memo = TableMemo {
            facts: facts.clone(),
            version: tables.version(),
            session_schema: session_schema.map(Into::into),
            table,
            streak: GuardStreak::default(),
            skipped: None,
        };
        Some(remember(&mut self.guard_tables, memo, TABLES_REMEMBERED))
    }

    /// After a passed lookup ran: keep its metadata, count a false positive.
    pub(super) fn guard_follow_up(&mut self, follow: FollowUp, done: &super::execute::Done) {
        let Some(outcome) = done.outcome.as_ref() else {
            return;
        };
        if outcome.ended_with_error {
            return;
        }
        let memo = self
            .guard_tables
            .get_mut(follow.memo)
            .filter(|m| Arc::as_ptr(&m.facts) as usize == follow.facts);
        if let Some(m) = memo {
            if outcome.result_set {
                m.streak.ran(outcome.rows > 0);
            }
            if follow.maybe_present && outcome.result_set && outcome.rows == 0 {
                if let Some(t) = &m.table {
                    metrics::counter!("sluice_guard_false_positives_total", "table" => t.name.to_string())
                        .increment(1);
                }
            }
        }
        let (Some((table, shape)), Some(columns)) = (follow.capture, outcome.columns.clone()) else {
            return;
        };
        // A replica that has not applied the table's last DDL (or the
        // build's snapshot) may have answered with the old columns.
        let current = match &done.ran_on {
            Some((_, sluice_config::Role::Primary)) => true,
            Some((backend, sluice_config::Role::Replica)) => self
                .shared
                .monitor
                .view()
                .health(&backend.name)
                .and_then(|h| h.position.as_ref())
                .is_some_and(|p| p.covers(&shape.structure_at)),
            None => false,
        };
        if !current {
            return;
        }
        self.shared.answers.put(
            &ShapeKey {
                text: &shape.text,
                table: table.name(),
                charset: [&shape.charset[0], &shape.charset[1], &shape.charset[2]],
                binary: shape.binary,
                extended: self.extended_metadata,
                generation: shape.generation,
            },
            columns,
        );
    }

    /// Everything the guard decides before the consistency check, which
    /// only a lookup of keys certainly absent needs.
    fn decide(&mut self, facts: &Arc<Facts>, values: &Values<'_>, plan: &Plan) -> Decision {
        let Some(shape) = facts.ast.lookup.as_ref() else {
            return Decision::NotGuarded;
        };
        let version = self.shared.guard.tables_version();
        // Never a table (the guard is off): nothing to look up or remember,
        // so a session with many statements allocates no memo entries.
        if version == 0 {
            return Decision::NotGuarded;
        }
        let found = self.find_memo(facts, shape, version);
        if let Some(memo) = found {
            let (after, one_in) = (
                self.config.guard.skip_after_found,
                self.config.guard.skip_check_one_in,
            );
            let m = &mut self.guard_tables[memo];
            let Some(table) = &m.table else {
                return Decision::NotGuarded;
            };
            // The plan's reasons first: they say why the guard is never
            // asked, whatever the streak.
            if plan.guard_pass().is_none() && !m.streak.check(after, one_in) {
                let counter = match &m.skipped {
                    Some(c) => c,
                    None => {
                        let c = self
                            .metrics
                            .guard_counter(&table.name, Some(guard_pass::RECENTLY_FOUND))
                            .clone();
                        m.skipped.insert(c)
                    }
                };
                counter.increment();
                return Decision::Skip { memo };
            }
        }
        let tables = self.shared.guard.tables();
        // A memo of the snapshot's own version (the set may have changed
        // since the version was read).
        let memo = match found.filter(|&m| self.guard_tables[m].version == tables.version()) {
            Some(memo) => memo,
            None => match self.add_memo(facts, shape, &tables) {
                Some(memo) => memo,
                None => return Decision::NotGuarded,
            },
        };
        let Some((position, conjunct)) = self
            .guard_tables
            .get(memo)
            .and_then(|m| m.table.as_ref())
            .map(|t| (t.position, t.conjunct))
        else {
            return Decision::NotGuarded;
        };
        // The memo's version is the snapshot's: the position is this table.
        let Some(table) = tables.at(position) else {
            return Decision::NotGuarded;
        };
        let pass = |reason| Decision::Pass {
            memo,
            reason,
            capture: None,
        };
        // The plan says whether the read is the guard's at all (reads that
        // must go to the primary never are).
        if let Some(reason) = plan.guard_pass() {
            return pass(reason);
        }
        let Some(conjunct) = conjunct.and_then(|c| shape.conjuncts.get(c)) else {
            return pass(guard_pass::NO_KEY_CONDITION);
        };
        // The position first, then readiness, then the filter: a table is
        // marked not ready before the position of the event that broke it
        // is published, so a stale filter is never read as a fresh one.
        let applied = self.shared.guard.applied();
        if !table.ready() {
            // No capture: the shape text is not computed yet.
            return pass(guard_pass::NOT_READY);
        }
        if let Values::Binary { payload, .. } = values {
            // A cursor's result comes through COM_STMT_FETCH.
            if payload.get(5).is_some_and(|flags| *flags != 0) {
                return pass(guard_pass::CURSOR);
            }
        }
        // Every key the lookup names, as the filter holds them.
        let charsets = charsets(&mut self.guard_charsets, &self.desired.vars);
        let maybe = match probe_keys(
            table,
            shape,
            conjunct,
            values,
            &charsets.connection,
            &mut self.guard_key,
        ) {
            Ok(maybe) => maybe,
            Err(reason) => return pass(reason),
        };
        let fingerprint = match &self.digest.key {
            DigestKey::Text(hash) => *hash,
            DigestKey::Prepared(f) => f.hash,
            DigestKey::None => 0,
        };
        // A statement whose metadata this session already found needs no
        // capture: "maybe present" goes to the database without working out
        // its shape (most lookups of a table whose keys exist). At worst a
        // capture is skipped and made by the next absent key's pass.
        if maybe && self.guard_memo.iter().any(|m| m.fingerprint == fingerprint) {
            return pass(guard_pass::MAYBE_PRESENT);
        }
        let key = ShapeKey {
            text: shape_text(shape, conjunct, values, &mut self.guard_text),
            table: table.name(),
            charset: charsets.result(),
            binary: matches!(values, Values::Binary { .. }),
            extended: self.extended_metadata,
            generation: table.ddl_generation(),
        };
        // A client repeating its few shapes (the flood this is for) finds
        // their metadata without the shared cache's hash and lock.
        let columns = match self.guard_memo.iter().find(|m| m.matches(&key)) {
            Some(memo) => Some(memo.columns.clone()),
            None => {
                let found = self.shared.answers.get(&key);
                if let Some(columns) = &found {
                    let memo = ShapeMemo::new(&key, fingerprint, columns.clone());
                    remember(&mut self.guard_memo, memo, SHAPES_REMEMBERED);
                }
                found
            }
        };
        let Some(columns) = columns else {
            return Decision::Pass {
                memo,
                reason: if maybe {
                    guard_pass::MAYBE_PRESENT
                } else {
                    guard_pass::NO_METADATA
                },
                capture: Some((table.clone(), key.text.to_vec())),
            };
        };
        if maybe {
            return pass(guard_pass::MAYBE_PRESENT);
        }
        Decision::Absent {
            memo,
            table: table.clone(),
            applied,
            columns,
        }
    }

    /// The consistency contract: the guard has seen everything the backend
    /// the read would have gone to has, and what read-your-writes requires.
    async fn consistent(
        &mut self,
        facts: &Facts,
        table: &TableGuard,
        guard_applied: &GtidPos,
        requirement: plan::Requirement,
    ) -> GuardVerdict {
        let required = match requirement {
            plan::Requirement::None => None,
            _ => match Box::pin(self.required_position(requirement)).await {
                Ok(required) => required,
                Err(()) => return GuardVerdict::Pass(guard_pass::PRIMARY_POSITION_UNKNOWN),
            },
        };
        let view = self.shared.monitor.view();
        let read = self.plan_replica_read(Some(facts), required.as_ref(), &view);
        let replica_applied = match read.target {
            ReadTarget::Replica(i) | ReadTarget::WaitOn(i) => self
                .topology
                .backends
                .get(i)
                .and_then(|b| view.health(&b.name))
                .and_then(|h| h.position.as_ref()),
            _ => None,
        };
        let guard = &self.shared.guard;
        // Its own lag matters only where the read would go to the primary.
        let guard_lag_ms = match read.target {
            ReadTarget::Primary => guard
                .last_heartbeat_us()
                .and_then(|us| self.shared.monitor.heartbeat_lag_ms(&self.config, us)),
            _ => None,
        };
        plan::guard_may_answer(GuardInput {
            target: read.target,
            guard_applied,
            replica_applied,
            required: required.as_ref(),
            guard_lag_ms,
            max_lag_ms: facts
                .lexical
                .max_lag_ms()
                .unwrap_or(self.config.routing.max_replica_lag_ms),
            table_ready: table.ready(),
            stream_connected: guard.connected(),
        })
    }

    /// An empty result set with the server's column definitions, as the
    /// server ends one: no warnings, the session's status flags.
    async fn answer_empty(&mut self, facts: &Facts, columns: &[Bytes]) -> Result<(), End> {
        self.binding.release_statement_hold();
        let status = self.client_status();
        let deprecate_eof = self.caps.contains(Caps::CLIENT_DEPRECATE_EOF);
        let mut seq = self.seq;
        for (i, packet) in columns.iter().enumerate() {
            if i == 0 && self.caches_metadata && packet.len() <= 9 {
                // The column count, with "metadata follows" for a client
                // that caches metadata.
                let count = sluice_protocol::result_set::CountPacket::new(packet, Some(1));
                self.client.queue_packet(seq, count.as_slice());
            } else {
                self.client.queue_packet(seq, packet);
            }
            seq = seq.wrapping_add(1);
        }
        if !deprecate_eof {
            self.client.queue_packet(seq, &packets::eof(0, status));
            seq = seq.wrapping_add(1);
            self.client.queue_packet(seq, &packets::eof(0, status));
        } else {
            self.client.queue_packet(seq, &packets::ok_as_eof(0, status));
        }
        // What a later statement reads about this one: a SELECT of a table
        // that returned no row and raised nothing.
        if sluice_router::diagnostics::clears_conditions(facts) {
            self.clear_conditions_of_previous();
        }
        self.diagnostics.previous = self.diagnostics.previous.after(Ended {
            result_set: true,
            rows: 0,
            ..Ended::default()
        });
        self.client.flush().await.map_err(|_| End::ClientGone)
    }
}

/// Adds `item` to a session's short memo list, the oldest out at `max`;
/// returns its index.
fn remember<T>(list: &mut Vec<T>, item: T, max: usize) -> usize {
    if list.len() >= max && !list.is_empty() {
        list.remove(0);
    }
    list.push(item);
    list.len() - 1
}

/// The session's charsets as the guard needs them, worked out once per set
/// of session variables (they are interned: a pointer says it is the same).
pub(super) struct Charsets {
    vars: Vars,
    /// The charset string literals and string parameters arrive in. A
    /// session whose client and connection charsets differ gets a value no
    /// column has, so its string keys are passed through.
    connection: Box<str>,
    /// What the result's column definitions depend on in the session.
    result: [Box<str>; 3],
}

impl Charsets {
    fn of(vars: &Vars) -> Charsets {
        let var = |name: &str| vars.get(name).map(String::as_str).unwrap_or("");
        let client = var("character_set_client");
        let connection = var("character_set_connection");
        Charsets {
            vars: vars.clone(),
            connection: if client == connection {
                connection.into()
            } else {
                "(client and connection charsets differ)".into()
            },
            result: [
                var("character_set_results").into(),
                var("collation_connection").into(),
                var(sluice_pool::RESULTS_COLLATION).into(),
            ],
        }
    }

    fn result(&self) -> [&str; 3] {
        [&self.result[0], &self.result[1], &self.result[2]]
    }
}

/// The session's [`Charsets`], recomputed only when its variables changed.
fn charsets<'a>(memo: &'a mut Option<Charsets>, vars: &Vars) -> &'a Charsets {
    memo.take_if(|m| !m.vars.same(vars));
    memo.get_or_insert_with(|| Charsets::of(vars))
}

/// What [`Session::decide`] found; `memo` is the lookup's entry in the
/// session's table memo.
enum Decision {
    NotGuarded,
    /// Its recent lookups found their rows: passed without asking the
    /// filter ([`GuardStreak`]), already counted.
    Skip {
        memo: usize,
    },
    /// `capture`: the table and the shape text to keep the result's
    /// metadata under.
    Pass {
        memo: usize,
        reason: &'static str,
        capture: Option<(Arc<TableGuard>, Vec<u8>)>,
    },
    /// Every key is certainly absent from the filter, which held every key
    /// up to `applied`: answered if that covers what the read needs.
    Absent {
        memo: usize,
        table: Arc<TableGuard>,
        applied: arc_swap::Guard<Arc<GtidPos>>,
        columns: Arc<[Bytes]>,
    },
}

/// Probes every key value of `conjunct` against the filter: Ok(true) when
/// one may be present, Ok(false) when all are certainly absent, Err with the
/// reason when a value cannot be compared as the server would.
fn probe_keys(
    table: &TableGuard,
    shape: &LookupShape,
    conjunct: &KeyConjunct,
    values: &Values<'_>,
    charset: &str,
    key: &mut Vec<u8>,
) -> Result<bool, &'static str> {
    let kind = table.kind();
    let mut maybe = false;
    let mut probed = 0;
    match values {
        Values::Text { sql, literals } => {
            let map = shape.resolve(sql, literals, 0)?;
            for ordinal in map.ordinals(&conjunct.values) {
                let text = literals
                    .get(ordinal)
                    .and_then(|span| sql.get(span.clone()))
                    .ok_or(reason::SHAPE_MISMATCH)?;
                probe_literal(kind, text, charset, key)?;
                maybe |= table.may_contain(key);
                probed += 1;
            }
        }
        Values::Binary {
            sql,
            literals,
            payload,
            params,
            shape_checked,
            types,
            long_data,
        } => {
            match shape_checked {
                Some(checked) => (*checked)?,
                None => {
                    shape.resolve(sql, literals, usize::from(*params))?;
                }
            }
            let indexes: &[u16] = match &conjunct.values {
                KeyValues::Param(i) => std::slice::from_ref(i),
                KeyValues::ParamList(list) => list,
                _ => return Err(reason::SHAPE_MISMATCH),
            };
            // The types this execute binds, or the ones it sent before.
            let bound = sluice_protocol::statement::bound_types(payload, *params).or(*types);
            for &index in indexes {
                let value = sluice_protocol::statement::execute_param(payload, *params, *types, index)
                    .ok_or(reason::SHAPE_MISMATCH)?;
                let at = usize::from(index) * 2;
                let (param_type, flags) = bound
                    .and_then(|t| Some((*t.get(at)?, *t.get(at + 1)?)))
                    .ok_or(reason::SHAPE_MISMATCH)?;
                probe_param(
                    kind,
                    param_type,
                    flags & 0x80 != 0,
                    value,
                    *long_data,
                    charset,
                    key,
                )?;
                maybe |= table.may_contain(key);
                probed += 1;
            }
        }
    }
    // A lookup whose key values were not found is never "certainly absent".
    if probed == 0 {
        return Err(reason::SHAPE_MISMATCH);
    }
    Ok(maybe)
}

/// The statement's text apart from the key's values: what its result's
/// metadata can depend on. The text with the key's literals replaced by
/// `?` and every other literal kept (a literal in the select list names
/// and sizes a column), or a prepared statement's own SQL.
fn shape_text<'a>(
    shape: &LookupShape,
    conjunct: &KeyConjunct,
    values: &Values<'a>,
    text: &'a mut Vec<u8>,
) -> &'a [u8] {
    text.clear();
    match values {
        Values::Binary { sql, .. } => sql.as_bytes(),
        Values::Text { sql, literals } => {
            let keys = shape
                .resolve(sql, literals, 0)
                .map(|map| map.ordinals(&conjunct.values))
                .unwrap_or(0..0);
            let b = sql.as_bytes();
            let mut last = 0;
            for (i, span) in literals.iter().enumerate() {
                text.extend_from_slice(b.get(last..span.start).unwrap_or_default());
                if keys.contains(&i) {
                    text.push(b'?');
                } else {
                    text.extend_from_slice(b.get(span.clone()).unwrap_or_default());
                }
                last = span.end.max(last);
            }
            text.extend_from_slice(b.get(last..).unwrap_or_default());
            text
        }
    }
}
