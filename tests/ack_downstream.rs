//! `ack = "downstream"`: the reply to the end of DATA waits for the
//! destinations' answers, over real sockets (bench DNS stub and sink).

mod common;
use common::lab::Lab;
use common::*;

const ZONE: &str = "";

const CONFIG: &str =
    "ack = \"downstream\"\n[delivery]\ntls = \"none\"\nretry = { intervals = [\"1s\"] }\n";

/// Sends one message and returns the reply to its end of data.
fn send_one(lab: &Lab, id: &str, rcpts: &[&str]) -> String {
    let mut c = Client::connect(lab.sluice().addr);
    expect(&c.reply(), "220");
    expect(&c.cmd("EHLO client.test"), "250");
    expect(&c.cmd("MAIL FROM:<s@sender.test>"), "250");
    for r in rcpts {
        expect(&c.cmd(&format!("RCPT TO:<{r}>")), "250");
    }
    expect(&c.cmd("DATA"), "354");
    let reply = c.cmd(&format!("Message-ID: <{id}@client.test>\r\n\r\nhello\r\n."));
    expect(&c.cmd("QUIT"), "221");
    reply
}

#[test]
fn the_250_comes_after_every_destination_accepted() {
    let lab = Lab::start(ZONE, "[default]\n", CONFIG);
    for i in 0..5 {
        let reply = send_one(&lab, &format!("ok{i}"), &["a@d1.test", "b@d2.test"]);
        expect(&reply, "250 2.0.0");
        // Already at the sink when the client hears 250.
        let id = format!("<ok{i}@client.test>");
        assert_eq!(lab.sink.received_recipients(id.as_bytes()), 2, "{reply}");
    }
    let s = lab.stop();
    assert_eq!((s.delivered, s.bounced), (10, 0));
}

#[test]
fn refusals_and_deferrals_go_back_to_the_client_without_our_dsn() {
    let lab = Lab::start(ZONE, "[default]\n", CONFIG);
    // Every recipient refused: the client gets the destination's 5xx.
    let reply = send_one(&lab, "perm", &["permfail@d1.test"]);
    expect(&reply, "550 5.1.1");
    // Every recipient deferred: 451, and our copy is dropped at its retry.
    let reply = send_one(&lab, "temp", &["tempfail@d1.test"]);
    expect(&reply, "451 4.");
    assert!(reply.contains("downstream deferred"), "{reply}");
    lab.wait_log(&["\"event\":\"returned\"", "tempfail@d1.test"], 1);
    // Mixed: 250, the delivered one is not sent twice, and our DSN reports
    // the refused one.
    let reply = send_one(&lab, "mixed", &["ok@d1.test", "permfail@d2.test"]);
    expect(&reply, "250 2.0.0");
    let r = lab.wait_sink("the DSN for the mixed message", |r| {
        r.domains
            .get("sender.test")
            .is_some_and(|d| d.accepted >= 1)
    });
    // DSNs go out in arrival order: had the refused message produced one,
    // it would be here by now.
    assert_eq!(r.domains["sender.test"].accepted, 1, "{r:#?}");
    assert_eq!(lab.sink.received_recipients(b"<perm@client.test>"), 0);
    assert_eq!(lab.sink.received_recipients(b"<temp@client.test>"), 0);
    assert_eq!(lab.sink.received_recipients(b"<mixed@client.test>"), 1);
    let s = lab.stop();
    assert_eq!(s.dsns, 1);
}
