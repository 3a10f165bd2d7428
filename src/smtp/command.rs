//! Parser for one SMTP command line (RFC 5321 4.1, with the ESMTP
//! parameters and verbs of RFC 1652, 1870, 3030, 3207, 4954 and 6531).
//!
//! The parser is a pure function from a line (without its CRLF) to a
//! [`Command`] that borrows from that line: the session parses lines in place
//! in the driver's input buffer, and only the addresses it keeps are copied
//! out. It knows nothing about session state; sequencing, policy and the
//! SMTPUTF8 rule for RCPT belong to the session. Errors map one-to-one to
//! the reply the client should get ([`ParseError::reply_bytes`]).

use memchr::memchr;

use super::reply::wire;

/// RFC 5321 4.5.3.1.1.
const MAX_LOCAL_PART: usize = 64;
/// RFC 5321 4.5.3.1.2.
const MAX_DOMAIN: usize = 255;
/// RFC 5321 4.5.3.1.3, counting the angle brackets.
const MAX_PATH: usize = 256;

/// The `BODY=` parameter of MAIL (RFC 6152).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyType {
    /// `BODY=7BIT`.
    SevenBit,
    /// `BODY=8BITMIME`.
    EightBitMime,
}

/// The ESMTP parameters of a MAIL command that the server implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MailParams {
    /// `SIZE=n` (RFC 1870): the client's estimate of the message size.
    pub size: Option<u64>,
    /// `BODY=`, if given.
    pub body: Option<BodyType>,
    /// `SMTPUTF8` (RFC 6531) was given.
    pub smtputf8: bool,
    /// `AUTH=` (RFC 4954 5) was given. Its value is accepted and ignored:
    /// servers that advertise AUTH must accept the parameter, and a relay
    /// that authenticated the client itself has no use for the claim.
    pub auth: bool,
}

impl MailParams {
    /// True when no ESMTP parameter was given (as required after HELO).
    pub fn is_empty(&self) -> bool {
        *self == MailParams::default()
    }
}

/// SASL mechanisms the server implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMechanism {
    /// RFC 4616.
    Plain,
    /// The de-facto LOGIN mechanism (draft-murchison-sasl-login).
    Login,
}

/// One parsed command. Borrowed fields point into the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command<'a> {
    /// `EHLO domain`.
    Ehlo {
        /// The client's claimed name or address literal.
        domain: &'a str,
    },
    /// `HELO domain`.
    Helo {
        /// The client's claimed name or address literal.
        domain: &'a str,
    },
    /// `MAIL FROM:<reverse-path> [params]`.
    Mail {
        /// The mailbox, without angle brackets or source route; `""` for `<>`.
        reverse_path: &'a str,
        /// Recognised ESMTP parameters.
        params: MailParams,
    },
    /// `RCPT TO:<forward-path>`.
    Rcpt {
        /// The mailbox, without angle brackets or source route.
        forward_path: &'a str,
    },
    /// `DATA`.
    Data,
    /// `BDAT size [LAST]` (RFC 3030).
    Bdat {
        /// Octets that follow the command line.
        size: u64,
        /// This is the final chunk.
        last: bool,
    },
    /// `RSET`.
    Rset,
    /// `NOOP [string]`.
    Noop,
    /// `QUIT`.
    Quit,
    /// `HELP [string]`.
    Help,
    /// `VRFY string`.
    Vrfy,
    /// `STARTTLS` (RFC 3207).
    StartTls,
    /// `AUTH mechanism [initial-response]` (RFC 4954).
    Auth {
        /// The requested mechanism.
        mechanism: AuthMechanism,
        /// The base64 initial response, still encoded (`=` means empty).
        initial_response: Option<&'a [u8]>,
    },
}

/// Why a command line was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// Unknown verb: 500 5.5.2.
    UnknownCommand,
    /// Malformed arguments: 501 5.5.4.
    Syntax,
    /// Malformed MAIL FROM path: 501 5.1.7.
    BadSender,
    /// Malformed RCPT TO path: 501 5.1.3.
    BadRecipient,
    /// ESMTP parameter we do not implement: 555 5.5.4.
    UnknownParameter,
    /// SASL mechanism we do not implement: 504 5.5.4.
    UnknownMechanism,
}

