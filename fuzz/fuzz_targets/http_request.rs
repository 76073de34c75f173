//! The sans-IO request parser (`http::parse`) and routing of what it accepts.
//!
//! Input: the bytes a client sent so far. Invariants, for two sets of limits:
//! - `Partial` only while the buffer is within `max_head`;
//! - `NeedBody { total }` asks for more than is there, within `max_head + max_body`, and the
//!   same buffer completed to `total` bytes parses `Complete` with exactly `total`;
//! - `Complete(req, n)` consumes `0 < n <= len`; the result does not depend on bytes after
//!   `n`; every shorter prefix is `Partial` or `NeedBody` (a request split anywhere parses
//!   the same); the request's parts are within their bounds; routing it never panics and
//!   hands the loop only validated values (`check_route`); pipelined requests that follow
//!   parse the same way, each consuming at least one byte;
//! - a complete request follows RFC 9112: its body is exactly its one `Content-Length` (no
//!   `Transfer-Encoding`, §6.3), and it keeps the connection open exactly when §9.3 says
//!   (`close` in `Connection` always closes; HTTP/1.0 needs `keep-alive`);
//! - every `Reject` maps to a known status and a well-formed response.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sse_edge::http::{self, Limits, Parse, Request, MAX_HEADERS, MAX_TARGET_BYTES};
use sse_edge::route::RouteLimits;
use sse_edge_fuzz::{check_reject, check_route};

const LIMITS: [Limits; 2] = [Limits { max_head: 1024, max_body: 256 }, Limits { max_head: 64, max_body: 8 }];
const ROUTE: RouteLimits = RouteLimits { max_topics: 4, max_frame: 1024 };
/// Prefixes checked one by one up to this length, then at a stride (keeps an exec cheap).
const EVERY_CUT_UP_TO: usize = 512;

fuzz_target!(|data: &[u8]| {
    for limits in LIMITS {
        let mut rest = data;
        // Pipelined requests: the loop parses the remainder after each complete one.
        while !rest.is_empty() {
            let Some(n) = check_one(rest, limits) else { break };
            rest = &rest[n..];
        }
    }
});

/// Checks one parse of `buf`; returns the bytes a complete request consumed.
fn check_one(buf: &[u8], limits: Limits) -> Option<usize> {
    match http::parse(buf, limits) {
        Parse::Partial => {
            assert!(buf.len() <= limits.max_head, "Partial past max_head: {} bytes", buf.len());
            None
        }
        Parse::NeedBody { total, .. } => {
            assert!(total > buf.len(), "NeedBody for {total} with {} there", buf.len());
            assert!(total <= limits.max_head + limits.max_body, "{total}");
            let mut filled = buf.to_vec();
            filled.resize(total, b'x');
            match http::parse(&filled, limits) {
                Parse::Complete(_, n) => assert_eq!(n, total),
                other => panic!("NeedBody {{ total: {total} }} but the filled buffer gives {other:?}"),
            }
            None
        }
        Parse::Reject(r) => {
            check_reject(&r);
            None
        }
        Parse::Complete(req, n) => {
            assert!(n > 0 && n <= buf.len(), "consumed {n} of {}", buf.len());
            let head = n - req.body.len();
            assert!(head <= limits.max_head && req.body.len() <= limits.max_body);
            assert!(!req.path.contains('?'));
            assert!(req.path.len() + req.query.len() <= MAX_TARGET_BYTES);
            assert!(req.headers.len() <= MAX_HEADERS);
            for (name, _) in &req.headers {
                assert!(!name.bytes().any(|b| b.is_ascii_uppercase()), "{name:?}");
            }
            check_rfc9112(&buf[..n], &req);
            match http::parse(&buf[..n], limits) {
                Parse::Complete(again, m) => {
                    assert_eq!(m, n);
                    assert_eq!(
                        (&again.method, &again.path, &again.query),
                        (&req.method, &req.path, &req.query)
                    );
                    assert_eq!(again.body, req.body);
                    assert_eq!(again.keep_alive, req.keep_alive);
                }
                other => panic!("the request alone gives {other:?}"),
            }
            let stride = if n <= EVERY_CUT_UP_TO { 1 } else { n / 64 };
            for cut in (0..n).step_by(stride) {
                match http::parse(&buf[..cut], limits) {
                    Parse::Partial | Parse::NeedBody { .. } => {}
                    other => panic!("prefix of {cut} of a {n}-byte request gives {other:?}"),
                }
            }
            let _ = req.query_pairs();
            let _ = check_route(&req, ROUTE);
            Some(n)
        }
    }
}

/// Message length (RFC 9112 §6.3) and persistence (§9.3) of a complete request, decided
/// from the raw bytes with httparse directly.
fn check_rfc9112(raw: &[u8], req: &Request) {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut head = httparse::Request::new(&mut slots);
    assert!(matches!(head.parse(raw), Ok(httparse::Status::Complete(_))));
    let values = |name: &str| -> Vec<String> {
        head.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_string())
            .collect()
    };
    assert!(values("transfer-encoding").is_empty(), "a Transfer-Encoding body was accepted");
    // Several `Content-Length` lines are accepted only when they name one value (RFC 9110
    // §8.6 allows that; `5` and `005` are the same value).
    let lengths = values("content-length");
    if lengths.is_empty() {
        assert!(req.body.is_empty());
    }
    for l in &lengths {
        assert!(l.bytes().all(|b| b.is_ascii_digit()), "Content-Length {l:?} accepted");
        assert_eq!(l.parse::<usize>().ok(), Some(req.body.len()), "{lengths:?}");
    }
    let connection = values("connection");
    let has = |option: &str| {
        connection.iter().flat_map(|v| v.split(',')).any(|o| o.trim().eq_ignore_ascii_case(option))
    };
    let persists = !has("close") && (head.version == Some(1) || has("keep-alive"));
    assert_eq!(req.keep_alive, persists, "HTTP/1.{:?}, Connection: {connection:?}", head.version);
}
