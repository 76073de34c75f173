//! Request → what the loop does with it (sans-IO).
//!
//! | request | action |
//! |---|---|
//! | `GET /events?topic=a&topic=b` (+ `Last-Event-ID` or `?lastEventId=`) | [`Action::Subscribe`] |
//! | `POST /publish?topic=t` (raw, JSON or NDJSON body) | [`Action::Publish`] |
//! | `GET /topics/{topic}/latest` | [`Action::Latest`] |
//! | `GET /topics/{topic}/events?after=ID&limit=N` | [`Action::EventsAfter`] |
//! | `GET /metrics`, `/healthz`, `/readyz`, `/`, `/status.json` | [`Action::Metrics`], [`Action::Healthz`], [`Action::Readyz`], [`Action::StatusPage`], [`Action::StatusJson`] |
//! | `GET /client/<file>.js` | [`Action::ClientScript`] |
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
        /// Resume after this id (`Last-Event-ID` header, else `?lastEventId=`).
        last_event_id: Option<u64>,
    },
    /// Publish these events in order.
    Publish {
        /// Checked and encoded events.
        events: Vec<Prepared>,
        /// The response shape.
        shape: Shape,
    },
    /// The newest retained event of a topic, as JSON.
    Latest {
        /// Validated topic name.
        topic: String,
    },
    /// Retained events of a topic after an id, as a JSON array.
    EventsAfter {
        /// Validated topic name.
        topic: String,
        /// Events with larger ids only (0: from the oldest retained).
        after: u64,
        /// At most this many (1..=[`MAX_POLL_LIMIT`], default [`DEFAULT_POLL_LIMIT`]).
        limit: usize,
    },
    /// Prometheus text exposition.
    Metrics,
    /// Liveness: every loop answers a probe through its own channel.
    Healthz,
    /// Readiness: 503 while draining (or overloaded, if configured).
    Readyz,
    /// The live status page.
    StatusPage,
    /// The newest status snapshot as JSON (the status page polls it when the node has no
    /// status feed, i.e. with `--bus`).
    StatusJson,
    /// A file of the JS client library (`GET /client/<file>.js`), by its index in
    /// [`crate::client_js::FILES`]: the status page reads its feed through it.
    ClientScript(usize),
}

impl Action {
    /// Operator endpoints, served only on `--admin-listen` when that is set. Streams,
    /// publishing and the polling endpoints (gap fill, polling fallback) are client API.
    pub fn is_admin(&self) -> bool {
        matches!(
            self,
            Action::Metrics
                | Action::Healthz
                | Action::Readyz
                | Action::StatusPage
                | Action::StatusJson
                | Action::ClientScript(_)
        )
    }
}

/// Most events one polling request returns.
pub const MAX_POLL_LIMIT: usize = 1000;
/// Events a polling request returns without `limit`.
pub const DEFAULT_POLL_LIMIT: usize = 100;

