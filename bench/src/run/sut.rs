//! The system under test: started (or not) according to its kind, killed
//! and restarted for crash scenarios, stopped at the end with its summary.
//!
//! Processes that run starts listen on an address picked up front (a free
//! port, not port 0), so a restarted SUT comes back where the injector's
//! connections are already pointed.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::process::{wait_port, Proc, Ready};
use super::regex::Regex;
use super::scenario::{SutKind, SutSection};
use super::template::Placeholders;
use crate::error::{Error, Result};
use crate::loopback::parse_loopback;

/// The line sluice prints once it listens, and its exit summary.
const SLUICE_READY: &str = "^sluice: ready listen=";
const SLUICE_STOPPED: &str = "sluice: stopped";
/// Script used for `kind = "postfix"` when the scenario names none.
pub(crate) const DEFAULT_POSTFIX_SCRIPT: &str = "tests/peers/postfix-relay.sh";

/// Where things are, for starting a SUT.
#[derive(Debug, Clone)]
pub(crate) struct SutEnv {
    /// Scratch directory of this run (configs, logs, Postfix instance).
    pub(crate) work_dir: PathBuf,
    /// Directory of the scenario file, for relative paths.
    pub(crate) scenario_dir: PathBuf,
    /// `--sut-binary`.
    pub(crate) binary_override: Option<PathBuf>,
    /// Address picked for the SUT to listen on.
    pub(crate) listen: SocketAddr,
    /// The sink's 127.0.0.1 address.
    pub(crate) sink: SocketAddr,
}

/// A started command (sluice or any other).
struct Managed {
    argv: Vec<String>,
    ready: Ready,
    summary_prefix: Option<&'static str>,
    log: PathBuf,
    proc: Option<Proc>,
    summaries: Vec<String>,
    ready_timeout: Duration,
    grace: Duration,
}

enum Kind {
    Managed(Box<Managed>),
    External,
    Postfix { script: PathBuf, dir: PathBuf },
}

/// A running system under test.
pub(crate) struct Sut {
    kind: Kind,
    target: SocketAddr,
    description: String,
}

impl Sut {
    /// Starts the SUT described by `section` and waits until it is ready.
    pub(crate) async fn start(
        section: &SutSection,
        env: &SutEnv,
        placeholders: &mut Placeholders,
    ) -> Result<Sut> {
        let ready_timeout = Duration::from_secs_f64(section.ready_timeout_secs);
        let grace = Duration::from_secs_f64(section.stop_timeout_secs);
        match section.kind {
            SutKind::External => {
                let target = parse_loopback(section.address.as_deref().unwrap_or_default())?;
                wait_port(target, ready_timeout).await?;
                Ok(Sut {
                    kind: Kind::External,
                    target,
                    description: format!("external MTA at {target}"),
                })
            }
            SutKind::Postfix => start_postfix(section, env, ready_timeout).await,
            SutKind::Sluice | SutKind::Command => {
                let config_path = env.work_dir.join(match section.kind {
                    SutKind::Sluice => "sluice.toml",
                    _ => "sut-config",
                });
                placeholders.set("config", config_path.display().to_string());
                if let Some(template) = &section.config {
                    let text = placeholders.substitute(template)?;
                    std::fs::write(&config_path, text)
                        .map_err(|e| Error::io(format!("writing {}", config_path.display()), e))?;
                }
                let managed = if section.kind == SutKind::Sluice {
                    let binary = sluice_binary(env)?;
                    Managed {
                        argv: vec![
                            binary.display().to_string(),
                            "serve".into(),
                            "--config".into(),
                            config_path.display().to_string(),
                        ],
                        ready: Ready::Line(regex(SLUICE_READY)?),
                        summary_prefix: Some(SLUICE_STOPPED),
                        log: env.work_dir.join("sut.log"),
                        proc: None,
                        summaries: Vec::new(),
                        ready_timeout,
                        grace,
                    }
                } else {
                    command_managed(section, env, placeholders, ready_timeout, grace)?
                };
                let target = match (&section.address, section.kind) {
                    (Some(a), SutKind::Command) => parse_loopback(&placeholders.substitute(a)?)?,
                    _ => env.listen,
                };
                let mut sut = Sut {
                    description: format!("{} ({})", section.kind.name(), managed.argv.join(" ")),
                    kind: Kind::Managed(Box::new(managed)),
                    target,
                };
                let line = sut.launch().await?;
                if let Some(addr) = line.as_deref().and_then(sluice_listen) {
                    sut.target = addr;
                }
                Ok(sut)
            }
        }
    }

    /// Where the injector connects.
    pub(crate) fn target(&self) -> SocketAddr {
        self.target
    }

    /// One line saying what this is.
    pub(crate) fn description(&self) -> &str {
        &self.description
    }

    /// Spawns the managed process and waits for readiness.
    async fn launch(&mut self) -> Result<Option<String>> {
        let Kind::Managed(m) = &mut self.kind else {
            return Ok(None);
        };
        let mut proc = Proc::spawn(&m.argv, &m.log, m.summary_prefix)?;
        let line = proc.wait_ready(&m.ready, m.ready_timeout).await?;
        m.proc = Some(proc);
        Ok(line)
    }

    /// SIGKILLs the SUT and starts it again with the same configuration;
    /// returns how long it took to be ready again.
    pub(crate) async fn kill_and_restart(&mut self) -> Result<Duration> {
        let Kind::Managed(m) = &mut self.kind else {
            return Err(Error::Sut("only a SUT started by run can be killed".into()));
        };
        if let Some(mut proc) = m.proc.take() {
            proc.kill()?;
            // Reap the reader threads and keep whatever summary it printed.
            if let Some(s) = proc.terminate(Duration::ZERO).await {
                m.summaries.push(s);
            }
        }
        let started = Instant::now();
        let line = self.launch().await?;
        if let Some(addr) = line.as_deref().and_then(sluice_listen) {
            if addr != self.target {
                return Err(Error::Sut(format!(
                    "restarted on {addr}, not on {} as before",
                    self.target
                )));
            }
        }
        Ok(started.elapsed())
    }

