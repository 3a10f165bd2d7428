//! Packet-level protocol logic, free of sockets and clocks: building a
//! query, deciding whether a datagram is *the* reply to it, and turning a
//! reply into records (following the CNAME chain inside it).
//!
//! Strict matching is the stub resolver's only defence against off-path
//! spoofing (we do not validate DNSSEC): a reply must come from the server
//! we asked, carry our random id, and echo our exact question (name
//! compared case-insensitively, type, class IN). Anything else is dropped
//! by the caller, which keeps waiting for the genuine reply.

use std::net::{IpAddr, SocketAddr};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};

/// One MX record as used by the MX logic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MxRecord {
    /// Preference (lower is tried first).
    pub preference: u16,
    /// Exchanger name (`.` for a null MX).
    pub exchange: Name,
}

/// The data of one RRset we care about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Records {
    /// MX records.
    Mx(Vec<MxRecord>),
    /// A or AAAA addresses.
    Addrs(Vec<IpAddr>),
}

/// What we expect a reply to echo.
#[derive(Clone, Debug)]
pub struct Expected {
    /// Where the query went.
    pub server: SocketAddr,
    /// Query id.
    pub id: u16,
    /// Question name (fully qualified).
    pub name: Name,
    /// Question type.
    pub qtype: RecordType,
}

/// Encodes a recursive query (RD=1) with an EDNS0 OPT record advertising
/// `payload` bytes.
pub fn build_query(
    id: u16,
    name: &Name,
    qtype: RecordType,
    payload: u16,
) -> Result<Vec<u8>, String> {
    let mut msg = Message::new();
    msg.set_id(id)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true)
        .add_query(Query::query(name.clone(), qtype));
    let mut edns = Edns::new();
    edns.set_max_payload(payload).set_version(0);
    msg.set_edns(edns);
    msg.to_vec()
        .map_err(|e| format!("cannot encode query for {} {qtype}: {e}", show(name)))
}

/// Accepts `packet` from `from` as the reply to `expected`, or says why not.
pub fn check_reply(
    packet: &[u8],
    from: SocketAddr,
    expected: &Expected,
) -> Result<Message, &'static str> {
    if from != expected.server {
        return Err("reply from another address");
    }
    let msg = Message::from_vec(packet).map_err(|_| "undecodable reply")?;
    if msg.message_type() != MessageType::Response {
        return Err("not a response");
    }
    if msg.id() != expected.id {
        return Err("wrong query id");
    }
    if msg.op_code() != OpCode::Query {
        return Err("wrong opcode");
    }
    match msg.queries() {
        [q] if q.name() == &expected.name
            && q.query_type() == expected.qtype
            && q.query_class() == DNSClass::IN => {}
        _ => return Err("question not echoed"),
    }
    Ok(msg)
}

/// What one reply says about `qname`/`qtype`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Interpretation {
    /// Records found at `canonical` (after `links` CNAMEs); `ttl` is the
    /// smallest TTL along the way.
    Positive {
        /// The data.
        records: Records,
        /// Owner name of the data.
        canonical: Name,
        /// Smallest TTL of the data and the CNAMEs followed.
        ttl: u32,
        /// CNAME links followed in this reply.
        links: usize,
    },
    /// NOERROR without data (`rcode` NoError) or NXDOMAIN, for `canonical`.
    Negative {
        /// True for NXDOMAIN.
        nxdomain: bool,
        /// The name the negative answer is about.
        canonical: Name,
        /// RFC 2308 negative TTL: min(SOA TTL, SOA MINIMUM), capped by the
        /// CNAMEs' TTLs; `None` without an SOA (then not cacheable).
        ttl: Option<u32>,
        /// CNAME links followed in this reply.
        links: usize,
    },
    /// The chain ends at `target` with no data and no negative proof: the
    /// server stopped chasing, so the client must query `target` itself.
    Incomplete {
        /// Next name to ask.
        target: Name,
        /// Smallest CNAME TTL seen.
        ttl: u32,
        /// CNAME links followed in this reply.
        links: usize,
    },
    /// The chain is longer than the budget or loops.
    BadChain(String),
}

