//! Errors stay with their requests: a storage that fails some sectors fails
//! exactly the requests that touch them, whatever the reordering mode merged.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use xenio_blkback::reorder::ReorderMode;
use xenio_blkback::storage::{DiscardInfo, DiskInfo, SyncStorage, Synchronous};
use xenio_blkback::{BackendConfig, Counters, QueueConfig, serve};
use xenio_xen_sys::blkif::*;
use xenio_xen_sys::xenbus::XenbusState;
use xenio_xenbus::handshake::Endpoint;
use xenio_xenbus::platform::{InProcDomain, InProcess, Platform};
use xenio_xenbus::*;

mod common;
use common::{Front, T, connect, domains, rw, seg};

const SECTORS: u64 = 256;

/// A disk in memory whose operations fail when they touch a bad sector.
#[derive(Default)]
struct Faulty {
    data: Mutex<Vec<u8>>,
    bad: Mutex<BTreeSet<u64>>,
}

impl Faulty {
    fn check(&self, offset: u64, len: u64) -> std::io::Result<()> {
        let bad = self.bad.lock().unwrap();
        match bad.range(offset / 512..(offset + len).div_ceil(512)).next() {
            Some(s) => Err(std::io::Error::other(format!("bad sector {s}"))),
            None => Ok(()),
        }
    }
}

impl SyncStorage for Faulty {
    fn info(&self) -> DiskInfo {
        DiskInfo {
            sectors: SECTORS,
            flush: true,
            discard: Some(DiscardInfo {
                granularity: 512,
                alignment: 0,
            }),
            ..Default::default()
        }
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.check(offset, buf.len() as u64)?;
        buf.copy_from_slice(&self.data.lock().unwrap()[offset as usize..][..buf.len()]);
        Ok(())
    }
    fn write_at(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.check(offset, data.len() as u64)?;
        self.data.lock().unwrap()[offset as usize..][..data.len()].copy_from_slice(data);
        Ok(())
    }
    fn flush(&self) -> std::io::Result<()> {
        Ok(())
    }
    fn discard(&self, offset: u64, len: u64) -> std::io::Result<()> {
        self.check(offset, len)?;
        self.data.lock().unwrap()[offset as usize..][..len as usize].fill(0);
        Ok(())
    }
}

/// Responses sorted by id.
fn by_id(mut rsps: Vec<BlkifResponse>) -> Vec<BlkifResponse> {
    rsps.sort_by_key(|r| r.id);
    rsps
}

fn read(id: u64, sector: u64, gref: GrantRef) -> BlkifRequest {
    rw(BLKIF_OP_READ, id, sector, &[seg(gref, 0, 7)])
}

/// Serve `storage` in `mode` to a raw frontend and run `f` against it.
fn with_backend(
    storage: &Synchronous<Faulty>,
    mode: ReorderMode,
    f: impl FnOnce(&mut Front, &InProcDomain, &Counters),
) {
    *storage.disk().data.lock().unwrap() = vec![0; SECTORS as usize * 512];
    let world = InProcess::new().unwrap();
    let (dom0, guest, paths) = domains(&world);
    let config = BackendConfig {
        once: true,
        persistent: false,
        max_queues: 1,
        queue: QueueConfig {
            reorder: mode,
            ..Default::default()
        },
        ..Default::default()
    };
    let counters = Counters::default();
    let shutdown = AtomicBool::new(false);
    std::thread::scope(|s| {
        let backend = s.spawn(|| {
            serve(
                &dom0,
                &paths.backend,
                storage,
                &config,
                &counters,
                &shutdown,
            )
        });
        let (mut front, _) = connect(&guest, &paths);
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            f(&mut front, &guest, &counters)
        }));
        if let Err(panic) = run {
            // Stop the backend, or the scope waits for it forever.
            shutdown.store(true, std::sync::atomic::Ordering::Relaxed);
            let _ = backend.join();
            std::panic::resume_unwind(panic);
        }
        let mut ep = Endpoint::frontend(guest.store(), &paths.frontend).unwrap();
        ep.switch(XenbusState::Closing, &[]).unwrap();
        ep.wait_peer(T, |s| s == XenbusState::Closing).unwrap();
        ep.switch(XenbusState::Closed, &[]).unwrap();
        backend.join().unwrap().unwrap();
    });
}

