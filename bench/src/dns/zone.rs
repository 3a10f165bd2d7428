//! The zone file: explicit records, MX-rollup providers and failure rules,
//! in TOML because the rest of sluice-bench (sink profiles) already uses
//! TOML and because a record per table is easy to generate from scripts.
//!
//! Everything is validated when the file is loaded (names, record data,
//! loopback-only addresses, CNAME exclusivity), so a bad file fails the
//! start of a run with a message naming the file and the entry, rather
//! than producing odd answers mid-run.
//!
//! ```toml
//! # Explicit records. `type` is MX, A, AAAA, TXT or CNAME; `data` uses the
//! # usual presentation format; `ttl` defaults to DnsOptions::ttl.
//! [[record]]
//! name = "example.test"
//! type = "MX"
//! data = "10 mail.example.test"
//!
//! [[record]]
//! name = "mail.example.test"
//! type = "A"
//! data = "127.3.0.1"            # must be in 127.0.0.0/8
//! ttl = 60
//!
//! [[record]]
//! name = "nomail.test"
//! type = "MX"
//! data = "0 ."                  # RFC 7505 null MX
//!
//! # Many domains on one MX set ("MX rollup").
//! [[provider]]
//! name = "gmail"
//! domains = ["gmail.test", "googlemail.test"]
//! mx = ["mx1.gmail.test", "mx2.gmail.test"]
//! preference = [10, 20]         # optional, default 10, 20, 30, ...
//! addresses = ["127.2.0.1", "127.2.0.2"]   # one A record per MX host
//! share = 0.25                  # optional: this share of d{i}.test uses this MX set
//!
//! # Failure rules (same modes as --failure NAME=MODE[@P]).
//! [[failure]]
//! name = "d5.test"
//! mode = "servfail"
//! probability = 1.0             # optional
//! ```
//!
//! A name that has records here is served from these records only: it
//! replaces any synthetic or provider data for that exact name.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use hickory_proto::rr::rdata::{A, AAAA, CNAME, MX, TXT};
use hickory_proto::rr::{Name, RData, RecordType};
use serde::Deserialize;

use super::error::DnsError;
use super::failure::{check_probability, FailureMode, FailureRule};

/// A parsed and validated zone.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Zone {
    /// Explicit records (`[[record]]`).
    pub records: Vec<ZoneRecord>,
    /// MX-rollup providers (`[[provider]]`).
    pub providers: Vec<Provider>,
    /// Failure rules (`[[failure]]`); rules given in `DnsOptions::failures`
    /// are applied after these and win for the same name.
    pub failures: Vec<FailureRule>,
}

/// One explicit resource record.
#[derive(Clone, Debug, PartialEq)]
pub struct ZoneRecord {
    /// Owner name, fully qualified, lower case.
    pub name: Name,
    /// TTL; `None` uses `DnsOptions::ttl`.
    pub ttl: Option<u32>,
    /// The record data (MX, A, AAAA, TXT or CNAME).
    pub data: RData,
}

/// A provider hosting many domains on one MX set.
#[derive(Clone, Debug, PartialEq)]
pub struct Provider {
    /// Label used in reports.
    pub name: String,
    /// Domains whose MX set is `hosts`.
    pub domains: Vec<Name>,
    /// The MX hosts, each with its preference and A record.
    pub hosts: Vec<ProviderHost>,
    /// Share in [0, 1] of the synthetic domains that also use this MX set.
    /// Shares are handed out as contiguous index blocks in provider order:
    /// the first provider with a share gets `d0 … d{k-1}` with
    /// `k = round(N × share)`, the next one the following block, and so on.
    pub share: f64,
    /// TTL of the provider's records; `None` uses `DnsOptions::ttl`.
    pub ttl: Option<u32>,
}

