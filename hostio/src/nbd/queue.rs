//! [`NbdQueue`]: one connection's pipelined operations, reconnection and
//! re-issue, and the epoll descriptor an event loop waits on.

use super::config::{QueueCount, Shared};
use super::handle::{self, Command, Done, FLAG_FUA, FLAG_NO_HOLE, Handle, Sink};
use crate::disk::{Completion, Io, IoSeg, OpError};
use crate::{Error, Result, segs};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// epoll data of the eventfd, the timer and the socket.
const EV_EVENTFD: u64 = 1;
const EV_TIMER: u64 = 2;
const EV_SOCKET: u64 = 3;

enum Conn {
    /// Connected: commands can be issued.
    Up(Handle),
    /// An attempt in progress since `started`.
    Connecting { h: Handle, started: Instant },
    /// No connection; the next attempt at `next`.
    Down { next: Instant },
}

struct Slot {
    busy: bool,
    tag: u64,
    cmd: Command,
    /// A FUA write to a server without FUA: a flush follows the write.
    flush_after: bool,
    /// What a successful completion reports.
    result: usize,
    segs: Vec<IoSeg>,
    /// The data of an operation of several segments (libnbd takes one buffer).
    bounce: Vec<u8>,
    /// The connection generation it was issued on (`None`: to be issued).
    issued: Option<u64>,
    issued_at: Instant,
}

impl Slot {
    fn new() -> Slot {
        Slot {
            busy: false,
            tag: 0,
            cmd: Command::Flush,
            flush_after: false,
            result: 0,
            segs: Vec::new(),
            bounce: Vec::new(),
            issued: None,
            issued_at: Instant::now(),
        }
    }
}

/// One queue's operations on an NBD export over one connection (owned by one
/// thread; `Send`). See the [module documentation](super) for what happens
/// when the server goes away.
pub struct NbdQueue {
    // Dropped first: closing the handle releases libnbd's pointers into the
    // slots' memory and its callbacks into `sink`.
    conn: Conn,
    sink: Box<Sink>,
    export: Arc<Shared>,
    _count: QueueCount,
    slots: Vec<Slot>,
    free: Vec<usize>,
    busy: usize,
    ready: VecDeque<Completion>,
    generation: u64,
    /// When the connection was lost (while it is not back).
    down_since: Option<Instant>,
    /// The server stayed away past `reconnect_timeout`: fail new operations at once.
    expired: bool,
    last_error: String,
    reconnects: u64,
    issued_since_flush: usize,
    epoll: Epoll,
    eventfd: EventFd,
    timer: TimerFd,
    /// The socket registered with epoll, and for what.
    watched: Option<(RawFd, EpollFlags)>,
    timer_at: Option<Instant>,
    /// The eventfd was written since it was last cleared.
    signalled: std::cell::Cell<bool>,
    scratch: Vec<Done>,
}

impl std::fmt::Debug for NbdQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NbdQueue")
            .field("uri", &self.export.uri)
            .field("depth", &self.slots.len())
            .field("in_flight", &self.busy)
            .field("connected", &self.is_connected())
            .field("reconnects", &self.reconnects)
            .finish()
    }
}

fn sys(what: &str) -> impl Fn(nix::Error) -> Error + '_ {
    move |e| Error::io(what, e.into())
}

