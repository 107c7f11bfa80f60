//! One virtual interface: the backend side of the handshake, a thread per
//! queue, teardown and reconnection, over any [`Platform`] and any [`Network`].

use crate::error::{Error, Result};
use crate::frames::Network;
use crate::packet::Offloads;
use crate::queue::{Counters, QueueConfig, QueueRings, QueueWorker};
use crate::tx::{ETH_HLEN, TxLimits};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use xenio_ring::BackRing;
use xenio_xen_sys::xenbus::XenbusState;
use xenio_xen_sys::{GrantRef, Port};
use xenio_xenbus::handshake::keys::{self, netif};
use xenio_xenbus::handshake::{
    Endpoint, Reopen, device_gone, device_offline, frontend_ready, peer_leaving,
};
use xenio_xenbus::platform::Platform;
use xenio_xenbus::{EventChannels, GrantMapper, Store};

const EINVAL: i32 = 22;
const EIO: i32 = 5;

/// What the backend offers.
#[derive(Clone, Debug)]
pub struct BackendConfig {
    /// `multi-queue-max-queues`.
    pub max_queues: u32,
    /// Offer `feature-sg` (packets over several slots, both directions).
    pub sg: bool,
    /// Offer `feature-split-event-channels`.
    pub split_event_channels: bool,
    /// MTU when the backend directory has no `mtu` key.
    pub mtu: u32,
    /// Per-queue knobs.
    pub queue: QueueConfig,
    /// How long each handshake step may wait for the frontend.
    pub timeout: Duration,
    /// Return after the first connection ends.
    pub once: bool,
    /// On `shutdown`, how long to wait for a connected frontend to close
    /// (after the backend's Closing) before saying Closed anyway.
    pub close_timeout: Duration,
}

impl Default for BackendConfig {
    fn default() -> Self {
        BackendConfig {
            max_queues: 1,
            sg: true,
            split_event_channels: true,
            mtu: 1500,
            queue: QueueConfig::default(),
            timeout: Duration::from_secs(30),
            once: false,
            close_timeout: Duration::from_secs(5),
        }
    }
}

/// Why [`serve`] returned.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The frontend closed the device (and, with `once`, that was it).
    Closed,
    /// The device's directories were removed.
    Removed,
    /// `shutdown` was set: the backend said Closing (and `online` 0: the
    /// device is going away, not to be reconnected), waited up to
    /// [`BackendConfig::close_timeout`] for a connected frontend to close, and
    /// said Closed.
    Shutdown,
}

/// What the frontend published for one queue.
#[derive(Debug)]
struct QueueKeys {
    tx_ref: GrantRef,
    rx_ref: GrantRef,
    tx_port: Port,
    rx_port: Option<Port>,
}

