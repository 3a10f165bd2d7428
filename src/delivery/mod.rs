//! Outbound delivery: each shard delivers the recipients of the domains it
//! owns over cached, pipelined SMTP connections.
//!
//! - [`queue`]: messages and per-recipient records (bodies shared, never copied);
//! - [`queues`]: specific and general queues, their limits and fallbacks;
//! - [`engine`]: destinations, connection spawning, outcomes, retries, DSNs;
//! - [`connection`]: the thin IO driver around the sans-IO SMTP client;
//! - [`control`]: operator commands (pause, flush, bounce…) and metrics;
//! - [`shaping`]: the feed-rate controller, static limits, response rules,
//!   warm-up and source addresses;
//! - [`loop_guard`]: never deliver to our own listeners (mail loops);
//! - [`retry`], [`dsn`], [`log`], [`tls`]: schedules, RFC 3464 reports, the
//!   JSON-lines delivery log, outbound TLS.

pub mod connection;
pub mod control;
pub mod dsn;
pub mod engine;
pub mod log;
pub mod loop_guard;
pub mod queue;
pub mod queues;
pub mod retry;
pub mod shaping;
pub mod tls;

pub use engine::{DeliveryCounters, Engine, EngineSettings};
