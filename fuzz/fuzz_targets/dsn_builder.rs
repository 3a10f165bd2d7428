//! Builds DSNs from arbitrary remote replies, MX names, recipient and
//! sender addresses and original message bytes, and checks what the builder
//! promises whatever it is given: no bare CR or LF, no line over 998
//! octets, and a delivery-status part whose every line is a known field, a
//! continuation or blank, with no `Action` but `failed`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::delivery::dsn::{invariant_violation, render, DsnInput, FailedRcpt};

fuzz_target!(|data: &[u8]| {
    // Fields are separated by 0xFF, which valid UTF-8 never contains.
    let mut parts = data.split(|&b| b == 0xFF);
    let mut next = || String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let (to, rcpt_a, rcpt_b, mta, reply) = (next(), next(), next(), next(), next());
    let original = data
        .iter()
        .rposition(|&b| b == 0xFF)
        .map_or(&[][..], |i| &data[i + 1..]);
    let failed = vec![
        FailedRcpt {
            address: &rcpt_a,
            status: reply.chars().take(7).collect(),
            remote_mta: Some(&mta),
            diagnostic: format!("smtp; {reply}"),
        },
        FailedRcpt {
            address: &rcpt_b,
            status: "5.0.0".into(),
            remote_mta: None,
            diagnostic: reply.clone(),
        },
    ];
    let dsn = render(&DsnInput {
        hostname: "fuzz.test",
        to: &to,
        queue_id: 1,
        original,
        date: "Sun, 22 Nov 2026 23:05:09 +0000",
        unique: 7,
        failed,
    });
    if let Some(v) = invariant_violation(&dsn) {
        panic!("{v}\n{}", String::from_utf8_lossy(&dsn));
    }
});
