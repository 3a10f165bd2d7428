//! `sluice-bench` command line: a thin clap layer over the library, so that
//! everything the CLI can do is also available in-process to tests and to
//! the `sluice` daemon's demo.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use sluice_bench::dns::{self, DnsOptions, FailureRule, Zone};
use sluice_bench::inject::{
    self, Credentials, DomainOrder, DomainWeight, InjectOptions, ProviderShare, SizeSpec, Stop,
};
use sluice_bench::loopback::parse_loopback;
use sluice_bench::run;
use sluice_bench::sink::{Profile, Sink, SinkOptions, SinkReport};
use sluice_bench::Error;

/// Load-test kit for the Sluice SMTP relay. Talks to loopback addresses only.
#[derive(Debug, Parser)]
#[command(name = "sluice-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate SMTP load against a loopback target and report throughput and latency.
    Inject(InjectArgs),
    /// Run an SMTP receiver that imitates real MTAs and counts what it receives.
    Sink(SinkArgs),
    /// Run an authoritative DNS stub for synthetic and zone-file domains.
    Dns(DnsArgs),
    /// Run a scenario: DNS stub, sink and a system under test, load through
    /// it (with crashes if asked), then account for every message.
    Run(RunArgs),
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Scenario file (see bench/scenarios/).
    scenario: PathBuf,
    /// Write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// The sluice binary for kind = "sluice" [default: `sluice` next to this
    /// executable, else target/release/sluice].
    #[arg(long)]
    sut_binary: Option<PathBuf>,
    /// Keep the scratch directory (generated config, SUT log, Postfix instance).
    #[arg(long)]
    keep: bool,
    /// Override the scenario's message count.
    #[arg(long)]
    messages: Option<u64>,
    /// No live progress on stderr.
    #[arg(long)]
    quiet: bool,
}

#[derive(Debug, Args)]
struct DnsArgs {
    /// Address for UDP and TCP (127.0.0.0/8 or [::1] only).
    #[arg(long, default_value = "127.0.0.1:5353", value_parser = loopback_addr)]
    listen: SocketAddr,
    /// Number of synthetic domains d0.test .. d{N-1}.test.
    #[arg(long, default_value_t = 100)]
    domains: usize,
    /// TOML zone file with explicit records, providers and failures.
    #[arg(long)]
    zone: Option<PathBuf>,
    /// Failure rule NAME=MODE[@PROBABILITY]; MODE is nxdomain, servfail,
    /// refused, timeout, truncate or nullmx. Repeatable.
    #[arg(long = "failure", value_name = "NAME=MODE[@P]")]
    failures: Vec<FailureRule>,
    /// TTL of synthetic/provider records and default TTL of zone records.
    #[arg(long, default_value_t = 300)]
    ttl: u32,
    /// Negative-caching TTL (SOA minimum).
    #[arg(long, default_value_t = 60)]
    negative_ttl: u32,
    /// Also serve AAAA ::1 for synthetic and provider MX hosts.
    #[arg(long)]
    aaaa: bool,
    /// CNAME links followed inside one answer.
    #[arg(long, default_value_t = 8)]
    max_cname_chase: usize,
    /// Seed for probabilistic failures.
    #[arg(long, default_value_t = 0x5eed)]
    seed: u64,
    /// Write the final counters as JSON here at exit.
    #[arg(long)]
    summary: Option<PathBuf>,
}

fn loopback_addr(s: &str) -> Result<SocketAddr, String> {
    parse_loopback(s).map_err(|e| e.to_string())
}

fn parse_from_str<T: std::str::FromStr<Err = Error>>(s: &str) -> Result<T, String> {
    s.parse().map_err(|e: Error| e.to_string())
}

