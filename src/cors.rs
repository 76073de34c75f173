//! Sans-IO CORS for browser clients on other origins (`--cors-origin`).
//!
//! Contract: [`Cors::headers_for`] gives the extra header lines for a normal response,
//! [`Cors::preflight`] the whole answer to an `OPTIONS` preflight, [`Cors::check_publish`]
//! whether a browser may publish from the request's origin. All only read the request.
//!
//! Invariants:
//! 1. Only an allowed `Origin` gets CORS headers; any other request (and one without
//!    `Origin`) gets none, so the browser blocks reading the response.
//! 2. Credentials (cookies, `Authorization`) are allowed only for explicitly listed origins:
//!    they get their origin echoed with `Access-Control-Allow-Credentials: true`. `*` allows
//!    every other origin *without* credentials: `Access-Control-Allow-Origin: *` and no
//!    `-Credentials`, so a browser sends no cookie and shows no credentialed answer to an
//!    arbitrary site. Every CORS answer says `Vary: Origin` (answers differ by origin).
//! 3. `*` never covers `null` (sandboxed frames, `file:` pages), which must be listed.
//! 4. Nothing is echoed that could break the header block: values with control characters or
//!    non-ASCII bytes are refused (`Origin`) or replaced by the default (request headers).
//! 5. A request carrying `Origin` is a browser's. It may publish only from a listed origin,
//!    or under `*` when a publish token is configured (the token, which a browser never adds
//!    by itself, decides). Loopback trust (no `--publish-token`) is ambient, like a cookie,
//!    so `*` does not extend it: a page on any site, open in a browser on the node's host,
//!    could otherwise publish with a `text/plain` POST that needs no preflight. A request
//!    without `Origin` (curl, server-side publishers) is not affected.

use bytes::Bytes;

use crate::auth::AuthError;
use crate::http::Request;

/// Headers a preflight allows when the browser does not say which it wants.
pub const DEFAULT_ALLOW_HEADERS: &str = "Authorization, Content-Type, Last-Event-ID";
/// Methods a preflight allows.
pub const ALLOW_METHODS: &str = "GET, POST, OPTIONS";
/// Seconds a browser may cache a preflight answer (fewer `OPTIONS` round trips).
pub const MAX_AGE_SECS: u32 = 600;

/// How an origin is allowed (invariant 2).
enum Allowed<'r> {
    /// Listed explicitly: echoed, with credentials.
    Listed(&'r str),
    /// Covered by `*`: without credentials.
    Any,
}

/// The allowed origins.
#[derive(Debug, Clone, Default)]
pub struct Cors {
    origins: Vec<String>,
    any: bool,
}

impl Cors {
    /// From the `--cors-origin` values: each may hold several origins separated by commas.
    /// Entries are trimmed, a trailing `/` is dropped, empty entries are ignored; `*` allows
    /// any origin.
    pub fn new<I, S>(values: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut cors = Cors::default();
        for value in values {
            for origin in value.as_ref().split(',').map(|o| o.trim().trim_end_matches('/')) {
                match origin {
                    "" => {}
                    "*" => cors.any = true,
                    o => cors.origins.push(o.to_ascii_lowercase()),
                }
            }
        }
        cors
    }

    /// No origin is allowed: CORS is off and no request gets CORS headers.
    pub fn is_empty(&self) -> bool {
        !self.any && self.origins.is_empty()
    }

