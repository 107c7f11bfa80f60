//! One virtual disk: the backend side of the handshake, the queues' threads, and
//! teardown and reconnection, over any [`Platform`] and any [`Storage`].

use crate::error::{Error, Result};
use crate::inflight::{self, Inflight};
use crate::queue::{Counters, QueueConfig, QueueWorker};
use crate::request::Limits;
use crate::ring::{BlkRing, Protocol};
use crate::storage::Storage;
use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
use nix::unistd::Pid;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use xenio_xen_sys::blkif::{VDISK_CDROM, VDISK_READONLY, VDISK_REMOVABLE};
use xenio_xen_sys::xenbus::XenbusState;
use xenio_xen_sys::{GrantRef, Port};
use xenio_xenbus::handshake::keys::{self, blkif};
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
    /// `max-ring-page-order` (Linux: 4).
    pub max_ring_page_order: u32,
    /// `multi-queue-max-queues`.
    pub max_queues: u32,
    /// `feature-max-indirect-segments` (0: no indirect requests).
    pub max_indirect_segments: u32,
    /// Offer `feature-persistent`.
    pub persistent: bool,
    /// Per-queue knobs.
    pub queue: QueueConfig,
    /// How long each handshake step may wait for the frontend.
    pub timeout: Duration,
    /// Return after the first connection ends instead of waiting for the
    /// frontend to reconnect.
    pub once: bool,
    /// CPUs for the queue threads: queue `i` runs on `cpus[i % cpus.len()]`.
    /// Empty (the default): wherever the scheduler puts them.
    pub cpus: Vec<usize>,
    /// Offer discard (`feature-discard`) when the storage can discard (the
    /// default). `false` for xl's `no-discard` and libxl's `discard-enable = 0`.
    pub discard: bool,
    /// A CD-ROM (`device-type = cdrom`): `VDISK_CDROM` in `info`, and served
    /// read-only whatever the storage allows.
    pub cdrom: bool,
    /// Removable media (libxl's `removable = 1`): `VDISK_REMOVABLE` in `info`.
    pub removable: bool,
    /// Keep a record of each queue's requests in flight in this directory (a
    /// tmpfs, such as `/run`: one small mapped file per queue,
    /// [`crate::inflight`]), so that a backend started after this one died
    /// (SIGKILL, a crash, an upgrade) resumes the connection in place: it
    /// finds the device `Connected`, maps the same rings, serves again what
    /// was taken and not answered, and the frontend sees nothing but a pause.
    /// Linux's xen-blkfront needs this to survive a backend restart (asked to
    /// reconnect, it drops its disk). `None` (the default): no record; a
    /// restarted backend asks the frontend to reconnect, which xenio's blkfront
    /// does. The files go when the connection ends.
    pub inflight_dir: Option<std::path::PathBuf>,
    /// What `shutdown` does to the device: `true` (the default) says `Closing`
    /// (the frontend lets go of the disk); `false` leaves the store as it is
    /// (still `Connected`) and, with [`inflight_dir`](Self::inflight_dir),
    /// the records too, for a successor to resume (an upgrade).
    pub close_on_shutdown: bool,
    /// On `shutdown`: how long to wait, after saying `Closing`, for the
    /// frontend to close (or go back to `Initialising`) before saying
    /// `Closed` anyway.
    pub close_timeout: Duration,
}

impl Default for BackendConfig {
    fn default() -> Self {
        BackendConfig {
            max_ring_page_order: 4,
            max_queues: std::thread::available_parallelism()
                .map(|n| n.get() as u32)
                .unwrap_or(1),
            max_indirect_segments: 256,
            persistent: true,
            queue: QueueConfig::default(),
            timeout: Duration::from_secs(30),
            once: false,
            cpus: Vec::new(),
            discard: true,
            cdrom: false,
            removable: false,
            inflight_dir: None,
            close_on_shutdown: true,
            close_timeout: Duration::from_secs(10),
        }
    }
}

/// Why [`serve`] returned.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The frontend closed the device (and, unless `once`, did not come back).
    Closed,
    /// The device's directories were removed (the toolstack detached it).
    Removed,
    /// `shutdown` was set: the backend said `Closing`, waited (at most
    /// [`BackendConfig::close_timeout`]) for the frontend to close, and said
    /// `Closed`.
    Shutdown,
}

