//! The data the stub is authoritative for, merged from three sources in
//! increasing precedence: synthetic domains (computed per query), provider
//! rollups and explicit zone records (both stored in one map at start-up).
//!
//! The stub claims every top-level label as a zone apex, so any name it
//! has no data for gets a clean NXDOMAIN with an SOA, ancestors of known
//! names are empty non-terminals (NODATA, never NXDOMAIN: RFC 8020 lets a
//! resolver prune a whole subtree on NXDOMAIN), and single-label names
//! answer SOA queries. There is deliberately no additional-section
//! processing: clients resolve MX hosts with their own queries, which keeps
//! per-name counters predictable.

use std::collections::{HashMap, HashSet};
use std::net::Ipv6Addr;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, AAAA, MX, SOA, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::error::DnsError;
use super::failure::FailureTable;
use super::options::DnsOptions;
use super::synthetic::{self, SynthName, SYNTHETIC_MX_PREFERENCE, SYNTHETIC_TXT};

/// Where a name was found.
enum Found<'a> {
    Node(&'a [Record]),
    Synth(SynthName),
    Apex,
    Empty,
}

/// What a name holds for the asked type.
enum Outcome {
    Answered,
    NoData,
    Cname(Name),
}

/// Record building failed; only possible through a bug, answered SERVFAIL.
struct Internal;

pub(crate) struct Authority {
    nodes: HashMap<Name, Vec<Record>>,
    ents: HashSet<Name>,
    domains: usize,
    /// Contiguous synthetic index blocks `[previous end, end)` that use a
    /// provider's MX set instead of `mx.d{i}.test`.
    blocks: Vec<(usize, Vec<Record>)>,
    ttl: u32,
    negative_ttl: u32,
    aaaa: bool,
    max_cname_chase: usize,
    soa_mname: Name,
    soa_rname: Name,
}

fn txt(text: &str) -> RData {
    RData::TXT(TXT::new(vec![text.to_string()]))
}

fn push_unique(node: &mut Vec<Record>, record: Record) {
    if !node.contains(&record) {
        node.push(record);
    }
}

impl Authority {
    pub(crate) fn new(opts: &DnsOptions) -> Result<Self, DnsError> {
        let internal = |m: String| DnsError::zone("<built-in>", m);
        let mut nodes: HashMap<Name, Vec<Record>> = HashMap::new();
        let mut blocks = Vec::new();
        if let Some(zone) = &opts.zone {
            zone.validate("<zone>")?;
            let mut next = 0usize;
            for p in &zone.providers {
                let ttl = p.ttl.unwrap_or(opts.ttl);
                let mx: Vec<Record> = p
                    .hosts
                    .iter()
                    .map(|h| {
                        let data = RData::MX(MX::new(h.preference, h.name.clone()));
                        Record::from_rdata(Name::root(), ttl, data)
                    })
                    .collect();
                for d in &p.domains {
                    let node = nodes.entry(d.clone()).or_default();
                    for r in &mx {
                        let mut r = r.clone();
                        r.set_name(d.clone());
                        push_unique(node, r);
                    }
                    push_unique(node, Record::from_rdata(d.clone(), ttl, txt(SYNTHETIC_TXT)));
                }
                for h in &p.hosts {
                    let node = nodes.entry(h.name.clone()).or_default();
                    let a = RData::A(A(h.address));
                    push_unique(node, Record::from_rdata(h.name.clone(), ttl, a));
                    if opts.aaaa {
                        let aaaa = RData::AAAA(AAAA(Ipv6Addr::LOCALHOST));
                        push_unique(node, Record::from_rdata(h.name.clone(), ttl, aaaa));
                    }
                }
                if p.share > 0.0 {
                    let k = (opts.domains as f64 * p.share).round() as usize;
                    let end = next.saturating_add(k).min(opts.domains);
                    if end > next {
                        blocks.push((end, mx.clone()));
                    }
                    next = end;
                }
            }
            // Explicit records replace whatever a provider put at the same name.
            let mut explicit: HashMap<Name, Vec<Record>> = HashMap::new();
            for r in &zone.records {
                let ttl = r.ttl.unwrap_or(opts.ttl);
                let rec = Record::from_rdata(r.name.clone(), ttl, r.data.clone());
                push_unique(explicit.entry(r.name.clone()).or_default(), rec);
            }
            nodes.extend(explicit);
        }
        let mut ents = HashSet::new();
        for name in nodes.keys() {
            for k in 2..usize::from(name.num_labels()) {
                let ancestor = name.trim_to(k);
                if !nodes.contains_key(&ancestor) {
                    ents.insert(ancestor);
                }
            }
        }
        let soa_mname =
            Name::from_ascii("ns.sluice-bench.test.").map_err(|e| internal(e.to_string()))?;
        let soa_rname = Name::from_ascii("hostmaster.sluice-bench.test.")
            .map_err(|e| internal(e.to_string()))?;
        Ok(Authority {
            nodes,
            ents,
            domains: opts.domains,
            blocks,
            ttl: opts.ttl,
            negative_ttl: opts.negative_ttl,
            aaaa: opts.aaaa,
            max_cname_chase: opts.max_cname_chase,
            soa_mname,
            soa_rname,
        })
    }

