//! RFC 5321 §5.1 mail routing as pure functions: which exchangers to try,
//! in which order, and what to tell delivery when none is usable. The
//! resolver feeds in DNS answers; nothing here touches sockets or clocks,
//! and randomness comes in as a parameter so tests can seed it.
//!
//! Rules:
//! * exchangers sorted by preference, equal preferences shuffled (load
//!   spreading, §5.1), duplicates dropped, at most `max_mx_hosts` kept
//!   (addresses are only looked up for those);
//! * null MX (RFC 7505): when every MX record targets `.`, the domain
//!   accepts no mail → [`ResolveError::NullMx`] (`5.1.10`), and no address
//!   lookup or connection follows. A `.` target next to real ones is
//!   ignored;
//! * an exchanger without addresses is skipped (and noted in
//!   [`Destination::skipped`]); if none has any, that is temporary unless
//!   every one was NXDOMAIN;
//! * implicit MX (no MX records): the domain itself at preference 0. If it
//!   exists but has neither MX nor address records, the domain has no mail
//!   route at all: permanent `5.1.2`, not an endless deferral;
//! * static routes and smarthosts never bounce on DNS: a broken relay name
//!   is an operator error, so it is always temporary.

use std::net::IpAddr;

use rand::seq::SliceRandom;
use rand::Rng;

use super::error::ResolveError;
use super::wire::{show, MxRecord};

/// How a destination was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DestinationKind {
    /// From the domain's MX records.
    Mx,
    /// No MX records: the domain's own addresses (implicit MX).
    ImplicitMx,
    /// The domain was an address literal such as `[127.0.0.1]`.
    AddressLiteral,
    /// A static route from configuration.
    Route,
    /// The configured smarthost.
    Smarthost,
}

/// One host to connect to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MxHost {
    /// Exchanger name as published (lower case, no trailing dot), or the
    /// configured host / IP literal for routes. Use it for TLS names.
    pub name: String,
    /// MX preference (routes: position × 10).
    pub preference: u16,
    /// TCP port (25 unless a route says otherwise).
    pub port: u16,
    /// Addresses in the order to try them (family preference applied).
    pub addrs: Vec<IpAddr>,
}

/// Where mail for one domain goes: hosts in the order to try them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Destination {
    /// The domain asked for (lower case, no trailing dot).
    pub domain: String,
    /// How the hosts were found.
    pub kind: DestinationKind,
    /// Hosts with at least one address, best first.
    pub hosts: Vec<MxHost>,
    /// Hosts left out for lack of addresses, with the DNS reason.
    pub skipped: Vec<String>,
}

/// The exchangers to look up, or a null MX.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Exchangers {
    /// RFC 7505: the domain accepts no mail.
    NullMx,
    /// Ordered exchangers (at most `max`).
    Hosts(Vec<MxRecord>),
}

/// Orders MX records per RFC 5321 §5.1 (see the module doc).
pub(crate) fn plan_exchangers<R: Rng + ?Sized>(
    records: &[MxRecord],
    max: usize,
    rng: &mut R,
) -> Exchangers {
    let mut hosts: Vec<MxRecord> = records
        .iter()
        .filter(|r| !r.exchange.is_root())
        .cloned()
        .collect();
    if hosts.is_empty() && !records.is_empty() {
        return Exchangers::NullMx;
    }
    hosts.sort_by_key(|r| r.preference);
    let mut unique: Vec<MxRecord> = Vec::with_capacity(hosts.len());
    for r in hosts {
        if !unique.iter().any(|u| u.exchange == r.exchange) {
            unique.push(r);
        }
    }
    let mut start = 0;
    while start < unique.len() {
        let pref = unique.get(start).map(|r| r.preference);
        let end = unique
            .iter()
            .skip(start)
            .position(|r| Some(r.preference) != pref)
            .map_or(unique.len(), |p| start + p);
        if let Some(group) = unique.get_mut(start..end) {
            group.shuffle(rng);
        }
        start = end.max(start + 1);
    }
    unique.truncate(max);
    Exchangers::Hosts(unique)
}

/// What the address lookups for one host produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum HostAddrs {
    /// At least one address, in preference order.
    Found(Vec<IpAddr>),
    /// The host name does not exist.
    NxDomain(String),
    /// The host exists but has no address of the families asked.
    NoData(String),
    /// Temporary failure.
    Failed(String),
}

