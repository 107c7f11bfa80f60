//! The request planner: how a batch of validated requests becomes I/O.
//!
//! The queue worker takes every request available on the ring (a batch), parses
//! them, and asks a [`Planner`] for a [`Plan`]: a list of [`Stage`]s run one
//! after another, each holding [`PlannedIo`]s that may run concurrently and
//! complete in any order. Whatever the mode, executing the plan leaves the
//! disk exactly as executing the batch one request at a time in ring order
//! would, and every read returns the same data:
//!
//! - two requests *conflict* when their sector ranges overlap and at least
//!   one of them writes (a write, discard, or the data of a barrier or
//!   flush); conflicting requests never share a stage, and the one earlier in
//!   ring order runs in the earlier stage (so a read after an overlapping
//!   write sees it, overlapping writes keep their order, and a write after a
//!   read does not change what the read returns);
//! - a flush (`BLKIF_OP_FLUSH_DISKCACHE`) or barrier (`BLKIF_OP_WRITE_BARRIER`)
//!   is a fence: it starts after everything before it in the batch has
//!   completed and everything after it starts after it has completed. An
//!   empty one is a single [`IoKind::Flush`]; one carrying data is a flush
//!   (so that earlier writes are stable before its data, the preflush Linux
//!   issues), the write, and another flush (so its data is stable when it is
//!   answered, the FUA a barrier write promises).
//!
//! The modes ([`ReorderMode`]):
//! - `off`: requests are issued in ring order; a new stage starts only where
//!   a request conflicts with one in the current stage (or at a fence).
//! - `sort`: each request goes to the earliest stage its conflicts allow (the
//!   dependency levels MirageOS's `Block_request` computes), and each stage is
//!   sorted by sector.
//! - `merge`: as `sort`, then neighbouring I/Os of the same kind whose
//!   sectors are contiguous become one I/O, up to `max_merge_sectors`
//!   sectors and [`MAX_MERGED_PIECES`] segments; back-to-back flushes with
//!   nothing between them share one flush.
//!
//! Planning is O(n log n) in the batch size: conflicts are found with two
//! range-maximum trees over the batch's sector boundaries, not by comparing
//! requests pairwise.
//!
//! Completion: a request is answered when every I/O whose [`PlannedIo::reqs`]
//! names it has completed ([`Plan::ios_per_request`] says how many that is),
//! with an error status if any of them failed. A plan orders the requests of
//! one batch only: the queue worker must let a batch's stages finish before the
//! next batch's first stage starts, or order batches some other way.
//!
//! ```
//! use xenio_blkback::reorder::{IoKind, Planner, ReorderMode};
//! use xenio_blkback::request::{Op, Request, Segment};
//! use xenio_xen_sys::GrantRef;
//!
//! let write = |id: u64, sector: u64| Request {
//!     id,
//!     operation: 1,
//!     op: Op::Write,
//!     sector,
//!     nr_sectors: 8,
//!     segments: vec![Segment { gref: GrantRef(id as u32), first_sect: 0, last_sect: 7 }],
//! };
//! // Sequential writes, shuffled by the frontend.
//! let batch = [write(0, 16), write(1, 0), write(2, 8)];
//! let mut planner = Planner::new(ReorderMode::Merge, 1024);
//! let plan = planner.plan(&batch);
//! assert_eq!(plan.stages.len(), 1);
//! let io = &plan.stages[0].ios[0];
//! assert_eq!((io.kind, io.sector, io.nr_sectors), (IoKind::Write, 0, 24));
//! assert_eq!(io.reqs, [1, 2, 0]);
//! plan.validate(&batch).unwrap();
//! ```

use crate::request::{Op, Request};
use std::fmt;
use std::str::FromStr;

/// The most segments a merge lets one I/O grow to (Linux's `UIO_MAXIOV`, the
/// longest iovec one `readv`/`writev` takes). A single request with more
/// segments (an indirect one) is not split: the queue worker has to cope with it.
pub const MAX_MERGED_PIECES: usize = 1024;

