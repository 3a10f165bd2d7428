//! DNS for one shard: MX resolution per RFC 5321 §5.1 over the shard's
//! own sockets, with a per-shard cache.
//!
//! Why our own stub resolver rather than a resolver library or the libc
//! one: Sluice is thread-per-core on glommio (io_uring), and a shard owns
//! its destination domains outright, so DNS must be (a) async on the
//! shard's own executor, with no helper threads or cross-core locks, (b)
//! cached per shard with no sharing (a domain's entry is only ever touched
//! by its owning shard), and (c) explicit about the outcomes delivery acts
//! on: defer (`4.4.3`), bounce for NXDOMAIN (`5.1.2`), bounce for a null MX
//! (`5.1.10`). hickory-proto supplies only the wire format.
//!
//! Layout, bottom up:
//! * `wire.rs`: building queries, strict reply matching, reading answers
//!   (pure);
//! * `transport.rs`: one UDP exchange (fresh socket per query), TCP on TC=1;
//! * `client.rs`: retries, failover across nameservers, CNAME chasing;
//! * `cache.rs`: TTL clamping, negative caching, serve-stale,
//!   refresh-ahead, CLOCK eviction (pure, `now` passed in);
//! * `inflight.rs`: one query per (name, type) however many waiters;
//! * [`mx`]: exchanger ordering, null/implicit MX, outcome rules (pure);
//! * [`routes`]: static routes and the smarthost;
//! * `resolver.rs`: the [`Resolver`] that ties them together;
//! * [`config`], [`resolv_conf`], [`error`], [`counters`].
//!
//! ```ignore
//! let resolver = Resolver::new(ResolverConfig::default())?; // inside the shard's executor
//! match resolver.resolve_route("example.com").await {
//!     Ok(dest) => { /* dest.hosts in order, each with addrs and port */ }
//!     Err(e) if e.is_permanent() => { /* bounce with e.enhanced_status() */ }
//!     Err(e) => { /* defer, reason e.reason() */ }
//! }
//! ```

mod cache;
mod client;
pub mod config;
pub mod counters;
pub mod error;
mod inflight;
pub mod mx;
pub mod resolv_conf;
mod resolver;
pub mod routes;
mod transport;
mod wire;

pub use config::{CacheConfig, FamilyPreference, ResolverConfig};
pub use counters::ResolverStats;
pub use error::{ConfigError, ResolveError};
pub use mx::{Destination, DestinationKind, MxHost};
pub use resolv_conf::parse_resolv_conf;
pub use resolver::Resolver;
pub use routes::{RouteConfig, RouteTarget, SmarthostConfig};
