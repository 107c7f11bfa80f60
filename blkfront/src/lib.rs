//! The blkif frontend, as a library: connect to any blkif backend through the
//! XenbusState handshake, then do block I/O through the shared ring.
//!
//! Data lives in a pool of pages granted to the backend once, at connect time
//! (persistent grants): [`BlkFront::alloc`] hands out buffers from it, so the data
//! path is zero copy. Submission is asynchronous ([`BlkFront::submit`] returns a
//! [`Token`], [`BlkFront::poll`] returns completions); [`BlkFront::read_at`],
//! [`BlkFront::write_at`], [`BlkFront::flush`] and [`BlkFront::discard`] are the
//! blocking conveniences. Large I/Os are split into requests of at most 11
//! segments, or indirect requests when the backend offers them.
//!
//! Nothing the backend writes is trusted: an unknown or duplicate response id, or
//! a response with the wrong operation, is an error, never a panic. When the
//! backend goes away and a new one comes (its `state` leaves `Connected`), the
//! frontend reconnects and re-issues every request that had no response, so no
//! acknowledged write is lost.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod error;

pub use error::{Error, Result};

use std::collections::VecDeque;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, Instant};
use xenio_ring::FrontRing;
use xenio_xen_sys::blkif::*;
use xenio_xen_sys::xenbus::XenbusState;
use xenio_xen_sys::{DomId, GrantRef};
use xenio_xenbus::handshake::Endpoint;
use xenio_xenbus::platform::Platform;
use xenio_xenbus::{
    Access, EventChannel, EventChannels, GrantTable, Granted, Region, Store, Tx, Watch,
};

const PAGE: usize = 4096;
const SECTOR: u64 = 512;
const SEGS_PER_INDIRECT_PAGE: usize = BLKIF_SEGS_PER_INDIRECT_FRAME;

/// What the frontend asks for; the backend's limits cap each.
#[derive(Clone, Debug)]
pub struct Options {
    /// Largest ring page order to use (0..=4 like Linux; the backend's
    /// `max-ring-page-order` caps it).
    pub max_ring_page_order: u32,
    /// Queues (rings) to use; the backend's `multi-queue-max-queues` caps it.
    pub queues: u32,
    /// Segments per indirect request (0: never use indirect requests); the
    /// backend's `feature-max-indirect-segments` caps it.
    pub indirect_segments: u32,
    /// Advertise `feature-persistent` (the data pool is granted once either way).
    pub persistent: bool,
    /// Pages in the data pool granted to the backend (buffers come from here).
    pub pool_pages: usize,
    /// How long to wait for the backend at each step before giving up.
    pub timeout: Duration,
    /// When [`BlkFront::poll`] must wait: spin this long looking for responses
    /// before sleeping on the event channel. A sleep and its wake-up cost 13-36
    /// us on small VMs, about a fast disk's latency, so a short spin (tens of
    /// microseconds) cuts the latency of shallow queues when a core is free;
    /// on a busy machine it takes time from the backend. Zero: never spin.
    pub poll: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_ring_page_order: 4,
            queues: 1,
            indirect_segments: 32,
            persistent: true,
            pool_pages: 4096,
            timeout: Duration::from_secs(30),
            poll: Duration::ZERO,
        }
    }
}

/// What was negotiated, and the disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Info {
    /// Disk size in 512-byte sectors (`sectors` is in `sector-size` units on the
    /// wire for some backends; xenio follows Linux: 512-byte units).
    pub sectors: u64,
    /// `sector-size`.
    pub sector_size: u32,
    /// `physical-sector-size`.
    pub physical_sector_size: u32,
    /// `info` has `VDISK_READONLY` (or `mode` is `r`).
    pub readonly: bool,
    /// `feature-flush-cache`.
    pub flush: bool,
    /// `feature-barrier`.
    pub barrier: bool,
    /// `feature-discard` with (`discard-granularity`, `discard-alignment`).
    pub discard: Option<(u64, u64)>,
    /// The ring page order in use.
    pub ring_page_order: u32,
    /// Queues in use.
    pub queues: u32,
    /// Segments per request (11, or the indirect segment count in use).
    pub max_segments: usize,
    /// The backend's `feature-persistent`.
    pub persistent: bool,
}

impl Info {
    /// Disk size in bytes.
    pub fn size(&self) -> u64 {
        self.sectors * SECTOR
    }
}

/// A buffer of pool pages (granted to the backend), `len` bytes long.
#[derive(Debug)]
pub struct Buf {
    pages: Vec<u32>,
    len: usize,
}

