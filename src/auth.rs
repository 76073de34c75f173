//! Sans-IO authorization: who may publish, and signed subscribe tokens.
//!
//! Contract: [`check_publish`] and [`SubscribeVerifier::verify`] look only at a parsed
//! [`Request`], the peer address and a caller-supplied clock; they never read a socket or the
//! system clock. A refusal is an [`AuthError`] that renders its own response.
//!
//! Invariants:
//! 1. Secrets are compared with [`constant_time_eq`]: the time taken depends only on the
//!    lengths, never on where the first differing byte is.
//! 2. With publish tokens configured every peer, loopback included, must present one of them
//!    (several are listed during a rotation); with none configured only loopback peers
//!    (127.0.0.0/8, `::1`, `::ffff:127.0.0.0/104`) publish.
//! 3. A subscribe token is accepted only if its HS256 signature verifies with one of the
//!    configured keys (several are listed during a rotation; no other algorithm,
//!    never `none`), it carries `sub`, `topics` and `exp`, `now < exp` with zero leeway, and
//!    every requested topic matches one of its patterns.
//! 4. Error texts name the reason, never the secret or the token.

use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::http::{self, Request};

/// Compares two byte strings in time that depends only on their lengths.
///
/// Every byte pair is XOR-folded into one accumulator, so there is no early exit on the
/// first difference. Only the length leaks: a length mismatch returns `false` at once.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // Keep the optimiser from turning the fold back into a short-circuiting compare.
    std::hint::black_box(diff) == 0
}

/// Why a request is not authorized. Rendered by [`AuthError::response`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// 401: no credentials, or credentials that do not verify.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: valid (or no needed) credentials, but this request is not allowed.
    #[error("{0}")]
    Forbidden(String),
}

impl AuthError {
    /// The HTTP status: 401 or 403.
    pub fn status(&self) -> u16 {
        match self {
            AuthError::Unauthorized(_) => 401,
            AuthError::Forbidden(_) => 403,
        }
    }

    /// The full JSON error response; a 401 carries `WWW-Authenticate: Bearer`.
    pub fn response(&self, keep_alive: bool) -> Bytes {
        let body = format!("{{\"error\":{}}}\n", serde_json::Value::String(self.to_string()));
        let extra = match self {
            AuthError::Unauthorized(_) => "WWW-Authenticate: Bearer\r\n",
            AuthError::Forbidden(_) => "",
        };
        http::response(self.status(), extra, "application/json", body.as_bytes(), keep_alive)
    }
}

/// Who may publish.
#[derive(Clone, PartialEq, Eq)]
pub enum PublishAuth {
    /// Every publisher must send `Authorization: Bearer <token>` with one of these tokens
    /// (several during a rotation: old and new are both accepted while both are listed).
    Token(Vec<String>),
    /// No token configured: only loopback peers may publish.
    LoopbackOnly,
}

impl PublishAuth {
    /// From the configured publish tokens (empty strings ignored); none means loopback only.
    pub fn new(tokens: impl IntoIterator<Item = String>) -> Self {
        let tokens: Vec<String> = tokens.into_iter().filter(|t| !t.is_empty()).collect();
        if tokens.is_empty() {
            PublishAuth::LoopbackOnly
        } else {
            PublishAuth::Token(tokens)
        }
    }
}

impl std::fmt::Debug for PublishAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PublishAuth::Token(_) => f.write_str("Token(<redacted>)"),
            PublishAuth::LoopbackOnly => f.write_str("LoopbackOnly"),
        }
    }
}

/// Whether this request from `peer` may publish.
pub fn check_publish(auth: &PublishAuth, req: &Request, peer: SocketAddr) -> Result<(), AuthError> {
    match auth {
        PublishAuth::Token(accepted) => match bearer(req) {
            None => Err(AuthError::Unauthorized("missing bearer token".into())),
            // Every listed token is compared (no early exit), so the time taken does not say
            // which one matched.
            Some(got)
                if accepted
                    .iter()
                    .fold(false, |ok, t| constant_time_eq(got.as_bytes(), t.as_bytes()) | ok) =>
            {
                Ok(())
            }
            Some(_) => Err(AuthError::Unauthorized("invalid bearer token".into())),
        },
        PublishAuth::LoopbackOnly if is_loopback(peer.ip()) => Ok(()),
        PublishAuth::LoopbackOnly => Err(AuthError::Forbidden(
            "publishing is allowed only from loopback when no --publish-token is configured".into(),
        )),
    }
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
    }
}

