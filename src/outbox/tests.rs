//! Outbox tests: a fake socket that takes N bytes per write, class eviction, conflation,
//! gap placement, and a property test over random push/flush/partial-write sequences.

use std::collections::BTreeSet;
use std::time::Instant;

use proptest::prelude::*;

use super::*;

/// A socket that accepts at most `per_call` bytes per call and says `WouldBlock` once
/// `capacity` bytes are in, like a kernel send buffer.
struct FakeSock {
    out: Vec<u8>,
    per_call: usize,
    capacity: usize,
}

impl FakeSock {
    fn open() -> FakeSock {
        FakeSock { out: vec![], per_call: usize::MAX, capacity: usize::MAX }
    }
}

impl Write for FakeSock {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let room = self.capacity.saturating_sub(self.out.len()).min(self.per_call);
        if room == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let mut taken = 0;
        for b in bufs {
            let n = b.len().min(room - taken);
            self.out.extend_from_slice(&b[..n]);
            taken += n;
            if taken == room {
                break;
            }
        }
        Ok(taken)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

const B: Bounds = Bounds { max_events: 4, max_bytes: 1000 };

fn ev(id: u64, class: Class, key: Option<&str>, pad: usize) -> Arc<Event> {
    let frame = Bytes::from(format!("id: {id}\ndata: {}\n\n", "x".repeat(pad)));
    Arc::new(Event {
        id,
        topic: Arc::from("t"),
        class,
        key: key.map(Arc::from),
        frame,
        accepted_at: Instant::now(),
    })
}

fn f(s: &'static str) -> Bytes {
    Bytes::from_static(s.as_bytes())
}

/// What a client sees: event ids and gap ranges, in order.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Seen {
    Id(u64),
    Gap(u64, u64),
}

fn seen(out: &[u8]) -> Vec<Seen> {
    let text = std::str::from_utf8(out).unwrap();
    text.split_terminator("\n\n")
        .filter_map(|frame| {
            if let Some(rest) = frame.strip_prefix("id: ") {
                return Some(Seen::Id(rest.lines().next().unwrap().parse().unwrap()));
            }
            let json = frame.strip_prefix("event: gap\ndata: ")?;
            let v: serde_json::Value = serde_json::from_str(json).unwrap();
            Some(Seen::Gap(v["from"].as_u64().unwrap(), v["to"].as_u64().unwrap()))
        })
        .collect()
}

#[test]
fn drops_oldest_raw_frames_when_full_by_count() {
    let mut o = Outbox::new();
    for s in ["a", "b", "c", "d"] {
        assert_eq!(o.push(f(s), B).evicted_total(), 0);
    }
    assert_eq!(o.push(f("e"), B).evicted_total(), 1);
    let mut sock = FakeSock::open();
    o.flush_to(&mut sock, B).unwrap();
    assert_eq!(sock.out, b"bcde");
    assert!(o.is_empty());
    assert_eq!(o.queued_bytes(), 0);
}

#[test]
fn partial_head_is_never_evicted() {
    let bounds = Bounds { max_events: 4, max_bytes: 40 };
    let mut o = Outbox::new();
    o.push(f("0123456789"), bounds);
    let mut sock = FakeSock { out: vec![], per_call: 3, capacity: 3 };
    assert!(o.flush_to(&mut sock, B).unwrap().blocked);
    assert_eq!(o.queued_bytes(), 7);
    for s in ["aaaaaaaaaa", "bbbbbbbbbb", "cccccccccc", "dddddddddd"] {
        o.push(f(s), bounds);
    }
    let mut rest = FakeSock::open();
    o.flush_to(&mut rest, B).unwrap();
    assert_eq!(rest.out, b"3456789bbbbbbbbbbccccccccccdddddddddd".to_vec());
}

#[test]
fn reliable_frame_that_cannot_fit_is_reported_as_a_gap() {
    let bounds = Bounds { max_events: 4, max_bytes: 40 };
    let mut o = Outbox::new();
    o.push_unbounded(Bytes::from("p".repeat(39)));
    let r = o.push_event(ev(7, Class::Reliable, None, 5), bounds);
    assert!(r.rejected);
    assert_eq!(o.pending_gap(), Some((7, 7)));
    let mut sock = FakeSock::open();
    assert_eq!(o.flush_to(&mut sock, B).unwrap().gaps, 1);
    assert_eq!(seen(&sock.out[39..]), vec![Seen::Gap(7, 7)]);
}

