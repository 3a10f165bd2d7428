//! `ack = "journal"` end to end: a 250 survives kill -9, recovery reports
//! what it found, torn and corrupt journal files are survived, and the
//! bench `crash` scenario (five kills under load) loses nothing.

mod common;
use common::lab::{send, Lab};
use common::*;

// d1.test is routed to a closed port at first, so its mail stays deferred
// in the journal; after a restart the route points at the sink.
const CLOSED: &str = "[[dns.routes]]\ndomains = [\"d1.test\"]\nhosts = [\"127.0.0.1:9\"]\n";

fn config() -> String {
    format!(
        "ack = \"journal\"\n[delivery]\ntls = \"none\"\nconnect_timeout = \"1s\"\n\
         retry = {{ intervals = [\"1s\"] }}\n{CLOSED}"
    )
}

fn open_route(lab: &Lab) -> String {
    // Same route table, the sink instead of the closed port.
    lab.config().replace(
        "hosts = [\"127.0.0.1:9\"]",
        &format!("hosts = [\"127.0.0.1:{}\"]", lab.sink_addr.port()),
    )
}

fn segments(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    v.retain(|p| p.extension().is_some_and(|e| e == "seg"));
    v.sort();
    v
}

/// One core (so every message is in one journal), three messages from three
/// senders, each in its own session (so its own group commit), deferred on
/// the closed route; then kill -9. Returns the lab without sluice, its
/// state directory, the configuration with the route open, and shard 0's
/// segment files.
fn three_deferred_then_killed() -> (Lab, tempfile::TempDir, String, Vec<std::path::PathBuf>) {
    let cfg = format!("cores = [0]\n{}", config());
    let mut lab = Lab::start("", "[default]\n", &cfg);
    for i in 0..3 {
        send(
            lab.sluice(),
            &format!("s{i}@sender.test"),
            &[&format!("a{i}@d1.test")],
            1,
        );
    }
    lab.wait_log(&["\"event\":\"deferred\""], 3);
    let open = open_route(&lab);
    let dir = lab.sluice.take().unwrap().kill();
    let jdir = dir.path().join("journal/shard-0");
    let segs = segments(&jdir);
    assert!(!segs.is_empty(), "no segment in {}", jdir.display());
    (lab, dir, open, segs)
}

#[test]
fn acknowledged_mail_survives_kill_9_and_is_delivered_after_restart() {
    let mut lab = Lab::start("", "[default]\n", &config());
    send(
        lab.sluice(),
        "s@sender.test",
        &["a@d1.test", "b@d1.test"],
        20,
    );
    // Deferred at least once (so the restart has attempt counts to keep).
    lab.wait_log(&["\"event\":\"deferred\""], 40);
    let restarted = open_route(&lab);
    let dir = lab.sluice.take().unwrap().kill();
    let mut lab2 = lab;
    lab2.sluice = Some(Daemon::start_in(dir, &restarted));
    let log = lab2.sluice().wait_log("recovered messages=", 1);
    assert!(log.contains("pending="), "{log}");
    let r = lab2.wait_sink("40 recipients after the restart", |r| {
        r.recipients_accepted >= 40
    });
    assert_eq!((r.recipients_accepted, r.duplicates), (40, 0), "{r:#?}");
    let s = lab2.stop();
    assert_eq!(s.delivered, 40);
}

#[test]
fn a_clean_restart_finds_nothing_pending_once_everything_is_delivered() {
    let mut lab = Lab::start("", "[default]\n", &config());
    let open = open_route(&lab);
    lab.kill_and_restart("");
    // Restart on the open route (the old daemon had nothing yet).
    let dir = lab.sluice.take().unwrap().kill();
    lab.sluice = Some(Daemon::start_in(dir, &open));
    send(lab.sluice(), "s@sender.test", &["a@d1.test"], 10);
    lab.wait_sink("10 recipients", |r| r.recipients_accepted == 10);
    lab.wait_log(&["\"event\":\"delivered\""], 10);
    // SIGTERM commits the outcome records: nothing is pending after it.
    let dir = {
        let d = lab.sluice.take().unwrap();
        d.signal(nix::sys::signal::Signal::SIGTERM);
        d.wait_log("sluice: stopped", 1);
        d.kill()
    };
    lab.sluice = Some(Daemon::start_in(dir, &open));
    let log = lab.sluice().wait_log("recovered messages=", 2);
    for l in log.lines().filter(|l| l.contains("recovered messages=")) {
        assert!(l.contains(" pending=0 "), "{l}");
    }
    let r = lab.sink.snapshot();
    assert_eq!((r.recipients_accepted, r.duplicates), (10, 0));
}

