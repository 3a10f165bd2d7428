//! Per-name failure injection. Rules match one exact owner name (not the
//! names below it), so `gmail.test=servfail` breaks the MX lookup of one
//! rollup domain while the shared MX hosts keep resolving; add a rule for
//! `mx1.gmail.test` to break the host lookup instead.
//!
//! A rule may fire only with some probability (`d7.test=servfail@0.25`).
//! The draws come from one seeded counter-based generator shared by all
//! rules, so a run with the same seed and the same query sequence triggers
//! the same number of failures: flaky-domain tests stay reproducible.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

use hickory_proto::rr::Name;

use super::error::DnsError;
use super::zone::parse_name;

/// What the server does when a query hits a failure rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FailureMode {
    /// Answer NXDOMAIN with the SOA in the authority section.
    NxDomain,
    /// Answer SERVFAIL with no records.
    ServFail,
    /// Answer REFUSED with no records.
    Refused,
    /// Never answer (UDP and TCP); counted as `dropped`.
    Timeout,
    /// Over UDP answer TC=1 with no records; over TCP answer normally.
    Truncate,
    /// Answer MX queries with the RFC 7505 null MX `MX 0 .`; other types
    /// are answered normally (NODATA instead of NXDOMAIN if the name does
    /// not otherwise exist).
    NullMx,
}

impl FailureMode {
    /// The spelling used in rules and zone files.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureMode::NxDomain => "nxdomain",
            FailureMode::ServFail => "servfail",
            FailureMode::Refused => "refused",
            FailureMode::Timeout => "timeout",
            FailureMode::Truncate => "truncate",
            FailureMode::NullMx => "nullmx",
        }
    }
}

impl fmt::Display for FailureMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FailureMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "nxdomain" => Ok(FailureMode::NxDomain),
            "servfail" => Ok(FailureMode::ServFail),
            "refused" => Ok(FailureMode::Refused),
            "timeout" => Ok(FailureMode::Timeout),
            "truncate" | "tc" => Ok(FailureMode::Truncate),
            "nullmx" | "null-mx" => Ok(FailureMode::NullMx),
            other => Err(format!(
                "unknown failure mode {other:?} (expected nxdomain, servfail, refused, timeout, truncate or nullmx)"
            )),
        }
    }
}

/// One failure rule: queries for `name` fail with `mode`, with probability
/// `probability` (1.0 = always).
#[derive(Clone, Debug, PartialEq)]
pub struct FailureRule {
    /// Exact owner name the rule applies to (fully qualified).
    pub name: Name,
    /// What happens to matching queries.
    pub mode: FailureMode,
    /// Chance in (0, 1] that a matching query fails.
    pub probability: f64,
}

impl FailureRule {
    /// A rule that always fires. `name` is a domain name such as `d5.test`.
    pub fn new(name: &str, mode: FailureMode) -> Result<Self, DnsError> {
        let name = parse_name(name).map_err(|reason| DnsError::Failure {
            rule: format!("{name}={mode}"),
            reason,
        })?;
        Ok(FailureRule {
            name,
            mode,
            probability: 1.0,
        })
    }

    /// The same rule firing with probability `p` in (0, 1].
    pub fn with_probability(mut self, p: f64) -> Result<Self, DnsError> {
        check_probability(p).map_err(|reason| DnsError::Failure {
            rule: format!("{}={}@{p}", self.name, self.mode),
            reason,
        })?;
        self.probability = p;
        Ok(self)
    }
}

pub(crate) fn check_probability(p: f64) -> Result<(), String> {
    if p > 0.0 && p <= 1.0 {
        Ok(())
    } else {
        Err(format!("probability {p} is not in (0, 1]"))
    }
}

