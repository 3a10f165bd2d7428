//! `sluice-bench run` over real sockets: scenario parsing, a full run of
//! relay-1k through a private Postfix, and the crash machinery against a
//! small Python relay that is SIGKILLed mid-run.

use std::path::{Path, PathBuf};
use std::process::Command;

use sluice_bench::run::{RunReport, Scenario};

const BIN: &str = env!("CARGO_BIN_EXE_sluice-bench");

fn scenarios_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios")
}

fn parse_err(text: &str) -> String {
    Scenario::from_toml_str(text)
        .expect_err("scenario was accepted")
        .to_string()
}

const MINIMAL: &str = "[sut]\nkind = \"external\"\naddress = \"127.0.0.1:2525\"\n";

#[test]
fn unknown_keys_are_rejected_naming_the_key() {
    Scenario::from_toml_str(MINIMAL).unwrap();
    for (text, key) in [
        (format!("deadline_sec = 3\n{MINIMAL}"), "deadline_sec"),
        (format!("{MINIMAL}colour = \"red\"\n"), "colour"),
        (format!("{MINIMAL}[inject]\nmesages = 5\n"), "mesages"),
        (format!("{MINIMAL}[sink]\nprot = 25\n"), "prot"),
        (format!("{MINIMAL}[dns]\nzones = \"x\"\n"), "zones"),
        (
            "[sut]\nkind = \"command\"\ncommand = [\"x\"]\n[crash]\nafter_secs = 1\ntimes = 1\nsignal = 9\n"
                .to_string(),
            "signal",
        ),
        (
            format!("{MINIMAL}[sink.profile.default]\nlatency_ms = 5\n"),
            "latency_ms",
        ),
    ] {
        let e = parse_err(&text);
        assert!(e.contains(key), "error for {key:?} does not name it: {e}");
    }
}

#[test]
fn keys_of_another_kind_and_bad_values_are_rejected() {
    let e = parse_err("[sut]\nkind = \"sluice\"\nconfig = \"\"\nready_line = \"x\"\n");
    assert!(e.contains("sut.ready_line") && e.contains("sluice"), "{e}");
    let e = parse_err("[sut]\nkind = \"sluice\"\n");
    assert!(e.contains("sut.config"), "{e}");
    let e = parse_err("[sut]\nkind = \"external\"\naddress = \"192.0.2.1:25\"\n");
    assert!(e.contains("non-loopback"), "{e}");
    let e = parse_err(&format!("{MINIMAL}[crash]\nafter_secs = 1\n"));
    assert!(e.contains("[crash]"), "{e}");
    let e = parse_err("[sut]\nkind = \"command\"\ncommand = [\"x\"]\nready_line = \"(a|b)\"\n");
    assert!(e.contains("ready_line"), "{e}");
    let e = parse_err(&format!(
        "{MINIMAL}[inject]\nmessages = 5\nduration_secs = 2\n"
    ));
    assert!(e.contains("duration_secs"), "{e}");
    let e = parse_err(&format!("{MINIMAL}[inject]\nconnections = 0\n"));
    assert!(e.contains("connections"), "{e}");
    let e = parse_err(&format!(
        "{MINIMAL}[inject]\ndomains = 4\ndomain_weights = [\"d4.test:0.5\"]\n"
    ));
    assert!(e.contains("d4.test"), "{e}");
    let e = parse_err(&format!(
        "{MINIMAL}[steady]\nfrom_fraction = 0.9\nto_fraction = 0.5\n"
    ));
    assert!(e.contains("[steady]"), "{e}");
}

#[test]
fn domain_weights_and_steady_reach_the_options() {
    let s = Scenario::from_toml_str(&format!(
        "{MINIMAL}[inject]\ndomains = 4\ndomain_weights = [\"d1.test:0.05\"]\n[steady]\nexclude = [\"d1.test\"]\n"
    ))
    .unwrap();
    let o = s.inject_options("127.0.0.1:2525".parse().unwrap()).unwrap();
    assert_eq!(o.domain_weights.len(), 1);
    assert_eq!(o.domain_weights[0].domain, "d1.test");
    assert_eq!(s.steady.exclude, ["d1.test"]);
    assert_eq!((s.steady.from_fraction, s.steady.to_fraction), (0.05, 0.95));
}

