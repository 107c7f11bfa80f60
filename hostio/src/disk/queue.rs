//! [`DiskQueue`]: one io_uring over a [`BlockFile`], or the synchronous fallback.
//!
//! Each submitted operation occupies a slot of a fixed slab (as many slots as the
//! queue's depth). The slot's index is the io_uring `user_data`; the slot owns the
//! operation's `iovec` array and the `Arc`s of its memory regions until the
//! completion is reaped, so everything the kernel may touch outlives the kernel's
//! use of it. Slots and their `iovec` vectors are reused: submitting and reaping
//! allocate nothing once the vectors have grown to the usual segment count.

use super::file::BlockFile;
use super::io::{Completion, Io, IoMem, IoSeg, OpError};
use super::sys;
use crate::error::{Error, Result};
use io_uring::{IoUring, opcode, squeue, types};
use nix::sys::eventfd::{EfdFlags, EventFd};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `user_data` of the cancellations issued when a queue is dropped.
const CANCEL: u64 = u64::MAX;
/// `user_data` of the poll on the descriptor [`DiskQueue::wait_with`] watches.
const WATCH: u64 = u64::MAX - 1;
/// Resubmissions after `EAGAIN`/`EINTR` before the error is reported.
const MAX_RETRIES: u8 = 16;
/// Most segments in one operation (`UIO_MAXIOV`, the kernel's limit for readv).
pub(super) const MAX_SEGS: usize = libc::UIO_MAXIOV as usize;
/// Most io_uring entries (`IORING_MAX_ENTRIES`).
const MAX_DEPTH: u32 = 32768;
/// Registered-buffer slots a queue offers ([`DiskQueue::register_fixed`]); the
/// kernel allows 16384.
pub const FIXED_SLOTS: u16 = 4096;
/// Registered-buffer slots for runs of neighbouring registered regions (see
/// `Fixed`), besides the [`FIXED_SLOTS`].
pub const RUN_SLOTS: u16 = 1024;
/// How long dropping a queue waits for the kernel before leaking the memory of
/// the operations still in flight (rather than freeing memory the kernel may
/// still write into).
const DROP_WAIT: Duration = Duration::from_secs(60);

/// How to build an [`DiskQueue`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskQueueOptions {
    /// Most operations in flight (submitted, completion not yet reaped) and the
    /// io_uring size. 64 by default.
    pub depth: u32,
    /// Execute every operation synchronously at submission, without io_uring
    /// (tests, comparisons).
    pub force_sync: bool,
    /// Offer a descriptor that becomes readable when completions are ready
    /// ([`DiskQueue::completion_fd`]), for an event loop: the io_uring's own
    /// descriptor, or an eventfd in synchronous mode and with
    /// [`defer_taskrun`](Self::defer_taskrun).
    pub completion_fd: bool,
    /// Run completion work only when this queue asks for completions
    /// (`IORING_SETUP_DEFER_TASKRUN` with `SINGLE_ISSUER`, Linux 6.1), instead
    /// of at the thread's next system call: the work of several completions is
    /// run in one go, and a sleep is not cut short and restarted to run it.
    /// The queue must then be created, used and dropped on one thread: the
    /// kernel refuses another thread's submissions (`EEXIST`, reported as an
    /// error). Where the kernel refuses the flags, the queue runs as without
    /// them. Off by default (blkback measured it and keeps it off: README,
    /// "One wait primitive").
    pub defer_taskrun: bool,
}

impl Default for DiskQueueOptions {
    fn default() -> Self {
        DiskQueueOptions {
            depth: 64,
            force_sync: false,
            completion_fd: false,
            defer_taskrun: false,
        }
    }
}

/// How a [`DiskQueue::wait_with`] ended (more than one may hold).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WaitEnd {
    /// The watched descriptor polled readable.
    pub other_ready: bool,
    /// Completions are ready to be reaped ([`DiskQueue::reap_ready`]).
    pub completions: bool,
    /// Neither came within the timeout.
    pub timed_out: bool,
}

/// The descriptor [`DiskQueue::wait_with`] watches through the ring: a
/// one-shot `IORING_OP_POLL_ADD`, armed again by the next wait after it fired.
#[derive(Debug)]
struct Watch {
    fd: i32,
    /// Its poll is in the ring.
    armed: bool,
    /// Its poll completed (readable, or an error) and no wait has said so yet.
    fired: bool,
    /// Its poll failed: waits fall back to the caller's own `poll`.
    broken: bool,
}

/// How an [`DiskQueue`] executes operations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IoMode {
    /// Asynchronously, through io_uring.
    Uring,
    /// Synchronously at submission (`preadv`, `pwritev`, `fdatasync`, `fallocate`,
    /// `BLKDISCARD`), for the reason given.
    Sync {
        /// Why io_uring is not used.
        reason: String,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Read,
    Write,
    Flush,
    Discard,
}

/// `iovec`s pointing into the regions of the slot that owns them.
struct Iovecs(Vec<libc::iovec>);

// SAFETY: the pointers are addresses of memory kept alive by the `Arc`s of the
// same slot (regions are `Send + Sync`); nothing about them is tied to a thread.
unsafe impl Send for Iovecs {}

struct Slot {
    /// Holds an operation the kernel may be working on.
    busy: bool,
    tag: u64,
    kind: Kind,
    /// Where the operation started on the disk.
    start: u64,
    /// Where the rest of it starts (after short transfers).
    offset: u64,
    total: u64,
    done: u64,
    /// Keeps the memory alive until the completion is reaped.
    segs: Vec<IoSeg>,
    iov: Iovecs,
    /// First `iovec` not completely transferred.
    iov_start: usize,
    retries: u8,
    /// The registered buffer holding the operation's one segment, if any.
    fixed: Option<u16>,
}

impl Slot {
    fn new() -> Slot {
        Slot {
            busy: false,
            tag: 0,
            kind: Kind::Flush,
            start: 0,
            offset: 0,
            total: 0,
            done: 0,
            segs: Vec::new(),
            iov: Iovecs(Vec::with_capacity(11)),
            iov_start: 0,
            retries: 0,
            fixed: None,
        }
    }

    /// The `iovec`s still to transfer.
    fn remaining_iov(&self) -> &[libc::iovec] {
        &self.iov.0[self.iov_start..]
    }

    /// Account for `n` bytes transferred (`n` at most what is left).
    fn advance(&mut self, n: usize) {
        self.done += n as u64;
        self.offset += n as u64;
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

    /// Drop the memory references and make the slot free.
    fn clear(&mut self) {
        self.segs.clear();
        self.iov.0.clear();
        self.busy = false;
    }

    fn describe(&self, file: &BlockFile) -> String {
        let p = file.path().display();
        match self.kind {
            Kind::Read => format!("{p}: read of {} bytes at offset {}", self.total, self.start),
            Kind::Write => format!(
                "{p}: write of {} bytes at offset {}",
                self.total, self.start
            ),
            Kind::Flush => format!("{p}: flush (fdatasync)"),
            Kind::Discard if file.is_block_device() => {
                format!(
                    "{p}: discard (BLKDISCARD) of {} bytes at offset {}",
                    self.total, self.start
                )
            }
            Kind::Discard => format!(
                "{p}: discard (fallocate PUNCH_HOLE) of {} bytes at offset {}",
                self.total, self.start
            ),
        }
    }
}

/// What to do after a completion queue entry.
enum Step {
    Done(io::Result<usize>),
    Again,
}

struct Uring {
    ring: IoUring,
    /// `IORING_FEAT_EXT_ARG` (Linux 5.11): waits can time out.
    ext_arg: bool,
    /// `IORING_OP_FALLOCATE` (Linux 5.6).
    fallocate: bool,
    /// The file is registered (index 0), so that operations name it without
    /// the kernel looking the descriptor up and counting a reference each time.
    fixed_file: bool,
    /// Set up with `DEFER_TASKRUN` and `SINGLE_ISSUER`.
    deferred: bool,
}

/// How an operation names the file: by descriptor, or by its registered
/// index.
#[derive(Clone, Copy)]
enum FileRef {
    Fd(types::Fd),
    Fixed(types::Fixed),
}

/// `$e` with `$fd` bound to the file as `f` names it (either kind: the opcode
/// builders take both).
macro_rules! with_file {
    ($f:expr, $fd:ident => $e:expr) => {
        match $f {
            FileRef::Fd($fd) => $e,
            FileRef::Fixed($fd) => $e,
        }
    };
}

impl Uring {
    fn setup(
        depth: u32,
        file: BorrowedFd<'_>,
        defer: Option<&EventFd>,
    ) -> std::result::Result<Uring, String> {
        if let Some(efd) = defer {
            // Deferred task running (Linux 6.1): completion work waits on the
            // ring until this thread enters with GETEVENTS (`reap` does when
            // the TASKRUN flag says work is due). The ring's descriptor does
            // not poll readable for such work on kernels without "io_uring:
            // wake ring pollers for local task_work" (2026-10; the lab's 6.1
            // lacks it), but a registered eventfd is signalled when work is
            // queued.
            let ring = IoUring::builder()
                .setup_single_issuer()
                .setup_defer_taskrun()
                .setup_taskrun_flag()
                .build(depth);
            match ring {
                Ok(ring) => match ring.submitter().register_eventfd(efd.as_fd().as_raw_fd()) {
                    Ok(()) => return Self::finish_setup(ring, file, true),
                    Err(e) => tracing::debug!(
                        "IORING_REGISTER_EVENTFD refused ({e}): cooperative task running instead"
                    ),
                },
                Err(e) => tracing::debug!(
                    "IORING_SETUP_DEFER_TASKRUN refused ({e}): cooperative task running instead"
                ),
            }
        }
        // Cooperative task running (Linux 5.19): a completion does not interrupt
        // the thread with an inter-processor interrupt (a VM exit on a guest); it
        // is run at the thread's next system call, and the ring's TASKRUN flag
        // says when one is due so a peek at the completion queue can make that
        // call (`DiskQueue::reap`). Older kernels refuse the flags: plain setup.
        let ring = IoUring::builder()
            .setup_coop_taskrun()
            .setup_taskrun_flag()
            .build(depth)
            .or_else(|_| IoUring::new(depth))
            .map_err(|e| {
                format!("io_uring unavailable (io_uring_setup: {e}): executing I/O synchronously at submission")
            })?;
        Self::finish_setup(ring, file, false)
    }

