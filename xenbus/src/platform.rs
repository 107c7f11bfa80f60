//! Choosing where to run: the local platform or real Xen, at run time.

use crate::{Error, Result};
use std::str::FromStr;

/// Which platform implementation to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlatformKind {
    /// Processes on one host, no Xen (the default).
    Local,
    /// Real Xen: `/dev/xen/*` and xenstored.
    Xen,
}

/// What the user asked for: a platform, or detection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PlatformChoice {
    /// Xen if this host is a Xen domain with the devices, else local.
    #[default]
    Auto,
    /// This platform, or an error naming what is missing.
    Exactly(PlatformKind),
}

impl FromStr for PlatformChoice {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(PlatformChoice::Auto),
            "local" => Ok(PlatformChoice::Exactly(PlatformKind::Local)),
            "xen" => Ok(PlatformChoice::Exactly(PlatformKind::Xen)),
            other => Err(Error::BadValue {
                what: "platform (auto, local or xen)".into(),
                value: other.into(),
            }),
        }
    }
}

/// Resolve a choice on this host.
pub fn resolve(choice: PlatformChoice) -> Result<PlatformKind> {
    match choice {
        PlatformChoice::Exactly(PlatformKind::Local) => Ok(PlatformKind::Local),
        PlatformChoice::Exactly(PlatformKind::Xen) => {
            crate::xen::available().map(|()| PlatformKind::Xen)
        }
        PlatformChoice::Auto => Ok(if crate::xen::available().is_ok() {
            PlatformKind::Xen
        } else {
            PlatformKind::Local
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_choices_and_rejects_others() {
        assert_eq!(
            "auto".parse::<PlatformChoice>().unwrap(),
            PlatformChoice::Auto
        );
        assert_eq!(
            "xen".parse::<PlatformChoice>().unwrap(),
            PlatformChoice::Exactly(PlatformKind::Xen)
        );
        let e = "kvm".parse::<PlatformChoice>().unwrap_err().to_string();
        assert!(e.contains("auto, local or xen") && e.contains("kvm"), "{e}");
    }

    #[test]
    fn this_machine_resolves_auto_to_local_and_refuses_xen() {
        if let Err(why) = crate::xen::available() {
            assert_eq!(resolve(PlatformChoice::Auto).unwrap(), PlatformKind::Local);
            let e = resolve(PlatformChoice::Exactly(PlatformKind::Xen)).unwrap_err();
            assert_eq!(e.to_string(), why.to_string());
        }
    }
}

// ---------------------------------------------------------------- one domain's view

use crate::local::{LocalDomain, LocalEventChannels, LocalGrantMapper, LocalGrantTable};
use crate::store::Client;
use crate::xen::{EvtchnDevice, GntallocDevice, GntdevDevice};
use crate::xenstored::{StoreCore, serve_stream};
use crate::{DomId, EventChannels, GrantMapper, GrantTable, Store, Tx};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

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

fn once<T>(cell: &OnceLock<T>, init: impl FnOnce() -> Result<T>) -> Result<&T> {
    if let Some(v) = cell.get() {
        return Ok(v);
    }
    let v = init()?;
    Ok(cell.get_or_init(|| v))
}

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

    fn with_store(dom: LocalDomain, store: Client) -> Self {
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

/// This domain on real Xen: `/dev/xen/*` and xenstored.
#[derive(Debug)]
pub struct XenPlatform {
    domid: DomId,
    store: Client,
    events: EvtchnDevice,
    grants: OnceLock<GntallocDevice>,
    mapper: OnceLock<GntdevDevice>,
}

impl XenPlatform {
    /// Open the Xen devices and xenstored (socket, else `/dev/xen/xenbus`); our
    /// domain id is the store's `domid` key. Fails naming what is missing.
    pub fn open() -> Result<Self> {
        crate::xen::available()?;
        let store = Client::connect_default()?;
        let id = store.read_string(Tx::NONE, "domid")?;
        let domid = id
            .trim()
            .parse::<u16>()
            .map(DomId)
            .map_err(|_| Error::BadValue {
                what: "domid".into(),
                value: id,
            })?;
        Ok(XenPlatform {
            domid,
            store,
            events: EvtchnDevice::open()?,
            grants: OnceLock::new(),
            mapper: OnceLock::new(),
        })
    }
}

impl Platform for XenPlatform {
    type Store = Client;
    type Events = EvtchnDevice;
    type Grants = GntallocDevice;
    type Mapper = GntdevDevice;
    fn domid(&self) -> DomId {
        self.domid
    }
    fn store(&self) -> &Client {
        &self.store
    }
    fn events(&self) -> &EvtchnDevice {
        &self.events
    }
    fn grants(&self) -> Result<&GntallocDevice> {
        once(&self.grants, GntallocDevice::open)
    }
    fn mapper(&self) -> Result<&GntdevDevice> {
        once(&self.mapper, GntdevDevice::open)
    }
}

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
