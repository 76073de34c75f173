//! SIGTERM/SIGINT/SIGHUP through a `signalfd`: the binary blocks the signals before any
//! thread starts (so every thread inherits the mask and none is interrupted), then one
//! thread reads them: the first termination signal starts a graceful drain, a second exits
//! at once; every SIGHUP runs the reload callback (on that thread, one at a time).

use std::io;

use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

/// Blocks SIGTERM, SIGINT and SIGHUP for this thread and every thread it starts later. Call
/// first thing in `main`.
pub fn block_termination() -> io::Result<SigSet> {
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    set.add(Signal::SIGHUP);
    set.thread_block().map_err(io::Error::from)?;
    Ok(set)
}

/// Waits for signals on a dedicated thread: `on_hup` runs on every SIGHUP, `on_first` on the
/// first termination signal, `on_second` on the next.
pub fn spawn_handler(
    set: SigSet,
    mut on_hup: impl FnMut() + Send + 'static,
    on_first: impl FnOnce(Signal) + Send + 'static,
    on_second: impl FnOnce(Signal) + Send + 'static,
) -> io::Result<std::thread::JoinHandle<()>> {
    let mut fd = SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC).map_err(io::Error::from)?;
    std::thread::Builder::new().name("sse-signals".into()).spawn(move || {
        let mut next = |fd: &mut SignalFd| loop {
            match fd.read_signal() {
                Ok(Some(info)) => match Signal::try_from(info.ssi_signo as i32) {
                    Ok(Signal::SIGHUP) => on_hup(),
                    Ok(sig) => return sig,
                    Err(_) => return Signal::SIGTERM,
                },
                Ok(None) => continue,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    log::error!("reading signals failed: {e}");
                    return Signal::SIGTERM;
                }
            }
        };
        on_first(next(&mut fd));
        on_second(next(&mut fd));
    })
}
