//! In-flight de-duplication: one query per (name, type), however many
//! lookups want it at once.
//!
//! A [`Flight`] is a single-threaded shared result slot plus the wakers of
//! everyone waiting for it. The query itself runs in a detached task that
//! owns a [`Completer`], so no caller is the "leader": if the first caller
//! is cancelled (its delivery attempt dropped), the query still finishes
//! for the others; and if the task itself is dropped (executor shutting
//! down), the `Completer`'s `Drop` publishes a temporary error so no waiter
//! hangs forever.

use std::cell::RefCell;
use std::future::Future;
use std::rc::Rc;
use std::task::{Poll, Waker};

/// A shared, once-set result that many futures can await.
#[derive(Debug)]
pub struct Flight<T> {
    result: RefCell<Option<T>>,
    wakers: RefCell<Vec<Waker>>,
}

impl<T: Clone> Flight<T> {
    /// An empty slot.
    pub fn new() -> Rc<Self> {
        Rc::new(Flight {
            result: RefCell::new(None),
            wakers: RefCell::new(Vec::new()),
        })
    }

    /// Waits for the result (cheap clone per waiter).
    pub fn wait(self: Rc<Self>) -> impl Future<Output = T> {
        let mut registered = false;
        futures_lite::future::poll_fn(move |cx| {
            if let Some(r) = self.result.borrow().as_ref() {
                return Poll::Ready(r.clone());
            }
            // Register once; a waiter is normally polled again only when
            // woken, and then the result is there.
            let mut wakers = self.wakers.borrow_mut();
            if !registered {
                wakers.push(cx.waker().clone());
                registered = true;
            } else if let Some(w) = wakers.iter_mut().find(|w| w.will_wake(cx.waker())) {
                w.clone_from(cx.waker());
            } else {
                wakers.push(cx.waker().clone());
            }
            Poll::Pending
        })
    }

    /// Sets the result (first call wins) and wakes every waiter.
    pub fn complete(&self, value: T) {
        {
            let mut slot = self.result.borrow_mut();
            if slot.is_some() {
                return;
            }
            *slot = Some(value);
        }
        let wakers = std::mem::take(&mut *self.wakers.borrow_mut());
        for w in wakers {
            w.wake();
        }
    }
}

/// Completes a flight exactly once: explicitly with [`Completer::finish`],
/// or with `on_drop()` if dropped unfinished. `cleanup` runs in both cases
/// (e.g. removing the flight from the in-flight map).
pub struct Completer<T: Clone, C: FnOnce()> {
    flight: Rc<Flight<T>>,
    on_drop: Option<Box<dyn FnOnce() -> T>>,
    cleanup: Option<C>,
}

impl<T: Clone, C: FnOnce()> Completer<T, C> {
    /// Guards `flight`.
    pub fn new(flight: Rc<Flight<T>>, on_drop: Box<dyn FnOnce() -> T>, cleanup: C) -> Self {
        Completer {
            flight,
            on_drop: Some(on_drop),
            cleanup: Some(cleanup),
        }
    }

    /// Runs the cleanup, then publishes `value`.
    pub fn finish(mut self, value: T) {
        if let Some(c) = self.cleanup.take() {
            c();
        }
        self.on_drop = None;
        self.flight.complete(value);
    }
}

impl<T: Clone, C: FnOnce()> Drop for Completer<T, C> {
    fn drop(&mut self) {
        if let Some(c) = self.cleanup.take() {
            c();
        }
        if let Some(f) = self.on_drop.take() {
            self.flight.complete(f());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn many_waiters_one_result() {
        futures_lite::future::block_on(async {
            let f = Flight::<u32>::new();
            let waiters: Vec<_> = (0..100).map(|_| Rc::clone(&f).wait()).collect();
            let mut waiters: Vec<_> = waiters.into_iter().map(Box::pin).collect();
            // Poll each once: all pending.
            for w in waiters.iter_mut() {
                assert!(futures_lite::future::poll_once(w.as_mut()).await.is_none());
            }
            assert_eq!(f.wakers.borrow().len(), 100);
            f.complete(7);
            f.complete(8); // ignored
            for w in waiters {
                assert_eq!(w.await, 7);
            }
            assert!(f.result.borrow().is_some());
        });
    }

    #[test]
    fn completer_publishes_on_drop_and_cleans_up() {
        let cleaned = Rc::new(Cell::new(0));
        let f = Flight::<&'static str>::new();
        {
            let c = Rc::clone(&cleaned);
            let _guard = Completer::new(Rc::clone(&f), Box::new(|| "cancelled"), move || {
                c.set(c.get() + 1)
            });
        }
        assert_eq!(f.result.borrow().as_deref(), Some("cancelled"));
        assert_eq!(cleaned.get(), 1);

        let f = Flight::<&'static str>::new();
        let c = Rc::clone(&cleaned);
        Completer::new(Rc::clone(&f), Box::new(|| "cancelled"), move || {
            c.set(c.get() + 1)
        })
        .finish("done");
        assert_eq!(f.result.borrow().as_deref(), Some("done"));
        assert_eq!(cleaned.get(), 2);
    }
}