    fn finish_setup(
        ring: IoUring,
        file: BorrowedFd<'_>,
        deferred: bool,
    ) -> std::result::Result<Uring, String> {
        let mut probe = io_uring::Probe::new();
        let (rw, fallocate) = match ring.submitter().register_probe(&mut probe) {
            Ok(()) => (
                probe.is_supported(opcode::Readv::CODE)
                    && probe.is_supported(opcode::Writev::CODE)
                    && probe.is_supported(opcode::Fsync::CODE),
                probe.is_supported(opcode::Fallocate::CODE),
            ),
            // No probing before Linux 5.6; READV, WRITEV and FSYNC exist since 5.1.
            Err(_) => (true, false),
        };
        if !rw {
            return Err(
                "io_uring lacks READV/WRITEV/FSYNC: executing I/O synchronously at submission"
                    .into(),
            );
        }
        let ext_arg = ring.params().is_feature_ext_arg();
        // Registered files (Linux 5.1); without them, descriptors as before.
        let fixed_file = ring.submitter().register_files(&[file.as_raw_fd()]).is_ok();
        Ok(Uring {
            ring,
            ext_arg,
            fallocate,
            fixed_file,
            deferred,
        })
    }

    /// Queue `entry`, making room by submitting if the queue is full.
    ///
    /// # Safety
    /// Every buffer `entry` points to (an `iovec` array and the memory it
    /// describes) must stay valid until its completion has been reaped.
    unsafe fn push(&mut self, entry: &squeue::Entry) -> io::Result<()> {
        for _ in 0..8 {
            // SAFETY: the caller keeps the entry's buffers valid until completion.
            if unsafe { self.ring.submission().push(entry) }.is_ok() {
                return Ok(());
            }
            match self.ring.submit() {
                Ok(_) => {}
                Err(e) if transient(&e) => {}
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::new(
            io::ErrorKind::WouldBlock,
            "the io_uring submission queue stays full",
        ))
    }

    /// Submit what is queued and wait for one completion, or until `deadline`.
    /// `Ok(true)` when the deadline passed.
    fn wait(&mut self, deadline: Option<Instant>) -> io::Result<bool> {
        let r = match deadline {
            None => self.ring.submit_and_wait(1),
            Some(d) => {
                let now = Instant::now();
                if now >= d {
                    return Ok(true);
                }
                let left = d - now;
                if self.ext_arg {
                    let ts = types::Timespec::from(left);
                    let args = types::SubmitArgs::new().timespec(&ts);
                    self.ring.submitter().submit_with_args(1, &args)
                } else {
                    // Before Linux 5.11: the ring's descriptor polls readable when
                    // completions are ready.
                    match self.ring.submit() {
                        Ok(_) => {}
                        Err(e) if transient(&e) => {}
                        Err(e) => return Err(e),
                    }
                    let ms = u16::try_from(left.as_millis().max(1)).unwrap_or(u16::MAX);
                    let mut fds = [nix::poll::PollFd::new(
                        self.ring.as_fd(),
                        nix::poll::PollFlags::POLLIN,
                    )];
                    nix::poll::poll(&mut fds, ms)
                        .map(|_| 0)
                        .map_err(io::Error::from)
                }
            }
        };
        match r {
            Ok(_) => Ok(false),
            Err(e) if e.raw_os_error() == Some(libc::ETIME) => Ok(true),
            Err(e) if transient(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// The io_uring entry of (the rest of) `slot` without registered buffers.
fn sqe_vectored(file: FileRef, slot: &Slot, iov: &[libc::iovec]) -> squeue::Entry {
    with_file!(file, fd => match slot.kind {
        // At most MAX_SEGS (1024) iovecs: the cast is lossless.
        Kind::Read => opcode::Readv::new(fd, iov.as_ptr(), iov.len() as u32)
            .offset(slot.offset)
            .build(),
        Kind::Write => opcode::Writev::new(fd, iov.as_ptr(), iov.len() as u32)
            .offset(slot.offset)
            .build(),
        Kind::Flush => opcode::Fsync::new(fd)
            .flags(types::FsyncFlags::DATASYNC)
            .build(),
        Kind::Discard => opcode::Fallocate::new(fd, slot.total)
            .offset(slot.offset)
            .mode(libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE)
            .build(),
    })
}

/// Empty registered-buffer slot `slot` (an empty iovec clears it).
fn clear_slot(u: &Uring, slot: u16) -> io::Result<()> {
    let empty = libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    };
    // SAFETY: an empty iovec clears the slot; nothing is registered.
    unsafe {
        u.ring
            .submitter()
            .register_buffers_update(slot.into(), &[empty], None)
    }
}

/// Errors of `io_uring_enter` after which trying again is right.
fn transient(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINTR) | Some(libc::EAGAIN) | Some(libc::EBUSY)
    )
}

/// Registered ("fixed") buffers: regions the kernel pinned once at
/// registration, so that an operation into one of them skips pinning its pages
/// (`READ_FIXED`/`WRITE_FIXED`).
///
/// A fixed operation takes one buffer, so an operation over several
/// registered regions that are neighbours in memory (pages of a grant window,
/// see blkback's persistent grants) needs a buffer of its own that spans them:
/// a *run*. Runs are registered the second time an operation covers the same
/// range (buffers are used again and again: a first sighting says little) in
/// slots of their own, the least recently used giving way when they are all
/// taken, and dropped with any region they span.
struct Fixed {
    /// The slot of each registered region, by the region's base address.
    by_base: HashMap<usize, u16>,
    /// What each slot holds: kept mapped while registered.
    held: Vec<Option<IoMem>>,
    /// Unused slots.
    free: Vec<u16>,
    /// Registered runs, by start address.
    runs: BTreeMap<usize, Run>,
    /// Unused run slots.
    run_free: Vec<u16>,
    /// Ranges seen once, not registered yet.
    seen: HashSet<(usize, usize)>,
    /// Operations so far (the runs' recency).
    clock: u64,
}

/// A registered run of neighbouring registered regions.
struct Run {
    end: usize,
    slot: u16,
    used: u64,
    /// Kept mapped while registered.
    _held: Vec<IoMem>,
}

/// Storage I/O on one [`BlockFile`]: one io_uring, owned by one thread (the
/// queue is `Send`; every method takes `&mut self`).
///
/// [`submit`](Self::submit) validates and queues,
/// [`flush_submissions`](Self::flush_submissions) hands the queue to the kernel,
/// [`complete`](Self::complete) reaps. At most [`depth`](Self::depth) operations
/// are in flight; submit more after reaping.
pub struct DiskQueue {
    file: Arc<BlockFile>,
    depth: usize,
    mode: IoMode,
    uring: Option<Uring>,
    slots: Vec<Slot>,
    free: Vec<usize>,
    /// Operations whose slot is busy (queued or in the kernel).
    in_ring: usize,
    /// Completions produced at submission, not yet reaped.
    ready: VecDeque<Completion>,
    /// Reused buffer for completion queue entries.
    cqes: Vec<(u64, i32)>,
    /// In synchronous mode with [`DiskQueueOptions::completion_fd`]: readable
    /// while completions wait in `ready` (with io_uring the ring's descriptor
    /// does that job).
    eventfd: Option<EventFd>,
    /// Registered buffers, once the table is set up (after `uring`: dropped after
    /// the ring that pinned them).
    fixed: Option<Fixed>,
    /// [`DiskQueueOptions::completion_fd`].
    completion_fd: bool,
    /// Registration failed once (no io_uring, an old kernel, memory the kernel
    /// cannot pin, the locked-memory limit): do not try again.
    fixed_off: bool,
    /// Operations that used a registered buffer.
    fixed_ios: u64,
    /// The descriptor [`wait_with`](Self::wait_with) watches.
    watch: Option<Watch>,
    /// Reused buffer for what a [`wait_with`](Self::wait_with) reaps.
    reaped: Vec<Completion>,
}

impl std::fmt::Debug for DiskQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskQueue")
            .field("file", &self.file.path())
            .field("depth", &self.depth)
            .field("mode", &self.mode)
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

impl DiskQueue {
    /// A queue of `depth` operations in flight over `file` (see
    /// [`DiskQueueOptions`] for the other knobs).
    ///
    /// # Errors
    ///
    /// As [`DiskQueue::with_options`].
    pub fn new(file: Arc<BlockFile>, depth: u32) -> Result<DiskQueue> {
        Self::with_options(
            file,
            &DiskQueueOptions {
                depth,
                ..DiskQueueOptions::default()
            },
        )
    }

    /// A queue built as `opts` says. Falls back to synchronous I/O when
    /// io_uring cannot be set up; [`mode`](Self::mode) tells.
    ///
    /// # Errors
    ///
    /// [`Error::BadValue`] for a depth of 0 or above `IORING_MAX_ENTRIES`;
    /// [`Error::Io`] if the completion eventfd of the synchronous mode cannot
    /// be made. An io_uring the kernel refuses is not an error: the queue runs
    /// synchronously.
    pub fn with_options(file: Arc<BlockFile>, opts: &DiskQueueOptions) -> Result<DiskQueue> {
        if opts.depth == 0 || opts.depth > MAX_DEPTH {
            return Err(Error::BadValue {
                what: format!("io_uring depth (1..={MAX_DEPTH})"),
                value: opts.depth.to_string(),
            });
        }
        let make_eventfd = || {
            EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
                .map_err(|e| Error::io("creating the completion eventfd", e.into()))
        };
        // With deferred task running, an eventfd signals completion work.
        let mut eventfd = if opts.completion_fd && opts.defer_taskrun && !opts.force_sync {
            Some(make_eventfd()?)
        } else {
            None
        };
        let (uring, mode) = if opts.force_sync {
            let reason = "synchronous I/O requested (DiskQueueOptions::force_sync)".to_string();
            (None, IoMode::Sync { reason })
        } else {
            let defer = opts.defer_taskrun.then_some(eventfd.as_ref()).flatten();
            match Uring::setup(opts.depth, file.as_fd(), defer) {
                Ok(u) => (Some(u), IoMode::Uring),
                Err(reason) => {
                    tracing::warn!("{}: {reason}", file.path().display());
                    (None, IoMode::Sync { reason })
                }
            }
        };
        // Otherwise, with io_uring, the ring's descriptor is the completion
        // descriptor: it polls readable while a completion waits in the
        // completion queue (level-triggered), so it needs no clearing and the
        // kernel signals nothing per completion (an eventfd costs a `read`
        // before every sleep and a wake-up per posted completion).
        match &uring {
            Some(u) if !u.deferred => eventfd = None,
            Some(_) => {}
            None if opts.completion_fd && eventfd.is_none() => eventfd = Some(make_eventfd()?),
            None => {}
        }
        let completion_fd = opts.completion_fd;
        let depth = opts.depth as usize;
        Ok(DiskQueue {
            file,
            depth,
            mode,
            uring,
            slots: (0..depth).map(|_| Slot::new()).collect(),
            free: (0..depth).rev().collect(),
            in_ring: 0,
            ready: VecDeque::with_capacity(depth),
            cqes: Vec::with_capacity(2 * depth),
            eventfd,
            completion_fd,
            fixed: None,
            fixed_off: false,
            fixed_ios: 0,
            watch: None,
            reaped: Vec::new(),
        })
    }

    /// Register `mem` as a fixed buffer: the kernel pins its pages once, and
    /// one-segment reads and writes into it skip pinning them per operation.
    /// For memory used again and again (blkback's persistent grants). Returns
    /// whether it is registered; false, and nothing changes, for read-only
    /// memory, a full table ([`FIXED_SLOTS`]), the synchronous mode, or when
    /// the kernel refuses (then registration is not tried again, and the
    /// reason is logged once). Every operation works the same either way.
    pub fn register_fixed(&mut self, mem: &IoMem) -> bool {
        let key = mem.base() as usize;
        if !mem.is_writable() || mem.is_empty() || self.fixed_off {
            return false;
        }
        let Some(u) = self.uring.as_ref() else {
            return false;
        };
        if self.fixed.is_none() {
            if let Err(e) = u
                .ring
                .submitter()
                .register_buffers_sparse(u32::from(FIXED_SLOTS) + u32::from(RUN_SLOTS))
            {
                self.fixed_refused("setting up the registered-buffer table", &e);
                return false;
            }
            self.fixed = Some(Fixed {
                by_base: HashMap::new(),
                held: vec![None; FIXED_SLOTS.into()],
                free: (0..FIXED_SLOTS).rev().collect(),
                runs: BTreeMap::new(),
                run_free: (FIXED_SLOTS..FIXED_SLOTS + RUN_SLOTS).rev().collect(),
                seen: HashSet::new(),
                clock: 0,
            });
        }
        let Some(f) = self.fixed.as_mut() else {
            return false;
        };
        if f.by_base.contains_key(&key) {
            return true;
        }
        let Some(slot) = f.free.pop() else {
            return false;
        };
        let iov = libc::iovec {
            iov_base: mem.base().cast(),
            iov_len: mem.len(),
        };
        // SAFETY: the iovec is the whole of a live mapping, and `held` keeps
        // that mapping alive until the slot is emptied again
        // (`unregister_fixed`) or the ring is gone (`fixed` drops after
        // `uring`); the kernel pins the pages at registration.
        let r = unsafe {
            u.ring
                .submitter()
                .register_buffers_update(slot.into(), &[iov], None)
        };
        match r {
            Ok(()) => {
                f.by_base.insert(key, slot);
                f.held[usize::from(slot)] = Some(mem.clone());
                true
            }
            Err(e) => {
                f.free.push(slot);
                self.fixed_refused("registering a buffer", &e);
                false
            }
        }
    }

    /// Forget `mem` as a fixed buffer (before its mapping goes away for good),
    /// and every run that spans it. Operations already submitted into it
    /// finish normally: the kernel keeps its pages until they do.
    pub fn unregister_fixed(&mut self, mem: &IoMem) {
        let key = mem.base() as usize;
        let (Some(f), Some(u)) = (self.fixed.as_mut(), self.uring.as_ref()) else {
            return;
        };
        let end = key + mem.len();
        let spanning: Vec<usize> = f
            .runs
            .range(..end)
            .filter(|(_, r)| r.end > key)
            .map(|(s, _)| *s)
            .collect();
        for start in spanning {
            if let Some(run) = f.runs.remove(&start) {
                match clear_slot(u, run.slot) {
                    Ok(()) => f.run_free.push(run.slot),
                    // Still registered: keep its memory (the slot stays taken).
                    Err(e) => {
                        tracing::warn!("{}: unregistering a run: {e}", self.file.path().display());
                        std::mem::forget(run);
                    }
                }
            }
        }
        let Some(&slot) = f.by_base.get(&key) else {
            return;
        };
        match clear_slot(u, slot) {
            Ok(()) => {
                f.by_base.remove(&key);
                f.held[usize::from(slot)] = None;
                f.free.push(slot);
            }
            // Still registered: keep the mapping (the slot stays taken).
            Err(e) => tracing::warn!(
                "{}: unregistering a buffer: {e}",
                self.file.path().display()
            ),
        }
    }

    /// Operations so far that used a registered buffer.
    pub fn fixed_ios(&self) -> u64 {
        self.fixed_ios
    }

    /// The registered buffer slot `idx`'s operation (prepared) can use: the
    /// region of its one segment, or a run spanning its one `iovec` (made
    /// the second time that range is seen).
    fn fixed_buffer(&mut self, idx: usize) -> Option<u16> {
        let (f, u) = (self.fixed.as_mut()?, self.uring.as_ref()?);
        let slot = &self.slots[idx];
        if !matches!(slot.kind, Kind::Read | Kind::Write) {
            return None;
        }
        let v = match (&slot.segs[..], &slot.iov.0[..]) {
            // One segment in a registered region: the fixed opcodes take one
            // buffer (inside the region, checked by `prepare`).
            ([s], _) => return f.by_base.get(&(s.mem.base() as usize)).copied(),
            (_, [v]) => v,
            _ => return None,
        };
        f.clock += 1;
        let (start, end) = (v.iov_base as usize, v.iov_base as usize + v.iov_len);
        if let Some((_, run)) = f.runs.range_mut(..=start).next_back() {
            if run.end >= end {
                run.used = f.clock;
                return Some(run.slot);
            }
        }
        // The distinct regions, in order: registered, each where the last ends.
        let mut regions: Vec<&IoMem> = Vec::new();
        for s in &slot.segs {
            match regions.last() {
                Some(r) if r.base() == s.mem.base() => {}
                Some(r) if r.base() as usize + r.len() != s.mem.base() as usize => return None,
                _ => regions.push(&s.mem),
            }
        }
        if !regions
            .iter()
            .all(|r| f.by_base.contains_key(&(r.base() as usize)))
        {
            return None;
        }
        let (first, last) = (regions.first()?, regions.last()?);
        let (rs, re) = (first.base() as usize, last.base() as usize + last.len());
        if f.seen.len() >= 4 * usize::from(RUN_SLOTS) {
            f.seen.clear();
        }
        if f.seen.insert((rs, re)) {
            return None; // the first sighting
        }
        let run_slot = match f.run_free.pop() {
            Some(s) => s,
            None => {
                let (&lru, _) = f.runs.iter().min_by_key(|(_, r)| r.used)?;
                let run = f.runs.remove(&lru)?;
                if clear_slot(u, run.slot).is_err() {
                    std::mem::forget(run);
                    return None;
                }
                run.slot
            }
        };
        let iov = libc::iovec {
            iov_base: first.base().cast(),
            iov_len: re - rs,
        };
        // SAFETY: the iovec spans live mappings only (registered regions, each
        // starting where the previous ends), and the run keeps them alive until
        // its slot is emptied again (`unregister_fixed`, eviction) or the ring is
        // gone (`fixed` drops after `uring`).
        let r = unsafe {
            u.ring
                .submitter()
                .register_buffers_update(run_slot.into(), &[iov], None)
        };
        if r.is_err() {
            f.run_free.push(run_slot);
            return None;
        }
        let held = regions.into_iter().cloned().collect();
        f.runs.insert(
            rs,
            Run {
                end: re,
                slot: run_slot,
                used: f.clock,
                _held: held,
            },
        );
        Some(run_slot)
    }

    fn fixed_refused(&mut self, what: &str, e: &io::Error) {
        tracing::info!(
            "{}: {what}: {e}; I/O goes on without registered buffers",
            self.file.path().display()
        );
        self.fixed_off = true;
    }

    /// How operations are executed.
    pub fn mode(&self) -> &IoMode {
        &self.mode
    }

    /// Whether completion work is deferred until this queue asks for it
    /// ([`DiskQueueOptions::defer_taskrun`] asked and the kernel agreed): the
    /// queue then works only on the thread that created it.
    pub fn deferred_taskrun(&self) -> bool {
        self.uring.as_ref().is_some_and(|u| u.deferred)
    }

    /// `e` from `io_uring_enter` while `what`, explained when it is the
    /// kernel refusing a thread other than the creator of a single-issuer ring.
    fn enter_error(&self, what: &str, e: io::Error) -> Error {
        let path = self.file.path().display();
        if e.raw_os_error() == Some(libc::EEXIST) && self.deferred_taskrun() {
            return Error::io(
                format!(
                    "{path}: {what}: this io_uring serves only the thread that created it \
                     (DiskQueueOptions::defer_taskrun)"
                ),
                e,
            );
        }
        Error::io(format!("{path}: {what} (io_uring_enter)"), e)
    }

    /// The file or device.
    pub fn file(&self) -> &Arc<BlockFile> {
        &self.file
    }

    /// Most operations in flight.
    pub fn depth(&self) -> usize {
        self.depth
    }

    /// Operations submitted whose completion [`complete`](Self::complete) has not
    /// returned yet.
    pub fn in_flight(&self) -> usize {
        self.in_ring + self.ready.len()
    }

    /// A descriptor that is readable when completions may be ready (if
    /// [`DiskQueueOptions::completion_fd`] asked for one): the io_uring's own
    /// descriptor, readable while its completion queue holds an entry, or in
    /// synchronous mode and with deferred task running
    /// ([`DiskQueueOptions::defer_taskrun`]) an eventfd that
    /// [`complete`](Self::complete) and
    /// [`rearm_completion_fd`](Self::rearm_completion_fd) clear. Operations
    /// that finished at submission (discards on a block device) do not make
    /// the io_uring's readable: reap ([`reap_ready`](Self::reap_ready)) before
    /// sleeping on it, as an event loop must anyway.
    pub fn completion_fd(&self) -> Option<BorrowedFd<'_>> {
        if !self.completion_fd {
            return None;
        }
        match (&self.uring, &self.eventfd) {
            (_, Some(e)) => Some(e.as_fd()),
            (Some(u), None) => Some(u.ring.as_fd()),
            (None, None) => None,
        }
    }

    /// Validate `io` and queue it (in synchronous mode: execute it). The result
    /// comes back from [`complete`](Self::complete) with `tag`.
    ///
    /// Refused here, before anything reaches the kernel: more than
    /// [`depth`](Self::depth) operations in flight, a segment outside its region,
    /// a read into read-only memory, writes and discards on a read-only disk, a
    /// range past the end of the disk, no segments or more than 1024, an empty
    /// segment, and with O_DIRECT an offset, segment address or segment length that
    /// is not a multiple of the logical sector size; a discard when the disk has
    /// none, or not aligned to the logical sector size.
    pub fn submit(&mut self, tag: u64, io: Io) -> Result<()> {
        if self.in_flight() >= self.depth {
            return Err(Error::Limit(format!(
                "{}: {} operations in flight, the queue's depth: reap completions before submitting more",
                self.file.path().display(),
                self.depth
            )));
        }
        let Some(idx) = self.free.pop() else {
            return Err(Error::Limit(format!(
                "{}: no free operation slot",
                self.file.path().display()
            )));
        };
        if let Err(e) = self.prepare(idx, tag, io) {
            self.release(idx);
            return Err(e);
        }
        let inline = match &self.uring {
            None => true,
            Some(u) => {
                self.slots[idx].kind == Kind::Discard
                    && (self.file.is_block_device() || !u.fallocate)
            }
        };
        if inline {
            let result = self.run_sync(idx);
            let c = self.finish(idx, result);
            self.ready.push_back(c);
            if let Some(efd) = &self.eventfd {
                let _ = efd.write(1);
            }
            return Ok(());
        }
        let entry = self.sqe(idx);
        let pushed = match self.uring.as_mut() {
            // SAFETY: the entry points at the slot's iovec array and, through it, at
            // memory the slot's `segs` keep alive; the slot stays busy (neither
            // reused nor cleared) until its completion is reaped, or is leaked by
            // `Drop` if the kernel never completes it.
            Some(u) => unsafe { u.push(&entry) },
            None => Err(io::Error::other("no io_uring")),
        };
        if let Err(e) = pushed {
            let what = self.slots[idx].describe(&self.file);
            self.release(idx);
            return Err(Error::io(format!("{what}: queueing on io_uring"), e));
        }
        if self.slots[idx].fixed.is_some() {
            self.fixed_ios += 1;
        }
        self.in_ring += 1;
        Ok(())
    }

    /// Hand every queued operation to the kernel (one `io_uring_enter`). Returns how
    /// many were submitted (0 in synchronous mode).
    pub fn flush_submissions(&mut self) -> Result<usize> {
        let Some(u) = self.uring.as_mut() else {
            return Ok(0);
        };
        // Nothing queued (a batch that was a multiple of the submit chunk):
        // no system call (`submit` always enters the kernel).
        if u.ring.submission().is_empty() {
            return Ok(0);
        }
        loop {
            match u.ring.submit() {
                Ok(n) => return Ok(n),
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                // The kernel is short of resources or its completion queue is full:
                // `complete` submits the rest.
                Err(e) if transient(&e) => return Ok(0),
                Err(e) => return Err(self.enter_error("submitting I/O", e)),
            }
        }
    }

    /// Append finished operations to `out`, waiting until at least `wait_for` were
    /// appended, or `timeout` passed (`None`: no limit), or nothing is in flight.
    /// Operations still queued are submitted while waiting. Short transfers are
    /// continued for the remainder and reported once, complete.
    pub fn complete(
        &mut self,
        out: &mut Vec<Completion>,
        wait_for: usize,
        timeout: Option<Duration>,
    ) -> Result<()> {
        // Clear before reaping: a completion posted after this read signals again.
        self.rearm_completion_fd();
        self.collect(out, wait_for, timeout)
    }

    /// Append the operations that already finished to `out`, without waiting and
    /// without touching the completion eventfd: when nothing finished this makes
    /// no system call. An event loop calls it as often as it likes, and calls
    /// [`rearm_completion_fd`](Self::rearm_completion_fd) (then this once more)
    /// only before it sleeps on [`completion_fd`](Self::completion_fd).
    pub fn reap_ready(&mut self, out: &mut Vec<Completion>) -> Result<()> {
        self.collect(out, 0, Some(Duration::ZERO))
    }

    /// Clear the completion eventfd, so that it becomes readable again only for
    /// completions posted from now on. Reap after this and before sleeping, or a
    /// completion posted just before it is missed until the next one. With
    /// io_uring there is nothing to clear (the ring's descriptor is readable
    /// exactly while completions are unreaped) and this makes no system call,
    /// except with deferred task running.
    pub fn rearm_completion_fd(&self) {
        if let Some(efd) = &self.eventfd {
            // Non-blocking: EAGAIN just means it was clear already.
            let _ = efd.read();
        }
    }

    /// Sleep in one `io_uring_enter` until a completion is ready, `other`
    /// polls readable (an event channel, say), or `timeout` passes: one system
    /// call for what an event loop would otherwise `poll` this queue's
    /// [`completion_fd`](Self::completion_fd) and `other` for (and, with
    /// cooperative task running, restart the `poll` when a completion's work
    /// interrupts it: the enter runs that work itself). What finished is
    /// reaped into the queue ([`reap_ready`](Self::reap_ready) returns it);
    /// `other` is only watched, never read: consume its event yourself when
    /// [`WaitEnd::other_ready`] says so.
    ///
    /// `other` is watched with a one-shot poll in the ring that stays armed
    /// between waits, so one queue watches one descriptor: `Ok(None)` (wait
    /// some other way, e.g. `poll`) for another descriptor than the first
    /// one's, in synchronous mode, on kernels without timed waits (Linux <
    /// 5.11), and after the poll failed once (logged). Reap before waiting, as
    /// for the completion descriptor: completions already reaped into the
    /// queue end the wait at once.
    ///
    /// # Errors
    ///
    /// The kernel refused the wait or the poll's submission.
    pub fn wait_with(
        &mut self,
        other: BorrowedFd<'_>,
        timeout: Duration,
    ) -> Result<Option<WaitEnd>> {
        let fd = other.as_raw_fd();
        let Some(u) = self.uring.as_mut().filter(|u| u.ext_arg) else {
            return Ok(None);
        };
        let w = self.watch.get_or_insert(Watch {
            fd,
            armed: false,
            fired: false,
            broken: false,
        });
        if w.fd != fd || w.broken {
            return Ok(None);
        }
        if !w.armed && !w.fired {
            let poll = opcode::PollAdd::new(types::Fd(fd), libc::POLLIN as u32)
                .build()
                .user_data(WATCH);
            // SAFETY: a poll points at no memory; the kernel holds its own
            // reference to the file.
            if let Err(e) = unsafe { u.push(&poll) } {
                return Err(self.enter_error("watching a descriptor", e));
            }
            w.armed = true;
        }
        let mut timed_out = false;
        if !w.fired && self.ready.is_empty() {
            let deadline = Instant::now().checked_add(timeout);
            match u.wait(deadline) {
                // An enter that also submitted (the poll) returns the count
                // submitted, not ETIME, when its wait times out.
                Ok(t) => timed_out = t || deadline.is_some_and(|d| Instant::now() >= d),
                Err(e) => return Err(self.enter_error("waiting for I/O completions", e)),
            }
        }
        let mut done = std::mem::take(&mut self.reaped);
        let again = self.reap(&mut done);
        self.ready.extend(done.drain(..));
        self.reaped = done;
        if again {
            // A short transfer's rest must reach the kernel before anyone sleeps.
            self.flush_submissions()?;
        }
        let other_ready = self
            .watch
            .as_mut()
            .is_some_and(|w| std::mem::take(&mut w.fired));
        let completions = !self.ready.is_empty();
        Ok(Some(WaitEnd {
            other_ready,
            completions,
            timed_out: timed_out && !other_ready && !completions,
        }))
    }

    fn collect(
        &mut self,
        out: &mut Vec<Completion>,
        wait_for: usize,
        timeout: Option<Duration>,
    ) -> Result<()> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let start = out.len();
        let mut resubmitted = false;
        loop {
            while let Some(c) = self.ready.pop_front() {
                out.push(c);
            }
            resubmitted |= self.reap(out);
            if out.len() - start >= wait_for || self.in_ring == 0 {
                break;
            }
            let Some(u) = self.uring.as_mut() else { break };
            match u.wait(deadline) {
                Ok(false) => {}
                Ok(true) => {
                    resubmitted |= self.reap(out);
                    break;
                }
                Err(e) => return Err(self.enter_error("waiting for I/O completions", e)),
            }
        }
        // Continuations of short transfers must reach the kernel now: an event
        // loop waiting on the completion eventfd would otherwise wait forever.
        let pending = self
            .uring
            .as_mut()
            .is_some_and(|u| !u.ring.submission().is_empty());
        if resubmitted && pending {
            self.flush_submissions()?;
        }
        Ok(())
    }