/// Interprets a NOERROR or NXDOMAIN reply for `qname`/`qtype`, following at
/// most `budget` CNAME links inside it (RFC 1034 §3.6.2, RFC 6604: the
/// RCODE applies to the last name of the chain).
pub fn interpret(msg: &Message, qname: &Name, qtype: RecordType, budget: usize) -> Interpretation {
    let mut current = qname.clone();
    let mut links = 0usize;
    let mut ttl = u32::MAX;
    loop {
        let mut found = Vec::new();
        let mut mx = Vec::new();
        let mut data_ttl = u32::MAX;
        let mut cname = None;
        for r in msg.answers() {
            if r.dns_class() != DNSClass::IN || r.name() != &current {
                continue;
            }
            match (r.data(), qtype) {
                (RData::A(a), RecordType::A) => found.push(IpAddr::V4(a.0)),
                (RData::AAAA(a), RecordType::AAAA) => found.push(IpAddr::V6(a.0)),
                (RData::MX(m), RecordType::MX) => mx.push(MxRecord {
                    preference: m.preference(),
                    exchange: m.exchange().to_lowercase(),
                }),
                (RData::CNAME(c), _) => {
                    cname = Some((c.0.clone(), r.ttl()));
                    continue;
                }
                _ => continue,
            }
            data_ttl = data_ttl.min(r.ttl());
        }
        if !found.is_empty() || !mx.is_empty() {
            let records = if qtype == RecordType::MX {
                Records::Mx(mx)
            } else {
                Records::Addrs(found)
            };
            return Interpretation::Positive {
                records,
                canonical: current,
                ttl: ttl.min(data_ttl),
                links,
            };
        }
        if let Some((target, cname_ttl)) = cname {
            links += 1;
            if links > budget {
                return Interpretation::BadChain(format!(
                    "CNAME chain from {} longer than the limit",
                    show(qname)
                ));
            }
            if target == *qname || target == current {
                return Interpretation::BadChain(format!("CNAME loop at {}", show(&target)));
            }
            ttl = ttl.min(cname_ttl);
            current = target;
            continue;
        }
        let soa_ttl = negative_ttl(msg);
        let nxdomain = msg.response_code() == ResponseCode::NXDomain;
        if links > 0 && !nxdomain && soa_ttl.is_none() {
            return Interpretation::Incomplete {
                target: current,
                ttl,
                links,
            };
        }
        return Interpretation::Negative {
            nxdomain,
            canonical: current,
            ttl: soa_ttl.map(|t| t.min(ttl)),
            links,
        };
    }
}

/// RFC 2308 §5: the negative TTL is min(SOA record TTL, SOA MINIMUM).
fn negative_ttl(msg: &Message) -> Option<u32> {
    msg.name_servers().iter().find_map(|r| match r.data() {
        RData::SOA(soa) => Some(r.ttl().min(soa.minimum())),
        _ => None,
    })
}

/// `d5.test` for `d5.test.`; `.` for the root.
pub fn show(name: &Name) -> String {
    if name.is_root() {
        return ".".to_string();
    }
    let mut s = name.to_ascii();
    if s.ends_with('.') {
        s.pop();
    }
    s
}

