//! `sluice-bench`: the load-test kit for the Sluice SMTP relay.
//!
//! Two halves, usable in-process or through the `sluice-bench` binary:
//! - [`inject`]: a pipelining SMTP load generator designed never to be the
//!   bottleneck of a measurement.
//! - [`dns`]: an authoritative DNS stub for synthetic and zone-file domains,
//!   with failure modes, that counts what it answered.
//! - [`sink`]: an SMTP receiver that imitates real receiving MTAs (latency,
//!   failures, limits, greylisting, dead hosts) and counts what it got.
//! - [`run`]: scenario runs that put a system under test (Sluice, Postfix,
//!   any command) between the injector and the sink and account for every
//!   message end to end, through crashes if asked.
//!
//! Everything only ever talks to loopback addresses ([`loopback`]).

#![warn(missing_docs)]

pub mod dns;
pub mod error;
pub mod inject;
pub mod loopback;
pub mod run;
pub mod sink;
pub mod smtp;
pub mod stream;
pub mod tls;

pub use error::{Error, Result};