#[derive(Debug, Args)]
struct InjectArgs {
    /// SMTP server to load, HOST:PORT (127.0.0.0/8, [::1] or localhost only).
    #[arg(long, value_parser = loopback_addr)]
    target: SocketAddr,
    /// Concurrent connections.
    #[arg(long, default_value_t = 50)]
    connections: usize,
    /// Number of messages to send [default: 10000 unless --duration is given].
    #[arg(long, conflicts_with = "duration")]
    messages: Option<u64>,
    /// Send for this many seconds instead of a fixed number of messages.
    #[arg(long)]
    duration: Option<f64>,
    /// Message size in bytes, headers included.
    #[arg(long, default_value_t = 1024, conflicts_with = "size_dist")]
    size: usize,
    /// Weighted size mix, e.g. "512:50,4096:40,65536:10".
    #[arg(long, value_parser = parse_from_str::<SizeSpec>)]
    size_dist: Option<SizeSpec>,
    /// Recipients per message.
    #[arg(long, default_value_t = 1)]
    rcpts: usize,
    /// Synthetic recipient domains d0.test … d{D-1}.test.
    #[arg(long, default_value_t = 10)]
    domains: usize,
    /// Zipf exponent over the synthetic domains (uniform when absent).
    #[arg(long)]
    zipf: Option<f64>,
    /// `random` (drawn from the mix) or `sequential` (recipient k goes to
    /// d{k mod D}.test: N recipients reach min(N, D) distinct domains).
    #[arg(long, default_value = "random", value_parser = parse_from_str::<DomainOrder>)]
    domain_order: DomainOrder,
    /// Domain with a fixed share of recipients, NAME:SHARE (repeatable), e.g. gmail.test:0.3.
    #[arg(long = "provider", value_parser = parse_from_str::<ProviderShare>)]
    providers: Vec<ProviderShare>,
    /// Relative weight of one synthetic domain, NAME:WEIGHT (repeatable; the others weigh 1), e.g. d0.test:0.05.
    #[arg(long = "domain-weight", value_parser = parse_from_str::<DomainWeight>)]
    domain_weights: Vec<DomainWeight>,
    /// Envelope and header sender.
    #[arg(long, default_value = "bench@sluice-bench.test")]
    from: String,
    /// EHLO name.
    #[arg(long, default_value = "inject.sluice-bench.test")]
    ehlo: String,
    /// Upgrade with STARTTLS; the server certificate is NOT verified (loopback testing only).
    #[arg(long)]
    starttls: bool,
    /// AUTH PLAIN credentials, USER:PASS.
    #[arg(long, value_parser = parse_from_str::<Credentials>)]
    auth: Option<Credentials>,
    /// Never pipeline, even if the server offers PIPELINING.
    #[arg(long)]
    no_pipelining: bool,
    /// Never use BDAT, even if the server offers CHUNKING.
    #[arg(long)]
    no_bdat: bool,
    /// Transactions in flight per connection when PIPELINING and CHUNKING are offered.
    #[arg(long, default_value_t = 8)]
    window: usize,
    /// Seconds to wait for a connection or reply before abandoning the session.
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
    /// Write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Runtime worker threads [default: all cores].
    #[arg(long)]
    threads: Option<usize>,
    /// No live progress on stderr.
    #[arg(long)]
    quiet: bool,
}

#[derive(Debug, Args)]
struct SinkArgs {
    /// SMTP listen address, HOST:PORT (repeatable; loopback only). Addresses
    /// under [hosts] in the profile are bound on the same port as the first.
    #[arg(long, value_parser = loopback_addr, required = true)]
    listen: Vec<SocketAddr>,
    /// TOML behaviour profile (see profiles/example.toml).
    #[arg(long)]
    profile: Option<PathBuf>,
    /// Serve live counters as JSON over HTTP at HOST:PORT (GET /).
    #[arg(long, value_parser = loopback_addr)]
    status: Option<SocketAddr>,
    /// Write the final counters as JSON here on SIGINT/SIGTERM.
    #[arg(long)]
    summary: Option<PathBuf>,
    /// Name in the greeting and EHLO reply.
    #[arg(long, default_value = "sink.sluice-bench.test")]
    hostname: String,
    /// Do not generate a certificate or offer STARTTLS.
    #[arg(long)]
    no_tls: bool,
    /// Runtime worker threads [default: all cores].
    #[arg(long)]
    threads: Option<usize>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inject(args) => inject_main(args),
        Command::Sink(args) => sink_main(args),
        Command::Dns(args) => dns_main(args),
        Command::Run(args) => run_main(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sluice-bench: {e}");
            ExitCode::from(1)
        }
    }
}

fn seconds(value: f64, what: &str) -> Result<Duration, Error> {
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| Error::InvalidOption(format!("{what} must be a positive number of seconds")))
}

