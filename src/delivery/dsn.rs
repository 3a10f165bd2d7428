//! Delivery status notifications (RFC 3464) for recipients that failed
//! permanently or expired.
//!
//! A DSN goes from the null sender to the original envelope sender, so a
//! bounce is never itself bounced (RFC 5321 §6.1): a message with a null
//! sender produces no DSN at all. The report carries the original headers,
//! not the whole body, which keeps bounces of large messages small.
//!
//! Much of a DSN's text comes from outside: the receiving server's reply
//! (any bytes it liked, on as many lines as it liked), the MX name, the
//! original message's header block. Copied verbatim, a reply could add
//! fields to the delivery-status part (`\r\nAction: delivered`), bare CRs or
//! lines longer than SMTP carries. So every outside string is rendered as
//! one logical line of printable US-ASCII (control characters become
//! spaces, non-ASCII becomes RFC 6533 `\x{HHHH}` escapes) and folded at 78
//! columns with continuation lines that start with a space, which no parser
//! can read as a new field. The DSN's own parts thus stay US-ASCII; only the
//! quoted original header block may carry 8-bit text, see
//! [`needs_8bitmime`].
//!
//! Folding only ever replaces a space by CRLF and a space, so RFC 5322
//! unfolding gives the text back. Words are never broken below the 998-octet
//! line limit, and address fields (`Final-Recipient`, `Remote-MTA`) are
//! written whole: bounce processors match the address octet for octet, and
//! VERP/SRS addresses are longer than a folded line.

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

/// Where text is folded (RFC 5322 §2.1.1 "SHOULD be no more than 78").
const FOLD: usize = 78;
/// Longest outside text kept, after sanitising; a reply may be any length,
/// a bounce need not be.
const MAX_TEXT: usize = 4096;
/// Longest line of the quoted original (RFC 5322 §2.1.1 "MUST be no more
/// than 998", CRLF excluded).
const MAX_LINE: usize = 998;

/// The longest sender written in the `To:` header (a path longer than
/// RFC 5321 allows, and short of the header line limit).
const MAX_TO: usize = 900;
/// Longest line of ours: a word (or address) is broken only past this, a
/// little short of [`MAX_LINE`]. Breaking adds a space to the text, which
/// is why it is the last resort.
const MAX_UNBROKEN: usize = 990;
/// The quoted original header block is capped at this many octets.
const MAX_HEADERS: usize = 64 * 1024;

/// Renders a DSN message (CRLF line endings).
pub fn render(d: &DsnInput<'_>) -> Bytes {
    let headers = header_block(d.original);
    let boundary = boundary(d.unique, &headers);
    let mut m = BytesMut::with_capacity(2048 + headers.len());
    let line = |m: &mut BytesMut, s: &str| {
        m.put_slice(s.as_bytes());
        m.put_slice(b"\r\n");
    };
    line(
        &mut m,
        &format!("From: Mail Delivery System <MAILER-DAEMON@{}>", d.hostname),
    );
    // The envelope sender as the ingress parsed it has no controls, and
    // is UTF-8 only when the message was SMTPUTF8 (so it stays raw here);
    // controls are dropped anyway, so no address can break the header.
    let to: String = d.to.chars().filter(|c| !c.is_control()).collect();
    if to.len() <= MAX_TO {
        line(&mut m, &format!("To: <{to}>"));
    } else {
        // Longer than any valid path (RFC 5321 §4.5.3.1.3: 256 octets) and
        // than a header line may be: the envelope still carries it.
        line(&mut m, "To: undisclosed-recipients:;");
    }
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
        let text = format!("<{}>: {}", f.address, f.diagnostic);
        field(&mut m, "", &text);
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
        let (addr_type, address) = recipient(f.address);
        address_field(&mut m, "Final-Recipient: ", addr_type, &address);
        line(&mut m, "Action: failed");
        field(&mut m, "Status: ", &f.status);
        if let Some(mta) = f.remote_mta {
            address_field(&mut m, "Remote-MTA: ", "dns;", &sanitise(mta));
        }
        field(&mut m, "Diagnostic-Code: ", &f.diagnostic);
    }
    line(&mut m, "");
    line(&mut m, &format!("--{boundary}"));
    line(&mut m, "Content-Type: text/rfc822-headers");
    line(&mut m, "");
    m.put_slice(&headers);
    line(&mut m, "");
    line(&mut m, &format!("--{boundary}--"));
    m.freeze()
}

