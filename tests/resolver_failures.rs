//! Failure handling over loopback: truncation → TCP, timeouts and
//! failover, ICMP-refused servers, SERVFAIL / REFUSED / NXDOMAIN outcomes,
//! and strict reply matching against a spoofing fake nameserver.

#[path = "dns_common/mod.rs"]
mod common;

use std::net::{SocketAddr, UdpSocket};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::{A, MX};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use sluice::dns::{FamilyPreference, Resolver, ResolverConfig};
use sluice_bench::dns::DnsOptions;

#[test]
fn truncated_udp_answer_retried_over_tcp() {
    // d2.test is forced to TC=1 over UDP; big.test has an MX set larger
    // than the 1232-byte payload we advertise, so it truncates naturally.
    let mut zone = String::new();
    for i in 0..40 {
        zone += &format!(
            "[[record]]\nname = \"big.test\"\ntype = \"MX\"\n\
             data = \"{} a-rather-long-exchanger-name-number-{i:02}.big.test\"\n",
            10 + i
        );
    }
    zone += "[[record]]\nname = \"a-rather-long-exchanger-name-number-00.big.test\"\ntype = \"A\"\ndata = \"127.3.7.1\"\n";
    let stubs = Stubs::new();
    let srv = stubs.start(DnsOptions {
        failures: vec![failure("d2.test=truncate")],
        ..opts(5, Some(&zone))
    });
    let stats = srv.stats();
    glommio(async {
        let r = Resolver::new(ResolverConfig {
            family: FamilyPreference::Ipv4Only,
            max_mx_hosts: 1,
            ..config(&[srv.local_addr()])
        })
        .unwrap();
        let d = r.resolve_mx("d2.test").await.unwrap();
        assert_eq!(d.hosts[0].name, "mx.d2.test");
        let d = r.resolve_mx("big.test").await.unwrap();
        assert_eq!(
            d.hosts[0].addrs,
            ["127.3.7.1".parse::<std::net::IpAddr>().unwrap()]
        );
        let s = r.stats();
        assert_eq!((s.truncated, s.tcp_queries), (2, 2));
    });
    for name in ["d2.test", "big.test"] {
        let n = stats.name(name);
        assert_eq!((n.udp, n.tcp), (1, 1), "{name}: one UDP then one TCP query");
    }
    let snap = stats.snapshot();
    assert_eq!(snap.tcp.queries, 2);
    assert_eq!(snap.tcp_connections, 2);
}

#[test]
fn timeout_then_next_nameserver_and_sticky_failover() {
    let (_hole, hole) = black_hole();
    let stubs = Stubs::new();
    let srv = stubs.start(opts(5, None));
    let stats = srv.stats();
    glommio(async {
        let r = Resolver::new(ResolverConfig {
            family: FamilyPreference::Ipv4Only,
            ..config(&[hole, srv.local_addr()])
        })
        .unwrap();
        let t0 = Instant::now();
        let d = r.resolve_mx("d1.test").await.unwrap();
        assert_eq!(d.hosts[0].name, "mx.d1.test");
        assert!(
            t0.elapsed() >= Duration::from_millis(300),
            "waited for the timeout"
        );
        let s = r.stats();
        assert_eq!(
            s.timeouts, 1,
            "only the MX query met the dead server: {s:?}"
        );
        assert_eq!(s.udp_queries, 3);
        // The next lookup goes straight to the server that answered.
        r.resolve_mx("d2.test").await.unwrap();
        assert_eq!(r.stats().timeouts, 1);
    });
    assert_eq!(queries(&stats, "d1.test", RecordType::MX), 1);
}

