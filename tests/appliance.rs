//! The appliance around the daemon: the install script stages a unit that
//! `systemd-analyze verify` accepts and whose syscall filter lets glommio
//! run; the daemon, started as an unprivileged user, speaks the systemd
//! notification protocol through start, watchdog, reload and stop; and
//! `sluice tune --check` reports what it finds and exits accordingly.
//!
//! The install and notify tests need root (to stage ownership-free files is
//! fine as anyone, but creating the test user and dropping to it is not) and
//! `systemd-analyze` (Debian package `systemd`); `.ci/run` provides both.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const SLUICE: &str = env!("CARGO_BIN_EXE_sluice");

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `systemd-analyze`, or a failure that says how to get it: a missing tool
/// must not turn this test into a silent pass.
fn systemd_analyze() -> Command {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("systemd-analyze").is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "systemd-analyze is not installed: `apt-get install systemd` (.ci/run does this as root)"
    );
    Command::new("systemd-analyze")
}

fn install(destdir: &Path) -> String {
    let (ok, out) = common::run(
        Command::new("bash")
            .arg(repo().join("scripts/install.sh"))
            .arg("--no-build")
            .env("DESTDIR", destdir)
            .env("SLUICE_BIN", SLUICE),
    );
    assert!(ok, "install.sh failed:\n{out}");
    out
}

use common::{service_user as test_user, user_exists};

#[test]
fn install_stages_every_file_without_touching_the_live_system() {
    let dest = tempfile::tempdir().unwrap();
    let d = dest.path();
    let had_user = user_exists("sluice");
    let out = install(d);
    assert!(out.contains("the live system was not changed"), "{out}");
    assert_eq!(user_exists("sluice"), had_user, "install.sh created a user");

    for (path, mode) in [
        ("usr/bin/sluice", 0o755),
        ("usr/lib/systemd/system/sluice.service", 0o644),
        ("usr/lib/sysusers.d/sluice.conf", 0o644),
        ("etc/sluice/sluice.toml", 0o644),
        ("etc/sysctl.d/60-sluice.conf", 0o644),
        ("etc/security/limits.d/60-sluice.conf", 0o644),
        ("usr/share/doc/sluice/README.md", 0o644),
        ("usr/share/doc/sluice/operations.md", 0o644),
        ("usr/share/doc/sluice/configuration.md", 0o644),
    ] {
        let meta = std::fs::metadata(d.join(path))
            .unwrap_or_else(|e| panic!("{path} was not installed: {e}"));
        assert_eq!(meta.permissions().mode() & 0o777, mode, "{path}");
    }
    let sysusers = std::fs::read_to_string(d.join("usr/lib/sysusers.d/sluice.conf")).unwrap();
    assert!(
        sysusers
            .lines()
            .any(|l| l.split_whitespace().take(2).eq(["u", "sluice"])),
        "{sysusers}"
    );

    // The default configuration is valid, and a second install keeps an
    // operator's edits.
    let config = d.join("etc/sluice/sluice.toml");
    let (ok, out) = common::run(Command::new(SLUICE).arg("check-config").arg(&config));
    assert!(ok, "{out}");
    std::fs::write(&config, "# edited by the operator\n").unwrap();
    let out = install(d);
    assert!(out.contains("keeping the existing"), "{out}");
    assert_eq!(
        std::fs::read_to_string(&config).unwrap(),
        "# edited by the operator\n"
    );

    // A different PREFIX moves the binary and the unit follows it.
    let dest2 = tempfile::tempdir().unwrap();
    let (ok, out) = common::run(
        Command::new("bash")
            .arg(repo().join("scripts/install.sh"))
            .arg("--no-build")
            .env("DESTDIR", dest2.path())
            .env("PREFIX", "/usr/local")
            .env("SLUICE_BIN", SLUICE),
    );
    assert!(ok, "{out}");
    let unit = std::fs::read_to_string(
        dest2
            .path()
            .join("usr/local/lib/systemd/system/sluice.service"),
    )
    .unwrap();
    assert!(
        unit.contains("ExecStart=/usr/local/bin/sluice serve"),
        "{unit}"
    );
    assert!(dest2.path().join("usr/local/bin/sluice").is_file());
}

