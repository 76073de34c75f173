//! `sse-edge`: parse the command line, start the server, wait. No logic lives here.

use std::process::ExitCode;

use clap::Parser;
use sse_edge::{Config, Server};

/// A thread-per-core Server-Sent Events fan-out server.
///
/// Every option can also be set from the environment variable shown with it.
#[derive(Parser)]
#[command(name = "sse-edge", version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    config: Config,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    match Server::start(cli.config) {
        Ok(handle) => {
            handle.wait();
            ExitCode::SUCCESS
        }
        Err(e) => {
            log::error!("{e}");
            eprintln!("sse-edge: {e}");
            ExitCode::from(1)
        }
    }
}
