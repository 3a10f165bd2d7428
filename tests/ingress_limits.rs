//! Per-client limits over real sockets: sessions per address and per /24,
//! the session lifetime, the junk-command cap, NOOP before EHLO not keeping
//! a session alive, and one deadline for the whole TLS handshake.

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn connect_from(src: &str, to: SocketAddr) -> Client {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(&format!("{src}:0").parse::<SocketAddr>().unwrap().into())
        .unwrap();
    sock.connect(&to.into()).unwrap();
    Client::from_stream(sock.into())
}

/// Sends `line` every `every` until `stop` or a write fails.
fn keep_sending(mut s: TcpStream, line: &'static [u8], every: Duration, stop: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            if s.write_all(line).is_err() {
                break;
            }
            std::thread::sleep(every);
        }
    });
}

/// Reads replies until one starts with `421`, returning it; gives up after
/// 10 s of other replies (a client kept busy would never see one).
fn until_421(c: &mut Client) -> String {
    let start = Instant::now();
    loop {
        let r = c.reply();
        if r.starts_with("421") {
            return r;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no 421 after 10 s; last reply {r}"
        );
    }
}

/// Sends NOOP every 200 ms (so the idle timeout never fires) until the
/// session is cut with a 421; returns the reply and how long after `start`
/// it came.
fn busy_until_421(c: &mut Client, start: Instant) -> (String, Duration) {
    let stop = Arc::new(AtomicBool::new(false));
    keep_sending(
        c.stream.try_clone().unwrap(),
        b"NOOP\r\n",
        Duration::from_millis(200),
        stop.clone(),
    );
    let r = until_421(c);
    let took = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    (r, took)
}

#[test]
fn sessions_per_address_and_per_network_are_capped() {
    // Defaults: 20 per address and 100 per /24 outside relay_networks
    // (127.0.0.1/32); no per-address cap for relay clients.
    let d = Daemon::start("");
    let mut held = Vec::new();
    for _ in 0..20 {
        let mut c = connect_from("127.0.0.5", d.addr);
        expect(&c.reply(), "220 ");
        held.push(c);
    }
    let mut over = connect_from("127.0.0.5", d.addr);
    expect(
        &over.reply(),
        "421 4.7.0 Too many connections from your address",
    );
    assert!(over.at_eof());
    // Another address is served.
    let mut other = connect_from("127.0.0.6", d.addr);
    expect(&other.reply(), "220 ");
    // A relay client is not capped per address.
    for _ in 0..30 {
        let mut c = connect_from("127.0.0.1", d.addr);
        expect(&c.reply(), "220 ");
        held.push(c);
    }
    // Once one of the 20 leaves, the address gets a slot again.
    let mut gone = held.swap_remove(0);
    expect(&gone.cmd("QUIT"), "221");
    assert!(gone.at_eof());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut c = connect_from("127.0.0.5", d.addr);
        let r = c.reply();
        if r.starts_with("220 ") {
            break;
        }
        // The server closes its side just before it uncounts the session.
        assert!(Instant::now() < deadline, "no slot after a QUIT: {r}");
        std::thread::sleep(Duration::from_millis(20));
    }

    // 100 sessions from one /24, spread over five addresses: the 101st
    // from a sixth address of that /24 is refused, another /24 is not.
    let mut net = Vec::new();
    for host in 1..=5 {
        for _ in 0..20 {
            let mut c = connect_from(&format!("127.0.3.{host}"), d.addr);
            expect(&c.reply(), "220 ");
            net.push(c);
        }
    }
    let mut over = connect_from("127.0.3.6", d.addr);
    expect(
        &over.reply(),
        "421 4.7.0 Too many connections from your address",
    );
    let mut elsewhere = connect_from("127.0.4.1", d.addr);
    expect(&elsewhere.reply(), "220 ");
    drop((held, net, other, elsewhere));
    d.stop();
}