#[test]
fn a_torn_tail_is_cut_with_a_report_and_everything_before_it_recovered() {
    let (mut lab, dir, open, segs) = three_deferred_then_killed();
    // A torn tail: half a record of garbage at the end of the last segment.
    let last = segs.last().unwrap();
    let mut bytes = std::fs::read(last).unwrap();
    let good_len = bytes.len();
    bytes.extend_from_slice(&[0x5a; 37]);
    std::fs::write(last, &bytes).unwrap();
    lab.sluice = Some(Daemon::start_in(dir, &open));
    let log = lab.sluice().wait_log("sluice: journal shard=0", 1);
    assert!(log.contains("torn_tail="), "{log}");
    let r = lab.wait_sink("3 recipients", |r| r.recipients_accepted == 3);
    assert_eq!(r.duplicates, 0);
    assert!(std::fs::metadata(last).map_or(true, |m| m.len() as usize <= good_len));
    drop(lab);
}

#[test]
fn a_corrupt_record_in_the_middle_is_skipped_and_reported() {
    let (mut lab, dir, open, segs) = three_deferred_then_killed();
    // Flip a byte inside the body of the second message ("s1@sender.test").
    let mut hit = false;
    for seg in &segs {
        let mut bytes = std::fs::read(seg).unwrap();
        if let Some(at) = bytes.windows(14).position(|w| w == b"s1@sender.test") {
            bytes[at + 1] ^= 0xff;
            std::fs::write(seg, &bytes).unwrap();
            hit = true;
            break;
        }
    }
    assert!(hit, "the second message's record was not found");
    lab.sluice = Some(Daemon::start_in(dir, &open));
    let log = lab.sluice().wait_log("sluice: journal shard=0", 1);
    assert!(log.contains("damaged_regions=1"), "{log}");
    // The two intact messages are delivered; the damaged one is reported,
    // not silently dropped.
    let r = lab.wait_sink("2 recipients", |r| r.recipients_accepted == 2);
    assert_eq!(r.duplicates, 0);
    let senders: Vec<_> = lab
        .wait_log(&["\"event\":\"delivered\""], 2)
        .into_iter()
        .map(|l| l.contains("s1@sender.test"))
        .collect();
    assert_eq!(senders, [false, false]);
}

#[test]
fn five_kills_under_load_lose_no_acknowledged_recipient() {
    // The committed scenario, on a free port (other runs may hold 2625).
    let committed =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/scenarios/crash.toml");
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("crash.toml");
    let text = std::fs::read_to_string(&committed).unwrap();
    assert!(text.contains("\nport = 2625\n"));
    std::fs::write(&scenario, text.replace("\nport = 2625\n", "\nport = 0\n")).unwrap();
    let settings = sluice_bench::run::RunSettings {
        scenario_dir: scenario.parent().unwrap().to_path_buf(),
        sut_binary: Some(env!("CARGO_BIN_EXE_sluice").into()),
        keep: false,
        progress: false,
    };
    let r = sluice_bench::run::run_file(&scenario, Some(5000), settings).unwrap();
    let c = r.crash.clone().expect("no crash report");
    assert_eq!((c.kills, c.restarts), (5, 5), "{c:#?}");
    assert_eq!(r.missing, 0, "acknowledged and lost: {r:#?}");
    assert!(r.complete, "{r:#?}");
    // Duplicates come only from outbound transactions in flight at a kill:
    // at most 20 connections x 4 pipelined transactions per destination
    // (10 destinations), per kill.
    assert!(r.duplicates <= 5 * 10 * 20 * 4, "{r:#?}");
}

