//! Raw HTTP/1.1 over TLS: write bytes as given, read until the server closes, and parse what
//! came back into an [`Answer`] (which a hyper [`Reply`] converts into as well).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::client::{Client, Reply};

impl Client {
    /// Write raw bytes over TLS and read until the server closes or `wait` passes.
    pub async fn raw(&self, bytes: &[u8], wait: Duration) -> String {
        let mut stream = self.tls().await;
        // The gateway may answer and close before a large request is fully written (e.g.
        // 431 for oversized headers): keep whatever it sent rather than failing the write.
        if stream.write_all(bytes).await.is_ok() {
            let _ = stream.flush().await;
        }
        read_until_close(&mut stream, wait).await
    }
}

/// Read from `stream` until EOF or until `wait` elapses with no more data.
pub async fn read_until_close<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    wait: Duration,
) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match tokio::time::timeout(wait, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What a client got back, whichever transport carried the request.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_str(&self.body).ok()
    }

    pub fn from_reply(reply: &Reply) -> Answer {
        Answer {
            status: reply.status.as_u16(),
            headers: reply
                .headers
                .iter()
                .map(|(n, v)| {
                    (
                        n.as_str().to_owned(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body: reply.text(),
        }
    }
}

/// Parse an HTTP/1.1 response read off the wire (status 0 when nothing came back).
pub fn parse_raw(text: &str) -> Answer {
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((text, ""));
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(n, v)| n.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_owned()
    };
    Answer {
        status,
        headers,
        body,
    }
}

pub fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}