    /// Stops what run started; returns the SUT's summary lines.
    pub(crate) async fn stop(self) -> Vec<String> {
        match self.kind {
            Kind::External => Vec::new(),
            Kind::Managed(mut m) => {
                if let Some(proc) = m.proc.take() {
                    if let Some(s) = proc.terminate(m.grace).await {
                        m.summaries.push(s);
                    }
                }
                m.summaries
            }
            Kind::Postfix { script, dir } => {
                let mut out = Vec::new();
                match script_output(&script, &["count"], &dir).await {
                    Ok(count) => out.push(format!("postfix: {}", count.trim())),
                    Err(e) => out.push(format!("postfix count failed: {e}")),
                }
                if let Err(e) = script_output(&script, &["stop"], &dir).await {
                    out.push(format!("postfix stop failed: {e}"));
                }
                out
            }
        }
    }
}

fn regex(pattern: &str) -> Result<Regex> {
    Regex::new(pattern).map_err(|e| Error::Scenario(e.to_string()))
}

/// The first address of `sluice: ready listen=A,B`.
fn sluice_listen(line: &str) -> Option<SocketAddr> {
    let list = line.split_once("listen=")?.1;
    let first = list.split([',', ' ']).next()?;
    parse_loopback(first.trim()).ok()
}

fn command_managed(
    section: &SutSection,
    env: &SutEnv,
    placeholders: &Placeholders,
    ready_timeout: Duration,
    grace: Duration,
) -> Result<Managed> {
    let argv = section
        .command
        .iter()
        .flatten()
        .map(|a| placeholders.substitute(a))
        .collect::<Result<Vec<_>>>()?;
    let ready = match (&section.ready_line, section.ready_port) {
        (Some(re), _) => Ready::Line(regex(re)?),
        (None, Some(port)) => Ready::Port(SocketAddr::from(([127, 0, 0, 1], port))),
        (None, None) => Ready::Port(env.listen),
    };
    Ok(Managed {
        argv,
        ready,
        summary_prefix: None,
        log: env.work_dir.join("sut.log"),
        proc: None,
        summaries: Vec::new(),
        ready_timeout,
        grace,
    })
}

/// `--sut-binary`, else `sluice` next to this executable, else
/// `target/release/sluice` under the working directory or a parent of
/// the scenario.
fn sluice_binary(env: &SutEnv) -> Result<PathBuf> {
    let mut tried = Vec::new();
    if let Some(path) = &env.binary_override {
        return if path.is_file() {
            Ok(path.clone())
        } else {
            Err(Error::Sut(format!(
                "--sut-binary {} does not exist",
                path.display()
            )))
        };
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
    {
        tried.push(dir.join("sluice"));
    }
    tried.extend(find_upwards(env, Path::new("target/release/sluice")));
    tried.iter().find(|p| p.is_file()).cloned().ok_or_else(|| {
        let list: Vec<String> = tried.iter().map(|p| p.display().to_string()).collect();
        Error::Sut(format!(
            "no sluice binary (tried {}); build it or pass --sut-binary",
            list.join(", ")
        ))
    })
}

/// `rel` under the working directory and under every ancestor of the
/// scenario's directory, in that order (existing or not).
pub(crate) fn find_upwards(env: &SutEnv, rel: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        out.push(cwd.join(rel));
    }
    let dir = env
        .scenario_dir
        .canonicalize()
        .unwrap_or_else(|_| env.scenario_dir.clone());
    out.extend(dir.ancestors().map(|a| a.join(rel)));
    out
}

async fn start_postfix(section: &SutSection, env: &SutEnv, timeout: Duration) -> Result<Sut> {
    let rel = section
        .script
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_POSTFIX_SCRIPT));
    let script = if rel.is_absolute() {
        rel.clone()
    } else {
        find_upwards(env, &rel)
            .into_iter()
            .find(|p| p.is_file())
            .ok_or_else(|| {
                Error::Sut(format!(
                    "postfix script {} not found under the working directory or the scenario's parents",
                    rel.display()
                ))
            })?
    };
    let dir = env.work_dir.join("postfix");
    let port = env.listen.port().to_string();
    let hop = format!("127.0.0.1:{}", env.sink.port());
    script_output(&script, &["relay", &port, &hop], &dir).await?;
    let target = SocketAddr::from(([127, 0, 0, 1], env.listen.port()));
    let sut = Sut {
        description: format!(
            "postfix via {} (relayhost [127.0.0.1]:{})",
            script.display(),
            env.sink.port()
        ),
        kind: Kind::Postfix {
            script,
            dir: dir.clone(),
        },
        target,
    };
    if let Err(e) = wait_port(target, timeout).await {
        let _ = sut.stop().await;
        return Err(e);
    }
    Ok(sut)
}

/// Runs `bash SCRIPT MODE DIR ARGS…` and returns its stdout.
async fn script_output(script: &Path, mode_args: &[&str], dir: &Path) -> Result<String> {
    let mut cmd = Command::new("bash");
    cmd.arg(script);
    if let Some((mode, args)) = mode_args.split_first() {
        cmd.arg(mode).arg(dir).args(args);
    }
    let what = format!("{} {}", script.display(), mode_args.join(" "));
    let output = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .map_err(|e| Error::Sut(format!("{what}: {e}")))?
        .map_err(|e| Error::Sut(format!("{what}: {e}")))?;
    if !output.status.success() {
        return Err(Error::Sut(format!(
            "{what} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
