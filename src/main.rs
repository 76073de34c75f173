//! `sse-edge`: parse the command line, start the server, wait for a signal. No logic here.
//!
//! `sse-edge [OPTIONS]` runs the server. `sse-edge check [--json]` reports the host's stream
//! capacity for the same options instead; the server options are global, so they may come
//! before or after `check` (`sse-edge --max-connections 500000 check` and
//! `sse-edge check --max-connections 500000` are the same).

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use sse_edge::{check, sys, Config, Server};

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
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Report how many streams this host can hold with these options (rlimits, sysctls,
    /// memory), which limit binds first and what to change; changes nothing. Exits 2 when a
    /// non-zero --max-connections cannot be reached.
    Check {
        /// Print one JSON object (readings, capacity, binding limit, advice).
        #[arg(long)]
        json: bool,
    },
}

/// Parses the command line with every server option global, so a subcommand accepts them
/// too (clap propagates a global's value to the top level whichever side it was given on).
fn parse_cli() -> Cli {
    let mut cmd = Cli::command().args_conflicts_with_subcommands(false).mut_args(|a| a.global(true));
    let matches = cmd.get_matches_mut();
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.format(&mut cmd).exit())
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = parse_cli();
    if let Some(Cmd::Check { json }) = cli.cmd {
        return ExitCode::from(check::run(&cli.config, json));
    }
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
