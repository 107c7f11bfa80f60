//! [`Qcow2Queue`]: one queue's operations on a [`Qcow2Image`], run by a pool of
//! worker threads.
//!
//! `submit` validates and keeps the operation; `flush_submissions` hands the
//! batch to the workers (one lock, one wake-up per operation); each worker
//! copies a write's data out of shared memory, calls imago, copies a read's data
//! in, and posts the completion (a lock, an eventfd write). `reap_ready` looks
//! at an atomic counter first, so it makes no system call when nothing finished.

use super::direct::Direct;
use super::image::Qcow2Image;
use crate::disk::{Completion, Io, IoSeg, OpError};
use crate::{Error, Result, segs};
use imago::io_buffers::IoBuffer;
use nix::sys::eventfd::{EfdFlags, EventFd};
use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Offsets and lengths must be multiples of this (blkif's sector).
const SECTOR: u64 = 512;
/// Largest piece of zeros written at once when a discard writes zeros.
const ZERO_CHUNK: u64 = 1 << 20;
/// A worker's stack: imago's synchronous calls nest deeply.
const WORKER_STACK: usize = 8 << 20;

/// How to build a [`Qcow2Queue`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Qcow2QueueOptions {
    /// Most operations in flight (submitted, completion not yet reaped). 64 by default.
    pub depth: u32,
    /// Worker threads, each running one operation at a time (at most `depth`
    /// are started). 0, the default, means `min(depth, 32)`.
    pub threads: usize,
}

impl Default for Qcow2QueueOptions {
    fn default() -> Self {
        Qcow2QueueOptions {
            depth: 64,
            threads: 0,
        }
    }
}

struct Job {
    tag: u64,
    io: Io,
    /// An `Io::Discard` that is a write of zeros instead (`submit_write_zeroes`).
    zeroes: bool,
    total: u64,
}

#[derive(Default)]
struct Jobs {
    queue: VecDeque<Job>,
    stop: bool,
}

struct Shared {
    image: Arc<Qcow2Image>,
    jobs: Mutex<Jobs>,
    job_ready: Condvar,
    done: Mutex<Vec<Completion>>,
    /// Completions in `done` (read without the lock by `reap_ready`).
    done_count: AtomicUsize,
    eventfd: EventFd,
}

/// One queue's I/O on a [`Qcow2Image`] (owned by one thread; `Send`).
///
/// Operations in flight at the same time are unordered, as in
/// [`DiskQueue`](crate::disk::DiskQueue): a flush covers the writes whose
/// completions were reaped before it was submitted.
pub struct Qcow2Queue {
    /// Dropped (drained) before `shared`'s eventfd, which its ring signals.
    direct: Option<Direct>,
    /// Completions made on this thread (zeros, refusals of the direct path).
    ready: Vec<Completion>,
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    pending: Vec<Job>,
    depth: usize,
    in_flight: usize,
}