/// What the frontend published for one queue.
struct QueueKeys {
    refs: Vec<GrantRef>,
    port: Port,
}

/// Serve the disk behind `backend_dir` (`/local/domain/<be>/backend/vbd/<fe>/<devid>`)
/// until the frontend goes away for good, the device is removed, or `shutdown`
/// (then the backend closes cleanly: `Closing`, a bounded wait for the
/// frontend, `Closed`). [`crate::Server`] is the same with the device's store
/// nodes, the counters, the stop flag and signals taken care of.
/// A frontend that resets to `Initialising` is served again; a frontend that
/// breaks its ring is disconnected (never a crash). Each queue is served by a
/// [`QueueWorker`] on its own thread; `counters` are shared by all of them.
///
/// # Errors
///
/// [`Error::Config`] when a CPU of [`BackendConfig::cpus`] cannot be used
/// (checked before anything is offered); [`Error::Platform`] when the
/// device's directory has no usable `frontend`/`frontend-id`, or the store
/// fails or refuses a write. A frontend that publishes bad keys, whose grants
/// cannot be mapped, or that breaks its ring is not an error here: it is
/// disconnected (logged) and served again if it comes back.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::AtomicBool;
/// use xenio_blkback::{BackendConfig, Counters, FileStorage, Outcome, serve};
/// use xenio_blkfront::{BlkFront, Options};
/// use xenio_hostio::disk::Direct;
/// use xenio_xenbus::DomId;
/// use xenio_xenbus::handshake::{DeviceKind, DevicePaths, create_device};
/// use xenio_xenbus::platform::{InProcess, Platform};
///
/// // Two domains as threads of this process; domain 0 is the backend.
/// let world = InProcess::new()?;
/// let dom0 = world.domain(DomId(0))?;
/// // The toolstack's part: the device's two store directories.
/// let paths = DevicePaths::new(DomId(0), DomId(1), DeviceKind::Vbd, 51712);
/// create_device(dom0.store(), &paths, &[])?;
/// // A 4 MiB image file, served through io_uring.
/// let image = tempfile::NamedTempFile::new()?;
/// image.as_file().set_len(4 << 20)?;
/// let storage = FileStorage::open(image.path(), false, Direct::Auto)?;
/// let config = BackendConfig { once: true, ..Default::default() };
/// let (counters, shutdown) = (Counters::default(), AtomicBool::new(false));
/// std::thread::scope(|s| -> Result<(), Box<dyn std::error::Error>> {
///     let backend = s.spawn(|| serve(&dom0, &paths.backend, &storage, &config, &counters, &shutdown));
///     // Domain 1's frontend: xenio's blkfront here, Linux's xen-blkfront on Xen.
///     let guest = Arc::new(world.domain(DomId(1))?);
///     let mut disk = BlkFront::connect(guest, &paths.frontend, Options::default())?;
///     disk.write_at(0, &[0x42; 4096])?;
///     disk.close()?;
///     assert_eq!(backend.join().unwrap()?, Outcome::Closed);
///     Ok(())
/// })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn serve<P: Platform, S: Storage>(
    platform: &P,
    backend_dir: &str,
    storage: &S,
    config: &BackendConfig,
    counters: &Counters,
    shutdown: &AtomicBool,
) -> Result<Outcome> {
    check_cpus(&config.cpus)?;
    let store = platform.store();
    let mut ep = Endpoint::backend(store, backend_dir)?;
    let info = storage.info();
    tracing::info!("{backend_dir}: serving {}", info.description);
    // A backend that died may have left the device Connected, with a record of
    // what was in flight: resume that connection (see `inflight_dir`).
    let mut try_resume = config.inflight_dir.is_some()
        && ep.state()? == XenbusState::Connected
        && frontend_ready(ep.peer_state()?);
    loop {
        let resumed = std::mem::take(&mut try_resume)
            && match connect(platform, &mut ep, storage, config, counters, shutdown, true) {
                Ok(served) => served,
                Err(e) => {
                    tracing::warn!("{backend_dir}: resuming failed, disconnecting: {e}");
                    fatal_unless_gone(&ep, &e)?;
                    true
                }
            };
        let stale = match resumed {
            true => false,
            false => match offer_and_serve(platform, &mut ep, storage, config, counters, shutdown)?
            {
                Offered::Served => false,
                Offered::Stale => true,
                Offered::Ended(outcome) => return Ok(outcome),
            },
        };
        if shutdown.load(Ordering::Relaxed) {
            if config.close_on_shutdown {
                close(&mut ep, config.close_timeout)?;
            }
            return Ok(Outcome::Shutdown);
        }
        if device_gone(store, backend_dir)? {
            return Ok(Outcome::Removed);
        }
        // Teardown: Closing until the frontend is Closed (or gone), then Closed.
        let now = ep.peer_state()?;
        if now == XenbusState::Unknown {
            // The frontend's directory is gone (`xl destroy` removes it first,
            // then waits for the backend's Closed): say Closed.
            ep.switch_unless_gone(XenbusState::Closed)?;
            return Ok(Outcome::Removed);
        }
        // The toolstack detaching (`online = 0`, as `xl block-detach` and `xl
        // destroy` write it): close and do not offer the device again, as
        // Linux's blkback unregisters an offline device once it is Closed.
        let detaching = device_offline(store, backend_dir)?;
        if now != XenbusState::Initialising || detaching {
            ep.switch_unless_gone(XenbusState::Closing)?;
            // Up to `timeout` for the frontend; less if the device goes away
            // meanwhile (removed, taken offline, or this backend stopping).
            ep.wait_peer_closed(config.timeout, || {
                Ok(shutdown.load(Ordering::Relaxed)
                    || device_gone(store, backend_dir)?
                    || (!detaching && device_offline(store, backend_dir)?))
            })?;
            if !ep.switch_unless_gone(XenbusState::Closed)? {
                return Ok(Outcome::Removed);
            }
            if detaching || (config.once && !stale) {
                return Ok(Outcome::Closed);
            }
            // A frontend that comes back to Initialising asks to reconnect.
            match ep.wait_reopen(|| shutdown.load(Ordering::Relaxed))? {
                Reopen::Reopen => {}
                Reopen::Removed => return Ok(Outcome::Removed),
                Reopen::Detached => return Ok(Outcome::Closed),
                Reopen::Stopped => return Ok(Outcome::Shutdown),
            }
        }
        tracing::info!("{backend_dir}: frontend reinitialising, serving it again");
    }
}

