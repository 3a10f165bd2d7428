//! The per-core engine. One [`Shard`] per executor owns the domains whose
//! [`hash::shard_of`] is its index; nothing else touches their state.
//!
//! Until the delivery engine lands, a shard takes envelopes in and applies
//! the configured interim route (`discard` or `hold`). What is already its
//! final shape: envelopes arrive from ingress sessions on any core in
//! batches, each carrying a reference-counted body, and the shard publishes
//! its backlog through single-writer counters that ingress reads to decide
//! admission (backpressure).

pub mod ack;
pub mod hash;
mod load;

pub use load::{Backlog, ShardLoad};

use crate::config::Route;
use crate::delivery::Engine;
use bytes::Bytes;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;

/// The part of one accepted message owned by one shard: its recipients on
/// that shard's domains and a reference to the shared body.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// The message's queue id (the one given in the 250 reply).
    pub id: u64,
    /// The envelope sender; empty for the null sender.
    pub reverse_path: Arc<str>,
    /// Recipients whose domains this shard owns.
    pub recipients: Vec<String>,
    /// The message, shared by every shard that got a part of it.
    pub body: Bytes,
    /// Declared 8-bit (`BODY=8BITMIME`): needs 8BITMIME downstream.
    pub eight_bit: bool,
    /// Declared `SMTPUTF8`: needs SMTPUTF8 downstream.
    pub smtputf8: bool,
    /// Under `ack = "downstream"`: the client's pending answer.
    pub ack: Option<ack::Ack>,
}

/// Envelopes sent from one core to a shard in one channel message.
pub type Batch = Vec<Envelope>;

/// One core's slice of the destination domains.
pub struct Shard {
    index: usize,
    route: Route,
    load: Arc<ShardLoad>,
    held: VecDeque<Envelope>,
    backlog: Rc<RefCell<Backlog>>,
    engine: Option<Rc<Engine>>,
}

impl Shard {
    /// A shard with the given index that publishes its load into `load`.
    /// `engine` is required for the `deliver` route.
    pub fn new(
        index: usize,
        route: Route,
        load: Arc<ShardLoad>,
        backlog: Rc<RefCell<Backlog>>,
        engine: Option<Rc<Engine>>,
    ) -> Self {
        Shard {
            index,
            route,
            load,
            held: VecDeque::new(),
            backlog,
            engine,
        }
    }

    /// This shard's index.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Takes ownership of envelopes for this shard's domains.
    pub fn accept(&mut self, batch: impl IntoIterator<Item = Envelope>) {
        for env in batch {
            {
                let mut b = self.backlog.borrow_mut();
                b.accepted_messages += 1;
                b.accepted_recipients += env.recipients.len() as u64;
                if self.route == Route::Hold {
                    b.queued_messages += 1;
                    b.queued_bytes += env.body.len() as u64;
                }
            }
            match (self.route, &self.engine) {
                (Route::Deliver, Some(engine)) => engine.intake(env),
                (Route::Hold, _) => self.held.push_back(env),
                // Discard, or deliver without an engine (startup refuses
                // that combination): counted and dropped.
                _ => {}
            }
        }
        self.load.publish(&self.backlog.borrow());
    }

    /// Envelopes held by the `hold` route, oldest first.
    pub fn held(&self) -> impl Iterator<Item = &Envelope> {
        self.held.iter()
    }

    /// The shard's counters.
    pub fn backlog(&self) -> Backlog {
        *self.backlog.borrow()
    }

    /// The delivery engine, when the route is `deliver`.
    pub fn engine(&self) -> Option<&Rc<Engine>> {
        self.engine.as_ref()
    }
}
