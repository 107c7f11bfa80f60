//! [`Server`]: serving one device, as a program does it. The platform (chosen
//! by kind, or given), the device, the knobs with their defaults, the stop flag
//! and counters made for the caller, failed I/O reported, the device's store
//! nodes created and removed when asked, and SIGTERM/SIGINT turned into a
//! clean close.

use crate::backend::{BackendConfig, Outcome, check_cpus, serve};
use crate::config::vdev_to_devid;
use crate::error::{Error, Result};
use crate::queue::Counters;
use crate::reorder::ReorderMode;
use crate::report::{IoErrorHook, IoFailure};
use crate::storage::seam::Storage;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;
use xenio_xen_sys::DomId;
use xenio_xen_sys::xenbus::XenbusState;
use xenio_xenbus::handshake::keys::{self, blkif};
use xenio_xenbus::handshake::{
    DeviceKind, DevicePaths, Endpoint, create_device_with, destroy_device, vbd_frontend_keys,
};
use xenio_xenbus::platform::{
    LocalPlatform, Platform, PlatformChoice, PlatformKind, STOP_SIGNALS, XenPlatform, resolve,
    stop_on_signals,
};
use xenio_xenbus::{Store, Tx};

/// Serve one block device: a builder with defaults for everything, then
/// [`serve`](Self::serve) (the platform chosen by kind, as a command line
/// does) or [`serve_on`](Self::serve_on) (a platform the caller made).
///
/// The [stop flag](Self::stop_flag) and [counters](Self::counters) exist from
/// [`Server::new`] on, so another thread can hold them before serving starts.
/// Stopping (the flag, or SIGTERM/SIGINT with
/// [`handle_signals`](Self::handle_signals)) closes the device cleanly: the
/// backend says `Closing`, waits at most
/// [`close_timeout`](Self::close_timeout) (10 s) for the frontend to close,
/// says `Closed`, and, if this server [created](Self::create_device) the
/// device's store nodes, removes them: a frontend sees the device go away
/// (xenio's blkfront fails its next I/O with `Error::Closed`, Linux's detaches
/// the disk) instead of waiting for a backend that is not coming back.
///
/// ```
/// use std::sync::Arc;
/// use xenio_blkback::{Outcome, Server, storage::{DiskInfo, SyncStorage, Synchronous}};
/// use xenio_blkfront::{BlkFront, Options};
/// use xenio_xenbus::DomId;
/// use xenio_xenbus::platform::{InProcess, Platform};
///
/// /// A disk of zeros that forgets what is written to it.
/// struct Zeros;
/// impl SyncStorage for Zeros {
///     fn info(&self) -> DiskInfo {
///         DiskInfo { sectors: 2048, ..Default::default() }
///     }
///     fn read_at(&self, _offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
///         buf.fill(0);
///         Ok(())
///     }
///     fn write_at(&self, _offset: u64, _data: &[u8]) -> std::io::Result<()> {
///         Ok(())
///     }
/// }
///
/// let world = InProcess::new()?;
/// let dom0 = world.domain(DomId(0))?;
/// let server = Server::new().frontend(DomId(1)).vdev("xvda").create_device(true);
/// let (stop, counters) = (server.stop_flag(), server.counters());
/// std::thread::scope(|s| -> Result<(), Box<dyn std::error::Error>> {
///     let backend = s.spawn(|| server.serve_on(&dom0, &Synchronous::new(Zeros)));
///     // The frontend waits for the device to appear (Options::device_timeout).
///     let guest = Arc::new(world.domain(DomId(1))?);
///     let mut disk = BlkFront::connect(guest, "device/vbd/51712", Options::default())?;
///     let mut sector = [1u8; 512];
///     disk.read_at(0, &mut sector)?;
///     assert_eq!(sector, [0; 512]);
///     stop.store(true, std::sync::atomic::Ordering::Relaxed); // as SIGTERM would
///     assert_eq!(backend.join().unwrap()?, Outcome::Shutdown);
///     // The device is gone: the frontend's next I/O says so at once.
///     assert!(matches!(disk.read_at(0, &mut sector), Err(xenio_blkfront::Error::Closed(_))));
///     Ok(())
/// })?;
/// assert_eq!(counters.requests.load(std::sync::atomic::Ordering::Relaxed), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Server {
    platform: PlatformChoice,
    run_dir: Option<PathBuf>,
    backend: DomId,
    frontend: DomId,
    vdev: String,
    backend_type: String,
    backend_dir: Option<String>,
    create: bool,
    cdrom: bool,
    device_keys: Vec<(&'static str, String)>,
    config: BackendConfig,
    signals: bool,
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
}

