//! `/metrics` in the Prometheus text format (version 0.0.4), written by
//! hand from the shards' snapshots.
//!
//! The values live in shard-local `Cell`s and are copied out on request
//! (see `runtime::control`), so there is no registry of live metric
//! objects to keep: rendering a snapshot is a loop over plain structs.
//! Destinations are limited to the node-wide top [`TOP_DESTINATIONS`] by
//! volume so a long tail of domains cannot blow up the series count.

use crate::runtime::control::{ShardMetrics, TOP_DESTINATIONS};
use std::collections::HashMap;
use std::fmt::Write;

/// The content type Prometheus expects for this format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", escape(v));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }

    /// The samples of one shard's Prometheus summary: quantiles, sum, count.
    fn summary(&mut self, name: &str, shard: &str, l: &crate::delivery::control::LatencySummary) {
        for (q, v) in &l.quantiles {
            let q = q.to_string();
            self.sample(name, &[("shard", shard), ("quantile", &q)], *v);
        }
        self.sample(&format!("{name}_sum"), &[("shard", shard)], l.sum);
        self.sample(
            &format!("{name}_count"),
            &[("shard", shard)],
            l.count as f64,
        );
    }

    /// One family with a sample per shard.
    fn per_shard(
        &mut self,
        name: &str,
        kind: &str,
        help: &str,
        shards: &[ShardMetrics],
        value: impl Fn(&ShardMetrics) -> f64,
    ) {
        self.family(name, kind, help);
        for m in shards {
            let shard = m.status.shard.to_string();
            self.sample(name, &[("shard", &shard)], value(m));
        }
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Renders every shard's snapshot.
pub fn render(uptime_secs: f64, shards: &[ShardMetrics]) -> String {
    let mut o = Out(String::with_capacity(16 * 1024));
    o.family("sluice_uptime_seconds", "gauge", "Seconds since start.");
    o.sample("sluice_uptime_seconds", &[], uptime_secs);

    type F = fn(&ShardMetrics) -> f64;
    let counters: [(&str, &str, F); 10] = [
        (
            "sluice_accepted_messages_total",
            "Envelopes taken in by the shard (a message split over shards counts on each).",
            |m| m.status.accepted_messages as f64,
        ),
        (
            "sluice_accepted_recipients_total",
            "Recipients taken in.",
            |m| m.status.accepted_recipients as f64,
        ),
        ("sluice_delivered_total", "Recipients delivered.", |m| {
            m.status.delivered as f64
        }),
        (
            "sluice_deferred_total",
            "Deferral events (a recipient may defer many times).",
            |m| m.status.deferred as f64,
        ),
        (
            "sluice_bounced_total",
            "Recipients bounced (operator bounces included).",
            |m| m.status.bounced as f64,
        ),
        (
            "sluice_expired_total",
            "Recipients expired after message_expiry.",
            |m| m.status.expired as f64,
        ),
        (
            "sluice_deleted_total",
            "Recipients deleted by the operator.",
            |m| m.status.deleted as f64,
        ),
        (
            "sluice_dsns_total",
            "Delivery status notifications generated.",
            |m| m.status.dsns as f64,
        ),
        (
            "sluice_outbound_connections_opened_total",
            "Outbound SMTP connections opened.",
            |m| m.status.connections_opened as f64,
        ),
        (
            "sluice_executor_tasks_total",
            "Tasks the core's executor ran.",
            |m| m.tasks_executed as f64,
        ),
    ];
    for (name, help, f) in counters {
        o.per_shard(name, "counter", help, shards, f);
    }
    o.per_shard(
        "sluice_executor_busy_seconds_total",
        "counter",
        "Time the core's executor spent running tasks (not sleeping or polling for I/O).",
        shards,
        |m| m.busy_seconds,
    );
    let gauges: [(&str, &str, F); 6] = [
        (
            "sluice_inbound_sessions",
            "Inbound SMTP sessions open.",
            |m| m.status.sessions_open as f64,
        ),
        (
            "sluice_outbound_connections",
            "Outbound SMTP connections open.",
            |m| m.status.connections_open as f64,
        ),
        (
            "sluice_queued_messages",
            "Messages not yet final on the shard.",
            |m| m.status.queued_messages as f64,
        ),
        (
            "sluice_queued_bytes",
            "Body bytes queued on the shard.",
            |m| m.status.queued_bytes as f64,
        ),
        (
            "sluice_queued_recipients",
            "Recipients waiting or deferred.",
            |m| m.status.queued_recipients as f64,
        ),
        (
            "sluice_retry_heap_recipients",
            "Recipients waiting for a retry.",
            |m| m.status.retry_heap as f64,
        ),
    ];
    for (name, help, f) in gauges {
        o.per_shard(name, "gauge", help, shards, f);
    }

    render_queues(&mut o, shards);
    render_destinations(&mut o, shards);
    render_dns(&mut o, shards);

    let name = "sluice_delivery_latency_seconds";
    o.family(
        name,
        "summary",
        "Time from acceptance to delivery, per recipient (HdrHistogram, 2 significant digits).",
    );
    for m in shards {
        o.summary(name, &m.status.shard.to_string(), &m.latency);
    }
    // Journal bytes and fsync latency: only once the journal fills
    // `ShardMetrics::journal` in.
    if shards.iter().any(|m| m.journal.is_some()) {
        o.family(
            "sluice_journal_bytes_written_total",
            "counter",
            "Bytes appended to the journal.",
        );
        for m in shards {
            if let Some(j) = &m.journal {
                let shard = m.status.shard.to_string();
                o.sample(
                    "sluice_journal_bytes_written_total",
                    &[("shard", &shard)],
                    j.bytes_written as f64,
                );
            }
        }
        let name = "sluice_journal_fsync_seconds";
        o.family(name, "summary", "Journal fsync latency.");
        for m in shards {
            if let Some(j) = &m.journal {
                o.summary(name, &m.status.shard.to_string(), &j.fsync);
            }
        }
    }
    o.0
}

fn render_queues(o: &mut Out, shards: &[ShardMetrics]) {
    let name = "sluice_queue_recipients_total";
    o.family(
        name,
        "counter",
        "Recipient outcomes by queue (deferred counts deferral events).",
    );
    for m in shards {
        let shard = m.status.shard.to_string();
        for q in &m.queues {
            for (outcome, v) in [
                ("delivered", q.delivered),
                ("deferred", q.deferred_total),
                ("bounced", q.bounced),
                ("expired", q.expired),
            ] {
                o.sample(
                    name,
                    &[("shard", &shard), ("queue", &q.queue), ("outcome", outcome)],
                    v as f64,
                );
            }
        }
    }
    let name = "sluice_queue_queued_recipients";
    o.family(
        name,
        "gauge",
        "Recipients queued by queue: waiting for a connection or deferred.",
    );
    for m in shards {
        let shard = m.status.shard.to_string();
        for q in &m.queues {
            for (state, v) in [("waiting", q.waiting), ("deferred", q.deferred)] {
                o.sample(
                    name,
                    &[("shard", &shard), ("queue", &q.queue), ("state", state)],
                    v as f64,
                );
            }
        }
    }
    let name = "sluice_queue_connections";
    o.family(name, "gauge", "Outbound connections open by queue.");
    for m in shards {
        let shard = m.status.shard.to_string();
        for q in &m.queues {
            o.sample(
                name,
                &[("shard", &shard), ("queue", &q.queue)],
                q.active_connections as f64,
            );
        }
    }
}

fn render_destinations(o: &mut Out, shards: &[ShardMetrics]) {
    // A domain lives on one shard; `fallback:<queue>` exists on each and
    // is summed.
    let mut by: HashMap<&str, [u64; 4]> = HashMap::new();
    for d in shards.iter().flat_map(|m| &m.top_destinations) {
        let e = by.entry(d.destination.as_str()).or_default();
        for (slot, v) in e
            .iter_mut()
            .zip([d.delivered, d.deferred_total, d.bounced, d.expired])
        {
            *slot += v;
        }
    }
    let mut top: Vec<(&str, [u64; 4])> = by.into_iter().collect();
    top.sort_by(|a, b| {
        let va: u64 = a.1.iter().sum();
        let vb: u64 = b.1.iter().sum();
        vb.cmp(&va).then(a.0.cmp(b.0))
    });
    top.truncate(TOP_DESTINATIONS);
    let name = "sluice_destination_recipients_total";
    o.family(
        name,
        "counter",
        "Recipient outcomes for the busiest destinations (top 100 by volume).",
    );
    for (dest, v) in &top {
        for (outcome, n) in ["delivered", "deferred", "bounced", "expired"]
            .iter()
            .zip(v)
        {
            o.sample(
                name,
                &[("destination", dest), ("outcome", outcome)],
                *n as f64,
            );
        }
    }
}

fn render_dns(o: &mut Out, shards: &[ShardMetrics]) {
    type F = fn(&crate::dns::ResolverStats) -> u64;
    let fields: [(&str, &str, F); 15] = [
        ("udp_queries", "Queries sent over UDP.", |s| s.udp_queries),
        ("tcp_queries", "Queries sent over TCP.", |s| s.tcp_queries),
        ("answers", "Replies accepted.", |s| s.answers),
        ("truncated", "Replies with TC=1.", |s| s.truncated),
        ("timeouts", "Transmissions without a reply in time.", |s| {
            s.timeouts
        }),
        ("servfails", "SERVFAIL replies.", |s| s.servfails),
        ("other_rcodes", "Other error replies.", |s| s.other_rcodes),
        ("nxdomains", "NXDOMAIN replies.", |s| s.nxdomains),
        ("network_errors", "Socket errors.", |s| s.network_errors),
        ("mismatched", "Datagrams dropped as not our reply.", |s| {
            s.spoofed_or_mismatched
        }),
        ("cache_hits", "Lookups answered from the cache.", |s| {
            s.cache_hits
        }),
        ("cache_misses", "Lookups that needed a query.", |s| {
            s.cache_misses
        }),
        (
            "stale_served",
            "Lookups answered stale after a failure.",
            |s| s.stale_served,
        ),
        ("refreshes", "Refresh-ahead queries.", |s| s.refreshes),
        (
            "in_flight_joins",
            "Lookups that joined a query in flight.",
            |s| s.in_flight_joins,
        ),
    ];
    for (field, help, f) in fields {
        let name = format!("sluice_dns_{field}_total");
        o.per_shard(&name, "counter", help, shards, |m| f(&m.resolver) as f64);
    }
}
