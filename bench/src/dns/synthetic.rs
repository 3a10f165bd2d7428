//! Synthetic domains `d0.test … d{N-1}.test`, computed on the fly from the
//! query name instead of being stored, so `--domains 60000` costs no memory
//! and no start-up time.
//!
//! # Address mapping
//!
//! | name              | record                                   |
//! |-------------------|------------------------------------------|
//! | `d{i}.test`       | `MX 10 mx.d{i}.test` (or a provider's MX set, see [`super::zone::Provider::share`]) |
//! | `d{i}.test`       | `TXT "v=spf1 -all"`                      |
//! | `mx.d{i}.test`    | `A 127.1.{i / 254}.{i % 254 + 1}`        |
//! | `mx.d{i}.test`    | `AAAA ::1` only with `DnsOptions::aaaa`   |
//!
//! The last octet runs 1..=254, so no address ends in `.0` or `.255`, the
//! second octet is always 1 so `127.0.0.1` (used by sluice itself) is never
//! handed out, and the mapping is a bijection for `i < 65 024`
//! ([`MAX_SYNTHETIC_DOMAINS`]): the SMTP sink can recover the domain index
//! from the local address a connection arrived on with [`synthetic_index`].

use std::net::Ipv4Addr;

use hickory_proto::rr::Name;

/// Top-level label of every synthetic domain.
pub const SYNTHETIC_TLD: &str = "test";

/// First label of every synthetic MX host (`mx.d{i}.test`).
pub const SYNTHETIC_MX_LABEL: &str = "mx";

/// MX preference of the single MX record of a synthetic domain.
pub const SYNTHETIC_MX_PREFERENCE: u16 = 10;

/// TXT record served at every synthetic domain.
pub const SYNTHETIC_TXT: &str = "v=spf1 -all";

/// Second octet of every synthetic MX address (`127.1.y.z`).
pub const SYNTHETIC_NET: u8 = 1;

/// Largest usable `--domains` value: 256 third octets × 254 last octets.
pub const MAX_SYNTHETIC_DOMAINS: usize = 256 * 254;

/// `d{i}.test` as text (no trailing dot).
pub fn synthetic_domain(i: usize) -> String {
    format!("d{i}.{SYNTHETIC_TLD}")
}

/// `mx.d{i}.test` as text (no trailing dot).
pub fn synthetic_mx_host(i: usize) -> String {
    format!("{SYNTHETIC_MX_LABEL}.d{i}.{SYNTHETIC_TLD}")
}

/// The A record of `mx.d{i}.test`, or `None` past [`MAX_SYNTHETIC_DOMAINS`].
pub fn synthetic_mx_addr(i: usize) -> Option<Ipv4Addr> {
    if i >= MAX_SYNTHETIC_DOMAINS {
        return None;
    }
    let third = u8::try_from(i / 254).ok()?;
    let fourth = u8::try_from(i % 254 + 1).ok()?;
    Some(Ipv4Addr::new(127, SYNTHETIC_NET, third, fourth))
}

/// Inverse of [`synthetic_mx_addr`]: which synthetic domain an address
/// belongs to (for the SMTP sink, which sees only its local address).
pub fn synthetic_index(addr: Ipv4Addr) -> Option<usize> {
    let [a, b, c, d] = addr.octets();
    if a != 127 || b != SYNTHETIC_NET || d == 0 || d == 255 {
        return None;
    }
    Some(usize::from(c) * 254 + usize::from(d) - 1)
}

/// A query name that falls in the synthetic namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SynthName {
    /// `d{i}.test`
    Domain(usize),
    /// `mx.d{i}.test`
    MxHost(usize),
}

/// Recognises `d{i}.test` and `mx.d{i}.test` (any letter case) for
/// `i < count`, without allocating.
pub(crate) fn parse(name: &Name, count: usize) -> Option<SynthName> {
    if count == 0 {
        return None;
    }
    let mut labels = name.iter().rev();
    if !labels
        .next()?
        .eq_ignore_ascii_case(SYNTHETIC_TLD.as_bytes())
    {
        return None;
    }
    let index = parse_index_label(labels.next()?)?;
    if index >= count {
        return None;
    }
    match labels.next() {
        None => Some(SynthName::Domain(index)),
        Some(first) if first.eq_ignore_ascii_case(SYNTHETIC_MX_LABEL.as_bytes()) => {
            labels.next().is_none().then_some(SynthName::MxHost(index))
        }
        Some(_) => None,
    }
}