impl Buf {
    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Whether the buffer is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// An I/O to submit. Offsets and lengths are in bytes, multiples of 512.
#[derive(Debug)]
pub enum Op {
    /// Read `buf.len()` bytes at `offset` into `buf`.
    Read {
        /// Byte offset on the disk.
        offset: u64,
        /// Destination (returned in the completion).
        buf: Buf,
    },
    /// Write `buf` at `offset`.
    Write {
        /// Byte offset on the disk.
        offset: u64,
        /// Source (returned in the completion).
        buf: Buf,
    },
    /// Write `buf` at `offset` ordered after every earlier request and durable
    /// before it completes (`BLKIF_OP_WRITE_BARRIER`; needs `feature-barrier`).
    WriteBarrier {
        /// Byte offset on the disk.
        offset: u64,
        /// Source (returned in the completion).
        buf: Buf,
    },
    /// Make completed writes durable (`BLKIF_OP_FLUSH_DISKCACHE`).
    Flush,
    /// Discard `len` bytes at `offset` (`BLKIF_OP_DISCARD`).
    Discard {
        /// Byte offset on the disk.
        offset: u64,
        /// Bytes.
        len: u64,
    },
}

/// Identifies a submitted [`Op`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Token(pub u64);

/// A completed [`Op`].
#[derive(Debug)]
pub struct Done {
    /// The token [`BlkFront::submit`] returned.
    pub token: Token,
    /// Success, or why not.
    pub result: Result<()>,
    /// The op's buffer, back to the caller.
    pub buf: Option<Buf>,
}

/// One request waiting for a ring slot, or in one.
#[derive(Clone, Debug)]
struct Spec {
    operation: u8,
    sector: u64,
    segs: Vec<BlkifRequestSegment>,
    discard_sectors: u64,
    pending: u64,
}

#[derive(Debug, Default)]
struct Slot {
    generation: u16,
    spec: Option<Spec>,
}

struct Pending {
    token: Token,
    remaining: u32,
    status: i16,
    what: &'static str,
    buf: Option<Buf>,
}

struct Queue<G: Granted, C: EventChannel> {
    ring_grant: G,
    ring: FrontRing<BlkifRequest, BlkifResponse, Arc<Region>>,
    channel: C,
    slots: Vec<Slot>,
    free: Vec<u16>,
    /// Indirect segment pages: `pages_per_slot` per slot, granted read-write (see
    /// where they are granted).
    indirect: Option<G>,
    pages_per_slot: usize,
}

type PlatformQueue<P> = Queue<
    <<P as Platform>::Grants as GrantTable>::Granted,
    <<P as Platform>::Events as EventChannels>::Channel,
>;

/// A connected blkif frontend over platform `P`.
pub struct BlkFront<P: Platform> {
    platform: Arc<P>,
    dir: String,
    backend_dir: String,
    backend_id: DomId,
    options: Options,
    info: Info,
    queues: Vec<PlatformQueue<P>>,
    watch: <P::Store as Store>::Watch,
    pool: <P::Grants as GrantTable>::Granted,
    pool_free: Vec<u32>,
    backlog: VecDeque<Spec>,
    pending: std::collections::HashMap<u64, Pending>,
    done: VecDeque<Done>,
    next_token: u64,
    next_queue: usize,
    reconnects: u64,
    notifications: u64,
}

fn bad_key(key: &str, problem: impl Into<String>) -> Error {
    Error::BadKey {
        key: key.to_string(),
        problem: problem.into(),
    }
}

fn parse_key<T: std::str::FromStr>(v: Option<String>, key: &str, default: T) -> Result<T> {
    match v {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse()
            .map_err(|_| bad_key(key, format!("not a number: {v:?}"))),
    }
}

impl<P: Platform> BlkFront<P> {
    /// Connect the frontend whose store directory is `dir`
    /// (`/local/domain/<me>/device/vbd/<devid>`, created by the toolstack).
    pub fn connect(platform: Arc<P>, dir: &str, options: Options) -> Result<Self> {
        let store = platform.store();
        let backend_dir = store.read_string(Tx::NONE, &format!("{dir}/backend"))?;
        let backend_id = parse_key::<u16>(
            Some(store.read_string(Tx::NONE, &format!("{dir}/backend-id"))?),
            "backend-id",
            0,
        )?;
        let backend_id = DomId(backend_id);
        let watch = store.watch(&format!("{backend_dir}/state"), "blkfront-backend-state")?;
        let pool_pages = options.pool_pages.max(16);
        let pool = platform
            .grants()?
            .grant(backend_id, pool_pages, Access::ReadWrite)?;
        let mut front = BlkFront {
            dir: dir.to_string(),
            backend_dir,
            backend_id,
            info: Info {
                sectors: 0,
                sector_size: 512,
                physical_sector_size: 512,
                readonly: false,
                flush: false,
                barrier: false,
                discard: None,
                ring_page_order: 0,
                queues: 1,
                max_segments: BLKIF_MAX_SEGMENTS_PER_REQUEST,
                persistent: false,
            },
            queues: Vec::new(),
            watch,
            pool_free: (0..pool_pages as u32).rev().collect(),
            pool,
            backlog: VecDeque::new(),
            pending: Default::default(),
            done: VecDeque::new(),
            next_token: 1,
            next_queue: 0,
            reconnects: 0,
            notifications: 0,
            options,
            platform,
        };
        front.handshake()?;
        Ok(front)
    }

