//! The one function that decides which shard owns a domain.
//!
//! Every component — ingress splitting, the delivery queues, the journal's
//! resharding and the campaign partitioner — calls [`shard_of`], so a domain
//! always lands on the same core for a given core count.
//!
//! The hash is 64-bit FNV-1a over the domain's ASCII form: lower-cased, with
//! a trailing dot removed, and with internationalised labels converted to
//! punycode (IDNA, UTS #46). FNV-1a is fixed by its definition (offset basis
//! 0xcbf29ce484222325, prime 0x100000001b3), so the mapping is stable across
//! builds, platforms and versions; the shard is `hash % shards`.

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a of the canonical (lower-case ASCII / punycode) form of `domain`.
pub fn domain_hash(domain: &str) -> u64 {
    let d = domain.strip_suffix('.').unwrap_or(domain);
    if d.is_ascii() {
        // The common case hashes in place: no allocation per recipient.
        return fnv1a(d.bytes().map(|b| b.to_ascii_lowercase()));
    }
    fnv1a(canonical_domain(d).bytes())
}

/// The one name of a domain that every part of Sluice uses: lower-case
/// ASCII, no trailing dot, internationalised labels as punycode A-labels
/// (`Bücher.Test.` → `xn--bcher-kva.test`). Shard hash, destinations,
/// queues, routes, limits, pauses and sender pools all match on this form,
/// so no spelling of a domain escapes what is configured for another.
/// Borrowed (no allocation) when `domain` is already canonical.
pub fn canonical_domain(domain: &str) -> std::borrow::Cow<'_, str> {
    use std::borrow::Cow;
    let d = domain.strip_suffix('.').unwrap_or(domain);
    if d.is_ascii() {
        if d.bytes().any(|b| b.is_ascii_uppercase()) {
            return Cow::Owned(d.to_ascii_lowercase());
        }
        return Cow::Borrowed(d);
    }
    match idna::domain_to_ascii(d) {
        Ok(ascii) => Cow::Owned(ascii),
        // Not a valid IDN: the lower-cased UTF-8 keeps the result
        // deterministic; such a domain fails later at DNS anyway.
        Err(_) => Cow::Owned(d.to_lowercase()),
    }
}

fn fnv1a(bytes: impl Iterator<Item = u8>) -> u64 {
    bytes.fold(FNV_OFFSET, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(FNV_PRIME)
    })
}

/// The shard (0-based) that owns `domain` when there are `shards` shards.
pub fn shard_of(domain: &str, shards: usize) -> usize {
    let n = shards.max(1) as u64;
    (domain_hash(domain) % n) as usize
}

/// The domain part of an address (`user@Example.com` → `Example.com`);
/// the whole string when there is no `@`.
pub fn domain_of(address: &str) -> &str {
    address.rsplit_once('@').map_or(address, |(_, d)| d)
}

/// [`canonical_domain`] for a configured name pattern: an exact name or a
/// `*.suffix` wildcard (the suffix canonicalised), trimmed.
pub fn canonical_pattern(pattern: &str) -> String {
    let p = pattern.trim();
    match p.strip_prefix("*.") {
        Some(suffix) => format!("*.{}", canonical_domain(suffix)),
        None => canonical_domain(p).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_a_domain_has_one_canonical_name() {
        for d in [
            "xn--bcher-kva.test",
            "bücher.test",
            "Bücher.TEST.",
            "XN--BCHER-KVA.test",
        ] {
            assert_eq!(canonical_domain(d), "xn--bcher-kva.test", "{d}");
            assert_eq!(domain_hash(d), domain_hash("xn--bcher-kva.test"), "{d}");
        }
        assert!(matches!(
            canonical_domain("plain.test"),
            std::borrow::Cow::Borrowed("plain.test")
        ));
        assert_eq!(canonical_domain("[127.0.0.1]"), "[127.0.0.1]");
        assert_eq!(
            canonical_pattern(" *.Bücher.test. "),
            "*.xn--bcher-kva.test"
        );
        assert_eq!(canonical_pattern("Bücher.test"), "xn--bcher-kva.test");
    }

    #[test]
    fn fnv_matches_the_published_test_vectors() {
        // From the FNV reference test suite.
        assert_eq!(fnv1a(b"".iter().copied()), 0xcbf29ce484222325);
        assert_eq!(fnv1a(b"a".iter().copied()), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a(b"foobar".iter().copied()), 0x85944171f73967e8);
    }

    #[test]
    fn case_and_trailing_dot_do_not_matter() {
        assert_eq!(domain_hash("Example.COM"), domain_hash("example.com"));
        assert_eq!(domain_hash("example.com."), domain_hash("example.com"));
    }

    #[test]
    fn idn_hashes_as_punycode() {
        assert_eq!(
            domain_hash("Bücher.example"),
            domain_hash("xn--bcher-kva.example")
        );
    }

    #[test]
    fn shards_are_in_range_and_spread() {
        let mut counts = [0usize; 4];
        for i in 0..10_000 {
            let s = shard_of(&format!("d{i}.test"), 4);
            counts[s] += 1;
        }
        for c in counts {
            assert!((2000..3000).contains(&c), "{counts:?}");
        }
        assert_eq!(shard_of("anything", 0), 0);
    }

    #[test]
    fn domain_of_takes_the_last_at() {
        assert_eq!(domain_of("\"a@b\"@c.test"), "c.test");
        assert_eq!(domain_of("postmaster"), "postmaster");
    }
}
