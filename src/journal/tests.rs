//! Journal tests on real files: round trip, group commit, torn tails,
//! damage, rotation / retirement / compaction, disk full, and a property
//! test of crash prefixes.

use super::*;
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use tempfile::TempDir;

fn run<T>(f: impl Future<Output = T>) -> T {
    glommio::LocalExecutor::default().run(f)
}

fn open(dir: &Path) -> (Journal, Recovery) {
    open_with(dir, JournalOptions::default())
}

fn open_with(dir: &Path, opts: JournalOptions) -> (Journal, Recovery) {
    Journal::open(dir, opts).unwrap()
}

fn add(j: &Journal, id: u64, rcpts: &[&str], body: &[u8]) -> Ticket {
    j.append_message(&MessageRecord {
        id,
        reverse_path: "sender@src.test",
        recipients: rcpts,
        body,
        eight_bit: id % 2 == 0,
        smtputf8: id % 3 == 0,
        accepted_unix: 1_700_000_000 + id,
    })
    .unwrap()
}

/// Recovered state: id → (index, addr, state) of every known recipient.
type View = BTreeMap<u64, Vec<(u32, String, RcptState)>>;

fn view(r: &Recovery) -> View {
    r.messages
        .iter()
        .map(|m| {
            (
                m.id,
                m.recipients
                    .iter()
                    .map(|r| (r.index, r.addr.clone(), r.state))
                    .collect(),
            )
        })
        .collect()
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    io::list_segments(dir)
        .unwrap()
        .into_iter()
        .map(|s| s.1)
        .collect()
}

const PENDING: RcptState = RcptState::Pending {
    attempts: 0,
    next_attempt_unix: 0,
};

#[test]
fn round_trip_keeps_exact_recipient_state() {
    let tmp = TempDir::new().unwrap();
    run(async {
        let (j, rec) = open(tmp.path());
        assert!(rec.messages.is_empty());
        add(
            &j,
            1,
            &["a@x.test", "b@x.test", "c@y.test", "d@y.test", "e@z.test"],
            b"body one\r\n",
        );
        add(&j, 2, &["f@x.test"], b"two");
        add(&j, 3, &["g@x.test", "h@x.test"], &[0xff; 3000]);
        j.commit().await.unwrap();
        j.append_delivered(1, 0).unwrap();
        j.append_bounced(1, 1).unwrap();
        j.append_deferred(1, 2, 3, 1_700_000_999).unwrap();
        j.append_expired(1, 3).unwrap();
        j.append_delivered(2, 0).unwrap();
        j.append_deferred(3, 1, 1, 5).unwrap();
        j.append_deferred(3, 1, 2, 6).unwrap();
        j.append_checkpoint(b"campaign 7: 0..100").unwrap();
        j.append_checkpoint(b"campaign 7: 0..200").unwrap();
        j.commit().await.unwrap();
        // Outcomes for recipients that are final or unknown are refused.
        assert!(matches!(
            j.append_delivered(2, 0),
            Err(JournalError::UnknownRecipient { .. })
        ));
        assert!(matches!(
            j.append_delivered(1, 9),
            Err(JournalError::UnknownRecipient { .. })
        ));
        assert!(matches!(
            add_err(&j, 3),
            JournalError::DuplicateMessage { id: 3 }
        ));
    });
    let (_j, rec) = open(tmp.path());
    let v = view(&rec);
    assert_eq!(v.len(), 2, "message 2 is final and not returned");
    let m1 = &v[&1];
    assert_eq!(
        m1.iter().map(|r| r.2).collect::<Vec<_>>(),
        vec![
            RcptState::Delivered,
            RcptState::Bounced,
            RcptState::Pending {
                attempts: 3,
                next_attempt_unix: 1_700_000_999
            },
            RcptState::Expired,
            PENDING
        ]
    );
    assert_eq!(m1[4].1, "e@z.test");
    assert_eq!(
        v[&3][1].2,
        RcptState::Pending {
            attempts: 2,
            next_attempt_unix: 6
        }
    );
    let r3 = rec.messages.iter().find(|m| m.id == 3).unwrap();
    assert_eq!(r3.body.as_ref(), &[0xff; 3000][..]);
    assert!(
        r3.smtputf8
            && !r3.eight_bit
            && r3.reverse_path == "sender@src.test"
            && r3.accepted_unix == 1_700_000_003
    );
    assert_eq!(rec.checkpoint.as_deref(), Some(&b"campaign 7: 0..200"[..]));
    let s = &rec.stats;
    assert_eq!(
        (
            s.messages,
            s.recipients,
            s.recipients_final,
            s.recipients_pending
        ),
        (2, 8, 4, 4)
    );
    assert!(s.damaged.is_empty() && s.torn_tail.is_none());
}

fn add_err(j: &Journal, id: u64) -> JournalError {
    j.append_message(&MessageRecord {
        id,
        reverse_path: "",
        recipients: &["x@y.test"],
        body: b"",
        eight_bit: false,
        smtputf8: false,
        accepted_unix: 0,
    })
    .unwrap_err()
}

#[test]
fn a_second_writer_is_refused() {
    let tmp = TempDir::new().unwrap();
    let (_j, _) = open(tmp.path());
    assert!(matches!(
        Journal::open(tmp.path(), JournalOptions::default()),
        Err(JournalError::Locked { .. })
    ));
}

#[test]
fn group_commit_batches_waiters_and_releases_them_only_when_durable() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().to_path_buf();
    let callers = 200u64;
    let syncs = run(async move {
        let (j, _) = open(&dir);
        let mut tasks = Vec::new();
        for id in 0..callers {
            let j = j.clone();
            let dir = dir.clone();
            tasks.push(glommio::spawn_local(async move {
                // Stagger arrivals so some come while a flush is running.
                for _ in 0..(id % 7) {
                    glommio::yield_if_needed().await;
                    futures_lite::future::yield_now().await;
                }
                let t = add(&j, id, &["r@d.test"], &[b'x'; 512]);
                let syncs_before = j.stats().syncs;
                j.commit().await.unwrap();
                let s = j.stats();
                assert!(
                    s.durable >= t.end(),
                    "released before its batch was durable"
                );
                assert!(
                    s.syncs > syncs_before,
                    "released without a sync after its append"
                );
                if id % 50 == 0 {
                    // And the bytes really are in the file.
                    assert!(recover_dir(&dir)
                        .unwrap()
                        .messages
                        .iter()
                        .any(|m| m.id == id));
                }
            }));
        }
        for t in tasks {
            t.await;
        }
        let h = j.fsync_histogram();
        assert_eq!(h.len(), j.stats().syncs);
        j.stats().syncs
    });
    eprintln!("{callers} committers, {syncs} fdatasyncs");
    assert!(syncs * 4 <= callers, "{syncs} syncs for {callers} callers");
    let (_j, rec) = open(tmp.path());
    assert_eq!(rec.messages.len() as u64, callers);
}

