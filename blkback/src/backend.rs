//! One virtual disk: the backend side of the handshake, the queues' threads, and
//! teardown and reconnection, over any [`Platform`] and any [`Storage`].

use crate::engine::{Counters, QueueConfig, QueueEngine};
use crate::request::Limits;
use crate::storage::Storage;
use crate::{Error, Result};
use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
use nix::unistd::Pid;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use xenio_ring::BackRing;
use xenio_xen_sys::blkif::VDISK_READONLY;
use xenio_xen_sys::xenbus::XenbusState;
use xenio_xen_sys::{GrantRef, Port};
use xenio_xenbus::handshake::{Endpoint, frontend_ready, peer_leaving};
use xenio_xenbus::platform::Platform;
use xenio_xenbus::{EventChannels, GrantMapper, Store};

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
    /// `shutdown` was set.
    Shutdown,
}

/// What the frontend published for one queue.
struct QueueKeys {
    refs: Vec<GrantRef>,
    port: Port,
}

/// Serve the disk behind `backend_dir` (`/local/domain/<be>/backend/vbd/<fe>/<devid>`)
/// until the frontend goes away for good, the device is removed, or `shutdown`.
/// A frontend that resets to `Initialising` is served again; a frontend that
/// breaks its ring is disconnected (never a crash).
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
                    "max-ring-page-order",
                    config.max_ring_page_order.to_string(),
                ),
                (
                    "multi-queue-max-queues",
                    config.max_queues.max(1).to_string(),
                ),
                (
                    "feature-max-indirect-segments",
                    config.max_indirect_segments.to_string(),
                ),
            ],
        )?;
        // Wait for the frontend's rings (or for it to vanish).
        let s = loop {
            if shutdown.load(Ordering::Relaxed) {
                return Ok(Outcome::Shutdown);
            }
            match ep.wait_peer(Duration::from_millis(500), |s| {
                frontend_ready(s) || s == XenbusState::Closing || s == XenbusState::Closed
            }) {
                Ok(s) => break s,
                Err(xenio_xenbus::Error::Timeout(..)) => {
                    if store
                        .read_opt(xenio_xenbus::Tx::NONE, &format!("{backend_dir}/state"))?
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
                    ep.switch(XenbusState::Closing, &[])?;
                }
            }
        }
        if shutdown.load(Ordering::Relaxed) {
            ep.switch(XenbusState::Closing, &[])?;
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
    let bad = |key: &str, v: &str| Error::Frontend(format!("{key} = {v:?}"));
    let key_u32 = |ep: &Endpoint<'_, P::Store>, k: &str| -> Result<Option<u32>> {
        match ep.peer_key(k)? {
            None => Ok(None),
            Some(v) => v.trim().parse().map(Some).map_err(|_| bad(k, &v)),
        }
    };
    if let Some(p) = ep.peer_key("protocol")? {
        if p.trim() != "x86_64-abi" && !p.trim().is_empty() {
            return Err(Error::Frontend(format!(
                "protocol {p:?} is not supported (only x86_64-abi)"
            )));
        }
    }
    let order = key_u32(ep, "ring-page-order")?.unwrap_or(0);
    if order > config.max_ring_page_order {
        return Err(Error::Frontend(format!(
            "ring-page-order {order} is above our max-ring-page-order {}",
            config.max_ring_page_order
        )));
    }
    let nqueues = key_u32(ep, "multi-queue-num-queues")?.unwrap_or(1);
    if nqueues == 0 || nqueues > config.max_queues.max(1) {
        return Err(Error::Frontend(format!(
            "multi-queue-num-queues {nqueues} (we offer 1..={})",
            config.max_queues
        )));
    }
    let persistent = config.persistent && key_u32(ep, "feature-persistent")?.unwrap_or(0) == 1;
    let mut queues = Vec::new();
    for q in 0..nqueues {
        let prefix = if nqueues > 1 {
            format!("queue-{q}/")
        } else {
            String::new()
        };
        let mut refs = Vec::new();
        if order == 0 && ep.peer_key(&format!("{prefix}ring-ref"))?.is_some() {
            refs.push(GrantRef(
                key_u32(ep, &format!("{prefix}ring-ref"))?.unwrap_or(0),
            ));
        } else {
            for i in 0..(1u32 << order) {
                let k = format!("{prefix}ring-ref{i}");
                refs.push(GrantRef(
                    key_u32(ep, &k)?.ok_or_else(|| Error::Frontend(format!("{k} is missing")))?,
                ));
            }
        }
        let port = key_u32(ep, &format!("{prefix}event-channel"))?
            .ok_or_else(|| Error::Frontend(format!("{prefix}event-channel is missing")))?;
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
    let mut keys = vec![
        ("sectors", info.sectors.to_string()),
        ("sector-size", info.sector_size.to_string()),
        (
            "physical-sector-size",
            info.physical_sector_size.to_string(),
        ),
        (
            "info",
            if info.readonly { VDISK_READONLY } else { 0 }.to_string(),
        ),
        ("feature-flush-cache", u8::from(flush).to_string()),
        ("feature-barrier", u8::from(flush).to_string()),
        (
            "feature-persistent",
            u8::from(config.persistent).to_string(),
        ),
    ];
    match discard {
        Some(d) => {
            keys.push(("feature-discard", "1".into()));
            keys.push(("discard-granularity", d.granularity.to_string()));
            keys.push(("discard-alignment", d.alignment.to_string()));
            keys.push(("discard-secure", "0".into()));
        }
        None => keys.push(("feature-discard", "0".into())),
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
                        let engine = QueueEngine {
                            ring,
                            channel,
                            mapper,
                            frontend,
                            storage: storage.queue(qconfig.io_depth)?,
                            limits,
                            persistent: qconfig.persistent
                                && qconfig.grant_mode == crate::engine::GrantMode::Map,
                            config: qconfig,
                            counters,
                            stop,
                        };
                        let r = engine.run();
                        if r.is_err() {
                            stop.store(true, Ordering::Relaxed);
                        }
                        r
                    })
                    .map_err(|e| Error::Storage(format!("starting a queue thread: {e}")))?,
            );
        }
        let result = (|| -> Result<()> {
            ep.switch(XenbusState::Connected, &keys)?;
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
