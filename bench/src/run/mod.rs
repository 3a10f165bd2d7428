//! `sluice-bench run SCENARIO.toml`: one command that builds the whole
//! test bench around a system under test — DNS stub, behaviour-profiled
//! sink, the SUT itself (Sluice, Postfix, any command, or something
//! already running) — drives load through it, optionally kills it
//! mid-run, and accounts for every acknowledged message at the far end.
//!
//! Why in-process: the injector's acknowledgements and the sink's receipts
//! are compared message by message (by Message-ID), which needs both in
//! one address space; and the sink's counters can be polled every 50 ms
//! at no cost to know when everything arrived.
//!
//! Files: [`scenario`] (the TOML schema), `template` (placeholders),
//! `setup` (scratch dir, DNS, sink), `sut` and `process` (starting,
//! killing, stopping the SUT), `crash`, `accounting` (missing,
//! duplicates), [`report`], `progress`, `regex` (for `ready_line`).

mod accounting;
pub mod crash;
mod process;
mod progress;
pub mod regex;
pub mod report;
pub mod scenario;
pub mod series;
mod setup;
mod sut;
pub mod template;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

pub use crash::{CrashReport, KillEvent};
pub use report::{DomainOutcome, RunReport};
pub use scenario::{Scenario, SutKind};
pub use series::{steady_rate, DomainSample, Sample, SteadyRate};
pub use template::Placeholders;

use crate::error::{Error, Result};
use crate::inject::{self, InjectReport, Live, Stop};
use setup::RunningSink;
use sut::{Sut, SutEnv};

/// Settings of one run besides the scenario.
#[derive(Debug, Clone, Default)]
pub struct RunSettings {
    /// Directory relative paths in the scenario are resolved against.
    pub scenario_dir: PathBuf,
    /// Overrides the sluice binary (`--sut-binary`).
    pub sut_binary: Option<PathBuf>,
    /// Keep the scratch directory (generated config, logs, Postfix instance).
    pub keep: bool,
    /// Show live progress on stderr.
    pub progress: bool,
}

/// Loads `path`, runs it on a runtime of its own and returns the report.
/// `messages` overrides `inject.messages` (and drops `duration_secs`).
pub fn run_file(path: &Path, messages: Option<u64>, settings: RunSettings) -> Result<RunReport> {
    let mut scenario = Scenario::load(path)?;
    if let Some(n) = messages {
        scenario.inject.messages = Some(n);
        scenario.inject.duration_secs = None;
    }
    let settings = RunSettings {
        scenario_dir: path
            .parent()
            .map(Path::to_path_buf)
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from(".")),
        ..settings
    };
    let threads = scenario
        .inject
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .map_err(|e| Error::io("building tokio runtime", e))?;
    runtime.block_on(execute(&scenario, &settings))
}

/// Runs a scenario on the current (multi-threaded) tokio runtime.
pub async fn execute(scenario: &Scenario, settings: &RunSettings) -> Result<RunReport> {
    // Validates the injector options before anything is started.
    scenario.inject_options(std::net::SocketAddr::from(([127, 0, 0, 1], 25)))?;
    let work_dir = setup::make_work_dir()?;
    let result = execute_in(scenario, settings, &work_dir).await;
    if settings.keep {
        eprintln!("sluice-bench run: kept {}", work_dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&work_dir);
    }
    result.map(|mut r| {
        r.work_dir = settings.keep.then(|| work_dir.display().to_string());
        r
    })
}