impl std::fmt::Debug for Qcow2Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Qcow2Queue")
            .field("image", &self.shared.image.path())
            .field("depth", &self.depth)
            .field("threads", &self.workers.len())
            .field("in_flight", &self.in_flight)
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A worker never panics while holding a lock; if one did, the data (a
    // queue of jobs or completions) is still consistent.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Qcow2Queue {
    /// A queue over `image` with its worker threads started.
    ///
    /// # Errors
    ///
    /// [`Error::BadValue`] for a depth of 0; [`Error::Io`] if the eventfd or a
    /// thread cannot be created.
    pub fn new(image: Arc<Qcow2Image>, opts: &Qcow2QueueOptions) -> Result<Qcow2Queue> {
        if opts.depth == 0 || opts.depth > 32768 {
            return Err(Error::BadValue {
                what: "qcow2 queue depth (1..=32768)".into(),
                value: opts.depth.to_string(),
            });
        }
        let eventfd =
            EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
                .map_err(|e| Error::io("creating the completion eventfd", e.into()))?;
        let depth = opts.depth as usize;
        let threads = match opts.threads {
            0 => depth.min(32),
            n => n.min(depth),
        };
        let shared = Arc::new(Shared {
            image,
            jobs: Mutex::new(Jobs::default()),
            job_ready: Condvar::new(),
            done: Mutex::new(Vec::with_capacity(depth)),
            done_count: AtomicUsize::new(0),
            eventfd,
        });
        let direct = Direct::new(depth, &shared.eventfd);
        let mut q = Qcow2Queue {
            direct,
            ready: Vec::with_capacity(depth),
            shared,
            workers: Vec::with_capacity(threads),
            pending: Vec::with_capacity(depth),
            depth,
            in_flight: 0,
        };
        for i in 0..threads {
            let s = q.shared.clone();
            let h = std::thread::Builder::new()
                .name(format!("qcow2-io-{i}"))
                .stack_size(WORKER_STACK)
                .spawn(move || worker(&s))
                .map_err(|e| Error::io("starting a qcow2 worker thread", e))?;
            q.workers.push(h);
        }
        Ok(q)
    }

    /// The image.
    pub fn image(&self) -> &Arc<Qcow2Image> {
        &self.shared.image
    }

    /// Most operations in flight.
    pub fn depth(&self) -> usize {
        self.depth
    }

    /// Worker threads.
    pub fn threads(&self) -> usize {
        self.workers.len()
    }

    /// Operations submitted whose completion has not been returned yet.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// An eventfd that is readable when completions may be ready.
    /// [`complete`](Self::complete) and [`rearm_completion_fd`](Self::rearm_completion_fd)
    /// clear it.
    pub fn completion_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.shared.eventfd.as_fd())
    }

    /// Validate `io` and keep it for [`flush_submissions`](Self::flush_submissions).
    /// Its result comes back with `tag`.
    ///
    /// # Errors
    ///
    /// [`Error::Limit`] when [`depth`](Self::depth) operations are in flight;
    /// [`Error::Io`] (kind `InvalidInput` or `PermissionDenied`, naming the
    /// image and the operation) for a range past the end of the disk, an offset or
    /// length that is not a multiple of 512, no segments or more than 1024, a
    /// segment outside its region, a read into read-only memory, a write or
    /// discard on a read-only image.
    pub fn submit(&mut self, tag: u64, io: Io) -> Result<()> {
        if self.in_flight >= self.depth {
            return Err(Error::Limit(format!(
                "{}: {} operations in flight, the queue's depth: reap completions before submitting more",
                self.shared.image.path().display(),
                self.depth
            )));
        }
        let total = self.check(&io)?;
        self.in_flight += 1;
        let io = match self.direct.as_mut() {
            Some(d) => {
                let before = self.ready.len();
                match d.try_submit(&self.shared.image, tag, io, total, &mut self.ready) {
                    None => {
                        if self.ready.len() > before {
                            let _ = self.shared.eventfd.write(1);
                        }
                        return Ok(());
                    }
                    Some(io) => io,
                }
            }
            None => io,
        };
        self.pending.push(Job {
            tag,
            io,
            zeroes: false,
            total,
        });
        Ok(())
    }

    /// Whether the direct path (io_uring on the image's files) is in use.
    pub fn has_direct_path(&self) -> bool {
        self.direct.is_some()
    }

    /// Reads and writes so far that took the direct path (straight to an
    /// allocated cluster's place in a file through io_uring, or zeros at once)
    /// rather than a worker thread.
    pub fn direct_ios(&self) -> u64 {
        self.direct.as_ref().map_or(0, |d| d.taken)
    }

    /// Make `len` bytes at `offset` read as zeros without discarding them
    /// (imago's `write_zeroes`: zero clusters where whole clusters are
    /// covered, written zeros elsewhere; zeros written on a version 2 image).
    /// Unlike a discard it runs beside other operations.
    ///
    /// # Errors
    ///
    /// As [`submit`](Self::submit) for a discard of the same range.
    pub fn submit_write_zeroes(&mut self, tag: u64, offset: u64, len: u64) -> Result<()> {
        if self.in_flight >= self.depth {
            return Err(Error::Limit(format!(
                "{}: {} operations in flight, the queue's depth: reap completions before submitting more",
                self.shared.image.path().display(),
                self.depth
            )));
        }
        let io = Io::Discard { offset, len };
        let total = self.check(&io)?;
        self.pending.push(Job {
            tag,
            io,
            zeroes: true,
            total,
        });
        self.in_flight += 1;
        Ok(())
    }

    fn check(&self, io: &Io) -> Result<u64> {
        let image = &*self.shared.image;
        let refuse =
            |kind, msg: String| Error::io(describe(image, io, 0), io::Error::new(kind, msg));
        let (offset, len, write) = match io {
            Io::Flush => return Ok(0),
            Io::Read { offset, segs } | Io::Write { offset, segs } => {
                let read = matches!(io, Io::Read { .. });
                let len = segs::check(segs, read, SECTOR)
                    .map_err(|m| refuse(io::ErrorKind::InvalidInput, m))?;
                (*offset, len, !read)
            }
            Io::Discard { offset, len } => {
                if *len == 0 || len % SECTOR != 0 {
                    return Err(refuse(
                        io::ErrorKind::InvalidInput,
                        "a discard's length must be a non-zero multiple of 512".into(),
                    ));
                }
                (*offset, *len, true)
            }
        };
        if write && image.is_readonly() {
            return Err(refuse(
                io::ErrorKind::PermissionDenied,
                "the image is opened read-only".into(),
            ));
        }
        if offset % SECTOR != 0 {
            return Err(refuse(
                io::ErrorKind::InvalidInput,
                "the offset must be a multiple of 512".into(),
            ));
        }
        if offset
            .checked_add(len)
            .is_none_or(|end| end > image.size_bytes())
        {
            return Err(refuse(
                io::ErrorKind::InvalidInput,
                format!(
                    "the range ends past the end of the disk ({} bytes)",
                    image.size_bytes()
                ),
            ));
        }
        Ok(len)
    }

    /// Hand every submitted operation to the workers. Returns how many.
    ///
    /// # Errors
    ///
    /// None today; the `Result` keeps the queue shape of
    /// [`DiskQueue::flush_submissions`](crate::disk::DiskQueue::flush_submissions).
    pub fn flush_submissions(&mut self) -> Result<usize> {
        let mut direct = 0;
        if let Some(d) = self.direct.as_mut() {
            direct = d.submit().map_err(|e| {
                Error::io(
                    format!(
                        "{}: submitting I/O (io_uring_enter)",
                        self.shared.image.path().display()
                    ),
                    e,
                )
            })?;
        }
        let n = self.pending.len();
        if n == 0 {
            return Ok(direct);
        }
        lock(&self.shared.jobs).queue.extend(self.pending.drain(..));
        // One wake-up per job (a worker that finds the queue empty sleeps again),
        // not every worker for a batch of two.
        for _ in 0..n.min(self.workers.len()) {
            self.shared.job_ready.notify_one();
        }
        Ok(n + direct)
    }

    /// Append finished operations to `out`, waiting until at least `wait_for`
    /// were appended, or `timeout` passed (`None`: no limit), or nothing is in
    /// flight. Operations still kept by `submit` are handed to the workers first.
    ///
    /// # Errors
    ///
    /// None today (an operation's failure is in its [`Completion`]).
    pub fn complete(
        &mut self,
        out: &mut Vec<Completion>,
        wait_for: usize,
        timeout: Option<Duration>,
    ) -> Result<()> {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let start = out.len();
        loop {
            // Clear, then look: a completion posted after the clear signals again.
            self.rearm_completion_fd();
            self.flush_submissions()?;
            self.collect(out);
            if out.len() - start >= wait_for || self.in_flight == 0 {
                return Ok(());
            }
            let ms = match deadline {
                None => 1000,
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return Ok(());
                    }
                    (d - now).as_millis().clamp(1, 1000) as u16
                }
            };
            let mut fds = [PollFd::new(self.shared.eventfd.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::from(ms)) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => {
                    return Err(Error::io(
                        format!(
                            "{}: waiting for completions",
                            self.shared.image.path().display()
                        ),
                        e.into(),
                    ));
                }
            }
        }
    }

    /// Everything finished: this thread's, the workers', the kernel's.
    fn collect(&mut self, out: &mut Vec<Completion>) {
        let mut n = self.ready.len();
        out.append(&mut self.ready);
        if self.shared.done_count.load(Ordering::Acquire) > 0 {
            let mut done = lock(&self.shared.done);
            let k = done.len();
            self.shared.done_count.fetch_sub(k, Ordering::AcqRel);
            out.append(&mut done);
            n += k;
        }
        if let Some(d) = self.direct.as_mut() {
            let before = out.len();
            d.reap(&self.shared.image, out);
            n += out.len() - before;
        }
        self.in_flight -= n;
    }

    /// Append the operations that already finished to `out`, without waiting and
    /// without touching the completion eventfd (no system call, no lock when
    /// nothing finished).
    ///
    /// # Errors
    ///
    /// None today.
    pub fn reap_ready(&mut self, out: &mut Vec<Completion>) -> Result<()> {
        self.collect(out);
        Ok(())
    }

    /// Clear the completion eventfd, so that it becomes readable again only for
    /// completions posted from now on (reap once more before sleeping on it).
    pub fn rearm_completion_fd(&self) {
        let _ = self.shared.eventfd.read();
    }
}

