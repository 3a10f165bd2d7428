//! `sluice tune --check`: compare this host with the recommended tuning.
//!
//! The recommendations are the files in the repository's `tuning/`
//! directory, embedded at build time, so the check and the files an
//! operator installs can never disagree. Every recommended value is a
//! floor: a host value at or above it is fine. The one exception is a port
//! range, which must *contain* the recommended range (a lower first port,
//! a higher last one).

use std::fmt;
use std::path::{Path, PathBuf};

/// `tuning/sysctl-sluice.conf`, installed as `/etc/sysctl.d/60-sluice.conf`.
pub const SYSCTL_CONF: &str = include_str!("../tuning/sysctl-sluice.conf");
/// `tuning/limits-sluice.conf`, installed as `/etc/security/limits.d/60-sluice.conf`.
pub const LIMITS_CONF: &str = include_str!("../tuning/limits-sluice.conf");

const SYSCTL_ADVICE: &str = "kernel settings: install tuning/sysctl-sluice.conf as \
/etc/sysctl.d/60-sluice.conf (scripts/install.sh does) and run `sysctl --system`";
const LIMITS_ADVICE: &str = "resource limits are this process's: the systemd unit sets \
LimitNOFILE and LimitMEMLOCK itself; outside systemd install tuning/limits-sluice.conf as \
/etc/security/limits.d/60-sluice.conf and log in again";

/// The distinct advice for everything that was not ok, in report order.
pub fn advice(findings: &[Finding]) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for f in findings.iter().filter(|f| f.verdict != Verdict::Ok) {
        if !out.contains(&f.advice) {
            out.push(f.advice);
        }
    }
    out
}

/// One recommended setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recommendation {
    /// `net.core.somaxconn`, or `RLIMIT_NOFILE` for a resource limit.
    pub name: String,
    /// The recommended values (several for `tcp_rmem`, a range, ...).
    pub values: Vec<Limit>,
}

/// A number, or no limit at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Limit {
    /// A finite value.
    Value(u64),
    /// `unlimited` / `RLIM_INFINITY`.
    Unlimited,
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Limit::Value(v) => write!(f, "{v}"),
            Limit::Unlimited => f.write_str("unlimited"),
        }
    }
}

/// The result for one setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// At or above the recommendation.
    Ok,
    /// Below it.
    Low,
    /// Could not be read (the reason).
    Unknown(String),
}

/// One line of the report.
#[derive(Debug, Clone)]
pub struct Finding {
    /// What was checked.
    pub recommendation: Recommendation,
    /// What the host has (empty when unknown).
    pub actual: Vec<Limit>,
    /// The comparison.
    pub verdict: Verdict,
    /// What to do about a low value.
    pub advice: &'static str,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = &self.recommendation.name;
        let want = join(&self.recommendation.values);
        let have = join(&self.actual);
        match &self.verdict {
            Verdict::Ok => write!(f, "ok: {name} is {have} (recommended {want})"),
            Verdict::Low => write!(f, "LOW: {name} is {have}, recommended {want}"),
            Verdict::Unknown(why) => write!(f, "UNKNOWN: {name}: {why} (recommended {want})"),
        }
    }
}

fn join(values: &[Limit]) -> String {
    values
        .iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Parses sysctl.d syntax: `key = value [value...]`, `#`/`;` comments.
pub fn parse_sysctl(text: &str) -> Result<Vec<Recommendation>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| format!("line {}: expected `key = value`: {line}", n + 1))?;
        // A leading `-` means "ignore failures to set"; the key is the same.
        let key = key.trim().trim_start_matches('-');
        let values = parse_values(value)
            .ok_or_else(|| format!("line {}: {key}: not a list of numbers: {value}", n + 1))?;
        out.push(Recommendation {
            name: key.to_string(),
            values,
        });
    }
    Ok(out)
}

fn parse_values(text: &str) -> Option<Vec<Limit>> {
    let values: Option<Vec<Limit>> = text.split_whitespace().map(parse_limit).collect();
    values.filter(|v| !v.is_empty())
}

fn parse_limit(word: &str) -> Option<Limit> {
    match word {
        "unlimited" | "infinity" | "-1" => Some(Limit::Unlimited),
        w => w.parse().ok().map(Limit::Value),
    }
}

