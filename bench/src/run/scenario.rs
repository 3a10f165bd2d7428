//! The scenario file of `sluice-bench run`: one TOML document naming the
//! system under test, the load, the sink's behaviour and optional crashes.
//! Every table refuses unknown keys, so a typo fails loudly (with line and
//! key) instead of silently running a different benchmark.
//!
//! ```toml
//! name = "relay-1k"          # default: the file name
//! description = "…"
//! deadline_secs = 300        # after injection ends, wait this long for the sink
//! settle_secs = 0            # then keep listening this long (late duplicates)
//!
//! [sut]
//! kind = "sluice"            # "sluice" | "command" | "external" | "postfix"
//! config = '''…'''           # sluice: config template; command: written to {config}
//! binary = "path"            # sluice: the binary (--sut-binary wins)
//! command = ["python3", "relay.py", "{listen}", "{sink}"]   # command
//! ready_line = "listening"   # command: regex on stdout/stderr, or
//! ready_port = 2525          # command: wait until 127.0.0.1:PORT accepts
//! address = "127.0.0.1:2525" # external: where the MTA listens (command: target override)
//! script = "tests/peers/postfix-relay.sh"  # postfix (repo-root relative)
//! ready_timeout_secs = 30
//! stop_timeout_secs = 10
//!
//! [inject]                   # every injector option; see `sluice-bench inject --help`
//! connections = 50
//! messages = 100000          # or duration_secs
//! size = 1024                # or size_dist = "512:50,4096:40"
//! rcpts = 1
//! domains = 10
//! domain_weights = ["d0.test:0.05"]   # one synthetic domain 1/20 as often as the others
//!
//! [sink]
//! port = 2625                # the "port 25" of every synthetic MX host; 0 = free port
//! mx_listeners = true        # also bind 127.1.x.y of every synthetic domain
//! [sink.profile.default]     # a sink profile (see the sink module), or profile_file
//!
//! [dns]
//! failures = ["d3.test=servfail@0.5"]
//!
//! [steady]                  # the report's steady delivery rate
//! exclude = ["d0.test"]      # of every domain but these (default: all)
//! from_fraction = 0.05       # between 5% and 95% of their recipients
//! to_fraction = 0.95
//!
//! [crash]
//! after_secs = 5             # or after_fraction = 0.5 (of the messages)
//! times = 1
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::inject::{Credentials, DomainWeight, InjectOptions, ProviderShare, SizeSpec, Stop};
use crate::loopback::parse_loopback;
use crate::sink::Profile;

/// A parsed, validated scenario.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name for reports; defaults to the file stem.
    pub name: Option<String>,
    /// Free text, echoed in the report.
    pub description: Option<String>,
    /// Seconds to wait after injection for the sink to count everything.
    #[serde(default = "default_deadline")]
    pub deadline_secs: f64,
    /// Seconds to keep the sink running after everything was counted.
    #[serde(default)]
    pub settle_secs: f64,
    /// The system under test.
    pub sut: SutSection,
    /// The load.
    #[serde(default)]
    pub inject: InjectSection,
    /// The receiving side.
    #[serde(default)]
    pub sink: SinkSection,
    /// The DNS stub.
    #[serde(default)]
    pub dns: DnsSection,
    /// Kill the SUT mid-run.
    pub crash: Option<CrashSection>,
    /// Which domains the report's steady delivery rate covers.
    #[serde(default)]
    pub steady: SteadySection,
}

fn default_deadline() -> f64 {
    300.0
}

/// Which system under test, and how it is started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SutKind {
    /// `sluice serve --config GENERATED.toml`.
    Sluice,
    /// Any command line.
    Command,
    /// Already running; not started or stopped.
    External,
    /// A private Postfix instance via `postfix-relay.sh`.
    Postfix,
}

impl SutKind {
    /// Lower-case name as written in the scenario.
    pub fn name(self) -> &'static str {
        match self {
            SutKind::Sluice => "sluice",
            SutKind::Command => "command",
            SutKind::External => "external",
            SutKind::Postfix => "postfix",
        }
    }
}

/// `[sut]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SutSection {
    /// Which kind of system.
    pub kind: SutKind,
    /// Config template (sluice), or a file written for `{config}` (command).
    pub config: Option<String>,
    /// The sluice binary.
    pub binary: Option<PathBuf>,
    /// Program and arguments (command), placeholders substituted.
    pub command: Option<Vec<String>>,
    /// Regex that marks readiness on stdout or stderr (command).
    pub ready_line: Option<String>,
    /// Port on 127.0.0.1 that accepts connections once ready (command).
    pub ready_port: Option<u16>,
    /// Injection target (external; optional override for command).
    pub address: Option<String>,
    /// The postfix-relay.sh script (postfix).
    pub script: Option<PathBuf>,
    /// Longest wait for readiness, also after each crash restart.
    #[serde(default = "default_ready_timeout")]
    pub ready_timeout_secs: f64,
    /// Wait after SIGTERM before SIGKILL.
    #[serde(default = "default_stop_timeout")]
    pub stop_timeout_secs: f64,
}