#[test]
fn a_session_is_closed_at_its_lifetime_even_when_busy() {
    // 127.0.0.1 is the default relay_networks; 127.0.0.5 is outside it.
    let d = Daemon::start("[smtp]\nlisten = [\"127.0.0.1:0\"]\nmax_session_duration = \"2s\"\n");
    let mut relay = Client::connect(d.addr);
    expect(&relay.reply(), "220 ");
    expect(&relay.cmd("EHLO feeder.test"), "250");
    let mut c = connect_from("127.0.0.5", d.addr);
    let start = Instant::now();
    expect(&c.reply(), "220 ");
    expect(&c.cmd("EHLO client.test"), "250");
    // Activity every 200 ms: the idle timeout never fires.
    let (r, took) = busy_until_421(&mut c, start);
    expect(&r, "421 4.4.2");
    assert!(r.contains("lifetime"), "{r}");
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(5),
        "closed after {took:?}"
    );
    // The relay client, older than the lifetime by now, is not cut: a
    // whole transaction still goes through.
    assert!(start.elapsed() >= Duration::from_secs(2));
    expect(&relay.cmd("MAIL FROM:<a@sender.test>"), "250");
    expect(&relay.cmd("RCPT TO:<b@dest.test>"), "250");
    expect(&relay.cmd("DATA"), "354");
    expect(&relay.cmd("Subject: x\r\n\r\nbody\r\n."), "250 2.0.0");
    expect(&relay.cmd("QUIT"), "221");
    assert_eq!(d.stop().recipients, 1);
}

#[test]
fn relay_clients_have_their_own_lifetime() {
    let d = Daemon::start(
        "[smtp]\nlisten = [\"127.0.0.1:0\"]\nmax_session_duration = 0\n\
         relay_max_session_duration = \"1s\"\n",
    );
    let mut c = Client::connect(d.addr);
    let start = Instant::now();
    expect(&c.reply(), "220 ");
    expect(&c.cmd("EHLO feeder.test"), "250");
    // Activity every 200 ms: the idle timeout never fires.
    let (r, took) = busy_until_421(&mut c, start);
    expect(&r, "421 4.4.2");
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(4),
        "closed after {took:?}"
    );
    d.stop();
}

#[test]
fn commands_without_a_transaction_are_capped() {
    // The default cap is 100 such commands; EHLO is one of them.
    let d = Daemon::start("");
    let mut c = Client::connect(d.addr);
    expect(&c.reply(), "220 ");
    expect(&c.cmd("EHLO client.test"), "250");
    // A message resets the count.
    for _ in 0..90 {
        expect(&c.cmd("NOOP"), "250 2.0.0");
    }
    expect(&c.cmd("MAIL FROM:<a@sender.test>"), "250");
    expect(&c.cmd("RCPT TO:<b@dest.test>"), "250");
    expect(&c.cmd("DATA"), "354");
    expect(&c.cmd("Subject: x\r\n\r\nbody\r\n."), "250 2.0.0");
    // Then 100 more are allowed, and the 101st is refused.
    let mut burst = Vec::new();
    for i in 0..101 {
        burst.extend_from_slice(if i % 2 == 0 { b"RSET\r\n" } else { b"NOOP\r\n" });
    }
    c.send(&burst);
    for _ in 0..100 {
        expect(&c.reply(), "250 2.0.0");
    }
    expect(
        &c.reply(),
        "421 4.7.0 sluice.test Too many commands without a transaction",
    );
    assert!(c.at_eof());
    assert_eq!(d.stop().recipients, 1);
}