/// Parses limits.conf syntax (`domain type item value`) into
/// `RLIMIT_NOFILE` / `RLIMIT_MEMLOCK` recommendations in the units
/// getrlimit(2) uses (memlock is given in KiB there and bytes here).
pub fn parse_limits(text: &str) -> Result<Vec<Recommendation>, String> {
    let mut out: Vec<Recommendation> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [_domain, kind, item, value] = fields[..] else {
            return Err(format!(
                "line {}: expected `domain type item value`: {line}",
                n + 1
            ));
        };
        // The soft limit is what a process gets; sluice raises its soft
        // descriptor limit to the hard one itself, and for the check both
        // lines name the same value.
        if kind != "soft" {
            continue;
        }
        let value =
            parse_limit(value).ok_or_else(|| format!("line {}: {item}: bad value", n + 1))?;
        let (name, value) = match item {
            "nofile" => ("RLIMIT_NOFILE", value),
            "memlock" => (
                "RLIMIT_MEMLOCK",
                match value {
                    Limit::Value(kib) => Limit::Value(kib.saturating_mul(1024)),
                    Limit::Unlimited => Limit::Unlimited,
                },
            ),
            _ => continue,
        };
        out.push(Recommendation {
            name: name.to_string(),
            values: vec![value],
        });
    }
    Ok(out)
}

/// Whether `actual` meets `wanted`: every value at least the recommended
/// one, except a port range, which must contain the recommended range, and
/// `tcp_tw_reuse`, a mode that must match.
pub fn meets(name: &str, wanted: &[Limit], actual: &[Limit]) -> bool {
    if wanted.len() != actual.len() {
        return false;
    }
    if name.ends_with("ip_local_port_range") && wanted.len() == 2 {
        return actual[0] <= wanted[0] && actual[1] >= wanted[1];
    }
    // A mode, not a quantity: 2 means "loopback only", less than 1.
    if name == "net.ipv4.tcp_tw_reuse" {
        return actual == wanted;
    }
    wanted.iter().zip(actual).all(|(w, a)| a >= w)
}

/// Where `/proc/sys/<key>` lives under `proc_root` (normally `/proc`).
pub fn sysctl_path(proc_root: &Path, key: &str) -> PathBuf {
    let mut p = proc_root.join("sys");
    for part in key.split('.') {
        p.push(part);
    }
    p
}

/// The current process's resource limit (soft, hard).
fn rlimit(name: &str) -> Result<(Limit, Limit), String> {
    use nix::sys::resource::{getrlimit, Resource, RLIM_INFINITY};
    let resource = match name {
        "RLIMIT_NOFILE" => Resource::RLIMIT_NOFILE,
        "RLIMIT_MEMLOCK" => Resource::RLIMIT_MEMLOCK,
        _ => return Err(format!("unknown limit {name}")),
    };
    let conv = |v: u64| {
        if v == RLIM_INFINITY {
            Limit::Unlimited
        } else {
            Limit::Value(v)
        }
    };
    getrlimit(resource)
        .map(|(s, h)| (conv(s), conv(h)))
        .map_err(|e| format!("getrlimit: {e}"))
}