/// Serve the interface behind `backend_dir`
/// (`/local/domain/<be>/backend/vif/<fe>/<devid>`) until the frontend goes away
/// for good, the device is removed, or `shutdown`. A frontend that resets to
/// `Initialising` is served again; one that breaks its rings is disconnected.
/// Each queue is served by a [`QueueWorker`] on its own thread, with its own
/// [`Network::queue`]; `counters` are shared by all of them.
///
/// # Errors
///
/// [`Error::Platform`] when the device's directory has no usable
/// `frontend`/`frontend-id`, or the store fails or refuses a write. A
/// frontend that publishes bad keys, whose grants cannot be mapped, or that
/// breaks the protocol is not an error here, nor is a network queue that
/// cannot be opened or an unusable `mtu` in the backend directory: the
/// frontend is disconnected (logged) and served again if it comes back.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::AtomicBool;
/// use xenio_netback::{BackendConfig, Counters, MemNetwork, Outcome, serve};
/// use xenio_netfront::{NetFront, Options};
/// use xenio_xenbus::DomId;
/// use xenio_xenbus::handshake::{DeviceKind, DevicePaths, create_device};
/// use xenio_xenbus::platform::{InProcess, Platform};
///
/// // Two domains as threads of this process; domain 0 is the backend.
/// let world = InProcess::new()?;
/// let dom0 = world.domain(DomId(0))?;
/// // The toolstack's part: the device's two store directories.
/// let paths = DevicePaths::new(DomId(0), DomId(1), DeviceKind::Vif, 0);
/// create_device(dom0.store(), &paths, &[])?;
/// // Frames in memory (a `TapNetwork` puts them on a Linux TAP device).
/// let network = MemNetwork::default();
/// let config = BackendConfig { once: true, ..Default::default() };
/// let (counters, shutdown) = (Counters::default(), AtomicBool::new(false));
/// std::thread::scope(|s| -> Result<(), Box<dyn std::error::Error>> {
///     let backend = s.spawn(|| serve(&dom0, &paths.backend, &network, &config, &counters, &shutdown));
///     // Domain 1's frontend: xenio's netfront here, Linux's xen-netfront on Xen.
///     let guest = Arc::new(world.domain(DomId(1))?);
///     let mut nic = NetFront::connect(guest, &paths.frontend, Options::default())?;
///     assert!(nic.send(&[0xff; 60])?);
///     while network.frames.sent.lock().unwrap().is_empty() {
///         std::thread::sleep(std::time::Duration::from_millis(1));
///     }
///     nic.close()?;
///     assert_eq!(backend.join().unwrap()?, Outcome::Closed);
///     Ok(())
/// })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn serve<P: Platform, N: Network>(
    platform: &P,
    backend_dir: &str,
    network: &N,
    config: &BackendConfig,
    counters: &Counters,
    shutdown: &AtomicBool,
) -> Result<Outcome> {
    let store = platform.store();
    let mut ep = Endpoint::backend(store, backend_dir)?;
    tracing::info!("{backend_dir}: serving {}", network.describe());
    // GSO from the frontend only of the kinds the network takes (and only
    // over several slots); checksums it leaves blank are finished here when
    // the network cannot take them.
    let takes = network.offloads().normalized();
    loop {
        ep.switch(
            XenbusState::InitWait,
            &[
                (netif::FEATURE_RX_COPY, keys::flag(true)),
                (netif::FEATURE_RX_FLIP, keys::flag(false)),
                (netif::FEATURE_SG, keys::flag(config.sg)),
                (
                    netif::FEATURE_SPLIT_EVENT_CHANNELS,
                    keys::flag(config.split_event_channels),
                ),
                (
                    netif::MULTI_QUEUE_MAX_QUEUES,
                    config.max_queues.max(1).to_string(),
                ),
                // The backend completes checksums the frontend leaves blank
                // (or leaves them to a network that takes them).
                (netif::FEATURE_NO_CSUM_OFFLOAD, keys::flag(false)),
                (netif::FEATURE_IPV6_CSUM_OFFLOAD, keys::flag(true)),
                (
                    netif::FEATURE_GSO_TCPV4,
                    keys::flag(config.sg && takes.tso4),
                ),
                (
                    netif::FEATURE_GSO_TCPV6,
                    keys::flag(config.sg && takes.tso6),
                ),
            ],
        )?;
        let s = loop {
            if shutdown.load(Ordering::Relaxed) {
                close_for_good(&mut ep, config)?;
                return Ok(Outcome::Shutdown);
            }
            match ep.wait_peer(Duration::from_millis(500), |s| {
                frontend_ready(s) || s == XenbusState::Closing || s == XenbusState::Closed
            }) {
                Ok(s) => break s,
                Err(xenio_xenbus::Error::Timeout(..)) => {
                    if device_gone(store, backend_dir)? {
                        return Ok(Outcome::Removed);
                    }
                    // Detached before a frontend came (`online = 0`, and the
                    // toolstack waiting for `Closed`).
                    if device_offline(store, backend_dir)? {
                        ep.switch_unless_gone(XenbusState::Closed)?;
                        return Ok(Outcome::Closed);
                    }
                }
                Err(e) => return Err(e.into()),
            }
        };
        if frontend_ready(s) {
            if let Err(e) = connect(platform, &mut ep, network, config, counters, shutdown) {
                tracing::warn!("{backend_dir}: disconnecting: {e}");
                // The reason where toolstacks look (Linux: xenbus_dev_fatal).
                let errno = match e {
                    Error::Network(_) | Error::Host(_) | Error::Config(_) => EIO,
                    _ => EINVAL,
                };
                match ep.fatal(errno, &e.to_string()) {
                    Ok(()) => {}
                    Err(e) if e.is_gone() => return Ok(Outcome::Removed),
                    Err(e) => return Err(e.into()),
                }
            }
        }
        if shutdown.load(Ordering::Relaxed) {
            close_for_good(&mut ep, config)?;
            return Ok(Outcome::Shutdown);
        }
        if device_gone(store, backend_dir)? {
            return Ok(Outcome::Removed);
        }
        let now = ep.peer_state()?;
        if now == XenbusState::Unknown {
            // The frontend's directory is gone (`xl destroy` removes it
            // first, then waits for the backend's Closed): say Closed.
            ep.switch_unless_gone(XenbusState::Closed)?;
            return Ok(Outcome::Removed);
        }
        // The toolstack detaching (`online = 0` with `state = 5`, as `xl
        // network-detach` and `xl destroy` write them): close, and do not
        // offer the device again, as Linux's netback unregisters an offline
        // device once it is Closed.
        let detaching = device_offline(store, backend_dir)?;
        if now != XenbusState::Initialising || detaching {
            if !ep.switch_unless_gone(XenbusState::Closing)? {
                return Ok(Outcome::Removed);
            }
            let wait = if detaching {
                config.close_timeout
            } else {
                config.timeout
            };
            let detaching = wait_frontend_closed(&mut ep, wait, shutdown)? || detaching;
            if !ep.switch_unless_gone(XenbusState::Closed)? {
                return Ok(Outcome::Removed);
            }
            if shutdown.load(Ordering::Relaxed) {
                return Ok(Outcome::Shutdown);
            }
            if config.once || detaching {
                return Ok(Outcome::Closed);
            }
            match ep.wait_reopen(|| shutdown.load(Ordering::Relaxed))? {
                Reopen::Reopen => {}
                Reopen::Removed => return Ok(Outcome::Removed),
                Reopen::Detached => return Ok(Outcome::Closed),
                Reopen::Stopped => {
                    close_for_good(&mut ep, config)?;
                    return Ok(Outcome::Shutdown);
                }
            }
        }
        tracing::info!("{backend_dir}: frontend reinitialising, serving it again");
    }
}