/// How much freedom the planner takes with ring order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReorderMode {
    /// Ring order; stages break only where conflicts require.
    Off,
    /// Earliest stage the conflicts allow, each stage sorted by sector.
    Sort,
    /// As [`ReorderMode::Sort`], and contiguous I/Os of one kind merged.
    Merge,
}

impl ReorderMode {
    /// The name used on command lines and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            ReorderMode::Off => "off",
            ReorderMode::Sort => "sort",
            ReorderMode::Merge => "merge",
        }
    }
}

impl fmt::Display for ReorderMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A reordering mode name that is not `off`, `sort` or `merge`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown reordering mode {0:?} (expected off, sort or merge)")]
pub struct ParseReorderModeError(pub String);

impl FromStr for ReorderMode {
    type Err = ParseReorderModeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "off" => Ok(ReorderMode::Off),
            "sort" => Ok(ReorderMode::Sort),
            "merge" => Ok(ReorderMode::Merge),
            other => Err(ParseReorderModeError(other.to_owned())),
        }
    }
}

/// Counters over every batch a [`Planner`] planned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReorderStats {
    /// Non-empty batches planned.
    pub batches: u64,
    /// Requests planned.
    pub requests: u64,
    /// Requests issued while a request before them in ring order had not
    /// been issued yet (requests issued together in one merged I/O do not
    /// count against each other).
    pub reordered: u64,
    /// Requests that joined another request's I/O (a merge of n requests
    /// counts n - 1).
    pub merged: u64,
    /// I/Os issued.
    pub ios: u64,
}

/// What one planned I/O does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IoKind {
    /// Read the sectors into the pieces' pages.
    Read,
    /// Write the pieces' pages to the sectors (plain writes, and the data of
    /// barriers and flushes).
    Write,
    /// Flush the storage's volatile cache (fdatasync). No sectors, no pieces.
    Flush,
    /// Discard the sectors. No pieces.
    Discard {
        /// Every request in the I/O asked for a secure discard.
        secure: bool,
    },
}

/// One data segment of one request: `batch[req].segments[seg]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Piece {
    /// Index of the request in the batch.
    pub req: usize,
    /// Index of the segment in that request.
    pub seg: usize,
}

/// One I/O to submit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedIo {
    /// What to do.
    pub kind: IoKind,
    /// First sector (0 for a flush).
    pub sector: u64,
    /// Sectors covered (0 for a flush; a zero-length discard is answered
    /// without touching the storage).
    pub nr_sectors: u64,
    /// For reads and writes, the segments in disk order: piece `k` covers the
    /// sectors right after piece `k - 1`, starting at `sector`, and together
    /// they cover exactly `nr_sectors`. Empty for flushes and discards.
    pub pieces: Vec<Piece>,
    /// The requests (batch indices, each once) that complete, in part or
    /// whole, when this I/O completes. For a discard they are in disk order.
    pub reqs: Vec<usize>,
}

/// I/Os that may run concurrently and complete in any order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stage {
    /// The I/Os of this stage.
    pub ios: Vec<PlannedIo>,
}

/// The stages for one batch, run one after another.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Run stage `k + 1` only when every I/O of stage `k` has completed.
    pub stages: Vec<Stage>,
    /// For each request of the batch, how many I/Os name it in
    /// [`PlannedIo::reqs`]: it is answered when that many have completed.
    /// Always at least 1.
    pub ios_per_request: Vec<u32>,
}

impl Plan {
    /// Number of I/Os in the plan.
    pub fn io_count(&self) -> usize {
        self.stages.iter().map(|s| s.ios.len()).sum()
    }
}

/// Plans batches and counts what it did.
#[derive(Debug)]
pub struct Planner {
    mode: ReorderMode,
    max_merge_sectors: u64,
    stats: ReorderStats,
    /// Scratch, reused across batches: sorted distinct range boundaries.
    coords: Vec<u64>,
    /// Per elementary interval: 1 + the last stage holding a write over it.
    writes: MaxTree,
    /// Per elementary interval: 1 + the last stage holding a read over it.
    reads: MaxTree,
    /// Scratch: requests first issued by one I/O.
    fresh: Vec<usize>,
}