impl ParseError {
    /// The complete reply line (with CRLF) for this error.
    pub fn reply_bytes(self) -> &'static [u8] {
        match self {
            ParseError::UnknownCommand => wire::UNKNOWN_COMMAND,
            ParseError::Syntax => wire::SYNTAX,
            ParseError::BadSender => wire::BAD_SENDER,
            ParseError::BadRecipient => wire::BAD_RECIPIENT,
            ParseError::UnknownParameter => wire::UNKNOWN_PARAM,
            ParseError::UnknownMechanism => wire::UNKNOWN_MECHANISM,
        }
    }
}

#[derive(Clone, Copy)]
enum Verb {
    Ehlo,
    Helo,
    Mail,
    Rcpt,
    Data,
    Bdat,
    Rset,
    Noop,
    Quit,
    Help,
    Vrfy,
    StartTls,
    Auth,
}

fn verb(word: &[u8]) -> Option<Verb> {
    if let Ok(w) = <[u8; 4]>::try_from(word) {
        let w = w.map(|b| b.to_ascii_uppercase());
        return Some(match &w {
            b"EHLO" => Verb::Ehlo,
            b"HELO" => Verb::Helo,
            b"MAIL" => Verb::Mail,
            b"RCPT" => Verb::Rcpt,
            b"DATA" => Verb::Data,
            b"BDAT" => Verb::Bdat,
            b"RSET" => Verb::Rset,
            b"NOOP" => Verb::Noop,
            b"QUIT" => Verb::Quit,
            b"HELP" => Verb::Help,
            b"VRFY" => Verb::Vrfy,
            b"AUTH" => Verb::Auth,
            _ => return None,
        });
    }
    if word.eq_ignore_ascii_case(b"STARTTLS") {
        return Some(Verb::StartTls);
    }
    None
}

fn trim_end(mut s: &[u8]) -> &[u8] {
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

fn trim_start_spaces(mut s: &[u8]) -> &[u8] {
    while let [b' ', rest @ ..] = s {
        s = rest;
    }
    s
}

/// Space-separated tokens; runs of spaces count as one separator.
fn tokens(s: &[u8]) -> impl Iterator<Item = &[u8]> {
    s.split(|&b| b == b' ').filter(|t| !t.is_empty())
}

/// Parses one command line. `line` must not include the line terminator;
/// trailing spaces and tabs are ignored.
pub fn parse_command(line: &[u8]) -> Result<Command<'_>, ParseError> {
    let line = trim_end(line);
    let (word, args) = match memchr(b' ', line) {
        Some(i) => (line.get(..i).unwrap_or_default(), line.get(i + 1..)),
        None => (line, None),
    };
    let verb = verb(word).ok_or(ParseError::UnknownCommand)?;
    // "DATA " was trimmed above, so any args here are real arguments.
    let args = args.map(trim_start_spaces).filter(|a| !a.is_empty());
    match verb {
        Verb::Ehlo => Ok(Command::Ehlo {
            domain: parse_helo_domain(args)?,
        }),
        Verb::Helo => Ok(Command::Helo {
            domain: parse_helo_domain(args)?,
        }),
        Verb::Mail => parse_mail(args.ok_or(ParseError::Syntax)?),
        Verb::Rcpt => parse_rcpt(args.ok_or(ParseError::Syntax)?),
        Verb::Bdat => parse_bdat(args.ok_or(ParseError::Syntax)?),
        Verb::Auth => parse_auth(args.ok_or(ParseError::Syntax)?),
        Verb::Vrfy => args.map(|_| Command::Vrfy).ok_or(ParseError::Syntax),
        Verb::Noop => Ok(Command::Noop),
        Verb::Help => Ok(Command::Help),
        Verb::Data | Verb::Rset | Verb::Quit | Verb::StartTls => {
            if args.is_some() {
                return Err(ParseError::Syntax);
            }
            Ok(match verb {
                Verb::Data => Command::Data,
                Verb::Rset => Command::Rset,
                Verb::Quit => Command::Quit,
                _ => Command::StartTls,
            })
        }
    }
}

/// The first argument of HELO/EHLO. It ends up in our Received header, so
/// only printable ASCII is accepted; anything after it is ignored because
/// some clients append junk and refusing them gains nothing.
fn parse_helo_domain(args: Option<&[u8]>) -> Result<&str, ParseError> {
    let domain = args
        .and_then(|a| tokens(a).next())
        .ok_or(ParseError::Syntax)?;
    if domain.len() > MAX_DOMAIN || !domain.iter().all(|&b| (0x21..0x7f).contains(&b)) {
        return Err(ParseError::Syntax);
    }
    std::str::from_utf8(domain).map_err(|_| ParseError::Syntax)
}