    /// What was negotiated.
    pub fn info(&self) -> &Info {
        &self.info
    }

    /// How many times the frontend reconnected to a new backend.
    pub fn reconnects(&self) -> u64 {
        self.reconnects
    }

    /// Disk size in bytes.
    pub fn size(&self) -> u64 {
        self.info.size()
    }

    /// Notifications sent to the backend so far.
    pub fn notifications(&self) -> u64 {
        self.notifications
    }

    fn endpoint(&self) -> Result<Endpoint<'_, P::Store>> {
        Ok(Endpoint::frontend(self.platform.store(), &self.dir)?)
    }

    /// The handshake, for the first connection and every reconnection.
    fn handshake(&mut self) -> Result<()> {
        let timeout = self.options.timeout;
        let platform = self.platform.clone();
        let mut ep = Endpoint::frontend(platform.store(), &self.dir)?;
        ep.switch(XenbusState::Initialising, &[])?;
        ep.wait_peer(timeout, |s| s == XenbusState::InitWait)?;
        let key = |k: &str| ep.peer_key(k);
        let max_order: u32 = parse_key(key("max-ring-page-order")?, "max-ring-page-order", 0)?;
        let max_queues: u32 =
            parse_key(key("multi-queue-max-queues")?, "multi-queue-max-queues", 1)?;
        let max_indirect: u32 = parse_key(
            key("feature-max-indirect-segments")?,
            "feature-max-indirect-segments",
            0,
        )?;
        let order = self.options.max_ring_page_order.min(max_order).min(8);
        let nqueues = self.options.queues.clamp(1, max_queues.max(1));
        let indirect = self
            .options
            .indirect_segments
            .min(max_indirect)
            .min(BLKIF_MAX_INDIRECT_SEGMENTS as u32) as usize;
        let max_segments = if indirect > BLKIF_MAX_SEGMENTS_PER_REQUEST {
            indirect
        } else {
            BLKIF_MAX_SEGMENTS_PER_REQUEST
        };
        drop(ep);

        let grants = self.platform.grants()?;
        let events = self.platform.events();
        let reconnect = !self.queues.is_empty();
        if !reconnect
            || self.queues.len() != nqueues as usize
            || self.info.ring_page_order != order
            || self.info.max_segments != max_segments
        {
            if reconnect
                && !self
                    .queues
                    .iter()
                    .all(|q| q.slots.iter().all(|s| s.spec.is_none()))
            {
                // Geometry changed with requests in flight: put them back in the backlog.
                for q in &mut self.queues {
                    for s in &mut q.slots {
                        if let Some(spec) = s.spec.take() {
                            self.backlog.push_front(spec);
                        }
                    }
                }
            }
            self.queues.clear();
            for _ in 0..nqueues {
                let ring_grant = grants.grant(self.backend_id, 1 << order, Access::ReadWrite)?;
                let ring = FrontRing::init(ring_grant.region().clone())?;
                let size = ring.size() as usize;
                let pages_per_slot = if max_segments > BLKIF_MAX_SEGMENTS_PER_REQUEST {
                    max_segments.div_ceil(SEGS_PER_INDIRECT_PAGE)
                } else {
                    0
                };
                // Granted read-write although the backend only reads them: Linux's
                // xen-blkback maps every grant read-write once persistent grants are
                // negotiated (xen_blkbk_map adds GNTMAP_readonly only without them),
                // indirect pages included, and Xen refuses a read-write map of a
                // read-only grant, so the request fails (found in the Xen lab).
                // Linux's xen-blkfront grants its indirect pages read-write too.
                let indirect = if pages_per_slot > 0 {
                    Some(grants.grant(self.backend_id, size * pages_per_slot, Access::ReadWrite)?)
                } else {
                    None
                };
                self.queues.push(Queue {
                    ring_grant,
                    ring,
                    channel: events.alloc_unbound(self.backend_id)?,
                    slots: (0..size).map(|_| Slot::default()).collect(),
                    free: (0..size as u16).rev().collect(),
                    indirect,
                    pages_per_slot,
                });
            }
        } else {
            // Same geometry: reset the rings in place, new event channels.
            for q in &mut self.queues {
                q.ring = FrontRing::init(q.ring_grant.region().clone())?;
                q.channel = events.alloc_unbound(self.backend_id)?;
            }
        }

        let mut keys: Vec<(String, String)> = Vec::new();
        let one = |prefix: &str, refs: &[GrantRef], port: u32, keys: &mut Vec<(String, String)>| {
            if order == 0 {
                keys.push((format!("{prefix}ring-ref"), refs[0].0.to_string()));
            } else {
                for (i, r) in refs.iter().enumerate() {
                    keys.push((format!("{prefix}ring-ref{i}"), r.0.to_string()));
                }
            }
            keys.push((format!("{prefix}event-channel"), port.to_string()));
        };
        if order > 0 {
            keys.push(("ring-page-order".into(), order.to_string()));
        }
        if nqueues > 1 {
            keys.push(("multi-queue-num-queues".into(), nqueues.to_string()));
            for (i, q) in self.queues.iter().enumerate() {
                one(
                    &format!("queue-{i}/"),
                    q.ring_grant.refs(),
                    q.channel.port().0,
                    &mut keys,
                );
            }
        } else {
            one(
                "",
                self.queues[0].ring_grant.refs(),
                self.queues[0].channel.port().0,
                &mut keys,
            );
        }
        keys.push(("protocol".into(), "x86_64-abi".into()));
        keys.push((
            "feature-persistent".into(),
            if self.options.persistent { "1" } else { "0" }.into(),
        ));
        let mut ep = Endpoint::frontend(platform.store(), &self.dir)?;
        let refs: Vec<(&str, String)> = keys.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        ep.switch(XenbusState::Initialised, &refs)?;
        ep.wait_peer(timeout, |s| s == XenbusState::Connected)?;

        let key = |k: &str| ep.peer_key(k);
        let sectors: u64 = parse_key(key("sectors")?, "sectors", u64::MAX)?;
        if sectors == u64::MAX {
            return Err(bad_key("sectors", "missing"));
        }
        let info_bits: u32 = parse_key(key("info")?, "info", 0)?;
        let mode_ro = key("mode")?.is_some_and(|m| m.trim() == "r");
        let discard = if parse_key::<u32>(key("feature-discard")?, "feature-discard", 0)? == 1 {
            Some((
                parse_key(key("discard-granularity")?, "discard-granularity", 512u64)?,
                parse_key(key("discard-alignment")?, "discard-alignment", 0u64)?,
            ))
        } else {
            None
        };
        self.info = Info {
            sectors,
            sector_size: parse_key(key("sector-size")?, "sector-size", 512)?,
            physical_sector_size: parse_key(
                key("physical-sector-size")?,
                "physical-sector-size",
                512,
            )?,
            readonly: info_bits & VDISK_READONLY != 0 || mode_ro,
            flush: parse_key::<u32>(key("feature-flush-cache")?, "feature-flush-cache", 0)? == 1,
            barrier: parse_key::<u32>(key("feature-barrier")?, "feature-barrier", 0)? == 1,
            discard,
            ring_page_order: order,
            queues: nqueues,
            max_segments,
            persistent: parse_key::<u32>(key("feature-persistent")?, "feature-persistent", 0)? == 1,
        };
        ep.switch(XenbusState::Connected, &[])?;
        drop(ep);
        // Re-issue everything that had no response, in slot order, then the backlog.
        for qi in 0..self.queues.len() {
            let in_flight: Vec<usize> = (0..self.queues[qi].slots.len())
                .filter(|&s| self.queues[qi].slots[s].spec.is_some())
                .collect();
            for s in in_flight {
                self.push_slot(qi, s)?;
            }
            self.publish(qi)?;
        }
        self.issue_backlog()?;
        Ok(())
    }

