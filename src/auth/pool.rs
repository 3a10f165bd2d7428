//! The password-hashing pool: a few dedicated threads fed by a bounded
//! queue.
//!
//! Hashing used to run on glommio's per-core blocking thread, the one that
//! also runs the journal's `pwrite`/`fdatasync`: a flood of wrong passwords
//! queued seconds of argon2 in front of every group commit. Here hashing has
//! threads of its own, and the queue in front of them is bounded: when it is
//! full the client is told to come back later (`454 4.7.0`) instead of
//! everyone waiting behind the flood. The threads run at the lowest
//! priority, so hashing only uses CPU the mail path leaves idle — which is
//! also why every check has a deadline: under full load a check could
//! otherwise wait without limit, holding its session past any lifetime.

use super::Users;
use std::future::Future;
use std::sync::Arc;

/// What a pool thread runs for one job: `users.verify(username, password)`
/// in the daemon, something slower in tests.
type Check = dyn Fn(&Users, &str, &str) -> bool + Send + Sync;

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
    /// The check was queued but not answered before its deadline (the
    /// threads are starved or the queue is long); its answer is dropped.
    TimedOut,
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
        Self::start_with(
            threads,
            queue,
            Arc::new(|u: &Users, n: &str, p: &str| u.verify(n, p)),
        )
    }

    fn start_with(threads: usize, queue: usize, check: Arc<Check>) -> Result<Verifier, String> {
        let (jobs, rx) = async_channel::bounded::<Job>(queue.max(1));
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            let check = check.clone();
            std::thread::Builder::new()
                .name(format!("sluice-auth-{i}"))
                .spawn(move || {
                    lower_priority();
                    while let Ok(job) = rx.recv_blocking() {
                        let ok = check(&job.users, &job.username, &job.password);
                        // The session may have gone meanwhile.
                        let _ = job.done.try_send(ok);
                    }
                })
                .map_err(|e| format!("cannot start the AUTH hashing thread: {e}"))?;
        }
        Ok(Verifier { jobs })
    }

    /// Checks `password` for `username` on the pool. Never waits for room
    /// in the queue: a full queue is [`Unavailable::Busy`] at once. Waits
    /// for the answer until `deadline` completes (a timer of the caller's
    /// runtime), then gives [`Unavailable::TimedOut`].
    pub async fn verify(
        &self,
        users: Arc<Users>,
        username: String,
        password: String,
        deadline: impl Future<Output = ()>,
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
        let answered = async { answer.recv().await.map_err(|_| Unavailable::Stopped) };
        let expired = async {
            deadline.await;
            Err(Unavailable::TimedOut)
        };
        // An answer ready together with the deadline wins.
        futures_lite::future::or(answered, expired).await
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

    /// A deadline that never comes.
    fn never() -> impl Future<Output = ()> {
        futures_lite::future::pending()
    }

    /// A deadline `after` from now, on a thread (the pool is runtime-free).
    fn after(after: std::time::Duration) -> impl Future<Output = ()> {
        let (tx, rx) = async_channel::bounded::<()>(1);
        std::thread::spawn(move || {
            std::thread::sleep(after);
            let _ = tx.try_send(());
        });
        async move {
            let _ = rx.recv().await;
        }
    }

    #[test]
    fn checks_run_on_the_pool_and_a_full_queue_is_busy_at_once() {
        let h = super::super::hash_password("pw").unwrap();
        let users = Arc::new(Users::parse(&format!("u:{h}\n")).unwrap());
        let v = Verifier::start(1, 1).unwrap();
        futures_lite::future::block_on(async {
            assert_eq!(
                v.verify(users.clone(), "u".into(), "pw".into(), never())
                    .await,
                Ok(true)
            );
            assert_eq!(
                v.verify(users.clone(), "u".into(), "no".into(), never())
                    .await,
                Ok(false)
            );
            // One thread busy, one job queued: the third is refused without
            // waiting.
            let a = v.verify(users.clone(), "u".into(), "a".into(), never());
            let b = v.verify(users.clone(), "u".into(), "b".into(), never());
            let c = v.verify(users.clone(), "u".into(), "c".into(), never());
            let (a, (b, c)) = futures_lite::future::zip(a, futures_lite::future::zip(b, c)).await;
            let got = [a, b, c];
            assert!(got.contains(&Err(Unavailable::Busy)), "{got:?}");
            assert!(got.contains(&Ok(false)), "{got:?}");
        });
    }

    #[test]
    fn a_check_that_hangs_times_out() {
        let users = Arc::new(Users::parse("").unwrap());
        // A thread that never finishes its first job (as a nice-19 thread
        // on a saturated machine need not): released at the end.
        let (release, hold) = std::sync::mpsc::channel::<()>();
        let hold = std::sync::Mutex::new(hold);
        let check = move |_: &Users, _: &str, _: &str| {
            let _ = hold.lock().map(|h| h.recv());
            true
        };
        let v = Verifier::start_with(1, 4, Arc::new(check)).unwrap();
        futures_lite::future::block_on(async {
            let start = std::time::Instant::now();
            let wait = std::time::Duration::from_millis(200);
            let got = v
                .verify(users.clone(), "u".into(), "p".into(), after(wait))
                .await;
            assert_eq!(got, Err(Unavailable::TimedOut));
            assert!(start.elapsed() >= wait, "{:?}", start.elapsed());
            // A queued one too: it waits behind the hung check.
            let got = v
                .verify(users.clone(), "u".into(), "p".into(), after(wait))
                .await;
            assert_eq!(got, Err(Unavailable::TimedOut));
            // Once the thread moves, answers come before the deadline.
            drop(release);
            let got = v
                .verify(
                    users.clone(),
                    "u".into(),
                    "p".into(),
                    after(std::time::Duration::from_secs(30)),
                )
                .await;
            assert_eq!(got, Ok(true));
        });
    }
}
