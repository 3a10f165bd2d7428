//! Warm-up counts survive a restart: each shard writes how many messages
//! every warming destination took today to `state_dir/warmup/shard-N.json`
//! every few seconds (only when they changed) and when it stops, and reads
//! them back at start. Without this a restart would reset the day's count
//! and a new IP could send its whole cap again — the very thing a warm-up
//! schedule is there to prevent.
//!
//! The file is small (one entry per warming destination) and replaced
//! atomically (write, fsync, rename), so it is either the old or the new
//! one. After a crash up to one interval of sends is missing from the
//! count; the cap is then exceeded by at most what one interval sent.
//! Every shard reads every shard's file and keeps the destinations it owns
//! now, so a change in the number of cores keeps the counts too.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// How often a shard writes its counts when they changed.
pub const INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// One destination's count for one UTC day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Count {
    /// The destination's domain.
    pub destination: String,
    /// Its sender pool, for a pool's sub-queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// Days since the Unix epoch (UTC).
    pub day: i64,
    /// Messages admitted that day.
    pub sent: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct File {
    counts: Vec<Count>,
}

/// The directory the shards' files live in.
pub fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join("warmup")
}

/// Reads every shard's file in `dir` and returns the counts of `day` for
/// which `mine(domain)` holds, keyed as the engine keys destinations. An
/// unreadable file is reported and skipped: it holds no mail, only a cap.
pub fn load(dir: &Path, day: i64, mine: impl Fn(&str) -> bool) -> HashMap<String, u64> {
    let mut out = HashMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.extension().and_then(|x| x.to_str()) != Some("json") {
            continue;
        }
        let parsed = std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<File>(&b).map_err(|e| e.to_string()));
        let file = match parsed {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "warm-up counts unreadable; ignored");
                continue;
            }
        };
        for c in file.counts {
            if c.day != day || !mine(&c.destination) {
                continue;
            }
            let key = key(&c.destination, c.pool.as_deref());
            let n = out.entry(key).or_insert(0);
            *n = (*n).max(c.sent);
        }
    }
    out
}

/// The engine's key for a destination and pool.
pub fn key(destination: &str, pool: Option<&str>) -> String {
    match pool {
        None => destination.to_string(),
        Some(p) => format!("{destination} {p}"),
    }
}

/// Replaces shard `index`'s file with `counts` (blocking: run it off the
/// executor).
pub fn store(dir: &Path, index: usize, counts: &[Count]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("shard-{index}.json"));
    let tmp = dir.join(format!(".shard-{index}.json.tmp"));
    let body = serde_json::to_vec(&File {
        counts: counts.to_vec(),
    })
    .map_err(std::io::Error::other)?;
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&body)?;
    f.sync_data()?;
    std::fs::rename(&tmp, &path)?;
    // The rename itself is durable once the directory is synced.
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(d: &str, pool: Option<&str>, day: i64, sent: u64) -> Count {
        Count {
            destination: d.into(),
            pool: pool.map(str::to_string),
            day,
            sent,
        }
    }

    #[test]
    fn counts_come_back_for_todays_owned_destinations() {
        let t = tempfile::tempdir().unwrap();
        let d = dir(t.path());
        store(
            &d,
            0,
            &[
                count("a.test", None, 7, 3),
                count("b.test", Some("news"), 7, 5),
            ],
        )
        .unwrap();
        store(
            &d,
            1,
            &[count("c.test", None, 7, 9), count("a.test", None, 6, 100)],
        )
        .unwrap();
        std::fs::write(d.join("shard-2.json"), b"{not json").unwrap();
        let got = load(&d, 7, |dom| dom != "c.test");
        assert_eq!(got.len(), 2);
        assert_eq!(got.get("a.test"), Some(&3));
        assert_eq!(got.get("b.test news"), Some(&5));
        assert!(load(&d, 8, |_| true).is_empty());
        assert!(load(&t.path().join("none"), 7, |_| true).is_empty());
    }
}