impl Planner {
    /// A planner in `mode`; `max_merge_sectors` caps the size of a merged
    /// I/O (in 512-byte sectors; 0 disables merging data I/Os). Only
    /// [`ReorderMode::Merge`] merges; its sharing of back-to-back flushes
    /// does not depend on the cap.
    pub fn new(mode: ReorderMode, max_merge_sectors: u64) -> Planner {
        Planner {
            mode,
            max_merge_sectors,
            stats: ReorderStats::default(),
            coords: Vec::new(),
            writes: MaxTree::default(),
            reads: MaxTree::default(),
            fresh: Vec::new(),
        }
    }

    /// The mode.
    pub fn mode(&self) -> ReorderMode {
        self.mode
    }

    /// The merge cap, in sectors.
    pub fn max_merge_sectors(&self) -> u64 {
        self.max_merge_sectors
    }

    /// Counters since the planner was made.
    pub fn stats(&self) -> ReorderStats {
        self.stats
    }

    /// Plan one batch (requests in ring order, as [`crate::request::parse`]
    /// produced them). Never panics, whatever the requests say; a request
    /// that breaks the parse invariants (a read without segments, say) still
    /// gets an I/O naming it.
    pub fn plan(&mut self, batch: &[Request]) -> Plan {
        let n = batch.len();
        if n == 0 {
            return Plan::default();
        }
        if let [r] = batch {
            if !r.op.is_fence() {
                // One request, nothing to order or merge (the common case when
                // the frontend keeps the ring fed one completion at a time).
                let kind = data_kind(r.op);
                self.stats.batches += 1;
                self.stats.requests += 1;
                self.stats.ios += 1;
                return Plan {
                    stages: vec![Stage {
                        ios: vec![data_io(kind, 0, r)],
                    }],
                    ios_per_request: vec![1],
                };
            }
        }
        let mut merged = 0u64;
        let mut stages = if batch
            .iter()
            .all(|r| !r.op.is_fence() && data_kind(r.op) == IoKind::Read)
        {
            // Only reads: nothing conflicts (a read waits only for writes and
            // fences), so every request goes to the first stage in every mode,
            // which is what the interval trees below would find.
            vec![Stage {
                ios: (0..n)
                    .map(|i| data_io(IoKind::Read, i, &batch[i]))
                    .collect(),
            }]
        } else {
            self.stage(batch, &mut merged)
        };
        if self.mode != ReorderMode::Off {
            for stage in &mut stages {
                // Stable: requests at the same sector stay in ring order.
                stage.ios.sort_by_key(|io| io.sector);
            }
        }
        if self.mode == ReorderMode::Merge && self.max_merge_sectors > 0 {
            for stage in &mut stages {
                merged += merge_stage(&mut stage.ios, self.max_merge_sectors);
            }
        }

        let mut ios_per_request = vec![0u32; n];
        let mut issued = vec![false; n];
        let mut lowest_unissued = 0usize;
        let mut reordered = 0u64;
        let mut ios = 0u64;
        for io in stages.iter().flat_map(|s| &s.ios) {
            ios += 1;
            for &r in &io.reqs {
                if let Some(c) = ios_per_request.get_mut(r) {
                    *c = c.saturating_add(1);
                }
            }
            // Requests first issued by this I/O overtook every request
            // before them in ring order that is still not issued after it.
            self.fresh.clear();
            for &r in &io.reqs {
                if r < n && !issued[r] {
                    issued[r] = true;
                    self.fresh.push(r);
                }
            }
            while lowest_unissued < n && issued[lowest_unissued] {
                lowest_unissued += 1;
            }
            reordered += self.fresh.iter().filter(|&&r| r > lowest_unissued).count() as u64;
        }

        self.stats.batches += 1;
        self.stats.requests += n as u64;
        self.stats.reordered += reordered;
        self.stats.merged += merged;
        self.stats.ios += ios;
        Plan {
            stages,
            ios_per_request,
        }
    }