/// Writes `n` one-recipient messages, commits, and returns the offset where
/// the last record of the active segment starts.
fn write_some(dir: &Path, n: u64) -> u64 {
    run(async {
        let (j, _) = open(dir);
        for id in 1..=n {
            add(&j, id, &["r@d.test"], format!("message {id}").as_bytes());
        }
        j.commit().await.unwrap();
        let st = j.sh.st.borrow();
        st.index.msgs[&n].loc.off
    })
}

#[test]
fn torn_tail_is_truncated_and_appends_after_reopen_recover() {
    let src = TempDir::new().unwrap();
    let last_off = write_some(src.path(), 5);
    let seg = segments(src.path()).pop().unwrap();
    let full = std::fs::metadata(&seg).unwrap().len();
    for cut in [
        last_off + 1,
        last_off + 4,
        last_off + 12,
        last_off + 13,
        full - 1,
    ] {
        for garbage in [&b""[..], &[0xAB; 37][..], &frame::FRAME_MAGIC[..3]] {
            let tmp = TempDir::new().unwrap();
            let dir = tmp.path();
            std::fs::copy(&seg, dir.join(seg.file_name().unwrap())).unwrap();
            let p = segments(dir).pop().unwrap();
            let mut bytes = std::fs::read(&p).unwrap();
            bytes.truncate(cut as usize);
            bytes.extend_from_slice(garbage);
            std::fs::write(&p, &bytes).unwrap();

            let (j, rec) = open(dir);
            assert_eq!(
                rec.messages.iter().map(|m| m.id).collect::<Vec<_>>(),
                vec![1, 2, 3, 4],
                "cut {cut}"
            );
            let (s, at, n) = rec.stats.torn_tail.unwrap();
            assert_eq!((at, n), (last_off, cut - last_off + garbage.len() as u64));
            assert!(s > 0 && rec.stats.damaged.is_empty());
            assert_eq!(std::fs::metadata(&p).unwrap().len(), last_off, "tail cut");
            run(async {
                add(&j, 10, &["new@d.test"], b"after the tear");
                j.commit().await.unwrap();
            });
            drop(j);
            let (_j, rec) = open(dir);
            assert_eq!(
                rec.messages.iter().map(|m| m.id).collect::<Vec<_>>(),
                vec![1, 2, 3, 4, 10]
            );
            assert!(rec.stats.torn_tail.is_none() && rec.stats.damaged.is_empty());
        }
    }
}

#[test]
fn a_torn_segment_header_removes_the_segment() {
    let tmp = TempDir::new().unwrap();
    write_some(tmp.path(), 2);
    // A crash right after creating the next segment file.
    std::fs::write(
        io::seg_path(tmp.path(), 99),
        &frame::segment_header(99, &[1; 16])[..10],
    )
    .unwrap();
    let (_j, rec) = open(tmp.path());
    assert_eq!(rec.messages.len(), 2);
    assert_eq!(rec.stats.torn_tail, Some((99, 0, 10)));
    assert!(!io::seg_path(tmp.path(), 99).exists());
}

#[test]
fn a_damaged_middle_record_is_reported_and_later_records_recovered() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    let locs = run(async {
        let (j, _) = open(dir);
        for id in 1..=10 {
            add(
                &j,
                id,
                &["a@d.test", "b@d.test"],
                format!("body of {id}").as_bytes(),
            );
        }
        j.append_delivered(7, 0).unwrap();
        j.commit().await.unwrap();
        let st = j.sh.st.borrow();
        (st.index.msgs[&5].loc, st.index.msgs[&10].loc)
    });
    let seg = io::seg_path(dir, locs.0.seg);
    let mut bytes = std::fs::read(&seg).unwrap();
    // One bit in message 5's body, and message 10's header in another run.
    bytes[(locs.0.off + u64::from(locs.0.len) - 3) as usize] ^= 0x10;
    std::fs::write(&seg, &bytes).unwrap();
    let rec = recover_dir(dir).unwrap();
    let ids: Vec<u64> = rec.messages.iter().map(|m| m.id).collect();
    assert_eq!(ids, vec![1, 2, 3, 4, 6, 7, 8, 9, 10]);
    assert_eq!(rec.stats.damaged.len(), 1);
    let d = &rec.stats.damaged[0];
    assert_eq!(
        (d.segment, d.offset, d.len),
        (locs.0.seg, locs.0.off, u64::from(locs.0.len))
    );
    assert!(rec.stats.torn_tail.is_none());
    let m7 = rec.messages.iter().find(|m| m.id == 7).unwrap();
    assert_eq!(m7.recipients[0].state, RcptState::Delivered);

    // Damage to a length field: the frame seems to run past the next
    // ones, yet they are found and the damage is not mistaken for a tear.
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[(locs.0.off + 5) as usize] = 0x7f;
    std::fs::write(&seg, &bytes).unwrap();
    let rec = recover_dir(dir).unwrap();
    assert_eq!(rec.messages.len(), 9);
    assert!(rec.stats.torn_tail.is_none());

    // Damage at the end of a sealed (not last) segment is damage, not a tear.
    let (j, rec) = open(dir);
    assert_eq!(rec.messages.len(), 9);
    drop(j);
    let mut bytes = std::fs::read(&seg).unwrap();
    let end = bytes.len();
    bytes[end - 2] ^= 1;
    std::fs::write(&seg, &bytes).unwrap();
    let rec = recover_dir(dir).unwrap();
    assert!(rec.stats.torn_tail.is_none());
    assert_eq!(rec.stats.damaged.len(), 2);
    assert_eq!(
        rec.messages.iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 6, 7, 8, 9, 10]
    );
    // The damaged record was the "delivered": a redelivery, never a loss.
    let m7 = rec.messages.iter().find(|m| m.id == 7).unwrap();
    assert_eq!(m7.recipients[0].state, PENDING);
}

