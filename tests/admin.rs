//! The control plane against a real daemon: the admin API's token, the
//! `sluicectl` binary (pause, resume, flush, bounce, delete, trace,
//! destinations) and `/metrics`, with the bench DNS stub and sink standing
//! in for the Internet on loopback.

mod common;
use common::lab::{send, Lab};
use common::*;
use std::process::Command;
use std::time::{Duration, Instant};

const ZONE: &str = r#"
[[record]]
name = "grey.test"
type = "MX"
data = "10 mx.lab.test"
"#;

const PROFILE: &str = "[default]\n[domains.\"grey.test\"]\ngreylist = true\n";

/// Long retries: anything delivered after a deferral was flushed.
const CONFIG: &str = "[delivery]\ntls = \"none\"\nretry = { intervals = [\"1h\"] }\n";

fn lab() -> Lab {
    Lab::start(ZONE, PROFILE, CONFIG)
}

fn url(lab: &Lab) -> String {
    format!("http://{}", lab.sluice().admin.expect("admin address"))
}

fn token(lab: &Lab) -> String {
    std::fs::read_to_string(lab.sluice().path("admin.token"))
        .unwrap()
        .trim()
        .to_string()
}

/// Runs `sluicectl --json ARGS` against the lab's daemon; returns its JSON.
fn ctl(lab: &Lab, args: &[&str]) -> serde_json::Value {
    let token_file = lab.sluice().path("admin.token");
    let out = Command::new(env!("CARGO_BIN_EXE_sluicectl"))
        .arg("--url")
        .arg(url(lab))
        .arg("--token-file")
        .arg(&token_file)
        .arg("--json")
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "sluicectl {args:?} failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

fn count(v: &serde_json::Value) -> u64 {
    v["count"]
        .as_u64()
        .unwrap_or_else(|| panic!("no count in {v}"))
}

/// The sink's accepted recipients for `domain`.
fn accepted(lab: &Lab, domain: &str) -> u64 {
    lab.sink
        .snapshot()
        .domains
        .get(domain)
        .map_or(0, |d| d.accepted)
}

/// Polls `f` until it returns `Some`, for up to 30 s.
fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The destination `domain` as `sluicectl destinations` shows it.
fn destination(lab: &Lab, domain: &str) -> serde_json::Value {
    let list = ctl(lab, &["destinations", "--domain", domain]);
    list.as_array()
        .and_then(|a| a.first())
        .cloned()
        .unwrap_or_else(|| panic!("no {domain} in {list}"))
}

#[test]
fn requests_without_the_right_token_get_401() {
    let lab = lab();
    let status = format!("{}/v1/status", url(&lab));
    match ureq::get(&status).call() {
        Err(ureq::Error::Status(401, _)) => {}
        other => panic!("no token: {other:?}"),
    }
    match ureq::get(&status)
        .set("Authorization", "Bearer 0000")
        .call()
    {
        Err(ureq::Error::Status(401, _)) => {}
        other => panic!("wrong token: {other:?}"),
    }
    match ureq::get(&format!("{}/metrics", url(&lab))).call() {
        Err(ureq::Error::Status(401, _)) => {}
        other => panic!("metrics without token: {other:?}"),
    }
    let ok = ureq::get(&status)
        .set("Authorization", &format!("Bearer {}", token(&lab)))
        .call()
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&ok.into_string().unwrap()).unwrap();
    assert!(v["cores"].as_u64().unwrap() >= 1, "{v}");
    // The generated token file is private.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(lab.sluice().path("admin.token"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn a_non_loopback_admin_address_is_refused_without_allow_remote() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("remote.toml");
    std::fs::write(
        &p,
        "[smtp]\nlisten = [\"127.0.0.1:0\"]\n\n[admin]\nlisten = \"0.0.0.0:8025\"\n",
    )
    .unwrap();
    for args in [vec!["check-config"], vec!["serve", "--config"]] {
        let (ok, out) = run(Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(&args)
            .arg(&p));
        assert!(!ok, "{out}");
        assert!(
            out.contains("remote.toml:5")
                && out.contains("admin.listen")
                && out.contains("allow_remote"),
            "{out}"
        );
    }
    std::fs::write(
        &p,
        "[smtp]\nlisten = [\"127.0.0.1:0\"]\n\n[admin]\nlisten = \"0.0.0.0:8025\"\nallow_remote = true\n",
    )
    .unwrap();
    let (ok, out) = run(Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("check-config")
        .arg(&p));
    assert!(ok, "{out}");
}