    /// Put each request of `batch` into the earliest stage its conflicts allow
    /// (ring order in `off` mode); flushes for fences are counted in `merged`.
    fn stage(&mut self, batch: &[Request], merged: &mut u64) -> Vec<Stage> {
        self.coords.clear();
        for r in batch {
            if !r.op.is_fence() && r.end() > r.sector {
                self.coords.push(r.sector);
                self.coords.push(r.end());
            }
        }
        self.coords.sort_unstable();
        self.coords.dedup();
        let intervals = self.coords.len().saturating_sub(1);
        self.writes.reset(intervals);
        self.reads.reset(intervals);

        let mut stages: Vec<Stage> = Vec::new();
        // No request may go before `base`: everything before is behind a fence.
        let mut base = 0usize;
        // `off` mode: the stage being filled in ring order.
        let mut open = 0usize;
        for (i, r) in batch.iter().enumerate() {
            if r.op.is_fence() {
                *merged += self.push_flush(&mut stages, base, i);
                if !r.segments.is_empty() {
                    stages.push(Stage {
                        ios: vec![data_io(IoKind::Write, i, r)],
                    });
                    *merged += self.push_flush(&mut stages, base, i);
                }
                base = stages.len();
                open = base;
                continue;
            }
            let kind = data_kind(r.op);
            let stage = match self.interval_range(r) {
                None => {
                    if self.mode == ReorderMode::Off {
                        open
                    } else {
                        base
                    }
                }
                Some((lo, hi)) => {
                    let mut last = self.writes.query(lo, hi);
                    if kind != IoKind::Read {
                        last = last.max(self.reads.query(lo, hi));
                    }
                    // `last` is 1 + the latest stage holding a conflicting
                    // request, 0 if none: the earliest stage we may use.
                    let stage = match self.mode {
                        ReorderMode::Off if last > open => open + 1,
                        ReorderMode::Off => open,
                        _ => base.max(last),
                    };
                    let tree = if kind == IoKind::Read {
                        &mut self.reads
                    } else {
                        &mut self.writes
                    };
                    tree.update(lo, hi, stage + 1);
                    stage
                }
            };
            if self.mode == ReorderMode::Off {
                open = stage;
            }
            // `stage` is at most stages.len(): one past the last stage.
            if stage >= stages.len() {
                stages.push(Stage::default());
            }
            let slot = stage.min(stages.len() - 1);
            stages[slot].ios.push(data_io(kind, i, r));
        }

        stages
    }

    /// The elementary intervals `[lo, hi)` a request's sectors span, or None
    /// for an empty range (which conflicts with nothing).
    fn interval_range(&self, r: &Request) -> Option<(usize, usize)> {
        let (start, end) = (r.sector, r.end());
        if end <= start {
            return None;
        }
        let lo = self.coords.partition_point(|&c| c < start);
        let hi = self.coords.partition_point(|&c| c < end);
        (lo < hi).then_some((lo, hi))
    }

    /// Add a flush for request `req` after every stage so far; in merge mode
    /// reuse the last stage's flush when nothing came after it. Returns the
    /// number of merges (0 or 1).
    fn push_flush(&self, stages: &mut Vec<Stage>, base: usize, req: usize) -> u64 {
        if self.mode == ReorderMode::Merge && base == stages.len() {
            if let Some(Stage { ios }) = stages.last_mut() {
                if let [io] = ios.as_mut_slice() {
                    if io.kind == IoKind::Flush {
                        if !io.reqs.contains(&req) {
                            io.reqs.push(req);
                        }
                        return 1;
                    }
                }
            }
        }
        stages.push(Stage {
            ios: vec![PlannedIo {
                kind: IoKind::Flush,
                sector: 0,
                nr_sectors: 0,
                pieces: Vec::new(),
                reqs: vec![req],
            }],
        });
        0
    }
}

/// What a request that is not a fence does to the disk.
fn data_kind(op: Op) -> IoKind {
    match op {
        Op::Read => IoKind::Read,
        Op::Discard { secure } => IoKind::Discard { secure },
        _ => IoKind::Write,
    }
}

