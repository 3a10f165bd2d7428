//! File-system work: naming and listing segments, the blocking write+sync
//! job of a batch (and its rollback), deleting segments.
//!
//! Everything here runs either at startup or on glommio's blocking thread,
//! never on a shard's reactor.

use super::frame::{new_key, segment_header, Key, SEGMENT_HEADER};
use super::JournalError;
use std::fs::{File, OpenOptions};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

const SUFFIX: &str = ".seg";
const LOCK: &str = "LOCK";

/// The file name of segment `seq`.
pub(crate) fn seg_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:016x}{SUFFIX}"))
}

/// The segments in `dir`, oldest first.
pub(crate) fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, JournalError> {
    let rd = std::fs::read_dir(dir)
        .map_err(|e| JournalError::io(dir, "listing the journal directory", e))?;
    let mut segs = Vec::new();
    for ent in rd {
        let ent = ent.map_err(|e| JournalError::io(dir, "listing the journal directory", e))?;
        let name = ent.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(hex) = name.strip_suffix(SUFFIX) else {
            continue;
        };
        match u64::from_str_radix(hex, 16) {
            Ok(seq) if hex.len() == 16 => segs.push((seq, ent.path())),
            _ => {
                tracing::warn!(file = %ent.path().display(), "journal: ignoring a file that is not a segment")
            }
        }
    }
    segs.sort_unstable_by_key(|s| s.0);
    Ok(segs)
}

/// Makes directory entry changes (created or deleted segments) durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), JournalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| JournalError::io(dir, "syncing the journal directory", e))
}

/// Takes the directory's lock file so two writers never share a journal.
pub(crate) fn lock_dir(dir: &Path) -> Result<nix::fcntl::Flock<File>, JournalError> {
    let path = dir.join(LOCK);
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| JournalError::io(&path, "opening the lock file", e))?;
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|_| {
        JournalError::Locked {
            path: dir.to_path_buf(),
        }
    })
}

/// Creates segment `seq` with its header and a new key, durably (file and
/// directory).
pub(crate) fn create_segment(dir: &Path, seq: u64) -> Result<(File, Key), JournalError> {
    let key = new_key();
    let path = seg_path(dir, seq);
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| JournalError::io(&path, "creating a segment", e))?;
    let r = f
        .write_all_at(&segment_header(seq, &key), 0)
        .and_then(|()| f.sync_data())
        .map_err(|e| JournalError::io(&path, "writing a segment header", e))
        .and_then(|()| sync_dir(dir));
    if let Err(e) = r {
        drop(f);
        let _ = std::fs::remove_file(&path);
        return Err(e);
    }
    Ok((f, key))
}

/// Deletes waves of unneeded segments (see `Index::retire_plan`), syncing
/// the directory after each wave. Returns the ones deleted durably.
pub(crate) fn delete_waves(dir: &Path, waves: &[Vec<u64>]) -> (Vec<u64>, Option<JournalError>) {
    let mut all = Vec::new();
    for w in waves {
        let (done, err) = delete_segments(dir, w);
        all.extend(done);
        if err.is_some() {
            return (all, err);
        }
    }
    (all, None)
}

/// Deletes segments (already known to be unneeded) and syncs the directory.
/// Returns the ones actually deleted.
pub(crate) fn delete_segments(dir: &Path, seqs: &[u64]) -> (Vec<u64>, Option<JournalError>) {
    let mut done = Vec::new();
    let mut err = None;
    for &seq in seqs {
        let path = seg_path(dir, seq);
        match std::fs::remove_file(&path) {
            Ok(()) => done.push(seq),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => done.push(seq),
            Err(e) => {
                err = Some(JournalError::io(&path, "deleting a retired segment", e));
                break;
            }
        }
    }
    // Until the directory is synced a crash may bring the files back; the
    // segments that depend on them are deleted only after this returns.
    if !done.is_empty() {
        if let Err(e) = sync_dir(dir) {
            return (Vec::new(), Some(e));
        }
    }
    (done, err)
}

/// Deletes a whole journal directory whose contents were re-homed to other
/// shards' journals (after those are durable). Takes the lock first, so a
/// directory still open for writing is refused. Returns the number of
/// segments deleted.
pub fn retire_dir(dir: &Path) -> Result<u64, JournalError> {
    let lock = lock_dir(dir)?;
    let segs = list_segments(dir)?;
    let seqs: Vec<u64> = segs.iter().map(|s| s.0).collect();
    let (done, err) = delete_segments(dir, &seqs);
    if let Some(e) = err {
        return Err(e);
    }
    let _ = std::fs::remove_file(dir.join(LOCK));
    drop(lock);
    // Other files (an operator's notes) keep the directory; that is fine.
    let _ = std::fs::remove_dir(dir);
    Ok(done.len() as u64)
}

/// Where a chunk of a batch goes.
#[derive(Debug)]
pub(crate) enum Target {
    /// The active segment.
    Existing(Arc<File>, PathBuf),
    /// A new segment, created by the job, with its key.
    Create(PathBuf, Key),
}

/// A contiguous run of a batch written to one file.
#[derive(Debug)]
pub(crate) struct Chunk {
    pub seq: u64,
    pub target: Target,
    /// File offset of `range` (after the header for a new segment).
    pub off: u64,
    pub range: Range<usize>,
}

/// One batch: write every chunk, sync every file touched, then the
/// directory if a segment was created. Sent to the blocking thread.
#[derive(Debug)]
pub(crate) struct Job {
    pub dir: PathBuf,
    pub buf: Vec<u8>,
    pub chunks: Vec<Chunk>,
    /// Held while the job runs (see `Shared::lock`).
    pub lock: Option<Arc<nix::fcntl::Flock<File>>>,
}