    // ------------------------------------------------------------ buffers

    /// A buffer of `len` bytes from the grant pool (rounded up to pages).
    pub fn alloc(&mut self, len: usize) -> Result<Buf> {
        let n = len.div_ceil(PAGE).max(1);
        if n > self.pool_free.len() {
            return Err(Error::PoolExhausted(self.pool_in_use()));
        }
        let at = self.pool_free.len() - n;
        let pages = self.pool_free.split_off(at);
        Ok(Buf { pages, len })
    }

    /// Give a buffer back to the pool.
    pub fn free(&mut self, buf: Buf) {
        self.pool_free.extend(buf.pages);
    }

    fn pool_in_use(&self) -> usize {
        self.pool.refs().len() - self.pool_free.len()
    }

    /// Copy `data` into `buf` at `offset`.
    pub fn buf_write(&self, buf: &Buf, offset: usize, data: &[u8]) -> Result<()> {
        self.buf_io(buf, offset, data.len(), |region, at, range| {
            region.write(at, &data[range])
        })
    }

    /// Copy bytes of `buf` at `offset` into `out`.
    pub fn buf_read(&self, buf: &Buf, offset: usize, out: &mut [u8]) -> Result<()> {
        let len = out.len();
        self.buf_io(buf, offset, len, |region, at, range| {
            region.read(at, &mut out[range])
        })
    }

