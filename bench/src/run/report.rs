//! The result of a scenario run: one serialisable value for `--json`, and
//! the single table printed to stdout. The full injector and sink reports
//! are embedded so nothing measured is lost; the headline fields are the
//! ones a comparison needs (rates, latency, missing, duplicates).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::crash::CrashReport;
use crate::inject::{InjectReport, LatencySummary};
use crate::sink::SinkReport;

/// Domains listed in the table; the JSON has them all.
const TABLE_DOMAINS: usize = 20;

/// What the sink did with one recipient domain (recipient counts).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DomainOutcome {
    /// Distinct recipients accepted.
    pub delivered: u64,
    /// Recipient attempts answered 4xx (one recipient may be deferred several times).
    pub deferred: u64,
    /// Recipients answered 5xx.
    pub bounced: u64,
    /// Recipients accepted again (same Message-ID and recipient).
    pub duplicates: u64,
}

/// Everything a run measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// Scenario name.
    pub scenario: String,
    /// Scenario description.
    pub description: Option<String>,
    /// The system under test.
    pub sut: String,
    /// Where the injector connected.
    pub target: String,
    /// The sink's 127.0.0.1 address (every synthetic MX host uses its port).
    pub sink_address: String,
    /// The DNS stub's address.
    pub dns_address: String,
    /// When injection started, Unix time in seconds: the zero of the
    /// series' `t`, for lining up samples taken outside the bench.
    #[serde(default)]
    pub started_unix: f64,
    /// Messages acknowledged by the SUT per second of injection.
    pub inject_msgs_per_sec: f64,
    /// First injection → last message accepted by the sink, in seconds.
    pub end_to_end_secs: Option<f64>,
    /// Messages accepted by the sink per second of that span.
    pub end_to_end_msgs_per_sec: Option<f64>,
    /// Distinct recipients accepted by the sink per second of that span.
    pub end_to_end_rcpts_per_sec: Option<f64>,
    /// Recipients/s of the domains `[steady]` covers over the middle of
    /// their mail (from the time series; absent without one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steady: Option<super::series::SteadyRate>,
    /// Injector transaction latency (MAIL → final reply of the SUT).
    pub latency_ms: LatencySummary,
    /// Recipients acknowledged by the SUT: what the sink should get.
    pub expected: u64,
    /// Distinct recipients accepted by the sink.
    pub delivered: u64,
    /// Recipient attempts the sink deferred (4xx).
    pub deferred: u64,
    /// Recipients the sink refused permanently (5xx).
    pub bounced: u64,
    /// Acknowledged recipients never seen (nor bounced) by the sink.
    pub missing: u64,
    /// Recipients the sink accepted more than once.
    pub duplicates: u64,
    /// Distinct recipients received whose message the SUT never
    /// acknowledged (possible around a crash); never counted as missing.
    pub unacknowledged_delivered: u64,
    /// True if every expected recipient was accounted for before the deadline.
    pub complete: bool,
    /// Seconds waited for the sink after injection ended.
    pub waited_secs: f64,
    /// Per recipient domain, from the sink's counters.
    pub domains: BTreeMap<String, DomainOutcome>,
    /// Kills and restarts, for crash scenarios.
    pub crash: Option<CrashReport>,
    /// Summary lines the SUT printed when stopped (one per process instance).
    pub sut_summary: Vec<String>,
    /// Queries the DNS stub answered.
    pub dns_queries: u64,
    /// Scratch directory, when kept with `--keep`.
    pub work_dir: Option<String>,
    /// The injector's full report.
    pub inject: InjectReport,
    /// The sink's final counters.
    pub sink: SinkReport,
    /// Per-domain counters (and the SUT's controller state), five times a second.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub series: Vec<super::series::Sample>,
}

impl RunReport {
    /// True when nothing was lost or duplicated and everything arrived in time.
    pub fn clean(&self) -> bool {
        self.complete && self.missing == 0 && self.duplicates == 0
    }

