//! Message content rules against the running daemon: every end-of-data
//! look-alike is refused alike by DATA and BDAT, what is accepted leaves
//! through an outbound DATA stream with no bare CR or LF (checked by a raw
//! receiver that does not offer CHUNKING), and a message that has looped
//! past `smtp.max_hops` is refused.

mod common;

use common::lab::Lab;
use common::{expect, Client, Daemon};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

/// Every way a lenient receiver might see the end of data early.
const LOOK_ALIKES: [&[u8]; 5] = [b"\n.\n", b"\n.\r\n", b"\r\n.\n", b"\r.\r", b"\r.\r\n"];

fn session(d: &Daemon) -> Client {
    let mut c = Client::connect(d.addr);
    expect(&c.reply(), "220");
    expect(&c.cmd("EHLO client.test"), "250");
    c
}

fn message_with(look: &[u8]) -> Vec<u8> {
    [
        &b"Subject: smuggle\r\n\r\nbefore"[..],
        look,
        b"MAIL FROM:<evil@x.test>\r\nRCPT TO:<victim@d1.test>\r\nDATA\r\n\r\nafter\r\n",
    ]
    .concat()
}

#[test]
fn end_of_data_look_alikes_are_refused_by_data_and_by_bdat() {
    let d = Daemon::start("");
    for look in LOOK_ALIKES {
        // Each refusal counts toward max_errors: a session per look-alike.
        let mut c = session(&d);
        let msg = message_with(look);
        // DATA: the look-alike must not end the data; the real end does.
        expect(&c.cmd("MAIL FROM:<a@sender.test>"), "250");
        expect(&c.cmd("RCPT TO:<x@d1.test>"), "250");
        expect(&c.cmd("DATA"), "354");
        c.send(&msg);
        let r = c.cmd(".");
        assert!(r.starts_with("554 5.6.11"), "DATA {look:?}: {r}");
        // BDAT, in one chunk.
        expect(&c.cmd("MAIL FROM:<a@sender.test>"), "250");
        expect(&c.cmd("RCPT TO:<x@d1.test>"), "250");
        c.send(format!("BDAT {} LAST\r\n", msg.len()).as_bytes());
        c.send(&msg);
        let r = c.reply();
        assert!(r.starts_with("554 5.6.11"), "BDAT {look:?}: {r}");
        // BDAT, cut inside the look-alike (a CR in one chunk, the rest in
        // the next).
        let cut = msg.len()
            - b"MAIL FROM:<evil@x.test>\r\nRCPT TO:<victim@d1.test>\r\nDATA\r\n\r\nafter\r\n".len()
            - look.len()
            + 1;
        expect(&c.cmd("MAIL FROM:<a@sender.test>"), "250");
        expect(&c.cmd("RCPT TO:<x@d1.test>"), "250");
        c.send(format!("BDAT {}\r\n", cut).as_bytes());
        c.send(&msg[..cut]);
        let first = c.reply();
        let r = if first.starts_with("250") {
            c.send(format!("BDAT {} LAST\r\n", msg.len() - cut).as_bytes());
            c.send(&msg[cut..]);
            c.reply()
        } else {
            first
        };
        assert!(r.starts_with("554 5.6.11"), "BDAT split {look:?}: {r}");
        // Whatever came after, the session is in the command phase again.
        expect(&c.cmd("RSET"), "250");
        expect(&c.cmd("QUIT"), "221");
    }
    let mut c = session(&d);
    // Control: the same text with proper line ends goes through both ways.
    expect(&c.cmd("MAIL FROM:<a@sender.test>"), "250");
    expect(&c.cmd("RCPT TO:<x@d1.test>"), "250");
    expect(&c.cmd("DATA"), "354");
    expect(&c.cmd("Subject: fine\r\n\r\n..\r\nok\r\n."), "250 2.0.0");
    let msg = b"Subject: fine\r\n\r\n.\r\nok\r\n";
    expect(&c.cmd("MAIL FROM:<a@sender.test>"), "250");
    expect(&c.cmd("RCPT TO:<x@d1.test>"), "250");
    c.send(format!("BDAT {} LAST\r\n", msg.len()).as_bytes());
    c.send(msg);
    expect(&c.reply(), "250 2.0.0");
    expect(&c.cmd("QUIT"), "221");
    let s = d.stop();
    assert_eq!(s.envelopes, 2, "{s:?}");
}

