//! AUTH under attack, against the real daemon: a flood of wrong passwords
//! from many addresses does not delay another client's journal-mode 250s,
//! and one address that keeps failing is locked out (421) after a few
//! tries, each failure answered only after a delay.

mod common;
use base64::Engine as _;
use common::*;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

fn try_connect_from(src: &str, to: SocketAddr) -> std::io::Result<TcpStream> {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    sock.bind(&format!("{src}:0").parse::<SocketAddr>().unwrap().into())?;
    sock.connect(&to.into())?;
    Ok(sock.into())
}

fn connect_from(src: &str, to: SocketAddr) -> TcpStream {
    try_connect_from(src, to).unwrap()
}

fn plain(user: &str, pass: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{pass}"))
}

/// AUTH over plaintext (so the test needs no TLS client), journal acks,
/// mail to d1.test deferred on a closed port so it stays in the journal.
fn daemon(extra_auth: &str) -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    let users = write_users(dir.path(), "alice", "correct horse");
    // bob's SHA-512-crypt hash (`hunter2`) is cheap even in a debug build,
    // so a failure's answer time is the failure delay, not the hash.
    let bob = "$6$saltsalt$8iYtNHxjWRl.NF6oNZ5tF.iKFlQREaXBLlSmZKP6dy9l5z3vsooWNW0/GZ6Nej73/TFug6pIPSqbJoCT6dfnj.";
    let mut text = std::fs::read_to_string(&users).unwrap();
    text.push_str(&format!("bob:{bob}\n"));
    std::fs::write(&users, text).unwrap();
    let cfg = format!(
        "ack = \"journal\"\nroute = \"deliver\"\n\
         [auth]\nusers_file = \"{}\"\nallow_plaintext = true\n{extra_auth}\n\
         [delivery]\ntls = \"none\"\nconnect_timeout = \"1s\"\nretry = {{ intervals = [\"1h\"] }}\n\
         [[dns.routes]]\ndomains = [\"d1.test\"]\nhosts = [\"127.0.0.1:9\"]\n",
        users.display()
    );
    Daemon::start_in(dir, &cfg)
}

/// Reads one SMTP reply (its last line); None at EOF or on an error.
fn read_reply(r: &mut BufReader<TcpStream>) -> Option<String> {
    loop {
        let mut line = String::new();
        match r.read_line(&mut line) {
            Ok(0) | Err(_) => return None,
            Ok(_) if line.as_bytes().get(3) == Some(&b'-') => continue,
            Ok(_) => return Some(line),
        }
    }
}

/// One flooding client: EHLO, then wrong-password AUTHs until `stop`,
/// reconnecting whenever the server closes. Returns the AUTH replies.
fn flood(addr: SocketAddr, src: String, stop: Arc<AtomicBool>, sent: Arc<Barrier>) -> usize {
    let mut first = Some(sent);
    let mut replies = 0;
    let auth = format!("AUTH PLAIN {}\r\n", plain("alice", "wrong"));
    while !stop.load(Ordering::Relaxed) {
        // Refused once the test has killed the daemon.
        let Ok(mut s) = try_connect_from(&src, addr) else {
            break;
        };
        s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
        let _ = s.write_all(format!("EHLO flood.test\r\n{auth}").as_bytes());
        if let Some(b) = first.take() {
            b.wait();
        }
        let mut r = BufReader::new(s.try_clone().unwrap());
        while let Some(line) = read_reply(&mut r) {
            if line.starts_with("535") || line.starts_with("454") {
                replies += 1;
                if stop.load(Ordering::Relaxed) || s.write_all(auth.as_bytes()).is_err() {
                    break;
                }
            } else if line.starts_with("421") {
                replies += 1;
                break;
            }
        }
    }
    replies
}

#[test]
fn auth_flood_does_not_delay_journal_acknowledgements() {
    let d = daemon("");
    const FLOODERS: usize = 200;
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(Barrier::new(FLOODERS + 1));
    let mut threads = Vec::new();
    for i in 0..FLOODERS {
        // Many addresses, each in its own /24: a distributed flood, which
        // no per-address limit stops.
        let src = format!("127.2.{i}.1");
        let (stop, sent, addr) = (stop.clone(), sent.clone(), d.addr);
        threads.push(std::thread::spawn(move || flood(addr, src, stop, sent)));
    }
    // Every flooder has sent its first AUTH.
    sent.wait();

    let mut c = Client::connect(d.addr);
    c.stream
        .set_read_timeout(Some(Duration::from_secs(90)))
        .unwrap();
    expect(&c.reply(), "220");
    expect(&c.cmd("EHLO legit.test"), "250");
    let mut worst = Duration::ZERO;
    for i in 0..5 {
        expect(&c.cmd("MAIL FROM:<s@sender.test>"), "250");
        expect(&c.cmd(&format!("RCPT TO:<r{i}@d1.test>")), "250");
        expect(&c.cmd("DATA"), "354");
        let start = Instant::now();
        let r = c.cmd(&format!("Subject: t{i}\r\n\r\nbody\r\n."));
        let took = start.elapsed();
        expect(&r, "250 2.0.0");
        worst = worst.max(took);
    }
    expect(&c.cmd("QUIT"), "221");
    stop.store(true, Ordering::Relaxed);
    // Killing the daemon ends the flooders' waits for the queued checks.
    drop(d);
    let answered: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(answered > 0, "the flood got no AUTH reply at all");
    println!("auth flood: {answered} AUTH replies to the flood; slowest journal 250 {worst:?}");
    assert!(
        worst < Duration::from_millis(1500),
        "a journal-mode 250 took {worst:?} during the AUTH flood"
    );
}

#[test]
fn repeated_failures_from_one_address_are_delayed_then_locked_out() {
    let d = daemon("max_failures = 3\nfailure_window = \"1h\"\nfailure_delay = \"400ms\"\n");
    let failures = AtomicUsize::new(0);
    let mut c = Client::from_stream(connect_from("127.0.0.3", d.addr));
    expect(&c.reply(), "220");
    expect(&c.cmd("EHLO attacker.test"), "250");
    for _ in 0..3 {
        let start = Instant::now();
        expect(
            &c.cmd(&format!("AUTH PLAIN {}", plain("bob", "wrong"))),
            "535 5.7.8",
        );
        assert!(
            start.elapsed() >= Duration::from_millis(400),
            "a failed AUTH was answered after {:?}, before the failure delay",
            start.elapsed()
        );
        failures.fetch_add(1, Ordering::Relaxed);
    }
    // Locked out, even with the right password, on this connection...
    expect(
        &c.cmd(&format!("AUTH PLAIN {}", plain("bob", "hunter2"))),
        "421 4.7.0",
    );
    assert!(c.at_eof());
    // ...and on a new one from the same address.
    let mut again = Client::from_stream(connect_from("127.0.0.3", d.addr));
    expect(&again.reply(), "220");
    expect(&again.cmd("EHLO attacker.test"), "250");
    expect(
        &again.cmd(&format!("AUTH PLAIN {}", plain("bob", "hunter2"))),
        "421 4.7.0",
    );
    assert!(again.at_eof());
    // Another address is not affected.
    let mut other = Client::from_stream(connect_from("127.0.0.4", d.addr));
    expect(&other.reply(), "220");
    expect(&other.cmd("EHLO other.test"), "250");
    expect(
        &other.cmd(&format!("AUTH PLAIN {}", plain("bob", "hunter2"))),
        "235 2.7.0",
    );
    assert_eq!(failures.load(Ordering::Relaxed), 3);
    d.stop();
}