    fn find(&self, name: &Name) -> Option<Found<'_>> {
        if !self.nodes.is_empty() {
            if let Some(records) = self.nodes.get(name) {
                return Some(Found::Node(records));
            }
        }
        if let Some(s) = synthetic::parse(name, self.domains) {
            return Some(Found::Synth(s));
        }
        if name.num_labels() <= 1 {
            return Some(Found::Apex);
        }
        if self.ents.contains(name) {
            return Some(Found::Empty);
        }
        None
    }

    /// The SOA of the apex (top-level label) above `name`, for negative
    /// answers; TTL and MINIMUM are the negative TTL (RFC 2308 §5).
    pub(crate) fn soa(&self, name: &Name) -> Record {
        let soa = SOA::new(
            self.soa_mname.clone(),
            self.soa_rname.clone(),
            1,
            3600,
            600,
            86400,
            self.negative_ttl,
        );
        Record::from_rdata(name.trim_to(1), self.negative_ttl, RData::SOA(soa))
    }

    /// Fills `answers` (and `authority` for negative answers) for one
    /// question and returns the RCODE. `null_mx` answers MX with `MX 0 .`
    /// and turns NXDOMAIN into NODATA.
    pub(crate) fn resolve(
        &self,
        qname: &Name,
        qtype: RecordType,
        null_mx: bool,
        failures: &FailureTable,
        answers: &mut Vec<Record>,
        authority: &mut Vec<Record>,
    ) -> ResponseCode {
        if null_mx && qtype == RecordType::MX {
            let data = RData::MX(MX::new(0, Name::root()));
            answers.push(Record::from_rdata(qname.clone(), self.ttl, data));
            return ResponseCode::NoError;
        }
        let mut owner = qname.clone();
        let mut links = 0usize;
        loop {
            let Some(found) = self.find(&owner) else {
                authority.push(self.soa(&owner));
                return if null_mx && links == 0 {
                    ResponseCode::NoError
                } else {
                    ResponseCode::NXDomain
                };
            };
            match self.collect(found, &owner, qtype, answers) {
                Ok(Outcome::Answered) => return ResponseCode::NoError,
                Ok(Outcome::NoData) => {
                    authority.push(self.soa(&owner));
                    return ResponseCode::NoError;
                }
                Ok(Outcome::Cname(target)) => {
                    // Stop at the chase limit, at a loop, or at a name with
                    // a failure rule (the client must meet that failure
                    // with its own query).
                    if links >= self.max_cname_chase
                        || failures.has_rule(&target)
                        || answers.iter().any(|r| r.name() == &target)
                    {
                        return ResponseCode::NoError;
                    }
                    links += 1;
                    owner = target;
                }
                Err(Internal) => {
                    answers.clear();
                    authority.clear();
                    return ResponseCode::ServFail;
                }
            }
        }
    }

    fn collect(
        &self,
        found: Found<'_>,
        owner: &Name,
        qtype: RecordType,
        out: &mut Vec<Record>,
    ) -> Result<Outcome, Internal> {
        let before = out.len();
        let wants = |t: RecordType| qtype == t || qtype == RecordType::ANY;
        let push = |out: &mut Vec<Record>, ttl: u32, data: RData| {
            out.push(Record::from_rdata(owner.clone(), ttl, data));
        };
        match found {
            Found::Node(records) => {
                let cname = records.iter().find_map(|r| match r.data() {
                    RData::CNAME(c) => Some(c.0.clone()),
                    _ => None,
                });
                for r in records {
                    if cname.is_some() || wants(r.record_type()) {
                        let mut r = r.clone();
                        r.set_name(owner.clone());
                        out.push(r);
                    }
                }
                if let Some(target) = cname {
                    if !wants(RecordType::CNAME) {
                        return Ok(Outcome::Cname(target));
                    }
                }
            }
            Found::Synth(SynthName::Domain(i)) => {
                if wants(RecordType::MX) {
                    match self.blocks.iter().find(|(end, _)| i < *end) {
                        Some((_, mx)) => {
                            for r in mx {
                                let mut r = r.clone();
                                r.set_name(owner.clone());
                                out.push(r);
                            }
                        }
                        None => {
                            let host = synthetic::mx_host_name(i).ok_or(Internal)?;
                            push(
                                out,
                                self.ttl,
                                RData::MX(MX::new(SYNTHETIC_MX_PREFERENCE, host)),
                            );
                        }
                    }
                }
                if wants(RecordType::TXT) {
                    push(out, self.ttl, txt(SYNTHETIC_TXT));
                }
            }
            Found::Synth(SynthName::MxHost(i)) => {
                if wants(RecordType::A) {
                    let addr = synthetic::synthetic_mx_addr(i).ok_or(Internal)?;
                    push(out, self.ttl, RData::A(A(addr)));
                }
                if self.aaaa && wants(RecordType::AAAA) {
                    push(out, self.ttl, RData::AAAA(AAAA(Ipv6Addr::LOCALHOST)));
                }
            }
            Found::Apex => {
                if wants(RecordType::SOA) {
                    let mut soa = self.soa(owner);
                    soa.set_name(owner.clone());
                    out.push(soa);
                }
            }
            Found::Empty => {}
        }
        Ok(if out.len() > before {
            Outcome::Answered
        } else {
            Outcome::NoData
        })
    }
}