fn default_ready_timeout() -> f64 {
    30.0
}

fn default_stop_timeout() -> f64 {
    10.0
}

/// `[inject]`: the injector's options (see [`InjectOptions`] and
/// `sluice-bench inject --help` for their meaning).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InjectSection {
    /// Concurrent connections.
    pub connections: usize,
    /// Messages to send (10,000 when neither this nor `duration_secs` is given).
    pub messages: Option<u64>,
    /// Send for this long instead of a fixed number of messages.
    pub duration_secs: Option<f64>,
    /// Message size in bytes (1024 by default).
    pub size: Option<usize>,
    /// Weighted size mix, e.g. `"512:50,4096:40,65536:10"`.
    pub size_dist: Option<String>,
    /// Recipients per message.
    pub rcpts: usize,
    /// Synthetic domains `d0.test` … `d{N-1}.test` (also what the DNS stub serves).
    pub domains: usize,
    /// Zipf exponent over the domains; uniform when absent.
    pub zipf: Option<f64>,
    /// `"random"` (default) or `"sequential"` (recipient k to domain k mod N).
    pub domain_order: crate::inject::DomainOrder,
    /// Domains with fixed shares, `"NAME:SHARE"`.
    pub providers: Vec<String>,
    /// Synthetic domains weighted differently, `"NAME:WEIGHT"` (the others weigh 1).
    pub domain_weights: Vec<String>,
    /// Envelope and header sender.
    pub from: Option<String>,
    /// EHLO name.
    pub ehlo: Option<String>,
    /// Use STARTTLS (certificate not verified).
    pub starttls: bool,
    /// AUTH PLAIN credentials, `"USER:PASS"`.
    pub auth: Option<String>,
    /// Use PIPELINING when offered.
    pub pipelining: bool,
    /// Use CHUNKING/BDAT when offered.
    pub chunking: bool,
    /// Transactions in flight per connection.
    pub window: usize,
    /// Longest wait for a connection or reply.
    pub timeout_secs: f64,
    /// Worker threads of the whole run (injector, sink, DNS); all cores when unset.
    pub threads: Option<usize>,
}

impl Default for InjectSection {
    fn default() -> Self {
        InjectSection {
            connections: 50,
            messages: None,
            duration_secs: None,
            size: None,
            size_dist: None,
            rcpts: 1,
            domains: 10,
            zipf: None,
            domain_order: Default::default(),
            providers: Vec::new(),
            domain_weights: Vec::new(),
            from: None,
            ehlo: None,
            starttls: false,
            auth: None,
            pipelining: true,
            chunking: true,
            window: 8,
            timeout_secs: 30.0,
            threads: None,
        }
    }
}

/// `[sink]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SinkSection {
    /// Port of every sink address (the SUT's "port 25"); 0 picks a free one.
    pub port: u16,
    /// Bind the synthetic MX address of every injected domain.
    pub mx_listeners: bool,
    /// Name in the greeting.
    pub hostname: Option<String>,
    /// Offer STARTTLS.
    pub tls: bool,
    /// Inline sink profile (`[sink.profile.default]`, `[sink.profile.domains."d1.test"]`…).
    pub profile: Option<toml::Table>,
    /// Profile file, relative to the scenario.
    pub profile_file: Option<PathBuf>,
}

impl Default for SinkSection {
    fn default() -> Self {
        SinkSection {
            port: 0,
            mx_listeners: true,
            hostname: None,
            tls: true,
            profile: None,
            profile_file: None,
        }
    }
}

/// `[dns]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsSection {
    /// Zone file with explicit records, relative to the scenario.
    pub zone: Option<PathBuf>,
    /// Failure rules `NAME=MODE[@P]`.
    pub failures: Vec<String>,
    /// TTL of synthetic records.
    pub ttl: u32,
    /// Serve `AAAA ::1` for MX hosts.
    pub aaaa: bool,
}

impl Default for DnsSection {
    fn default() -> Self {
        DnsSection {
            zone: None,
            failures: Vec::new(),
            ttl: 300,
            aaaa: false,
        }
    }
}