/// Whether a rendered DSN must go with `BODY=8BITMIME`: only the quoted
/// original headers can make it so (everything else is escaped).
pub fn needs_8bitmime(dsn: &[u8]) -> bool {
    !dsn.is_ascii()
}

/// Fields a delivery-status part written by [`render`] may hold.
const STATUS_FIELDS: [&str; 8] = [
    "Reporting-MTA",
    "X-Sluice-Queue-ID",
    "Arrival-Date",
    "Final-Recipient",
    "Action",
    "Status",
    "Remote-MTA",
    "Diagnostic-Code",
];

/// The first way `dsn` breaks what [`render`] promises, if any: a bare CR
/// or LF, a line over 998 octets, or a delivery-status line that is neither
/// a known field, a continuation nor blank, or an `Action` other than
/// `failed`. For the unit tests and the fuzz target.
#[doc(hidden)]
pub fn invariant_violation(dsn: &[u8]) -> Option<String> {
    for (i, &b) in dsn.iter().enumerate() {
        let prev = i.checked_sub(1).and_then(|p| dsn.get(p));
        let bare = match b {
            b'\r' => dsn.get(i + 1) != Some(&b'\n'),
            b'\n' => prev != Some(&b'\r'),
            _ => false,
        };
        if bare {
            return Some(format!("bare CR/LF at {i}"));
        }
    }
    if !dsn.ends_with(b"\r\n") {
        return Some("no final CRLF".into());
    }
    // Octets on the wire, not characters of a lossy decoding: a quoted
    // 8-bit header is raw bytes, each of which would decode to three.
    if let Some(l) = dsn
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .find(|l| l.len() > MAX_LINE)
    {
        return Some(format!("line of {} octets", l.len()));
    }
    let text = String::from_utf8_lossy(dsn);
    let mut lines = text.split("\r\n");
    if !lines.any(|l| l == "Content-Type: message/delivery-status") {
        return Some("no delivery-status part".into());
    }
    for l in lines.skip(1).take_while(|l| !l.starts_with("--")) {
        if l.is_empty() || l.starts_with(' ') {
            continue;
        }
        let name = l.split(':').next().unwrap_or_default();
        if !STATUS_FIELDS.contains(&name) {
            return Some(format!("unknown status line {l:?}"));
        }
        if name == "Action" && l != "Action: failed" {
            return Some(format!("forged {l:?}"));
        }
    }
    None
}

/// Builds a DSN from one `dsn_builder` fuzz input (fields split at 0xFF:
/// sender, two recipients, an MX, a reply; what follows the last 0xFF is
/// the original message) and returns the first invariant it breaks, with
/// the DSN. For the fuzz target and the regression tests that replay what
/// it found.
#[doc(hidden)]
pub fn fuzz_case(data: &[u8]) -> Option<(String, Bytes)> {
    let mut parts = data.split(|&b| b == 0xFF);
    let mut next = || String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let (to, rcpt_a, rcpt_b, mta, reply) = (next(), next(), next(), next(), next());
    let original = data
        .iter()
        .rposition(|&b| b == 0xFF)
        .and_then(|i| data.get(i + 1..))
        .unwrap_or_default();
    let failed = vec![
        FailedRcpt {
            address: &rcpt_a,
            status: reply.chars().take(7).collect(),
            remote_mta: Some(&mta),
            diagnostic: format!("smtp; {reply}"),
        },
        FailedRcpt {
            address: &rcpt_b,
            status: "5.0.0".into(),
            remote_mta: None,
            diagnostic: reply.clone(),
        },
    ];
    let dsn = render(&DsnInput {
        hostname: "fuzz.test",
        to: &to,
        queue_id: 1,
        original,
        date: "Sun, 22 Nov 2026 23:05:09 +0000",
        unique: 7,
        failed,
    });
    invariant_violation(&dsn).map(|v| (v, dsn))
}