/// Decides what to do with `req`.
pub fn route(req: &Request, limits: RouteLimits) -> Result<Action, Reject> {
    match (req.path.as_str(), req.method.as_str()) {
        ("/events", "GET") => subscribe(req, limits),
        ("/events", _) => Err(Reject::MethodNotAllowed("GET")),
        ("/publish", "POST") => {
            let (messages, shape) = publish::parse(req)?;
            for m in &messages {
                publish::check_not_reserved(&m.topic)?;
            }
            let events = messages
                .iter()
                .map(|m| publish::prepare(m, limits.max_frame))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Action::Publish { events, shape })
        }
        ("/publish", _) => Err(Reject::MethodNotAllowed("POST")),
        ("/metrics" | "/healthz" | "/readyz" | "/" | "/status.json", "GET" | "HEAD") => {
            Ok(match req.path.as_str() {
                "/metrics" => Action::Metrics,
                "/healthz" => Action::Healthz,
                "/readyz" => Action::Readyz,
                "/status.json" => Action::StatusJson,
                _ => Action::StatusPage,
            })
        }
        ("/metrics" | "/healthz" | "/readyz" | "/" | "/status.json", _) => {
            Err(Reject::MethodNotAllowed("GET, HEAD"))
        }
        (path, method) if path.starts_with("/client/") => {
            match crate::client_js::find(&path["/client/".len()..]) {
                Some(index) if matches!(method, "GET" | "HEAD") => Ok(Action::ClientScript(index)),
                Some(_) => Err(Reject::MethodNotAllowed("GET, HEAD")),
                None => Err(Reject::NotFound),
            }
        }
        (path, method) => match path.strip_prefix("/topics/").and_then(|rest| rest.split_once('/')) {
            Some((topic, tail @ ("latest" | "events"))) => {
                if method != "GET" {
                    return Err(Reject::MethodNotAllowed("GET"));
                }
                topics::validate(topic).map_err(Reject::BadRequest)?;
                let topic = topic.to_string();
                if tail == "latest" {
                    return Ok(Action::Latest { topic });
                }
                let (mut after, mut limit) = (0, DEFAULT_POLL_LIMIT);
                for (k, v) in req.query_pairs()? {
                    match k.as_str() {
                        "after" => after = parse_id("after", &v)?,
                        "limit" => {
                            limit = v.parse().ok().filter(|n| (1..=MAX_POLL_LIMIT).contains(n)).ok_or_else(
                                || Reject::BadRequest(format!("limit must be 1..={MAX_POLL_LIMIT}")),
                            )?
                        }
                        _ => {}
                    }
                }
                Ok(Action::EventsAfter { topic, after, limit })
            }
            _ => Err(Reject::NotFound),
        },
    }
}

fn parse_id(what: &str, v: &str) -> Result<u64, Reject> {
    v.trim().parse().map_err(|_| Reject::BadRequest(format!("{what} must be an event id (u64), got {v:?}")))
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
    let mut last_event_id = match req.header("last-event-id") {
        Some(v) => Some(parse_id("Last-Event-ID", v)?),
        None => None,
    };
    for (k, v) in req.query_pairs()? {
        if k == "topic" {
            topics::validate(&v).map_err(Reject::BadRequest)?;
            if !topics_wanted.contains(&v) {
                topics_wanted.push(v);
            }
        } else if k == "lastEventId" && last_event_id.is_none() {
            last_event_id = Some(parse_id("lastEventId", &v)?);
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
    Ok(Action::Subscribe { topics: topics_wanted, last_event_id })
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
            Action::Subscribe { topics, last_event_id } => {
                assert_eq!(topics, vec!["a", "b"]);
                assert_eq!(last_event_id, None);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn resume_id_from_header_wins_over_query() {
        let r = route(&req("GET /events?topic=a&lastEventId=5 HTTP/1.1\r\nLast-Event-ID: 7\r\n\r\n"), L);
        assert!(matches!(r, Ok(Action::Subscribe { last_event_id: Some(7), .. })));
        let r = route(&req("GET /events?topic=a&lastEventId=5 HTTP/1.1\r\n\r\n"), L);
        assert!(matches!(r, Ok(Action::Subscribe { last_event_id: Some(5), .. })));
    }

    #[test]
    fn polling_routes() {
        let r = route(&req("GET /topics/jobs/events?after=9&limit=3 HTTP/1.1\r\n\r\n"), L).unwrap();
        assert!(matches!(r, Action::EventsAfter { ref topic, after: 9, limit: 3 } if topic == "jobs"));
        assert!(matches!(
            route(&req("GET /topics/jobs/latest HTTP/1.1\r\n\r\n"), L),
            Ok(Action::Latest { .. })
        ));
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
        assert_eq!(status("GET /events?topic=a HTTP/1.1\r\nLast-Event-ID: x\r\n\r\n"), 400);
        assert_eq!(status("GET /events?topic=a&lastEventId=-1 HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(status("GET /topics/a/events?after=z HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(status("GET /topics/a/events?limit=0 HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(status("GET /topics/a%20b/latest HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(status("POST /topics/a/latest HTTP/1.1\r\nContent-Length: 0\r\n\r\n"), 405);
        assert_eq!(status("GET /topics/a/other HTTP/1.1\r\n\r\n"), 404);
    }
}
