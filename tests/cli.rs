//! The `sluice` command line: configuration checks name the file, line and
//! key; `passwd` produces a hash the users file accepts.

use std::process::{Command, Stdio};

fn sluice(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn check_config_accepts_a_good_file_and_names_file_line_key_for_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "route = \"discard\"\n[smtp]\nmax_errors = 3\n").unwrap();
    let (code, out) = sluice(&["check-config", good.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("max_errors: 3"), "{out}");

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "# comment\n[smtp]\nmax_errors = 3\nrelay_networks = [\"192.0.2.0/40\"]\n",
    )
    .unwrap();
    let (code, out) = sluice(&["check-config", bad.to_str().unwrap()]);
    assert_eq!(code, 2, "{out}");
    let want = format!("{}:4: key `smtp.relay_networks`", bad.display());
    assert!(out.contains(&want), "{want:?} not in {out}");

    // serve refuses the same file before binding anything.
    let (code, out) = sluice(&["serve", "--config", bad.to_str().unwrap()]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains(&want), "{out}");
}

#[test]
fn passwd_hash_is_accepted_by_the_users_file_parser() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("passwd")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"s3cret\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let hash = String::from_utf8(out.stdout).unwrap();
    let users = sluice::auth::Users::parse(&format!("bob:{}", hash.trim())).unwrap();
    assert!(users.verify("bob", "s3cret"));
    assert!(!users.verify("bob", "s3cret "));
}
