//! The inbound listener over real sockets: pipelining, BDAT, relay control,
//! backpressure, timeouts and bad input, checked reply by reply.

mod common;
#[allow(unused_imports)]
use common::Stopped as _;
use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

fn ehlo(c: &mut Client) -> String {
    expect(&c.reply(), "220 ");
    let r = c.cmd("EHLO client.test");
    expect(&r, "250-sluice.test");
    r
}

#[test]
fn ehlo_advertises_the_extensions() {
    let d = Daemon::start("");
    let mut c = Client::connect(d.addr);
    let r = ehlo(&mut c);
    for ext in [
        "PIPELINING",
        "SIZE 52428800",
        "8BITMIME",
        "SMTPUTF8",
        "ENHANCEDSTATUSCODES",
        "CHUNKING",
    ] {
        assert!(r.contains(ext), "{ext} missing from {r}");
    }
    // No TLS configured: no STARTTLS; no users file: no AUTH.
    assert!(!r.contains("STARTTLS") && !r.contains("AUTH"), "{r}");
    expect(&c.cmd("VRFY someone"), "252 2.");
    expect(&c.cmd("NOOP"), "250 2.0.0");
    expect(&c.cmd("HELP"), "214 ");
    expect(&c.cmd("QUIT"), "221 2.0.0");
    assert!(c.at_eof());
    let s = d.stop();
    assert_eq!((s.envelopes, s.recipients), (0, 0));
}

#[test]
fn pipelined_group_is_answered_in_order_and_counted() {
    let d = Daemon::start("");
    let mut c = Client::connect(d.addr);
    ehlo(&mut c);
    c.send(
        b"MAIL FROM:<a@sender.test>\r\nRCPT TO:<x@d1.test>\r\nRCPT TO:<y@d2.test>\r\nRCPT TO:<z@d3.test>\r\nDATA\r\n",
    );
    expect(&c.reply(), "250 2.1.0");
    for _ in 0..3 {
        expect(&c.reply(), "250 2.1.5");
    }
    expect(&c.reply(), "354 ");
    c.send(b"Subject: t\r\n\r\n..leading dot\r\nbody\r\n.\r\n");
    let r = c.reply();
    expect(&r, "250 2.0.0 Ok: queued as ");
    expect(&c.cmd("QUIT"), "221");
    let s = d.stop();
    assert_eq!(s.recipients, 3);
    assert!(s.envelopes >= 1 && s.envelopes <= 3, "{s:?}");
}

#[test]
fn bdat_transactions_pipelined_back_to_back() {
    let d = Daemon::start("");
    let mut c = Client::connect(d.addr);
    ehlo(&mut c);
    let body = b"Subject: bdat\r\n\r\nhello\r\n";
    let mut group = Vec::new();
    for i in 0..20 {
        group.extend_from_slice(
            format!("MAIL FROM:<s{i}@sender.test>\r\nRCPT TO:<r{i}@d{i}.test>\r\n").as_bytes(),
        );
        group.extend_from_slice(b"BDAT 5\r\n");
        group.extend_from_slice(&body[..5]);
        group.extend_from_slice(format!("BDAT {} LAST\r\n", body.len() - 5).as_bytes());
        group.extend_from_slice(&body[5..]);
    }
    c.send(&group);
    for _ in 0..20 {
        expect(&c.reply(), "250 2.1.0");
        expect(&c.reply(), "250 2.1.5");
        expect(&c.reply(), "250 2.0.0 5 octets received");
        expect(&c.reply(), "250 2.0.0 Ok: queued as ");
    }
    // DATA after BDAT in one transaction is a sequence error.
    expect(&c.cmd("MAIL FROM:<a@b.test>"), "250");
    expect(&c.cmd("RCPT TO:<c@d.test>"), "250");
    c.send(b"BDAT 3\r\nabc");
    expect(&c.reply(), "250 2.0.0 3 octets");
    expect(&c.cmd("DATA"), "503 5.5.1");
    expect(&c.cmd("RSET"), "250 2.0.0");
    expect(&c.cmd("QUIT"), "221");
    assert_eq!(d.stop().recipients, 20);
}

