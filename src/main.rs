//! The `sluice` command: run the daemon, check a configuration, hash a
//! password, check the host's tuning, or run the demo.

use clap::{Parser, Subcommand};
use sluice::config::Config;
use std::path::PathBuf;
use std::process::ExitCode;

/// Default configuration file.
const DEFAULT_CONFIG: &str = "/etc/sluice/sluice.toml";

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "High-throughput outbound SMTP appliance"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    Serve {
        /// Configuration file; when it does not exist the built-in defaults apply.
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Validate a configuration file and print the effective settings.
    CheckConfig {
        /// The file to check.
        path: PathBuf,
    },
    /// Read a password from standard input and print an argon2id hash for the AUTH users file.
    Passwd,
    /// Compare this host's kernel settings and resource limits with the recommended tuning.
    Tune {
        /// Check and report (the only mode so far; changing the host is left to sysctl and limits.d).
        #[arg(long)]
        check: bool,
        /// Read sysctls from DIR/sys instead of /proc/sys (for tests).
        #[arg(long, hide = true, default_value = "/proc", value_name = "DIR")]
        proc_root: PathBuf,
    },
    /// Run sluice on an embedded configuration under a simulated load and print a summary.
    Demo {
        /// Messages to inject.
        #[arg(long, default_value_t = 100_000)]
        messages: u64,
        /// Concurrent client connections.
        #[arg(long, default_value_t = 50)]
        connections: usize,
        /// Recipient domains (Zipf-distributed).
        #[arg(long, default_value_t = 1000)]
        domains: usize,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config } => serve(config),
        Command::CheckConfig { path } => check_config(path),
        Command::Passwd => passwd(),
        Command::Tune { check, proc_root } => tune(check, &proc_root),
        Command::Demo {
            messages,
            connections,
            domains,
        } => demo(sluice::demo::DemoOptions {
            messages,
            connections,
            domains,
        }),
    }
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn serve(path: PathBuf) -> ExitCode {
    let config = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sluice: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(&config.log.level);
    match sluice::runtime::serve(config, Some(path)) {
        Ok(s) => {
            tracing::info!(
                envelopes = s.envelopes,
                recipients = s.recipients,
                "stopped"
            );
            eprintln!(
                "sluice: stopped accepted_envelopes={} accepted_recipients={} delivered={} deferred={} bounced={} dsns={} connections={}",
                s.envelopes, s.recipients, s.delivered, s.deferred, s.bounced, s.dsns, s.connections
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sluice: {e}");
            ExitCode::FAILURE
        }
    }
}

fn check_config(path: PathBuf) -> ExitCode {
    if !path.exists() {
        eprintln!(
            "sluice: {}: no such file (serve would use the built-in defaults)",
            path.display()
        );
        return ExitCode::from(2);
    }
    match Config::load(&path) {
        Ok(c) => {
            println!("{}: ok", path.display());
            println!("{c:#?}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sluice: {e}");
            ExitCode::from(2)
        }
    }
}

fn demo(opts: sluice::demo::DemoOptions) -> ExitCode {
    init_logging("warn");
    match sluice::demo::run(opts) {
        Ok(summary) => {
            print!("{summary}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sluice demo: {e}");
            ExitCode::FAILURE
        }
    }
}

fn passwd() -> ExitCode {
    let mut line = String::new();
    if std::io::stdin().read_line(&mut line).is_err() {
        eprintln!("sluice: cannot read the password from standard input");
        return ExitCode::FAILURE;
    }
    let password = line.trim_end_matches(['\r', '\n']);
    match sluice::auth::hash_password(password) {
        Ok(h) => {
            println!("{h}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sluice: {e}");
            ExitCode::FAILURE
        }
    }
}

fn tune(check: bool, proc_root: &std::path::Path) -> ExitCode {
    if !check {
        eprintln!("sluice: tune only checks so far: run `sluice tune --check`");
        return ExitCode::from(2);
    }
    match sluice::tune::check(proc_root) {
        Ok(findings) => {
            let mut all_ok = true;
            for f in &findings {
                println!("{f}");
                all_ok &= f.verdict == sluice::tune::Verdict::Ok;
            }
            for a in sluice::tune::advice(&findings) {
                eprintln!("sluice: {a}");
            }
            if all_ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("sluice: embedded tuning files: {e}");
            ExitCode::from(2)
        }
    }
}