impl NbdQueue {
    pub(super) fn new(export: Arc<Shared>, h: Handle, count: QueueCount) -> Result<NbdQueue> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(sys("epoll_create"))?;
        let eventfd =
            EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
                .map_err(sys("eventfd"))?;
        let timer = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_CLOEXEC | TimerFlags::TFD_NONBLOCK,
        )
        .map_err(sys("timerfd_create"))?;
        epoll
            .add(&eventfd, EpollEvent::new(EpollFlags::EPOLLIN, EV_EVENTFD))
            .map_err(sys("epoll_ctl"))?;
        epoll
            .add(&timer, EpollEvent::new(EpollFlags::EPOLLIN, EV_TIMER))
            .map_err(sys("epoll_ctl"))?;
        let depth = export.opts.depth as usize;
        let mut q = NbdQueue {
            conn: Conn::Up(h),
            sink: Box::default(),
            export,
            _count: count,
            slots: (0..depth).map(|_| Slot::new()).collect(),
            free: (0..depth).rev().collect(),
            busy: 0,
            ready: VecDeque::with_capacity(depth),
            generation: 1,
            down_since: None,
            expired: false,
            last_error: String::new(),
            reconnects: 0,
            issued_since_flush: 0,
            epoll,
            eventfd,
            timer,
            watched: None,
            timer_at: None,
            signalled: std::cell::Cell::new(false),
            scratch: Vec::with_capacity(depth),
        };
        q.watch();
        Ok(q)
    }

    /// Most operations in flight.
    pub fn depth(&self) -> usize {
        self.slots.len()
    }

    /// Operations submitted whose completion has not been returned yet.
    pub fn in_flight(&self) -> usize {
        self.busy + self.ready.len()
    }

    /// Whether the queue has a working connection now.
    pub fn is_connected(&self) -> bool {
        matches!(self.conn, Conn::Up(_))
    }

    /// How many times the queue connected again after losing its connection.
    pub fn reconnects(&self) -> u64 {
        self.reconnects
    }

    /// Why the connection was last lost or an attempt failed ("" if never).
    pub fn last_error(&self) -> &str {
        &self.last_error
    }

    /// An epoll descriptor, the same for the queue's life, readable when the
    /// socket is, a timer of the queue is due (a reconnection attempt, a timeout)
    /// or completions wait. [`complete`](Self::complete) and
    /// [`rearm_completion_fd`](Self::rearm_completion_fd) clear what can be cleared;
    /// a readable socket stays readable until [`reap_ready`](Self::reap_ready)
    /// reads it.
    pub fn completion_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.epoll.0.as_fd())
    }

    /// Clear the eventfd and the timer's expirations (reap once more before
    /// sleeping on [`completion_fd`](Self::completion_fd)).
    pub fn rearm_completion_fd(&self) {
        // Only what may be readable: no system call on the common path.
        if self.signalled.replace(false) {
            let _ = self.eventfd.read();
        }
        if self.timer_at.is_some_and(|at| at <= Instant::now()) {
            let mut buf = [0u8; 8];
            let _ = nix::unistd::read(self.timer.as_fd(), &mut buf);
        }
    }

    /// Validate `io`, and issue it at once when connected (libnbd writes it to
    /// the socket; replies come back through [`complete`](Self::complete) or
    /// [`reap_ready`](Self::reap_ready) with `tag`). While the server is away
    /// it waits for the reconnection, or fails with `EIO` once the server has
    /// stayed away past [`NbdOptions::reconnect_timeout`](super::NbdOptions::reconnect_timeout).
    ///
    /// A discard is `NBD_CMD_TRIM`, or `NBD_CMD_WRITE_ZEROES` (see
    /// [`NbdOptions::discard_zeroes`](super::NbdOptions::discard_zeroes)); a
    /// flush to a server without `NBD_CMD_FLUSH` succeeds at once; an operation
    /// the server does not offer completes with `EOPNOTSUPP`.
    ///
    /// # Errors
    ///
    /// [`Error::Limit`] when [`depth`](Self::depth) operations are in flight;
    /// [`Error::Io`] (kind `InvalidInput` or `PermissionDenied`, naming the URI
    /// and the operation) for a range past the end of the export, an offset or
    /// length not a multiple of the server's minimum block size, no segments or
    /// more than 1024, a segment outside its region, a read into read-only
    /// memory, a write or discard on a read-only export.
    pub fn submit(&mut self, tag: u64, io: Io) -> Result<()> {
        let f = self.export.features;
        match io {
            Io::Read { offset, segs } => {
                self.submit_cmd(tag, Command::Read { offset, len: 0 }, segs, false)
            }
            Io::Write { offset, segs } => self.submit_cmd(
                tag,
                Command::Write {
                    offset,
                    len: 0,
                    flags: 0,
                },
                segs,
                false,
            ),
            Io::Flush => self.submit_cmd(tag, Command::Flush, Vec::new(), false),
            Io::Discard { offset, len } => {
                let cmd = if f.trim && !(self.export.opts.discard_zeroes && f.zero) {
                    Command::Trim { offset, len }
                } else {
                    Command::Zero {
                        offset,
                        len,
                        flags: 0,
                    }
                };
                self.submit_cmd(tag, cmd, Vec::new(), false)
            }
        }
    }

    /// Write the segments at `offset` with Force Unit Access: the completion
    /// comes once the data is on the server's stable storage (`NBD_CMD_FLAG_FUA`,
    /// or a write then a flush when the server offers no FUA).
    ///
    /// # Errors
    ///
    /// As [`submit`](Self::submit).
    pub fn submit_write_fua(&mut self, tag: u64, offset: u64, segs: Vec<IoSeg>) -> Result<()> {
        let f = self.export.features;
        let flags = if f.fua { FLAG_FUA } else { 0 };
        let cmd = Command::Write {
            offset,
            len: 0,
            flags,
        };
        self.submit_cmd(tag, cmd, segs, !f.fua && f.flush)
    }

    /// `NBD_CMD_WRITE_ZEROES` over `len` bytes at `offset`: they read back as
    /// zeros. `may_trim`: the server may free the space (else
    /// `NBD_CMD_FLAG_NO_HOLE`).
    ///
    /// # Errors
    ///
    /// As [`submit`](Self::submit).
    pub fn submit_write_zeroes(
        &mut self,
        tag: u64,
        offset: u64,
        len: u64,
        may_trim: bool,
    ) -> Result<()> {
        let flags = if may_trim { 0 } else { FLAG_NO_HOLE };
        self.submit_cmd(tag, Command::Zero { offset, len, flags }, Vec::new(), false)
    }

    fn refuse(&self, cmd: &Command, total: u64, kind: io::ErrorKind, msg: String) -> Error {
        Error::io(
            describe(&self.export.uri, cmd, total),
            io::Error::new(kind, msg),
        )
    }

    fn submit_cmd(
        &mut self,
        tag: u64,
        mut cmd: Command,
        segs: Vec<IoSeg>,
        flush_after: bool,
    ) -> Result<()> {
        if self.busy + self.ready.len() >= self.slots.len() {
            return Err(Error::Limit(format!(
                "{}: {} operations in flight, the queue's depth: reap completions before submitting more",
                self.export.uri,
                self.slots.len()
            )));
        }
        let f = self.export.features;
        let align = f.min_block;
        let (offset, len, write, supported) = match cmd {
            Command::Read { offset, .. } | Command::Write { offset, .. } => {
                let read = matches!(cmd, Command::Read { .. });
                let total = segs::check(&segs, read, align)
                    .map_err(|m| self.refuse(&cmd, 0, io::ErrorKind::InvalidInput, m))?;
                if let Command::Read { len, .. } | Command::Write { len, .. } = &mut cmd {
                    *len = total;
                }
                (offset, total, !read, true)
            }
            Command::Flush => (0, 0, false, true),
            Command::Trim { offset, len } => (offset, len, true, f.trim),
            Command::Zero { offset, len, .. } => (offset, len, true, f.zero),
        };
        if !matches!(cmd, Command::Flush) {
            if (len == 0 && !matches!(cmd, Command::Read { .. } | Command::Write { .. }))
                || offset % align != 0
                || len % align != 0
            {
                return Err(self.refuse(
                    &cmd,
                    len,
                    io::ErrorKind::InvalidInput,
                    format!("offset and length must be non-zero multiples of the server's {align}-byte block"),
                ));
            }
            if offset.checked_add(len).is_none_or(|e| e > f.size) {
                return Err(self.refuse(
                    &cmd,
                    len,
                    io::ErrorKind::InvalidInput,
                    format!(
                        "the range ends past the end of the export ({} bytes)",
                        f.size
                    ),
                ));
            }
        }
        if write && f.read_only {
            return Err(self.refuse(
                &cmd,
                len,
                io::ErrorKind::PermissionDenied,
                "the export is read-only".into(),
            ));
        }
        let Some(idx) = self.free.pop() else {
            return Err(Error::Limit(format!(
                "{}: no free operation slot",
                self.export.uri
            )));
        };
        self.busy += 1;
        let slot = &mut self.slots[idx];
        slot.busy = true;
        slot.tag = tag;
        slot.cmd = cmd;
        slot.flush_after = flush_after;
        slot.result = usize::try_from(len).unwrap_or(usize::MAX);
        slot.issued = None;
        slot.segs = segs;
        if slot.segs.len() > 1 {
            slot.bounce.resize(len as usize, 0);
            if write {
                if let Err(e) = segs::gather(&slot.segs, &mut slot.bounce) {
                    self.finish(idx, Err(e));
                    return Ok(());
                }
            }
        }
        // Answered here, without the server: a flush it has no cache for,
        // an operation it does not offer, a server that stayed away too long.
        if matches!(cmd, Command::Flush) && !f.flush {
            self.finish(idx, Ok(0));
            self.signal();
        } else if !supported {
            let e = io::Error::from_raw_os_error(libc::EOPNOTSUPP);
            self.finish(idx, Err(e));
            self.signal();
        } else if self.expired && !self.is_connected() {
            self.fail_unreachable(idx);
            self.signal();
        } else {
            self.issue(idx);
        }
        Ok(())
    }

    /// Make the completion descriptor readable: completions wait in `ready`.
    fn signal(&self) {
        if !self.signalled.replace(true) {
            let _ = self.eventfd.write(1);
        }
    }

    /// Why an operation fails with EIO: the server stayed away.
    fn unreachable(&self) -> String {
        let since = self.down_since.map(|t| t.elapsed()).unwrap_or_default();
        format!(
            "the NBD server has been unreachable for {:.1} s (reconnect_timeout {:?}; last error: {})",
            since.as_secs_f64(),
            self.export.opts.reconnect_timeout,
            self.last_error
        )
    }

    /// Fail slot `idx` with EIO because the server stayed away.
    fn fail_unreachable(&mut self, idx: usize) {
        let why = self.unreachable();
        self.finish_with(idx, Err(io::Error::from_raw_os_error(libc::EIO)), Some(why));
    }

    /// Issue slot `idx` on the current connection, if there is one.
    fn issue(&mut self, idx: usize) {
        let Conn::Up(h) = &self.conn else { return };
        let slot = &mut self.slots[idx];
        let buf = match slot.cmd {
            Command::Read { .. } | Command::Write { .. } => match &slot.segs[..] {
                // In bounds: checked at submission.
                [s] => s.mem.base().wrapping_add(s.offset),
                _ => slot.bounce.as_mut_ptr(),
            },
            _ => std::ptr::null_mut(),
        };
        let cb = handle::callback(&self.sink, idx as u32, self.generation);
        // SAFETY: `buf` points at the slot's one segment (inside its region,
        // which the slot's `segs` keep mapped) or at the slot's bounce buffer
        // (never resized while issued); the slot stays busy, so neither is
        // released nor reused, until its completion has been processed or the
        // handle has been closed (`lost`, `Drop`). A read's segment is writable
        // memory (checked at submission); shared memory is only touched by libnbd
        // through this raw pointer.
        match unsafe { h.issue(slot.cmd, buf, cb) } {
            Ok(_) => {
                slot.issued = Some(self.generation);
                slot.issued_at = Instant::now();
                self.issued_since_flush += 1;
            }
            Err(e) => {
                if h.is_gone() {
                    let why = e.to_string();
                    self.lost(why);
                } else {
                    self.finish(idx, Err(e));
                    self.signal();
                }
            }
        }
    }

    /// Free slot `idx` and queue its completion.
    fn finish(&mut self, idx: usize, result: io::Result<usize>) {
        self.finish_with(idx, result, None);
    }

    /// As `finish`, with `note` added to an error's description.
    fn finish_with(&mut self, idx: usize, result: io::Result<usize>, note: Option<String>) {
        let slot = &mut self.slots[idx];
        let result = match result {
            Ok(n) => {
                if matches!(slot.cmd, Command::Read { .. }) && slot.segs.len() > 1 {
                    segs::scatter(&slot.bounce, &slot.segs).map(|()| n)
                } else {
                    Ok(n)
                }
            }
            Err(e) => Err(e),
        };
        let result = result.map_err(|e| {
            let mut what = describe(&self.export.uri, &slot.cmd, slot.result as u64);
            if let Some(n) = note {
                what = format!("{what}: {n}");
            }
            OpError::into_io(what, e)
        });
        let tag = slot.tag;
        slot.busy = false;
        slot.issued = None;
        slot.segs.clear();
        self.free.push(idx);
        self.busy -= 1;
        self.ready.push_back(Completion { tag, result });
    }

    /// Handle what libnbd reported. `dying`: the connection died in this turn,
    /// so errors may be the connection's, not the server's: issue those again.
    fn process(&mut self, dying: bool) {
        let mut done = std::mem::take(&mut self.scratch);
        done.clear();
        done.append(&mut self.sink.0.borrow_mut());
        for d in &done {
            let idx = d.slot as usize;
            let current = self.slots.get(idx).is_some_and(|s| {
                s.busy && s.issued == Some(d.generation) && d.generation == self.generation
            });
            if !current {
                continue;
            }
            if !dying {
                // The server answers on this connection: it is back for good.
                self.down_since = None;
            }
            let slot = &mut self.slots[idx];
            if d.errno == 0 {
                if slot.flush_after {
                    slot.flush_after = false;
                    slot.cmd = Command::Flush;
                    slot.issued = None;
                    if !dying {
                        self.issue(idx);
                    }
                } else {
                    let n = slot.result;
                    self.finish(idx, Ok(n));
                }
            } else if dying {
                slot.issued = None;
            } else {
                self.finish(idx, Err(io::Error::from_raw_os_error(d.errno)));
            }
        }
        self.scratch = done;
    }

    /// The connection is gone: close it and reconnect later; every operation
    /// not yet answered will be issued again.
    fn lost(&mut self, why: String) {
        if let Conn::Up(_) = self.conn {
            tracing::warn!(
                "{}: NBD connection lost: {why}; reconnecting",
                self.export.uri
            );
        }
        self.last_error = why;
        self.unwatch();
        let old = std::mem::replace(
            &mut self.conn,
            Conn::Down {
                next: Instant::now() + self.export.opts.reconnect_delay,
            },
        );
        drop(old);
        // Anything posted while closing belongs to the old connection.
        self.sink.0.borrow_mut().clear();
        self.generation += 1;
        for s in self.slots.iter_mut().filter(|s| s.busy) {
            s.issued = None;
        }
        if self.down_since.is_none() {
            self.down_since = Some(Instant::now());
        }
        self.timer_at = None;
    }

    /// One non-blocking turn: read replies, send what waits, advance a
    /// reconnection, fail what waited too long.
    fn pump(&mut self) {
        let now = Instant::now();
        let opts = self.export.opts.clone();
        match &self.conn {
            Conn::Up(h) => {
                let r = service_up(h);
                let gone = r.is_err() || h.is_gone();
                self.process(gone);
                if gone {
                    let why = match r {
                        Err(e) => e.to_string(),
                        Ok(()) => "the server closed the connection".into(),
                    };
                    self.lost(why);
                } else if let Some(t) = opts.io_timeout {
                    let stuck = self.slots.iter().any(|s| {
                        s.busy && s.issued.is_some() && now.duration_since(s.issued_at) >= t
                    });
                    if stuck {
                        self.lost(format!("no reply within io_timeout ({t:?})"));
                    }
                }
            }
            Conn::Connecting { h, started } => {
                let started = *started;
                let r = service(h);
                if r.is_ok() && h.is_up() {
                    self.connected();
                } else if r.is_err() || h.is_gone() || !h.is_connecting() {
                    self.last_error = match r {
                        Err(e) => e.to_string(),
                        Ok(()) => handle::last_error("connecting").to_string(),
                    };
                    self.unwatch();
                    self.conn = Conn::Down {
                        next: (started + opts.reconnect_delay).max(now),
                    };
                } else if now.duration_since(started) >= opts.connect_timeout {
                    self.last_error = format!(
                        "no handshake within connect_timeout ({:?})",
                        opts.connect_timeout
                    );
                    self.unwatch();
                    self.conn = Conn::Down { next: now };
                }
            }
            Conn::Down { next } => {
                if now >= *next {
                    self.attempt(now);
                }
            }
        }
        if !self.is_connected() && !self.expired {
            if let Some(since) = self.down_since {
                if now.duration_since(since) >= opts.reconnect_timeout {
                    self.expire();
                }
            }
        }
        self.watch();
        self.arm_timer(now);
    }

    /// Start a connection attempt.
    fn attempt(&mut self, now: Instant) {
        let delay = self.export.opts.reconnect_delay;
        let h = match Handle::new() {
            Ok(h) => h,
            Err(e) => {
                self.last_error = e.to_string();
                self.conn = Conn::Down { next: now + delay };
                return;
            }
        };
        if let Err(e) = h.aio_connect_uri(&self.export.c_uri) {
            self.last_error = e.to_string();
            self.conn = Conn::Down { next: now + delay };
            return;
        }
        if h.is_up() {
            self.conn = Conn::Connecting { h, started: now };
            self.connected();
        } else {
            self.conn = Conn::Connecting { h, started: now };
        }
    }

    /// The attempt succeeded: check it is the same export, issue everything
    /// that waits.
    fn connected(&mut self) {
        let Conn::Connecting { h, .. } = std::mem::replace(
            &mut self.conn,
            Conn::Down {
                next: Instant::now(),
            },
        ) else {
            return;
        };
        let size = h.size().ok();
        if size != Some(self.export.features.size) {
            self.last_error = format!(
                "the server came back with a size of {size:?} bytes instead of {}",
                self.export.features.size
            );
            self.conn = Conn::Down {
                next: Instant::now() + self.export.opts.reconnect_delay,
            };
            return;
        }
        self.conn = Conn::Up(h);
        self.reconnects += 1;
        tracing::info!(
            "{}: NBD connection back after {:.1} s",
            self.export.uri,
            self.down_since
                .map(|t| t.elapsed().as_secs_f64())
                .unwrap_or_default()
        );
        // Back for good once a reply comes (`process`): a server that accepts
        // connections and then fails every one must still time out.
        if self.busy == 0 {
            self.down_since = None;
        }
        self.expired = false;
        self.timer_at = None;
        self.watch();
        for idx in 0..self.slots.len() {
            if self.slots[idx].busy && self.slots[idx].issued.is_none() {
                self.issue(idx);
                if !self.is_connected() {
                    break;
                }
            }
        }
    }

    /// The server stayed away too long: fail everything that waits.
    fn expire(&mut self) {
        self.expired = true;
        tracing::warn!(
            "{}: NBD server unreachable for {:?}: failing {} operations with EIO ({})",
            self.export.uri,
            self.export.opts.reconnect_timeout,
            self.busy,
            self.last_error
        );
        for idx in 0..self.slots.len() {
            if self.slots[idx].busy {
                self.fail_unreachable(idx);
            }
        }
    }

    /// Register the socket with epoll for what libnbd waits for.
    fn watch(&mut self) {
        let want = match &self.conn {
            Conn::Up(h) | Conn::Connecting { h, .. } => h.fd().map(|fd| {
                let (r, w) = h.direction();
                let mut ev = EpollFlags::empty();
                if r || matches!(self.conn, Conn::Up(_)) {
                    ev |= EpollFlags::EPOLLIN;
                }
                if w {
                    ev |= EpollFlags::EPOLLOUT;
                }
                (fd, ev)
            }),
            Conn::Down { .. } => None,
        };
        if want == self.watched {
            return;
        }
        match (self.watched, want) {
            (Some((old, _)), Some((fd, ev))) if old == fd => {
                // SAFETY: the handle's socket, open while the handle lives;
                // epoll keeps no reference to the borrow.
                let bfd = unsafe { BorrowedFd::borrow_raw(fd) };
                let _ = self.epoll.modify(bfd, &mut EpollEvent::new(ev, EV_SOCKET));
            }
            (_, want) => {
                self.unwatch();
                if let Some((fd, ev)) = want {
                    // SAFETY: as above.
                    let bfd = unsafe { BorrowedFd::borrow_raw(fd) };
                    let _ = self.epoll.add(bfd, EpollEvent::new(ev, EV_SOCKET));
                }
            }
        }
        self.watched = want;
    }

    /// Take the socket out of epoll (before its handle is closed).
    fn unwatch(&mut self) {
        if let Some((fd, _)) = self.watched.take() {
            // SAFETY: called while the handle owning `fd` is still open (or the
            // descriptor is already gone and epoll_ctl fails harmlessly: it
            // was removed from epoll when it closed).
            let bfd = unsafe { BorrowedFd::borrow_raw(fd) };
            let _ = self.epoll.delete(bfd);
        }
    }

    /// Arm the timer for the next deadline of the connection state.
    fn arm_timer(&mut self, now: Instant) {
        let o = &self.export.opts;
        let expiry = if self.expired {
            None
        } else {
            self.down_since.map(|t| t + o.reconnect_timeout)
        };
        let want = match &self.conn {
            Conn::Down { next } => Some(expiry.map_or(*next, |e| e.min(*next))),
            Conn::Connecting { started, .. } => {
                let c = *started + o.connect_timeout;
                Some(expiry.map_or(c, |e| e.min(c)))
            }
            Conn::Up(_) if self.busy > 0 => o.io_timeout.map(|t| now + t / 2),
            Conn::Up(_) => None,
        };
        let Some(want) = want else { return };
        if self.timer_at.is_some_and(|at| at > now && at <= want) {
            return;
        }
        let left = want
            .saturating_duration_since(now)
            .max(Duration::from_millis(1));
        if self
            .timer
            .set(
                Expiration::OneShot(TimeSpec::from_duration(left)),
                TimerSetTimeFlags::empty(),
            )
            .is_ok()
        {
            self.timer_at = Some(want);
        }
    }

    /// Issue nothing new; send what libnbd has queued. Returns how many
    /// operations were issued since the last call (they went out at submission).
    ///
    /// # Errors
    ///
    /// None today: a dead connection is handled by reconnecting.
    pub fn flush_submissions(&mut self) -> Result<usize> {
        self.pump();
        Ok(std::mem::take(&mut self.issued_since_flush))
    }

    /// Append the operations that already finished to `out`, without waiting
    /// (reads the socket if it has replies; advances a reconnection).
    ///
    /// # Errors
    ///
    /// None today.
    pub fn reap_ready(&mut self, out: &mut Vec<Completion>) -> Result<()> {
        self.pump();
        out.extend(self.ready.drain(..));
        Ok(())
    }

    /// Append finished operations to `out`, waiting until at least `wait_for`
    /// were appended, or `timeout` passed (`None`: no limit, but never past
    /// the reconnection timeout: operations then fail), or nothing is in flight.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if waiting on epoll fails.
    pub fn complete(
        &mut self,
        out: &mut Vec<Completion>,
        wait_for: usize,
        timeout: Option<Duration>,
    ) -> Result<()> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let start = out.len();
        let mut events = [EpollEvent::empty(); 4];
        loop {
            self.rearm_completion_fd();
            self.pump();
            out.extend(self.ready.drain(..));
            if out.len() - start >= wait_for || self.busy == 0 {
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
            match self.epoll.wait(&mut events, EpollTimeout::from(ms)) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => {
                    return Err(Error::io(
                        format!("{}: epoll_wait", self.export.uri),
                        e.into(),
                    ));
                }
            }
        }
    }
}

