//! Test client: encodes queries with hickory-proto and talks to the stub
//! over real loopback sockets. Every wait is bounded so a broken server
//! fails the test instead of hanging it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use sluice_bench::dns::{start, DnsOptions, DnsServer, Zone};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// Upper bound for anything that should happen promptly.
pub const WAIT: Duration = Duration::from_secs(5);
/// How long "no answer" is observed for.
pub const SILENCE: Duration = Duration::from_millis(300);

pub fn name(s: &str) -> Name {
    Name::from_ascii(s).unwrap()
}

pub fn opts(domains: usize) -> DnsOptions {
    DnsOptions {
        domains,
        ..DnsOptions::default()
    }
}

pub fn zone(text: &str) -> Zone {
    Zone::from_toml_str(text).unwrap()
}

pub async fn server(opts: DnsOptions) -> DnsServer {
    start(opts).await.unwrap()
}

/// A query message; `edns` is the advertised UDP payload size.
pub fn query(id: u16, qname: &str, qtype: RecordType, edns: Option<u16>) -> Message {
    let mut m = Message::new();
    m.set_id(id)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true)
        .add_query(Query::query(name(qname), qtype));
    if let Some(size) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        m.set_edns(e);
    }
    m
}

pub fn encode(m: &Message) -> Vec<u8> {
    m.to_vec().unwrap()
}

pub fn decode(bytes: &[u8]) -> Message {
    Message::from_vec(bytes).unwrap()
}

/// A UDP client socket of the server's address family.
pub async fn udp_client(server: SocketAddr) -> UdpSocket {
    let local: SocketAddr = if server.is_ipv4() {
        "127.0.0.1:0".parse().unwrap()
    } else {
        "[::1]:0".parse().unwrap()
    };
    let sock = UdpSocket::bind(local).await.unwrap();
    sock.connect(server).await.unwrap();
    sock
}

/// Receives one datagram within [`WAIT`].
pub async fn udp_recv(sock: &UdpSocket) -> Vec<u8> {
    let mut buf = vec![0u8; 65535];
    let n = tokio::time::timeout(WAIT, sock.recv(&mut buf))
        .await
        .expect("no UDP answer in time")
        .unwrap();
    buf.truncate(n);
    buf
}

/// Asserts that nothing arrives on `sock` for [`SILENCE`].
pub async fn udp_silent(sock: &UdpSocket) {
    let mut buf = vec![0u8; 65535];
    if let Ok(r) = tokio::time::timeout(SILENCE, sock.recv(&mut buf)).await {
        panic!("expected no answer, got {r:?}");
    }
}

/// Sends raw bytes over UDP and returns the raw answer.
pub async fn udp_raw(server: SocketAddr, packet: &[u8]) -> Vec<u8> {
    let sock = udp_client(server).await;
    sock.send(packet).await.unwrap();
    udp_recv(&sock).await
}

/// Sends a message over UDP and decodes the answer.
pub async fn udp(server: SocketAddr, m: &Message) -> Message {
    decode(&udp_raw(server, &encode(m)).await)
}

/// Shorthand: plain (no EDNS) UDP query.
pub async fn ask(server: SocketAddr, qname: &str, qtype: RecordType) -> Message {
    udp(server, &query(0x1234, qname, qtype, None)).await
}

pub async fn tcp_connect(server: SocketAddr) -> TcpStream {
    let stream = tokio::time::timeout(WAIT, TcpStream::connect(server))
        .await
        .unwrap()
        .unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

pub async fn tcp_send(stream: &mut TcpStream, packet: &[u8]) {
    let mut frame = u16::try_from(packet.len()).unwrap().to_be_bytes().to_vec();
    frame.extend_from_slice(packet);
    stream.write_all(&frame).await.unwrap();
}

pub async fn tcp_recv(stream: &mut TcpStream) -> Vec<u8> {
    let read = async {
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).await.unwrap();
        let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
        stream.read_exact(&mut buf).await.unwrap();
        buf
    };
    tokio::time::timeout(WAIT, read)
        .await
        .expect("no TCP answer in time")
}

/// One query over a fresh TCP connection.
pub async fn tcp(server: SocketAddr, m: &Message) -> Message {
    let mut s = tcp_connect(server).await;
    tcp_send(&mut s, &encode(m)).await;
    decode(&tcp_recv(&mut s).await)
}

/// Checks the header invariants of every answer to `q`.
pub fn assert_header(q: &Message, r: &Message, rcode: ResponseCode) {
    assert_eq!(r.id(), q.id(), "id echoed");
    assert_eq!(r.message_type(), MessageType::Response, "QR");
    assert_eq!(r.op_code(), OpCode::Query);
    assert!(r.authoritative(), "AA");
    assert_eq!(r.recursion_desired(), q.recursion_desired(), "RD echoed");
    assert!(!r.recursion_available(), "RA=0");
    assert_eq!(r.response_code(), rcode);
    assert_eq!(r.queries(), q.queries(), "question echoed");
}

pub fn mx_of(r: &Message) -> Vec<(u16, String)> {
    r.answers()
        .iter()
        .filter_map(|rec| match rec.data() {
            RData::MX(mx) => Some((mx.preference(), mx.exchange().to_ascii())),
            _ => None,
        })
        .collect()
}

pub fn a_of(r: &Message) -> Vec<String> {
    r.answers()
        .iter()
        .filter_map(|rec| match rec.data() {
            RData::A(a) => Some(a.0.to_string()),
            RData::AAAA(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect()
}

pub fn cnames_of(r: &Message) -> Vec<(String, String)> {
    r.answers()
        .iter()
        .filter_map(|rec| match rec.data() {
            RData::CNAME(c) => Some((rec.name().to_ascii(), c.0.to_ascii())),
            _ => None,
        })
        .collect()
}

pub fn txt_of(r: &Message) -> Vec<Vec<Vec<u8>>> {
    r.answers()
        .iter()
        .filter_map(|rec| match rec.data() {
            RData::TXT(t) => Some(t.iter().map(|s| s.to_vec()).collect()),
            _ => None,
        })
        .collect()
}

/// The single SOA of a negative answer: (owner, record TTL, MINIMUM).
pub fn negative_soa(r: &Message) -> (String, u32, u32) {
    assert!(
        r.answers().is_empty()
            || r.answers()
                .iter()
                .all(|a| a.record_type() == RecordType::CNAME)
    );
    let soas: Vec<&Record> = r.name_servers().iter().collect();
    assert_eq!(soas.len(), 1, "exactly one SOA in authority: {r}");
    match soas[0].data() {
        RData::SOA(soa) => (soas[0].name().to_ascii(), soas[0].ttl(), soa.minimum()),
        other => panic!("authority holds {other:?}"),
    }
}
