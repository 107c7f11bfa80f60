//! The direct path of a [`Qcow2Queue`](super::Qcow2Queue): a read or write whose
//! whole range imago maps to one place in one file (an allocated cluster of the
//! image, or of a backing file for a read) goes straight to that file through
//! the queue's own io_uring, zero copy into the request's shared memory, with
//! no thread hand-off. What imago maps to zeros is filled at once. Everything
//! else (allocating writes, compressed clusters, ranges that span clusters
//! stored apart) goes to the worker threads.
//!
//! Safety of the mapping: a mapping stays valid until a discard frees its
//! cluster. The mapping is taken under the image's read lock (never waiting
//! for it: `try_read`, so a queue's thread never blocks behind a discard that
//! waits for that very thread to reap), and counted in
//! `Qcow2Image::direct_inflight` before the lock is released; a discard takes
//! the write lock and then waits for that count to reach zero.

use super::image::{DataFile, Qcow2Image};
use crate::disk::{Completion, Io, IoMem, IoSeg, OpError};
use io_uring::{IoUring, opcode, types};
use nix::sys::eventfd::EventFd;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// Resubmissions after `EAGAIN`/`EINTR` before the error is reported.
const MAX_RETRIES: u8 = 16;

/// `iovec`s pointing into the slot's regions.
struct Iovecs(Vec<libc::iovec>);
// SAFETY: the pointers are addresses of memory kept alive by the `Arc`s of the
// same slot; nothing about them is tied to a thread.
unsafe impl Send for Iovecs {}

struct Slot {
    busy: bool,
    tag: u64,
    write: bool,
    file: Option<Arc<DataFile>>,
    /// Where the rest starts in the file.
    host: u64,
    guest: u64,
    total: u64,
    done: u64,
    segs: Vec<IoSeg>,
    iov: Iovecs,
    iov_start: usize,
    retries: u8,
}

impl Slot {
    fn advance(&mut self, n: usize) {
        self.done += n as u64;
        self.host += n as u64;
        let mut n = n;
        while n > 0 && self.iov_start < self.iov.0.len() {
            let v = &mut self.iov.0[self.iov_start];
            if n >= v.iov_len {
                n -= v.iov_len;
                self.iov_start += 1;
            } else {
                v.iov_base = v.iov_base.cast::<u8>().wrapping_add(n).cast();
                v.iov_len -= n;
                n = 0;
            }
        }
    }
}

/// The io_uring and the slots of a queue's direct path.
pub(super) struct Direct {
    ring: IoUring,
    slots: Vec<Slot>,
    free: Vec<usize>,
    busy: usize,
    queued: bool,
    /// Operations taken so far.
    pub taken: u64,
}

impl Direct {
    /// An io_uring of `depth` entries that signals `eventfd`; `None` when the
    /// kernel refuses (every operation then goes to the workers).
    pub fn new(depth: usize, eventfd: &EventFd) -> Option<Direct> {
        let ring = IoUring::new(u32::try_from(depth).ok()?).ok()?;
        ring.submitter()
            .register_eventfd(eventfd.as_fd().as_raw_fd())
            .ok()?;
        Some(Direct {
            ring,
            slots: (0..depth)
                .map(|_| Slot {
                    busy: false,
                    tag: 0,
                    write: false,
                    file: None,
                    host: 0,
                    guest: 0,
                    total: 0,
                    done: 0,
                    segs: Vec::new(),
                    iov: Iovecs(Vec::new()),
                    iov_start: 0,
                    retries: 0,
                })
                .collect(),
            free: (0..depth).rev().collect(),
            busy: 0,
            queued: false,
            taken: 0,
        })
    }