/// `[steady]`: the report's steady delivery rate (see
/// [`super::series::SteadyRate`]) of every recipient domain but `exclude`,
/// over the window in which the sink went from `from_fraction` to
/// `to_fraction` of their recipients.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SteadySection {
    /// Domains left out (e.g. the throttled ones).
    pub exclude: Vec<String>,
    /// Lower end of the window.
    pub from_fraction: f64,
    /// Upper end of the window.
    pub to_fraction: f64,
}

impl Default for SteadySection {
    fn default() -> Self {
        SteadySection {
            exclude: Vec::new(),
            from_fraction: 0.05,
            to_fraction: 0.95,
        }
    }
}

/// `[crash]`: SIGKILL the SUT `times` times, the k-th at k × `after_secs`
/// seconds into the injection or once k × `after_fraction` of the
/// messages were injected.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrashSection {
    /// Seconds between kills.
    pub after_secs: Option<f64>,
    /// Fraction of the messages between kills.
    pub after_fraction: Option<f64>,
    /// Number of kills.
    #[serde(default = "one")]
    pub times: u32,
}

fn one() -> u32 {
    1
}

impl Scenario {
    /// Reads and validates a scenario file.
    pub fn load(path: &Path) -> Result<Scenario> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("reading scenario {}", path.display()), e))?;
        let mut s = Self::from_toml_str(&text)
            .map_err(|e| Error::Scenario(format!("{}: {e}", path.display())))?;
        if s.name.is_none() {
            s.name = path.file_stem().map(|n| n.to_string_lossy().into_owned());
        }
        Ok(s)
    }

    /// Parses and validates scenario text.
    pub fn from_toml_str(text: &str) -> Result<Scenario> {
        let s: Scenario = toml::from_str(text).map_err(|e| Error::Scenario(e.to_string()))?;
        s.validate()?;
        Ok(s)
    }

    /// Name for reports.
    pub fn display_name(&self) -> &str {
        self.name.as_deref().unwrap_or("scenario")
    }

    fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Scenario(m));
        for (key, v) in [
            ("deadline_secs", self.deadline_secs),
            ("settle_secs", self.settle_secs),
            ("sut.ready_timeout_secs", self.sut.ready_timeout_secs),
            ("sut.stop_timeout_secs", self.sut.stop_timeout_secs),
        ] {
            if !v.is_finite() || v < 0.0 {
                return bad(format!("`{key}` must be a non-negative number, got {v}"));
            }
        }
        self.validate_sut()?;
        if self.sink.profile.is_some() && self.sink.profile_file.is_some() {
            return bad("`sink.profile` and `sink.profile_file` are exclusive".into());
        }
        self.inline_profile()?;
        let (from, to) = (self.steady.from_fraction, self.steady.to_fraction);
        if !super::series::valid_window(from, to) {
            return bad(format!(
                "[steady] needs 0 <= from_fraction < to_fraction <= 1, got {from} and {to}"
            ));
        }
        if let Some(c) = &self.crash {
            self.validate_crash(c)?;
        }
        // Builds the injector options once, so a bad value fails here.
        self.inject_options(
            "127.0.0.1:25".parse().map_err(|_| {
                Error::Scenario("internal: placeholder address did not parse".into())
            })?,
        )?;
        Ok(())
    }

    fn validate_sut(&self) -> Result<()> {
        let sut = &self.sut;
        let present = [
            ("config", sut.config.is_some()),
            ("binary", sut.binary.is_some()),
            ("command", sut.command.is_some()),
            ("ready_line", sut.ready_line.is_some()),
            ("ready_port", sut.ready_port.is_some()),
            ("address", sut.address.is_some()),
            ("script", sut.script.is_some()),
        ];
        let allowed: &[&str] = match sut.kind {
            SutKind::Sluice => &["config", "binary"],
            SutKind::Command => &["config", "command", "ready_line", "ready_port", "address"],
            SutKind::External => &["address"],
            SutKind::Postfix => &["script"],
        };
        for (key, set) in present {
            if set && !allowed.contains(&key) {
                return Err(Error::Scenario(format!(
                    "key `sut.{key}` is not valid for kind = \"{}\" (allowed: {})",
                    sut.kind.name(),
                    allowed.join(", ")
                )));
            }
        }
        let need = |key: &str, set: bool| {
            if set {
                Ok(())
            } else {
                Err(Error::Scenario(format!(
                    "kind = \"{}\" needs `sut.{key}`",
                    sut.kind.name()
                )))
            }
        };
        match sut.kind {
            SutKind::Sluice => need("config", sut.config.is_some())?,
            SutKind::Command => {
                need(
                    "command",
                    sut.command.as_ref().is_some_and(|c| !c.is_empty()),
                )?;
                if sut.ready_line.is_some() && sut.ready_port.is_some() {
                    return Err(Error::Scenario(
                        "`sut.ready_line` and `sut.ready_port` are exclusive".into(),
                    ));
                }
                if let Some(re) = &sut.ready_line {
                    super::regex::Regex::new(re)
                        .map_err(|e| Error::Scenario(format!("`sut.ready_line`: {e}")))?;
                }
            }
            SutKind::External => {
                need("address", sut.address.is_some())?;
                parse_loopback(sut.address.as_deref().unwrap_or_default())?;
            }
            SutKind::Postfix => {}
        }
        Ok(())
    }

    fn validate_crash(&self, c: &CrashSection) -> Result<()> {
        let bad = |m: &str| Err(Error::Scenario(format!("[crash] {m}")));
        if !matches!(self.sut.kind, SutKind::Sluice | SutKind::Command) {
            return bad("needs a SUT that run starts itself (kind = \"sluice\" or \"command\")");
        }
        if c.times == 0 {
            return bad("`times` must be at least 1");
        }
        match (c.after_secs, c.after_fraction) {
            (Some(s), None) if s.is_finite() && s > 0.0 => Ok(()),
            (None, Some(f)) if f > 0.0 && f * f64::from(c.times) < 1.0 => {
                if self.inject.messages.is_none() {
                    return bad("`after_fraction` needs `inject.messages`");
                }
                Ok(())
            }
            (Some(_), Some(_)) => bad("give either `after_secs` or `after_fraction`"),
            (None, None) => bad("needs `after_secs` or `after_fraction`"),
            (Some(_), None) => bad("`after_secs` must be > 0"),
            (None, Some(_)) => bad("`after_fraction` × `times` must be within (0, 1)"),
        }
    }

    /// The inline `[sink.profile]`, parsed and validated.
    pub fn inline_profile(&self) -> Result<Option<Profile>> {
        let Some(table) = &self.sink.profile else {
            return Ok(None);
        };
        let text =
            toml::to_string(table).map_err(|e| Error::Scenario(format!("[sink.profile]: {e}")))?;
        Profile::from_toml_str(&text)
            .map(Some)
            .map_err(|e| match e {
                Error::Profile(m) => Error::Scenario(format!("[sink.profile] {m}")),
                other => other,
            })
    }

    /// The injector options for a given target.
    pub fn inject_options(&self, target: std::net::SocketAddr) -> Result<InjectOptions> {
        let i = &self.inject;
        let bad = |m: String| Error::Scenario(format!("[inject] {m}"));
        let mut o = InjectOptions::new(target);
        o.connections = i.connections;
        o.stop = match (i.messages, i.duration_secs) {
            (Some(_), Some(_)) => return Err(bad("give `messages` or `duration_secs`".into())),
            (Some(n), None) => Stop::Messages(n),
            (None, Some(d)) => Stop::Duration(secs(d).ok_or_else(|| {
                bad(format!(
                    "`duration_secs` must be a positive number, got {d}"
                ))
            })?),
            (None, None) => Stop::Messages(10_000),
        };
        o.size = match (&i.size, &i.size_dist) {
            (Some(_), Some(_)) => return Err(bad("give `size` or `size_dist`".into())),
            (_, Some(dist)) => dist.parse::<SizeSpec>()?,
            (Some(n), None) => SizeSpec::Fixed(*n),
            (None, None) => SizeSpec::Fixed(1024),
        };
        o.rcpts = i.rcpts;
        o.domains = i.domains;
        o.zipf = i.zipf;
        o.domain_order = i.domain_order;
        o.providers = i
            .providers
            .iter()
            .map(|p| p.parse::<ProviderShare>())
            .collect::<Result<_>>()?;
        o.domain_weights = i
            .domain_weights
            .iter()
            .map(|w| w.parse::<DomainWeight>())
            .collect::<Result<_>>()?;
        if let Some(from) = &i.from {
            o.from.clone_from(from);
        }
        if let Some(ehlo) = &i.ehlo {
            o.ehlo.clone_from(ehlo);
        }
        o.starttls = i.starttls;
        o.auth = i
            .auth
            .as_deref()
            .map(str::parse::<Credentials>)
            .transpose()?;
        o.pipelining = i.pipelining;
        o.chunking = i.chunking;
        o.window = i.window;
        o.timeout = secs(i.timeout_secs).ok_or_else(|| {
            bad(format!(
                "`timeout_secs` must be a positive number, got {}",
                i.timeout_secs
            ))
        })?;
        o.validate()?;
        Ok(o)
    }
}

/// Seconds as a positive duration.
pub(crate) fn secs(v: f64) -> Option<Duration> {
    Duration::try_from_secs_f64(v).ok().filter(|d| !d.is_zero())
}
