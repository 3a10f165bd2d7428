//! Helpers shared by the integration tests: an in-process sink that can be
//! stopped to obtain its final counters, and a tiny raw SMTP client that
//! checks replies exactly.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use sluice_bench::sink::{Profile, Sink, SinkHandle, SinkOptions, SinkReport};
use sluice_bench::smtp::reply::parse_reply;
use sluice_bench::stream::Stream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Upper bound for any single wait in tests, so a broken sink fails the
/// test instead of hanging it.
pub const WAIT: Duration = Duration::from_secs(10);

/// A sink running on the test's runtime.
pub struct RunningSink {
    pub addr: SocketAddr,
    pub addrs: Vec<SocketAddr>,
    pub status: Option<SocketAddr>,
    pub handle: SinkHandle,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<sluice_bench::Result<SinkReport>>,
}

impl RunningSink {
    pub async fn start(profile_toml: &str) -> Self {
        let mut opts = SinkOptions::new("127.0.0.1:0".parse().unwrap());
        opts.profile = Profile::from_toml_str(profile_toml).unwrap();
        Self::start_with(opts).await
    }

    pub async fn start_with(opts: SinkOptions) -> Self {
        let sink = Sink::bind(opts).await.unwrap();
        let addr = sink.local_addr().unwrap();
        let addrs = sink.local_addrs();
        let status = sink.status_addr();
        let handle = sink.handle();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(sink.run(async move {
            let _ = rx.await;
        }));
        RunningSink {
            addr,
            addrs,
            status,
            handle,
            stop: Some(tx),
            task,
        }
    }

    /// The bound address for a given loopback IP (from `[hosts]`).
    pub fn addr_for(&self, ip: &str) -> SocketAddr {
        let ip: std::net::IpAddr = ip.parse().unwrap();
        *self
            .addrs
            .iter()
            .find(|a| a.ip() == ip)
            .expect("host address not bound")
    }

    /// Stops the sink; every session has finished when this returns.
    pub async fn stop(mut self) -> SinkReport {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("sink did not stop")
            .unwrap()
            .unwrap()
    }
}

/// One reply: code and the full text of all lines.
#[derive(Debug, Clone)]
pub struct Reply {
    pub code: u16,
    pub text: String,
}

impl Reply {
    pub fn starts(&self, prefix: &str) -> bool {
        self.text.starts_with(prefix)
    }
}

/// A raw SMTP client.
pub struct Client {
    stream: Stream,
    buf: Vec<u8>,
}

impl Client {
    /// Connects without reading anything.
    pub async fn connect(addr: SocketAddr) -> Client {
        let tcp = tokio::time::timeout(WAIT, TcpStream::connect(addr))
            .await
            .unwrap()
            .unwrap();
        Client {
            stream: Stream::Plain(tcp),
            buf: Vec::new(),
        }
    }

    /// Connects, expects the 220 greeting, sends EHLO and returns its reply.
    pub async fn ehlo(addr: SocketAddr) -> (Client, Reply) {
        let mut c = Client::connect(addr).await;
        let greeting = c.reply().await;
        assert_eq!(greeting.code, 220, "{greeting:?}");
        let ehlo = c.cmd("EHLO client.test").await;
        assert_eq!(ehlo.code, 250, "{ehlo:?}");
        (c, ehlo)
    }

    pub async fn send(&mut self, data: &[u8]) {
        self.stream.write_all(data).await.unwrap();
        self.stream.flush().await.unwrap();
    }

    /// Reads the next reply; panics on timeout or EOF.
    pub async fn reply(&mut self) -> Reply {
        self.try_reply(WAIT)
            .await
            .expect("connection closed instead of a reply")
    }

    /// Next reply, or `None` on EOF/reset. Panics on timeout.
    pub async fn try_reply(&mut self, wait: Duration) -> Option<Reply> {
        loop {
            let mut text = String::new();
            if let Some((code, used)) = parse_reply(&self.buf, |line| {
                if !text.is_empty() {
                    text.push('\n');
                }
                text.push_str(&String::from_utf8_lossy(line));
            })
            .unwrap()
            {
                self.buf.drain(..used);
                let full = format!("{} {}", code.code, text);
                return Some(Reply {
                    code: code.code,
                    text: full,
                });
            }
            let mut chunk = [0u8; 4096];
            match tokio::time::timeout(wait, self.stream.read(&mut chunk)).await {
                Err(_) => panic!("timed out waiting for a reply"),
                Ok(Ok(0)) | Ok(Err(_)) => return None,
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// True if the server closes the connection (EOF or reset) within `WAIT`
    /// without sending anything more.
    pub async fn closed(&mut self) -> bool {
        self.buf.is_empty() && self.try_reply(WAIT).await.is_none()
    }

    /// True if nothing at all arrives within `wait` (neither data nor EOF).
    pub async fn silent_for(&mut self, wait: Duration) -> bool {
        let mut chunk = [0u8; 64];
        tokio::time::timeout(wait, self.stream.read(&mut chunk))
            .await
            .is_err()
    }

    pub async fn cmd(&mut self, line: &str) -> Reply {
        self.send(format!("{line}\r\n").as_bytes()).await;
        self.reply().await
    }

    /// Sends a command and asserts the reply starts with `expect`.
    pub async fn expect(&mut self, line: &str, expect: &str) -> Reply {
        let r = self.cmd(line).await;
        assert!(
            r.starts(expect),
            "{line:?}: expected {expect:?}, got {:?}",
            r.text
        );
        r
    }

    /// A complete transaction via DATA; returns the final reply.
    pub async fn data_message(&mut self, from: &str, rcpt: &str, body: &str) -> Reply {
        self.expect(&format!("MAIL FROM:<{from}>"), "250").await;
        self.expect(&format!("RCPT TO:<{rcpt}>"), "250").await;
        self.expect("DATA", "354").await;
        self.send(body.as_bytes()).await;
        self.send(b".\r\n").await;
        self.reply().await
    }

    /// A complete transaction via one BDAT LAST; returns the final reply.
    pub async fn bdat_message(&mut self, from: &str, rcpt: &str, body: &str) -> Reply {
        self.expect(&format!("MAIL FROM:<{from}>"), "250").await;
        self.expect(&format!("RCPT TO:<{rcpt}>"), "250").await;
        self.send(format!("BDAT {} LAST\r\n{body}", body.len()).as_bytes())
            .await;
        self.reply().await
    }

    /// Upgrades with STARTTLS (any certificate accepted).
    pub async fn starttls(&mut self) {
        self.expect("STARTTLS", "220").await;
        let tcp = self.stream.take_plain().unwrap();
        let connector =
            tokio_rustls::TlsConnector::from(sluice_bench::tls::insecure_client_config().unwrap());
        let tls = connector
            .connect(sluice_bench::tls::loopback_server_name(), tcp)
            .await
            .unwrap();
        self.stream = Stream::ClientTls(Box::new(tls));
    }
}

/// A message with the given Message-ID.
pub fn message(id: &str) -> String {
    format!("Message-ID: <{id}>\r\nFrom: <a@src.test>\r\nSubject: t\r\n\r\nhello\r\n")
}
