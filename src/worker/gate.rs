//! Who may do what, decided on a request's head: publishes (origin, then credentials) and
//! the polling endpoints (the subscribe token of streams).
//!
//! Invariants:
//! 1. A publish is judged on its head, as soon as the head is parsed: before `100 Continue`
//!    and before its body is buffered. A publish refused there is answered with
//!    `Connection: close` and its body is never read into a buffer (the connection lingers,
//!    discarding input, then closes), so an unauthorised client cannot pin body-sized
//!    buffers. A publish that arrived whole is judged the same way before it is parsed.
//! 2. The order is origin first (a browser publish from an origin `--cors-origin` does not
//!    allow to publish is `403`, counted as `origin`), then credentials (`401`/`403`,
//!    counted as `unauthorized`/`forbidden`).
//! 3. The polling endpoints take the same token (header, cookie, `?token=`) and topic check
//!    as a stream of that one topic, on every listener, refused and counted the same way.

use std::net::SocketAddr;

use bytes::Bytes;

use crate::auth::{self, PublishAuth};
use crate::http::Request;
use crate::metrics::RejectReason;

use super::requests::auth_reason;
use super::unix_now;
use crate::live::Live;

/// A refusal: what to count and the full response.
pub(super) type Refused = (RejectReason, Bytes);

/// Whether this request, if it is `POST /publish`, may publish. Other requests pass.
pub(super) fn publish(
    live: &Live,
    head: &Request,
    peer: SocketAddr,
    keep_alive: bool,
) -> Result<(), Refused> {
    if head.method != "POST" || head.path != "/publish" {
        return Ok(());
    }
    let token_required = matches!(live.publish_auth, PublishAuth::Token(_));
    if let Err(e) = live.cors.check_publish(head, token_required) {
        return Err((RejectReason::Origin, e.response(keep_alive)));
    }
    auth::check_publish(&live.publish_auth, head, peer).map_err(|e| (auth_reason(&e), e.response(keep_alive)))
}

/// Whether this polling request may read `topic` (always, without `--subscribe-key`).
pub(super) fn poll(live: &Live, request: &Request, topic: &str) -> Result<(), Refused> {
    let Some(verifier) = &live.verifier else { return Ok(()) };
    let topics = [topic.to_string()];
    match verifier.verify(request, &topics, unix_now()) {
        Ok(_) => Ok(()),
        Err(e) => Err((auth_reason(&e), e.response(request.keep_alive))),
    }
}