/// `d123` → 123; refuses leading zeros (`d05`) so every index has exactly
/// one name and per-name counters cannot be split across spellings.
fn parse_index_label(label: &[u8]) -> Option<usize> {
    let (first, digits) = label.split_first()?;
    if !first.eq_ignore_ascii_case(&b'd') || digits.is_empty() || digits.len() > 6 {
        return None;
    }
    if digits.len() > 1 && digits.first() == Some(&b'0') {
        return None;
    }
    digits.iter().try_fold(0usize, |acc, &b| {
        b.is_ascii_digit().then(|| acc * 10 + usize::from(b - b'0'))
    })
}

/// The MX host name `mx.d{i}.test.` (lower case, fully qualified).
pub(crate) fn mx_host_name(i: usize) -> Option<Name> {
    let mut buf = [0u8; 24];
    let label = index_label(i, &mut buf)?;
    Name::from_labels([
        SYNTHETIC_MX_LABEL.as_bytes(),
        label,
        SYNTHETIC_TLD.as_bytes(),
    ])
    .ok()
}

/// Writes `d{i}` into `buf` without a heap allocation.
fn index_label(mut i: usize, buf: &mut [u8; 24]) -> Option<&[u8]> {
    let mut pos = buf.len();
    loop {
        pos = pos.checked_sub(1)?;
        *buf.get_mut(pos)? = b'0' + u8::try_from(i % 10).ok()?;
        i /= 10;
        if i == 0 {
            break;
        }
    }
    pos = pos.checked_sub(1)?;
    *buf.get_mut(pos)? = b'd';
    buf.get(pos..)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn mapping_is_a_bijection_avoiding_reserved_addresses() {
        let mut seen = HashSet::new();
        for i in 0..MAX_SYNTHETIC_DOMAINS {
            let addr = synthetic_mx_addr(i).unwrap();
            let [a, b, _, d] = addr.octets();
            assert_eq!((a, b), (127, 1));
            assert!(d != 0 && d != 255, "{addr}");
            assert_ne!(addr, Ipv4Addr::LOCALHOST);
            assert!(seen.insert(addr));
            assert_eq!(synthetic_index(addr), Some(i));
        }
        assert_eq!(synthetic_mx_addr(MAX_SYNTHETIC_DOMAINS), None);
        assert_eq!(synthetic_mx_addr(0), Some(Ipv4Addr::new(127, 1, 0, 1)));
        assert_eq!(synthetic_mx_addr(253), Some(Ipv4Addr::new(127, 1, 0, 254)));
        assert_eq!(synthetic_mx_addr(254), Some(Ipv4Addr::new(127, 1, 1, 1)));
        assert_eq!(synthetic_index(Ipv4Addr::new(127, 0, 0, 1)), None);
        assert_eq!(synthetic_index(Ipv4Addr::new(127, 1, 3, 0)), None);
    }

    #[test]
    fn parses_names_case_insensitively_and_rejects_the_rest() {
        let n = |s: &str| Name::from_ascii(s).unwrap();
        assert_eq!(parse(&n("d0.test."), 10), Some(SynthName::Domain(0)));
        assert_eq!(parse(&n("D9.TEST."), 10), Some(SynthName::Domain(9)));
        assert_eq!(parse(&n("Mx.d3.test."), 10), Some(SynthName::MxHost(3)));
        for bad in [
            "d10.test.",
            "d05.test.",
            "d.test.",
            "dx.test.",
            "d1.example.",
            "www.d1.test.",
            "a.mx.d1.test.",
            "test.",
            ".",
            "d-1.test.",
            "d99999999999999999999.test.",
        ] {
            assert_eq!(parse(&n(bad), 10), None, "{bad}");
        }
        assert_eq!(parse(&n("d0.test."), 0), None);
    }

    #[test]
    fn builds_lowercase_names() {
        assert_eq!(mx_host_name(65023).unwrap().to_ascii(), "mx.d65023.test.");
        assert_eq!(synthetic_domain(7), "d7.test");
        assert_eq!(synthetic_mx_host(7), "mx.d7.test");
    }
}
