//! `sluice demo`: sluice on a built-in configuration relaying to a
//! simulated Internet, with live progress and a summary table.
//!
//! The scenario is `bench/scenarios/demo.toml`, compiled in: the bench DNS
//! stub and sink run in this process, and sluice itself runs as a child
//! process (this same executable, `sluice serve`) with the configuration
//! the scenario generates, exactly as `sluice-bench run` would start it.

use sluice_bench::run::{self, RunSettings, Scenario};

/// The embedded scenario.
pub const DEMO_SCENARIO: &str = include_str!("../bench/scenarios/demo.toml");

/// Demo parameters.
#[derive(Debug, Clone, Copy)]
pub struct DemoOptions {
    /// Messages to inject.
    pub messages: u64,
    /// Concurrent client connections.
    pub connections: usize,
    /// Recipient domains (Zipf-distributed).
    pub domains: usize,
}

/// Runs the demo and returns its summary table, or why it failed.
pub fn run(opts: DemoOptions) -> Result<String, String> {
    let mut scenario = Scenario::from_toml_str(DEMO_SCENARIO).map_err(|e| e.to_string())?;
    scenario.inject.messages = Some(opts.messages);
    scenario.inject.duration_secs = None;
    scenario.inject.connections = opts.connections;
    scenario.inject.domains = opts.domains;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
    let settings = RunSettings {
        scenario_dir: std::path::PathBuf::from("."),
        sut_binary: Some(exe),
        keep: false,
        progress: true,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let report = runtime
        .block_on(run::execute(&scenario, &settings))
        .map_err(|e| e.to_string())?;
    let mut out = report.render_table();
    if report.clean() {
        out.push_str("check: every acknowledged recipient was delivered or bounced exactly once\n");
        Ok(out)
    } else {
        Err(format!(
            "{out}\nthe run was not clean: missing {} duplicates {}",
            report.missing, report.duplicates
        ))
    }
}