/// Strips a case-insensitive `FROM:`/`TO:` prefix and the optional spaces
/// after the colon (some clients write `MAIL FROM: <a@b>`).
fn strip_keyword<'a>(args: &'a [u8], keyword: &[u8]) -> Option<&'a [u8]> {
    let head = args.get(..keyword.len())?;
    if !head.eq_ignore_ascii_case(keyword) {
        return None;
    }
    args.get(keyword.len()..).map(trim_start_spaces)
}

fn parse_mail(args: &[u8]) -> Result<Command<'_>, ParseError> {
    let rest = strip_keyword(args, b"FROM:").ok_or(ParseError::Syntax)?;
    let (reverse_path, rest) = parse_path(rest, true).ok_or(ParseError::BadSender)?;
    let mut params = MailParams::default();
    for param in param_tokens(rest)? {
        let (key, value) = split_param(param)?;
        if key.eq_ignore_ascii_case(b"SIZE") {
            let v = value.ok_or(ParseError::Syntax)?;
            if params.size.is_some() {
                return Err(ParseError::Syntax);
            }
            params.size = Some(parse_decimal(v).ok_or(ParseError::Syntax)?);
        } else if key.eq_ignore_ascii_case(b"BODY") {
            let v = value.ok_or(ParseError::Syntax)?;
            if params.body.is_some() {
                return Err(ParseError::Syntax);
            }
            params.body = Some(if v.eq_ignore_ascii_case(b"7BIT") {
                BodyType::SevenBit
            } else if v.eq_ignore_ascii_case(b"8BITMIME") {
                BodyType::EightBitMime
            } else if v.eq_ignore_ascii_case(b"BINARYMIME") {
                // Real RFC 3030 body type, just not one we advertise.
                return Err(ParseError::UnknownParameter);
            } else {
                return Err(ParseError::Syntax);
            });
        } else if key.eq_ignore_ascii_case(b"SMTPUTF8") {
            if value.is_some() || params.smtputf8 {
                return Err(ParseError::Syntax);
            }
            params.smtputf8 = true;
        } else if key.eq_ignore_ascii_case(b"AUTH") {
            if value.is_none() || params.auth {
                return Err(ParseError::Syntax);
            }
            params.auth = true;
        } else {
            return Err(ParseError::UnknownParameter);
        }
    }
    Ok(Command::Mail {
        reverse_path,
        params,
    })
}

fn parse_rcpt(args: &[u8]) -> Result<Command<'_>, ParseError> {
    let rest = strip_keyword(args, b"TO:").ok_or(ParseError::Syntax)?;
    let (forward_path, rest) = parse_path(rest, false).ok_or(ParseError::BadRecipient)?;
    // We advertise no RCPT extension (no DSN), so any parameter is unknown;
    // a malformed one is still a syntax error.
    if let Some(param) = param_tokens(rest)?.next() {
        split_param(param)?;
        return Err(ParseError::UnknownParameter);
    }
    Ok(Command::Rcpt { forward_path })
}

/// The parameters after `>`: nothing, or a space and then tokens.
fn param_tokens(rest: &[u8]) -> Result<impl Iterator<Item = &[u8]>, ParseError> {
    match rest.first() {
        None | Some(b' ') => Ok(tokens(rest)),
        Some(_) => Err(ParseError::Syntax),
    }
}

/// `esmtp-keyword ["=" esmtp-value]` (RFC 5321 4.1.2).
fn split_param(param: &[u8]) -> Result<(&[u8], Option<&[u8]>), ParseError> {
    let (key, value) = match memchr(b'=', param) {
        Some(i) => (param.get(..i).unwrap_or_default(), param.get(i + 1..)),
        None => (param, None),
    };
    let key_ok = key.first().is_some_and(u8::is_ascii_alphanumeric)
        && key.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'-');
    let value_ok = value.map_or(true, |v| {
        !v.is_empty() && v.iter().all(|&b| (33..=126).contains(&b) && b != b'=')
    });
    if key_ok && value_ok {
        Ok((key, value))
    } else {
        Err(ParseError::Syntax)
    }
}

