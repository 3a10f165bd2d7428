//! The daemon as the unprivileged service user (as the systemd unit runs
//! it): SIGHUP applies new delivery limits without a restart (and refuses
//! a bad file, keeping the old limits); SIGTERM closes idle sessions with
//! 421, lets transactions finish, exits 0, and loses nothing (the journal
//! carries what was not delivered into the next start), checked at the
//! sink. (sd_notify READY/RELOADING/STOPPING: tests/appliance.rs.)

mod common;
use common::lab::{send, Lab};
use common::*;
use nix::sys::signal::Signal;

const ZONE: &str = ""; // d1.test is in the lab's base zone

#[test]
fn sighup_applies_a_changed_limit_and_refuses_a_bad_file() {
    let lab = Lab::start_as_service_user(ZONE, "[default]\n", "[delivery]\ntls = \"none\"\n");
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", lab.sluice().child.id())).unwrap();
    let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(uid.contains(&service_user().0.to_string()), "{uid}");
    assert!(
        !uid.split_whitespace().any(|f| f == "0"),
        "running as root: {uid}"
    );
    send(
        lab.sluice(),
        "s@sender.test",
        &["a@d1.test", "b@d1.test", "c@d1.test"],
        2,
    );
    let r = lab.wait_sink("6 recipients", |r| r.recipients_accepted == 6);
    assert_eq!(
        r.domains["d1.test"].messages, 2,
        "one transaction per message"
    );

    let path = lab.sluice().path("sluice.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let limited = text.replace("[delivery]\n", "[delivery]\nmax_rcpt_per_txn = 1\n");
    std::fs::write(&path, &limited).unwrap();
    lab.sluice().signal(Signal::SIGHUP);
    lab.sluice().wait_log("sluice: reloaded", 1);
    send(
        lab.sluice(),
        "s@sender.test",
        &["d@d1.test", "e@d1.test", "f@d1.test"],
        2,
    );
    let r = lab.wait_sink("12 recipients", |r| r.recipients_accepted == 12);
    assert_eq!(
        r.domains["d1.test"].messages,
        2 + 6,
        "one recipient per transaction now"
    );

    // A broken file is refused with its location; the limit in force stays.
    std::fs::write(&path, format!("max_rcpt_per_txn = \"many\"\n{limited}")).unwrap();
    lab.sluice().signal(Signal::SIGHUP);
    let log = lab.sluice().wait_log("sluice: reload refused", 1);
    assert!(log.contains("sluice.toml:1"), "{log}");
    send(
        lab.sluice(),
        "s@sender.test",
        &["g@d1.test", "h@d1.test"],
        1,
    );
    let r = lab.wait_sink("14 recipients", |r| r.recipients_accepted == 14);
    assert_eq!(r.domains["d1.test"].messages, 8 + 2);
    assert_eq!(r.duplicates, 0);
}

#[test]
fn sigterm_closes_idle_sessions_exits_0_and_loses_nothing() {
    // d1.test is routed to a closed port: its mail is still queued (in the
    // journal) when SIGTERM comes.
    let closed = "ack = \"journal\"\n[delivery]\ntls = \"none\"\nconnect_timeout = \"1s\"\n\
                  retry = { intervals = [\"1s\"] }\n[[dns.routes]]\ndomains = [\"d1.test\"]\n\
                  hosts = [\"127.0.0.1:9\"]\n";
    let mut lab = Lab::start_as_service_user(ZONE, "[default]\n", closed);
    send(
        lab.sluice(),
        "s@sender.test",
        &["a@d1.test", "b@d1.test"],
        10,
    );
    // An idle client: it must be told 421 rather than hold the stop up.
    let mut idle = Client::connect(lab.sluice().addr);
    expect(&idle.reply(), "220");
    expect(&idle.cmd("EHLO idle.test"), "250");
    let open = lab.config().replace(
        "hosts = [\"127.0.0.1:9\"]",
        &format!("hosts = [\"127.0.0.1:{}\"]", lab.sink_addr.port()),
    );
    let daemon = lab.sluice.take().unwrap();
    daemon.signal(Signal::SIGTERM);
    expect(&idle.line(), "421 4.3.2");
    assert!(idle.at_eof());
    daemon.wait_log("sluice: stopped", 1);
    let dir = {
        // Exit status 0, then reuse the state directory.
        let mut d = daemon;
        let status = d.child.wait().unwrap();
        assert!(status.success(), "{status}");
        d.kill()
    };
    lab.sluice = Some(Daemon::start_as_service_user(dir, &open));
    let r = lab.wait_sink("20 recipients after the restart", |r| {
        r.recipients_accepted >= 20
    });
    assert_eq!((r.recipients_accepted, r.duplicates), (20, 0));
}