fn inject_main(args: InjectArgs) -> Result<ExitCode, Error> {
    let mut opts = InjectOptions::new(args.target);
    opts.connections = args.connections;
    opts.stop = match (args.messages, args.duration) {
        (_, Some(secs)) => Stop::Duration(seconds(secs, "--duration")?),
        (Some(n), None) => Stop::Messages(n),
        (None, None) => Stop::Messages(10_000),
    };
    opts.size = args.size_dist.unwrap_or(SizeSpec::Fixed(args.size));
    opts.rcpts = args.rcpts;
    opts.domains = args.domains;
    opts.zipf = args.zipf;
    opts.domain_order = args.domain_order;
    opts.providers = args.providers;
    opts.domain_weights = args.domain_weights;
    opts.from = args.from;
    opts.ehlo = args.ehlo;
    opts.starttls = args.starttls;
    opts.auth = args.auth;
    opts.pipelining = !args.no_pipelining;
    opts.chunking = !args.no_bdat;
    opts.window = args.window;
    opts.threads = args.threads;
    opts.timeout = seconds(args.timeout, "--timeout")?;
    opts.progress = !args.quiet;

    let report = inject::run_blocking(opts)?;
    print!("{}", report.render_table());
    let _ = std::io::stdout().flush();
    if let Some(path) = &args.json {
        write_json(path, &report)?;
    }
    Ok(if report.all_connected() {
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "sluice-bench: {} connection(s) could not connect to {}",
            report.connect_errors, report.target
        );
        ExitCode::from(2)
    })
}

/// Exit 0 when everything acknowledged arrived exactly once, 3 when the
/// run completed but mail is missing or duplicated, 1 when it could not run.
fn run_main(args: RunArgs) -> Result<ExitCode, Error> {
    let settings = run::RunSettings {
        sut_binary: args.sut_binary,
        keep: args.keep,
        progress: !args.quiet,
        ..run::RunSettings::default()
    };
    let report = run::run_file(&args.scenario, args.messages, settings)?;
    print!("{}", report.render_table());
    let _ = std::io::stdout().flush();
    if let Some(path) = &args.json {
        write_json(path, &report)?;
    }
    Ok(if report.clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}

fn write_json(path: &PathBuf, value: &impl serde::Serialize) -> Result<(), Error> {
    let json =
        serde_json::to_string_pretty(value).map_err(|e| Error::InvalidOption(e.to_string()))?;
    std::fs::write(path, json + "\n")
        .map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

fn sink_main(args: SinkArgs) -> Result<ExitCode, Error> {
    let profile = match &args.profile {
        Some(path) => Profile::load(path)?,
        None => Profile::default(),
    };
    let opts = SinkOptions {
        listen: args.listen,
        profile,
        status: args.status,
        hostname: args.hostname,
        tls: !args.no_tls,
        track_receipts: false,
    };
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .map_err(|e| Error::io("building tokio runtime", e))?;
    let report: SinkReport = runtime.block_on(async {
        let sink = Sink::bind(opts).await?;
        for addr in sink.local_addrs() {
            println!("sluice-bench sink listening on {addr}");
        }
        if let Some(addr) = sink.status_addr() {
            println!("sluice-bench sink status on http://{addr}/");
        }
        let _ = std::io::stdout().flush();
        sink.run(shutdown_signal()).await
    })?;
    let json =
        serde_json::to_string_pretty(&report).map_err(|e| Error::InvalidOption(e.to_string()))?;
    println!("{json}");
    if let Some(path) = &args.summary {
        write_json(path, &report)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn dns_main(args: DnsArgs) -> Result<ExitCode, Error> {
    let zone = args
        .zone
        .as_deref()
        .map(Zone::load)
        .transpose()
        .map_err(|e| Error::InvalidOption(e.to_string()))?;
    let opts = DnsOptions {
        listen: args.listen,
        domains: args.domains,
        zone,
        failures: args.failures,
        ttl: args.ttl,
        negative_ttl: args.negative_ttl,
        aaaa: args.aaaa,
        max_cname_chase: args.max_cname_chase,
        seed: args.seed,
        ..DnsOptions::default()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::io("building tokio runtime", e))?;
    let stats = runtime.block_on(async {
        let server = dns::start(opts)
            .await
            .map_err(|e| Error::InvalidOption(e.to_string()))?;
        println!(
            "sluice-bench dns serving {} synthetic domains on {} (udp+tcp)",
            args.domains,
            server.local_addr()
        );
        let _ = std::io::stdout().flush();
        shutdown_signal().await;
        Ok::<_, Error>(server.shutdown().await.stats)
    })?;
    let line = format!(
        "{{\"queries\": {}, \"udp\": {}, \"tcp\": {}, \"truncated\": {}, \"malformed\": {}}}",
        stats.queries(),
        stats.udp.queries,
        stats.tcp.queries,
        stats.udp.truncated,
        stats.malformed
    );
    println!("{line}");
    if let Some(path) = &args.summary {
        std::fs::write(path, line + "\n")
            .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
