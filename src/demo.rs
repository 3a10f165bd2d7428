//! `sluice demo`: the daemon on an embedded configuration, driven by the
//! bench injector in the same process, with a summary at the end.
//!
//! It shows what this build does end to end: SMTP intake on every core,
//! recipients split by owning shard, backpressure. Accepted mail goes to the
//! interim `discard` route until the delivery engine exists; the demo says
//! so rather than pretending to deliver.

use crate::config::Config;
use sluice_bench::inject::{self, InjectOptions, Stop};
use std::path::Path;

/// The embedded configuration: loopback only, an ephemeral port.
pub const DEMO_CONFIG: &str = r#"
hostname = "demo.sluice.test"
ack = "memory"
route = "discard"

[smtp]
listen = ["127.0.0.1:0"]
relay_networks = ["127.0.0.1/32"]

[log]
level = "warn"
"#;

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

/// Runs the demo and returns the text of its summary, or why it failed.
pub fn run(opts: DemoOptions) -> Result<String, String> {
    let config = Config::parse(DEMO_CONFIG, Path::new("<embedded demo config>"))
        .map_err(|e| e.to_string())?;
    let running = crate::runtime::start(config, None)?;
    let addr = *running
        .listen_addrs()
        .first()
        .ok_or("the demo configuration has no listener")?;
    eprintln!(
        "sluice demo: sluice listening on {addr}; injecting {} messages over {} connections to {} domains",
        opts.messages, opts.connections, opts.domains
    );
    let mut inj = InjectOptions::new(addr);
    inj.stop = Stop::Messages(opts.messages);
    inj.connections = opts.connections;
    inj.domains = opts.domains;
    inj.zipf = Some(1.0);
    inj.progress = true;
    let report = inject::run_blocking(inj);
    running.stop();
    let summary = running.wait()?;
    let report = report.map_err(|e| format!("injector: {e}"))?;

    let mut out = report.render_table();
    out.push_str(&format!(
        "\nsluice: accepted {} recipients in {} shard envelopes (route: discard — the delivery engine is not built yet)\n",
        summary.recipients, summary.envelopes
    ));
    if summary.recipients != report.accepted_recipients {
        return Err(format!(
            "{out}\nMISMATCH: the injector saw {} recipients accepted, sluice counted {}",
            report.accepted_recipients, summary.recipients
        ));
    }
    out.push_str(
        "check: every recipient acknowledged to the injector was counted by its owning shard\n",
    );
    Ok(out)
}
