//! The planner never changes what the frontend sees.
//!
//! Random batches (reads, overlapping writes with random segment shapes,
//! discards, flushes and barriers with and without data) run through the
//! plan on an in-memory disk, each stage's I/Os in an order proptest picks,
//! must leave the same disk and return the same read data as running the
//! requests one by one in ring order. Checked alongside, independently of
//! `Plan::validate` (which is also run): every request completes exactly
//! once, no two I/Os of a stage conflict, every I/O's pieces are contiguous
//! on disk, fences see everything before them finished and nothing after
//! them started. Then: sort and merge really reorder and merge, and planning
//! is fast enough for a 4096-request batch.

use proptest::prelude::*;
use std::time::{Duration, Instant};
use xenio_blkback::reorder::{IoKind, Plan, PlannedIo, Planner, ReorderMode};
use xenio_blkback::request::{Op, Request, Segment};
use xenio_xen_sys::GrantRef;
use xenio_xen_sys::blkif::{
    BLKIF_OP_DISCARD, BLKIF_OP_FLUSH_DISKCACHE, BLKIF_OP_READ, BLKIF_OP_WRITE,
    BLKIF_OP_WRITE_BARRIER,
};

/// A small disk, so random requests overlap a lot.
const DISK: u64 = 96;
/// What a discarded sector reads as in the model.
const DISCARDED: u64 = 0;

fn request(op: Op, sector: u64, shapes: &[(u8, u8)], discard_len: u64) -> Request {
    let segments: Vec<Segment> = shapes
        .iter()
        .enumerate()
        .map(|(k, &(a, b))| Segment {
            gref: GrantRef(k as u32),
            first_sect: a.min(b),
            last_sect: a.max(b),
        })
        .collect();
    let nr_sectors = match op {
        Op::Discard { .. } => discard_len,
        _ => segments.iter().map(Segment::sectors).sum(),
    };
    let operation = match op {
        Op::Read => BLKIF_OP_READ,
        Op::Write => BLKIF_OP_WRITE,
        Op::Flush => BLKIF_OP_FLUSH_DISKCACHE,
        Op::Barrier => BLKIF_OP_WRITE_BARRIER,
        Op::Discard { .. } => BLKIF_OP_DISCARD,
    };
    Request {
        id: 0,
        operation,
        op,
        sector,
        nr_sectors,
        segments,
    }
}

/// One random valid request on a `DISK`-sector disk.
fn arb_request() -> impl Strategy<Value = Request> {
    let shape = (0u8..8, 0u8..8);
    let shapes = prop_oneof![
        9 => prop::collection::vec(shape.clone(), 1..=11),
        1 => prop::collection::vec(shape, 12..=40), // as if indirect
    ];
    (0u32..100, shapes, any::<u64>(), 0u64..=40, any::<bool>()).prop_map(
        |(kind, shapes, pos, dlen, secure)| {
            let (op, data) = match kind {
                0..35 => (Op::Read, true),
                35..70 => (Op::Write, true),
                70..80 => (Op::Discard { secure }, false),
                80..85 => (Op::Flush, false),
                85..88 => (Op::Flush, true),
                88..94 => (Op::Barrier, false),
                _ => (Op::Barrier, true),
            };
            let mut shapes = if data { shapes } else { Vec::new() };
            let sectors = |sh: &[(u8, u8)]| -> u64 {
                sh.iter().map(|&(a, b)| u64::from(a.abs_diff(b)) + 1).sum()
            };
            // Only the big shapes can be longer than the disk: trim them.
            while sectors(&shapes) > DISK {
                shapes.pop();
            }
            let len = match op {
                Op::Discard { .. } => dlen,
                _ => sectors(&shapes),
            };
            let sector = if len == 0 && !data {
                pos % (DISK + 1)
            } else {
                pos % (DISK - len + 1)
            };
            let mut r = request(op, sector, &shapes, dlen);
            if matches!(op, Op::Flush | Op::Barrier) && !data {
                r.sector = 0;
            }
            r
        },
    )
}

