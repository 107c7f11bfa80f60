//! [`Platform`]: everything a driver needs, as one domain.

use crate::error::Result;
use crate::evtchn::EventChannels;
use crate::grant::{GrantMapper, GrantTable};
use std::sync::OnceLock;
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

pub(crate) fn once<T>(cell: &OnceLock<T>, init: impl FnOnce() -> Result<T>) -> Result<&T> {
    if let Some(v) = cell.get() {
        return Ok(v);
    }
    let v = init()?;
    Ok(cell.get_or_init(|| v))
}
