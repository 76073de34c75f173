//! Hub tests: sequencing, room, the throttle's newest-wins claim.

use super::*;
use crate::publish::{prepare, Message};

/// A hub over `loops` channels; one poll per waker, as mio allows one waker per poll.
fn hub(loops: usize, capacity: usize) -> (Hub, Vec<Inbox>, Vec<mio::Poll>) {
    throttled_hub(loops, capacity, Duration::ZERO)
}

fn throttled_hub(loops: usize, capacity: usize, latest: Duration) -> (Hub, Vec<Inbox>, Vec<mio::Poll>) {
    let polls: Vec<_> = (0..loops).map(|_| mio::Poll::new().unwrap()).collect();
    let wakers = polls.iter().map(|p| Arc::new(Waker::new(p.registry(), mio::Token(0)).unwrap())).collect();
    let (hub, inboxes) = Hub::new(wakers, capacity, latest, 0);
    (hub, inboxes, polls)
}

/// Data of the events waiting in `inbox`, in channel order.
fn drained(inbox: &Inbox) -> Vec<String> {
    inbox
        .rx
        .try_iter()
        .filter_map(|m| match m {
            LoopMsg::Event(e) => Some(crate::sse::decode_frame(&e.frame).1),
            _ => None,
        })
        .collect()
}

/// Invariant 5: the trailing edge's value waits for room longer than a window while a
/// newer value passes the throttle; the newer one is sequenced first, and the older one
/// must then never be (it would win conflation, replay and `/latest`).
#[test]
fn an_older_latest_value_never_follows_a_newer_one() {
    const WINDOW: Duration = Duration::from_millis(20);
    let (hub, inboxes, _poll) = throttled_hub(1, 2, WINDOW);
    let latest = |v: &str| prepare(&Message::new("p", v).latest("job"), 1000).unwrap();
    let (send, _) = hub.admit(vec![latest("v0")]);
    assert_eq!(hub.try_publish(&send, None).unwrap().len(), 1, "the first value passes");
    let (send, held) = hub.admit(vec![latest("v1")]);
    assert!(send.is_empty() && held == [true], "inside the window: held");
    let filler = prepare(&Message::new("other", "x"), 1000).unwrap();
    assert_eq!(hub.try_publish(&[filler], None).unwrap().len(), 1);
    assert_eq!(hub.try_publish(&[latest("full")], None).unwrap().len(), 0, "the hub is full");

    // The flusher takes v1 at the window's end, but finds no room ...
    let (due, _) = hub.throttle.next_due();
    assert_eq!(due.len(), 1);
    assert_eq!(hub.try_publish(&due, None).unwrap().len(), 0);
    // ... for longer than the next window, so v2 passes straight through and gets room.
    std::thread::sleep(WINDOW * 2);
    let (v2, _) = hub.admit(vec![latest("v2")]);
    assert_eq!(v2.len(), 1, "the window ended: v2 passes");
    assert_eq!(drained(&inboxes[0]), ["v0", "x"]);
    let v2_id = hub.try_publish(&v2, None).unwrap();
    assert!(v2_id.len() == 1 && v2_id[0] != SUPERSEDED);
    // The flusher's retry of v1 now finds room: v1 must not be sequenced after v2.
    assert_eq!(hub.try_publish(&due, None).unwrap(), [SUPERSEDED]);
    assert_eq!(drained(&inboxes[0]), ["v2"], "the newest value is the last one sequenced");
    assert_eq!(hub.throttle.replaced(), 1, "the superseded value is counted");
    hub.close();
}

#[test]
fn ids_increase_and_every_loop_gets_every_event_in_order() {
    let (hub, inboxes, _poll) = hub(2, 100);
    let events: Vec<_> = (0..10).map(|i| prepare(&Message::new("t", i.to_string()), 1000).unwrap()).collect();
    let ids = hub.try_publish(&events, None).unwrap();
    assert_eq!(ids.len(), 10);
    assert!(ids.windows(2).all(|w| w[1] == w[0] + 1));
    for inbox in &inboxes {
        let got: Vec<u64> = inbox
            .rx
            .try_iter()
            .filter_map(|m| match m {
                LoopMsg::Event(e) => Some(e.id),
                _ => None,
            })
            .collect();
        assert_eq!(got, ids);
    }
}

#[test]
fn a_full_loop_limits_what_is_accepted() {
    let (hub, inboxes, _poll) = hub(2, 3);
    let events: Vec<_> = (0..5).map(|i| prepare(&Message::new("t", i.to_string()), 1000).unwrap()).collect();
    assert_eq!(hub.try_publish(&events, None).unwrap().len(), 3);
    assert_eq!(hub.try_publish(&events, None).unwrap().len(), 0);
    inboxes[1].rx.try_recv().unwrap();
    // Loop 0 is still full: nothing fits anywhere.
    assert_eq!(hub.try_publish(&events, None).unwrap().len(), 0);
    inboxes[0].rx.try_recv().unwrap();
    assert_eq!(hub.try_publish(&events, None).unwrap().len(), 1);
    hub.close();
    assert_eq!(hub.try_publish(&events, None), Err(PublishError::Closed));
}
