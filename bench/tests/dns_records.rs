//! Positive and negative answers for every record type and data source.

#[path = "dns_common/mod.rs"]
mod common;

use common::*;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use sluice_bench::dns::DnsOptions;

#[tokio::test]
async fn synthetic_mx_a_txt_and_header_bits() {
    let srv = server(DnsOptions {
        ttl: 123,
        ..opts(10)
    })
    .await;
    let addr = srv.local_addr();

    // Mixed case is answered and the question is echoed byte for byte.
    let q = query(0xBEEF, "D3.Test.", RecordType::MX, None);
    let r = udp(addr, &q).await;
    assert_header(&q, &r, ResponseCode::NoError);
    assert_eq!(mx_of(&r), vec![(10, "mx.d3.test.".to_string())]);
    assert_eq!(r.answers()[0].ttl(), 123);
    assert_eq!(r.queries()[0].name().to_ascii(), "D3.Test.");
    assert!(r.name_servers().is_empty() && r.additionals().is_empty());
    assert!(r.extensions().is_none(), "no OPT without EDNS in the query");

    // RD=0 is echoed as RD=0.
    let mut q = query(7, "mx.d3.test.", RecordType::A, None);
    q.set_recursion_desired(false);
    let r = udp(addr, &q).await;
    assert_header(&q, &r, ResponseCode::NoError);
    assert_eq!(a_of(&r), vec!["127.1.0.4"]);

    let r = ask(addr, "d3.test.", RecordType::TXT).await;
    assert_eq!(txt_of(&r), vec![vec![b"v=spf1 -all".to_vec()]]);

    // Index 254 rolls over into the next /24 and skips .0 and .255.
    let srv2 = server(opts(300)).await;
    let r = ask(srv2.local_addr(), "mx.d254.test.", RecordType::A).await;
    assert_eq!(a_of(&r), vec!["127.1.1.1"]);
    let r = ask(srv2.local_addr(), "mx.d253.test.", RecordType::A).await;
    assert_eq!(a_of(&r), vec!["127.1.0.254"]);
}

#[tokio::test]
async fn aaaa_only_when_enabled() {
    let without = server(DnsOptions {
        negative_ttl: 42,
        ..opts(5)
    })
    .await;
    let r = ask(without.local_addr(), "mx.d1.test.", RecordType::AAAA).await;
    assert_eq!(r.response_code(), ResponseCode::NoError);
    assert!(r.answers().is_empty());
    assert_eq!(negative_soa(&r), ("test.".into(), 42, 42));

    let with = server(DnsOptions {
        aaaa: true,
        ..opts(5)
    })
    .await;
    let r = ask(with.local_addr(), "mx.d1.test.", RecordType::AAAA).await;
    assert_eq!(a_of(&r), vec!["::1"]);
    // ANY on the host gives both families.
    let r = ask(with.local_addr(), "mx.d1.test.", RecordType::ANY).await;
    assert_eq!(a_of(&r), vec!["127.1.0.2", "::1"]);
}

#[tokio::test]
async fn nxdomain_and_nodata_carry_the_soa() {
    let srv = server(DnsOptions {
        negative_ttl: 77,
        ..opts(10)
    })
    .await;
    let addr = srv.local_addr();
    for missing in ["d10.test.", "d05.test.", "www.d1.test.", "nothing.example."] {
        let q = query(9, missing, RecordType::MX, None);
        let r = udp(addr, &q).await;
        assert_header(&q, &r, ResponseCode::NXDomain);
        let (owner, ttl, min) = negative_soa(&r);
        assert_eq!((ttl, min), (77, 77), "{missing}");
        assert_eq!(
            owner,
            if missing.ends_with("example.") {
                "example."
            } else {
                "test."
            }
        );
    }
    // Existing name, other type: NODATA.
    let q = query(10, "d1.test.", RecordType::A, None);
    let r = udp(addr, &q).await;
    assert_header(&q, &r, ResponseCode::NoError);
    assert_eq!(negative_soa(&r).2, 77);
    // The apex answers SOA.
    let r = ask(addr, "test.", RecordType::SOA).await;
    assert_eq!(r.answers().len(), 1);
    assert_eq!(r.answers()[0].record_type(), RecordType::SOA);
}

#[tokio::test]
async fn empty_non_terminals_are_nodata() {
    let z = zone("[[record]]\nname='a.b.c.test'\ntype='A'\ndata='127.3.0.9'");
    let srv = server(DnsOptions {
        zone: Some(z),
        ..opts(0)
    })
    .await;
    let r = ask(srv.local_addr(), "b.c.test.", RecordType::A).await;
    assert_eq!(r.response_code(), ResponseCode::NoError);
    assert!(r.answers().is_empty());
    negative_soa(&r);
    let r = ask(srv.local_addr(), "x.b.c.test.", RecordType::A).await;
    assert_eq!(r.response_code(), ResponseCode::NXDomain);
    let r = ask(srv.local_addr(), "a.b.c.test.", RecordType::A).await;
    assert_eq!(a_of(&r), vec!["127.3.0.9"]);
}