#[test]
fn committed_scenarios_parse() {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(scenarios_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let s = Scenario::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            names.push(s.display_name().to_string());
        }
    }
    names.sort();
    assert_eq!(
        names,
        [
            "crash",
            "demo",
            "fanout",
            "hung",
            "hung-baseline",
            "many-domains",
            "relay-1k",
            "relay-1k-journal",
            "relay-1k-postfix",
            "throttled",
            "throttled-baseline"
        ]
    );
}

fn run(scenario: &Path, extra: &[&str]) -> (i32, String, RunReport) {
    let json = scenario.with_extension("json");
    let out = Command::new(BIN)
        .arg("run")
        .arg(scenario)
        .arg("--json")
        .arg(&json)
        .arg("--quiet")
        .args(extra)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let text = std::fs::read_to_string(&json)
        .unwrap_or_else(|e| panic!("no JSON report ({e}); stdout:\n{stdout}\nstderr:\n{stderr}"));
    let report: RunReport = serde_json::from_str(&text).unwrap();
    (out.status.code().unwrap_or(-1), stdout, report)
}

/// The value printed in the table row `name`.
fn table_value<'a>(table: &'a str, name: &str) -> &'a str {
    table
        .lines()
        .find_map(|l| {
            let l = l.trim_start();
            l.strip_prefix(name)
                .filter(|rest| rest.starts_with("  "))
                .map(str::trim)
        })
        .unwrap_or_else(|| panic!("no row {name:?} in:\n{table}"))
}

#[test]
fn relay_1k_through_postfix_loses_nothing() {
    assert!(
        Command::new("sh")
            .args(["-c", "command -v postfix"])
            .status()
            .unwrap()
            .success(),
        "postfix is required (CI installs it: apt-get install -y postfix)"
    );
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("relay-1k-postfix.toml");
    let committed = std::fs::read_to_string(scenarios_dir().join("relay-1k-postfix.toml")).unwrap();
    // Relative script paths are found upwards from the scenario; this copy
    // lives in a temp dir, so name the repository's script directly.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/peers/postfix-relay.sh");
    let text = committed.replace(
        "script = \"tests/peers/postfix-relay.sh\"",
        &format!("script = {:?}", script.display().to_string()),
    );
    assert_ne!(text, committed, "script line not found in the scenario");
    std::fs::write(&scenario, text).unwrap();

    let (code, table, r) = run(&scenario, &["--messages", "2000"]);
    assert_eq!(code, 0, "{table}");
    assert_eq!(table_value(&table, "missing"), "0", "{table}");
    assert_eq!(table_value(&table, "duplicates"), "0", "{table}");
    assert_eq!(table_value(&table, "delivered"), "2000", "{table}");
    assert_eq!(r.inject.accepted_messages, 2000);
    assert_eq!(
        (r.expected, r.delivered, r.missing, r.duplicates),
        (2000, 2000, 0, 0)
    );
    assert!(r.complete);
    let per_domain: u64 = r.domains.values().map(|d| d.delivered).sum();
    assert_eq!(per_domain, 2000);
    assert_eq!(r.domains.len(), 10);
    assert!(r.end_to_end_msgs_per_sec.unwrap() > 0.0);
    assert!(
        r.sut_summary.iter().any(|l| l.contains("sent=2000")),
        "{:?}",
        r.sut_summary
    );
}

/// A minimal SMTP relay: answers 250 to the end of DATA, then forwards the
/// message to the sink whose port it reads from its generated config.
/// No PIPELINING, so the injector runs lock-step.
const RELAY_PY: &str = r#"
import smtplib, socketserver, sys
host, port = sys.argv[1].rsplit(":", 1)
conf = dict(l.split("=", 1) for l in open(sys.argv[2]).read().split() if "=" in l)
sink_port = int(conf["sink_port"])

