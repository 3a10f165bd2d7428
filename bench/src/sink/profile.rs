//! Behaviour profiles: how the sink imitates a particular receiving MTA.
//! Loaded from TOML once at start and resolved into flat [`Behavior`]
//! values, so the hot path never consults optional fields or merges.
//!
//! See the [`crate::sink`] module documentation for the schema.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::Path;

use rand::Rng;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::loopback::is_loopback;

/// Reply delay before each group of replies is written.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum LatencyConfig {
    /// `latency = 20`: a fixed number of milliseconds.
    Millis(u64),
    /// `latency = { dist = "...", ... }`.
    Dist(LatencyDist),
}

/// Distribution of the reply delay.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(tag = "dist", rename_all = "snake_case", deny_unknown_fields)]
pub enum LatencyDist {
    /// Always `ms`.
    Fixed {
        /// Delay in milliseconds.
        ms: f64,
    },
    /// Uniform in `[min_ms, max_ms]`.
    Uniform {
        /// Lower bound in milliseconds.
        min_ms: f64,
        /// Upper bound in milliseconds.
        max_ms: f64,
    },
    /// Normal with the given mean and standard deviation, clamped at 0.
    Normal {
        /// Mean in milliseconds.
        mean_ms: f64,
        /// Standard deviation in milliseconds.
        stddev_ms: f64,
    },
}

impl LatencyConfig {
    fn validate(&self) -> Result<()> {
        let ok = match *self {
            LatencyConfig::Millis(_) => true,
            LatencyConfig::Dist(LatencyDist::Fixed { ms }) => ms.is_finite() && ms >= 0.0,
            LatencyConfig::Dist(LatencyDist::Uniform { min_ms, max_ms }) => {
                min_ms.is_finite() && max_ms.is_finite() && min_ms >= 0.0 && min_ms <= max_ms
            }
            LatencyConfig::Dist(LatencyDist::Normal { mean_ms, stddev_ms }) => {
                mean_ms.is_finite() && stddev_ms.is_finite() && stddev_ms >= 0.0
            }
        };
        if ok {
            Ok(())
        } else {
            Err(Error::Profile(format!("invalid latency {self:?}")))
        }
    }

    /// Draws one delay in microseconds.
    pub fn sample_micros(&self, rng: &mut impl Rng) -> u64 {
        let ms = match *self {
            LatencyConfig::Millis(ms) => return ms.saturating_mul(1000),
            LatencyConfig::Dist(LatencyDist::Fixed { ms }) => ms,
            LatencyConfig::Dist(LatencyDist::Uniform { min_ms, max_ms }) => {
                if max_ms > min_ms {
                    rng.gen_range(min_ms..=max_ms)
                } else {
                    min_ms
                }
            }
            LatencyConfig::Dist(LatencyDist::Normal { mean_ms, stddev_ms }) => {
                // Box-Muller; one draw per reply group is cheap enough.
                let u1: f64 = rng.gen_range(f64::EPSILON..1.0);
                let u2: f64 = rng.gen();
                let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
                mean_ms + stddev_ms * z
            }
        };
        (ms.max(0.0) * 1000.0) as u64
    }
}

/// What a destination does to connections instead of normal service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeadMode {
    /// Normal SMTP service.
    #[default]
    Normal,
    /// Close the connection as soon as it is accepted.
    Refuse,
    /// Accept, then never send a byte.
    Hang,
    /// Serve normally but close the socket once message content starts
    /// arriving (DATA body or BDAT chunk).
    DropMidData,
}

/// How a rate-limited recipient is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RateLimitStyle {
    /// `450 4.7.1 ... rate limited` to the RCPT; the connection stays open.
    #[default]
    Tempfail,
    /// `421 4.7.0 Try again later, closing connection`, then close.
    Disconnect,
}