#[test]
fn all_servers_silent_is_temporary_with_detail() {
    let (_h1, hole1) = black_hole();
    let (_h2, hole2) = black_hole();
    glommio(async {
        let r = Resolver::new(ResolverConfig {
            timeout: Duration::from_millis(100),
            ..config(&[hole1, hole2])
        })
        .unwrap();
        let e = r.resolve_mx("d1.test").await.unwrap_err();
        assert_eq!(e.enhanced_status(), (4, 4, 3));
        assert!(!e.is_permanent());
        let reason = e.reason();
        assert!(reason.contains("timeout"), "{reason}");
        assert!(reason.contains(&hole1.to_string()) && reason.contains(&hole2.to_string()));
        assert!(reason.contains("d1.test MX"), "{reason}");
        assert_eq!(r.stats().timeouts, 4, "2 attempts x 2 servers");
    });
}

#[test]
fn refused_port_fails_over_without_waiting() {
    let closed = {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap()
    };
    let stubs = Stubs::new();
    let srv = stubs.start(opts(5, None));
    glommio(async {
        let r = Resolver::new(ResolverConfig {
            timeout: Duration::from_secs(5),
            ..config(&[closed, srv.local_addr()])
        })
        .unwrap();
        let t0 = Instant::now();
        r.resolve_mx("d1.test").await.unwrap();
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "ICMP error, no timeout"
        );
        let s = r.stats();
        assert_eq!((s.network_errors, s.timeouts), (1, 0), "{s:?}");
    });
}

#[test]
fn servfail_refused_and_nxdomain_outcomes() {
    let stubs = Stubs::new();
    let srv = stubs.start(DnsOptions {
        failures: vec![
            failure("d5.test=servfail"),
            failure("d6.test=refused"),
            failure("d4.test=nxdomain"),
        ],
        ..opts(10, None)
    });
    let stats = srv.stats();
    let addr = srv.local_addr();
    glommio(async {
        let r = Resolver::new(config(&[addr])).unwrap();
        let e = r.resolve_mx("d5.test").await.unwrap_err();
        assert_eq!(e.enhanced_status(), (4, 4, 3));
        assert_eq!(e.reason(), format!("SERVFAIL from {addr} for d5.test MX"));
        let e = r.resolve_mx("d6.test").await.unwrap_err();
        assert_eq!(e.enhanced_status(), (4, 4, 3));
        assert!(e.reason().starts_with("REFUSED from"), "{e}");

        for domain in ["d4.test", "nosuch.test"] {
            let e = r.resolve_mx(domain).await.unwrap_err();
            assert_eq!(e.enhanced_status(), (5, 1, 2), "{e}");
            assert!(e.is_permanent());
            assert_eq!(e.reason(), format!("NXDOMAIN from {addr} for {domain} MX"));
        }
        let s = r.stats();
        assert_eq!(
            (s.servfails, s.other_rcodes, s.nxdomains),
            (1, 1, 2),
            "{s:?}"
        );
    });
    // SERVFAIL is not repeated to the same server.
    assert_eq!(queries(&stats, "d5.test", RecordType::MX), 1);
}

#[test]
fn servfail_on_first_server_answer_from_second() {
    let stubs = Stubs::new();
    let bad = stubs.start(DnsOptions {
        failures: vec![failure("d5.test=servfail")],
        ..opts(10, None)
    });
    let good = stubs.start(opts(10, None));
    glommio(async {
        let r = Resolver::new(config(&[bad.local_addr(), good.local_addr()])).unwrap();
        let d = r.resolve_mx("d5.test").await.unwrap();
        assert_eq!(d.hosts[0].name, "mx.d5.test");
        assert_eq!(r.stats().servfails, 1);
    });
}