/// The credentials of `Authorization: Bearer <token>` (scheme case-insensitive); `None`
/// without the header, with another scheme, or with an empty token.
fn bearer(req: &Request) -> Option<&str> {
    let value = req.header("authorization")?;
    let (scheme, token) = value.split_once([' ', '\t'])?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The value of cookie `name` from any `Cookie` header (`a=1; b=2`, spaces tolerated,
/// surrounding double quotes removed).
fn cookie<'a>(req: &'a Request, name: &str) -> Option<&'a str> {
    req.headers
        .iter()
        .filter(|(n, _)| n == "cookie")
        .flat_map(|(_, v)| v.split(';'))
        .filter_map(|pair| pair.split_once('='))
        .find(|(n, _)| n.trim() == name)
        .map(|(_, v)| {
            let v = v.trim();
            v.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(v)
        })
        .filter(|v| !v.is_empty())
}

/// The verified identity behind a subscribe token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    /// The token's `sub` claim.
    pub user: String,
    /// The token's `exp` claim (Unix seconds): a stream opened with it closes then.
    pub expires_at: u64,
}

/// The claims a subscribe token must carry; others are ignored.
#[derive(Deserialize)]
struct Claims {
    sub: String,
    topics: Vec<String>,
    exp: u64,
}

/// Verifies HS256 subscribe tokens (`--subscribe-key`, several accepted during a key
/// rotation), optionally read from a cookie (`--subscribe-cookie`).
pub struct SubscribeVerifier {
    keys: Vec<DecodingKey>,
    validation: Validation,
    cookie: Option<String>,
}

impl std::fmt::Debug for SubscribeVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubscribeVerifier").field("key", &"<redacted>").field("cookie", &self.cookie).finish()
    }
}

impl SubscribeVerifier {
    /// A verifier for tokens signed with `secret`. Refuses an empty secret (anyone could
    /// sign with it) and a cookie name that is not an RFC 6265 token.
    pub fn new(secret: &[u8], cookie: Option<String>) -> Result<Self, String> {
        Self::with_keys(&[secret], cookie)
    }

    /// A verifier that accepts tokens signed with any of `secrets` (a key rotation lists old
    /// and new). Refuses an empty list or secret, and a bad cookie name as [`Self::new`].
    pub fn with_keys(secrets: &[&[u8]], cookie: Option<String>) -> Result<Self, String> {
        if secrets.is_empty() || secrets.iter().any(|s| s.is_empty()) {
            return Err("--subscribe-key must not be empty".into());
        }
        if let Some(name) = &cookie {
            let bad = |b: u8| !b.is_ascii_graphic() || b"()<>@,;:\\\"/[]?={}".contains(&b);
            if name.is_empty() || name.bytes().any(bad) {
                return Err(format!("--subscribe-cookie {name:?} is not a valid cookie name"));
            }
        }
        let mut validation = Validation::new(Algorithm::HS256);
        // Time is checked here against the caller's clock, with zero leeway; the crate would
        // read the system clock. Presence of the claims is enforced by `Claims`.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.leeway = 0;
        validation.required_spec_claims.clear();
        let keys = secrets.iter().map(|s| DecodingKey::from_secret(s)).collect();
        Ok(Self { keys, validation, cookie })
    }

    /// Verifies the request's token and that it allows every topic in `topics`.
    ///
    /// The token is taken from `Authorization: Bearer`, else the configured cookie, else the
    /// `token` query parameter. `now_unix` is the current time in seconds since the epoch.
    pub fn verify(&self, req: &Request, topics: &[String], now_unix: u64) -> Result<Subject, AuthError> {
        let token = self.token(req).ok_or_else(|| AuthError::Unauthorized("missing token".into()))?;
        let invalid = || AuthError::Unauthorized("invalid token".into());
        let claims = self
            .keys
            .iter()
            .find_map(|key| jsonwebtoken::decode::<Claims>(&token, key, &self.validation).ok())
            .ok_or_else(invalid)?
            .claims;
        if claims.sub.is_empty() {
            return Err(invalid());
        }
        if now_unix >= claims.exp {
            return Err(AuthError::Unauthorized("token expired".into()));
        }
        if let Some(t) = topics.iter().find(|t| !claims.topics.iter().any(|p| topic_matches(p, t))) {
            return Err(AuthError::Forbidden(format!("token does not allow topic {t:?}")));
        }
        Ok(Subject { user: claims.sub, expires_at: claims.exp })
    }

    fn token(&self, req: &Request) -> Option<String> {
        if let Some(t) = bearer(req) {
            return Some(t.to_string());
        }
        if let Some(t) = self.cookie.as_deref().and_then(|name| cookie(req, name)) {
            return Some(t.to_string());
        }
        // A query that does not decode yields no token; the router reports the bad query.
        let pairs = req.query_pairs().ok()?;
        pairs.into_iter().find(|(k, v)| k == "token" && !v.is_empty()).map(|(_, v)| v)
    }
}

/// `prefix*` matches topics starting with `prefix` (`*` alone matches all); anything else
/// matches exactly.
fn topic_matches(pattern: &str, topic: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => topic.starts_with(prefix),
        None => pattern == topic,
    }
}

#[cfg(test)]
mod tests;