/// The case: reads of blocks 0, 2 and 3 in one batch, block 2 bad.
/// Merging joins 2 and 3 into one operation; block 3 must still be read.
#[test]
fn a_bad_block_fails_only_its_own_read_in_every_mode() {
    for mode in [ReorderMode::Off, ReorderMode::Sort, ReorderMode::Merge] {
        let storage = Synchronous::new(Faulty::default());
        storage.disk().bad.lock().unwrap().insert(2 * 8 + 3);
        with_backend(&storage, mode, |front, guest, _| {
            let pages = guest
                .grants()
                .unwrap()
                .grant(DomId(0), 3, Access::ReadWrite)
                .unwrap();
            let refs = pages.refs();
            front.send(&[
                read(0, 0, refs[0]),
                read(2, 16, refs[1]),
                read(3, 24, refs[2]),
            ]);
            let status: Vec<(u64, i16)> = by_id(front.responses(3))
                .iter()
                .map(|r| (r.id, r.status))
                .collect();
            assert_eq!(
                status,
                [
                    (0, BLKIF_RSP_OKAY),
                    (2, BLKIF_RSP_ERROR),
                    (3, BLKIF_RSP_OKAY)
                ],
                "reorder {mode}"
            );
        });
    }
}

/// One request of a generated batch.
#[derive(Clone, Debug)]
enum Gen {
    Read(u64, Vec<(u8, u8)>),
    Write(u64, Vec<(u8, u8)>),
    Barrier(u64, Vec<(u8, u8)>),
    Discard(u64, u64),
    Flush,
}

impl Gen {
    /// First sector and sectors covered.
    fn range(&self) -> (u64, u64) {
        let n = |segs: &[(u8, u8)]| segs.iter().map(|&(f, l)| u64::from(l - f) + 1).sum();
        match self {
            Gen::Read(s, segs) | Gen::Write(s, segs) | Gen::Barrier(s, segs) => (*s, n(segs)),
            Gen::Discard(s, n) => (*s, *n),
            Gen::Flush => (0, 0),
        }
    }

    /// The same request at `sector`.
    fn at(self, sector: u64) -> Gen {
        match self {
            Gen::Read(_, g) => Gen::Read(sector, g),
            Gen::Write(_, g) => Gen::Write(sector, g),
            Gen::Barrier(_, g) => Gen::Barrier(sector, g),
            Gen::Discard(_, n) => Gen::Discard(sector, n),
            Gen::Flush => Gen::Flush,
        }
    }
}

/// A batch where about half the requests start right where the one before
/// ends: contiguous requests are what merging joins.
fn gen_batch(max: usize) -> impl proptest::strategy::Strategy<Value = Vec<Gen>> {
    use proptest::prelude::*;
    proptest::collection::vec((gen_request(), any::<bool>()), 1..=max).prop_map(|reqs| {
        let mut end = 0;
        reqs.into_iter()
            .map(|(g, follow)| {
                let (_, n) = g.range();
                let g = if follow && end + n <= SECTORS && !matches!(g, Gen::Flush) {
                    g.at(end)
                } else {
                    g
                };
                let (s, n) = g.range();
                if n > 0 {
                    end = s + n;
                }
                g
            })
            .collect()
    })
}

fn gen_request() -> impl proptest::strategy::Strategy<Value = Gen> {
    use proptest::prelude::*;
    let seg = (0u8..8).prop_flat_map(|f| (Just(f), f..8));
    let segs = proptest::collection::vec(seg, 1..=3);
    // Sectors 0..200 plus at most 24 stay inside the 256-sector disk; a small
    // disk makes overlaps, merges and bad sectors inside merges common.
    prop_oneof![
        4 => (0u64..200, segs.clone()).prop_map(|(s, g)| Gen::Read(s, g)),
        4 => (0u64..200, segs.clone()).prop_map(|(s, g)| Gen::Write(s, g)),
        1 => (0u64..200, segs).prop_map(|(s, g)| Gen::Barrier(s, g)),
        1 => (0u64..200, 1u64..=16).prop_map(|(s, n)| Gen::Discard(s, n)),
        1 => Just(Gen::Flush),
    ]
}