/// What [`offer_and_serve`] came to.
enum Offered {
    /// A connection was served (or refused) and is over.
    Served,
    /// The frontend was still connected to an earlier backend: asked to reconnect.
    Stale,
    /// Serving ends here.
    Ended(Outcome),
}

/// Offer the device (`InitWait`), wait for the frontend's rings and serve them
/// until the frontend leaves.
fn offer_and_serve<P: Platform, S: Storage>(
    platform: &P,
    ep: &mut Endpoint<'_, P::Store>,
    storage: &S,
    config: &BackendConfig,
    counters: &Counters,
    shutdown: &AtomicBool,
) -> Result<Offered> {
    let backend_dir = ep.dir().to_string();
    let store = ep.store();
    ep.switch(
        XenbusState::InitWait,
        &[
            (
                blkif::MAX_RING_PAGE_ORDER,
                config.max_ring_page_order.to_string(),
            ),
            (
                blkif::MULTI_QUEUE_MAX_QUEUES,
                offered_queues(config, storage).to_string(),
            ),
            (
                blkif::FEATURE_MAX_INDIRECT_SEGMENTS,
                config.max_indirect_segments.to_string(),
            ),
        ],
    )?;
    // Wait for the frontend's rings (or for it to vanish).
    let s = loop {
        if shutdown.load(Ordering::Relaxed) {
            if config.close_on_shutdown {
                close(ep, config.close_timeout)?;
            }
            return Ok(Offered::Ended(Outcome::Shutdown));
        }
        match ep.wait_peer(Duration::from_millis(500), |s| {
            frontend_ready(s) || s == XenbusState::Closing || s == XenbusState::Closed
        }) {
            Ok(s) => break s,
            Err(xenio_xenbus::Error::Timeout(..)) => {
                if device_gone(store, &backend_dir)? {
                    return Ok(Offered::Ended(Outcome::Removed));
                }
                // Detached before a frontend came (`online = 0`, and libxl
                // waiting for `Closed`).
                if device_offline(store, &backend_dir)? {
                    ep.switch_unless_gone(XenbusState::Closed)?;
                    return Ok(Offered::Ended(Outcome::Closed));
                }
            }
            Err(e) => return Err(e.into()),
        }
    };
    // A frontend already Connected while this backend is in InitWait is
    // connected to an earlier backend (one that was killed, say): its ring
    // holds that backend's requests and is about to be reset. Attaching to it
    // would replay stale requests into a ring the frontend is reinitialising,
    // so ask it to reconnect instead (Closing, then InitWait again): Linux's
    // xen-blkfront does so from Closed, xenio's from any state.
    let stale = s == XenbusState::Connected;
    if stale {
        tracing::info!(
            "{backend_dir}: the frontend is still Connected to an earlier backend: asking it to reconnect"
        );
    } else if frontend_ready(s) {
        // A toolstack's device (`script` node) connects only once the hotplug
        // script said `connected`, as Linux's blkback waits for the block
        // script's `physical-device`: libxl waits for exactly `InitWait`
        // before running the script, and a frontend quick enough would
        // otherwise take the device past it first.
        let served = ep
            .wait_hotplug(|| {
                Ok(shutdown.load(Ordering::Relaxed)
                    || device_gone(store, &backend_dir)?
                    || device_offline(store, &backend_dir)?)
            })
            .map_err(Error::from)
            .and_then(|plugged| match plugged {
                true => connect(platform, ep, storage, config, counters, shutdown, false),
                false => Ok(false),
            });
        match served {
            Ok(_) => {}
            Err(e) => {
                tracing::warn!("{backend_dir}: disconnecting: {e}");
                fatal_unless_gone(ep, &e)?;
            }
        }
    }
    Ok(if stale {
        Offered::Stale
    } else {
        Offered::Served
    })
}

