//! SMTP replies: the owned [`Reply`] type for replies that cross the API
//! (driver verdicts, refusal greetings) and the static wire bytes the session
//! uses for everything else.
//!
//! Almost every reply the session sends is a fixed string, so those are kept
//! as pre-rendered `&'static [u8]` constants and appended to the output with
//! one `extend_from_slice`: no formatting and no allocation per command. The
//! [`Reply`] type exists for the few replies whose text is chosen by the
//! driver; its writer renders multi-line replies and strips CR/LF from the
//! text so a driver-supplied message can never inject extra reply lines.

use std::borrow::Cow;

/// One SMTP reply: a three-digit code, an optional RFC 3463 enhanced status
/// code and human-readable text (which may span lines, separated by `\n`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    code: u16,
    enhanced: Option<(u8, u16, u16)>,
    text: Cow<'static, str>,
}

impl Reply {
    /// A reply with an arbitrary code, enhanced code and text.
    pub fn new(
        code: u16,
        enhanced: Option<(u8, u16, u16)>,
        text: impl Into<Cow<'static, str>>,
    ) -> Self {
        Reply {
            code,
            enhanced,
            text: text.into(),
        }
    }

    /// A reply with static text, usable in `const` items.
    pub const fn new_static(
        code: u16,
        enhanced: Option<(u8, u16, u16)>,
        text: &'static str,
    ) -> Self {
        Reply {
            code,
            enhanced,
            text: Cow::Borrowed(text),
        }
    }

    /// `421 4.3.2 Too many connections, try again later`: the greeting for
    /// [`ServerSession::new_refusing`](super::ServerSession::new_refusing)
    /// when the listener is over its connection limit.
    pub const fn too_busy() -> Self {
        Reply::new_static(
            421,
            Some((4, 3, 2)),
            "Too many connections, try again later",
        )
    }

    /// `554 5.7.1 Message rejected`: a generic permanent refusal of a message.
    pub const fn rejected() -> Self {
        Reply::new_static(554, Some((5, 7, 1)), "Message rejected")
    }

    /// `451 4.3.0 Temporary failure, try again later`: the verdict when the
    /// message could not be stored.
    pub const fn temporary_failure() -> Self {
        Reply::new_static(451, Some((4, 3, 0)), "Temporary failure, try again later")
    }

    /// The three-digit reply code.
    pub fn code(&self) -> u16 {
        self.code
    }

    /// The enhanced status code (class, subject, detail), if any.
    pub fn enhanced(&self) -> Option<(u8, u16, u16)> {
        self.enhanced
    }

    /// The reply text, lines separated by `\n`.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// True for 4xx and 5xx replies.
    pub fn is_error(&self) -> bool {
        self.code >= 400
    }