#[test]
fn bdat_without_a_transaction_still_consumes_its_octets() {
    let d = Daemon::start("");
    let mut c = Client::connect(d.addr);
    ehlo(&mut c);
    // The chunk contains text that would be commands if it were parsed.
    c.send(b"BDAT 12\r\nQUIT\r\nRSET\r\n");
    expect(&c.reply(), "503 5.5.1");
    expect(&c.cmd("NOOP"), "250 2.0.0");
    expect(&c.cmd("QUIT"), "221");
    d.stop();
}

fn connect_from(src: &str, to: SocketAddr) -> TcpStream {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(&format!("{src}:0").parse::<SocketAddr>().unwrap().into())
        .unwrap();
    sock.connect(&to.into()).unwrap();
    sock.into()
}

#[test]
fn open_relay_is_refused_for_every_recipient() {
    let d = Daemon::start("");
    // 127.0.0.2 is not in the default relay networks (127.0.0.1/32, ::1/128).
    let mut c = Client::from_stream(connect_from("127.0.0.2", d.addr));
    ehlo(&mut c);
    expect(&c.cmd("MAIL FROM:<spammer@outside.test>"), "250");
    for rcpt in [
        "victim@gmail.test",
        "other@yahoo.test",
        "postmaster@sluice.test",
        "x@127.0.0.1.test",
    ] {
        let r = c.cmd(&format!("RCPT TO:<{rcpt}>"));
        expect(&r, "554 5.7.1");
    }
    expect(&c.cmd("DATA"), "554 5.5.1");
    expect(&c.cmd("QUIT"), "221");
    // The same daemon relays for 127.0.0.1.
    let mut ok = Client::from_stream(connect_from("127.0.0.1", d.addr));
    ehlo(&mut ok);
    expect(&ok.cmd("MAIL FROM:<a@b.test>"), "250");
    expect(&ok.cmd("RCPT TO:<victim@gmail.test>"), "250 2.1.5");
    assert_eq!(d.stop().recipients, 0);
}

#[test]
fn backpressure_answers_452_when_the_shard_is_full() {
    // One core, so the owning shard is the session's own and its load is
    // published before the next command is read: the bound is exact. (Across
    // cores the load trails the hand-off by the batches in flight.)
    let d = Daemon::start("cores = [0]\nroute = \"hold\"\n[backpressure]\nmax_messages = 3\n");
    let mut c = Client::connect(d.addr);
    ehlo(&mut c);
    let mut accepted = 0;
    // The shard fills after three messages.
    for i in 0..10 {
        let r = c.cmd(&format!("MAIL FROM:<s{i}@a.test>"));
        if r.starts_with("452 4.3.1") {
            break;
        }
        expect(&r, "250");
        expect(&c.cmd("RCPT TO:<r@full.test>"), "250");
        expect(&c.cmd("DATA"), "354");
        expect(&c.cmd("Subject: x\r\n\r\nhi\r\n."), "250 2.0.0");
        accepted += 1;
    }
    assert_eq!(accepted, 3);
    // Still refused: held mail never drains.
    expect(&c.cmd("MAIL FROM:<late@a.test>"), "452 4.3.1");
    expect(&c.cmd("QUIT"), "221");
    assert_eq!(d.stop().recipients, accepted);
}