/// Partial behaviour as written in a TOML section; unset fields inherit
/// from `[default]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BehaviorPatch {
    /// See [`Behavior::latency`].
    pub latency: Option<LatencyConfig>,
    /// See [`Behavior::tempfail_pct`].
    pub tempfail_pct: Option<f64>,
    /// See [`Behavior::permfail_pct`].
    pub permfail_pct: Option<f64>,
    /// See [`Behavior::tempfail_reply`].
    pub tempfail_reply: Option<String>,
    /// See [`Behavior::permfail_reply`].
    pub permfail_reply: Option<String>,
    /// See [`Behavior::max_connections_per_ip`].
    pub max_connections_per_ip: Option<u32>,
    /// See [`Behavior::rate_limit`].
    pub rate_limit: Option<f64>,
    /// See [`Behavior::rate_limit_style`].
    pub rate_limit_style: Option<RateLimitStyle>,
    /// See [`Behavior::max_messages_per_connection`].
    pub max_messages_per_connection: Option<u32>,
    /// See [`Behavior::greylist`].
    pub greylist: Option<bool>,
    /// See [`Behavior::mode`].
    pub mode: Option<DeadMode>,
    /// See [`Behavior::pipelining`].
    pub pipelining: Option<bool>,
    /// See [`Behavior::chunking`].
    pub chunking: Option<bool>,
    /// See [`Behavior::starttls`].
    pub starttls: Option<bool>,
    /// See [`Behavior::auth`].
    pub auth: Option<bool>,
    /// See [`Behavior::max_message_size`].
    pub max_message_size: Option<u64>,
    /// See [`Behavior::suspend_after_secs`].
    pub suspend_after_secs: Option<f64>,
    /// See [`Behavior::suspend_for_secs`].
    pub suspend_for_secs: Option<f64>,
}

/// Fully resolved behaviour of one destination.
#[derive(Debug, Clone, PartialEq)]
pub struct Behavior {
    /// Delay before each reply group; `None` for no delay.
    pub latency: Option<LatencyConfig>,
    /// Percentage (0-100) of recipients answered with `tempfail_reply`.
    pub tempfail_pct: f64,
    /// Percentage (0-100) of recipients answered with `permfail_reply`.
    pub permfail_pct: f64,
    /// Full reply line (without CRLF) for random temporary failures.
    pub tempfail_reply: String,
    /// Full reply line (without CRLF) for random permanent failures.
    pub permfail_reply: String,
    /// Concurrent connections allowed per source IP; 0 = unlimited.
    pub max_connections_per_ip: u32,
    /// Accepted messages per second (token bucket, one second of burst); 0 = unlimited.
    pub rate_limit: f64,
    /// How recipients over the rate are answered.
    pub rate_limit_style: RateLimitStyle,
    /// Messages accepted per connection before `421`; 0 = unlimited.
    pub max_messages_per_connection: u32,
    /// Greylist the first attempt of each (sender, recipient).
    pub greylist: bool,
    /// Dead-host imitation.
    pub mode: DeadMode,
    /// Advertise PIPELINING.
    pub pipelining: bool,
    /// Advertise and accept CHUNKING/BDAT.
    pub chunking: bool,
    /// Advertise STARTTLS.
    pub starttls: bool,
    /// Advertise `AUTH PLAIN` and accept any credentials.
    pub auth: bool,
    /// Advertised SIZE limit in bytes.
    pub max_message_size: u64,
    /// Start of the suspension window, in seconds after the sink started.
    pub suspend_after_secs: f64,
    /// Length of the suspension window in seconds (0 = never suspended).
    /// Inside it every attempt is answered `421` and the connection closed:
    /// at connect for `[default]`/`[hosts]`, at RCPT for `[domains]`. It
    /// imitates a receiver that has blocked the sender for a while.
    pub suspend_for_secs: f64,
}

/// Default reply for random temporary failures.
pub const DEFAULT_TEMPFAIL_REPLY: &str = "451 4.3.0 Temporary server error. Please try again later";
/// Default reply for random permanent failures.
pub const DEFAULT_PERMFAIL_REPLY: &str =
    "550 5.1.1 The email account that you tried to reach does not exist";

