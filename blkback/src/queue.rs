//! One queue's event loop: take a batch from the ring, validate it, find the
//! memory of every segment (persistent grant cache, per-request mapping, or grant
//! copy into bounce buffers), plan it (reordering), run the plan on the storage,
//! answer, notify only when the frontend asked. One thread per ring, no locks on
//! this path.

use crate::error::{Error, Result};
use crate::inflight::Inflight;
use crate::poll::Waits;
use crate::reorder::{IoKind, Piece, Planner, ReorderMode};
use crate::report::{IoErrorHook, IoFailure};
use crate::request::{self, Limits, Op, Parsed, Request};
use crate::ring::BlkRing;
use crate::storage::seam::StorageQueue;
use crate::storage::status::blkif_status;
use rustc_hash::FxHashMap as HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use xenio_hostio::disk::{Busy, Completion, Io, IoMem, IoSeg, WaitEnd};
use xenio_ring::wait::{Wait, WaitPolicy, WaitStats};
use xenio_xen_sys::blkif::*;
use xenio_xen_sys::{DomId, GrantRef};
use xenio_xenbus::{
    CopyBuf, EventChannel, GrantCopy, GrantMapper, GrantWindow, Region, SpuriousEvents,
};

const PAGE: usize = 4096;

/// How the backend reaches the frontend's data pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrantMode {
    /// Map the grants (zero copy): cached when the frontend asks for persistent
    /// grants, mapped and unmapped per request otherwise.
    Map,
    /// Grant copy into and out of bounce buffers (what QEMU's qdisk does).
    Copy,
}

impl std::str::FromStr for GrantMode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "map" => Ok(GrantMode::Map),
            "copy" => Ok(GrantMode::Copy),
            o => Err(format!("grant mode {o:?}: expected map or copy")),
        }
    }
}

/// Per-queue knobs.
#[derive(Clone, Debug)]
pub struct QueueConfig {
    /// Map or copy.
    pub grant_mode: GrantMode,
    /// Keep mappings of the frontend's pages (only if it advertised
    /// `feature-persistent` and mode is `Map`).
    pub persistent: bool,
    /// Most cached persistent grants (least recently used ones are unmapped).
    pub max_persistent_grants: usize,
    /// Reordering of each batch.
    pub reorder: ReorderMode,
    /// Largest merged I/O, in sectors.
    pub max_merge_sectors: u64,
    /// Most requests taken from the ring in one batch.
    pub max_batch: usize,
    /// How the queue waits when it has nothing to do: looking at the ring when
    /// nothing is in flight, at the ring and the storage's completions while
    /// I/O is. [`Wait::Adaptive`] (the default) spins only while the queue's
    /// recent waits say the next event comes soon, and sleeps on the event
    /// channel otherwise, with one policy for each of the two waits
    /// (see [`xenio_ring::wait`]);
    /// [`Wait::Fixed`] always spins that long before it sleeps (zero: purely
    /// event-driven).
    pub wait: Wait,
    /// Sleep in the storage's own wait where it has one
    /// ([`StorageQueue::wait_with`]: one `io_uring_enter` for completions and
    /// the event channel); off, the default: `poll(2)` on the event channel
    /// and the storage's completion descriptor. The storage's wait saves a
    /// system call per sleep but measured no faster, here or on Xen (README,
    /// "One wait primitive", step 4).
    pub sleep_in_storage: bool,
    /// Storage operations in flight per queue.
    pub io_depth: u32,
    /// Storage operations handed to the kernel per system call (0: a whole
    /// stage at once). Between such chunks the worker answers what completed,
    /// so the frontend can refill the ring while the rest is submitted:
    /// submitting costs several microseconds per operation in the kernel, and a
    /// large batch submitted at once lets the disk's queue run dry meanwhile.
    pub submit_chunk: usize,
    /// Called for every failed storage operation that fails requests (besides
    /// [`Counters::io_errors`] and [`Counters::last_io_error`]).
    pub on_io_error: Option<IoErrorHook>,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            grant_mode: GrantMode::Map,
            persistent: true,
            max_persistent_grants: 16384,
            reorder: ReorderMode::Merge,
            max_merge_sectors: 2048,
            max_batch: 512,
            wait: Wait::Adaptive,
            sleep_in_storage: false,
            io_depth: 128,
            submit_chunk: 4,
            on_io_error: None,
        }
    }
}

/// Counters of one device, shared by its queues (read them any time).
#[derive(Debug, Default)]
pub struct Counters {
    /// Requests taken from the rings.
    pub requests: AtomicU64,
    /// Requests answered with an error (including rejected ones).
    pub errors: AtomicU64,
    /// Storage operations that failed requests (each also in
    /// [`last_io_error`](Self::last_io_error) and the
    /// [`QueueConfig::on_io_error`] hook). A merged operation that failed and
    /// was retried request by request counts only for the retries that failed.
    pub io_errors: AtomicU64,
    /// Merged storage operations that failed and were retried request by
    /// request (see [`crate::storage`]: errors stay with their requests).
    pub split_retries: AtomicU64,
    /// The last storage failure, if any.
    pub last_io_error: Mutex<Option<IoFailure>>,
    /// Requests rejected at validation.
    pub rejected: AtomicU64,
    /// Batches.
    pub batches: AtomicU64,
    /// Storage operations issued.
    pub ios: AtomicU64,
    /// Requests merged into a neighbour's I/O.
    pub merged: AtomicU64,
    /// Requests not issued in ring order.
    pub reordered: AtomicU64,
    /// Notifications sent to the frontend.
    pub notifications: AtomicU64,
    /// Times the queue slept on its event channel.
    pub sleeps: AtomicU64,
    /// Waits that ended while the queue spun (no sleep, no wake-up).
    pub spun: AtomicU64,
    /// Spins that found nothing (the queue went on to sleep).
    pub spin_misses: AtomicU64,
    /// Pauses after events that brought no work (an event storm, XSA-332:
    /// see [`SpuriousEvents`]).
    pub storm_pauses: AtomicU64,
    /// Persistent grant cache hits and misses.
    pub pgrant_hits: AtomicU64,
    /// Persistent grant cache misses (mappings made).
    pub pgrant_misses: AtomicU64,
    /// Storage operations into registered memory (persistent grants the
    /// storage registered with the kernel, see [`StorageQueue::register_buffer`]).
    pub registered_ios: AtomicU64,
    /// Sleeps that lasted their whole 100 ms cap although work was ready
    /// when they ended (a request in the ring or a completion): a wake-up
    /// that never came. A lost wake-up does not hang the queue, it costs
    /// 100 ms, so this is how one shows; it must stay 0 (a frontend that
    /// queues requests without notifying also counts here).
    pub missed_wakeups: AtomicU64,
}