    /// Try the direct path for `io` (validated, `total` bytes). Returns the
    /// operation back when it must go to the workers; `Ok(None)` when it was
    /// taken (queued on the ring, or completed into `ready`).
    pub fn try_submit(
        &mut self,
        image: &Qcow2Image,
        tag: u64,
        io: Io,
        total: u64,
        ready: &mut Vec<Completion>,
    ) -> Option<Io> {
        let (write, guest) = match &io {
            Io::Read { offset, .. } => (false, *offset),
            Io::Write { offset, .. } => (true, *offset),
            _ => return Some(io),
        };
        if self.free.is_empty() {
            return Some(io);
        }
        let Ok(access) = image.access.try_read() else {
            return Some(io);
        };
        let Ok((mapping, len)) = access.get_mapping(guest, total) else {
            return Some(io);
        };
        if len < total {
            return Some(io);
        }
        let (storage, host) = match mapping {
            imago::Mapping::Raw {
                storage,
                offset,
                writable,
                ..
            } if writable || !write => (storage, offset),
            imago::Mapping::Zero { .. } | imago::Mapping::Eof { .. } if !write => {
                drop(access);
                let Io::Read { segs, .. } = io else {
                    return None;
                };
                let result = zero(&segs, 0)
                    .map(|()| total as usize)
                    .map_err(|e| OpError::into_io(describe(image, false, guest, total), e));
                ready.push(Completion { tag, result });
                self.taken += 1;
                return None;
            }
            _ => return Some(io),
        };
        let Ok(file) = image.data_file(storage, write) else {
            return Some(io);
        };
        let segs = match &io {
            Io::Read { segs, .. } | Io::Write { segs, .. } => segs,
            _ => return Some(io),
        };
        let aligned = host % file.io_align == 0
            && segs.iter().all(|s| {
                let addr = s.mem.base().wrapping_add(s.offset) as u64;
                addr % file.mem_align == 0 && (s.len as u64) % file.io_align == 0
            });
        if !aligned {
            return Some(io);
        }
        // Counted before the read lock goes: a discard waits for this.
        image.direct_inflight.fetch_add(1, Ordering::AcqRel);
        drop(access);
        let Some(idx) = self.free.pop() else {
            image.direct_inflight.fetch_sub(1, Ordering::AcqRel);
            return Some(io);
        };
        let (Io::Read { segs, .. } | Io::Write { segs, .. }) = io else {
            return None;
        };
        let slot = &mut self.slots[idx];
        slot.busy = true;
        slot.tag = tag;
        slot.write = write;
        slot.file = Some(file);
        slot.host = host;
        slot.guest = guest;
        slot.total = total;
        slot.done = 0;
        slot.iov_start = 0;
        slot.retries = 0;
        slot.iov.0.clear();
        for s in &segs {
            slot.iov.0.push(libc::iovec {
                // In bounds: checked at submission.
                iov_base: s.mem.base().wrapping_add(s.offset).cast(),
                iov_len: s.len,
            });
        }
        slot.segs = segs;
        self.busy += 1;
        self.taken += 1;
        if let Err(e) = self.push(idx) {
            let c = self.finish(image, idx, Err(e));
            ready.push(c);
        }
        None
    }

    /// Queue the (rest of the) operation in slot `idx` on the ring.
    fn push(&mut self, idx: usize) -> io::Result<()> {
        let slot = &self.slots[idx];
        let Some(file) = &slot.file else {
            return Err(io::Error::other("no file"));
        };
        let fd = types::Fd(file.file.as_raw_fd());
        let iov = &slot.iov.0[slot.iov_start..];
        // At most 1024 iovecs (checked at submission): the cast is lossless.
        let entry = if slot.write {
            opcode::Writev::new(fd, iov.as_ptr(), iov.len() as u32)
                .offset(slot.host)
                .build()
        } else {
            opcode::Readv::new(fd, iov.as_ptr(), iov.len() as u32)
                .offset(slot.host)
                .build()
        }
        .user_data(idx as u64);
        for _ in 0..8 {
            // SAFETY: the entry points at the slot's iovec array and, through
            // it, at memory the slot's `segs` keep alive, and at the slot's
            // file; the slot stays busy (neither reused nor cleared) until this
            // entry's completion is reaped, and `Drop` of the queue waits for
            // that (or leaks the slot's memory).
            if unsafe { self.ring.submission().push(&entry) }.is_ok() {
                self.queued = true;
                return Ok(());
            }
            self.ring.submit()?;
        }
        Err(io::Error::new(
            io::ErrorKind::WouldBlock,
            "the io_uring submission queue stays full",
        ))
    }

