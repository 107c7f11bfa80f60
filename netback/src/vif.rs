//! [`Vif`]: serving one virtual interface, with defaults for every knob: the
//! platform and the device, the [`BackendConfig`], a stop flag and counters
//! (made for you, or yours), and, when asked, the device's store directories
//! created before and removed after, as a toolstack would.

use crate::backend::{BackendConfig, Outcome, serve};
use crate::error::{Error, Result};
use crate::frames::Network;
use crate::queue::{Counters, QueueConfig};
use crate::report::{FrameErrorHook, FrameFailure};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;
use xenio_xen_sys::DomId;
use xenio_xenbus::handshake::keys::netif;
use xenio_xenbus::handshake::{DeviceKind, DevicePaths, create_device_with, destroy_device};
use xenio_xenbus::platform::{
    LocalPlatform, Platform, PlatformChoice, PlatformKind, STOP_SIGNALS, XenPlatform, resolve,
    stop_on_signals,
};

/// One vif to serve: `Vif::new()`, the device (frontend domain, interface
/// number: [`Vif::frontend`], [`Vif::devid`], or the command line's with
/// [`Vif::args`]), knobs, then [`Vif::serve`] (the platform chosen by kind, as
/// a command line does) or [`Vif::serve_on`] (a platform the caller made),
/// with a [`Network`].
///
/// The [stop flag](Vif::stopper) and [counters](Vif::counters) exist from
/// [`Vif::new`] on. Stopping (the flag, or SIGTERM/SIGINT with
/// [`Vif::handle_signals`]) closes the device cleanly: Closing (`online` 0),
/// up to [`BackendConfig::close_timeout`] for the frontend, Closed, and the
/// device's directories removed if this vif [created](Vif::create_device)
/// them: the frontend sees the device go (xenio's netfront's next call fails
/// with `Error::Backend`, Linux's detaches the interface), not a timeout.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use xenio_netback::{MemNetwork, Outcome, Vif};
/// use xenio_netfront::{NetFront, Options};
/// use xenio_xenbus::platform::{InProcess, Platform};
/// use xenio_xenbus::{DomId, Store, Tx};
///
/// let world = InProcess::new()?;
/// let dom0 = world.domain(DomId(0))?;
/// // Serve interface 0 of domain 1, creating its store directories (and
/// // removing them when done).
/// let vif = Vif::new()
///     .frontend(DomId(1))
///     .create_device([0x00, 0x16, 0x3e, 0x12, 0x34, 0x56])
///     .once(true);
/// let network = MemNetwork::default();
/// let frontend_dir = vif.paths(DomId(0))?.frontend;
/// std::thread::scope(|s| -> Result<(), Box<dyn std::error::Error>> {
///     let backend = s.spawn(|| vif.serve_on(&dom0, &network));
///     let guest = Arc::new(world.domain(DomId(1))?);
///     // The frontend waits for the device to be there.
///     let mut nic = loop {
///         match NetFront::connect(guest.clone(), &frontend_dir, Options::default()) {
///             Ok(n) => break n,
///             Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
///         }
///     };
///     assert_eq!(nic.info().mac, [0x00, 0x16, 0x3e, 0x12, 0x34, 0x56]);
///     assert!(nic.send(&[0xff; 60])?);
///     nic.close()?;
///     assert_eq!(backend.join().unwrap()?, Outcome::Closed);
///     Ok(())
/// })?;
/// // The device's directories are gone.
/// assert!(dom0.store().read_opt(Tx::NONE, &frontend_dir)?.is_none());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Vif {
    platform: PlatformChoice,
    run_dir: Option<PathBuf>,
    backend: DomId,
    frontend: DomId,
    devid: u32,
    backend_type: String,
    backend_dir: Option<String>,
    config: BackendConfig,
    device: Option<Vec<(String, String)>>,
    signals: bool,
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
}

impl Default for Vif {
    fn default() -> Self {
        Vif::new()
    }
}

impl Vif {
    /// Interface 0 of domain 1, served from this platform's domain
    /// (`/local/domain/<be>/backend/vif/1/0`), platform `auto` (Xen where
    /// `/dev/xen` is, else local in
    /// [`default_run_dir`](xenio_xenbus::local::default_run_dir)), with
    /// [`BackendConfig::default`], a fresh stop flag and fresh counters,
    /// directories not created, signals not handled.
    pub fn new() -> Self {
        Vif {
            platform: PlatformChoice::Auto,
            run_dir: None,
            backend: DomId(0),
            frontend: DomId(1),
            devid: 0,
            backend_type: DeviceKind::Vif.as_str().into(),
            backend_dir: None,
            config: BackendConfig::default(),
            device: None,
            signals: false,
            stop: Arc::new(AtomicBool::new(false)),
            counters: Arc::new(Counters::default()),
        }
    }