    /// How the request's `Origin` is allowed, if it is.
    fn allowed_origin<'r>(&self, req: &'r Request) -> Option<Allowed<'r>> {
        let origin = req.header("origin")?;
        if origin.is_empty() || !origin.bytes().all(|b| b.is_ascii_graphic()) {
            return None;
        }
        if self.origins.iter().any(|o| o.eq_ignore_ascii_case(origin)) {
            Some(Allowed::Listed(origin))
        } else {
            (self.any && origin != "null").then_some(Allowed::Any)
        }
    }

    /// Extra response header lines (`Name: value\r\n` each) for an allowed `Origin`; `None`
    /// without an `Origin` header or for an origin not allowed.
    pub fn headers_for(&self, req: &Request) -> Option<String> {
        self.allowed_origin(req).map(|allowed| match allowed {
            Allowed::Listed(origin) => format!(
                "Access-Control-Allow-Origin: {origin}\r\nAccess-Control-Allow-Credentials: true\r\nVary: Origin\r\n"
            ),
            Allowed::Any => "Access-Control-Allow-Origin: *\r\nVary: Origin\r\n".to_string(),
        })
    }

    /// Whether a publish with this request's `Origin` may go on (invariant 5);
    /// `token_required`: a `--publish-token` is configured.
    pub fn check_publish(&self, req: &Request, token_required: bool) -> Result<(), AuthError> {
        let Some(origin) = req.header("origin") else { return Ok(()) };
        match self.allowed_origin(req) {
            Some(Allowed::Listed(_)) => Ok(()),
            Some(Allowed::Any) if token_required => Ok(()),
            _ => Err(AuthError::Forbidden(format!(
                "publishing from a browser on origin {origin:?} is not allowed: list the origin in \
                 --cors-origin ('*' covers publishes only with --publish-token)"
            ))),
        }
    }

    /// The whole answer to an `OPTIONS` preflight: `204`, with the CORS headers, allowed
    /// methods, allowed headers (the requested ones echoed) and max age when the origin is
    /// allowed, without any CORS header otherwise.
    pub fn preflight(&self, req: &Request, keep_alive: bool) -> Bytes {
        let Some(mut extra) = self.headers_for(req) else {
            return no_content("", keep_alive);
        };
        let requested = req
            .header("access-control-request-headers")
            .map(str::trim)
            .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic() || b == b' ' || b == b'\t'));
        let allow_headers = requested.unwrap_or(DEFAULT_ALLOW_HEADERS);
        extra.push_str(&format!(
            "Access-Control-Allow-Methods: {ALLOW_METHODS}\r\nAccess-Control-Allow-Headers: {allow_headers}\r\nAccess-Control-Max-Age: {MAX_AGE_SECS}\r\nVary: Access-Control-Request-Headers\r\n"
        ));
        no_content(&extra, keep_alive)
    }
}

