//! EHLO keyword parsing: the injector picks its transaction shape
//! (pipelined BDAT, pipelined DATA or lock-step) from what the server offers.

/// ESMTP extensions the injector cares about.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Extensions {
    /// RFC 2920 PIPELINING.
    pub pipelining: bool,
    /// RFC 3030 CHUNKING (BDAT).
    pub chunking: bool,
    /// RFC 3207 STARTTLS.
    pub starttls: bool,
    /// RFC 1870 SIZE was offered (the limit itself is not needed).
    pub size: bool,
    /// AUTH with the PLAIN mechanism.
    pub auth_plain: bool,
}

impl Extensions {
    /// Feeds one EHLO reply line (text after `250-`/`250 `).
    pub fn add_line(&mut self, line: &[u8]) {
        let mut words = line.split(|&b| b == b' ').filter(|w| !w.is_empty());
        let Some(keyword) = words.next() else { return };
        if keyword.eq_ignore_ascii_case(b"PIPELINING") {
            self.pipelining = true;
        } else if keyword.eq_ignore_ascii_case(b"CHUNKING") {
            self.chunking = true;
        } else if keyword.eq_ignore_ascii_case(b"STARTTLS") {
            self.starttls = true;
        } else if keyword.eq_ignore_ascii_case(b"SIZE") {
            self.size = true;
        } else if keyword.eq_ignore_ascii_case(b"AUTH") {
            self.auth_plain |= words.any(|w| w.eq_ignore_ascii_case(b"PLAIN"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_keywords_case_insensitively() {
        let mut ext = Extensions::default();
        for line in [
            &b"sink Hello"[..],
            b"pipelining",
            b"SIZE 1000",
            b"CHUNKING",
            b"AUTH LOGIN PLAIN",
            b"STARTTLS",
        ] {
            ext.add_line(line);
        }
        assert_eq!(
            ext,
            Extensions {
                pipelining: true,
                chunking: true,
                starttls: true,
                size: true,
                auth_plain: true
            }
        );
    }
}