impl Default for Behavior {
    fn default() -> Self {
        Behavior {
            latency: None,
            tempfail_pct: 0.0,
            permfail_pct: 0.0,
            tempfail_reply: DEFAULT_TEMPFAIL_REPLY.to_string(),
            permfail_reply: DEFAULT_PERMFAIL_REPLY.to_string(),
            max_connections_per_ip: 0,
            rate_limit: 0.0,
            rate_limit_style: RateLimitStyle::Tempfail,
            max_messages_per_connection: 0,
            greylist: false,
            mode: DeadMode::Normal,
            pipelining: true,
            chunking: true,
            starttls: true,
            auth: false,
            max_message_size: 50 * 1024 * 1024,
            suspend_after_secs: 0.0,
            suspend_for_secs: 0.0,
        }
    }
}

impl Behavior {
    fn apply(&mut self, p: &BehaviorPatch) {
        if let Some(v) = p.latency {
            self.latency = match v {
                LatencyConfig::Millis(0) => None,
                other => Some(other),
            };
        }
        macro_rules! set {
            ($($f:ident),*) => { $( if let Some(v) = &p.$f { self.$f = v.clone(); } )* };
        }
        set!(
            tempfail_pct,
            permfail_pct,
            tempfail_reply,
            permfail_reply,
            max_connections_per_ip,
            rate_limit,
            rate_limit_style,
            max_messages_per_connection,
            greylist,
            mode,
            pipelining,
            chunking,
            starttls,
            auth,
            max_message_size,
            suspend_after_secs,
            suspend_for_secs
        );
    }

    /// True while the suspension window is open, `since_start` being the
    /// time since the sink started.
    pub fn suspended(&self, since_start: std::time::Duration) -> bool {
        if self.suspend_for_secs <= 0.0 {
            return false;
        }
        let t = since_start.as_secs_f64();
        t >= self.suspend_after_secs && t < self.suspend_after_secs + self.suspend_for_secs
    }

    fn validate(&self, section: &str) -> Result<()> {
        let err = |what: String| Err(Error::Profile(format!("[{section}] {what}")));
        if let Some(l) = &self.latency {
            l.validate()
                .map_err(|e| Error::Profile(format!("[{section}] {e}")))?;
        }
        for (name, pct) in [
            ("tempfail_pct", self.tempfail_pct),
            ("permfail_pct", self.permfail_pct),
        ] {
            if !(0.0..=100.0).contains(&pct) {
                return err(format!("{name} must be within 0-100, got {pct}"));
            }
        }
        if self.tempfail_pct + self.permfail_pct > 100.0 {
            return err("tempfail_pct + permfail_pct exceeds 100".to_string());
        }
        if !reply_has_class(&self.tempfail_reply, b'4') {
            return err(format!(
                "tempfail_reply must start with a 4xx code: {:?}",
                self.tempfail_reply
            ));
        }
        if !reply_has_class(&self.permfail_reply, b'5') {
            return err(format!(
                "permfail_reply must start with a 5xx code: {:?}",
                self.permfail_reply
            ));
        }
        if !self.rate_limit.is_finite() || self.rate_limit < 0.0 {
            return err(format!("rate_limit must be >= 0, got {}", self.rate_limit));
        }
        for (name, secs) in [
            ("suspend_after_secs", self.suspend_after_secs),
            ("suspend_for_secs", self.suspend_for_secs),
        ] {
            if !secs.is_finite() || secs < 0.0 {
                return err(format!("{name} must be >= 0, got {secs}"));
            }
        }
        Ok(())
    }
}

fn reply_has_class(reply: &str, class: u8) -> bool {
    let b = reply.as_bytes();
    b.len() >= 3
        && b.first() == Some(&class)
        && b.iter().take(3).all(u8::is_ascii_digit)
        && matches!(b.get(3), None | Some(b' '))
        && !reply.contains(['\r', '\n'])
}