    /// Appends the reply in wire format. Each `\n`-separated line of the
    /// text becomes one reply line (`code-...` for all but the last, `code ...`
    /// for the last), each carrying the enhanced code as RFC 2034 asks. CR
    /// and other control characters in the text are dropped.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let mut code_buf = itoa::Buffer::new();
        // A reply code outside 100..=999 would not be three digits and would
        // desynchronise the client's parser; clamp rather than trust.
        let code = code_buf.format(self.code.clamp(100, 999)).as_bytes();
        let mut lines = self.text.split('\n').peekable();
        while let Some(line) = lines.next() {
            let last = lines.peek().is_none();
            out.extend_from_slice(code);
            out.push(if last { b' ' } else { b'-' });
            let line = line.as_bytes();
            if let Some((class, subject, detail)) = self.enhanced {
                let mut b = itoa::Buffer::new();
                out.extend_from_slice(b.format(class).as_bytes());
                out.push(b'.');
                out.extend_from_slice(b.format(subject).as_bytes());
                out.push(b'.');
                out.extend_from_slice(b.format(detail).as_bytes());
                if !line.is_empty() {
                    out.push(b' ');
                }
            }
            push_sanitized(out, line);
            if out.last() == Some(&b' ') && line.is_empty() {
                // "250 \r\n" is legal but a bare code reads better.
                out.pop();
            }
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// Appends `bytes`, dropping ASCII control characters (CR, LF, NUL, ...) so
/// configured or driver-supplied text cannot break the line structure of a
/// reply or header.
pub fn push_sanitized(out: &mut Vec<u8>, bytes: &[u8]) {
    if bytes.iter().all(|&b| b >= 0x20 && b != 0x7f) {
        out.extend_from_slice(bytes);
    } else {
        out.extend(bytes.iter().copied().filter(|&b| b >= 0x20 && b != 0x7f));
    }
}

/// Pre-rendered reply lines. Kept together so the wording of every reply is
/// reviewable in one place.
pub(crate) mod wire {
    /// MAIL accepted.
    pub const OK_MAIL: &[u8] = b"250 2.1.0 Ok\r\n";
    /// RCPT accepted.
    pub const OK_RCPT: &[u8] = b"250 2.1.5 Ok\r\n";
    /// RSET / NOOP.
    pub const OK: &[u8] = b"250 2.0.0 Ok\r\n";
    /// DATA accepted.
    pub const START_DATA: &[u8] = b"354 End data with <CR><LF>.<CR><LF>\r\n";
    /// HELP.
    pub const HELP: &[u8] =
        b"214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT HELP VRFY STARTTLS AUTH\r\n";
    /// VRFY (RFC 5321 3.5.3 wording).
    pub const VRFY: &[u8] =
        b"252 2.0.0 Cannot VRFY user, but will accept message and attempt delivery\r\n";
    /// QUIT.
    pub const BYE: &[u8] = b"221 2.0.0 Bye\r\n";
    /// STARTTLS accepted.
    pub const READY_TLS: &[u8] = b"220 2.0.0 Ready to start TLS\r\n";
    /// AUTH succeeded.
    pub const AUTH_OK: &[u8] = b"235 2.7.0 Authentication successful\r\n";
    /// AUTH failed.
    pub const AUTH_FAILED: &[u8] = b"535 5.7.8 Authentication credentials invalid\r\n";
    /// The credentials could not be checked now (hashing pool full).
    pub const AUTH_UNAVAILABLE: &[u8] = b"454 4.7.0 Temporary authentication failure\r\n";
    /// Client sent `*`.
    pub const AUTH_CANCELLED: &[u8] = b"501 5.0.0 Authentication cancelled\r\n";
    /// Undecodable SASL response.
    pub const AUTH_BAD_RESPONSE: &[u8] = b"501 5.5.2 Cannot decode response\r\n";
    /// Empty challenge for AUTH PLAIN.
    pub const AUTH_PLAIN_CHALLENGE: &[u8] = b"334 \r\n";
    /// AUTH LOGIN "Username:".
    pub const AUTH_LOGIN_USER: &[u8] = b"334 VXNlcm5hbWU6\r\n";
    /// AUTH LOGIN "Password:".
    pub const AUTH_LOGIN_PASS: &[u8] = b"334 UGFzc3dvcmQ6\r\n";
    /// AUTH on plaintext when that is not allowed (RFC 4954 6).
    pub const AUTH_NEEDS_TLS: &[u8] =
        b"538 5.7.11 Encryption required for requested authentication mechanism\r\n";
    /// AUTH not configured.
    pub const AUTH_NOT_ENABLED: &[u8] = b"503 5.5.1 Error: authentication not enabled\r\n";
    /// Second AUTH.
    pub const ALREADY_AUTH: &[u8] = b"503 5.5.1 Error: already authenticated\r\n";
    /// Command line ended in LF without CR.
    pub const BARE_LF: &[u8] = b"500 5.5.2 Bare LF not allowed\r\n";
    /// NUL or bare CR inside a command line.
    pub const BAD_CHAR: &[u8] = b"500 5.5.2 Invalid character in command\r\n";
    /// Command line longer than the limit.
    pub const LINE_TOO_LONG: &[u8] = b"500 5.5.2 Line too long\r\n";
    /// Unknown verb.
    pub const UNKNOWN_COMMAND: &[u8] = b"500 5.5.2 Error: command not recognized\r\n";
    /// Generic argument syntax error.
    pub const SYNTAX: &[u8] = b"501 5.5.4 Syntax error in parameters or arguments\r\n";
    /// Bad MAIL FROM path.
    pub const BAD_SENDER: &[u8] = b"501 5.1.7 Bad sender address syntax\r\n";
    /// Bad RCPT TO path.
    pub const BAD_RECIPIENT: &[u8] = b"501 5.1.3 Bad recipient address syntax\r\n";
    /// ESMTP parameter we do not implement.
    pub const UNKNOWN_PARAM: &[u8] =
        b"555 5.5.4 MAIL FROM/RCPT TO parameters not recognized or not implemented\r\n";
    /// AUTH mechanism we do not implement.
    pub const UNKNOWN_MECHANISM: &[u8] = b"504 5.5.4 Unrecognized authentication type\r\n";
    /// Command before HELO/EHLO.
    pub const NEED_HELO: &[u8] = b"503 5.5.1 Error: send HELO/EHLO first\r\n";
    /// ESMTP-only command after HELO.
    pub const NEED_EHLO: &[u8] = b"503 5.5.1 Error: send EHLO first\r\n";
    /// MAIL inside a transaction.
    pub const NESTED_MAIL: &[u8] = b"503 5.5.1 Error: nested MAIL command\r\n";
    /// RCPT/DATA/BDAT without MAIL.
    pub const NEED_MAIL: &[u8] = b"503 5.5.1 Error: need MAIL command\r\n";
    /// BDAT without recipients.
    pub const NEED_RCPT: &[u8] = b"503 5.5.1 Error: need RCPT command\r\n";
    /// DATA without recipients.
    pub const NO_VALID_RCPT: &[u8] = b"554 5.5.1 No valid recipients\r\n";
    /// DATA after BDAT in the same transaction (RFC 3030 2).
    pub const DATA_AFTER_BDAT: &[u8] = b"503 5.5.1 Error: DATA not allowed after BDAT\r\n";
    /// RCPT once BDAT has started.
    pub const RCPT_AFTER_BDAT: &[u8] = b"503 5.5.1 Error: RCPT not allowed after BDAT\r\n";
    /// STARTTLS twice.
    pub const TLS_ACTIVE: &[u8] = b"503 5.5.1 Error: TLS already active\r\n";
    /// STARTTLS/AUTH inside a transaction.
    pub const IN_TRANSACTION: &[u8] = b"503 5.5.1 Error: MAIL transaction in progress\r\n";
    /// STARTTLS without TLS configured.
    pub const NOT_IMPLEMENTED: &[u8] = b"502 5.5.1 Error: command not implemented\r\n";
    /// Admission::Busy.
    pub const BUSY: &[u8] = b"452 4.3.1 Insufficient system storage, try again later\r\n";
    /// SIZE= or data over the limit.
    pub const TOO_BIG: &[u8] = b"552 5.3.4 Message size exceeds fixed maximum message size\r\n";
    /// RCPT over max_recipients.
    pub const TOO_MANY_RCPT: &[u8] = b"452 4.5.3 Too many recipients\r\n";
    /// Non-ASCII address without SMTPUTF8.
    pub const NEED_SMTPUTF8: &[u8] = b"553 5.6.7 SMTPUTF8 required for non-ASCII address\r\n";
    /// Bare CR or LF inside message data.
    pub const MSG_BARE_NEWLINE: &[u8] = b"554 5.6.11 Bare LF/CR not allowed in message\r\n";
    /// NUL inside message data.
    pub const MSG_NUL: &[u8] = b"554 5.6.0 Message contains NUL characters\r\n";
    /// Undeclared 8-bit data.
    pub const MSG_8BIT: &[u8] = b"554 5.6.1 8-bit data requires BODY=8BITMIME\r\n";
    /// More Received fields than `max_hops`: probably a mail loop.
    pub const TOO_MANY_HOPS: &[u8] = b"554 5.4.6 Too many hops\r\n";
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(r: &Reply) -> String {
        let mut v = Vec::new();
        r.write_to(&mut v);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn single_line() {
        let r = Reply::new_static(250, Some((2, 0, 0)), "Ok");
        assert_eq!(render(&r), "250 2.0.0 Ok\r\n");
        assert_eq!(render(&Reply::new(220, None, "hi")), "220 hi\r\n");
        assert!(!r.is_error());
        assert!(Reply::too_busy().is_error());
    }

    #[test]
    fn multi_line_carries_enhanced_code_on_each_line() {
        let r = Reply::new(554, Some((5, 7, 1)), String::from("first\nsecond\nthird"));
        assert_eq!(
            render(&r),
            "554-5.7.1 first\r\n554-5.7.1 second\r\n554 5.7.1 third\r\n"
        );
    }

    #[test]
    fn injection_is_neutralised() {
        let r = Reply::new(550, Some((5, 0, 0)), "bad\r\n250 ok\rx\0y");
        assert_eq!(render(&r), "550-5.0.0 bad\r\n550 5.0.0 250 okxy\r\n");
    }

    #[test]
    fn empty_text_and_odd_codes() {
        assert_eq!(
            render(&Reply::new(250, Some((2, 0, 0)), "")),
            "250 2.0.0\r\n"
        );
        assert_eq!(render(&Reply::new(250, None, "")), "250\r\n");
        assert_eq!(render(&Reply::new(7, None, "x")), "100 x\r\n");
        assert_eq!(render(&Reply::new(12345, None, "x")), "999 x\r\n");
    }

    #[test]
    fn static_replies_are_well_formed() {
        use wire::*;
        for r in [
            OK_MAIL,
            OK_RCPT,
            OK,
            START_DATA,
            HELP,
            VRFY,
            BYE,
            READY_TLS,
            AUTH_OK,
            AUTH_FAILED,
            AUTH_UNAVAILABLE,
            AUTH_CANCELLED,
            AUTH_BAD_RESPONSE,
            AUTH_PLAIN_CHALLENGE,
            AUTH_LOGIN_USER,
            AUTH_LOGIN_PASS,
            AUTH_NEEDS_TLS,
            AUTH_NOT_ENABLED,
            ALREADY_AUTH,
            BARE_LF,
            BAD_CHAR,
            LINE_TOO_LONG,
            UNKNOWN_COMMAND,
            SYNTAX,
            BAD_SENDER,
            BAD_RECIPIENT,
            UNKNOWN_PARAM,
            UNKNOWN_MECHANISM,
            NEED_HELO,
            NEED_EHLO,
            NESTED_MAIL,
            NEED_MAIL,
            NEED_RCPT,
            NO_VALID_RCPT,
            DATA_AFTER_BDAT,
            RCPT_AFTER_BDAT,
            TLS_ACTIVE,
            IN_TRANSACTION,
            NOT_IMPLEMENTED,
            BUSY,
            TOO_BIG,
            TOO_MANY_RCPT,
            NEED_SMTPUTF8,
            MSG_BARE_NEWLINE,
            MSG_NUL,
            MSG_8BIT,
            TOO_MANY_HOPS,
        ] {
            assert!(r.ends_with(b"\r\n"));
            assert_eq!(r.iter().filter(|&&b| b == b'\n').count(), 1);
            assert!(r[..3].iter().all(u8::is_ascii_digit));
            assert_eq!(r[3], b' ');
        }
    }
}
