//! [`LocalPlatform`]: one domain of the local platform, as a driver sees it.

use super::{LocalDomain, LocalEventChannels, LocalGrantMapper, LocalGrantTable};
use crate::platform::{Platform, once};
use crate::{DomId, Error, Result};
use std::path::PathBuf;
use std::sync::OnceLock;
use xenio_xenstore::Client;

/// A domain of the local platform (see `docs/local-platform.md`).
#[derive(Debug)]
pub struct LocalPlatform {
    dom: LocalDomain,
    store: Client,
    events: LocalEventChannels,
    grants: OnceLock<LocalGrantTable>,
    mapper: LocalGrantMapper,
}

impl LocalPlatform {
    /// Act as `domid` under `run_dir`, talking to the store daemon there.
    pub fn connect(run_dir: impl Into<PathBuf>, domid: DomId) -> Result<Self> {
        let dom = LocalDomain::new(run_dir, domid)?;
        let socket = dom.store_socket();
        let store = Client::connect(&socket).map_err(|e| {
            Error::Unavailable(format!(
                "cannot reach the local store at {} ({e}); start it with `xenio store --run-dir {}`{}",
                socket.display(),
                dom.run_dir().display(),
                if domid == DomId::DOM0 { String::new() } else { format!(" --domains {}", domid.0) }
            ))
        })?;
        Ok(Self::with_store(dom, store))
    }

    pub(crate) fn with_store(dom: LocalDomain, store: Client) -> Self {
        LocalPlatform {
            events: LocalEventChannels::new(&dom),
            mapper: LocalGrantMapper::new(&dom),
            grants: OnceLock::new(),
            store,
            dom,
        }
    }

    /// The domain's files.
    pub fn domain(&self) -> &LocalDomain {
        &self.dom
    }
}

impl Platform for LocalPlatform {
    type Store = Client;
    type Events = LocalEventChannels;
    type Grants = LocalGrantTable;
    type Mapper = LocalGrantMapper;
    fn domid(&self) -> DomId {
        self.dom.domid()
    }
    fn store(&self) -> &Client {
        &self.store
    }
    fn events(&self) -> &LocalEventChannels {
        &self.events
    }
    fn grants(&self) -> Result<&LocalGrantTable> {
        once(&self.grants, || LocalGrantTable::new(&self.dom))
    }
    fn mapper(&self) -> Result<&LocalGrantMapper> {
        Ok(&self.mapper)
    }
}
