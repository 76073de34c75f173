//! `--admin-listen`: operator endpoints move off the public address (the polling endpoints
//! stay), and the admin address keeps working (scrape, probe, publish) when the public side is
//! at capacity.

mod util;

use sse_edge::metrics::RejectReason;
use sse_edge::Config;
use util::*;

#[test]
fn admin_endpoints_move_and_survive_a_full_public_side() {
    let server = TestServer::start(Config {
        threads: Some(2),
        max_connections: 2,
        admin_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..Config::loopback()
    });
    let admin = server.handle().admin_addr().expect("admin address");

    // The public side no longer serves operator endpoints; the admin side does.
    let mut public = Client::connect(server.addr);
    assert_eq!(public.request(b"GET /metrics HTTP/1.1\r\n\r\n").status, 404);
    // The polling endpoints are client API and stay public (404 only for want of history).
    let r = public.request(b"GET /topics/a/latest HTTP/1.1\r\n\r\n");
    assert_eq!(r.status, 404);
    assert!(r.text().contains("no retained events"), "{}", r.text());
    drop(public);
    server.wait_stats("probe connection closed", |s| s.connections == 0);

    // Fill the public side.
    let mut subs: Vec<SseClient> =
        (0..2).map(|_| SseClient::connect(server.addr, "/events?topic=full")).collect();
    server.wait_stats("public side full", |s| s.streams == 2);
    let r = Client::connect(server.addr).try_read_response_after(b"GET /events?topic=full HTTP/1.1\r\n\r\n");
    assert_eq!(r.map(|r| r.status).ok(), Some(503), "past capacity");
    assert!(server.stats().rejected_for(RejectReason::StreamCapacity) >= 1);

    // The admin address still scrapes and publishes, and the public streams get the event.
    let mut ops = Client::connect(admin);
    let metrics = ops.request(b"GET /metrics HTTP/1.1\r\n\r\n");
    assert_eq!(metrics.status, 200);
    assert!(metrics.text().contains("sse_connections_max 2\n"), "{}", metrics.text());
    let r = ops.publish("topic=full", None, b"via admin");
    assert_eq!(r.status, 202, "{}", r.text());
    let id = r.json()["id"].as_u64().unwrap();
    for sub in &mut subs {
        let e = sub.next_event().unwrap();
        assert_eq!((e.id_u64(), e.data.as_str()), (id, "via admin"));
    }
    assert_eq!(ops.request(b"GET /healthz HTTP/1.1\r\n\r\n").status, 200);
}
