//! Every failure mode, from CLI-style rules and from the zone file.

#[path = "dns_common/mod.rs"]
mod common;

use common::*;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use sluice_bench::dns::{DnsOptions, FailureMode, FailureRule};

fn rules(specs: &[&str]) -> Vec<FailureRule> {
    specs.iter().map(|s| s.parse().unwrap()).collect()
}

#[tokio::test]
async fn nxdomain_servfail_and_refused() {
    let srv = server(DnsOptions {
        failures: rules(&["d1.test=nxdomain", "d2.test=servfail", "d3.test=refused"]),
        negative_ttl: 30,
        ..opts(5)
    })
    .await;
    let addr = srv.local_addr();

    let q = query(1, "d1.test.", RecordType::MX, None);
    let r = udp(addr, &q).await;
    assert_header(&q, &r, ResponseCode::NXDomain);
    assert_eq!(negative_soa(&r), ("test.".into(), 30, 30));
    // Rules match the exact name only: the MX host still resolves.
    assert_eq!(
        a_of(&ask(addr, "mx.d1.test.", RecordType::A).await),
        vec!["127.1.0.2"]
    );

    let q = query(2, "d2.test.", RecordType::MX, None);
    let r = udp(addr, &q).await;
    assert_header(&q, &r, ResponseCode::ServFail);
    assert!(r.answers().is_empty() && r.name_servers().is_empty());
    // Same over TCP.
    let r = tcp(addr, &q).await;
    assert_header(&q, &r, ResponseCode::ServFail);

    let q = query(3, "d3.test.", RecordType::MX, None);
    let r = udp(addr, &q).await;
    assert_header(&q, &r, ResponseCode::Refused);

    let snap = srv.stats().snapshot();
    assert_eq!(snap.rcode(ResponseCode::NXDomain), 1);
    assert_eq!(snap.rcode(ResponseCode::ServFail), 2);
    assert_eq!(snap.rcode(ResponseCode::Refused), 1);
}

#[tokio::test]
async fn timeout_never_answers_on_udp_or_tcp() {
    let srv = server(DnsOptions {
        failures: rules(&["d1.test=timeout"]),
        ..opts(3)
    })
    .await;
    let addr = srv.local_addr();
    let stats = srv.stats();

    let sock = udp_client(addr).await;
    sock.send(&encode(&query(1, "d1.test.", RecordType::MX, None)))
        .await
        .unwrap();
    tokio::time::timeout(WAIT, stats.wait_for(|s| s.udp.dropped == 1))
        .await
        .unwrap();
    udp_silent(&sock).await;
    // The server is alive: the same socket gets answers for other names.
    sock.send(&encode(&query(2, "d0.test.", RecordType::MX, None)))
        .await
        .unwrap();
    let r = decode(&udp_recv(&sock).await);
    assert_eq!(r.id(), 2);

    // TCP: the dropped query gets nothing, the next one on the connection
    // is answered, so the first answer to arrive is the second query's.
    let mut conn = tcp_connect(addr).await;
    tcp_send(
        &mut conn,
        &encode(&query(3, "d1.test.", RecordType::MX, None)),
    )
    .await;
    tcp_send(
        &mut conn,
        &encode(&query(4, "d2.test.", RecordType::MX, None)),
    )
    .await;
    let r = decode(&tcp_recv(&mut conn).await);
    assert_eq!(r.id(), 4);

    let snap = stats.snapshot();
    assert_eq!(
        (snap.udp.queries, snap.udp.responses, snap.udp.dropped),
        (2, 1, 1)
    );
    assert_eq!(
        (snap.tcp.queries, snap.tcp.responses, snap.tcp.dropped),
        (2, 1, 1)
    );
    assert_eq!(snap.name("d1.test").total(), 2);
}

#[tokio::test]
async fn truncate_forces_a_tcp_retry_that_gets_everything() {
    let srv = server(DnsOptions {
        failures: rules(&["d1.test=truncate"]),
        ..opts(3)
    })
    .await;
    let addr = srv.local_addr();

    for edns in [None, Some(4096)] {
        let q = query(5, "d1.test.", RecordType::MX, edns);
        let r = udp(addr, &q).await;
        assert_header(&q, &r, ResponseCode::NoError);
        assert!(r.truncated(), "TC=1");
        assert!(r.answers().is_empty() && r.name_servers().is_empty());
        assert_eq!(r.extensions().is_some(), edns.is_some());
    }
    let q = query(6, "d1.test.", RecordType::MX, None);
    let r = tcp(addr, &q).await;
    assert_header(&q, &r, ResponseCode::NoError);
    assert!(!r.truncated());
    assert_eq!(mx_of(&r), vec![(10, "mx.d1.test.".into())]);

    let snap = srv.stats().snapshot();
    assert_eq!((snap.udp.truncated, snap.tcp.truncated), (2, 0));
    let n = snap.name("d1.test");
    assert_eq!((n.udp, n.tcp), (2, 1));
}

