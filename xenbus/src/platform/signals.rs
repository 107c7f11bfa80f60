//! Stopping a backend on a signal, as every backend process does.

use crate::error::{Error, Result};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

/// What stops a backend: SIGTERM and SIGINT.
pub const STOP_SIGNALS: [i32; 2] = [libc::SIGTERM, libc::SIGINT];

/// Set `stop` on the first of `signals` (a backend: [`STOP_SIGNALS`]), and
/// end the process on the second (a backend that does not stop when asked
/// once can still be stopped).
///
/// # Errors
///
/// [`Error::Io`] when a handler cannot be installed.
pub fn stop_on_signals(stop: &Arc<AtomicBool>, signals: &[i32]) -> Result<()> {
    for &sig in signals {
        signal_hook::flag::register_conditional_shutdown(sig, 1, stop.clone())
            .and_then(|_| signal_hook::flag::register(sig, stop.clone()))
            .map_err(|e| Error::io(format!("handling signal {sig}"), e))?;
    }
    Ok(())
}