#[test]
fn installed_unit_passes_systemd_analyze_verify_with_no_warnings() {
    let dest = tempfile::tempdir().unwrap();
    install(dest.path());
    let unit =
        std::fs::read_to_string(dest.path().join("usr/lib/systemd/system/sluice.service")).unwrap();
    for line in [
        "Type=notify",
        "NotifyAccess=main",
        "User=sluice",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "LimitMEMLOCK=infinity",
        "LimitNOFILE=1048576",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "StateDirectory=sluice",
    ] {
        assert!(unit.lines().any(|l| l == line), "no {line:?} in the unit");
    }
    assert!(unit.lines().any(|l| l.starts_with("WatchdogSec=")));

    // verify checks that ExecStart's binary exists; inside a DESTDIR it is
    // not at /usr/bin. Point a copy of the unit (same name, so the unit
    // name checks still apply) at the staged binary; nothing else changes.
    let staged = dest.path().join("usr/bin/sluice");
    let copy_dir = tempfile::tempdir().unwrap();
    let copy = copy_dir.path().join("sluice.service");
    let rewritten = unit.replace(
        "ExecStart=/usr/bin/sluice ",
        &format!("ExecStart={} ", staged.display()),
    );
    assert_ne!(rewritten, unit, "ExecStart is not /usr/bin/sluice");
    std::fs::write(&copy, rewritten).unwrap();
    let (ok, out) = common::run(
        systemd_analyze()
            .args(["verify", "--man=no"])
            .arg(&copy)
            .current_dir(copy_dir.path()),
    );
    // verify exits 0 on unknown keys and bad values: any output is a finding.
    assert!(
        ok && out.trim().is_empty(),
        "systemd-analyze verify:\n{out}"
    );
}

/// Expands `@group`s recursively with `systemd-analyze syscall-filter`.
fn expand_syscalls(names: &[String], out: &mut std::collections::BTreeSet<String>) {
    for name in names {
        if !name.starts_with('@') {
            out.insert(name.clone());
            continue;
        }
        if !out.insert(name.clone()) {
            continue;
        }
        let (ok, text) = common::run(systemd_analyze().args(["syscall-filter", name]));
        assert!(ok, "systemd-analyze syscall-filter {name}:\n{text}");
        let members: Vec<String> = text
            .lines()
            .skip(1) // the group's own name
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(String::from)
            .collect();
        expand_syscalls(&members, out);
    }
}

#[test]
fn unit_syscall_filter_allows_what_glommio_needs() {
    let unit = std::fs::read_to_string(repo().join("systemd/sluice.service")).unwrap();
    let mut allowed_names = Vec::new();
    let mut denied_names = Vec::new();
    for line in unit.lines() {
        if let Some(list) = line.strip_prefix("SystemCallFilter=") {
            match list.strip_prefix('~') {
                Some(deny) => denied_names.extend(deny.split_whitespace().map(String::from)),
                None => allowed_names.extend(list.split_whitespace().map(String::from)),
            }
        }
    }
    assert!(!allowed_names.is_empty(), "no SystemCallFilter=");
    let mut allowed = std::collections::BTreeSet::new();
    expand_syscalls(&allowed_names, &mut allowed);
    let mut denied = std::collections::BTreeSet::new();
    expand_syscalls(&denied_names, &mut denied);
    allowed.retain(|s| !denied.contains(s));
    // io_uring itself, buffer registration and locking, pinning, glommio's
    // membarrier (or its mprotect fallback), timers and eventfds.
    for syscall in [
        "io_uring_setup",
        "io_uring_enter",
        "io_uring_register",
        "mmap",
        "munmap",
        "mprotect",
        "mlock",
        "membarrier",
        "sched_setaffinity",
        "sched_getaffinity",
        "eventfd2",
        "timerfd_create",
        "setrlimit",
        "prlimit64",
        "getrandom",
    ] {
        assert!(allowed.contains(syscall), "{syscall} is filtered out");
    }
}

