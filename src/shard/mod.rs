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

pub use load::{Backlog, Bounds, Pending, ShardLoad};

use crate::config::Route;
use crate::delivery::Engine;
use crate::journal::{Journal, JournalError, MessageRecord, Ticket};
use crate::smtp::Reply;
use ack::Decision;
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
        let mut stored = Vec::new();
        for env in batch {
            {
                let mut b = self.backlog.borrow_mut();
                b.accepted_messages += 1;
                b.accepted_recipients += env.recipients.len() as u64;
                if self.route == Route::Hold {
                    b.queued_messages += 1;
                    b.queued_bytes += env.body.len() as u64;
                    b.queued_recipients += env.recipients.len() as u64;
                }
            }
            match (self.route, &self.engine) {
                (Route::Deliver, Some(engine)) => match engine.journal() {
                    Some(j) => self.journal_append(j, env, &mut stored),
                    None => engine.intake(env),
                },
                (Route::Hold, _) => self.held.push_back(env),
                // Discard, or deliver without an engine (startup refuses
                // that combination): counted and dropped.
                _ => {}
            }
        }
        self.load.publish(&self.backlog.borrow());
        if let (Some(engine), false) = (&self.engine, stored.is_empty()) {
            glommio::spawn_local(commit(engine.clone(), stored)).detach();
        }
    }

    /// Appends an envelope to the journal; the caller commits the batch.
    /// A refusal fails the client's acknowledgement with the reason.
    fn journal_append(&self, j: &Journal, env: Envelope, stored: &mut Vec<(Envelope, Ticket)>) {
        let record = MessageRecord {
            id: env.id,
            reverse_path: &env.reverse_path,
            recipients: &env.recipients,
            body: &env.body,
            eight_bit: env.eight_bit,
            smtputf8: env.smtputf8,
            accepted_unix: unix_now(),
        };
        match j.append_message(&record) {
            Ok(t) => stored.push((env, t)),
            Err(e) => refused(self.engine.as_ref(), env, &e),
        }
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

/// The reply for a message the journal could not take.
pub fn journal_reply(e: &JournalError) -> Reply {
    match e {
        JournalError::NoSpace { .. } | JournalError::Backpressure { .. } => Reply::new(
            452,
            Some((4, 3, 1)),
            "Insufficient system storage, try again later",
        ),
        _ => Reply::new(
            451,
            Some((4, 3, 0)),
            "Could not store the message, try again later",
        ),
    }
}

/// An envelope the journal refused: the client hears why; mail of our own
/// (DSNs, re-homed recipients) has no client, so it is kept in memory
/// rather than dropped.
fn refused(engine: Option<&Rc<Engine>>, env: Envelope, e: &JournalError) {
    match env.ack.clone() {
        Some(ack) => ack.part_failed(&journal_reply(e)),
        None => {
            tracing::warn!(error = %e, id = env.id, "journal refused our own mail; kept in memory only");
            if let Some(engine) = engine {
                engine.intake(env);
            }
        }
    }
}

/// Waits for a batch to be durable, then hands each envelope to delivery
/// once its client has been told 250. A part whose message failed on
/// another shard is withdrawn (recorded as moved: the client sends it
/// again), so a retry never duplicates it.
async fn commit(engine: Rc<Engine>, stored: Vec<(Envelope, Ticket)>) {
    let Some(j) = engine.journal().cloned() else {
        return;
    };
    for (env, ticket) in stored {
        let result = j.durable(ticket).await;
        let ack = env.ack.clone();
        match (result, ack) {
            (Err(e), _) => refused(Some(&engine), env, &e),
            (Ok(()), None) => engine.intake(env),
            (Ok(()), Some(ack)) => {
                ack.part_stored();
                match ack.decision() {
                    Decision::Accepted => engine.intake(env),
                    Decision::Pending => {
                        let (engine, j) = (engine.clone(), j.clone());
                        glommio::spawn_local(async move {
                            match ack.decided().await {
                                Decision::Accepted => engine.intake(env),
                                _ => withdraw(&j, &env),
                            }
                        })
                        .detach();
                    }
                    _ => withdraw(&j, &env),
                }
            }
        }
    }
}

fn withdraw(j: &Journal, env: &Envelope) {
    for i in 0..env.recipients.len() {
        let index = u32::try_from(i).unwrap_or(u32::MAX);
        let _ = j.append_outcome(env.id, index, crate::journal::Outcome::Moved);
    }
    j.request_flush();
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
