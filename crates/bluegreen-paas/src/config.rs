//! How the provider reaches the platform: the API's address, the token (and where
//! it is read from), and the client's options.

use std::fmt;
use std::path::Path;
use std::time::Duration;

/// The Platform API's address.
pub const DEFAULT_BASE_URL: &str = "https://api.heroku.com";

/// The media type that selects version 3 of the API.
pub const ACCEPT_V3: &str = "application/vnd.heroku+json; version=3";

/// An API token. Its `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(pub(crate) String);

impl Token {
    /// Wraps a token.
    pub fn new(token: impl Into<String>) -> Self {
        Token(token.into())
    }

    /// The token from `HEROKU_API_KEY`, or else the `password` of `machine host` in
    /// `~/.netrc` (what `heroku login` writes for `api.heroku.com`).
    pub fn from_env(host: &str) -> Option<Token> {
        if let Ok(key) = std::env::var("HEROKU_API_KEY") {
            if !key.trim().is_empty() {
                return Some(Token(key.trim().to_owned()));
            }
        }
        let home = std::env::var_os("HOME")?;
        let text = std::fs::read_to_string(Path::new(&home).join(".netrc")).ok()?;
        netrc_password(&text, host).map(Token)
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// The `password` of `machine host` in a `.netrc` text.
pub(crate) fn netrc_password(text: &str, host: &str) -> Option<String> {
    let mut words = text.split_whitespace();
    let mut in_host = false;
    while let Some(word) = words.next() {
        match word {
            "machine" => in_host = words.next() == Some(host),
            "default" => in_host = false,
            "password" => {
                let value = words.next()?;
                if in_host {
                    return Some(value.to_owned());
                }
            }
            "login" | "account" => {
                words.next();
            }
            _ => {}
        }
    }
    None
}

/// How the client behaves.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq)]
pub struct ClientOptions {
    /// How long to pause before the next request after the platform reported
    /// `RateLimit-Remaining: 0` (Heroku refills its budget gradually). Default 2 s.
    pub rate_limit_pause: Duration,
    /// The bound of one HTTP request. Default 60 s.
    pub request_timeout: Duration,
    /// How often a build is polled. Default 2 s.
    pub build_poll_interval: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            rate_limit_pause: Duration::from_secs(2),
            request_timeout: Duration::from_secs(60),
            build_poll_interval: Duration::from_secs(2),
        }
    }
}

impl ClientOptions {
    /// Sets [`ClientOptions::rate_limit_pause`].
    pub fn with_rate_limit_pause(mut self, pause: Duration) -> Self {
        self.rate_limit_pause = pause;
        self
    }

    /// Sets [`ClientOptions::request_timeout`].
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Sets [`ClientOptions::build_poll_interval`].
    pub fn with_build_poll_interval(mut self, interval: Duration) -> Self {
        self.build_poll_interval = interval;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netrc_finds_the_host() {
        let text = "machine git.heroku.com\n  login me@example.com\n  password git-token\n\
                    machine api.heroku.com login me@example.com password api-token\n";
        assert_eq!(
            netrc_password(text, "api.heroku.com").as_deref(),
            Some("api-token")
        );
        assert_eq!(
            netrc_password(text, "git.heroku.com").as_deref(),
            Some("git-token")
        );
        assert_eq!(netrc_password(text, "other"), None);
    }
}
