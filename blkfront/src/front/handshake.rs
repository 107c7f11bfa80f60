//! The frontend's side of the handshake (`xen/io/blkif.h`), for the first
//! connection and every reconnection, in two halves around setting up the
//! rings: [`negotiate`] (Initialising, wait for the backend's InitWait, read
//! its limits) and [`connect`] (publish the rings, Initialised, wait for
//! Connected, read the disk, Connected).

use crate::error::{Error, Result};
use crate::options::{Info, Options};
use std::time::{Duration, Instant};
use xenio_xen_sys::blkif::{
    BLKIF_MAX_INDIRECT_SEGMENTS, BLKIF_MAX_SEGMENTS_PER_REQUEST, VDISK_READONLY,
};
use xenio_xen_sys::xenbus::XenbusState;
use xenio_xen_sys::{DomId, GrantRef, Port};
use xenio_xenbus::handshake::keys::{self, blkif, parse_key};
use xenio_xenbus::handshake::{Endpoint, read_state};
use xenio_xenbus::{Store, Tx, Watch};

/// Wait (at most `timeout`) for the device `dir` to exist (its `backend` and
/// `backend-id` keys) and its backend to have started (its `state` neither
/// missing nor `Initialising`); the backend's directory and domain.
pub(crate) fn await_device<S: Store>(
    store: &S,
    dir: &str,
    timeout: Duration,
) -> Result<(String, DomId)> {
    let deadline = Instant::now() + timeout;
    // Fires when the device's directory is created or changes; the backend's
    // state is looked at again at least every 100 ms.
    let mut watch = store.watch(dir, "blkfront-device")?;
    loop {
        let (path, missing) = match device_keys(store, dir)? {
            None => (
                format!("{dir}/{}", keys::BACKEND),
                "no such key: the device does not exist (the toolstack creates it, \
                 or `xenio blkback --create-device`, or blkback's `Server::create_device`)",
            ),
            Some((backend, id)) => {
                let state = format!("{backend}/{}", keys::STATE);
                match read_state(store, &state)? {
                    XenbusState::Unknown => (
                        state,
                        "missing: the backend's directory is not there (the device is being \
                         created or removed)",
                    ),
                    XenbusState::Initialising => {
                        (state, "Initialising: no backend serves the device yet")
                    }
                    _ => return Ok((backend, id)),
                }
            }
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Error::NotReady {
                path,
                missing: format!("{missing} (waited {timeout:?}: Options::device_timeout)"),
            });
        }
        let _ = watch.next_event(Some(left.min(Duration::from_millis(100))))?;
    }
}

/// The device's `backend` and `backend-id`, or `None` while either is missing.
fn device_keys<S: Store>(store: &S, dir: &str) -> Result<Option<(String, DomId)>> {
    let read = |k: &str| -> Result<Option<String>> {
        match store.read_string(Tx::NONE, &format!("{dir}/{k}")) {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is_not_found() || e.is_denied() => Ok(None),
            Err(e) => Err(e.into()),
        }
    };
    let (Some(backend), Some(id)) = (read(keys::BACKEND)?, read(keys::BACKEND_ID)?) else {
        return Ok(None);
    };
    let id_path = format!("{dir}/{}", keys::BACKEND_ID);
    Ok(Some((backend, DomId(parse_key::<u16>(&id_path, &id)?))))
}

/// The frontend's end of the handshake; a device whose directory is gone
/// (removed by its backend or the toolstack) is [`Error::Closed`].
fn endpoint<'s, S: Store>(store: &'s S, dir: &str) -> Result<Endpoint<'s, S>> {
    match Endpoint::frontend(store, dir) {
        Ok(ep) => Ok(ep),
        Err(e) if e.is_not_found() || e.is_denied() => {
            Err(Error::Closed(format!("{dir} was removed")))
        }
        Err(e) => Err(e.into()),
    }
}

/// Wait for the backend to reach a state `until` accepts; a backend whose
/// directory disappears meanwhile closed the device for good.
fn wait_backend<S: Store>(
    ep: &mut Endpoint<'_, S>,
    timeout: Duration,
    until: impl Fn(XenbusState) -> bool,
) -> Result<XenbusState> {
    let s = ep.wait_peer(timeout, |s| until(s) || s == XenbusState::Unknown)?;
    if s == XenbusState::Unknown && !until(s) {
        return Err(Error::Closed(format!("{} was removed", ep.peer_dir())));
    }
    Ok(s)
}

/// The rings to set up: the options capped by the backend's limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Geometry {
    /// Ring page order.
    pub(crate) order: u32,
    /// Queues.
    pub(crate) queues: u32,
    /// Segments per request (11, or the indirect segment count in use).
    pub(crate) max_segments: usize,
}

/// Whether the toolstack trusts the backend: the `trusted` key of the
/// frontend directory `dir` (blkif.h: "`0` tells the frontend not to trust
/// the backend"). Absent or any other number: trusted, as Linux's
/// xen-blkfront reads it; a value that is not a number is taken as untrusted
/// (Linux would take it as the default, trusted), with a warning.
pub(crate) fn backend_trusted<S: Store>(store: &S, dir: &str) -> Result<bool> {
    let path = format!("{dir}/{}", blkif::TRUSTED);
    let Some(v) = store.read_opt(xenio_xenbus::Tx::NONE, &path)? else {
        return Ok(true);
    };
    match keys::parse_key::<u32>(&path, &v) {
        Ok(n) => Ok(n != 0),
        Err(e) => {
            tracing::warn!("{e}: not trusting the backend");
            Ok(false)
        }
    }
}