fn small() -> JournalOptions {
    JournalOptions {
        segment_bytes: 8 << 10,
        auto_compact: false,
        ..JournalOptions::default()
    }
}

#[test]
fn segments_rotate_and_fully_final_ones_retire() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    run(async {
        let (j, _) = open_with(dir, small());
        for id in 1..=40 {
            add(&j, id, &["a@d.test", "b@d.test"], &[b'm'; 1000]);
            j.commit().await.unwrap();
        }
        let n = segments(dir).len();
        assert!(n >= 5, "{n} segments");
        for s in segments(dir) {
            // A segment closes at the size (a record is never split).
            assert!(std::fs::metadata(&s).unwrap().len() <= 8 << 10);
        }
        // Finish the first 20 messages: their segments go away, the rest stay.
        for id in 1..=20 {
            j.append_delivered(id, 0).unwrap();
            j.append_bounced(id, 1).unwrap();
        }
        j.commit().await.unwrap();
        j.retire().await.unwrap();
        assert!(segments(dir).len() < n, "retired some");
        assert!(j.stats().retired_segments > 0);
        let rec = recover_dir(dir).unwrap();
        assert_eq!(
            rec.messages.iter().map(|m| m.id).collect::<Vec<_>>(),
            (21..=40).collect::<Vec<_>>()
        );
        // The outcomes outlive the messages they finished: harmless orphans.
        assert!(rec.stats.orphan_records > 0);
    });
}

#[test]
fn compaction_moves_stragglers_forward_and_old_segments_go() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    run(async {
        let (j, _) = open_with(dir, small());
        for id in 1..=60 {
            add(&j, id, &["a@d.test", "b@d.test", "c@d.test"], &[b'm'; 700]);
        }
        j.commit().await.unwrap();
        // One deferred straggler per ten messages; everything else final.
        for id in 1..=60 {
            for r in 0..3 {
                if id % 10 == 0 && r == 2 {
                    j.append_deferred(id, r, 4, 1_800_000_000 + id).unwrap();
                } else {
                    j.append_delivered(id, r).unwrap();
                }
            }
        }
        j.append_checkpoint(b"old").unwrap();
        j.commit().await.unwrap();
        j.append_checkpoint(b"cp").unwrap();
        j.commit().await.unwrap();
        j.retire().await.unwrap();
        let before: Vec<PathBuf> = segments(dir);
        assert!(j.needs_compaction());
        let copied = j.compact().await.unwrap();
        assert_eq!(copied, 6);
        let after = segments(dir);
        assert!(
            before.iter().filter(|p| after.contains(p)).count() <= 1,
            "old segments went: {before:?} {after:?}"
        );
        let (disk, live) = (j.disk_bytes(), j.live_bytes());
        assert!(disk <= 2 * live + (8 << 10), "disk {disk} live {live}");
        // A straggler finalised after the copy stays final.
        j.append_delivered(10, 2).unwrap();
        j.commit().await.unwrap();
    });
    let (_j, rec) = open_with(dir, small());
    let v = view(&rec);
    assert_eq!(
        v.keys().copied().collect::<Vec<_>>(),
        vec![20, 30, 40, 50, 60]
    );
    for (id, rcpts) in &v {
        // The copy carries only the pending recipient, with its state.
        let pending: Vec<_> = rcpts.iter().filter(|r| r.2.is_pending()).collect();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].0, 2);
        assert_eq!(pending[0].1, "c@d.test");
        assert_eq!(
            pending[0].2,
            RcptState::Pending {
                attempts: 4,
                next_attempt_unix: 1_800_000_000 + id
            }
        );
    }
    assert_eq!(rec.messages[0].body.len(), 700);
    assert_eq!(rec.checkpoint.as_deref(), Some(&b"cp"[..]));
    assert!(rec.stats.damaged.is_empty());
}

#[test]
fn compaction_never_lets_an_old_checkpoint_overtake_a_newer_one() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    run(async {
        let (j, _) = open_with(dir, small());
        j.append_checkpoint(b"one").unwrap();
        j.commit().await.unwrap();
        for id in 1..=20 {
            add(&j, id, &["a@d.test"], &[b'm'; 1000]);
            j.commit().await.unwrap();
        }
        // "two" is appended but not yet durable when compaction looks.
        j.append_checkpoint(b"two").unwrap();
        j.compact().await.unwrap();
        j.commit().await.unwrap();
    });
    assert_eq!(
        recover_dir(dir).unwrap().checkpoint.as_deref(),
        Some(&b"two"[..])
    );
}

#[test]
fn auto_compaction_keeps_disk_within_the_factor() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    let seg = 8u64 << 10;
    let opts = JournalOptions {
        segment_bytes: seg,
        ..JournalOptions::default()
    };
    let n = 1500u64;
    run(async {
        let (j, _) = open_with(dir, opts);
        let mut worst: f64 = 0.0;
        for id in 1..=n {
            add(&j, id, &["a@d.test", "b@d.test"], &[b'm'; 300]);
            j.commit().await.unwrap();
            // Recipient a is delivered at once; b twenty messages later,
            // except one in ten, which never finishes during the test.
            j.append_delivered(id, 0).unwrap();
            if id > 20 && (id - 20) % 10 != 0 {
                j.append_delivered(id - 20, 1).unwrap();
            }
            j.commit().await.unwrap();
            // Let the background upkeep run, as it would between batches.
            glommio::timer::sleep(std::time::Duration::from_micros(50)).await;
            let (disk, live) = (j.disk_bytes(), j.live_bytes());
            if id > 300 {
                worst = worst.max(disk as f64 / live as f64);
                // Sealed segments stay within the factor, give or take the
                // segment that just sealed; plus the active one. (While a
                // compaction is copying, the copies come first and the old
                // segments go after, so that moment is not sampled.)
                let compacting = j.sh.st.borrow().compacting;
                if !compacting && disk > 2 * live + 2 * seg {
                    let st = j.sh.st.borrow();
                    let segs: Vec<_> = st
                        .index
                        .segs
                        .iter()
                        .map(|(k, v)| (*k, v.len, v.pending, v.live, v.refs.clone()))
                        .collect();
                    panic!(
                        "id {id}: disk {disk} live {live} active {} compacting {} {segs:?}",
                        st.active_seq, st.compacting
                    );
                }
            }
        }
        eprintln!(
            "worst disk/live {worst:.2}; disk {} live {} compactions {} retired {}",
            j.disk_bytes(),
            j.live_bytes(),
            j.stats().compactions,
            j.stats().retired_segments
        );
        assert!(j.stats().compactions > 0);
    });
    let (_j, rec) = open(dir);
    let expect = (1..=n).filter(|id| id % 10 == 0 || *id > n - 20).count();
    assert_eq!(rec.messages.len(), expect);
    assert!(rec.stats.damaged.is_empty());
}