impl Drop for Qcow2Queue {
    /// Stop the workers after the operations they are running (queued ones are
    /// dropped unrun) and wait for them.
    fn drop(&mut self) {
        if let Some(d) = self.direct.as_mut() {
            d.drain(&self.shared.image, Duration::from_secs(60));
        }
        {
            let mut jobs = lock(&self.shared.jobs);
            jobs.stop = true;
            jobs.queue.clear();
        }
        self.shared.job_ready.notify_all();
        for h in self.workers.drain(..) {
            let _ = h.join();
        }
    }
}

/// A worker: take a job, run it, post its completion, until told to stop.
fn worker(s: &Shared) {
    let mut buf: Option<IoBuffer> = None;
    loop {
        let job = {
            let mut jobs = lock(&s.jobs);
            loop {
                if jobs.stop {
                    return;
                }
                if let Some(j) = jobs.queue.pop_front() {
                    break j;
                }
                jobs = s
                    .job_ready
                    .wait(jobs)
                    .unwrap_or_else(PoisonError::into_inner);
            }
        };
        let result = run(&s.image, &job, &mut buf).map_err(|e| {
            let mut what = describe(&s.image, &job.io, job.total);
            if job.zeroes {
                what = what.replace(": discard of", ": write zeroes of");
            }
            OpError::into_io(what, e)
        });
        let c = Completion {
            tag: job.tag,
            result,
        };
        drop(job);
        let first = {
            let mut done = lock(&s.done);
            done.push(c);
            s.done_count.fetch_add(1, Ordering::AcqRel);
            done.len() == 1
        };
        // Only the first completion of a batch signals: the queue's owner clears
        // the eventfd before it reaps (`rearm_completion_fd`, then reap), and a
        // reap takes the whole list, so a list that was not empty has signalled
        // since it was last taken.
        if first {
            let _ = s.eventfd.write(1);
        }
    }
}

