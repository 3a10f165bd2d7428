//! Interop with real SMTP clients: swaks, Python's smtplib, and a real
//! Postfix relaying into sluice as its smarthost.

mod common;
use common::*;
use std::process::Command;
use std::time::Duration;

fn swaks(d: &Daemon, extra: &[&str]) -> (bool, String) {
    run(Command::new("swaks")
        .args(["--server", "127.0.0.1", "--port", &d.port().to_string()])
        .args([
            "--from",
            "sender@upstream.test",
            "--to",
            "rcpt@dest.test",
            "--ehlo",
            "client.test",
        ])
        .args(["--timeout", "20"])
        .args(extra))
}

fn tls_daemon(extra: &str) -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = write_cert(dir.path());
    let users = write_users(dir.path(), "alice", "correct horse");
    let cfg = format!(
        "{extra}\n[tls]\ncertificate = \"{}\"\nprivate_key = \"{}\"\n[auth]\nusers_file = \"{}\"\n",
        cert.display(),
        key.display(),
        users.display()
    );
    Daemon::start_in(dir, &cfg)
}

#[test]
fn swaks_plain_and_pipelined() {
    let d = Daemon::start("");
    let (ok, out) = swaks(&d, &[]);
    assert!(ok, "{out}");
    for want in [
        "<-  220 ",
        "<-  250-PIPELINING",
        "<-  250 2.1.0",
        "<-  250 2.1.5",
        "<-  354 ",
        "<-  250 2.0.0 Ok: queued as",
        "<-  221 2.0.0",
    ] {
        assert!(out.contains(want), "missing {want:?} in\n{out}");
    }
    let (ok, out) = swaks(&d, &["--pipeline"]);
    assert!(ok, "{out}");
    assert!(out.contains("<-  250 2.0.0 Ok: queued as"), "{out}");
    assert_eq!(d.stop().recipients, 2);
}

#[test]
fn swaks_starttls_and_auth() {
    let d = tls_daemon("");
    // Before TLS, AUTH is not offered; swaks must refuse to send the password.
    let (ok, out) = swaks(
        &d,
        &[
            "--auth",
            "PLAIN",
            "--auth-user",
            "alice",
            "--auth-password",
            "correct horse",
        ],
    );
    assert!(!ok, "AUTH succeeded without TLS:\n{out}");
    assert!(
        out.contains("<-  250 STARTTLS") || out.contains("<-  250-STARTTLS"),
        "{out}"
    );
    assert!(
        !out.contains("250-AUTH") && !out.contains("250 AUTH"),
        "{out}"
    );
    for mech in ["PLAIN", "LOGIN"] {
        let (ok, out) = swaks(
            &d,
            &[
                "--tls",
                "--auth",
                mech,
                "--auth-user",
                "alice",
                "--auth-password",
                "correct horse",
            ],
        );
        assert!(ok, "{out}");
        for want in [
            "<-  220 2.0.0",
            "<~  250 AUTH PLAIN LOGIN",
            "<~  235 2.7.0",
            "<~  250 2.0.0 Ok: queued as",
        ] {
            assert!(out.contains(want), "{mech}: missing {want:?} in\n{out}");
        }
    }
    let (ok, out) = swaks(
        &d,
        &[
            "--tls",
            "--auth",
            "PLAIN",
            "--auth-user",
            "alice",
            "--auth-password",
            "wrong",
            "--pipeline",
        ],
    );
    assert!(!ok, "{out}");
    assert!(out.contains("<~* 535 5.7.8"), "{out}");
    // TLS without AUTH from the relay network works too, pipelined.
    let (ok, out) = swaks(&d, &["--tls", "--pipeline"]);
    assert!(ok, "{out}");
    assert!(out.contains("<~  250 2.0.0 Ok: queued as"), "{out}");
    assert_eq!(d.stop().recipients, 3);
}

