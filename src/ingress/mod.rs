//! Inbound SMTP: listeners and the session driver.
//!
//! The protocol lives in [`crate::smtp`]; this module only moves bytes
//! between sockets and that state machine, answers its events (store the
//! message, check a password, start TLS), and hands each accepted message's
//! envelopes to the shards that own the recipients' domains.

mod conn;
pub mod limits;

pub mod listener;
mod outbox;
pub mod session;