/// The I/O of one request on its own.
fn data_io(kind: IoKind, i: usize, r: &Request) -> PlannedIo {
    PlannedIo {
        kind,
        sector: r.sector,
        nr_sectors: r.nr_sectors,
        pieces: if matches!(kind, IoKind::Read | IoKind::Write) {
            (0..r.segments.len())
                .map(|seg| Piece { req: i, seg })
                .collect()
        } else {
            Vec::new()
        },
        reqs: vec![i],
    }
}

/// Merge neighbours of a sorted stage in place; returns the requests merged.
fn merge_stage(ios: &mut Vec<PlannedIo>, max_sectors: u64) -> u64 {
    let mut merged = 0u64;
    let mut out: Vec<PlannedIo> = Vec::with_capacity(ios.len());
    for io in ios.drain(..) {
        if let Some(last) = out.last_mut() {
            if mergeable(last, &io, max_sectors) {
                last.nr_sectors += io.nr_sectors;
                last.pieces.extend(io.pieces);
                merged += io.reqs.len() as u64;
                last.reqs.extend(io.reqs);
                continue;
            }
        }
        out.push(io);
    }
    *ios = out;
    merged
}

fn mergeable(a: &PlannedIo, b: &PlannedIo, max_sectors: u64) -> bool {
    a.kind == b.kind
        && a.kind != IoKind::Flush
        && a.nr_sectors > 0
        && b.nr_sectors > 0
        && a.sector.checked_add(a.nr_sectors) == Some(b.sector)
        && a.nr_sectors
            .checked_add(b.nr_sectors)
            .is_some_and(|t| t <= max_sectors)
        && a.pieces.len() + b.pieces.len() <= MAX_MERGED_PIECES
}

/// Range "raise to at least v" updates and range maximum queries over
/// `n` elementary intervals, O(log n) each.
#[derive(Debug, Default)]
struct MaxTree {
    n: usize,
    /// Maximum over the node's whole subtree (its own tag included).
    max: Vec<usize>,
    /// A value applied to every interval under the node.
    tag: Vec<usize>,
}

impl MaxTree {
    fn reset(&mut self, n: usize) {
        self.n = n;
        let size = 4 * n.max(1);
        self.max.clear();
        self.max.resize(size, 0);
        self.tag.clear();
        self.tag.resize(size, 0);
    }

    fn update(&mut self, lo: usize, hi: usize, v: usize) {
        if lo < hi && hi <= self.n {
            self.update_node(1, 0, self.n, lo, hi, v);
        }
    }

    fn update_node(&mut self, node: usize, nlo: usize, nhi: usize, lo: usize, hi: usize, v: usize) {
        if hi <= nlo || nhi <= lo {
            return;
        }
        self.max[node] = self.max[node].max(v);
        if lo <= nlo && nhi <= hi {
            self.tag[node] = self.tag[node].max(v);
            return;
        }
        let mid = nlo + (nhi - nlo) / 2;
        self.update_node(2 * node, nlo, mid, lo, hi, v);
        self.update_node(2 * node + 1, mid, nhi, lo, hi, v);
    }

    fn query(&self, lo: usize, hi: usize) -> usize {
        if lo < hi && hi <= self.n {
            self.query_node(1, 0, self.n, lo, hi)
        } else {
            0
        }
    }

    fn query_node(&self, node: usize, nlo: usize, nhi: usize, lo: usize, hi: usize) -> usize {
        if hi <= nlo || nhi <= lo {
            return 0;
        }
        if lo <= nlo && nhi <= hi {
            return self.max[node];
        }
        let mid = nlo + (nhi - nlo) / 2;
        self.tag[node]
            .max(self.query_node(2 * node, nlo, mid, lo, hi))
            .max(self.query_node(2 * node + 1, mid, nhi, lo, hi))
    }
}

