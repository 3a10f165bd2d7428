//! Server options. A plain struct with public fields and a `Default`, so
//! the bench CLI, the runner and tests can all fill in just what they need
//! (`DnsOptions { domains: 10, ..Default::default() }`).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use super::error::DnsError;
use super::failure::FailureRule;
use super::synthetic::MAX_SYNTHETIC_DOMAINS;
use super::zone::{is_loopback_ip, Zone};

/// Everything [`start`](super::start) / [`serve`](super::serve) need.
#[derive(Clone, Debug)]
pub struct DnsOptions {
    /// Address for both UDP and TCP; must be 127.0.0.0/8 or ::1. Port 0
    /// picks a free port that is free for both protocols.
    pub listen: SocketAddr,
    /// Number of synthetic domains `d0.test … d{N-1}.test`
    /// (at most [`MAX_SYNTHETIC_DOMAINS`]).
    pub domains: usize,
    /// Explicit records, providers and failure rules (see [`Zone::load`]).
    pub zone: Option<Zone>,
    /// Extra failure rules, applied after the zone's (they win per name).
    pub failures: Vec<FailureRule>,
    /// TTL of synthetic and provider records, and default TTL of zone records.
    pub ttl: u32,
    /// Negative-caching TTL: TTL and MINIMUM of the SOA sent with NXDOMAIN
    /// and NODATA answers (RFC 2308).
    pub negative_ttl: u32,
    /// Serve `AAAA ::1` for synthetic and provider MX hosts.
    pub aaaa: bool,
    /// Largest UDP response ever sent, and the payload size advertised in
    /// our OPT record. The effective limit per query is
    /// `min(max(512, client's EDNS size), max_udp_payload)`, or 512 without EDNS.
    pub max_udp_payload: u16,
    /// How many CNAME links the server follows inside one answer; 0 returns
    /// only the first CNAME so the client must chase every hop itself.
    pub max_cname_chase: usize,
    /// Keep per-query-name counters ([`DnsStats::name`](super::DnsStats::name)).
    pub count_names: bool,
    /// Seed for probabilistic failure rules.
    pub seed: u64,
    /// A TCP connection with no complete query for this long is closed.
    pub tcp_idle_timeout: Duration,
    /// Tasks receiving on the UDP socket.
    pub udp_workers: usize,
}

impl Default for DnsOptions {
    fn default() -> Self {
        DnsOptions {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            domains: 0,
            zone: None,
            failures: Vec::new(),
            ttl: 300,
            negative_ttl: 60,
            aaaa: false,
            max_udp_payload: 4096,
            max_cname_chase: 8,
            count_names: true,
            seed: 0x5eed,
            tcp_idle_timeout: Duration::from_secs(30),
            udp_workers: 2,
        }
    }
}

impl DnsOptions {
    /// Checks ranges and the loopback-only rule.
    pub fn validate(&self) -> Result<(), DnsError> {
        if !is_loopback_ip(self.listen.ip()) {
            return Err(DnsError::NonLoopback(self.listen));
        }
        if self.domains > MAX_SYNTHETIC_DOMAINS {
            return Err(DnsError::InvalidOption(format!(
                "--domains {} exceeds the {MAX_SYNTHETIC_DOMAINS} synthetic addresses available",
                self.domains
            )));
        }
        if self.max_udp_payload < 512 {
            return Err(DnsError::InvalidOption(format!(
                "max_udp_payload {} is below the DNS minimum of 512",
                self.max_udp_payload
            )));
        }
        if self.udp_workers == 0 {
            return Err(DnsError::InvalidOption(
                "udp_workers must be at least 1".into(),
            ));
        }
        if self.tcp_idle_timeout.is_zero() {
            return Err(DnsError::InvalidOption(
                "tcp_idle_timeout must be positive".into(),
            ));
        }
        Ok(())
    }
}