/// A worker's aligned buffer of at least `len` bytes.
fn bounce(buf: &mut Option<IoBuffer>, len: usize) -> io::Result<&mut IoBuffer> {
    if buf.as_ref().is_none_or(|b| b.len() < len) {
        *buf = Some(IoBuffer::new(len.next_power_of_two().max(4096), 4096)?);
    }
    buf.as_mut().ok_or_else(|| io::Error::other("no buffer"))
}

fn run(image: &Qcow2Image, job: &Job, buf: &mut Option<IoBuffer>) -> io::Result<usize> {
    let shared = || image.access.read().unwrap_or_else(PoisonError::into_inner);
    match &job.io {
        Io::Read { offset, segs } => {
            let len = job.total as usize;
            let b = bounce(buf, len)?;
            let slice = &mut b.as_mut().into_slice()[..len];
            shared().read(&mut *slice, *offset)?;
            segs::scatter(slice, segs)?;
            Ok(len)
        }
        Io::Write { offset, segs } => {
            let len = job.total as usize;
            let b = bounce(buf, len)?;
            let slice = &mut b.as_mut().into_slice()[..len];
            segs::gather(segs, slice)?;
            shared().write(&*slice, *offset)?;
            Ok(len)
        }
        Io::Flush => {
            let a = shared();
            a.flush()?;
            a.sync()?;
            Ok(0)
        }
        Io::Discard { offset, len } if job.zeroes => {
            if !image.no_zero_discard.load(Ordering::Relaxed) {
                match shared().write_zeroes(*offset, *len) {
                    Ok(()) => return usize::try_from(*len).map_err(io::Error::other),
                    Err(e) if e.kind() == io::ErrorKind::Unsupported => {
                        image.no_zero_discard.store(true, Ordering::Relaxed);
                    }
                    Err(e) => return Err(e),
                }
            }
            write_zeros(image, *offset, *len, buf)?;
            usize::try_from(*len).map_err(io::Error::other)
        }
        Io::Discard { offset, len } => {
            if !image.no_zero_discard.load(Ordering::Relaxed) {
                // Alone on the image: discarding invalidates the mappings that
                // concurrent reads and writes hold inside imago.
                let mut a = image.access.write().unwrap_or_else(PoisonError::into_inner);
                // No new mapping can be taken now; wait for the direct path's
                // operations on old ones (their queues' threads reap them).
                while image.direct_inflight.load(Ordering::Acquire) > 0 {
                    std::thread::sleep(Duration::from_micros(50));
                }
                match a.discard_to_zero(*offset, *len) {
                    Ok(()) => return usize::try_from(*len).map_err(io::Error::other),
                    Err(e) if e.kind() == io::ErrorKind::Unsupported => {
                        tracing::info!(
                            "{}: discard_to_zero unsupported ({e}): discards write zeros",
                            image.path().display()
                        );
                        image.no_zero_discard.store(true, Ordering::Relaxed);
                    }
                    Err(e) => return Err(e),
                }
            }
            write_zeros(image, *offset, *len, buf)?;
            usize::try_from(*len).map_err(io::Error::other)
        }
    }
}

