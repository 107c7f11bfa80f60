//! [`RbdQueue`]: one queue's asynchronous operations on an [`RbdImage`].
//!
//! Each operation gets a librbd completion whose callback (run on one of
//! librbd's threads) records the result in the queue's shared list and
//! signals an eventfd, as QEMU's `block/rbd.c` does; it never touches the slot.
//! Reads and writes go straight between librbd and the request's shared memory
//! (`rbd_aio_readv`/`rbd_aio_writev` over the segments' `iovec`s).

use super::ffi;
use super::image::RbdImage;
use crate::disk::{Completion, Io, IoSeg, OpError};
use crate::{Error, Result, segs};
use nix::sys::eventfd::{EfdFlags, EventFd};
use std::ffi::{c_int, c_void};
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

const SECTOR: u64 = 512;
/// How long dropping a queue waits for librbd before leaking the memory of
/// the operations still in flight (rather than freeing memory librbd may
/// still write into).
const DROP_WAIT: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Read,
    Write,
    Flush,
    Discard,
    Zeroes,
}

/// `iovec`s pointing into the slot's regions.
struct Iovecs(Vec<libc::iovec>);
// SAFETY: the pointers are addresses of memory kept alive by the `Arc`s of the
// same slot; nothing about them is tied to a thread.
unsafe impl Send for Iovecs {}

struct Slot {
    busy: bool,
    tag: u64,
    kind: Kind,
    offset: u64,
    len: u64,
    segs: Vec<IoSeg>,
    iov: Iovecs,
}

struct Shared {
    done: Mutex<Done>,
    ready: Condvar,
    count: AtomicUsize,
    eventfd: EventFd,
}

#[derive(Default)]
struct Done {
    list: Vec<(u32, isize)>,
    waiting: bool,
}

struct CallbackArg {
    shared: Arc<Shared>,
    slot: u32,
}

unsafe extern "C" fn on_complete(c: ffi::rbd_completion_t, arg: *mut c_void) {
    // SAFETY: `arg` is the `CallbackArg` boxed at submission, given to this
    // completion only, and librbd calls the callback once; `c` is the
    // completion, released here after its value is read (as QEMU does).
    let (arg, ret) = unsafe {
        let arg = Box::from_raw(arg as *mut CallbackArg);
        let ret = ffi::rbd_aio_get_return_value(c);
        ffi::rbd_aio_release(c);
        (arg, ret)
    };
    let s = &arg.shared;
    let (first, waiting) = {
        let mut d = s.done.lock().unwrap_or_else(PoisonError::into_inner);
        d.list.push((arg.slot, ret));
        s.count.fetch_add(1, Ordering::AcqRel);
        (d.list.len() == 1, d.waiting)
    };
    if waiting {
        s.ready.notify_one();
    }
    if first {
        let _ = s.eventfd.write(1);
    }
}

/// One queue's I/O on an [`RbdImage`] (owned by one thread; `Send`).
/// Operations in flight at the same time are unordered, as in
/// [`DiskQueue`](crate::disk::DiskQueue).
pub struct RbdQueue {
    image: Arc<RbdImage>,
    shared: Arc<Shared>,
    slots: Vec<Slot>,
    free: Vec<usize>,
    busy: usize,
    ready: Vec<Completion>,
    taken: Vec<(u32, isize)>,
}

impl std::fmt::Debug for RbdQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RbdQueue")
            .field("target", &self.image.target().to_string())
            .field("depth", &self.slots.len())
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

impl RbdQueue {
    /// A queue of `depth` operations in flight over `image`.
    ///
    /// # Errors
    ///
    /// [`Error::BadValue`] for a depth of 0; [`Error::Io`] if the eventfd cannot
    /// be made.
    pub fn new(image: Arc<RbdImage>, depth: u32) -> Result<RbdQueue> {
        if depth == 0 || depth > 65536 {
            return Err(Error::BadValue {
                what: "RBD queue depth (1..=65536)".into(),
                value: depth.to_string(),
            });
        }
        let eventfd =
            EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
                .map_err(|e| Error::io("creating the completion eventfd", e.into()))?;
        let depth = depth as usize;
        Ok(RbdQueue {
            image,
            shared: Arc::new(Shared {
                done: Mutex::new(Done::default()),
                ready: Condvar::new(),
                count: AtomicUsize::new(0),
                eventfd,
            }),
            slots: (0..depth)
                .map(|_| Slot {
                    busy: false,
                    tag: 0,
                    kind: Kind::Flush,
                    offset: 0,
                    len: 0,
                    segs: Vec::new(),
                    iov: Iovecs(Vec::new()),
                })
                .collect(),
            free: (0..depth).rev().collect(),
            busy: 0,
            ready: Vec::new(),
            taken: Vec::new(),
        })
    }

