//! A hostile frontend: arbitrary ring contents (requests, producer index) fed to
//! blkback's real queue worker with an in-memory grant table and disk. The
//! worker must answer or disconnect: never panic, never hang, never answer more
//! than was asked, never write a read-only grant.
//!
//! Storage failures: the producer index's unused high bits may name a bad
//! sector. The same ring is then served twice, without and with the failure:
//! every request (with a unique id) must get the same answer both times,
//! except that one answered `OKAY` without the failure and touching the bad
//! sector must get `ERROR`. Errors stay with their requests, however the
//! batch was reordered or merged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use xenio_blkback::queue::{Counters, GrantMode, QueueConfig, QueueWorker};
use xenio_blkback::reorder::ReorderMode;
use xenio_blkback::request::{self, Limits, Parsed};
use xenio_blkback::storage::{Completion, Io, StorageQueue};
use xenio_xen_sys::blkif::{BlkifRequest, BlkifResponse, BLKIF_RSP_ERROR, BLKIF_RSP_OKAY};
use xenio_ring::BackRing;
use xenio_xen_sys::{DomId, GrantRef, Port};
use xenio_xenbus::{
    CopyBuf, Error, EventChannel, GrantCopy, GrantMapper, ReadOnlyRegion, Region, Result,
};

const PAGES: u32 = 16;
const FIRST_REF: u32 = 8;
const RO_FROM: u32 = FIRST_REF + 12; // refs 20..24 are read-only grants

/// 16 granted pages, 4 of them read-only.
struct Grants {
    pages: Vec<Mutex<Vec<u8>>>,
}

impl Grants {
    fn page(&self, r: GrantRef, writable: bool) -> Result<&Mutex<Vec<u8>>> {
        let i = r.0.checked_sub(FIRST_REF).filter(|i| *i < PAGES);
        let bad = |why: &str| Error::Grant {
            domid: DomId(1),
            gref: r,
            reason: why.into(),
        };
        let i = i.ok_or_else(|| bad("not granted"))?;
        if writable && r.0 >= RO_FROM {
            return Err(bad("read-only"));
        }
        Ok(&self.pages[i as usize])
    }
    fn snapshot(&self, refs: &[GrantRef], writable: bool) -> Result<Region> {
        let region = Region::anonymous(refs.len().max(1) * 4096)?;
        for (k, r) in refs.iter().enumerate() {
            region.write(k * 4096, &self.page(*r, writable)?.lock().unwrap())?;
        }
        Ok(region)
    }
}

impl GrantMapper for Grants {
    fn map(&self, _d: DomId, refs: &[GrantRef]) -> Result<Region> {
        self.snapshot(refs, true)
    }
    fn map_readonly(&self, _d: DomId, refs: &[GrantRef]) -> Result<ReadOnlyRegion> {
        Ok(self.snapshot(refs, false)?.into_read_only())
    }
    fn copy(&self, ops: &mut [GrantCopy<'_>]) -> Result<Vec<Result<()>>> {
        Ok(ops
            .iter_mut()
            .map(|op| {
                let at = usize::from(op.offset);
                match &mut op.local {
                    CopyBuf::FromGrant(b) => {
                        let p = self.page(op.gref, false)?.lock().unwrap();
                        b.copy_from_slice(
                            p.get(at..at + b.len())
                                .ok_or(Error::Limit("crosses page".into()))?,
                        );
                    }
                    CopyBuf::ToGrant(b) => {
                        let mut p = self.page(op.gref, true)?.lock().unwrap();
                        p.get_mut(at..at + b.len())
                            .ok_or(Error::Limit("crosses page".into()))?
                            .copy_from_slice(b);
                    }
                }
                Ok(())
            })
            .collect())
    }
}

/// An event channel whose wait stops the worker (the fuzz input is all there is).
struct Channel<'a> {
    stop: &'a AtomicBool,
    fd: std::io::PipeReader,
    notified: &'a AtomicBool,
}
impl AsFd for Channel<'_> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
impl EventChannel for Channel<'_> {
    fn port(&self) -> Port {
        Port(1)
    }
    fn notify(&self) -> Result<()> {
        self.notified.store(true, Ordering::Relaxed);
        Ok(())
    }
    fn take_pending(&self) -> Result<bool> {
        Ok(false)
    }
    fn wait(&self, _t: Option<Duration>) -> Result<bool> {
        self.stop.store(true, Ordering::Relaxed);
        Ok(false)
    }
    fn unmask(&self) -> Result<()> {
        Ok(())
    }
}