impl Default for Server {
    fn default() -> Self {
        Server::new()
    }
}

impl Server {
    /// A server with the defaults: platform `auto` (Xen where `/dev/xen` is,
    /// else local, in [`default_run_dir`](xenio_xenbus::local::default_run_dir)),
    /// device `xvda` of domain 1 (backend class `vbd`), nodes not created,
    /// signals not handled, [`BackendConfig::default`].
    pub fn new() -> Self {
        Server {
            platform: PlatformChoice::Auto,
            run_dir: None,
            backend: DomId(0),
            frontend: DomId(1),
            vdev: "xvda".into(),
            backend_type: DeviceKind::Vbd.as_str().into(),
            backend_dir: None,
            create: false,
            cdrom: false,
            device_keys: Vec::new(),
            config: BackendConfig::default(),
            signals: false,
            stop: Arc::new(AtomicBool::new(false)),
            counters: Arc::new(Counters::default()),
        }
    }

    /// Which platform [`serve`](Self::serve) connects to.
    pub fn platform(mut self, choice: PlatformChoice) -> Self {
        self.platform = choice;
        self
    }

    /// The local platform's run directory (for [`serve`](Self::serve)).
    pub fn run_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.run_dir = Some(dir.into());
        self
    }

    /// This backend's domain on the local platform (default 0; on Xen the
    /// domain is whatever the hypervisor says).
    pub fn backend_domid(mut self, domid: DomId) -> Self {
        self.backend = domid;
        self
    }

    /// The frontend's domain (default 1).
    pub fn frontend(mut self, domid: DomId) -> Self {
        self.frontend = domid;
        self
    }

    /// The virtual device: `xvda`, `hdb`, `sdc1`, or a device number
    /// (`docs/misc/vbd-interface.txt` of Xen; default `xvda`, 51712).
    pub fn vdev(mut self, vdev: impl Into<String>) -> Self {
        self.vdev = vdev.into();
        self
    }

    /// The backend directory's class:
    /// `/local/domain/<be>/backend/<TYPE>/<fe>/<devid>` (default `vbd`; in a
    /// dom0 where the kernel's xen-blkback claims `vbd`, use another, as QEMU
    /// uses `qdisk`).
    pub fn backend_type(mut self, backend_type: impl Into<String>) -> Self {
        self.backend_type = backend_type.into();
        self
    }

    /// Serve the device whose backend directory this is (one the toolstack
    /// made), instead of the one [`frontend`](Self::frontend) and
    /// [`vdev`](Self::vdev) name.
    pub fn backend_dir(mut self, dir: impl Into<String>) -> Self {
        self.backend_dir = Some(dir.into());
        self
    }

    /// Create the device's store nodes first (both directories, as a toolstack
    /// does) and remove them when serving ends: how a backend is attached
    /// without `xl`.
    pub fn create_device(mut self, yes: bool) -> Self {
        self.create = yes;
        self
    }

    /// With [`create_device`](Self::create_device): a CD-ROM (`device-type
    /// cdrom`), not a disk.
    pub fn cdrom(mut self, yes: bool) -> Self {
        self.cdrom = yes;
        self
    }

    /// With [`create_device`](Self::create_device): one more key for the
    /// backend directory (`params`, say: what a toolstack writes there).
    pub fn device_key(mut self, key: &'static str, value: impl Into<String>) -> Self {
        self.device_keys.push((key, value.into()));
        self
    }

    /// Every knob at once.
    pub fn config(mut self, config: BackendConfig) -> Self {
        self.config = config;
        self
    }

    /// The knobs, to change some.
    pub fn config_mut(&mut self) -> &mut BackendConfig {
        &mut self.config
    }

    /// Request reordering (default merge).
    pub fn reorder(mut self, mode: ReorderMode) -> Self {
        self.config.queue.reorder = mode;
        self
    }

    /// Return once the first frontend closes (default: serve it again when it
    /// comes back).
    pub fn once(mut self, yes: bool) -> Self {
        self.config.once = yes;
        self
    }

    /// How long stopping waits for the frontend to close (default 10 s).
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.config.close_timeout = timeout;
        self
    }

    /// Stop cleanly on SIGTERM and SIGINT (a second one exits the process at
    /// once, status 1). Handlers are installed when serving starts; they only
    /// set the [stop flag](Self::stop_flag).
    pub fn handle_signals(mut self, yes: bool) -> Self {
        self.signals = yes;
        self
    }

    /// Call `f` for every storage failure that fails requests (besides
    /// [`Counters::io_errors`] and [`Counters::last_io_error`]), on the queue
    /// thread that saw it.
    pub fn on_io_error(mut self, f: impl Fn(&IoFailure) + Send + Sync + 'static) -> Self {
        self.config.queue.on_io_error = Some(IoErrorHook::new(f));
        self
    }

    /// Apply the standard command-line options of a backend program, and
    /// hand back the others (`--name value` pairs) for the program's own use:
    ///
    /// | option | sets |
    /// | --- | --- |
    /// | `--platform local\|xen\|auto` | [`platform`](Self::platform) |
    /// | `--run-dir DIR` | [`run_dir`](Self::run_dir) |
    /// | `--backend DOMID` | [`backend_domid`](Self::backend_domid) |
    /// | `--frontend DOMID` | [`frontend`](Self::frontend) |
    /// | `--vdev NAME` | [`vdev`](Self::vdev) |
    /// | `--backend-type TYPE` | [`backend_type`](Self::backend_type) |
    /// | `--backend-dir PATH` | [`backend_dir`](Self::backend_dir) |
    ///
    /// ```
    /// use xenio_blkback::Server;
    ///
    /// let args = ["--run-dir", "/dev/shm/xenio", "--frontend", "3", "--size-mib", "16"];
    /// let (server, own) = Server::new().args(args.map(String::from))?;
    /// assert_eq!(server.paths(xenio_xenbus::DomId(0))?.frontend, "/local/domain/3/device/vbd/51712");
    /// assert_eq!(own["--size-mib"], "16");
    /// # Ok::<(), xenio_blkback::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an argument that is not `--name value`, or a
    /// value a standard option cannot take.
    pub fn args(
        mut self,
        args: impl IntoIterator<Item = String>,
    ) -> Result<(Self, std::collections::BTreeMap<String, String>)> {
        let mut own = std::collections::BTreeMap::new();
        let mut args = args.into_iter();
        while let Some(name) = args.next() {
            let bad = |why: String| Error::Config(format!("{name}: {why}"));
            if !name.starts_with("--") {
                return Err(bad("expected an option (--name value)".into()));
            }
            let value = args.next().ok_or_else(|| bad("needs a value".into()))?;
            let domid = |v: &str| {
                v.parse()
                    .map(DomId)
                    .map_err(|_| bad(format!("{v:?} is not a domain id")))
            };
            self = match name.as_str() {
                "--platform" => self.platform(value.parse().map_err(|e| bad(format!("{e}")))?),
                "--run-dir" => self.run_dir(value),
                "--backend" => self.backend_domid(domid(&value)?),
                "--frontend" => self.frontend(domid(&value)?),
                "--vdev" => self.vdev(value),
                "--backend-type" => self.backend_type(value),
                "--backend-dir" => self.backend_dir(value),
                _ => {
                    own.insert(name, value);
                    self
                }
            };
        }
        Ok((self, own))
    }

    /// The flag that stops serving (cleanly) when set.
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    /// The device's counters (requests, errors, I/Os...), live while serving.
    pub fn counters(&self) -> Arc<Counters> {
        self.counters.clone()
    }

    /// The device's store paths when served by domain `backend`.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a vdev that is not a Xen virtual disk name or a
    /// backend type that cannot be a path component.
    pub fn paths(&self, backend: DomId) -> Result<DevicePaths> {
        DevicePaths::new(backend, self.frontend, DeviceKind::Vbd, self.devid()?)
            .with_backend_type(&self.backend_type)
            .map_err(|e| Error::Config(format!("backend type: {e}")))
    }

    fn devid(&self) -> Result<u32> {
        vdev_to_devid(&self.vdev).ok_or_else(|| {
            Error::Config(format!(
                "vdev {:?} is not a Xen virtual disk name (xvdX, hdX, sdX, or a number)",
                self.vdev
            ))
        })
    }

    /// Connect to the [platform](Self::platform) and serve `storage` as
    /// [`serve_on`](Self::serve_on) does.
    ///
    /// # Errors
    ///
    /// [`Error::Platform`] when the platform cannot be reached (the local
    /// store is not running, `/dev/xen` is missing), and those of
    /// [`serve_on`](Self::serve_on).
    pub fn serve<S: Storage>(&self, storage: &S) -> Result<Outcome> {
        match resolve(self.platform)? {
            PlatformKind::Local => {
                let dir = self
                    .run_dir
                    .clone()
                    .unwrap_or_else(xenio_xenbus::local::default_run_dir);
                self.serve_on(&LocalPlatform::connect(dir, self.backend)?, storage)
            }
            PlatformKind::Xen => self.serve_on(&XenPlatform::open()?, storage),
        }
    }

    /// Serve `storage` on `platform` until the frontend closes for good (with
    /// [`once`](Self::once)), the device is removed, or the
    /// [stop flag](Self::stop_flag) is set; then remove the device's nodes if
    /// this server created them.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a bad vdev, backend type or CPU list (before
    /// anything is written); [`Error::Platform`] when the store refuses to
    /// create the device or fails; otherwise those of [`crate::serve`]. The
    /// nodes this server created are removed whatever happened.
    pub fn serve_on<P: Platform, S: Storage>(&self, platform: &P, storage: &S) -> Result<Outcome> {
        check_cpus(&self.config.cpus)?;
        let paths = self.paths(platform.domid())?;
        let dir = self.backend_dir.clone().unwrap_or(paths.backend.clone());
        if self.signals {
            stop_on_signals(&self.stop, &STOP_SIGNALS).map_err(|e| Error::Config(e.to_string()))?;
        }
        if self.create && self.backend_dir.is_none() {
            self.create(platform.store(), &paths, storage)?;
        }
        let served = serve(
            platform,
            &dir,
            storage,
            &self.config,
            &self.counters,
            &self.stop,
        );
        if self.create && self.backend_dir.is_none() {
            if let Err(e) = detach(platform.store(), &paths, self.config.close_timeout) {
                tracing::warn!("removing {} from the store: {e}", paths.backend);
                // Serving's own error says more, if there was one.
                served.as_ref().ok();
                return served.and_then(|_| Err(e.into()));
            }
        }
        served
    }

    fn create<S: Store, T: Storage>(
        &self,
        store: &S,
        paths: &DevicePaths,
        storage: &T,
    ) -> Result<()> {
        let info = storage.info();
        let mut backend_keys: Vec<(&str, String)> = vec![
            (blkif::MODE, if info.readonly { "r" } else { "w" }.into()),
            (blkif::TYPE, "xenio".into()),
            (blkif::DEV, self.vdev.clone()),
            (
                blkif::DEVICE_TYPE,
                if self.cdrom { "cdrom" } else { "disk" }.into(),
            ),
            (blkif::REMOVABLE, keys::flag(false)),
            (blkif::BOOTABLE, keys::flag(true)),
        ];
        backend_keys.extend(self.device_keys.iter().map(|(k, v)| (*k, v.clone())));
        create_device_with(
            store,
            paths,
            &backend_keys,
            &vbd_frontend_keys(self.devid()?, self.cdrom),
        )?;
        tracing::info!("created {} and {}", paths.backend, paths.frontend);
        Ok(())
    }
}

/// Remove a device this server created, as `xl block-detach` does: unless the
/// backend already closed, `Closing`, a bounded wait for the frontend,
/// `Closed`; then both directories go.
fn detach<S: Store>(store: &S, paths: &DevicePaths, timeout: Duration) -> xenio_xenbus::Result<()> {
    let state = format!("{}/{}", paths.backend, keys::STATE);
    let open = store
        .read_opt(Tx::NONE, &state)?
        .is_some_and(|s| s.trim() != XenbusState::Closed.to_string());
    if open {
        let mut ep = Endpoint::backend(store, &paths.backend)?;
        ep.switch(XenbusState::Closing, &[])?;
        if let Err(e) = ep.wait_peer(timeout, |s| {
            matches!(s, XenbusState::Closed | XenbusState::Unknown)
        }) {
            tracing::info!("the frontend did not close ({e}): removing the device anyway");
        }
        ep.switch(XenbusState::Closed, &[])?;
    }
    destroy_device(store, paths)?;
    tracing::info!("removed {} and {}", paths.backend, paths.frontend);
    Ok(())
}