#[test]
fn eviction_goes_droppable_then_latest_then_reliable_and_reports_reliable_gaps() {
    let mut o = Outbox::new();
    o.push_event(ev(1, Class::Reliable, None, 1), B);
    o.push_event(ev(2, Class::Latest, Some("k"), 1), B);
    o.push_event(ev(3, Class::Droppable, None, 1), B);
    o.push_event(ev(4, Class::Reliable, None, 1), B);
    assert_eq!(o.push_event(ev(5, Class::Reliable, None, 1), B).evicted, [0, 0, 1]);
    assert_eq!(o.push_event(ev(6, Class::Reliable, None, 1), B).evicted, [0, 1, 0]);
    assert_eq!(o.push_event(ev(7, Class::Reliable, None, 1), B).evicted, [1, 0, 0]);
    assert_eq!(o.push_event(ev(8, Class::Reliable, None, 1), B).evicted, [1, 0, 0]);
    assert_eq!(o.pending_gap(), Some((1, 4)));
    let mut sock = FakeSock::open();
    o.flush_to(&mut sock, B).unwrap();
    // Placing the notice within the 4-frame bound takes one more slot: 5 joins the gap.
    assert_eq!(seen(&sock.out), vec![Seen::Gap(1, 5), Seen::Id(6), Seen::Id(7), Seen::Id(8)]);
}

#[test]
fn trim_brings_a_queue_grown_under_a_larger_bound_back_within_bounds() {
    let large = Bounds { max_events: 100, max_bytes: 10_000 };
    let mut o = Outbox::new();
    for id in 1..=8 {
        assert_eq!(o.push_event(ev(id, Class::Reliable, None, 1), large).evicted_total(), 0);
    }
    o.push(f("hb"), large);
    // The client reads a few bytes of frame 1, then stops.
    let mut sock = FakeSock { out: vec![], per_call: 3, capacity: 3 };
    assert!(o.flush_to(&mut sock, large).unwrap().blocked);
    let t = o.trim(B);
    assert_eq!(
        t.evicted,
        [4, 0, 1],
        "the heartbeat (droppable) first, then the oldest unstarted reliable ones"
    );
    assert!(o.len() <= B.max_events && o.queued_bytes() <= B.max_bytes);
    assert_eq!(o.pending_gap(), Some((2, 5)));
    assert_eq!(o.trim(B).evicted_total(), 0, "nothing more once within bounds");
    let mut rest = FakeSock::open();
    let flushed = o.flush_to(&mut rest, B).unwrap();
    assert_eq!((flushed.gaps, flushed.evicted), (1, [1, 0, 0]), "room for the notice, counted");
    sock.out.extend_from_slice(&rest.out);
    // Frame 1 finishes (never cut), then the gap notice (placing it within the four frames
    // takes frame 6 too), then the kept frames, in id order.
    assert_eq!(seen(&sock.out), vec![Seen::Id(1), Seen::Gap(2, 6), Seen::Id(7), Seen::Id(8)]);
}

#[test]
fn a_cheaper_frame_never_evicts_a_more_valuable_one() {
    let mut o = Outbox::new();
    for id in 1..=4 {
        o.push_event(ev(id, Class::Reliable, None, 1), B);
    }
    let r = o.push_event(ev(5, Class::Droppable, None, 1), B);
    assert!(r.rejected);
    assert_eq!(r.evicted, [0, 0, 0]);
    assert!(o.push_event(ev(6, Class::Latest, Some("k"), 1), B).rejected);
    assert_eq!(o.pending_gap(), None, "no reliable event was lost");
    assert!(o.push(Bytes::from_static(b":\n\n"), B).rejected, "a heartbeat does not evict either");
}

