//! The tool generates abusive amounts of SMTP traffic, so it must never be
//! pointed at a real host: every address it connects to or binds is checked
//! here first. Host names other than `localhost` are refused rather than
//! resolved, because resolution itself would touch the network.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use crate::error::{Error, Result};

/// True for 127.0.0.0/8, ::1 and IPv4-mapped 127.0.0.0/8.
pub fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// Returns the address unchanged if it is loopback, otherwise [`Error::NonLoopback`].
pub fn ensure_loopback(addr: SocketAddr) -> Result<SocketAddr> {
    if is_loopback(addr.ip()) {
        Ok(addr)
    } else {
        Err(Error::NonLoopback(addr.to_string()))
    }
}

/// Parses `HOST:PORT` where HOST is a loopback IP literal (`127.0.0.2`,
/// `[::1]`) or `localhost`, and rejects everything else.
pub fn parse_loopback(text: &str) -> Result<SocketAddr> {
    let bad = |reason: &str| Error::BadAddress {
        addr: text.to_string(),
        reason: reason.to_string(),
    };
    let addr = if let Some(port) = text.strip_prefix("localhost:") {
        let port: u16 = port
            .parse()
            .map_err(|_| bad("port is not a number 0-65535"))?;
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
    } else {
        match text.parse::<SocketAddr>() {
            Ok(addr) => addr,
            Err(_) => {
                // Distinguish "a host name" from plain garbage so the user
                // learns that names are refused on purpose.
                let host = text.rsplit_once(':').map(|(h, _)| h).unwrap_or(text);
                if host.parse::<IpAddr>().is_err() && !host.is_empty() && !host.starts_with('[') {
                    return Err(Error::NonLoopback(format!(
                        "{text} (host names are not resolved; use 127.x.y.z, [::1] or localhost)"
                    )));
                }
                return Err(bad("expected HOST:PORT, e.g. 127.0.0.1:2525 or [::1]:2525"));
            }
        }
    };
    ensure_loopback(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_loopback_forms() {
        assert!(parse_loopback("127.0.0.1:25").is_ok());
        assert!(parse_loopback("127.1.2.3:25").is_ok());
        assert!(parse_loopback("[::1]:25").is_ok());
        assert!(parse_loopback("localhost:2525").is_ok());
        assert!(parse_loopback("[::ffff:127.0.0.9]:25").is_ok());
    }

    #[test]
    fn refuses_everything_else() {
        for bad in [
            "192.0.2.1:25",
            "0.0.0.0:25",
            "198.51.100.1:25",
            "[::]:25",
            "[2001:db8::1]:25",
            "mx.example.com:25",
            "203.0.113.53:53",
        ] {
            assert!(
                matches!(parse_loopback(bad), Err(Error::NonLoopback(_))),
                "{bad} was not refused"
            );
        }
        assert!(matches!(
            parse_loopback("127.0.0.1"),
            Err(Error::BadAddress { .. })
        ));
    }
}
