//! Turns one request packet into one response packet (or a deliberate
//! silence). Kept free of sockets so the same code serves UDP and TCP and
//! so the transport difference is a single parameter: the size limit and
//! whether the `truncate` failure mode applies.
//!
//! Nothing here trusts the packet: the header is read first (unreadable →
//! dropped), the rest is decoded by hickory-proto (undecodable → FORMERR
//! echoing whatever question could be read), and every lookup is by value.

use hickory_proto::op::{Edns, Header, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Record};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncodable, BinEncoder};

use super::authority::Authority;
use super::counters::{DnsStats, Transport};
use super::error::DnsError;
use super::failure::{FailureMode, FailureTable};
use super::options::DnsOptions;

/// Classic DNS UDP limit without EDNS (RFC 1035 §4.2.1).
const PLAIN_UDP_LIMIT: usize = 512;
/// TCP framing limit.
const TCP_LIMIT: usize = u16::MAX as usize;

pub(crate) struct Responder {
    authority: Authority,
    failures: FailureTable,
    stats: DnsStats,
    max_udp_payload: u16,
}

/// The parts of a response besides header and question.
struct Body {
    rcode: ResponseCode,
    answers: Vec<Record>,
    authority: Vec<Record>,
    force_truncated: bool,
}

impl Body {
    fn empty(rcode: ResponseCode) -> Self {
        Body {
            rcode,
            answers: Vec::new(),
            authority: Vec::new(),
            force_truncated: false,
        }
    }
}

impl Responder {
    pub(crate) fn new(opts: &DnsOptions, stats: DnsStats) -> Result<Self, DnsError> {
        let authority = Authority::new(opts)?;
        let zone_rules = opts.zone.iter().flat_map(|z| z.failures.iter().cloned());
        let failures =
            FailureTable::new(zone_rules.chain(opts.failures.iter().cloned()), opts.seed);
        Ok(Responder {
            authority,
            failures,
            stats,
            max_udp_payload: opts.max_udp_payload,
        })
    }

    /// Handles one request. Returns true when `out` holds a response to
    /// send; counters are updated before returning.
    pub(crate) fn handle(&self, packet: &[u8], transport: Transport, out: &mut Vec<u8>) -> bool {
        let send = self.handle_inner(packet, transport, out);
        self.stats.notify();
        send
    }

    fn handle_inner(&self, packet: &[u8], transport: Transport, out: &mut Vec<u8>) -> bool {
        out.clear();
        let Ok(header) = Header::read(&mut BinDecoder::new(packet)) else {
            self.stats.malformed();
            return false;
        };
        if header.message_type() == MessageType::Response {
            // Never answer answers: that is how reflection loops start.
            self.stats.malformed();
            return false;
        }
        self.stats.query(transport);
        let request = match Message::from_vec(packet) {
            Ok(m) => m,
            Err(_) => {
                let question = first_question(packet);
                return self.reply(
                    &header,
                    question.as_ref(),
                    None,
                    Body::empty(ResponseCode::FormErr),
                    transport,
                    out,
                );
            }
        };
        let edns = request.extensions().as_ref();
        let question = request.queries().first();
        if header.op_code() != OpCode::Query {
            return self.reply(
                &header,
                question,
                edns,
                Body::empty(ResponseCode::NotImp),
                transport,
                out,
            );
        }
        let (Some(query), 1) = (question, request.queries().len()) else {
            return self.reply(
                &header,
                question,
                edns,
                Body::empty(ResponseCode::FormErr),
                transport,
                out,
            );
        };
        if edns.is_some_and(|e| e.version() > 0) {
            return self.reply(
                &header,
                question,
                edns,
                Body::empty(ResponseCode::BADVERS),
                transport,
                out,
            );
        }
        let qname = query.name();
        let qtype = query.query_type();
        self.stats.question(transport, qname, qtype);
        if query.query_class() != DNSClass::IN {
            return self.reply(
                &header,
                question,
                edns,
                Body::empty(ResponseCode::Refused),
                transport,
                out,
            );
        }
        let mut body = Body::empty(ResponseCode::NoError);
        match self.failures.check(qname) {
            Some(FailureMode::Timeout) => {
                self.stats.dropped(transport);
                return false;
            }
            Some(FailureMode::ServFail) => body.rcode = ResponseCode::ServFail,
            Some(FailureMode::Refused) => body.rcode = ResponseCode::Refused,
            Some(FailureMode::NxDomain) => {
                body.rcode = ResponseCode::NXDomain;
                body.authority.push(self.authority.soa(qname));
            }
            Some(FailureMode::Truncate) if transport == Transport::Udp => {
                body.force_truncated = true;
            }
            mode => {
                body.rcode = self.authority.resolve(
                    qname,
                    qtype,
                    mode == Some(FailureMode::NullMx),
                    &self.failures,
                    &mut body.answers,
                    &mut body.authority,
                );
            }
        }
        self.reply(&header, question, edns, body, transport, out)
    }

