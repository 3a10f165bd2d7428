//! Builds DSNs from arbitrary remote replies, MX names, recipient and
//! sender addresses and original message bytes, and checks what the builder
//! promises whatever it is given: no bare CR or LF, no line over 998
//! octets, and a delivery-status part whose every line is a known field, a
//! continuation or blank, with no `Action` but `failed`. The decoding of
//! the input is `dsn::fuzz_case`, which the regression tests replay too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::delivery::dsn::fuzz_case;

fuzz_target!(|data: &[u8]| {
    if let Some((violation, dsn)) = fuzz_case(data) {
        panic!("{violation}\n{}", String::from_utf8_lossy(&dsn));
    }
});
