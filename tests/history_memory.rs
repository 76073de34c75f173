//! `--history-max-total-bytes` bounds what history really holds: the resident memory a
//! process gains by filling history with small events stays near the bound, not a multiple
//! of it (each event costs far more than its frame bytes). One test in its own binary, so no
//! other test allocates while resident memory is measured.

mod util;

use std::time::Duration;

use sse_edge::sys::rlimits::resident_bytes;
use sse_edge::{Config, Message};
use util::*;

const BOUND: usize = 8 << 20;
const TOPICS: usize = 16;

#[test]
fn resident_memory_of_full_history_stays_near_the_bound() {
    let server = TestServer::start(Config {
        threads: Some(1),
        history_max_total_bytes: BOUND,
        history_max_bytes: BOUND,
        history_max_events: 10_000_000,
        history_max_age_ms: 3_600_000,
        hub_queue_events: 256,
        status_interval_ms: 0,
        ..Config::loopback()
    });
    let publisher = server.handle().publisher();
    let batch = |round: usize| -> Vec<Message> {
        (0..256).map(|i| Message::new(format!("mem.{}", (round * 256 + i) % TOPICS), "x")).collect()
    };
    let publish_rounds = |rounds: std::ops::Range<usize>| {
        for round in rounds {
            publisher.publish_batch(&batch(round)).expect("publish");
        }
        server.wait_stats("the loop drained its channel", |s| {
            s.hub_queue_lengths.iter().all(|&n| n == 0)
                && s.events_in >= s.published_by_class.iter().sum::<u64>()
        });
    };
    // Warm up: the allocator's arenas and the loop's structures exist before the baseline.
    publish_rounds(0..64);
    std::thread::sleep(Duration::from_millis(50));
    let before = resident_bytes().expect("resident memory");
    // Frames are ~30 bytes: frame bytes alone would let 8 MiB hold ~280,000 events; publish
    // 1.5 times that, so history is full however it counts.
    publish_rounds(64..64 + 1650);
    let after = resident_bytes().expect("resident memory");
    let grown = after.saturating_sub(before) as usize;
    eprintln!(
        "history bound {} MiB: resident memory grew {:.1} MiB",
        BOUND >> 20,
        grown as f64 / f64::from(1 << 20)
    );
    assert!(grown <= 2 * BOUND, "resident memory grew {grown} bytes for a history bound of {BOUND}");
}
