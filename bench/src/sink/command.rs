//! Server-side command-line parsing. Works on borrowed slices of the read
//! buffer, so recognising a command costs no allocation.

/// SMTP verbs the sink understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verb {
    Helo,
    Ehlo,
    Mail,
    Rcpt,
    Data,
    Bdat,
    Rset,
    Noop,
    Quit,
    StartTls,
    Auth,
    Vrfy,
    Help,
    Unknown,
}

/// Splits a command line (without CRLF) into verb and argument text.
pub(crate) fn parse_verb(line: &[u8]) -> (Verb, &[u8]) {
    let end = line.iter().position(|&b| b == b' ').unwrap_or(line.len());
    let (word, rest) = line.split_at(end);
    let args = rest.strip_prefix(b" ").unwrap_or(rest);
    let eq = |w: &[u8]| word.eq_ignore_ascii_case(w);
    let verb = if eq(b"MAIL") {
        Verb::Mail
    } else if eq(b"RCPT") {
        Verb::Rcpt
    } else if eq(b"BDAT") {
        Verb::Bdat
    } else if eq(b"DATA") {
        Verb::Data
    } else if eq(b"EHLO") {
        Verb::Ehlo
    } else if eq(b"HELO") {
        Verb::Helo
    } else if eq(b"RSET") {
        Verb::Rset
    } else if eq(b"NOOP") {
        Verb::Noop
    } else if eq(b"QUIT") {
        Verb::Quit
    } else if eq(b"STARTTLS") {
        Verb::StartTls
    } else if eq(b"AUTH") {
        Verb::Auth
    } else if eq(b"VRFY") {
        Verb::Vrfy
    } else if eq(b"HELP") {
        Verb::Help
    } else {
        Verb::Unknown
    };
    (verb, args)
}

/// Extracts the address from `FROM:<addr> params` / `TO:<addr> params`.
/// Returns the address (possibly empty, for the null sender) and the params.
pub(crate) fn parse_path<'a>(args: &'a [u8], keyword: &[u8]) -> Option<(&'a [u8], &'a [u8])> {
    let head = args.get(..keyword.len())?;
    if !head.eq_ignore_ascii_case(keyword) {
        return None;
    }
    let rest = args.get(keyword.len()..)?;
    let rest = trim_start(rest);
    let inner = rest.strip_prefix(b"<")?;
    let close = inner.iter().position(|&b| b == b'>')?;
    let addr = inner.get(..close)?;
    let params = trim_start(inner.get(close + 1..)?);
    Some((addr, params))
}

fn trim_start(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|&&b| b == b' ').count();
    s.get(n..).unwrap_or_default()
}

/// Value of the `SIZE=` ESMTP parameter, if present and numeric.
pub(crate) fn size_param(params: &[u8]) -> Option<u64> {
    params
        .split(|&b| b == b' ')
        .find_map(|p| {
            p.get(..5)
                .filter(|k| k.eq_ignore_ascii_case(b"SIZE="))
                .and(p.get(5..))
        })
        .and_then(parse_u64)
}

/// Parses `BDAT <size> [LAST]`.
pub(crate) fn parse_bdat(args: &[u8]) -> Option<(u64, bool)> {
    let mut words = args.split(|&b| b == b' ').filter(|w| !w.is_empty());
    let size = parse_u64(words.next()?)?;
    let last = match words.next() {
        None => false,
        Some(w) if w.eq_ignore_ascii_case(b"LAST") => true,
        Some(_) => return None,
    };
    if words.next().is_some() {
        return None;
    }
    Some((size, last))
}

fn parse_u64(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    digits.iter().try_fold(0u64, |acc, &d| {
        d.is_ascii_digit().then(|| acc * 10 + u64::from(d - b'0'))
    })
}

/// Splits an address into local part and domain at the last `@`.
pub(crate) fn split_addr(addr: &[u8]) -> Option<(&[u8], &[u8])> {
    let at = addr.iter().rposition(|&b| b == b'@')?;
    let local = addr.get(..at)?;
    let domain = addr.get(at + 1..)?;
    if local.is_empty() || domain.is_empty() {
        return None;
    }
    Some((local, domain))
}

/// True if `local` starts with `prefix`, ignoring ASCII case.
pub(crate) fn local_starts_with(local: &[u8], prefix: &[u8]) -> bool {
    local
        .get(..prefix.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs_and_paths() {
        assert_eq!(parse_verb(b"mail FROM:<a@b> SIZE=10").0, Verb::Mail);
        assert_eq!(parse_verb(b"STARTTLS"), (Verb::StartTls, &b""[..]));
        assert_eq!(parse_verb(b"XYZZY").0, Verb::Unknown);
        let (addr, params) =
            parse_path(b"FROM: <a@b.test> SIZE=1024 BODY=8BITMIME", b"FROM:").unwrap();
        assert_eq!(addr, b"a@b.test");
        assert_eq!(size_param(params), Some(1024));
        assert_eq!(parse_path(b"FROM:<>", b"FROM:").unwrap().0, b"");
        assert!(parse_path(b"TO:a@b", b"TO:").is_none());
        assert!(parse_path(b"FROM:<a@b", b"FROM:").is_none());
    }

    #[test]
    fn bdat_args() {
        assert_eq!(parse_bdat(b"1024 LAST"), Some((1024, true)));
        assert_eq!(parse_bdat(b"0"), Some((0, false)));
        assert_eq!(parse_bdat(b"x LAST"), None);
        assert_eq!(parse_bdat(b"10 FIRST"), None);
        assert_eq!(parse_bdat(b"99999999999999999999"), None);
    }

    #[test]
    fn address_parts() {
        assert_eq!(
            split_addr(b"tempfail@d0.test"),
            Some((&b"tempfail"[..], &b"d0.test"[..]))
        );
        assert_eq!(split_addr(b"nodomain"), None);
        assert!(local_starts_with(b"TempFail+1", b"tempfail"));
        assert!(!local_starts_with(b"temp", b"tempfail"));
    }
}
