//! Feeds arbitrary bytes, split at arbitrary points, to the sans-IO SMTP
//! server, answering its events the way the ingress driver does. Checks the
//! machine's contract: no panic, consumption never exceeds the input, the
//! output stays proportional to the input, and a paused machine consumes
//! nothing until answered.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::smtp::{Event, PeerInfo, ServerConfig, ServerSession, TlsInfo, Verdict};
use std::sync::Arc;

fuzz_target!(|data: &[u8]| {
    // The first bytes steer the run: chunk sizes and which answers to give.
    let (ctl, input) = data.split_at(data.len().min(8));
    let config = Arc::new(ServerConfig {
        hostname: "fuzz.test".into(),
        max_message_size: 4096,
        max_recipients: 5,
        max_errors: 50,
        offer_starttls: ctl.first().is_some_and(|b| b & 1 == 1),
        auth_enabled: true,
        auth_without_tls: ctl.first().is_some_and(|b| b & 2 == 2),
        allow_undeclared_8bit: ctl.first().is_some_and(|b| b & 4 == 4),
        ..ServerConfig::default()
    });
    let peer = PeerInfo {
        remote: "127.0.0.2:4000".parse().unwrap(),
        local: "127.0.0.1:25".parse().unwrap(),
        relay_allowed: ctl.get(1).is_some_and(|b| b & 1 == 1),
    };
    let mut s = ServerSession::new(config, peer);
    let mut out = Vec::new();
    let mut buf: Vec<u8> = Vec::new();
    let chunk = usize::from(ctl.get(2).copied().unwrap_or(7)).max(1);
    let mut fed = 0usize;
    let mut answers = 0usize;
    for piece in input.chunks(chunk) {
        buf.extend_from_slice(piece);
        fed += piece.len();
        loop {
            let before = buf.len();
            let n = s.handle_input(&buf, 1_800_000_000);
            assert!(n <= buf.len());
            buf.drain(..n);
            let mut moved = n > 0;
            while let Some(ev) = s.poll_event() {
                moved = true;
                answers += 1;
                match ev {
                    Event::StartTls => {
                        buf.clear();
                        s.tls_established(TlsInfo { version: "TLSv1.3", cipher: "X".into() });
                    }
                    Event::Auth { .. } => s.auth_result(answers % 2 == 0),
                    Event::Message(m) => {
                        assert!(m.body.len() <= 4096 + 1024, "body over the limit");
                        s.decide(Verdict::Accepted { queue_id: answers as u64 });
                    }
                }
            }
            s.poll_transmit(&mut out);
            assert!(out.len() <= 64 * (fed + 64) + 4096, "output grew beyond the input");
            if !moved || s.wants_close() || buf.len() == before && n == 0 {
                break;
            }
        }
        // The machine bounds what the driver must keep buffered.
        assert!(buf.len() <= 1000 + chunk, "driver would buffer {} bytes", buf.len());
        if s.wants_close() {
            assert_eq!(s.handle_input(b"NOOP\r\n", 0), 0);
            break;
        }
    }
});