/// A way a plan fails to be equivalent to in-order execution
/// (see [`Plan::validate`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// `ios_per_request` does not have one entry per request.
    #[error("ios_per_request has {got} entries for {expected} requests")]
    CountsLength {
        /// Entries.
        got: usize,
        /// Requests.
        expected: usize,
    },
    /// An I/O is malformed (bad indices, kinds, lengths or piece order).
    #[error("stage {stage} I/O {io}: {what}")]
    BadIo {
        /// Stage index.
        stage: usize,
        /// I/O index within the stage.
        io: usize,
        /// What is wrong.
        what: String,
    },
    /// A flush shares its stage with other I/Os.
    #[error("stage {stage}: a flush shares its stage with {others} other I/Os")]
    FlushNotAlone {
        /// Stage index.
        stage: usize,
        /// Other I/Os.
        others: usize,
    },
    /// Two I/Os of one stage overlap and at least one writes.
    #[error("stage {stage}: I/Os {a} and {b} conflict")]
    Conflict {
        /// Stage index.
        stage: usize,
        /// One I/O.
        a: usize,
        /// The other.
        b: usize,
    },
    /// A request is not covered as it must be (segments missing or repeated,
    /// no I/O, a fence without its flushes).
    #[error("request {req}: {what}")]
    Coverage {
        /// Batch index.
        req: usize,
        /// What is wrong.
        what: String,
    },
    /// Two conflicting requests (or a fence and another request) are not
    /// ordered as in the ring.
    #[error("requests {earlier} and {later} conflict but are not run in ring order")]
    Order {
        /// The request first in ring order.
        earlier: usize,
        /// The later one.
        later: usize,
    },
}