const PROVIDERS: &str = r#"
[[provider]]
name = "gmail"
domains = ["gmail.test", "googlemail.test"]
mx = ["mx1.gmail.test", "mx2.gmail.test"]
preference = [10, 20]
addresses = ["127.2.0.1", "127.2.0.2"]
share = 0.5

[[provider]]
name = "outlook"
domains = ["outlook.test"]
mx = ["mx.outlook.test"]
addresses = ["127.2.1.1"]
ttl = 3600
share = 0.2
"#;

#[tokio::test]
async fn provider_rollup_and_synthetic_share() {
    let srv = server(DnsOptions {
        zone: Some(zone(PROVIDERS)),
        ..opts(10)
    })
    .await;
    let addr = srv.local_addr();
    let gmail = vec![
        (10, "mx1.gmail.test.".to_string()),
        (20, "mx2.gmail.test.".to_string()),
    ];
    let outlook = vec![(10, "mx.outlook.test.".to_string())];

    assert_eq!(
        mx_of(&ask(addr, "gmail.test.", RecordType::MX).await),
        gmail
    );
    assert_eq!(
        mx_of(&ask(addr, "googlemail.test.", RecordType::MX).await),
        gmail
    );
    let r = ask(addr, "outlook.test.", RecordType::MX).await;
    assert_eq!(mx_of(&r), outlook);
    assert_eq!(r.answers()[0].ttl(), 3600);
    assert_eq!(
        a_of(&ask(addr, "mx1.gmail.test.", RecordType::A).await),
        vec!["127.2.0.1"]
    );
    assert_eq!(
        a_of(&ask(addr, "mx2.gmail.test.", RecordType::A).await),
        vec!["127.2.0.2"]
    );
    assert_eq!(
        a_of(&ask(addr, "mx.outlook.test.", RecordType::A).await),
        vec!["127.2.1.1"]
    );
    assert_eq!(
        txt_of(&ask(addr, "gmail.test.", RecordType::TXT).await).len(),
        1
    );

    // 10 domains: d0..d4 -> gmail (0.5), d5..d6 -> outlook (0.2), d7..d9 own MX.
    for i in 0..10 {
        let got = mx_of(&ask(addr, &format!("d{i}.test."), RecordType::MX).await);
        let want = match i {
            0..=4 => gmail.clone(),
            5..=6 => outlook.clone(),
            _ => vec![(10, format!("mx.d{i}.test."))],
        };
        assert_eq!(got, want, "d{i}.test");
    }
}

const RECORDS: &str = r#"
[[record]]
name = "example.test"
type = "MX"
data = "10 mail1.example.test"
[[record]]
name = "example.test"
type = "MX"
data = "20 mail2.example.test."
[[record]]
name = "example.test"
type = "TXT"
data = "hello world"
ttl = 5
[[record]]
name = "mail1.example.test"
type = "A"
data = "127.3.0.1"
ttl = 60
[[record]]
name = "mail1.example.test"
type = "AAAA"
data = "::1"
[[record]]
name = "d2.test"
type = "MX"
data = "5 mail1.example.test"
[[record]]
name = "nomail.test"
type = "MX"
data = "0 ."
[[record]]
name = "www.example.test"
type = "CNAME"
data = "mail1.example.test"
"#;

#[tokio::test]
async fn zone_file_records_of_every_type() {
    let srv = server(DnsOptions {
        zone: Some(zone(RECORDS)),
        ttl: 900,
        ..opts(5)
    })
    .await;
    let addr = srv.local_addr();

    let r = ask(addr, "example.test.", RecordType::MX).await;
    assert_eq!(
        mx_of(&r),
        vec![
            (10, "mail1.example.test.".into()),
            (20, "mail2.example.test.".into())
        ]
    );
    assert!(r.answers().iter().all(|a| a.ttl() == 900), "default TTL");
    let r = ask(addr, "example.test.", RecordType::TXT).await;
    assert_eq!(txt_of(&r), vec![vec![b"hello world".to_vec()]]);
    assert_eq!(r.answers()[0].ttl(), 5);
    let r = ask(addr, "mail1.example.test.", RecordType::A).await;
    assert_eq!(
        (a_of(&r), r.answers()[0].ttl()),
        (vec!["127.3.0.1".to_string()], 60)
    );
    assert_eq!(
        a_of(&ask(addr, "mail1.example.test.", RecordType::AAAA).await),
        vec!["::1"]
    );
    let r = ask(addr, "www.example.test.", RecordType::CNAME).await;
    assert_eq!(
        cnames_of(&r),
        vec![("www.example.test.".into(), "mail1.example.test.".into())]
    );
    assert_eq!(r.answers().len(), 1);
    let r = ask(addr, "example.test.", RecordType::ANY).await;
    assert_eq!(r.answers().len(), 3);

    // An explicit record replaces the synthetic data of that name only.
    assert_eq!(
        mx_of(&ask(addr, "d2.test.", RecordType::MX).await),
        vec![(5, "mail1.example.test.".into())]
    );
    let r = ask(addr, "d2.test.", RecordType::TXT).await;
    assert!(r.answers().is_empty());
    assert_eq!(
        a_of(&ask(addr, "mx.d2.test.", RecordType::A).await),
        vec!["127.1.0.3"]
    );
    assert_eq!(
        mx_of(&ask(addr, "d3.test.", RecordType::MX).await),
        vec![(10, "mx.d3.test.".into())]
    );
}