    fn buf_io(
        &self,
        buf: &Buf,
        offset: usize,
        len: usize,
        mut f: impl FnMut(&Region, usize, std::ops::Range<usize>) -> xenio_xenbus::Result<()>,
    ) -> Result<()> {
        if offset.checked_add(len).is_none_or(|end| end > buf.len) {
            return Err(Error::Invalid(format!(
                "{len} bytes at {offset} is outside a {}-byte buffer",
                buf.len
            )));
        }
        let region = self.pool.region();
        let mut done = 0;
        while done < len {
            let pos = offset + done;
            let (page, in_page) = (pos / PAGE, pos % PAGE);
            let n = (PAGE - in_page).min(len - done);
            let at = buf.pages[page] as usize * PAGE + in_page;
            f(region, at, done..done + n)?;
            done += n;
        }
        Ok(())
    }

    // ------------------------------------------------------------ submission

    /// Submit an I/O; its completion comes out of [`BlkFront::poll`].
    pub fn submit(&mut self, op: Op) -> Result<Token> {
        let token = Token(self.next_token);
        self.next_token += 1;
        let check = |offset: u64, len: u64, what: &str, info: &Info| -> Result<()> {
            if offset % SECTOR != 0 || len % SECTOR != 0 || len == 0 {
                return Err(Error::Invalid(format!(
                    "{what} of {len} bytes at {offset}: offset and length must be non-zero multiples of 512"
                )));
            }
            if offset.checked_add(len).is_none_or(|end| end > info.size()) {
                return Err(Error::Invalid(format!(
                    "{what} of {len} bytes at {offset} is past the end of a {}-byte disk",
                    info.size()
                )));
            }
            Ok(())
        };
        let (specs, buf, what) = match op {
            Op::Read { offset, buf }
            | Op::Write { offset, buf }
            | Op::WriteBarrier { offset, buf }
                if check(offset, buf.len as u64, "I/O", &self.info).is_err() =>
            {
                let e = check(offset, buf.len as u64, "I/O", &self.info).unwrap_err();
                self.free(buf);
                return Err(e);
            }
            Op::Read { offset, buf } => {
                (self.split(BLKIF_OP_READ, offset, &buf), Some(buf), "read")
            }
            Op::Write { offset, buf } | Op::WriteBarrier { offset, buf } if self.info.readonly => {
                self.free(buf);
                return Err(Error::Invalid(format!(
                    "write at {offset}: the disk is read-only"
                )));
            }
            Op::Write { offset, buf } => {
                (self.split(BLKIF_OP_WRITE, offset, &buf), Some(buf), "write")
            }
            Op::WriteBarrier { offset, buf } => {
                if buf.pages.len() > BLKIF_MAX_SEGMENTS_PER_REQUEST {
                    let n = buf.len;
                    self.free(buf);
                    return Err(Error::Invalid(format!(
                        "a barrier write carries at most 44 KiB, not {n} bytes"
                    )));
                }
                (
                    self.split(BLKIF_OP_WRITE_BARRIER, offset, &buf),
                    Some(buf),
                    "barrier write",
                )
            }
            Op::Flush => (
                vec![Spec {
                    operation: BLKIF_OP_FLUSH_DISKCACHE,
                    sector: 0,
                    segs: vec![],
                    discard_sectors: 0,
                    pending: 0,
                }],
                None,
                "flush",
            ),
            Op::Discard { offset, len } => {
                check(offset, len, "discard", &self.info)?;
                if self.info.discard.is_none() {
                    return Err(Error::NotSupported(
                        "discard (the backend has no feature-discard)".into(),
                    ));
                }
                (
                    vec![Spec {
                        operation: BLKIF_OP_DISCARD,
                        sector: offset / SECTOR,
                        segs: vec![],
                        discard_sectors: len / SECTOR,
                        pending: 0,
                    }],
                    None,
                    "discard",
                )
            }
        };
        self.pending.insert(
            token.0,
            Pending {
                token,
                remaining: specs.len() as u32,
                status: BLKIF_RSP_OKAY,
                what,
                buf,
            },
        );
        for mut s in specs {
            s.pending = token.0;
            self.backlog.push_back(s);
        }
        self.issue_backlog()?;
        Ok(token)
    }