/// The backend goes away: Closing with `online` 0 (a frontend must not
/// reconnect), a frontend that is connected gets up to `close_timeout` to
/// close, then Closed. The frontend sees a clean close, not a timeout.
fn close_for_good<S: Store>(ep: &mut Endpoint<'_, S>, config: &BackendConfig) -> Result<()> {
    match ep.switch(XenbusState::Closing, &[(keys::ONLINE, keys::flag(false))]) {
        Ok(()) => {}
        // Removed by the toolstack meanwhile: nothing to say.
        Err(e) if e.is_gone() => return Ok(()),
        Err(e) => return Err(e.into()),
    }
    let peer = ep.peer_state()?;
    if matches!(
        peer,
        XenbusState::Connected | XenbusState::Initialised | XenbusState::Closing
    ) {
        let (store, dir) = (ep.store(), ep.dir().to_string());
        if !ep.wait_peer_closed(config.close_timeout, || device_gone(store, &dir))?
            && !device_gone(store, &dir)?
        {
            tracing::info!(
                "{dir}: the frontend did not close within {:?}; closing anyway",
                config.close_timeout
            );
        }
    }
    ep.switch_unless_gone(XenbusState::Closed)?;
    Ok(())
}

/// Wait up to `timeout` for the frontend to close (Closed, gone, or back at
/// Initialising). A toolstack taking the device offline or removing it, or
/// `shutdown`, ends the wait at once: a frontend that does not close must not
/// keep the toolstack's detach (libxl waits 10 s for Closed) waiting.
/// Whether the device is offline now.
fn wait_frontend_closed<S: Store>(
    ep: &mut Endpoint<'_, S>,
    timeout: Duration,
    shutdown: &AtomicBool,
) -> Result<bool> {
    let (store, dir) = (ep.store(), ep.dir().to_string());
    let was_offline = device_offline(store, &dir)?;
    ep.wait_peer_closed(timeout, || {
        Ok(shutdown.load(Ordering::Relaxed)
            || device_gone(store, &dir)?
            || (!was_offline && device_offline(store, &dir)?))
    })?;
    Ok(device_offline(store, &dir)?)
}

