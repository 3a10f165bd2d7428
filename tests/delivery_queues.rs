//! Specific queues and the shard's connection budget, over real sockets:
//! sluice resolves through the bench DNS stub and delivers to the bench
//! sink, which measures what each queue's limits allowed on the wire.

mod common;
use common::lab::{send, Lab};
use common::*;

const ZONE: &str = r#"
[[record]]
name = "big1.test"
type = "MX"
data = "10 mx.big.test"
[[record]]
name = "mx.big.test"
type = "A"
data = "127.0.0.1"
[[record]]
name = "dead.test"
type = "MX"
data = "10 mx-dead.lab.test"
[[record]]
name = "mx-dead.lab.test"
type = "A"
data = "127.0.0.2"
"#;

fn zone_with_domains(n: usize) -> String {
    let mut z = ZONE.to_string();
    for i in 0..n {
        z.push_str(&format!(
            "[[record]]\nname = \"e{i}.test\"\ntype = \"MX\"\ndata = \"10 mx.lab.test\"\n"
        ));
    }
    z
}

#[test]
fn domain_lists_and_mx_patterns_put_destinations_in_queues_with_their_own_limits() {
    let lab = Lab::start(
        ZONE,
        "[default]\n",
        r#"
[delivery]
tls = "none"
[[delivery.queues]]
name = "listed"
domains = ["d1.test"]
max_rcpt_per_txn = 1
[[delivery.queues]]
name = "provider"
mx = ["*.big.test"]
max_rcpt_per_txn = 2
max_connections_per_destination = 1
"#,
    );
    let rcpts = [
        "x@d1.test",
        "y@d1.test",
        "a@big1.test",
        "b@big1.test",
        "c@big1.test",
        "z@d2.test",
    ];
    send(lab.sluice(), "s@sender.test", &rcpts, 20);
    let r = lab.wait_sink("120 recipients", |r| r.recipients_accepted >= 120);
    assert_eq!((r.recipients_accepted, r.duplicates), (120, 0));
    // Transactions per domain show each queue's max_rcpt_per_txn: 1 for the
    // listed domain, 2 for the provider matched by MX, 100 for general.
    assert_eq!(r.domains["d1.test"].messages, 40, "{r:#?}");
    assert_eq!(r.domains["big1.test"].messages, 40, "{r:#?}");
    assert_eq!(r.domains["d2.test"].messages, 20, "{r:#?}");
    let peak = r.domains["big1.test"]
        .peak_connections_per_ip
        .values()
        .max();
    assert_eq!(peak, Some(&1), "{r:#?}");
    for (domain, queue) in [
        ("d1.test", "listed"),
        ("big1.test", "provider"),
        ("d2.test", "general"),
    ] {
        let lines = lab.wait_log(
            &[
                "\"event\":\"delivered\"",
                &format!("\"destination\":\"{domain}\""),
            ],
            1,
        );
        for l in &lines {
            assert!(l.contains(&format!("\"queue\":\"{queue}\"")), "{l}");
        }
    }
}

#[test]
fn a_full_connection_budget_closes_the_least_recently_used_idle_connection() {
    // One shard with room for two connections, and idle connections that
    // would otherwise stay open for five minutes: every new destination
    // must take the slot of the connection idle the longest.
    let lab = Lab::start(
        &zone_with_domains(5),
        "[default]\n",
        "cores = [0]\n[delivery]\ntls = \"none\"\nmax_connections = 2\nidle_timeout = \"300s\"\n",
    );
    for i in 0..5 {
        send(lab.sluice(), "s@sender.test", &[&format!("r@e{i}.test")], 1);
        lab.wait_sink("delivery", |r| r.recipients_accepted == i as u64 + 1);
    }
    // e0 was idle the longest when e2 came, then e1 for e3, e2 for e4.
    let r = lab.wait_sink("three evictions", |r| r.active_connections == 2);
    assert_eq!(r.connections, 5, "{r:#?}");
    assert_eq!(
        r.peak_connections_per_ip.get("127.0.0.1"),
        Some(&2),
        "{r:#?}"
    );
    // The two most recent destinations still hold theirs: more mail for
    // them needs no new connection.
    send(
        lab.sluice(),
        "s@sender.test",
        &["r2@e3.test", "r2@e4.test"],
        1,
    );
    let r = lab.wait_sink("delivery", |r| r.recipients_accepted == 7);
    assert_eq!(r.connections, 5, "{r:#?}");
    let s = lab.stop();
    assert_eq!(s.delivered, 7);
}

