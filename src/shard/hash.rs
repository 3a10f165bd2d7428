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
    match idna::domain_to_ascii(d) {
        Ok(ascii) => fnv1a(ascii.bytes()),
        // Not a valid IDN: hash the lower-cased UTF-8 so the result is still
        // deterministic; such a domain will fail later at DNS anyway.
        Err(_) => fnv1a(d.to_lowercase().bytes()),
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

#[cfg(test)]
mod tests {
    use super::*;

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
