//! History tests: replay order, gaps, floors, limits and memory accounting.

use super::*;
use bytes::Bytes;

fn ev(id: u64, topic: &str, class: Class, key: Option<&str>) -> Arc<Event> {
    Arc::new(Event {
        id,
        topic: Arc::from(topic),
        class,
        key: key.map(Arc::from),
        frame: Bytes::from(format!("id: {id}\ndata: x\n\n")),
        accepted_at: Instant::now(),
    })
}

fn limits(max_events: usize) -> HistoryLimits {
    HistoryLimits {
        max_events,
        max_bytes: 1 << 20,
        max_age: Duration::from_secs(60),
        max_topics: 10,
        max_total_bytes: 1 << 20,
    }
}

fn ids(events: &[Arc<Event>]) -> Vec<u64> {
    events.iter().map(|e| e.id).collect()
}

#[test]
fn a_loss_the_bus_reports_is_a_gap_for_every_resume_from_below_it() {
    let mut h = History::new(limits(10), 0);
    for (id, t) in [(1, "a"), (2, "b"), (3, "a")] {
        h.record(&ev(id, t, Class::Reliable, None));
    }
    let (a, c): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("c"));
    // a's 5 and c's 6 never arrived; a's 7 did.
    h.forget_through(Some(&a), 5);
    h.forget_through(Some(&c), 6);
    h.record(&ev(7, "a", Class::Reliable, None));
    let now = Instant::now();
    let (gap, events) = h.replay(&["a".into()], 3, now);
    assert_eq!((gap, ids(&events)), (Some((4, 5)), vec![7]));
    assert_eq!(h.replay(&["a".into()], 1, now).0, Some((2, 5)), "what a ring held below the hole goes too");
    assert_eq!(h.replay(&["b".into()], 2, now).0, None, "b lost nothing");
    assert_eq!(h.after("c", 2, 10, now).map(|(g, e)| (g, e.len())), Some((Some((3, 6)), 0)));
    // Every topic: nothing at or below 9 is vouched for.
    h.forget_through(None, 9);
    assert_eq!(h.replay(&["b".into()], 2, now).0, Some((3, 9)));
    assert_eq!(h.after("new", 8, 10, now).map(|(g, _)| g), Some(Some((9, 9))));
    assert_eq!(h.size().1, 0);
}

#[test]
fn replay_merges_topics_in_id_order_after_the_given_id() {
    let mut h = History::new(limits(10), 0);
    for (id, t) in [(1, "a"), (2, "b"), (3, "c"), (4, "a"), (5, "b")] {
        h.record(&ev(id, t, Class::Reliable, None));
    }
    let (gap, events) = h.replay(&["a".into(), "b".into()], 1, Instant::now());
    assert_eq!(gap, None);
    assert_eq!(ids(&events), vec![2, 4, 5]);
}

#[test]
fn resume_from_before_the_ring_reports_the_dropped_range() {
    let mut h = History::new(limits(3), 0);
    for id in 10..20 {
        h.record(&ev(id, "a", Class::Reliable, None));
    }
    let (gap, events) = h.replay(&["a".into()], 12, Instant::now());
    assert_eq!(gap, Some((13, 16)));
    assert_eq!(ids(&events), vec![17, 18, 19]);
    assert_eq!(h.replay(&["a".into()], 16, Instant::now()).0, None);
}

#[test]
fn unknown_topics_and_forgotten_topics_report_from_the_floor() {
    let mut h = History::new(HistoryLimits { max_topics: 2, ..limits(10) }, 100);
    assert_eq!(h.replay(&["x".into()], 50, Instant::now()).0, Some((51, 100)));
    assert_eq!(h.replay(&["x".into()], 100, Instant::now()).0, None);
    h.record(&ev(101, "a", Class::Reliable, None));
    h.record(&ev(102, "b", Class::Reliable, None));
    h.record(&ev(103, "c", Class::Reliable, None)); // forgets "a"
    assert_eq!(h.size().0, 2);
    assert_eq!(h.replay(&["a".into()], 100, Instant::now()).0, Some((101, 101)));
    let (gap, events) = h.after("a", 50, 10, Instant::now()).expect("a gap, not a 404");
    assert_eq!((gap, events.len()), (Some((51, 101)), 0));
    assert!(h.after("a", 0, 10, Instant::now()).is_none(), "no position: nothing missed");
    assert!(h.after("a", 101, 10, Instant::now()).is_none(), "nothing lost after the floor");
    // Published again, the forgotten topic's new ring still reports what it forgot.
    h.record(&ev(104, "a", Class::Reliable, None));
    let (gap, events) = h.replay(&["a".into()], 100, Instant::now());
    assert_eq!((gap, ids(&events)), (Some((101, 101)), vec![104]));
}

#[test]
fn a_topic_first_seen_after_a_restart_reports_everything_before_the_floor() {
    // A restarted process: its floor is just below its first id.
    let mut h = History::new(limits(10), 1_000);
    h.record(&ev(1_001, "t", Class::Reliable, None));
    let (gap, events) = h.replay(&["t".into()], 5, Instant::now());
    assert_eq!((gap, ids(&events)), (Some((6, 1_000)), vec![1_001]));
    let (gap, events) = h.after("t", 5, 10, Instant::now()).unwrap();
    assert_eq!((gap, ids(&events)), (Some((6, 1_000)), vec![1_001]));
    assert_eq!(h.replay(&["t".into()], 1_000, Instant::now()).0, None);
}