#[test]
fn unit_is_hardened_as_far_as_the_daemon_allows() {
    let (_, out) = common::run(
        systemd_analyze()
            .args(["security", "--offline=yes"])
            .arg(repo().join("systemd/sluice.service")),
    );
    let exposure: f64 = out
        .lines()
        .find_map(|l| l.split("exposure level for sluice.service:").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{out}"));
    // 2.0 before UMask, ProtectProc, ProcSubset, PrivateIPC, RemoveIPC,
    // PrivateMounts, MemoryDenyWriteExecute, DevicePolicy and ~@privileged.
    assert!(exposure <= 1.5, "exposure {exposure}:\n{out}");
    for fixed in [
        "UMask=",
        "ProtectProc=",
        "ProcSubset=",
        "RemoveIPC=",
        "PrivateMounts=",
    ] {
        assert!(
            !out.lines()
                .any(|l| l.contains('✗') && l.contains(fixed) && !l.contains("group-readable")),
            "{fixed} is still reported:\n{out}"
        );
    }
}

/// Reads notification datagrams until one satisfies `want`, failing after
/// `within`. Returns everything received, the match last.
fn await_notice(sock: &UnixDatagram, within: Duration, want: &str) -> Vec<String> {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "no {want:?} within {within:?}; got {seen:?}"
        );
        sock.set_read_timeout(Some(left)).unwrap();
        match sock.recv(&mut buf) {
            Ok(n) => {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                let hit = msg.lines().any(|l| l == want);
                seen.push(msg);
                if hit {
                    return seen;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                panic!("no {want:?} within {within:?}; got {seen:?}")
            }
            Err(e) => panic!("recv: {e}"),
        }
    }
}

fn field<'a>(msg: &'a str, key: &str) -> Option<&'a str> {
    msg.lines().find_map(|l| l.strip_prefix(key))
}

#[test]
fn unprivileged_daemon_speaks_sd_notify_through_start_watchdog_reload_and_stop() {
    let (uid, gid) = test_user();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
    std::os::unix::fs::chown(&state, Some(uid), Some(gid)).unwrap();
    let config = dir.path().join("sluice.toml");
    std::fs::write(
        &config,
        format!(
            "hostname = \"sluice.test\"\nroute = \"discard\"\nstate_dir = \"{}\"\n\
             [smtp]\nlisten = [\"127.0.0.1:0\"]\n[admin]\nlisten = \"127.0.0.1:0\"\n",
            state.display()
        ),
    )
    .unwrap();
    let notify_path = dir.path().join("notify");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    // Sending to a unix socket needs write permission on it.
    std::os::unix::fs::chown(&notify_path, Some(uid), Some(gid)).unwrap();

    // The checkout may sit where the service user cannot reach (say /root):
    // run a copy from the user's own directory.
    let bin = dir.path().join("sluice");
    std::fs::copy(SLUICE, &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut child = common::spawn(
        Command::new(&bin)
            .args(["serve", "--config"])
            .arg(&config)
            .env("RUST_LOG", "warn")
            .env("NOTIFY_SOCKET", &notify_path)
            // A ping every second.
            .env("WATCHDOG_USEC", "2000000")
            .uid(uid)
            .gid(gid)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    );
    let pid = child.id();
    let mut stderr = child.stderr.take().unwrap();
    let (log_tx, log_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
        let _ = log_tx.send(s);
    });
    // Whatever fails below, the daemon must not outlive the test.
    struct Kill(u32);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.0 as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    let guard = Kill(pid);
    let signal = |sig| nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig).unwrap();

    // READY=1 first, naming the main pid, once listeners are bound.
    let seen = await_notice(&notify, Duration::from_secs(30), "READY=1");
    assert_eq!(seen.len(), 1, "something came before READY=1: {seen:?}");
    let ready = &seen[0];
    assert_eq!(
        field(ready, "MAINPID="),
        Some(pid.to_string().as_str()),
        "{ready}"
    );
    let status = field(ready, "STATUS=").unwrap_or_default();
    assert!(status.starts_with("accepting on 127.0.0.1:"), "{ready}");

    // It really runs as the unprivileged user.
    let proc_status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uids = field(&proc_status, "Uid:").unwrap_or_default();
    assert!(
        uids.split_whitespace().all(|u| u == uid.to_string()),
        "Uid: {uids}"
    );
    // And it accepts mail there.
    let addr: std::net::SocketAddr = status
        .trim_start_matches("accepting on ")
        .split([',', ' '])
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let mut c = common::Client::connect(addr);
    common::expect(&c.reply(), "220 ");

    // Watchdog pings keep coming while the cores are alive.
    for _ in 0..2 {
        await_notice(&notify, Duration::from_secs(5), "WATCHDOG=1");
    }

    // SIGHUP: RELOADING=1 with a timestamp, then READY=1 again.
    signal(nix::sys::signal::Signal::SIGHUP);
    let seen = await_notice(&notify, Duration::from_secs(10), "RELOADING=1");
    let reloading = seen.last().unwrap();
    let usec: u64 = field(reloading, "MONOTONIC_USEC=")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no MONOTONIC_USEC in {reloading}"));
    assert!(usec > 0);
    let seen = await_notice(&notify, Duration::from_secs(10), "READY=1");
    let ready = seen.last().unwrap();
    assert_eq!(
        field(ready, "STATUS="),
        Some("running; last reload accepted")
    );
    assert!(
        seen.iter().all(|m| m == "WATCHDOG=1\n" || m == ready),
        "{seen:?}"
    );

    // A refused reload keeps the old configuration and is still followed
    // by READY=1, or systemd would wait for it forever.
    std::fs::write(&config, "[smtp]\nmax_eror = 1\n").unwrap();
    signal(nix::sys::signal::Signal::SIGHUP);
    await_notice(&notify, Duration::from_secs(10), "RELOADING=1");
    let seen = await_notice(&notify, Duration::from_secs(10), "READY=1");
    let ready = seen.last().unwrap();
    let status = field(ready, "STATUS=").unwrap_or_default();
    assert!(
        status.starts_with("running; last reload refused: ") && status.contains("max_eror"),
        "{ready}"
    );
    // Still serving.
    assert!(c.cmd("EHLO client.test").starts_with("250"));
    drop(c);

    // SIGTERM: STOPPING=1, then a clean exit.
    signal(nix::sys::signal::Signal::SIGTERM);
    await_notice(&notify, Duration::from_secs(10), "STOPPING=1");
    let (exit_tx, exit_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = exit_tx.send(child.wait());
    });
    let status = exit_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("sluice did not exit after SIGTERM")
        .unwrap();
    std::mem::forget(guard);
    let log = log_rx
        .recv_timeout(Duration::from_secs(10))
        .unwrap_or_default();
    assert!(status.success(), "sluice exited with {status}:\n{log}");
    assert!(log.contains("sluice: reloaded"), "{log}");
    assert!(log.contains("sluice: reload refused: "), "{log}");
    assert!(log.contains("sluice: stopped "), "{log}");
}

