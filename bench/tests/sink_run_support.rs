//! Sink features that `sluice-bench run` relies on: the time-windowed
//! suspension knob, the time of the last accepted message, and receipts
//! counted per Message-ID.

mod common;

use std::time::Duration;

use common::{message, Client, RunningSink};
use sluice_bench::sink::{Profile, SinkOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspension_window_receipts_and_last_accept() {
    let mut opts = SinkOptions::new("127.0.0.1:0".parse().unwrap());
    opts.profile = Profile::from_toml_str(
        "[domains.\"s.test\"]\nsuspend_after_secs = 0\nsuspend_for_secs = 1\n\
         [hosts.\"127.0.0.7\"]\nsuspend_after_secs = 0\nsuspend_for_secs = 1\n",
    )
    .unwrap();
    opts.track_receipts = true;
    let sink = RunningSink::start_with(opts).await;
    assert!(sink.handle.last_accepted_at().is_none());

    // A suspended host refuses at connect.
    let mut c = Client::connect(sink.addr_for("127.0.0.7")).await;
    let r = c.reply().await;
    assert!(
        r.starts("421 4.7.0") && r.text.contains("suspended"),
        "{r:?}"
    );
    assert!(c.closed().await);

    // A suspended domain refuses at RCPT and hangs up; others are served.
    let (mut c, _) = Client::ehlo(sink.addr).await;
    c.expect("MAIL FROM:<a@src.test>", "250").await;
    c.expect("RCPT TO:<u@s.test>", "421 4.7.0").await;
    assert!(c.closed().await);
    let (mut c, _) = Client::ehlo(sink.addr).await;
    let r = c
        .data_message("a@src.test", "u@n.test", &message("m1@t"))
        .await;
    assert!(r.starts("250"), "{r:?}");
    assert!(sink.handle.last_accepted_at().is_some());
    assert_eq!(sink.handle.received_recipients(b"<m1@t>"), 1);
    // The same message again is a duplicate, not a second receipt.
    c.data_message("a@src.test", "u@n.test", &message("m1@t"))
        .await;
    assert_eq!(sink.handle.received_recipients(b"<m1@t>"), 1);
    assert_eq!(sink.handle.received_recipients(b"<other@t>"), 0);

    // After the window both are served again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    c.data_message("a@src.test", "v@s.test", &message("m2@t"))
        .await;
    let (mut h, _) = Client::ehlo(sink.addr_for("127.0.0.7")).await;
    h.expect("QUIT", "221").await;
    c.expect("QUIT", "221").await;

    let totals = sink.handle.totals();
    let report = sink.stop().await;
    assert_eq!(report.suspended, 2);
    assert_eq!(report.domains["s.test"].suspended, 1);
    assert_eq!(report.domains["s.test"].tempfailed, 1);
    assert_eq!(report.domains["s.test"].accepted, 1);
    assert_eq!(report.duplicates, 1);
    assert_eq!(totals.recipients_accepted, 3);
    assert_eq!(totals.duplicates, 1);
    let last = report.last_accepted_secs.unwrap();
    assert!(last >= 1.0 && last <= report.uptime_secs, "{last}");
}
