//! Parsing and validating what a frontend wrote into a ring slot.
//!
//! The queue worker copies each request out of shared memory once
//! ([`BlkifRequest`], XSA-155) and hands the copy to [`parse`]. Nothing the
//! frontend wrote is trusted: the operation, the segment count, every
//! segment's sector bounds, the sector range against the disk size (with
//! overflow-checked arithmetic), the features that were offered and the
//! disk's read-only flag are all checked before anything is mapped or
//! submitted. A bad request becomes a [`Reject`], which carries the response
//! the frontend must get; the ring keeps serving.
//!
//! Indirect requests (`BLKIF_OP_INDIRECT`) come in two steps because their
//! segments live in separately granted pages: [`parse`] checks the ring slot
//! and returns an [`IndirectHeader`] naming the pages to map, and once the
//! queue worker has copied those pages, [`parse_indirect`] validates the segments
//! and yields the [`Request`].
//!
//! Statuses follow Linux's xen-blkback (`drivers/block/xen-blkback/blkback.c`):
//! `BLKIF_RSP_EOPNOTSUPP` for an operation this backend does not do (an
//! unknown or reserved opcode, or a known one whose feature was not offered),
//! `BLKIF_RSP_ERROR` for a malformed or forbidden request.
//!
//! ```
//! use xenio_blkback::request::{parse, Limits, Op, Parsed};
//! use xenio_xen_sys::blkif::{BlkifRequest, BLKIF_OP_READ};
//!
//! let limits = Limits { sectors: 1 << 20, ..Limits::default() };
//! let mut raw = BlkifRequest { operation: BLKIF_OP_READ, nr_segments: 1, id: 7, ..Default::default() };
//! raw.sector_number = 64;
//! raw.seg[0].gref = 42;
//! raw.seg[0].last_sect = 7;
//! let Ok(Parsed::Ready(req)) = parse(&raw, &limits) else { panic!("a valid read") };
//! assert_eq!((req.id, req.op, req.sector, req.nr_sectors), (7, Op::Read, 64, 8));
//! ```

use std::fmt;
use xenio_xen_sys::GrantRef;
use xenio_xen_sys::blkif::{
    BLKIF_DISCARD_SECURE, BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST, BLKIF_MAX_INDIRECT_SEGMENTS,
    BLKIF_MAX_SEGMENTS_PER_REQUEST, BLKIF_OP_DISCARD, BLKIF_OP_FLUSH_DISKCACHE, BLKIF_OP_INDIRECT,
    BLKIF_OP_READ, BLKIF_OP_WRITE, BLKIF_OP_WRITE_BARRIER, BLKIF_RSP_EOPNOTSUPP, BLKIF_RSP_ERROR,
    BLKIF_SECTOR_SIZE, BLKIF_SECTORS_PER_PAGE, BLKIF_SEGS_PER_INDIRECT_FRAME, BlkifRequest,
    BlkifRequestSegment, BlkifResponse,
};
use xenio_xenbus::handshake::keys::blkif;

/// Size of one `blkif_request_segment` in an indirect page.
const SEGMENT_BYTES: usize = std::mem::size_of::<BlkifRequestSegment>();

/// What this backend offers the frontend, and what the disk is: the bounds a
/// request is checked against.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// Disk size in 512-byte sectors (the unit of every request, whatever
    /// `sector-size` says).
    pub sectors: u64,
    /// A read-only disk: everything but `BLKIF_OP_READ` is refused.
    pub readonly: bool,
    /// `feature-max-indirect-segments`; 0 when indirect requests are not
    /// offered. Values above [`BLKIF_MAX_INDIRECT_SEGMENTS`] (8 pages of 512)
    /// are treated as that maximum.
    pub max_indirect_segments: u32,
    /// `feature-flush-cache` was offered.
    pub flush: bool,
    /// `feature-barrier` was offered.
    pub barrier: bool,
    /// `feature-discard` was offered.
    pub discard: bool,
}

impl Limits {
    /// The indirect segment limit actually enforced: the offered value capped
    /// by what eight indirect pages can hold.
    pub fn indirect_segment_limit(&self) -> usize {
        usize::try_from(self.max_indirect_segments)
            .unwrap_or(usize::MAX)
            .min(BLKIF_MAX_INDIRECT_SEGMENTS)
    }
}

