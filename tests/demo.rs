//! The README's first command, at a smaller size: `sluice demo` relays
//! through the simulated Internet (bench DNS stub and sink) and checks that
//! every acknowledged recipient arrived exactly once.

use std::process::Command;

#[test]
fn demo_relays_every_acknowledged_recipient_exactly_once() {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args([
            "demo",
            "--messages",
            "3000",
            "--connections",
            "10",
            "--domains",
            "100",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");
    for want in [
        "expected recipients        3000",
        "missing                    0",
        "duplicates                 0",
        "complete                   yes",
    ] {
        assert!(stdout.contains(want), "{want:?} missing in\n{stdout}");
    }
    // The bouncing receiver (d2.test) refuses everything: bounced, not lost.
    let d2 = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("d2.test"))
        .unwrap_or_else(|| panic!("no d2.test row in\n{stdout}"));
    let cols: Vec<&str> = d2.split_whitespace().collect();
    assert_eq!(cols[1], "0", "{d2}");
    assert!(cols[3].parse::<u64>().unwrap() > 0, "{d2}");
    assert!(
        stdout
            .contains("check: every acknowledged recipient was delivered or bounced exactly once"),
        "{stdout}"
    );
}