#[test]
fn pause_holds_a_destination_and_resume_delivers_it() {
    let lab = lab();
    assert_eq!(count(&ctl(&lab, &["pause", "d1.test"])), 1);
    send(lab.sluice(), "s@sender.test", &["a@d1.test"], 3);
    send(lab.sluice(), "s@sender.test", &["b@d2.test"], 3);
    lab.wait_sink("d2's mail", |r| {
        r.domains.get("d2.test").is_some_and(|d| d.accepted == 3)
    });
    // d2's mail went out after d1's was queued: d1 is held, not slow.
    assert_eq!(accepted(&lab, "d1.test"), 0);
    let d1 = destination(&lab, "d1.test");
    assert_eq!(d1["waiting"], 3, "{d1}");
    assert_eq!(d1["paused"], true, "{d1}");
    assert_eq!(d1["rate"], serde_json::Value::Null, "{d1}");
    assert!(d1["oldest_age_secs"].as_f64().is_some(), "{d1}");
    assert_eq!(destination(&lab, "d2.test")["paused"], false);

    assert_eq!(count(&ctl(&lab, &["resume", "d1.test"])), 1);
    lab.wait_sink("d1's mail after resume", |r| {
        r.domains.get("d1.test").is_some_and(|d| d.accepted == 3)
    });
    let d1 = destination(&lab, "d1.test");
    assert_eq!(
        (d1["waiting"].as_u64(), d1["paused"].as_bool()),
        (Some(0), Some(false))
    );
    let s = lab.stop();
    assert_eq!(s.delivered, 6);
}

#[test]
fn flush_retries_a_deferred_recipient_at_once() {
    let lab = lab();
    send(lab.sluice(), "s@sender.test", &["g@grey.test"], 1);
    // Greylisted on the first attempt; the next retry is an hour away.
    let d = eventually("the deferral", || {
        let d = destination(&lab, "grey.test");
        (d["deferred"] == 1).then_some(d)
    });
    assert!(d["next_attempt_secs"].as_f64().unwrap() > 1800.0, "{d}");
    assert_eq!(lab.sink.snapshot().greylisted, 1);
    assert_eq!(count(&ctl(&lab, &["flush", "grey.test"])), 1);
    lab.wait_sink("delivery after flush", |r| r.recipients_accepted == 1);
    let delivered = lab.wait_log(&["\"event\":\"delivered\"", "g@grey.test"], 1);
    assert!(delivered[0].contains("\"attempt\":2"), "{}", delivered[0]);
}

/// Sends one message and returns its queue id from the 250 reply.
fn send_one(d: &Daemon, from: &str, rcpt: &str) -> String {
    let mut c = Client::connect(d.addr);
    expect(&c.reply(), "220");
    expect(&c.cmd("EHLO client.test"), "250");
    expect(&c.cmd(&format!("MAIL FROM:<{from}>")), "250");
    expect(&c.cmd(&format!("RCPT TO:<{rcpt}>")), "250");
    expect(&c.cmd("DATA"), "354");
    let r = c.cmd("Subject: traced\r\n\r\nhello\r\n.");
    expect(&r, "250 2.0.0");
    expect(&c.cmd("QUIT"), "221");
    r.trim()
        .rsplit(' ')
        .next()
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no queue id in {r}"))
}

#[test]
fn trace_shows_a_delivered_message_and_a_queued_one() {
    let lab = lab();
    let id = send_one(lab.sluice(), "s@sender.test", "t@d1.test");
    assert_eq!(id.len(), 16, "{id}");
    let t = eventually("the delivered event", || {
        let t = ctl(&lab, &["trace", &id]);
        t["events"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["event"] == "delivered"))
            .then_some(t)
    });
    let ev = &t["events"][0];
    assert_eq!(ev["recipient"], "t@d1.test", "{t}");
    assert_eq!(ev["message_id"], id.to_uppercase(), "{t}");
    assert_eq!(t["queued"].as_array().map(Vec::len), Some(0), "{t}");

    // A paused destination's message is traced as waiting.
    ctl(&lab, &["pause", "d2.test"]);
    let id2 = send_one(lab.sluice(), "s@sender.test", "w@d2.test");
    let t = eventually("the queued recipient", || {
        let t = ctl(&lab, &["trace", &id2]);
        (t["queued"].as_array().map(Vec::len) == Some(1)).then_some(t)
    });
    assert_eq!(t["queued"][0]["state"], "waiting", "{t}");
    assert_eq!(t["queued"][0]["recipient"], "w@d2.test", "{t}");
}