impl Plan {
    /// Check that this plan, for this batch, is equivalent to in-order
    /// execution: every I/O well formed (pieces contiguous and covering
    /// exactly its sectors, kinds matching the requests), every segment of
    /// every request in exactly one I/O, every request named by at least one
    /// I/O with `ios_per_request` counting them, no conflicting I/Os in a
    /// stage, flushes alone in their stage, and conflicting requests and
    /// fences ordered as in the ring (fences with data flushed before and
    /// after their write).
    ///
    /// Meant for tests, fuzzing and debug assertions: the ordering check
    /// compares requests pairwise, O(n²).
    pub fn validate(&self, batch: &[Request]) -> Result<(), PlanError> {
        let n = batch.len();
        if self.ios_per_request.len() != n {
            return Err(PlanError::CountsLength {
                got: self.ios_per_request.len(),
                expected: n,
            });
        }
        // Sector where each segment of each request starts on disk.
        let seg_start: Vec<Vec<u64>> = batch
            .iter()
            .map(|r| {
                let mut pos = r.sector;
                r.segments
                    .iter()
                    .map(|s| {
                        let here = pos;
                        pos = pos.saturating_add(s.sectors());
                        here
                    })
                    .collect()
            })
            .collect();
        let mut seg_seen: Vec<Vec<u32>> = batch.iter().map(|r| vec![0; r.segments.len()]).collect();
        // For each request: (global I/O id, stage, kind) of the I/Os naming it.
        let mut req_ios: Vec<Vec<(usize, usize, IoKind)>> = vec![Vec::new(); n];
        let mut io_id = 0usize;
        for (si, stage) in self.stages.iter().enumerate() {
            let has_flush = stage.ios.iter().any(|io| io.kind == IoKind::Flush);
            if has_flush && stage.ios.len() > 1 {
                return Err(PlanError::FlushNotAlone {
                    stage: si,
                    others: stage.ios.len() - 1,
                });
            }
            for (ii, io) in stage.ios.iter().enumerate() {
                let bad = |what: String| PlanError::BadIo {
                    stage: si,
                    io: ii,
                    what,
                };
                check_io(io, batch, &seg_start, &mut seg_seen).map_err(bad)?;
                for &r in &io.reqs {
                    req_ios[r].push((io_id, si, io.kind));
                }
                io_id += 1;
            }
            check_stage_conflicts(si, &stage.ios)?;
        }
        for (req, r) in batch.iter().enumerate() {
            let cov = |what: String| PlanError::Coverage { req, what };
            let ios = &req_ios[req];
            if ios.is_empty() {
                return Err(cov("no I/O names it".into()));
            }
            if u32::try_from(ios.len()).ok() != Some(self.ios_per_request[req]) {
                return Err(cov(format!(
                    "named by {} I/Os, ios_per_request says {}",
                    ios.len(),
                    self.ios_per_request[req]
                )));
            }
            if let Some(k) = seg_seen[req].iter().position(|&c| c != 1) {
                return Err(cov(format!("segment {k} is in {} I/Os", seg_seen[req][k])));
            }
            let flush_stages = || ios.iter().filter(|x| x.2 == IoKind::Flush).map(|x| x.1);
            let data_stages = || ios.iter().filter(|x| x.2 != IoKind::Flush).map(|x| x.1);
            if r.op.is_fence() {
                if flush_stages().count() == 0 {
                    return Err(cov("a fence without a flush".into()));
                }
                if let Some(w) = data_stages().next() {
                    if !(flush_stages().any(|f| f < w) && flush_stages().any(|f| f > w)) {
                        return Err(cov("a fence's data is not between two flushes".into()));
                    }
                }
            } else if flush_stages().count() > 0 || data_stages().count() != 1 {
                return Err(cov("not in exactly one data I/O".into()));
            }
        }
        let first: Vec<usize> = req_ios
            .iter()
            .map(|v| v.iter().map(|x| x.1).min().unwrap_or(0))
            .collect();
        let last: Vec<usize> = req_ios
            .iter()
            .map(|v| v.iter().map(|x| x.1).max().unwrap_or(0))
            .collect();
        for i in 0..n {
            for j in i + 1..n {
                // Entirely ordered already (the common case), or free to be
                // reordered.
                if last[i] < first[j] || !requests_conflict(&batch[i], &batch[j]) {
                    continue;
                }
                for &(xi, xs, xk) in &req_ios[i] {
                    for &(yi, ys, _) in &req_ios[j] {
                        let shared_flush = xi == yi && xk == IoKind::Flush;
                        if !shared_flush && xs >= ys {
                            return Err(PlanError::Order {
                                earlier: i,
                                later: j,
                            });
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// Whether two requests must keep their ring order.
fn requests_conflict(a: &Request, b: &Request) -> bool {
    if a.op.is_fence() || b.op.is_fence() {
        return true;
    }
    if !(a.op.modifies_disk() || b.op.modifies_disk()) {
        return false;
    }
    a.nr_sectors > 0 && b.nr_sectors > 0 && a.sector < b.end() && b.sector < a.end()
}

fn check_io(
    io: &PlannedIo,
    batch: &[Request],
    seg_start: &[Vec<u64>],
    seg_seen: &mut [Vec<u32>],
) -> Result<(), String> {
    if io.reqs.is_empty() {
        return Err("names no request".into());
    }
    let mut sorted = io.reqs.clone();
    sorted.sort_unstable();
    sorted.dedup();
    if sorted.len() != io.reqs.len() {
        return Err("names a request twice".into());
    }
    if let Some(&r) = sorted.last().filter(|&&r| r >= batch.len()) {
        return Err(format!("request {r} is not in the batch"));
    }
    let end = io
        .sector
        .checked_add(io.nr_sectors)
        .ok_or("sector overflow")?;
    match io.kind {
        IoKind::Flush => {
            if !io.pieces.is_empty() || io.nr_sectors != 0 {
                return Err("a flush with data".into());
            }
            if let Some(r) = io.reqs.iter().find(|&&r| !batch[r].op.is_fence()) {
                return Err(format!("flush for request {r}, not a flush or barrier"));
            }
        }
        IoKind::Discard { secure } => {
            if !io.pieces.is_empty() {
                return Err("a discard with pieces".into());
            }
            let mut pos = io.sector;
            for &r in &io.reqs {
                let req = &batch[r];
                if req.op != (Op::Discard { secure }) {
                    return Err(format!("request {r} is a {} in a discard", req.op));
                }
                if req.sector != pos && req.nr_sectors != 0 {
                    return Err(format!("request {r} at {} expected at {pos}", req.sector));
                }
                pos = pos.saturating_add(req.nr_sectors);
            }
            if pos != end {
                return Err(format!("discards end at {pos}, the I/O at {end}"));
            }
        }
        IoKind::Read | IoKind::Write => {
            if io.pieces.is_empty() {
                return Err("a data I/O without pieces".into());
            }
            let mut pos = io.sector;
            let mut named = Vec::with_capacity(io.reqs.len());
            for p in &io.pieces {
                let Some(req) = batch.get(p.req) else {
                    return Err(format!("piece of request {} outside the batch", p.req));
                };
                let Some(seg) = req.segments.get(p.seg) else {
                    return Err(format!("request {} has no segment {}", p.req, p.seg));
                };
                let ok_kind = match io.kind {
                    IoKind::Read => req.op == Op::Read,
                    _ => matches!(req.op, Op::Write | Op::Barrier | Op::Flush),
                };
                if !ok_kind {
                    return Err(format!(
                        "request {} is a {} in a {:?}",
                        p.req, req.op, io.kind
                    ));
                }
                if seg_start[p.req][p.seg] != pos {
                    return Err(format!(
                        "piece {}/{} belongs at {}, placed at {pos}",
                        p.req, p.seg, seg_start[p.req][p.seg]
                    ));
                }
                pos = pos.saturating_add(seg.sectors());
                seg_seen[p.req][p.seg] += 1;
                named.push(p.req);
            }
            if pos != end {
                return Err(format!("pieces end at {pos}, the I/O at {end}"));
            }
            named.sort_unstable();
            named.dedup();
            if named != sorted {
                return Err("reqs differ from the pieces' requests".into());
            }
        }
    }
    Ok(())
}

/// No two I/Os of a stage overlap with one of them writing: sweep the I/Os
/// by start sector, remembering how far earlier writes and all earlier I/Os
/// reach.
fn check_stage_conflicts(stage: usize, ios: &[PlannedIo]) -> Result<(), PlanError> {
    let mut order: Vec<usize> = (0..ios.len()).filter(|&k| ios[k].nr_sectors > 0).collect();
    order.sort_by_key(|&k| ios[k].sector);
    // (end, index) of the farthest-reaching write and I/O so far.
    let mut write_reach: Option<(u64, usize)> = None;
    let mut any_reach: Option<(u64, usize)> = None;
    for k in order {
        let io = &ios[k];
        let writes = io.kind != IoKind::Read;
        let against = if writes { any_reach } else { write_reach };
        if let Some((reach, other)) = against {
            if io.sector < reach {
                return Err(PlanError::Conflict {
                    stage,
                    a: other,
                    b: k,
                });
            }
        }
        let end = io.sector.saturating_add(io.nr_sectors);
        if any_reach.is_none_or(|(e, _)| end > e) {
            any_reach = Some((end, k));
        }
        if writes && write_reach.is_none_or(|(e, _)| end > e) {
            write_reach = Some((end, k));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_tree_against_naive() {
        let n = 37;
        let mut t = MaxTree::default();
        t.reset(n);
        let mut naive = vec![0usize; n];
        let mut x = 12345u64;
        let mut rnd = |m: usize| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % m as u64) as usize
        };
        for step in 0..2000 {
            let a = rnd(n);
            let b = rnd(n + 1);
            let (lo, hi) = (a.min(b), a.max(b));
            if step % 2 == 0 {
                let v = rnd(100);
                t.update(lo, hi, v);
                for c in &mut naive[lo..hi] {
                    *c = (*c).max(v);
                }
            } else {
                let want = naive[lo..hi].iter().copied().max().unwrap_or(0);
                assert_eq!(t.query(lo, hi), want, "query {lo}..{hi}");
            }
        }
    }

    #[test]
    fn mode_names_round_trip() {
        for m in [ReorderMode::Off, ReorderMode::Sort, ReorderMode::Merge] {
            assert_eq!(m.to_string().parse::<ReorderMode>(), Ok(m));
        }
        assert!("fast".parse::<ReorderMode>().is_err());
    }
}
