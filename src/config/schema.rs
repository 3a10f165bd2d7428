//! The configuration schema. Each field's default is documented here and in
//! docs/configuration.md; `deny_unknown_fields` turns typos into errors.

use super::units::{ByteSize, Cidr, Seconds};
use serde::{de, Deserialize, Deserializer};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Our name in the greeting, EHLO and Received headers. Default: the
    /// system host name.
    pub hostname: String,
    /// Which cores run an executor: `"all"` (default) or a list of CPU ids.
    pub cores: Cores,
    /// When a 250 is given for a message. Default `"journal"`.
    pub ack: AckMode,
    /// What shards do with accepted mail. Default `"deliver"`.
    pub route: Route,
    /// Where the delivery log (and later the journal) live. Default
    /// `/var/lib/sluice`.
    pub state_dir: PathBuf,
    /// The inbound SMTP listener.
    pub smtp: SmtpConfig,
    /// STARTTLS certificate and key.
    pub tls: TlsConfig,
    /// SMTP AUTH.
    pub auth: AuthConfig,
    /// Per-shard backlog bounds.
    pub backpressure: BackpressureConfig,
    /// Logging.
    pub log: LogConfig,
    /// Outbound delivery.
    pub delivery: DeliveryConfig,
    /// DNS resolution for delivery: nameservers, cache, static routes.
    pub dns: crate::dns::ResolverConfig,
    /// The local admin HTTP API and metrics.
    pub admin: AdminConfig,
    /// The per-shard journal (`ack = "journal"`).
    pub journal: JournalConfig,
}

/// The journal: one directory of segment files per shard under
/// `state_dir/journal/`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JournalConfig {
    /// A segment file is closed at this size. Default 64 MiB.
    pub segment_size: ByteSize,
    /// Compact when sealed segments exceed live data × this. Default 2.
    pub compact_factor: f64,
    /// Refuse new mail (452) while this much waits to be written. Default 64 MiB.
    pub max_buffered: ByteSize,
}

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig {
            segment_size: ByteSize(64 << 20),
            compact_factor: 2.0,
            max_buffered: ByteSize(64 << 20),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            hostname: default_hostname(),
            cores: Cores::All,
            ack: AckMode::Journal,
            route: Route::Deliver,
            state_dir: PathBuf::from("/var/lib/sluice"),
            smtp: SmtpConfig::default(),
            tls: TlsConfig::default(),
            auth: AuthConfig::default(),
            backpressure: BackpressureConfig::default(),
            log: LogConfig::default(),
            delivery: DeliveryConfig::default(),
            dns: crate::dns::ResolverConfig::default(),
            journal: JournalConfig::default(),
            admin: AdminConfig::default(),
        }
    }
}

fn default_hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// The cores to run on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cores {
    /// Every core this process may run on.
    All,
    /// These CPU ids.
    List(Vec<usize>),
}

impl Cores {
    /// Resolves to CPU ids, checked against the CPUs that exist.
    pub fn resolve(&self) -> Result<Vec<usize>, String> {
        let online = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        match self {
            Cores::All => Ok((0..online).collect()),
            Cores::List(ids) => {
                if let Some(bad) = ids.iter().find(|&&c| c >= online) {
                    return Err(format!(
                        "cores: CPU {bad} does not exist (this host has CPUs 0..{})",
                        online.saturating_sub(1)
                    ));
                }
                Ok(ids.clone())
            }
        }
    }
}

impl<'de> Deserialize<'de> for Cores {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            S(String),
            L(Vec<usize>),
        }
        match Raw::deserialize(d).map_err(|_| {
            de::Error::custom("expected \"all\" or a list of CPU ids such as [0, 1]")
        })? {
            Raw::S(s) if s == "all" => Ok(Cores::All),
            Raw::S(s) => Err(de::Error::custom(format!(
                "`{s}`: expected \"all\" or a list of CPU ids such as [0, 1]"
            ))),
            Raw::L(l) if l.is_empty() => Err(de::Error::custom("the core list is empty")),
            Raw::L(mut l) => {
                let n = l.len();
                l.sort_unstable();
                l.dedup();
                if l.len() != n {
                    return Err(de::Error::custom("a core is listed twice"));
                }
                Ok(Cores::List(l))
            }
        }
    }
}

/// When a 250 is given for a message (see docs/configuration.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AckMode {
    /// 250 once every owning shard made envelope and body durable.
    Journal,
    /// 250 once queued in RAM on every owning shard.
    Memory,
    /// 250/4xx/5xx only after the destination answered.
    Downstream,
}