/// A 64-sector disk in memory; operations touching `bad` fail.
struct Disk {
    data: Vec<u8>,
    done: Vec<Completion>,
    bad: Option<u64>,
}

impl Disk {
    fn touches_bad(&self, offset: u64, len: u64) -> bool {
        self.bad
            .is_some_and(|b| offset / 512 <= b && b < (offset + len).div_ceil(512))
    }
}

impl StorageQueue for Disk {
    fn submit(&mut self, tag: u64, io: Io) -> std::io::Result<()> {
        let mut total = 0;
        if self.touches_bad(io.offset(), io.len()) {
            self.done.push(Completion {
                tag,
                result: Err(std::io::Error::other("bad sector")),
            });
            return Ok(());
        }
        match io {
            Io::Read { offset, segs } | Io::Write { offset, segs }
                if offset as usize + segs.iter().map(|s| s.len).sum::<usize>() > self.data.len() =>
            {
                panic!(
                    "the worker sent an I/O past the end of the disk: {offset} + {} segs",
                    segs.len()
                );
            }
            Io::Read { offset, segs } => {
                for s in segs {
                    assert!(
                        s.mem.is_writable(),
                        "a read into read-only memory reached the storage"
                    );
                    s.write_from(&self.data[offset as usize + total..][..s.len])?;
                    total += s.len;
                }
            }
            Io::Write { offset, segs } => {
                for s in segs {
                    let at = offset as usize + total;
                    s.read_into(&mut self.data[at..at + s.len])?;
                    total += s.len;
                }
            }
            Io::Flush => {}
            Io::Discard { offset, len } => {
                assert!(offset + len <= self.data.len() as u64, "discard past the end");
                self.data[offset as usize..(offset + len) as usize].fill(0);
            }
        }
        self.done.push(Completion {
            tag,
            result: Ok(total),
        });
        Ok(())
    }
    fn complete(
        &mut self,
        out: &mut Vec<Completion>,
        _w: usize,
        _t: Option<Duration>,
    ) -> std::io::Result<()> {
        out.append(&mut self.done);
        Ok(())
    }
}

/// What one run did: requests taken, and the status answered to each id
/// (`None` for an id answered more than once, or when the ring broke).
struct Run {
    taken: u64,
    answers: Option<HashMap<u64, i16>>,
}