impl Counters {
    fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    /// The last storage failure, if any (a copy of
    /// [`last_io_error`](Self::last_io_error)).
    pub fn last_io_error(&self) -> Option<IoFailure> {
        self.last_io_error.lock().ok().and_then(|l| l.clone())
    }
}

/// One line: `12 requests in 3 batches, 0 errors (0 rejected, 0 failed
/// I/Os), ...`, what `xenio blkback` prints when it stops.
impl std::fmt::Display for Counters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        write!(
            f,
            "{} requests in {} batches, {} errors ({} rejected, {} failed I/Os, {} merged I/Os retried alone), {} I/Os, {} merged, {} reordered, {} notifications, {} sleeps, {} waits ended spinning, {} spins missed, {} I/Os into registered memory, {} missed wake-ups",
            n(&self.requests),
            n(&self.batches),
            n(&self.errors),
            n(&self.rejected),
            n(&self.io_errors),
            n(&self.split_retries),
            n(&self.ios),
            n(&self.merged),
            n(&self.reordered),
            n(&self.notifications),
            n(&self.sleeps),
            n(&self.spun),
            n(&self.spin_misses),
            n(&self.registered_ios),
            n(&self.missed_wakeups)
        )?;
        if let Some(last) = self.last_io_error() {
            write!(f, "; last failed I/O: {last}")?;
        }
        Ok(())
    }
}

/// Grant references below this are mapped into the queue's grant window at
/// slot = reference (128 MiB of address space, no memory until used), so that
/// a request over consecutive references is one buffer; Linux guests' grant
/// tables hold 32 frames of 512 v1 entries by default (Xen's
/// `max_grant_frames` allows 64: 32768 entries), xenio's local one 16384.
const WINDOW_SLOTS: usize = 32768;

/// A cached mapping and when it was last used.
type Cached = (Arc<Region>, u64);

/// Least-recently-used cache of single-page persistent mappings, laid out in a
/// grant window ([`GrantWindow`]: slot = grant reference) so that consecutive
/// references are contiguous memory, and indexed by reference.
struct PersistentGrants {
    window: Option<GrantWindow>,
    /// By reference, for references below [`WINDOW_SLOTS`].
    low: Vec<Option<Cached>>,
    /// References from [`WINDOW_SLOTS`] on.
    high: HashMap<u32, Cached>,
    len: usize,
    max: usize,
    clock: u64,
}

impl PersistentGrants {
    fn new(max: usize) -> Self {
        let window = match GrantWindow::new(WINDOW_SLOTS) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::info!("no grant window ({e}): persistent grants mapped one by one");
                None
            }
        };
        PersistentGrants {
            window,
            low: Vec::new(),
            high: HashMap::default(),
            len: 0,
            max: max.max(1),
            clock: 0,
        }
    }

    fn entry(&mut self, gref: u32) -> Option<&mut Cached> {
        match self.low.get_mut(gref as usize) {
            Some(e) => e.as_mut(),
            None => self.high.get_mut(&gref),
        }
    }

    fn remove(&mut self, gref: u32) -> Option<Cached> {
        let e = match self.low.get_mut(gref as usize) {
            Some(e) => e.take(),
            None => self.high.remove(&gref),
        };
        if e.is_some() {
            self.len -= 1;
        }
        e
    }

    fn insert(&mut self, gref: u32, e: Cached) {
        let i = gref as usize;
        if i < WINDOW_SLOTS {
            if self.low.len() <= i {
                self.low.resize(i + 1, None);
            }
            if self.low[i].replace(e).is_none() {
                self.len += 1;
            }
        } else if self.high.insert(gref, e).is_none() {
            self.len += 1;
        }
    }

    /// Unmap every cached mapping: those laid in the window with one `mmap`
    /// per run of neighbouring slots ([`GrantWindow::release`]; one call for
    /// a frontend that grants its buffers in runs) rather than one each, the
    /// rest one by one. A mapping still in use elsewhere is unmapped when its
    /// last user lets go. Returns how many window `mmap` calls that took.
    fn release(self) -> usize {
        let mine: Vec<Region> = self
            .low
            .into_iter()
            .flatten()
            .chain(self.high.into_values())
            .filter_map(|(r, _)| Arc::try_unwrap(r).ok())
            .collect();
        match self.window {
            Some(w) => w.release(mine),
            None => 0,
        }
    }

    /// Every cached mapping.
    fn regions(&self) -> impl Iterator<Item = &Arc<Region>> {
        self.low
            .iter()
            .flatten()
            .chain(self.high.values())
            .map(|(r, _)| r)
    }

    /// The mapping of `gref`, from the cache or mapped now (and cached, and
    /// offered to `storage` as memory to register, while there is room).
    fn get<M: GrantMapper, Q: StorageQueue>(
        &mut self,
        mapper: &M,
        storage: &mut Q,
        fe: DomId,
        gref: GrantRef,
        c: &Counters,
    ) -> xenio_xenbus::Result<Arc<Region>> {
        self.clock += 1;
        let now = self.clock;
        if let Some((r, used)) = self.entry(gref.0) {
            *used = now;
            Counters::add(&c.pgrant_hits, 1);
            return Ok(r.clone());
        }
        Counters::add(&c.pgrant_misses, 1);
        if self.len >= self.max {
            // Evict the least recently used mapping nobody is using right now
            // (first, so that its window slot is free again).
            let victim = self
                .low
                .iter()
                .enumerate()
                .filter_map(|(i, e)| e.as_ref().map(|e| (i as u32, e)))
                .chain(self.high.iter().map(|(k, e)| (*k, e)))
                .filter(|(_, (r, _))| Arc::strong_count(r) == 1)
                .min_by_key(|(_, (_, u))| *u)
                .map(|(k, _)| k);
            if let Some((r, _)) = victim.and_then(|v| self.remove(v)) {
                storage.unregister_buffer(&IoMem::ReadWrite(r));
            }
        }
        let region = Arc::new(match &self.window {
            Some(w) => mapper.map_in(w, gref.0 as usize, fe, gref)?,
            None => mapper.map(fe, &[gref])?,
        });
        if self.len < self.max {
            self.insert(gref.0, (region.clone(), now));
            storage.register_buffer(&IoMem::ReadWrite(region.clone()));
        }
        Ok(region)
    }
}