#[tokio::test]
async fn null_mx_from_zone() {
    let srv = server(DnsOptions {
        zone: Some(zone(RECORDS)),
        ..opts(0)
    })
    .await;
    let q = query(3, "nomail.test.", RecordType::MX, None);
    let r = udp(srv.local_addr(), &q).await;
    assert_header(&q, &r, ResponseCode::NoError);
    assert_eq!(mx_of(&r), vec![(0, ".".to_string())]);
}

const CHAIN: &str = r#"
[[record]]
name = "alias.test"
type = "CNAME"
data = "hop1.test"
[[record]]
name = "hop1.test"
type = "CNAME"
data = "hop2.test"
[[record]]
name = "hop2.test"
type = "CNAME"
data = "d1.test"
[[record]]
name = "loop1.test"
type = "CNAME"
data = "loop2.test"
[[record]]
name = "loop2.test"
type = "CNAME"
data = "loop1.test"
[[record]]
name = "dangling.test"
type = "CNAME"
data = "missing.test"
"#;

#[tokio::test]
async fn cname_chains_are_chased_within_the_limit() {
    let full = server(DnsOptions {
        zone: Some(zone(CHAIN)),
        negative_ttl: 9,
        ..opts(3)
    })
    .await;
    let addr = full.local_addr();
    let q = query(11, "alias.test.", RecordType::MX, None);
    let r = udp(addr, &q).await;
    assert_header(&q, &r, ResponseCode::NoError);
    assert_eq!(
        cnames_of(&r),
        vec![
            ("alias.test.".into(), "hop1.test.".into()),
            ("hop1.test.".into(), "hop2.test.".into()),
            ("hop2.test.".into(), "d1.test.".into()),
        ]
    );
    assert_eq!(mx_of(&r), vec![(10, "mx.d1.test.".into())]);
    assert_eq!(r.answers().last().unwrap().name().to_ascii(), "d1.test.");

    // Chain to an existing name without the type: CNAMEs + SOA, NOERROR.
    let r = ask(addr, "alias.test.", RecordType::A).await;
    assert_eq!(
        (cnames_of(&r).len(), r.response_code()),
        (3, ResponseCode::NoError)
    );
    negative_soa(&r);

    // Loops stop instead of spinning.
    let r = ask(addr, "loop1.test.", RecordType::A).await;
    assert_eq!(cnames_of(&r).len(), 2);
    assert_eq!(r.response_code(), ResponseCode::NoError);

    // Dangling target: NXDOMAIN for the last name, CNAME kept (RFC 6604).
    let r = ask(addr, "dangling.test.", RecordType::A).await;
    assert_eq!(r.response_code(), ResponseCode::NXDomain);
    assert_eq!(cnames_of(&r).len(), 1);
    assert_eq!(negative_soa(&r), ("test.".into(), 9, 9));

    // With a limit the client has to chase the rest itself.
    let none = server(DnsOptions {
        zone: Some(zone(CHAIN)),
        max_cname_chase: 0,
        ..opts(3)
    })
    .await;
    let r = ask(none.local_addr(), "alias.test.", RecordType::MX).await;
    assert_eq!(
        cnames_of(&r),
        vec![("alias.test.".into(), "hop1.test.".into())]
    );
    assert!(mx_of(&r).is_empty() && r.name_servers().is_empty());
    let one = server(DnsOptions {
        zone: Some(zone(CHAIN)),
        max_cname_chase: 1,
        ..opts(3)
    })
    .await;
    let r = ask(one.local_addr(), "alias.test.", RecordType::MX).await;
    assert_eq!(cnames_of(&r).len(), 2);
}

#[tokio::test]
async fn tcp_and_ipv6_give_the_same_answers() {
    let srv = server(opts(4)).await;
    let q = query(21, "d2.test.", RecordType::MX, None);
    let over_udp = udp(srv.local_addr(), &q).await;
    let over_tcp = tcp(srv.local_addr(), &q).await;
    assert_eq!(over_udp, over_tcp);

    let v6 = server(DnsOptions {
        listen: "[::1]:0".parse().unwrap(),
        ..opts(4)
    })
    .await;
    assert!(v6.local_addr().is_ipv6());
    assert_eq!(udp(v6.local_addr(), &q).await, over_udp);
    assert_eq!(tcp(v6.local_addr(), &q).await, over_udp);
}
