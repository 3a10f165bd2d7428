//! The counters match exactly what was sent.

#[path = "dns_common/mod.rs"]
mod common;

use std::collections::BTreeMap;

use common::*;
use sluice_bench::dns::{DnsOptions, DnsSnapshot, NameCounts, TransportSnapshot};

/// (name, udp, tcp, per-type counts)
type NameRow<'a> = (&'a str, u64, u64, &'a [(RecordType, u64)]);
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

#[tokio::test]
async fn snapshot_matches_a_mixed_sequence_exactly() {
    let srv = server(DnsOptions {
        failures: vec![
            "d4.test=truncate".parse().unwrap(),
            "d5.test=timeout".parse().unwrap(),
        ],
        ..opts(6)
    })
    .await;
    let addr = srv.local_addr();
    let stats = srv.stats();
    assert_eq!(stats.snapshot(), DnsSnapshot::default());

    ask(addr, "d0.test.", RecordType::MX).await;
    ask(addr, "D0.TEST.", RecordType::MX).await;
    ask(addr, "mx.d0.test.", RecordType::A).await;
    ask(addr, "nope.test.", RecordType::MX).await;
    ask(addr, "d4.test.", RecordType::MX).await; // TC
    tcp(addr, &query(1, "d4.test.", RecordType::MX, None)).await;
    tcp(addr, &query(2, "d1.test.", RecordType::TXT, None)).await;
    ask(addr, "d1.test.", RecordType::HINFO).await; // untracked type, NODATA
    let sock = udp_client(addr).await;
    sock.send(&encode(&query(3, "d5.test.", RecordType::MX, None)))
        .await
        .unwrap();
    sock.send(b"junk").await.unwrap();
    let snap = tokio::time::timeout(
        WAIT,
        stats.wait_for(|s| s.udp.dropped == 1 && s.malformed == 1),
    )
    .await
    .unwrap();

    let names = |entries: &[NameRow<'_>]| -> BTreeMap<String, NameCounts> {
        entries
            .iter()
            .map(|(n, udp, tcp, types)| {
                let by_type = types.iter().copied().collect();
                (
                    n.to_string(),
                    NameCounts {
                        udp: *udp,
                        tcp: *tcp,
                        by_type,
                    },
                )
            })
            .collect()
    };
    let expected = DnsSnapshot {
        udp: TransportSnapshot {
            queries: 7,
            responses: 6,
            truncated: 1,
            dropped: 1,
            by_type: [(RecordType::MX, 5), (RecordType::A, 1)]
                .into_iter()
                .collect(),
            other_types: 1,
            by_rcode: [(0, 5), (3, 1)].into_iter().collect(),
        },
        tcp: TransportSnapshot {
            queries: 2,
            responses: 2,
            truncated: 0,
            dropped: 0,
            by_type: [(RecordType::MX, 1), (RecordType::TXT, 1)]
                .into_iter()
                .collect(),
            other_types: 0,
            by_rcode: [(0, 2)].into_iter().collect(),
        },
        malformed: 1,
        tcp_connections: 2,
        by_name: names(&[
            ("d0.test", 2, 0, &[(RecordType::MX, 2)]),
            ("mx.d0.test", 1, 0, &[(RecordType::A, 1)]),
            ("nope.test", 1, 0, &[(RecordType::MX, 1)]),
            ("d4.test", 1, 1, &[(RecordType::MX, 2)]),
            (
                "d1.test",
                1,
                1,
                &[(RecordType::TXT, 1), (RecordType::HINFO, 1)],
            ),
            ("d5.test", 1, 0, &[(RecordType::MX, 1)]),
        ]),
    };
    assert_eq!(snap, expected);
    assert_eq!(snap.rcode(ResponseCode::NXDomain), 1);
    assert_eq!(srv.shutdown().await.stats, expected);
}

#[tokio::test]
async fn exactly_one_query_per_name_is_visible() {
    let srv = server(opts(10)).await;
    let stats = srv.stats();
    ask(srv.local_addr(), "d5.test.", RecordType::MX).await;
    let d5 = stats.name("d5.test");
    assert_eq!(
        (
            d5.total(),
            d5.of_type(RecordType::MX),
            d5.of_type(RecordType::A)
        ),
        (1, 1, 0)
    );
    assert_eq!(stats.name("D5.TEST."), d5);
    assert_eq!(stats.name("d6.test").total(), 0);
    assert_eq!(stats.snapshot().by_name.len(), 1);
}

#[tokio::test]
async fn per_name_counting_can_be_switched_off() {
    let srv = server(DnsOptions {
        count_names: false,
        ..opts(3)
    })
    .await;
    ask(srv.local_addr(), "d1.test.", RecordType::MX).await;
    let snap = srv.stats().snapshot();
    assert_eq!(snap.udp.queries, 1);
    assert!(snap.by_name.is_empty());
    assert_eq!(srv.stats().name("d1.test"), NameCounts::default());
}

#[tokio::test]
async fn concurrent_clients_are_all_counted() {
    let srv = server(opts(50)).await;
    let addr = srv.local_addr();
    let mut clients = Vec::new();
    for c in 0..4u16 {
        clients.push(tokio::spawn(async move {
            let sock = udp_client(addr).await;
            let mut conn = tcp_connect(addr).await;
            for i in 0..50u16 {
                let q = query(c * 100 + i, &format!("d{i}.test."), RecordType::MX, None);
                sock.send(&encode(&q)).await.unwrap();
                assert_eq!(decode(&udp_recv(&sock).await).id(), q.id());
                tcp_send(&mut conn, &encode(&q)).await;
                assert_eq!(decode(&tcp_recv(&mut conn).await).id(), q.id());
            }
        }));
    }
    for c in clients {
        c.await.unwrap();
    }
    let snap = srv.stats().snapshot();
    assert_eq!((snap.udp.queries, snap.udp.responses), (200, 200));
    assert_eq!((snap.tcp.queries, snap.tcp.responses), (200, 200));
    assert_eq!(snap.tcp_connections, 4);
    assert_eq!(snap.by_name.len(), 50);
    assert!(snap.by_name.values().all(|n| (n.udp, n.tcp) == (4, 4)));
}
