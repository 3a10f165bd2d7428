//! The binary itself: the sink writes its summary when terminated, and the
//! injector's exit status and JSON output are usable by scripts.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use common::{message, Client};

const BIN: &str = env!("CARGO_BIN_EXE_sluice-bench");

/// Kills the child if the test fails before it exits on its own.
struct Reap(Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_sink(extra: &[&str]) -> (Reap, SocketAddr, BufReader<std::process::ChildStdout>) {
    let mut child = Command::new(BIN)
        .args(["sink", "--listen", "127.0.0.1:0", "--threads", "1"])
        .args(extra)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("sluice-bench sink listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .unwrap();
    (Reap(child), addr, out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_writes_summary_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let summary = dir.path().join("summary.json");
    let (mut child, addr, mut out) = spawn_sink(&["--summary", summary.to_str().unwrap()]);
    let (mut c, _) = Client::ehlo(addr).await;
    for i in 0..3 {
        let r = c
            .bdat_message("s@src.test", "r@d7.test", &message(&format!("sig{i}@t")))
            .await;
        assert!(r.starts("250"));
    }
    c.expect("QUIT", "221").await;
    let status = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.0.wait().unwrap();
    assert!(exit.success(), "sink exited with {exit:?}");
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    assert_eq!(written["messages_accepted"], 3);
    assert_eq!(written["domains"]["d7.test"]["accepted"], 3);
    let mut printed = String::new();
    std::io::Read::read_to_string(&mut out, &mut printed).unwrap();
    let printed: serde_json::Value = serde_json::from_str(&printed).unwrap();
    assert_eq!(printed["messages_accepted"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inject_cli_reports_json_and_exit_status() {
    let (_sink, addr, _) = spawn_sink(&[]);
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    // Blocking is fine here: the sink is another process.
    let out = Command::new(BIN)
        .args([
            "inject",
            "--target",
            &addr.to_string(),
            "--connections",
            "3",
            "--messages",
            "300",
            "--quiet",
            "--json",
            json.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.contains("accepted messages      300"), "{table}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["accepted_messages"], 300);
    assert_eq!(report["connect_errors"], 0);

    // Nothing listens on a port that was just released: exit status 2.
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let out = Command::new(BIN)
        .args([
            "inject",
            "--target",
            &free.to_string(),
            "--connections",
            "2",
            "--messages",
            "10",
            "--quiet",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[test]
fn cli_refuses_non_loopback_targets() {
    for target in [
        "192.0.2.1:25",
        "0.0.0.0:25",
        "mx.example.com:25",
        "[2001:db8::1]:25",
    ] {
        let out = Command::new(BIN)
            .args(["inject", "--target", target, "--messages", "1"])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{target} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("non-loopback"), "{target}: {err}");
    }
    let out = Command::new(BIN)
        .args(["sink", "--listen", "0.0.0.0:2525"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("non-loopback"));
}