    /// Split a buffer I/O into requests of at most `max_segments` page segments.
    fn split(&self, operation: u8, offset: u64, buf: &Buf) -> Vec<Spec> {
        let per = if operation == BLKIF_OP_WRITE_BARRIER {
            BLKIF_MAX_SEGMENTS_PER_REQUEST
        } else {
            self.info.max_segments
        };
        let refs = self.pool.refs();
        let mut out = Vec::new();
        let mut sector = offset / SECTOR;
        let mut left = buf.len as u64;
        for chunk in buf.pages.chunks(per) {
            let mut segs = Vec::with_capacity(chunk.len());
            let start = sector;
            for &p in chunk {
                let n = left.min(PAGE as u64);
                let sects = n.div_ceil(SECTOR) as u8;
                segs.push(BlkifRequestSegment {
                    gref: refs[p as usize].0,
                    first_sect: 0,
                    last_sect: sects - 1,
                    _pad: [0; 2],
                });
                sector += u64::from(sects);
                left -= n;
            }
            out.push(Spec {
                operation,
                sector: start,
                segs,
                discard_sectors: 0,
                pending: 0,
            });
        }
        out
    }

    /// Move backlog requests into free ring slots, queue by queue, and publish.
    fn issue_backlog(&mut self) -> Result<()> {
        let mut touched = vec![false; self.queues.len()];
        while let Some(spec) = self.backlog.front() {
            let _ = spec;
            let nq = self.queues.len();
            let Some(qi) = (0..nq)
                .map(|i| (self.next_queue + i) % nq)
                .find(|&i| !self.queues[i].free.is_empty())
            else {
                break;
            };
            self.next_queue = (qi + 1) % nq;
            let spec = self.backlog.pop_front().expect("front exists");
            let q = &mut self.queues[qi];
            let slot = q.free.pop().expect("free slot") as usize;
            q.slots[slot].generation = q.slots[slot].generation.wrapping_add(1);
            q.slots[slot].spec = Some(spec);
            self.push_slot(qi, slot)?;
            touched[qi] = true;
        }
        for (qi, t) in touched.into_iter().enumerate() {
            if t {
                self.publish(qi)?;
            }
        }
        Ok(())
    }

    fn request_id(qi: usize, slot: usize, generation: u16) -> u64 {
        ((qi as u64) << 32) | ((generation as u64) << 16) | slot as u64
    }

    /// Write slot `slot`'s request into the ring (not yet published).
    fn push_slot(&mut self, qi: usize, slot: usize) -> Result<()> {
        let q = &mut self.queues[qi];
        let spec = q.slots[slot].spec.clone().expect("slot in use");
        let id = Self::request_id(qi, slot, q.slots[slot].generation);
        let req = if spec.operation == BLKIF_OP_DISCARD {
            BlkifRequest::from(BlkifRequestDiscard {
                operation: BLKIF_OP_DISCARD,
                id,
                sector_number: spec.sector,
                nr_sectors: spec.discard_sectors,
                ..Default::default()
            })
        } else if spec.segs.len() <= BLKIF_MAX_SEGMENTS_PER_REQUEST {
            let mut r = BlkifRequest {
                operation: spec.operation,
                nr_segments: spec.segs.len() as u8,
                id,
                sector_number: spec.sector,
                ..Default::default()
            };
            r.seg[..spec.segs.len()].copy_from_slice(&spec.segs);
            r
        } else {
            let g = q
                .indirect
                .as_ref()
                .ok_or_else(|| Error::Invalid("indirect request without indirect pages".into()))?;
            let base = slot * q.pages_per_slot;
            let bytes: Vec<u8> = spec.segs.iter().flat_map(bytemuck_bytes).collect();
            g.region().write(base * PAGE, &bytes)?;
            let mut grefs = [0u32; BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST];
            for (i, r) in g.refs()[base..base + spec.segs.len().div_ceil(SEGS_PER_INDIRECT_PAGE)]
                .iter()
                .enumerate()
            {
                grefs[i] = r.0;
            }
            BlkifRequest::from(BlkifRequestIndirect {
                operation: BLKIF_OP_INDIRECT,
                indirect_op: spec.operation,
                nr_segments: spec.segs.len() as u16,
                id,
                sector_number: spec.sector,
                indirect_grefs: grefs,
                ..Default::default()
            })
        };
        q.ring.push_request(&req)?;
        Ok(())
    }

    fn publish(&mut self, qi: usize) -> Result<()> {
        let q = &mut self.queues[qi];
        if q.ring.push_requests_and_check_notify().is_required() {
            q.channel.notify()?;
            self.notifications += 1;
        }
        Ok(())
    }

    // ------------------------------------------------------------ completion

