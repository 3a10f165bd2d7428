//! The outcomes delivery acts on, and configuration errors.
//!
//! Delivery needs exactly three kinds of DNS failure, because each maps to
//! one action: defer (`4.4.3`), bounce for a domain that does not exist
//! (`5.1.2`), bounce for a domain that publishes a null MX (`5.1.10`).
//! Everything else (timeouts, SERVFAIL, REFUSED, network errors, CNAME
//! loops, malformed answers) is [`ResolveError::Temporary`]: a DNS problem
//! may be fixed by the time we retry, so it must never bounce mail.
//! Each variant carries a human reason with the DNS detail (server, name,
//! type) so it can go verbatim into a bounce or the delivery log.

use std::path::PathBuf;

/// Why a domain could not be turned into a list of mail exchangers.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// Timeout, SERVFAIL, network error or bad answer: defer and retry
    /// later (`4.4.3`).
    #[error("temporary DNS failure: {reason}")]
    Temporary {
        /// What went wrong, e.g. `SERVFAIL from 127.0.0.53 for d5.test MX`.
        reason: String,
    },
    /// The domain (or every MX host of it) does not exist (NXDOMAIN):
    /// bounce (`5.1.2`).
    #[error("no such domain: {reason}")]
    NoSuchDomain {
        /// What went wrong, e.g. `NXDOMAIN from 127.0.0.53 for x.test MX`.
        reason: String,
    },
    /// The domain publishes a null MX (RFC 7505) and accepts no mail:
    /// bounce without any connection attempt (`5.1.10`).
    #[error("domain accepts no mail: {reason}")]
    NullMx {
        /// What was found, e.g. `null MX (RFC 7505) for nomail.test`.
        reason: String,
    },
}

impl ResolveError {
    /// The RFC 3463 enhanced status code delivery should use:
    /// `(4,4,3)`, `(5,1,2)` or `(5,1,10)`.
    pub fn enhanced_status(&self) -> (u8, u16, u16) {
        match self {
            ResolveError::Temporary { .. } => (4, 4, 3),
            ResolveError::NoSuchDomain { .. } => (5, 1, 2),
            ResolveError::NullMx { .. } => (5, 1, 10),
        }
    }

    /// True when the recipients must be bounced rather than deferred.
    pub fn is_permanent(&self) -> bool {
        !matches!(self, ResolveError::Temporary { .. })
    }

    /// The human reason, without the variant prefix.
    pub fn reason(&self) -> &str {
        match self {
            ResolveError::Temporary { reason }
            | ResolveError::NoSuchDomain { reason }
            | ResolveError::NullMx { reason } => reason,
        }
    }

    pub(crate) fn temporary(reason: impl Into<String>) -> Self {
        ResolveError::Temporary {
            reason: reason.into(),
        }
    }
}

/// Why a resolver could not be built from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// No nameserver in the configuration nor in resolv.conf. There is
    /// deliberately no fallback to a public resolver.
    #[error("no DNS nameserver configured and none found in {path}; refusing to guess one")]
    NoNameservers {
        /// The resolv.conf that was read.
        path: PathBuf,
    },
    /// resolv.conf could not be read.
    #[error("reading {path}: {source}")]
    ResolvConf {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A static route or smarthost entry is invalid.
    #[error("invalid route {entry:?}: {reason}")]
    Route {
        /// The offending domain pattern or host.
        entry: String,
        /// Why it was refused.
        reason: String,
    },
    /// A value is out of range.
    #[error("invalid resolver setting {field}: {reason}")]
    Invalid {
        /// Config key.
        field: &'static str,
        /// Why it was refused.
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_permanence() {
        let t = ResolveError::temporary("SERVFAIL from 127.0.0.53 for d5.test MX");
        assert_eq!(t.enhanced_status(), (4, 4, 3));
        assert!(!t.is_permanent());
        assert_eq!(t.reason(), "SERVFAIL from 127.0.0.53 for d5.test MX");
        assert!(t.to_string().contains("SERVFAIL from 127.0.0.53"));
        let n = ResolveError::NoSuchDomain { reason: "x".into() };
        assert_eq!((n.enhanced_status(), n.is_permanent()), ((5, 1, 2), true));
        let m = ResolveError::NullMx { reason: "x".into() };
        assert_eq!((m.enhanced_status(), m.is_permanent()), ((5, 1, 10), true));
    }
}
