//! The admin API's JSON bodies, shared by the server and `sluicectl`.

pub use crate::delivery::control::{DestInfo, Filter, QueueInfo, QueuedRcpt, Target};
pub use crate::runtime::control::ShardStatus;
use serde::{Deserialize, Serialize};

/// `GET /v1/status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    /// Seconds since the daemon started.
    pub uptime_secs: f64,
    /// Cores (shards).
    pub cores: usize,
    /// Each shard's counters.
    pub shards: Vec<ShardStatus>,
}

/// The answer to pause, resume, flush, bounce and delete.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Count {
    /// Destinations (pause, resume) or recipients (flush, bounce, delete)
    /// affected.
    pub count: usize,
}

/// `GET /v1/trace/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Trace {
    /// The queue id, as given.
    pub message_id: String,
    /// Its delivery-log lines, oldest first (rotated file first).
    pub events: Vec<serde_json::Value>,
    /// Recipients still queued.
    pub queued: Vec<QueuedRcpt>,
}

/// An error body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: String,
}
