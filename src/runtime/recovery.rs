//! Startup under `ack = "journal"`: each shard opens its own journal
//! directory (`state_dir/journal/shard-<i>`), puts its pending recipients
//! back in the queues and reports what it found.
//!
//! When the number of cores changed since the journal was written, the
//! recipients a shard no longer owns are handed to their new owners like
//! any other mail (journaled there first, acknowledged back), and only then
//! recorded here as moved; directories of shards that no longer exist are
//! emptied the same way by shard 0 and then removed. A crash in between can
//! only cause a duplicate, never a loss.

use super::Core;
use crate::config::Config;
use crate::delivery::Engine;
use crate::journal::{Journal, JournalOptions, Outcome, Recovery};
use crate::shard::ack::{Ack, Decision};
use crate::shard::hash::{domain_of, shard_of};
use crate::shard::Envelope;
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// The journal directory of shard `index`.
pub(super) fn shard_dir(c: &Config, index: usize) -> PathBuf {
    c.state_dir.join("journal").join(format!("shard-{index}"))
}

/// Opens (and recovers) shard `index`'s journal.
pub(super) fn open_journal(c: &Config, index: usize) -> Result<(Journal, Recovery), String> {
    let opts = JournalOptions {
        segment_bytes: c.journal.segment_size.0,
        compact_factor: c.journal.compact_factor,
        max_buffered_bytes: usize::try_from(c.journal.max_buffered.0).unwrap_or(usize::MAX),
        ..JournalOptions::default()
    };
    Journal::open(&shard_dir(c, index), opts).map_err(|e| format!("journal: {e}"))
}

/// Re-queues what shard `core.index` recovered, re-homes what it no longer
/// owns, and (on shard 0) drains the directories of vanished shards.
pub(super) async fn restore(core: Rc<Core>, engine: Rc<Engine>, r: Recovery) {
    report(core.index, &r);
    let started = std::time::Instant::now();
    let replay = r.stats.elapsed;
    let (index, shards) = (core.index, core.shards);
    let mut moved = 0u64;
    for m in r.messages {
        let Some((env, indexes)) = engine.restore(m, |d| shard_of(d, shards) == index) else {
            continue;
        };
        let id = env.id;
        if rehome(&core, env).await {
            if let Some(j) = engine.journal() {
                for i in &indexes {
                    let _ = j.append_outcome(id, *i, Outcome::Moved);
                }
                j.request_flush();
            }
            moved += indexes.len() as u64;
        }
    }
    if moved > 0 {
        eprintln!("sluice: journal shard={index} re-homed {moved} recipients to their new shards");
    }
    eprintln!(
        "sluice: journal shard={index} requeued in ms={} (replay and requeue: ms={})",
        started.elapsed().as_millis(),
        (replay + started.elapsed()).as_millis()
    );
    if index == 0 {
        for dir in vanished_shards(&core.shared.config.state_dir.join("journal"), shards) {
            drain(&core, &dir).await;
        }
    }
}

fn report(index: usize, r: &Recovery) {
    let s = &r.stats;
    let torn = s
        .torn_tail
        .map(|(seg, off, len)| format!(" torn_tail=segment {seg} offset {off} ({len} bytes cut)"))
        .unwrap_or_default();
    eprintln!(
        "sluice: journal shard={index} recovered messages={} pending={} already_final={} \
         records={} damaged_regions={} ms={}{torn}",
        s.messages,
        s.recipients_pending,
        s.recipients_final,
        s.records,
        s.damaged.len(),
        s.elapsed.as_millis()
    );
    for d in &s.damaged {
        tracing::warn!(
            segment = d.segment,
            offset = d.offset,
            len = d.len,
            reason = %d.reason,
            "journal: damaged region skipped; records after it were recovered"
        );
    }
}

/// Sends recipients to their owning shards as new journaled mail and waits
/// until every part is durable there. False if any part was refused.
async fn rehome(core: &Core, env: Envelope) -> bool {
    let mut parts: Vec<(usize, Vec<String>)> = Vec::new();
    for r in env.recipients {
        let s = shard_of(domain_of(&r), core.shards);
        match parts.iter_mut().find(|(p, _)| *p == s) {
            Some((_, v)) => v.push(r),
            None => parts.push((s, vec![r])),
        }
    }
    let mut acks = Vec::new();
    for (s, recipients) in parts {
        let ack = Ack::journal(1);
        let part = Envelope {
            id: core.next_queue_id(),
            reverse_path: env.reverse_path.clone(),
            recipients,
            body: env.body.clone(),
            eight_bit: env.eight_bit,
            smtputf8: env.smtputf8,
            ack: Some(ack.clone()),
        };
        if core.deliver(s, vec![part]).await.is_err() {
            return false;
        }
        acks.push(ack);
    }
    let mut ok = true;
    for ack in acks {
        if ack.decided().await != Decision::Accepted {
            tracing::warn!(reply = ?ack.failure_reply(), "journal: could not re-home recipients; they stay in the old journal for the next start");
            ok = false;
        }
    }
    ok
}

/// `shard-<k>` directories for shards that no longer exist.
fn vanished_shards(journal: &Path, shards: usize) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(journal) else {
        return Vec::new();
    };
    let mut out: Vec<(usize, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let k: usize = name.strip_prefix("shard-")?.parse().ok()?;
            (k >= shards).then(|| (k, e.path()))
        })
        .collect();
    out.sort();
    out.into_iter().map(|(_, p)| p).collect()
}

/// Re-homes every pending recipient of a vanished shard's journal, then
/// removes the directory (kept if anything could not be re-homed).
async fn drain(core: &Core, dir: &Path) {
    let r = match crate::journal::recover_dir(dir) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sluice: journal {}: cannot read: {e}", dir.display());
            return;
        }
    };
    let mut all = true;
    let mut n = 0u64;
    for m in r.messages {
        let recipients: Vec<String> = m
            .recipients
            .into_iter()
            .filter(|r| r.state.is_pending() && !r.addr.is_empty())
            .map(|r| r.addr)
            .collect();
        if recipients.is_empty() {
            continue;
        }
        n += recipients.len() as u64;
        let env = Envelope {
            id: m.id,
            reverse_path: std::sync::Arc::from(m.reverse_path.as_str()),
            recipients,
            body: m.body,
            eight_bit: m.eight_bit,
            smtputf8: m.smtputf8,
            ack: None,
        };
        all &= rehome(core, env).await;
    }
    if !all {
        eprintln!(
            "sluice: journal {}: some recipients could not be re-homed; kept for the next start",
            dir.display()
        );
        return;
    }
    match crate::journal::retire_dir(dir) {
        Ok(_) => eprintln!(
            "sluice: journal {}: re-homed {n} recipients from a shard that no longer exists",
            dir.display()
        ),
        Err(e) => eprintln!("sluice: journal {}: cannot remove: {e}", dir.display()),
    }
}