struct Tmpfs(PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

fn fill(path: &Path) -> u64 {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let mut n = 0;
    while f.write_all(&[0u8; 4096]).is_ok() {
        n += 4096;
    }
    let _ = f.sync_all();
    n
}

#[test]
fn disk_full_is_reported_and_the_journal_recovers_when_space_returns() {
    let mnt = TempDir::new().unwrap();
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
        .arg(mnt.path())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("SKIPPED disk_full test: cannot mount a tmpfs (needs root)");
        return;
    }
    let _umount = Tmpfs(mnt.path().to_path_buf());
    let dir = mnt.path().join("shard-0");
    let filler = mnt.path().join("filler");
    let opts = JournalOptions {
        segment_bytes: 32 << 10,
        ..JournalOptions::default()
    };
    run(async {
        let (j, _) = open_with(&dir, opts.clone());
        add(&j, 1, &["a@d.test", "b@d.test"], &[b'1'; 2000]);
        j.commit().await.unwrap();
        let seg_len = j.disk_bytes();
        fill(&filler);
        // Give back two pages so the next batch is written in part.
        let len = std::fs::metadata(&filler).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&filler)
            .unwrap()
            .set_len(len - 8192)
            .unwrap();

        add(&j, 2, &["c@d.test"], &[b'2'; 20_000]);
        let e = j.commit().await.unwrap_err();
        assert!(e.is_no_space(), "{e}");
        assert_eq!(j.disk_bytes(), seg_len, "nothing half-written left behind");
        assert_eq!(recover_dir(&dir).unwrap().stats.torn_tail, None);
        // Outcomes for durable messages fail the same way meanwhile, and
        // several batches in a row fail without breaking anything.
        add(&j, 3, &["c@d.test"], &[b'3'; 40_000]);
        j.append_delivered(1, 0).unwrap();
        assert!(j.commit().await.unwrap_err().is_no_space());
        // The id of a failed message is free again.
        std::fs::remove_file(&filler).unwrap();
        add(&j, 2, &["c@d.test"], &[b'2'; 20_000]);
        j.append_delivered(1, 0).unwrap();
        j.commit().await.unwrap();
        // Enough to rotate into a new segment after the failures.
        for id in 4..10 {
            add(&j, id, &["x@d.test"], &[b'x'; 6000]);
            j.commit().await.unwrap();
        }
    });
    let (_j, rec) = open_with(&dir, opts);
    let v = view(&rec);
    assert_eq!(
        v.keys().copied().collect::<Vec<_>>(),
        vec![1, 2, 4, 5, 6, 7, 8, 9]
    );
    assert_eq!(v[&1][0].2, RcptState::Delivered);
    assert_eq!(v[&1][1].2, PENDING);
    assert_eq!(
        rec.messages.iter().find(|m| m.id == 2).unwrap().body.len(),
        20_000
    );
    assert!(rec.stats.damaged.is_empty() && rec.stats.torn_tail.is_none());
}

/// Messages 1 (victim) and 2 (whose body has a 600-byte placeholder), one
/// batch each, and with `more` message 3 after them; returns the active
/// segment's path, number and key, where the placeholder is, and where
/// message 3 is.
fn victim_and_attacker(dir: &Path, more: bool) -> (PathBuf, u64, frame::Key, usize, u64) {
    let (seq, key, third) = run(async {
        let (j, _) = open(dir);
        add(&j, 1, &["victim@d.test"], b"victim body");
        j.commit().await.unwrap();
        let mut body = b"Subject: x\r\n\r\n".to_vec();
        body.extend_from_slice(&[b'Z'; 600]);
        add(&j, 2, &["attacker@d.test"], &body);
        j.commit().await.unwrap();
        if more {
            add(&j, 3, &["later@d.test"], b"later");
            j.commit().await.unwrap();
        }
        let st = j.sh.st.borrow();
        let third = st.index.msgs.get(&3).map_or(0, |e| e.loc.off);
        (st.active_seq, st.active_key, third)
    });
    let path = io::seg_path(dir, seq);
    let bytes = std::fs::read(&path).unwrap();
    let at = bytes.windows(600).position(|w| w == [b'Z'; 600]).unwrap();
    (path, seq, key, at, third)
}

/// Forged records an attacker would plant at `at`: every one would inject
/// message 999 or finish the victim (message 1) or overflow a clock, in
/// the version 1 encoding (accepted anywhere by earlier versions), sealed
/// with the segment's real key for the wrong offset, and sealed for the
/// right offset under a guessed key.
fn forgeries(seq: u64, key: &frame::Key, at: usize) -> Vec<u8> {
    use super::testing::*;
    let forever = Outcome::Deferred {
        attempts: 1,
        next_attempt_unix: u64::MAX,
    };
    let mut out = Vec::new();
    out.extend(message_frame_v1(999, &["inject@d.test"], b"injected"));
    out.extend(outcome_frame_v1(1, 0, Outcome::Delivered));
    out.extend(outcome_frame_v1(1, 0, forever));
    for (k, wrong) in [(*key, 7u64), ([0u8; 16], 0)] {
        let here = (at + out.len()) as u64;
        out.extend(message_frame(
            &k,
            seq,
            here + wrong,
            999,
            &["inject@d.test"],
            b"x",
        ));
        let here = (at + out.len()) as u64;
        out.extend(outcome_frame(
            &k,
            seq,
            here + wrong,
            1,
            0,
            Outcome::Delivered,
        ));
        let here = (at + out.len()) as u64;
        out.extend(outcome_frame(
            &k,
            seq + wrong + 1,
            here,
            1,
            0,
            Outcome::Deleted,
        ));
    }
    assert!(out.len() <= 600, "{}", out.len());
    out
}