fn connect<P: Platform, N: Network>(
    platform: &P,
    ep: &mut Endpoint<'_, P::Store>,
    network: &N,
    config: &BackendConfig,
    counters: &Counters,
    shutdown: &AtomicBool,
) -> Result<()> {
    let frontend = ep.peer_id();
    if ep.peer_parse::<u32>(netif::REQUEST_RX_COPY)?.unwrap_or(0) != 1 {
        return Err(Error::Frontend(
            "request-rx-copy is not 1: this backend only copies into posted buffers".into(),
        ));
    }
    let rx_notify = ep.peer_flag(netif::FEATURE_RX_NOTIFY)?;
    if !rx_notify {
        tracing::warn!(
            "{}: the frontend has no feature-rx-notify: rx buffers are looked for every 100 ms",
            ep.dir()
        );
    }
    let sg = config.sg && ep.peer_flag(netif::FEATURE_SG)?;
    let rx_offloads = frontend_takes(ep, sg)?;
    let nqueues: u32 = ep.peer_parse(netif::MULTI_QUEUE_NUM_QUEUES)?.unwrap_or(1);
    if nqueues == 0 || nqueues > config.max_queues.max(1) {
        return Err(Error::Frontend(format!(
            "multi-queue-num-queues {nqueues} (we offer 1..={})",
            config.max_queues.max(1)
        )));
    }
    let mut queues = Vec::new();
    for q in 0..nqueues {
        let key = |k: &str| keys::queue_key(q, nqueues, k);
        let need = |ep: &Endpoint<'_, P::Store>, k: &str| -> Result<u32> {
            let k = key(k);
            ep.peer_parse(&k)?
                .ok_or_else(|| keys::bad_key(&ep.peer_path(&k), "missing").into())
        };
        let tx_ref = GrantRef(need(ep, netif::TX_RING_REF)?);
        let rx_ref = GrantRef(need(ep, netif::RX_RING_REF)?);
        let split_tx = ep.peer_parse(&key(netif::EVENT_CHANNEL_TX))?;
        let split_rx = ep.peer_parse(&key(netif::EVENT_CHANNEL_RX))?;
        let (tx_port, rx_port) = match (split_tx, split_rx) {
            (Some(t), Some(r)) if config.split_event_channels => (Port(t), Some(Port(r))),
            (Some(_), Some(_)) => {
                return Err(Error::Frontend(
                    "split event channels, which this backend does not offer".into(),
                ));
            }
            (None, None) => (Port(need(ep, netif::EVENT_CHANNEL)?), None),
            _ => {
                return Err(Error::Frontend(format!(
                    "{} and -rx must come together",
                    key(netif::EVENT_CHANNEL_TX)
                )));
            }
        };
        queues.push(QueueKeys {
            tx_ref,
            rx_ref,
            tx_port,
            rx_port,
        });
    }
    // The backend's own key (the toolstack's): a bad one is a configuration error.
    let mtu = match ep.own_key(netif::MTU)? {
        Some(v) => keys::parse_key::<u32>(&ep.own_path(netif::MTU), &v)
            .map_err(|e| Error::Config(e.to_string()))?,
        None => config.mtu,
    };
    let takes = network.offloads().normalized();
    let limits = TxLimits {
        max_frame: mtu as usize + ETH_HLEN + 4,
        sg,
        offloads: if sg {
            takes
        } else {
            Offloads {
                tso4: false,
                tso6: false,
                ..takes
            }
        },
    };
    let mapper = platform.mapper()?;
    let mut rings = Vec::new();
    for k in &queues {
        let tx = BackRing::attach(mapper.map(frontend, &[k.tx_ref])?)?;
        let rx = BackRing::attach(mapper.map(frontend, &[k.rx_ref])?)?;
        let tx_channel = platform.events().bind_interdomain(frontend, k.tx_port)?;
        let rx_channel = match k.rx_port {
            Some(p) => Some(platform.events().bind_interdomain(frontend, p)?),
            None => None,
        };
        rings.push(QueueRings {
            tx,
            rx,
            tx_channel,
            rx_channel,
        });
    }
    let mut frames = Vec::new();
    for q in 0..nqueues {
        frames.push(
            network
                .queue(q, nqueues)
                .map_err(|e| Error::Network(format!("opening queue {q}: {e}")))?,
        );
    }
    network
        .set_rx_offloads(rx_offloads)
        .map_err(|e| Error::Network(format!("setting offloads {rx_offloads:?}: {e}")))?;
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| -> Result<()> {
        let mut handles = Vec::new();
        for (i, (rings, frames)) in rings.into_iter().zip(frames).enumerate() {
            let stop = &stop;
            let qconfig = config.queue.clone();
            handles.push(
                std::thread::Builder::new()
                    .name(format!("netback-q{i}"))
                    .spawn_scoped(scope, move || -> Result<()> {
                        let worker = QueueWorker {
                            rings,
                            mapper,
                            frontend,
                            frames,
                            limits,
                            rx_sg: sg,
                            rx_offloads,
                            config: qconfig,
                            counters,
                            stop,
                        };
                        let r = worker.run();
                        if r.is_err() {
                            stop.store(true, Ordering::Relaxed);
                        }
                        r
                    })
                    .map_err(|e| Error::Network(format!("starting a queue thread: {e}")))?,
            );
        }
        let result = (|| -> Result<()> {
            // libxl writes `hotplug-status` empty; the vif's script writes
            // `connected` once the interface is plugged in (bridged, routed):
            // as Linux's netback does, say Connected only then.
            let stopped = || Ok(stop.load(Ordering::Relaxed) || shutdown.load(Ordering::Relaxed));
            if !ep.wait_hotplug(stopped)? {
                return Ok(());
            }
            ep.switch(XenbusState::Connected, &[])?;
            tracing::info!(
                "{}: connected: {nqueues} queue(s), sg {sg}, split event channels {}, mtu {mtu}, \
                 frontend takes {rx_offloads:?}, network takes {:?}",
                ep.dir(),
                queues[0].rx_port.is_some(),
                limits.offloads
            );
            loop {
                if stop.load(Ordering::Relaxed) || shutdown.load(Ordering::Relaxed) {
                    return Ok(());
                }
                match ep.wait_peer(Duration::from_millis(200), peer_leaving) {
                    Ok(s) => {
                        tracing::info!("{}: frontend went to {s:?}", ep.dir());
                        return Ok(());
                    }
                    // The toolstack detaching: a frontend that does not
                    // follow gets `close_timeout`, not the toolstack's patience.
                    Err(xenio_xenbus::Error::Timeout(..))
                        if device_offline(ep.store(), ep.dir())? =>
                    {
                        tracing::info!("{}: taken offline by the toolstack", ep.dir());
                        return Ok(());
                    }
                    Err(xenio_xenbus::Error::Timeout(..)) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        })();
        stop.store(true, Ordering::Relaxed);
        let mut first_err = result.err();
        // No offload stays set for whoever reads the network next.
        if let Err(e) = network.set_rx_offloads(Offloads::NONE) {
            tracing::warn!("resetting the network's offloads: {e}");
        }
        for h in handles {
            match h.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    first_err.get_or_insert(e);
                }
                Err(_) => {
                    first_err.get_or_insert(Error::Network("a queue thread panicked".into()));
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    })
}

/// What the frontend takes on rx, from its keys (`xen/io/netif.h`):
/// IPv4 checksum offload unless `feature-no-csum-offload` is 1, IPv6 only
/// with `feature-ipv6-csum-offload`, GSO of each kind with `feature-gso-tcpv4`
/// / `-tcpv6`, over several slots (`sg`) and with the checksum offload of its
/// IP version (as Linux's netback derives its vif's features).
fn frontend_takes<S: Store>(ep: &Endpoint<'_, S>, sg: bool) -> Result<Offloads> {
    let csum_ipv4 = !ep.peer_flag(netif::FEATURE_NO_CSUM_OFFLOAD)?;
    let csum_ipv6 = ep.peer_flag(netif::FEATURE_IPV6_CSUM_OFFLOAD)?;
    Ok(Offloads {
        csum_ipv4,
        csum_ipv6,
        tso4: sg && ep.peer_flag(netif::FEATURE_GSO_TCPV4)?,
        tso6: sg && ep.peer_flag(netif::FEATURE_GSO_TCPV6)?,
    }
    .normalized())
}