#[test]
fn bounce_sends_a_dsn_and_delete_drops_silently() {
    let lab = lab();
    ctl(&lab, &["pause", "d1.test"]);
    ctl(&lab, &["pause", "d2.test"]);
    send(lab.sluice(), "s@sender.test", &["x@d1.test"], 2);
    send(lab.sluice(), "s@sender.test", &["y@d2.test"], 3);
    eventually("queued recipients", || {
        (destination(&lab, "d1.test")["waiting"] == 2
            && destination(&lab, "d2.test")["waiting"] == 3)
            .then_some(())
    });

    // A filter is required: an empty one would match everything.
    let out = Command::new(env!("CARGO_BIN_EXE_sluicectl"))
        .arg("--url")
        .arg(url(&lab))
        .arg("--token-file")
        .arg(lab.sluice().path("admin.token"))
        .arg("delete")
        .output()
        .unwrap();
    assert!(!out.status.success());

    assert_eq!(count(&ctl(&lab, &["bounce", "--domain", "d1.test"])), 2);
    // One DSN per message to the sender's domain, from the null sender.
    lab.wait_sink("two DSNs", |r| {
        r.domains
            .get("sender.test")
            .is_some_and(|d| d.accepted == 2)
    });
    let bounced = lab.wait_log(&["\"event\":\"bounced\"", "x@d1.test"], 2);
    assert!(
        bounced[0].contains("\"status\":\"5.0.0\""),
        "{}",
        bounced[0]
    );
    assert!(
        bounced[0].contains("bounced by the operator"),
        "{}",
        bounced[0]
    );

    assert_eq!(
        count(&ctl(
            &lab,
            &["delete", "--domain", "d2.test", "--sender", "S@sender.test"]
        )),
        3
    );
    lab.wait_log(&["\"event\":\"deleted\"", "y@d2.test"], 3);
    let status = ctl(&lab, &["status"]);
    let sum = |k: &str| -> u64 {
        status["shards"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s[k].as_u64().unwrap())
            .sum()
    };
    assert_eq!(
        (sum("deleted"), sum("bounced"), sum("queued_recipients")),
        (3, 2, 0),
        "{status}"
    );
    // Resuming finds nothing to send: the deleted mail never arrives.
    ctl(&lab, &["resume", "d1.test"]);
    ctl(&lab, &["resume", "d2.test"]);
    assert_eq!(accepted(&lab, "d2.test"), 0);
    let s = lab.stop();
    assert_eq!(
        (s.delivered, s.bounced, s.dsns),
        (2, 2, 2),
        "only the DSNs were delivered: {s:?}"
    );
}

/// One sample: name, labels, value.
type Sample = (String, Vec<(String, String)>, f64);

/// Parses Prometheus text: `name{labels} value` lines, `#` comments.
fn parse_metrics(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            assert!(
                line.is_empty() || line.starts_with("# HELP ") || line.starts_with("# TYPE "),
                "{line}"
            );
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value: {line}"));
        let (name, labels) = match series.split_once('{') {
            None => (series.to_string(), Vec::new()),
            Some((n, rest)) => {
                let body = rest.strip_suffix('}').unwrap_or_else(|| panic!("{line}"));
                let labels = body
                    .split("\",")
                    .map(|kv| {
                        let (k, v) = kv.split_once("=\"").unwrap_or_else(|| panic!("{line}"));
                        (k.to_string(), v.trim_end_matches('"').to_string())
                    })
                    .collect();
                (n.to_string(), labels)
            }
        };
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{line}"
        );
        out.push((name, labels, value));
    }
    out
}

#[test]
fn metrics_are_prometheus_text_and_match_what_the_sink_received() {
    let lab = lab();
    send(
        lab.sluice(),
        "s@sender.test",
        &["m@d1.test", "n@d2.test"],
        5,
    );
    let r = lab.wait_sink("10 recipients", |r| r.recipients_accepted == 10);
    let text = eventually("metrics with 10 deliveries", || {
        let resp = ureq::get(&format!("{}/metrics", url(&lab)))
            .set("Authorization", &format!("Bearer {}", token(&lab)))
            .call()
            .unwrap();
        assert!(resp.content_type().starts_with("text/plain"));
        let text = resp.into_string().unwrap();
        let delivered: f64 = parse_metrics(&text)
            .iter()
            .filter(|(n, _, _)| n == "sluice_delivered_total")
            .map(|(_, _, v)| v)
            .sum();
        (delivered == 10.0).then_some(text)
    });
    let m = parse_metrics(&text);
    let sum = |name: &str, label: Option<(&str, &str)>| -> f64 {
        m.iter()
            .filter(|(n, l, _)| {
                n == name && label.map_or(true, |(k, v)| l.iter().any(|(a, b)| a == k && b == v))
            })
            .map(|(_, _, v)| v)
            .sum()
    };
    assert_eq!(
        sum("sluice_delivered_total", None),
        r.recipients_accepted as f64
    );
    assert_eq!(sum("sluice_accepted_recipients_total", None), 10.0);
    assert_eq!(
        sum(
            "sluice_queue_recipients_total",
            Some(("outcome", "delivered"))
        ),
        10.0
    );
    assert_eq!(
        sum(
            "sluice_destination_recipients_total",
            Some(("destination", "d1.test"))
        ),
        5.0
    );
    assert_eq!(sum("sluice_delivery_latency_seconds_count", None), 10.0);
    assert!(m
        .iter()
        .any(|(n, l, v)| n == "sluice_delivery_latency_seconds"
            && l.iter().any(|(k, q)| k == "quantile" && q == "0.99")
            && *v > 0.0));
    assert!(sum("sluice_outbound_connections_opened_total", None) >= 1.0);
    assert!(sum("sluice_dns_udp_queries_total", None) >= 1.0);
    assert!(sum("sluice_executor_busy_seconds_total", None) > 0.0);
    assert!(text.contains("# TYPE sluice_delivery_latency_seconds summary"));
    assert_eq!(sum("sluice_queued_recipients", None), 0.0);
}

