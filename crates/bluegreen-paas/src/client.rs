//! A client for the Heroku Platform API v3: authentication, pagination, rate limits
//! and errors in the core's kinds.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bluegreen_core::{Error, Result};
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, CONTENT_TYPE, USER_AGENT};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::time::Instant;

use crate::config::{ClientOptions, Token, ACCEPT_V3, DEFAULT_BASE_URL};
use crate::error::{ApiError, TransportError};

/// A Platform API client, cheap to clone (the clones share connections and the
/// rate-limit pause).
///
/// Its requests are the typed operations of this crate's image, fleet and router;
/// the untyped HTTP methods stay inside the crate ([`testing::RawClient`](crate::testing)
/// reaches them for tests, with the `testing` feature).
///
/// Errors come back in the core's kinds: 404 is `NotFound`, 401 and 403
/// `PermissionDenied`, 409 `Conflict`, 422 `Invalid`, 429 `RateLimited` and 5xx a
/// retryable `Provider` error, each naming the platform's error id. Retrying is the
/// core's [`Retry`](bluegreen_core::Retry) layer's job; the client only pauses after
/// the platform says its budget is spent (`RateLimit-Remaining: 0`).
///
/// ```
/// use bluegreen_paas::{PlatformClient, Token};
/// let client = PlatformClient::new("http://127.0.0.1:5000", Token::new("secret")).unwrap();
/// assert!(!format!("{client:?}").contains("secret"));
/// ```
#[derive(Clone)]
pub struct PlatformClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    base: String,
    token: Token,
    options: ClientOptions,
    paused_until: Mutex<Option<Instant>>,
}

impl fmt::Debug for PlatformClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PlatformClient")
            .field("base", &self.inner.base)
            .field("token", &self.inner.token)
            .field("options", &self.inner.options)
            .finish()
    }
}

impl PlatformClient {
    /// A client of the API at `base_url` with `token` and default options.
    pub fn new(base_url: &str, token: Token) -> Result<Self> {
        PlatformClient::with_options(base_url, token, ClientOptions::default())
    }