    /// Collect completions into `out`, waiting up to `wait` for at least one if
    /// none is ready (`None`: do not wait). Returns how many were added.
    pub fn poll(&mut self, out: &mut Vec<Done>, wait: Option<Duration>) -> Result<usize> {
        let deadline = wait.map(|w| Instant::now() + w);
        loop {
            self.reap()?;
            if !self.done.is_empty() {
                let n = self.done.len();
                out.extend(self.done.drain(..));
                return Ok(n);
            }
            let Some(deadline) = deadline else {
                return Ok(0);
            };
            if self.pending.is_empty() {
                return Ok(0);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(0);
            }
            if self.spin(left.min(self.options.poll))? {
                continue;
            }
            self.sleep(left.min(Duration::from_millis(100)))?;
        }
    }

    /// Look for responses for up to `max` without sleeping; whether any came.
    fn spin(&mut self, max: Duration) -> Result<bool> {
        if max.is_zero() {
            return Ok(false);
        }
        xenio_ring::spin::spin_for(max, || {
            for q in &mut self.queues {
                if q.ring.unconsumed_responses()? > 0 {
                    return Ok(true);
                }
            }
            Ok(false)
        })
    }

    /// Sleep until an event channel fires (or `max` passes), watching the backend.
    fn sleep(&mut self, max: Duration) -> Result<()> {
        // Arm every queue: only sleep if no queue has work after its final check.
        for q in &mut self.queues {
            if q.ring.final_check_for_responses()? {
                return Ok(());
            }
        }
        let fired = match self.queues.len() {
            1 => self.queues[0].channel.wait(Some(max))?,
            _ => self.wait_any(max)?,
        };
        if !fired {
            self.check_backend()?;
        }
        Ok(())
    }

    /// Several queues: sleep on all their event channels at once (each channel's
    /// descriptor is readable while an event is pending), then consume what fired.
    fn wait_any(&mut self, max: Duration) -> Result<bool> {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        let mut fds: Vec<PollFd<'_>> = self
            .queues
            .iter()
            .map(|q| PollFd::new(q.channel.as_fd(), PollFlags::POLLIN))
            .collect();
        let ms = u16::try_from(max.as_millis().max(1)).unwrap_or(u16::MAX);
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => {
                return Err(Error::Platform(xenio_xenbus::Error::EventChannel {
                    port: self.queues[0].channel.port(),
                    reason: format!("poll on {} event channels: {e}", fds.len()),
                }));
            }
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        let mut any = false;
        for (q, ready) in self.queues.iter().zip(ready) {
            if ready {
                any |= q.channel.take_pending()?;
            }
        }
        Ok(any)
    }

    /// If the backend left `Connected` (it died and a new one is starting, or it
    /// is closing), reconnect and re-issue what is in flight.
    fn check_backend(&mut self) -> Result<()> {
        let mut changed = false;
        while self.watch.next_event(Some(Duration::ZERO))?.is_some() {
            changed = true;
        }
        if !changed {
            return Ok(());
        }
        let state = xenio_xenbus::handshake::read_state(
            self.platform.store(),
            &format!("{}/state", self.backend_dir),
        )?;
        if state == XenbusState::Connected {
            return Ok(());
        }
        tracing::info!(
            "backend {} went to {state:?}: reconnecting",
            self.backend_dir
        );
        self.reconnects += 1;
        self.handshake()
    }

    /// Take every response from every queue and complete ops.
    fn reap(&mut self) -> Result<()> {
        let mut rsps = Vec::new();
        for qi in 0..self.queues.len() {
            rsps.clear();
            self.queues[qi].ring.take_responses(&mut rsps)?;
            for r in &rsps {
                self.complete_one(qi, r)?;
            }
        }
        if !self.backlog.is_empty() {
            self.issue_backlog()?;
        }
        Ok(())
    }