fn arb_batch(max: usize) -> impl Strategy<Value = Vec<Request>> {
    prop::collection::vec(arb_request(), 1..=max).prop_map(|mut b| {
        for (i, r) in b.iter_mut().enumerate() {
            r.id = i as u64;
        }
        b
    })
}

fn arb_mode() -> impl Strategy<Value = ReorderMode> {
    prop_oneof![
        Just(ReorderMode::Off),
        Just(ReorderMode::Sort),
        Just(ReorderMode::Merge)
    ]
}

/// The data request `r` writes into sector `j` of its segment `k`.
fn tag(r: usize, k: usize, j: u64) -> u64 {
    ((r as u64 + 1) << 32) | ((k as u64) << 8) | j
}

fn fresh_disk() -> Vec<u64> {
    (0..DISK).map(|s| 1_000_000 + s).collect()
}

/// What each read returned: per request, per segment, the sectors' values.
type Reads = Vec<Vec<Vec<u64>>>;

fn empty_reads(batch: &[Request]) -> Reads {
    batch
        .iter()
        .map(|r| vec![Vec::new(); r.segments.len()])
        .collect()
}

/// The reference: one request at a time, in ring order.
fn run_in_order(batch: &[Request]) -> (Vec<u64>, Reads) {
    let mut disk = fresh_disk();
    let mut reads = empty_reads(batch);
    for (i, r) in batch.iter().enumerate() {
        let mut pos = r.sector as usize;
        match r.op {
            Op::Read => {
                for (k, s) in r.segments.iter().enumerate() {
                    let n = s.sectors() as usize;
                    reads[i][k] = disk[pos..pos + n].to_vec();
                    pos += n;
                }
            }
            Op::Write | Op::Flush | Op::Barrier => {
                for (k, s) in r.segments.iter().enumerate() {
                    for j in 0..s.sectors() {
                        disk[pos] = tag(i, k, j);
                        pos += 1;
                    }
                }
            }
            Op::Discard { .. } => {
                for d in &mut disk[pos..pos + r.nr_sectors as usize] {
                    *d = DISCARDED;
                }
            }
        }
    }
    (disk, reads)
}

/// A deterministic permutation of 0..n from a seed (Fisher-Yates, xorshift).
fn permutation(n: usize, seed: &mut u64) -> Vec<usize> {
    let mut p: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        p.swap(i, (*seed % (i as u64 + 1)) as usize);
    }
    p
}

/// Sector where segment `k` of `r` starts on disk.
fn seg_start(r: &Request, k: usize) -> u64 {
    r.sector + r.segments[..k].iter().map(Segment::sectors).sum::<u64>()
}

fn writes(kind: IoKind) -> bool {
    matches!(kind, IoKind::Write | IoKind::Discard { .. })
}

/// Independent structural checks (naive, pairwise).
fn check_structure(batch: &[Request], plan: &Plan) -> Result<(), TestCaseError> {
    for (si, stage) in plan.stages.iter().enumerate() {
        for (a, x) in stage.ios.iter().enumerate() {
            if x.kind == IoKind::Flush {
                prop_assert_eq!(stage.ios.len(), 1, "stage {} flush not alone", si);
            }
            // Pieces contiguous, starting at the I/O's sector, covering it.
            if matches!(x.kind, IoKind::Read | IoKind::Write) {
                let mut pos = x.sector;
                for p in &x.pieces {
                    prop_assert_eq!(seg_start(&batch[p.req], p.seg), pos);
                    pos += batch[p.req].segments[p.seg].sectors();
                }
                prop_assert_eq!(pos, x.sector + x.nr_sectors);
            }
            for y in &stage.ios[a + 1..] {
                let overlap = x.nr_sectors > 0
                    && y.nr_sectors > 0
                    && x.sector < y.sector + y.nr_sectors
                    && y.sector < x.sector + x.nr_sectors;
                prop_assert!(
                    !(overlap && (writes(x.kind) || writes(y.kind))),
                    "stage {} has conflicting I/Os {:?} and {:?}",
                    si,
                    x,
                    y
                );
            }
        }
    }
    Ok(())
}

