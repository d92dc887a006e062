//! Secrets kept out of logs, events and error messages.
//!
//! - [`Secret<T>`]: a value whose `Debug`, `Display` and `Serialize` print `[redacted]`; read it
//!   with [`Secret::expose`]. Use it for tokens, passwords and keys in connector structs and
//!   error variants, so `?self` in a log line or `{0}` in an error message cannot leak them.
//! - [`is_sensitive_header`] and, with the `http` feature, [`mark_sensitive`] (sets
//!   [`HeaderValue::set_sensitive`](::http::HeaderValue::set_sensitive), which `http` honours in
//!   `Debug`) and [`redacted_headers`] (a `Debug` view of a header map).
//! - [`redacted_key`]: how a per-key breaker whose keys are sensitive (`sensitive_key`, or
//!   `sensitive_keys = true` in the configuration file) shows its key in every output.
//!
//! The runtime itself logs no error's `Display` and no argument: its spans and events carry the
//! operation, breaker, attempt, class, code and correlation id only.
//!
//! ```
//! use resilience_runtime::redact::Secret;
//!
//! #[derive(Debug)]
//! struct Credentials { client_id: String, client_secret: Secret<String> }
//!
//! let c = Credentials { client_id: "app".into(), client_secret: Secret::new("s3cr3t".into()) };
//! assert_eq!(format!("{c:?}"), r#"Credentials { client_id: "app", client_secret: [redacted] }"#);
//! assert_eq!(c.client_secret.expose(), "s3cr3t");
//! ```

use std::fmt;

/// What a redacted value prints.
pub const REDACTED: &str = "[redacted]";

/// A value that never prints: `Debug`, `Display` and `Serialize` give `[redacted]`.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    /// Wraps a value.
    pub const fn new(value: T) -> Secret<T> {
        Secret(value)
    }

    /// The value, for the one place that needs it (a request header).
    pub fn expose(&self) -> &T {
        &self.0
    }

    /// The value, unwrapped.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> From<T> for Secret<T> {
    fn from(value: T) -> Secret<T> {
        Secret(value)
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl<T> serde::Serialize for Secret<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(REDACTED)
    }
}

/// The length of [`redacted_key`]'s result: `key#` and 16 hex digits.
pub const REDACTED_KEY_LEN: usize = 20;

/// How a sensitive per-key breaker shows `key`, its key within the breaker `name`: `key#`
/// followed by the first 16 lowercase hex digits of SHA-256 over the name's bytes, a zero byte
/// and the key's bytes.
///
/// The same in every process and on every replica (no seed), so an operator can follow one
/// tenant across logs, events, health and metrics, and compute the form of a tenant they know to
/// find it; the name is hashed in, so one tenant's forms under two breakers differ. 64 bits tell
/// tenants apart; they do not make a guessable key (a short tenant id) secret: a sensitive key is
/// an API key or a tenant secret.
///
/// ```
/// use resilience_runtime::redact::redacted_key;
///
/// // printf 'okta\0secret' | sha256sum
/// assert_eq!(redacted_key("okta", "secret"), "key#662a463828fd728b");
/// ```
pub fn redacted_key(name: &str, key: &str) -> String {
    let mut out = String::with_capacity(REDACTED_KEY_LEN);
    push_redacted_key(&mut out, name, key);
    out
}

