//! The frontend wrote anything at all into a ring slot (and into its
//! indirect pages), under any limits the backend could be configured with.
//!
//! Input: 112 bytes of `blkif_request`, 13 bytes of limits, then the
//! indirect pages' bytes. `parse` and `parse_indirect` must never panic,
//! must allocate a bounded amount whatever the frontend claims (a counting
//! global allocator measures it), and every request they accept must hold
//! every invariant: a known operation whose feature was offered, valid
//! segments, the range inside the disk, nothing but reads on a read-only
//! disk. Every rejection must echo the id and the operation Linux echoes,
//! with EOPNOTSUPP exactly for unknown or not-offered operations.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use xenio_blkback::request::{Limits, Op, Parsed, Reject, Request, parse, parse_indirect};
use xenio_xen_sys::blkif::*;

/// Counts live heap bytes and their high-water mark.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged, so `System`'s guarantees are ours; the counters are only
// bookkeeping.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as our caller's (a non-zero-sized layout).
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let live = LIVE.fetch_add(layout.size(), Relaxed) + layout.size();
            PEAK.fetch_max(live, Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Relaxed);
        // SAFETY: `ptr` came from `alloc` above with this `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded unchanged; `ptr` was allocated by us with `layout`.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Relaxed);
            let live = LIVE.fetch_add(new_size, Relaxed) + new_size;
            PEAK.fetch_max(live, Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Run `f`, returning its result and the most heap it held at once.
fn measured<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = LIVE.load(Relaxed);
    PEAK.store(base, Relaxed);
    let out = f();
    (out, PEAK.load(Relaxed).saturating_sub(base))
}

/// What parse may hold at once: 11 segments, 8 grant refs, a reason string.
const PARSE_BOUND: usize = 4096;
/// What parse_indirect may hold at once: 4096 segments and a reason string.
const INDIRECT_BOUND: usize = 4096 * 8 + 4096;

fn limits_from(b: &[u8; 13]) -> Limits {
    let flags = b[0];
    let raw_sectors = u64::from_le_bytes([b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8]]);
    // Small disks most of the time, so ranges land on both sides of the end.
    let sectors = match flags >> 5 {
        0 => raw_sectors,
        1 => u64::MAX - (raw_sectors & 0xffff),
        _ => raw_sectors & 0xf_ffff,
    };
    let raw_max = u32::from_le_bytes([b[9], b[10], b[11], b[12]]);
    let max_indirect_segments = if flags & 0x10 != 0 {
        raw_max
    } else {
        raw_max & 0x1fff
    };
    Limits {
        sectors,
        readonly: flags & 1 != 0,
        flush: flags & 2 != 0,
        barrier: flags & 4 != 0,
        discard: flags & 8 != 0,
        max_indirect_segments,
    }
}

fn check_reject(rej: &Reject, raw: &BlkifRequest) {
    assert_eq!(rej.id, raw.id);
    let echo = if raw.operation == BLKIF_OP_INDIRECT {
        raw.as_indirect().indirect_op
    } else {
        raw.operation
    };
    assert_eq!(rej.operation, echo);
    assert!(rej.status == BLKIF_RSP_ERROR || rej.status == BLKIF_RSP_EOPNOTSUPP);
    let rsp = rej.response();
    assert_eq!((rsp._pad0, rsp._pad1), (0, [0; 4]));
}

