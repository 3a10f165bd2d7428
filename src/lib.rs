//! Sluice: a high-throughput outbound SMTP appliance.
//!
//! Thread-per-core and shared-nothing: each core runs a glommio executor,
//! accepts SMTP on its own SO_REUSEPORT socket, and owns a slice of the
//! destination domains ([`shard::hash::shard_of`]). See docs/architecture.md.

pub mod admin;
pub mod auth;
pub mod config;
pub mod delivery;
pub mod demo;
pub mod dns;
pub mod ingress;
pub mod journal;
pub mod notify;
pub mod readbuf;
pub mod runtime;
pub mod shard;
pub mod smtp;
pub mod tls;
pub mod tune;
