//! Stopping a backend process cleanly on SIGTERM or SIGINT.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Block SIGINT and SIGTERM in the calling thread, and so in every thread it
/// starts afterwards, and start a thread that waits for them and sets the
/// returned flag. Call it first in `main`, before any other thread exists (a
/// thread started earlier would still take the signal's default action: the
/// process ends at once, its device left in the store).
///
/// # Errors
///
/// The OS error when the signal mask cannot be set or the thread cannot start.
pub fn stop_on_signals() -> io::Result<Arc<AtomicBool>> {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    set.thread_block().map_err(io::Error::from)?;
    let flag = Arc::new(AtomicBool::new(false));
    let f = flag.clone();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Ok(sig) = set.wait() {
                tracing::info!("{sig:?}: stopping");
                f.store(true, Ordering::Relaxed);
            }
        })?;
    Ok(flag)
}