/// Every invariant an accepted request promises.
fn check_request(req: &Request, limits: &Limits, max_segments: usize) {
    for s in &req.segments {
        assert!(s.first_sect <= s.last_sect && s.last_sect <= 7, "{s:?}");
        assert!(s.byte_offset() + s.byte_len() <= 4096);
    }
    assert!(req.segments.len() <= max_segments);
    match req.op {
        Op::Read | Op::Write => assert!(!req.segments.is_empty()),
        Op::Flush => assert!(limits.flush),
        Op::Barrier => assert!(limits.barrier),
        Op::Discard { .. } => {
            assert!(limits.discard);
            assert!(req.segments.is_empty());
        }
    }
    if !matches!(req.op, Op::Discard { .. }) {
        let sum: u64 = req.segments.iter().map(|s| s.sectors()).sum();
        assert_eq!(req.nr_sectors, sum);
    }
    if req.nr_sectors > 0 {
        let end = req
            .sector
            .checked_add(req.nr_sectors)
            .expect("range overflows");
        assert!(end <= limits.sectors, "{req:?} past {}", limits.sectors);
    }
    if limits.readonly {
        assert_eq!(req.op, Op::Read);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((slot, rest)) = data.split_first_chunk::<112>() else {
        return;
    };
    let Some((lim, pages)) = rest.split_first_chunk::<13>() else {
        return;
    };
    let raw: BlkifRequest = bytemuck::pod_read_unaligned(slot);
    let limits = limits_from(lim);

    let (parsed, used) = measured(|| parse(&raw, &limits));
    assert!(used <= PARSE_BOUND, "parse held {used} bytes");
    let known = matches!(
        raw.operation,
        BLKIF_OP_READ
            | BLKIF_OP_WRITE
            | BLKIF_OP_WRITE_BARRIER
            | BLKIF_OP_FLUSH_DISKCACHE
            | BLKIF_OP_DISCARD
            | BLKIF_OP_INDIRECT
    );
    let offered = match raw.operation {
        BLKIF_OP_WRITE_BARRIER => limits.barrier,
        BLKIF_OP_FLUSH_DISKCACHE => limits.flush,
        BLKIF_OP_DISCARD => limits.discard,
        BLKIF_OP_INDIRECT => limits.max_indirect_segments > 0,
        _ => known,
    };
    match &parsed {
        Err(rej) => {
            check_reject(rej, &raw);
            assert_eq!(rej.status == BLKIF_RSP_EOPNOTSUPP, !offered, "{rej}");
        }
        Ok(Parsed::Ready(req)) => {
            assert!(offered && raw.operation != BLKIF_OP_INDIRECT);
            assert_eq!((req.id, req.operation), (raw.id, raw.operation));
            check_request(req, &limits, BLKIF_MAX_SEGMENTS_PER_REQUEST);
            match req.op {
                Op::Read | Op::Write => assert!(usize::from(raw.nr_segments) == req.segments.len()),
                Op::Discard { secure } => {
                    let d = raw.as_discard();
                    assert_eq!(d.flag, if secure { BLKIF_DISCARD_SECURE } else { 0 });
                    assert_eq!(
                        (req.sector, req.nr_sectors),
                        (d.sector_number, d.nr_sectors)
                    );
                }
                _ => {}
            }
        }
        Ok(Parsed::Indirect(h)) => {
            assert_eq!(raw.operation, BLKIF_OP_INDIRECT);
            let ind = raw.as_indirect();
            assert_eq!(
                (h.id, h.operation, h.nr_segments),
                (raw.id, ind.indirect_op, ind.nr_segments)
            );
            assert!(matches!(h.op, Op::Read | Op::Write));
            let max = limits.indirect_segment_limit();
            let nr = usize::from(h.nr_segments);
            assert!(nr >= 1 && nr <= max && max <= BLKIF_MAX_INDIRECT_SEGMENTS);
            assert_eq!(h.indirect_grefs.len(), nr.div_ceil(512));
            let (done, used) = measured(|| parse_indirect(h, pages, &limits));
            assert!(used <= INDIRECT_BOUND, "parse_indirect held {used} bytes");
            match done {
                Ok(req) => {
                    assert!(pages.len() >= nr * 8);
                    assert_eq!(req.segments.len(), nr);
                    assert_eq!((req.id, req.operation, req.op), (h.id, h.operation, h.op));
                    check_request(&req, &limits, max);
                }
                Err(rej) => check_reject(&rej, &raw),
            }
        }
    }

    // The pages reinterpreted as a forged header's input: whatever the
    // header says, the work stays bounded.
    if let Ok(Parsed::Indirect(mut h)) = parsed {
        h.nr_segments = u16::MAX;
        let (r, used) = measured(|| parse_indirect(&h, pages, &limits));
        assert!(used <= INDIRECT_BOUND, "forged header: {used} bytes");
        // No limit reaches 65535 (eight pages hold 4096).
        assert!(r.is_err());
    }
});