#[test]
fn replay_keeps_only_the_newest_latest_value_per_key() {
    let mut h = History::new(limits(10), 0);
    h.record(&ev(1, "a", Class::Latest, Some("k")));
    h.record(&ev(2, "a", Class::Reliable, None));
    h.record(&ev(3, "a", Class::Latest, Some("k")));
    h.record(&ev(4, "a", Class::Latest, Some("j")));
    assert_eq!(ids(&h.replay(&["a".into()], 0, Instant::now()).1), vec![2, 3, 4]);
    assert_eq!(h.latest("a", Instant::now()).map(|e| e.id), Some(4));
}

#[test]
fn total_bytes_bound_forgets_least_recent_topics() {
    // What two topics of one event each hold.
    let mut probe = History::new(limits(10), 0);
    probe.record(&ev(1, "a", Class::Reliable, None));
    probe.record(&ev(2, "b", Class::Reliable, None));
    let two = probe.total_bytes();
    let mut h = History::new(HistoryLimits { max_total_bytes: two, ..limits(10) }, 0);
    h.record(&ev(1, "a", Class::Reliable, None));
    h.record(&ev(2, "b", Class::Reliable, None));
    assert_eq!(h.size(), (2, 2));
    h.record(&ev(3, "c", Class::Reliable, None));
    assert_eq!(h.size(), (2, 2));
    assert!(h.total_bytes() <= two);
    assert_eq!(h.replay(&["a".into()], 0, Instant::now()).0, None, "no position: nothing missed");
    h.record(&ev(4, "a", Class::Reliable, None)); // forgets "b"
    assert_eq!(h.replay(&["a".into(), "b".into()], 1, Instant::now()).0, Some((2, 2)), "b forgot 2");
}

#[test]
fn accounted_bytes_count_what_each_event_and_ring_really_holds() {
    // The shared event is more than its frame: counters, the struct, the frame's chunk.
    assert!(EVENT_OVERHEAD_BYTES >= 2 * size_of::<usize>() + size_of::<Event>());
    assert_eq!(heap_chunk(1), 32);
    assert_eq!(heap_chunk(30), 48);
    let topic: Arc<str> = Arc::from("a");
    let shared = |id: u64| {
        Arc::new(Event {
            id,
            topic: topic.clone(),
            class: Class::Reliable,
            key: None,
            frame: Bytes::from(format!("id: {id:03}\ndata: x\n\n")), // 17 bytes
            accepted_at: Instant::now(),
        })
    };
    let loops = 3;
    let mut h = History::new(limits(1000), 0).shared_by(loops);
    for id in 100..200 {
        h.record(&shared(id));
    }
    let ring = &h.topics["a"];
    let per_event = heap_chunk(17) + EVENT_OVERHEAD_BYTES; // the name is shared: not counted
    let per_ring = loops * (RING_OVERHEAD_BYTES + ring.events.capacity() * SLOT_BYTES) + heap_chunk(17);
    assert!(ring.events.capacity() >= 100);
    assert_eq!(h.total_bytes(), 100 * per_event + per_ring);
    assert!(h.total_bytes() > 100 * (17 + size_of::<Event>() + loops * SLOT_BYTES), "more than frames");
    // An event with its own copy of the name pays for it.
    let mut h2 = History::new(limits(1000), 0);
    h2.record(&shared(1));
    let before = h2.total_bytes();
    h2.record(&ev(2, "a", Class::Reliable, None));
    let grown = h2.total_bytes() - before;
    assert!(grown >= per_event + heap_chunk(2 * size_of::<usize>() + 1), "{grown}");
}

#[test]
fn an_expired_ring_gives_its_slots_back() {
    let mut h = History::new(
        HistoryLimits { max_age: Duration::from_millis(10), max_total_bytes: 1 << 30, ..limits(10_000) },
        0,
    );
    for id in 1..=5000 {
        h.record(&ev(id, "a", Class::Reliable, None));
    }
    let full = h.total_bytes();
    h.expire(Instant::now() + Duration::from_millis(50));
    assert_eq!(h.size(), (1, 0));
    assert_eq!(h.topics["a"].events.capacity(), 0, "an emptied ring keeps no slots");
    assert_eq!(h.total_bytes(), RING_OVERHEAD_BYTES + heap_chunk(2 * size_of::<usize>() + 1));
    assert!(h.total_bytes() < full / 1000);
}

#[test]
fn old_events_expire_by_age() {
    let mut h = History::new(HistoryLimits { max_age: Duration::from_millis(10), ..limits(10) }, 0);
    h.record(&ev(1, "a", Class::Reliable, None));
    h.record(&ev(2, "a", Class::Reliable, None));
    let later = Instant::now() + Duration::from_millis(50);
    assert!(h.latest("a", later).is_none());
    assert_eq!(h.replay(&["a".into()], 1, later).0, Some((2, 2)), "expired, not yet dropped: a gap");
    h.expire(later);
    assert_eq!(h.size(), (1, 0));
    assert_eq!(h.replay(&["a".into()], 1, later).0, Some((2, 2)));
}
