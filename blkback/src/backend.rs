//! One virtual disk: the backend side of the handshake, the queues' threads, and
//! teardown and reconnection, over any [`Platform`] and any [`Storage`].

use crate::error::{Error, Result};
use crate::queue::{Counters, QueueConfig, QueueWorker};
use crate::request::Limits;
use crate::storage::Storage;
use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
use nix::unistd::Pid;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use xenio_ring::BackRing;
use xenio_xen_sys::blkif::VDISK_READONLY;
use xenio_xen_sys::xenbus::XenbusState;
use xenio_xen_sys::{GrantRef, Port};
use xenio_xenbus::handshake::keys::{self, blkif};
use xenio_xenbus::handshake::{Endpoint, frontend_ready, peer_leaving};
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
    loop {
        ep.switch(
            XenbusState::InitWait,
            &[
                (
                    blkif::MAX_RING_PAGE_ORDER,
                    config.max_ring_page_order.to_string(),
                ),
                (
                    blkif::MULTI_QUEUE_MAX_QUEUES,
                    config.max_queues.max(1).to_string(),
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
                close(&mut ep, config.close_timeout)?;
                return Ok(Outcome::Shutdown);
            }
            match ep.wait_peer(Duration::from_millis(500), |s| {
                frontend_ready(s) || s == XenbusState::Closing || s == XenbusState::Closed
            }) {
                Ok(s) => break s,
                Err(xenio_xenbus::Error::Timeout(..)) => {
                    if store
                        .read_opt(
                            xenio_xenbus::Tx::NONE,
                            &format!("{backend_dir}/{}", keys::STATE),
                        )?
                        .is_none()
                    {
                        return Ok(Outcome::Removed);
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
            match connect(platform, &mut ep, storage, config, counters, shutdown) {
                Ok(()) => {}
                Err(e) => {
                    tracing::warn!("{backend_dir}: disconnecting: {e}");
                    // The reason where toolstacks look (Linux: xenbus_dev_fatal).
                    let errno = match e {
                        Error::Storage(_) | Error::Config(_) => EIO,
                        _ => EINVAL,
                    };
                    ep.fatal(errno, &e.to_string())?;
                }
            }
        }
        if shutdown.load(Ordering::Relaxed) {
            close(&mut ep, config.close_timeout)?;
            return Ok(Outcome::Shutdown);
        }
        // Teardown: Closing until the frontend is Closed (or gone), then Closed.
        let now = ep.peer_state()?;
        if now == XenbusState::Unknown {
            return Ok(Outcome::Removed);
        }
        if now != XenbusState::Initialising {
            ep.switch(XenbusState::Closing, &[])?;
            let _ = ep.wait_peer(config.timeout, |s| {
                matches!(
                    s,
                    XenbusState::Closed | XenbusState::Unknown | XenbusState::Initialising
                )
            });
            ep.switch(XenbusState::Closed, &[])?;
            if config.once && !stale {
                return Ok(Outcome::Closed);
            }
            // A frontend that comes back to Initialising asks to reconnect.
            loop {
                if shutdown.load(Ordering::Relaxed) {
                    return Ok(Outcome::Shutdown);
                }
                match ep.wait_peer(Duration::from_millis(500), |s| {
                    s == XenbusState::Initialising || s == XenbusState::Unknown
                }) {
                    Ok(XenbusState::Unknown) => return Ok(Outcome::Removed),
                    Ok(_) => break,
                    Err(xenio_xenbus::Error::Timeout(..)) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
        }
        tracing::info!("{backend_dir}: frontend reinitialising, serving it again");
    }
}

/// Close cleanly: `Closing`, wait (at most `timeout`) for the frontend to be
/// `Closed`, gone, or back at `Initialising`, then `Closed`.
fn close<S: Store>(ep: &mut Endpoint<'_, S>, timeout: Duration) -> Result<()> {
    ep.switch(XenbusState::Closing, &[])?;
    if let Err(e) = ep.wait_peer(timeout, |s| {
        matches!(
            s,
            XenbusState::Closed | XenbusState::Unknown | XenbusState::Initialising
        )
    }) {
        tracing::info!(
            "{}: the frontend did not close ({e}): closing anyway",
            ep.dir()
        );
    }
    ep.switch(XenbusState::Closed, &[])?;
    Ok(())
}

/// Map the rings, bind the channels, say Connected, serve until the frontend leaves.
fn connect<P: Platform, S: Storage>(
    platform: &P,
    ep: &mut Endpoint<'_, P::Store>,
    storage: &S,
    config: &BackendConfig,
    counters: &Counters,
    shutdown: &AtomicBool,
) -> Result<()> {
    let frontend = ep.peer_id();
    let missing = |ep: &Endpoint<'_, P::Store>, k: &str| -> Error {
        keys::bad_key(&ep.peer_path(k), "missing").into()
    };
    if let Some(p) = ep.peer_key(blkif::PROTOCOL)? {
        if p.trim() != blkif::PROTOCOL_X86_64_ABI && !p.trim().is_empty() {
            return Err(Error::Frontend(format!(
                "protocol {p:?} is not supported (only x86_64-abi)"
            )));
        }
    }
    let order: u32 = ep.peer_parse(blkif::RING_PAGE_ORDER)?.unwrap_or(0);
    if order > config.max_ring_page_order {
        return Err(Error::Frontend(format!(
            "ring-page-order {order} is above our max-ring-page-order {}",
            config.max_ring_page_order
        )));
    }
    let nqueues: u32 = ep.peer_parse(blkif::MULTI_QUEUE_NUM_QUEUES)?.unwrap_or(1);
    if nqueues == 0 || nqueues > config.max_queues.max(1) {
        return Err(Error::Frontend(format!(
            "multi-queue-num-queues {nqueues} (we offer 1..={})",
            config.max_queues
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
    // A read-only disk offers no flush, barrier or discard (as Linux blkback).
    let flush = info.flush && !info.readonly;
    let discard = info.discard.filter(|_| !info.readonly);
    let limits = Limits {
        sectors: info.sectors,
        readonly: info.readonly,
        max_indirect_segments: config.max_indirect_segments,
        flush,
        barrier: flush,
        discard: discard.is_some(),
    };
    // Map every ring and bind every channel before saying Connected.
    let mut rings = Vec::new();
    for q in &queues {
        let region = mapper.map(frontend, &q.refs)?;
        let ring = BackRing::attach(region)?;
        let channel = platform.events().bind_interdomain(frontend, q.port)?;
        rings.push((ring, channel));
    }
    let mut disk_keys = vec![
        (blkif::SECTORS, info.sectors.to_string()),
        (blkif::SECTOR_SIZE, info.sector_size.to_string()),
        (
            blkif::PHYSICAL_SECTOR_SIZE,
            info.physical_sector_size.to_string(),
        ),
        (
            blkif::INFO,
            if info.readonly { VDISK_READONLY } else { 0 }.to_string(),
        ),
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
    let qconfig = QueueConfig {
        persistent,
        ..config.queue.clone()
    };
    std::thread::scope(|scope| -> Result<()> {
        let mut handles = Vec::new();
        for (i, (ring, channel)) in rings.into_iter().enumerate() {
            let (stop, qconfig, limits) = (&stop, qconfig.clone(), limits);
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
            ep.switch(XenbusState::Connected, &disk_keys)?;
            tracing::info!(
                "{}: connected: {nqueues} queue(s), ring order {order}, persistent grants {persistent}",
                ep.dir()
            );
            // Serve until the frontend leaves, a queue fails, or shutdown.
            loop {
                if stop.load(Ordering::Relaxed) || shutdown.load(Ordering::Relaxed) {
                    return Ok(());
                }
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
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    })
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