fn assert_not_forged(rec: &Recovery) {
    assert!(rec.messages.iter().all(|m| m.id != 999), "injected");
    let v = rec
        .messages
        .iter()
        .find(|m| m.id == 1)
        .expect("victim lost");
    assert_eq!(
        v.recipients[0].state, PENDING,
        "victim finished by a forgery"
    );
}

#[test]
fn a_frame_planted_in_a_body_is_never_accepted_after_a_torn_write() {
    let tmp = TempDir::new().unwrap();
    let (path, seq, key, at, _) = victim_and_attacker(tmp.path(), false);
    let forged = forgeries(seq, &key, at);
    // A torn write of message 2: its body got as far as the forgeries.
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[at..at + forged.len()].copy_from_slice(&forged);
    bytes.truncate(at + forged.len() + 5);
    std::fs::write(&path, &bytes).unwrap();
    let (_j, rec) = open(tmp.path());
    assert_not_forged(&rec);
    assert_eq!(rec.messages.len(), 1);
    assert!(rec.stats.damaged.is_empty(), "{:?}", rec.stats.damaged);
    assert!(rec.stats.torn_tail.is_some());
}

#[test]
fn a_frame_planted_in_a_damaged_body_is_skipped_and_later_records_recovered() {
    let tmp = TempDir::new().unwrap();
    let (path, seq, key, at, third) = victim_and_attacker(tmp.path(), true);
    let forged = forgeries(seq, &key, at);
    // Message 2's body changes under its CRC: damage, and resynchronising
    // walks through the forgeries to message 3.
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[at..at + forged.len()].copy_from_slice(&forged);
    std::fs::write(&path, &bytes).unwrap();
    let rec = recover_dir(tmp.path()).unwrap();
    assert_not_forged(&rec);
    assert_eq!(
        rec.messages.iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![1, 3]
    );
    // Message 2's record is one damaged region, up to message 3.
    assert_eq!(rec.stats.damaged.len(), 1, "{:?}", rec.stats.damaged);
    let d = &rec.stats.damaged[0];
    assert_eq!(d.offset + d.len, third);
}

#[test]
fn a_damaged_segment_header_costs_the_header_not_the_segment() {
    // Magic, version, number, CRC: any byte outside the key.
    for byte in [3usize, 9, 17, 41] {
        let tmp = TempDir::new().unwrap();
        let dir = tmp.path();
        let (path, seq, key, at, _) = victim_and_attacker(dir, true);
        let mut bytes = std::fs::read(&path).unwrap();
        // Forgeries in message 2's body too: a salvaged header must not
        // let them in.
        let forged = forgeries(seq, &key, at);
        bytes[at..at + forged.len()].copy_from_slice(&forged);
        bytes[byte] ^= 0x20;
        std::fs::write(&path, &bytes).unwrap();
        let rec = recover_dir(dir).unwrap();
        assert_not_forged(&rec);
        assert_eq!(
            rec.messages.iter().map(|m| m.id).collect::<Vec<_>>(),
            vec![1, 3],
            "byte {byte}"
        );
        // The header and message 2 are reported, nothing else.
        let d = &rec.stats.damaged;
        assert_eq!(d.len(), 2, "{d:?}");
        assert_eq!((d[0].segment, d[0].offset, d[0].len), (seq, 0, 48));

        // The journal opens on it, and compaction reads it the same way:
        // the messages are copied forward and the damaged file retires.
        run(async {
            let (j, rec) = open(dir);
            assert_eq!(rec.messages.len(), 2);
            assert_eq!(j.compact().await.unwrap(), 2);
        });
        assert!(!path.exists(), "the damaged segment was retired");
        let (_j, rec) = open(dir);
        assert_not_forged(&rec);
        assert_eq!(
            rec.messages.iter().map(|m| m.id).collect::<Vec<_>>(),
            vec![1, 3]
        );
        assert!(rec.stats.damaged.is_empty(), "{:?}", rec.stats.damaged);
    }

    // A damaged key: no tag checks out, so nothing in the segment is
    // trusted (forgeries included) and all of it is reported.
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    let (path, seq, key, at, _) = victim_and_attacker(dir, true);
    let mut bytes = std::fs::read(&path).unwrap();
    let forged = forgeries(seq, &key, at);
    bytes[at..at + forged.len()].copy_from_slice(&forged);
    bytes[30] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    let rec = recover_dir(dir).unwrap();
    assert!(rec.messages.is_empty(), "{:?}", view(&rec));
    assert_eq!(rec.stats.records, 0);
    let d = &rec.stats.damaged;
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!((d[0].offset, d[0].len), (0, bytes.len() as u64));

    // A version 1 header (no key) with a damaged number: its frames are
    // read from where its header ends, as before version 2.
    use super::testing::*;
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    let mut seg = segment_header_v1(1);
    seg.extend(message_frame_v1(1, &["a@d.test"], b"one"));
    seg.extend(outcome_frame_v1(1, 0, Outcome::Delivered));
    seg.extend(message_frame_v1(2, &["b@d.test"], b"two"));
    seg[17] ^= 0x01;
    std::fs::write(io::seg_path(dir, 1), &seg).unwrap();
    let rec = recover_dir(dir).unwrap();
    assert_eq!(
        rec.messages.iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![2]
    );
    assert_eq!(rec.stats.records, 3);
    assert_eq!(rec.stats.damaged.len(), 1);
    assert_eq!(rec.stats.damaged[0].len, 32);
}