/// Run the plan on the model disk, each stage in the order `seed` picks.
fn run_plan(batch: &[Request], plan: &Plan, seed: u64) -> Result<(Vec<u64>, Reads), TestCaseError> {
    let n = batch.len();
    let mut disk = fresh_disk();
    let mut reads = empty_reads(batch);
    let mut seed = seed | 1;
    let mut started = vec![false; n];
    let mut done = vec![0u32; n];
    let mut answered = vec![0u32; n];
    for stage in &plan.stages {
        for k in permutation(stage.ios.len(), &mut seed) {
            let io: &PlannedIo = &stage.ios[k];
            for &r in &io.reqs {
                started[r] = true;
            }
            let mut pos = io.sector as usize;
            match io.kind {
                IoKind::Read => {
                    for p in &io.pieces {
                        let len = batch[p.req].segments[p.seg].sectors() as usize;
                        reads[p.req][p.seg] = disk[pos..pos + len].to_vec();
                        pos += len;
                    }
                }
                IoKind::Write => {
                    for p in &io.pieces {
                        for j in 0..batch[p.req].segments[p.seg].sectors() {
                            disk[pos] = tag(p.req, p.seg, j);
                            pos += 1;
                        }
                    }
                }
                IoKind::Discard { .. } => {
                    for d in &mut disk[pos..pos + io.nr_sectors as usize] {
                        *d = DISCARDED;
                    }
                }
                IoKind::Flush => {
                    // Everything before the fence(s) finished, nothing after
                    // started.
                    let lo = *io.reqs.iter().min().unwrap();
                    let hi = *io.reqs.iter().max().unwrap();
                    for r in 0..n {
                        if io.reqs.contains(&r) {
                            continue;
                        }
                        prop_assert!(r < lo || r > hi, "request {} inside a shared flush", r);
                        if r < lo {
                            prop_assert_eq!(
                                done[r],
                                plan.ios_per_request[r],
                                "{} unfinished at flush",
                                r
                            );
                        } else {
                            prop_assert!(!started[r], "request {} started before flush {}", r, hi);
                        }
                    }
                }
            }
            for &r in &io.reqs {
                done[r] += 1;
                if done[r] == plan.ios_per_request[r] {
                    answered[r] += 1;
                }
            }
        }
    }
    for r in 0..n {
        prop_assert_eq!(
            answered[r],
            1,
            "request {} answered {} times",
            r,
            answered[r]
        );
        prop_assert_eq!(done[r], plan.ios_per_request[r]);
    }
    Ok((disk, reads))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// One-request batches take the planner's shortcut: still a valid plan that
    /// does what the request says, and counted.
    #[test]
    fn single_request_batches(
        batch in arb_batch(1),
        mode in arb_mode(),
        seed in any::<u64>(),
    ) {
        let mut planner = Planner::new(mode, 1 << 20);
        let plan = planner.plan(&batch);
        if let Err(e) = plan.validate(&batch) {
            return Err(TestCaseError::fail(format!("validate: {e}\n{plan:#?}")));
        }
        check_structure(&batch, &plan)?;
        let expected = run_in_order(&batch);
        let got = run_plan(&batch, &plan, seed)?;
        prop_assert_eq!(&got, &expected);
        let st = planner.stats();
        prop_assert_eq!((st.batches, st.requests, st.ios), (1, 1, plan.io_count() as u64));
        prop_assert_eq!((st.reordered, st.merged), (0, 0));
    }

    /// Batches of reads only take the planner's conflict-free path: one stage,
    /// ring order in `off` mode, sorted by sector (stable) otherwise, and the
    /// same data as reading in ring order.
    #[test]
    fn read_only_batches(
        batch in arb_batch(48),
        mode in arb_mode(),
        seed in any::<u64>(),
    ) {
        let mut batch: Vec<Request> = batch.into_iter().filter(|r| r.op == Op::Read).collect();
        prop_assume!(!batch.is_empty());
        for (i, r) in batch.iter_mut().enumerate() {
            r.id = i as u64;
        }
        let mut planner = Planner::new(mode, 1 << 20);
        let plan = planner.plan(&batch);
        if let Err(e) = plan.validate(&batch) {
            return Err(TestCaseError::fail(format!("validate: {e}\n{plan:#?}")));
        }
        check_structure(&batch, &plan)?;
        prop_assert_eq!(plan.stages.len(), 1);
        let ios = &plan.stages[0].ios;
        let firsts: Vec<usize> = ios.iter().map(|io| io.reqs[0]).collect();
        match mode {
            ReorderMode::Off => prop_assert_eq!(firsts, (0..batch.len()).collect::<Vec<_>>()),
            _ => {
                let mut want: Vec<usize> = (0..batch.len()).collect();
                want.sort_by_key(|&i| batch[i].sector);
                if mode == ReorderMode::Sort {
                    prop_assert_eq!(firsts, want);
                } else {
                    prop_assert!(ios.windows(2).all(|w| w[0].sector <= w[1].sector));
                }
            }
        }
        let expected = run_in_order(&batch);
        let got = run_plan(&batch, &plan, seed)?;
        prop_assert_eq!(&got, &expected);
        let st = planner.stats();
        prop_assert_eq!((st.batches, st.requests), (1, batch.len() as u64));
    }

    #[test]
    fn plan_equals_in_order_execution(
        batch in arb_batch(48),
        mode in arb_mode(),
        max_merge in prop_oneof![Just(0u64), 1u64..64, Just(1u64 << 20)],
        seeds in prop::collection::vec(any::<u64>(), 3),
    ) {
        let mut planner = Planner::new(mode, max_merge);
        let plan = planner.plan(&batch);
        if let Err(e) = plan.validate(&batch) {
            return Err(TestCaseError::fail(format!("validate: {e}\n{plan:#?}")));
        }
        check_structure(&batch, &plan)?;
        let expected = run_in_order(&batch);
        for seed in seeds {
            let got = run_plan(&batch, &plan, seed)?;
            prop_assert_eq!(&got.0, &expected.0, "disk differs ({} mode)", mode);
            prop_assert_eq!(&got.1, &expected.1, "reads differ ({} mode)", mode);
        }
        let st = planner.stats();
        prop_assert_eq!(st.batches, 1);
        prop_assert_eq!(st.requests, batch.len() as u64);
        prop_assert_eq!(st.ios, plan.io_count() as u64);
        for io in plan.stages.iter().flat_map(|s| &s.ios) {
            if io.kind != IoKind::Flush && io.reqs.len() > 1 {
                prop_assert!(io.nr_sectors <= max_merge);
            }
        }
        match mode {
            ReorderMode::Off => {
                prop_assert_eq!(st.reordered, 0);
                prop_assert_eq!(st.merged, 0);
                prop_assert!(plan.stages.iter().flat_map(|s| &s.ios).all(|io| io.reqs.len() == 1));
            }
            ReorderMode::Sort => prop_assert_eq!(st.merged, 0),
            ReorderMode::Merge => {}
        }
    }

    #[test]
    fn sequential_but_shuffled_is_sorted_and_merged(
        order in Just((0..64usize).collect::<Vec<_>>()).prop_shuffle(),
        read in any::<bool>(),
    ) {
        let op = if read { Op::Read } else { Op::Write };
        let batch: Vec<Request> = order
            .iter()
            .map(|&k| request(op, 8 * k as u64, &[(0, 3), (4, 7)], 0))
            .collect();
        let shuffled = order.windows(2).any(|w| w[0] > w[1]);

        let mut off = Planner::new(ReorderMode::Off, 1 << 20);
        let plan = off.plan(&batch);
        plan.validate(&batch).unwrap();
        prop_assert_eq!(plan.io_count(), 64);
        prop_assert_eq!(off.stats().reordered, 0);

        let mut sort = Planner::new(ReorderMode::Sort, 1 << 20);
        let plan = sort.plan(&batch);
        plan.validate(&batch).unwrap();
        prop_assert_eq!(plan.stages.len(), 1);
        let sectors: Vec<u64> = plan.stages[0].ios.iter().map(|io| io.sector).collect();
        prop_assert_eq!(sectors, (0..64).map(|k| 8 * k).collect::<Vec<u64>>());
        prop_assert_eq!(sort.stats().merged, 0);
        if shuffled {
            prop_assert!(sort.stats().reordered > 0);
        }

        let mut merge = Planner::new(ReorderMode::Merge, 1 << 20);
        let plan = merge.plan(&batch);
        plan.validate(&batch).unwrap();
        prop_assert_eq!(plan.io_count(), 1);
        let io = &plan.stages[0].ios[0];
        prop_assert_eq!((io.sector, io.nr_sectors, io.pieces.len()), (0, 512, 128));
        prop_assert_eq!(merge.stats().merged, 63);
        prop_assert_eq!(merge.stats().ios, 1);

        // A cap of 64 sectors makes eight I/Os of eight requests.
        let mut capped = Planner::new(ReorderMode::Merge, 64);
        let plan = capped.plan(&batch);
        plan.validate(&batch).unwrap();
        prop_assert_eq!(plan.io_count(), 8);
        prop_assert!(plan.stages[0].ios.iter().all(|io| io.nr_sectors == 64));
        prop_assert_eq!(capped.stats().merged, 56);
    }
}