    /// A client of the API at `base_url` with `token` and `options`.
    pub fn with_options(base_url: &str, token: Token, options: ClientOptions) -> Result<Self> {
        let base = base_url.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(Error::invalid(
                "base_url",
                format!("`{base_url}` is not an http(s) URL"),
            ));
        }
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static(ACCEPT_V3));
        headers.insert(
            USER_AGENT,
            HeaderValue::from_static(concat!("bluegreen-paas/", env!("CARGO_PKG_VERSION"))),
        );
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(options.request_timeout)
            .build()
            .map_err(|e| Error::provider_source(crate::error::PROVIDER, false, e))?;
        Ok(PlatformClient {
            inner: Arc::new(Inner {
                http,
                base,
                token,
                options,
                paused_until: Mutex::new(None),
            }),
        })
    }

    /// A client of `base_url` (the default API when `None`) with the token from
    /// `HEROKU_API_KEY` or `~/.netrc` (the `machine` named by the URL's host).
    pub fn from_env(base_url: Option<&str>) -> Result<Self> {
        let base = base_url.unwrap_or(DEFAULT_BASE_URL);
        let host = base
            .split("://")
            .nth(1)
            .and_then(|rest| rest.split(['/', ':']).next())
            .unwrap_or("api.heroku.com");
        let token = Token::from_env(host).ok_or_else(|| Error::PermissionDenied {
            message: format!(
                "no API token: set HEROKU_API_KEY or add `machine {host}` to ~/.netrc"
            ),
        })?;
        PlatformClient::new(base, token)
    }

    /// The API's base URL.
    pub fn base_url(&self) -> &str {
        &self.inner.base
    }

    /// The client's options.
    pub fn options(&self) -> &ClientOptions {
        &self.inner.options
    }

    /// `GET path`, decoded.
    pub(crate) async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let (value, _) = self.request(Method::GET, path, None, None).await?;
        decode(path, value)
    }

    /// Every item of a list, following `Next-Range` across pages.
    pub(crate) async fn list<T: DeserializeOwned>(&self, path: &str) -> Result<Vec<T>> {
        let mut out = Vec::new();
        let mut range: Option<String> = None;
        loop {
            let (value, next) = self
                .request(Method::GET, path, None, range.as_deref())
                .await?;
            let page: Vec<T> = decode(path, value)?;
            out.extend(page);
            match next {
                Some(next) => range = Some(next),
                None => return Ok(out),
            }
        }
    }

    /// `POST path` with a JSON body, decoded.
    pub(crate) async fn post<T: DeserializeOwned>(&self, path: &str, body: &Value) -> Result<T> {
        let (value, _) = self.request(Method::POST, path, Some(body), None).await?;
        decode(path, value)
    }

    /// `PATCH path` with a JSON body, decoded.
    pub(crate) async fn patch<T: DeserializeOwned>(&self, path: &str, body: &Value) -> Result<T> {
        let (value, _) = self.request(Method::PATCH, path, Some(body), None).await?;
        decode(path, value)
    }

    /// `DELETE path`; a missing resource is `NotFound`.
    pub(crate) async fn delete(&self, path: &str) -> Result<()> {
        self.request(Method::DELETE, path, None, None).await?;
        Ok(())
    }

    /// Uploads `bytes` to a blob URL the platform handed out (a slug's `blob.url`),
    /// without the API token.
    pub(crate) async fn put_blob(&self, url: &str, bytes: Vec<u8>) -> Result<()> {
        let what = "PUT slug blob".to_owned();
        let response = self
            .inner
            .http
            .put(url)
            .body(bytes)
            .send()
            .await
            .map_err(|source| TransportError {
                request: what.clone(),
                // the URL is a signed one: it must not reach errors or logs
                source: source.without_url(),
            })?;
        if !response.status().is_success() {
            return Err(api_error(what, response).await.into());
        }
        Ok(())
    }

    /// Reads a text stream the platform handed out (a build's `output_stream_url`),
    /// without the API token, calling `line` for each line until the stream ends.
    pub(crate) async fn stream_lines(&self, url: &str, mut line: impl FnMut(String)) -> Result<()> {
        let what = "GET output stream".to_owned();
        let mut response = self
            .inner
            .http
            .get(url)
            .header(ACCEPT, "text/plain")
            .send()
            .await
            .map_err(|source| TransportError {
                request: what.clone(),
                // the URL is a signed one: it must not reach errors or logs
                source: source.without_url(),
            })?;
        if !response.status().is_success() {
            return Err(api_error(what, response).await.into());
        }
        let mut pending = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|source| TransportError {
            request: what.clone(),
            source: source.without_url(),
        })? {
            pending.extend_from_slice(&chunk);
            while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                let rest = pending.split_off(end + 1);
                let text = String::from_utf8_lossy(&pending[..end])
                    .trim_end()
                    .to_owned();
                line(text);
                pending = rest;
            }
        }
        if !pending.is_empty() {
            line(String::from_utf8_lossy(&pending).trim_end().to_owned());
        }
        Ok(())
    }

    async fn pause_if_spent(&self) {
        let until = *self.inner.paused_until.lock().expect("pause lock");
        if let Some(until) = until {
            if until > Instant::now() {
                tracing::debug!(
                    pause = ?(until - Instant::now()),
                    "rate limit budget spent, pausing"
                );
                tokio::time::sleep_until(until).await;
            }
        }
    }

    /// One API request: the value of the body (`Null` when empty) and the
    /// `Next-Range` of a partial answer.
    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        range: Option<&str>,
    ) -> Result<(Value, Option<String>)> {
        self.pause_if_spent().await;
        let what = format!("{method} {path}");
        let mut request = self
            .inner
            .http
            .request(method, format!("{}{path}", self.inner.base))
            .bearer_auth(&self.inner.token.0);
        if let Some(range) = range {
            request = request.header("Range", range);
        }
        if let Some(body) = body {
            request = request
                .header(CONTENT_TYPE, "application/json")
                .body(body.to_string());
        }
        tracing::debug!(request = %what, ?range, "platform api");
        let response = request.send().await.map_err(|source| TransportError {
            request: what.clone(),
            source,
        })?;
        if response
            .headers()
            .get("RateLimit-Remaining")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            == Some(0)
        {
            *self.inner.paused_until.lock().expect("pause lock") =
                Some(Instant::now() + self.inner.options.rate_limit_pause);
        }
        let status = response.status();
        if !status.is_success() {
            return Err(api_error(what, response).await.into());
        }
        let next = if status == StatusCode::PARTIAL_CONTENT {
            response
                .headers()
                .get("Next-Range")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        } else {
            None
        };
        let bytes = response.bytes().await.map_err(|source| TransportError {
            request: what.clone(),
            source,
        })?;
        let value = if bytes.iter().all(u8::is_ascii_whitespace) {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).map_err(|e| {
                Error::provider(
                    crate::error::PROVIDER,
                    format!("{what}: the answer is not JSON: {e}"),
                    false,
                )
            })?
        };
        Ok((value, next))
    }
}

fn decode<T: DeserializeOwned>(path: &str, value: Value) -> Result<T> {
    serde_json::from_value(value).map_err(|e| {
        Error::provider(
            crate::error::PROVIDER,
            format!("{path}: unexpected answer: {e}"),
            false,
        )
    })
}

async fn api_error(request: String, response: reqwest::Response) -> ApiError {
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("Retry-After")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let body: Value = response.json().await.unwrap_or(Value::Null);
    let field = |key: &str| body.get(key).and_then(Value::as_str).map(str::to_owned);
    ApiError {
        status,
        id: field("id").unwrap_or_else(|| format!("http_{status}")),
        message: field("message").unwrap_or_else(|| "no message".to_owned()),
        request,
        retry_after,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_token() {
        let c = PlatformClient::new("http://127.0.0.1:1", Token::new("s3cr3t")).unwrap();
        let text = format!("{c:?}");
        assert!(!text.contains("s3cr3t"), "{text}");
        assert!(text.contains("redacted"));
        assert!(PlatformClient::new("ftp://x", Token::new("t")).is_err());
    }
}
