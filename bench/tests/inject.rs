//! The injector against the in-process sink: what the injector reports
//! must match what the sink counted, exactly.

mod common;

use std::time::Duration;

use common::RunningSink;
use sluice_bench::inject::{run, InjectOptions, InjectReport, SizeSpec, Stop};
use sluice_bench::sink::{SinkOptions, SinkReport};
use sluice_bench::Error;

fn options(sink: &RunningSink, messages: u64) -> InjectOptions {
    let mut o = InjectOptions::new(sink.addr);
    o.connections = 4;
    o.stop = Stop::Messages(messages);
    o.timeout = Duration::from_secs(10);
    o
}

/// Per-domain accepted recipients must agree between both sides.
fn assert_domains_match(report: &InjectReport, sink: &SinkReport) {
    for (domain, n) in &report.domains {
        assert_eq!(sink.domains[domain].accepted, *n, "domain {domain}");
    }
    let sink_total: u64 = sink.domains.values().map(|d| d.accepted).sum();
    assert_eq!(sink_total, report.accepted_recipients);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_bdat_counts_match_the_sink_exactly() {
    let sink = RunningSink::start("").await;
    let mut o = options(&sink, 2000);
    o.rcpts = 2;
    o.domains = 5;
    o.zipf = Some(1.2);
    o.providers = vec!["gmail.test:0.3".parse().unwrap()];
    o.size = "512:50,4096:40,20000:10".parse().unwrap();
    let report = run(o).await.unwrap();
    let s = sink.stop().await;

    assert_eq!(
        report.modes.get("pipelined-bdat"),
        Some(&4),
        "{:?}",
        report.modes
    );
    assert_eq!(report.transactions, 2000);
    assert_eq!(report.accepted_messages, 2000);
    assert_eq!(report.accepted_recipients, 4000);
    assert_eq!(s.messages_accepted, report.accepted_messages);
    assert_eq!(s.recipients_accepted, report.accepted_recipients);
    assert_eq!(s.bdat_transactions, 2000);
    assert_eq!(s.data_transactions, 0);
    assert_eq!(s.duplicates, 0, "Message-IDs must be unique");
    assert!(report.replies.is_empty(), "{:?}", report.replies);
    assert_domains_match(&report, &s);
    let gmail = report.domains["gmail.test"] as f64 / 4000.0;
    assert!((0.25..0.35).contains(&gmail), "gmail share {gmail}");
    assert!(
        report.domains["d0.test"] > report.domains["d4.test"],
        "zipf skew missing"
    );
    assert!(report.msgs_per_sec > 0.0);
    assert_eq!(report.latency_ms.count, 2000);
    assert!(report.latency_ms.p50 > 0.0 && report.latency_ms.p50 <= report.latency_ms.max);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_pipelining_runs_in_lockstep() {
    let sink = RunningSink::start("").await;
    let mut o = options(&sink, 300);
    o.pipelining = false;
    o.rcpts = 3;
    let report = run(o).await.unwrap();
    let s = sink.stop().await;
    assert_eq!(
        report.modes.get("lockstep-bdat"),
        Some(&4),
        "{:?}",
        report.modes
    );
    assert_eq!(report.accepted_messages, 300);
    assert_eq!(s.messages_accepted, 300);
    assert_eq!(s.recipients_accepted, 900);
    assert_eq!(
        s.pipelined_commands, 0,
        "client pipelined although told not to"
    );
    assert_domains_match(&report, &s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_only_when_the_sink_disables_chunking() {
    let sink = RunningSink::start("[default]\nchunking = false").await;
    let report = run(options(&sink, 400)).await.unwrap();
    let s = sink.stop().await;
    assert_eq!(
        report.modes.get("pipelined-data"),
        Some(&4),
        "{:?}",
        report.modes
    );
    assert_eq!(report.accepted_messages, 400);
    assert_eq!(s.data_transactions, 400);
    assert_eq!(s.bdat_transactions, 0);
    assert_eq!(s.protocol_errors, 0);
    assert_domains_match(&report, &s);

    // --no-bdat against a CHUNKING sink, without pipelining: lock-step DATA.
    let sink = RunningSink::start("").await;
    let mut o = options(&sink, 100);
    o.chunking = false;
    o.pipelining = false;
    let report = run(o).await.unwrap();
    let s = sink.stop().await;
    assert_eq!(report.modes.get("lockstep-data"), Some(&4));
    assert_eq!(s.data_transactions, 100);
    assert_eq!(s.pipelined_commands, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_counted_by_code_exactly() {
    let sink = RunningSink::start("[default]\ntempfail_pct = 10\npermfail_pct = 5").await;
    let report = run(options(&sink, 1000)).await.unwrap();
    let s = sink.stop().await;
    let temp = report.replies.get("451 4.3.0").copied().unwrap_or(0);
    let perm = report.replies.get("550 5.1.1").copied().unwrap_or(0);
    assert!(temp > 0 && perm > 0, "{:?}", report.replies);
    assert_eq!(temp, s.tempfailed);
    assert_eq!(perm, s.permfailed);
    // With one recipient, a refused RCPT leaves BDAT without recipients.
    assert_eq!(
        report.replies.get("554 5.5.1").copied().unwrap_or(0),
        temp + perm
    );
    assert_eq!(report.transactions, 1000);
    assert_eq!(report.accepted_messages, 1000 - temp - perm);
    assert_eq!(s.messages_accepted, report.accepted_messages);
    assert_domains_match(&report, &s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_after_421_and_accounts_for_lost_transactions() {
    let sink = RunningSink::start("[default]\nmax_messages_per_connection = 10").await;
    let mut o = options(&sink, 200);
    o.connections = 2;
    let report = run(o).await.unwrap();
    let s = sink.stop().await;
    assert!(report.sessions > 2, "no reconnects: {}", report.sessions);
    assert_eq!(
        report.replies.get("421 4.7.0").copied(),
        Some(s.rejected_max_messages)
    );
    assert_eq!(report.accepted_messages, s.messages_accepted);
    assert_eq!(report.accepted_messages + report.aborted_transactions, 200);
    assert!(report.aborted_transactions > 0);
    assert_eq!(report.connect_errors, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_and_auth_plain() {
    let sink = RunningSink::start("[default]\nauth = true").await;
    let mut o = options(&sink, 200);
    o.starttls = true;
    o.auth = Some("user:secret".parse().unwrap());
    let report = run(o).await.unwrap();
    let s = sink.stop().await;
    assert_eq!(report.accepted_messages, 200, "{report:?}");
    assert_eq!(s.tls_sessions, report.sessions);
    assert_eq!(s.auth_sessions, report.sessions);
    assert_eq!(s.messages_accepted, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duration_mode_stops_on_time() {
    let sink = RunningSink::start("").await;
    let mut o = options(&sink, 0);
    o.stop = Stop::Duration(Duration::from_millis(400));
    o.size = SizeSpec::Fixed(300);
    let report = run(o).await.unwrap();
    let s = sink.stop().await;
    assert!(report.accepted_messages > 0);
    assert!(
        report.elapsed_secs >= 0.4 && report.elapsed_secs < 5.0,
        "{}",
        report.elapsed_secs
    );
    assert_eq!(s.messages_accepted, report.accepted_messages);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failures_and_dead_hosts_are_reported() {
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut o = InjectOptions::new(free);
    o.connections = 3;
    let report = run(o).await.unwrap();
    assert_eq!(report.connect_errors, 3);
    assert!(!report.all_connected());
    assert_eq!(report.accepted_messages, 0);

    let mut opts = SinkOptions::new("127.0.0.1:0".parse().unwrap());
    opts.profile = sluice_bench::sink::Profile::from_toml_str(
        "[hosts.\"127.0.0.5\"]\nmode = \"drop_mid_data\"",
    )
    .unwrap();
    let sink = RunningSink::start_with(opts).await;
    let mut o = InjectOptions::new(sink.addr_for("127.0.0.5"));
    o.connections = 2;
    o.stop = Stop::Messages(100);
    o.timeout = Duration::from_secs(5);
    let report = run(o).await.unwrap();
    let s = sink.stop().await;
    assert!(report.all_connected());
    assert_eq!(report.accepted_messages, 0);
    assert!(report.connection_errors >= 2, "{report:?}");
    assert_eq!(s.dropped_mid_data, report.sessions);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_non_loopback_targets() {
    let o = InjectOptions::new("198.51.100.7:25".parse().unwrap());
    assert!(matches!(run(o).await, Err(Error::NonLoopback(_))));
}