fn rd(sector: u64, sectors: u8) -> Request {
    request(Op::Read, sector, &[(0, sectors - 1)], 0)
}

fn wr(sector: u64, sectors: u8) -> Request {
    request(Op::Write, sector, &[(0, sectors - 1)], 0)
}

fn stage_of(plan: &Plan, req: usize) -> Vec<usize> {
    plan.stages
        .iter()
        .enumerate()
        .filter(|(_, s)| s.ios.iter().any(|io| io.reqs.contains(&req)))
        .map(|(i, _)| i)
        .collect()
}

#[test]
fn read_after_overlapping_write_waits_but_others_do_not() {
    // W[0,8) R[4,8) R[100,108) W[4,12)
    let batch = [wr(0, 8), rd(4, 4), rd(100, 8), wr(4, 8)];
    for mode in [ReorderMode::Sort, ReorderMode::Merge] {
        let plan = Planner::new(mode, 1024).plan(&batch);
        plan.validate(&batch).unwrap();
        assert_eq!(stage_of(&plan, 0), [0]);
        assert_eq!(stage_of(&plan, 1), [1]); // after the write it reads
        assert_eq!(stage_of(&plan, 2), [0]); // unrelated: runs at once
        assert_eq!(stage_of(&plan, 3), [2]); // after the read it would change
    }
    // Off keeps ring order: R[100,108) cannot go before R[4,8).
    let plan = Planner::new(ReorderMode::Off, 1024).plan(&batch);
    plan.validate(&batch).unwrap();
    assert_eq!(
        (0..4).map(|r| stage_of(&plan, r)[0]).collect::<Vec<_>>(),
        [0, 1, 1, 2]
    );
}

