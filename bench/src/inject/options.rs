//! Injector configuration, shared by the CLI and in-process callers. The
//! textual forms (`512:50,4096:40`, `gmail.test:0.3`, `user:pass`) parse
//! through `FromStr` so clap and library users get the same validation.

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::loopback::ensure_loopback;

/// When the injector stops starting new transactions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stop {
    /// After this many transactions have been started.
    Messages(u64),
    /// After this much time; transactions in flight still complete.
    Duration(Duration),
}

/// Message sizes: one fixed size or a weighted mix.
#[derive(Debug, Clone, PartialEq)]
pub enum SizeSpec {
    /// Every message is this many bytes (headers included).
    Fixed(usize),
    /// Sizes drawn by weight, e.g. `512:50,4096:40,65536:10`.
    Weighted(Vec<SizeWeight>),
}

/// One entry of a [`SizeSpec::Weighted`] mix.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SizeWeight {
    /// Message size in bytes.
    pub bytes: usize,
    /// Relative weight (any positive scale).
    pub weight: f64,
}

impl FromStr for SizeSpec {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let mut entries = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (bytes, weight) = part.split_once(':').ok_or_else(|| {
                Error::InvalidOption(format!("size-dist entry {part:?} is not BYTES:WEIGHT"))
            })?;
            let bytes: usize = bytes.trim().parse().map_err(|_| {
                Error::InvalidOption(format!("size-dist size {bytes:?} is not a number"))
            })?;
            let weight: f64 = weight.trim().parse().map_err(|_| {
                Error::InvalidOption(format!("size-dist weight {weight:?} is not a number"))
            })?;
            entries.push(SizeWeight { bytes, weight });
        }
        let spec = SizeSpec::Weighted(entries);
        spec.validate()?;
        Ok(spec)
    }
}

impl SizeSpec {
    fn validate(&self) -> Result<()> {
        match self {
            SizeSpec::Fixed(n) if *n > MAX_MESSAGE => Err(Error::InvalidOption(format!(
                "size {n} exceeds {MAX_MESSAGE}"
            ))),
            SizeSpec::Fixed(_) => Ok(()),
            SizeSpec::Weighted(entries) => {
                if entries.is_empty() {
                    return Err(Error::InvalidOption("size-dist is empty".into()));
                }
                for e in entries {
                    if !(e.weight.is_finite() && e.weight > 0.0) {
                        return Err(Error::InvalidOption(format!(
                            "size-dist weight {} must be > 0",
                            e.weight
                        )));
                    }
                    if e.bytes > MAX_MESSAGE {
                        return Err(Error::InvalidOption(format!(
                            "size {} exceeds {MAX_MESSAGE}",
                            e.bytes
                        )));
                    }
                }
                Ok(())
            }
        }
    }
}

/// Largest message the injector builds; templates are kept per connection.
pub const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// A recipient domain with a fixed share of all recipients.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderShare {
    /// Domain name, e.g. `gmail.test`.
    pub domain: String,
    /// Fraction of recipients, 0-1.
    pub share: f64,
}

impl FromStr for ProviderShare {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let (domain, share) = s
            .rsplit_once(':')
            .ok_or_else(|| Error::InvalidOption(format!("provider {s:?} is not NAME:SHARE")))?;
        let share: f64 = share.parse().map_err(|_| {
            Error::InvalidOption(format!("provider share {share:?} is not a number"))
        })?;
        if domain.is_empty() || !(0.0..=1.0).contains(&share) {
            return Err(Error::InvalidOption(format!(
                "provider {s:?}: share must be within 0-1"
            )));
        }
        Ok(ProviderShare {
            domain: domain.to_string(),
            share,
        })
    }
}

/// Most synthetic domains a run may name.
pub const MAX_DOMAINS: usize = 1 << 22;