/// What a validated request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// `BLKIF_OP_READ` (directly or through `BLKIF_OP_INDIRECT`).
    Read,
    /// `BLKIF_OP_WRITE` (directly or through `BLKIF_OP_INDIRECT`).
    Write,
    /// `BLKIF_OP_FLUSH_DISKCACHE`. With segments it also carries data to write
    /// after the flush (Linux's blkfront sends its preflush writes this way).
    Flush,
    /// `BLKIF_OP_WRITE_BARRIER`: ordered after everything before it and
    /// before everything after it, flushed. May carry data or be empty.
    Barrier,
    /// `BLKIF_OP_DISCARD` of `nr_sectors` sectors.
    Discard {
        /// `BLKIF_DISCARD_SECURE` was set. Per `blkif.h` it is ignored unless
        /// the backend advertised `discard-secure`: the storage decides.
        secure: bool,
    },
}

impl Op {
    /// Whether the request may change disk contents (anything but a read or
    /// an empty flush; a barrier or flush is treated as a write).
    pub fn modifies_disk(self) -> bool {
        !matches!(self, Op::Read)
    }

    /// Whether this is a flush or barrier: an ordering point for the batch.
    pub fn is_fence(self) -> bool {
        matches!(self, Op::Flush | Op::Barrier)
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Read => f.write_str("read"),
            Op::Write => f.write_str("write"),
            Op::Flush => f.write_str("flush"),
            Op::Barrier => f.write_str("barrier"),
            Op::Discard { secure: false } => f.write_str("discard"),
            Op::Discard { secure: true } => f.write_str("secure discard"),
        }
    }
}

/// One validated data segment: a run of 512-byte sectors inside one granted
/// 4 KiB page. Invariant after parsing: `first_sect <= last_sect <= 7`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Segment {
    /// Grant reference of the frontend's page.
    pub gref: GrantRef,
    /// First sector within the page (inclusive).
    pub first_sect: u8,
    /// Last sector within the page (inclusive).
    pub last_sect: u8,
}

impl Segment {
    /// Number of 512-byte sectors this segment transfers (1..=8).
    pub fn sectors(&self) -> u64 {
        u64::from(self.last_sect.saturating_sub(self.first_sect)) + 1
    }

    /// Byte offset of the data within its page.
    pub fn byte_offset(&self) -> usize {
        usize::from(self.first_sect) * BLKIF_SECTOR_SIZE
    }

    /// Byte length of the data (a multiple of 512, at most 4096).
    pub fn byte_len(&self) -> usize {
        (usize::from(self.last_sect.saturating_sub(self.first_sect)) + 1) * BLKIF_SECTOR_SIZE
    }

    /// Validate one segment as the frontend wrote it.
    fn from_raw(raw: &BlkifRequestSegment) -> Result<Segment, Invalid> {
        if raw.first_sect > raw.last_sect || raw.last_sect >= BLKIF_SECTORS_PER_PAGE {
            return Err(Invalid::SegmentBounds {
                first_sect: raw.first_sect,
                last_sect: raw.last_sect,
            });
        }
        Ok(Segment {
            gref: GrantRef(raw.gref),
            first_sect: raw.first_sect,
            last_sect: raw.last_sect,
        })
    }
}

/// A validated request, ready to be planned and executed.
///
/// Invariants after [`parse`]/[`parse_indirect`]: `nr_sectors` is the sum of
/// the segments' sectors (for a discard, the discard length, with no
/// segments); when `nr_sectors > 0`, `sector + nr_sectors` does not overflow
/// and is at most [`Limits::sectors`]; reads and writes have at least one
/// segment; flushes and barriers may have none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The frontend's id, echoed in the response.
    pub id: u64,
    /// The raw operation to echo in the response. For an indirect request
    /// this is its `indirect_op` (READ or WRITE), not `BLKIF_OP_INDIRECT`:
    /// Linux's blkback answers that way and Linux's blkfront rejects any
    /// other value as a protocol error.
    pub operation: u8,
    /// What to do.
    pub op: Op,
    /// First sector (512-byte units).
    pub sector: u64,
    /// Total sectors: the sum over the segments, or the discard length.
    pub nr_sectors: u64,
    /// The data segments, in disk order starting at `sector`.
    pub segments: Vec<Segment>,
}

impl Request {
    /// One past the last sector touched (saturating, so it never panics on a
    /// hand-built request).
    pub fn end(&self) -> u64 {
        self.sector.saturating_add(self.nr_sectors)
    }

    /// The response for this request with `status` (padding zeroed).
    pub fn response(&self, status: i16) -> BlkifResponse {
        BlkifResponse::new(self.id, self.operation, status)
    }
}

