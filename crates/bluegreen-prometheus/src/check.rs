//! [`PromQlCheck`]: a PromQL expression, evaluated as an instant query, against
//! a limit.

use std::time::Duration;

use async_trait::async_trait;
use bluegreen_core::redact::{url_without_credentials, HIDDEN};
use bluegreen_core::{App, Check, CheckTarget, Error, GroupId};

/// Which side of the limit fails the check.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Limit {
    /// Fails when the value is above this (an error ratio, a latency).
    Above(f64),
    /// Fails when the value is below this (a success ratio, a request rate).
    Below(f64),
}

/// An analysis (or verify) check that evaluates a PromQL expression on a
/// Prometheus server (`GET <server>/api/v1/query`) and fails when the value
/// crosses its [`Limit`].
///
/// In the expression, `{group}`, `{app}` and `{environment}` are replaced by the
/// group under check, the app's name and its environment (the bluegreen proxy's
/// `app` label is `{app}.{environment}`); any other braces are PromQL's own. The
/// values are ids without quotes or backslashes; both are escaped all the same.
///
/// The check fails closed: a server that cannot be reached or does not answer
/// within the timeout (10 s unless [`PromQlCheck::with_timeout`]), an expression
/// Prometheus refuses (its own error text is in the reason), an empty result, a
/// vector of more than one series, a range vector or string, and a NaN (such as
/// a ratio with no traffic in the window) all fail the check, with a reason that
/// says which. So does an answer with an HTTP status other than 2xx, whatever
/// its body says.
///
/// Credentials in the server's URL (`http://user:password@host`) are used and
/// never shown: the reasons, errors and `Debug` name the server without them,
/// and `Debug` shows no bearer token.
#[derive(Clone)]
pub struct PromQlCheck {
    name: String,
    endpoint: String,
    query: String,
    limit: Limit,
    token: Option<String>,
    timeout: Duration,
    client: reqwest::Client,
}

impl std::fmt::Debug for PromQlCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PromQlCheck")
            .field("name", &self.name)
            .field("endpoint", &self.shown())
            .field("query", &self.query)
            .field("limit", &self.limit)
            .field("token", &self.token.as_ref().map(|_| HIDDEN))
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// The longest query timeout sent to Prometheus (it refuses durations that do
/// not fit its own type): a year.
const MAX_SENT_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);

impl PromQlCheck {
    /// A check named `name` that fails when `query` on the Prometheus server at
    /// `server` (`http://127.0.0.1:9090`, with or without a path prefix) is above
    /// `limit`.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming `name`, `server`, `query` or `limit` when empty,
    /// not an `http(s)://` URL or not a finite number; nothing is contacted.
    pub fn above(
        name: impl Into<String>,
        server: &str,
        query: impl Into<String>,
        limit: f64,
    ) -> Result<Self, Error> {
        Self::new(name.into(), server, query.into(), Limit::Above(limit))
    }

    /// Like [`PromQlCheck::above`], failing when the value is below `limit`.
    ///
    /// # Errors
    /// As [`PromQlCheck::above`].
    pub fn below(
        name: impl Into<String>,
        server: &str,
        query: impl Into<String>,
        limit: f64,
    ) -> Result<Self, Error> {
        Self::new(name.into(), server, query.into(), Limit::Below(limit))
    }

    fn new(name: String, server: &str, query: String, limit: Limit) -> Result<Self, Error> {
        if name.trim().is_empty() {
            return Err(Error::invalid("name", "must not be empty"));
        }
        let shown_server = url_without_credentials(server).into_owned();
        let url = reqwest::Url::parse(server)
            .map_err(|e| Error::invalid("server", format!("`{shown_server}` is not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(Error::invalid(
                "server",
                format!("`{shown_server}` is not an http:// or https:// URL with a host"),
            ));
        }
        if query.trim().is_empty() {
            return Err(Error::invalid("query", "must not be empty"));
        }
        let (Limit::Above(l) | Limit::Below(l)) = limit;
        if !l.is_finite() {
            return Err(Error::invalid(
                "limit",
                format!("{l} is not a finite number"),
            ));
        }
        let client = reqwest::Client::builder()
            .build()
            .map_err(|e| Error::invalid("server", format!("no HTTP client: {e}")))?;
        Ok(PromQlCheck {
            name,
            endpoint: format!("{}/api/v1/query", server.trim_end_matches('/')),
            query,
            limit,
            token: None,
            timeout: Duration::from_secs(10),
            client,
        })
    }

