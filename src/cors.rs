//! Sans-IO CORS for browser clients on other origins (`--cors-origin`).
//!
//! Contract: [`Cors::headers_for`] gives the extra header lines for a normal response,
//! [`Cors::preflight`] the whole answer to an `OPTIONS` preflight. Both only read the request.
//!
//! Invariants:
//! 1. Only an allowed `Origin` gets CORS headers; any other request gets none, so the browser
//!    blocks the response (the server still answers: CORS is enforced by browsers).
//! 2. The allowed origin is echoed, never `*`, because credentials (cookies, `Authorization`)
//!    are allowed; every response carrying it also says `Vary: Origin` so caches keep apart
//!    the answers for different origins.
//! 3. `*` in the list allows every origin except `null` (sandboxed frames, `file:` pages),
//!    which must be listed explicitly.
//! 4. Nothing is echoed that could break the header block: values with control characters or
//!    non-ASCII bytes are refused (`Origin`) or replaced by the default (request headers).

use bytes::Bytes;

use crate::http::Request;

/// Headers a preflight allows when the browser does not say which it wants.
pub const DEFAULT_ALLOW_HEADERS: &str = "Authorization, Content-Type, Last-Event-ID";
/// Methods a preflight allows.
pub const ALLOW_METHODS: &str = "GET, POST, OPTIONS";
/// Seconds a browser may cache a preflight answer (fewer `OPTIONS` round trips).
pub const MAX_AGE_SECS: u32 = 600;

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

    /// The request's `Origin` if it is allowed.
    fn allowed_origin<'r>(&self, req: &'r Request) -> Option<&'r str> {
        let origin = req.header("origin")?;
        if origin.is_empty() || !origin.bytes().all(|b| b.is_ascii_graphic()) {
            return None;
        }
        let listed = self.origins.iter().any(|o| o.eq_ignore_ascii_case(origin));
        (listed || (self.any && origin != "null")).then_some(origin)
    }

    /// Extra response header lines (`Name: value\r\n` each) for an allowed `Origin`; `None`
    /// without an `Origin` header or for an origin not allowed.
    pub fn headers_for(&self, req: &Request) -> Option<String> {
        self.allowed_origin(req).map(|origin| {
            format!(
                "Access-Control-Allow-Origin: {origin}\r\nAccess-Control-Allow-Credentials: true\r\nVary: Origin\r\n"
            )
        })
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
    fn star_allows_any_origin_but_still_echoes_it() {
        let cors = Cors::new(["*"]);
        let h = cors.headers_for(&req("GET", &[("origin", "https://x.example:8443")])).unwrap();
        assert!(h.starts_with("Access-Control-Allow-Origin: https://x.example:8443\r\n"));
        assert!(!h.contains("Allow-Origin: *"));
        assert_eq!(cors.headers_for(&req("GET", &[("origin", "null")])), None);
        assert!(Cors::new(["*", "null"]).headers_for(&req("GET", &[("origin", "null")])).is_some());
        // Nothing that could split the header block is echoed.
        assert_eq!(cors.headers_for(&req("GET", &[("origin", "https://a b")])), None);
        assert_eq!(cors.headers_for(&req("GET", &[("origin", "https://a\r\nX: y")])), None);
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