#[test]
fn authenticated_user_may_relay_from_outside_the_relay_networks() {
    let d = tls_daemon("[smtp]\nlisten = [\"127.0.0.1:0\"]\nrelay_networks = [\"127.0.0.9/32\"]\n");
    let (ok, out) = swaks(&d, &["--tls"]);
    assert!(!ok, "{out}");
    assert!(out.contains("554 5.7.1"), "{out}");
    let (ok, out) = swaks(
        &d,
        &[
            "--tls",
            "--auth",
            "LOGIN",
            "--auth-user",
            "alice",
            "--auth-password",
            "correct horse",
        ],
    );
    assert!(ok, "{out}");
    assert_eq!(d.stop().recipients, 1);
}

const SMTPLIB_SCRIPT: &str = r#"
import smtplib, ssl, sys
port = int(sys.argv[1])
mode = sys.argv[2]
msg = b"From: a@upstream.test\r\nTo: b@dest.test\r\nSubject: smtplib\r\n\r\nhello\r\n"
s = smtplib.SMTP("127.0.0.1", port, timeout=20)
code, ehlo = s.ehlo("py.test")
assert code == 250, (code, ehlo)
if mode in ("tls", "tls-auth"):
    assert s.has_extn("starttls")
    assert not s.has_extn("auth"), "AUTH offered before TLS"
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    code, text = s.starttls(context=ctx)
    assert code == 220, (code, text)
    code, _ = s.ehlo("py.test")
    assert code == 250
if mode == "tls-auth":
    assert "PLAIN" in s.esmtp_features["auth"] and "LOGIN" in s.esmtp_features["auth"]
    code, text = s.login("alice", "correct horse")
    assert code == 235 and text.startswith(b"2.7.0"), (code, text)
code, text = s.mail("a@upstream.test")
assert code == 250 and text.startswith(b"2.1.0"), (code, text)
code, text = s.rcpt("b@dest.test")
assert code == 250 and text.startswith(b"2.1.5"), (code, text)
code, text = s.data(msg)
assert code == 250 and text.startswith(b"2.0.0 Ok: queued as"), (code, text)
# BDAT through smtplib's low-level calls, two chunks.
assert s.has_extn("chunking")
code, _ = s.mail("a@upstream.test"); assert code == 250
code, _ = s.rcpt("c@dest.test"); assert code == 250
s.send(b"BDAT 10\r\n" + msg[:10])
code, text = s.getreply(); assert code == 250 and text == b"2.0.0 10 octets received", (code, text)
rest = msg[10:]
s.send(b"BDAT %d LAST\r\n" % len(rest) + rest)
code, text = s.getreply(); assert code == 250 and text.startswith(b"2.0.0 Ok: queued as"), (code, text)
# A pipelined group through smtplib's send().
s.send(b"MAIL FROM:<a@upstream.test>\r\nRCPT TO:<d@dest.test>\r\nRCPT TO:<e@other.test>\r\nDATA\r\n")
for want in (250, 250, 250, 354):
    code, text = s.getreply(); assert code == want, (want, code, text)
s.send(msg + b".\r\n")
code, text = s.getreply(); assert code == 250, (code, text)
code, text = s.rset(); assert code == 250
code, text = s.quit(); assert code == 221, (code, text)
print("OK")
"#;

fn smtplib(d: &Daemon, mode: &str) {
    let (ok, out) =
        run(Command::new("python3").args(["-c", SMTPLIB_SCRIPT, &d.port().to_string(), mode]));
    assert!(ok && out.contains("OK"), "smtplib {mode}:\n{out}");
}

#[test]
fn python_smtplib_plain_tls_and_auth() {
    let d = tls_daemon("");
    smtplib(&d, "plain");
    smtplib(&d, "tls");
    smtplib(&d, "tls-auth");
    // Each run: 1 (DATA) + 1 (BDAT) + 2 (pipelined) recipients.
    assert_eq!(d.stop().recipients, 12);
}

