//! State that would otherwise grow with what the world sends: per-domain
//! delivery state is forgotten once a destination has been idle for
//! `delivery.destination_expiry`, and the shard's backlog bound counts
//! recipients as well as messages and bytes.

mod common;
use common::lab::{send, Lab};
use common::*;
use std::time::{Duration, Instant};

fn destinations(lab: &Lab) -> Vec<serde_json::Value> {
    let (ok, v) = lab.ctl(&["destinations"]);
    assert!(ok, "{v}");
    v.as_array().cloned().unwrap_or_default()
}

#[test]
fn idle_destinations_are_forgotten_and_come_back_when_mailed_again() {
    let lab = Lab::start_around_sink(
        "",
        "[default]\n",
        &|sink| {
            format!(
                "[delivery]\ntls = \"none\"\ndestination_expiry = \"1s\"\nidle_timeout = \"1s\"\n\
                 [[dns.routes]]\ndomains = [\"*.test\"]\nhosts = [\"{sink}\"]\n"
            )
        },
        None,
    );
    let domains: Vec<String> = (0..100).map(|i| format!("r@d{i}.many.test")).collect();
    let rcpts: Vec<&str> = domains.iter().map(String::as_str).collect();
    send(lab.sluice(), "s@sender.test", &rcpts, 1);
    lab.wait_sink("every domain's mail", |r| r.recipients_accepted == 100);
    assert!(
        destinations(&lab).len() >= 100,
        "one destination per domain"
    );

    // Idle (nothing queued, connections closed after idle_timeout) for the
    // expiry time: every one of them is forgotten.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = destinations(&lab);
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} destinations still kept: {:?}",
            left.len(),
            left.first()
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // A forgotten domain is an ordinary new one when mail comes again.
    send(lab.sluice(), "s@sender.test", &["again@d7.many.test"], 1);
    lab.wait_sink("mail to a forgotten domain", |r| {
        r.recipients_accepted == 101
    });
    let s = lab.stop();
    assert_eq!(s.delivered, 101, "{s:?}");
}

#[test]
fn the_backlog_bound_counts_recipients() {
    // Held mail stays in the shard: 2 messages of 60 recipients pass the
    // bound of 100 recipients (admission is at MAIL, before the RCPTs), and
    // the next MAIL is refused although messages and bytes are far below
    // their bounds.
    let d = Daemon::start(
        "route = \"hold\"\ncores = [0]\n[backpressure]\nmax_messages = 100000\nmax_recipients = 100\n",
    );
    let mut c = Client::connect(d.addr);
    expect(&c.reply(), "220");
    expect(&c.cmd("EHLO client.test"), "250");
    for m in 0..2 {
        expect(&c.cmd("MAIL FROM:<s@sender.test>"), "250");
        for i in 0..60 {
            expect(&c.cmd(&format!("RCPT TO:<r{m}-{i}@d{i}.test>")), "250");
        }
        expect(&c.cmd("DATA"), "354");
        expect(&c.cmd("Subject: x\r\n\r\nbody\r\n."), "250");
    }
    expect(&c.cmd("MAIL FROM:<s@sender.test>"), "452 4.3.1");
    expect(&c.cmd("QUIT"), "221");
    d.stop();
}