/// The ring-slot part of a valid `BLKIF_OP_INDIRECT` request: the queue worker maps
/// (or grant-copies) the pages in `indirect_grefs`, copies their bytes and
/// calls [`parse_indirect`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndirectHeader {
    /// The frontend's id.
    pub id: u64,
    /// The operation to echo: the request's `indirect_op` (READ or WRITE).
    pub operation: u8,
    /// [`Op::Read`] or [`Op::Write`].
    pub op: Op,
    /// First sector.
    pub sector: u64,
    /// Number of segments spread over the indirect pages (already checked to
    /// be within the limit).
    pub nr_segments: u16,
    /// The pages holding the segments: exactly
    /// `ceil(nr_segments / 512)` of them (at most 8).
    pub indirect_grefs: Vec<GrantRef>,
}

impl IndirectHeader {
    /// Number of indirect pages the segments occupy.
    pub fn nr_pages(&self) -> usize {
        usize::from(self.nr_segments).div_ceil(BLKIF_SEGS_PER_INDIRECT_FRAME)
    }

    /// Bytes of the indirect pages [`parse_indirect`] reads: the segments
    /// (8 bytes each) from the start of the first page, back to back.
    pub fn segment_bytes(&self) -> usize {
        usize::from(self.nr_segments) * SEGMENT_BYTES
    }

    /// The error response for this request.
    pub fn reject(&self, status: i16, reason: impl Into<String>) -> Reject {
        Reject::new(self.id, self.operation, status, reason)
    }
}

/// The outcome of parsing one ring slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A complete request.
    Ready(Request),
    /// An indirect request whose segment pages must be fetched first.
    Indirect(IndirectHeader),
}

/// A request refused before any I/O: the frontend gets
/// `BlkifResponse { id, operation, status }` and the ring keeps going.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("request id {id:#x} (operation {operation}) refused with status {status}: {reason}")]
pub struct Reject {
    /// The frontend's id.
    pub id: u64,
    /// The operation to echo (for an indirect request, its `indirect_op`).
    pub operation: u8,
    /// `BLKIF_RSP_ERROR` or `BLKIF_RSP_EOPNOTSUPP`.
    pub status: i16,
    /// Why, for the log.
    pub reason: String,
}

impl Reject {
    /// A rejection.
    pub fn new(id: u64, operation: u8, status: i16, reason: impl Into<String>) -> Reject {
        Reject {
            id,
            operation,
            status,
            reason: reason.into(),
        }
    }

    /// The response to put on the ring (padding zeroed).
    pub fn response(&self) -> BlkifResponse {
        BlkifResponse::new(self.id, self.operation, self.status)
    }

    /// Whether the status is `BLKIF_RSP_EOPNOTSUPP`.
    pub fn is_unsupported(&self) -> bool {
        self.status == BLKIF_RSP_EOPNOTSUPP
    }
}

/// Why a request is refused (the structured form of [`Reject::reason`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
enum Invalid {
    #[error("unknown operation {0}")]
    UnknownOp(u8),
    #[error("{0} not offered to the frontend")]
    NotOffered(&'static str),
    #[error("indirect request with indirect_op {0} (only read and write are allowed)")]
    BadIndirectOp(u8),
    #[error("{nr} segments for a {op} (allowed {min}..={max})")]
    SegmentCount {
        op: Op,
        nr: usize,
        min: usize,
        max: usize,
    },
    #[error("segment first_sect {first_sect} last_sect {last_sect} (need first <= last <= 7)")]
    SegmentBounds { first_sect: u8, last_sect: u8 },
    #[error("discard flag {0:#x} (only BLKIF_DISCARD_SECURE is defined)")]
    DiscardFlag(u8),
    #[error("sectors {sector}+{nr_sectors} outside the disk of {sectors} sectors")]
    OutOfRange {
        sector: u64,
        nr_sectors: u64,
        sectors: u64,
    },
    #[error("{0} on a read-only disk")]
    ReadOnly(Op),
    #[error("indirect segment bytes {have} shorter than the {need} the segments need")]
    ShortIndirectPages { have: usize, need: usize },
}

impl Invalid {
    /// The status Linux's blkback gives this case.
    fn status(&self) -> i16 {
        match self {
            Invalid::UnknownOp(_) | Invalid::NotOffered(_) => BLKIF_RSP_EOPNOTSUPP,
            _ => BLKIF_RSP_ERROR,
        }
    }