/// `127.0.0.53` for port 53, `127.0.0.1:5353` otherwise.
pub fn show_server(server: SocketAddr) -> String {
    if server.port() == super::resolv_conf::DNS_PORT {
        server.ip().to_string()
    } else {
        server.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::{A, CNAME, MX, SOA};
    use hickory_proto::rr::Record;

    fn n(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    fn server() -> SocketAddr {
        "127.0.0.1:5353".parse().unwrap()
    }

    fn reply_to(id: u16, qname: &str, qtype: RecordType) -> Message {
        let mut m = Message::new();
        m.set_id(id)
            .set_message_type(MessageType::Response)
            .set_op_code(OpCode::Query)
            .add_query(Query::query(n(qname), qtype));
        m
    }

    fn soa(owner: &str, ttl: u32, minimum: u32) -> Record {
        let data = SOA::new(n("ns.test."), n("h.test."), 1, 1, 1, 1, minimum);
        Record::from_rdata(n(owner), ttl, RData::SOA(data))
    }

    #[test]
    fn query_has_rd_edns_and_question() {
        let bytes = build_query(0xABCD, &n("D5.test."), RecordType::MX, 1232).unwrap();
        let m = Message::from_vec(&bytes).unwrap();
        assert_eq!(m.id(), 0xABCD);
        assert!(m.recursion_desired());
        assert_eq!(m.message_type(), MessageType::Query);
        assert_eq!(m.max_payload(), 1232);
        assert_eq!(m.queries().len(), 1);
        assert_eq!(m.queries()[0].query_type(), RecordType::MX);
    }

    #[test]
    fn strict_matching() {
        let exp = Expected {
            server: server(),
            id: 7,
            name: n("d5.test."),
            qtype: RecordType::MX,
        };
        let good = reply_to(7, "D5.TEST.", RecordType::MX).to_vec().unwrap();
        assert!(
            check_reply(&good, server(), &exp).is_ok(),
            "case-insensitive name"
        );
        let other: SocketAddr = "127.0.0.2:5353".parse().unwrap();
        assert_eq!(
            check_reply(&good, other, &exp).unwrap_err(),
            "reply from another address"
        );
        let bad_id = reply_to(8, "d5.test.", RecordType::MX).to_vec().unwrap();
        assert_eq!(
            check_reply(&bad_id, server(), &exp).unwrap_err(),
            "wrong query id"
        );
        for m in [
            reply_to(7, "d6.test.", RecordType::MX),
            reply_to(7, "d5.test.", RecordType::A),
            {
                let mut m = reply_to(7, "d5.test.", RecordType::MX);
                m.queries_mut()[0].set_query_class(DNSClass::CH);
                m
            },
            {
                let mut m = reply_to(7, "d5.test.", RecordType::MX);
                m.take_queries();
                m
            },
        ] {
            let bytes = m.to_vec().unwrap();
            assert_eq!(
                check_reply(&bytes, server(), &exp).unwrap_err(),
                "question not echoed"
            );
        }
        let mut q = reply_to(7, "d5.test.", RecordType::MX);
        q.set_message_type(MessageType::Query);
        assert!(check_reply(&q.to_vec().unwrap(), server(), &exp).is_err());
        assert!(check_reply(&[1, 2, 3], server(), &exp).is_err());
    }

    #[test]
    fn follows_cnames_inside_the_reply() {
        let mut m = reply_to(1, "alias.test.", RecordType::MX);
        m.add_answer(Record::from_rdata(
            n("alias.test."),
            50,
            RData::CNAME(CNAME(n("real.test."))),
        ));
        m.add_answer(Record::from_rdata(
            n("Real.Test."),
            300,
            RData::MX(MX::new(10, n("MX.real.test."))),
        ));
        m.add_answer(Record::from_rdata(
            n("other.test."),
            1,
            RData::MX(MX::new(5, n("x.test."))),
        ));
        match interpret(&m, &n("alias.test."), RecordType::MX, 8) {
            Interpretation::Positive {
                records,
                canonical,
                ttl,
                links,
            } => {
                assert_eq!(
                    records,
                    Records::Mx(vec![MxRecord {
                        preference: 10,
                        exchange: n("mx.real.test.")
                    }])
                );
                assert_eq!(canonical, n("real.test."));
                assert_eq!((ttl, links), (50, 1));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            interpret(&m, &n("alias.test."), RecordType::MX, 0),
            Interpretation::BadChain(_)
        ));
    }

    #[test]
    fn incomplete_chain_and_negative_answers() {
        let mut m = reply_to(1, "a.test.", RecordType::A);
        m.add_answer(Record::from_rdata(
            n("a.test."),
            60,
            RData::CNAME(CNAME(n("b.test."))),
        ));
        assert_eq!(
            interpret(&m, &n("a.test."), RecordType::A, 8),
            Interpretation::Incomplete {
                target: n("b.test."),
                ttl: 60,
                links: 1
            }
        );
        // Same chain with an SOA: NODATA for the target, TTL capped by the CNAME.
        m.add_name_server(soa("test.", 120, 90));
        assert_eq!(
            interpret(&m, &n("a.test."), RecordType::A, 8),
            Interpretation::Negative {
                nxdomain: false,
                canonical: n("b.test."),
                ttl: Some(60),
                links: 1
            }
        );
        let mut nx = reply_to(1, "x.test.", RecordType::MX);
        nx.set_response_code(ResponseCode::NXDomain);
        nx.add_name_server(soa("test.", 120, 45));
        assert_eq!(
            interpret(&nx, &n("x.test."), RecordType::MX, 8),
            Interpretation::Negative {
                nxdomain: true,
                canonical: n("x.test."),
                ttl: Some(45),
                links: 0
            }
        );
        let nodata = reply_to(1, "x.test.", RecordType::AAAA);
        assert_eq!(
            interpret(&nodata, &n("x.test."), RecordType::AAAA, 8),
            Interpretation::Negative {
                nxdomain: false,
                canonical: n("x.test."),
                ttl: None,
                links: 0
            }
        );
        // A records do not answer an AAAA question.
        let mut wrong = reply_to(1, "x.test.", RecordType::AAAA);
        wrong.add_answer(Record::from_rdata(
            n("x.test."),
            5,
            RData::A(A::new(127, 0, 0, 1)),
        ));
        assert!(matches!(
            interpret(&wrong, &n("x.test."), RecordType::AAAA, 8),
            Interpretation::Negative { .. }
        ));
    }

    #[test]
    fn cname_loop_detected() {
        let mut m = reply_to(1, "a.test.", RecordType::A);
        m.add_answer(Record::from_rdata(
            n("a.test."),
            60,
            RData::CNAME(CNAME(n("b.test."))),
        ));
        m.add_answer(Record::from_rdata(
            n("b.test."),
            60,
            RData::CNAME(CNAME(n("a.test."))),
        ));
        assert!(matches!(
            interpret(&m, &n("a.test."), RecordType::A, 8),
            Interpretation::BadChain(_)
        ));
    }

    #[test]
    fn display_helpers() {
        assert_eq!(show(&n("d5.test.")), "d5.test");
        assert_eq!(show(&Name::root()), ".");
        assert_eq!(show_server("127.0.0.53:53".parse().unwrap()), "127.0.0.53");
        assert_eq!(show_server(server()), "127.0.0.1:5353");
    }
}