    /// The human-readable table.
    pub fn render_table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "sluice-bench run {}: {}", self.scenario, self.sut);
        let row = |out: &mut String, k: &str, v: String| {
            let _ = writeln!(out, "  {k:<26} {v}");
        };
        let i = &self.inject;
        row(
            &mut out,
            "injected",
            format!(
                "{} transactions, {} messages / {} recipients acknowledged ({} connections)",
                i.transactions + i.aborted_transactions,
                i.accepted_messages,
                i.accepted_recipients,
                i.connections
            ),
        );
        row(
            &mut out,
            "inject rate",
            format!(
                "{:.0} msgs/s over {:.2} s",
                self.inject_msgs_per_sec, i.elapsed_secs
            ),
        );
        row(
            &mut out,
            "end-to-end rate",
            match (self.end_to_end_msgs_per_sec, self.end_to_end_secs) {
                (Some(r), Some(s)) => {
                    format!("{r:.0} msgs/s (first injection -> last receipt: {s:.2} s)")
                }
                _ => "n/a (nothing reached the sink)".to_string(),
            },
        );
        if let Some(s) = &self.steady {
            row(
                &mut out,
                "steady rate",
                format!(
                    "{:.0} rcpts/s, {} domain(s){}: {:.0}%..{:.0}% of {} rcpts at {:.2}..{:.2} s (injector {:.0} msgs/s)",
                    s.rcpts_per_sec,
                    s.domains,
                    if s.excluded.is_empty() {
                        String::new()
                    } else {
                        format!(" (all but {})", s.excluded.join(", "))
                    },
                    100.0 * s.from_fraction,
                    100.0 * s.to_fraction,
                    s.recipients,
                    s.from_secs,
                    s.to_secs,
                    s.injected_per_sec
                ),
            );
        }
        let l = &self.latency_ms;
        row(
            &mut out,
            "latency ms",
            format!(
                "p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
                l.p50, l.p90, l.p99, l.p999, l.max
            ),
        );
        row(&mut out, "expected recipients", self.expected.to_string());
        row(&mut out, "delivered", self.delivered.to_string());
        row(
            &mut out,
            "deferred (4xx answers)",
            self.deferred.to_string(),
        );
        row(&mut out, "bounced", self.bounced.to_string());
        row(&mut out, "missing", self.missing.to_string());
        row(&mut out, "duplicates", self.duplicates.to_string());
        row(
            &mut out,
            "unacknowledged deliveries",
            self.unacknowledged_delivered.to_string(),
        );
        row(
            &mut out,
            "complete",
            format!(
                "{} (waited {:.2} s after injection)",
                if self.complete {
                    "yes"
                } else {
                    "NO, deadline passed"
                },
                self.waited_secs
            ),
        );
        row(
            &mut out,
            "inject errors",
            format!(
                "connect {}, connection {}, aborted transactions {}",
                i.connect_errors, i.connection_errors, i.aborted_transactions
            ),
        );
        if let Some(c) = &self.crash {
            self.render_crash(&mut out, c);
        }
        for line in &self.sut_summary {
            row(&mut out, "sut", line.clone());
        }
        self.render_domains(&mut out);
        if let Some(dir) = &self.work_dir {
            row(&mut out, "work dir (kept)", dir.clone());
        }
        out
    }

    fn render_crash(&self, out: &mut String, c: &CrashReport) {
        let _ = writeln!(
            out,
            "  {:<26} {} of {} kill(s), {} restart(s), {} transaction(s) failed at the kills",
            "crash", c.kills, c.planned, c.restarts, c.failed_transactions
        );
        for (n, e) in c.events.iter().enumerate() {
            let _ = writeln!(
                out,
                "    kill {} at {:.2} s: {} injected, {} acknowledged before; {} failed; back in {:.2} s",
                n + 1,
                e.at_secs,
                e.injected_before,
                e.acknowledged_before,
                e.failed_transactions,
                e.restart_secs
            );
        }
        if let Some(err) = &c.error {
            let _ = writeln!(out, "    crash loop stopped: {err}");
        }
    }

    fn render_domains(&self, out: &mut String) {
        if self.domains.is_empty() {
            return;
        }
        let _ = writeln!(
            out,
            "  {:<26} {:>10} {:>10} {:>10} {:>10}",
            "per domain", "delivered", "deferred", "bounced", "duplicates"
        );
        let mut rows: Vec<(&String, &DomainOutcome)> = self.domains.iter().collect();
        if rows.len() > TABLE_DOMAINS {
            rows.sort_by(|a, b| {
                let load = |d: &DomainOutcome| d.delivered + d.deferred + d.bounced;
                load(b.1).cmp(&load(a.1)).then(a.0.cmp(b.0))
            });
        }
        for (name, d) in rows.iter().take(TABLE_DOMAINS) {
            let _ = writeln!(
                out,
                "    {name:<24} {:>10} {:>10} {:>10} {:>10}",
                d.delivered, d.deferred, d.bounced, d.duplicates
            );
        }
        if rows.len() > TABLE_DOMAINS {
            let rest = rows.get(TABLE_DOMAINS..).unwrap_or_default();
            let sum = |f: fn(&DomainOutcome) -> u64| rest.iter().map(|(_, d)| f(d)).sum::<u64>();
            let _ = writeln!(
                out,
                "    {:<24} {:>10} {:>10} {:>10} {:>10}",
                format!("({} more)", rest.len()),
                sum(|d| d.delivered),
                sum(|d| d.deferred),
                sum(|d| d.bounced),
                sum(|d| d.duplicates)
            );
        }
    }
}
