//! The load generator. It exists to measure Sluice (or the sink), so it
//! must never be the bottleneck: messages are pre-built per size class,
//! transactions are pipelined whole (PIPELINING + CHUNKING) with several
//! in flight per connection, and each connection task keeps its own
//! counters and latency histogram, merged only at the end.
//!
//! Call [`run`] from async code or [`run_blocking`] from anywhere.

mod message;
mod mix;
pub mod options;
mod progress;
mod replies;
pub mod report;
mod session;
mod stats;

use std::sync::Arc;
use std::time::Instant;

use tokio::task::JoinSet;

pub use message::message_id;
pub use options::{
    Credentials, DomainOrder, DomainWeight, InjectOptions, ProviderShare, SizeSpec, SizeWeight,
    Stop,
};
pub use report::{InjectReport, LatencySummary};
pub use stats::Live;

use crate::error::{Error, Result};
use progress::ProgressDisplay;
use stats::ConnStats;

/// Runs an injection to completion on the current tokio runtime.
///
/// Fails only for invalid options (including a non-loopback target);
/// connection problems are counted in the report.
pub async fn run(opts: InjectOptions) -> Result<InjectReport> {
    run_live(opts, Arc::default()).await
}

/// Like [`run`], publishing running totals in `live` as it goes.
pub async fn run_live(opts: InjectOptions, live: Arc<Live>) -> Result<InjectReport> {
    opts.validate()?;
    let shared = Arc::new(session::Shared::new(opts, live)?);
    let started = Instant::now();
    let display = shared
        .opts
        .progress
        .then(|| ProgressDisplay::start(shared.clone()));
    let mut tasks = JoinSet::new();
    for index in 0..shared.opts.connections {
        tasks.spawn(session::connection(shared.clone(), index));
    }
    let mut total = ConnStats::new(shared.mix.domains.len(), &shared.histogram);
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(stats) => total.merge(&stats),
            Err(e) => total.count_error(format!("connection task failed: {e}")),
        }
    }
    let elapsed = started.elapsed();
    if let Some(display) = display {
        display.finish();
    }
    Ok(InjectReport::build(
        &shared.run_id,
        shared.opts.target.to_string(),
        shared.opts.connections,
        &shared.mix.domains,
        &mut total,
        elapsed,
    ))
}

/// Like [`run`], on a multi-threaded runtime of its own with
/// `opts.threads` workers (all cores when unset).
pub fn run_blocking(opts: InjectOptions) -> Result<InjectReport> {
    let threads = opts
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .map_err(|e| Error::io("building tokio runtime", e))?;
    runtime.block_on(run(opts))
}