/// Parses the CLI form `NAME=MODE` or `NAME=MODE@PROBABILITY`, e.g.
/// `d5.test=servfail` or `d7.test=timeout@0.3`.
impl FromStr for FailureRule {
    type Err = DnsError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason: String| DnsError::Failure {
            rule: s.to_string(),
            reason,
        };
        let (name, rest) = s
            .split_once('=')
            .ok_or_else(|| bad("expected NAME=MODE[@PROBABILITY]".into()))?;
        let (mode, probability) = match rest.split_once('@') {
            Some((mode, p)) => {
                let p: f64 = p
                    .trim()
                    .parse()
                    .map_err(|_| bad(format!("probability {p:?} is not a number")))?;
                (mode, p)
            }
            None => (rest, 1.0),
        };
        let mode = mode.parse::<FailureMode>().map_err(bad)?;
        check_probability(probability).map_err(bad)?;
        let name = parse_name(name.trim()).map_err(bad)?;
        Ok(FailureRule {
            name,
            mode,
            probability,
        })
    }
}

impl fmt::Display for FailureRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.name, self.mode)?;
        if self.probability < 1.0 {
            write!(f, "@{}", self.probability)?;
        }
        Ok(())
    }
}

/// The rules in force, looked up once per query.
pub(crate) struct FailureTable {
    rules: HashMap<Name, (FailureMode, f64)>,
    rng: AtomicU64,
}

impl FailureTable {
    /// Later rules for the same name replace earlier ones, so CLI rules
    /// given after the zone file's win.
    pub(crate) fn new(rules: impl IntoIterator<Item = FailureRule>, seed: u64) -> Self {
        let rules = rules
            .into_iter()
            .map(|r| (r.name, (r.mode, r.probability)))
            .collect();
        FailureTable {
            rules,
            rng: AtomicU64::new(seed),
        }
    }

    /// Whether any rule names `name` (fires or not); CNAME chasing stops
    /// there so the client has to query that name itself.
    pub(crate) fn has_rule(&self, name: &Name) -> bool {
        !self.rules.is_empty() && self.rules.contains_key(name)
    }

    /// The failure to apply to a query for `name`, after the probability draw.
    pub(crate) fn check(&self, name: &Name) -> Option<FailureMode> {
        if self.rules.is_empty() {
            return None;
        }
        let &(mode, probability) = self.rules.get(name)?;
        if probability >= 1.0 || self.draw() < probability {
            Some(mode)
        } else {
            None
        }
    }

    /// SplitMix64 over an atomic counter: lock-free, and the multiset of
    /// values drawn depends only on the seed and the number of draws.
    fn draw(&self) -> f64 {
        let mut z = self
            .rng
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cli_rules() {
        let r: FailureRule = "d5.test=servfail".parse().unwrap();
        assert_eq!(r.name, Name::from_ascii("d5.test.").unwrap());
        assert_eq!(r.mode, FailureMode::ServFail);
        assert_eq!(r.probability, 1.0);
        let r: FailureRule = "D7.Test.=Timeout@0.25".parse().unwrap();
        assert_eq!(r.mode, FailureMode::Timeout);
        assert_eq!(r.probability, 0.25);
        assert_eq!(r.to_string(), "d7.test.=timeout@0.25");
        for bad in [
            "d5.test",
            "d5.test=boom",
            "d5.test=servfail@0",
            "d5.test=servfail@1.5",
            "d5.test=servfail@x",
            "=servfail",
            "a..b=servfail",
        ] {
            assert!(bad.parse::<FailureRule>().is_err(), "{bad}");
        }
    }

    #[test]
    fn probability_draws_are_reproducible() {
        let rule = FailureRule::new("flaky.test", FailureMode::ServFail)
            .unwrap()
            .with_probability(0.5)
            .unwrap();
        let name = rule.name.clone();
        let count = |seed| {
            let t = FailureTable::new([rule.clone()], seed);
            (0..1000).filter(|_| t.check(&name).is_some()).count()
        };
        let a = count(42);
        assert_eq!(a, count(42));
        assert!((400..600).contains(&a), "{a}");
        let t = FailureTable::new([rule.clone()], 1);
        assert_eq!(t.check(&Name::from_ascii("other.test.").unwrap()), None);
    }
}
