//! One error type for the DNS stub, so the bench runner can report "why did
//! the DNS stub not start" without parsing strings. Every variant carries
//! enough context (address, file, rule text) to act on it directly.

use std::io;
use std::net::SocketAddr;

/// Everything that can stop the DNS stub from starting.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// The listen address is outside 127.0.0.0/8 and ::1.
    #[error("refusing non-loopback address {0}: the DNS stub only binds 127.0.0.0/8 or [::1]")]
    NonLoopback(SocketAddr),
    /// A socket or file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being attempted.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The zone file (or a programmatically built zone) is invalid.
    #[error("zone {origin}: {message}")]
    Zone {
        /// Where the zone came from (file path or `<inline>`).
        origin: String,
        /// What is wrong with it.
        message: String,
    },
    /// A failure rule (`NAME=MODE[@PROBABILITY]`) could not be parsed.
    #[error("invalid failure rule {rule:?}: {reason}")]
    Failure {
        /// The rule text as given.
        rule: String,
        /// Why it was rejected.
        reason: String,
    },
    /// An option in [`DnsOptions`](super::DnsOptions) is out of range.
    #[error("invalid option: {0}")]
    InvalidOption(String),
}

impl DnsError {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        DnsError::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn zone(origin: &str, message: impl Into<String>) -> Self {
        DnsError::Zone {
            origin: origin.to_string(),
            message: message.into(),
        }
    }
}