/// A receiver speaking plain ESMTP without PIPELINING or CHUNKING, so that
/// sluice must use DATA; each message's raw DATA bytes (end marker
/// included) go to the channel.
fn raw_receiver() -> (SocketAddr, mpsc::Receiver<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let tx = tx.clone();
            std::thread::spawn(move || serve_raw(stream, tx));
        }
    });
    (addr, rx)
}

fn serve_raw(stream: TcpStream, tx: mpsc::Sender<Vec<u8>>) {
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut w = stream.try_clone().unwrap();
    let mut r = BufReader::new(stream);
    w.write_all(b"220 raw.test ESMTP\r\n").unwrap();
    loop {
        let mut line = Vec::new();
        if r.read_until(b'\n', &mut line).unwrap_or(0) == 0 {
            return;
        }
        let cmd = String::from_utf8_lossy(&line).to_ascii_uppercase();
        let reply: &[u8] = if cmd.starts_with("EHLO") {
            b"250-raw.test\r\n250-8BITMIME\r\n250 SIZE 10000000\r\n"
        } else if cmd.starts_with("DATA") {
            w.write_all(b"354 go\r\n").unwrap();
            // Strictly: the data ends at the first CRLF.CRLF.
            let mut data = Vec::new();
            while !data.ends_with(b"\r\n.\r\n") && data != b".\r\n" {
                let mut byte = [0u8; 1];
                r.read_exact(&mut byte).unwrap();
                data.push(byte[0]);
            }
            tx.send(data).unwrap();
            b"250 2.0.0 raw ok\r\n"
        } else if cmd.starts_with("QUIT") {
            let _ = w.write_all(b"221 bye\r\n");
            return;
        } else {
            b"250 ok\r\n"
        };
        w.write_all(reply).unwrap();
    }
}

/// Where a receiver that takes any CR or LF for a line end sees the data
/// end: the first line that is just ".".
fn lenient_end(data: &[u8]) -> Option<usize> {
    let mut start = 0;
    for (i, &c) in data.iter().enumerate() {
        if c == b'\r' || c == b'\n' {
            if &data[start..i] == b"." {
                return Some(start);
            }
            start = i + 1;
        }
    }
    None
}

fn bare_line_end(data: &[u8]) -> Option<usize> {
    (0..data.len()).find(|&i| match data[i] {
        b'\r' => data.get(i + 1) != Some(&b'\n'),
        b'\n' => i == 0 || data[i - 1] != b'\r',
        _ => false,
    })
}