#[test]
fn fewer_cores_after_a_restart_re_home_the_vanished_shard_s_mail() {
    // Two shards write their journals; the restart has one core, so shard
    // 0 must take over shard 1's pending recipients and remove its directory.
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        eprintln!("skipped: needs two CPUs");
        return;
    }
    let routed = |to: &str| {
        format!(
            "ack = \"journal\"\n{{cores}}\n[delivery]\ntls = \"none\"\nconnect_timeout = \"1s\"\n\
             retry = {{ intervals = [\"1s\"] }}\n[[dns.routes]]\ndomains = [\"*.test\"]\nhosts = [\"{to}\"]\n"
        )
    };
    let mut lab = Lab::start(
        "",
        "[default]\n",
        &routed("127.0.0.1:9").replace("{cores}", "cores = [0, 1]"),
    );
    let rcpts: Vec<String> = (0..16).map(|i| format!("r@e{i}.test")).collect();
    let refs: Vec<&str> = rcpts.iter().map(String::as_str).collect();
    send(lab.sluice(), "s@sender.test", &refs, 5);
    lab.wait_log(&["\"event\":\"deferred\""], 80);
    let dir = lab.sluice.take().unwrap().kill();
    assert!(dir.path().join("journal/shard-1").exists());
    let open = lab
        .config()
        .replace("cores = [0, 1]", "cores = [0]")
        .replace(
            "127.0.0.1:9",
            &format!("127.0.0.1:{}", lab.sink_addr.port()),
        );
    lab.sluice = Some(Daemon::start_in(dir, &open));
    lab.sluice()
        .wait_log("from a shard that no longer exists", 1);
    let r = lab.wait_sink("80 recipients", |r| r.recipients_accepted >= 80);
    assert_eq!((r.recipients_accepted, r.duplicates), (80, 0), "{r:#?}");
    assert!(!lab.sluice().path("journal/shard-1").exists());
}

/// A small tmpfs, unmounted on drop.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Tmpfs(dir))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.0.path())
            .status();
    }
}

#[test]
fn a_full_disk_answers_452_loses_nothing_and_recovers_when_space_returns() {
    let Some(fs) = Tmpfs::mount("4m") else {
        panic!("this test needs root to mount a small tmpfs (CI runs as root)");
    };
    let state = fs.0.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let cfg = format!(
        "state_dir = \"{}\"\nack = \"journal\"\n[journal]\nsegment_size = \"256KiB\"\n\
         [delivery]\ntls = \"none\"\nlog = false\nretry = {{ intervals = [\"2s\"] }}\n",
        state.display()
    );
    // Greylisting keeps every message in the journal for a retry interval,
    // long enough for the disk to fill.
    let zone = ""; // d1.test is in the lab's base zone
    let lab = Lab::start(
        zone,
        "[default]\n[domains.\"d1.test\"]\ngreylist = true\n",
        &cfg,
    );
    // Fill the file system, leaving room for a few messages only.
    let filler = fs.0.path().join("filler");
    let st = nix::sys::statvfs::statvfs(fs.0.path()).unwrap();
    let free = st.blocks_available() as u64 * st.fragment_size() as u64;
    let room = 600 * 1024;
    std::fs::write(&filler, vec![0u8; free.saturating_sub(room) as usize]).unwrap();
    let body = "x".repeat(998) + "\r\n";
    let mut c = Client::connect(lab.sluice().addr);
    expect(&c.reply(), "220");
    expect(&c.cmd("EHLO client.test"), "250");
    let (mut accepted, mut refused) = (0u64, None);
    for i in 0..400 {
        expect(&c.cmd("MAIL FROM:<s@sender.test>"), "250");
        expect(&c.cmd(&format!("RCPT TO:<r{i}@d1.test>")), "250");
        expect(&c.cmd("DATA"), "354");
        let mut data = format!("Message-ID: <full{i}@client.test>\r\n\r\n");
        for _ in 0..100 {
            data.push_str(&body);
        }
        data.push('.');
        let reply = c.cmd(&data);
        if reply.starts_with("250") {
            accepted += 1;
        } else {
            refused = Some(reply);
            break;
        }
    }
    let refused = refused.expect("the disk never filled up");
    expect(&refused, "452 4.3.1");
    assert!(accepted > 0, "nothing fit before the disk was full");
    // Everything acknowledged is delivered.
    let r = lab.wait_sink("acknowledged mail", |r| r.recipients_accepted >= accepted);
    assert_eq!((r.recipients_accepted, r.duplicates), (accepted, 0));
    // Space returns: intake resumes.
    std::fs::remove_file(&filler).unwrap();
    expect(&c.cmd("MAIL FROM:<s@sender.test>"), "250");
    expect(&c.cmd("RCPT TO:<after@d1.test>"), "250");
    expect(&c.cmd("DATA"), "354");
    expect(
        &c.cmd("Message-ID: <after@client.test>\r\n\r\nhello\r\n."),
        "250 2.0.0",
    );
    lab.wait_sink("the message after", |r| {
        r.recipients_accepted == accepted + 1
    });
    drop(lab);
    drop(fs);
}