/// A nameserver that, for the MX question, first sends a reply with the
/// wrong id, then one with the wrong question, then one from another
/// port (the kernel drops that one: our socket is connected), each
/// pointing at evil.test, and finally the genuine reply (question echoed
/// in upper case). Other questions get a plain answer.
fn spoofing_server() -> (SocketAddr, thread::JoinHandle<usize>) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let other_port = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let addr = sock.local_addr().unwrap();
    let handle = thread::spawn(move || {
        let mut served = 0;
        let mut buf = [0u8; 2048];
        while let Ok((n, peer)) = sock.recv_from(&mut buf) {
            served += 1;
            let q = Message::from_vec(&buf[..n]).unwrap();
            let question = q.queries()[0].clone();
            let reply = |id: u16, qname: &str, data: Option<RData>| {
                let mut m = Message::new();
                let mut qq = question.clone();
                qq.set_name(Name::from_ascii(qname).unwrap());
                m.set_id(id)
                    .set_message_type(MessageType::Response)
                    .set_recursion_desired(true)
                    .set_recursion_available(true)
                    .set_response_code(ResponseCode::NoError)
                    .add_query(qq);
                if let Some(d) = data {
                    m.add_answer(Record::from_rdata(question.name().clone(), 300, d));
                }
                m.to_vec().unwrap()
            };
            let evil = || {
                Some(RData::MX(MX::new(
                    10,
                    Name::from_ascii("evil.test.").unwrap(),
                )))
            };
            match question.query_type() {
                RecordType::MX => {
                    sock.send_to(&reply(q.id() ^ 0x5555, "spoof.test.", evil()), peer)
                        .unwrap();
                    sock.send_to(&reply(q.id(), "other.test.", evil()), peer)
                        .unwrap();
                    other_port
                        .send_to(&reply(q.id(), "spoof.test.", evil()), peer)
                        .unwrap();
                    let good =
                        RData::MX(MX::new(10, Name::from_ascii("good.spoof.test.").unwrap()));
                    sock.send_to(&reply(q.id(), "SPOOF.TEST.", Some(good)), peer)
                        .unwrap();
                }
                RecordType::A => {
                    let a = RData::A(A::new(127, 3, 9, 9));
                    sock.send_to(&reply(q.id(), &question.name().to_ascii(), Some(a)), peer)
                        .unwrap();
                }
                _ => {
                    sock.send_to(&reply(q.id(), &question.name().to_ascii(), None), peer)
                        .unwrap();
                }
            }
        }
        served
    });
    (addr, handle)
}

#[test]
fn spoofed_and_mismatched_replies_are_dropped() {
    let (addr, server) = spoofing_server();
    glommio(async {
        let r = Resolver::new(ResolverConfig {
            family: FamilyPreference::Ipv4Only,
            timeout: Duration::from_secs(2),
            ..config(&[addr])
        })
        .unwrap();
        let d = r.resolve_mx("spoof.test").await.unwrap();
        assert_eq!(d.hosts.len(), 1);
        assert_eq!(d.hosts[0].name, "good.spoof.test");
        assert_eq!(
            d.hosts[0].addrs,
            ["127.3.9.9".parse::<std::net::IpAddr>().unwrap()]
        );
        let s = r.stats();
        assert_eq!(
            s.spoofed_or_mismatched, 2,
            "wrong id + wrong question: {s:?}"
        );
        assert_eq!((s.answers, s.timeouts), (2, 0));
    });
    assert_eq!(server.join().unwrap(), 2, "one MX and one A query");
}

#[test]
fn ipv6_loopback_nameserver_over_udp_and_tcp() {
    let stubs = Stubs::new();
    let srv = stubs.start(DnsOptions {
        listen: "[::1]:0".parse().unwrap(),
        failures: vec![failure("d2.test=truncate")],
        ..opts(5, None)
    });
    let stats = srv.stats();
    glommio(async {
        let r = Resolver::new(config(&[srv.local_addr()])).unwrap();
        assert_eq!(
            r.resolve_mx("d1.test").await.unwrap().hosts[0].name,
            "mx.d1.test"
        );
        assert_eq!(
            r.resolve_mx("d2.test").await.unwrap().hosts[0].name,
            "mx.d2.test"
        );
        assert_eq!(r.stats().tcp_queries, 1);
    });
    assert_eq!(stats.name("d2.test").tcp, 1);
}
