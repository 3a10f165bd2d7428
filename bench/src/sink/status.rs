//! The live status endpoint: `GET /` returns the counters as JSON. A
//! hand-rolled HTTP/1.0-style responder is enough for `curl` and tests and
//! keeps an HTTP stack out of the dependency tree.

use std::sync::Arc;
use std::time::Duration;

use memchr::memmem;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::Shared;

const MAX_REQUEST: usize = 8 * 1024;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves one request, then closes.
pub(crate) async fn handle(shared: Arc<Shared>, mut tcp: TcpStream) {
    let mut buf = Vec::with_capacity(1024);
    let read = tokio::time::timeout(REQUEST_TIMEOUT, async {
        let mut chunk = [0u8; 1024];
        loop {
            let n = tcp.read(&mut chunk).await?;
            if n == 0 {
                return Ok::<bool, std::io::Error>(false);
            }
            buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
            if memmem::find(&buf, b"\r\n\r\n").is_some() || memmem::find(&buf, b"\n\n").is_some() {
                return Ok(true);
            }
            if buf.len() > MAX_REQUEST {
                return Ok(false);
            }
        }
    })
    .await;
    if !matches!(read, Ok(Ok(true))) {
        return;
    }
    let request_line = buf.split(|&b| b == b'\n').next().unwrap_or_default();
    let mut parts = request_line.split(|&b| b == b' ');
    let method = parts.next().unwrap_or_default();
    let path = parts.next().unwrap_or_default();
    let (status, body) = if method != b"GET" {
        (
            "405 Method Not Allowed",
            "{\"error\":\"only GET is supported\"}\n".to_string(),
        )
    } else if path == b"/" || path == b"/status" {
        match serde_json::to_string_pretty(&shared.stats.snapshot()) {
            Ok(json) => ("200 OK", json + "\n"),
            Err(e) => (
                "500 Internal Server Error",
                format!("{{\"error\":\"{e}\"}}\n"),
            ),
        }
    } else {
        ("404 Not Found", "{\"error\":\"not found\"}\n".to_string())
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = tcp.write_all(head.as_bytes()).await;
    let _ = tcp.write_all(body.as_bytes()).await;
    let _ = tcp.shutdown().await;
}