/// A `204 No Content` head. Built here rather than with [`crate::http::response`] because a
/// 204 must not carry `Content-Length` or a body (RFC 9110 §8.6, §15.3.5).
fn no_content(extra: &str, keep_alive: bool) -> Bytes {
    let connection = if keep_alive { "keep-alive" } else { "close" };
    Bytes::from(format!(
        "HTTP/1.1 204 {}\r\nConnection: {connection}\r\n{extra}\r\n",
        crate::http::reason(204)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, headers: &[(&str, &str)]) -> Request {
        Request {
            method: method.into(),
            path: "/events".into(),
            query: String::new(),
            headers: headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect(),
            body: Bytes::new(),
            keep_alive: true,
        }
    }

    fn text(b: Bytes) -> String {
        String::from_utf8(b.to_vec()).unwrap()
    }

    const APP: &str = "https://app.example.com";

    #[test]
    fn origins_are_parsed_from_repeated_and_comma_separated_values() {
        assert!(Cors::new(Vec::<String>::new()).is_empty());
        assert!(Cors::new([" ", ","]).is_empty());
        let cors = Cors::new(["https://a.example, https://b.example/", "https://C.example"]);
        assert!(!cors.is_empty());
        for o in ["https://a.example", "https://b.example", "https://c.example", "HTTPS://A.EXAMPLE"] {
            assert!(cors.headers_for(&req("GET", &[("origin", o)])).is_some(), "{o}");
        }
        assert!(!Cors::new(["*"]).is_empty());
    }

    #[test]
    fn allowed_origin_is_echoed_with_credentials_and_vary() {
        let cors = Cors::new([APP]);
        let h = cors.headers_for(&req("GET", &[("origin", APP)])).unwrap();
        assert_eq!(
            h,
            "Access-Control-Allow-Origin: https://app.example.com\r\nAccess-Control-Allow-Credentials: true\r\nVary: Origin\r\n"
        );
    }

    #[test]
    fn other_or_missing_origins_get_nothing() {
        let cors = Cors::new([APP]);
        for o in [
            "https://evil.example",
            "https://app.example.com.evil.example",
            "http://app.example.com",
            "null",
            "",
        ] {
            assert_eq!(cors.headers_for(&req("GET", &[("origin", o)])), None, "{o}");
        }
        assert_eq!(cors.headers_for(&req("GET", &[])), None);
        assert_eq!(Cors::new(Vec::<&str>::new()).headers_for(&req("GET", &[("origin", APP)])), None);
    }

    #[test]
    fn star_allows_any_origin_without_credentials() {
        let cors = Cors::new(["*"]);
        let h = cors.headers_for(&req("GET", &[("origin", "https://x.example:8443")])).unwrap();
        assert_eq!(h, "Access-Control-Allow-Origin: *\r\nVary: Origin\r\n");
        assert_eq!(cors.headers_for(&req("GET", &[("origin", "null")])), None);
        assert!(Cors::new(["*", "null"]).headers_for(&req("GET", &[("origin", "null")])).is_some());
        // Nothing that could split the header block is answered.
        assert_eq!(cors.headers_for(&req("GET", &[("origin", "https://a b")])), None);
        assert_eq!(cors.headers_for(&req("GET", &[("origin", "https://a\r\nX: y")])), None);
        // Listed next to `*`: credentials for the listed origin only.
        let both = Cors::new(["*", APP]);
        assert!(both.headers_for(&req("GET", &[("origin", APP)])).unwrap().contains("Credentials: true"));
        assert!(!both
            .headers_for(&req("GET", &[("origin", "https://x.example")]))
            .unwrap()
            .contains("Credentials"));
        let r = text(cors.preflight(&req("OPTIONS", &[("origin", "https://x.example")]), true));
        assert!(r.contains("\r\nAccess-Control-Allow-Origin: *\r\n") && !r.contains("Credentials"), "{r}");
    }

    #[test]
    fn browsers_publish_only_from_listed_origins_or_with_a_token_under_star() {
        let publish = |cors: &Cors, origin: Option<&str>, token: bool| {
            let headers: Vec<(&str, &str)> = origin.map(|o| ("origin", o)).into_iter().collect();
            cors.check_publish(&req("POST", &headers), token).is_ok()
        };
        let (listed, star, off) = (Cors::new([APP]), Cors::new(["*"]), Cors::default());
        for token in [false, true] {
            for cors in [&listed, &star, &off] {
                assert!(publish(cors, None, token), "no Origin: not a browser");
            }
            assert!(publish(&listed, Some(APP), token));
            assert!(!publish(&listed, Some("https://evil.example"), token));
            assert!(!publish(&off, Some(APP), token));
            assert!(!publish(&star, Some("null"), token));
            assert!(!publish(&listed, Some(""), token));
        }
        // `*` does not extend loopback trust; a token is an explicit credential.
        assert!(!publish(&star, Some("https://evil.example"), false));
        assert!(publish(&star, Some("https://evil.example"), true));
        let e = star.check_publish(&req("POST", &[("origin", "https://evil.example")]), false).unwrap_err();
        assert_eq!(e.status(), 403);
        assert!(e.to_string().contains("--cors-origin"), "{e}");
    }

    #[test]
    fn preflight_for_allowed_origin_lists_methods_headers_and_max_age() {
        let cors = Cors::new([APP]);
        let r = text(cors.preflight(&req("OPTIONS", &[("origin", APP)]), true));
        assert!(r.starts_with("HTTP/1.1 204 No Content\r\n"), "{r}");
        assert!(r.ends_with("\r\n\r\n"));
        assert!(!r.contains("Content-Length"), "204 carries no Content-Length: {r}");
        for line in [
            "Connection: keep-alive",
            "Access-Control-Allow-Origin: https://app.example.com",
            "Access-Control-Allow-Credentials: true",
            "Vary: Origin",
            "Access-Control-Allow-Methods: GET, POST, OPTIONS",
            "Access-Control-Allow-Headers: Authorization, Content-Type, Last-Event-ID",
            "Access-Control-Max-Age: 600",
        ] {
            assert!(r.contains(&format!("\r\n{line}\r\n")), "{line} missing from {r}");
        }
        let asked = [("origin", APP), ("access-control-request-headers", "authorization, x-trace-id")];
        let r = text(cors.preflight(&req("OPTIONS", &asked), false));
        assert!(r.contains("\r\nAccess-Control-Allow-Headers: authorization, x-trace-id\r\n"), "{r}");
        assert!(r.contains("\r\nConnection: close\r\n"));
        let odd = [("origin", APP), ("access-control-request-headers", "a\u{7f}b")];
        let r = text(cors.preflight(&req("OPTIONS", &odd), true));
        assert!(r.contains(&format!("\r\nAccess-Control-Allow-Headers: {DEFAULT_ALLOW_HEADERS}\r\n")));
    }

    #[test]
    fn preflight_for_other_origin_has_no_cors_headers() {
        let cors = Cors::new([APP]);
        for headers in [&[("origin", "https://evil.example")][..], &[][..]] {
            let r = text(cors.preflight(&req("OPTIONS", headers), true));
            assert_eq!(r, "HTTP/1.1 204 No Content\r\nConnection: keep-alive\r\n\r\n");
        }
    }
}
