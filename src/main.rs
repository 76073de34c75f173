//! `sse-edge`: parse the command line, start the server, wait for a signal. No logic here.
//!
//! `sse-edge [OPTIONS]` runs the server. `sse-edge check [--json]` reports the host's stream
//! capacity for the same options instead; the server options are global, so they may come
//! before or after `check` (`sse-edge --max-connections 500000 check` and
//! `sse-edge check --max-connections 500000` are the same). `--config FILE` adds a TOML file
//! under the flags and environment ([`sse_edge::config_file`]); SIGHUP re-reads it with the
//! same command line and environment and applies it live ([`sse_edge::Reloader`]).

use std::ffi::OsString;
use std::process::ExitCode;

use clap::{Command, CommandFactory, FromArgMatches, Parser, Subcommand};
use sse_edge::config_file::{self, FileArgs, ResolveError};
use sse_edge::{check, sys, Config, Server};

/// A thread-per-core Server-Sent Events fan-out server.
///
/// Every option can also be set from the environment variable shown with it, or in the
/// `--config` file; a flag wins over the environment, which wins over the file.
/// SIGTERM or SIGINT drains gracefully (streams are told `server-shutdown`); a second one
/// exits at once. SIGHUP reloads the config file.
#[derive(Parser)]
#[command(name = "sse-edge", version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    file: FileArgs,
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

/// The command line with every server option global, so a subcommand accepts them too
/// (clap propagates a global's value to the top level whichever side it was given on).
fn command() -> Command {
    Cli::command().args_conflicts_with_subcommands(false).mut_args(|a| a.global(true))
}

/// Parses `argv` with the environment and the config file.
fn load(argv: &[OsString]) -> Result<(Cli, config_file::Resolved), ResolveError> {
    let resolved = config_file::resolve(&command(), argv)?;
    let cli = Cli::from_arg_matches(&resolved.matches)?;
    Ok((cli, resolved))
}

fn main() -> ExitCode {
    init_logging();
    let argv: Vec<OsString> = std::env::args_os().collect();
    let (cli, resolved) = match load(&argv) {
        Ok(loaded) => loaded,
        Err(ResolveError::Cli(e)) => e.format(&mut command()).exit(),
        Err(ResolveError::File(e)) => {
            eprintln!("sse-edge: --config {e}");
            return ExitCode::from(2);
        }
    };
    if cli.file.print_config {
        let file = resolved.file.as_deref();
        print!("{}", config_file::render(&command(), &cli.config, &resolved.sources, file));
        if let Err(e) = cli.config.validate() {
            eprintln!("sse-edge: invalid configuration: {e}");
            return ExitCode::from(2);
        }
        return ExitCode::SUCCESS;
    }
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
    let reloader = handle.reloader();
    let handler = sys::signals::spawn_handler(
        signals,
        move || {
            log::info!("SIGHUP: reloading the configuration");
            // The signal thread is the only one that receives SIGTERM: a reload that panics
            // must not take it down, or the node could then only be stopped with SIGKILL.
            let reload = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match load(&argv) {
                Ok((cli, _)) => {
                    let _ = reloader.reload(cli.config); // logged and counted either way
                }
                Err(e) => reloader.failed(&e),
            }));
            if reload.is_err() {
                reloader.failed(&"the reload panicked; the running configuration is unchanged");
            }
        },
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

/// Logs through `env_logger`. Without `RUST_LOG` every record passes the logger's own
/// filter and the level is the global maximum, `info` until `--log-level` (or a reload)
/// changes it; with `RUST_LOG` its per-module filter also applies (read at start only).
fn init_logging() {
    let rust_log = std::env::var_os("RUST_LOG").is_some();
    let env = env_logger::Env::default().default_filter_or("trace");
    env_logger::Builder::from_env(env).init();
    if !rust_log {
        log::set_max_level(log::LevelFilter::Info);
    }
}