/// Where each segment of a request lives.
struct ReqMem {
    segs: Vec<(IoMem, usize)>,
    /// Copy mode: the bounce buffer to copy back into the grants after a read.
    bounce: Option<Arc<Region>>,
}

/// One ring being served: what [`crate::serve`] runs on a thread per queue.
/// Public so that custom set-ups (and the fuzz targets) can drive a ring
/// directly.
pub struct QueueWorker<'a, M: GrantMapper, C: EventChannel, Q: StorageQueue> {
    /// The mapped ring, in the frontend's layout (`protocol`).
    pub ring: BlkRing,
    /// Its event channel.
    pub channel: C,
    /// How to reach the frontend's grants.
    pub mapper: &'a M,
    /// The frontend's domain.
    pub frontend: DomId,
    /// This queue's storage context.
    pub storage: Q,
    /// What requests may ask for.
    pub limits: Limits,
    /// The disk's size now, in sectors, if it can change while connected
    /// (online resize): read before each batch into `limits.sectors`.
    /// `None`: `limits.sectors` stays as given.
    pub size: Option<&'a AtomicU64>,
    /// The record of requests in flight, kept so that a backend started after
    /// this one died can resume the connection ([`crate::inflight`]); its
    /// replay, if it was recovered from a dead backend's, is served first.
    /// `None`: no record.
    pub inflight: Option<Inflight>,
    /// Knobs.
    pub config: QueueConfig,
    /// Cache the frontend's grants (`feature-persistent` negotiated, map mode).
    pub persistent: bool,
    /// Where to count.
    pub counters: &'a Counters,
    /// Set to stop the loop (checked at least every 100 ms).
    pub stop: &'a AtomicBool,
}

/// A request whose I/Os are in flight.
struct InFlight {
    req: Request,
    /// Its entry in the record of requests in flight.
    slot: Option<u32>,
    mem: ReqMem,
    remaining: u32,
    status: i16,
}

/// One planned I/O in flight (possibly several storage operations).
struct IoRec {
    reqs: Vec<u64>,
    kind: IoKind,
    parts: u32,
    /// Still being submitted: not finished even when `parts` drops to 0.
    open: bool,
    /// The first error of one of its operations.
    failed: Option<io::Error>,
    /// Sectors and whether it modifies the disk, to keep later batches off it.
    range: (u64, u64, bool),
    /// When its first operation was submitted.
    started: Instant,
}

/// Requests and I/Os in flight on one queue (keyed by counters this worker
/// makes, so a fast non-keyed hash is safe).
#[derive(Default)]
struct Pipeline {
    reqs: HashMap<u64, InFlight>,
    ios: HashMap<u64, IoRec>,
    /// Storage tag -> planned I/O.
    tags: HashMap<u64, u64>,
    next: u64,
    /// How long the I/Os finished since the last wait took (submission to
    /// completion), for [`Waits::io_took`].
    took: Vec<Duration>,
}

impl Pipeline {
    fn conflicts(&self, sector: u64, n: u64, write: bool) -> bool {
        self.ios.values().any(|io| {
            let (s, m, w) = io.range;
            (w || write) && sector < s + m.max(1) && s < sector + n.max(1)
        })
    }
}

