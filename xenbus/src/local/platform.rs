//! [`LocalPlatform`]: one domain of the local platform, as a driver sees it.

use super::domain::LocalDomain;
use super::evtchn::LocalEventChannels;
use super::grant::{LocalGrantMapper, LocalGrantTable};
use crate::error::{Error, Result};
use crate::platform::seam::{Platform, once};
use std::path::PathBuf;
use std::sync::OnceLock;
use xenio_xen_sys::DomId;
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
    /// Act as `domid` under `run_dir`, talking to the store daemon there
    /// (`xenio store --run-dir RUN`, or [`Daemon`](xenio_xenstore) in a program).
    /// Creates the domain's directories under `RUN/domains/` if needed; the grant
    /// table is opened on first use.
    ///
    /// # Errors
    ///
    /// [`Error::BadValue`] for a domain id Xen would not give a domain (DOMID_SELF
    /// and above); [`Error::Io`] if the domain's directories cannot be made;
    /// [`Error::Unavailable`], naming the socket and the command that starts the
    /// store, if no store answers at `RUN/xenstored/socket` (dom0) or
    /// `RUN/xenstored/domain/<domid>` (a guest the store was not started for).
    ///
    /// # Examples
    ///
    /// ```
    /// use xenio_xenbus::{DomId, LocalPlatform, Platform, Store, Tx};
    /// use xenio_xenstore::daemon::{Daemon, DaemonConfig};
    ///
    /// let run = tempfile::tempdir()?;
    /// // What `xenio store --run-dir RUN --domains 1` runs.
    /// let _store = Daemon::start(DaemonConfig {
    ///     domains: vec![DomId(1)],
    ///     ..DaemonConfig::new(run.path())
    /// })?;
    /// let dom0 = LocalPlatform::connect(run.path(), DomId::DOM0)?;
    /// let guest = LocalPlatform::connect(run.path(), DomId(1))?;
    /// // A guest's relative paths are below its own /local/domain/1.
    /// guest.store().write(Tx::NONE, "data/hello", b"world")?;
    /// assert_eq!(dom0.store().read_string(Tx::NONE, "/local/domain/1/data/hello")?, "world");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
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