#[test]
fn a_segment_whose_header_names_another_number_is_not_replayed() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    let seq = run(async {
        let (j, _) = open(dir);
        add(&j, 1, &["a@d.test", "b@d.test"], b"one");
        j.commit().await.unwrap();
        j.append_delivered(1, 0).unwrap();
        j.commit().await.unwrap();
        let st = j.sh.st.borrow();
        st.active_seq
    });
    // An operator restores a backup of the segment under another name,
    // taken before the delivery was recorded.
    let bytes = std::fs::read(io::seg_path(dir, seq)).unwrap();
    let first = frame::SEGMENT_HEADER
        + frame::parse_at(
            &bytes,
            frame::SEGMENT_HEADER,
            &frame::parse_segment_header(&bytes).unwrap(),
        )
        .unwrap()
        .len;
    std::fs::write(io::seg_path(dir, seq + 5), &bytes[..first]).unwrap();
    let rec = recover_dir(dir).unwrap();
    // Replaying the copy's message record would make the delivered
    // recipient pending again: delivered twice.
    let v = view(&rec);
    assert_eq!(v[&1][0].2, RcptState::Delivered, "{v:?}");
    assert_eq!(v[&1][1].2, PENDING);
    assert_eq!(rec.stats.records, 2);
    let d = &rec.stats.damaged;
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!((d[0].segment, d[0].len), (seq + 5, first as u64));
    assert!(
        d[0].reason.contains(&format!("{seq:016x}")),
        "{}",
        d[0].reason
    );
    // The journal opens on it, goes on after it, and leaves it in place.
    run(async {
        let (j, rec) = open(dir);
        assert_eq!(view(&rec), v);
        j.append_delivered(1, 1).unwrap();
        j.commit().await.unwrap();
        j.retire().await.unwrap();
    });
    assert!(io::seg_path(dir, seq + 5).exists());
    let rec = recover_dir(dir).unwrap();
    assert!(rec.messages.is_empty());
    assert_eq!(rec.stats.damaged.len(), 1);
}

/// A version 1 segment: message 1, a damaged message 2, then `mb` MiB of
/// planted frame magics, each claiming to run to just before the end of
/// the segment (so every candidate would cost a CRC over the rest).
fn v1_full_of_magics(mb: usize) -> Vec<u8> {
    use super::testing::*;
    let mut seg = segment_header_v1(1);
    seg.extend(message_frame_v1(1, &["a@d.test"], b"one"));
    let broken = seg.len() + 20;
    seg.extend(message_frame_v1(2, &["b@d.test"], b"two"));
    seg[broken] ^= 0x55;
    let start = seg.len();
    let end = start + (mb << 20);
    while seg.len() + 16 <= end {
        let claim = (end - seg.len() - 16) as u32;
        seg.extend_from_slice(&frame::FRAME_MAGIC);
        seg.extend_from_slice(&claim.to_le_bytes());
        seg.extend_from_slice(&[0x5A; 8]);
    }
    seg
}

#[test]
fn a_version_1_segment_full_of_planted_magics_is_read_in_linear_time() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().to_path_buf();
    let seg = v1_full_of_magics(4);
    let len = seg.len() as u64;
    std::fs::write(io::seg_path(&dir, 1), &seg).unwrap();
    // Sealed (a later segment exists), then the last one.
    std::fs::write(io::seg_path(&dir, 2), testing::segment_header_v1(2)).unwrap();
    for sealed in [true, false] {
        if !sealed {
            std::fs::remove_file(io::seg_path(&dir, 2)).unwrap();
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let d = dir.clone();
        std::thread::spawn(move || {
            let _ = tx.send(recover_dir(&d));
        });
        let rec = rx
            .recv_timeout(std::time::Duration::from_secs(2))
            .expect("recovery of 4 MiB took more than 2 s")
            .unwrap();
        assert_eq!(
            rec.messages.iter().map(|m| m.id).collect::<Vec<_>>(),
            vec![1]
        );
        // Complete-looking bytes that fail their CRC are damage, kept and
        // reported, not a torn tail to cut, even in the last segment.
        assert!(rec.stats.torn_tail.is_none());
        let d = &rec.stats.damaged;
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].offset + d[0].len, len);
    }
}

#[test]
fn a_torn_version_1_tail_is_told_from_damage_without_a_scan() {
    use super::testing::*;
    let mut seg = segment_header_v1(1);
    seg.extend(message_frame_v1(1, &["a@d.test"], b"one"));
    let at = seg.len();
    let second = message_frame_v1(2, &["b@d.test"], b"two");
    // What a kill -9 or power loss leaves: a prefix of the last append,
    // possibly followed by zeros; anything else is damage.
    let cases: [(Vec<u8>, bool); 6] = [
        (second[..5].to_vec(), true),
        (second[..second.len() - 1].to_vec(), true),
        ([&second[..20], &[0u8; 100][..]].concat(), true),
        (vec![0u8; 64], true),
        ([&second[..], &second[..]].concat()[1..].to_vec(), false),
        (vec![0xAB; 37], false),
    ];
    for (i, (tail, torn)) in cases.into_iter().enumerate() {
        let mut s = seg.clone();
        s.extend(&tail);
        let rec = replay_bytes(&[(1, s)]).unwrap();
        assert_eq!(rec.messages.len(), 1, "case {i}");
        let want = torn.then_some((1, at as u64, tail.len() as u64));
        assert_eq!(rec.stats.torn_tail, want, "case {i}");
        assert_eq!(rec.stats.damaged.len(), usize::from(!torn), "case {i}");
    }
}

