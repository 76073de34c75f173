//! Unit tests of publish auth and subscribe token verification.

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
    let aud =
        mint(Algorithm::HS256, KEY, serde_json::json!({"sub":"u1","topics":["a"],"exp":NOW+60,"aud":"x"}));
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