/// 1 to 20 ASCII digits that fit in a u64.
fn parse_decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    s.iter().try_fold(0u64, |acc, &b| {
        if b.is_ascii_digit() {
            acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

fn parse_bdat(args: &[u8]) -> Result<Command<'_>, ParseError> {
    let mut it = tokens(args);
    let size = it
        .next()
        .and_then(parse_decimal)
        .ok_or(ParseError::Syntax)?;
    let last = match it.next() {
        None => false,
        Some(t) if t.eq_ignore_ascii_case(b"LAST") => true,
        Some(_) => return Err(ParseError::Syntax),
    };
    if it.next().is_some() {
        return Err(ParseError::Syntax);
    }
    Ok(Command::Bdat { size, last })
}

fn parse_auth(args: &[u8]) -> Result<Command<'_>, ParseError> {
    let mut it = tokens(args);
    let mech = it.next().ok_or(ParseError::Syntax)?;
    let mechanism = if mech.eq_ignore_ascii_case(b"PLAIN") {
        AuthMechanism::Plain
    } else if mech.eq_ignore_ascii_case(b"LOGIN") {
        AuthMechanism::Login
    } else if mech
        .iter()
        .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(ParseError::UnknownMechanism);
    } else {
        return Err(ParseError::Syntax);
    };
    let initial_response = it.next();
    if it.next().is_some() {
        return Err(ParseError::Syntax);
    }
    Ok(Command::Auth {
        mechanism,
        initial_response,
    })
}

/// `atext` of RFC 5322 plus `.`, and any non-ASCII byte (SMTPUTF8 local
/// parts; whether they are allowed is the session's call). Dots are not
/// checked for position: `first..last@` exists in the wild and is harmless.
fn is_dot_string_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b".!#$%&'*+-/=?^_`{|}~".contains(&b) || b >= 0x80
}

/// Letters, digits, hyphen, underscore (seen in real host names) and
/// non-ASCII (U-labels).
fn is_domain_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b >= 0x80
}

/// Parses `<[route:]mailbox>` (or `<>` when `allow_null`) at the start of
/// `s`. Returns the mailbox and what follows the closing bracket.
fn parse_path(s: &[u8], allow_null: bool) -> Option<(&str, &[u8])> {
    let inner = s.strip_prefix(b"<")?;
    if let Some(rest) = inner.strip_prefix(b">") {
        return allow_null.then_some(("", rest));
    }
    let mailbox_start = skip_source_route(inner)?;
    let mailbox = inner.get(mailbox_start..)?;
    let local_len = local_part_len(mailbox)?;
    if local_len > MAX_LOCAL_PART {
        return None;
    }
    let after_at = mailbox.get(local_len..)?.strip_prefix(b"@")?;
    let domain_len = domain_len(after_at)?;
    if domain_len == 0 || domain_len > MAX_DOMAIN {
        return None;
    }
    let mailbox_len = local_len + 1 + domain_len;
    let rest = mailbox.get(mailbox_len..)?.strip_prefix(b">")?;
    // '<' + route + mailbox + '>'
    if mailbox_start + mailbox_len + 2 > MAX_PATH {
        return None;
    }
    let mailbox = std::str::from_utf8(mailbox.get(..mailbox_len)?).ok()?;
    Some((mailbox, rest))
}

/// RFC 5321 A-d-l (`@a,@b:`), obsolete but still to be accepted and ignored
/// (4.1.1.3, appendix C). Returns the offset of the mailbox.
fn skip_source_route(inner: &[u8]) -> Option<usize> {
    if inner.first() != Some(&b'@') {
        return Some(0);
    }
    let mut expect_at = true;
    let mut in_literal = false;
    for (i, &b) in inner.iter().enumerate() {
        if expect_at {
            if b != b'@' {
                return None;
            }
            expect_at = false;
            continue;
        }
        match b {
            b'[' if !in_literal => in_literal = true,
            b']' if in_literal => in_literal = false,
            b':' if !in_literal => return Some(i + 1),
            b',' if !in_literal => expect_at = true,
            _ if in_literal && (33..=126).contains(&b) => {}
            b'.' => {}
            _ if is_domain_byte(b) => {}
            _ => return None,
        }
    }
    None
}

/// Length of a dot-string or quoted-string local part at the start of `s`.
fn local_part_len(s: &[u8]) -> Option<usize> {
    if s.first() == Some(&b'"') {
        let mut escaped = false;
        for (i, &b) in s.iter().enumerate().skip(1) {
            if b < 0x20 || b == 0x7f {
                return None;
            }
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                return Some(i + 1);
            }
        }
        return None;
    }
    let len = s.iter().take_while(|&&b| is_dot_string_byte(b)).count();
    (len > 0).then_some(len)
}