    /// Hand what is queued to the kernel.
    pub fn submit(&mut self) -> io::Result<usize> {
        if !self.queued {
            return Ok(0);
        }
        self.queued = false;
        match self.ring.submit() {
            Ok(n) => Ok(n),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EINTR | libc::EAGAIN | libc::EBUSY)
                ) =>
            {
                self.queued = true;
                Ok(0)
            }
            Err(e) => Err(e),
        }
    }

    fn finish(&mut self, image: &Qcow2Image, idx: usize, result: io::Result<usize>) -> Completion {
        let slot = &mut self.slots[idx];
        let result = result
            .map_err(|e| OpError::into_io(describe(image, slot.write, slot.guest, slot.total), e));
        slot.busy = false;
        slot.segs.clear();
        slot.iov.0.clear();
        slot.file = None;
        self.free.push(idx);
        self.busy -= 1;
        image.direct_inflight.fetch_sub(1, Ordering::AcqRel);
        Completion {
            tag: slot.tag,
            result,
        }
    }

    /// Move finished operations to `out`, continuing short transfers (a read
    /// that meets the end of the file reads zeros: the last cluster of an
    /// image may be shorter in the file).
    pub fn reap(&mut self, image: &Qcow2Image, out: &mut Vec<Completion>) {
        if self.busy == 0 {
            return;
        }
        let cqes: Vec<(u64, i32)> = self
            .ring
            .completion()
            .map(|c| (c.user_data(), c.result()))
            .collect();
        for (user_data, res) in cqes {
            let idx = user_data as usize;
            if !self.slots.get(idx).is_some_and(|s| s.busy) {
                continue;
            }
            let result = match self.step(idx, res) {
                Step::Done(r) => r,
                Step::Again => match self.push(idx) {
                    Ok(()) => continue,
                    Err(e) => Err(e),
                },
            };
            let c = self.finish(image, idx, result);
            out.push(c);
        }
        if self.queued {
            let _ = self.submit();
        }
    }
}

enum Step {
    Done(io::Result<usize>),
    Again,
}

impl Direct {
    /// What completion result `res` means for slot `idx`.
    fn step(&mut self, idx: usize, res: i32) -> Step {
        let slot = &mut self.slots[idx];
        let left = slot.total - slot.done;
        if res < 0 {
            if matches!(-res, libc::EAGAIN | libc::EINTR) && slot.retries < MAX_RETRIES {
                slot.retries += 1;
                return Step::Again;
            }
            return Step::Done(Err(io::Error::from_raw_os_error(-res)));
        }
        let n = res as u64;
        if n > left {
            return Step::Done(Err(io::Error::other(format!(
                "the kernel reported {n} bytes with {left} left"
            ))));
        }
        if n == 0 {
            if slot.write {
                return Step::Done(Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "the kernel wrote nothing",
                )));
            }
            let done = slot.done as usize;
            return Step::Done(zero(&slot.segs, done).map(|()| slot.total as usize));
        }
        slot.advance(n as usize);
        if slot.done < slot.total {
            Step::Again
        } else {
            Step::Done(Ok(slot.total as usize))
        }
    }

    /// Wait until the kernel is done with every operation (before the slots'
    /// memory may go), for at most `limit`; then leak what is left.
    pub fn drain(&mut self, image: &Qcow2Image, limit: std::time::Duration) {
        let deadline = std::time::Instant::now() + limit;
        let mut out = Vec::new();
        while self.busy > 0 && std::time::Instant::now() < deadline {
            let ts = types::Timespec::from(std::time::Duration::from_millis(100));
            let args = types::SubmitArgs::new().timespec(&ts);
            let _ = self.ring.submitter().submit_with_args(1, &args);
            self.reap(image, &mut out);
            out.clear();
        }
        if self.busy > 0 {
            tracing::error!(
                "{}: dropping a qcow2 queue with {} direct operations in flight: leaking their memory",
                image.path().display(),
                self.busy
            );
            for s in self.slots.iter_mut().filter(|s| s.busy) {
                std::mem::forget(std::mem::take(&mut s.segs));
                std::mem::forget(std::mem::take(&mut s.iov.0));
            }
        }
    }
}

/// Fill the segments with zeros from byte `from` of the operation on.
fn zero(segs: &[IoSeg], from: usize) -> io::Result<()> {
    let mut at = 0;
    for s in segs {
        let end = at + s.len;
        if end > from {
            let skip = from.saturating_sub(at);
            let IoMem::ReadWrite(r) = &s.mem else {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    "a read into read-only memory",
                ));
            };
            r.fill(s.offset + skip, s.len - skip, 0)
                .map_err(|e| io::Error::other(e.to_string()))?;
        }
        at = end;
    }
    Ok(())
}

fn describe(image: &Qcow2Image, write: bool, offset: u64, len: u64) -> String {
    format!(
        "{}: {} of {len} bytes at offset {offset}",
        image.path().display(),
        if write { "write" } else { "read" }
    )
}
