//! EDNS0: OPT echo, payload-size limits and truncation.

#[path = "dns_common/mod.rs"]
mod common;

use common::*;
use hickory_proto::op::{Edns, ResponseCode};
use hickory_proto::rr::RecordType;
use sluice_bench::dns::DnsOptions;

/// `big.test` has a ~1.5 kB TXT answer, `mid.test` a ~700-byte one.
fn sized_zone() -> sluice_bench::dns::Zone {
    zone(&format!(
        "[[record]]\nname='big.test'\ntype='TXT'\ndata='{}'\n[[record]]\nname='mid.test'\ntype='TXT'\ndata='{}'",
        "b".repeat(1500),
        "m".repeat(700)
    ))
}

#[tokio::test]
async fn opt_is_echoed_only_when_the_query_has_one() {
    let srv = server(DnsOptions {
        max_udp_payload: 1400,
        ..opts(2)
    })
    .await;
    let addr = srv.local_addr();
    let r = udp(addr, &query(1, "d0.test.", RecordType::MX, None)).await;
    assert!(r.extensions().is_none());

    let q = query(2, "d0.test.", RecordType::MX, Some(1232));
    let r = udp(addr, &q).await;
    assert_header(&q, &r, ResponseCode::NoError);
    let opt = r.extensions().as_ref().expect("OPT echoed");
    assert_eq!((opt.version(), opt.max_payload()), (0, 1400));
    assert!(!opt.flags().dnssec_ok);
    // Exactly one OPT in the additional section, nothing else.
    assert!(r.additionals().is_empty());

    // The DO bit is copied (RFC 3225).
    let mut q = query(3, "d0.test.", RecordType::MX, None);
    let mut e = Edns::new();
    e.set_max_payload(1232).set_dnssec_ok(true);
    q.set_edns(e);
    let r = udp(addr, &q).await;
    assert!(r.extensions().as_ref().unwrap().flags().dnssec_ok);
    // Over TCP too.
    assert!(tcp(addr, &q).await.extensions().is_some());
}

#[tokio::test]
async fn answers_are_truncated_to_the_advertised_size() {
    let srv = server(DnsOptions {
        zone: Some(sized_zone()),
        ..opts(0)
    })
    .await;
    let addr = srv.local_addr();

    // (name, advertised size, expect TC)
    let cases = [
        ("mid.test.", None, true),
        ("mid.test.", Some(511), true), // below 512 counts as 512
        ("mid.test.", Some(1232), false),
        ("big.test.", Some(1232), true),
        ("big.test.", Some(4096), false),
    ];
    for (i, (name, edns, want_tc)) in cases.into_iter().enumerate() {
        let q = query(i as u16, name, RecordType::TXT, edns);
        let raw = udp_raw(addr, &encode(&q)).await;
        let limit = edns.map_or(512, |s| usize::from(s.max(512)));
        assert!(
            raw.len() <= limit,
            "{name} {edns:?}: {} > {limit}",
            raw.len()
        );
        let r = decode(&raw);
        assert_header(&q, &r, ResponseCode::NoError);
        assert_eq!(r.truncated(), want_tc, "{name} {edns:?}");
        assert_eq!(r.answers().is_empty(), want_tc, "{name} {edns:?}");
        assert_eq!(r.extensions().is_some(), edns.is_some());
    }
    // TCP carries the whole answer regardless of EDNS.
    let r = tcp(addr, &query(9, "big.test.", RecordType::TXT, None)).await;
    assert!(!r.truncated());
    let total: usize = txt_of(&r)[0].iter().map(Vec::len).sum();
    assert_eq!(total, 1500);

    let snap = srv.stats().snapshot();
    assert_eq!(
        (snap.udp.truncated, snap.udp.responses, snap.tcp.truncated),
        (3, 5, 0)
    );
}

#[tokio::test]
async fn server_cap_limits_large_client_sizes() {
    let srv = server(DnsOptions {
        zone: Some(sized_zone()),
        max_udp_payload: 1232,
        ..opts(0)
    })
    .await;
    let raw = udp_raw(
        srv.local_addr(),
        &encode(&query(1, "big.test.", RecordType::TXT, Some(4096))),
    )
    .await;
    assert!(raw.len() <= 1232);
    let r = decode(&raw);
    assert!(r.truncated());
    assert_eq!(r.extensions().as_ref().unwrap().max_payload(), 1232);
}

#[tokio::test]
async fn unknown_edns_version_gets_badvers() {
    let srv = server(opts(1)).await;
    let mut q = query(77, "d0.test.", RecordType::MX, None);
    let mut e = Edns::new();
    e.set_max_payload(1232).set_version(1);
    q.set_edns(e);
    let r = udp(srv.local_addr(), &q).await;
    assert_eq!(r.id(), 77);
    // 16 is BADVERS on the wire (hickory decodes it under its alias BADSIG).
    assert_eq!(
        u16::from(r.response_code()),
        u16::from(ResponseCode::BADVERS)
    );
    assert_eq!(r.extensions().as_ref().unwrap().version(), 0);
    assert!(r.answers().is_empty());
    assert_eq!(srv.stats().snapshot().udp.by_rcode.get(&16), Some(&1));
}
