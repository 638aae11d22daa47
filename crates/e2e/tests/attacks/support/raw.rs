//! Raw HTTP/1.1 over TCP: for what a well-behaved client cannot send
//! (unnormalised paths, obsolete header folding, control bytes, a body that
//! trickles in or never arrives). reqwest normalises `..` and `%2e%2e` away
//! and refuses bad header bytes, so those attacks go out byte for byte here.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// A parsed response.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// The `type` of a problem+json body, or "" when it is not one.
    pub fn problem_type(&self) -> String {
        let is_problem = self
            .header("content-type")
            .is_some_and(|v| v.starts_with("application/problem+json"));
        if !is_problem {
            return String::new();
        }
        self.json()["type"].as_str().unwrap_or_default().to_owned()
    }
}

/// A TCP connection to `to` from `from` (a loopback address standing for a
/// client network), or from the default address.
pub async fn connect(to: SocketAddr, from: Option<IpAddr>) -> TcpStream {
    match from {
        None => TcpStream::connect(to)
            .await
            .expect("connects to the gateway"),
        Some(ip) => {
            let socket = TcpSocket::new_v4().expect("a socket");
            socket
                .bind(SocketAddr::new(ip, 0))
                .expect("binds the client's loopback address");
            socket.connect(to).await.expect("connects to the gateway")
        }
    }
}

/// Sends `request` as is and reads the answer until the server closes the
/// connection (requests should say `Connection: close`) or `within` passes.
/// `Err` when the connection closed (or the time ran out) before a
/// complete status line and headers arrived.
pub async fn send(to: SocketAddr, request: &[u8], within: Duration) -> Result<RawResponse, String> {
    let mut stream = connect(to, None).await;
    stream
        .write_all(request)
        .await
        .map_err(|e| format!("write failed: {e}"))?;
    read_response(&mut stream, within).await
}

/// Reads one response from `stream` (until EOF or `within`).
pub async fn read_response(
    stream: &mut TcpStream,
    within: Duration,
) -> Result<RawResponse, String> {
    let deadline = Instant::now() + within;
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => {
                buffer.extend_from_slice(&chunk[..n]);
                if let Some(response) = complete(&buffer) {
                    return Ok(response);
                }
            }
            Err(_) => break,
        }
    }
    parse(&buffer).ok_or_else(|| {
        if buffer.is_empty() {
            "the connection closed (or stayed silent) without a response".to_owned()
        } else {
            format!(
                "an incomplete response: {:?}",
                String::from_utf8_lossy(&buffer)
            )
        }
    })
}

/// The response once its body is complete (by Content-Length or the last
/// chunk); `None` while more is needed.
fn complete(buffer: &[u8]) -> Option<RawResponse> {
    let head_end = find(buffer, b"\r\n\r\n")? + 4;
    let (status, headers) = head(&buffer[..head_end])?;
    let rest = &buffer[head_end..];
    let get = |name: &str| {
        headers
            .iter()
            .find(|(n, _): &&(String, String)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let body = if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        dechunk(rest)?
    } else if let Some(length) = get("content-length").and_then(|v| v.trim().parse::<usize>().ok())
    {
        if rest.len() < length {
            return None;
        }
        rest[..length].to_vec()
    } else if status == 204 || status == 304 || (100..200).contains(&status) {
        Vec::new()
    } else {
        // Read to EOF.
        return None;
    };
    Some(RawResponse {
        status,
        headers,
        body,
    })
}

/// What arrived before EOF: a complete response, or one whose body ran to
/// the end of the stream.
fn parse(buffer: &[u8]) -> Option<RawResponse> {
    if let Some(response) = complete(buffer) {
        return Some(response);
    }
    let head_end = find(buffer, b"\r\n\r\n")? + 4;
    let (status, headers) = head(&buffer[..head_end])?;
    Some(RawResponse {
        status,
        headers,
        body: buffer[head_end..].to_vec(),
    })
}

fn head(bytes: &[u8]) -> Option<(u16, Vec<(String, String)>)> {
    let text = String::from_utf8_lossy(bytes);
    let mut lines = text.split("\r\n");
    let status_line = lines.next()?;
    let status = status_line.split(' ').nth(1)?.parse().ok()?;
    let headers = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| {
            let (name, value) = l.split_once(':')?;
            Some((name.trim().to_owned(), value.trim().to_owned()))
        })
        .collect();
    Some((status, headers))
}

fn dechunk(mut rest: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = find(rest, b"\r\n")?;
        let size_text = String::from_utf8_lossy(&rest[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Some(body);
        }
        if rest.len() < size + 2 {
            return None;
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// `METHOD target HTTP/1.1` with `Host`, `Connection: close`, the extra
/// header lines given (each without its CRLF) and an optional body (with
/// its Content-Length).
pub fn request(method: &str, target: &str, headers: &[String], body: Option<&[u8]>) -> Vec<u8> {
    let mut out = format!("{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for line in headers {
        out.push_str(line);
        out.push_str("\r\n");
    }
    if let Some(body) = body {
        out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    if let Some(body) = body {
        bytes.extend_from_slice(body);
    }
    bytes
}
