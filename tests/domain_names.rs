//! One name per domain: an internationalised domain written as U-labels
//! (`bücher.test`, in any case) or as its A-label (`xn--bcher-kva.test`) is
//! the same destination for pauses, routes and queues, as it already was
//! for the shard hash.

mod common;
use common::lab::{send, Lab};
use common::{expect, Client};

const ZONE: &str = r#"
[[record]]
name = "xn--bcher-kva.test"
type = "MX"
data = "10 mx.lab.test"
"#;

/// Sends one SMTPUTF8 message from `s@sender.test` to `rcpts`.
fn send_utf8(lab: &Lab, rcpts: &[&str]) {
    let mut c = Client::connect(lab.sluice().addr);
    expect(&c.reply(), "220");
    expect(&c.cmd("EHLO client.test"), "250");
    expect(&c.cmd("MAIL FROM:<s@sender.test> SMTPUTF8"), "250");
    for r in rcpts {
        expect(&c.cmd(&format!("RCPT TO:<{r}>")), "250");
    }
    expect(&c.cmd("DATA"), "354");
    expect(&c.cmd("Subject: idn\r\n\r\nbody\r\n."), "250 2.0.0");
    expect(&c.cmd("QUIT"), "221");
}

fn idn_accepted(lab: &Lab) -> u64 {
    lab.sink
        .snapshot()
        .domains
        .iter()
        .filter(|(d, _)| d.to_lowercase().contains("bcher") || d.to_lowercase().contains("bücher"))
        .map(|(_, c)| c.accepted)
        .sum()
}

#[test]
fn a_pause_of_the_a_label_holds_mail_written_in_u_labels() {
    let lab = Lab::start(ZONE, "[default]\n", "");
    let (ok, v) = lab.ctl(&["pause", "xn--bcher-kva.test"]);
    assert!(ok, "{v}");
    send_utf8(
        &lab,
        &["x@bücher.test", "y@BÜCHER.test", "z@Xn--Bcher-Kva.Test"],
    );
    // Mail sent afterwards to another domain is delivered: the IDN mail
    // was taken in and is held, not slow.
    send(lab.sluice(), "s@sender.test", &["a@d2.test"], 1);
    lab.wait_sink("d2's mail", |r| {
        r.domains.get("d2.test").is_some_and(|d| d.accepted == 1)
    });
    assert_eq!(idn_accepted(&lab), 0, "a paused domain delivered");
    let (_, list) = lab.ctl(&["destinations"]);
    let idn: Vec<_> = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| {
            d["destination"].as_str().unwrap_or("").contains("bcher")
                || d["destination"].as_str().unwrap_or("").contains("bücher")
        })
        .collect();
    assert_eq!(idn.len(), 1, "one destination for every spelling: {list}");
    assert_eq!(idn[0]["destination"], "xn--bcher-kva.test", "{list}");
    assert_eq!(idn[0]["waiting"], 3, "{list}");

    let (ok, v) = lab.ctl(&["resume", "xn--bcher-kva.test"]);
    assert!(ok, "{v}");
    lab.wait_sink("the IDN mail after resume", |r| r.recipients_accepted == 4);
    let s = lab.stop();
    assert_eq!(s.delivered, 4, "{s:?}");
}

#[test]
fn a_route_written_in_u_labels_carries_mail_for_the_a_label() {
    // No DNS records for the domain: only the route can deliver it.
    let lab = Lab::start_around_sink(
        "",
        "[default]\n",
        &|sink| {
            format!("[[dns.routes]]\ndomains = [\"*.Bücher.test\", \"bücher.test\"]\nhosts = [\"{sink}\"]\n")
        },
        None,
    );
    send_utf8(
        &lab,
        &[
            "a@xn--bcher-kva.test",
            "b@BÜCHER.test",
            "c@mail.xn--bcher-kva.test",
        ],
    );
    lab.wait_sink("routed IDN mail", |r| r.recipients_accepted == 3);
    let s = lab.stop();
    assert_eq!((s.delivered, s.bounced), (3, 0), "{s:?}");
}