    /// Which platform [`Vif::serve`] connects to.
    pub fn platform(mut self, choice: PlatformChoice) -> Self {
        self.platform = choice;
        self
    }

    /// The local platform's run directory (for [`Vif::serve`]).
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

    /// The interface's number in the frontend's domain (default 0).
    pub fn devid(mut self, devid: u32) -> Self {
        self.devid = devid;
        self
    }

    /// The backend directory's class:
    /// `/local/domain/<be>/backend/<TYPE>/<fe>/<devid>` (default `vif`; in a
    /// dom0 where the kernel's xen-netback claims `vif`, use another).
    pub fn backend_type(mut self, backend_type: impl Into<String>) -> Self {
        self.backend_type = backend_type.into();
        self
    }

    /// Serve the device whose backend directory this is (one the toolstack
    /// made), instead of the one [`Vif::frontend`] and [`Vif::devid`] name.
    pub fn backend_dir(mut self, dir: impl Into<String>) -> Self {
        self.backend_dir = Some(dir.into());
        self
    }

    /// Every knob at once.
    pub fn config(mut self, config: BackendConfig) -> Self {
        self.config = config;
        self
    }

    /// `multi-queue-max-queues` (default 1).
    pub fn max_queues(mut self, n: u32) -> Self {
        self.config.max_queues = n.max(1);
        self
    }

    /// Offer `feature-sg` (default on).
    pub fn sg(mut self, on: bool) -> Self {
        self.config.sg = on;
        self
    }

    /// The MTU (default 1500; the device's `mtu` key wins when there is one).
    pub fn mtu(mut self, mtu: u32) -> Self {
        self.config.mtu = mtu;
        self
    }

    /// Per-queue knobs.
    pub fn queue(mut self, q: QueueConfig) -> Self {
        self.config.queue = q;
        self
    }

    /// Return after the first connection ends (default: serve the frontend
    /// again when it comes back).
    pub fn once(mut self, once: bool) -> Self {
        self.config.once = once;
        self
    }