impl<M: GrantMapper, C: EventChannel, Q: StorageQueue> QueueWorker<'_, M, C, Q> {
    /// Serve until `stop` is set (`Ok`) or the ring breaks / the platform fails.
    ///
    /// Batches overlap: while one batch's I/Os are in flight the next is taken
    /// from the ring and, if its plan is a single stage of reads and writes that
    /// touch nothing in flight, submitted at once; anything else (fences,
    /// conflicts, multi-stage plans) first waits for the pipeline to drain. Each
    /// request is answered as soon as its own I/Os complete.
    ///
    /// # Errors
    ///
    /// [`Error::Ring`] when the frontend broke the ring (a producer index
    /// beyond the ring), [`Error::Platform`] when the event channel, the grant
    /// mapper or the storage's queue fails. A bad request is not an error: it
    /// is answered with `BLKIF_RSP_ERROR` or `BLKIF_RSP_EOPNOTSUPP`.
    pub fn run(mut self) -> Result<()> {
        let mut cache = PersistentGrants::new(self.config.max_persistent_grants);
        let served = self.serve(&mut cache);
        // The storage lets go of the cached mappings before they are unmapped.
        let t0 = Instant::now();
        let cached = cache.len;
        for region in cache.regions() {
            self.storage
                .unregister_buffer(&IoMem::ReadWrite(region.clone()));
        }
        let t1 = Instant::now();
        let calls = cache.release();
        let t2 = Instant::now();
        // The storage queue, the ring and the event channel.
        drop(self);
        if cached > 0 {
            let ms = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1000.0;
            tracing::info!(
                "queue closed: {cached} persistent grants let go by the storage in {:.1} ms, \
                 unmapped in {:.1} ms ({calls} window unmap call(s)); queue torn down in {:.1} ms",
                ms(t0, t1),
                ms(t1, t2),
                ms(t2, Instant::now())
            );
        }
        served
    }

    /// [`run`](Self::run)'s loop, with its persistent grant cache.
    fn serve(&mut self, cache: &mut PersistentGrants) -> Result<()> {
        let mut planner = Planner::new(self.config.reorder, self.config.max_merge_sectors);
        let mut raw = Vec::with_capacity(self.ring.size() as usize);
        // Batch-sized buffers, kept across batches: allocating them per batch
        // (a few KiB at QD32) sent malloc into consolidating its free lists,
        // 2% of the queue thread's time at 4 KiB QD32.
        let mut reqs = Vec::with_capacity(raw.capacity());
        let mut mems = Vec::with_capacity(raw.capacity());
        // Each request's entry in the record (taken) and each prepared one's.
        let mut slots: Vec<Option<u32>> = Vec::with_capacity(raw.capacity());
        let mut rslots: Vec<Option<u32>> = Vec::with_capacity(raw.capacity());
        let mut replay = self
            .inflight
            .as_mut()
            .map(Inflight::take_replay)
            .unwrap_or_default();
        if !replay.is_empty() {
            tracing::info!(
                "serving again {} request(s) a dead backend had taken",
                replay.len()
            );
        }
        let mut keys: Vec<u64> = Vec::with_capacity(raw.capacity());
        let mut completions = Vec::new();
        let mut pipe = Pipeline::default();
        let mut last = planner.stats();
        let mut last_registered = self.storage.registered_ios();
        let depth = self.config.io_depth.max(1) as usize;
        let mut waits = Waits::new(self.config.wait);
        let mut storm = SpuriousEvents::new();
        while !self.stop.load(Ordering::Relaxed) {
            let mut progress = false;
            if pipe.tags.len() < depth {
                if let Some(size) = self.size {
                    self.limits.sectors = size.load(Ordering::Relaxed);
                }
                raw.clear();
                slots.clear();
                if !replay.is_empty() {
                    for (slot, r) in replay.drain(..) {
                        raw.push(r);
                        slots.push(Some(slot));
                    }
                } else {
                    let first = self.ring.req_cons();
                    self.ring
                        .take_requests_up_to(&mut raw, self.config.max_batch)?;
                    match self.inflight.as_mut() {
                        // Recorded before any of them is answered (see `inflight`).
                        Some(rec) if !raw.is_empty() => {
                            for (i, r) in raw.iter().enumerate() {
                                slots.push(Some(rec.take(first.wrapping_add(i as u32), r)));
                            }
                            rec.consumed(self.ring.req_cons());
                        }
                        _ => slots.resize(raw.len(), None),
                    }
                }
                if !raw.is_empty() {
                    progress = true;
                    Counters::add(&self.counters.requests, raw.len() as u64);
                    Counters::add(&self.counters.batches, 1);
                    reqs.clear();
                    mems.clear();
                    rslots.clear();
                    for (r, slot) in raw.iter().zip(&slots) {
                        match self.prepare(r, cache) {
                            Ok((req, mem)) => {
                                reqs.push(req);
                                mems.push(mem);
                                rslots.push(*slot);
                            }
                            Err(rsp) => self.answer(rsp, *slot)?,
                        }
                    }
                    if !reqs.is_empty() {
                        let plan = planner.plan(&reqs);
                        let s = planner.stats();
                        Counters::add(&self.counters.merged, s.merged - last.merged);
                        Counters::add(&self.counters.reordered, s.reordered - last.reordered);
                        Counters::add(&self.counters.ios, s.ios - last.ios);
                        last = s;
                        let simple = plan.stages.len() == 1
                            && plan.stages[0].ios.iter().all(|io| {
                                matches!(io.kind, IoKind::Read | IoKind::Write)
                                    && !pipe.conflicts(
                                        io.sector,
                                        io.nr_sectors,
                                        io.kind == IoKind::Write,
                                    )
                            });
                        if !simple {
                            self.drain(&mut pipe, &mut completions)?;
                        }
                        // Register the requests, then run the stages (waiting between them).
                        keys.clear();
                        keys.extend(
                            reqs.drain(..)
                                .zip(mems.drain(..))
                                .zip(rslots.drain(..))
                                .zip(&plan.ios_per_request)
                                .map(|(((req, mem), slot), &n)| {
                                    let k = pipe.next;
                                    pipe.next += 1;
                                    pipe.reqs.insert(
                                        k,
                                        InFlight {
                                            req,
                                            slot,
                                            mem,
                                            remaining: n,
                                            status: BLKIF_RSP_OKAY,
                                        },
                                    );
                                    k
                                }),
                        );
                        let nstages = plan.stages.len();
                        for (i, stage) in plan.stages.iter().enumerate() {
                            self.submit_stage(stage, &keys, &mut pipe, &mut completions)?;
                            if i + 1 < nstages || !simple {
                                self.drain(&mut pipe, &mut completions)?;
                            }
                        }
                        let registered = self.storage.registered_ios();
                        Counters::add(
                            &self.counters.registered_ios,
                            registered.saturating_sub(last_registered),
                        );
                        last_registered = registered;
                        waits.in_flight(pipe.reqs.len());
                    }
                }
            }
            // Reap what finished without waiting, answer, publish.
            if !pipe.tags.is_empty() {
                progress |= self.reap_and_retire(&mut pipe, &mut completions)?;
            }
            self.publish()?;
            if progress {
                waits.ended();
                storm.work();
                continue;
            }
            for d in pipe.took.drain(..) {
                waits.io_took(d);
            }
            let (wait, cap) = waits.begin(pipe.reqs.len());
            if pipe.tags.is_empty() {
                self.idle(wait, cap, &mut storm)?;
            } else if self.storage.completion_fd().is_some() {
                // I/O in flight and the ring empty: spin if the policy says a
                // completion or request is due soon, else sleep until either
                // comes (asking to be notified first).
                if self.spin_for_completions(&mut pipe, &mut completions, wait, cap)? {
                    continue;
                }
                if self.ring.final_check_for_requests()? {
                    continue;
                }
                // Clear the completion descriptor, then look once more: a
                // completion posted before the clear is in the queue now, one
                // posted after it makes the descriptor readable again.
                self.storage.rearm_completion_fd();
                if self.reap_and_retire(&mut pipe, &mut completions)? {
                    self.publish()?;
                    waits.ended();
                    continue;
                }
                Counters::add(&self.counters.sleeps, 1);
                if self.wait_either()? {
                    // Nothing woke the sleep for its whole cap: work found
                    // now was missed (see `Counters::missed_wakeups`).
                    let request = self.ring.unconsumed_requests()? > 0;
                    if self.reap_and_retire(&mut pipe, &mut completions)? || request {
                        self.missed_wakeup();
                    }
                }
            } else {
                completions.clear();
                self.storage
                    .complete(&mut completions, 1, Some(Duration::from_millis(100)))?;
                self.retire(&mut pipe, &mut completions)?;
                self.publish()?;
            }
        }
        tracing::debug!("waits of this queue: {}", waits.report());
        // Stopping: let the kernel finish with the memory before it is unmapped.
        self.drain(&mut pipe, &mut completions)?;
        self.publish()
    }

    /// I/O in flight, the ring empty: for as long as the policy says, look
    /// for completions and new requests without sleeping (a sleep and its
    /// wake-up cost 13-36 us on small VMs, more than a fast disk's I/O).
    /// Returns whether something turned up.
    fn spin_for_completions(
        &mut self,
        pipe: &mut Pipeline,
        completions: &mut Vec<Completion>,
        wait: &mut WaitPolicy,
        cap: Duration,
    ) -> Result<bool> {
        let before = wait.stats();
        let found = wait.spin_at_most(cap, || {
            if self.reap_and_retire(pipe, completions)? {
                self.publish()?;
                return Ok::<_, Error>(true);
            }
            Ok(self.ring.unconsumed_requests()? > 0)
        })?;
        self.count_spin(before, wait.stats());
        Ok(found)
    }

    /// Count how a spin went (from the policy's stats before and after it).
    fn count_spin(&self, before: WaitStats, after: WaitStats) {
        Counters::add(&self.counters.spun, after.spun - before.spun);
        Counters::add(&self.counters.spin_misses, after.missed - before.missed);
    }

    /// Count a sleep that lasted its cap although work was waiting.
    fn missed_wakeup(&self) {
        Counters::add(&self.counters.missed_wakeups, 1);
        tracing::warn!("a sleep lasted 100 ms although work was ready: a missed wake-up");
    }

    /// Wait for the event channel and the storage's completions together, for
    /// at most 100 ms: in the storage's own wait where it has one (one
    /// `io_uring_enter`), else polling the channel and the completion
    /// descriptor. Whether it timed out.
    fn wait_either(&mut self) -> Result<bool> {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        if let Some(end) = self.storage_wait(Duration::from_millis(100)) {
            let end = end.map_err(|e| Error::Storage(format!("waiting: {e}")))?;
            if end.other_ready {
                self.channel.take_pending()?;
            }
            return Ok(end.timed_out);
        }
        let Some(cfd) = self.storage.completion_fd() else {
            return Ok(false);
        };
        let mut fds = [
            PollFd::new(self.channel.as_fd(), PollFlags::POLLIN),
            PollFd::new(cfd, PollFlags::POLLIN),
        ];
        let timed_out = match poll(&mut fds, PollTimeout::from(100u8)) {
            Ok(n) => n == 0,
            Err(nix::errno::Errno::EINTR) => false,
            Err(e) => return Err(Error::Storage(format!("poll: {e}"))),
        };
        let channel_ready = fds[0].revents().is_some_and(|r| !r.is_empty());
        if channel_ready {
            self.channel.take_pending()?;
        }
        Ok(timed_out)
    }

    /// The storage's own wait for its completions and the event channel,
    /// where it has one and it is wanted ([`QueueConfig::sleep_in_storage`]).
    fn storage_wait(&mut self, timeout: Duration) -> Option<io::Result<WaitEnd>> {
        if !self.config.sleep_in_storage {
            return None;
        }
        self.storage.wait_with(self.channel.as_fd(), timeout)
    }

    fn publish(&mut self) -> Result<()> {
        let notify = self.ring.push_responses_and_check_notify();
        if let Some(rec) = self.inflight.as_mut() {
            rec.published();
        }
        if notify.is_required() {
            self.channel.notify()?;
            Counters::add(&self.counters.notifications, 1);
        }
        Ok(())
    }

    /// Write a response into the ring, recording first that its request is
    /// being answered at this response index.
    fn respond(&mut self, rsp: &BlkifResponse, slot: Option<u32>) -> Result<()> {
        if let (Some(rec), Some(slot)) = (self.inflight.as_mut(), slot) {
            rec.answering(slot, self.ring.rsp_prod_pvt());
        }
        self.ring.push_response(rsp)?;
        Ok(())
    }

    /// Wait until nothing is in flight, answering as I/Os complete.
    fn drain(&mut self, pipe: &mut Pipeline, completions: &mut Vec<Completion>) -> Result<()> {
        while !pipe.tags.is_empty() {
            completions.clear();
            let before = pipe.tags.len();
            self.storage
                .complete(completions, 1, Some(Duration::from_secs(60)))?;
            if completions.is_empty() && pipe.tags.len() == before {
                return Err(Error::Storage(
                    "storage completed nothing within 60 s".into(),
                ));
            }
            self.retire(pipe, completions)?;
        }
        self.publish()
    }

    /// Submit every I/O of a stage.
    fn submit_stage(
        &mut self,
        stage: &crate::reorder::Stage,
        keys: &[u64],
        pipe: &mut Pipeline,
        completions: &mut Vec<Completion>,
    ) -> Result<()> {
        let chunk = self.config.submit_chunk;
        let mut unflushed = 0usize;
        for io in &stage.ios {
            let reqs: Vec<u64> = io.reqs.iter().map(|&r| keys[r]).collect();
            let pieces = Pieces::Planned {
                pieces: &io.pieces,
                keys,
            };
            unflushed += self.submit_io(pipe, reqs, io.kind, io.sector, io.nr_sectors, pieces)?;
            if chunk > 0 && unflushed >= chunk {
                // Start these, and answer what already finished so the frontend
                // can queue more while the rest of the stage is submitted.
                self.storage.flush_submissions()?;
                unflushed = 0;
                if self.reap_and_retire(pipe, completions)? {
                    self.publish()?;
                }
            }
        }
        self.storage.flush_submissions()?;
        Ok(())
    }

    /// Register one I/O for `reqs` and submit its storage operations (long
    /// reads and writes in chunks of at most 1024 segments, the most
    /// readv/writev take). Returns how many operations it submitted.
    fn submit_io(
        &mut self,
        pipe: &mut Pipeline,
        reqs: Vec<u64>,
        kind: IoKind,
        sector: u64,
        nr_sectors: u64,
        pieces: Pieces<'_>,
    ) -> Result<usize> {
        const MAX_IOVECS: usize = 1024;
        let id = pipe.next;
        pipe.next += 1;
        // Registered before its operations are submitted, so a completion
        // reaped while the storage queue is full finds it; `open` keeps it
        // from finishing before every operation is in.
        pipe.ios.insert(
            id,
            IoRec {
                reqs,
                kind,
                parts: 0,
                open: true,
                failed: None,
                range: (sector, nr_sectors, kind != IoKind::Read),
                started: Instant::now(),
            },
        );
        let mut nops = 0;
        match kind {
            IoKind::Read | IoKind::Write => {
                let mut offset = sector * 512;
                let n = pieces.len(pipe);
                for start in (0..n).step_by(MAX_IOVECS) {
                    let end = (start + MAX_IOVECS).min(n);
                    let make = |pipe: &Pipeline| {
                        let segs = (start..end).map(|i| pieces.seg(pipe, i)).collect();
                        if kind == IoKind::Read {
                            Io::Read { offset, segs }
                        } else {
                            Io::Write { offset, segs }
                        }
                    };
                    self.submit_op(pipe, id, make)?;
                    nops += 1;
                    if end < n {
                        // Only an I/O of more than 1024 segments gets here.
                        offset += (start..end)
                            .map(|i| pieces.seg_len(pipe, i) as u64)
                            .sum::<u64>();
                    }
                }
            }
            IoKind::Flush => {
                self.submit_op(pipe, id, |_| Io::Flush)?;
                nops += 1;
            }
            IoKind::Discard { .. } if nr_sectors == 0 => {}
            IoKind::Discard { .. } => {
                let (offset, len) = (sector * 512, nr_sectors * 512);
                self.submit_op(pipe, id, |_| Io::Discard { offset, len })?;
                nops += 1;
            }
        }
        let finished = pipe.ios.get_mut(&id).is_some_and(|rec| {
            rec.open = false;
            rec.parts == 0
        });
        if finished {
            let rec = pipe.ios.remove(&id).expect("present");
            self.finish_io(pipe, rec)?;
        }
        Ok(nops)
    }

    /// Submit one storage operation of I/O `id`; `make` builds it (again, if
    /// the storage was busy and the operation has to be submitted once more).
    fn submit_op(
        &mut self,
        pipe: &mut Pipeline,
        id: u64,
        make: impl Fn(&Pipeline) -> Io,
    ) -> Result<()> {
        let tag = pipe.next;
        pipe.next += 1;
        let mut busy_since: Option<Instant> = None;
        loop {
            match self.storage.submit(tag, make(pipe)) {
                Ok(()) => {
                    pipe.tags.insert(tag, id);
                    if let Some(rec) = pipe.ios.get_mut(&id) {
                        rec.parts += 1;
                    }
                    return Ok(());
                }
                // The storage queue is full: finish something, then retry.
                Err(e) if Busy::is(&e) && !pipe.tags.is_empty() => {
                    self.storage.flush_submissions()?;
                    let mut done = Vec::new();
                    self.storage
                        .complete(&mut done, 1, Some(Duration::from_secs(60)))?;
                    self.retire(pipe, &mut done)?;
                }
                // Busy with nothing of ours in flight (a queue shared with
                // others, say): try again shortly, for a minute at most.
                Err(e) if Busy::is(&e) && busy_since.is_none_or(|t| t.elapsed() < BUSY_FOR) => {
                    busy_since.get_or_insert_with(Instant::now);
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => {
                    tracing::debug!("submitting an I/O: {e}");
                    if let Some(rec) = pipe.ios.get_mut(&id) {
                        rec.failed.get_or_insert(e);
                    }
                    return Ok(());
                }
            }
        }
    }

    /// Take what the storage already finished (no waiting) and answer the
    /// requests it completes (not yet published); whether anything finished.
    fn reap_and_retire(
        &mut self,
        pipe: &mut Pipeline,
        completions: &mut Vec<Completion>,
    ) -> Result<bool> {
        completions.clear();
        self.storage.reap(completions)?;
        if completions.is_empty() {
            return Ok(false);
        }
        self.retire(pipe, completions)?;
        Ok(true)
    }

    /// Account completions; answer requests whose I/Os are all done.
    fn retire(&mut self, pipe: &mut Pipeline, completions: &mut Vec<Completion>) -> Result<()> {
        for c in completions.drain(..) {
            let Some(id) = pipe.tags.remove(&c.tag) else {
                continue;
            };
            let Some(rec) = pipe.ios.get_mut(&id) else {
                continue;
            };
            if let Err(e) = c.result {
                rec.failed.get_or_insert(e);
            }
            rec.parts -= 1;
            if rec.parts == 0 && !rec.open {
                let rec = pipe.ios.remove(&id).expect("present");
                self.finish_io(pipe, rec)?;
            }
        }
        Ok(())
    }

    /// An I/O is done: count it against its requests and answer those it
    /// completes. A failed I/O of several requests is submitted again request
    /// by request, so that each is answered by its own result.
    fn finish_io(&mut self, pipe: &mut Pipeline, mut rec: IoRec) -> Result<()> {
        if pipe.took.len() < 64 {
            pipe.took.push(rec.started.elapsed());
        }
        let mut status = BLKIF_RSP_OKAY;
        if let Some(e) = rec.failed.take() {
            let splittable = !matches!(rec.kind, IoKind::Flush);
            if rec.reqs.len() > 1 && splittable {
                tracing::debug!(
                    "a merged {:?} of {} requests failed ({e}): retrying each alone",
                    rec.kind,
                    rec.reqs.len()
                );
                Counters::add(&self.counters.split_retries, 1);
                for k in rec.reqs {
                    let Some(f) = pipe.reqs.get(&k) else {
                        continue;
                    };
                    let (sector, nr) = (f.req.sector, f.req.nr_sectors);
                    self.submit_io(pipe, vec![k], rec.kind, sector, nr, Pieces::Request(k))?;
                }
                return Ok(());
            }
            let result = Err(e);
            status = blkif_status(rec.kind, &result);
            if let Err(e) = &result {
                self.report(&rec, status, e);
            }
        }
        for k in rec.reqs {
            let Some(f) = pipe.reqs.get_mut(&k) else {
                continue;
            };
            // The first failure of a request's I/Os is its answer.
            if f.status == BLKIF_RSP_OKAY {
                f.status = status;
            }
            f.remaining = f.remaining.saturating_sub(1);
            if f.remaining == 0 {
                let f = pipe.reqs.remove(&k).expect("present");
                let mut st = f.status;
                if st == BLKIF_RSP_OKAY && f.req.op == Op::Read {
                    if let Some(b) = &f.mem.bounce {
                        st = self.copy_out(&f.req, b);
                    }
                }
                if st != BLKIF_RSP_OKAY {
                    Counters::add(&self.counters.errors, 1);
                }
                self.respond(&f.req.response(st), f.slot)?;
                // Dropping `f` unmaps per-request mappings.
            }
        }
        Ok(())
    }

    /// A storage failure that fails requests: logged, counted, kept, handed
    /// to the hook.
    fn report(&self, rec: &IoRec, status: i16, e: &io::Error) {
        let (sector, nr, _) = rec.range;
        let op = match rec.kind {
            IoKind::Read => "read",
            IoKind::Write => "write",
            IoKind::Flush => "flush",
            IoKind::Discard { .. } => "discard",
        };
        let failure = IoFailure::new(op, (sector * 512, nr * 512), rec.reqs.len(), status, e);
        tracing::warn!("storage I/O failed: {failure}");
        Counters::add(&self.counters.io_errors, 1);
        if let Some(hook) = &self.config.on_io_error {
            (hook.0)(&failure);
        }
        if let Ok(mut last) = self.counters.last_io_error.lock() {
            *last = Some(failure);
        }
    }

    fn answer(&mut self, rsp: BlkifResponse, slot: Option<u32>) -> Result<()> {
        Counters::add(&self.counters.errors, 1);
        self.respond(&rsp, slot)
    }

    /// Nothing on the ring and nothing in flight: spin as long as the policy
    /// says, then sleep on the channel. The wait ends (and is recorded) when
    /// the loop finds work. After events that brought no work, pause first
    /// (`storm`).
    fn idle(
        &mut self,
        wait: &mut WaitPolicy,
        cap: Duration,
        storm: &mut SpuriousEvents,
    ) -> Result<()> {
        let pause = storm.before_wait();
        if !pause.is_zero() {
            Counters::add(&self.counters.storm_pauses, 1);
            std::thread::sleep(pause);
        }
        let before = wait.stats();
        let found =
            wait.spin_at_most(cap, || Ok::<_, Error>(self.ring.unconsumed_requests()? > 0))?;
        self.count_spin(before, wait.stats());
        if found {
            return Ok(());
        }
        if self.ring.final_check_for_requests()? {
            return Ok(());
        }
        Counters::add(&self.counters.sleeps, 1);
        // Bounded so that `stop` is noticed. Through the storage's wait where
        // it has one, as with I/O in flight: the channel is then watched by
        // one poll, not by that one and this thread's at once (each would see
        // the same event, and the second would wake a wait for nothing).
        let limit = Duration::from_millis(100);
        let (woken, timed_out) = match self.storage_wait(limit) {
            Some(end) => {
                let end = end.map_err(|e| Error::Storage(format!("waiting: {e}")))?;
                // Out of time: one last look, as the channel's own `wait`
                // takes (an event that came as the wait ended was not missed).
                let woken = (end.other_ready || end.timed_out) && self.channel.take_pending()?;
                (woken, end.timed_out && !woken)
            }
            None => {
                let woken = self.channel.wait(Some(limit))?;
                (woken, !woken)
            }
        };
        if woken {
            storm.woken();
        } else if timed_out && self.ring.unconsumed_requests()? > 0 {
            // The cap passed with a request waiting: no event came for it.
            self.missed_wakeup();
        }
        Ok(())
    }

    /// Parse one request and find its memory; an error is the response to send.
    fn prepare(
        &mut self,
        raw: &BlkifRequest,
        cache: &mut PersistentGrants,
    ) -> std::result::Result<(Request, ReqMem), BlkifResponse> {
        let req = match request::parse(raw, &self.limits) {
            Ok(Parsed::Ready(r)) => r,
            Ok(Parsed::Indirect(h)) => {
                let refs = h.indirect_grefs.clone();
                let mut bytes = vec![0u8; h.nr_pages() * PAGE];
                let read = match self.config.grant_mode {
                    // With persistent grants the frontend reuses its indirect pages
                    // (Linux's does, and grants them read-write; Linux's blkback
                    // keeps them mapped too): read them through the cache instead
                    // of a map and an unmap per request, which cost two system
                    // calls, two hypercalls and a TLB flush each. A frontend that
                    // granted them read-only gets the per-request read-only map.
                    GrantMode::Map if self.persistent => {
                        self.read_persistent(&refs, &mut bytes, cache).or_else(|_| {
                            self.mapper
                                .map_readonly(self.frontend, &refs)
                                .and_then(|r| r.read(0, &mut bytes))
                        })
                    }
                    GrantMode::Map => self
                        .mapper
                        .map_readonly(self.frontend, &refs)
                        .and_then(|r| r.read(0, &mut bytes)),
                    GrantMode::Copy => self.copy_pages_in(&refs, &mut bytes),
                };
                if let Err(e) = read {
                    tracing::debug!("indirect pages of request {:#x}: {e}", h.id);
                    return Err(BlkifResponse::new(h.id, h.operation, BLKIF_RSP_ERROR));
                }
                match request::parse_indirect(&h, &bytes, &self.limits) {
                    Ok(r) => r,
                    Err(rej) => {
                        Counters::add(&self.counters.rejected, 1);
                        return Err(rej.response());
                    }
                }
            }
            Err(rej) => {
                Counters::add(&self.counters.rejected, 1);
                tracing::debug!("{rej}");
                return Err(rej.response());
            }
        };
        let fail = |req: &Request, e: xenio_xenbus::Error| {
            tracing::debug!("request {:#x}: {e}", req.id);
            req.response(BLKIF_RSP_ERROR)
        };
        let mem = match self.memory(&req, cache) {
            Ok(m) => m,
            Err(e) => return Err(fail(&req, e)),
        };
        Ok((req, mem))
    }

    /// Read whole granted pages through the persistent grant cache.
    fn read_persistent(
        &mut self,
        refs: &[GrantRef],
        out: &mut [u8],
        cache: &mut PersistentGrants,
    ) -> xenio_xenbus::Result<()> {
        for (r, chunk) in refs.iter().zip(out.chunks_mut(PAGE)) {
            cache
                .get(
                    self.mapper,
                    &mut self.storage,
                    self.frontend,
                    *r,
                    self.counters,
                )?
                .read(0, chunk)?;
        }
        Ok(())
    }

    fn copy_pages_in(&self, refs: &[GrantRef], out: &mut [u8]) -> xenio_xenbus::Result<()> {
        let mut ops: Vec<GrantCopy<'_>> = refs
            .iter()
            .zip(out.chunks_mut(PAGE))
            .map(|(r, chunk)| GrantCopy {
                domid: self.frontend,
                gref: *r,
                offset: 0,
                local: CopyBuf::FromGrant(chunk),
            })
            .collect();
        for r in self.mapper.copy(&mut ops)? {
            r?;
        }
        Ok(())
    }

    fn memory(
        &mut self,
        req: &Request,
        cache: &mut PersistentGrants,
    ) -> xenio_xenbus::Result<ReqMem> {
        if req.segments.is_empty() {
            return Ok(ReqMem {
                segs: Vec::new(),
                bounce: None,
            });
        }
        match self.config.grant_mode {
            GrantMode::Map if self.persistent => {
                let mut segs = Vec::with_capacity(req.segments.len());
                for s in &req.segments {
                    segs.push((
                        IoMem::ReadWrite(cache.get(
                            self.mapper,
                            &mut self.storage,
                            self.frontend,
                            s.gref,
                            self.counters,
                        )?),
                        s.byte_offset(),
                    ));
                }
                Ok(ReqMem { segs, bounce: None })
            }
            GrantMode::Map => {
                let refs: Vec<GrantRef> = req.segments.iter().map(|s| s.gref).collect();
                let mem = if req.op == Op::Read {
                    IoMem::ReadWrite(Arc::new(self.mapper.map(self.frontend, &refs)?))
                } else {
                    IoMem::ReadOnly(Arc::new(self.mapper.map_readonly(self.frontend, &refs)?))
                };
                let segs = req
                    .segments
                    .iter()
                    .enumerate()
                    .map(|(i, s)| (mem.clone(), i * PAGE + s.byte_offset()))
                    .collect();
                Ok(ReqMem { segs, bounce: None })
            }
            GrantMode::Copy => {
                let bounce = Arc::new(Region::anonymous(req.segments.len() * PAGE)?);
                if req.op != Op::Read {
                    let mut tmp = vec![0u8; PAGE];
                    for (i, s) in req.segments.iter().enumerate() {
                        let buf = &mut tmp[..s.byte_len()];
                        let mut ops = [GrantCopy {
                            domid: self.frontend,
                            gref: s.gref,
                            offset: s.byte_offset() as u16,
                            local: CopyBuf::FromGrant(buf),
                        }];
                        self.mapper.copy(&mut ops)?.pop().unwrap_or(Ok(()))?;
                        bounce.write(i * PAGE + s.byte_offset(), &tmp[..s.byte_len()])?;
                    }
                }
                let segs = req
                    .segments
                    .iter()
                    .enumerate()
                    .map(|(i, s)| (IoMem::ReadWrite(bounce.clone()), i * PAGE + s.byte_offset()))
                    .collect();
                Ok(ReqMem {
                    segs,
                    bounce: Some(bounce),
                })
            }
        }
    }

    /// Copy mode: after a read, copy the bounce buffer into the grants.
    fn copy_out(&self, req: &Request, bounce: &Region) -> i16 {
        let mut tmp = vec![0u8; PAGE];
        for (i, s) in req.segments.iter().enumerate() {
            let buf = &mut tmp[..s.byte_len()];
            if bounce.read(i * PAGE + s.byte_offset(), buf).is_err() {
                return BLKIF_RSP_ERROR;
            }
            let mut ops = [GrantCopy {
                domid: self.frontend,
                gref: s.gref,
                offset: s.byte_offset() as u16,
                local: CopyBuf::ToGrant(buf),
            }];
            match self.mapper.copy(&mut ops).map(|mut r| r.pop()) {
                Ok(Some(Ok(()))) => {}
                _ => return BLKIF_RSP_ERROR,
            }
        }
        BLKIF_RSP_OKAY
    }
}