/// What shards do with accepted mail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Route {
    /// Deliver to each recipient's mail exchangers (the appliance's job).
    Deliver,
    /// Count and drop: for load tests of the ingress path alone.
    Discard,
    /// Keep in the owning shard's memory (bounded by `backpressure`) and
    /// never deliver: for tests of backpressure.
    Hold,
}

/// The inbound SMTP listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmtpConfig {
    /// Addresses to listen on; every core binds each with SO_REUSEPORT.
    /// Default `["127.0.0.1:2525"]`.
    pub listen: Vec<SocketAddr>,
    /// Client networks allowed to relay without AUTH. Default loopback only.
    pub relay_networks: Vec<Cidr>,
    /// Largest message accepted (advertised as SIZE). Default 50 MiB.
    pub max_message_size: ByteSize,
    /// Most recipients in one transaction. Default 1000.
    pub max_recipients: usize,
    /// Protocol errors before the session is closed with 421. Default 10.
    pub max_errors: u32,
    /// Concurrent inbound sessions, node-wide (divided among the cores).
    /// Default 20000.
    pub max_connections: usize,
    /// Wait for a command (RFC 5321 §4.5.3.2.7). Default 5 minutes.
    pub command_timeout: Seconds,
    /// Wait between DATA lines or BDAT chunks (RFC 5321 §4.5.3.2). Default 3 minutes.
    pub data_timeout: Seconds,
    /// Accept 8-bit bodies that were not declared BODY=8BITMIME. Default false.
    pub allow_undeclared_8bit: bool,
    /// Most `Received:` fields a message may carry once ours is added;
    /// more are refused with `554 5.4.6` as a mail loop. Default 50.
    pub max_hops: u32,
    /// Concurrent sessions from one address outside `relay_networks`
    /// (0: no cap). Default 20.
    pub max_connections_per_ip: usize,
    /// Concurrent sessions from one /24 (IPv4) or /64 (IPv6) outside
    /// `relay_networks` (0: no cap). Default 100.
    pub max_connections_per_network: usize,
    /// Concurrent sessions from one address inside `relay_networks`
    /// (0: no cap, only `max_connections`). Default 0.
    pub relay_max_connections_per_ip: usize,
    /// A session from outside `relay_networks` is closed with 421 after
    /// this long, whatever it is doing (0: never). Default 30 minutes.
    pub max_session_duration: Seconds,
    /// The same for sessions from inside `relay_networks` (0: never).
    /// Default 0.
    pub relay_max_session_duration: Seconds,
    /// The whole STARTTLS handshake must finish within this (and within
    /// `command_timeout`). Default 30 s.
    pub tls_handshake_timeout: Seconds,
    /// Commands that do not move a message (NOOP, RSET, VRFY, HELP,
    /// EHLO/HELO) allowed since the last message ended; one more is
    /// answered 421 and the session closed (0: no cap). Default 100.
    pub max_junk_commands: u32,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        SmtpConfig {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 2525))],
            relay_networks: vec![
                Cidr("127.0.0.1/32".parse().unwrap_or_else(|_| unreachable_net())),
                Cidr("::1/128".parse().unwrap_or_else(|_| unreachable_net())),
            ],
            max_message_size: ByteSize(50 << 20),
            max_recipients: 1000,
            max_errors: 10,
            max_connections: 20_000,
            command_timeout: Seconds(Duration::from_secs(300)),
            data_timeout: Seconds(Duration::from_secs(180)),
            allow_undeclared_8bit: false,
            max_hops: 50,
            max_connections_per_ip: 20,
            max_connections_per_network: 100,
            relay_max_connections_per_ip: 0,
            max_session_duration: Seconds(Duration::from_secs(30 * 60)),
            relay_max_session_duration: Seconds(Duration::ZERO),
            tls_handshake_timeout: Seconds(Duration::from_secs(30)),
            max_junk_commands: 100,
        }
    }
}

// The literals above always parse; this keeps the default free of panics.
fn unreachable_net() -> ipnet::IpNet {
    ipnet::IpNet::from(std::net::IpAddr::from([127, 0, 0, 1]))
}

/// STARTTLS certificate and key (PEM). STARTTLS is offered when both are set.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// Certificate chain, PEM. Re-read on SIGHUP.
    pub certificate: Option<PathBuf>,
    /// Private key, PEM. Re-read on SIGHUP.
    pub private_key: Option<PathBuf>,
}