#[test]
fn adjacent_writes_do_not_conflict() {
    // MirageOS counts touching ranges as overlapping; they do not overlap.
    let batch = [wr(0, 8), wr(8, 8), rd(16, 8)];
    let plan = Planner::new(ReorderMode::Off, 0).plan(&batch);
    plan.validate(&batch).unwrap();
    assert_eq!(plan.stages.len(), 1);
}

#[test]
fn barrier_with_data_is_flush_write_flush_between_the_rest() {
    let barrier = request(Op::Barrier, 40, &[(0, 7)], 0);
    let batch = [wr(0, 8), rd(200, 8), barrier, rd(300, 8), wr(8, 8)];
    for mode in [ReorderMode::Off, ReorderMode::Sort, ReorderMode::Merge] {
        let plan = Planner::new(mode, 1024).plan(&batch);
        plan.validate(&batch).unwrap();
        let kinds: Vec<Vec<IoKind>> = plan
            .stages
            .iter()
            .map(|s| s.ios.iter().map(|io| io.kind).collect())
            .collect();
        assert_eq!(kinds[1], [IoKind::Flush]);
        assert_eq!(kinds[2], [IoKind::Write]);
        assert_eq!(kinds[3], [IoKind::Flush]);
        assert_eq!(stage_of(&plan, 2), [1, 2, 3]);
        assert_eq!(plan.ios_per_request[2], 3);
        assert_eq!(stage_of(&plan, 3), [4]);
        assert_eq!(stage_of(&plan, 4), [4]);
    }
}