    /// How long stopping waits for the frontend to close (default 5 s).
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.config.close_timeout = timeout;
        self
    }

    /// Call `f` for every failed [`Frames`](crate::Frames) call (besides
    /// [`Counters::tx_network_errors`] / [`Counters::rx_network_errors`] and
    /// `tracing`), on the queue thread that saw it.
    pub fn on_network_error(mut self, f: impl Fn(&FrameFailure) + Send + Sync + 'static) -> Self {
        self.config.queue.on_network_error = Some(FrameErrorHook::new(f));
        self
    }

    /// Create the device's two store directories before serving, as a
    /// toolstack does (`mac`, `mtu`, `type`, `handle` and the keys of
    /// [`Vif::device_key`]), and remove them when serving returns.
    pub fn create_device(mut self, mac: [u8; 6]) -> Self {
        let mac = mac
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":");
        let mut keys = self.device.take().unwrap_or_default();
        keys.push((netif::MAC.into(), mac));
        self.device = Some(keys);
        self
    }

    /// One more key for the backend directory [`Vif::create_device`] writes
    /// (`bridge`, say); it implies creating (and removing) the directories.
    pub fn device_key(mut self, key: &str, value: impl Into<String>) -> Self {
        self.device
            .get_or_insert_with(Vec::new)
            .push((key.into(), value.into()));
        self
    }

    /// Use this stop flag (for example [`stop_on_signals`](crate::stop_on_signals)'s).
    pub fn stop_flag(mut self, stop: Arc<AtomicBool>) -> Self {
        self.stop = stop;
        self
    }

    /// Stop cleanly on SIGTERM and SIGINT (a second one exits the process at
    /// once, status 1). The handlers are installed when serving starts, from
    /// any thread; they only set the [stop flag](Vif::stopper).
    pub fn handle_signals(mut self, yes: bool) -> Self {
        self.signals = yes;
        self
    }

    /// Apply the standard command-line options of a network backend
    /// program, and hand back the others (`--name value` pairs) for the
    /// program's own use:
    ///
    /// | option | sets |
    /// | --- | --- |
    /// | `--platform local\|xen\|auto` | [`platform`](Vif::platform) |
    /// | `--run-dir DIR` | [`run_dir`](Vif::run_dir) |
    /// | `--backend DOMID` | [`backend_domid`](Vif::backend_domid) |
    /// | `--frontend DOMID` | [`frontend`](Vif::frontend) |
    /// | `--devid N` | [`devid`](Vif::devid) |
    /// | `--backend-type TYPE` | [`backend_type`](Vif::backend_type) |
    /// | `--backend-dir PATH` | [`backend_dir`](Vif::backend_dir) |
    ///
    /// ```
    /// use xenio_netback::Vif;
    /// use xenio_xenbus::DomId;
    ///
    /// let args = ["--run-dir", "/dev/shm/xenio", "--frontend", "3", "--devid", "1", "--ip", "10.0.0.9"];
    /// let (vif, own) = Vif::new().args(args.map(String::from))?;
    /// assert_eq!(vif.paths(DomId(0))?.frontend, "/local/domain/3/device/vif/1");
    /// assert_eq!(own["--ip"], "10.0.0.9");
    /// # Ok::<(), xenio_netback::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an argument that is not `--name value`, or a
    /// value a standard option cannot take.
    pub fn args(
        mut self,
        args: impl IntoIterator<Item = String>,
    ) -> Result<(Self, BTreeMap<String, String>)> {
        let mut own = BTreeMap::new();
        let mut args = args.into_iter();
        while let Some(name) = args.next() {
            let bad = |why: String| Error::Config(format!("{name}: {why}"));
            if !name.starts_with("--") {
                return Err(bad("expected an option (--name value)".into()));
            }
            let value = args.next().ok_or_else(|| bad("needs a value".into()))?;
            let number = |v: &str| {
                v.parse::<u32>()
                    .map_err(|_| bad(format!("{v:?} is not a number")))
            };
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
                "--devid" => self.devid(number(&value)?),
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

    /// The stop flag: set it and serving closes the device cleanly
    /// (Closing, up to [`BackendConfig::close_timeout`] for the frontend,
    /// Closed, the directories removed if it created them) and returns
    /// [`Outcome::Shutdown`].
    pub fn stopper(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    /// The counters, readable while it serves.
    pub fn counters(&self) -> Arc<Counters> {
        self.counters.clone()
    }

    /// The device's store paths when served by domain `backend`.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a backend type that cannot be a path component.
    pub fn paths(&self, backend: DomId) -> Result<DevicePaths> {
        DevicePaths::new(backend, self.frontend, DeviceKind::Vif, self.devid)
            .with_backend_type(&self.backend_type)
            .map_err(|e| Error::Config(format!("backend type: {e}")))
    }

    /// Connect to the [platform](Vif::platform) and serve `network` as
    /// [`Vif::serve_on`] does.
    ///
    /// # Errors
    ///
    /// [`Error::Platform`] when the platform cannot be reached (the local
    /// store is not running, `/dev/xen` is missing), and those of
    /// [`Vif::serve_on`].
    pub fn serve<N: Network>(&self, network: &N) -> Result<Outcome> {
        match resolve(self.platform)? {
            PlatformKind::Local => {
                let dir = self
                    .run_dir
                    .clone()
                    .unwrap_or_else(xenio_xenbus::local::default_run_dir);
                self.serve_on(&LocalPlatform::connect(dir, self.backend)?, network)
            }
            PlatformKind::Xen => self.serve_on(&XenPlatform::open()?, network),
        }
    }

    /// Serve the vif on `network` until the frontend goes away for good (or,
    /// with [`Vif::once`], closes), the device is removed, or the stop flag is
    /// set; see [`serve`](crate::serve).
    ///
    /// # Errors
    ///
    /// As [`serve`](crate::serve); [`Error::Config`] for a bad backend type;
    /// and [`Error::Platform`] when the directories cannot be created or
    /// removed (they are removed whatever serving returned).
    pub fn serve_on<P: Platform, N: Network>(&self, platform: &P, network: &N) -> Result<Outcome> {
        let paths = self.paths(platform.domid())?;
        let dir = self.backend_dir.clone().unwrap_or(paths.backend.clone());
        if self.signals {
            stop_on_signals(&self.stop, &STOP_SIGNALS).map_err(|e| Error::Config(e.to_string()))?;
        }
        let store = platform.store();
        let create = self.device.as_ref().filter(|_| self.backend_dir.is_none());
        if let Some(extra) = create {
            let mtu = self.config.mtu.to_string();
            let handle = self.devid.to_string();
            let mut backend: Vec<(&str, String)> = vec![
                (netif::MTU, mtu.clone()),
                (netif::TYPE, "vif".into()),
                (netif::HANDLE, handle.clone()),
            ];
            let mut frontend: Vec<(&str, String)> =
                vec![(netif::MTU, mtu), (netif::HANDLE, handle)];
            for (k, v) in extra {
                backend.push((k, v.clone()));
                if k == netif::MAC {
                    frontend.push((netif::MAC, v.clone()));
                }
            }
            create_device_with(store, &paths, &backend, &frontend)?;
        }
        let r = serve(
            platform,
            &dir,
            network,
            &self.config,
            &self.counters,
            &self.stop,
        );
        if create.is_some() {
            let removed = destroy_device(store, &paths);
            // Serving's own error says more, if there was one.
            let r = r?;
            removed?;
            return Ok(r);
        }
        r
    }
}
