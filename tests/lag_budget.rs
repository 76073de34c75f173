//! The delivery-lag budget (`--max-delivery-lag-ms`): a loop whose oldest untaken event is
//! older than the budget makes publishers wait as on a full hub (HTTP publishers parked,
//! then `503` + `Retry-After`; `try_publish` returns `Full`), the saturation gauge shows it,
//! nothing answered `202` is lost; and a healthy node never trips it.

mod util;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sse_edge::{Config, Message, PublishError, Publisher};
use util::{http_get, publish_request, Client, SseClient, TestServer, IO_TIMEOUT};

/// A gauge's value for loop `index` from `/metrics` at `admin`.
fn per_loop(admin: SocketAddr, name: &str, index: usize) -> f64 {
    util::metric_value(&http_get(admin, "/metrics").text(), &format!("{name}{{loop=\"{index}\"}}"))
}

/// Embedded `try_publish` on topic `lag` every 5 ms until it returns `Full`; the ids it got.
fn publish_until_full(publisher: &Publisher) -> Vec<u64> {
    let mut accepted = Vec::new();
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        match publisher.try_publish(&Message::new("lag", format!("e{}", accepted.len()))) {
            Ok(Some(id)) => accepted.push(id),
            Ok(None) => panic!("a reliable event is never held"),
            Err(PublishError::Full) => return accepted,
            Err(e) => panic!("{e}"),
        }
        assert!(Instant::now() < deadline, "try_publish never returned Full");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Loop 0 sleeps (a test hook) far past a 100 ms budget: embedded `try_publish` gets `Full`
/// once the loop's oldest untaken event is older than the budget, HTTP publishers on the
/// other loop are parked and answered `503` + `Retry-After`, and the saturation gauge reads
/// above 1; when the loop wakes it drops to 0, and every event answered with an id arrives.
#[test]
fn a_loop_past_its_budget_makes_publishers_wait_and_loses_nothing() {
    let server = TestServer::start(Config {
        threads: Some(2),
        max_delivery_lag_ms: 100,
        publish_wait_timeout_ms: 300,
        admin_listen: Some("127.0.0.1:0".parse().expect("addr")),
        ..Config::loopback()
    });
    let admin = server.handle().admin_addr().expect("admin listener");
    let mut sub = SseClient::connect(server.addr, "/events?topic=lag");
    server.wait_stats("stream", |s| s.streams == 1);
    let publisher = server.handle().publisher();

    assert!(server.handle().debug_block_loop(0, Duration::from_secs(3)));
    // Events go in until loop 0's oldest untaken one is older than the budget.
    let mut accepted = publish_until_full(&publisher);
    assert!(accepted.len() < 10_000, "the count bound (16,384) was not what stopped it");
    let lag = server.stats().hub_lags[0];
    assert!(lag > Duration::from_millis(100), "loop 0's lag {lag:?} while publishers are refused");

    // HTTP publishers: those the other loop takes wait, then get 503 (loop 0's own wait for
    // it to wake and may then get through).
    let request = publish_request("topic=lag", Some("text/plain"), b"http");
    let mut clients: Vec<Client> = (0..16).map(|_| Client::connect(server.addr)).collect();
    for c in &mut clients {
        c.send(&request);
    }
    let mut refused = 0;
    for (n, c) in clients.iter_mut().enumerate() {
        let r = c.read_response();
        match r.status {
            503 => {
                assert_eq!(r.header("retry-after"), Some("1"), "publisher {n}");
                assert_eq!(r.json()["ids"], serde_json::json!([null]), "publisher {n}");
                refused += 1;
            }
            202 => accepted.push(r.json()["id"].as_u64().expect("id")),
            other => panic!("publisher {n}: {other} {}", r.text()),
        }
    }
    assert!(refused > 0, "some HTTP publisher waited on loop 1 and was refused");

    // The loop wakes (the scrape may wait for it: whichever loop serves it): the gauge
    // reads above 1 while it is behind, and returns to 0.
    let deadline = Instant::now() + IO_TIMEOUT;
    while per_loop(admin, "sse_loop_saturation", 0) > 0.0 {
        assert!(Instant::now() < deadline, "saturation never returned to 0");
        std::thread::sleep(Duration::from_millis(20));
    }
    accepted.push(util::publish(server.addr, "lag", "after"));
    accepted.sort_unstable();
    let got: Vec<u64> = accepted.iter().map(|_| sub.next_published().expect("event").id_u64()).collect();
    assert_eq!(got, accepted, "every event answered with an id arrives, in order");
    let s = server.stats();
    assert!(s.publish_waits > 0, "{s:?}");
}

/// At light load with the default budget, no publisher ever waits.
#[test]
fn a_healthy_node_never_trips_the_budget() {
    let server = TestServer::start(Config { threads: Some(2), ..Config::loopback() });
    let mut subs: Vec<SseClient> =
        (0..20).map(|_| SseClient::connect(server.addr, "/events?topic=calm")).collect();
    server.wait_stats("streams", |s| s.streams == 20);
    let ids: Vec<u64> = (0..200).map(|i| util::publish(server.addr, "calm", &format!("c{i}"))).collect();
    for sub in &mut subs {
        let got: Vec<u64> = ids.iter().map(|_| sub.next_published().expect("event").id_u64()).collect();
        assert_eq!(got, ids);
    }
    let s = server.stats();
    assert_eq!(s.publish_waits, 0, "{s:?}");
}

/// With `--bus`, a node whose loop is past its budget slows its own publishers the same way:
/// `try_publish` gets `Full` and HTTP publishers wait, then `503`; every event the bus took
/// (answered with an id) still arrives, in order, once the loop wakes.
#[test]
fn with_a_bus_a_loop_past_its_budget_makes_this_nodes_publishers_wait() {
    let redis = util::redis::RedisServer::start();
    let mut config = Config {
        threads: Some(1),
        max_delivery_lag_ms: 100,
        publish_wait_timeout_ms: 300,
        ..Config::loopback()
    };
    config.bus.url = Some(redis.url());
    let server = TestServer::start(config);
    let mut sub = SseClient::connect(server.addr, "/events?topic=lag");
    server.wait_stats("stream", |s| s.streams == 1);
    let publisher = server.handle().publisher();

    assert!(server.handle().debug_block_loop(0, Duration::from_secs(3)));
    let mut accepted = publish_until_full(&publisher);
    assert!(server.stats().hub_lags[0] > Duration::from_millis(100));

    // The only loop is asleep: HTTP publishers are read only when it wakes; with the bus
    // still behind they wait for lag room and the first ones may be refused after 300 ms.
    let request = publish_request("topic=lag", Some("text/plain"), b"http");
    let mut clients: Vec<Client> = (0..4).map(|_| Client::connect(server.addr)).collect();
    for c in &mut clients {
        c.send(&request);
    }
    for (n, c) in clients.iter_mut().enumerate() {
        let r = c.read_response();
        match r.status {
            503 => assert_eq!(r.header("retry-after"), Some("1"), "publisher {n}"),
            202 => accepted.push(r.json()["id"].as_u64().expect("id")),
            other => panic!("publisher {n}: {other} {}", r.text()),
        }
    }
    let deadline = Instant::now() + IO_TIMEOUT;
    while server.stats().hub_lags[0] > Duration::ZERO {
        assert!(Instant::now() < deadline, "the loop never caught up");
        std::thread::sleep(Duration::from_millis(20));
    }
    accepted.push(util::publish(server.addr, "lag", "after"));
    accepted.sort_unstable();
    let got: Vec<u64> = accepted.iter().map(|_| sub.next_published().expect("event").id_u64()).collect();
    assert_eq!(got, accepted, "every event the bus took arrives, in order");
}