/// The TOML document.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileFile {
    #[serde(default)]
    default: BehaviorPatch,
    #[serde(default)]
    hosts: BTreeMap<String, BehaviorPatch>,
    #[serde(default)]
    domains: BTreeMap<String, BehaviorPatch>,
}

/// A resolved profile: behaviours indexed by small integers so sessions
/// can refer to them without lifetimes or reference counting.
#[derive(Debug, Clone)]
pub struct Profile {
    behaviors: Vec<Behavior>,
    names: Vec<String>,
    hosts: HashMap<IpAddr, usize>,
    domains: HashMap<String, usize>,
}

/// Index of the `[default]` behaviour.
pub const DEFAULT_BEHAVIOR: usize = 0;

impl Default for Profile {
    fn default() -> Self {
        Profile {
            behaviors: vec![Behavior::default()],
            names: vec!["default".to_string()],
            hosts: HashMap::new(),
            domains: HashMap::new(),
        }
    }
}

impl Profile {
    /// Parses and validates a TOML profile.
    pub fn from_toml_str(text: &str) -> Result<Self> {
        let file: ProfileFile = toml::from_str(text).map_err(|e| Error::Profile(e.to_string()))?;
        let mut base = Behavior::default();
        base.apply(&file.default);
        base.validate("default")?;
        let mut profile = Profile {
            behaviors: vec![base.clone()],
            names: vec!["default".to_string()],
            ..Profile::default()
        };
        for (host, patch) in &file.hosts {
            let ip: IpAddr = host
                .parse()
                .map_err(|_| Error::Profile(format!("[hosts.\"{host}\"] is not an IP address")))?;
            if !is_loopback(ip) {
                return Err(Error::NonLoopback(format!("[hosts.\"{host}\"] in profile")));
            }
            let idx = profile.push(&base, patch, format!("hosts.\"{host}\""))?;
            profile.hosts.insert(ip, idx);
        }
        for (domain, patch) in &file.domains {
            if matches!(patch.mode, Some(DeadMode::Refuse | DeadMode::Hang)) {
                return Err(Error::Profile(format!(
                    "[domains.\"{domain}\"] mode refuse/hang acts before any recipient is known; put it under [hosts]"
                )));
            }
            let idx = profile.push(&base, patch, format!("domains.\"{domain}\""))?;
            profile.domains.insert(domain.to_ascii_lowercase(), idx);
        }
        Ok(profile)
    }

    /// Reads a TOML profile from a file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("reading profile {}", path.display()), e))?;
        Self::from_toml_str(&text).map_err(|e| match e {
            Error::Profile(msg) => Error::Profile(format!("{}: {msg}", path.display())),
            other => other,
        })
    }

    fn push(&mut self, base: &Behavior, patch: &BehaviorPatch, name: String) -> Result<usize> {
        let mut b = base.clone();
        b.apply(patch);
        b.validate(&name)?;
        self.behaviors.push(b);
        self.names.push(name);
        Ok(self.behaviors.len() - 1)
    }

    /// Behaviour by index; out-of-range indices fall back to `[default]`.
    pub fn behavior(&self, idx: usize) -> &Behavior {
        self.behaviors
            .get(idx)
            .or_else(|| self.behaviors.first())
            .unwrap_or_else(|| default_behavior())
    }

    /// All behaviours, index-aligned with [`Profile::behavior`].
    pub fn behaviors(&self) -> &[Behavior] {
        &self.behaviors
    }

    /// Section name of a behaviour, for logs and reports.
    pub fn name(&self, idx: usize) -> &str {
        self.names.get(idx).map(String::as_str).unwrap_or("default")
    }

    /// Behaviour for connections arriving on local address `ip`.
    pub fn for_host(&self, ip: IpAddr) -> usize {
        self.hosts.get(&ip).copied().unwrap_or(DEFAULT_BEHAVIOR)
    }

    /// Behaviour for a recipient domain (already lower-case), if it has its own section.
    pub fn for_domain(&self, domain: &str) -> Option<usize> {
        self.domains.get(domain).copied()
    }

    /// Local addresses named in `[hosts]`; the sink binds each of them.
    pub fn host_addrs(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.hosts.keys().copied()
    }
}

