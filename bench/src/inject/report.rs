//! The outcome of an injector run, as a serialisable value for `--json`
//! and in-process callers, and as the human table printed to stdout.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::stats::ConnStats;

/// Transaction latency summary (MAIL sent → final reply), in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    /// Transactions measured.
    pub count: u64,
    /// Arithmetic mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest observed.
    pub max: f64,
}

/// Result of an injector run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InjectReport {
    /// Identifier embedded in every Message-ID of the run.
    pub run_id: String,
    /// Target address.
    pub target: String,
    /// Connections requested.
    pub connections: usize,
    /// Sessions per transaction shape (`pipelined-bdat`, `pipelined-data`,
    /// `lockstep-bdat`, `lockstep-data`).
    pub modes: BTreeMap<String, u64>,
    /// Wall-clock duration of the run in seconds.
    pub elapsed_secs: f64,
    /// Transactions that got a final answer, positive or not.
    pub transactions: u64,
    /// Messages accepted for at least one recipient.
    pub accepted_messages: u64,
    /// Recipients of accepted messages.
    pub accepted_recipients: u64,
    /// Accepted messages per second.
    pub msgs_per_sec: f64,
    /// Latency percentiles.
    pub latency_ms: LatencySummary,
    /// Every unexpected reply (not 2xx, nor 354 to DATA) by `code x.y.z`.
    pub replies: BTreeMap<String, u64>,
    /// Sessions opened (TCP connects that succeeded).
    pub sessions: u64,
    /// TCP connects that failed.
    pub connect_errors: u64,
    /// Sessions that ended abnormally after connecting.
    pub connection_errors: u64,
    /// Transactions in flight when their session ended.
    pub aborted_transactions: u64,
    /// Session errors by kind.
    pub errors: BTreeMap<String, u64>,
    /// Accepted recipients per domain.
    pub domains: BTreeMap<String, u64>,
    /// `(sequence number, accepted recipients)` of every acknowledged
    /// message when [`InjectOptions::record_acks`](super::InjectOptions::record_acks)
    /// was set; [`message_id`](super::message_id) gives the Message-ID.
    /// Not serialised: it can hold millions of entries.
    #[serde(skip)]
    pub acknowledged: Vec<(u64, u32)>,
}

impl InjectReport {
    pub(crate) fn build(
        run_id: &str,
        target: String,
        connections: usize,
        domains: &[String],
        stats: &mut ConnStats,
        elapsed: Duration,
    ) -> Self {
        let h = &stats.latency;
        let ms = |us: u64| us as f64 / 1000.0;
        let latency_ms = if h.is_empty() {
            LatencySummary::default()
        } else {
            LatencySummary {
                count: h.len(),
                mean: h.mean() / 1000.0,
                p50: ms(h.value_at_quantile(0.5)),
                p90: ms(h.value_at_quantile(0.9)),
                p99: ms(h.value_at_quantile(0.99)),
                p999: ms(h.value_at_quantile(0.999)),
                max: ms(h.max()),
            }
        };
        let secs = elapsed.as_secs_f64();
        InjectReport {
            run_id: run_id.to_string(),
            target,
            connections,
            modes: stats
                .modes
                .iter()
                .map(|(m, n)| (m.to_string(), *n))
                .collect(),
            elapsed_secs: secs,
            transactions: stats.transactions,
            accepted_messages: stats.accepted_messages,
            accepted_recipients: stats.accepted_rcpts,
            msgs_per_sec: if secs > 0.0 {
                stats.accepted_messages as f64 / secs
            } else {
                0.0
            },
            latency_ms,
            replies: stats
                .codes
                .iter()
                .map(|(c, n)| (c.to_string(), *n))
                .collect(),
            sessions: stats.sessions,
            connect_errors: stats.connect_errors,
            connection_errors: stats.connection_errors,
            aborted_transactions: stats.aborted,
            errors: stats.errors.clone(),
            domains: domains
                .iter()
                .zip(&stats.per_domain)
                .filter(|(_, n)| **n > 0)
                .map(|(d, n)| (d.clone(), *n))
                .collect(),
            acknowledged: std::mem::take(&mut stats.acks),
        }
    }

    /// True when every connection could at least be established.
    pub fn all_connected(&self) -> bool {
        self.connect_errors == 0
    }

    /// Human-readable summary table.
    pub fn render_table(&self) -> String {
        let mut out = String::new();
        let modes: Vec<String> = self
            .modes
            .iter()
            .map(|(m, n)| format!("{m} x{n}"))
            .collect();
        let _ = writeln!(
            out,
            "sluice-bench inject -> {} (run {})",
            self.target, self.run_id
        );
        let row = |out: &mut String, k: &str, v: String| {
            let _ = writeln!(out, "  {k:<22} {v}");
        };
        row(
            &mut out,
            "connections",
            format!("{} ({} sessions)", self.connections, self.sessions),
        );
        row(&mut out, "transaction shape", modes.join(", "));
        row(&mut out, "elapsed", format!("{:.3} s", self.elapsed_secs));
        row(&mut out, "transactions", self.transactions.to_string());
        row(
            &mut out,
            "accepted messages",
            self.accepted_messages.to_string(),
        );
        row(
            &mut out,
            "accepted recipients",
            self.accepted_recipients.to_string(),
        );
        row(
            &mut out,
            "throughput",
            format!("{:.0} msgs/s", self.msgs_per_sec),
        );
        let l = &self.latency_ms;
        row(
            &mut out,
            "latency ms",
            format!(
                "p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
                l.p50, l.p90, l.p99, l.p999, l.max
            ),
        );
        row(&mut out, "connect errors", self.connect_errors.to_string());
        row(
            &mut out,
            "connection errors",
            self.connection_errors.to_string(),
        );
        row(
            &mut out,
            "aborted transactions",
            self.aborted_transactions.to_string(),
        );
        if !self.replies.is_empty() {
            let _ = writeln!(out, "  non-2xx replies:");
            for (code, n) in &self.replies {
                let _ = writeln!(out, "    {code:<20} {n}");
            }
        }
        if !self.errors.is_empty() {
            let _ = writeln!(out, "  session errors:");
            for (e, n) in &self.errors {
                let _ = writeln!(out, "    {e:<20} {n}");
            }
        }
        out
    }
}
