//! Micro-benchmarks of the per-event and per-request hot paths of `sse_edge`.
//!
//! Measured:
//! - `encode`: `sse::encode_body` then `sse::frame_with_id` (the work done once per published
//!   event) for a 100-byte single line with an event name, 1 KiB of data, and 20 lines with
//!   mixed `\n` / `\r\n` line ends. Throughput is the raw data size.
//! - `outbox`: `Outbox::push` of N clones of one shared ~100-byte frame, then `flush_to` a sink
//!   that accepts (and counts) every byte of each vectored write, for N = 1, 8, 64; plus a
//!   case pushing twice `max_events` frames so eviction runs before the flush.
//! - `http_parse`: `http::parse` of a typical browser `GET /events` with 8 headers and of a
//!   `POST /publish` with a 100-byte text body (both checked to be `Complete` beforehand).
//! - `route`: `route::route` on those two parsed requests (checked to be `Ok` beforehand).
//! - `fanout_walk`: walking one topic's subscribers in a `TopicIndex` (what each event's
//!   fan-out iterates), for a fresh topic with 100 subscribers and for a topic that had
//!   10,000 of which 100 remain; the two should cost the same.
//!
//! Run with `cargo bench --bench hot_paths` (add e.g. `-- outbox` to filter, or
//! `-- --warm-up-time 1 --measurement-time 2` for a quicker run); `cargo test --bench hot_paths`
//! runs each benchmark once as a smoke test.

use std::hint::black_box;
use std::io::{self, IoSlice, Write};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sse_edge::http::{self, Limits, Parse, Request};
use sse_edge::outbox::{Bounds, Outbox};
use sse_edge::route::{self, RouteLimits};
use sse_edge::sse;
use sse_edge::topics::TopicIndex;
use sse_edge::{Class, Event};

const LIMITS: Limits = Limits { max_head: 8192, max_body: 1 << 20 };
const ROUTE_LIMITS: RouteLimits = RouteLimits { max_topics: 64, max_frame: 1 << 20 };

/// A sink that accepts everything and counts the bytes it was handed.
#[derive(Default)]
struct CountingSink {
    total: u64,
}

impl Write for CountingSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.total += buf.len() as u64;
        Ok(buf.len())
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let n: usize = bufs.iter().map(|b| b.len()).sum();
        self.total += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn encode_one(event: Option<&str>, data: &str) -> Bytes {
    let body = sse::encode_body(&sse::Meta::topic("bench"), event, data).expect("encodable body");
    sse::frame_with_id("1234567", &body).expect("valid id")
}

fn bench_encode(c: &mut Criterion) {
    let single = "x".repeat(100);
    let kib = "abcdefghijklmnop".repeat(64);
    let multi: String = (0..20)
        .map(|i| {
            format!(
                "line {i:02}: {{\"job\":{i},\"state\":\"running\"}}{}",
                if i % 2 == 0 { "\n" } else { "\r\n" }
            )
        })
        .collect();
    let cases: [(&str, Option<&str>, &str); 3] =
        [("100B_event", Some("job-update"), &single), ("1KiB", None, &kib), ("20_lines", None, &multi)];
    let mut group = c.benchmark_group("encode");
    for (name, event, data) in cases {
        assert!(encode_one(event, data).ends_with(b"\n\n"));
        group.throughput(Throughput::Bytes(data.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), &(event, data), |b, &(event, data)| {
            b.iter(|| encode_one(black_box(event), black_box(data)))
        });
    }
    group.finish();
}

fn push_and_flush(event: &Arc<Event>, n: usize, bounds: Bounds, sink: &mut CountingSink) -> usize {
    let mut outbox = Outbox::new();
    for _ in 0..n {
        black_box(outbox.push_event(event.clone(), bounds));
    }
    outbox.flush_to(sink, bounds).expect("sink never fails").bytes
}

