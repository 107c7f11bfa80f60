//! A hostile frontend: arbitrary ring contents (requests, producer index) fed to
//! blkback's real queue worker with an in-memory grant table and disk. The
//! worker must answer or disconnect: never panic, never hang, never answer more
//! than was asked, never write a read-only grant.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use xenio_blkback::queue::{Counters, GrantMode, QueueConfig, QueueWorker};
use xenio_blkback::reorder::ReorderMode;
use xenio_blkback::request::Limits;
use xenio_blkback::storage::{Completion, Io, IoMem, StorageQueue};
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

/// A 64-sector disk in memory.
struct Disk(Vec<u8>, Vec<Completion>);
impl StorageQueue for Disk {
    fn submit(&mut self, tag: u64, io: Io) -> Result<()> {
        let mut total = 0;
        match io {
            Io::Read { offset, segs } | Io::Write { offset, segs }
                if offset as usize + segs.iter().map(|s| s.len).sum::<usize>() > self.0.len() =>
            {
                panic!(
                    "the worker sent an I/O past the end of the disk: {offset} + {} segs",
                    segs.len()
                );
            }
            Io::Read { offset, segs } => {
                for s in segs {
                    let IoMem::ReadWrite(r) = &s.mem else {
                        panic!("a read into read-only memory reached the storage")
                    };
                    r.write(s.offset, &self.0[offset as usize + total..][..s.len])?;
                    total += s.len;
                }
            }
            Io::Write { offset, segs } => {
                for s in segs {
                    let at = offset as usize + total;
                    match &s.mem {
                        IoMem::ReadWrite(r) => r.read(s.offset, &mut self.0[at..at + s.len])?,
                        IoMem::ReadOnly(r) => r.read(s.offset, &mut self.0[at..at + s.len])?,
                    }
                    total += s.len;
                }
            }
            Io::Flush => {}
            Io::Discard { offset, len } => {
                assert!(offset + len <= self.0.len() as u64, "discard past the end");
                self.0[offset as usize..(offset + len) as usize].fill(0);
            }
        }
        self.1.push(Completion {
            tag,
            result: Ok(total),
        });
        Ok(())
    }
    fn flush_submissions(&mut self) -> Result<()> {
        Ok(())
    }
    fn complete(
        &mut self,
        out: &mut Vec<Completion>,
        _w: usize,
        _t: Option<Duration>,
    ) -> Result<()> {
        out.append(&mut self.1);
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&knobs, rest)) = data.split_first() else {
        return;
    };
    let Some((prod, entries)) = rest.split_first_chunk::<2>() else {
        return;
    };
    let ring_mem = Region::anonymous(4096).unwrap();
    // The frontend's view: whatever the input says, 112 bytes per slot.
    for (i, e) in entries.chunks(112).take(32).enumerate() {
        ring_mem.write(64 + i * 112, e).unwrap();
    }
    let req_prod = u32::from(u16::from_le_bytes(*prod)) % 64; // sometimes far ahead of 32 slots
    ring_mem.write(0, &req_prod.to_ne_bytes()).unwrap();
    let ring = BackRing::attach_at(ring_mem, 0).unwrap();
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
        storage: Disk(vec![0; 64 * 512], Vec::new()),
        limits: Limits {
            sectors: 64,
            readonly: knobs & 1 != 0,
            max_indirect_segments: if knobs & 2 != 0 { 64 } else { 0 },
            flush: knobs & 4 != 0,
            barrier: knobs & 4 != 0,
            discard: knobs & 8 != 0,
        },
        size: None,
        inflight: None,
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
    match worker.run() {
        Ok(()) => {}
        Err(xenio_blkback::Error::Ring(e)) => assert!(e.is_broken(), "{e}"),
        Err(e) => panic!("the worker failed on hostile input: {e}"),
    }
    let taken = counters.requests.load(Ordering::Relaxed);
    assert!(taken <= 32, "took {taken} requests from a 32-slot ring");
    for (k, r) in (RO_FROM..FIRST_REF + PAGES).enumerate() {
        assert_eq!(
            *grants.pages[(r - FIRST_REF) as usize].lock().unwrap(),
            ro_before[k],
            "read-only grant {r} was written"
        );
    }
});