    /// The image.
    pub fn image(&self) -> &Arc<RbdImage> {
        &self.image
    }

    /// Most operations in flight.
    pub fn depth(&self) -> usize {
        self.slots.len()
    }

    /// Operations submitted whose completion has not been returned yet.
    pub fn in_flight(&self) -> usize {
        self.busy + self.ready.len()
    }

    /// An eventfd that is readable when completions may be ready (signalled by
    /// librbd's completion callbacks).
    pub fn completion_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.shared.eventfd.as_fd())
    }

    /// Clear the completion eventfd (reap once more before sleeping on it).
    pub fn rearm_completion_fd(&self) {
        let _ = self.shared.eventfd.read();
    }

    /// Validate `io` and hand it to librbd at once. A discard is
    /// `rbd_aio_discard`, or `rbd_aio_write_zeroes` with
    /// [`RbdOptions::discard_zeroes`](super::RbdOptions::discard_zeroes) (librbd
    /// may skip discarding a partial object; zeroes always read back as zeros).
    ///
    /// # Errors
    ///
    /// [`Error::Limit`] when [`depth`](Self::depth) operations are in flight;
    /// [`Error::Io`] (kind `InvalidInput` or `PermissionDenied`, naming the
    /// target and the operation) for a range past the end of the image, an
    /// offset or length that is not a multiple of 512, no segments or more than
    /// 1024, a segment outside its region, a read into read-only memory, a write
    /// or discard on a read-only image. An operation librbd refuses at once
    /// completes with its error.
    pub fn submit(&mut self, tag: u64, io: Io) -> Result<()> {
        if self.in_flight() >= self.slots.len() {
            return Err(Error::Limit(format!(
                "{}: {} operations in flight, the queue's depth: reap completions before submitting more",
                self.image.target(),
                self.slots.len()
            )));
        }
        let (kind, offset, len, segs) = match io {
            Io::Read { offset, segs } => (Kind::Read, offset, 0, segs),
            Io::Write { offset, segs } => (Kind::Write, offset, 0, segs),
            Io::Flush => (Kind::Flush, 0, 0, Vec::new()),
            Io::Discard { offset, len } if self.image.discard_zeroes => {
                (Kind::Zeroes, offset, len, Vec::new())
            }
            Io::Discard { offset, len } => (Kind::Discard, offset, len, Vec::new()),
        };
        let refuse = |len: u64, kind_: io::ErrorKind, msg: String| {
            Error::io(
                describe(&self.image, kind, offset, len),
                io::Error::new(kind_, msg),
            )
        };
        let len = match kind {
            Kind::Read | Kind::Write => segs::check(&segs, kind == Kind::Read, SECTOR)
                .map_err(|m| refuse(0, io::ErrorKind::InvalidInput, m))?,
            Kind::Flush => 0,
            Kind::Discard | Kind::Zeroes => {
                if len == 0 || len % SECTOR != 0 {
                    return Err(refuse(
                        len,
                        io::ErrorKind::InvalidInput,
                        "a discard's length must be a non-zero multiple of 512".into(),
                    ));
                }
                len
            }
        };
        if kind != Kind::Flush {
            if offset % SECTOR != 0 {
                return Err(refuse(
                    len,
                    io::ErrorKind::InvalidInput,
                    "the offset must be a multiple of 512".into(),
                ));
            }
            if offset
                .checked_add(len)
                .is_none_or(|e| e > self.image.size_bytes())
            {
                return Err(refuse(
                    len,
                    io::ErrorKind::InvalidInput,
                    format!(
                        "the range ends past the end of the image ({} bytes)",
                        self.image.size_bytes()
                    ),
                ));
            }
        }
        if kind != Kind::Read && kind != Kind::Flush && self.image.is_readonly() {
            return Err(refuse(
                len,
                io::ErrorKind::PermissionDenied,
                "the image is opened read-only".into(),
            ));
        }
        let Some(idx) = self.free.pop() else {
            return Err(Error::Limit(format!(
                "{}: no free operation slot",
                self.image.target()
            )));
        };
        let slot = &mut self.slots[idx];
        slot.busy = true;
        slot.tag = tag;
        slot.kind = kind;
        slot.offset = offset;
        slot.len = len;
        slot.iov.0.clear();
        for s in &segs {
            slot.iov.0.push(libc::iovec {
                // In bounds: checked above.
                iov_base: s.mem.base().wrapping_add(s.offset).cast(),
                iov_len: s.len,
            });
        }
        slot.segs = segs;
        self.busy += 1;
        if let Err(e) = self.start(idx) {
            self.finish(idx, Err(e));
            let _ = self.shared.eventfd.write(1);
        }
        Ok(())
    }

    /// Hand slot `idx` to librbd.
    fn start(&mut self, idx: usize) -> io::Result<()> {
        let arg = Box::into_raw(Box::new(CallbackArg {
            shared: self.shared.clone(),
            slot: idx as u32,
        }));
        let mut c: ffi::rbd_completion_t = std::ptr::null_mut();
        // SAFETY: `arg` stays valid until the callback takes it back; `c` is
        // written by the call.
        let rc = unsafe { ffi::rbd_aio_create_completion(arg.cast(), Some(on_complete), &mut c) };
        if rc < 0 {
            // SAFETY: librbd did not take `arg`.
            drop(unsafe { Box::from_raw(arg) });
            return Err(io::Error::from_raw_os_error(-rc));
        }
        let image = self.image.image;
        let slot = &self.slots[idx];
        let iov = &slot.iov.0;
        // SAFETY: an open image and a fresh completion. The iovecs lie inside
        // regions the slot's `segs` keep mapped (read targets writable: checked
        // at submission); the slot stays busy, so neither the iovec array nor
        // the memory is released or reused, until the completion's callback
        // has reported and `collect` has processed it (or `Drop` leaks them).
        // Shared memory is only touched by librbd through these raw pointers.
        let rc: c_int = unsafe {
            match slot.kind {
                Kind::Read => {
                    ffi::rbd_aio_readv(image, iov.as_ptr(), iov.len() as c_int, slot.offset, c)
                }
                Kind::Write => {
                    ffi::rbd_aio_writev(image, iov.as_ptr(), iov.len() as c_int, slot.offset, c)
                }
                Kind::Flush => ffi::rbd_aio_flush(image, c),
                Kind::Discard => ffi::rbd_aio_discard(image, slot.offset, slot.len, c),
                Kind::Zeroes => {
                    ffi::rbd_aio_write_zeroes(image, slot.offset, slot.len as usize, c, 0, 0)
                }
            }
        };
        if rc < 0 {
            // SAFETY: librbd refused the operation: the callback will not run,
            // so the completion and `arg` are still ours.
            unsafe {
                ffi::rbd_aio_release(c);
                drop(Box::from_raw(arg));
            }
            return Err(io::Error::from_raw_os_error(-rc));
        }
        Ok(())
    }

    fn finish(&mut self, idx: usize, result: io::Result<usize>) {
        let slot = &mut self.slots[idx];
        let what = describe(&self.image, slot.kind, slot.offset, slot.len);
        let result = result.map_err(|e| OpError::into_io(what, e));
        slot.busy = false;
        slot.segs.clear();
        slot.iov.0.clear();
        self.free.push(idx);
        self.busy -= 1;
        self.ready.push(Completion {
            tag: slot.tag,
            result,
        });
    }

    /// Turn what the callbacks reported into completions in `self.ready`.
    fn collect(&mut self, done: &mut Done) {
        self.shared
            .count
            .fetch_sub(done.list.len(), Ordering::AcqRel);
        std::mem::swap(&mut self.taken, &mut done.list);
    }

    fn process(&mut self) {
        let mut taken = std::mem::take(&mut self.taken);
        for &(slot, ret) in &taken {
            let idx = slot as usize;
            if !self.slots.get(idx).is_some_and(|s| s.busy) {
                continue;
            }
            let result = if ret < 0 {
                Err(io::Error::from_raw_os_error(-ret as i32))
            } else {
                Ok(self.slots[idx].len as usize)
            };
            self.finish(idx, result);
        }
        taken.clear();
        self.taken = taken;
    }

    /// Start everything submitted: librbd already has it (`submit` hands each
    /// operation over at once). Returns 0.
    ///
    /// # Errors
    ///
    /// None.
    pub fn flush_submissions(&mut self) -> Result<usize> {
        Ok(0)
    }

    /// Append the operations that already finished to `out`, without waiting
    /// (no lock, no system call when nothing finished).
    ///
    /// # Errors
    ///
    /// None.
    pub fn reap_ready(&mut self, out: &mut Vec<Completion>) -> Result<()> {
        if self.shared.count.load(Ordering::Acquire) > 0 {
            let shared = self.shared.clone();
            let mut d = shared.done.lock().unwrap_or_else(PoisonError::into_inner);
            self.collect(&mut d);
            drop(d);
            self.process();
        }
        out.append(&mut self.ready);
        Ok(())
    }

    /// Append finished operations to `out`, waiting until at least `wait_for`
    /// were appended, or `timeout` passed (`None`: no limit), or nothing is in
    /// flight. librbd itself waits for an OSD that is down (see
    /// `rados_osd_op_timeout` in [`RbdTarget`](super::RbdTarget)).
    ///
    /// # Errors
    ///
    /// None (an operation's failure is in its [`Completion`]).
    pub fn complete(
        &mut self,
        out: &mut Vec<Completion>,
        wait_for: usize,
        timeout: Option<Duration>,
    ) -> Result<()> {
        self.rearm_completion_fd();
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let start = out.len();
        let shared = self.shared.clone();
        loop {
            {
                let mut d = shared.done.lock().unwrap_or_else(PoisonError::into_inner);
                loop {
                    if !d.list.is_empty() {
                        self.collect(&mut d);
                        break;
                    }
                    if out.len() - start + self.ready.len() >= wait_for || self.busy == 0 {
                        break;
                    }
                    d.waiting = true;
                    d = match deadline {
                        None => shared.ready.wait(d).unwrap_or_else(PoisonError::into_inner),
                        Some(dl) => {
                            let now = Instant::now();
                            if now >= dl {
                                d.waiting = false;
                                break;
                            }
                            shared
                                .ready
                                .wait_timeout(d, dl - now)
                                .unwrap_or_else(PoisonError::into_inner)
                                .0
                        }
                    };
                    d.waiting = false;
                }
            }
            self.process();
            out.append(&mut self.ready);
            let timed_out = deadline.is_some_and(|d| Instant::now() >= d);
            if out.len() - start >= wait_for || self.busy == 0 || timed_out {
                return Ok(());
            }
        }
    }
}

