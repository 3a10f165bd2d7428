//! Crash injection: SIGKILL the SUT at planned moments while the injector
//! keeps going, restart it on the same address, and record what each kill
//! cost the injector. What matters afterwards is what the sink got —
//! messages lost (missing) or delivered twice (duplicates) — and that is
//! counted by the accounting, not here.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::scenario::CrashSection;
use super::sut::Sut;
use crate::error::Error;
use crate::inject::Live;

/// How often the trigger condition is checked.
const CHECK: Duration = Duration::from_millis(10);

/// One kill and restart.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KillEvent {
    /// Seconds after injection start.
    pub at_secs: f64,
    /// Transactions finished by the injector before the kill.
    pub injected_before: u64,
    /// Messages the SUT had acknowledged before the kill.
    pub acknowledged_before: u64,
    /// Transactions in flight that the kill aborted.
    pub failed_transactions: u64,
    /// Seconds from the kill until the SUT was ready again.
    pub restart_secs: f64,
}

/// All kills of a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CrashReport {
    /// Kills planned.
    pub planned: u32,
    /// SIGKILLs sent.
    pub kills: u32,
    /// Successful restarts.
    pub restarts: u32,
    /// Transactions aborted by the kills, summed.
    pub failed_transactions: u64,
    /// Each kill.
    pub events: Vec<KillEvent>,
    /// Why the crash loop stopped early, if it did.
    pub error: Option<String>,
}

/// When the k-th kill (1-based) is due.
fn due(plan: &CrashSection, k: u32, total: Option<u64>, live: &Live, started: Instant) -> bool {
    let k = f64::from(k);
    match (plan.after_secs, plan.after_fraction, total) {
        (Some(s), _, _) => started.elapsed().as_secs_f64() >= s * k,
        (None, Some(f), Some(n)) => live.done() as f64 >= (f * k * n as f64).ceil(),
        _ => false,
    }
}

/// Kills and restarts `sut` as planned until the plan is done or `done`
/// turns true (injection over); hands the SUT back with the report.
pub(crate) async fn crash_loop(
    mut sut: Sut,
    plan: CrashSection,
    total: Option<u64>,
    live: Arc<Live>,
    started: Instant,
    mut done: watch::Receiver<bool>,
) -> (Sut, CrashReport) {
    let mut report = CrashReport {
        planned: plan.times,
        ..CrashReport::default()
    };
    for k in 1..=plan.times {
        while !due(&plan, k, total, &live, started) {
            if *done.borrow() {
                return (sut, report);
            }
            let _ = tokio::time::timeout(CHECK, done.changed()).await;
        }
        let mut event = KillEvent {
            at_secs: started.elapsed().as_secs_f64(),
            injected_before: live.done(),
            acknowledged_before: live.accepted(),
            ..KillEvent::default()
        };
        let aborted_before = live.aborted();
        report.kills += 1;
        match sut.kill_and_restart().await {
            Ok(took) => {
                report.restarts += 1;
                event.restart_secs = took.as_secs_f64();
            }
            Err(e) => {
                report.error = Some(Error::to_string(&e));
                report.events.push(event);
                return (sut, report);
            }
        }
        event.failed_transactions = live.aborted().saturating_sub(aborted_before);
        report.failed_transactions += event.failed_transactions;
        report.events.push(event);
    }
    (sut, report)
}
