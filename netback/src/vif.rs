//! [`Vif`]: serving one virtual interface, with defaults for every knob: the
//! platform and the device, the [`BackendConfig`], a stop flag and counters
//! (made for you, or yours), and, when asked, the device's store directories
//! created before and removed after, as a toolstack would.

use crate::backend::{BackendConfig, Outcome, serve};
use crate::error::Result;
use crate::frames::Network;
use crate::queue::{Counters, QueueConfig};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use xenio_xen_sys::DomId;
use xenio_xenbus::handshake::keys::netif;
use xenio_xenbus::handshake::{DeviceKind, DevicePaths, create_device_with, destroy_device};
use xenio_xenbus::platform::Platform;

/// One vif to serve: `Vif::new(&platform, frontend, devid)`, knobs, then
/// [`Vif::serve`] with a [`Network`].
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
/// let vif = Vif::new(&dom0, DomId(1), 0)
///     .create_device([0x00, 0x16, 0x3e, 0x12, 0x34, 0x56])
///     .once(true);
/// let network = MemNetwork::default();
/// let frontend_dir = vif.paths().frontend.clone();
/// std::thread::scope(|s| -> Result<(), Box<dyn std::error::Error>> {
///     let backend = s.spawn(|| vif.serve(&network));
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
pub struct Vif<'p, P: Platform> {
    platform: &'p P,
    paths: DevicePaths,
    devid: u32,
    config: BackendConfig,
    device: Option<Vec<(String, String)>>,
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
}

impl<'p, P: Platform> Vif<'p, P> {
    /// Interface `devid` of domain `frontend`, served from this platform's
    /// domain (`/local/domain/<be>/backend/vif/<frontend>/<devid>`), with
    /// [`BackendConfig::default`], a fresh stop flag and fresh counters.
    pub fn new(platform: &'p P, frontend: DomId, devid: u32) -> Self {
        Vif {
            paths: DevicePaths::new(platform.domid(), frontend, DeviceKind::Vif, devid),
            platform,
            devid,
            config: BackendConfig::default(),
            device: None,
            stop: Arc::new(AtomicBool::new(false)),
            counters: Arc::new(Counters::default()),
        }
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

    /// Create the device's two store directories before serving, as a
    /// toolstack does (`mac`, `mtu`, `type`, `handle` and the keys of
    /// [`Vif::device_key`]), and remove them when [`Vif::serve`] returns.
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

    /// The stop flag: set it and [`Vif::serve`] closes the device cleanly
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

    /// The device's store paths.
    pub fn paths(&self) -> &DevicePaths {
        &self.paths
    }

    /// Serve the vif on `network` until the frontend goes away for good (or,
    /// with [`Vif::once`], closes), the device is removed, or the stop flag is
    /// set; see [`serve`](crate::serve).
    ///
    /// # Errors
    ///
    /// As [`serve`](crate::serve); and [`Error::Platform`](crate::Error::Platform)
    /// when the directories cannot be created or removed.
    pub fn serve<N: Network>(&self, network: &N) -> Result<Outcome> {
        let store = self.platform.store();
        if let Some(extra) = &self.device {
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
            create_device_with(store, &self.paths, &backend, &frontend)?;
        }
        let r = serve(
            self.platform,
            &self.paths.backend,
            network,
            &self.config,
            &self.counters,
            &self.stop,
        );
        if self.device.is_some() {
            destroy_device(store, &self.paths)?;
        }
        r
    }
}