#[test]
fn latest_replaces_the_queued_value_for_its_key_and_keeps_id_order() {
    let mut o = Outbox::new();
    let big = Bounds { max_events: 100, max_bytes: 100_000 };
    o.push_event(ev(1, Class::Latest, Some("job-1"), 1), big);
    o.push_event(ev(2, Class::Reliable, None, 1), big);
    o.push_event(ev(3, Class::Latest, Some("job-2"), 1), big);
    assert!(o.push_event(ev(4, Class::Latest, Some("job-1"), 1), big).conflated);
    assert!(o.push_event(ev(5, Class::Latest, Some("job-1"), 1), big).conflated);
    assert_eq!(o.len(), 3);
    let mut sock = FakeSock::open();
    o.flush_to(&mut sock, B).unwrap();
    assert_eq!(seen(&sock.out), vec![Seen::Id(2), Seen::Id(3), Seen::Id(5)]);
}

#[test]
fn a_partly_written_latest_value_is_not_conflated() {
    let mut o = Outbox::new();
    let big = Bounds { max_events: 100, max_bytes: 100_000 };
    o.push_event(ev(1, Class::Latest, Some("k"), 50), big);
    let mut sock = FakeSock { out: vec![], per_call: 5, capacity: 5 };
    o.flush_to(&mut sock, B).unwrap();
    assert!(!o.push_event(ev(2, Class::Latest, Some("k"), 1), big).conflated);
    sock.capacity = usize::MAX;
    sock.per_call = usize::MAX;
    o.flush_to(&mut sock, B).unwrap();
    assert_eq!(seen(&sock.out), vec![Seen::Id(1), Seen::Id(2)]);
}

#[test]
fn gap_notice_goes_after_a_partial_head_and_pinned_frames() {
    let bounds = Bounds { max_events: 3, max_bytes: 10_000 };
    let mut o = Outbox::new();
    o.push_event(ev(1, Class::Reliable, None, 20), bounds);
    let mut sock = FakeSock { out: vec![], per_call: 4, capacity: 4 };
    o.flush_to(&mut sock, B).unwrap();
    o.push_event(ev(2, Class::Reliable, None, 1), bounds);
    o.push_event(ev(3, Class::Reliable, None, 1), bounds);
    o.push_event(ev(4, Class::Reliable, None, 1), bounds); // evicts 2, not the partial 1
    sock.capacity = usize::MAX;
    sock.per_call = usize::MAX;
    o.flush_to(&mut sock, B).unwrap();
    assert_eq!(seen(&sock.out), vec![Seen::Id(1), Seen::Gap(2, 2), Seen::Id(3), Seen::Id(4)]);
}

#[derive(Debug, Clone)]
enum Op {
    Push(u8, usize),
    Heartbeat,
    Flush(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..4, 1usize..40).prop_map(|(c, n)| Op::Push(c, n)),
        1 => Just(Op::Heartbeat),
        2 => (1usize..60).prop_map(Op::Flush),
    ]
}