/// Segments a job created, with their open files.
pub(crate) type Created = Vec<(u64, Arc<File>)>;

/// What a job did.
#[derive(Debug)]
pub(crate) struct JobResult {
    /// The batch buffer, handed back for reuse.
    pub buf: Vec<u8>,
    /// Created segments and their files, or the error. On error, `poisoned`
    /// says whether the rollback failed too.
    pub outcome: Result<Created, (JournalError, bool)>,
    /// Microseconds spent in fdatasync.
    pub sync_micros: u64,
}

impl Job {
    /// Runs the job (blocking).
    pub fn run(self) -> JobResult {
        let mut created: Vec<(u64, Arc<File>, PathBuf)> = Vec::new();
        let mut touched: Vec<(Arc<File>, u64, PathBuf)> = Vec::new();
        let mut sync_micros = 0;
        let r = self.write_and_sync(&mut created, &mut touched, &mut sync_micros);
        let outcome = match r {
            Ok(()) => Ok(created.into_iter().map(|(seq, f, _)| (seq, f)).collect()),
            Err(e) => Err((e, !rollback(&self.dir, created, touched))),
        };
        JobResult {
            buf: self.buf,
            outcome,
            sync_micros,
        }
    }

    fn write_and_sync(
        &self,
        created: &mut Vec<(u64, Arc<File>, PathBuf)>,
        touched: &mut Vec<(Arc<File>, u64, PathBuf)>,
        sync_micros: &mut u64,
    ) -> Result<(), JournalError> {
        for c in &self.chunks {
            let (file, path) = match &c.target {
                Target::Existing(f, p) => {
                    touched.push((f.clone(), c.off, p.clone()));
                    (f.clone(), p)
                }
                Target::Create(p, key) => {
                    // The segment before must be complete on disk before the
                    // next one exists: then a torn write is always at the
                    // end of the last segment, where recovery cuts it,
                    // never at the end of a sealed one (reported as damage).
                    let t = Instant::now();
                    for (f, _, p) in touched.iter() {
                        f.sync_data()
                            .map_err(|e| JournalError::io(p, "fdatasync", e))?;
                    }
                    for (_, f, p) in created.iter() {
                        f.sync_data()
                            .map_err(|e| JournalError::io(p, "fdatasync", e))?;
                    }
                    *sync_micros += t.elapsed().as_micros() as u64;
                    let f = OpenOptions::new()
                        .read(true)
                        .write(true)
                        .create_new(true)
                        .open(p)
                        .map_err(|e| JournalError::io(p, "creating a segment", e))?;
                    let f = Arc::new(f);
                    created.push((c.seq, f.clone(), p.clone()));
                    f.write_all_at(&segment_header(c.seq, key), 0)
                        .map_err(|e| JournalError::io(p, "writing a segment header", e))?;
                    (f, p)
                }
            };
            let data = self.buf.get(c.range.clone()).unwrap_or_default();
            file.write_all_at(data, c.off)
                .map_err(|e| JournalError::io(path, "writing records", e))?;
        }
        let t = Instant::now();
        for (f, _, p) in touched.iter() {
            f.sync_data()
                .map_err(|e| JournalError::io(p, "fdatasync", e))?;
        }
        for (_, f, p) in created.iter() {
            f.sync_data()
                .map_err(|e| JournalError::io(p, "fdatasync", e))?;
        }
        if !created.is_empty() {
            sync_dir(&self.dir)?;
        }
        *sync_micros += t.elapsed().as_micros() as u64;
        Ok(())
    }
}

/// Undoes a failed batch: truncates the active segment to its durable
/// length and deletes segments the batch created. Returns false if that
/// failed too (the journal must then stop writing).
fn rollback(
    dir: &Path,
    created: Vec<(u64, Arc<File>, PathBuf)>,
    touched: Vec<(Arc<File>, u64, PathBuf)>,
) -> bool {
    let mut ok = true;
    for (f, len, p) in touched {
        if let Err(e) = f.set_len(len).and_then(|()| f.sync_data()) {
            tracing::error!(file = %p.display(), error = %e, "journal: cannot truncate a failed batch");
            ok = false;
        }
    }
    let any_created = !created.is_empty();
    for (_, f, p) in created {
        drop(f);
        if let Err(e) = std::fs::remove_file(&p) {
            tracing::error!(file = %p.display(), error = %e, "journal: cannot remove a segment of a failed batch");
            ok = false;
        }
    }
    if any_created && sync_dir(dir).is_err() {
        ok = false;
    }
    ok
}

/// Truncates a torn tail found by recovery (or deletes a segment whose
/// header itself was torn).
pub(crate) fn cut_tail(dir: &Path, seq: u64, at: u64) -> Result<(), JournalError> {
    let path = seg_path(dir, seq);
    if at < SEGMENT_HEADER as u64 {
        std::fs::remove_file(&path)
            .map_err(|e| JournalError::io(&path, "removing a torn segment", e))?;
        return sync_dir(dir);
    }
    OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|f| f.set_len(at).and_then(|()| f.sync_all()))
        .map_err(|e| JournalError::io(&path, "truncating a torn tail", e))
}

/// Reads a whole segment file.
pub(crate) fn read_segment(path: &Path, buf: &mut Vec<u8>) -> Result<(), JournalError> {
    use std::io::Read;
    buf.clear();
    File::open(path)
        .and_then(|mut f| f.read_to_end(buf))
        .map(|_| ())
        .map_err(|e| JournalError::io(path, "reading a segment", e))
}