#[test]
fn more_cores_after_a_restart_move_recipients_to_their_new_shards() {
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        eprintln!("skipped: needs two CPUs");
        return;
    }
    let routed = |to: &str, cores: &str| {
        format!(
            "ack = \"journal\"\ncores = {cores}\n[delivery]\ntls = \"none\"\nconnect_timeout = \"1s\"\n\
             retry = {{ intervals = [\"1s\"] }}\n[[dns.routes]]\ndomains = [\"*.test\"]\nhosts = [\"{to}\"]\n"
        )
    };
    let mut lab = Lab::start("", "[default]\n", &routed("127.0.0.1:9", "[0]"));
    let rcpts: Vec<String> = (0..16).map(|i| format!("r@e{i}.test")).collect();
    let refs: Vec<&str> = rcpts.iter().map(String::as_str).collect();
    send(lab.sluice(), "s@sender.test", &refs, 5);
    lab.wait_log(&["\"event\":\"deferred\""], 80);
    let dir = lab.sluice.take().unwrap().kill();
    let open = lab
        .config()
        .replace("cores = [0]", "cores = [0, 1]")
        .replace(
            "127.0.0.1:9",
            &format!("127.0.0.1:{}", lab.sink_addr.port()),
        );
    lab.sluice = Some(Daemon::start_in(dir, &open));
    lab.sluice().wait_log("re-homed", 1);
    let r = lab.wait_sink("80 recipients", |r| r.recipients_accepted >= 80);
    assert_eq!((r.recipients_accepted, r.duplicates), (80, 0), "{r:#?}");
    // Shard 1 now has a journal of its own with the moved recipients.
    assert!(lab.sluice().path("journal/shard-1").exists());
}

