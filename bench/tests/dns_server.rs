//! Start-up checks, the serve/shutdown life cycle and the example zone.

#[path = "dns_common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::path::Path;

use common::*;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use sluice_bench::dns::{
    serve, start, DnsError, DnsOptions, Zone, ZoneRecord, MAX_SYNTHETIC_DOMAINS,
};

#[tokio::test]
async fn refuses_non_loopback_listen_addresses() {
    for addr in [
        "0.0.0.0:0",
        "198.51.100.10:53",
        "192.0.2.1:5353",
        "[::]:0",
        "[2001:db8::1]:53",
    ] {
        let listen: SocketAddr = addr.parse().unwrap();
        let err = start(DnsOptions { listen, ..opts(1) }).await.unwrap_err();
        assert!(
            matches!(err, DnsError::NonLoopback(a) if a == listen),
            "{addr}: {err}"
        );
        assert!(err.to_string().contains("127.0.0.0/8"), "{err}");
    }
    // Other loopback addresses are fine.
    let srv = start(DnsOptions {
        listen: "127.0.0.53:0".parse().unwrap(),
        ..opts(1)
    })
    .await
    .unwrap();
    assert_eq!(srv.local_addr().ip().to_string(), "127.0.0.53");
    let r = ask(srv.local_addr(), "d0.test.", RecordType::MX).await;
    assert_eq!(r.response_code(), ResponseCode::NoError);
}

#[tokio::test]
async fn invalid_options_and_zones_fail_before_binding() {
    let err = start(opts(MAX_SYNTHETIC_DOMAINS + 1)).await.unwrap_err();
    assert!(matches!(err, DnsError::InvalidOption(_)), "{err}");
    assert!(start(opts(MAX_SYNTHETIC_DOMAINS)).await.is_ok());

    // A zone built in code is validated too.
    let mut z = Zone::default();
    z.records
        .push(ZoneRecord::parse("x.test", "CNAME", "y.test", None).unwrap());
    z.records
        .push(ZoneRecord::parse("x.test", "TXT", "z", None).unwrap());
    let err = start(DnsOptions {
        zone: Some(z),
        ..opts(0)
    })
    .await
    .unwrap_err();
    assert!(matches!(err, DnsError::Zone { .. }), "{err}");

    let err = Zone::load(Path::new("/nonexistent/zone.toml")).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/zone.toml"), "{err}");
}

#[tokio::test]
async fn a_taken_port_is_reported() {
    let holder = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let listen = holder.local_addr().unwrap();
    let err = start(DnsOptions { listen, ..opts(1) }).await.unwrap_err();
    assert!(matches!(err, DnsError::Io { .. }), "{err}");
    assert!(err.to_string().contains("binding UDP"), "{err}");
}

#[tokio::test]
async fn shutdown_releases_the_port() {
    let srv = server(opts(1)).await;
    let addr = srv.local_addr();
    ask(addr, "d0.test.", RecordType::MX).await;
    let report = srv.shutdown().await;
    assert_eq!(report.local_addr, addr);
    assert_eq!(report.stats.udp.responses, 1);
    // Both sockets are closed: the exact port can be bound again.
    let _tcp = tokio::net::TcpListener::bind(addr).await.unwrap();
    let _udp = tokio::net::UdpSocket::bind(addr).await.unwrap();
}

#[tokio::test]
async fn serve_runs_until_its_shutdown_future_completes() {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(serve(opts(1), async {
        let _ = rx.await;
    }));
    tx.send(()).unwrap();
    let report = tokio::time::timeout(WAIT, handle)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(report.local_addr.ip().is_loopback() && report.local_addr.port() != 0);
    assert_eq!(report.stats.queries(), 0);
    let err = serve(
        DnsOptions {
            listen: "0.0.0.0:0".parse().unwrap(),
            ..opts(1)
        },
        async {},
    )
    .await
    .unwrap_err();
    assert!(matches!(err, DnsError::NonLoopback(_)));
}

#[tokio::test]
async fn example_zone_file_is_served() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("zones/example.toml");
    let srv = server(DnsOptions {
        zone: Some(Zone::load(&path).unwrap()),
        ..opts(10)
    })
    .await;
    let addr = srv.local_addr();
    assert_eq!(
        mx_of(&ask(addr, "example.test.", RecordType::MX).await),
        vec![
            (10, "mail1.example.test.".into()),
            (20, "mail2.example.test.".into())
        ]
    );
    assert_eq!(
        mx_of(&ask(addr, "nomail.test.", RecordType::MX).await),
        vec![(0, ".".into())]
    );
    let r = ask(addr, "alias.test.", RecordType::MX).await;
    assert_eq!((cnames_of(&r).len(), mx_of(&r).len()), (3, 2));
    assert_eq!(
        mx_of(&ask(addr, "d0.test.", RecordType::MX).await).len(),
        2,
        "gmail share"
    );
    assert_eq!(
        mx_of(&ask(addr, "d3.test.", RecordType::MX).await),
        vec![(10, "mx.outlook.test.".into())],
        "outlook share"
    );
    assert_eq!(
        ask(addr, "broken.test.", RecordType::MX)
            .await
            .response_code(),
        ResponseCode::ServFail
    );
    assert!(ask(addr, "big.test.", RecordType::MX).await.truncated());
}