proptest! {
    /// As the loop drives an outbox: pushes under the pass's larger bounds while the client
    /// keeps up (its last write emptied the outbox), under its own bounds otherwise, and a trim
    /// to its own bounds when a write blocks with frames left.
    #[test]
    fn order_bounds_partial_heads_and_gap_reports_hold(ops in proptest::collection::vec(op(), 1..300)) {
        let bounds = Bounds { max_events: 6, max_bytes: 200 };
        let pass = Bounds { max_events: 24, max_bytes: 800 };
        let mut o = Outbox::new();
        let mut sock = FakeSock { out: vec![], per_call: 0, capacity: 0 };
        let mut next = 1u64;
        let mut reliable = BTreeSet::new();
        let mut kept_up = true;
        // Reliable frames dropped (evicted, refused, trimmed), as the loop counts them.
        let mut dropped = 0u64;
        let rel = Class::Reliable.index();
        for op in ops {
            let now = if kept_up { pass } else { bounds };
            match op {
                Op::Push(c, pad) => {
                    let (class, key) = match c {
                        0 | 1 => (Class::Reliable, None),
                        2 => (Class::Latest, Some(if pad % 2 == 0 { "a" } else { "b" })),
                        _ => (Class::Droppable, None),
                    };
                    if class == Class::Reliable {
                        reliable.insert(next);
                    }
                    let out = o.push_event(ev(next, class, key, pad), now);
                    dropped += u64::from(out.evicted[rel]) + u64::from(out.rejected && class == Class::Reliable);
                    next += 1;
                }
                Op::Heartbeat => {
                    dropped += u64::from(o.push(Bytes::from_static(b":\n\n"), now).evicted[rel]);
                }
                Op::Flush(n) => {
                    // The socket takes at most n more bytes, in calls of at most n / 2 + 1.
                    sock.capacity = sock.out.len() + n;
                    sock.per_call = n / 2 + 1;
                    let before = sock.out.len();
                    let r = o.flush_to(&mut sock, now).unwrap();
                    prop_assert_eq!(r.bytes, sock.out.len() - before);
                    dropped += u64::from(r.evicted[rel]);
                    if r.blocked {
                        dropped += u64::from(o.trim(bounds).evicted[rel]);
                    }
                    kept_up = o.is_empty();
                }
            }
            let held = if kept_up { pass } else { bounds };
            prop_assert!(o.len() <= held.max_events);
            prop_assert!(o.queued_bytes() <= held.max_bytes);
        }
        sock.capacity = usize::MAX;
        sock.per_call = usize::MAX;
        dropped += u64::from(o.flush_to(&mut sock, bounds).unwrap().evicted[rel]);
        prop_assert!(o.is_empty());
        // Frames arrived whole (every frame parses), ids strictly increase.
        let text = String::from_utf8(sock.out.clone()).unwrap();
        prop_assert!(text.is_empty() || text.ends_with("\n\n"));
        let seen = seen(&sock.out);
        let ids: Vec<u64> = seen.iter().filter_map(|s| match s { Seen::Id(i) => Some(*i), _ => None }).collect();
        prop_assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids out of order: {:?}", ids);
        // Every reliable id is delivered, or covered by a gap notice that arrives before
        // any frame with a larger id.
        for &id in &reliable {
            if ids.contains(&id) {
                continue;
            }
            let gap_at = seen.iter().position(|s| matches!(s, Seen::Gap(f, t) if *f <= id && id <= *t));
            prop_assert!(gap_at.is_some(), "reliable {} lost silently: {:?}", id, seen);
            let first_newer = seen.iter().position(|s| matches!(s, Seen::Id(i) if *i > id));
            if let (Some(g), Some(n)) = (gap_at, first_newer) {
                prop_assert!(g < n, "gap for {} after a newer frame: {:?}", id, seen);
            }
        }
        // Every reliable frame not delivered was counted once as dropped.
        let delivered = reliable.iter().filter(|id| ids.contains(id)).count() as u64;
        prop_assert_eq!(dropped, reliable.len() as u64 - delivered);
    }
}

#[test]
fn a_lost_range_is_told_after_what_is_queued_and_merges_while_unsent() {
    let bounds = Bounds { max_events: 5, max_bytes: 1000 };
    let mut o = Outbox::new();
    o.push_event(ev(1, Class::Reliable, None, 1), bounds);
    o.push_event(ev(2, Class::Reliable, None, 1), bounds);
    o.push_lost(5, 7);
    o.push_lost(8, 9);
    o.push_event(ev(10, Class::Reliable, None, 1), bounds);
    o.push_event(ev(11, Class::Reliable, None, 1), bounds);
    let mut sock = FakeSock::open();
    let mut probe = Outbox::new();
    probe.push_event(ev(3, Class::Reliable, None, 1), bounds);
    probe.push_lost(4, 4);
    probe.push_event(ev(5, Class::Reliable, None, 1), bounds);
    probe.flush_to(&mut sock, bounds).unwrap();
    assert_eq!(seen(&sock.out), vec![Seen::Id(3), Seen::Gap(4, 4), Seen::Id(5)], "in id order");
    // Full: 12 evicts 1, and placing that notice evicts 2: with nothing unsent left before
    // the lost range, the two notices become one (no id between them reached the stream).
    o.push_event(ev(12, Class::Reliable, None, 1), bounds);
    let mut sock = FakeSock::open();
    o.flush_to(&mut sock, bounds).unwrap();
    assert_eq!(seen(&sock.out), vec![Seen::Gap(1, 9), Seen::Id(10), Seen::Id(11), Seen::Id(12)]);
    assert!(o.is_empty());
    // With nothing queued the notice goes out alone; a started head is never merged into.
    o.push_lost(20, 20);
    let mut sock = FakeSock::open();
    o.flush_to(&mut sock, bounds).unwrap();
    assert_eq!(seen(&sock.out), vec![Seen::Gap(20, 20)]);
}