/// One family's lookup result, in family-preference order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum FamilyResult {
    /// Addresses found (non-empty in practice).
    Addrs(Vec<IpAddr>),
    /// NXDOMAIN, with the DNS detail.
    NxDomain(String),
    /// NODATA, with the DNS detail.
    NoData(String),
    /// Temporary failure, with the DNS detail.
    Failed(String),
}

/// Combines the per-family results (already in preference order) of one
/// host: any address wins; otherwise a temporary failure beats NXDOMAIN,
/// which beats NODATA.
pub(crate) fn merge_families(results: Vec<FamilyResult>) -> HostAddrs {
    let mut addrs = Vec::new();
    let (mut failed, mut nx, mut nodata) = (None, None, Vec::new());
    for r in results {
        match r {
            FamilyResult::Addrs(a) => addrs.extend(a),
            FamilyResult::Failed(why) => failed = failed.or(Some(why)),
            FamilyResult::NxDomain(why) => nx = nx.or(Some(why)),
            FamilyResult::NoData(why) => nodata.push(why),
        }
    }
    if !addrs.is_empty() {
        HostAddrs::Found(addrs)
    } else if let Some(why) = failed {
        HostAddrs::Failed(why)
    } else if let Some(why) = nx {
        HostAddrs::NxDomain(why)
    } else {
        HostAddrs::NoData(nodata.join("; "))
    }
}

/// A host with its lookup outcome, before the final decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Candidate {
    /// Host name (or literal).
    pub(crate) name: String,
    /// Preference.
    pub(crate) preference: u16,
    /// Port.
    pub(crate) port: u16,
    /// Lookup outcome.
    pub(crate) addrs: HostAddrs,
}

/// Builds the destination, or the error delivery acts on (module doc).
pub(crate) fn assemble(
    domain: &str,
    kind: DestinationKind,
    candidates: Vec<Candidate>,
) -> Result<Destination, ResolveError> {
    let mut hosts = Vec::new();
    let mut skipped = Vec::new();
    let (mut all_nx, mut all_negative) = (true, true);
    for c in candidates {
        match c.addrs {
            HostAddrs::Found(addrs) => hosts.push(MxHost {
                name: c.name,
                preference: c.preference,
                port: c.port,
                addrs,
            }),
            HostAddrs::NxDomain(why) => skipped.push(why),
            HostAddrs::NoData(why) => {
                all_nx = false;
                skipped.push(why);
            }
            HostAddrs::Failed(why) => {
                all_nx = false;
                all_negative = false;
                skipped.push(why);
            }
        }
    }
    if !hosts.is_empty() {
        return Ok(Destination {
            domain: domain.to_string(),
            kind,
            hosts,
            skipped,
        });
    }
    let detail = skipped.join("; ");
    match kind {
        DestinationKind::Route | DestinationKind::Smarthost => Err(ResolveError::temporary(
            format!("no address for any configured route host of {domain}: {detail}"),
        )),
        DestinationKind::ImplicitMx if all_negative => Err(ResolveError::NoSuchDomain {
            reason: format!("{domain} has no MX and no address records: {detail}"),
        }),
        _ if all_nx && !skipped.is_empty() => Err(ResolveError::NoSuchDomain {
            reason: format!("no MX host of {domain} exists: {detail}"),
        }),
        _ => Err(ResolveError::temporary(format!(
            "no usable address for any MX host of {domain}: {detail}"
        ))),
    }
}

/// The null-MX error for `domain`.
pub(crate) fn null_mx(domain: &str, detail: &str) -> ResolveError {
    ResolveError::NullMx {
        reason: format!("{domain} publishes a null MX (RFC 7505), it accepts no mail ({detail})"),
    }
}

