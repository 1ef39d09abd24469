//! The MySQL client/server wire protocol as Sluice needs it, written once and
//! used by both sides of the proxy: the frontend (Sluice as a server) and the
//! backend (Sluice as a client of MariaDB/MySQL).
//!
//! Sluice relays packets instead of decoding rows, so this crate is small:
//! physical packet framing ([`frame`]), the few packets Sluice builds or
//! inspects itself ([`packets`]), and the command/flag constants ([`consts`]).
//! Structures that `mysql_common` already models (handshakes, auth switch,
//! ERR) are taken from it.

pub mod consts;
pub mod frame;
pub mod handshake;
pub mod packets;
pub mod result_set;
pub mod statement;

pub use frame::{MAX_PAYLOAD, Packet, PacketStream};