    fn complete_one(&mut self, qi: usize, r: &BlkifResponse) -> Result<()> {
        let backend = self.backend_id;
        let bad = |what: String| Error::Backend { backend, what };
        let (rq, generation, slot) = (
            (r.id >> 32) as usize,
            (r.id >> 16) as u16,
            (r.id & 0xffff) as usize,
        );
        let q = &mut self.queues[qi];
        let Some(s) = q.slots.get_mut(slot).filter(|_| rq == qi) else {
            return Err(bad(format!("response with unknown id {:#x}", r.id)));
        };
        let Some(spec) = s.spec.as_ref().filter(|_| s.generation == generation) else {
            return Err(bad(format!(
                "response for id {:#x}, which is not in flight (duplicate?)",
                r.id
            )));
        };
        let expected = if spec.segs.len() > BLKIF_MAX_SEGMENTS_PER_REQUEST {
            BLKIF_OP_INDIRECT
        } else {
            spec.operation
        };
        if r.operation != expected && r.operation != spec.operation {
            return Err(bad(format!(
                "response for id {:#x} has operation {}, the request was {expected}",
                r.id, r.operation
            )));
        }
        let pending_key = spec.pending;
        s.spec = None;
        q.free.push(slot as u16);
        if let Some(p) = self.pending.get_mut(&pending_key) {
            if r.status != BLKIF_RSP_OKAY && p.status == BLKIF_RSP_OKAY {
                p.status = r.status;
            }
            p.remaining -= 1;
            if p.remaining == 0 {
                let p = self.pending.remove(&pending_key).expect("present");
                let result = match p.status {
                    BLKIF_RSP_OKAY => Ok(()),
                    BLKIF_RSP_EOPNOTSUPP => Err(Error::NotSupported(p.what.into())),
                    _ => Err(Error::Io(p.what.into())),
                };
                self.done.push_back(Done {
                    token: p.token,
                    result,
                    buf: p.buf,
                });
            }
        }
        Ok(())
    }

    /// Submit and wait for one op.
    fn run(&mut self, op: Op) -> Result<Option<Buf>> {
        let token = self.submit(op)?;
        let deadline = Instant::now() + self.options.timeout;
        let mut out = Vec::new();
        loop {
            out.clear();
            self.poll(&mut out, Some(Duration::from_millis(200)))?;
            let mut mine = None;
            for d in out.drain(..) {
                if d.token == token {
                    mine = Some(d);
                } else {
                    self.done.push_back(d);
                }
            }
            if let Some(d) = mine {
                return d.result.map(|()| d.buf);
            }
            if Instant::now() > deadline {
                return Err(Error::Timeout(format!(
                    "no completion for {token:?} after {:?}",
                    self.options.timeout
                )));
            }
        }
    }

    // ------------------------------------------------------------ blocking API

    /// Read `out.len()` bytes at `offset` (both multiples of 512).
    pub fn read_at(&mut self, offset: u64, out: &mut [u8]) -> Result<()> {
        for (i, chunk) in out.chunks_mut(self.chunk_bytes()).enumerate() {
            let off = offset + (i * self.chunk_bytes()) as u64;
            let buf = self.alloc(chunk.len())?;
            let buf = self
                .run(Op::Read { offset: off, buf })?
                .expect("reads return their buffer");
            let r = self.buf_read(&buf, 0, chunk);
            self.free(buf);
            r?;
        }
        Ok(())
    }

    /// Write `data` at `offset` (both multiples of 512).
    pub fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        for (i, chunk) in data.chunks(self.chunk_bytes()).enumerate() {
            let off = offset + (i * self.chunk_bytes()) as u64;
            let buf = self.alloc(chunk.len())?;
            if let Err(e) = self.buf_write(&buf, 0, chunk) {
                self.free(buf);
                return Err(e);
            }
            let buf = self
                .run(Op::Write { offset: off, buf })?
                .expect("writes return their buffer");
            self.free(buf);
        }
        Ok(())
    }

    /// Make written data durable.
    pub fn flush(&mut self) -> Result<()> {
        if !self.info.flush && !self.info.barrier {
            return Err(Error::NotSupported("flush (no feature-flush-cache)".into()));
        }
        self.run(Op::Flush).map(drop)
    }

    /// Discard `len` bytes at `offset`.
    pub fn discard(&mut self, offset: u64, len: u64) -> Result<()> {
        self.run(Op::Discard { offset, len }).map(drop)
    }

    fn chunk_bytes(&self) -> usize {
        (self.pool.refs().len() / 4).clamp(1, 256) * PAGE
    }

    /// Tear down: Closing, wait for the backend, Closed.
    pub fn close(self) -> Result<()> {
        let ep = self.endpoint()?;
        ep.switch(XenbusState::Closing, &[])?;
        let mut ep = ep;
        ep.wait_peer(self.options.timeout, |s| {
            matches!(
                s,
                XenbusState::Closing | XenbusState::Closed | XenbusState::Unknown
            )
        })?;
        ep.switch(XenbusState::Closed, &[])?;
        Ok(())
    }

    /// Requests submitted and not completed.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// The grant references of the data pool (for tests and diagnostics).
    pub fn pool_refs(&self) -> &[GrantRef] {
        self.pool.refs()
    }
}

fn bytemuck_bytes(s: &BlkifRequestSegment) -> [u8; 8] {
    let mut b = [0u8; 8];
    b[..4].copy_from_slice(&s.gref.to_le_bytes());
    b[4] = s.first_sect;
    b[5] = s.last_sect;
    b
}