class Relay(socketserver.StreamRequestHandler):
    def reply(self, line):
        self.wfile.write(line.encode() + b"\r\n")
        self.wfile.flush()

    def handle(self):
        out = smtplib.SMTP("127.0.0.1", sink_port)
        sender, rcpts = "", []
        self.reply("220 relay.test ESMTP")
        while True:
            line = self.rfile.readline()
            if not line:
                return
            cmd = line.decode("latin-1").rstrip("\r\n")
            verb = cmd[:4].upper()
            if verb in ("EHLO", "HELO"):
                self.reply("250 relay.test")
            elif verb == "MAIL":
                sender, rcpts = cmd[10:].strip().strip("<>"), []
                self.reply("250 2.1.0 ok")
            elif verb == "RCPT":
                rcpts.append(cmd[8:].strip().strip("<>"))
                self.reply("250 2.1.5 ok")
            elif verb == "DATA":
                self.reply("354 go ahead")
                body = []
                while True:
                    l = self.rfile.readline()
                    if not l or l == b".\r\n":
                        break
                    body.append(l[1:] if l.startswith(b"..") else l)
                self.reply("250 2.0.0 queued")
                out.sendmail(sender, rcpts, b"".join(body))
            elif verb == "RSET":
                self.reply("250 ok")
            elif verb == "QUIT":
                self.reply("221 bye")
                return
            else:
                self.reply("502 5.5.2 not implemented")

class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True

server = Server((host, int(port)), Relay)
print("relay ready on", sys.argv[1], flush=True)
server.serve_forever()
"#;

#[test]
fn crash_kills_restarts_and_accounts_consistently() {
    let dir = tempfile::tempdir().unwrap();
    let relay = dir.path().join("relay.py");
    std::fs::write(&relay, RELAY_PY).unwrap();
    let scenario = dir.path().join("crash.toml");
    std::fs::write(
        &scenario,
        format!(
            r#"
deadline_secs = 5
[sut]
kind = "command"
command = ["python3", {relay:?}, "{{listen}}", "{{config}}"]
config = "sink_port={{sink_port}} state={{state_dir}} dns={{dns}}"
ready_line = "^relay ready on 127\\.0\\.0\\.1:\\d+$"
[inject]
connections = 8
messages = 3000
size = 1024
domains = 4
[sink]
mx_listeners = false
[crash]
after_fraction = 0.3
times = 2
"#,
            relay = relay.display().to_string()
        ),
    )
    .unwrap();

    let (code, table, r) = run(&scenario, &[]);
    let c = r.crash.clone().expect("no crash report");
    assert_eq!((c.planned, c.kills, c.restarts), (2, 2, 2), "{table}");
    assert!(c.error.is_none(), "{table}");
    assert_eq!(c.events.len(), 2);
    assert!(
        c.events[0].injected_before >= 900 && c.events[1].injected_before >= 1800,
        "{table}"
    );
    let per_kill: u64 = c.events.iter().map(|e| e.failed_transactions).sum();
    assert_eq!(per_kill, c.failed_transactions);
    // Lock-step: at most one transaction in flight per connection.
    assert!(c.failed_transactions <= 2 * 8, "{table}");
    assert_eq!(
        r.inject.aborted_transactions, c.failed_transactions,
        "{table}"
    );
    assert!(table.contains("2 of 2 kill(s), 2 restart(s)"), "{table}");
    // The injector rode the restarts out and used up the message budget.
    assert_eq!(
        r.inject.transactions + r.inject.aborted_transactions,
        3000,
        "{table}"
    );
    assert_eq!(r.expected, r.inject.accepted_recipients);
    assert!(r.expected >= 3000 - 16, "{table}");
    // Every acknowledged recipient is delivered or missing, and anything
    // else that arrived was never acknowledged.
    assert_eq!(
        r.delivered + r.missing,
        r.expected + r.unacknowledged_delivered,
        "{table}"
    );
    assert!(
        r.unacknowledged_delivered <= c.failed_transactions,
        "{table}"
    );
    assert_eq!(r.duplicates, 0, "{table}");
    assert_eq!(code, if r.missing == 0 { 0 } else { 3 }, "{table}");
    // Placeholders reached the command and its config: the relay found the sink.
    assert!(r.delivered > 0, "{table}");
}
