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
//!
//! Body framing: a `Transfer-Encoding: chunked` stream is decoded by [`chunked::Decoder`] in
//! place (the SSE parser sees only chunk data, as slices of the read buffer); its zero-size chunk
//! ends the stream like EOF, and broken framing closes it as `chunked framing error: ...`. Any
//! other body (close-delimited or with a `Content-Length`) goes to the SSE parser as read.
//! Event ids that are not decimal u64s are not errors: [`StreamCheck::on_raw_id`] counts them and
//! completeness rests on the seqs stamped in the data.

use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::time::Instant;

use mio::net::TcpStream;

use crate::accepted;
use crate::chunked::{self, ChunkError, Decoded};
use crate::http_client::{parse_head, HeadParse};
use crate::net;
use crate::payload;
use crate::sse_parse::{Item, Limits, ParseError, Parser};
use crate::stats::{io_kind, Hist, SubResult};
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
    Streaming(Box<Stream>),
    Holding,
}

/// A reading stream's body decoding state.
struct Stream {
    parser: Parser,
    /// Present when the body is chunked.
    chunked: Option<chunked::Decoder>,
}

/// Why body bytes end a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// The SSE parser refused the data.
    Parse(ParseError),
    /// The chunked framing is broken.
    Chunked(ChunkError),
    /// The last chunk arrived: the server ended the stream.
    Ended,
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
                    let chunked = head.chunked.then(chunked::Decoder::new);
                    self.phase =
                        Phase::Streaming(Box::new(Stream { parser: Parser::new(ctx.limits), chunked }));
                    if let Err(e) = self.feed(&rest[head.len..], ctx, payload::now_us()) {
                        return Step::Close(stop_kind(e));
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
                return Step::Close(stop_kind(e));
            }
            if drained {
                // A short read emptied the receive queue; bytes that arrive later raise a new
                // edge, so the extra read that would only say WouldBlock is skipped.
                return Step::Wait;
            }
        }
        Step::Again
    }

    /// Decodes and parses body bytes received at wall-clock `now_us`.
    fn feed(&mut self, bytes: &[u8], ctx: &mut Ctx<'_>, now_us: u64) -> Result<(), Stop> {
        let Phase::Streaming(stream) = &mut self.phase else { return Ok(()) };
        ctx.stats.bytes += bytes.len() as u64;
        let (stats, interval, check, ready) =
            (&mut *ctx.stats, &mut *ctx.interval, &mut self.check, &mut self.ready);
        let started = self.started;
        let Stream { parser, chunked } = &mut **stream;
        let mut on_item = |item: Item<'_>| {
            if !*ready {
                *ready = true;
                stats.ttfb_us.record(started.elapsed().as_micros() as u64);
            }
            match item {
                Item::Comment(_) => stats.comments += 1,
                Item::Retry(_) => {}
                Item::Event(e) => {
                    if let Some(id) = e.id {
                        check.on_raw_id(id);
                    }
                    if e.event == b"gap" && e.id.is_none() {
                        stats.gap_notices += 1;
                        if let Some((from, to)) = gap_range(e.data) {
                            stats.gap_notice_ids += to.saturating_sub(from) + 1;
                        }
                    } else if let Some(st) = payload::decode(e.data) {
                        let latency = now_us.saturating_sub(st.ts_us);
                        stats.latency_us.record(latency);
                        if let Some(l) = accepted::latency_us(st.lane, st.seq, now_us) {
                            stats.accept_latency_us.record(l);
                        }
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
        };
        let Some(decoder) = chunked else { return parser.feed(bytes, &mut on_item).map_err(Stop::Parse) };
        let mut input = bytes;
        loop {
            match decoder.next(&mut input).map_err(Stop::Chunked)? {
                Decoded::Data(data) => parser.feed(data, &mut on_item).map_err(Stop::Parse)?,
                Decoded::NeedMore => return Ok(()),
                Decoded::End => return Err(Stop::Ended),
            }
        }
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

/// The error kind a stream closes under.
fn stop_kind(s: Stop) -> String {
    match s {
        Stop::Parse(ParseError::LineTooLong) => "parse error: line too long".into(),
        Stop::Parse(ParseError::DataTooLarge) => "parse error: event data too large".into(),
        Stop::Chunked(e) => format!("chunked framing error: {}", e.as_str()),
        Stop::Ended => "closed by server".into(),
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::time::Duration;

    use mio::{Events, Interest, Poll, Token};

    use super::*;
    use crate::http_client::subscribe_request;
    use crate::net::SocketOpts;
    use crate::sse_parse::Limits;

    const CHUNKED_HEAD: &[u8] =
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n";
    const PLAIN_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n";

    /// A prelude and `n` stamped events (lane 0, seqs from 0) with nchan-style ids.
    fn sse_body(n: u64) -> Vec<u8> {
        let mut body = b": prelude\n\n".to_vec();
        for seq in 0..n {
            body.extend_from_slice(format!("id: 1732250000:{seq}\ndata: ").as_bytes());
            payload::encode(&mut body, payload::Stamp { lane: 0, seq, ts_us: payload::now_us() }, 90);
            body.extend_from_slice(b"\n\n");
        }
        body
    }

    /// `body` in chunks of cycling sizes (so chunk boundaries fall everywhere in the SSE lines),
    /// with mixed hex case and some extensions, then the last chunk.
    fn chunk(body: &[u8]) -> Vec<u8> {
        let sizes = [1, 5, 17, 64, 3, 200, 2];
        let (mut out, mut at) = (Vec::new(), 0);
        for i in 0.. {
            if at == body.len() {
                break;
            }
            let n = sizes[i % sizes.len()].min(body.len() - at);
            let line = match i % 3 {
                0 => format!("{n:x}\r\n"),
                1 => format!("{n:X};ext=1\r\n"),
                _ => format!("{n:x} ; a ; b=\"c\"\r\n"),
            };
            out.extend_from_slice(line.as_bytes());
            out.extend_from_slice(&body[at..at + n]);
            out.extend_from_slice(b"\r\n");
            at += n;
        }
        out.extend_from_slice(b"0\r\n\r\n");
        out
    }

    /// Serves `head` + `body` to one client and drives it (reading through a 13-byte buffer, so
    /// reads split the body at odd places) until it closes; returns what it measured and why it
    /// closed. With `hold` the server keeps the socket open until the client is gone.
    fn run(head: &[u8], body: &[u8], hold: bool) -> (SubResult, StreamCheck, String) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let response = [head, body].concat();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().expect("accept");
            let mut req = Vec::new();
            let mut b = [0u8; 512];
            while !req.ends_with(b"\r\n\r\n") {
                let n = s.read(&mut b).expect("read request");
                assert!(n > 0, "request cut short");
                req.extend_from_slice(&b[..n]);
            }
            s.write_all(&response).expect("write response");
            if hold {
                // Returns once the client closes its end.
                let _ = s.read(&mut b);
            }
        });
        let mut poll = Poll::new().expect("poll");
        let mut sock = net::start_connect(addr, SocketOpts::default()).expect("connect");
        poll.registry()
            .register(&mut sock, Token(0), Interest::READABLE | Interest::WRITABLE)
            .expect("register");
        let spec = Spec { index: 0, target: 0, source: None, slow: false, attempt: 0 };
        let mut client = Client::new(sock, spec, 1, true, Instant::now());
        let requests = vec![subscribe_request(addr, &["t".into()])];
        let (mut buf, mut stats, mut interval) = (vec![0u8; 13], SubResult::default(), Hist::new());
        let mut events = Events::with_capacity(8);
        let deadline = Instant::now() + Duration::from_secs(10);
        let kind = loop {
            assert!(Instant::now() < deadline, "client never closed");
            let mut ctx = Ctx {
                requests: &requests,
                buf: &mut buf,
                stats: &mut stats,
                interval: &mut interval,
                limits: Limits::default(),
                read_budget: 4,
            };
            match client.drive(&mut ctx) {
                Step::Close(kind) => break kind,
                Step::Again => {}
                Step::Wait => poll.poll(&mut events, Some(Duration::from_millis(100))).expect("poll"),
            }
        };
        assert!(client.ready);
        let check = client.check.clone();
        drop(client);
        server.join().expect("server thread");
        (stats, check, kind)
    }

    #[test]
    fn chunked_stream_with_non_numeric_ids() {
        let body = chunk(&sse_body(20));
        let (stats, check, kind) = run(CHUNKED_HEAD, &body, true);
        assert_eq!(kind, "closed by server", "the last chunk ends the stream");
        assert_eq!((stats.deliveries, stats.other_events, stats.comments), (20, 0, 1));
        assert_eq!(stats.bytes, body.len() as u64);
        assert!(stats.errors.is_empty(), "{:?}", stats.errors);
        assert_eq!((check.distinct, check.holes, check.seq_regressions), (20, 0, 0));
        assert_eq!((check.non_numeric_ids, check.id_regressions), (20, 0));
        assert_eq!(check.missing(20), 0);
    }

    #[test]
    fn chunked_stream_reports_missing_seqs() {
        let sse = sse_body(10);
        // Drop the event with seq 4: the data seqs reveal it although the ids are not numbers.
        let start = sse.windows(16).position(|w| w == b"id: 1732250000:4").expect("event 4");
        let end = start + sse[start..].windows(2).position(|w| w == b"\n\n").expect("end") + 2;
        let sse = [&sse[..start], &sse[end..]].concat();
        let (stats, check, _) = run(CHUNKED_HEAD, &chunk(&sse), true);
        assert_eq!((stats.deliveries, check.holes, check.missing(10)), (9, 1, 1));
    }

    #[test]
    fn broken_chunk_framing_closes_the_stream() {
        let mut body = chunk(&sse_body(3));
        body.truncate(body.len() - 5);
        body.extend_from_slice(b"zz\r\n");
        let (stats, _, kind) = run(CHUNKED_HEAD, &body, true);
        assert_eq!(kind, "chunked framing error: bad chunk size");
        assert_eq!(stats.deliveries, 3, "events before the error still count");
    }

    #[test]
    fn close_delimited_stream_is_parsed_as_read() {
        let body = sse_body(5);
        let (stats, check, kind) = run(PLAIN_HEAD, &body, false);
        assert_eq!(kind, "closed by server");
        assert_eq!((stats.deliveries, check.distinct, check.non_numeric_ids), (5, 5, 5));
        assert_eq!(stats.bytes, body.len() as u64);
    }
}
