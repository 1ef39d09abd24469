//! Sluice's decisions, with no I/O: what a statement is and does to the
//! session ([`classify`]), and where it runs ([`route`]). Everything here is a
//! pure function of its inputs, so every rule is a unit test.

pub mod classify;
pub mod lexer;
pub mod route;

pub use classify::{Kind, PinReason, Statement, classify};
pub use route::{Route, RouteInput, route};
