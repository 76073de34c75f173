//! One subscriber stream's state machine: connect → send request → read head → stream (or hold).
//!
//! Contract: [`Client::drive`] is called after any readiness event for the client's token (and
//! again when it returned [`Step::Again`]); with edge-triggered readiness it reads and writes
//! until the socket would block (a short read of a stream counts: the receive queue was empty
//! and new bytes raise a new edge), or until its read budget is spent. It records what it sees into
//! the caller's [`SubResult`] and turns `ready` true exactly once: on the first SSE item for a
//! reading stream, on the `200` head for a slow one (which then never reads again and just holds
//! its socket). It never closes itself: it returns [`Step::Close`] with an error kind and the
//! loop removes it, so accounting for every close is in one place.

use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::time::Instant;

use mio::net::TcpStream;

use crate::http_client::{parse_head, HeadParse};
use crate::net;
use crate::payload;
use crate::sse_parse::{Item, Limits, ParseError, Parser};
use crate::stats::{count_error, io_kind, Hist, SubResult};
use crate::tracker::{gap_range, StreamCheck};

/// Which stream this is and how it behaves.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    /// Global stream index (across threads and processes).
    pub index: u64,
    /// Index of the server address it connects to.
    pub target: usize,
    /// Source address to bind before connecting.
    pub source: Option<IpAddr>,
    /// Never reads after the response head.
    pub slow: bool,
    /// Connection attempts made before this one.
    pub attempt: u32,
}

enum Phase {
    Connecting,
    Requesting { written: usize },
    Head { buf: Vec<u8> },
    Streaming(Box<Parser>),
    Holding,
}

/// What the loop does next with a client.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Wait for the next readiness event.
    Wait,
    /// The read budget ran out with data possibly left: drive again soon.
    Again,
    /// Close and account under this error kind.
    Close(String),
}

/// Per-thread things a client borrows while it is driven.
pub struct Ctx<'a> {
    /// The subscribe request for each server address.
    pub requests: &'a [Vec<u8>],
    /// Shared read buffer.
    pub buf: &'a mut [u8],
    /// The thread's accumulated results.
    pub stats: &'a mut SubResult,
    /// Latency since the last progress push.
    pub interval: &'a mut Hist,
    /// Parser bounds.
    pub limits: Limits,
    /// Reads allowed per call before yielding to other clients.
    pub read_budget: usize,
}

/// One stream.
pub struct Client {
    /// The socket, registered with the thread's poller under the client's slab key.
    pub sock: TcpStream,
    /// What this stream is.
    pub spec: Spec,
    /// Unique per attempt within the thread, so a stale timeout never hits a reused slab key.
    pub serial: u64,
    /// Ready (see the module doc); never goes back to false.
    pub ready: bool,
    /// Ordering and completeness of what it received.
    pub check: StreamCheck,
    phase: Phase,
    started: Instant,
}

impl Client {
    /// A client whose connect has been started at `started`.
    pub fn new(sock: TcpStream, spec: Spec, serial: u64, from_zero: bool, started: Instant) -> Self {
        Client {
            sock,
            spec,
            serial,
            ready: false,
            check: StreamCheck::new(from_zero),
            phase: Phase::Connecting,
            started,
        }
    }

