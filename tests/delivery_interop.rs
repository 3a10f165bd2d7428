//! Interop with real receivers: Postfix (receive mode) and Python's
//! aiosmtpd accept sluice's pipelined deliveries, with and without STARTTLS,
//! and their counts match what sluice logged as delivered.

mod common;
use common::lab::Lab;
use common::postfix::{free_port, Postfix};
use common::*;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

const ZONE: &str = r#"
[[record]]
name = "peer.test"
type = "MX"
data = "10 mx.lab.test"
"#;

fn send(d: &Daemon, n: usize) {
    let mut c = Client::connect(d.addr);
    expect(&c.reply(), "220");
    expect(&c.cmd("EHLO client.test"), "250");
    for i in 0..n {
        expect(&c.cmd("MAIL FROM:<a@sender.test>"), "250");
        expect(&c.cmd(&format!("RCPT TO:<r{}@peer.test>", i % 3)), "250");
        expect(&c.cmd("DATA"), "354");
        expect(
            &c.cmd(&format!("Subject: interop {i}\r\n\r\nhello\r\n.")),
            "250",
        );
    }
    expect(&c.cmd("QUIT"), "221");
}

#[test]
fn postfix_receives_what_sluice_delivers() {
    let pfx = Postfix::start(None);
    let port = pfx.port;
    // Postfix offers PIPELINING but no CHUNKING: sluice pipelines MAIL/RCPT/DATA.
    let lab = Lab::start_with_port(ZONE, "", "[delivery]\nidle_timeout = \"1s\"\n", Some(port));
    send(lab.sluice(), 200);
    let delivered = lab.wait_log(&["\"event\":\"delivered\""], 200);
    assert_eq!(delivered.len(), 200);
    // Postfix logs asynchronously; wait for its count to reach ours.
    let count = pfx.wait_sent(200, Duration::from_secs(60));
    assert!(
        count.starts_with("sent=200 deferred=0 bounced=0"),
        "postfix: {count}"
    );
    let s = lab.stop();
    assert_eq!(s.delivered, 200);
}

const AIOSMTPD: &str = r#"
import asyncio, ssl, sys
from aiosmtpd.controller import Controller
class Count:
    async def handle_DATA(self, server, session, envelope):
        tls = "tls" if session.ssl else "plain"
        for r in envelope.rcpt_tos:
            print(f"GOT {tls} {r}", flush=True)
        return "250 2.0.0 Ok"
port, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3]
utf8 = len(sys.argv) < 5 or sys.argv[4] != "no-smtputf8"
ctx = None
if cert != "-":
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
c = Controller(Count(), hostname="127.0.0.1", port=port, tls_context=ctx, require_starttls=False, enable_SMTPUTF8=utf8)
c.start()
print("READY", flush=True)
sys.stdin.read()
c.stop()
"#;

fn aiosmtpd_run(with_tls: bool) {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = write_cert(dir.path());
    let port = free_port();
    let (c, k) = if with_tls {
        (cert.display().to_string(), key.display().to_string())
    } else {
        ("-".to_string(), "-".to_string())
    };
    // Debian's python3-aiosmtpd is installed for the system interpreter.
    let mut py = Command::new("/usr/bin/python3")
        .args(["-c", AIOSMTPD, &port.to_string(), &c, &k])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(py.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "READY");
    let lab = Lab::start_with_port(ZONE, "", "[delivery]\nidle_timeout = \"1s\"\n", Some(port));
    send(lab.sluice(), 30);
    let want = if with_tls { "GOT tls " } else { "GOT plain " };
    for _ in 0..30 {
        let l = lines.next().unwrap().unwrap();
        assert!(l.starts_with(want), "{l}");
    }
    let delivered = lab.wait_log(&["\"event\":\"delivered\""], 30);
    assert_eq!(delivered.len(), 30);
    assert_eq!(
        delivered
            .iter()
            .filter(|l| l.contains("\"tls\":\"TLSv1.3\""))
            .count(),
        if with_tls { 30 } else { 0 }
    );
    let s = lab.stop();
    assert_eq!(s.delivered, 30);
    drop(py.stdin.take());
    let _ = py.wait();
}

#[test]
fn aiosmtpd_receives_over_plaintext() {
    aiosmtpd_run(false);
}

#[test]
fn aiosmtpd_receives_over_starttls() {
    aiosmtpd_run(true);
}

#[test]
fn smtputf8_message_to_a_server_without_smtputf8_bounces_with_5_6_7() {
    let port = free_port();
    let mut py = Command::new("/usr/bin/python3")
        .args(["-c", AIOSMTPD, &port.to_string(), "-", "-", "no-smtputf8"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(py.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "READY");
    let lab = Lab::start_with_port(ZONE, "", "[delivery]\nidle_timeout = \"1s\"\n", Some(port));
    let mut c = Client::connect(lab.sluice().addr);
    expect(&c.reply(), "220");
    expect(&c.cmd("EHLO client.test"), "250");
    expect(&c.cmd("MAIL FROM:<a@sender.test> SMTPUTF8"), "250");
    expect(&c.cmd("RCPT TO:<r\u{e9}@peer.test>"), "250");
    expect(&c.cmd("DATA"), "354");
    expect(&c.cmd("Subject: caf\u{e9}\r\n\r\nhello\r\n."), "250");
    expect(&c.cmd("QUIT"), "221");
    let bounced = lab.wait_log(&["\"event\":\"bounced\""], 1);
    assert!(
        bounced[0].contains("\"status\":\"5.6.7\""),
        "{}",
        bounced[0]
    );
    // The DSN goes back to the sender (whose MX is the same aiosmtpd).
    let l = lines.next().unwrap().unwrap();
    assert_eq!(l, "GOT plain a@sender.test");
    let s = lab.stop();
    assert_eq!((s.bounced, s.dsns), (1, 1));
    drop(py.stdin.take());
    let _ = py.wait();
}