/// Display form of an exchanger name.
pub(crate) fn host_name(r: &MxRecord) -> String {
    show(&r.exchange)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::Name;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn mx(pref: u16, host: &str) -> MxRecord {
        MxRecord {
            preference: pref,
            exchange: Name::from_ascii(host).unwrap(),
        }
    }

    fn names(e: &Exchangers) -> Vec<String> {
        match e {
            Exchangers::Hosts(h) => h.iter().map(host_name).collect(),
            Exchangers::NullMx => vec!["<null>".into()],
        }
    }

    #[test]
    fn orders_by_preference_and_shuffles_ties() {
        let records = [
            mx(20, "c."),
            mx(10, "a."),
            mx(10, "b."),
            mx(30, "d."),
            mx(10, "a."),
        ];
        let mut seen = std::collections::HashSet::new();
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..64 {
            let order = names(&plan_exchangers(&records, 5, &mut rng));
            assert_eq!(order.len(), 4, "duplicate a. removed: {order:?}");
            assert_eq!(&order[2..], ["c", "d"]);
            seen.insert(order[..2].to_vec());
        }
        assert_eq!(seen.len(), 2, "both orders of the tie seen: {seen:?}");
        let capped = plan_exchangers(&records, 2, &mut rng);
        assert_eq!(names(&capped).len(), 2);
    }

    #[test]
    fn null_mx_only_when_every_target_is_root() {
        let mut rng = StdRng::seed_from_u64(1);
        assert_eq!(
            plan_exchangers(&[mx(0, ".")], 5, &mut rng),
            Exchangers::NullMx
        );
        assert_eq!(
            names(&plan_exchangers(
                &[mx(0, "."), mx(10, "real.")],
                5,
                &mut rng
            )),
            vec!["real"]
        );
    }

    #[test]
    fn merges_families() {
        let v4: IpAddr = "127.0.0.1".parse().unwrap();
        let v6: IpAddr = "::1".parse().unwrap();
        assert_eq!(
            merge_families(vec![
                FamilyResult::Addrs(vec![v6]),
                FamilyResult::Addrs(vec![v4])
            ]),
            HostAddrs::Found(vec![v6, v4])
        );
        assert_eq!(
            merge_families(vec![
                FamilyResult::Failed("t".into()),
                FamilyResult::Addrs(vec![v4])
            ]),
            HostAddrs::Found(vec![v4])
        );
        assert_eq!(
            merge_families(vec![
                FamilyResult::NxDomain("n".into()),
                FamilyResult::Failed("t".into())
            ]),
            HostAddrs::Failed("t".into())
        );
        assert_eq!(
            merge_families(vec![
                FamilyResult::NoData("a".into()),
                FamilyResult::NxDomain("n".into())
            ]),
            HostAddrs::NxDomain("n".into())
        );
    }

    fn cand(name: &str, addrs: HostAddrs) -> Candidate {
        Candidate {
            name: name.into(),
            preference: 10,
            port: 25,
            addrs,
        }
    }

    #[test]
    fn assembles_outcomes() {
        let ip: IpAddr = "127.1.0.1".parse().unwrap();
        let d = assemble(
            "x.test",
            DestinationKind::Mx,
            vec![
                cand("a", HostAddrs::NxDomain("a gone".into())),
                cand("b", HostAddrs::Found(vec![ip])),
            ],
        )
        .unwrap();
        assert_eq!(d.hosts.len(), 1);
        assert_eq!(d.skipped, vec!["a gone"]);

        let all_nx = vec![
            cand("a", HostAddrs::NxDomain("a".into())),
            cand("b", HostAddrs::NxDomain("b".into())),
        ];
        let e = assemble("x.test", DestinationKind::Mx, all_nx.clone()).unwrap_err();
        assert_eq!(e.enhanced_status(), (5, 1, 2));
        // The same for a route is temporary.
        let e = assemble("x.test", DestinationKind::Route, all_nx).unwrap_err();
        assert_eq!(e.enhanced_status(), (4, 4, 3));

        let mixed = vec![
            cand("a", HostAddrs::NxDomain("a".into())),
            cand("b", HostAddrs::NoData("b".into())),
        ];
        let e = assemble("x.test", DestinationKind::Mx, mixed).unwrap_err();
        assert_eq!(e.enhanced_status(), (4, 4, 3));
        assert!(e.reason().contains("a; b"), "{e}");

        let implicit = vec![cand("x.test", HostAddrs::NoData("NODATA".into()))];
        let e = assemble("x.test", DestinationKind::ImplicitMx, implicit).unwrap_err();
        assert_eq!(e.enhanced_status(), (5, 1, 2));
        let implicit = vec![cand("x.test", HostAddrs::Failed("timeout".into()))];
        let e = assemble("x.test", DestinationKind::ImplicitMx, implicit).unwrap_err();
        assert_eq!(e.enhanced_status(), (4, 4, 3));
        assert_eq!(null_mx("n.test", "d").enhanced_status(), (5, 1, 10));
    }
}
