//! `sse-load`: parse the command line, run one scenario, print and write the report.
//! No logic lives here; see `scenario.rs` for the phases and `multiproc.rs` for worker processes.
//!
//! Modules, in data-path order: `cli` (options → plans), `net` (sockets, rlimit), `pacer`,
//! `http_client`, `chunked` and `sse_parse` (sans-IO protocol), `payload` and `tracker` (stamps,
//! gap checks), `client`, `subscriber` and `live` (mio loops holding streams), `publisher`
//! (open-loop publishing), `multiproc` (worker processes), `procstat` (server sampling), `stats`
//! and `report` (merge, JSON, Markdown), `progress` (live line), `scenario` (the runs).

mod accepted;
mod chunked;
mod cli;
mod client;
mod http_client;
mod live;
mod multiproc;
mod net;
mod pacer;
mod payload;
mod procstat;
mod progress;
mod publisher;
mod report;
mod scenario;
mod sse_parse;
mod stats;
mod subscriber;
mod tracker;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Cmd};

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let result = match &cli.cmd {
        Cmd::Worker(w) => return multiproc::worker_main(&w.plan),
        Cmd::Fanout(c) => scenario::fanout(c).and_then(|r| scenario::emit(&r, &c.out)),
        Cmd::Subscribe(c) => scenario::subscribe(c).and_then(|r| scenario::emit(&r, &c.out)),
        Cmd::Publish(c) => scenario::publish(c).and_then(|r| scenario::emit(&r, &c.out)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sse-load: {e}");
            ExitCode::from(1)
        }
    }
}
