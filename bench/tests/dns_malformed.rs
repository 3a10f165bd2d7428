//! Garbage in: FORMERR when the header is readable, silence otherwise.

#[path = "dns_common/mod.rs"]
mod common;

use common::*;
use hickory_proto::op::{MessageType, OpCode, ResponseCode};
use hickory_proto::rr::{DNSClass, RecordType};
use sluice_bench::dns::DnsOptions;

#[tokio::test]
async fn unreadable_headers_are_dropped() {
    let srv = server(opts(2)).await;
    let stats = srv.stats();
    let sock = udp_client(srv.local_addr()).await;
    sock.send(b"\x12\x34\x01").await.unwrap();
    tokio::time::timeout(WAIT, stats.wait_for(|s| s.malformed == 1))
        .await
        .unwrap();
    // A response (QR=1) is never answered either.
    let mut answer = query(5, "d0.test.", RecordType::MX, None);
    answer.set_message_type(MessageType::Response);
    sock.send(&encode(&answer)).await.unwrap();
    tokio::time::timeout(WAIT, stats.wait_for(|s| s.malformed == 2))
        .await
        .unwrap();
    udp_silent(&sock).await;
    let snap = stats.snapshot();
    assert_eq!((snap.udp.queries, snap.udp.responses), (0, 0));
}

#[tokio::test]
async fn undecodable_bodies_get_formerr_with_the_id() {
    let srv = server(opts(2)).await;
    let addr = srv.local_addr();

    // Header claims one question, body is cut inside the name.
    let mut packet = vec![0xAB, 0xCD, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    packet.extend_from_slice(b"\x07exam");
    let r = decode(&udp_raw(addr, &packet).await);
    assert_eq!(r.id(), 0xABCD);
    assert_eq!(r.message_type(), MessageType::Response);
    assert_eq!(r.response_code(), ResponseCode::FormErr);
    assert!(r.recursion_desired());
    assert!(r.queries().is_empty());

    // Question readable, garbage after it: FORMERR echoing the question.
    let mut packet = encode(&query(0x0102, "d1.test.", RecordType::MX, None));
    packet[7] = 1; // ANCOUNT=1 but no answer follows
    let r = decode(&udp_raw(addr, &packet).await);
    assert_eq!((r.id(), r.response_code()), (0x0102, ResponseCode::FormErr));
    assert_eq!(r.queries()[0].name().to_ascii(), "d1.test.");

    // Same over TCP, and the connection survives it.
    let mut conn = tcp_connect(addr).await;
    tcp_send(
        &mut conn,
        &[0xAB, 0xCE, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0x3F],
    )
    .await;
    let r = decode(&tcp_recv(&mut conn).await);
    assert_eq!((r.id(), r.response_code()), (0xABCE, ResponseCode::FormErr));
    tcp_send(
        &mut conn,
        &encode(&query(8, "d1.test.", RecordType::MX, None)),
    )
    .await;
    let r = decode(&tcp_recv(&mut conn).await);
    assert_eq!((r.id(), r.response_code()), (8, ResponseCode::NoError));

    let snap = srv.stats().snapshot();
    assert_eq!(snap.rcode(ResponseCode::FormErr), 3);
    assert_eq!(
        snap.udp.by_type,
        Default::default(),
        "no question counted for FORMERR"
    );
}

#[tokio::test]
async fn wrong_question_counts_opcodes_and_classes() {
    let srv = server(opts(2)).await;
    let addr = srv.local_addr();

    let mut none = query(1, "d0.test.", RecordType::MX, None);
    none.queries_mut().clear();
    assert_eq!(
        udp(addr, &none).await.response_code(),
        ResponseCode::FormErr
    );

    let mut two = query(2, "d0.test.", RecordType::MX, None);
    two.add_query(hickory_proto::op::Query::query(
        name("d1.test."),
        RecordType::MX,
    ));
    let r = udp(addr, &two).await;
    assert_eq!(r.response_code(), ResponseCode::FormErr);
    assert_eq!(r.queries().len(), 1, "first question echoed");

    let mut notify = query(3, "d0.test.", RecordType::SOA, None);
    notify.set_op_code(OpCode::Notify);
    let r = udp(addr, &notify).await;
    assert_eq!(
        (r.response_code(), r.op_code()),
        (ResponseCode::NotImp, OpCode::Notify)
    );

    let mut chaos = query(4, "version.bind.", RecordType::TXT, None);
    chaos.queries_mut()[0].set_query_class(DNSClass::CH);
    assert_eq!(
        udp(addr, &chaos).await.response_code(),
        ResponseCode::Refused
    );

    let snap = srv.stats().snapshot();
    assert_eq!(snap.udp.queries, 4);
    assert_eq!(snap.udp.responses, 4);
    assert_eq!(
        snap.udp.qtype(RecordType::TXT),
        1,
        "only the CH query had a single question"
    );
}

#[tokio::test]
async fn empty_tcp_frames_are_dropped_without_closing() {
    let srv = server(DnsOptions { ..opts(1) }).await;
    let mut conn = tcp_connect(srv.local_addr()).await;
    tcp_send(&mut conn, &[]).await;
    tcp_send(
        &mut conn,
        &encode(&query(9, "d0.test.", RecordType::MX, None)),
    )
    .await;
    let r = decode(&tcp_recv(&mut conn).await);
    assert_eq!(r.id(), 9);
    let snap = srv.stats().snapshot();
    assert_eq!(
        (snap.malformed, snap.tcp.queries, snap.tcp_connections),
        (1, 1, 1)
    );
}
