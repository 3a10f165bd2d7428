//! The password-hashing pool: a few dedicated threads fed by a bounded
//! queue.
//!
//! Hashing used to run on glommio's per-core blocking thread, the one that
//! also runs the journal's `pwrite`/`fdatasync`: a flood of wrong passwords
//! queued seconds of argon2 in front of every group commit. Here hashing has
//! threads of its own, and the queue in front of them is bounded: when it is
//! full the client is told to come back later (`454 4.7.0`) instead of
//! everyone waiting behind the flood. The threads run at the lowest
//! priority, so hashing only uses CPU the mail path leaves idle.

use super::Users;
use std::sync::Arc;

/// One credential check waiting for a thread.
struct Job {
    users: Arc<Users>,
    username: String,
    password: String,
    done: async_channel::Sender<bool>,
}

/// Why a check was not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    /// The queue is full: too many checks are waiting already.
    Busy,
    /// The pool's threads are gone (cannot happen while the daemon runs).
    Stopped,
}

/// Handle to the hashing threads; cheap to share, every core submits here.
pub struct Verifier {
    jobs: async_channel::Sender<Job>,
}

impl Verifier {
    /// Starts `threads` hashing threads (at least one) behind a queue of
    /// `queue` waiting checks. The threads end when the `Verifier` is
    /// dropped.
    pub fn start(threads: usize, queue: usize) -> Result<Verifier, String> {
        let (jobs, rx) = async_channel::bounded::<Job>(queue.max(1));
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("sluice-auth-{i}"))
                .spawn(move || {
                    lower_priority();
                    while let Ok(job) = rx.recv_blocking() {
                        let ok = job.users.verify(&job.username, &job.password);
                        // The session may have gone meanwhile.
                        let _ = job.done.try_send(ok);
                    }
                })
                .map_err(|e| format!("cannot start the AUTH hashing thread: {e}"))?;
        }
        Ok(Verifier { jobs })
    }

    /// Checks `password` for `username` on the pool. Never waits for room
    /// in the queue: a full queue is [`Unavailable::Busy`] at once.
    pub async fn verify(
        &self,
        users: Arc<Users>,
        username: String,
        password: String,
    ) -> Result<bool, Unavailable> {
        let (done, answer) = async_channel::bounded(1);
        let job = Job {
            users,
            username,
            password,
            done,
        };
        self.jobs.try_send(job).map_err(|e| match e {
            async_channel::TrySendError::Full(_) => Unavailable::Busy,
            async_channel::TrySendError::Closed(_) => Unavailable::Stopped,
        })?;
        answer.recv().await.map_err(|_| Unavailable::Stopped)
    }
}

/// Runs the calling thread at nice 19, so hashing only takes CPU time the
/// cores (sessions, journal, delivery) leave idle: a flood of AUTH attempts
/// slows AUTH down, never the mail already flowing. Best effort: without
/// it the pool still bounds how many threads hash.
fn lower_priority() {
    // SAFETY: setpriority takes plain integers and touches no memory of
    // ours; on Linux, PRIO_PROCESS with who = 0 is the calling thread.
    let r = unsafe { nix::libc::setpriority(nix::libc::PRIO_PROCESS, 0, 19) };
    if r != 0 {
        tracing::debug!("cannot lower the AUTH hashing thread's priority");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_run_on_the_pool_and_a_full_queue_is_busy_at_once() {
        let h = super::super::hash_password("pw").unwrap();
        let users = Arc::new(Users::parse(&format!("u:{h}\n")).unwrap());
        let v = Verifier::start(1, 1).unwrap();
        futures_lite::future::block_on(async {
            assert_eq!(
                v.verify(users.clone(), "u".into(), "pw".into()).await,
                Ok(true)
            );
            assert_eq!(
                v.verify(users.clone(), "u".into(), "no".into()).await,
                Ok(false)
            );
            // One thread busy, one job queued: the third is refused without
            // waiting.
            let a = v.verify(users.clone(), "u".into(), "a".into());
            let b = v.verify(users.clone(), "u".into(), "b".into());
            let c = v.verify(users.clone(), "u".into(), "c".into());
            let (a, (b, c)) = futures_lite::future::zip(a, futures_lite::future::zip(b, c)).await;
            let got = [a, b, c];
            assert!(got.contains(&Err(Unavailable::Busy)), "{got:?}");
            assert!(got.contains(&Ok(false)), "{got:?}");
        });
    }
}
