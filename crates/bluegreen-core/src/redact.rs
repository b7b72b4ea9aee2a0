//! Secrets kept out of what is shown: the messages, errors and `Debug` output of
//! a provider name a server without the user name and password its URL may
//! carry, and show a secret as [`HIDDEN`].
//!
//! ```
//! use bluegreen_core::redact::url_without_credentials;
//! assert_eq!(
//!     url_without_credentials("https://ci:s3cret@hooks.example.com/deploy?x=1"),
//!     "https://hooks.example.com/deploy?x=1"
//! );
//! assert_eq!(url_without_credentials("http://127.0.0.1:9090/p"), "http://127.0.0.1:9090/p");
//! ```

use std::borrow::Cow;

/// What a `Debug` implementation shows for a secret.
pub const HIDDEN: &str = "<hidden>";

/// `url` without the user name and password in its authority
/// (`scheme://user:password@host/…` → `scheme://host/…`); a text with no
/// `scheme://` or no `@` in its authority is returned as it is.
pub fn url_without_credentials(url: &str) -> Cow<'_, str> {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return Cow::Borrowed(url);
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => Cow::Owned(format!("{}{}", &url[..scheme_end], &rest[at + 1..])),
        None => Cow::Borrowed(url),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_go_and_nothing_else() {
        for (given, shown) in [
            ("http://a:b@h:1/p?q=1#f", "http://h:1/p?q=1#f"),
            ("http://a@h", "http://h"),
            ("http://a:p%40ss@h/x", "http://h/x"),
            ("http://u:p@[::1]:9090/api", "http://[::1]:9090/api"),
            ("https://:only-password@h", "https://h"),
            ("http://a:b@c@h/p", "http://h/p"),
            ("https://h/p@x", "https://h/p@x"),
            ("https://h?u=a@b", "https://h?u=a@b"),
            ("http://h", "http://h"),
            ("not a url", "not a url"),
            ("unix:/run/x.sock", "unix:/run/x.sock"),
            ("", ""),
        ] {
            assert_eq!(url_without_credentials(given), shown, "{given}");
        }
    }
}
