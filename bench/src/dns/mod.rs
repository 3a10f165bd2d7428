//! Authoritative DNS stub for sluice-bench.
//!
//! Sluice resolves MX records for every recipient domain, so a load test
//! needs a DNS server that can answer for tens of thousands of domains,
//! send each domain's mail to a distinct loopback address (so the SMTP
//! sink can tell receivers apart), roll many domains up onto shared MX
//! hosts like real providers do, and fail on demand. This module is that
//! server, shaped by three constraints:
//!
//! * **Loopback only.** It binds only 127.0.0.0/8 or ::1 and serves only
//!   loopback addresses ([`zone`] refuses anything else), so sluice can
//!   never be steered off the machine.
//! * **Cheap per query.** Synthetic domains are computed from the query
//!   name ([`synthetic`]), explicit data is one hash lookup
//!   (`authority.rs`), counters are atomics ([`counters`]); the only
//!   per-query allocation is the answer itself.
//! * **Observable and scriptable.** Every query is counted by transport,
//!   type, RCODE and name so tests can assert "exactly one MX query", and
//!   failures ([`failure`]) are per name and reproducible.
//!
//! Wire format comes from `hickory-proto`; everything else (sockets,
//! truncation, negative answers) is here, in small files: `server.rs`
//! (sockets, tasks), `respond.rs` (packet → packet), `authority.rs`
//! (lookups), [`synthetic`], [`zone`] (TOML), [`failure`], [`counters`],
//! [`options`], [`error`].
//!
//! Typical use (the crate path differs between the stand-alone crate and
//! sluice-bench, hence not a doctest):
//!
//! ```text
//! use crate::dns::{start, DnsOptions};
//! let server = start(DnsOptions { domains: 1000, ..Default::default() }).await?;
//! println!("DNS on {}", server.local_addr()); // port 0 → real port here
//! let stats = server.stats();                  // live counters, cloneable
//! let report = server.shutdown().await;        // final snapshot
//! assert_eq!(report.stats.name("d5.test").total(), 1);
//! ```

mod authority;
pub mod counters;
pub mod error;
pub mod failure;
pub mod options;
mod respond;
mod server;
pub mod synthetic;
pub mod zone;

pub use counters::{DnsSnapshot, DnsStats, NameCounts, Transport, TransportSnapshot};
pub use error::DnsError;
pub use failure::{FailureMode, FailureRule};
pub use options::DnsOptions;
pub use server::{serve, start, DnsReport, DnsServer};
pub use synthetic::{
    synthetic_domain, synthetic_index, synthetic_mx_addr, synthetic_mx_host, MAX_SYNTHETIC_DOMAINS,
};
pub use zone::{Provider, ProviderHost, Zone, ZoneRecord};