#[test]
fn starttls_discards_pipelined_plaintext() {
    // CVE-2011-0411: a command injected after STARTTLS in the same packet
    // must not be executed inside the TLS session.
    let d = tls_daemon("");
    let (ok, out) = run(Command::new("python3").args([
        "-c",
        r#"
import socket, ssl, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=20)
f = s.makefile("rb")
def reply():
    lines = []
    while True:
        l = f.readline().decode()
        lines.append(l)
        if len(l) < 4 or l[3] != "-":
            return "".join(lines)
assert reply().startswith("220")
s.sendall(b"EHLO x.test\r\n"); assert reply().startswith("250")
s.sendall(b"STARTTLS\r\nRSET\r\n")
r = reply(); assert r.startswith("220 2.0.0"), r
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
t = ctx.wrap_socket(s)
t.sendall(b"NOOP\r\n")
r = t.recv(1000).decode()
# Had the injected RSET run, its 250 would come first; NOOP's is 250 2.0.0 too,
# so check that exactly one reply arrives.
assert r.count("\r\n") == 1 and r.startswith("250"), r
t.sendall(b"QUIT\r\n"); assert t.recv(1000).startswith(b"221")
print("OK")
"#,
        &d.port().to_string(),
    ]));
    assert!(ok && out.contains("OK"), "{out}");
    d.stop();
}

#[test]
fn tls_garbage_closes_the_session_without_harm() {
    let d = tls_daemon("");
    let mut c = Client::connect(d.addr);
    expect(&c.reply(), "220");
    expect(&c.cmd("EHLO x.test"), "250");
    expect(&c.cmd("STARTTLS"), "220 2.0.0");
    c.send(b"this is not a TLS ClientHello\r\n\r\n");
    let mut buf = [0u8; 256];
    use std::io::Read;
    // The server aborts the handshake (an alert or a plain close), never a panic.
    let _ = c.stream.read(&mut buf);
    // The daemon still serves others.
    let mut ok = Client::connect(d.addr);
    expect(&ok.reply(), "220");
    d.stop();
}

#[test]
fn postfix_relays_1000_messages_into_sluice() {
    let d = Daemon::start("");
    let pfx = common::postfix::Postfix::start(Some(&format!("127.0.0.1:{}", d.port())));
    let pport = pfx.port;
    // smtp-source: 1000 messages, 10 sessions, into Postfix.
    let (ok, out) = run(Command::new("smtp-source")
        .args([
            "-s",
            "10",
            "-m",
            "1000",
            "-l",
            "1024",
            "-f",
            "sender@upstream.test",
            "-t",
            "rcpt@dest.test",
        ])
        .arg(format!("127.0.0.1:{pport}")));
    assert!(ok, "smtp-source failed:\n{out}");
    // Postfix delivers asynchronously: wait for its log to show all 1000.
    let count = pfx.wait_sent(1000, Duration::from_secs(180));
    assert!(
        count.starts_with("sent=1000 deferred=0 bounced=0"),
        "postfix count: {count}"
    );
    let s = d.stop();
    assert_eq!(s.recipients, 1000, "{s:?}");
}

const FINGERPRINT: &str = r#"
import smtplib, ssl, sys, hashlib
s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=20)
s.ehlo("fp.test")
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
s.starttls(context=ctx)
print(hashlib.sha256(s.sock.getpeercert(binary_form=True)).hexdigest())
s.quit()
"#;

fn served_fingerprint(d: &Daemon) -> String {
    let (ok, out) = run(Command::new("python3").args(["-c", FINGERPRINT, &d.port().to_string()]));
    assert!(ok, "{out}");
    out.trim().to_string()
}

#[test]
fn sighup_reloads_the_certificate_and_refuses_a_broken_one() {
    let d = tls_daemon("");
    let first = served_fingerprint(&d);
    // A connection opened before the reload keeps working across it.
    let mut open = Client::connect(d.addr);
    expect(&open.reply(), "220");
    let (cert, key) = write_cert(d.dir.path());
    let _ = (cert, key);
    d.signal(nix::sys::signal::Signal::SIGHUP);
    d.wait_log("sluice: reloaded", 1);
    let second = served_fingerprint(&d);
    assert_ne!(first, second, "the new certificate is not served");
    expect(&open.cmd("EHLO still.test"), "250");
    // A broken key is refused and the current certificate stays.
    std::fs::write(d.path("key.pem"), "not a key").unwrap();
    d.signal(nix::sys::signal::Signal::SIGHUP);
    let log = d.wait_log("sluice: reload refused", 1);
    assert!(log.contains("key.pem"), "{log}");
    assert_eq!(served_fingerprint(&d), second);
    d.stop();
}