#[test]
fn back_to_back_flushes_share_one_in_merge_mode() {
    let flush = request(Op::Flush, 0, &[], 0);
    let barrier = request(Op::Barrier, 0, &[(0, 7)], 0);
    let batch = [wr(0, 8), flush.clone(), flush, barrier.clone(), barrier];
    let mut p = Planner::new(ReorderMode::Merge, 1024);
    let plan = p.plan(&batch);
    plan.validate(&batch).unwrap();
    // W | F(1,2,3) | W3 | F(3,4) | W4 | F(4)
    assert_eq!(plan.stages.len(), 6);
    assert_eq!(plan.stages[1].ios[0].reqs, [1, 2, 3]);
    assert_eq!(plan.stages[3].ios[0].reqs, [3, 4]);
    assert_eq!(plan.ios_per_request, [1, 1, 1, 3, 3]);
    assert_eq!(p.stats().merged, 3);
    // Without merging every fence has its own flushes.
    let plan = Planner::new(ReorderMode::Sort, 1024).plan(&batch);
    plan.validate(&batch).unwrap();
    assert_eq!(plan.stages.len(), 1 + 1 + 1 + 3 + 3);
}

#[test]
fn discards_merge_only_with_equal_security() {
    let d = |s, n, secure| request(Op::Discard { secure }, s, &[], n);
    let batch = [
        d(0, 8, false),
        d(8, 8, false),
        d(16, 8, true),
        d(24, 8, true),
        d(40, 0, false),
    ];
    let plan = Planner::new(ReorderMode::Merge, 1024).plan(&batch);
    plan.validate(&batch).unwrap();
    let ios: Vec<(IoKind, u64, u64)> = plan.stages[0]
        .ios
        .iter()
        .map(|io| (io.kind, io.sector, io.nr_sectors))
        .collect();
    assert_eq!(
        ios,
        [
            (IoKind::Discard { secure: false }, 0, 16),
            (IoKind::Discard { secure: true }, 16, 16),
            (IoKind::Discard { secure: false }, 40, 0),
        ]
    );
}

#[test]
fn reads_and_writes_never_merge_together() {
    let batch = [rd(0, 8), wr(8, 8), rd(16, 8)];
    let plan = Planner::new(ReorderMode::Merge, 1024).plan(&batch);
    plan.validate(&batch).unwrap();
    assert_eq!(plan.io_count(), 3);
}

#[test]
fn stats_accumulate_and_empty_batches_do_not_count() {
    let mut p = Planner::new(ReorderMode::Merge, 1024);
    assert!(p.plan(&[]).stages.is_empty());
    let batch = [wr(8, 8), wr(0, 8)];
    p.plan(&batch);
    p.plan(&batch);
    let st = p.stats();
    assert_eq!((st.batches, st.requests, st.merged, st.ios), (2, 4, 2, 2));
}

/// Plan a 4096-request batch, returning the time it took.
fn time_plan(mode: ReorderMode, batch: &[Request]) -> Duration {
    let mut p = Planner::new(mode, 256);
    let t = Instant::now();
    let plan = p.plan(batch);
    let took = t.elapsed();
    assert!(plan.io_count() >= 1);
    took
}

