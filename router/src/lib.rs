//! Sluice's decisions, with no I/O: what a statement is and does to the
//! session ([`classify`], [`analyze`], cached by fingerprint in
//! [`Classifier`]), and where it runs ([`route`], [`pick_replica`]). Every
//! function here is pure, so every rule is a unit test.

pub mod analyze;
pub mod balance;
pub mod classifier;
pub mod classify;
pub mod fingerprint;
pub mod lexer;
pub mod route;
mod scan;

pub use balance::{Candidate, pick_replica};
pub use classifier::{Classified, Classifier, Facts, Scratch};
pub use classify::{Kind, PinReason, Statement, classify};
pub use route::{Holding, Route, RouteInput, route};
