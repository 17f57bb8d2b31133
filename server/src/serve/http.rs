//! The HTTP endpoint for operators: `GET /metrics` (Prometheus text
//! format) and `GET /healthz`.
//!
//! Just enough HTTP/1.1 for scrapers and load balancers: one request per
//! connection, the request head bounded in size and time, `Connection:
//! close` on every answer.

use super::Shared;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Largest request head read.
const MAX_HEAD_BYTES: usize = 8 << 10;
/// Longest a client may take to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves `/metrics` and `/healthz` on `listener` until shutdown.
pub(super) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        if let Ok((stream, _)) = accepted {
            let shared = shared.clone();
            tokio::spawn(async move {
                let _ = answer(stream, &shared).await;
            });
        }
    }
}

async fn answer(mut stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    let head = match tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut stream)).await {
        Ok(Ok(head)) => head,
        _ => return Ok(()),
    };
    let path = request_path(&head);
    let (status, content_type, body) = match path {
        Some("/metrics") => {
            let stats = shared.service.engine().stats();
            (
                "200 OK",
                "text/plain; version=0.0.4",
                shared.metrics.render(&stats),
            )
        }
        Some("/healthz") => {
            if shared.service.engine().stats().read_only {
                (
                    "503 Service Unavailable",
                    "text/plain",
                    "read-only\n".to_string(),
                )
            } else {
                ("200 OK", "text/plain", "ok\n".to_string())
            }
        }
        Some(_) => ("404 Not Found", "text/plain", "not found\n".to_string()),
        None => ("400 Bad Request", "text/plain", "bad request\n".to_string()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// Reads until the blank line ending the head, at most `MAX_HEAD_BYTES`.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD_BYTES {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    Ok(head)
}

/// The path of a `GET` request line.
fn request_path(head: &[u8]) -> Option<&str> {
    let line = head.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?.trim_end();
    let mut parts = line.split(' ');
    match (parts.next(), parts.next()) {
        (Some("GET"), Some(target)) => Some(target.split('?').next().unwrap_or(target)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::request_path;

    #[test]
    fn request_lines() {
        assert_eq!(
            request_path(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some("/metrics")
        );
        assert_eq!(
            request_path(b"GET /healthz?x=1 HTTP/1.0\r\n\r\n"),
            Some("/healthz")
        );
        assert_eq!(request_path(b"POST /metrics HTTP/1.1\r\n\r\n"), None);
        assert_eq!(request_path(b"\xff\xfe"), None);
        assert_eq!(request_path(b""), None);
    }
}