/// Length of a domain or address literal at the start of `s`; 0 if none.
fn domain_len(s: &[u8]) -> Option<usize> {
    if s.first() == Some(&b'[') {
        let body = s.get(1..)?;
        let len = body
            .iter()
            .take_while(|&&b| (33..=126).contains(&b) && b != b'[' && b != b']' && b != b'\\')
            .count();
        if len == 0 || body.get(len) != Some(&b']') {
            return None;
        }
        return Some(len + 2);
    }
    let len = s
        .iter()
        .take_while(|&&b| is_domain_byte(b) || b == b'.')
        .count();
    let domain = s.get(..len)?;
    // No empty labels: ".a", "a..b", "a." would all be undeliverable.
    if domain.split(|&b| b == b'.').any(<[u8]>::is_empty) {
        return None;
    }
    Some(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(s: &str) -> Result<Command<'_>, ParseError> {
        parse_command(s.as_bytes())
    }

    fn mail(s: &str) -> (String, MailParams) {
        match p(s).unwrap() {
            Command::Mail {
                reverse_path,
                params,
            } => (reverse_path.to_owned(), params),
            c => panic!("not MAIL: {c:?}"),
        }
    }

    fn rcpt(s: &str) -> Result<String, ParseError> {
        match p(s)? {
            Command::Rcpt { forward_path } => Ok(forward_path.to_owned()),
            c => panic!("not RCPT: {c:?}"),
        }
    }

    #[test]
    fn verbs_are_case_insensitive() {
        assert_eq!(
            p("ehlo x.example"),
            Ok(Command::Ehlo {
                domain: "x.example"
            })
        );
        assert_eq!(p("HeLo x"), Ok(Command::Helo { domain: "x" }));
        assert_eq!(p("data"), Ok(Command::Data));
        assert_eq!(p("RsEt"), Ok(Command::Rset));
        assert_eq!(p("quit"), Ok(Command::Quit));
        assert_eq!(p("StartTLS"), Ok(Command::StartTls));
        assert_eq!(p("NOOP"), Ok(Command::Noop));
        assert_eq!(p("NOOP whatever you like"), Ok(Command::Noop));
        assert_eq!(p("HELP"), Ok(Command::Help));
        assert_eq!(p("HELP mail"), Ok(Command::Help));
        assert_eq!(p("VRFY bob"), Ok(Command::Vrfy));
    }

    #[test]
    fn unknown_and_malformed_verbs() {
        assert_eq!(p(""), Err(ParseError::UnknownCommand));
        assert_eq!(p(" DATA"), Err(ParseError::UnknownCommand));
        assert_eq!(p("DAT"), Err(ParseError::UnknownCommand));
        assert_eq!(p("DATAX"), Err(ParseError::UnknownCommand));
        assert_eq!(p("TURN"), Err(ParseError::UnknownCommand));
        assert_eq!(p("MAIL"), Err(ParseError::Syntax));
        assert_eq!(p("DATA x"), Err(ParseError::Syntax));
        assert_eq!(p("QUIT now"), Err(ParseError::Syntax));
        assert_eq!(p("RSET x"), Err(ParseError::Syntax));
        assert_eq!(p("STARTTLS x"), Err(ParseError::Syntax));
        assert_eq!(p("VRFY"), Err(ParseError::Syntax));
        assert_eq!(p("EHLO"), Err(ParseError::Syntax));
        assert_eq!(p("EHLO "), Err(ParseError::Syntax));
        assert_eq!(p("EHLO b\u{e4}d"), Err(ParseError::Syntax));
    }

    #[test]
    fn trailing_whitespace_is_ignored() {
        assert_eq!(p("DATA  \t"), Ok(Command::Data));
        assert_eq!(p("EHLO a.b  "), Ok(Command::Ehlo { domain: "a.b" }));
        assert_eq!(p("EHLO a.b junk"), Ok(Command::Ehlo { domain: "a.b" }));
        assert_eq!(
            p("EHLO [192.0.2.1]"),
            Ok(Command::Ehlo {
                domain: "[192.0.2.1]"
            })
        );
    }

    #[test]
    fn mail_paths() {
        assert_eq!(mail("MAIL FROM:<a@b.example>").0, "a@b.example");
        assert_eq!(mail("mail from:<a@b>").0, "a@b");
        assert_eq!(mail("MAIL FROM: <a@b>").0, "a@b");
        assert_eq!(mail("MAIL FROM:<>").0, "");
        assert_eq!(mail("MAIL FROM:<>").1, MailParams::default());
        assert_eq!(mail("MAIL FROM:<\"john doe\"@b>").0, "\"john doe\"@b");
        assert_eq!(mail("MAIL FROM:<\"a\\\"b>c\"@d>").0, "\"a\\\"b>c\"@d");
        assert_eq!(mail("MAIL FROM:<@r1.example,@r2.example:u@d>").0, "u@d");
        assert_eq!(mail("MAIL FROM:<@[192.0.2.1]:u@d>").0, "u@d");
        assert_eq!(
            mail("MAIL FROM:<u@[IPv6:2001:db8::1]>").0,
            "u@[IPv6:2001:db8::1]"
        );
        assert_eq!(
            mail("MAIL FROM:<j\u{f6}rg@b\u{fc}cher.example>").0,
            "j\u{f6}rg@b\u{fc}cher.example"
        );
        for bad in [
            "MAIL FROM:a@b",
            "MAIL FROM:<a@b",
            "MAIL FROM:<a>",
            "MAIL FROM:<@b>",
            "MAIL FROM:<a@>",
            "MAIL FROM:<a@b..c>",
            "MAIL FROM:<a@.b>",
            "MAIL FROM:<a@b.>",
            "MAIL FROM:<a b@c>",
            "MAIL FROM:<a@b c>",
            "MAIL FROM:<\"unterminated@b>",
            "MAIL FROM:<a@[]>",
            "MAIL FROM:<a@b@c>",
            "MAIL FROM:<@r:>",
            "MAIL FROM:<@r,x:a@b>",
            "MAIL FROM:",
            "MAIL FROM:<a@b\u{0}>",
        ] {
            assert_eq!(p(bad), Err(ParseError::BadSender), "{bad}");
        }
        assert_eq!(p("MAIL FROM<a@b>"), Err(ParseError::Syntax));
        assert_eq!(p("MAIL TO:<a@b>"), Err(ParseError::Syntax));
        assert_eq!(p("MAIL FROM:<a@b>x"), Err(ParseError::Syntax));
        // Invalid UTF-8 in the mailbox.
        assert_eq!(
            parse_command(b"MAIL FROM:<\xff@b>"),
            Err(ParseError::BadSender)
        );
    }

    #[test]
    fn length_limits() {
        let local = "a".repeat(64);
        assert!(p(&format!("MAIL FROM:<{local}@b>")).is_ok());
        let local = "a".repeat(65);
        assert_eq!(
            p(&format!("MAIL FROM:<{local}@b>")),
            Err(ParseError::BadSender)
        );
        // 250-octet domain + 'a@' + brackets = 254 octets.
        let domain = vec!["a".repeat(49); 5].join(".");
        assert_eq!(domain.len(), 249);
        assert!(rcpt(&format!("RCPT TO:<ab@{domain}>")).is_ok());
        assert!(rcpt(&format!("RCPT TO:<abcd@{domain}>")).is_ok());
        assert_eq!(
            rcpt(&format!("RCPT TO:<abcde@{domain}>")),
            Err(ParseError::BadRecipient)
        );
        let domain = "a".repeat(256);
        assert_eq!(
            rcpt(&format!("RCPT TO:<a@{domain}>")),
            Err(ParseError::BadRecipient)
        );
    }

    #[test]
    fn mail_params() {
        let (_, params) = mail("MAIL FROM:<a@b> SIZE=1000 BODY=8BITMIME SMTPUTF8 AUTH=<>");
        assert_eq!(
            params,
            MailParams {
                size: Some(1000),
                body: Some(BodyType::EightBitMime),
                smtputf8: true,
                auth: true
            }
        );
        assert_eq!(
            mail("MAIL FROM:<a@b>  body=7bit  ").1.body,
            Some(BodyType::SevenBit)
        );
        assert_eq!(mail("MAIL FROM:<a@b> size=0").1.size, Some(0));
        assert_eq!(
            mail("MAIL FROM:<a@b> SIZE=18446744073709551615").1.size,
            Some(u64::MAX)
        );
        for (line, err) in [
            (
                "MAIL FROM:<a@b> SIZE=18446744073709551616",
                ParseError::Syntax,
            ),
            ("MAIL FROM:<a@b> SIZE=", ParseError::Syntax),
            ("MAIL FROM:<a@b> SIZE", ParseError::Syntax),
            ("MAIL FROM:<a@b> SIZE=12x", ParseError::Syntax),
            ("MAIL FROM:<a@b> SIZE=1 SIZE=2", ParseError::Syntax),
            ("MAIL FROM:<a@b> BODY=9BIT", ParseError::Syntax),
            (
                "MAIL FROM:<a@b> BODY=BINARYMIME",
                ParseError::UnknownParameter,
            ),
            ("MAIL FROM:<a@b> SMTPUTF8=yes", ParseError::Syntax),
            ("MAIL FROM:<a@b> RET=HDRS", ParseError::UnknownParameter),
            ("MAIL FROM:<a@b> =x", ParseError::Syntax),
            ("MAIL FROM:<a@b> X=a=b", ParseError::Syntax),
        ] {
            assert_eq!(p(line), Err(err), "{line}");
        }
    }

    #[test]
    fn rcpt_paths() {
        assert_eq!(rcpt("RCPT TO:<u@d.example>"), Ok("u@d.example".into()));
        assert_eq!(rcpt("rcpt to: <u@d>"), Ok("u@d".into()));
        assert_eq!(rcpt("RCPT TO:<@a,@b:u@d>"), Ok("u@d".into()));
        assert_eq!(rcpt("RCPT TO:<>"), Err(ParseError::BadRecipient));
        assert_eq!(rcpt("RCPT TO:<postmaster>"), Err(ParseError::BadRecipient));
        assert_eq!(rcpt("RCPT TO:u@d"), Err(ParseError::BadRecipient));
        assert_eq!(
            rcpt("RCPT TO:<u@d> NOTIFY=NEVER"),
            Err(ParseError::UnknownParameter)
        );
        assert_eq!(rcpt("RCPT TO:<u@d> =x"), Err(ParseError::Syntax));
        assert_eq!(rcpt("RCPT FROM:<u@d>"), Err(ParseError::Syntax));
    }

    #[test]
    fn bdat_and_auth() {
        assert_eq!(
            p("BDAT 0 LAST"),
            Ok(Command::Bdat {
                size: 0,
                last: true
            })
        );
        assert_eq!(
            p("bdat 1000"),
            Ok(Command::Bdat {
                size: 1000,
                last: false
            })
        );
        assert_eq!(
            p("BDAT 5 last"),
            Ok(Command::Bdat {
                size: 5,
                last: true
            })
        );
        assert_eq!(p("BDAT"), Err(ParseError::Syntax));
        assert_eq!(p("BDAT -1"), Err(ParseError::Syntax));
        assert_eq!(p("BDAT 1 FIRST"), Err(ParseError::Syntax));
        assert_eq!(p("BDAT 1 LAST x"), Err(ParseError::Syntax));
        assert_eq!(
            p("AUTH PLAIN"),
            Ok(Command::Auth {
                mechanism: AuthMechanism::Plain,
                initial_response: None
            })
        );
        assert_eq!(
            p("auth login dXNlcg=="),
            Ok(Command::Auth {
                mechanism: AuthMechanism::Login,
                initial_response: Some(b"dXNlcg==")
            })
        );
        assert_eq!(p("AUTH CRAM-MD5"), Err(ParseError::UnknownMechanism));
        assert_eq!(p("AUTH"), Err(ParseError::Syntax));
        assert_eq!(p("AUTH PLAIN a b"), Err(ParseError::Syntax));
        assert_eq!(p("AUTH PL:AIN"), Err(ParseError::Syntax));
    }

    #[test]
    fn error_replies() {
        assert!(ParseError::UnknownCommand
            .reply_bytes()
            .starts_with(b"500 5.5.2 "));
        assert!(ParseError::Syntax.reply_bytes().starts_with(b"501 5.5.4 "));
        assert!(ParseError::BadSender
            .reply_bytes()
            .starts_with(b"501 5.1.7 "));
        assert!(ParseError::BadRecipient
            .reply_bytes()
            .starts_with(b"501 5.1.3 "));
        assert!(ParseError::UnknownParameter
            .reply_bytes()
            .starts_with(b"555 5.5.4 "));
        assert!(ParseError::UnknownMechanism
            .reply_bytes()
            .starts_with(b"504 5.5.4 "));
    }

    // ---- property tests -------------------------------------------------

    fn local_part() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-zA-Z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}",
            "\"[a-zA-Z0-9 @<>:,.]{0,30}\"",
            "[a-z\u{e0}-\u{ff}]{1,16}",
        ]
    }

    fn domain() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::collection::vec("[a-zA-Z0-9_-]{1,20}", 1..5).prop_map(|l| l.join(".")),
            "\\[[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}\\]",
            "[a-z\u{e0}-\u{ff}]{1,10}\\.example",
        ]
    }

    fn mailbox() -> impl Strategy<Value = String> {
        (local_part(), domain()).prop_map(|(l, d)| format!("{l}@{d}"))
    }

    fn verb_case(v: &'static str) -> impl Strategy<Value = String> {
        prop::collection::vec(any::<bool>(), v.len()).prop_map(move |up| {
            v.chars()
                .zip(up)
                .map(|(c, u)| {
                    if u {
                        c.to_ascii_uppercase()
                    } else {
                        c.to_ascii_lowercase()
                    }
                })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(line in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse_command(&line);
        }

        #[test]
        fn random_prefixed_lines_never_panic(
            verb in prop::sample::select(vec!["MAIL FROM:", "RCPT TO:", "EHLO ", "BDAT ", "AUTH ", "MAIL FROM:<", "RCPT TO:<@"]),
            tail in prop::collection::vec(any::<u8>(), 0..300),
        ) {
            let mut line = verb.as_bytes().to_vec();
            line.extend_from_slice(&tail);
            let _ = parse_command(&line);
        }

        #[test]
        fn mail_round_trips(
            v in verb_case("mail"),
            space in any::<bool>(),
            null in any::<bool>(),
            mbox in mailbox(),
            size in proptest::option::of(any::<u64>()),
            body in proptest::option::of(prop::bool::ANY.prop_map(|b| if b { BodyType::EightBitMime } else { BodyType::SevenBit })),
            smtputf8 in any::<bool>(),
        ) {
            let mbox = if null { String::new() } else { mbox };
            let mut line = format!("{v} FROM:{}<{mbox}>", if space { " " } else { "" });
            if let Some(s) = size { line.push_str(&format!(" SIZE={s}")); }
            match body {
                Some(BodyType::EightBitMime) => line.push_str(" BODY=8BITMIME"),
                Some(BodyType::SevenBit) => line.push_str(" BODY=7BIT"),
                None => {}
            }
            if smtputf8 { line.push_str(" SMTPUTF8"); }
            prop_assert_eq!(
                parse_command(line.as_bytes()),
                Ok(Command::Mail {
                    reverse_path: &mbox,
                    params: MailParams { size, body, smtputf8, auth: false },
                })
            );
        }

        #[test]
        fn rcpt_round_trips(v in verb_case("rcpt"), mbox in mailbox(), route in any::<bool>()) {
            let route = if route { "@relay.example,@[192.0.2.1]:" } else { "" };
            let line = format!("{v} TO:<{route}{mbox}>");
            prop_assert_eq!(
                parse_command(line.as_bytes()),
                Ok(Command::Rcpt { forward_path: &mbox })
            );
        }

        #[test]
        fn helo_bdat_auth_round_trip(
            domain in "[!-~]{1,60}",
            size in any::<u64>(),
            last in any::<bool>(),
            resp in proptest::option::of("[A-Za-z0-9+/]{1,40}={0,2}"),
            ehlo in verb_case("ehlo"),
            bdat in verb_case("bdat"),
        ) {
            let line = format!("{ehlo} {domain}");
            prop_assert_eq!(parse_command(line.as_bytes()), Ok(Command::Ehlo { domain: &domain }));
            let line = format!("{bdat} {size}{}", if last { " LAST" } else { "" });
            prop_assert_eq!(parse_command(line.as_bytes()), Ok(Command::Bdat { size, last }));
            let line = match &resp {
                Some(r) => format!("AUTH login {r}"),
                None => "AUTH login".to_string(),
            };
            prop_assert_eq!(
                parse_command(line.as_bytes()),
                Ok(Command::Auth {
                    mechanism: AuthMechanism::Login,
                    initial_response: resp.as_deref().map(str::as_bytes),
                })
            );
        }
    }
}