/// One MX host of a [`Provider`].
#[derive(Clone, Debug, PartialEq)]
pub struct ProviderHost {
    /// Host name, fully qualified, lower case.
    pub name: Name,
    /// MX preference.
    pub preference: u16,
    /// Its A record (127.0.0.0/8).
    pub address: Ipv4Addr,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawZone {
    #[serde(default)]
    record: Vec<RawRecord>,
    #[serde(default)]
    provider: Vec<RawProvider>,
    #[serde(default)]
    failure: Vec<RawFailure>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRecord {
    name: String,
    #[serde(rename = "type")]
    rtype: String,
    data: String,
    ttl: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProvider {
    name: String,
    domains: Vec<String>,
    mx: Vec<String>,
    preference: Option<Vec<u16>>,
    addresses: Vec<String>,
    share: Option<f64>,
    ttl: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFailure {
    name: String,
    mode: String,
    probability: Option<f64>,
}

impl Zone {
    /// Reads and validates a zone file.
    pub fn load(path: &Path) -> Result<Zone, DnsError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| DnsError::io(format!("reading zone file {}", path.display()), e))?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and validates zone TOML held in memory.
    pub fn from_toml_str(text: &str) -> Result<Zone, DnsError> {
        Self::parse(text, "<inline>")
    }

    fn parse(text: &str, origin: &str) -> Result<Zone, DnsError> {
        let raw: RawZone =
            toml::from_str(text).map_err(|e| DnsError::zone(origin, e.to_string()))?;
        let mut zone = Zone::default();
        for (i, r) in raw.record.into_iter().enumerate() {
            let rec = ZoneRecord::parse(&r.name, &r.rtype, &r.data, r.ttl).map_err(|m| {
                DnsError::zone(origin, format!("record #{} ({}): {m}", i + 1, r.name))
            })?;
            zone.records.push(rec);
        }
        for (i, p) in raw.provider.into_iter().enumerate() {
            let label = format!("provider #{} ({})", i + 1, p.name);
            let provider = Provider::from_raw(p)
                .map_err(|m| DnsError::zone(origin, format!("{label}: {m}")))?;
            zone.providers.push(provider);
        }
        for (i, f) in raw.failure.into_iter().enumerate() {
            let bad =
                |m: String| DnsError::zone(origin, format!("failure #{} ({}): {m}", i + 1, f.name));
            let mode = f.mode.parse::<FailureMode>().map_err(bad)?;
            let probability = f.probability.unwrap_or(1.0);
            check_probability(probability).map_err(bad)?;
            let name = parse_name(&f.name).map_err(bad)?;
            zone.failures.push(FailureRule {
                name,
                mode,
                probability,
            });
        }
        zone.validate(origin)?;
        Ok(zone)
    }

    /// Checks the rules that span records: loopback-only addresses, CNAME
    /// exclusivity, provider shapes and the sum of provider shares. Called
    /// by the loaders and again by the server for zones built in code.
    pub fn validate(&self, origin: &str) -> Result<(), DnsError> {
        for r in &self.records {
            check_rdata(&r.data).map_err(|m| DnsError::zone(origin, format!("{}: {m}", r.name)))?;
            if r.data.record_type() == RecordType::CNAME {
                let others = self.records.iter().filter(|o| o.name == r.name).count();
                if others > 1 {
                    return Err(DnsError::zone(
                        origin,
                        format!(
                            "{}: a CNAME must be the only record at its name (RFC 1034)",
                            r.name
                        ),
                    ));
                }
            }
        }
        let mut total = 0.0;
        for p in &self.providers {
            if p.domains.is_empty() && p.share <= 0.0 {
                return Err(DnsError::zone(
                    origin,
                    format!("provider {}: no domains and no share", p.name),
                ));
            }
            if p.hosts.is_empty() {
                return Err(DnsError::zone(
                    origin,
                    format!("provider {}: no MX hosts", p.name),
                ));
            }
            for h in &p.hosts {
                if !h.address.is_loopback() {
                    return Err(DnsError::zone(
                        origin,
                        format!("provider {}: {} is not in 127.0.0.0/8", p.name, h.address),
                    ));
                }
            }
            if !(0.0..=1.0).contains(&p.share) {
                return Err(DnsError::zone(
                    origin,
                    format!("provider {}: share {} is not in [0, 1]", p.name, p.share),
                ));
            }
            total += p.share;
        }
        if total > 1.0 + 1e-9 {
            return Err(DnsError::zone(
                origin,
                format!("provider shares add up to {total}, more than 1"),
            ));
        }
        Ok(())
    }
}

impl ZoneRecord {
    /// Builds a record from text, e.g. `("d1.test", "MX", "10 mx.d1.test")`.
    pub fn parse(name: &str, rtype: &str, data: &str, ttl: Option<u32>) -> Result<Self, String> {
        let name = parse_name(name)?;
        let data = parse_rdata(rtype, data)?;
        check_rdata(&data)?;
        Ok(ZoneRecord { name, ttl, data })
    }
}

impl Provider {
    fn from_raw(p: RawProvider) -> Result<Self, String> {
        if p.mx.len() != p.addresses.len() {
            return Err(format!(
                "{} MX hosts but {} addresses (one address per host)",
                p.mx.len(),
                p.addresses.len()
            ));
        }
        let preferences: Vec<u16> = match p.preference {
            Some(v) if v.len() != p.mx.len() => {
                return Err(format!(
                    "{} MX hosts but {} preferences",
                    p.mx.len(),
                    v.len()
                ))
            }
            Some(v) => v,
            None => (1..=p.mx.len())
                .map(|i| u16::try_from(i * 10).unwrap_or(u16::MAX))
                .collect(),
        };
        let domains = p
            .domains
            .iter()
            .map(|d| parse_name(d))
            .collect::<Result<Vec<_>, _>>()?;
        let mut hosts = Vec::with_capacity(p.mx.len());
        for ((host, addr), preference) in p.mx.iter().zip(&p.addresses).zip(preferences) {
            let address: Ipv4Addr = addr
                .trim()
                .parse()
                .map_err(|_| format!("address {addr:?} is not an IPv4 address"))?;
            hosts.push(ProviderHost {
                name: parse_name(host)?,
                preference,
                address,
            });
        }
        Ok(Provider {
            name: p.name,
            domains,
            hosts,
            share: p.share.unwrap_or(0.0),
            ttl: p.ttl,
        })
    }
}

/// Parses a domain name (`d5.test`, `d5.test.`, `.`) into a fully
/// qualified, lower-case [`Name`].
pub fn parse_name(text: &str) -> Result<Name, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty domain name".into());
    }
    if text == "." {
        return Ok(Name::root());
    }
    let mut name =
        Name::from_ascii(text).map_err(|e| format!("invalid domain name {text:?}: {e}"))?;
    if name.iter().any(|l| l.is_empty()) {
        return Err(format!("invalid domain name {text:?}: empty label"));
    }
    name.set_fqdn(true);
    Ok(name.to_lowercase())
}

fn parse_rdata(rtype: &str, data: &str) -> Result<RData, String> {
    let data = data.trim();
    match rtype.trim().to_ascii_uppercase().as_str() {
        "A" => data
            .parse::<Ipv4Addr>()
            .map(|a| RData::A(A(a)))
            .map_err(|_| format!("A data {data:?} is not an IPv4 address")),
        "AAAA" => data
            .parse::<Ipv6Addr>()
            .map(|a| RData::AAAA(AAAA(a)))
            .map_err(|_| format!("AAAA data {data:?} is not an IPv6 address")),
        "MX" => {
            let mut parts = data.split_whitespace();
            let (Some(pref), Some(host), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err(format!("MX data {data:?} is not \"PREFERENCE HOST\""));
            };
            let pref: u16 = pref
                .parse()
                .map_err(|_| format!("MX preference {pref:?} is not 0-65535"))?;
            Ok(RData::MX(MX::new(pref, parse_name(host)?)))
        }
        // TXT character-strings are at most 255 bytes; longer text is split.
        "TXT" => {
            let chunks: Vec<&[u8]> = if data.is_empty() {
                vec![&[]]
            } else {
                data.as_bytes().chunks(255).collect()
            };
            Ok(RData::TXT(TXT::from_bytes(chunks)))
        }
        "CNAME" => Ok(RData::CNAME(CNAME(parse_name(data)?))),
        other => Err(format!(
            "unsupported record type {other:?} (expected MX, A, AAAA, TXT or CNAME)"
        )),
    }
}

/// Only loopback addresses may be served: sluice connects to whatever the
/// stub returns, and it must never be pointed off the machine.
fn check_rdata(data: &RData) -> Result<(), String> {
    match data {
        RData::A(A(a)) if !a.is_loopback() => Err(format!("A {a} is not in 127.0.0.0/8")),
        RData::AAAA(AAAA(a)) if !is_loopback_ip(IpAddr::V6(*a)) => {
            Err(format!("AAAA {a} is not ::1 (or ::ffff:127.0.0.0/104)"))
        }
        RData::A(_) | RData::AAAA(_) | RData::MX(_) | RData::TXT(_) | RData::CNAME(_) => Ok(()),
        other => Err(format!("unsupported record type {}", other.record_type())),
    }
}

/// True for 127.0.0.0/8, ::1 and IPv4-mapped 127.0.0.0/8.
pub fn is_loopback_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_zone_file_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("zones/example.toml");
        let zone = Zone::load(&path).unwrap();
        assert!(!zone.records.is_empty());
        assert!(!zone.providers.is_empty());
        assert!(!zone.failures.is_empty());
    }

    #[test]
    fn rejects_bad_entries_with_context() {
        let cases = [
            ("[[record]]\nname='a.test'\ntype='A'\ndata='192.0.2.1'", "127.0.0.0/8"),
            ("[[record]]\nname='a.test'\ntype='AAAA'\ndata='2001:db8::1'", "::1"),
            ("[[record]]\nname='a.test'\ntype='MX'\ndata='mx.a.test'", "PREFERENCE HOST"),
            ("[[record]]\nname='a.test'\ntype='SRV'\ndata='x'", "unsupported"),
            ("[[record]]\nname='a..test'\ntype='A'\ndata='127.0.0.2'", "invalid domain"),
            (
                "[[record]]\nname='a.test'\ntype='CNAME'\ndata='b.test'\n[[record]]\nname='a.test'\ntype='A'\ndata='127.0.0.2'",
                "only record",
            ),
            (
                "[[provider]]\nname='p'\ndomains=['p.test']\nmx=['mx.p.test']\naddresses=['198.51.100.1']",
                "127.0.0.0/8",
            ),
            (
                "[[provider]]\nname='p'\ndomains=['p.test']\nmx=['mx.p.test','mx2.p.test']\naddresses=['127.2.0.1']",
                "one address per host",
            ),
            (
                "[[provider]]\nname='p'\ndomains=[]\nmx=['m.p.test']\naddresses=['127.2.0.1']\nshare=0.7\n[[provider]]\nname='q'\ndomains=[]\nmx=['m.q.test']\naddresses=['127.2.0.2']\nshare=0.7",
                "add up",
            ),
            ("[[failure]]\nname='a.test'\nmode='explode'", "unknown failure mode"),
            ("[[failure]]\nname='a.test'\nmode='timeout'\nprobability=0.0", "probability"),
            ("[[recordz]]\nname='a.test'", "unknown field"),
        ];
        for (text, needle) in cases {
            let err = Zone::from_toml_str(text).unwrap_err().to_string();
            assert!(
                err.contains(needle),
                "{text:?} gave {err:?}, expected {needle:?}"
            );
        }
    }

    #[test]
    fn parses_record_data() {
        let r = ZoneRecord::parse("Null.Test", "mx", "0 .", Some(5)).unwrap();
        assert_eq!(r.name.to_ascii(), "null.test.");
        assert_eq!(r.data, RData::MX(MX::new(0, Name::root())));
        let long = "x".repeat(600);
        let r = ZoneRecord::parse("t.test", "TXT", &long, None).unwrap();
        let RData::TXT(txt) = r.data else { panic!() };
        let lens: Vec<usize> = txt.iter().map(|s| s.len()).collect();
        assert_eq!(lens, vec![255, 255, 90]);
    }
}
