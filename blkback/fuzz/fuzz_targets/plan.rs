//! Random valid batches through the planner in every mode: the plan must
//! pass `Plan::validate` (no conflicting I/Os in a stage, conflicting
//! requests and fences in ring order, pieces contiguous and covering every
//! segment once, every request answered) and its counters must add up.
//!
//! Input: byte 0 picks the merge cap, then 4 bytes per request (kind,
//! sector, segment count and shape seed) on a 128-sector disk, so that
//! requests overlap often.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xenio_blkback::reorder::{IoKind, MAX_MERGED_PIECES, Planner, ReorderMode};
use xenio_blkback::request::{Op, Request, Segment};
use xenio_xen_sys::GrantRef;

const DISK: u64 = 128;
const MAX_BATCH: usize = 96;

fn request(b: &[u8; 4]) -> Request {
    let [kind, pos, count, shape] = *b;
    let (op, data) = match kind % 16 {
        0..=5 => (Op::Read, true),
        6..=11 => (Op::Write, true),
        12 => (
            Op::Discard {
                secure: kind & 0x80 != 0,
            },
            false,
        ),
        13 => (Op::Flush, kind & 0x80 != 0),
        _ => (Op::Barrier, kind & 0x80 != 0),
    };
    let mut segments = Vec::new();
    if data {
        // 1..=11 segments, sometimes up to 40 (as an indirect request).
        let n = if count & 0x80 != 0 {
            12 + count % 29
        } else {
            1 + count % 11
        };
        let mut x = u32::from(shape) | 1;
        for k in 0..n {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let a = (x % 8) as u8;
            let b = ((x >> 8) % 8) as u8;
            segments.push(Segment {
                gref: GrantRef(u32::from(k)),
                first_sect: a.min(b),
                last_sect: a.max(b),
            });
        }
        while segments.iter().map(Segment::sectors).sum::<u64>() > DISK {
            segments.pop();
        }
    }
    let len = match op {
        Op::Discard { .. } => u64::from(count % 48),
        _ => segments.iter().map(Segment::sectors).sum(),
    };
    let sector = if len == 0 {
        0
    } else {
        u64::from(pos) % (DISK - len + 1)
    };
    Request {
        id: 0,
        operation: 0,
        op,
        sector,
        nr_sectors: len,
        segments,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&cap, rest)) = data.split_first() else {
        return;
    };
    let max_merge = match cap % 4 {
        0 => 0,
        1 => u64::from(cap),
        2 => 64,
        _ => 1 << 20,
    };
    let batch: Vec<Request> = rest
        .chunks_exact(4)
        .take(MAX_BATCH)
        .map(|c| request(&[c[0], c[1], c[2], c[3]]))
        .collect();
    for mode in [ReorderMode::Off, ReorderMode::Sort, ReorderMode::Merge] {
        let mut planner = Planner::new(mode, max_merge);
        let plan = planner.plan(&batch);
        if let Err(e) = plan.validate(&batch) {
            panic!("{mode} mode, cap {max_merge}: {e}\nbatch {batch:#?}\nplan {plan:#?}");
        }
        for io in plan.stages.iter().flat_map(|s| &s.ios) {
            if io.kind != IoKind::Flush && io.reqs.len() > 1 {
                assert_eq!(mode, ReorderMode::Merge);
                assert!(io.nr_sectors <= max_merge);
                assert!(io.pieces.len() <= MAX_MERGED_PIECES);
            }
        }
        let st = planner.stats();
        assert_eq!(st.requests, batch.len() as u64);
        assert_eq!(st.ios, plan.io_count() as u64);
        assert_eq!(st.batches, u64::from(!batch.is_empty()));
        if mode == ReorderMode::Off {
            assert_eq!((st.reordered, st.merged), (0, 0));
        }
        if mode != ReorderMode::Merge {
            assert_eq!(st.merged, 0);
        }
    }
});
