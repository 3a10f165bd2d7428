//! End-to-end accounting: which recipients the SUT acknowledged to the
//! injector, and whether each of them reached the sink. Done message by
//! message (by Message-ID), because around a crash totals mislead: a
//! message the SUT delivered but never acknowledged would hide one it
//! acknowledged and lost.

use std::time::Duration;

use crate::inject::{message_id, InjectReport};
use crate::sink::SinkHandle;

/// How often the sink's in-memory counters are looked at while waiting.
const POLL: Duration = Duration::from_millis(50);

/// The outcome for the acknowledged recipients.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Delivery {
    /// Recipients acknowledged by the SUT.
    pub(crate) expected: u64,
    /// Acknowledged recipients found at the sink (or bounced by it).
    pub(crate) accounted: u64,
    /// Acknowledged recipients neither received nor bounced by the sink.
    pub(crate) missing: u64,
    /// Distinct recipients received whose message was never acknowledged.
    pub(crate) unacknowledged: u64,
}

/// Compares the injector's acknowledgements with the sink's receipts.
///
/// A recipient the sink refused permanently has no Message-ID (refusals
/// happen at RCPT), so such refusals are credited against the shortfall
/// in bulk: the SUT did deliver them, as a bounce.
pub(crate) fn account(inject: &InjectReport, sink: &SinkHandle) -> Delivery {
    let mut short = 0u64;
    let mut matched = 0u64;
    for &(seq, n) in &inject.acknowledged {
        let got = sink.received_recipients(message_id(&inject.run_id, seq).as_bytes());
        short += u64::from(n.saturating_sub(got));
        matched += u64::from(n.min(got));
    }
    let totals = sink.totals();
    let unique = totals.recipients_accepted.saturating_sub(totals.duplicates);
    let missing = short.saturating_sub(totals.permfailed);
    Delivery {
        expected: inject.accepted_recipients,
        accounted: inject.accepted_recipients.saturating_sub(missing),
        missing,
        unacknowledged: unique.saturating_sub(matched),
    }
}

/// Cheap test: has the sink counted at least as many distinct recipients
/// (plus bounces) as were acknowledged?
fn enough(sink: &SinkHandle, expected: u64) -> bool {
    let t = sink.totals();
    t.recipients_accepted.saturating_sub(t.duplicates) + t.permfailed >= expected
}

/// Waits until every acknowledged recipient is accounted for, or
/// `deadline` passes; returns true if everything arrived. The exact check
/// walks every acknowledged message, so it runs only when the cheap totals
/// say it could succeed, and at most every half second.
pub(crate) async fn wait_for_sink(
    inject: &InjectReport,
    sink: &SinkHandle,
    deadline: Duration,
) -> bool {
    let until = tokio::time::Instant::now() + deadline;
    let mut next_exact = tokio::time::Instant::now();
    loop {
        let now = tokio::time::Instant::now();
        if enough(sink, inject.accepted_recipients) && now >= next_exact {
            if account(inject, sink).missing == 0 {
                return true;
            }
            next_exact = now + Duration::from_millis(500);
        }
        if now >= until {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}