/// The journal's fsync count so far, from `/metrics`.
fn fsyncs(lab: &Lab) -> f64 {
    let token = std::fs::read_to_string(lab.sluice().path("admin.token")).unwrap();
    let text = ureq::get(&format!(
        "http://{}/metrics",
        lab.sluice().admin.expect("admin address")
    ))
    .set("Authorization", &format!("Bearer {}", token.trim()))
    .call()
    .unwrap()
    .into_string()
    .unwrap();
    text.lines()
        .filter(|l| l.starts_with("sluice_journal_fsync_seconds_count"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn a_pipelined_group_of_messages_is_made_durable_by_a_few_commits() {
    // One core; d1.test's route is closed, and no attempt is due while
    // the test counts (the first delivery attempt defers and is journaled,
    // so the destination is paused first to keep outcome records out).
    let cfg = format!("cores = [0]\n{}", config());
    let mut lab = Lab::start("", "[default]\n", &cfg);
    let (ok, v) = lab.ctl(&["pause", "d1.test"]);
    assert!(ok, "{v}");
    let before = fsyncs(&lab);
    let mut c = Client::connect(lab.sluice().addr);
    expect(&c.reply(), "220");
    expect(&c.cmd("EHLO client.test"), "250");
    // 30 transactions in one write, as a pipelining BDAT client sends them.
    const N: usize = 30;
    let body = "Subject: pipelined\r\n\r\nhello\r\n";
    let mut batch = String::new();
    for i in 0..N {
        batch.push_str(&format!(
            "MAIL FROM:<s@sender.test>\r\nRCPT TO:<r{i}@d1.test>\r\nBDAT {} LAST\r\n{body}",
            body.len()
        ));
    }
    c.send(batch.as_bytes());
    for _ in 0..N {
        expect(&c.reply(), "250 2.1.0");
        expect(&c.reply(), "250 2.1.5");
        expect(&c.reply(), "250 2.0.0 Ok: queued as");
    }
    expect(&c.cmd("QUIT"), "221");
    let commits = fsyncs(&lab) - before;
    // Serially it would be one commit per message; the group shares them.
    assert!(
        commits >= 1.0 && commits <= (N / 3) as f64,
        "{commits} fsyncs for {N} pipelined messages"
    );
    // Every one of them is durable: all come back after kill -9.
    lab.kill_and_restart("");
    let log = lab.sluice().wait_log("recovered messages=", 1);
    assert!(log.contains(&format!("recovered messages={N} ")), "{log}");
}

#[test]
fn a_dsn_is_not_lost_when_the_daemon_dies_right_after_the_bounce() {
    let mut lab = Lab::start("", "[default]\n", &config());
    send(lab.sluice(), "a@sender.test", &["permfail@d2.test"], 1);
    lab.wait_log(&["\"event\":\"bounced\"", "permfail@d2.test"], 1);
    // DSNs are made once a second: this kill lands before this one is
    // stored, so the bounce must not be final in the journal yet.
    lab.kill_and_restart("");
    let r = lab.wait_sink("the DSN to the sender", |r| {
        r.domains
            .get("sender.test")
            .is_some_and(|d| d.accepted >= 1)
    });
    // The refused recipient was tried again after the restart (at least
    // once more than before), and the sender heard about it.
    assert!(r.permfailed >= 1, "{r:#?}");
    assert_eq!(r.domains["sender.test"].accepted, 1, "{r:#?}");
}

/// Recipients the sink accepted for `domain`.
fn accepted_for(lab: &Lab, domain: &str) -> u64 {
    lab.sink
        .snapshot()
        .domains
        .get(domain)
        .map_or(0, |d| d.accepted)
}

#[test]
fn deleted_mail_stays_deleted_across_kill_9_and_a_clean_restart() {
    let cfg = "cores = [0]\nack = \"journal\"\n[delivery]\ntls = \"none\"\n";
    let mut lab = Lab::start("", "[default]\n", cfg);
    let base = lab.config().to_string();
    let (ok, v) = lab.ctl(&["pause", "d2.test"]);
    assert!(ok, "{v}");
    send(lab.sluice(), "s@sender.test", &["gone@d2.test"], 1);
    // The 250 may come before the engine queues it: delete until it has.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (ok, v) = lab.ctl(&["delete", "--domain", "d2.test"]);
        assert!(ok, "{v}");
        match v["count"].as_u64() {
            Some(1) => break,
            Some(0) => {}
            _ => panic!("unexpected answer {v}"),
        }
        assert!(std::time::Instant::now() < deadline, "never queued: {v}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    lab.wait_log(&["\"event\":\"deleted\"", "gone@d2.test"], 1);
    for (round, clean) in [(1, false), (2, true)] {
        let d = lab.sluice.take().unwrap();
        let dir = if clean {
            d.stop_keeping_state()
        } else {
            d.kill()
        };
        let line = lab.restart_on(dir, &base);
        assert!(line.contains(" pending=0 "), "round {round}: {line}");
        let (ok, v) = lab.ctl(&["resume", "d2.test"]);
        assert!(ok, "{v}");
        // Proof the restarted daemon works its queue: a message to another
        // destination sent after the restart arrives; then one to d2.test.
        send(
            lab.sluice(),
            "s@sender.test",
            &[&format!("probe{round}@d1.test")],
            1,
        );
        lab.wait_sink("the probe", |r| {
            r.domains
                .get("d1.test")
                .is_some_and(|d| d.accepted == round)
        });
        send(
            lab.sluice(),
            "s@sender.test",
            &[&format!("after{round}@d2.test")],
            1,
        );
        lab.wait_sink("the message after", |r| {
            r.domains
                .get("d2.test")
                .is_some_and(|d| d.accepted >= round)
        });
        assert_eq!(accepted_for(&lab, "d2.test"), round, "round {round}");
        assert!(lab
            .log_lines(&["\"event\":\"delivered\"", "gone@d2.test"])
            .is_empty());
    }
}

#[test]
fn frames_planted_in_a_body_are_never_replayed_after_a_torn_write() {
    use sluice::journal::testing::*;
    use sluice::journal::Outcome;
    let cfg = format!("cores = [0]\n{}", config());
    let mut lab = Lab::start("", "[default]\n", &cfg);
    send(lab.sluice(), "victim@sender.test", &["victim@d1.test"], 1);
    lab.wait_log(&["\"event\":\"deferred\"", "victim@d1.test"], 1);
    // The attacker's message, with room in its body for forged frames.
    let slot = "Z".repeat(900);
    let mut c = Client::connect(lab.sluice().addr);
    expect(&c.reply(), "220");
    expect(&c.cmd("EHLO client.test"), "250");
    expect(&c.cmd("MAIL FROM:<attacker@sender.test>"), "250");
    expect(&c.cmd("RCPT TO:<attacker@d1.test>"), "250");
    expect(&c.cmd("DATA"), "354");
    expect(
        &c.cmd(&format!("Subject: x\r\n\r\n{slot}\r\n.")),
        "250 2.0.0",
    );
    expect(&c.cmd("QUIT"), "221");
    let open = open_route(&lab);
    let dir = lab.sluice.take().unwrap().kill();
    let jdir = dir.path().join("journal/shard-0");
    let victim = sluice::journal::recover_dir(&jdir)
        .unwrap()
        .messages
        .into_iter()
        .find(|m| m.reverse_path == "victim@sender.test")
        .unwrap()
        .id;
    let last = segments(&jdir).pop().unwrap();
    let mut bytes = std::fs::read(&last).unwrap();
    let at = bytes
        .windows(slot.len())
        .position(|w| w == slot.as_bytes())
        .expect("the attacker's body is in the last segment");
    // What the body carries (as the attacker could send it): records built
    // by the journal's own encoder that would inject a message to d2.test,
    // finish the victim, or put a retry past the end of time. In the
    // version 1 encoding (valid anywhere), sealed with the segment's real
    // key for another offset, and for this offset under a guessed key.
    let injected = 0x0123_4567_89ab_u64;
    let inject_body = b"Subject: injected\r\n\r\ninjected\r\n";
    let forever = Outcome::Deferred {
        attempts: 1,
        next_attempt_unix: u64::MAX,
    };
    let mut forged = Vec::new();
    forged.extend(message_frame_v1(injected, &["inject@d2.test"], inject_body));
    forged.extend(outcome_frame_v1(victim, 0, Outcome::Delivered));
    forged.extend(outcome_frame_v1(injected, 0, forever));
    let (seq, key) = segment_key(&bytes).unwrap_or((0, [0; 16]));
    for (k, skew) in [(key, 7u64), ([0; 16], 0)] {
        let here = (at + forged.len()) as u64 + skew;
        forged.extend(message_frame(
            &k,
            seq,
            here,
            injected,
            &["inject@d2.test"],
            inject_body,
        ));
        let here = (at + forged.len()) as u64 + skew;
        forged.extend(outcome_frame(&k, seq, here, victim, 0, Outcome::Delivered));
    }
    assert!(forged.len() < slot.len());
    bytes[at..at + forged.len()].copy_from_slice(&forged);
    // kill -9 mid-write: the record was torn right after the forgeries,
    // and its header is damaged too (so reading must resynchronise from
    // before the body, not merely cut at a short frame).
    let rp = bytes
        .windows(20)
        .position(|w| w == b"attacker@sender.test")
        .unwrap();
    assert!(rp < at);
    bytes[rp] ^= 0x20;
    bytes.truncate(at + forged.len() + 3);
    std::fs::write(&last, &bytes).unwrap();

    let line = lab.restart_on(dir, &open);
    // Only the victim: the torn record is cut, nothing in it is replayed.
    assert!(
        line.contains("recovered messages=1 pending=1 already_final=0 "),
        "{line}"
    );
    assert!(line.contains("torn_tail="), "{line}");
    lab.wait_sink("the victim", |r| {
        r.domains.get("d1.test").is_some_and(|d| d.accepted >= 1)
    });
    // The daemon is up and working its queue: a probe to d2.test arrives,
    // and it is the only mail d2.test ever gets.
    send(lab.sluice(), "s@sender.test", &["probe@d2.test"], 1);
    lab.wait_sink("the probe", |r| {
        r.domains.get("d2.test").is_some_and(|d| d.accepted >= 1)
    });
    let r = lab.sink.snapshot();
    assert_eq!(accepted_for(&lab, "d2.test"), 1, "{r:#?}");
    assert_eq!(accepted_for(&lab, "d1.test"), 1, "{r:#?}");
    assert!(lab.log_lines(&["inject@d2.test"]).is_empty());
}

/// Fills the file system of `path` until a write fails.
fn fill(path: &std::path::Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    while f.write_all(&[0u8; 4096]).is_ok() {}
    let _ = f.sync_all();
}

#[test]
fn outcomes_a_full_disk_dropped_are_written_again_and_nothing_is_delivered_twice() {
    let Some(fs) = Tmpfs::mount("4m") else {
        panic!("this test needs root to mount a small tmpfs (CI runs as root)");
    };
    let state = fs.0.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let cfg = format!(
        "state_dir = \"{}\"\ncores = [0]\nack = \"journal\"\n[delivery]\ntls = \"none\"\nlog = false\n",
        state.display()
    );
    let mut lab = Lab::start("", "[default]\n", &cfg);
    let base = lab.config().to_string();
    let ctl = |lab: &Lab, args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluicectl"))
            .arg("--url")
            .arg(format!("http://{}", lab.sluice().admin.expect("admin API")))
            .arg("--token-file")
            .arg(state.join("admin.token"))
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    };
    ctl(&lab, &["pause", "d1.test"]);
    let rcpts: Vec<String> = (0..20).map(|i| format!("r{i}@d1.test")).collect();
    let refs: Vec<&str> = rcpts.iter().map(String::as_str).collect();
    send(lab.sluice(), "s@sender.test", &refs, 20);
    // The disk fills up; the 400 deliveries happen meanwhile, and the
    // batches holding their outcome records fail.
    let filler = fs.0.path().join("filler");
    fill(&filler);
    ctl(&lab, &["resume", "d1.test"]);
    lab.wait_sink("400 recipients", |r| r.recipients_accepted >= 400);
    std::fs::remove_file(&filler).unwrap();
    // A clean stop commits what is buffered (it cannot bring back what a
    // failed batch dropped).
    let dir = lab.sluice.take().unwrap().stop_keeping_state();
    let line = lab.restart_on(dir, &base);
    send(lab.sluice(), "s@sender.test", &["probe@d2.test"], 1);
    let r = lab.wait_sink("the probe", |r| {
        r.domains.get("d2.test").is_some_and(|d| d.accepted >= 1)
    });
    assert_eq!(
        (r.recipients_accepted, r.duplicates),
        (401, 0),
        "{line}\n{r:#?}"
    );
    assert!(line.contains(" pending=0 "), "{line}");
    drop(lab);
    drop(fs);
}