fn default_behavior() -> &'static Behavior {
    static DEFAULT: std::sync::OnceLock<Behavior> = std::sync::OnceLock::new();
    DEFAULT.get_or_init(Behavior::default)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    #[test]
    fn sections_inherit_from_default() {
        let p = Profile::from_toml_str(
            r#"
            [default]
            latency = 5
            tempfail_pct = 10

            [hosts."127.0.0.2"]
            mode = "hang"

            [domains."Gmail.Test"]
            rate_limit = 100
            rate_limit_style = "disconnect"
            latency = { dist = "uniform", min_ms = 1, max_ms = 3 }
            "#,
        )
        .unwrap();
        let host = p.behavior(p.for_host("127.0.0.2".parse().unwrap()));
        assert_eq!(host.mode, DeadMode::Hang);
        assert_eq!(host.tempfail_pct, 10.0);
        assert_eq!(host.latency, Some(LatencyConfig::Millis(5)));
        let dom = p.behavior(p.for_domain("gmail.test").unwrap());
        assert_eq!(dom.rate_limit, 100.0);
        assert_eq!(dom.rate_limit_style, RateLimitStyle::Disconnect);
        assert_eq!(dom.tempfail_pct, 10.0);
        assert_eq!(p.for_host("127.0.0.1".parse().unwrap()), DEFAULT_BEHAVIOR);
    }

    #[test]
    fn rejects_bad_profiles() {
        for bad in [
            "[default]\ntempfail_pct = 150",
            "[default]\nbogus = 1",
            "[default]\ntempfail_reply = \"550 5.0.0 no\"",
            "[hosts.\"192.0.2.1\"]\nmode = \"hang\"",
            "[default]\nmode = \"sleepy\"",
            "[domains.\"x.test\"]\nmode = \"hang\"",
            "[default]\nlatency = { dist = \"uniform\", min_ms = 5, max_ms = 1 }",
            "[default]\nsuspend_for_secs = -1",
        ] {
            assert!(Profile::from_toml_str(bad).is_err(), "accepted: {bad}");
        }
    }

    #[test]
    fn suspension_window() {
        use std::time::Duration;
        let p = Profile::from_toml_str(
            "[domains.\"s.test\"]\nsuspend_after_secs = 2\nsuspend_for_secs = 3",
        )
        .unwrap();
        let b = p.behavior(p.for_domain("s.test").unwrap());
        assert!(!b.suspended(Duration::from_secs(1)));
        assert!(b.suspended(Duration::from_secs(2)));
        assert!(b.suspended(Duration::from_millis(4999)));
        assert!(!b.suspended(Duration::from_secs(5)));
        assert!(!p
            .behavior(DEFAULT_BEHAVIOR)
            .suspended(Duration::from_secs(3)));
    }

    #[test]
    fn latency_samples_stay_in_range() {
        let mut rng = SmallRng::seed_from_u64(7);
        let uni = LatencyConfig::Dist(LatencyDist::Uniform {
            min_ms: 2.0,
            max_ms: 4.0,
        });
        let normal = LatencyConfig::Dist(LatencyDist::Normal {
            mean_ms: 10.0,
            stddev_ms: 2.0,
        });
        let mut sum = 0u64;
        for _ in 0..10_000 {
            let u = uni.sample_micros(&mut rng);
            assert!((2000..=4000).contains(&u));
            sum += normal.sample_micros(&mut rng);
        }
        let mean = sum as f64 / 10_000.0;
        assert!((9_500.0..10_500.0).contains(&mean), "normal mean {mean}");
        assert_eq!(LatencyConfig::Millis(3).sample_micros(&mut rng), 3000);
    }

    #[test]
    fn example_profile_parses() {
        let text = include_str!("../../profiles/example.toml");
        Profile::from_toml_str(text).unwrap();
    }
}