    /// Makes all the progress the socket allows; see the module doc.
    pub fn drive(&mut self, ctx: &mut Ctx<'_>) -> Step {
        loop {
            match &mut self.phase {
                Phase::Connecting => match net::connect_result(&self.sock) {
                    Ok(false) => return Step::Wait,
                    Err(e) => return Step::Close(io_kind(&e)),
                    Ok(true) => {
                        ctx.stats.connect_us.record(self.started.elapsed().as_micros() as u64);
                        self.phase = Phase::Requesting { written: 0 };
                    }
                },
                Phase::Requesting { written } => {
                    let request = ctx.requests.get(self.spec.target).map_or(&[][..], Vec::as_slice);
                    while *written < request.len() {
                        match self.sock.write(&request[*written..]) {
                            Ok(0) => return Step::Close("write returned 0".into()),
                            Ok(n) => *written += n,
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::Wait,
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(e) => return Step::Close(io_kind(&e)),
                        }
                    }
                    self.phase = Phase::Head { buf: Vec::with_capacity(256) };
                }
                Phase::Head { buf } => {
                    let n = match read_some(&mut self.sock, ctx.buf) {
                        Ok(0) => return Step::Close("closed before response head".into()),
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::Wait,
                        Err(e) => return Step::Close(io_kind(&e)),
                    };
                    buf.extend_from_slice(&ctx.buf[..n]);
                    let head = match parse_head(buf) {
                        HeadParse::Partial => continue,
                        HeadParse::Invalid(why) => return Step::Close(format!("parse error: {why}")),
                        HeadParse::Complete(h) => h,
                    };
                    if head.status != 200 {
                        return Step::Close(format!("http status {}", head.status));
                    }
                    if !head.event_stream {
                        return Step::Close("parse error: not text/event-stream".into());
                    }
                    ctx.stats.connected += 1;
                    if self.spec.slow {
                        self.ready = true;
                        self.phase = Phase::Holding;
                        return Step::Wait;
                    }
                    let rest = std::mem::take(buf);
                    self.phase = Phase::Streaming(Box::new(Parser::new(ctx.limits)));
                    if let Err(e) = self.feed(&rest[head.len..], ctx, payload::now_us()) {
                        return Step::Close(parse_error_kind(e));
                    }
                }
                Phase::Streaming(_) => return self.stream(ctx),
                Phase::Holding => return Step::Wait,
            }
        }
    }

    fn stream(&mut self, ctx: &mut Ctx<'_>) -> Step {
        for _ in 0..ctx.read_budget {
            let n = match read_some(&mut self.sock, ctx.buf) {
                Ok(0) => return Step::Close("closed by server".into()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::Wait,
                Err(e) => return Step::Close(io_kind(&e)),
            };
            let chunk = std::mem::take(&mut ctx.buf);
            let drained = n < chunk.len();
            let r = self.feed(&chunk[..n], ctx, payload::now_us());
            ctx.buf = chunk;
            if let Err(e) = r {
                return Step::Close(parse_error_kind(e));
            }
            if drained {
                // A short read emptied the receive queue; bytes that arrive later raise a new
                // edge, so the extra read that would only say WouldBlock is skipped.
                return Step::Wait;
            }
        }
        Step::Again
    }

    /// Parses body bytes received at wall-clock `now_us`.
    fn feed(&mut self, bytes: &[u8], ctx: &mut Ctx<'_>, now_us: u64) -> Result<(), ParseError> {
        let Phase::Streaming(parser) = &mut self.phase else { return Ok(()) };
        ctx.stats.bytes += bytes.len() as u64;
        let (stats, interval, check, ready) =
            (&mut *ctx.stats, &mut *ctx.interval, &mut self.check, &mut self.ready);
        let started = self.started;
        parser.feed(bytes, &mut |item| {
            if !*ready {
                *ready = true;
                stats.ttfb_us.record(started.elapsed().as_micros() as u64);
            }
            match item {
                Item::Comment(_) => stats.comments += 1,
                Item::Retry(_) => {}
                Item::Event(e) => {
                    if let Some(id) = e.id {
                        match payload::parse_u64(id) {
                            Some(id) => check.on_id(id),
                            None => count_error(&mut stats.errors, "parse error: non-numeric id", 1),
                        }
                    }
                    if e.event == b"gap" && e.id.is_none() {
                        stats.gap_notices += 1;
                        if let Some((from, to)) = gap_range(e.data) {
                            stats.gap_notice_ids += to.saturating_sub(from) + 1;
                        }
                    } else if let Some(st) = payload::decode(e.data) {
                        let latency = now_us.saturating_sub(st.ts_us);
                        stats.latency_us.record(latency);
                        interval.record(latency);
                        stats.deliveries += 1;
                        if stats.first_delivery_us == 0 {
                            stats.first_delivery_us = now_us;
                        }
                        stats.last_delivery_us = now_us;
                        check.on_seq(st.lane, st.seq);
                    } else {
                        stats.other_events += 1;
                    }
                }
            }
        })
    }
}

fn read_some(sock: &mut TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match sock.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}

fn parse_error_kind(e: ParseError) -> String {
    match e {
        ParseError::LineTooLong => "parse error: line too long".into(),
        ParseError::DataTooLarge => "parse error: event data too large".into(),
    }
}
