//! The few calls of the registry HTTP API (Distribution v2) that retention needs:
//! list a repository's tags, read a manifest and an image's configuration, delete a
//! manifest by digest. Plain HTTP/1.1, one connection per call.

use std::time::Duration;

use bluegreen_core::{Error, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::error::PROVIDER;

/// How long one call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest answer read (manifests and configurations are small).
const MAX_ANSWER: usize = 8 << 20;

/// The manifest types asked for: Docker's schema 2 and OCI's.
pub(crate) const MANIFEST_TYPES: &str = "application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.oci.image.manifest.v1+json";

/// An answer of the registry.
#[derive(Debug)]
pub(crate) struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// `method path` on the registry at `address` (`host:port`), with `accept` and basic
/// credentials when given. A connection failure or a 5xx is a retryable
/// [`Error::Provider`]; 401 and 403 are [`Error::PermissionDenied`]; other statuses
/// are the caller's to read.
pub(crate) async fn call(
    address: &str,
    method: &str,
    path: &str,
    accept: Option<&str>,
    basic: Option<&str>,
) -> Result<Answer> {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(address).await?;
        let mut head =
            format!("{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n");
        if let Some(accept) = accept {
            head.push_str(&format!("Accept: {accept}\r\n"));
        }
        if let Some(basic) = basic {
            head.push_str(&format!("Authorization: Basic {basic}\r\n"));
        }
        head.push_str("Content-Length: 0\r\n\r\n");
        stream.write_all(head.as_bytes()).await?;
        let mut raw = Vec::new();
        (&mut stream)
            .take(MAX_ANSWER as u64)
            .read_to_end(&mut raw)
            .await?;
        Ok::<_, std::io::Error>(raw)
    };
    let what = format!("registry {address}: {method} {path}");
    let raw = match tokio::time::timeout(CALL_TIMEOUT, attempt).await {
        Ok(Ok(raw)) => raw,
        Ok(Err(e)) => return Err(Error::provider(PROVIDER, format!("{what}: {e}"), true)),
        Err(_) => {
            return Err(Error::provider(
                PROVIDER,
                format!("{what}: no answer within {CALL_TIMEOUT:?}"),
                true,
            ))
        }
    };
    let answer = parse(&raw)
        .ok_or_else(|| Error::provider(PROVIDER, format!("{what}: not an HTTP answer"), true))?;
    match answer.status {
        401 | 403 => Err(Error::PermissionDenied {
            message: format!("{what}: {}", answer.status),
        }),
        s if s >= 500 => Err(Error::provider(PROVIDER, format!("{what}: {s}"), true)),
        _ => Ok(answer),
    }
}

fn parse(raw: &[u8]) -> Option<Answer> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    if chunked {
        body = unchunk(&body)?;
    }
    Some(Answer {
        status,
        headers,
        body,
    })
}

fn unchunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_parsed_chunked_or_not() {
        let a = parse(
            b"HTTP/1.1 200 OK\r\nDocker-Content-Digest: sha256:ab\r\nContent-Length: 2\r\n\r\n{}",
        )
        .unwrap();
        assert_eq!(a.status, 200);
        assert_eq!(a.header("docker-content-digest"), Some("sha256:ab"));
        assert_eq!(a.body, b"{}");
        let a = parse(b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
            .unwrap();
        assert_eq!(a.status, 202);
        assert_eq!(a.body, b"abcde");
        assert!(parse(b"garbage").is_none());
    }
}