#[test]
fn min_connections_stay_open_past_the_idle_timeout() {
    let lab = Lab::start(
        ZONE,
        "[default]\n",
        r#"
[delivery]
tls = "none"
idle_timeout = "1s"
[[delivery.queues]]
name = "warm"
domains = ["d1.test"]
min_connections_per_destination = 1
"#,
    );
    send(
        lab.sluice(),
        "s@sender.test",
        &["a@d1.test", "b@d2.test"],
        1,
    );
    lab.wait_sink("delivery", |r| r.recipients_accepted == 2);
    // d2's connection goes after its idle second; d1's stays.
    let closed_at = std::time::Instant::now();
    let r = lab.wait_sink("d2's connection closed", |r| r.active_connections == 1);
    assert_eq!(r.connections, 2);
    // Watch for three more idle timeouts: d1's connection must outlive them.
    while closed_at.elapsed() < std::time::Duration::from_secs(3) {
        let r = lab.sink.snapshot();
        assert_eq!(r.active_connections, 1, "{r:#?}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    send(lab.sluice(), "s@sender.test", &["c@d1.test"], 1);
    let r = lab.wait_sink("delivery", |r| r.recipients_accepted == 3);
    assert_eq!(r.connections, 2, "the warm connection was reused: {r:#?}");
}

#[test]
fn a_queue_falls_back_to_its_relay_after_n_failed_attempts() {
    // dead.test's only MX refuses connections; after two failed attempts
    // its queue sends the mail through the fallback relay (the sink).
    let lab = Lab::start(
        ZONE,
        "[default]\n",
        r#"
[delivery]
tls = "none"
connect_timeout = "2s"
retry = { intervals = ["1s"] }
[[delivery.queues]]
name = "deadq"
domains = ["dead.test"]
fallback = { after_attempts = 2, hosts = ["mx.lab.test"] }
"#,
    );
    send(
        lab.sluice(),
        "s@sender.test",
        &["u@dead.test", "v@dead.test"],
        2,
    );
    let r = lab.wait_sink("fallback delivery", |r| r.recipients_accepted == 4);
    assert_eq!(r.duplicates, 0);
    assert_eq!(r.domains["dead.test"].accepted, 4);
    let delivered = lab.wait_log(&["\"event\":\"delivered\""], 4);
    // The log is flushed in batches: everything before the deliveries is in.
    let deferred = lab.log_lines(&["\"event\":\"deferred\"", "\"destination\":\"dead.test\""]);
    assert_eq!(deferred.len(), 8, "two failed attempts per recipient");
    for l in &delivered {
        assert!(l.contains("\"destination\":\"fallback:deadq\""), "{l}");
        assert!(l.contains("\"queue\":\"deadq\""), "{l}");
        assert!(l.contains("\"attempt\":3"), "{l}");
    }
    let s = lab.stop();
    assert_eq!((s.delivered, s.bounced), (4, 0));
}

#[test]
fn bad_queue_definitions_are_refused_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("q.toml");
    std::fs::write(
        &p,
        "[delivery]\n[[delivery.queues]]\nname = \"q\"\ndomains = [\"a*.test\"]\n",
    )
    .unwrap();
    let (ok, out) = run(std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("check-config")
        .arg(&p));
    assert!(!ok);
    assert!(out.contains("q.toml") && out.contains("a*.test"), "{out}");
    std::fs::write(
        &p,
        "[delivery]\n[[delivery.queues]]\nname = \"q\"\ndomains = [\"a.test\"]\nmax_conections = 3\n",
    )
    .unwrap();
    let (ok, out) = run(std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("check-config")
        .arg(&p));
    assert!(!ok);
    assert!(
        out.contains("q.toml:5") && out.contains("max_conections"),
        "{out}"
    );
}

#[test]
fn a_tight_budget_still_delivers_everything_without_deferrals() {
    // Twenty destinations through two connection slots: connections are
    // evicted and replaced constantly, and none may take a transaction it
    // is about to close (that would defer the mail for a retry interval).
    let lab = Lab::start(
        &zone_with_domains(20),
        "[default]\n",
        "cores = [0]\n[delivery]\ntls = \"none\"\nmax_connections = 2\nidle_timeout = \"300s\"\n",
    );
    let rcpts: Vec<String> = (0..20).map(|i| format!("r@e{i}.test")).collect();
    let refs: Vec<&str> = rcpts.iter().map(String::as_str).collect();
    send(lab.sluice(), "s@sender.test", &refs, 10);
    let r = lab.wait_sink("200 recipients", |r| r.recipients_accepted == 200);
    assert_eq!(r.duplicates, 0);
    assert!(
        r.peak_connections_per_ip.get("127.0.0.1") <= Some(&2),
        "{r:#?}"
    );
    lab.wait_log(&["\"event\":\"delivered\""], 200);
    assert_eq!(lab.log_lines(&["\"event\":\"deferred\""]).len(), 0);
}