    /// Encodes the response into `out`, truncating to the transport's
    /// limit, and counts it.
    fn reply(
        &self,
        request: &Header,
        question: Option<&Query>,
        request_edns: Option<&Edns>,
        body: Body,
        transport: Transport,
        out: &mut Vec<u8>,
    ) -> bool {
        let limit = match transport {
            Transport::Tcp => TCP_LIMIT,
            Transport::Udp => match request_edns {
                Some(e) => {
                    usize::from(e.max_payload().min(self.max_udp_payload)).max(PLAIN_UDP_LIMIT)
                }
                None => PLAIN_UDP_LIMIT,
            },
        };
        let mut header = Header::response_from_request(request);
        header
            .set_authoritative(true)
            .set_recursion_available(false)
            .set_response_code(body.rcode);
        let mut msg = Message::new();
        msg.set_header(header);
        if let Some(q) = question {
            msg.add_query(q.clone());
        }
        if let Some(e) = request_edns {
            // RFC 6891: answer EDNS with EDNS; RFC 3225: copy the DO bit.
            let mut ours = Edns::new();
            ours.set_max_payload(self.max_udp_payload)
                .set_version(0)
                .set_dnssec_ok(e.flags().dnssec_ok);
            msg.set_edns(ours);
        }
        let mut truncated = body.force_truncated;
        if !truncated {
            msg.insert_answers(body.answers);
            msg.insert_name_servers(body.authority);
            truncated = !encode(&msg, out) || out.len() > limit || tc_bit(out);
        }
        if truncated {
            // RFC 2181 §9: with TC set the client retries over TCP, so send
            // just header, question and OPT rather than a partial RRset.
            let msg = msg.truncate();
            if !encode(&msg, out) || out.len() > limit {
                out.clear();
                self.stats.dropped(transport);
                return false;
            }
        }
        self.stats.response(transport, body.rcode, truncated);
        true
    }
}

/// Encodes `msg` into `out`; false if the encoder refused it.
fn encode(msg: &Message, out: &mut Vec<u8>) -> bool {
    out.clear();
    let mut encoder = BinEncoder::new(out);
    msg.emit(&mut encoder).is_ok()
}

/// Whether the encoder itself had to set TC (records past 65 535 bytes).
fn tc_bit(packet: &[u8]) -> bool {
    packet.get(2).is_some_and(|b| b & 0x02 != 0)
}

/// The first question of an otherwise undecodable message, to echo in FORMERR.
fn first_question(packet: &[u8]) -> Option<Query> {
    let mut decoder = BinDecoder::new(packet);
    let header = Header::read(&mut decoder).ok()?;
    if header.query_count() == 0 {
        return None;
    }
    Query::read(&mut decoder).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::zone::Zone;
    use hickory_proto::rr::{Name, RecordType};

    fn responder() -> Responder {
        let zone = Zone::from_toml_str(
            "[[record]]\nname='a.test'\ntype='CNAME'\ndata='d1.test'\n\
             [[record]]\nname='t.test'\ntype='TXT'\ndata='hello'",
        )
        .unwrap();
        let opts = DnsOptions {
            domains: 5,
            zone: Some(zone),
            failures: vec![
                "d2.test=truncate".parse().unwrap(),
                "d3.test=nxdomain@0.5".parse().unwrap(),
            ],
            ..DnsOptions::default()
        };
        Responder::new(&opts, DnsStats::new(true)).unwrap()
    }

    fn seeds() -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for (name, qtype) in [
            ("d1.test.", RecordType::MX),
            ("a.test.", RecordType::A),
            ("d2.test.", RecordType::ANY),
            ("t.test.", RecordType::TXT),
            ("d3.test.", RecordType::MX),
        ] {
            let mut m = Message::new();
            m.set_id(1)
                .add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
            out.push(m.to_vec().unwrap());
            let mut e = Edns::new();
            e.set_max_payload(1232);
            m.set_edns(e);
            out.push(m.to_vec().unwrap());
        }
        out
    }

    /// Mutated and random packets never panic, and whatever is sent back
    /// decodes and respects the UDP size limit.
    #[test]
    fn survives_mutated_packets() {
        let r = responder();
        let seeds = seeds();
        let mut state = 0x1234_5678_9abc_def0u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut out = Vec::new();
        let mut answered = 0;
        for i in 0..20_000usize {
            let mut p = seeds[i % seeds.len()].clone();
            match next() % 4 {
                0 => {
                    for _ in 0..1 + next() % 4 {
                        let at = (next() as usize) % p.len();
                        p[at] = next() as u8;
                    }
                }
                1 => p.truncate((next() as usize) % (p.len() + 1)),
                2 => p.extend((0..next() % 64).map(|_| next() as u8)),
                _ => p = (0..next() % 80).map(|_| next() as u8).collect(),
            }
            for t in [Transport::Udp, Transport::Tcp] {
                if r.handle(&p, t, &mut out) {
                    answered += 1;
                    let m = Message::from_vec(&out).unwrap();
                    assert_eq!(m.message_type(), MessageType::Response);
                    if t == Transport::Udp {
                        assert!(out.len() <= 4096);
                    }
                }
            }
        }
        assert!(answered > 10_000, "{answered}");
        let s = r.stats.snapshot();
        assert_eq!(s.udp.queries, s.udp.responses + s.udp.dropped);
        assert_eq!(s.tcp.queries, s.tcp.responses + s.tcp.dropped);
    }
}