/// How recipients are spread over the domains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DomainOrder {
    /// Each recipient's domain drawn from the mix (providers, Zipf, weights).
    #[default]
    Random,
    /// Recipient `k` of the run (over all connections) goes to synthetic
    /// domain `k mod domains`: N recipients reach min(N, domains) distinct
    /// domains (the test of per-destination state at a million domains).
    Sequential,
}

impl FromStr for DomainOrder {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "random" => Ok(DomainOrder::Random),
            "sequential" => Ok(DomainOrder::Sequential),
            _ => Err(Error::InvalidOption(format!(
                "domain order {s:?}: expected random or sequential"
            ))),
        }
    }
}

/// A synthetic domain drawn more or less often than the others.
#[derive(Debug, Clone, PartialEq)]
pub struct DomainWeight {
    /// A synthetic domain, `d{i}.test`.
    pub domain: String,
    /// Relative weight among the synthetic domains: the others weigh 1
    /// (times their Zipf weight when `zipf` is set).
    pub weight: f64,
}

impl FromStr for DomainWeight {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let (domain, weight) = s.rsplit_once(':').ok_or_else(|| {
            Error::InvalidOption(format!("domain weight {s:?} is not NAME:WEIGHT"))
        })?;
        let weight: f64 = weight.trim().parse().map_err(|_| {
            Error::InvalidOption(format!("domain weight {weight:?} is not a number"))
        })?;
        if !(weight.is_finite() && weight >= 0.0) {
            return Err(Error::InvalidOption(format!(
                "domain weight {s:?}: weight must be a number >= 0"
            )));
        }
        Ok(DomainWeight {
            domain: domain.trim().to_ascii_lowercase(),
            weight,
        })
    }
}

/// AUTH PLAIN credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// Authentication identity.
    pub user: String,
    /// Password.
    pub pass: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("pass", &"<redacted>")
            .finish()
    }
}

impl FromStr for Credentials {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let (user, pass) = s
            .split_once(':')
            .ok_or_else(|| Error::InvalidOption("auth must be USER:PASS".into()))?;
        Ok(Credentials {
            user: user.to_string(),
            pass: pass.to_string(),
        })
    }
}

/// Everything an injector run needs.
#[derive(Debug, Clone)]
pub struct InjectOptions {
    /// SMTP server to load (loopback only).
    pub target: SocketAddr,
    /// Concurrent connections.
    pub connections: usize,
    /// When to stop.
    pub stop: Stop,
    /// Message sizes.
    pub size: SizeSpec,
    /// Recipients per message.
    pub rcpts: usize,
    /// Number of synthetic domains `d0.test` … `d{N-1}.test`.
    pub domains: usize,
    /// Zipf exponent over the synthetic domains; uniform when `None`.
    pub zipf: Option<f64>,
    /// How recipients are spread over the domains.
    pub domain_order: DomainOrder,
    /// Domains with fixed shares, taken before the synthetic ones.
    pub providers: Vec<ProviderShare>,
    /// Synthetic domains weighted differently from the others (default 1).
    pub domain_weights: Vec<DomainWeight>,
    /// Envelope and header sender.
    pub from: String,
    /// EHLO name.
    pub ehlo: String,
    /// Upgrade with STARTTLS (certificate not verified; loopback only).
    pub starttls: bool,
    /// AUTH PLAIN credentials.
    pub auth: Option<Credentials>,
    /// Use PIPELINING when offered.
    pub pipelining: bool,
    /// Use CHUNKING/BDAT when offered.
    pub chunking: bool,
    /// Transactions in flight per connection with PIPELINING + CHUNKING
    /// (reduced automatically when many recipients would make the
    /// outstanding replies large enough to risk a write/write deadlock).
    pub window: usize,
    /// Runtime worker threads for [`run_blocking`](super::run_blocking); all cores when `None`.
    pub threads: Option<usize>,
    /// Longest wait for a connection or a reply before giving up on the session.
    pub timeout: Duration,
    /// Show live progress on stderr (a bar on a TTY, plain lines otherwise).
    pub progress: bool,
    /// Keep reconnecting for this long after the last finished transaction
    /// instead of giving up on the first failed connect (zero: give up).
    /// `sluice-bench run` sets it to ride out a killed and restarted target.
    pub retry_for: Duration,
    /// Keep the sequence number of every acknowledged message in
    /// [`InjectReport::acknowledged`](super::InjectReport::acknowledged),
    /// so the messages can be looked for at the far end.
    pub record_acks: bool,
}

