//! `sse-edge`: parse the command line, start the server, wait for a signal. No logic here.

use std::process::ExitCode;

use clap::Parser;
use sse_edge::{sys, Config, Server};

/// A thread-per-core Server-Sent Events fan-out server.
///
/// Every option can also be set from the environment variable shown with it.
/// SIGTERM or SIGINT drains gracefully (streams are told `server-shutdown`); a second one
/// exits at once.
#[derive(Parser)]
#[command(name = "sse-edge", version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    config: Config,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let signals = match sys::signals::block_termination() {
        Ok(set) => set,
        Err(e) => {
            eprintln!("sse-edge: cannot block termination signals: {e}");
            return ExitCode::from(1);
        }
    };
    let handle = match Server::start(cli.config) {
        Ok(handle) => handle,
        Err(e) => {
            log::error!("{e}");
            eprintln!("sse-edge: {e}");
            return ExitCode::from(1);
        }
    };
    let trigger = handle.shutdown_trigger();
    let handler = sys::signals::spawn_handler(
        signals,
        move |sig| {
            log::info!("{sig}: draining (send it again to exit at once)");
            trigger.begin();
        },
        |sig| {
            log::warn!("{sig} again: exiting without draining");
            std::process::exit(1);
        },
    );
    if let Err(e) = handler {
        log::error!("cannot watch for signals: {e}");
        return ExitCode::from(1);
    }
    handle.wait();
    log::info!("drained; exiting");
    ExitCode::SUCCESS
}