    /// Sends `Authorization: Bearer <token>` (a Prometheus behind a proxy that
    /// wants one).
    pub fn with_bearer_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// How long a query may take, request and answer (10 s by default); it is
    /// also sent as the query's own `timeout` (at most a year).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The endpoint without the user name and password its URL may carry, for
    /// messages.
    fn shown(&self) -> std::borrow::Cow<'_, str> {
        url_without_credentials(&self.endpoint)
    }

    /// The limit.
    pub fn limit(&self) -> Limit {
        self.limit
    }

    /// The expression with `group`, `app`'s name and its environment in it.
    pub fn expression(&self, app: &App, group: &GroupId) -> String {
        fn quoted(s: &str) -> String {
            s.replace('\\', "\\\\").replace('"', "\\\"")
        }
        let values = [
            ("{group}", quoted(group.as_str())),
            ("{app}", quoted(app.name())),
            ("{environment}", quoted(app.environment())),
        ];
        // one pass: a value put in is never read for placeholders again
        let mut out = String::with_capacity(self.query.len());
        let mut rest = self.query.as_str();
        'scan: while let Some(at) = rest.find('{') {
            out.push_str(&rest[..at]);
            rest = &rest[at..];
            for (placeholder, value) in &values {
                if let Some(after) = rest.strip_prefix(placeholder) {
                    out.push_str(value);
                    rest = after;
                    continue 'scan;
                }
            }
            out.push('{');
            rest = &rest[1..];
        }
        out.push_str(rest);
        out
    }

    /// What [`Check::run`] does for `group` of `app`: the expression's value when
    /// it is within the limit, else why the check fails.
    pub async fn check(&self, app: &App, group: &GroupId) -> Result<f64, String> {
        let expression = self.expression(app, group);
        let value = self.evaluate(&expression).await?;
        match self.limit {
            Limit::Above(limit) if value > limit => Err(format!(
                "`{expression}` is {value}, above the limit {limit}"
            )),
            Limit::Below(limit) if value < limit => Err(format!(
                "`{expression}` is {value}, below the limit {limit}"
            )),
            _ => Ok(value),
        }
    }

    /// Evaluates `expression` now: its one value, or why there is none.
    pub async fn evaluate(&self, expression: &str) -> Result<f64, String> {
        let timeout = format!(
            "{}ms",
            self.timeout.min(MAX_SENT_TIMEOUT).as_millis().max(1)
        );
        let mut request = self
            .client
            .get(&self.endpoint)
            .query(&[("query", expression), ("timeout", &timeout)])
            .timeout(self.timeout);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.map_err(|e| {
            format!(
                "Prometheus at {} could not be reached: {}",
                self.shown(),
                error_chain(&e)
            )
        })?;
        let status = response.status().as_u16();
        let body = response.bytes().await.map_err(|e| {
            format!(
                "Prometheus at {} answered HTTP {status} but its body was cut: {}",
                self.shown(),
                error_chain(&e)
            )
        })?;
        crate::reply::value(status, &body, expression)
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[async_trait]
impl Check for PromQlCheck {
    fn name(&self) -> &str {
        &self.name
    }

    async fn run(&self, target: &CheckTarget) -> Result<(), String> {
        self.check(&target.app, &target.group).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_replaced_and_other_braces_kept() {
        let check = PromQlCheck::above(
            "errors",
            "http://127.0.0.1:9090/",
            r#"sum(rate(x{app="{app}.{environment}",group="{group}"}[1m]))"#,
            0.1,
        )
        .unwrap();
        let app = App::new("web", "production").unwrap();
        assert_eq!(
            check.expression(&app, &GroupId::from("web-production-v002")),
            r#"sum(rate(x{app="web.production",group="web-production-v002"}[1m]))"#
        );
        assert_eq!(check.endpoint, "http://127.0.0.1:9090/api/v1/query");
        // a value put in is not read for placeholders again
        let check =
            PromQlCheck::above("c", "http://h", "{group}|{app}|{environment}|{x}", 1.0).unwrap();
        assert_eq!(
            check.expression(&app, &GroupId::from("g{app}{environment}")),
            "g{app}{environment}|web|production|{x}"
        );
    }

    #[test]
    fn credentials_are_never_shown() {
        let check = PromQlCheck::above("c", "http://alice:s3cr3t@h:9090/p", "up", 1.0)
            .unwrap()
            .with_bearer_token("t0k3n");
        let debug = format!("{check:?}");
        assert!(
            !debug.contains("s3cr3t") && !debug.contains("t0k3n"),
            "{debug}"
        );
        assert!(debug.contains("http://h:9090/p/api/v1/query"), "{debug}");
        let e = PromQlCheck::above("c", "ftp://alice:s3cr3t@h", "up", 1.0).unwrap_err();
        assert!(!e.to_string().contains("s3cr3t"), "{e}");
    }

    #[test]
    fn bad_settings_name_the_field() {
        let field = |r: Result<PromQlCheck, Error>| match r.unwrap_err() {
            Error::Invalid { field, .. } => field,
            other => panic!("{other}"),
        };
        assert_eq!(field(PromQlCheck::above("", "http://h", "up", 1.0)), "name");
        assert_eq!(
            field(PromQlCheck::above("c", "h:9090", "up", 1.0)),
            "server"
        );
        assert_eq!(
            field(PromQlCheck::above("c", "ftp://h", "up", 1.0)),
            "server"
        );
        assert_eq!(
            field(PromQlCheck::below("c", "http://h", " ", 1.0)),
            "query"
        );
        assert_eq!(
            field(PromQlCheck::below("c", "http://h", "up", f64::NAN)),
            "limit"
        );
    }
}