/// Checks every embedded recommendation against the host: sysctls under
/// `proc_root`, resource limits of this process.
pub fn check(proc_root: &Path) -> Result<Vec<Finding>, String> {
    let mut findings = Vec::new();
    for rec in parse_sysctl(SYSCTL_CONF)? {
        let path = sysctl_path(proc_root, &rec.name);
        let (actual, verdict) = match std::fs::read_to_string(&path) {
            Ok(text) => match parse_values(&text) {
                Some(actual) => {
                    let ok = meets(&rec.name, &rec.values, &actual);
                    (actual, if ok { Verdict::Ok } else { Verdict::Low })
                }
                None => (
                    Vec::new(),
                    Verdict::Unknown(format!("{}: unexpected content {text:?}", path.display())),
                ),
            },
            Err(e) => (
                Vec::new(),
                Verdict::Unknown(format!("cannot read {}: {e}", path.display())),
            ),
        };
        findings.push(Finding {
            recommendation: rec,
            actual,
            verdict,
            advice: SYSCTL_ADVICE,
        });
    }
    for rec in parse_limits(LIMITS_CONF)? {
        let (actual, verdict) = match rlimit(&rec.name) {
            Ok((soft, hard)) => {
                // sluice raises its soft descriptor limit to the hard one at
                // start, so the hard limit is what it will run with; glommio
                // checks the soft memlock limit.
                let have = if rec.name == "RLIMIT_NOFILE" {
                    hard
                } else {
                    soft
                };
                let ok = meets(&rec.name, &rec.values, &[have]);
                (vec![have], if ok { Verdict::Ok } else { Verdict::Low })
            }
            Err(e) => (Vec::new(), Verdict::Unknown(e)),
        };
        findings.push(Finding {
            recommendation: rec,
            actual,
            verdict,
            advice: LIMITS_ADVICE,
        });
    }
    Ok(findings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_files_parse_and_cover_the_important_settings() {
        let sysctl = parse_sysctl(SYSCTL_CONF).unwrap();
        for key in [
            "net.core.somaxconn",
            "net.ipv4.ip_local_port_range",
            "net.ipv4.tcp_tw_reuse",
            "net.core.rmem_max",
            "net.core.wmem_max",
            "fs.file-max",
        ] {
            assert!(sysctl.iter().any(|r| r.name == key), "{key} missing");
        }
        let limits = parse_limits(LIMITS_CONF).unwrap();
        let names: Vec<&str> = limits.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["RLIMIT_NOFILE", "RLIMIT_MEMLOCK"]);
    }

    #[test]
    fn every_setting_has_a_comment_above_it() {
        let mut commented = false;
        for line in SYSCTL_CONF.lines().map(str::trim) {
            if line.starts_with('#') {
                commented = true;
            } else if line.is_empty() {
                commented = false;
            } else {
                assert!(commented, "no comment explains {line}");
            }
        }
    }

    #[test]
    fn floors_ranges_and_unlimited() {
        let v = |xs: &[u64]| xs.iter().map(|&x| Limit::Value(x)).collect::<Vec<_>>();
        assert!(meets("net.core.somaxconn", &v(&[8192]), &v(&[65535])));
        assert!(meets("net.core.somaxconn", &v(&[8192]), &v(&[8192])));
        assert!(!meets("net.core.somaxconn", &v(&[8192]), &v(&[4096])));
        let range = "net.ipv4.ip_local_port_range";
        assert!(meets(range, &v(&[1024, 65000]), &v(&[1024, 65535])));
        assert!(!meets("net.ipv4.tcp_tw_reuse", &v(&[1]), &v(&[2])));
        assert!(meets("net.ipv4.tcp_tw_reuse", &v(&[1]), &v(&[1])));
        assert!(!meets(range, &v(&[1024, 65000]), &v(&[32768, 60999])));
        assert!(!meets(range, &v(&[1024, 65000]), &v(&[1024, 60999])));
        assert!(!meets(
            "net.ipv4.tcp_rmem",
            &v(&[4096, 131072, 16777216]),
            &v(&[4096, 131072, 6291456])
        ));
        assert!(meets(
            "RLIMIT_MEMLOCK",
            &[Limit::Unlimited],
            &[Limit::Unlimited]
        ));
        assert!(!meets(
            "RLIMIT_MEMLOCK",
            &[Limit::Unlimited],
            &v(&[8 << 20])
        ));
        assert!(meets("RLIMIT_NOFILE", &v(&[1024]), &[Limit::Unlimited]));
        assert!(!meets("x", &v(&[1, 2]), &v(&[1])));
    }

    #[test]
    fn parse_errors_name_the_line() {
        let e = parse_sysctl("# c\nnet.core.somaxconn 4096\n").unwrap_err();
        assert!(e.starts_with("line 2:"), "{e}");
        let e = parse_sysctl("a.b = many\n").unwrap_err();
        assert!(e.contains("a.b"), "{e}");
        let r = parse_sysctl("-net.x = 1 2\n").unwrap();
        assert_eq!(r[0].name, "net.x");
        assert_eq!(
            parse_limits("sluice soft memlock 64\n").unwrap()[0].values,
            [Limit::Value(65536)]
        );
        assert!(parse_limits("sluice soft nofile\n").is_err());
    }

    #[test]
    fn sysctl_keys_map_to_proc_paths() {
        assert_eq!(
            sysctl_path(Path::new("/proc"), "net.ipv4.ip_local_port_range"),
            Path::new("/proc/sys/net/ipv4/ip_local_port_range")
        );
    }
}
