//! [`Platform`]: everything a driver needs, as one domain.

use crate::error::Result;
use crate::evtchn::EventChannels;
use crate::grant::{GrantMapper, GrantTable};
use std::sync::{Mutex, OnceLock};
use xenio_xen_sys::DomId;
use xenio_xenstore::Store;

/// Everything a driver needs, as one domain: its id, the store, event channels,
/// and grants in both directions. Drivers are generic over this trait, so the same
/// code runs in one process, on the local platform and on Xen.
pub trait Platform: Send + Sync {
    /// The store client.
    type Store: Store;
    /// Event channel allocation and binding.
    type Events: EventChannels;
    /// Granting this domain's pages (frontends).
    type Grants: GrantTable;
    /// Mapping and copying other domains' grants (backends).
    type Mapper: GrantMapper;
    /// This domain's id.
    fn domid(&self) -> DomId;
    /// The store, as this domain.
    fn store(&self) -> &Self::Store;
    /// Event channels, as this domain.
    fn events(&self) -> &Self::Events;
    /// The grant table (opened on first use: only frontends need it).
    fn grants(&self) -> Result<&Self::Grants>;
    /// The grant mapper (opened on first use: only backends need it).
    fn mapper(&self) -> Result<&Self::Mapper>;
}

/// `cell`'s value, made by `init` on first use; an error is returned and
/// nothing kept, so a later call tries again. One initialiser runs at a time
/// (process-wide: these are rare, quick opens): two threads that raced here
/// once both made a local grant table, the second replacing the first's files,
/// and the one that lost the race removed, when dropped, the files the
/// winner's frontends were granting from ("domain N has no grant table").
pub(crate) fn once<T>(cell: &OnceLock<T>, init: impl FnOnce() -> Result<T>) -> Result<&T> {
    static INIT: Mutex<()> = Mutex::new(());
    if let Some(v) = cell.get() {
        return Ok(v);
    }
    let _one = INIT.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(v) = cell.get() {
        return Ok(v);
    }
    let v = init()?;
    Ok(cell.get_or_init(|| v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn racing_first_uses_initialise_once() {
        for _ in 0..50 {
            let cell = OnceLock::new();
            let made = AtomicUsize::new(0);
            let barrier = std::sync::Barrier::new(4);
            let got: Vec<usize> = std::thread::scope(|s| {
                let hs: Vec<_> = (0..4)
                    .map(|_| {
                        s.spawn(|| {
                            barrier.wait();
                            *once(&cell, || {
                                std::thread::sleep(std::time::Duration::from_millis(1));
                                Ok(made.fetch_add(1, Ordering::SeqCst))
                            })
                            .unwrap()
                        })
                    })
                    .collect();
                hs.into_iter().map(|h| h.join().unwrap()).collect()
            });
            assert_eq!(made.load(Ordering::SeqCst), 1, "initialised twice");
            assert!(got.iter().all(|&v| v == 0));
        }
    }

    #[test]
    fn a_failed_initialisation_is_tried_again() {
        let cell = OnceLock::new();
        assert!(once(&cell, || Err(Error::Limit("no".into()))).is_err());
        assert_eq!(*once(&cell, || Ok(7)).unwrap(), 7);
    }
}