/// A connected handle: read whatever replies are there (one `recv`, which
/// finds nothing or something: cheaper than a `poll` first), and send what
/// waits if the socket takes it.
fn service_up(h: &Handle) -> io::Result<()> {
    let (r, w) = h.direction();
    if r {
        h.notify_read()?;
    }
    if w && h.direction().1 {
        return service(h);
    }
    Ok(())
}

/// Poll the handle's socket without waiting and tell libnbd what it saw.
fn service(h: &Handle) -> io::Result<()> {
    let Some(fd) = h.fd() else {
        return Err(handle::last_error("no socket"));
    };
    let (r, w) = h.direction();
    let mut ev = PollFlags::empty();
    if r {
        ev |= PollFlags::POLLIN;
    }
    if w {
        ev |= PollFlags::POLLOUT;
    }
    if ev.is_empty() {
        return Ok(());
    }
    // SAFETY: the handle's socket, open for the call.
    let bfd = unsafe { BorrowedFd::borrow_raw(fd) };
    let mut fds = [PollFd::new(bfd, ev)];
    match poll(&mut fds, PollTimeout::ZERO) {
        Ok(0) | Err(nix::errno::Errno::EINTR) => return Ok(()),
        Ok(_) => {}
        Err(e) => return Err(e.into()),
    }
    h.service(fds[0].revents().unwrap_or(PollFlags::empty()))
}

impl Drop for NbdQueue {
    /// Close the connection: libnbd drops every command still in it (their
    /// memory is the slots', released after).
    fn drop(&mut self) {
        self.unwatch();
        self.conn = Conn::Down {
            next: Instant::now(),
        };
        self.sink.0.borrow_mut().clear();
    }
}

/// `"nbd://...: write of 4096 bytes at offset 8192"`, say.
fn describe(uri: &str, cmd: &Command, len: u64) -> String {
    match *cmd {
        Command::Read { offset, .. } => format!("{uri}: read of {len} bytes at offset {offset}"),
        Command::Write { offset, flags, .. } => format!(
            "{uri}: write{} of {len} bytes at offset {offset}",
            if flags & FLAG_FUA != 0 { " (FUA)" } else { "" }
        ),
        Command::Flush => format!("{uri}: flush"),
        Command::Trim { offset, len } => format!("{uri}: trim of {len} bytes at offset {offset}"),
        Command::Zero { offset, len, .. } => {
            format!("{uri}: write zeroes of {len} bytes at offset {offset}")
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn queue_is_send() {
        fn is_send<T: Send>() {}
        is_send::<super::NbdQueue>();
    }
}
