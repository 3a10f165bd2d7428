//! 10,000 concurrent idle inbound connections are held, then closed by the
//! command timeout; sluice's peak RSS is printed for docs/benchmarks.md.

mod common;
use common::*;
use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};

const CONNECTIONS: usize = 10_000;

fn vm_hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn ten_thousand_idle_connections_are_held_then_timed_out() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    assert!(
        hard as usize > CONNECTIONS + 100,
        "RLIMIT_NOFILE hard limit {hard} is too low"
    );

    let d = Daemon::start("[smtp]\nlisten = [\"127.0.0.1:0\"]\ncommand_timeout = \"20s\"\n");
    let rss_before = vm_hwm_kib(d.child.id());
    let start = Instant::now();
    let mut conns = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        let s = TcpStream::connect(d.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        conns.push(s);
    }
    // Every connection is being served: each has its greeting.
    for s in conns.iter_mut() {
        let mut greeting = [0u8; 5];
        s.read_exact(&mut greeting).unwrap();
        assert_eq!(&greeting, b"220 s");
    }
    let opened = start.elapsed();
    assert!(
        opened < Duration::from_secs(18),
        "opening took {opened:?}; the timeout would fire first"
    );
    let rss_held = vm_hwm_kib(d.child.id());

    // Then each is closed by the server with 421 4.4.2 after the timeout.
    for s in conns.iter_mut() {
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).unwrap();
        let text = String::from_utf8_lossy(&rest);
        assert!(text.contains("\r\n421 4.4.2 "), "{text}");
    }
    let rss_peak = vm_hwm_kib(d.child.id());
    println!(
        "idle-connections: {CONNECTIONS} held, opened in {opened:?}; sluice VmHWM before={rss_before} KiB held={rss_held} KiB peak={rss_peak} KiB"
    );
    d.stop();
}
