//! The HTTP health probe that fleets share.
//!
//! A fleet whose platform has no health check of its own (local processes, a
//! container without `HEALTHCHECK`, a Swarm task) asks each instance itself:
//! [`http_probe`] sends `GET path` and reads the status line. Every provider uses this
//! one rule, so an instance is *starting*, *healthy* or *unhealthy* for the same
//! reasons everywhere.

use std::time::Duration;

use crate::instance::Health;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long one probe may take: 2 s.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// `GET path` over HTTP/1.1 at `address` (`127.0.0.1:49153`, `host:port`), and the
/// health it tells:
///
/// - a 2xx status: [`Health::Healthy`];
/// - a refused, reset or closed connection: [`Health::Starting`] (nothing listens
///   yet; Docker's port forwarder accepts before the app listens and then closes);
/// - another status, any other error, or no status line within [`PROBE_TIMEOUT`]:
///   [`Health::Unhealthy`], whose reason names the path, the address and the status
///   or error.
///
/// It never fails: an address that does not resolve is unhealthy.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use bluegreen_core::{probe::http_probe, Health};
/// let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
/// let nobody = free.local_addr().unwrap().to_string();
/// drop(free);
/// assert_eq!(http_probe(&nobody, "/health").await, Health::Starting);
/// # }
/// ```
pub async fn http_probe(address: &str, path: &str) -> Health {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(address).await?;
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&head[9..12]).into_owned())
    };
    match tokio::time::timeout(PROBE_TIMEOUT, attempt).await {
        Ok(Ok(status)) if status.starts_with('2') => Health::Healthy,
        Ok(Ok(status)) => Health::Unhealthy {
            reason: format!("GET {path} at {address}: {status}"),
        },
        Ok(Err(e))
            if matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::UnexpectedEof
                    | std::io::ErrorKind::BrokenPipe
            ) =>
        {
            Health::Starting
        }
        Ok(Err(e)) => Health::Unhealthy {
            reason: format!("GET {path} at {address}: {e}"),
        },
        Err(_) => Health::Unhealthy {
            reason: format!("GET {path} at {address}: no answer within {PROBE_TIMEOUT:?}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    async fn answering(reply: &'static [u8]) -> String {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let mut buf = [0u8; 512];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(reply).await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn statuses_give_health() {
        let ok = answering(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await;
        assert_eq!(http_probe(&ok, "/health").await, Health::Healthy);
        let bad = answering(b"HTTP/1.1 503 Service Unavailable\r\n\r\n").await;
        assert!(
            matches!(http_probe(&bad, "/health").await, Health::Unhealthy { reason } if reason.contains("503"))
        );
        let closed = answering(b"").await;
        assert_eq!(http_probe(&closed, "/health").await, Health::Starting);
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let nobody = free.local_addr().unwrap().to_string();
        drop(free);
        assert_eq!(http_probe(&nobody, "/health").await, Health::Starting);
    }
}