async fn execute_in(
    scenario: &Scenario,
    settings: &RunSettings,
    work_dir: &Path,
) -> Result<RunReport> {
    let dns = setup::start_dns(scenario, &settings.scenario_dir).await?;
    let sink = match RunningSink::start(scenario, &settings.scenario_dir).await {
        Ok(s) => s,
        Err(e) => {
            dns.shutdown().await;
            return Err(e);
        }
    };
    let listen = std::net::SocketAddr::from(([127, 0, 0, 1], setup::free_port()?));
    let admin_addr = std::net::SocketAddr::from(([127, 0, 0, 1], setup::free_port()?));
    let mut placeholders = placeholders(listen, dns.local_addr(), sink.addr, work_dir);
    placeholders.set("admin", admin_addr.to_string());
    // Read only if the SUT is a sluice that put its admin API on `{admin}`.
    let admin = series::Admin {
        addr: admin_addr,
        token_file: work_dir.join("state").join("admin.token"),
    };
    let env = SutEnv {
        work_dir: work_dir.to_path_buf(),
        scenario_dir: settings.scenario_dir.clone(),
        binary_override: settings.sut_binary.clone(),
        listen,
        sink: sink.addr,
    };
    let sut = match Sut::start(&scenario.sut, &env, &mut placeholders).await {
        Ok(s) => s,
        Err(e) => {
            let _ = sink.stop().await;
            dns.shutdown().await;
            return Err(e);
        }
    };
    let description = sut.description().to_string();
    let target = sut.target();
    let sink_address = sink.addr.to_string();
    let handle = sink.handle.clone();
    let (sut, outcome) = drive(scenario, settings, sut, &sink, admin).await;
    let sut_summary = match sut {
        Some(sut) => sut.stop().await,
        None => Vec::new(),
    };
    let sink_report = sink.stop().await?;
    let dns_report = dns.shutdown().await;
    let Driven {
        inject,
        crash,
        waited,
        complete,
        started,
        started_unix,
        series,
    } = outcome?;
    let delivery = accounting::account(&inject, &handle);
    let e2e = handle
        .last_accepted_at()
        .map(|t| t.saturating_duration_since(started).as_secs_f64());
    let per_sec = |n: u64| e2e.filter(|s| *s > 0.0).map(|s| n as f64 / s);
    let unique = sink_report
        .recipients_accepted
        .saturating_sub(sink_report.duplicates);
    let st = &scenario.steady;
    let steady = series::steady_rate(&series, &st.exclude, st.from_fraction, st.to_fraction);
    Ok(RunReport {
        scenario: scenario.display_name().to_string(),
        description: scenario.description.clone(),
        sut: description,
        target: target.to_string(),
        sink_address,
        dns_address: dns_report.local_addr.to_string(),
        started_unix,
        inject_msgs_per_sec: inject.msgs_per_sec,
        end_to_end_secs: e2e,
        end_to_end_msgs_per_sec: per_sec(sink_report.messages_accepted),
        end_to_end_rcpts_per_sec: per_sec(unique),
        steady,
        latency_ms: inject.latency_ms.clone(),
        expected: delivery.expected,
        delivered: unique,
        deferred: sink_report.tempfailed,
        bounced: sink_report.permfailed,
        missing: delivery.missing,
        duplicates: sink_report.duplicates,
        unacknowledged_delivered: delivery.unacknowledged,
        complete: complete && delivery.missing == 0,
        waited_secs: waited.as_secs_f64(),
        domains: domains(&sink_report),
        crash,
        sut_summary,
        dns_queries: dns_report.stats.queries(),
        work_dir: None,
        inject,
        sink: sink_report,
        series,
    })
}

/// What [`drive`] measured.
struct Driven {
    /// The injector's report.
    inject: InjectReport,
    /// Kills and restarts, if planned.
    crash: Option<CrashReport>,
    /// How long the sink was waited for after injection.
    waited: Duration,
    /// Whether everything acknowledged arrived before the deadline.
    complete: bool,
    /// When injection started (the start of the end-to-end span).
    started: Instant,
    /// The same, Unix time.
    started_unix: f64,
    /// One sample a second.
    series: Vec<Sample>,
}