#[test]
fn version_1_segments_are_read_but_never_resynchronised() {
    use super::testing::*;
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    let mut seg = segment_header_v1(1);
    seg.extend(message_frame_v1(1, &["a@d.test"], b"one"));
    seg.extend(message_frame_v1(2, &["b@d.test", "c@d.test"], b"two"));
    seg.extend(outcome_frame_v1(2, 1, Outcome::Delivered));
    std::fs::write(io::seg_path(dir, 1), &seg).unwrap();
    let rec = recover_dir(dir).unwrap();
    let v = view(&rec);
    assert_eq!(v.keys().copied().collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(v[&2][1].2, RcptState::Delivered);
    // Damage in a sealed version 1 segment: what follows could be a frame
    // from inside a body, so nothing after it is applied.
    let mut bad = segment_header_v1(1);
    let first = message_frame_v1(1, &["a@d.test"], b"one");
    bad.extend(&first);
    let broken = bad.len() + 3;
    bad.extend(message_frame_v1(2, &["b@d.test"], b"two"));
    bad[broken] ^= 0x55;
    bad.extend(outcome_frame_v1(1, 0, Outcome::Delivered));
    std::fs::write(io::seg_path(dir, 1), &bad).unwrap();
    std::fs::write(io::seg_path(dir, 2), segment_header_v1(2)).unwrap();
    let rec = recover_dir(dir).unwrap();
    assert_eq!(
        rec.messages.iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![1]
    );
    assert_eq!(rec.messages[0].recipients[0].state, PENDING);
    assert_eq!(rec.stats.damaged.len(), 1);
    // The journal opens on top of them and writes version 2 after them.
    std::fs::remove_file(io::seg_path(dir, 2)).unwrap();
    std::fs::write(io::seg_path(dir, 1), &seg).unwrap();
    run(async {
        let (j, rec) = open(dir);
        assert_eq!(rec.messages.len(), 2);
        j.append_delivered(1, 0).unwrap();
        add(&j, 3, &["d@d.test"], b"three");
        j.commit().await.unwrap();
    });
    let (_j, rec) = open(dir);
    assert_eq!(
        rec.messages.iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![2, 3]
    );
    // A segment of a format newer than this build is refused, by name.
    std::fs::write(io::seg_path(dir, 9), {
        let mut h = frame::segment_header(9, &[0; 16]);
        h[8] = 3;
        let crc = crc32c::crc32c(&h[..40]);
        h[40..44].copy_from_slice(&crc.to_le_bytes());
        h
    })
    .unwrap();
    drop(_j);
    let e = recover_dir(dir).unwrap_err().to_string();
    assert!(e.contains("version 3"), "{e}");
}

#[test]
fn arbitrary_bytes_after_a_valid_header_never_panic_or_forge() {
    let mut rng = 0x1234_5678_9abc_def0u64;
    let key = [3u8; 16];
    for round in 0..300u64 {
        let mut seg = frame::segment_header(1, &key).to_vec();
        for _ in 0..(round % 50) {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            seg.extend_from_slice(&rng.to_le_bytes());
            if rng % 5 == 0 {
                seg.extend_from_slice(&frame::FRAME_MAGIC);
                seg.extend_from_slice(&u32::MAX.to_le_bytes());
            }
        }
        let rec = testing::replay_bytes(&[(1, seg)]).unwrap();
        assert_eq!(rec.stats.records, 0);
        assert!(rec.messages.is_empty());
    }
}

#[test]
fn outcomes_of_a_failed_batch_are_written_again() {
    let mnt = TempDir::new().unwrap();
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
        .arg(mnt.path())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "this test needs root to mount a small tmpfs (CI runs as root)"
    );
    let _umount = Tmpfs(mnt.path().to_path_buf());
    let dir = mnt.path().join("shard-0");
    let filler = mnt.path().join("filler");
    let rcpts: Vec<String> = (0..400).map(|i| format!("r{i}@d.test")).collect();
    run(async {
        let (j, _) = open(&dir);
        j.append_message(&MessageRecord {
            id: 1,
            reverse_path: "s@x.test",
            recipients: &rcpts,
            body: b"b",
            eight_bit: false,
            smtputf8: false,
            accepted_unix: 0,
        })
        .unwrap();
        j.commit().await.unwrap();
        fill(&filler);
        // Outcomes (and a message, refused) while the disk is full: more
        // than the page the segment has left.
        for i in 0..400 {
            j.append_delivered(1, i).unwrap();
        }
        add(&j, 2, &["m@d.test"], &[b'2'; 20_000]);
        assert!(j.commit().await.unwrap_err().is_no_space());
        std::fs::remove_file(&filler).unwrap();
        // Nothing new is appended: the retry writes them by itself.
        j.commit().await.unwrap();
        assert_eq!(j.stats().pending_recipients, 0);
    });
    let (_j, rec) = open(&dir);
    assert!(rec.messages.is_empty(), "{:?}", rec.stats);
}

#[test]
fn retire_dir_removes_a_rehomed_directory_and_refuses_an_open_one() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("shard-3");
    write_some(&dir, 3);
    let rec = recover_dir(&dir).unwrap();
    assert_eq!(rec.messages.len(), 3);
    {
        let (_j, _) = open(&dir);
        assert!(matches!(retire_dir(&dir), Err(JournalError::Locked { .. })));
    }
    assert!(retire_dir(&dir).unwrap() >= 1);
    assert!(!dir.exists());
}

/// An operation of the property test.
#[derive(Debug, Clone)]
enum Op {
    Msg(u8, u16),
    Outcome(u8, u8, u8),
    Checkpoint(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (1u8..5, 0u16..600).prop_map(|(n, b)| Op::Msg(n, b)),
        (any::<u8>(), any::<u8>(), 0u8..5).prop_map(|(m, r, k)| Op::Outcome(m, r, k)),
        any::<u8>().prop_map(Op::Checkpoint),
    ]
}

/// The model: what recovery must show after a prefix of operations.
#[derive(Debug, Clone, Default, PartialEq)]
struct Model {
    msgs: View,
    checkpoint: Option<Vec<u8>>,
}

