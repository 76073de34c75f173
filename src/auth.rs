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
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};

    const KEY: &[u8] = b"subscribe-secret";
    const NOW: u64 = 1_700_000_000;

    fn req(headers: &[(&str, &str)], query: &str) -> Request {
        Request {
            method: "GET".into(),
            path: "/events".into(),
            query: query.into(),
            headers: headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect(),
            body: Bytes::new(),
            keep_alive: true,
        }
    }

    fn peer(ip: &str) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap(), 4000)
    }

    fn mint(alg: Algorithm, key: &[u8], claims: serde_json::Value) -> String {
        encode(&Header::new(alg), &claims, &EncodingKey::from_secret(key)).unwrap()
    }

    /// Unpadded base64url, for hand-built tokens.
    fn b64url(s: &str) -> String {
        const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in s.as_bytes().chunks(3) {
            let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
            for i in 0..=chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            }
        }
        out
    }

    fn token(topics: &[&str], exp: u64) -> String {
        mint(Algorithm::HS256, KEY, serde_json::json!({"sub": "u1", "topics": topics, "exp": exp}))
    }

    fn verifier() -> SubscribeVerifier {
        SubscribeVerifier::new(KEY, Some("sse_token".into())).unwrap()
    }

    fn verify_bearer(tok: &str, topics: &[&str]) -> Result<Subject, AuthError> {
        let topics: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
        verifier().verify(&req(&[("authorization", &format!("Bearer {tok}"))], ""), &topics, NOW)
    }

    fn unauthorized(msg: &str) -> Result<Subject, AuthError> {
        Err(AuthError::Unauthorized(msg.into()))
    }

    #[test]
    fn constant_time_eq_compares_contents_and_length() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"Secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
    }

    #[test]
    fn publish_with_token_matrix() {
        let auth = PublishAuth::new(Some("s3cret".into()));
        let missing = Err(AuthError::Unauthorized("missing bearer token".into()));
        let invalid = Err(AuthError::Unauthorized("invalid bearer token".into()));
        for (header, want) in [
            (None, &missing),
            (Some("Basic czNjcmV0"), &missing),
            (Some("Bearer "), &missing),
            (Some("Bearer wrong!"), &invalid),
            (Some("Bearer s3cre"), &invalid),
            (Some("Bearer s3cret"), &Ok(())),
            (Some("bearer s3cret"), &Ok(())),
            (Some("BEARER  s3cret"), &Ok(())),
        ] {
            let headers: Vec<_> = header.map(|h| ("authorization", h)).into_iter().collect();
            // A token is required from loopback too, and is enough from anywhere.
            for ip in ["127.0.0.1", "203.0.113.9"] {
                assert_eq!(&check_publish(&auth, &req(&headers, ""), peer(ip)), want, "{header:?} {ip}");
            }
        }
        assert_eq!(format!("{auth:?}"), "Token(<redacted>)");
    }

    #[test]
    fn every_listed_publish_token_is_accepted() {
        let auth = PublishAuth::new(["old".to_string(), String::new(), "new".to_string()]);
        assert_eq!(auth, PublishAuth::Token(vec!["old".into(), "new".into()]));
        for (token, ok) in [("old", true), ("new", true), ("ol", false), ("newer", false)] {
            let h = format!("Bearer {token}");
            let got = check_publish(&auth, &req(&[("authorization", &h)], ""), peer("203.0.113.9"));
            assert_eq!(got.is_ok(), ok, "{token}");
        }
    }

    #[test]
    fn tokens_signed_with_any_listed_key_verify() {
        let v = SubscribeVerifier::with_keys(&[b"new-key", KEY], None).unwrap();
        let topics = vec!["a".to_string()];
        let claims = serde_json::json!({"sub": "u", "topics": ["a"], "exp": NOW + 60});
        for key in [&b"new-key"[..], KEY] {
            let t = mint(Algorithm::HS256, key, claims.clone());
            let r = req(&[("authorization", &format!("Bearer {t}"))], "");
            assert_eq!(v.verify(&r, &topics, NOW).map(|s| s.user), Ok("u".into()));
        }
        let t = mint(Algorithm::HS256, b"other", claims);
        let r = req(&[("authorization", &format!("Bearer {t}"))], "");
        assert_eq!(v.verify(&r, &topics, NOW), unauthorized("invalid token"));
        assert!(SubscribeVerifier::with_keys(&[], None).is_err());
        assert!(SubscribeVerifier::with_keys(&[KEY, b""], None).is_err());
    }

    #[test]
    fn publish_without_token_is_loopback_only() {
        for auth in [PublishAuth::new(None), PublishAuth::new(Some(String::new()))] {
            assert_eq!(auth, PublishAuth::LoopbackOnly);
            for ip in ["127.0.0.1", "127.1.2.3", "::1", "::ffff:127.0.0.1"] {
                assert_eq!(check_publish(&auth, &req(&[], ""), peer(ip)), Ok(()), "{ip}");
            }
            for ip in ["10.0.0.1", "203.0.113.9", "2001:db8::1", "::ffff:10.0.0.1", "::"] {
                let err = check_publish(&auth, &req(&[], ""), peer(ip)).unwrap_err();
                assert_eq!(err.status(), 403, "{ip}");
                assert!(err.to_string().contains("--publish-token"));
            }
        }
    }

    #[test]
    fn error_responses_are_json_with_the_right_headers() {
        let text = |e: AuthError| String::from_utf8(e.response(true).to_vec()).unwrap();
        let r401 = text(AuthError::Unauthorized("missing token".into()));
        assert!(r401.starts_with("HTTP/1.1 401 "));
        assert!(r401.contains("\r\nWWW-Authenticate: Bearer\r\n"));
        assert!(r401.ends_with("\r\n\r\n{\"error\":\"missing token\"}\n"));
        let r403 = text(AuthError::Forbidden("token does not allow topic \"x\"".into()));
        assert!(r403.starts_with("HTTP/1.1 403 "));
        assert!(!r403.contains("WWW-Authenticate"));
        assert!(r403.contains("{\"error\":\"token does not allow topic \\\"x\\\"\"}"));
    }

    #[test]
    fn subscribe_missing_and_invalid_tokens() {
        let none = verifier().verify(&req(&[], ""), &["a".into()], NOW);
        assert_eq!(none, unauthorized("missing token"));
        let other_key =
            mint(Algorithm::HS256, b"other", serde_json::json!({"sub":"u1","topics":["a"],"exp":NOW+60}));
        assert_eq!(verify_bearer(&other_key, &["a"]), unauthorized("invalid token"));
        // A valid signature over other claims: the payload was swapped for a wider grant.
        let good = token(&["a"], NOW + 60);
        let parts: Vec<&str> = good.split('.').collect();
        let wider = b64url(&serde_json::json!({"sub":"u1","topics":["*"],"exp":NOW+60}).to_string());
        let tampered = format!("{}.{wider}.{}", parts[0], parts[2]);
        assert_eq!(verify_bearer(&tampered, &["a"]), unauthorized("invalid token"));
        assert_eq!(verify_bearer("not.a.jwt", &["a"]), unauthorized("invalid token"));
        assert_eq!(verify_bearer("garbage", &["a"]), unauthorized("invalid token"));
    }

    #[test]
    fn subscribe_rejects_other_algorithms_and_none() {
        let claims = serde_json::json!({"sub": "u1", "topics": ["a"], "exp": NOW + 60});
        assert_eq!(
            verify_bearer(&mint(Algorithm::HS512, KEY, claims.clone()), &["a"]),
            unauthorized("invalid token")
        );
        assert_eq!(
            (b64url("hello"), b64url("hell"), b64url("hel")),
            ("aGVsbG8".into(), "aGVsbA".into(), "aGVs".into())
        );
        let header = b64url(r#"{"alg":"none","typ":"JWT"}"#);
        let payload = b64url(&claims.to_string());
        for tok in [format!("{header}.{payload}."), format!("{header}.{payload}")] {
            assert_eq!(verify_bearer(&tok, &["a"]), unauthorized("invalid token"), "{tok}");
        }
    }

    #[test]
    fn subscribe_requires_every_claim() {
        for claims in [
            serde_json::json!({"topics": ["a"], "exp": NOW + 60}),
            serde_json::json!({"sub": "u1", "exp": NOW + 60}),
            serde_json::json!({"sub": "u1", "topics": ["a"]}),
            serde_json::json!({"sub": "", "topics": ["a"], "exp": NOW + 60}),
            serde_json::json!({"sub": 7, "topics": ["a"], "exp": NOW + 60}),
            serde_json::json!({"sub": "u1", "topics": "a", "exp": NOW + 60}),
            serde_json::json!({"sub": "u1", "topics": ["a"], "exp": "later"}),
        ] {
            let tok = mint(Algorithm::HS256, KEY, claims.clone());
            assert_eq!(verify_bearer(&tok, &["a"]), unauthorized("invalid token"), "{claims}");
        }
    }

    #[test]
    fn subscribe_expiry_uses_the_given_clock_with_zero_leeway() {
        assert_eq!(verify_bearer(&token(&["a"], NOW - 1), &["a"]), unauthorized("token expired"));
        assert_eq!(verify_bearer(&token(&["a"], NOW), &["a"]), unauthorized("token expired"));
        assert_eq!(
            verify_bearer(&token(&["a"], NOW + 1), &["a"]),
            Ok(Subject { user: "u1".into(), expires_at: NOW + 1 })
        );
        assert_eq!(
            verify_bearer(&token(&["a"], NOW + 60), &["a"]),
            Ok(Subject { user: "u1".into(), expires_at: NOW + 60 })
        );
        // An audience claim is not an error (there is no audience to check against).
        let aud = mint(
            Algorithm::HS256,
            KEY,
            serde_json::json!({"sub":"u1","topics":["a"],"exp":NOW+60,"aud":"x"}),
        );
        assert!(verify_bearer(&aud, &["a"]).is_ok());
    }

    #[test]
    fn subscribe_topics_must_all_match_a_pattern() {
        let tok = token(&["jobs", "user.42.*"], NOW + 60);
        assert!(verify_bearer(&tok, &["jobs", "user.42.inbox", "user.42."]).is_ok());
        assert!(verify_bearer(&tok, &[]).is_ok());
        let err = verify_bearer(&tok, &["jobs", "user.43.inbox"]).unwrap_err();
        assert_eq!(err, AuthError::Forbidden("token does not allow topic \"user.43.inbox\"".into()));
        assert_eq!(err.status(), 403);
        assert!(verify_bearer(&tok, &["jobs2"]).is_err());
        assert!(verify_bearer(&token(&["*"], NOW + 60), &["anything", "else"]).is_ok());
        assert!(verify_bearer(&token(&[], NOW + 60), &["a"]).is_err());
        assert!(topic_matches("a*", "a") && topic_matches("a*", "ab") && !topic_matches("a*", "ba"));
        assert!(topic_matches("a", "a") && !topic_matches("a", "ab"));
    }

    #[test]
    fn subscribe_token_sources_in_order() {
        let v = verifier();
        let topics = vec!["a".to_string()];
        let good = token(&["a"], NOW + 60);
        let cookies = format!("theme=dark;sse_token={good} ; other=1");
        assert!(v.verify(&req(&[("cookie", &cookies)], ""), &topics, NOW).is_ok());
        let quoted = format!("a=b; sse_token=\"{good}\"");
        assert!(v.verify(&req(&[("cookie", "x=y"), ("cookie", &quoted)], ""), &topics, NOW).is_ok());
        assert!(v.verify(&req(&[], &format!("topic=a&token={good}")), &topics, NOW).is_ok());
        // Another cookie's value or a cookie that only ends in the name is not the token.
        let wrong = format!("xsse_token={good}; sse_token2={good}");
        assert_eq!(v.verify(&req(&[("cookie", &wrong)], ""), &topics, NOW), unauthorized("missing token"));
        // Without a configured cookie name the cookie is not read.
        let no_cookie = SubscribeVerifier::new(KEY, None).unwrap();
        let cookie_req = req(&[("cookie", &cookies)], "");
        assert_eq!(no_cookie.verify(&cookie_req, &topics, NOW), unauthorized("missing token"));
        // The header wins over the cookie, the cookie over the query.
        let bad = "Bearer nope";
        let h = req(&[("authorization", bad), ("cookie", &cookies)], &format!("token={good}"));
        assert_eq!(v.verify(&h, &topics, NOW), unauthorized("invalid token"));
        let c = req(&[("cookie", "sse_token=nope")], &format!("token={good}"));
        assert_eq!(v.verify(&c, &topics, NOW), unauthorized("invalid token"));
        // A non-Bearer Authorization header is skipped, not fatal.
        let basic = req(&[("authorization", "Basic abc")], &format!("token={good}"));
        assert!(v.verify(&basic, &topics, NOW).is_ok());
    }

    #[test]
    fn verifier_config_is_validated() {
        assert!(SubscribeVerifier::new(b"", None).unwrap_err().contains("--subscribe-key"));
        for bad in ["", "a b", "a=b", "a;b"] {
            assert!(SubscribeVerifier::new(KEY, Some(bad.into())).is_err(), "{bad:?}");
        }
        assert!(!format!("{:?}", verifier()).contains("subscribe-secret"));
        fn shared<T: Send + Sync>() {}
        shared::<SubscribeVerifier>();
        shared::<PublishAuth>();
    }
}