/// How long a storage may say "busy" with nothing of this queue in flight
/// before the operation fails.
const BUSY_FOR: Duration = Duration::from_secs(60);

/// The segments of one I/O: a planned I/O's pieces, or (retrying it alone) all
/// of one request's segments.
#[derive(Clone, Copy)]
enum Pieces<'p> {
    /// Pieces of the batch's requests, `keys` mapping batch index to pipeline key.
    Planned {
        pieces: &'p [Piece],
        keys: &'p [u64],
    },
    /// Every segment of the request with this pipeline key.
    Request(u64),
}

impl Pieces<'_> {
    /// (pipeline key, segment index) of piece `i`.
    fn at(&self, i: usize) -> (u64, usize) {
        match *self {
            Pieces::Planned { pieces, keys } => (keys[pieces[i].req], pieces[i].seg),
            Pieces::Request(k) => (k, i),
        }
    }

    fn len(&self, pipe: &Pipeline) -> usize {
        match *self {
            Pieces::Planned { pieces, .. } => pieces.len(),
            Pieces::Request(k) => pipe.reqs.get(&k).map_or(0, |f| f.req.segments.len()),
        }
    }

    fn seg_len(&self, pipe: &Pipeline, i: usize) -> usize {
        let (k, seg) = self.at(i);
        pipe.reqs[&k].req.segments[seg].byte_len()
    }

    fn seg(&self, pipe: &Pipeline, i: usize) -> IoSeg {
        let (k, seg) = self.at(i);
        let f = &pipe.reqs[&k];
        let (mem, off) = f.mem.segs[seg].clone();
        IoSeg::new(mem, off, f.req.segments[seg].byte_len())
    }
}