/// SMTP AUTH (PLAIN and LOGIN).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// `user:hash` lines; hashes are SHA-512-crypt (`$6$`) or argon2
    /// (`$argon2id$`). AUTH is offered when set. Re-read on SIGHUP.
    pub users_file: Option<PathBuf>,
    /// Offer AUTH on connections without TLS. Default false.
    pub allow_plaintext: bool,
    /// Threads that hash passwords, node-wide. Default 2. Needs a restart.
    pub verify_threads: usize,
    /// Checks that may wait for a hashing thread; past it AUTH is answered
    /// `454 4.7.0`. Default 64. Needs a restart.
    pub verify_queue: usize,
    /// Failed AUTH attempts per address (IPv6: per /64) within
    /// `failure_window`; past it AUTH is answered `421 4.7.0` and the
    /// session closed (0: no limit). Default 10.
    pub max_failures: u32,
    /// How long failures are counted, from the first. Default 15 minutes.
    pub failure_window: Seconds,
    /// A failed AUTH is answered only after this delay. Default 1 s.
    pub failure_delay: Seconds,
    /// A check not answered by the hashing threads within this (queue wait
    /// included) is answered `454 4.7.0`. Default 10 s.
    pub verify_timeout: Seconds,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            users_file: None,
            allow_plaintext: false,
            verify_threads: 2,
            verify_queue: 64,
            max_failures: 10,
            failure_window: Seconds(Duration::from_secs(15 * 60)),
            failure_delay: Seconds(Duration::from_secs(1)),
            verify_timeout: Seconds(Duration::from_secs(10)),
        }
    }
}

/// Per-shard backlog bounds: past them ingress answers 452/421.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackpressureConfig {
    /// Messages waiting in one shard. Default 100000.
    pub max_messages: u64,
    /// Body bytes waiting in one shard. Default 1 GiB.
    pub max_bytes: ByteSize,
    /// Recipients waiting in one shard. Default 1000000.
    pub max_recipients: u64,
    /// Batches in flight on each core-to-core channel. Default 256.
    pub channel_capacity: usize,
}

impl Default for BackpressureConfig {
    fn default() -> Self {
        BackpressureConfig {
            max_messages: 100_000,
            max_bytes: ByteSize(1 << 30),
            max_recipients: 1_000_000,
            channel_capacity: 256,
        }
    }
}

/// Logging.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A tracing filter such as `"info"` or `"sluice=debug"`. Default `"info"`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
        }
    }
}

/// How outbound connections use STARTTLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutboundTls {
    /// Never.
    None,
    /// When the server offers it (default).
    Opportunistic,
    /// Always; defer when the server does not offer it.
    Required,
}