impl Drop for RbdQueue {
    /// Wait for the operations still in librbd (their memory is the slots'),
    /// for at most a minute; then leak their memory rather than free it.
    fn drop(&mut self) {
        let deadline = Instant::now() + DROP_WAIT;
        let mut out = Vec::new();
        while self.busy > 0 && Instant::now() < deadline {
            let _ = self.complete(&mut out, self.busy, Some(Duration::from_millis(500)));
            out.clear();
        }
        if self.busy > 0 {
            tracing::error!(
                "{}: dropping an RBD queue with {} operations in flight after {DROP_WAIT:?}: leaking their memory",
                self.image.target(),
                self.busy
            );
            for s in self.slots.iter_mut().filter(|s| s.busy) {
                std::mem::forget(std::mem::take(&mut s.segs));
                std::mem::forget(std::mem::take(&mut s.iov.0));
            }
        }
    }
}

fn describe(image: &RbdImage, kind: Kind, offset: u64, len: u64) -> String {
    let t = image.target();
    match kind {
        Kind::Read => format!("{t}: read of {len} bytes at offset {offset}"),
        Kind::Write => format!("{t}: write of {len} bytes at offset {offset}"),
        Kind::Flush => format!("{t}: flush"),
        Kind::Discard => format!("{t}: discard of {len} bytes at offset {offset}"),
        Kind::Zeroes => format!("{t}: write zeroes of {len} bytes at offset {offset}"),
    }
}
