//! Feeds arbitrary server bytes, in arbitrary chunks, to the sans-IO SMTP
//! client with transactions queued, and checks its central invariant: every
//! recipient gets exactly one outcome and every transaction one `TxnDone`,
//! whatever the server sends, once the connection ends.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sluice::smtp::client::{ClientConfig, ClientEvent, ClientSession, Recipient, Transaction};
use std::collections::HashMap;
use std::sync::Arc;

fuzz_target!(|data: &[u8]| {
    let (ctl, input) = data.split_at(data.len().min(4));
    let cfg = Arc::new(ClientConfig {
        max_rcpt_per_txn: usize::from(ctl.first().copied().unwrap_or(2) % 4) + 1,
        max_pipelined_txns: usize::from(ctl.get(1).copied().unwrap_or(1) % 4) + 1,
        prefer_bdat: ctl.get(2).is_some_and(|b| b & 1 == 1),
        ..ClientConfig::default()
    });
    let mut s = ClientSession::new(cfg);
    let mut expected: HashMap<(u64, usize), u32> = HashMap::new();
    let mut done: HashMap<u64, u32> = HashMap::new();
    for t in 0..3u64 {
        let recipients: Vec<Recipient> = (0..3)
            .map(|i| Recipient { index: i, address: Arc::from(format!("r{i}@d{t}.test")) })
            .collect();
        for r in &recipients {
            expected.insert((t, r.index), 0);
        }
        s.enqueue(Transaction {
            id: t,
            reverse_path: Arc::from("s@x.test"),
            recipients,
            body: Bytes::from_static(b"Subject: x\r\n\r\n.hi\r\n"),
            eight_bit: false,
            smtputf8: false,
        });
    }
    let chunk = usize::from(ctl.get(3).copied().unwrap_or(5)).max(1);
    let mut out = Vec::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut closed = false;
    let mut drain = |s: &mut ClientSession, closed: &mut bool| {
        while let Some(ev) = s.poll_event() {
            match ev {
                ClientEvent::RcptOutcome { txn, rcpt, .. } => {
                    *expected.get_mut(&(txn, rcpt)).expect("outcome for an unknown recipient") += 1;
                }
                ClientEvent::TxnDone { txn } => *done.entry(txn).or_default() += 1,
                ClientEvent::StartTls => s.tls_established(),
                ClientEvent::Closed { .. } => *closed = true,
                ClientEvent::Ready => {}
            }
        }
    };
    for piece in input.chunks(chunk) {
        while s.poll_transmit(&mut out).is_some() || !out.is_empty() {
            out.clear();
        }
        buf.extend_from_slice(piece);
        let n = s.handle_input(&buf);
        assert!(n <= buf.len());
        buf.drain(..n);
        drain(&mut s, &mut closed);
        if closed {
            break;
        }
    }
    if !closed {
        s.handle_closed();
        drain(&mut s, &mut closed);
    }
    assert!(closed, "no Closed event after the connection ended");
    for (k, n) in &expected {
        assert_eq!(*n, 1, "recipient {k:?} got {n} outcomes");
    }
    for t in 0..3u64 {
        assert_eq!(done.get(&t).copied().unwrap_or(0), 1, "txn {t}");
    }
});
