//! Embedding sse-edge: start the server inside your program and publish without an HTTP hop.
//!
//! Run with `cargo run --example embed`, then in another terminal:
//! `curl -N 'http://127.0.0.1:8090/events?topic=jobs'`.
//! It publishes a progress event every 200 ms for 10 seconds, then shuts down.

use std::time::Duration;

use sse_edge::{Config, Message, PublishError, Server};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let config = Config { listen: "127.0.0.1:8090".parse()?, ..Config::default() };
    let handle = Server::start(config)?;
    println!("streaming on http://{}/events?topic=jobs", handle.local_addr());

    // A Publisher is Clone + Send: hand copies to worker threads.
    let publisher = handle.publisher();
    let worker = std::thread::spawn(move || -> Result<(), PublishError> {
        for pct in (0..=100).step_by(2) {
            // `publish` waits while the hub is full; `try_publish` would return `Full`.
            publisher.publish(
                &Message::new("jobs", format!("{{\"job\":42,\"pct\":{pct}}}")).event("job.progress"),
            )?;
            std::thread::sleep(Duration::from_millis(200));
        }
        publisher.publish(&Message::new("jobs", "{\"job\":42}").event("job.completed"))?;
        Ok(())
    });
    worker.join().map_err(|_| "publisher thread panicked")??;
    println!("stats: {:?}", handle.stats());
    handle.shutdown();
    Ok(())
}