/// Write zeros over `len` bytes at `offset` with plain writes.
fn write_zeros(
    image: &Qcow2Image,
    mut offset: u64,
    len: u64,
    buf: &mut Option<IoBuffer>,
) -> io::Result<()> {
    let end = offset + len;
    let chunk = len.min(ZERO_CHUNK) as usize;
    let b = bounce(buf, chunk)?;
    let zeros = &mut b.as_mut().into_slice()[..chunk];
    zeros.fill(0);
    while offset < end {
        let n = (end - offset).min(chunk as u64) as usize;
        image
            .access
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .write(&zeros[..n], offset)?;
        offset += n as u64;
    }
    Ok(())
}

/// `"<path>: read of 4096 bytes at offset 8192"`, say.
fn describe(image: &Qcow2Image, io: &Io, total: u64) -> String {
    let p = image.path().display();
    let len = |segs: &[IoSeg]| {
        if total > 0 {
            total
        } else {
            segs.iter().map(|s| s.len as u64).sum()
        }
    };
    match io {
        Io::Read { offset, segs } => {
            format!("{p}: read of {} bytes at offset {offset}", len(segs))
        }
        Io::Write { offset, segs } => {
            format!("{p}: write of {} bytes at offset {offset}", len(segs))
        }
        Io::Flush => format!("{p}: flush"),
        Io::Discard { offset, len } => format!("{p}: discard of {len} bytes at offset {offset}"),
    }
}
