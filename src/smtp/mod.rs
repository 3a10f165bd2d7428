//! SMTP, inbound and outbound: protocol only, no I/O.
//!
//! This module is sans-IO in the style of quinn-proto and rustls: the
//! session is a state machine fed with bytes and drained of replies and
//! events, and it never touches a socket, a clock or a thread. The glommio
//! driver does the I/O, the TLS handshake, credential checks and queueing,
//! and answers the session's events. That split keeps the protocol logic
//! deterministic and unit-testable byte for byte, and keeps the driver free
//! to batch reads and writes per core.
//!
//! - [`command`]: parses one command line in place.
//! - [`content`]: line-ending, NUL, line-length and hop rules for message data.
//! - [`reply`]: the reply type and the static reply lines.
//! - [`server`]: the session state machine.
//! - [`date`]: RFC 5322 dates for the Received header.
//! - [`client`]: the outbound (delivery) session state machine, same style.

// Input comes from untrusted peers: no panicking shortcuts outside tests.
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]

pub mod client;
pub mod command;
pub mod content;
pub mod date;
pub mod reply;
pub mod server;

pub use client::{
    Capabilities, ClientConfig, ClientEvent, ClientSession, CloseReason, Outcome, Recipient,
    Timeouts, TlsPolicy, Transaction,
};
pub use command::{parse_command, AuthMechanism, BodyType, Command, MailParams, ParseError};
pub use date::{date_now, write_rfc5322_date};
pub use reply::Reply;
pub use server::{
    Admission, AuthAnswer, Event, Message, PeerInfo, ServerConfig, ServerSession, TlsInfo, Verdict,
};