    /// Take a slot back after a refused submission.
    fn release(&mut self, idx: usize) {
        self.slots[idx].clear();
        self.free.push(idx);
    }

    /// Fill slot `idx` with `io`, validated.
    fn prepare(&mut self, idx: usize, tag: u64, io: Io) -> Result<()> {
        let file = &*self.file;
        let slot = &mut self.slots[idx];
        slot.busy = true;
        slot.tag = tag;
        slot.done = 0;
        slot.iov_start = 0;
        slot.retries = 0;
        slot.fixed = None;
        slot.iov.0.clear();
        let (kind, offset, segs) = match io {
            Io::Read { offset, segs } => (Kind::Read, offset, segs),
            Io::Write { offset, segs } => (Kind::Write, offset, segs),
            Io::Flush => {
                slot.kind = Kind::Flush;
                slot.start = 0;
                slot.offset = 0;
                slot.total = 0;
                return Ok(());
            }
            Io::Discard { offset, len } => {
                slot.kind = Kind::Discard;
                slot.start = offset;
                slot.offset = offset;
                slot.total = len;
                let refuse = |kind, msg: String| refuse(file, slot, kind, msg);
                if file.is_readonly() {
                    return Err(refuse(
                        io::ErrorKind::PermissionDenied,
                        "the disk is opened read-only".into(),
                    ));
                }
                if let Err(why) = file.discard_support() {
                    return Err(refuse(
                        io::ErrorKind::Unsupported,
                        format!("discard is not supported: {why}"),
                    ));
                }
                let align = u64::from(file.logical_sector_size());
                if len == 0 || offset % align != 0 || len % align != 0 {
                    return Err(refuse(
                        io::ErrorKind::InvalidInput,
                        format!(
                            "offset and length must be non-zero multiples of the {align}-byte logical sector size"
                        ),
                    ));
                }
                check_range(file, slot, offset, len)?;
                return Ok(());
            }
        };
        slot.kind = kind;
        slot.start = offset;
        slot.offset = offset;
        slot.total = 0;
        let refuse = |slot: &Slot, kind, msg: String| refuse(file, slot, kind, msg);
        if kind == Kind::Write && file.is_readonly() {
            return Err(refuse(
                slot,
                io::ErrorKind::PermissionDenied,
                "the disk is opened read-only".into(),
            ));
        }
        if segs.is_empty() || segs.len() > MAX_SEGS {
            return Err(refuse(
                slot,
                io::ErrorKind::InvalidInput,
                format!("{} segments (1..={MAX_SEGS} allowed)", segs.len()),
            ));
        }
        let mem_align = file.mem_align();
        let io_align = file.io_align();
        if offset % io_align != 0 {
            return Err(refuse(
                slot,
                io::ErrorKind::InvalidInput,
                format!(
                    "with O_DIRECT the offset must be a multiple of the {io_align}-byte logical sector size"
                ),
            ));
        }
        let mut total: u64 = 0;
        for (i, s) in segs.iter().enumerate() {
            if kind == Kind::Read && !s.mem.is_writable() {
                return Err(refuse(
                    slot,
                    io::ErrorKind::PermissionDenied,
                    format!("segment {i} is read-only memory: a read cannot fill it"),
                ));
            }
            let inside = s
                .offset
                .checked_add(s.len)
                .is_some_and(|end| end <= s.mem.len());
            if !inside {
                return Err(refuse(
                    slot,
                    io::ErrorKind::InvalidInput,
                    format!(
                        "segment {i} ({} bytes at offset {}) is outside its region of {} bytes",
                        s.len,
                        s.offset,
                        s.mem.len()
                    ),
                ));
            }
            if s.len == 0 {
                return Err(refuse(
                    slot,
                    io::ErrorKind::InvalidInput,
                    format!("segment {i} is empty"),
                ));
            }
            // In bounds (checked above), so this stays inside the region's mapping.
            let addr = s.mem.base().wrapping_add(s.offset);
            if (addr as usize) % mem_align != 0 || (s.len as u64) % io_align != 0 {
                return Err(refuse(
                    slot,
                    io::ErrorKind::InvalidInput,
                    format!(
                        "with O_DIRECT every segment's address must be a multiple of {mem_align} and its length of \
                         {io_align} bytes; segment {i} is {} bytes at address {addr:p}",
                        s.len
                    ),
                ));
            }
            total += s.len as u64;
            // A segment that starts where the previous one ends (neighbouring
            // pages of one mapping, or of a grant window) extends its iovec:
            // the kernel pins a buffer's pages in one call, not one per page.
            match slot.iov.0.last_mut() {
                Some(v) if (v.iov_base as usize).wrapping_add(v.iov_len) == addr as usize => {
                    v.iov_len += s.len;
                }
                _ => slot.iov.0.push(libc::iovec {
                    iov_base: addr.cast(),
                    iov_len: s.len,
                }),
            }
        }
        slot.total = total;
        check_range(file, slot, offset, total)?;
        slot.segs = segs;
        self.slots[idx].fixed = self.fixed_buffer(idx);
        Ok(())
    }