/// A boundary that occurs nowhere in the quoted headers (the only part
/// whose lines we do not write ourselves), so they cannot end a part.
/// At most 70 characters (RFC 2046 §5.1.1): a counter, not a growing
/// suffix, tells candidates apart, and the bounded headers can hold only so
/// many of them, so the search ends.
fn boundary(unique: u64, headers: &[u8]) -> String {
    let base = format!("sluice-dsn-{unique:016X}");
    let mut n: u64 = 0;
    loop {
        let b = match n {
            0 => base.clone(),
            1 => format!("{base}=_"),
            _ => format!("{base}=_{n}"),
        };
        if memchr::memmem::find(headers, b.as_bytes()).is_none() {
            return b;
        }
        n = n.saturating_add(1);
    }
}

/// Writes `name` and `value` as one field (or, with an empty name, one
/// paragraph): `value` sanitised, folded at [`FOLD`] columns between
/// words; a word is broken only where it would pass [`MAX_UNBROKEN`].
fn field(m: &mut BytesMut, name: &str, value: &str) {
    m.put_slice(name.as_bytes());
    let mut col = name.len();
    let text = sanitise(value);
    let mut first = true;
    for word in text.split(' ').filter(|w| !w.is_empty()) {
        let mut word = word.as_bytes();
        let sep = usize::from(!first);
        if col + sep + word.len() > FOLD && col > 1 {
            m.put_slice(b"\r\n ");
            col = 1;
        } else if !first {
            m.put_u8(b' ');
            col += 1;
        }
        first = false;
        // A word longer than the fold gets a line of its own, whole: only
        // one that would pass the line limit is broken (and gains a space).
        while col + word.len() > MAX_UNBROKEN {
            let (head, tail) = word.split_at(MAX_UNBROKEN.saturating_sub(col).clamp(1, word.len()));
            m.put_slice(head);
            m.put_slice(b"\r\n ");
            col = 1;
            word = tail;
        }
        m.put_slice(word);
        col += word.len();
    }
    m.put_slice(b"\r\n");
}

/// The address type and text of `Final-Recipient` (RFC 3464 §2.3.2): an
/// address of printable US-ASCII is `rfc822` and written as it is (a `\`
/// in a quoted local part included); anything else is `utf-8`, with
/// non-ASCII and `\` escaped as RFC 6533 §3 asks.
fn recipient(address: &str) -> (&'static str, String) {
    let printable = address.chars().all(|c| matches!(c, ' '..='~'));
    if printable {
        let end = address.len().min(MAX_TEXT);
        // Printable ASCII: every index is a char boundary.
        ("rfc822;", address.get(..end).unwrap_or_default().to_owned())
    } else {
        ("utf-8;", sanitise(address))
    }
}

/// Writes `name`, `kind` and `address` as one field with the address whole:
/// on the first line if it fits the fold, else alone on a continuation
/// line (the fold takes the place of the space after `kind`, so unfolding
/// gives `kind address` back exactly). `address` must hold no CR, LF or
/// other control (see [`recipient`], [`sanitise`]). Only an address longer
/// than a line is broken.
fn address_field(m: &mut BytesMut, name: &str, kind: &str, address: &str) {
    m.put_slice(name.as_bytes());
    m.put_slice(kind.as_bytes());
    let mut col = name.len() + kind.len();
    let mut rest = address.as_bytes();
    if col + 1 + rest.len() > FOLD {
        m.put_slice(b"\r\n ");
        col = 1;
    } else {
        m.put_u8(b' ');
        col += 1;
    }
    while col + rest.len() > MAX_UNBROKEN {
        let (head, tail) = rest.split_at(MAX_UNBROKEN.saturating_sub(col).clamp(1, rest.len()));
        m.put_slice(head);
        m.put_slice(b"\r\n ");
        col = 1;
        rest = tail;
    }
    m.put_slice(rest);
    m.put_slice(b"\r\n");
}