/// Say Initialising, wait for the backend's InitWait, and cap `options` by
/// what it offers.
pub(crate) fn negotiate<S: Store>(store: &S, dir: &str, options: &Options) -> Result<Geometry> {
    let mut ep = endpoint(store, dir)?;
    ep.switch(XenbusState::Initialising, &[])?;
    wait_backend(&mut ep, options.timeout, |s| s == XenbusState::InitWait)?;
    let max_order: u32 = ep.peer_parse(blkif::MAX_RING_PAGE_ORDER)?.unwrap_or(0);
    let max_queues: u32 = ep.peer_parse(blkif::MULTI_QUEUE_MAX_QUEUES)?.unwrap_or(1);
    let max_indirect: u32 = ep
        .peer_parse(blkif::FEATURE_MAX_INDIRECT_SEGMENTS)?
        .unwrap_or(0);
    let indirect = options
        .indirect_segments
        .min(max_indirect)
        .min(BLKIF_MAX_INDIRECT_SEGMENTS as u32) as usize;
    Ok(Geometry {
        order: options.max_ring_page_order.min(max_order).min(8),
        queues: options.queues.clamp(1, max_queues.max(1)),
        max_segments: if indirect > BLKIF_MAX_SEGMENTS_PER_REQUEST {
            indirect
        } else {
            BLKIF_MAX_SEGMENTS_PER_REQUEST
        },
    })
}

/// The keys that publish the rings (`rings`: each queue's grant references
/// and port, in queue order), in the order they are written.
pub(crate) fn ring_keys(
    geometry: Geometry,
    rings: &[(&[GrantRef], Port)],
    persistent: bool,
) -> Vec<(String, String)> {
    let mut keys: Vec<(String, String)> = Vec::new();
    if geometry.order > 0 {
        keys.push((blkif::RING_PAGE_ORDER.into(), geometry.order.to_string()));
    }
    if geometry.queues > 1 {
        keys.push((
            blkif::MULTI_QUEUE_NUM_QUEUES.into(),
            geometry.queues.to_string(),
        ));
    }
    for (i, (refs, port)) in rings.iter().enumerate() {
        let key = |k: &str| keys::queue_key(i as u32, geometry.queues, k);
        for (k, r) in blkif::ring_ref_keys(geometry.order).iter().zip(*refs) {
            keys.push((key(k), r.0.to_string()));
        }
        keys.push((key(blkif::EVENT_CHANNEL), port.0.to_string()));
    }
    keys.push((blkif::PROTOCOL.into(), blkif::PROTOCOL_X86_64_ABI.into()));
    keys.push((blkif::FEATURE_PERSISTENT.into(), keys::flag(persistent)));
    keys
}

/// Write `ring_keys` and say Initialised, wait for the backend's Connected,
/// read the disk's properties, and say Connected.
pub(crate) fn connect<S: Store>(
    store: &S,
    dir: &str,
    ring_keys: &[(String, String)],
    geometry: Geometry,
    timeout: Duration,
) -> Result<Info> {
    let mut ep = endpoint(store, dir)?;
    let refs: Vec<(&str, String)> = ring_keys
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    ep.switch(XenbusState::Initialised, &refs)?;
    wait_backend(&mut ep, timeout, |s| s == XenbusState::Connected)?;

    // u64::MAX stands for "missing", as it always did (it would overflow the size).
    let sectors = ep
        .peer_parse::<u64>(blkif::SECTORS)?
        .filter(|&s| s != u64::MAX)
        .ok_or_else(|| Error::from(keys::bad_key(&ep.peer_path(blkif::SECTORS), "missing")))?;
    let info_bits: u32 = ep.peer_parse(blkif::INFO)?.unwrap_or(0);
    let mode_ro = ep.peer_key(blkif::MODE)?.is_some_and(|m| m.trim() == "r");
    let discard = if ep.peer_flag(blkif::FEATURE_DISCARD)? {
        Some((
            ep.peer_parse(blkif::DISCARD_GRANULARITY)?.unwrap_or(512u64),
            ep.peer_parse(blkif::DISCARD_ALIGNMENT)?.unwrap_or(0u64),
        ))
    } else {
        None
    };
    let info = Info {
        sectors,
        sector_size: ep.peer_parse(blkif::SECTOR_SIZE)?.unwrap_or(512),
        physical_sector_size: ep.peer_parse(blkif::PHYSICAL_SECTOR_SIZE)?.unwrap_or(512),
        readonly: info_bits & VDISK_READONLY != 0 || mode_ro,
        flush: ep.peer_flag(blkif::FEATURE_FLUSH_CACHE)?,
        barrier: ep.peer_flag(blkif::FEATURE_BARRIER)?,
        discard,
        ring_page_order: geometry.order,
        queues: geometry.queues,
        max_segments: geometry.max_segments,
        persistent: ep.peer_flag(blkif::FEATURE_PERSISTENT)?,
    };
    ep.switch(XenbusState::Connected, &[])?;
    Ok(info)
}