#[test]
fn accepted_mail_goes_out_by_data_with_no_bare_line_end_and_one_end_marker() {
    let (addr, rx) = raw_receiver();
    let lab = Lab::start_with_port("", "[default]\n", "", Some(addr.port()));
    let d = lab.sluice();
    let mut c = session(d);
    // BDAT may carry a line that is just "." and lines that look like
    // commands: legal there, dangerous in an outbound DATA stream.
    let bdat = b"Subject: b\r\n\r\nbefore\r\n.\r\nMAIL FROM:<evil@x.test>\r\n.\r\n..\r\nafter\r\n";
    expect(&c.cmd("MAIL FROM:<a@sender.test>"), "250");
    expect(&c.cmd("RCPT TO:<x@d1.test>"), "250");
    c.send(format!("BDAT {} LAST\r\n", bdat.len()).as_bytes());
    c.send(bdat);
    expect(&c.reply(), "250 2.0.0");
    // DATA with stuffed dots, and a body without a final line end by BDAT.
    expect(&c.cmd("MAIL FROM:<a@sender.test>"), "250");
    expect(&c.cmd("RCPT TO:<y@d1.test>"), "250");
    expect(&c.cmd("DATA"), "354");
    expect(
        &c.cmd("Subject: d\r\n\r\n..\r\n...x\r\nend\r\n."),
        "250 2.0.0",
    );
    let tail = b"Subject: t\r\n\r\nno final line end";
    expect(&c.cmd("MAIL FROM:<a@sender.test>"), "250");
    expect(&c.cmd("RCPT TO:<z@d1.test>"), "250");
    c.send(format!("BDAT {} LAST\r\n", tail.len()).as_bytes());
    c.send(tail);
    expect(&c.reply(), "250 2.0.0");
    // The look-alikes by BDAT: refused now; had one been taken, it would
    // have to reach the receiver with no bare line end either.
    let mut expected = 3;
    for look in LOOK_ALIKES {
        let msg = message_with(look);
        expect(&c.cmd("MAIL FROM:<a@sender.test>"), "250");
        expect(&c.cmd("RCPT TO:<w@d1.test>"), "250");
        c.send(format!("BDAT {} LAST\r\n", msg.len()).as_bytes());
        c.send(&msg);
        let r = c.reply();
        if r.starts_with("250") {
            expected += 1;
        } else {
            assert!(r.starts_with("554 5.6.11"), "{look:?}: {r}");
        }
    }
    expect(&c.cmd("QUIT"), "221");

    let mut seen = Vec::new();
    for _ in 0..expected {
        let data = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("a message reached the raw receiver");
        assert_eq!(
            bare_line_end(&data),
            None,
            "{:?}",
            String::from_utf8_lossy(&data)
        );
        assert_eq!(
            lenient_end(&data),
            Some(data.len() - 3),
            "{:?}",
            String::from_utf8_lossy(&data)
        );
        seen.push(String::from_utf8(data).unwrap());
    }
    assert!(
        seen.iter().any(|s| s.ends_with(
            "Subject: b\r\n\r\nbefore\r\n..\r\nMAIL FROM:<evil@x.test>\r\n..\r\n...\r\nafter\r\n.\r\n"
        )),
        "{seen:#?}"
    );
    assert!(
        seen.iter()
            .any(|s| s.ends_with("Subject: d\r\n\r\n..\r\n...x\r\nend\r\n.\r\n")),
        "{seen:#?}"
    );
    assert!(
        seen.iter()
            .any(|s| s.ends_with("no final line end\r\n.\r\n")),
        "{seen:#?}"
    );
    lab.stop();
}

fn with_received(n: usize) -> String {
    let mut m = String::new();
    for i in 0..n {
        m.push_str(&format!(
            "Received: from hop{i}.test\r\n\tby hop{}.test; Sun, 22 Nov 2026 23:05:09 +0000\r\n",
            i + 1
        ));
    }
    m.push_str("Subject: loop\r\n\r\nbody\r\n");
    m
}

fn send_data(c: &mut Client, msg: &str) -> String {
    expect(&c.cmd("MAIL FROM:<a@sender.test>"), "250");
    expect(&c.cmd("RCPT TO:<x@d1.test>"), "250");
    expect(&c.cmd("DATA"), "354");
    c.cmd(&format!("{msg}."))
}

#[test]
fn a_message_past_the_hop_limit_is_refused_and_the_limit_reloads() {
    let d = Daemon::start("");
    let mut c = session(&d);
    let r = send_data(&mut c, &with_received(51));
    assert!(r.starts_with("554 5.4.6 Too many hops"), "{r}");
    expect(&send_data(&mut c, &with_received(49)), "250 2.0.0");
    // By BDAT too.
    let msg = with_received(51);
    expect(&c.cmd("MAIL FROM:<a@sender.test>"), "250");
    expect(&c.cmd("RCPT TO:<x@d1.test>"), "250");
    c.send(format!("BDAT {} LAST\r\n", msg.len()).as_bytes());
    c.send(msg.as_bytes());
    let r = c.reply();
    assert!(r.starts_with("554 5.4.6"), "{r}");
    expect(&c.cmd("QUIT"), "221");

    // SIGHUP applies a new limit to new sessions.
    let path = d.path("sluice.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text.replace("[smtp]\n", "[smtp]\nmax_hops = 5\n");
    assert!(text.contains("max_hops = 5"), "{text}");
    std::fs::write(&path, text).unwrap();
    d.signal(nix::sys::signal::Signal::SIGHUP);
    d.wait_log("sluice: reloaded", 1);
    let mut c = session(&d);
    expect(&send_data(&mut c, &with_received(4)), "250 2.0.0");
    let r = send_data(&mut c, &with_received(5));
    assert!(r.starts_with("554 5.4.6"), "{r}");
    expect(&c.cmd("QUIT"), "221");
    let s = d.stop();
    assert_eq!(s.envelopes, 2, "{s:?}");
}