    fn reject(self, id: u64, operation: u8) -> Reject {
        Reject::new(id, operation, self.status(), self.to_string())
    }
}

/// Check `sector..sector + nr_sectors` against the disk, overflow-safe. An
/// empty range is not checked (as Linux's `xen_vbd_translate`).
fn check_range(sector: u64, nr_sectors: u64, limits: &Limits) -> Result<(), Invalid> {
    if nr_sectors == 0 {
        return Ok(());
    }
    match sector.checked_add(nr_sectors) {
        Some(end) if end <= limits.sectors => Ok(()),
        _ => Err(Invalid::OutOfRange {
            sector,
            nr_sectors,
            sectors: limits.sectors,
        }),
    }
}

/// Refuse anything but a read on a read-only disk.
fn check_writable(op: Op, limits: &Limits) -> Result<(), Invalid> {
    if limits.readonly && op.modifies_disk() {
        Err(Invalid::ReadOnly(op))
    } else {
        Ok(())
    }
}

/// Validate one ring slot.
///
/// Returns [`Parsed::Ready`] for READ, WRITE, WRITE_BARRIER, FLUSH_DISKCACHE
/// and DISCARD, [`Parsed::Indirect`] for INDIRECT (finish with
/// [`parse_indirect`]), or the [`Reject`] to answer with. Never panics and
/// allocates at most 11 segments (or 8 grant refs for an indirect header).
pub fn parse(raw: &BlkifRequest, limits: &Limits) -> Result<Parsed, Reject> {
    let id = raw.id;
    let operation = raw.operation;
    let out = match operation {
        BLKIF_OP_READ => direct(raw, Op::Read, limits),
        BLKIF_OP_WRITE => direct(raw, Op::Write, limits),
        BLKIF_OP_WRITE_BARRIER if !limits.barrier => {
            Err(Invalid::NotOffered(blkif::FEATURE_BARRIER))
        }
        BLKIF_OP_WRITE_BARRIER => direct(raw, Op::Barrier, limits),
        BLKIF_OP_FLUSH_DISKCACHE if !limits.flush => {
            Err(Invalid::NotOffered(blkif::FEATURE_FLUSH_CACHE))
        }
        BLKIF_OP_FLUSH_DISKCACHE => direct(raw, Op::Flush, limits),
        BLKIF_OP_DISCARD => discard(raw, limits),
        BLKIF_OP_INDIRECT => {
            let ind = raw.as_indirect();
            // Linux answers an indirect request with its indirect_op, even
            // when refusing it, and its blkfront checks exactly that.
            return indirect(raw, limits)
                .map(Parsed::Indirect)
                .map_err(|e| e.reject(id, ind.indirect_op));
        }
        // BLKIF_OP_RESERVED_1 and anything unknown: Linux's
        // dispatch_other_io answers EOPNOTSUPP.
        other => Err(Invalid::UnknownOp(other)),
    };
    out.map(Parsed::Ready).map_err(|e| e.reject(id, operation))
}

/// READ, WRITE, WRITE_BARRIER and FLUSH_DISKCACHE, segments in the slot.
fn direct(raw: &BlkifRequest, op: Op, limits: &Limits) -> Result<Request, Invalid> {
    let nr = usize::from(raw.nr_segments);
    // Linux lets flushes and barriers come without data (preflush only).
    let min = if op.is_fence() { 0 } else { 1 };
    if nr < min || nr > BLKIF_MAX_SEGMENTS_PER_REQUEST {
        return Err(Invalid::SegmentCount {
            op,
            nr,
            min,
            max: BLKIF_MAX_SEGMENTS_PER_REQUEST,
        });
    }
    let mut segments = Vec::with_capacity(nr);
    let mut nr_sectors = 0u64;
    for s in &raw.seg[..nr] {
        let seg = Segment::from_raw(s)?;
        nr_sectors += seg.sectors();
        segments.push(seg);
    }
    check_writable(op, limits)?;
    check_range(raw.sector_number, nr_sectors, limits)?;
    Ok(Request {
        id: raw.id,
        operation: raw.operation,
        op,
        sector: raw.sector_number,
        nr_sectors,
        segments,
    })
}

/// DISCARD: a sector range, no segments.
fn discard(raw: &BlkifRequest, limits: &Limits) -> Result<Request, Invalid> {
    if !limits.discard {
        return Err(Invalid::NotOffered(blkif::FEATURE_DISCARD));
    }
    let d = raw.as_discard();
    if d.flag & !BLKIF_DISCARD_SECURE != 0 {
        return Err(Invalid::DiscardFlag(d.flag));
    }
    let op = Op::Discard {
        secure: d.flag & BLKIF_DISCARD_SECURE != 0,
    };
    check_writable(op, limits)?;
    check_range(d.sector_number, d.nr_sectors, limits)?;
    Ok(Request {
        id: d.id,
        operation: d.operation,
        op,
        sector: d.sector_number,
        nr_sectors: d.nr_sectors,
        segments: Vec::new(),
    })
}

/// INDIRECT: check the slot; the segments come later.
fn indirect(raw: &BlkifRequest, limits: &Limits) -> Result<IndirectHeader, Invalid> {
    let ind = raw.as_indirect();
    let max = limits.indirect_segment_limit();
    if max == 0 {
        return Err(Invalid::NotOffered(blkif::FEATURE_MAX_INDIRECT_SEGMENTS));
    }
    let op = match ind.indirect_op {
        BLKIF_OP_READ => Op::Read,
        BLKIF_OP_WRITE => Op::Write,
        other => return Err(Invalid::BadIndirectOp(other)),
    };
    let nr = usize::from(ind.nr_segments);
    if nr == 0 || nr > max {
        return Err(Invalid::SegmentCount {
            op,
            nr,
            min: 1,
            max,
        });
    }
    check_writable(op, limits)?;
    // Every segment is at least one sector: refuse before mapping anything
    // a request that cannot fit whatever its pages say.
    check_range(ind.sector_number, u64::from(ind.nr_segments), limits)?;
    let pages = nr.div_ceil(BLKIF_SEGS_PER_INDIRECT_FRAME);
    debug_assert!(pages <= BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST);
    let indirect_grefs = ind.indirect_grefs[..pages.min(BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST)]
        .iter()
        .map(|&g| GrantRef(g))
        .collect();
    Ok(IndirectHeader {
        id: ind.id,
        operation: ind.indirect_op,
        op,
        sector: ind.sector_number,
        nr_segments: ind.nr_segments,
        indirect_grefs,
    })
}

/// Finish an indirect request: `pages` holds the bytes of its indirect pages
/// back to back (512 eight-byte segments per 4 KiB page; only the first
/// [`IndirectHeader::segment_bytes`] are read, each segment once).
///
/// `pages` must be the queue worker's private copy, never memory the frontend can
/// still write (double fetch). The header is checked against `limits` again,
/// so a hand-built one cannot make this allocate beyond the limit.
pub fn parse_indirect(
    header: &IndirectHeader,
    pages: &[u8],
    limits: &Limits,
) -> Result<Request, Reject> {
    indirect_segments(header, pages, limits).map_err(|e| e.reject(header.id, header.operation))
}

fn indirect_segments(
    header: &IndirectHeader,
    pages: &[u8],
    limits: &Limits,
) -> Result<Request, Invalid> {
    let op = header.op;
    if !matches!(op, Op::Read | Op::Write) {
        return Err(Invalid::BadIndirectOp(header.operation));
    }
    let nr = usize::from(header.nr_segments);
    let max = limits.indirect_segment_limit();
    if max == 0 {
        return Err(Invalid::NotOffered(blkif::FEATURE_MAX_INDIRECT_SEGMENTS));
    }
    if nr == 0 || nr > max {
        return Err(Invalid::SegmentCount {
            op,
            nr,
            min: 1,
            max,
        });
    }
    let need = header.segment_bytes();
    let Some(bytes) = pages.get(..need) else {
        return Err(Invalid::ShortIndirectPages {
            have: pages.len(),
            need,
        });
    };
    let mut segments = Vec::with_capacity(nr);
    let mut nr_sectors = 0u64;
    for chunk in bytes.chunks_exact(SEGMENT_BYTES) {
        let raw: BlkifRequestSegment = bytemuck::pod_read_unaligned(chunk);
        let seg = Segment::from_raw(&raw)?;
        nr_sectors += seg.sectors();
        segments.push(seg);
    }
    check_writable(op, limits)?;
    check_range(header.sector, nr_sectors, limits)?;
    Ok(Request {
        id: header.id,
        operation: header.operation,
        op,
        sector: header.sector,
        nr_sectors,
        segments,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_helpers() {
        let s = Segment {
            gref: GrantRef(1),
            first_sect: 2,
            last_sect: 5,
        };
        assert_eq!(s.sectors(), 4);
        assert_eq!(s.byte_offset(), 1024);
        assert_eq!(s.byte_len(), 2048);
    }

    #[test]
    fn indirect_header_sizes() {
        let h = IndirectHeader {
            id: 0,
            operation: BLKIF_OP_READ,
            op: Op::Read,
            sector: 0,
            nr_segments: 513,
            indirect_grefs: vec![GrantRef(1), GrantRef(2)],
        };
        assert_eq!(h.nr_pages(), 2);
        assert_eq!(h.segment_bytes(), 513 * 8);
    }

    #[test]
    fn limit_is_capped_by_eight_pages() {
        let l = Limits {
            max_indirect_segments: u32::MAX,
            ..Limits::default()
        };
        assert_eq!(l.indirect_segment_limit(), 4096);
    }
}