fn tune(proc_root: Option<&Path>) -> (i32, String, String) {
    let mut cmd = Command::new(SLUICE);
    cmd.args(["tune", "--check"]);
    if let Some(root) = proc_root {
        cmd.arg("--proc-root").arg(root);
    }
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn settings() -> usize {
    sluice::tune::parse_sysctl(sluice::tune::SYSCTL_CONF)
        .unwrap()
        .len()
        + sluice::tune::parse_limits(sluice::tune::LIMITS_CONF)
            .unwrap()
            .len()
}

#[test]
fn tune_check_exit_code_agrees_with_its_report_on_this_host() {
    let (code, out, err) = tune(None);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), settings(), "one line per setting:\n{out}");
    for l in &lines {
        assert!(
            l.starts_with("ok: ") || l.starts_with("LOW: ") || l.starts_with("UNKNOWN: "),
            "{l}"
        );
    }
    let all_ok = lines.iter().all(|l| l.starts_with("ok: "));
    assert_eq!(code, if all_ok { 0 } else { 1 }, "{out}{err}");
    // Advice goes to stderr, only when something is off.
    assert_eq!(err.is_empty(), all_ok, "{err}");
}

#[test]
fn tune_check_names_a_low_value_under_a_fake_proc_root() {
    let root = tempfile::tempdir().unwrap();
    for rec in sluice::tune::parse_sysctl(sluice::tune::SYSCTL_CONF).unwrap() {
        let value = match rec.name.as_str() {
            "net.core.somaxconn" => "128".to_string(),
            // Wider than recommended on both ends: fine.
            "net.ipv4.ip_local_port_range" => "1000\t65535".to_string(),
            // Left out: unreadable.
            "fs.nr_open" => continue,
            _ => rec
                .values
                .iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join("\t"),
        };
        let path = sluice::tune::sysctl_path(root.path(), &rec.name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, format!("{value}\n")).unwrap();
    }
    let (code, out, err) = tune(Some(root.path()));
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.lines()
            .any(|l| l == "LOW: net.core.somaxconn is 128, recommended 8192"),
        "{out}"
    );
    assert!(
        out.lines().any(|l| l
            == "ok: net.ipv4.ip_local_port_range is 1000 65535 (recommended 1024 65000)"),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("UNKNOWN: fs.nr_open: cannot read ")),
        "{out}"
    );
    assert!(out.contains("ok: net.ipv4.tcp_tw_reuse is 1"), "{out}");
    assert!(err.contains("sysctl --system"), "{err}");
}
