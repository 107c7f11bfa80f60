//! [`InProcess`]: several domains as threads of one process, for unit tests,
//! fuzzing and micro-benchmarks (feature `inprocess`).

use crate::local::{LocalDomain, LocalEventChannels, LocalGrantMapper, LocalGrantTable};
use crate::platform::{LocalPlatform, Platform};
use crate::{DomId, Error, Result};
use std::path::PathBuf;
use std::sync::Arc;
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