impl InjectOptions {
    /// Defaults matching the CLI: 50 connections, 1000 messages of 1 KiB,
    /// one recipient over 10 uniform domains, window 8.
    pub fn new(target: SocketAddr) -> Self {
        InjectOptions {
            target,
            connections: 50,
            stop: Stop::Messages(1000),
            size: SizeSpec::Fixed(1024),
            rcpts: 1,
            domains: 10,
            zipf: None,
            domain_order: DomainOrder::Random,
            providers: Vec::new(),
            domain_weights: Vec::new(),
            from: "bench@sluice-bench.test".to_string(),
            ehlo: "inject.sluice-bench.test".to_string(),
            starttls: false,
            auth: None,
            pipelining: true,
            chunking: true,
            window: 8,
            threads: None,
            timeout: Duration::from_secs(30),
            progress: false,
            retry_for: Duration::ZERO,
            record_acks: false,
        }
    }

    /// Checks ranges and the loopback rule.
    pub fn validate(&self) -> Result<()> {
        ensure_loopback(self.target)?;
        let bad = |m: &str| Err(Error::InvalidOption(m.to_string()));
        if self.connections == 0 {
            return bad("connections must be at least 1");
        }
        if self.rcpts == 0 || self.rcpts > 1000 {
            return bad("rcpts must be within 1-1000");
        }
        if self.window == 0 {
            return bad("window must be at least 1");
        }
        if self.domains == 0 && self.providers.is_empty() {
            return bad("need at least one domain or provider");
        }
        // Each connection counts per domain (8 bytes a domain), so a few
        // million domains already cost hundreds of MB across connections.
        if self.domains > MAX_DOMAINS {
            return bad("at most 4194304 domains");
        }
        if self.zipf.is_some_and(|s| !s.is_finite() || s < 0.0) {
            return bad("zipf exponent must be >= 0");
        }
        let shares: f64 = self.providers.iter().map(|p| p.share).sum();
        if shares > 1.0 + 1e-9 {
            return bad("provider shares add up to more than 1");
        }
        if self.domains == 0 && shares <= 0.0 {
            return bad("provider shares are all zero and there are no synthetic domains");
        }
        self.validate_domain_weights()?;
        if self.from.contains(['<', '>', '\r', '\n', ' '])
            || self.ehlo.contains(['\r', '\n', ' '])
            || self.ehlo.is_empty()
        {
            return bad("from/ehlo contain characters that would break the SMTP dialogue");
        }
        if let Some(c) = &self.auth {
            if c.user.contains('\0') || c.pass.contains('\0') {
                return bad("credentials must not contain NUL");
            }
        }
        if self.timeout.is_zero() {
            return bad("timeout must be positive");
        }
        if let Stop::Duration(d) = self.stop {
            if d.is_zero() {
                return bad("duration must be positive");
            }
        }
        self.size.validate()
    }

