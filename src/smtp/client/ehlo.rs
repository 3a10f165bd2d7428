//! The server's EHLO capabilities (RFC 5321 4.1.1.1) and their parsing.
//!
//! Only the extensions the client acts on are recorded, as plain fields, so
//! a capability check on the hot path is a field read. Keywords are matched
//! case-insensitively (RFC 5321 2.4); unknown keywords are ignored.

/// What the server advertised in its EHLO reply. After HELO, or before
/// any greeting, everything is off.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// EHLO succeeded (as opposed to the HELO fallback).
    pub esmtp: bool,
    /// `PIPELINING` (RFC 2920).
    pub pipelining: bool,
    /// `SIZE [n]` (RFC 1870). `Some(0)` means SIZE is supported without a
    /// fixed limit (no number, `0`, or a number too large to matter).
    pub size: Option<u64>,
    /// `8BITMIME` (RFC 6152).
    pub eight_bit_mime: bool,
    /// `SMTPUTF8` (RFC 6531).
    pub smtputf8: bool,
    /// `CHUNKING` (RFC 3030): BDAT.
    pub chunking: bool,
    /// `STARTTLS` (RFC 3207).
    pub starttls: bool,
    /// `ENHANCEDSTATUSCODES` (RFC 2034).
    pub enhanced_status_codes: bool,
    /// `AUTH` lists `PLAIN` (RFC 4954, RFC 4616).
    pub auth_plain: bool,
    /// `AUTH` lists `LOGIN`.
    pub auth_login: bool,
}

impl Capabilities {
    /// Parses the text of a positive EHLO reply: `\n`-separated lines, the
    /// first being the server's name and greeting, each later one an
    /// `ehlo-keyword [params]`.
    pub fn parse_ehlo(text: &str) -> Self {
        let mut caps = Capabilities {
            esmtp: true,
            ..Capabilities::default()
        };
        for line in text.split('\n').skip(1) {
            let line = line.trim();
            // Old servers spell AUTH as `AUTH=PLAIN LOGIN`; accept both.
            let (keyword, params) = match line.find([' ', '=']) {
                Some(i) => (
                    line.get(..i).unwrap_or_default(),
                    line.get(i + 1..).unwrap_or_default(),
                ),
                None => (line, ""),
            };
            let is = |k: &str| keyword.eq_ignore_ascii_case(k);
            if is("PIPELINING") {
                caps.pipelining = true;
            } else if is("SIZE") {
                let value = params.split_ascii_whitespace().next().unwrap_or("0");
                // A limit we cannot read is treated as no limit: the server
                // still enforces its own, and refusing to send on a typo
                // would be worse.
                caps.size = Some(value.parse().unwrap_or(0));
            } else if is("8BITMIME") {
                caps.eight_bit_mime = true;
            } else if is("SMTPUTF8") {
                caps.smtputf8 = true;
            } else if is("CHUNKING") {
                caps.chunking = true;
            } else if is("STARTTLS") {
                caps.starttls = true;
            } else if is("ENHANCEDSTATUSCODES") {
                caps.enhanced_status_codes = true;
            } else if is("AUTH") {
                for mech in params.split_ascii_whitespace() {
                    if mech.eq_ignore_ascii_case("PLAIN") {
                        caps.auth_plain = true;
                    } else if mech.eq_ignore_ascii_case("LOGIN") {
                        caps.auth_login = true;
                    }
                }
            }
        }
        caps
    }

    /// The fixed message size limit, if the server declared one.
    pub fn max_size(&self) -> Option<u64> {
        self.size.filter(|&n| n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_usual_set() {
        let caps = Capabilities::parse_ehlo(
            "mx.example Hello\nPIPELINING\nSIZE 10240000\n8BITMIME\nSMTPUTF8\nCHUNKING\n\
             STARTTLS\nENHANCEDSTATUSCODES\nAUTH PLAIN LOGIN CRAM-MD5\nDSN",
        );
        assert_eq!(
            caps,
            Capabilities {
                esmtp: true,
                pipelining: true,
                size: Some(10_240_000),
                eight_bit_mime: true,
                smtputf8: true,
                chunking: true,
                starttls: true,
                enhanced_status_codes: true,
                auth_plain: true,
                auth_login: true,
            }
        );
        assert_eq!(caps.max_size(), Some(10_240_000));
    }

    #[test]
    fn first_line_is_not_a_keyword_and_case_is_ignored() {
        let caps = Capabilities::parse_ehlo("PIPELINING\nstarttls\nauth=login");
        assert!(!caps.pipelining);
        assert!(caps.starttls);
        assert!(caps.auth_login && !caps.auth_plain);
    }

    #[test]
    fn size_variants() {
        assert_eq!(Capabilities::parse_ehlo("x\nSIZE").size, Some(0));
        assert_eq!(Capabilities::parse_ehlo("x\nSIZE 0").max_size(), None);
        assert_eq!(Capabilities::parse_ehlo("x\nSIZE junk").size, Some(0));
        assert_eq!(
            Capabilities::parse_ehlo("x\nSIZE 99999999999999999999999").size,
            Some(0)
        );
        assert_eq!(Capabilities::parse_ehlo("x\nSIZE 5 ").max_size(), Some(5));
        assert_eq!(Capabilities::parse_ehlo("x").size, None);
        assert!(Capabilities::parse_ehlo("x").esmtp);
        assert!(!Capabilities::default().esmtp);
    }
}
