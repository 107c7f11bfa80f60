//! [`InProcess`]: several domains as threads of one process, for unit tests,
//! fuzzing and micro-benchmarks (feature `inprocess`).

use crate::error::{Error, Result};
use crate::local::{
    LocalDomain, LocalEventChannels, LocalGrantMapper, LocalGrantTable, LocalPlatform,
};
use crate::platform::seam::Platform;
use std::path::PathBuf;
use std::sync::Arc;
use xenio_xen_sys::DomId;
use xenio_xenstore::Client;
use xenio_xenstore::daemon::{StoreCore, serve_stream};

/// Several domains inside one process (threads), for unit tests and
/// micro-benchmarks: the store is an in-memory [`StoreCore`] reached over socket
/// pairs (no daemon, no socket files), and grants and event channels are the local
/// platform's, in a private directory on tmpfs removed when the last domain goes.
pub struct InProcess {
    core: Arc<StoreCore>,
    dir: Arc<TempRun>,
}

impl std::fmt::Debug for InProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcess")
            .field("dir", &self.dir.0)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct TempRun(PathBuf);

impl Drop for TempRun {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl InProcess {
    /// A fresh, empty world.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if its directory (in `/dev/shm`, else the temporary
    /// directory) cannot be made.
    ///
    /// # Examples
    ///
    /// Two domains as threads: dom0 and a guest, each with its own store
    /// connection, event channels and grants.
    ///
    /// ```
    /// use xenio_xenbus::{Access, DomId, EventChannel, EventChannels, GrantMapper, GrantTable,
    ///                    Granted, InProcess, Platform};
    ///
    /// let world = InProcess::new()?;
    /// let dom0 = world.domain(DomId::DOM0)?;
    /// let guest = world.domain(DomId(1))?;
    ///
    /// // The guest grants a page to dom0 and binds an event channel for it.
    /// let page = guest.grants()?.grant(DomId::DOM0, 1, Access::ReadWrite)?;
    /// page.region().write(0, b"hello")?;
    /// let port = guest.events().alloc_unbound(DomId::DOM0)?;
    ///
    /// // dom0 maps the grant, reads it and kicks the guest.
    /// let mapped = dom0.mapper()?.map(DomId(1), page.refs())?;
    /// let mut buf = [0u8; 5];
    /// mapped.read(0, &mut buf)?;
    /// assert_eq!(&buf, b"hello");
    /// let chan = dom0.events().bind_interdomain(DomId(1), port.port())?;
    /// chan.notify()?;
    /// assert!(port.wait(Some(std::time::Duration::from_secs(5)))?);
    /// # Ok::<(), xenio_xenbus::Error>(())
    /// ```
    pub fn new() -> Result<Self> {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let base = if std::path::Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = base.join(format!("xenio-inproc-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        Ok(InProcess {
            core: StoreCore::new(Default::default()),
            dir: Arc::new(TempRun(dir)),
        })
    }

    /// The in-memory store (to introduce domains, inspect the tree...).
    pub fn core(&self) -> &Arc<StoreCore> {
        &self.core
    }

    /// A view of the world as `domid` (introduced in the store if it is not dom0).
    ///
    /// # Errors
    ///
    /// A store error if the domain cannot be introduced (an id the store refuses);
    /// [`Error::BadValue`] for an id no domain can have; [`Error::Io`] if its
    /// directories cannot be made.
    pub fn domain(&self, domid: DomId) -> Result<InProcDomain> {
        if domid != DomId::DOM0 && !self.core.is_introduced(domid) {
            self.core.introduce(domid, "0", "0")?;
        }
        let (ours, theirs) = std::os::unix::net::UnixStream::pair()
            .map_err(|e| Error::io("creating a store socket pair", e))?;
        serve_stream(&self.core, domid, theirs)?;
        let store = Client::from_stream(ours)?;
        let dom = LocalDomain::new(&self.dir.0, domid)?;
        Ok(InProcDomain {
            local: LocalPlatform::with_store(dom, store),
            _dir: self.dir.clone(),
        })
    }
}

/// One domain of an [`InProcess`] world.
#[derive(Debug)]
pub struct InProcDomain {
    local: LocalPlatform,
    _dir: Arc<TempRun>,
}

impl Platform for InProcDomain {
    type Store = Client;
    type Events = LocalEventChannels;
    type Grants = LocalGrantTable;
    type Mapper = LocalGrantMapper;
    fn domid(&self) -> DomId {
        self.local.domid()
    }
    fn store(&self) -> &Client {
        self.local.store()
    }
    fn events(&self) -> &LocalEventChannels {
        self.local.events()
    }
    fn grants(&self) -> Result<&LocalGrantTable> {
        self.local.grants()
    }
    fn mapper(&self) -> Result<&LocalGrantMapper> {
        self.local.mapper()
    }
}