impl Model {
    fn normalised(&self) -> Model {
        let mut m = self.clone();
        m.msgs.retain(|_, r| r.iter().any(|r| r.2.is_pending()));
        m
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Each operation is committed on its own, so the file is a sequence
    /// of records in operation order; cutting it anywhere (and adding
    /// garbage) must recover exactly the state after some prefix.
    #[test]
    fn any_crash_point_recovers_a_prefix(ops in prop::collection::vec(op(), 1..40), cut in any::<prop::sample::Index>(), junk in prop::collection::vec(any::<u8>(), 0..20)) {
        let tmp = TempDir::new().unwrap();
        let dir = tmp.path().to_path_buf();
        let states = run(async move {
            let (j, _) = open(&dir);
            let mut model = Model::default();
            let mut states = vec![model.normalised()];
            let mut next_id = 1u64;
            for op in ops {
                match op {
                    Op::Msg(n, b) => {
                        let rcpts: Vec<String> = (0..n).map(|i| format!("r{i}@m{next_id}.test")).collect();
                        j.append_message(&MessageRecord { id: next_id, reverse_path: "s@x", recipients: &rcpts, body: &vec![b as u8; b as usize], eight_bit: false, smtputf8: false, accepted_unix: 0 }).unwrap();
                        model.msgs.insert(next_id, rcpts.into_iter().enumerate().map(|(i, a)| (i as u32, a, PENDING)).collect());
                        next_id += 1;
                    }
                    Op::Outcome(m, r, k) => {
                        let live: Vec<u64> = model.normalised().msgs.keys().copied().collect();
                        if live.is_empty() { continue; }
                        let id = live[m as usize % live.len()];
                        let rc = model.msgs.get_mut(&id).unwrap();
                        let Some(slot) = rc.iter_mut().filter(|r| r.2.is_pending()).nth(r as usize % 4) else { continue };
                        let o = match k {
                            0 => Outcome::Delivered,
                            1 => Outcome::Bounced,
                            2 => Outcome::Expired,
                            3 => Outcome::Moved,
                            _ => Outcome::Deferred { attempts: u32::from(r), next_attempt_unix: u64::from(m) },
                        };
                        j.append_outcome(id, slot.0, o).unwrap();
                        slot.2 = o.state();
                    }
                    Op::Checkpoint(b) => {
                        j.append_checkpoint(&[b; 3]).unwrap();
                        model.checkpoint = Some(vec![b; 3]);
                    }
                }
                j.commit().await.unwrap();
                states.push(model.normalised());
            }
            states
        });
        let seg = segments(tmp.path()).pop().unwrap();
        let mut bytes = std::fs::read(&seg).unwrap();
        let at = frame::SEGMENT_HEADER + cut.index(bytes.len() - frame::SEGMENT_HEADER + 1);
        bytes.truncate(at);
        bytes.extend_from_slice(&junk);
        std::fs::write(&seg, &bytes).unwrap();
        let rec = recover_dir(tmp.path()).unwrap();
        let got = Model { msgs: view(&rec), checkpoint: rec.checkpoint.clone() };
        prop_assert!(states.contains(&got), "recovered state is no prefix: {got:?}");
        prop_assert!(rec.stats.damaged.is_empty(), "{:?}", rec.stats.damaged);
    }

    /// Random damage anywhere never panics recovery or open.
    #[test]
    fn random_damage_never_panics(flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..20)) {
        let tmp = TempDir::new().unwrap();
        write_some(tmp.path(), 12);
        let seg = segments(tmp.path()).pop().unwrap();
        let mut bytes = std::fs::read(&seg).unwrap();
        for (i, b) in flips {
            let n = bytes.len();
            bytes[i.index(n)] = b;
        }
        std::fs::write(&seg, &bytes).unwrap();
        let rec = recover_dir(tmp.path()).unwrap();
        prop_assert!(rec.messages.len() <= 12);
        let (_j, rec2) = open(tmp.path());
        prop_assert_eq!(rec.messages.len(), rec2.messages.len());
    }
}

/// Prints the figures quoted in the journal's documentation. Run with
/// `cargo test --release --lib journal::tests::measure -- --ignored --nocapture`.
#[test]
#[ignore]
fn measure() {
    use std::time::Instant;
    let tmp = TempDir::new().unwrap();
    // Bytes per recipient: a 1 KiB message with one recipient, then its
    // delivered record.
    let (per_msg, per_outcome) = run(async {
        let (j, _) = open(&tmp.path().join("a"));
        let t = add(&j, 123_456_789, &["someone@example.com"], &[b'x'; 1024]);
        let o = j.append_delivered(123_456_789, 0).unwrap();
        j.commit().await.unwrap();
        (t.end - t.start, o.end - o.start)
    });
    println!("1 KiB message + 1 recipient: {per_msg} bytes; delivered record: {per_outcome} bytes; overhead beyond the body: {} bytes", per_msg + per_outcome - 1024);

    // Group commit throughput with many concurrent committers.
    for (committers, per) in [(1u64, 2000u64), (64, 200), (512, 40)] {
        let d = tmp.path().join(format!("gc{committers}"));
        let (el, syncs, p50, p99) = run(async move {
            let (j, _) = open(&d);
            let t0 = Instant::now();
            let mut tasks = Vec::new();
            for c in 0..committers {
                let j = j.clone();
                tasks.push(glommio::spawn_local(async move {
                    for k in 0..per {
                        add(&j, c * 1_000_000 + k, &["r@d.test"], &[b'x'; 1024]);
                        j.commit().await.unwrap();
                    }
                }));
            }
            for t in tasks {
                t.await;
            }
            let h = j.fsync_histogram();
            (
                t0.elapsed(),
                j.stats().syncs,
                h.value_at_quantile(0.5),
                h.value_at_quantile(0.99),
            )
        });
        let n = committers * per;
        println!(
            "{committers} committers: {n} msgs in {el:?} = {:.0} msg/s, {syncs} fdatasyncs ({:.1} msgs/sync), fdatasync p50 {p50} µs p99 {p99} µs",
            n as f64 / el.as_secs_f64(),
            n as f64 / syncs as f64
        );
    }

    // Recovery of one million pending recipients.
    for (msgs, rcpts, body) in [(10_000u64, 100usize, 1024usize), (1_000_000, 1, 256)] {
        let d = tmp.path().join(format!("r{msgs}"));
        let names: Vec<String> = (0..rcpts)
            .map(|i| format!("recipient{i}@example{}.com", i % 7))
            .collect();
        run({
            let d = d.clone();
            async move {
                let (j, _) = open(&d);
                for id in 0..msgs {
                    add(
                        &j,
                        id,
                        &names.iter().map(String::as_str).collect::<Vec<_>>(),
                        &vec![b'b'; body],
                    );
                    if id % 1000 == 999 {
                        j.commit().await.unwrap();
                    }
                }
                j.commit().await.unwrap();
            }
        });
        let t0 = Instant::now();
        let (_j, rec) = open(&d);
        let el = t0.elapsed();
        let s = &rec.stats;
        println!(
            "recovery: {} msgs × {rcpts} rcpts ({} pending recipients, {} MiB, {} segments) in {el:?} (replay {:?})",
            s.messages,
            s.recipients_pending,
            s.bytes >> 20,
            s.segments,
            s.elapsed
        );
        assert_eq!(s.recipients_pending, msgs * rcpts as u64);
    }
}