/// Outbound delivery.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeliveryConfig {
    /// Outbound connections per shard (core), all destinations together;
    /// when full, the least recently used idle connection is closed to make
    /// room. Default 5000.
    pub max_connections: usize,
    /// Connections per destination domain, per shard. Default 20.
    pub max_connections_per_destination: usize,
    /// Connections per destination kept open while idle (beyond
    /// `idle_timeout`). Default 0.
    pub min_connections_per_destination: usize,
    /// Transactions carried by one connection before it is closed. Default 1000.
    pub max_messages_per_connection: usize,
    /// RCPTs per SMTP transaction. Default 100.
    pub max_rcpt_per_txn: usize,
    /// BDAT transactions pipelined back to back on one connection. Default 4.
    pub max_pipelined_txns: usize,
    /// Use BDAT when the server offers CHUNKING. Default true.
    pub prefer_bdat: bool,
    /// Close a connection idle this long. Default 5 s.
    pub idle_timeout: Seconds,
    /// TCP connect timeout per address. Default 30 s.
    pub connect_timeout: Seconds,
    /// STARTTLS policy. Default `"opportunistic"`.
    pub tls: OutboundTls,
    /// Verify server certificates (webpki roots and MX name). Default false.
    pub tls_verify: bool,
    /// Bounce recipients still deferred after this long. Default 5 days.
    pub message_expiry: Seconds,
    /// Retry schedule for deferred recipients.
    pub retry: crate::delivery::retry::RetryConfig,
    /// Write the JSON-lines delivery log to `state_dir`. Default true.
    pub log: bool,
    /// Rotate the delivery log at this size. Default 1 GiB.
    pub log_max_bytes: ByteSize,
    /// Under `ack = "downstream"`: how long the client waits for the
    /// destinations' answers before we accept the message ourselves.
    /// Default 5 min (clients wait 10 min for the reply to DATA).
    pub downstream_timeout: Seconds,
    /// Specific queues, tried in order; every other domain is in the
    /// general queue, which uses the values above.
    pub queues: Vec<crate::delivery::queues::QueueConfig>,
    /// Messages per second/minute/hour/day to each destination. Default
    /// unlimited.
    pub max_messages: crate::delivery::shaping::bucket::RateLimits,
    /// Local source addresses connections are made from. Default: the
    /// kernel's choice.
    pub source_ips: Vec<std::net::IpAddr>,
    /// Connections per destination per source address. Default unlimited.
    pub max_connections_per_source_ip: Option<usize>,
    /// Source pools chosen by envelope-sender domain.
    pub source_pools: Vec<crate::delivery::shaping::pools::SourcePoolConfig>,
    /// Warm-up schedule: daily caps per destination on a curve.
    pub warmup: Option<crate::delivery::shaping::warmup::WarmupConfig>,
    /// Run the adaptive feed-rate controller. Default true.
    pub adaptive: bool,
    /// Response rules, tried after `rules_file` and before the defaults.
    pub rules: Vec<crate::delivery::shaping::rules::RuleConfig>,
    /// A file of `[[rule]]` tables, tried first.
    pub rules_file: Option<std::path::PathBuf>,
    /// Use the embedded default rules after the operator's. Default true.
    pub default_rules: bool,
    /// Addresses (`"ip"` or `"ip:port"`) that reach this appliance from
    /// outside, e.g. a NAT or load-balancer front; delivery to them is a
    /// mail loop, like delivery to a listener. Default none.
    pub own_addresses: Vec<crate::delivery::loop_guard::OwnAddress>,
    /// Forget a destination's state (counters, learned rate) after this
    /// long with nothing queued, running, paused or rate-limited.
    /// Default 10 minutes.
    pub destination_expiry: Seconds,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            max_connections: 5000,
            max_connections_per_destination: 20,
            min_connections_per_destination: 0,
            max_messages_per_connection: 1000,
            max_rcpt_per_txn: 100,
            max_pipelined_txns: 4,
            prefer_bdat: true,
            idle_timeout: Seconds(Duration::from_secs(5)),
            connect_timeout: Seconds(Duration::from_secs(30)),
            tls: OutboundTls::Opportunistic,
            tls_verify: false,
            message_expiry: Seconds(Duration::from_secs(5 * 86400)),
            retry: crate::delivery::retry::RetryConfig::default(),
            log: true,
            log_max_bytes: ByteSize(1 << 30),
            downstream_timeout: Seconds(Duration::from_secs(300)),
            queues: Vec::new(),
            max_messages: Default::default(),
            source_ips: Vec::new(),
            max_connections_per_source_ip: None,
            source_pools: Vec::new(),
            warmup: None,
            adaptive: true,
            rules: Vec::new(),
            rules_file: None,
            default_rules: true,
            own_addresses: Vec::new(),
            destination_expiry: Seconds(Duration::from_secs(600)),
        }
    }
}

impl DeliveryConfig {
    /// The values the general queue uses and specific queues inherit.
    pub fn queue_defaults(
        &self,
        hostname: &str,
        smtp_port: u16,
    ) -> crate::delivery::queues::QueueDefaults {
        crate::delivery::queues::QueueDefaults {
            ehlo_name: hostname.to_string(),
            max_connections_per_destination: self.max_connections_per_destination,
            min_connections_per_destination: self.min_connections_per_destination,
            max_messages_per_connection: self.max_messages_per_connection,
            max_rcpt_per_txn: self.max_rcpt_per_txn,
            max_pipelined_txns: self.max_pipelined_txns,
            prefer_bdat: self.prefer_bdat,
            idle_timeout: self.idle_timeout.0,
            message_expiry: self.message_expiry.0,
            retry: self.retry.schedule(),
            tls: self.tls,
            smtp_port,
            shaping: crate::delivery::shaping::ShapingDefaults {
                max_messages: self.max_messages,
                source_ips: self.source_ips.clone(),
                max_connections_per_source_ip: self.max_connections_per_source_ip,
                source_pools: self.source_pools.clone(),
                warmup: self.warmup.clone(),
                adaptive: self.adaptive,
                rules_file: self.rules_file.clone(),
                rules: self.rules.clone(),
                default_rules: self.default_rules,
                shards: 1,
            },
        }
    }
}

/// `[admin]`: the control-plane HTTP API (`sluicectl`) and `/metrics`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Serve the admin API. Default true.
    pub enabled: bool,
    /// Address to listen on. Default `127.0.0.1:8025`; port 0 picks one
    /// (printed as `sluice: admin listen=ADDR`).
    pub listen: SocketAddr,
    /// Allow a non-loopback `listen` address. Default false: the API can
    /// pause and delete mail, so it stays on the host unless asked.
    pub allow_remote: bool,
    /// The bearer token's file. Default `state_dir/admin.token`, created
    /// (32 random bytes, hex, mode 0600) at first start.
    pub token_file: Option<PathBuf>,
    /// Serve `/metrics` without the token. Default false.
    pub metrics_without_token: bool,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 8025)),
            allow_remote: false,
            token_file: None,
            metrics_without_token: false,
        }
    }
}