fn bench_outbox(c: &mut Criterion) {
    let frame = encode_one(Some("tick"), &"y".repeat(80));
    let shared = |class| {
        Arc::new(Event {
            id: 1,
            topic: Arc::from("bench"),
            class,
            key: None,
            frame: frame.clone(),
            accepted_at: Instant::now(),
        })
    };
    // Reliable for the plain path; droppable for the eviction path (no gap notices).
    let (reliable, droppable) = (shared(Class::Reliable), shared(Class::Droppable));
    let unbounded = Bounds { max_events: usize::MAX, max_bytes: usize::MAX };
    let mut group = c.benchmark_group("outbox");
    for n in [1usize, 8, 64] {
        let mut sink = CountingSink::default();
        assert_eq!(push_and_flush(&reliable, n, unbounded, &mut sink), n * frame.len());
        assert_eq!(sink.total, (n * frame.len()) as u64);
        group.throughput(Throughput::Bytes((n * frame.len()) as u64));
        group.bench_with_input(BenchmarkId::new("push_flush", n), &n, |b, &n| {
            b.iter(|| push_and_flush(black_box(&reliable), n, unbounded, &mut sink))
        });
    }
    // Bound hit: 2 x max_events pushes, so each of the second half evicts the oldest frame.
    let max_events = 32;
    let bounded = Bounds { max_events, max_bytes: 1 << 20 };
    let mut sink = CountingSink::default();
    assert_eq!(push_and_flush(&droppable, 2 * max_events, bounded, &mut sink), max_events * frame.len());
    group.throughput(Throughput::Elements((2 * max_events) as u64));
    group.bench_function(BenchmarkId::new("push_evict_flush", 2 * max_events), |b| {
        b.iter(|| push_and_flush(black_box(&droppable), 2 * max_events, bounded, &mut sink))
    });
    group.finish();
}

fn get_events() -> Vec<u8> {
    b"GET /events?topic=jobs&topic=alerts HTTP/1.1\r\n\
Host: events.example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
Accept: text/event-stream\r\n\
Accept-Language: en-US,en;q=0.5\r\n\
Cache-Control: no-cache\r\n\
Connection: keep-alive\r\n\
Origin: https://app.example.com\r\n\
Cookie: session=3f9a1c27b6e84d0f9e2a5b7c1d3e4f60; theme=dark\r\n\r\n"
        .to_vec()
}

fn post_publish() -> Vec<u8> {
    let body = "p".repeat(100);
    format!(
        "POST /publish?topic=t HTTP/1.1\r\nHost: events.example.com\r\nContent-Type: text/plain\r\n\
Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn parse_complete(raw: &[u8]) -> Request {
    match http::parse(raw, LIMITS) {
        Parse::Complete(req, used) if used == raw.len() => *req,
        other => panic!("expected a Complete parse of all {} bytes, got {other:?}", raw.len()),
    }
}

fn bench_http(c: &mut Criterion) {
    let cases = [("get_events", get_events()), ("post_publish", post_publish())];
    let mut group = c.benchmark_group("http_parse");
    for (name, raw) in &cases {
        parse_complete(raw);
        group.throughput(Throughput::Bytes(raw.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), raw, |b, raw| {
            b.iter(|| http::parse(black_box(raw), LIMITS))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("route");
    for (name, raw) in &cases {
        let req = parse_complete(raw);
        if let Err(e) = route::route(&req, ROUTE_LIMITS) {
            panic!("{name} must route, got {e:?}");
        }
        group.bench_with_input(BenchmarkId::from_parameter(name), &req, |b, req| {
            b.iter(|| route::route(black_box(req), ROUTE_LIMITS))
        });
    }
    group.finish();
}

/// A topic index where topic `t` has 100 subscribers; with `churned`, it had 10,000 first.
fn index_with_100(churned: bool) -> TopicIndex {
    let mut idx = TopicIndex::new();
    let peak = if churned { 10_000 } else { 100 };
    let held: Vec<_> = (0..peak).map(|c| idx.subscribe("t", c)).collect();
    for &m in &held[100..] {
        idx.unsubscribe(m);
    }
    assert_eq!(idx.subscribers("t").count(), 100);
    idx
}

fn bench_fanout_walk(c: &mut Criterion) {
    let mut group = c.benchmark_group("fanout_walk");
    group.throughput(Throughput::Elements(100));
    for (name, churned) in [("fresh_100", false), ("100_of_peak_10000", true)] {
        let idx = index_with_100(churned);
        group.bench_function(name, |b| b.iter(|| idx.subscribers(black_box("t")).fold(0usize, |a, k| a ^ k)));
    }
    group.finish();
}

criterion_group!(benches, bench_encode, bench_outbox, bench_http, bench_fanout_walk);
criterion_main!(benches);
