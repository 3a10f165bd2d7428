//! The README's first command, at a smaller size: `sluice demo` runs the
//! daemon on its embedded configuration under the bench injector and checks
//! that every acknowledged recipient was counted by its owning shard.

use std::process::Command;

#[test]
fn demo_runs_and_every_acknowledged_recipient_is_counted() {
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
    assert!(stdout.contains("accepted messages      3000"), "{stdout}");
    assert!(
        stdout.contains("sluice: accepted 3000 recipients"),
        "{stdout}"
    );
    assert!(
        stdout.contains("check: every recipient acknowledged"),
        "{stdout}"
    );
}