#[tokio::test]
async fn nullmx_mode_replaces_only_the_mx_answer() {
    let srv = server(DnsOptions {
        failures: rules(&["d2.test=nullmx", "gone.test=null-mx"]),
        ..opts(3)
    })
    .await;
    let addr = srv.local_addr();
    let q = query(1, "d2.test.", RecordType::MX, None);
    let r = udp(addr, &q).await;
    assert_header(&q, &r, ResponseCode::NoError);
    assert_eq!(mx_of(&r), vec![(0, ".".into())]);
    assert_eq!(
        txt_of(&ask(addr, "d2.test.", RecordType::TXT).await).len(),
        1
    );
    // A name that exists only through its null MX: NODATA, not NXDOMAIN.
    assert_eq!(
        mx_of(&ask(addr, "gone.test.", RecordType::MX).await),
        vec![(0, ".".into())]
    );
    let r = ask(addr, "gone.test.", RecordType::A).await;
    assert_eq!(r.response_code(), ResponseCode::NoError);
    negative_soa(&r);
}

#[tokio::test]
async fn probabilistic_failures_are_reproducible() {
    async fn run(seed: u64) -> (u64, u64) {
        let srv = server(DnsOptions {
            failures: rules(&["flaky.test=servfail@0.5"]),
            seed,
            zone: Some(zone(
                "[[record]]\nname='flaky.test'\ntype='A'\ndata='127.3.0.1'",
            )),
            ..opts(0)
        })
        .await;
        let sock = udp_client(srv.local_addr()).await;
        let mut servfail = 0;
        for id in 0..200u16 {
            sock.send(&encode(&query(id, "flaky.test.", RecordType::A, None)))
                .await
                .unwrap();
            let r = decode(&udp_recv(&sock).await);
            assert_eq!(r.id(), id);
            match r.response_code() {
                ResponseCode::ServFail => servfail += 1,
                ResponseCode::NoError => assert_eq!(a_of(&r), vec!["127.3.0.1"]),
                other => panic!("{other:?}"),
            }
        }
        let snap = srv.stats().snapshot();
        assert_eq!(snap.udp.rcode(ResponseCode::ServFail), servfail);
        (servfail, snap.udp.rcode(ResponseCode::NoError))
    }
    let (a, ok) = run(7).await;
    assert_eq!(a + ok, 200);
    assert!((60..=140).contains(&a), "{a} of 200 failed at p=0.5");
    assert_eq!(run(7).await, (a, ok), "same seed, same outcome");
}

#[tokio::test]
async fn zone_rules_apply_and_cli_rules_override_them() {
    let z = zone(
        "[[failure]]\nname='d1.test'\nmode='servfail'\n[[failure]]\nname='d2.test'\nmode='nxdomain'",
    );
    let srv = server(DnsOptions {
        zone: Some(z),
        failures: vec![FailureRule::new("d2.test", FailureMode::Refused).unwrap()],
        ..opts(3)
    })
    .await;
    let addr = srv.local_addr();
    assert_eq!(
        ask(addr, "d1.test.", RecordType::MX).await.response_code(),
        ResponseCode::ServFail
    );
    assert_eq!(
        ask(addr, "d2.test.", RecordType::MX).await.response_code(),
        ResponseCode::Refused
    );
    assert_eq!(
        ask(addr, "d0.test.", RecordType::MX).await.response_code(),
        ResponseCode::NoError
    );
}

#[tokio::test]
async fn cname_chase_stops_at_a_failing_name() {
    let srv = server(DnsOptions {
        zone: Some(zone(
            "[[record]]\nname='alias.test'\ntype='CNAME'\ndata='d1.test'",
        )),
        failures: rules(&["d1.test=servfail"]),
        ..opts(3)
    })
    .await;
    let addr = srv.local_addr();
    let r = ask(addr, "alias.test.", RecordType::MX).await;
    assert_eq!(r.response_code(), ResponseCode::NoError);
    assert_eq!(
        cnames_of(&r),
        vec![("alias.test.".into(), "d1.test.".into())]
    );
    assert_eq!(r.answers().len(), 1);
    assert_eq!(
        ask(addr, "d1.test.", RecordType::MX).await.response_code(),
        ResponseCode::ServFail
    );
}