    /// Each weighted domain is one of the synthetic ones, named once, and
    /// the synthetic domains do not all weigh zero.
    fn validate_domain_weights(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidOption(m));
        for (i, w) in self.domain_weights.iter().enumerate() {
            if self.synthetic_index(&w.domain).is_none() {
                return bad(format!(
                    "domain weight for {}: not a synthetic domain (d0.test … d{}.test)",
                    w.domain,
                    self.domains.saturating_sub(1)
                ));
            }
            if self
                .domain_weights
                .iter()
                .take(i)
                .any(|p| p.domain == w.domain)
            {
                return bad(format!("domain weight for {} given twice", w.domain));
            }
        }
        let total: f64 = (0..self.domains).map(|k| self.domain_weight(k)).sum();
        if self.domains > 0 && total <= 0.0 {
            return bad("every synthetic domain has weight 0".into());
        }
        Ok(())
    }

    /// `k` when `name` is the synthetic domain `d{k}.test` of this run.
    fn synthetic_index(&self, name: &str) -> Option<usize> {
        let k: usize = name
            .strip_prefix('d')?
            .strip_suffix(".test")?
            .parse()
            .ok()?;
        (k < self.domains && name == format!("d{k}.test")).then_some(k)
    }

    /// The `domain_weights` factor of synthetic domain `k` (1 unless given).
    pub(crate) fn domain_weight(&self, k: usize) -> f64 {
        let name = format!("d{k}.test");
        self.domain_weights
            .iter()
            .find(|w| w.domain == name)
            .map_or(1.0, |w| w.weight)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_textual_forms() {
        let s: SizeSpec = "512:50, 4096:40,65536:10".parse().unwrap();
        assert_eq!(
            s,
            SizeSpec::Weighted(vec![
                SizeWeight {
                    bytes: 512,
                    weight: 50.0
                },
                SizeWeight {
                    bytes: 4096,
                    weight: 40.0
                },
                SizeWeight {
                    bytes: 65536,
                    weight: 10.0
                },
            ])
        );
        assert!("512".parse::<SizeSpec>().is_err());
        assert!("512:0".parse::<SizeSpec>().is_err());
        let p: ProviderShare = "gmail.test:0.3".parse().unwrap();
        assert_eq!(p.domain, "gmail.test");
        assert!("gmail.test:1.5".parse::<ProviderShare>().is_err());
        let c: Credentials = "u:p:q".parse().unwrap();
        assert_eq!(c.pass, "p:q");
        assert!(!format!("{c:?}").contains("p:q"));
    }

    #[test]
    fn validation_refuses_non_loopback_and_nonsense() {
        let mut o = InjectOptions::new("127.0.0.1:25".parse().unwrap());
        assert!(o.validate().is_ok());
        o.target = "192.0.2.1:25".parse().unwrap();
        assert!(matches!(o.validate(), Err(Error::NonLoopback(_))));
        let mut o = InjectOptions::new("127.0.0.1:25".parse().unwrap());
        o.providers = vec!["a.test:0.7".parse().unwrap(), "b.test:0.7".parse().unwrap()];
        assert!(o.validate().is_err());
    }

    #[test]
    fn domain_weights_name_synthetic_domains_once() {
        let w: DomainWeight = "D3.test:0.05".parse().unwrap();
        assert_eq!(w.domain, "d3.test");
        assert_eq!(w.weight, 0.05);
        assert!("d3.test".parse::<DomainWeight>().is_err());
        assert!("d3.test:-1".parse::<DomainWeight>().is_err());
        assert!("d3.test:inf".parse::<DomainWeight>().is_err());
        let mut o = InjectOptions::new("127.0.0.1:25".parse().unwrap());
        o.domains = 4;
        o.domain_weights = vec![w.clone()];
        assert!(o.validate().is_ok());
        assert_eq!(o.domain_weight(3), 0.05);
        assert_eq!(o.domain_weight(0), 1.0);
        for name in ["d4.test", "d03.test", "gmail.test", "d.test"] {
            o.domain_weights = vec![format!("{name}:1").parse().unwrap()];
            assert!(o.validate().is_err(), "{name}");
        }
        o.domain_weights = vec![w.clone(), w];
        assert!(o.validate().is_err(), "twice");
        o.domain_weights = (0..4)
            .map(|k| format!("d{k}.test:0").parse().unwrap())
            .collect();
        assert!(o.validate().is_err(), "all zero");
    }
}