#[test]
fn idle_and_trickling_clients_time_out() {
    let d = Daemon::start("[smtp]\nlisten = [\"127.0.0.1:0\"]\ncommand_timeout = \"1s\"\n");
    let mut idle = Client::connect(d.addr);
    expect(&idle.reply(), "220 ");
    let mut slow = Client::connect(d.addr);
    expect(&slow.reply(), "220 ");
    let start = Instant::now();
    // A byte every 200 ms never completes a command: the deadline is not
    // extended by partial input.
    let t = std::thread::spawn(move || {
        for b in b"EHLO slowpoke.test".iter() {
            if slow.stream.write_all(&[*b]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        slow
    });
    expect(&idle.reply(), "421 4.4.2");
    assert!(idle.at_eof());
    let mut slow = t.join().unwrap();
    expect(&slow.reply(), "421 4.4.2");
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "{:?}",
        start.elapsed()
    );
    d.stop();
}

#[test]
fn bad_input_gets_rfc_replies() {
    let d = Daemon::start("");
    let mut c = Client::connect(d.addr);
    ehlo(&mut c);
    expect(&c.cmd("FOO bar"), "500 5.5.2");
    expect(&c.cmd("MAIL FROM:bad"), "501 5.");
    c.send(b"NOOP\0\r\n");
    expect(&c.reply(), "500 5.5.2");
    c.send(b"NOOP\n");
    expect(&c.reply(), "500 5.5.2");
    let long = format!("NOOP {}\r\n", "x".repeat(2000));
    c.send(long.as_bytes());
    expect(&c.reply(), "500 5.5.2");
    expect(&c.cmd("RCPT TO:<a@b.test>"), "503 5.5.1");
    // 8-bit body without BODY=8BITMIME.
    expect(&c.cmd("MAIL FROM:<a@b.test>"), "250");
    expect(&c.cmd("RCPT TO:<a@b.test>"), "250");
    expect(&c.cmd("DATA"), "354");
    c.send("Subject: caf\u{e9}\r\n\r\n.\r\n".as_bytes());
    expect(&c.reply(), "554 5.6.1");
    // The session survives and a declared 8-bit message is accepted.
    expect(&c.cmd("MAIL FROM:<a@b.test> BODY=8BITMIME"), "250");
    expect(&c.cmd("RCPT TO:<a@b.test>"), "250");
    expect(&c.cmd("DATA"), "354");
    c.send("Subject: caf\u{e9}\r\n\r\n.\r\n".as_bytes());
    expect(&c.reply(), "250 2.0.0");
    // Bare LF inside DATA (SMTP smuggling) is refused.
    expect(&c.cmd("MAIL FROM:<a@b.test>"), "250");
    expect(&c.cmd("RCPT TO:<a@b.test>"), "250");
    expect(&c.cmd("DATA"), "354");
    c.send(b"Subject: x\r\n\r\nline\n.\nMAIL FROM:<evil@x>\r\n.\r\n");
    expect(&c.reply(), "554 5.6.11");
    expect(&c.cmd("QUIT"), "221");
    assert_eq!(d.stop().recipients, 1);
}

#[test]
fn too_many_errors_disconnects() {
    let d = Daemon::start("[smtp]\nlisten = [\"127.0.0.1:0\"]\nmax_errors = 3\n");
    let mut c = Client::connect(d.addr);
    expect(&c.reply(), "220");
    c.send(b"A\r\nB\r\nC\r\nD\r\n");
    expect(&c.reply(), "500");
    expect(&c.reply(), "500");
    let r = c.reply();
    let r = if r.starts_with("500") { c.reply() } else { r };
    expect(&r, "421 4.7.0");
    assert!(c.at_eof());
    d.stop();
}

#[test]
fn half_closed_client_is_finished_cleanly() {
    let d = Daemon::start("");
    let mut c = Client::connect(d.addr);
    ehlo(&mut c);
    c.send(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\nSubject: x\r\n");
    c.stream.shutdown(std::net::Shutdown::Write).unwrap();
    expect(&c.reply(), "250");
    expect(&c.reply(), "250");
    expect(&c.reply(), "354");
    let mut rest = Vec::new();
    let _ = c.stream.read_to_end(&mut rest);
    // The incomplete message is not counted as accepted.
    assert_eq!(d.stop().recipients, 0);
}

#[test]
fn message_size_limit_is_enforced() {
    let d = Daemon::start("[smtp]\nlisten = [\"127.0.0.1:0\"]\nmax_message_size = 1000\n");
    let mut c = Client::connect(d.addr);
    let r = ehlo(&mut c);
    assert!(r.contains("SIZE 1000"), "{r}");
    expect(&c.cmd("MAIL FROM:<a@b.test> SIZE=5000"), "552 5.3.4");
    expect(&c.cmd("MAIL FROM:<a@b.test>"), "250");
    expect(&c.cmd("RCPT TO:<a@b.test>"), "250");
    expect(&c.cmd("DATA"), "354");
    let big = format!(
        "Subject: big\r\n\r\n{}\r\n.\r\n",
        "0123456789\r\n".repeat(200)
    );
    c.send(big.as_bytes());
    expect(&c.reply(), "552 5.3.4");
    expect(&c.cmd("QUIT"), "221");
    assert_eq!(d.stop().recipients, 0);
}
