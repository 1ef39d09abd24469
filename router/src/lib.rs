//! Sluice's decisions, with no I/O: what a statement is and does to the
//! session ([`classify`], [`analyze`], cached by fingerprint in
//! [`Classifier`]), where it runs and what the client keeps ([`plan`], every routing rule in one module), which replica may serve a
//! read given lag and the session's own writes ([`choose_read`], [`gtid`]),
//! and which backend takes writes ([`choose_writer`]). Every function here
//! is pure (time and backend state are arguments), so every rule is a unit
//! test.

pub mod analyze;
pub mod balance;
pub mod classifier;
pub mod classify;
pub mod diagnostics;
pub mod fingerprint;
pub mod freshness;
pub mod gtid;
pub mod guard_key;
pub mod kill;
pub mod lexer;
pub mod lookup;
pub mod plan;
pub mod probe;
mod scan;
pub mod user_locks;
pub mod writer;

pub use balance::{Candidate, pick_replica};
pub use classifier::{Classified, Classifier, Facts, Scratch};
pub use classify::{Kind, PinReason, Statement, classify};
pub use freshness::{NoReplica, ReadChoice, ReadRequest, ReplicaState, choose_read, fresh_after};
pub use gtid::GtidPos;
pub use kill::{Kill, hides_kill, parse_kill};
pub use plan::{HoldReason, Plan, Requirement, Route, SessionInput};
pub use writer::{Writer, WriterCandidate, choose_writer};