/// Storage failures at random sectors, random batches of reads, writes,
/// barriers, discards and flushes: in every reordering mode, exactly the
/// requests touching a bad sector fail, and every other request does what it
/// would have done alone, in ring order (reads checked against a model disk).
#[test]
fn injected_failures_fail_exactly_the_requests_that_touch_them() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};
    use std::cell::RefCell;
    for mode in [ReorderMode::Off, ReorderMode::Sort, ReorderMode::Merge] {
        let storage = Synchronous::new(Faulty::default());
        with_backend(&storage, mode, |front, guest, counters| {
            const PAGES_PER: usize = 3;
            const MAX_BATCH: usize = 24;
            let pages = guest
                .grants()
                .unwrap()
                .grant(DomId(0), MAX_BATCH * PAGES_PER, Access::ReadWrite)
                .unwrap();
            let front = RefCell::new(front);
            let strategy = (
                gen_batch(MAX_BATCH),
                proptest::collection::btree_set(0u64..SECTORS, 0..6),
                any::<u8>(),
            );
            let mut runner = TestRunner::new(Config {
                cases: 300,
                failure_persistence: None,
                ..Config::default()
            });
            runner
                .run(&strategy, |(batch, bad, seed)| {
                    let mut front = front.borrow_mut();
                    let disk = storage.disk();
                    *disk.data.lock().unwrap() = vec![0; SECTORS as usize * 512];
                    *disk.bad.lock().unwrap() = bad.clone();
                    let mut model = vec![0u8; SECTORS as usize * 512];
                    let touches_bad = |(s, n): (u64, u64)| bad.range(s..s + n).next().is_some();
                    let mut raw = Vec::new();
                    for (i, g) in batch.iter().enumerate() {
                        let page = |k: usize| pages.refs()[i * PAGES_PER + k];
                        let (sector, _) = g.range();
                        let mut r = BlkifRequest {
                            id: i as u64,
                            sector_number: sector,
                            ..Default::default()
                        };
                        let segs = match g {
                            Gen::Read(_, segs) => {
                                r.operation = BLKIF_OP_READ;
                                segs.as_slice()
                            }
                            Gen::Write(_, segs) | Gen::Barrier(_, segs) => {
                                r.operation = if matches!(g, Gen::Write(..)) {
                                    BLKIF_OP_WRITE
                                } else {
                                    BLKIF_OP_WRITE_BARRIER
                                };
                                segs.as_slice()
                            }
                            Gen::Flush => {
                                r.operation = BLKIF_OP_FLUSH_DISKCACHE;
                                &[]
                            }
                            Gen::Discard(s, n) => {
                                raw.push(BlkifRequest::from(BlkifRequestDiscard {
                                    operation: BLKIF_OP_DISCARD,
                                    id: i as u64,
                                    sector_number: *s,
                                    nr_sectors: *n,
                                    ..Default::default()
                                }));
                                continue;
                            }
                        };
                        r.nr_segments = segs.len() as u8;
                        for (k, &(first, last)) in segs.iter().enumerate() {
                            r.seg[k] = BlkifRequestSegment {
                                gref: page(k).0,
                                first_sect: first,
                                last_sect: last,
                                _pad: [0; 2],
                            };
                            // What a write writes: bytes of this case, request and page.
                            let fill: Vec<u8> = (0..4096)
                                .map(|b| (b as u8) ^ (i as u8).wrapping_mul(31) ^ seed ^ k as u8)
                                .collect();
                            pages
                                .region()
                                .write((i * PAGES_PER + k) * 4096, &fill)
                                .unwrap();
                        }
                        raw.push(r);
                    }
                    front.send(&raw);
                    let rsps = by_id(front.responses(raw.len()));
                    // In ring order: the model disk, and what each request must get.
                    for (i, g) in batch.iter().enumerate() {
                        let range = g.range();
                        let want = if touches_bad(range) {
                            BLKIF_RSP_ERROR
                        } else {
                            BLKIF_RSP_OKAY
                        };
                        prop_assert_eq!(
                            rsps[i].status,
                            want,
                            "request {} {:?} (bad sectors {:?}, reorder {})",
                            i,
                            g,
                            bad,
                            mode
                        );
                        let segs = match g {
                            Gen::Read(_, s) | Gen::Write(_, s) | Gen::Barrier(_, s) => s,
                            Gen::Discard(s, n) if want == BLKIF_RSP_OKAY => {
                                model[*s as usize * 512..][..*n as usize * 512].fill(0);
                                continue;
                            }
                            _ => continue,
                        };
                        if want != BLKIF_RSP_OKAY {
                            continue;
                        }
                        let mut at = range.0 as usize * 512;
                        for (k, &(first, last)) in segs.iter().enumerate() {
                            let off = (i * PAGES_PER + k) * 4096 + first as usize * 512;
                            let len = (usize::from(last - first) + 1) * 512;
                            let mut page = vec![0u8; len];
                            pages.region().read(off, &mut page).unwrap();
                            if matches!(g, Gen::Read(..)) {
                                prop_assert!(
                                    page == model[at..at + len],
                                    "request {} {:?} read other bytes (reorder {})",
                                    i,
                                    g,
                                    mode
                                );
                            } else {
                                model[at..at + len].copy_from_slice(&page);
                            }
                            at += len;
                        }
                    }
                    Ok(())
                })
                .unwrap();
            let splits = counters
                .split_retries
                .load(std::sync::atomic::Ordering::Relaxed);
            eprintln!("reorder {mode}: {splits} failed merged I/Os retried request by request");
            if mode == ReorderMode::Merge {
                assert!(
                    splits > 0,
                    "no merged operation failed: the test did not test splitting"
                );
            }
        });
    }
}