/// Serve the input's ring once, with `bad` as the failing sector.
fn serve(knobs: u8, req_prod: u32, entries: &[u8], bad: Option<u64>) -> Run {
    // The ring's page, kept here too so the responses can be read afterwards.
    let page = Arc::new(Region::anonymous(4096).unwrap());
    // The frontend's view: whatever the input says, 112 bytes per slot.
    for (i, e) in entries.chunks(112).take(32).enumerate() {
        page.write(64 + i * 112, e).unwrap();
    }
    page.write(0, &req_prod.to_ne_bytes()).unwrap();
    // SAFETY: `page` is 4096 readable and writable bytes, page aligned, kept
    // alive by the owner (a clone of the Arc); nothing holds a reference to
    // the bytes: both regions copy through raw pointers.
    let ring_mem = unsafe {
        Region::from_raw(
            NonNull::new(page.as_ptr()).unwrap(),
            page.len(),
            Box::new(page.clone()),
        )
    };
    let ring: BackRing<BlkifRequest, BlkifResponse, _> =
        BackRing::attach_at(ring_mem, 0).unwrap();
    let grants = Grants {
        pages: (0..PAGES)
            .map(|p| Mutex::new(vec![p as u8; 4096]))
            .collect(),
    };
    let ro_before: Vec<Vec<u8>> = (RO_FROM..FIRST_REF + PAGES)
        .map(|r| {
            grants.pages[(r - FIRST_REF) as usize]
                .lock()
                .unwrap()
                .clone()
        })
        .collect();
    let (stop, notified) = (AtomicBool::new(false), AtomicBool::new(false));
    let (reader, _writer) = std::io::pipe().unwrap();
    let counters = Counters::default();
    let worker = QueueWorker {
        ring: ring.into(),
        channel: Channel {
            stop: &stop,
            fd: reader,
            notified: &notified,
        },
        mapper: &grants,
        frontend: DomId(1),
        storage: Disk {
            data: vec![0; 64 * 512],
            done: Vec::new(),
            bad,
        },
        size: None,
        inflight: None,
        limits: limits(knobs),
        config: QueueConfig {
            grant_mode: if knobs & 16 != 0 {
                GrantMode::Copy
            } else {
                GrantMode::Map
            },
            persistent: knobs & 32 != 0,
            reorder: [
                ReorderMode::Off,
                ReorderMode::Sort,
                ReorderMode::Merge,
                ReorderMode::Merge,
            ][(knobs >> 6) as usize],
            ..QueueConfig::default()
        },
        persistent: knobs & 32 != 0 && knobs & 16 == 0,
        counters: &counters,
        stop: &stop,
    };
    let broken = match worker.run() {
        Ok(()) => false,
        Err(xenio_blkback::Error::Ring(e)) => {
            assert!(e.is_broken(), "{e}");
            true
        }
        Err(e) => panic!("the worker failed on hostile input: {e}"),
    };
    let taken = counters.requests.load(Ordering::Relaxed);
    assert!(taken <= 32, "took {taken} requests from a 32-slot ring");
    for (k, r) in (RO_FROM..FIRST_REF + PAGES).enumerate() {
        assert_eq!(
            *grants.pages[(r - FIRST_REF) as usize].lock().unwrap(),
            ro_before[k],
            "read-only grant {r} was written"
        );
    }
    // The responses, from slot 0 (the worker answered from there on).
    let mut rsp_prod = [0u8; 4];
    page.read(8, &mut rsp_prod).unwrap();
    let rsp_prod = u32::from_ne_bytes(rsp_prod);
    let mut answers = HashMap::new();
    let mut unique = !broken;
    for k in 0..rsp_prod.min(32) {
        let mut slot = [0u8; 16];
        page.read(64 + k as usize * 112, &mut slot).unwrap();
        let r: BlkifResponse = bytemuck::pod_read_unaligned(&slot);
        unique &= answers.insert(r.id, r.status).is_none();
    }
    Run {
        taken,
        answers: unique.then_some(answers),
    }
}

fn limits(knobs: u8) -> Limits {
    Limits {
        sectors: 64,
        readonly: knobs & 1 != 0,
        max_indirect_segments: if knobs & 2 != 0 { 64 } else { 0 },
        flush: knobs & 4 != 0,
        barrier: knobs & 4 != 0,
        discard: knobs & 8 != 0,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&knobs, rest)) = data.split_first() else {
        return;
    };
    let Some((prod, entries)) = rest.split_first_chunk::<2>() else {
        return;
    };
    let prod = u16::from_le_bytes(*prod);
    let req_prod = u32::from(prod) % 64; // sometimes far ahead of 32 slots
    // The high bits: bit 6 turns a storage failure on, bits 7..13 name its sector.
    let bad = (prod & (1 << 6) != 0).then_some(u64::from(prod >> 7) % 64);
    let clean = serve(knobs, req_prod, entries, None);
    let Some(bad) = bad else {
        return;
    };
    let faulty = serve(knobs, req_prod, entries, Some(bad));
    assert_eq!(clean.taken, faulty.taken, "a failure changed what was taken");
    let (Some(clean), Some(faulty)) = (clean.answers, faulty.answers) else {
        return;
    };
    // The requests taken, as the worker parsed them (indirect ones are not
    // followed into their pages: their answer is only compared).
    let limits = limits(knobs);
    let mut range = HashMap::new();
    for e in entries.chunks(112).take(clean.len()) {
        let mut slot = [0u8; 112];
        slot[..e.len()].copy_from_slice(e);
        let raw: BlkifRequest = bytemuck::pod_read_unaligned(&slot);
        if let Ok(Parsed::Ready(r)) = request::parse(&raw, &limits) {
            range.insert(r.id, (r.sector, r.nr_sectors));
        }
    }
    for (id, &before) in &clean {
        let touches = range
            .get(id)
            .is_some_and(|&(s, n)| n > 0 && s <= bad && bad < s + n);
        let want = if before == BLKIF_RSP_OKAY && touches {
            BLKIF_RSP_ERROR
        } else if range.contains_key(id) || before != BLKIF_RSP_OKAY {
            before
        } else {
            // An indirect request: its sectors are in its pages.
            continue;
        };
        assert_eq!(
            faulty.get(id),
            Some(&want),
            "request {id:#x}: {before} without the failure at sector {bad}"
        );
    }
});