    /// The io_uring entry for (the rest of) slot `idx`.
    fn sqe(&self, idx: usize) -> squeue::Entry {
        let file = match &self.uring {
            Some(u) if u.fixed_file => FileRef::Fixed(types::Fixed(0)),
            _ => FileRef::Fd(types::Fd(self.file.as_fd().as_raw_fd())),
        };
        let slot = &self.slots[idx];
        let iov = slot.remaining_iov();
        let entry = match (slot.kind, slot.fixed, iov) {
            // The rest of a one-segment operation in a registered buffer (one
            // segment: at most a region's length, far below 4 GiB).
            (Kind::Read, Some(bi), [v]) => with_file!(file, fd => {
                opcode::ReadFixed::new(fd, v.iov_base.cast(), v.iov_len as u32, bi)
                    .offset(slot.offset)
                    .build()
            }),
            (Kind::Write, Some(bi), [v]) => with_file!(file, fd => {
                opcode::WriteFixed::new(fd, v.iov_base.cast(), v.iov_len as u32, bi)
                    .offset(slot.offset)
                    .build()
            }),
            _ => sqe_vectored(file, slot, iov),
        };
        entry.user_data(idx as u64)
    }

    /// Execute slot `idx` with plain system calls.
    fn run_sync(&mut self, idx: usize) -> io::Result<usize> {
        let file = &*self.file;
        let fd = file.as_fd();
        let slot = &mut self.slots[idx];
        match slot.kind {
            Kind::Read | Kind::Write => {
                while slot.done < slot.total {
                    let iov = slot.remaining_iov();
                    let r = if slot.kind == Kind::Read {
                        // SAFETY: every iovec lies inside a read-write region (checked
                        // by `prepare`) that the slot's `segs` keep mapped for the
                        // call; regions are never accessed through references.
                        unsafe { sys::preadv(fd, iov, slot.offset) }
                    } else {
                        // SAFETY: every iovec lies inside a region (checked by
                        // `prepare`) that the slot's `segs` keep mapped for the call.
                        unsafe { sys::pwritev(fd, iov, slot.offset) }
                    };
                    match r {
                        Ok(0) => return Err(no_progress(slot)),
                        Ok(n) if n as u64 > slot.total - slot.done => {
                            return Err(too_much(slot, n));
                        }
                        Ok(n) => slot.advance(n),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(slot.total as usize)
            }
            Kind::Flush => nix::unistd::fdatasync(fd)
                .map(|()| 0)
                .map_err(io::Error::from),
            Kind::Discard => {
                if file.is_block_device() {
                    sys::blkdiscard(fd, slot.offset, slot.total)?;
                } else {
                    sys::punch_hole(fd, slot.offset, slot.total)?;
                }
                Ok(usize::try_from(slot.total).unwrap_or(usize::MAX))
            }
        }
    }

    /// Free slot `idx` and make its completion.
    fn finish(&mut self, idx: usize, result: io::Result<usize>) -> Completion {
        let slot = &mut self.slots[idx];
        let result = result.map_err(|e| OpError::into_io(slot.describe(&self.file), e));
        let tag = slot.tag;
        slot.clear();
        self.free.push(idx);
        Completion { tag, result }
    }

    /// What a completion queue entry with result `res` means for slot `idx`.
    fn step(&mut self, idx: usize, res: i32) -> Step {
        let slot = &mut self.slots[idx];
        if res < 0 {
            let errno = -res;
            if matches!(errno, libc::EAGAIN | libc::EINTR) && slot.retries < MAX_RETRIES {
                slot.retries += 1;
                return Step::Again;
            }
            return Step::Done(Err(io::Error::from_raw_os_error(errno)));
        }
        let n = res as usize;
        match slot.kind {
            Kind::Flush => Step::Done(Ok(0)),
            Kind::Discard => Step::Done(Ok(usize::try_from(slot.total).unwrap_or(usize::MAX))),
            Kind::Read | Kind::Write => {
                if n == 0 {
                    return Step::Done(Err(no_progress(slot)));
                }
                if n as u64 > slot.total - slot.done {
                    return Step::Done(Err(too_much(slot, n)));
                }
                slot.advance(n);
                if slot.done == slot.total {
                    Step::Done(Ok(slot.total as usize))
                } else {
                    Step::Again
                }
            }
        }
    }

    /// Take every available completion queue entry: finished operations go to
    /// `out`, short ones are queued again. Returns whether any was queued again.
    fn reap(&mut self, out: &mut Vec<Completion>) -> bool {
        let mut cqes = std::mem::take(&mut self.cqes);
        cqes.clear();
        match self.uring.as_mut() {
            Some(u) => {
                if u.ring.submission().taskrun() {
                    // Completions wait in task work: any system call runs it
                    // (this one also submits what is queued). Errors surface at
                    // the next submission or wait.
                    let _ = u.ring.submit();
                }
                cqes.extend(u.ring.completion().map(|c| (c.user_data(), c.result())));
            }
            None => return false,
        }
        let mut again = false;
        for &(user_data, res) in &cqes {
            if user_data == CANCEL {
                continue;
            }
            if user_data == WATCH {
                if let Some(w) = self.watch.as_mut() {
                    w.armed = false;
                    w.fired = true;
                    if res < 0 {
                        // Reported once as ready, so the caller looks at the
                        // descriptor; its own poll says what is wrong.
                        w.broken = true;
                        tracing::warn!(
                            "{}: polling descriptor {} through io_uring failed ({}): \
                             waiting with poll(2) instead",
                            self.file.path().display(),
                            w.fd,
                            io::Error::from_raw_os_error(-res)
                        );
                    }
                }
                continue;
            }
            let idx = match usize::try_from(user_data) {
                Ok(i) if i < self.slots.len() && self.slots[i].busy => i,
                _ => {
                    tracing::warn!(
                        "{}: io_uring completion for unknown operation {user_data:#x} ignored",
                        self.file.path().display()
                    );
                    continue;
                }
            };
            let result = match self.step(idx, res) {
                Step::Done(r) => r,
                Step::Again => {
                    let entry = self.sqe(idx);
                    let pushed = match self.uring.as_mut() {
                        // SAFETY: as in `submit`: the slot stays busy, keeping its
                        // iovec array and memory alive, until this entry's completion.
                        Some(u) => unsafe { u.push(&entry) },
                        None => Err(io::Error::other("no io_uring")),
                    };
                    match pushed {
                        Ok(()) => {
                            again = true;
                            continue;
                        }
                        Err(e) => Err(e),
                    }
                }
            };
            self.in_ring -= 1;
            let c = self.finish(idx, result);
            out.push(c);
        }
        self.cqes = cqes;
        again
    }
}

impl Drop for DiskQueue {
    /// Wait for every operation still in the kernel (cancelling those that have
    /// not started), so that no region is unmapped while the kernel may write
    /// into it. If the kernel does not finish within a minute, the memory of the
    /// unfinished operations is leaked instead of freed.
    fn drop(&mut self) {
        let DiskQueue {
            file,
            uring,
            slots,
            in_ring,
            cqes,
            ..
        } = self;
        let Some(u) = uring.as_mut() else { return };
        if *in_ring == 0 {
            return;
        }
        for (idx, _) in slots.iter().enumerate().filter(|(_, s)| s.busy) {
            let cancel = opcode::AsyncCancel::new(idx as u64)
                .build()
                .user_data(CANCEL);
            // SAFETY: a cancellation points at no memory.
            let _ = unsafe { u.push(&cancel) };
        }
        let deadline = Instant::now() + DROP_WAIT;
        let mut failure = None;
        while *in_ring > 0 {
            cqes.clear();
            cqes.extend(u.ring.completion().map(|c| (c.user_data(), c.result())));
            for &(user_data, _) in cqes.iter() {
                let Ok(idx) = usize::try_from(user_data) else {
                    continue;
                };
                if let Some(slot) = slots.get_mut(idx).filter(|s| s.busy) {
                    slot.clear();
                    *in_ring -= 1;
                }
            }
            if *in_ring == 0 {
                break;
            }
            // Without timed waits (Linux < 5.11) `wait` polls the ring instead.
            let step = Instant::now()
                .checked_add(Duration::from_millis(100))
                .map(|t| t.min(deadline));
            match u.wait(step) {
                Ok(_) if Instant::now() < deadline => {}
                Ok(_) => {
                    failure = Some(format!("still running after {DROP_WAIT:?}"));
                    break;
                }
                Err(e) => {
                    failure = Some(format!("waiting for them failed: {e}"));
                    break;
                }
            }
        }
        if let Some(why) = failure {
            tracing::error!(
                "{}: dropping a disk queue with {} operations in flight, {why}: leaking their memory",
                file.path().display(),
                *in_ring
            );
            for slot in slots.iter_mut().filter(|s| s.busy) {
                std::mem::forget(std::mem::take(&mut slot.segs));
                std::mem::forget(std::mem::take(&mut slot.iov.0));
            }
        }
    }
}

/// A validation error for the operation in `slot`.
fn refuse(file: &BlockFile, slot: &Slot, kind: io::ErrorKind, msg: String) -> Error {
    Error::io(slot.describe(file), io::Error::new(kind, msg))
}

/// Refuse a range that does not lie inside the disk.
fn check_range(file: &BlockFile, slot: &Slot, offset: u64, len: u64) -> Result<()> {
    let cap = file.capacity();
    if offset.checked_add(len).is_some_and(|end| end <= cap) {
        Ok(())
    } else {
        Err(refuse(
            file,
            slot,
            io::ErrorKind::InvalidInput,
            format!("the range ends past the end of the disk ({cap} bytes)"),
        ))
    }
}

/// A read that hit the end of the file, or a write the kernel did not take.
fn no_progress(slot: &Slot) -> io::Error {
    if slot.kind == Kind::Read {
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!(
                "end of file after {} of {} bytes (the file shrank?)",
                slot.done, slot.total
            ),
        )
    } else {
        io::Error::new(
            io::ErrorKind::WriteZero,
            format!(
                "the kernel wrote nothing after {} of {} bytes",
                slot.done, slot.total
            ),
        )
    }
}

/// The kernel reported more bytes than were asked for.
fn too_much(slot: &Slot, n: usize) -> io::Error {
    io::Error::other(format!(
        "the kernel reported {n} bytes transferred with {} left to do",
        slot.total - slot.done
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::file::DiskOpen;
    use crate::disk::io::IoSeg;
    use xenio_xenbus::Region;

    fn queue(depth: u32) -> (tempfile::TempDir, DiskQueue) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("unit.img");
        std::fs::File::create(&path)
            .unwrap()
            .set_len(1 << 20)
            .unwrap();
        let file = Arc::new(BlockFile::open(&path, DiskOpen::default()).unwrap());
        let e = DiskQueue::new(file, depth).unwrap();
        assert_eq!(e.mode(), &IoMode::Uring);
        (dir, e)
    }

    /// Put an arbitrary io_uring operation in flight in a busy slot (a flush
    /// holding `region`), as if submitted.
    fn inject(e: &mut DiskQueue, entry: squeue::Entry, region: &Arc<Region>) -> usize {
        let idx = e.free.pop().unwrap();
        let slot = &mut e.slots[idx];
        slot.busy = true;
        slot.kind = Kind::Flush;
        slot.tag = 77;
        slot.segs = vec![IoSeg::new(region.clone(), 0, 4096)];
        let entry = entry.user_data(idx as u64);
        // SAFETY: the test's entries (timeouts whose timespec the caller keeps
        // alive, no-ops) point at no memory of the slot.
        unsafe { e.uring.as_mut().unwrap().push(&entry) }.unwrap();
        e.in_ring += 1;
        idx
    }

    /// Run `io` and wait for its completion.
    fn run(e: &mut DiskQueue, io: Io) {
        e.submit(1, io).unwrap();
        e.flush_submissions().unwrap();
        let mut out = Vec::new();
        e.complete(&mut out, 1, Some(Duration::from_secs(10)))
            .unwrap();
        assert_eq!(out.len(), 1);
        out[0].result.as_ref().unwrap();
    }

    #[test]
    fn registered_buffers_carry_one_segment_io() {
        let (dir, mut e) = queue(8);
        let region = Arc::new(Region::anonymous(3 * 4096).unwrap());
        let mem = IoMem::ReadWrite(region.clone());
        assert!(e.register_fixed(&mem), "anonymous memory, as root");
        assert!(e.register_fixed(&mem), "registering twice is harmless");
        let data: Vec<u8> = (0..4096u32).map(|i| (i * 7 + 3) as u8).collect();
        region.write(0, &data).unwrap();
        // One segment: written and read back through the registered buffer.
        run(
            &mut e,
            Io::Write {
                offset: 8192,
                segs: vec![IoSeg::new(mem.clone(), 0, 4096)],
            },
        );
        run(
            &mut e,
            Io::Read {
                offset: 8192,
                segs: vec![IoSeg::new(mem.clone(), 4096, 4096)],
            },
        );
        assert_eq!(e.fixed_ios(), 2);
        let mut got = vec![0u8; 4096];
        region.read(4096, &mut got).unwrap();
        assert!(
            got == data,
            "read back through the registered buffer differs"
        );
        let file = std::fs::read(dir.path().join("unit.img")).unwrap();
        assert!(file[8192..12288] == data[..], "the file differs");
        // Two segments: vectored, as before.
        run(
            &mut e,
            Io::Read {
                offset: 8192,
                segs: vec![
                    IoSeg::new(mem.clone(), 8192, 2048),
                    IoSeg::new(mem.clone(), 0, 2048),
                ],
            },
        );
        assert_eq!(e.fixed_ios(), 2);
        // Unregistered: the same operation, vectored, same data.
        e.unregister_fixed(&mem);
        region.fill(4096, 4096, 0).unwrap();
        run(
            &mut e,
            Io::Read {
                offset: 8192,
                segs: vec![IoSeg::new(mem.clone(), 4096, 4096)],
            },
        );
        assert_eq!(e.fixed_ios(), 2);
        region.read(4096, &mut got).unwrap();
        assert!(
            got == data,
            "read back without the registered buffer differs"
        );
        // Read-only memory is never registered.
        let ro = IoMem::ReadOnly(Arc::new(Region::anonymous(4096).unwrap().into_read_only()));
        assert!(!e.register_fixed(&ro));
    }

    #[test]
    fn the_file_is_registered_and_used_by_index() {
        let (dir, mut e) = queue(4);
        assert!(e.uring.as_ref().is_some_and(|u| u.fixed_file));
        let region = Arc::new(Region::anonymous(4096).unwrap());
        region.fill(0, 4096, 0x5a).unwrap();
        let mem = IoMem::ReadWrite(region.clone());
        run(
            &mut e,
            Io::Write {
                offset: 4096,
                segs: vec![IoSeg::new(mem.clone(), 0, 4096)],
            },
        );
        run(&mut e, Io::Flush);
        let file = std::fs::read(dir.path().join("unit.img")).unwrap();
        assert!(file[4096..8192].iter().all(|&b| b == 0x5a));
    }

    #[test]
    fn neighbouring_segments_are_one_iovec() {
        let (dir, mut e) = queue(8);
        let region = Arc::new(Region::anonymous(4 * 4096).unwrap());
        let mem = IoMem::ReadWrite(region.clone());
        let data: Vec<u8> = (0..3 * 4096u32).map(|i| (i * 13 + 1) as u8).collect();
        region.write(0, &data[..2 * 4096]).unwrap();
        region.write(3 * 4096, &data[2 * 4096..]).unwrap();
        // Pages 0 and 1 are neighbours, page 3 is not: two iovecs.
        let segs = vec![
            IoSeg::new(mem.clone(), 0, 4096),
            IoSeg::new(mem.clone(), 4096, 4096),
            IoSeg::new(mem.clone(), 3 * 4096, 4096),
        ];
        let idx = e.free.pop().unwrap();
        e.prepare(
            idx,
            1,
            Io::Write {
                offset: 0,
                segs: segs.clone(),
            },
        )
        .unwrap();
        let lens: Vec<usize> = e.slots[idx].iov.0.iter().map(|v| v.iov_len).collect();
        assert_eq!(lens, [8192, 4096]);
        e.release(idx);
        run(&mut e, Io::Write { offset: 4096, segs });
        let file = std::fs::read(dir.path().join("unit.img")).unwrap();
        assert!(file[4096..4 * 4096] == data[..], "the file differs");
        // Read back into pages 3, 0, 1 (0 and 1 merge again).
        region.fill(0, 4 * 4096, 0).unwrap();
        run(
            &mut e,
            Io::Read {
                offset: 4096,
                segs: vec![
                    IoSeg::new(mem.clone(), 3 * 4096, 4096),
                    IoSeg::new(mem.clone(), 0, 4096),
                    IoSeg::new(mem.clone(), 4096, 4096),
                ],
            },
        );
        let mut got = vec![0u8; 4 * 4096];
        region.read(0, &mut got).unwrap();
        assert!(got[3 * 4096..] == data[..4096] && got[..2 * 4096] == data[4096..]);
    }

    #[test]
    fn runs_of_neighbouring_registered_regions_are_registered_on_reuse() {
        let (dir, mut e) = queue(8);
        // Two one-page regions, neighbours in memory (as in a grant window).
        let parent = Arc::new(Region::anonymous(2 * 4096).unwrap());
        let page = |i: usize| {
            let ptr = std::ptr::NonNull::new(parent.as_ptr().wrapping_add(i * 4096)).unwrap();
            // SAFETY: page `i` of `parent`, which the owner (an `Arc` of it)
            // keeps mapped; accessed only through regions.
            IoMem::ReadWrite(Arc::new(unsafe {
                Region::from_raw(ptr, 4096, Box::new(parent.clone()))
            }))
        };
        let (a, b) = (page(0), page(1));
        assert!(e.register_fixed(&a) && e.register_fixed(&b));
        let data: Vec<u8> = (0..8192u32).map(|i| (i * 5 + 2) as u8).collect();
        parent.write(0, &data).unwrap();
        let both = || {
            vec![
                IoSeg::new(a.clone(), 0, 4096),
                IoSeg::new(b.clone(), 0, 4096),
            ]
        };
        // First sighting: vectored; second: a run.
        run(
            &mut e,
            Io::Write {
                offset: 0,
                segs: both(),
            },
        );
        assert_eq!(e.fixed_ios(), 0);
        run(
            &mut e,
            Io::Write {
                offset: 16384,
                segs: both(),
            },
        );
        assert_eq!(e.fixed_ios(), 1);
        // A part of the run uses it too.
        parent.fill(0, 8192, 0).unwrap();
        run(
            &mut e,
            Io::Read {
                offset: 16384,
                segs: vec![
                    IoSeg::new(a.clone(), 2048, 2048),
                    IoSeg::new(b.clone(), 0, 4096),
                ],
            },
        );
        assert_eq!(e.fixed_ios(), 2);
        let mut got = vec![0u8; 8192];
        parent.read(0, &mut got).unwrap();
        assert!(got[2048..] == data[..6144], "read through the run differs");
        let file = std::fs::read(dir.path().join("unit.img")).unwrap();
        assert!(file[..8192] == data[..] && file[16384..24576] == data[..]);
        // A region of the run goes: the run goes with it.
        e.unregister_fixed(&b);
        run(
            &mut e,
            Io::Read {
                offset: 0,
                segs: both(),
            },
        );
        run(
            &mut e,
            Io::Read {
                offset: 0,
                segs: both(),
            },
        );
        assert_eq!(e.fixed_ios(), 2, "no run over an unregistered region");
    }

    #[test]
    fn advance_walks_the_iovecs() {
        let mut s = Slot::new();
        let base = 0x1000 as *mut libc::c_void;
        for len in [512, 1024, 512] {
            s.iov.0.push(libc::iovec {
                iov_base: base,
                iov_len: len,
            });
        }
        s.total = 2048;
        s.advance(100);
        assert_eq!(
            (
                s.iov_start,
                s.iov.0[0].iov_len,
                s.iov.0[0].iov_base as usize
            ),
            (0, 412, 0x1000 + 100)
        );
        s.advance(412 + 1024);
        assert_eq!(s.iov_start, 2);
        assert_eq!(s.remaining_iov().len(), 1);
        assert_eq!((s.done, s.offset), (1536, 1536));
        s.advance(512);
        assert!(s.remaining_iov().is_empty());
        assert_eq!(s.done, s.total);
    }

    #[test]
    fn step_retries_reports_and_never_trusts_the_count() {
        let (_dir, mut e) = queue(4);
        let idx = 0;
        let s = &mut e.slots[idx];
        s.kind = Kind::Read;
        s.total = 4096;
        s.iov.0.push(libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 4096,
        });
        for _ in 0..MAX_RETRIES {
            assert!(matches!(e.step(idx, -libc::EAGAIN), Step::Again));
        }
        match e.step(idx, -libc::EAGAIN) {
            Step::Done(Err(err)) => assert_eq!(err.raw_os_error(), Some(libc::EAGAIN)),
            _ => panic!("retried forever"),
        }
        match e.step(idx, 8192) {
            Step::Done(Err(err)) => {
                assert!(err.to_string().contains("reported 8192 bytes"), "{err}")
            }
            _ => panic!("accepted more bytes than asked"),
        }
        assert!(matches!(e.step(idx, 1024), Step::Again));
        match e.step(idx, 0) {
            Step::Done(Err(err)) => {
                assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
                assert!(
                    err.to_string().contains("after 1024 of 4096 bytes"),
                    "{err}"
                );
            }
            _ => panic!("a read of 0 bytes is not progress"),
        }
        assert!(matches!(e.step(idx, 3072), Step::Done(Ok(4096))));
        e.slots[idx].kind = Kind::Flush;
        assert!(matches!(e.step(idx, -libc::EIO), Step::Done(Err(_))));
    }

    #[test]
    fn waits_time_out_and_kernel_errors_are_reported() {
        let (_dir, mut e) = queue(4);
        let region = Arc::new(Region::anonymous(4096).unwrap());
        let ts = Box::new(types::Timespec::new().nsec(300_000_000));
        inject(&mut e, opcode::Timeout::new(&*ts).build(), &region);
        assert_eq!(Arc::strong_count(&region), 2);

        let mut out = Vec::new();
        let t = Instant::now();
        e.complete(&mut out, 1, Some(Duration::from_millis(30)))
            .unwrap();
        assert!(out.is_empty());
        assert!(
            t.elapsed() < Duration::from_millis(250),
            "{:?}",
            t.elapsed()
        );
        assert_eq!(e.in_flight(), 1);

        e.complete(&mut out, 1, None).unwrap();
        let c = out.pop().unwrap();
        assert_eq!(c.tag, 77);
        assert_eq!(c.errno(), Some(libc::ETIME));
        let msg = c.result.unwrap_err().to_string();
        assert!(msg.contains("unit.img: flush (fdatasync): "), "{msg}");
        assert_eq!(Arc::strong_count(&region), 1);
        assert_eq!(e.in_flight(), 0);
    }

    #[test]
    fn unknown_completions_are_ignored() {
        let (_dir, mut e) = queue(4);
        let nop = opcode::Nop::new().build().user_data(12345);
        // SAFETY: a no-op points at no memory.
        unsafe { e.uring.as_mut().unwrap().push(&nop) }.unwrap();
        e.flush_submissions().unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let mut out = Vec::new();
        e.complete(&mut out, 0, None).unwrap();
        assert!(out.is_empty());
        assert_eq!(e.in_flight(), 0);
    }

    /// An operation that would run for a minute is cancelled by the drop, which
    /// waits for its completion before releasing the memory.
    #[test]
    fn drop_cancels_and_waits() {
        let (_dir, mut e) = queue(4);
        let region = Arc::new(Region::anonymous(4096).unwrap());
        let ts = Box::new(types::Timespec::new().sec(60));
        inject(&mut e, opcode::Timeout::new(&*ts).build(), &region);
        e.flush_submissions().unwrap();
        let t = Instant::now();
        drop(e);
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        assert_eq!(Arc::strong_count(&region), 1);
    }

    /// A 64 KiB file of 7s in a directory that lives as long as the guard.
    fn sevens() -> (tempfile::TempDir, Arc<BlockFile>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("unit.img");
        std::fs::write(&path, vec![7u8; 1 << 16]).unwrap();
        let file = Arc::new(BlockFile::open(&path, DiskOpen::default()).unwrap());
        (dir, file)
    }

    /// Whether `e`'s completion descriptor polls readable within `within` ms
    /// (a completion's task work may interrupt the first pass; poll is
    /// restarted then).
    fn readable(e: &DiskQueue, within: u16) -> bool {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        let mut fds = [PollFd::new(e.completion_fd().unwrap(), PollFlags::POLLIN)];
        loop {
            match poll(&mut fds, PollTimeout::from(within)) {
                Ok(n) => return n == 1,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => panic!("poll: {e}"),
            }
        }
    }

    /// The completion descriptor (the io_uring's own) is readable exactly
    /// while a completion is unreaped: not before one is posted, not after
    /// `reap_ready` took it, again for one posted after the last reap (so an
    /// event loop that reaps and then sleeps on it never misses one), and
    /// clearing it (`rearm_completion_fd`) changes nothing.
    #[test]
    fn the_completion_descriptor_is_readable_while_a_completion_is_unreaped() {
        let (_dir, file) = sevens();
        let opts = DiskQueueOptions {
            depth: 4,
            completion_fd: true,
            ..DiskQueueOptions::default()
        };
        let mut e = DiskQueue::with_options(file, &opts).unwrap();
        assert_eq!(e.mode(), &IoMode::Uring);
        assert!(e.eventfd.is_none(), "no eventfd beside io_uring");
        assert!(!readable(&e, 0));
        let region = Arc::new(Region::anonymous(4096).unwrap());
        let read = |tag, e: &mut DiskQueue| {
            e.submit(
                tag,
                Io::Read {
                    offset: 0,
                    segs: vec![IoSeg::new(region.clone(), 0, 4096)],
                },
            )
            .unwrap();
            e.flush_submissions().unwrap();
        };
        read(1, &mut e);
        assert!(readable(&e, 10_000), "no completion signalled");
        assert!(readable(&e, 0), "readable until reaped");
        e.rearm_completion_fd();
        assert!(readable(&e, 0), "rearming does not hide an unreaped one");
        let mut out = Vec::new();
        e.reap_ready(&mut out).unwrap();
        assert_eq!(out.iter().map(|c| c.tag).collect::<Vec<_>>(), [1]);
        assert!(!readable(&e, 0), "reaped: nothing to signal");
        read(2, &mut e);
        read(3, &mut e);
        assert!(readable(&e, 10_000), "a completion after the last reap");
        out.clear();
        e.complete(&mut out, 2, Some(Duration::from_secs(10)))
            .unwrap();
        let mut tags: Vec<u64> = out.iter().map(|c| c.tag).collect();
        tags.sort_unstable();
        assert_eq!(tags, [2, 3]);
        assert!(!readable(&e, 0));
        let mut head = [0u8; 4];
        region.read(0, &mut head).unwrap();
        assert_eq!(head, [7u8; 4]);
    }

    /// With deferred task running the completion descriptor is an eventfd
    /// signalled when completion work is queued, and the work runs only when
    /// the queue asks: a completion whose work was queued before the rearm
    /// is found by the reap after it (the reap runs the work), and a later
    /// one signals again.
    #[test]
    fn deferred_completion_work_is_found_by_the_reap_after_the_rearm() {
        let (_dir, file) = sevens();
        let opts = DiskQueueOptions {
            depth: 4,
            completion_fd: true,
            defer_taskrun: true,
            ..DiskQueueOptions::default()
        };
        let mut e = DiskQueue::with_options(file, &opts).unwrap();
        if !e.deferred_taskrun() {
            eprintln!("SKIP: the kernel refuses IORING_SETUP_DEFER_TASKRUN (Linux < 6.1)");
            return;
        }
        assert!(e.eventfd.is_some());
        assert!(!readable(&e, 0));
        let region = Arc::new(Region::anonymous(4096).unwrap());
        let read = |tag, e: &mut DiskQueue| {
            e.submit(
                tag,
                Io::Read {
                    offset: 0,
                    segs: vec![IoSeg::new(region.clone(), 0, 4096)],
                },
            )
            .unwrap();
            e.flush_submissions().unwrap();
        };
        read(1, &mut e);
        assert!(readable(&e, 10_000), "completion work never signalled");
        // Wait until the work is queued for certain (the flag comes with the
        // signal), then clear the signal: the reap must still find it.
        e.rearm_completion_fd();
        assert!(!readable(&e, 0), "rearm clears the eventfd");
        let mut out = Vec::new();
        e.reap_ready(&mut out).unwrap();
        assert_eq!(out.iter().map(|c| c.tag).collect::<Vec<_>>(), [1]);
        read(2, &mut e);
        assert!(readable(&e, 10_000), "a later completion signals again");
        out.clear();
        e.complete(&mut out, 1, Some(Duration::from_secs(10)))
            .unwrap();
        assert_eq!(out.iter().map(|c| c.tag).collect::<Vec<_>>(), [2]);
        let mut head = [0u8; 4];
        region.read(0, &mut head).unwrap();
        assert_eq!(head, [7u8; 4]);
    }

    /// One wait for a descriptor and the completions: it times out when
    /// neither comes, ends at once when the descriptor is readable (and again
    /// while it stays readable: the caller consumes), ends for a completion
    /// with the descriptor quiet (the completion then reaped into the queue),
    /// and it is refused (`None`) for a second descriptor, in synchronous
    /// mode, and after the ring's poll failed.
    #[test]
    fn one_wait_for_a_descriptor_and_the_completions() {
        use std::io::{Read, Write};
        let (_dir, file) = sevens();
        let opts = DiskQueueOptions {
            depth: 4,
            completion_fd: true,
            ..DiskQueueOptions::default()
        };
        let mut e = DiskQueue::with_options(file.clone(), &opts).unwrap();
        let (rx, tx) = nix::unistd::pipe().unwrap();
        let (mut rx, mut tx) = (std::fs::File::from(rx), std::fs::File::from(tx));
        let t0 = Instant::now();
        let end = e
            .wait_with(rx.as_fd(), Duration::from_millis(50))
            .unwrap()
            .expect("io_uring with timed waits");
        assert_eq!(
            end,
            WaitEnd {
                timed_out: true,
                ..WaitEnd::default()
            }
        );
        assert!(
            t0.elapsed() >= Duration::from_millis(40),
            "{:?}",
            t0.elapsed()
        );
        tx.write_all(b"x").unwrap();
        for _ in 0..2 {
            let end = e.wait_with(rx.as_fd(), Duration::from_secs(10)).unwrap();
            assert_eq!(
                end,
                Some(WaitEnd {
                    other_ready: true,
                    ..WaitEnd::default()
                })
            );
        }
        rx.read_exact(&mut [0u8; 1]).unwrap();
        let end = e.wait_with(rx.as_fd(), Duration::from_millis(20)).unwrap();
        assert!(end.unwrap().timed_out, "consumed: nothing to wake for");
        let region = Arc::new(Region::anonymous(4096).unwrap());
        e.submit(
            9,
            Io::Read {
                offset: 0,
                segs: vec![IoSeg::new(region.clone(), 0, 4096)],
            },
        )
        .unwrap();
        e.flush_submissions().unwrap();
        let end = e
            .wait_with(rx.as_fd(), Duration::from_secs(10))
            .unwrap()
            .unwrap();
        assert_eq!(
            end,
            WaitEnd {
                completions: true,
                ..WaitEnd::default()
            }
        );
        assert!(!readable(&e, 0), "reaped into the queue: the ring is empty");
        let mut out = Vec::new();
        e.reap_ready(&mut out).unwrap();
        assert_eq!(out.iter().map(|c| c.tag).collect::<Vec<_>>(), [9]);
        assert!(out[0].result.is_ok());
        let mut head = [0u8; 4];
        region.read(0, &mut head).unwrap();
        assert_eq!(head, [7u8; 4]);
        let (rx2, _tx2) = nix::unistd::pipe().unwrap();
        assert!(e.wait_with(rx2.as_fd(), Duration::ZERO).unwrap().is_none());
        let sync = DiskQueueOptions {
            force_sync: true,
            ..opts.clone()
        };
        let mut s = DiskQueue::with_options(file.clone(), &sync).unwrap();
        assert!(s.wait_with(rx.as_fd(), Duration::ZERO).unwrap().is_none());
        // A descriptor the kernel cannot poll (closed): reported once as
        // ready, then refused.
        let mut b = DiskQueue::with_options(file, &opts).unwrap();
        let closed = {
            let (r, _w) = nix::unistd::pipe().unwrap();
            r.as_raw_fd()
        };
        // SAFETY: the number is only handed to the kernel (which finds it
        // closed), never read or written through.
        let gone = unsafe { BorrowedFd::borrow_raw(closed) };
        let end = b.wait_with(gone, Duration::from_secs(10)).unwrap();
        assert!(end.unwrap().other_ready);
        assert!(b.wait_with(gone, Duration::ZERO).unwrap().is_none());
    }

    /// A deferred (single-issuer) queue used from another thread than its
    /// creator fails with an error that says why, and still works (and drops
    /// cleanly) back on its own thread.
    #[test]
    fn a_deferred_queue_refuses_another_thread_clearly() {
        let (_dir, file) = sevens();
        let opts = DiskQueueOptions {
            depth: 4,
            completion_fd: true,
            defer_taskrun: true,
            ..DiskQueueOptions::default()
        };
        let e = DiskQueue::with_options(file, &opts).unwrap();
        if !e.deferred_taskrun() {
            eprintln!("SKIP: the kernel refuses IORING_SETUP_DEFER_TASKRUN (Linux < 6.1)");
            return;
        }
        let region = Arc::new(Region::anonymous(4096).unwrap());
        let r = region.clone();
        let (mut e, err) = std::thread::spawn(move || {
            let mut e = e;
            e.submit(
                1,
                Io::Read {
                    offset: 0,
                    segs: vec![IoSeg::new(r, 0, 4096)],
                },
            )
            .unwrap();
            let err = e.flush_submissions().unwrap_err();
            (e, err)
        })
        .join()
        .unwrap();
        let msg = err.to_string();
        assert!(msg.contains("only the thread that created it"), "{msg}");
        let mut out = Vec::new();
        e.complete(&mut out, 1, Some(Duration::from_secs(10)))
            .unwrap();
        assert_eq!(out.len(), 1);
        assert!(out[0].result.is_ok(), "{:?}", out[0].result);
        drop(e);
        assert_eq!(Arc::strong_count(&region), 1);
    }
}