#[test]
fn pausing_a_queue_holds_every_destination_in_it() {
    let config = format!(
        "{CONFIG}[[delivery.queues]]\nname = \"held\"\ndomains = [\"d1.test\", \"grey.test\"]\n"
    );
    let lab = Lab::start(ZONE, "[default]\n", &config);
    // Every shard has its own copy of the queue.
    let cores = ctl(&lab, &["status"])["cores"].as_u64().unwrap();
    assert_eq!(count(&ctl(&lab, &["pause", "--queue", "held"])), cores);
    send(
        lab.sluice(),
        "s@sender.test",
        &["a@d1.test", "b@grey.test"],
        2,
    );
    send(lab.sluice(), "s@sender.test", &["c@d2.test"], 2);
    lab.wait_sink("the general queue's mail", |r| {
        r.domains.get("d2.test").is_some_and(|d| d.accepted == 2)
    });
    assert_eq!(accepted(&lab, "d1.test") + accepted(&lab, "grey.test"), 0);
    let held = ctl(&lab, &["destinations", "--queue", "held"]);
    let held = held.as_array().unwrap();
    assert_eq!(held.len(), 2, "{held:?}");
    assert!(
        held.iter()
            .all(|d| d["paused"] == true && d["waiting"] == 2),
        "{held:?}"
    );
    let queues = ctl(&lab, &["queues"]);
    let q = queues
        .as_array()
        .unwrap()
        .iter()
        .filter(|q| q["queue"] == "held")
        .map(|q| q["waiting"].as_u64().unwrap())
        .sum::<u64>();
    assert_eq!(q, 4, "{queues}");

    // The human tables print without --json.
    let out = Command::new(env!("CARGO_BIN_EXE_sluicectl"))
        .arg("--url")
        .arg(url(&lab))
        .arg("--token-file")
        .arg(lab.sluice().path("admin.token"))
        .args(["destinations", "--queue", "held"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("d1.test") && text.contains("grey.test") && text.contains("yes"),
        "{text}"
    );

    assert_eq!(count(&ctl(&lab, &["resume", "--queue", "held"])), cores);
    lab.wait_sink("the held queue's mail", |r| {
        r.domains.get("d1.test").is_some_and(|d| d.accepted == 2)
            && r.domains.get("grey.test").is_some_and(|d| d.accepted == 2)
    });
}

#[test]
fn a_token_file_others_can_read_is_refused_at_start() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("admin.token");
    std::fs::write(&token, "0123456789abcdef0123456789abcdef\n").unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
    let p = dir.path().join("sluice.toml");
    std::fs::write(
        &p,
        format!(
            "state_dir = \"{}\"\nroute = \"discard\"\n[smtp]\nlisten = [\"127.0.0.1:0\"]\n\
             [admin]\nlisten = \"127.0.0.1:0\"\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let (ok, out) = run(Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["serve", "--config"])
        .arg(&p));
    assert!(!ok, "started with a world-readable token: {out}");
    assert!(
        out.contains("admin.token") && out.contains("0644") && out.contains("chmod 600"),
        "{out}"
    );
    // The same file made private is accepted.
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    // (start_in fails the test unless the daemon reports ready.)
    let d = Daemon::start_in(dir, "route = \"discard\"\n");
    assert!(d.admin.is_some(), "{}", d.log());
    d.stop();
}

#[test]
fn a_missing_state_dir_is_created_private_before_anything_uses_it() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("not/yet/there");
    let d = Daemon::start_in(
        dir,
        &format!("state_dir = \"{}\"\nroute = \"discard\"\n", state.display()),
    );
    let mode = std::fs::metadata(&state).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o750);
    // The admin token was made inside it.
    assert!(state.join("admin.token").exists(), "{}", d.log());
    assert!(d.log().contains("created state_dir"), "{}", d.log());
    d.stop();
}