/// `text` as one line of printable US-ASCII: line breaks and other control
/// characters become spaces, `\` and non-ASCII become `\x{HHHH}` (RFC 6533
/// embedded-unicode-char), and the result is capped at [`MAX_TEXT`].
fn sanitise(text: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(text.len().min(MAX_TEXT));
    for c in text.chars() {
        if out.len() >= MAX_TEXT {
            out.push_str(" ...");
            break;
        }
        match c {
            ' '..='~' if c != '\\' => out.push(c),
            c if c.is_ascii_control() => out.push(' '),
            // Writing to a String cannot fail.
            c => {
                let _ = write!(out, "\\x{{{:X}}}", u32::from(c));
            }
        }
    }
    out
}

/// The original's header block (up to the first empty line, however its
/// lines end), capped at [`MAX_HEADERS`], as CRLF lines of at most
/// [`MAX_LINE`] octets with no NUL: the ingress guarantees as much for what
/// it accepts, but a body from an older journal need not be so.
fn header_block(msg: &[u8]) -> Vec<u8> {
    let block = msg.get(..MAX_HEADERS).unwrap_or(msg);
    let mut out = Vec::with_capacity(block.len() + 2);
    let mut rest = block;
    while !rest.is_empty() {
        let (line, next) = match memchr::memchr2(b'\r', b'\n', rest) {
            Some(i) => {
                let crlf = rest.get(i) == Some(&b'\r') && rest.get(i + 1) == Some(&b'\n');
                (
                    rest.get(..i).unwrap_or_default(),
                    rest.get(i + 1 + usize::from(crlf)..).unwrap_or_default(),
                )
            }
            None => (rest, &[][..]),
        };
        if line.is_empty() {
            break;
        }
        // Continuation lines keep an over-long line inside its field.
        for (i, piece) in line.chunks(MAX_LINE - 1).enumerate() {
            if i > 0 {
                out.push(b' ');
            }
            out.extend(piece.iter().map(|&b| if b == 0 { b' ' } else { b }));
            out.extend_from_slice(b"\r\n");
        }
        rest = next;
    }
    out
}

#[cfg(test)]
mod tests {