#[test]
fn a_4096_request_batch_plans_fast() {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut rnd = move |m: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % m
    };
    let shapes = |rnd: &mut dyn FnMut(u64) -> u64| -> Vec<(u8, u8)> {
        (0..1 + rnd(11)).map(|_| (rnd(8) as u8, 7)).collect()
    };
    // Random reads and writes over a large disk, over a small one (many
    // conflicts), a chain of writes to one sector, and sequential writes.
    let mut batches: Vec<(&str, Vec<Request>)> = Vec::new();
    for (name, span) in [("random, large disk", 1u64 << 30), ("random, 4 MiB", 8192)] {
        let b = (0..4096)
            .map(|i| {
                let op = if rnd(2) == 0 { Op::Read } else { Op::Write };
                let op = if i % 500 == 499 { Op::Flush } else { op };
                let sh = if op == Op::Flush {
                    Vec::new()
                } else {
                    shapes(&mut rnd)
                };
                request(op, rnd(span), &sh, 0)
            })
            .collect();
        batches.push((name, b));
    }
    batches.push(("same sector", (0..4096).map(|_| wr(0, 8)).collect()));
    batches.push((
        "sequential",
        (0..4096).map(|k| wr(8 * k as u64, 8)).collect(),
    ));
    for (name, batch) in &batches {
        for mode in [ReorderMode::Off, ReorderMode::Sort, ReorderMode::Merge] {
            let took = time_plan(mode, batch);
            eprintln!("{name}, {mode}: {took:?}");
            assert!(
                took < Duration::from_millis(500),
                "{name} in {mode} mode took {took:?}"
            );
        }
    }
}

#[test]
fn validate_rejects_broken_plans() {
    use xenio_blkback::reorder::PlanError;
    let flush = request(Op::Flush, 0, &[], 0);
    let batch = [wr(0, 8), wr(4, 8), flush, rd(0, 8)];
    let good = Planner::new(ReorderMode::Sort, 0).plan(&batch);
    good.validate(&batch).unwrap();
    assert_eq!(good.stages.len(), 4);

    // Overlapping writes swapped.
    let mut p = good.clone();
    p.stages.swap(0, 1);
    assert!(matches!(
        p.validate(&batch),
        Err(PlanError::Order {
            earlier: 0,
            later: 1
        })
    ));
    // Overlapping writes in one stage.
    let mut p = good.clone();
    let w1 = p.stages.remove(1);
    p.stages[0].ios.extend(w1.ios);
    assert!(matches!(
        p.validate(&batch),
        Err(PlanError::Conflict { stage: 0, .. })
    ));
    // The read before the flush it follows.
    let mut p = good.clone();
    p.stages.swap(2, 3);
    assert!(matches!(p.validate(&batch), Err(PlanError::Order { .. })));
    // A flush sharing its stage.
    let mut p = good.clone();
    let r = p.stages.pop().unwrap();
    p.stages[2].ios.extend(r.ios);
    assert!(matches!(
        p.validate(&batch),
        Err(PlanError::FlushNotAlone { stage: 2, .. })
    ));
    // A request without an I/O.
    let mut p = good.clone();
    p.stages.pop();
    assert!(matches!(
        p.validate(&batch),
        Err(PlanError::Coverage { req: 3, .. })
    ));
    // A piece out of place.
    let mut p = good.clone();
    p.stages[3].ios[0].sector = 1;
    assert!(matches!(
        p.validate(&batch),
        Err(PlanError::BadIo { stage: 3, .. })
    ));
    // A wrong completion count.
    let mut p = good.clone();
    p.ios_per_request[0] = 2;
    assert!(matches!(
        p.validate(&batch),
        Err(PlanError::Coverage { req: 0, .. })
    ));
    // A read planned as a write.
    let mut p = good;
    p.stages[3].ios[0].kind = IoKind::Write;
    assert!(matches!(p.validate(&batch), Err(PlanError::BadIo { .. })));
}