#[test]
fn bdat_0_without_last_does_not_reset_the_junk_cap() {
    // Default cap 100. Each round: a transaction that never carries a
    // message (BDAT 0 without LAST), 50 NOOPs, RSET: 51 junk commands.
    let d = Daemon::start("");
    let mut c = Client::connect(d.addr);
    expect(&c.reply(), "220 ");
    expect(&c.cmd("EHLO client.test"), "250");
    let mut round = b"MAIL FROM:<a@sender.test>\r\nRCPT TO:<b@dest.test>\r\nBDAT 0\r\n".to_vec();
    for _ in 0..50 {
        round.extend_from_slice(b"NOOP\r\n");
    }
    round.extend_from_slice(b"RSET\r\n");
    // Three rounds then QUIT: without the cap the client sees 221.
    let mut all = round.repeat(3);
    all.extend_from_slice(b"QUIT\r\n");
    c.send(&all);
    let mut replies = 0;
    let last = loop {
        let r = c.reply();
        if r.starts_with("421") || r.starts_with("221") {
            break r;
        }
        expect(&r, "250 ");
        replies += 1;
    };
    expect(
        &last,
        "421 4.7.0 sluice.test Too many commands without a transaction",
    );
    // EHLO, 51 + 3 + 48 commands: the 100th junk one is the last served.
    assert_eq!(replies, 3 + 51 + 3 + 48, "replies before the 421");
    assert!(c.at_eof());
    assert_eq!(d.stop().recipients, 0);
}

#[test]
fn noop_before_ehlo_does_not_keep_a_session_alive() {
    let d = Daemon::start("[smtp]\nlisten = [\"127.0.0.1:0\"]\ncommand_timeout = \"1s\"\n");
    let mut c = Client::connect(d.addr);
    expect(&c.reply(), "220 ");
    let start = Instant::now();
    // Activity every 200 ms: the idle timeout never fires.
    let (r, took) = busy_until_421(&mut c, start);
    expect(&r, "421 4.4.2");
    assert!(took < Duration::from_secs(3), "closed after {took:?}");
    d.stop();
}

#[test]
fn the_tls_handshake_has_one_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = write_cert(dir.path());
    let d = Daemon::start_in(
        dir,
        &format!(
            "[smtp]\nlisten = [\"127.0.0.1:0\"]\ncommand_timeout = \"1s\"\n\
             [tls]\ncertificate = \"{}\"\nprivate_key = \"{}\"\n",
            cert.display(),
            key.display()
        ),
    );
    let mut c = Client::connect(d.addr);
    expect(&c.reply(), "220 ");
    expect(&c.cmd("EHLO client.test"), "250");
    expect(&c.cmd("STARTTLS"), "220 2.0.0");
    let start = Instant::now();
    // A TLS record announcing a 512-byte ClientHello, then its bytes one
    // every 200 ms: each read is well within the timeout, the whole is not.
    let mut w = c.stream.try_clone().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    std::thread::spawn(move || {
        let mut bytes = vec![
            0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
        ];
        bytes.resize(5 + 512, 0x2a);
        for b in bytes {
            if stop2.load(Ordering::Relaxed) || w.write_all(&[b]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    let mut rest = Vec::new();
    // EOF (or a reset) ends the read.
    let _ = c.stream.read_to_end(&mut rest);
    let took = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    assert!(
        took < Duration::from_secs(3),
        "handshake cut after {took:?}"
    );
    d.stop();
}

#[test]
fn the_caps_are_reloaded_on_sighup() {
    let d = Daemon::start("[smtp]\nlisten = [\"127.0.0.1:0\"]\nmax_connections_per_ip = 1\n");
    let mut first = connect_from("127.0.0.5", d.addr);
    expect(&first.reply(), "220 ");
    let mut second = connect_from("127.0.0.5", d.addr);
    expect(&second.reply(), "421 4.7.0");
    let path = d.path("sluice.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace("max_connections_per_ip = 1", "max_connections_per_ip = 2"),
    )
    .unwrap();
    d.signal(nix::sys::signal::Signal::SIGHUP);
    d.wait_log("sluice: reloaded", 1);
    let mut again = connect_from("127.0.0.5", d.addr);
    expect(&again.reply(), "220 ");
    let mut third = connect_from("127.0.0.5", d.addr);
    expect(&third.reply(), "421 4.7.0");
    drop((first, again));
    d.stop();
}
