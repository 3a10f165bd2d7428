//! Sink behaviour knobs, driven over real loopback sockets by a raw client;
//! each test checks the sink's counters against what the client saw.

mod common;

use std::time::{Duration, Instant};

use common::{message, Client, RunningSink};
use sluice_bench::sink::{serve, Sink, SinkOptions};
use sluice_bench::Error;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_and_bdat_are_both_accepted() {
    let sink = RunningSink::start("").await;
    let (mut c, ehlo) = Client::ehlo(sink.addr).await;
    for kw in [
        "PIPELINING",
        "SIZE",
        "8BITMIME",
        "SMTPUTF8",
        "ENHANCEDSTATUSCODES",
        "CHUNKING",
        "STARTTLS",
    ] {
        assert!(ehlo.text.contains(kw), "EHLO lacks {kw}: {}", ehlo.text);
    }
    // Dot-stuffed line inside the body must not end the message.
    let body = "Message-ID: <a@t>\r\n\r\n..not the end\r\n";
    let r = c.data_message("s@src.test", "r@d1.test", body).await;
    assert!(r.starts("250 2.0.0"), "{r:?}");
    // BDAT in two chunks.
    c.expect("MAIL FROM:<s@src.test>", "250").await;
    c.expect("RCPT TO:<r@d2.test>", "250").await;
    let part1 = "Message-ID: <b@t>\r\n";
    let part2 = "\r\nbody\r\n";
    c.send(format!("BDAT {}\r\n{part1}", part1.len()).as_bytes())
        .await;
    assert!(c.reply().await.starts("250 2.0.0"));
    c.send(format!("BDAT {} LAST\r\n{part2}", part2.len()).as_bytes())
        .await;
    assert!(c.reply().await.starts("250 2.0.0 Ok: queued"));
    c.expect("QUIT", "221").await;

    let report = sink.stop().await;
    assert_eq!(report.messages_accepted, 2);
    assert_eq!(report.recipients_accepted, 2);
    assert_eq!(report.data_transactions, 1);
    assert_eq!(report.bdat_transactions, 1);
    assert_eq!(report.domains["d1.test"].accepted, 1);
    assert_eq!(report.domains["d2.test"].accepted, 1);
    assert_eq!(report.domains["d2.test"].connections, 1);
    assert_eq!(report.duplicates, 0);
    assert_eq!(report.active_connections, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_transaction_is_answered_as_a_group() {
    let sink = RunningSink::start("").await;
    let (mut c, _) = Client::ehlo(sink.addr).await;
    let body = message("pipe@t");
    c.send(
        format!(
            "MAIL FROM:<s@src.test>\r\nRCPT TO:<a@d0.test>\r\nRCPT TO:<b@d0.test>\r\nBDAT {} LAST\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .await;
    for expect in ["250 2.1.0", "250 2.1.5", "250 2.1.5", "250 2.0.0"] {
        let r = c.reply().await;
        assert!(r.starts(expect), "expected {expect}, got {r:?}");
    }
    let report = sink.stop().await;
    assert_eq!(report.pipelined_commands, 3);
    assert_eq!(report.domains["d0.test"].accepted, 2);
    assert_eq!(report.domains["d0.test"].messages, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixed_latency_delays_every_reply_group() {
    let sink = RunningSink::start("[default]\nlatency = 150").await;
    let started = Instant::now();
    let mut c = Client::connect(sink.addr).await;
    assert_eq!(c.reply().await.code, 220);
    let greeting = started.elapsed();
    let t = Instant::now();
    c.expect("NOOP", "250").await;
    let noop = t.elapsed();
    assert!(
        greeting >= Duration::from_millis(150),
        "greeting after {greeting:?}"
    );
    assert!(noop >= Duration::from_millis(150), "NOOP after {noop:?}");
    sink.stop().await;

    // The same exchange without latency is much faster.
    let fast = RunningSink::start("").await;
    let t = Instant::now();
    let mut c = Client::connect(fast.addr).await;
    assert_eq!(c.reply().await.code, 220);
    c.expect("NOOP", "250").await;
    assert!(
        t.elapsed() < Duration::from_millis(150),
        "{:?}",
        t.elapsed()
    );
    fast.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn domain_latency_distribution_applies_to_its_recipients() {
    let sink = RunningSink::start(
        "[domains.\"slow.test\"]\nlatency = { dist = \"uniform\", min_ms = 100, max_ms = 120 }",
    )
    .await;
    let (mut c, _) = Client::ehlo(sink.addr).await;
    c.expect("MAIL FROM:<s@src.test>", "250").await;
    let t = Instant::now();
    c.expect("RCPT TO:<a@fast.test>", "250").await;
    assert!(t.elapsed() < Duration::from_millis(100));
    let t = Instant::now();
    c.expect("RCPT TO:<a@slow.test>", "250").await;
    let slow = t.elapsed();
    assert!(slow >= Duration::from_millis(100), "{slow:?}");
    sink.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_tempfail_and_permfail_percentages_are_counted() {
    let sink = RunningSink::start("[default]\ntempfail_pct = 30\npermfail_pct = 20").await;
    let (mut c, _) = Client::ehlo(sink.addr).await;
    let (mut ok, mut temp, mut perm) = (0u64, 0u64, 0u64);
    for txn in 0..4 {
        c.expect("MAIL FROM:<s@src.test>", "250").await;
        let mut batch = String::new();
        for i in 0..50 {
            batch.push_str(&format!("RCPT TO:<u{txn}x{i}@d{}.test>\r\n", i % 3));
        }
        c.send(batch.as_bytes()).await;
        for _ in 0..50 {
            let r = c.reply().await;
            if r.starts("250 2.1.5") {
                ok += 1;
            } else if r.starts("451 4.3.0 Temporary server error") {
                temp += 1;
            } else if r.starts("550 5.1.1 The email account that you tried to reach does not exist")
            {
                perm += 1;
            } else {
                panic!("unexpected {r:?}");
            }
        }
        let body = message(&format!("pct{txn}@t"));
        c.send(format!("BDAT {} LAST\r\n{body}", body.len()).as_bytes())
            .await;
        assert!(c.reply().await.starts("250 2.0.0"));
    }
    assert_eq!(ok + temp + perm, 200);
    assert!((30..=90).contains(&temp), "tempfail {temp}/200 for 30%");
    assert!((15..=65).contains(&perm), "permfail {perm}/200 for 20%");
    let report = sink.stop().await;
    assert_eq!(report.tempfailed, temp);
    assert_eq!(report.permfailed, perm);
    assert_eq!(report.recipients_accepted, ok);
    let per_domain: (u64, u64, u64) = report.domains.values().fold((0, 0, 0), |acc, d| {
        (
            acc.0 + d.accepted,
            acc.1 + d.tempfailed,
            acc.2 + d.permfailed,
        )
    });
    assert_eq!(per_domain, (ok, temp, perm));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tempfail_and_permfail_local_parts_always_fail() {
    let sink = RunningSink::start("").await;
    let (mut c, _) = Client::ehlo(sink.addr).await;
    c.expect("MAIL FROM:<s@src.test>", "250").await;
    c.expect("RCPT TO:<tempfail@d0.test>", "451 4.3.0").await;
    c.expect("RCPT TO:<TempFail+2@d0.test>", "451 4.3.0").await;
    c.expect("RCPT TO:<permfail@d1.test>", "550 5.1.1").await;
    c.expect("RCPT TO:<ok@d1.test>", "250").await;
    let body = message("lp@t");
    c.send(format!("BDAT {} LAST\r\n{body}", body.len()).as_bytes())
        .await;
    assert!(c.reply().await.starts("250"));
    let report = sink.stop().await;
    assert_eq!(report.tempfailed, 2);
    assert_eq!(report.permfailed, 1);
    assert_eq!(report.domains["d0.test"].tempfailed, 2);
    assert_eq!(report.domains["d1.test"].permfailed, 1);
    assert_eq!(report.domains["d1.test"].accepted, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_ip_connection_limit_answers_421() {
    let sink = RunningSink::start("[default]\nmax_connections_per_ip = 2").await;
    let (_a, _) = Client::ehlo(sink.addr).await;
    let (_b, _) = Client::ehlo(sink.addr).await;
    let mut c = Client::connect(sink.addr).await;
    let r = c.reply().await;
    assert_eq!(
        r.text,
        "421 4.7.0 Too many concurrent SMTP connections from this IP"
    );
    assert!(c.closed().await);
    let report = sink.stop().await;
    assert_eq!(report.rejected_concurrency, 1);
    assert_eq!(report.connections, 3);
    assert_eq!(report.peak_connections_per_ip["127.0.0.1"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_domain_connection_limit_applies_from_first_rcpt() {
    let sink = RunningSink::start("[domains.\"gmail.test\"]\nmax_connections_per_ip = 1").await;
    let (mut a, _) = Client::ehlo(sink.addr).await;
    a.expect("MAIL FROM:<s@src.test>", "250").await;
    a.expect("RCPT TO:<x@gmail.test>", "250").await;
    let (mut b, _) = Client::ehlo(sink.addr).await;
    b.expect("MAIL FROM:<s@src.test>", "250").await;
    b.expect("RCPT TO:<y@other.test>", "250").await;
    b.expect(
        "RCPT TO:<y@gmail.test>",
        "421 4.7.0 Too many concurrent SMTP connections from this IP",
    )
    .await;
    assert!(b.closed().await);
    let report = sink.stop().await;
    assert_eq!(report.rejected_concurrency, 1);
    assert_eq!(report.domains["gmail.test"].connections, 1);
    assert_eq!(
        report.domains["gmail.test"].peak_connections_per_ip["127.0.0.1"],
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_tempfails_recipients_over_the_rate() {
    let sink = RunningSink::start("[domains.\"limited.test\"]\nrate_limit = 3").await;
    let (mut c, _) = Client::ehlo(sink.addr).await;
    let (mut accepted, mut limited) = (0u64, 0u64);
    for i in 0..10 {
        c.expect("MAIL FROM:<s@src.test>", "250").await;
        let r = c.cmd(&format!("RCPT TO:<u{i}@limited.test>")).await;
        if r.code == 250 {
            let body = message(&format!("rl{i}@t"));
            c.send(format!("BDAT {} LAST\r\n{body}", body.len()).as_bytes())
                .await;
            assert!(c.reply().await.starts("250"));
            accepted += 1;
        } else {
            assert!(
                r.starts("450 4.7.1") && r.text.contains("rate limited"),
                "{r:?}"
            );
            c.expect("RSET", "250").await;
            limited += 1;
        }
    }
    // One second of burst; the loop takes far less than the refill of a token.
    assert!((3..=4).contains(&accepted), "accepted {accepted}");
    // Other domains are not limited.
    c.expect("MAIL FROM:<s@src.test>", "250").await;
    c.expect("RCPT TO:<u@free.test>", "250").await;
    let report = sink.stop().await;
    assert_eq!(report.rate_limited, limited);
    assert_eq!(report.domains["limited.test"].rate_limited, limited);
    assert_eq!(report.domains["limited.test"].accepted, accepted);
    assert_eq!(report.tempfailed, limited);
    assert!(report.domains["limited.test"].peak_rate >= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_disconnect_style_closes_with_421() {
    let sink =
        RunningSink::start("[default]\nrate_limit = 2\nrate_limit_style = \"disconnect\"").await;
    let (mut c, _) = Client::ehlo(sink.addr).await;
    for i in 0..2 {
        let r = c
            .bdat_message(
                "s@src.test",
                &format!("u{i}@d0.test"),
                &message(&format!("d{i}@t")),
            )
            .await;
        assert!(r.starts("250"));
    }
    c.expect("MAIL FROM:<s@src.test>", "250").await;
    c.expect(
        "RCPT TO:<u9@d0.test>",
        "421 4.7.0 Try again later, closing connection",
    )
    .await;
    assert!(c.closed().await);
    let report = sink.stop().await;
    assert_eq!(report.messages_accepted, 2);
    assert_eq!(report.rate_limited, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_messages_per_connection_then_421() {
    let sink = RunningSink::start("[default]\nmax_messages_per_connection = 2").await;
    let (mut c, _) = Client::ehlo(sink.addr).await;
    for i in 0..2 {
        let r = c
            .data_message("s@src.test", "r@d0.test", &message(&format!("m{i}@t")))
            .await;
        assert!(r.starts("250"));
    }
    c.expect("MAIL FROM:<s@src.test>", "421 4.7.0").await;
    assert!(c.closed().await);
    // A new connection gets a fresh allowance.
    let (mut c2, _) = Client::ehlo(sink.addr).await;
    let r = c2
        .data_message("s@src.test", "r@d0.test", &message("m9@t"))
        .await;
    assert!(r.starts("250"));
    let report = sink.stop().await;
    assert_eq!(report.messages_accepted, 3);
    assert_eq!(report.rejected_max_messages, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greylisting_rejects_first_attempt_then_accepts() {
    let sink = RunningSink::start("[default]\ngreylist = true").await;
    let (mut c, _) = Client::ehlo(sink.addr).await;
    c.expect("MAIL FROM:<s@src.test>", "250").await;
    c.expect(
        "RCPT TO:<r@d0.test>",
        "451 4.7.1 Greylisted, please try again later",
    )
    .await;
    c.expect("RCPT TO:<r@d0.test>", "250").await;
    // A different sender for the same recipient is a new triplet.
    c.expect("RSET", "250").await;
    c.expect("MAIL FROM:<other@src.test>", "250").await;
    c.expect("RCPT TO:<r@d0.test>", "451 4.7.1").await;
    // Case differences do not make a new pair.
    c.expect("RCPT TO:<R@D0.TEST>", "250").await;
    let report = sink.stop().await;
    assert_eq!(report.greylisted, 2);
    assert_eq!(report.tempfailed, 2);
    assert_eq!(report.domains["d0.test"].greylisted, 2);
}

const DEAD_HOSTS: &str = r#"
[hosts."127.0.0.2"]
mode = "refuse"
[hosts."127.0.0.3"]
mode = "hang"
[hosts."127.0.0.4"]
mode = "drop_mid_data"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuse_mode_closes_on_connect() {
    let sink = RunningSink::start(DEAD_HOSTS).await;
    let mut c = Client::connect(sink.addr_for("127.0.0.2")).await;
    assert!(c.closed().await);
    // The normal listener is unaffected.
    let (_ok, _) = Client::ehlo(sink.addr).await;
    let report = sink.stop().await;
    assert_eq!(report.refused, 1);
    assert_eq!(report.connections, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hang_mode_accepts_and_never_answers() {
    let sink = RunningSink::start(DEAD_HOSTS).await;
    let mut c = Client::connect(sink.addr_for("127.0.0.3")).await;
    c.send(b"EHLO client.test\r\n").await;
    assert!(
        c.silent_for(Duration::from_millis(300)).await,
        "hung host answered"
    );
    let report = sink.stop().await;
    assert_eq!(report.hung, 1);
    assert_eq!(report.messages_accepted, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_mid_data_closes_during_data_and_bdat() {
    let sink = RunningSink::start(DEAD_HOSTS).await;
    let addr = sink.addr_for("127.0.0.4");
    let (mut c, _) = Client::ehlo(addr).await;
    c.expect("MAIL FROM:<s@src.test>", "250").await;
    c.expect("RCPT TO:<r@d0.test>", "250").await;
    c.expect("DATA", "354").await;
    c.send(b"Subject: partial\r\n").await;
    assert!(c.closed().await);

    let (mut c, _) = Client::ehlo(addr).await;
    c.expect("MAIL FROM:<s@src.test>", "250").await;
    c.expect("RCPT TO:<r@d0.test>", "250").await;
    c.send(b"BDAT 1000 LAST\r\nSubject: partial\r\n").await;
    assert!(c.closed().await);
    let report = sink.stop().await;
    assert_eq!(report.dropped_mid_data, 2);
    assert_eq!(report.messages_accepted, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_are_detected_by_message_id_and_recipient() {
    let sink = RunningSink::start("").await;
    let (mut c, _) = Client::ehlo(sink.addr).await;
    let body = message("same@t");
    assert!(c
        .bdat_message("s@src.test", "r@d0.test", &body)
        .await
        .starts("250"));
    assert!(c
        .data_message("s@src.test", "r@d0.test", &body)
        .await
        .starts("250"));
    assert!(c
        .bdat_message("s@src.test", "other@d0.test", &body)
        .await
        .starts("250"));
    assert!(c
        .bdat_message("s@src.test", "r@d0.test", &message("new@t"))
        .await
        .starts("250"));
    let report = sink.stop().await;
    assert_eq!(report.messages_accepted, 4);
    assert_eq!(report.duplicates, 1);
    assert_eq!(report.domains["d0.test"].duplicates, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_upgrades_and_mail_flows_over_tls() {
    let sink = RunningSink::start("").await;
    let (mut c, _) = Client::ehlo(sink.addr).await;
    c.starttls().await;
    let ehlo = c.expect("EHLO client.test", "250").await;
    assert!(
        !ehlo.text.contains("STARTTLS"),
        "STARTTLS offered twice: {}",
        ehlo.text
    );
    let r = c
        .bdat_message("s@src.test", "r@d0.test", &message("tls@t"))
        .await;
    assert!(r.starts("250 2.0.0"));
    c.expect("STARTTLS", "503").await;
    let report = sink.stop().await;
    assert_eq!(report.tls_sessions, 1);
    assert_eq!(report.messages_accepted, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunking_can_be_disabled() {
    let sink = RunningSink::start("[default]\nchunking = false\npipelining = false").await;
    let (mut c, ehlo) = Client::ehlo(sink.addr).await;
    assert!(!ehlo.text.contains("CHUNKING"));
    assert!(!ehlo.text.contains("PIPELINING"));
    c.expect("MAIL FROM:<s@src.test>", "250").await;
    c.expect("RCPT TO:<r@d0.test>", "250").await;
    // The refused chunk is still consumed, so the dialogue stays in sync.
    c.send(b"BDAT 5 LAST\r\nhello").await;
    assert!(c.reply().await.starts("502 5.5.1"));
    c.expect("NOOP", "250").await;
    let report = sink.stop().await;
    assert_eq!(report.messages_accepted, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_endpoint_serves_live_counters_as_json() {
    let mut opts = SinkOptions::new("127.0.0.1:0".parse().unwrap());
    opts.status = Some("127.0.0.1:0".parse().unwrap());
    let sink = RunningSink::start_with(opts).await;
    let (mut c, _) = Client::ehlo(sink.addr).await;
    assert!(c
        .bdat_message("s@src.test", "r@d3.test", &message("st@t"))
        .await
        .starts("250"));

    let status = sink.status.unwrap();
    let get = |path: &'static str| async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tcp = tokio::net::TcpStream::connect(status).await.unwrap();
        tcp.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut raw = Vec::new();
        tokio::time::timeout(common::WAIT, tcp.read_to_end(&mut raw))
            .await
            .unwrap()
            .unwrap();
        String::from_utf8(raw).unwrap()
    };
    let resp = get("/").await;
    assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"), "{resp}");
    assert!(resp.contains("Content-Type: application/json"));
    let body = &resp[resp.find("\r\n\r\n").unwrap() + 4..];
    let json: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(json["messages_accepted"], 1);
    assert_eq!(json["domains"]["d3.test"]["accepted"], 1);
    assert_eq!(json["active_connections"], 1);
    assert!(get("/nope").await.starts_with("HTTP/1.1 404"));
    assert_eq!(sink.handle.snapshot().messages_accepted, 1);
    sink.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_to_bind_non_loopback_addresses() {
    let opts = SinkOptions::new("0.0.0.0:0".parse().unwrap());
    assert!(matches!(Sink::bind(opts).await, Err(Error::NonLoopback(_))));
    let mut opts = SinkOptions::new("127.0.0.1:0".parse().unwrap());
    opts.status = Some("192.0.2.1:80".parse().unwrap());
    assert!(matches!(
        serve(opts, async {}).await,
        Err(Error::NonLoopback(_))
    ));
}