/// Injects (with crashes, if planned), then waits for the sink. Hands
/// the SUT back so the caller can stop it, even on failure (it is `None`
/// only if the crash task died, in which case dropping it killed it).
async fn drive(
    scenario: &Scenario,
    settings: &RunSettings,
    sut: Sut,
    sink: &RunningSink,
    admin: series::Admin,
) -> (Option<Sut>, Result<Driven>) {
    let mut opts = match scenario.inject_options(sut.target()) {
        Ok(o) => o,
        Err(e) => return (Some(sut), Err(e)),
    };
    opts.record_acks = true;
    if scenario.crash.is_some() {
        // Ride out the restart, with margin for a slow start.
        opts.retry_for = Duration::from_secs_f64(scenario.sut.ready_timeout_secs + 10.0);
    }
    let total = match opts.stop {
        Stop::Messages(n) => Some(n),
        Stop::Duration(_) => None,
    };
    let live = Arc::new(Live::default());
    let display = settings
        .progress
        .then(|| progress::RunProgress::start(live.clone(), sink.handle.clone(), total));
    let started = Instant::now();
    let started_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let sampler = series::Sampler::start(sink.handle.clone(), live.clone(), Some(admin), started);
    let injection = tokio::spawn(inject::run_live(opts, live.clone()));
    let (done_tx, done_rx) = watch::channel(false);
    let (kept, crasher) = match scenario.crash.clone() {
        Some(plan) => {
            let task = crash::crash_loop(sut, plan, total, live.clone(), started, done_rx);
            (None, Some(tokio::spawn(task)))
        }
        None => (Some(sut), None),
    };
    let injected = injection.await;
    let _ = done_tx.send(true);
    let (sut, crash, crash_error) = match (kept, crasher) {
        (None, Some(task)) => match task.await {
            Ok((sut, report)) => (Some(sut), Some(report), None),
            Err(e) => (
                None,
                None,
                Some(Error::Sut(format!("crash task failed: {e}"))),
            ),
        },
        (kept, _) => (kept, None, None),
    };
    let report = match (injected, crash_error) {
        (_, Some(e)) => Err(e),
        (Ok(r), None) => r,
        (Err(e), None) => Err(Error::Sut(format!("injector task failed: {e}"))),
    };
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            if let Some(d) = display {
                d.finish();
            }
            sampler.finish();
            return (sut, Err(e));
        }
    };
    let wait_started = Instant::now();
    let deadline = Duration::from_secs_f64(scenario.deadline_secs);
    let complete = accounting::wait_for_sink(&report, &sink.handle, deadline).await;
    let waited = wait_started.elapsed();
    if scenario.settle_secs > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(scenario.settle_secs)).await;
    }
    if let Some(d) = display {
        d.finish();
    }
    let driven = Driven {
        inject: report,
        crash,
        waited,
        complete,
        started,
        started_unix,
        series: sampler.finish(),
    };
    (sut, Ok(driven))
}

/// The placeholders every template may use.
fn placeholders(
    listen: std::net::SocketAddr,
    dns: std::net::SocketAddr,
    sink: std::net::SocketAddr,
    work_dir: &Path,
) -> Placeholders {
    let mut p = Placeholders::default();
    p.set("listen", listen.to_string());
    p.set("listen_host", listen.ip().to_string());
    p.set("listen_port", listen.port().to_string());
    p.set("dns", dns.to_string());
    p.set("dns_host", dns.ip().to_string());
    p.set("dns_port", dns.port().to_string());
    p.set("sink", sink.to_string());
    p.set("sink_port", sink.port().to_string());
    p.set("state_dir", work_dir.join("state").display().to_string());
    p.set("work_dir", work_dir.display().to_string());
    p
}

/// Per-domain outcome from the sink's counters.
fn domains(sink: &crate::sink::SinkReport) -> std::collections::BTreeMap<String, DomainOutcome> {
    sink.domains
        .iter()
        .map(|(name, d)| {
            (
                name.clone(),
                DomainOutcome {
                    delivered: d.accepted.saturating_sub(d.duplicates),
                    deferred: d.tempfailed,
                    bounced: d.permfailed,
                    duplicates: d.duplicates,
                },
            )
        })
        .collect()
}
