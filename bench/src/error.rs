//! One error type for the whole library, so that embedders (the `sluice`
//! daemon's demo, tests) can match on failure causes without string parsing.

use std::io;

/// Everything that can stop an injector run or a sink from starting.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The address is outside 127.0.0.0/8 and ::1; the tool never talks to those.
    #[error("refusing non-loopback address {0}: sluice-bench only connects to or binds 127.0.0.0/8 or ::1")]
    NonLoopback(String),
    /// The address could not be parsed.
    #[error("invalid address {addr:?}: {reason}")]
    BadAddress {
        /// The text that was given.
        addr: String,
        /// Why it was rejected.
        reason: String,
    },
    /// A command-line or library option is out of range or malformed.
    #[error("invalid option: {0}")]
    InvalidOption(String),
    /// The sink behaviour profile could not be read or is invalid.
    #[error("profile: {0}")]
    Profile(String),
    /// A socket or file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being attempted.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Building the TLS configuration failed.
    #[error("TLS setup: {0}")]
    Tls(String),
    /// A `sluice-bench run` scenario file is unreadable or invalid.
    #[error("scenario: {0}")]
    Scenario(String),
    /// The system under test could not be started, reached or stopped.
    #[error("system under test: {0}")]
    Sut(String),
}

impl Error {
    /// Wraps an I/O error with a short description of the attempted operation.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
