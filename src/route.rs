//! Request → what the loop does with it (sans-IO).
//!
//! | request | action |
//! |---|---|
//! | `GET /events?topic=a&topic=b` | [`Action::Subscribe`] |
//! | `POST /publish?topic=t` (raw, JSON or NDJSON body) | [`Action::Publish`] |
//! | a known path with another method | 405 with `Allow` |
//! | anything else | 404 |

use crate::http::{Reject, Request};
use crate::publish::{self, Prepared, Shape};
use crate::topics;

/// Limits routing needs from the config.
#[derive(Debug, Clone, Copy)]
pub struct RouteLimits {
    /// `--max-topics-per-stream`.
    pub max_topics: usize,
    /// `--outbox-max-bytes`: the largest frame a stream can take.
    pub max_frame: usize,
}

/// What a complete request asks for.
#[derive(Debug)]
pub enum Action {
    /// Open an event stream on these (validated, de-duplicated) topics.
    Subscribe {
        /// Topic names in request order.
        topics: Vec<String>,
    },
    /// Publish these events in order.
    Publish {
        /// Checked and encoded events.
        events: Vec<Prepared>,
        /// The response shape.
        shape: Shape,
    },
}

/// Decides what to do with `req`.
pub fn route(req: &Request, limits: RouteLimits) -> Result<Action, Reject> {
    match (req.path.as_str(), req.method.as_str()) {
        ("/events", "GET") => subscribe(req, limits),
        ("/events", _) => Err(Reject::MethodNotAllowed("GET")),
        ("/publish", "POST") => {
            let (messages, shape) = publish::parse(req)?;
            let events = messages
                .iter()
                .map(|m| publish::prepare(m, limits.max_frame))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Action::Publish { events, shape })
        }
        ("/publish", _) => Err(Reject::MethodNotAllowed("POST")),
        _ => Err(Reject::NotFound),
    }
}

fn subscribe(req: &Request, limits: RouteLimits) -> Result<Action, Reject> {
    if let Some(accept) = req.header("accept") {
        let ok = accept.split(',').any(|range| {
            let media = range.split(';').next().unwrap_or("").trim();
            ["text/event-stream", "text/*", "*/*"].iter().any(|m| media.eq_ignore_ascii_case(m))
        });
        if !ok {
            return Err(Reject::NotAcceptable);
        }
    }
    let mut topics_wanted: Vec<String> = Vec::new();
    for (k, v) in req.query_pairs()? {
        if k == "topic" {
            topics::validate(&v).map_err(Reject::BadRequest)?;
            if !topics_wanted.contains(&v) {
                topics_wanted.push(v);
            }
        }
    }
    if topics_wanted.is_empty() {
        return Err(Reject::BadRequest("subscribe with at least one ?topic=".into()));
    }
    if topics_wanted.len() > limits.max_topics {
        return Err(Reject::BadRequest(format!(
            "{} topics requested, at most {} allowed (--max-topics-per-stream)",
            topics_wanted.len(),
            limits.max_topics
        )));
    }
    Ok(Action::Subscribe { topics: topics_wanted })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{parse, Limits, Parse};

    const L: RouteLimits = RouteLimits { max_topics: 2, max_frame: 1024 };

    fn req(raw: &str) -> Request {
        match parse(raw.as_bytes(), Limits { max_head: 4096, max_body: 4096 }) {
            Parse::Complete(r, _) => *r,
            other => panic!("{other:?}"),
        }
    }

    fn status(raw: &str) -> u16 {
        route(&req(raw), L).map(|_| 0).unwrap_or_else(|r| r.status())
    }

    #[test]
    fn subscribe_dedupes_topics() {
        match route(&req("GET /events?topic=a&topic=b&topic=a HTTP/1.1\r\n\r\n"), L).unwrap() {
            Action::Subscribe { topics } => assert_eq!(topics, vec!["a", "b"]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn routing_statuses() {
        assert_eq!(status("GET /events HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(status("GET /events?topic=a%20b HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(status("GET /events?topic=a&topic=b&topic=c HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(status("GET /events?topic=a HTTP/1.1\r\nAccept: application/json\r\n\r\n"), 406);
        assert_eq!(status("GET /events?topic=a HTTP/1.1\r\nAccept: text/event-stream\r\n\r\n"), 0);
        assert_eq!(status("POST /events HTTP/1.1\r\nContent-Length: 0\r\n\r\n"), 405);
        assert_eq!(status("GET /publish HTTP/1.1\r\n\r\n"), 405);
        assert_eq!(status("GET /nope HTTP/1.1\r\n\r\n"), 404);
    }
}
