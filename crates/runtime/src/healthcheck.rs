//! A minimal HTTP/1.1 GET over a plain TCP socket: enough to probe our own
//! `/healthz` from inside a container image that ships no curl.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0} is not an http:// URL with a host")]
    BadUrl(String),
    #[error("cannot reach {url}: {source}")]
    Io { url: String, source: std::io::Error },
    #[error("{url} did not answer within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    #[error("{url} answered {status_line:?}")]
    NotHealthy { url: String, status_line: String },
}

/// GETs `url` and succeeds on a 2xx status.
pub async fn probe(url: &str, timeout: Duration) -> Result<(), Error> {
    let parsed = url::Url::parse(url).map_err(|_| Error::BadUrl(url.to_owned()))?;
    if parsed.scheme() != "http" {
        return Err(Error::BadUrl(url.to_owned()));
    }
    let host = parsed
        .host_str()
        .ok_or_else(|| Error::BadUrl(url.to_owned()))?
        .to_owned();
    let port = parsed.port_or_known_default().unwrap_or(80);
    let path = match parsed.query() {
        Some(q) => format!("{}?{q}", parsed.path()),
        None => parsed.path().to_owned(),
    };
    let io = |source| Error::Io {
        url: url.to_owned(),
        source,
    };
    let exchange = async {
        let mut stream = TcpStream::connect((host.as_str(), port))
            .await
            .map_err(io)?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.map_err(io)?;
        let mut head = vec![0u8; 64];
        let n = stream.read(&mut head).await.map_err(io)?;
        Ok(String::from_utf8_lossy(&head[..n])
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned())
    };
    let status_line = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| Error::Timeout {
            url: url.to_owned(),
            timeout,
        })??;
    let healthy = status_line
        .split_whitespace()
        .nth(1)
        .is_some_and(|code| code.starts_with('2'));
    if healthy {
        Ok(())
    } else {
        Err(Error::NotHealthy {
            url: url.to_owned(),
            status_line,
        })
    }
}

/// [`probe`] for the `healthcheck` subcommand: prints the failure on
/// stderr and turns the outcome into an exit code.
pub async fn report(url: &str, timeout: Duration) -> std::process::ExitCode {
    match probe(url, timeout).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("unhealthy: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    async fn serve_once(reply: &'static str) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 512];
            let _ = socket.read(&mut buf).await;
            socket.write_all(reply.as_bytes()).await.unwrap();
        });
        format!("http://{addr}/healthz")
    }

    #[tokio::test]
    async fn a_2xx_answer_is_healthy() {
        let url = serve_once("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await;
        probe(&url, Duration::from_secs(2)).await.unwrap();
    }

    #[tokio::test]
    async fn a_503_answer_is_not_healthy() {
        let url = serve_once("HTTP/1.1 503 Service Unavailable\r\n\r\n").await;
        let err = probe(&url, Duration::from_secs(2)).await.unwrap_err();
        assert!(matches!(err, Error::NotHealthy { .. }), "{err}");
    }

    #[tokio::test]
    async fn a_closed_port_is_reported() {
        let err = probe("http://127.0.0.1:1/healthz", Duration::from_secs(2))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err}");
    }
}