    /// Every input the fuzzer ever crashed the builder with
    /// (`fuzz/regressions/dsn_builder/`) builds a valid DSN now.
    #[test]
    fn a_long_sender_and_a_header_full_of_boundaries_keep_every_line_short() {
        let long_sender = format!("{}@sender.test", "s".repeat(2000));
        let mut original = String::new();
        for n in 0..500 {
            original.push_str(&format!(
                "X-B{n}: sluice-dsn-0000000000000007=_{n} sluice-dsn-0000000000000007=_\r\n"
            ));
        }
        original.push_str("X-C: sluice-dsn-0000000000000007\r\n\r\nbody\r\n");
        let dsn = render(&DsnInput {
            hostname: "h.test",
            to: &long_sender,
            queue_id: 1,
            original: original.as_bytes(),
            date: "Sun, 22 Nov 2026 23:05:09 +0000",
            unique: 7,
            failed: vec![FailedRcpt {
                address: "r@x.test",
                status: "5.1.1".into(),
                remote_mta: None,
                diagnostic: "smtp; 550 no".into(),
            }],
        });
        assert_eq!(invariant_violation(&dsn), None);
        let s = String::from_utf8_lossy(&dsn);
        assert!(s.contains("To: undisclosed-recipients:;"), "{s}");
        let b = s
            .split("boundary=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        assert!(b.len() <= 70, "{b}");
        assert!(!original.contains(b), "{b}");
    }

    #[test]
    fn fuzz_regressions_build_valid_dsns() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions/dsn_builder");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            assert_eq!(fuzz_case(&data).map(|(v, _)| v), None, "{}", path.display());
            n += 1;
        }
        assert!(n > 0, "no regression inputs in {}", dir.display());
    }
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
        assert_eq!(invariant_violation(&d), None);
    }

    /// RFC 5322 §2.2.3: unfolding removes each CRLF followed by a space.
    fn unfold(s: &str) -> String {
        s.replace("\r\n ", " ")
    }

    fn one_failed(address: &str, mta: &str, diagnostic: &str) -> String {
        let d = render(&DsnInput {
            hostname: "mta.test",
            to: "sender@a.test",
            queue_id: 1,
            original: b"Subject: x\r\n\r\n",
            date: "Sun, 22 Nov 2026 23:05:09 +0000",
            unique: 7,
            failed: vec![FailedRcpt {
                address,
                status: "5.1.1".into(),
                remote_mta: Some(mta),
                diagnostic: diagnostic.into(),
            }],
        });
        assert_eq!(
            invariant_violation(&d),
            None,
            "{}",
            String::from_utf8_lossy(&d)
        );
        String::from_utf8(d.to_vec()).unwrap()
    }

    /// The logical (unfolded) field `name` of the delivery-status part.
    fn status_field(dsn: &str, name: &str) -> String {
        let unfolded = unfold(dsn);
        let status = unfolded
            .split("Content-Type: message/delivery-status\r\n")
            .nth(1)
            .unwrap();
        status
            .split("\r\n")
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} in {dsn}"))
            .to_owned()
    }

    #[test]
    fn long_addresses_survive_folding_exactly() {
        // A VERP address of 200 octets, the kind bounce processors match.
        let local = format!("bounce+list-{}=c.test", "x".repeat(160));
        let verp = format!("{local}@bounces.example.test");
        assert_eq!(verp.len(), 200);
        let mta = format!("mx-{}.example.test", "m".repeat(90));
        let d = one_failed(&verp, &mta, "smtp; 550 5.1.1 no such user");
        assert_eq!(
            status_field(&d, "Final-Recipient:"),
            format!("Final-Recipient: rfc822; {verp}")
        );
        assert_eq!(
            status_field(&d, "Remote-MTA:"),
            format!("Remote-MTA: dns; {mta}")
        );
        // Still folded: the address sits alone on a continuation line.
        assert!(d.contains(&format!("Final-Recipient: rfc822;\r\n {verp}\r\n")));
        // The human part quotes it whole too.
        assert!(unfold(&d).contains(&format!("<{verp}>: smtp; 550")), "{d}");

        // A backslash in a quoted local part is US-ASCII: kept as it is.
        let quoted = r#""john\ doe"@a.test"#;
        let d = one_failed(quoted, "mx.a.test", "smtp; 550 no");
        assert_eq!(
            status_field(&d, "Final-Recipient:"),
            format!("Final-Recipient: rfc822; {quoted}")
        );
        // A non-ASCII one is utf-8, escaped (RFC 6533).
        let d = one_failed("j\u{f6}rg\\x@a.test", "mx.a.test", "smtp; 550 no");
        assert_eq!(
            status_field(&d, "Final-Recipient:"),
            "Final-Recipient: utf-8; j\\x{F6}rg\\x{5C}x@a.test"
        );
    }

    #[test]
    fn only_a_word_past_the_line_limit_is_broken() {
        let word = "w".repeat(300);
        let d = one_failed("a@b.test", "mx.b.test", &format!("smtp; 550 {word} end"));
        assert_eq!(
            status_field(&d, "Diagnostic-Code:"),
            format!("Diagnostic-Code: smtp; 550 {word} end")
        );
        let huge = "h".repeat(2500);
        let d = one_failed(&huge, "mx.b.test", "smtp; 550 no");
        for l in d.split("\r\n") {
            assert!(l.len() <= MAX_UNBROKEN, "{} octets", l.len());
        }
        // Broken, but nothing lost but the spaces the breaks add.
        let got = status_field(&d, "Final-Recipient:").replace(' ', "");
        assert_eq!(got, format!("Final-Recipient:rfc822;{huge}"));
    }

    fn hostile(diagnostic: String, original: &[u8]) -> Bytes {
        render(&DsnInput {
            hostname: "mta.test",
            to: "sender@a.test",
            queue_id: 1,
            original,
            date: "Sun, 22 Nov 2026 23:05:09 +0000",
            unique: 7,
            failed: vec![FailedRcpt {
                address: "gone@b.test",
                status: "5.1.1".into(),
                remote_mta: Some("mx.b.test"),
                diagnostic,
            }],
        })
    }

    #[test]
    fn a_hostile_reply_cannot_add_fields_bare_crs_or_long_lines() {
        let long = "A".repeat(5000);
        let diag = format!(
            "smtp; 550 5.1.1 no\r\nAction: delivered\nStatus: 2.0.0\rX-Bare: cr\0 caf\u{e9} \\ {long}"
        );
        let d = hostile(diag, b"Subject: x\r\n\r\n");
        assert_eq!(
            invariant_violation(&d),
            None,
            "{}",
            String::from_utf8_lossy(&d)
        );
        let s = std::str::from_utf8(&d).unwrap();
        assert!(s.is_ascii(), "non-ASCII is escaped");
        assert!(!needs_8bitmime(&d));
        assert_eq!(s.matches("\r\nAction: ").count(), 1);
        assert_eq!(s.matches("\r\nStatus: ").count(), 1);
        // Lines of ours are folded at 78 between words; the one word too
        // long for that is broken only at the line limit.
        for l in s
            .split("\r\n")
            .filter(|l| l.contains('A') && !l.contains("multipart"))
        {
            let limit = if l.contains("AAAA") {
                MAX_UNBROKEN
            } else {
                FOLD
            };
            assert!(l.len() <= limit, "{} octets: {l}", l.len());
        }
        // The text survives as one logical line, unfolded.
        let diag_field = s
            .split("\r\nDiagnostic-Code: ")
            .nth(1)
            .unwrap()
            .split("\r\n\r\n")
            .next()
            .unwrap()
            .replace("\r\n ", " ");
        assert!(
            diag_field.starts_with(
                "smtp; 550 5.1.1 no Action: delivered Status: 2.0.0 X-Bare: cr caf\\x{E9} \\x{5C} AAA"
            ),
            "{diag_field}"
        );
        assert!(diag_field.ends_with(" ..."), "capped: {}", diag_field.len());
        assert!(diag_field.len() < 5000);
    }

    #[test]
    fn the_quoted_header_block_is_made_safe_too() {
        let long = "B".repeat(3000);
        let original = format!(
            "Subject: a\rX-Long: {long}\nX-Nul: \0\n--sluice-dsn-0000000000000007\n\nbody\r\n"
        );
        let d = hostile("smtp; 550 no".into(), original.as_bytes());
        assert_eq!(
            invariant_violation(&d),
            None,
            "{}",
            String::from_utf8_lossy(&d)
        );
        let s = std::str::from_utf8(&d).unwrap();
        // The quoted line cannot close the report: the boundary moved.
        assert!(
            s.contains("boundary=\"sluice-dsn-0000000000000007=_\""),
            "{s}"
        );
        assert!(s.ends_with("--sluice-dsn-0000000000000007=_--\r\n"));
        assert!(!s.contains("body"));
        assert!(s.contains("Subject: a\r\nX-Long: BBB"));
        // 8-bit original headers are quoted as they are and flagged.
        let d = hostile(
            "smtp; 550 no".into(),
            "Subject: caf\u{e9}\r\n\r\n".as_bytes(),
        );
        assert!(needs_8bitmime(&d));
    }

    proptest::proptest! {
        /// What the fuzz target checks, on every test run.
        #[test]
        fn any_reply_address_and_original_keep_the_invariants(
            reply in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
            addr in "\\PC{0,40}",
            original in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::prelude::Just(b'\r'),
                    proptest::prelude::Just(b'\n'),
                    proptest::prelude::Just(0u8),
                    proptest::prelude::Just(b'-'),
                    proptest::prelude::any::<u8>(),
                ],
                0..1200,
            ),
        ) {
            let d = render(&DsnInput {
                hostname: "mta.test",
                to: &addr,
                queue_id: 1,
                original: &original,
                date: "Sun, 22 Nov 2026 23:05:09 +0000",
                unique: 7,
                failed: vec![FailedRcpt {
                    address: &addr,
                    status: "5.1.1".into(),
                    remote_mta: Some(&addr),
                    diagnostic: String::from_utf8_lossy(&reply).into_owned(),
                }],
            });
            proptest::prop_assert_eq!(invariant_violation(&d), None);
        }
    }
}
