//! The fleet's own HTTP health probe.

use std::time::Duration;

use bluegreen_core::Health;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long one probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// `GET path` at `address` (`127.0.0.1:49153`): 2xx is healthy; a refused, reset or
/// closed connection is starting (Docker's port forwarder accepts before the app
/// listens); another status, or no answer in time, is unhealthy.
pub(crate) async fn probe(address: &str, path: &str) -> Health {
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
        assert_eq!(probe(&ok, "/health").await, Health::Healthy);
        let bad = answering(b"HTTP/1.1 503 Service Unavailable\r\n\r\n").await;
        assert!(
            matches!(probe(&bad, "/health").await, Health::Unhealthy { reason } if reason.contains("503"))
        );
        let closed = answering(b"").await;
        assert_eq!(probe(&closed, "/health").await, Health::Starting);
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let nobody = free.local_addr().unwrap().to_string();
        drop(free);
        assert_eq!(probe(&nobody, "/health").await, Health::Starting);
    }
}