/// Appends [`redacted_key`]`(name, key)` to `out`.
pub(crate) fn push_redacted_key(out: &mut String, name: &str, key: &str) {
    use sha2::{Digest, Sha256};
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::new()
        .chain_update(name.as_bytes())
        .chain_update([0u8])
        .chain_update(key.as_bytes())
        .finalize();
    out.push_str("key#");
    for b in digest.iter().take((REDACTED_KEY_LEN - 4) / 2) {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
}

/// Header names whose values are credentials (compared case-insensitively): `authorization`,
/// `proxy-authorization`, `cookie`, `set-cookie`, `x-api-key`, `api-key`, `x-auth-token`,
/// `ocp-apim-subscription-key`.
pub const SENSITIVE_HEADERS: [&str; 8] = [
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
    "api-key",
    "x-auth-token",
    "ocp-apim-subscription-key",
];

/// Whether a header's value is a credential.
pub fn is_sensitive_header(name: &str) -> bool {
    SENSITIVE_HEADERS
        .iter()
        .any(|h| h.eq_ignore_ascii_case(name))
}

/// Marks every credential header of `headers` sensitive, so `http`'s own `Debug` prints
/// `Sensitive` instead of the value (and HTTP/2 never indexes it).
///
/// ```
/// use http::{HeaderMap, HeaderValue, header::AUTHORIZATION};
/// let mut h = HeaderMap::new();
/// h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer eyJ0"));
/// resilience_runtime::redact::mark_sensitive(&mut h);
/// assert!(!format!("{h:?}").contains("eyJ0"));
/// ```
#[cfg(feature = "http")]
pub fn mark_sensitive(headers: &mut ::http::HeaderMap) {
    for (name, value) in headers.iter_mut() {
        if is_sensitive_header(name.as_str()) {
            value.set_sensitive(true);
        }
    }
}

/// A `Debug` view of a header map with credential values replaced by `[redacted]`.
///
/// ```
/// use http::{HeaderMap, HeaderValue, header::AUTHORIZATION};
/// let mut h = HeaderMap::new();
/// h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer eyJ0"));
/// h.insert("x-request-id", HeaderValue::from_static("r-1"));
/// let shown = format!("{:?}", resilience_runtime::redact::redacted_headers(&h));
/// assert_eq!(shown, r#"{"authorization": [redacted], "x-request-id": "r-1"}"#);
/// ```
#[cfg(feature = "http")]
pub fn redacted_headers(headers: &::http::HeaderMap) -> RedactedHeaders<'_> {
    RedactedHeaders(headers)
}

/// See [`redacted_headers`].
#[cfg(feature = "http")]
#[derive(Clone, Copy)]
pub struct RedactedHeaders<'a>(&'a ::http::HeaderMap);

#[cfg(feature = "http")]
impl fmt::Debug for RedactedHeaders<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Raw<'a>(&'a str);
        impl fmt::Debug for Raw<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.0)
            }
        }
        let mut m = f.debug_map();
        for (name, value) in self.0 {
            if is_sensitive_header(name.as_str()) || value.is_sensitive() {
                m.entry(&name.as_str(), &Raw(REDACTED));
            } else {
                m.entry(&name.as_str(), value);
            }
        }
        m.finish()
    }
}

/// A type whose `Debug` and `Display` never show its value: what a field marked
/// `#[connector(secret)]` in `#[derive(ConnectorError)]` must be, so an error's message cannot
/// leak it.
///
/// ```
/// use resilience_runtime::redact::{Redacted, Secret};
/// fn check<T: Redacted>() {}
/// check::<Secret<String>>();
/// check::<Option<Secret<String>>>();
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is marked `#[connector(secret)]` but prints its value",
    label = "this field's Debug and Display would show the secret",
    note = "wrap it: `resilience_runtime::redact::Secret<{Self}>` prints `[redacted]`"
)]
pub trait Redacted {}

#[diagnostic::do_not_recommend]
impl<T> Redacted for Secret<T> {}
#[diagnostic::do_not_recommend]
impl<T: Redacted> Redacted for Option<T> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redacted_key_is_the_pinned_prefix_of_sha256_over_name_zero_key() {
        // Computed outside the crate: `printf 'okta\0secret' | sha256sum` gives
        // 662a463828fd728b48bf03c6ad29be6ba6b6d8b004aad9da239ba8a0ea63d4cb.
        assert_eq!(redacted_key("okta", "secret"), "key#662a463828fd728b");
        assert_eq!(redacted_key("okta", "secret").len(), REDACTED_KEY_LEN);
        // The zero byte separates name and key: `okt` + `asecret` is another input.
        assert_ne!(
            redacted_key("okt", "asecret"),
            redacted_key("okta", "secret")
        );
        assert_ne!(
            redacted_key("graph", "secret"),
            redacted_key("okta", "secret")
        );
    }
}