/// Give up on the connection with `e`'s reason where toolstacks look for it
/// (Linux: `xenbus_dev_fatal`; [`Endpoint::fatal`]), then `Closing`, unless
/// the device is gone (then nothing is written).
fn fatal_unless_gone<S: Store>(ep: &Endpoint<'_, S>, e: &Error) -> Result<()> {
    let errno = match e {
        Error::Storage(_) | Error::Config(_) => EIO,
        _ => EINVAL,
    };
    match ep.fatal(errno, &e.to_string()) {
        Ok(()) => Ok(()),
        Err(e) if e.is_gone() => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Close cleanly: `Closing`, wait (at most `timeout`) for the frontend to be
/// `Closed`, gone, or back at `Initialising`, then `Closed`. A device the
/// toolstack removed meanwhile gets nothing written.
fn close<S: Store>(ep: &mut Endpoint<'_, S>, timeout: Duration) -> Result<()> {
    if !ep.switch_unless_gone(XenbusState::Closing)? {
        return Ok(());
    }
    let (store, dir) = (ep.store(), ep.dir().to_string());
    if !ep.wait_peer_closed(timeout, || device_gone(store, &dir))? && !device_gone(store, &dir)? {
        tracing::info!("{dir}: the frontend did not close within {timeout:?}: closing anyway");
    }
    ep.switch_unless_gone(XenbusState::Closed)?;
    Ok(())
}

/// `multi-queue-max-queues`: the configuration's, capped by what the storage
/// can have (an NBD export without multi-conn: 1).
fn offered_queues<S: Storage>(config: &BackendConfig, storage: &S) -> u32 {
    let n = config.max_queues.max(1);
    storage.max_queues().map_or(n, |m| n.min(m.max(1)))
}

/// Map the rings, bind the channels, say Connected, serve until the frontend leaves.
///
/// With `resume`, take over the connection a dead backend left: the device
/// is already `Connected`, the rings are the frontend's current ones, and each
/// queue's record ([`crate::inflight`]) says what was in flight. Returns
/// `Ok(false)` (having changed nothing) when it cannot be resumed: a record is
/// missing, belongs to another connection, or does not add up.
fn connect<P: Platform, S: Storage>(
    platform: &P,
    ep: &mut Endpoint<'_, P::Store>,
    storage: &S,
    config: &BackendConfig,
    counters: &Counters,
    shutdown: &AtomicBool,
    resume: bool,
) -> Result<bool> {
    let frontend = ep.peer_id();
    let missing = |ep: &Endpoint<'_, P::Store>, k: &str| -> Error {
        keys::bad_key(&ep.peer_path(k), "missing").into()
    };
    let protocol = Protocol::from_key(ep.peer_key(blkif::PROTOCOL)?.as_deref())?;
    let order: u32 = ep.peer_parse(blkif::RING_PAGE_ORDER)?.unwrap_or(0);
    if order > config.max_ring_page_order {
        return Err(Error::Frontend(format!(
            "ring-page-order {order} is above our max-ring-page-order {}",
            config.max_ring_page_order
        )));
    }
    let nqueues: u32 = ep.peer_parse(blkif::MULTI_QUEUE_NUM_QUEUES)?.unwrap_or(1);
    let max_queues = offered_queues(config, storage);
    if nqueues == 0 || nqueues > max_queues {
        return Err(Error::Frontend(format!(
            "multi-queue-num-queues {nqueues} (we offer 1..={max_queues})"
        )));
    }
    let persistent = config.persistent && ep.peer_flag(blkif::FEATURE_PERSISTENT)?;
    let mut queues = Vec::new();
    for q in 0..nqueues {
        let key = |k: &str| keys::queue_key(q, nqueues, k);
        let mut refs = Vec::new();
        // One page: `ring-ref`, or (as some frontends write it) `ring-ref0`.
        if order == 0 && ep.peer_key(&key(blkif::RING_REF))?.is_some() {
            refs.push(GrantRef(ep.peer_parse(&key(blkif::RING_REF))?.unwrap_or(0)));
        } else {
            for i in 0..(1u32 << order) {
                let k = key(&blkif::ring_ref_page(i));
                refs.push(GrantRef(ep.peer_parse(&k)?.ok_or_else(|| missing(ep, &k))?));
            }
        }
        let port = ep
            .peer_parse(&key(blkif::EVENT_CHANNEL))?
            .ok_or_else(|| missing(ep, &key(blkif::EVENT_CHANNEL)))?;
        queues.push(QueueKeys {
            refs,
            port: Port(port),
        });
    }

    let info = storage.info();
    let mapper = platform.mapper()?;
    // A read-only disk offers no flush, barrier or discard (as Linux blkback);
    // a CD-ROM is read-only.
    let readonly = info.readonly || config.cdrom;
    let flush = info.flush && !readonly;
    let discard = info.discard.filter(|_| !readonly && config.discard);
    let limits = Limits {
        sectors: info.sectors,
        readonly,
        max_indirect_segments: config.max_indirect_segments,
        flush,
        barrier: flush,
        discard: discard.is_some(),
    };
    // Map every ring (with its record of requests in flight) and bind every
    // channel before saying Connected.
    let mut rings = Vec::new();
    for (i, q) in queues.iter().enumerate() {
        let region = mapper.map(frontend, &q.refs)?;
        let (ring, record) = match &config.inflight_dir {
            None => (BlkRing::attach(region, protocol)?, None),
            Some(dir) => {
                let path = inflight::path(dir, ep.dir(), i as u32);
                let refs: Vec<String> = q.refs.iter().map(|r| r.0.to_string()).collect();
                let id = inflight::identity(&[
                    &frontend.0.to_string(),
                    protocol.as_str(),
                    &order.to_string(),
                    &nqueues.to_string(),
                    &i.to_string(),
                    &refs.join(","),
                    &q.port.0.to_string(),
                ]);
                let size = protocol.ring_size(region.len());
                if resume {
                    let Some(left) = Inflight::read(&path, size, id)? else {
                        tracing::info!(
                            "{}: no record of queue {i}'s requests for this connection: not resuming",
                            ep.dir()
                        );
                        return Ok(false);
                    };
                    let rsp_prod = crate::ring::published_responses(&region);
                    let Some(rec) = Inflight::recover(&path, size, id, &left, rsp_prod)? else {
                        return Ok(false);
                    };
                    let ring = BlkRing::attach_resumed(region, protocol, left.req_cons)?;
                    (ring, Some(rec))
                } else {
                    let ring = BlkRing::attach(region, protocol)?;
                    let rec = Inflight::create(&path, size, id, ring.req_cons())?;
                    (ring, Some(rec))
                }
            }
        };
        let channel = platform.events().bind_interdomain(frontend, q.port)?;
        rings.push((ring, channel, record));
    }
    let mut disk_keys = vec![
        (blkif::SECTORS, info.sectors.to_string()),
        (blkif::SECTOR_SIZE, info.sector_size.to_string()),
        (
            blkif::PHYSICAL_SECTOR_SIZE,
            info.physical_sector_size.to_string(),
        ),
        (blkif::INFO, vdisk_info(readonly, config).to_string()),
        (blkif::FEATURE_FLUSH_CACHE, keys::flag(flush)),
        (blkif::FEATURE_BARRIER, keys::flag(flush)),
        (blkif::FEATURE_PERSISTENT, keys::flag(config.persistent)),
    ];
    match discard {
        Some(d) => {
            disk_keys.push((blkif::FEATURE_DISCARD, keys::flag(true)));
            disk_keys.push((blkif::DISCARD_GRANULARITY, d.granularity.to_string()));
            disk_keys.push((blkif::DISCARD_ALIGNMENT, d.alignment.to_string()));
            disk_keys.push((blkif::DISCARD_SECURE, keys::flag(false)));
        }
        None => disk_keys.push((blkif::FEATURE_DISCARD, keys::flag(false))),
    }
    let stop = AtomicBool::new(false);
    // The size the queues check requests against: grown while connected when
    // the storage grows (see the loop below).
    // Resuming, the frontend knows the size the dead backend published.
    let published_size = match resume {
        true => ep.own_parse::<u64>(blkif::SECTORS)?,
        false => None,
    };
    let size = AtomicU64::new(published_size.unwrap_or(info.sectors));
    let qconfig = QueueConfig {
        persistent,
        ..config.queue.clone()
    };
    std::thread::scope(|scope| -> Result<bool> {
        let mut handles = Vec::new();
        for (i, (ring, channel, inflight)) in rings.into_iter().enumerate() {
            let (stop, size, qconfig, limits) = (&stop, &size, qconfig.clone(), limits);
            let cpu = (!config.cpus.is_empty()).then(|| config.cpus[i % config.cpus.len()]);
            handles.push(
                std::thread::Builder::new()
                    .name(format!("blkback-q{i}"))
                    .spawn_scoped(scope, move || -> Result<()> {
                        if let Some(cpu) = cpu {
                            if let Err(e) = pin_thread(cpu) {
                                stop.store(true, Ordering::Relaxed);
                                return Err(e);
                            }
                            tracing::debug!("queue {i}: on CPU {cpu}");
                        }
                        let worker = QueueWorker {
                            ring,
                            channel,
                            mapper,
                            frontend,
                            storage: storage.queue(qconfig.io_depth)?,
                            limits,
                            size: Some(size),
                            inflight,
                            persistent: qconfig.persistent
                                && qconfig.grant_mode == crate::queue::GrantMode::Map,
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
                    .map_err(|e| Error::Storage(format!("starting a queue thread: {e}")))?,
            );
        }
        let result = (|| -> Result<()> {
            if !resume {
                ep.switch(XenbusState::Connected, &disk_keys)?;
            }
            tracing::info!(
                "{}: {}: {nqueues} queue(s), ring order {order}, persistent grants {persistent}, protocol {}",
                ep.dir(),
                if resume { "resumed" } else { "connected" },
                protocol.as_str()
            );
            // Serve until the frontend leaves, a queue fails, or shutdown;
            // meanwhile publish a size that grew.
            loop {
                if stop.load(Ordering::Relaxed) || shutdown.load(Ordering::Relaxed) {
                    return Ok(());
                }
                resize(ep, storage, &size)?;
                match ep.wait_peer(Duration::from_millis(200), peer_leaving) {
                    Ok(s) => {
                        tracing::info!("{}: frontend went to {s:?}", ep.dir());
                        return Ok(());
                    }
                    Err(xenio_xenbus::Error::Timeout(..)) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        })();
        stop.store(true, Ordering::Relaxed);
        let mut first_err = result.err();
        for h in handles {
            match h.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    first_err.get_or_insert(e);
                }
                Err(_) => {
                    first_err.get_or_insert(Error::Storage("a queue thread panicked".into()));
                }
            }
        }
        // The connection is over: its records go, unless this backend stops
        // to let a successor resume it.
        let leave = shutdown.load(Ordering::Relaxed) && !config.close_on_shutdown;
        if let (Some(dir), false) = (&config.inflight_dir, leave) {
            inflight::remove_all(dir, ep.dir());
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(true),
        }
    })
}

/// Online resize: if the storage's size changed, let the queues accept the new
/// sectors and tell the frontend as Linux's blkback does (`xen_vbd_resize`):
/// write `sectors` and the current state again in one transaction, so a
/// frontend that is `Connected` sees its backend's `state` watch fire with
/// `Connected` and reads the new size.
fn resize<S: Store, T: Storage>(ep: &Endpoint<'_, S>, storage: &T, size: &AtomicU64) -> Result<()> {
    let now = storage.sectors();
    let before = size.swap(now, Ordering::Relaxed);
    if now != before {
        tracing::info!("{}: size {before} -> {now} sectors", ep.dir());
        ep.switch(XenbusState::Connected, &[(blkif::SECTORS, now.to_string())])?;
    }
    Ok(())
}

/// The `info` key: `VDISK_*` bits of `xen/io/blkif.h`.
fn vdisk_info(readonly: bool, config: &BackendConfig) -> u32 {
    let bit = |on: bool, b: u32| if on { b } else { 0 };
    bit(readonly, VDISK_READONLY)
        | bit(config.cdrom, VDISK_CDROM)
        | bit(config.removable, VDISK_REMOVABLE)
}

/// The CPUs this process may run on.
pub fn allowed_cpus() -> Result<Vec<usize>> {
    let set = sched_getaffinity(Pid::from_raw(0))
        .map_err(|e| Error::Config(format!("reading this process's CPU affinity: {e}")))?;
    Ok((0..CpuSet::count())
        .filter(|&c| set.is_set(c).unwrap_or(false))
        .collect())
}

/// Refuse CPUs a queue thread cannot be pinned to ([`BackendConfig::cpus`]),
/// before anything is offered to a frontend: [`serve`] checks this first, since
/// a queue thread that cannot be pinned would fail only once connected. The
/// kernel decides: a short-lived thread tries each CPU (a process started under
/// `taskset` may still move to any CPU of its cpuset, so the current mask is
/// not the limit).
pub fn check_cpus(cpus: &[usize]) -> Result<()> {
    if cpus.is_empty() {
        return Ok(());
    }
    let mut distinct = cpus.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    let tried = std::thread::Builder::new()
        .name("blkback-cpus".into())
        .spawn(move || distinct.into_iter().try_for_each(pin_thread))
        .map_err(|e| Error::Config(format!("starting a thread to try the CPUs: {e}")))?
        .join()
        .map_err(|_| Error::Config("the thread trying the CPUs panicked".into()))?;
    tried.map_err(|e| {
        let here = allowed_cpus().map_or_else(|_| "?".into(), |a| format!("{a:?}"));
        match e {
            Error::Config(m) => Error::Config(format!("{m} (this process runs on CPUs {here})")),
            other => other,
        }
    })
}

/// Pin the calling thread to `cpu`.
fn pin_thread(cpu: usize) -> Result<()> {
    let mut set = CpuSet::new();
    set.set(cpu).map_err(|e| {
        Error::Config(format!(
            "CPU {cpu} is beyond the {} a CPU set can name: {e}",
            CpuSet::count()
        ))
    })?;
    sched_setaffinity(Pid::from_raw(0), &set)
        .map_err(|e| Error::Config(format!("CPU {cpu} cannot be used here: {e}")))
}
