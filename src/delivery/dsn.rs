//! Delivery status notifications (RFC 3464) for recipients that failed
//! permanently or expired.
//!
//! A DSN goes from the null sender to the original envelope sender, so a
//! bounce is never itself bounced (RFC 5321 §6.1): a message with a null
//! sender produces no DSN at all. The report carries the original headers,
//! not the whole body, which keeps bounces of large messages small.

use bytes::{BufMut, Bytes, BytesMut};

/// One failed recipient in a report.
#[derive(Debug, Clone)]
pub struct FailedRcpt<'a> {
    /// The recipient address.
    pub address: &'a str,
    /// Enhanced status code, e.g. `5.1.1`.
    pub status: String,
    /// The remote MTA that answered, if any.
    pub remote_mta: Option<&'a str>,
    /// The diagnostic: the remote reply (`smtp; 550 5.1.1 …`) or our reason.
    pub diagnostic: String,
}

/// Inputs for one DSN.
#[derive(Debug, Clone)]
pub struct DsnInput<'a> {
    /// Our host name (Reporting-MTA, From).
    pub hostname: &'a str,
    /// The original envelope sender (the DSN's recipient); never empty.
    pub to: &'a str,
    /// The original message's queue id.
    pub queue_id: u64,
    /// The original message (its header block is quoted).
    pub original: &'a [u8],
    /// RFC 5322 date for the Date header and Arrival-Date.
    pub date: &'a str,
    /// Unique part for the Message-ID and MIME boundary.
    pub unique: u64,
    /// The failed recipients.
    pub failed: Vec<FailedRcpt<'a>>,
}

/// Renders a DSN message (CRLF line endings).
pub fn render(d: &DsnInput<'_>) -> Bytes {
    let boundary = format!("sluice-dsn-{:016X}", d.unique);
    let mut m = BytesMut::with_capacity(2048);
    let line = |m: &mut BytesMut, s: &str| {
        m.put_slice(s.as_bytes());
        m.put_slice(b"\r\n");
    };
    line(
        &mut m,
        &format!("From: Mail Delivery System <MAILER-DAEMON@{}>", d.hostname),
    );
    line(&mut m, &format!("To: <{}>", d.to));
    line(&mut m, "Subject: Undelivered Mail Returned to Sender");
    line(&mut m, &format!("Date: {}", d.date));
    line(
        &mut m,
        &format!("Message-ID: <dsn.{:016X}@{}>", d.unique, d.hostname),
    );
    line(&mut m, "Auto-Submitted: auto-replied");
    line(&mut m, "MIME-Version: 1.0");
    line(
        &mut m,
        &format!(
            "Content-Type: multipart/report; report-type=delivery-status; boundary=\"{boundary}\""
        ),
    );
    line(&mut m, "");
    line(&mut m, "This is a MIME-encapsulated message.");
    line(&mut m, "");
    line(&mut m, &format!("--{boundary}"));
    line(&mut m, "Content-Type: text/plain; charset=us-ascii");
    line(&mut m, "");
    line(
        &mut m,
        &format!("This is the mail system at host {}.", d.hostname),
    );
    line(&mut m, "");
    line(
        &mut m,
        "Your message could not be delivered to one or more recipients:",
    );
    line(&mut m, "");
    for f in &d.failed {
        line(&mut m, &format!("<{}>: {}", f.address, f.diagnostic));
    }
    line(&mut m, "");
    line(&mut m, &format!("--{boundary}"));
    line(&mut m, "Content-Type: message/delivery-status");
    line(&mut m, "");
    line(&mut m, &format!("Reporting-MTA: dns; {}", d.hostname));
    line(&mut m, &format!("X-Sluice-Queue-ID: {:016X}", d.queue_id));
    line(&mut m, &format!("Arrival-Date: {}", d.date));
    for f in &d.failed {
        line(&mut m, "");
        line(&mut m, &format!("Final-Recipient: rfc822; {}", f.address));
        line(&mut m, "Action: failed");
        line(&mut m, &format!("Status: {}", f.status));
        if let Some(mta) = f.remote_mta {
            line(&mut m, &format!("Remote-MTA: dns; {mta}"));
        }
        line(&mut m, &format!("Diagnostic-Code: {}", f.diagnostic));
    }
    line(&mut m, "");
    line(&mut m, &format!("--{boundary}"));
    line(&mut m, "Content-Type: text/rfc822-headers");
    line(&mut m, "");
    m.put_slice(header_block(d.original));
    line(&mut m, "");
    line(&mut m, &format!("--{boundary}--"));
    m.freeze()
}

/// The original's header block (up to the blank line), capped at 64 KiB.
fn header_block(msg: &[u8]) -> &[u8] {
    let end = memchr::memmem::find(msg, b"\r\n\r\n").map_or(msg.len(), |i| i + 2);
    msg.get(..end.min(64 * 1024)).unwrap_or(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dsn_has_the_three_parts_and_the_status() {
        let original = b"Received: from x\r\nSubject: hello\r\n\r\nsecret body\r\n";
        let d = render(&DsnInput {
            hostname: "mta.test",
            to: "sender@a.test",
            queue_id: 0xABC,
            original,
            date: "Sun, 22 Nov 2026 23:05:09 +0000",
            unique: 7,
            failed: vec![FailedRcpt {
                address: "gone@b.test",
                status: "5.1.1".into(),
                remote_mta: Some("mx.b.test"),
                diagnostic: "smtp; 550 5.1.1 no such user".into(),
            }],
        });
        let s = std::str::from_utf8(&d).unwrap();
        assert!(s.contains("report-type=delivery-status"));
        assert!(s.contains(
            "Final-Recipient: rfc822; gone@b.test\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        ));
        assert!(s.contains("Remote-MTA: dns; mx.b.test"));
        assert!(s.contains("Subject: hello"));
        assert!(!s.contains("secret body"));
        assert!(s.ends_with("--sluice-dsn-0000000000000007--\r\n"));
    }
}
