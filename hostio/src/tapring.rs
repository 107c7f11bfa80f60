//! Batched TAP I/O: many packets per system call through io_uring.
//!
//! A TAP queue read or written one packet per `readv`/`writev` pays one
//! system-call crossing per packet; on a paravirtualised dom0 every crossing
//! goes through Xen and is expensive. [`TapReader`] keeps reads armed on the
//! TAP (`IORING_OP_READV` into [`PacketBuf`]s and their virtio-net headers)
//! and collects whatever completed with one `io_uring_enter` per batch;
//! [`TapWriter`] submits a batch of packets as `IORING_OP_WRITEV`s with one
//! `io_uring_enter` and waits for all of them. Only Linux 6.1 features are
//! used: `SINGLE_ISSUER | DEFER_TASKRUN` (6.1) when the kernel has them, else
//! `COOP_TASKRUN` (5.19), else a plain ring; the TAP is a registered file when
//! the kernel allows it.
//!
//! Where io_uring is unavailable (an old kernel, the `io_uring_disabled`
//! sysctl, a seccomp filter) or refused with [`TapIo::Plain`], both fall back
//! to one `readv`/`writev` per packet ([`Tap::read_packet`],
//! [`Tap::write_packet`]), with the same results.
//!
//! A TAP (`O_NONBLOCK`) read with no packet waiting is armed by io_uring on
//! the device's wait queue and completes when a packet comes, so a read stays
//! in flight across batches: its header and buffer belong to the reader until
//! its completion (on drop they are cancelled first, or leaked if that fails).
//! Completions are taken in the order they came, which is the order the
//! packets left the TAP.

use crate::error::{Error, Result};
use crate::tap::{Tap, VNET_HDR_LEN, VirtioNetHdr};
use io_uring::{IoUring, opcode, types};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::Arc;

/// Bytes of one [`PacketBuf`]: the largest packet a TAP gives with offloads
/// (64 KiB of IP and an Ethernet header, with room to spare).
pub const PACKET_BUF: usize = 65_550;

/// Page size the buffers are aligned to.
const PAGE: usize = 4096;

/// [`PACKET_BUF`] bytes starting on a page boundary, inside a heap allocation
/// one page larger (found with `align_offset`). Never grows or moves once
/// made, so a read in flight may point into it.
pub struct PacketBuf {
    mem: Vec<u8>,
    start: usize,
}

impl PacketBuf {
    /// A zeroed buffer.
    pub fn new() -> Self {
        let mem = vec![0u8; PACKET_BUF + PAGE];
        // (align_offset may answer usize::MAX when it cannot tell: then the
        // window starts at 0, unaligned, which only costs grant-copy ops.)
        let start = match mem.as_ptr().align_offset(PAGE) {
            n if n < PAGE => n,
            _ => 0,
        };
        PacketBuf { mem, start }
    }

    /// The packet's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.mem[self.start..self.start + PACKET_BUF]
    }

    /// The packet's bytes, to read into.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.mem[self.start..self.start + PACKET_BUF]
    }
}

impl Default for PacketBuf {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for PacketBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PacketBuf")
    }
}

/// How a [`TapReader`] or [`TapWriter`] reaches the TAP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TapIo {
    /// io_uring when the kernel offers it, else one system call per packet.
    Batched,
    /// One `readv`/`writev` per packet.
    Plain,
}

impl TapIo {
    /// [`TapIo::Plain`] if the environment variable `XENIO_TAP_IO` is
    /// `plain`, else [`TapIo::Batched`].
    pub fn from_env() -> TapIo {
        match std::env::var("XENIO_TAP_IO") {
            Ok(v) if v.eq_ignore_ascii_case("plain") => TapIo::Plain,
            _ => TapIo::Batched,
        }
    }
}

/// A ring for one TAP: set up on first use, by the thread that uses it
/// (`SINGLE_ISSUER` ties a ring to its creator).
struct Ring {
    ring: IoUring,
    /// The TAP is registered file 0.
    fixed: bool,
    /// What was set up, for messages.
    mode: &'static str,
}

impl Ring {
    fn setup(tap: &Tap, depth: u32) -> io::Result<Ring> {
        // Deferred task running (6.1): completions are run only when this
        // thread enters the ring, never interrupting it; then cooperative
        // task running (5.19); then a plain ring. The TASKRUN flag tells when
        // an enter is due.
        let (ring, mode) = match IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_taskrun_flag()
            .build(depth)
        {
            Ok(r) => (r, "io_uring, deferred task running"),
            Err(_) => match IoUring::builder()
                .setup_coop_taskrun()
                .setup_taskrun_flag()
                .build(depth)
            {
                Ok(r) => (r, "io_uring, cooperative task running"),
                Err(_) => (IoUring::new(depth)?, "io_uring"),
            },
        };
        let mut probe = io_uring::Probe::new();
        if ring.submitter().register_probe(&mut probe).is_ok()
            && !(probe.is_supported(opcode::Readv::CODE)
                && probe.is_supported(opcode::Writev::CODE))
        {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "io_uring lacks READV/WRITEV",
            ));
        }
        let fixed = ring
            .submitter()
            .register_files(&[tap.as_fd().as_raw_fd()])
            .is_ok();
        Ok(Ring { ring, fixed, mode })
    }

    /// Submit what is queued and run deferred completions, when there is
    /// anything to submit, the kernel asks for an enter (the TASKRUN flag),
    /// `want` completions are to be waited for, or `poke` says reads are
    /// armed (Linux 6.1 does not set the TASKRUN flag for a
    /// `DEFER_TASKRUN` ring's deferred completions: without an enter they
    /// would wait, the packets with them, while the TAP polls readable).
    fn enter(&mut self, want: usize, poke: bool) -> io::Result<()> {
        let mut sq = self.ring.submission();
        sq.sync();
        let pending = sq.len();
        let due = pending > 0 || sq.taskrun() || want > 0 || poke;
        drop(sq);
        if !due {
            return Ok(());
        }
        loop {
            // SAFETY: no argument pointer is passed; the entries submitted
            // were pushed under their pushers' own SAFETY arguments.
            let r = unsafe {
                self.ring.submitter().enter::<libc::sigset_t>(
                    pending as u32,
                    want as u32,
                    IORING_ENTER_GETEVENTS,
                    None,
                )
            };
            match r {
                Ok(_) => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                // A full completion queue: the caller reaps, then enters again.
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }
}

/// `IORING_ENTER_GETEVENTS` (`linux/io_uring.h`): wait for (and run the
/// deferred work of) completions.
const IORING_ENTER_GETEVENTS: u32 = 1;

enum RingState {
    Untried,
    Ready(Box<Ring>),
    Unavailable,
}

/// Set up `state`'s ring on first use; `None` if there is none.
fn ring_of<'a>(state: &'a mut RingState, tap: &Tap, depth: u32, io: TapIo) -> Option<&'a mut Ring> {
    if matches!(state, RingState::Untried) {
        *state = if io == TapIo::Plain {
            RingState::Unavailable
        } else {
            match Ring::setup(tap, depth) {
                Ok(r) => {
                    tracing::debug!("{}: batched I/O through {}", tap.name(), r.mode);
                    RingState::Ready(Box::new(r))
                }
                Err(e) => {
                    tracing::info!(
                        "{}: io_uring unavailable ({e}): one system call per packet",
                        tap.name()
                    );
                    RingState::Unavailable
                }
            }
        };
    }
    match state {
        RingState::Ready(r) => Some(r.as_mut()),
        _ => None,
    }
}

/// One armed read: its header, its iovec and its buffer stay put while the
/// kernel may write them.
struct Slot {
    hdr: Box<[u8; VNET_HDR_LEN]>,
    iov: Box<[libc::iovec; 2]>,
    buf: Option<PacketBuf>,
    busy: bool,
}

/// Reads packets (with their virtio-net headers) from a TAP queue opened with
/// `vnet_hdr`, many per system call. See the module's description.
pub struct TapReader {
    tap: Arc<Tap>,
    io: TapIo,
    state: RingState,
    slots: Vec<Slot>,
    in_flight: usize,
    /// The buffer of the plain path, kept between calls.
    plain: Option<PacketBuf>,
    truncated: u64,
    /// Packets the last call handed over.
    last_got: usize,
}

// SAFETY: the raw pointers in `slots` (the iovecs) point only into memory the
// reader owns (the boxed headers and the slots' buffers); nothing is shared
// with another thread, and moving the reader moves no pointee.
unsafe impl Send for TapReader {}

impl TapReader {
    /// A reader for `tap` keeping up to `depth` (1 to 256) reads armed.
    pub fn new(tap: Arc<Tap>, depth: usize, io: TapIo) -> TapReader {
        let depth = depth.clamp(1, 256);
        let slots = (0..depth)
            .map(|_| Slot {
                hdr: Box::new([0; VNET_HDR_LEN]),
                iov: Box::new(
                    [libc::iovec {
                        iov_base: std::ptr::null_mut(),
                        iov_len: 0,
                    }; 2],
                ),
                buf: None,
                busy: false,
            })
            .collect();
        TapReader {
            tap,
            io,
            state: RingState::Untried,
            slots,
            in_flight: 0,
            plain: None,
            truncated: 0,
            last_got: 0,
        }
    }

    /// How the TAP is read: `None` until the first read, then a description
    /// of the ring or of the plain path.
    pub fn mode(&self) -> Option<&'static str> {
        match &self.state {
            RingState::Untried => None,
            RingState::Ready(r) => Some(r.mode),
            RingState::Unavailable => Some("readv per packet"),
        }
    }

    /// Packets dropped because they did not fit a buffer (never for a TAP
    /// with the offloads netback asks for).
    pub fn truncated(&self) -> u64 {
        self.truncated
    }

    /// The ring's descriptor, which polls readable while completed reads
    /// wait; `None` on the plain path (poll the TAP itself).
    pub fn completion_fd(&self) -> Option<BorrowedFd<'_>> {
        match &self.state {
            RingState::Ready(r) => Some(r.ring.as_fd()),
            _ => None,
        }
    }

    /// Keep `want` reads (at least one) armed, then hand every packet read
    /// since the last call to `f`, in the order they left the TAP, until `f`
    /// answers `false` (the others wait for the next call). A filled buffer
    /// goes to `f`; an empty one from `spare` takes its place. Returns the
    /// packets handed over.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when a read fails (or gives less than a header) or the
    /// ring fails.
    pub fn read_batch(
        &mut self,
        want: usize,
        spare: &mut dyn FnMut() -> PacketBuf,
        f: &mut dyn FnMut(PacketBuf, VirtioNetHdr, usize) -> bool,
    ) -> Result<usize> {
        let depth = self.slots.len() as u32;
        let Some(ring) = ring_of(&mut self.state, &self.tap, depth * 2, self.io) else {
            return self.read_plain(want, spare, f);
        };
        let name = self.tap.name();
        let err = |what: &str, e: io::Error| Error::io(format!("{what} {name}"), e);
        // Arm reads up to `want`, but at most twice what the last call got
        // (at least one): a read submitted while packets wait completes at
        // once, but one that finds the TAP empty waits on its wait queue, and
        // every packet then wakes every waiting read (each tries, all but
        // one re-arm): in the lab, 32 reads armed for the ACKs of a
        // frontend's upload cost more than the system calls they saved.
        let target = want
            .clamp(1, self.slots.len())
            .min((2 * self.last_got).max(1));
        for (i, s) in self.slots.iter_mut().enumerate() {
            if self.in_flight >= target {
                break;
            }
            if s.busy {
                continue;
            }
            let buf = s.buf.get_or_insert_with(&mut *spare);
            s.iov[0] = libc::iovec {
                iov_base: s.hdr.as_mut_ptr().cast(),
                iov_len: VNET_HDR_LEN,
            };
            let b = buf.bytes_mut();
            s.iov[1] = libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: b.len(),
            };
            let entry = if ring.fixed {
                opcode::Readv::new(types::Fixed(0), s.iov.as_ptr(), 2)
            } else {
                opcode::Readv::new(types::Fd(self.tap.as_fd().as_raw_fd()), s.iov.as_ptr(), 2)
            }
            .build()
            .user_data(i as u64);
            // SAFETY: the iovecs, the header and the buffer they describe
            // belong to this slot, which is marked busy: none of them is
            // touched, moved or freed until its completion has been reaped
            // below (or cancelled on drop); the boxes and the buffer's heap
            // memory do not move when the slot does.
            if unsafe { ring.ring.submission().push(&entry) }.is_err() {
                break;
            }
            s.busy = true;
            self.in_flight += 1;
        }
        ring.enter(0, self.in_flight > 0)
            .map_err(|e| err("reading from", e))?;
        let mut got = 0;
        let mut failed = None;
        let mut cq = ring.ring.completion();
        cq.sync();
        for cqe in &mut cq {
            let Some(s) = self.slots.get_mut(cqe.user_data() as usize) else {
                continue; // a cancellation's own completion
            };
            s.busy = false;
            self.in_flight -= 1;
            let res = cqe.result();
            if res < 0 {
                match -res {
                    libc::EAGAIN | libc::EINTR | libc::ECANCELED => continue,
                    e => {
                        failed = Some(io::Error::from_raw_os_error(e));
                        break;
                    }
                }
            }
            let n = res as usize;
            if n < VNET_HDR_LEN {
                failed = Some(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{n} bytes, less than a virtio-net header"),
                ));
                break;
            }
            if n >= VNET_HDR_LEN + PACKET_BUF {
                // The kernel truncated it silently: drop it (the buffer stays).
                self.truncated += 1;
                continue;
            }
            let buf = s.buf.take().expect("an armed slot has its buffer");
            got += 1;
            if !f(buf, VirtioNetHdr::from_bytes(&s.hdr), n - VNET_HDR_LEN) {
                break;
            }
        }
        drop(cq);
        self.last_got = got;
        match failed {
            Some(e) => Err(err("reading from", e)),
            None => Ok(got),
        }
    }

    /// The plain path: up to `want` (at least one) `readv`s.
    fn read_plain(
        &mut self,
        want: usize,
        spare: &mut dyn FnMut() -> PacketBuf,
        f: &mut dyn FnMut(PacketBuf, VirtioNetHdr, usize) -> bool,
    ) -> Result<usize> {
        let mut got = 0;
        for _ in 0..want.max(1) {
            let mut buf = self.plain.take().unwrap_or_else(&mut *spare);
            let Some((h, n)) = self.tap.read_packet(buf.bytes_mut())? else {
                self.plain = Some(buf);
                break;
            };
            if n >= PACKET_BUF {
                self.truncated += 1;
                self.plain = Some(buf);
                continue;
            }
            got += 1;
            if !f(buf, h, n) {
                break;
            }
        }
        Ok(got)
    }
}

impl Drop for TapReader {
    fn drop(&mut self) {
        if self.in_flight == 0 {
            return;
        }
        let RingState::Ready(ring) = &mut self.state else {
            return;
        };
        // Cancel the armed reads and wait for their completions before their
        // buffers go; if that cannot be done, leak the buffers instead.
        let mut done = false;
        for (i, s) in self.slots.iter().enumerate() {
            if s.busy {
                let c = opcode::AsyncCancel::new(i as u64)
                    .build()
                    .user_data(u64::MAX);
                // SAFETY: a cancellation points at no memory.
                let _ = unsafe { ring.ring.submission().push(&c) };
            }
        }
        for _ in 0..1000 {
            if ring.enter(1, true).is_err() {
                break;
            }
            for cqe in ring.ring.completion() {
                if let Some(s) = self.slots.get_mut(cqe.user_data() as usize) {
                    if s.busy {
                        s.busy = false;
                        self.in_flight -= 1;
                    }
                }
            }
            if self.in_flight == 0 {
                done = true;
                break;
            }
        }
        if !done {
            std::mem::forget(std::mem::take(&mut self.slots));
        }
    }
}

/// Writes packets with their virtio-net headers to a TAP queue opened with
/// `vnet_hdr`, a batch per system call. See the module's description.
pub struct TapWriter {
    tap: Arc<Tap>,
    io: TapIo,
    state: RingState,
    hdrs: Vec<[u8; VNET_HDR_LEN]>,
    iovs: Vec<[libc::iovec; 2]>,
}

// SAFETY: the iovecs point at memory only while `write_batch` runs (they are
// rebuilt on every call and waited for before it returns).
unsafe impl Send for TapWriter {}

/// Packets per submission (and half the ring).
const WRITE_BATCH: usize = 64;

impl TapWriter {
    /// A writer for `tap`.
    pub fn new(tap: Arc<Tap>, io: TapIo) -> TapWriter {
        TapWriter {
            tap,
            io,
            state: RingState::Untried,
            hdrs: Vec::with_capacity(WRITE_BATCH),
            iovs: Vec::with_capacity(WRITE_BATCH),
        }
    }

    /// How the TAP is written (as [`TapReader::mode`]).
    pub fn mode(&self) -> Option<&'static str> {
        match &self.state {
            RingState::Untried => None,
            RingState::Ready(r) => Some(r.mode),
            RingState::Unavailable => Some("writev per packet"),
        }
    }

    /// Write every packet of `packets`, in order, pushing one result each to
    /// `out`, as [`Tap::write_packet`] answers: `Ok(true)` written,
    /// `Ok(false)` the device could not take it now and it was dropped,
    /// `Err` that packet failed (`EINVAL`: the kernel refused its header).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the ring fails (the packets not yet answered in
    /// `out` were not written).
    pub fn write_batch(
        &mut self,
        packets: &[(VirtioNetHdr, &[u8])],
        out: &mut Vec<Result<bool>>,
    ) -> Result<()> {
        let Some(ring) = ring_of(&mut self.state, &self.tap, 2 * WRITE_BATCH as u32, self.io)
        else {
            for (h, frame) in packets {
                out.push(self.tap.write_packet(h, frame));
            }
            return Ok(());
        };
        let name = self.tap.name();
        for chunk in packets.chunks(WRITE_BATCH) {
            let base = out.len();
            self.hdrs.clear();
            self.iovs.clear();
            self.hdrs.extend(chunk.iter().map(|(h, _)| h.to_bytes()));
            // (No reallocation below: both hold WRITE_BATCH entries.)
            for (h, (_, frame)) in self.hdrs.iter().zip(chunk) {
                self.iovs.push([
                    libc::iovec {
                        iov_base: h.as_ptr() as *mut libc::c_void,
                        iov_len: VNET_HDR_LEN,
                    },
                    libc::iovec {
                        iov_base: frame.as_ptr() as *mut libc::c_void,
                        iov_len: frame.len(),
                    },
                ]);
                out.push(Ok(false));
            }
            for (i, iov) in self.iovs.iter().enumerate() {
                let entry = if ring.fixed {
                    opcode::Writev::new(types::Fixed(0), iov.as_ptr(), 2)
                } else {
                    opcode::Writev::new(types::Fd(self.tap.as_fd().as_raw_fd()), iov.as_ptr(), 2)
                }
                .build()
                .user_data(i as u64);
                // SAFETY: the iovecs (in `self.iovs`), the headers (in
                // `self.hdrs`) and the frames (borrowed from the caller for
                // this call) are neither changed nor freed until every
                // completion of this chunk has been reaped below; the ring
                // holds twice a chunk, so the push cannot fail.
                if unsafe { ring.ring.submission().push(&entry) }.is_err() {
                    return Err(Error::io(
                        format!("writing to {name}"),
                        io::Error::other("io_uring submission queue full"),
                    ));
                }
            }
            let mut left = chunk.len();
            let mut tries = 0;
            let mut broken = None;
            while left > 0 {
                if let Err(e) = ring.enter(left, false) {
                    tries += 1;
                    if tries < 100 {
                        continue;
                    }
                    broken = Some(e);
                    break;
                }
                for cqe in ring.ring.completion() {
                    let i = cqe.user_data() as usize;
                    let res = cqe.result();
                    out[base + i] = match res {
                        r if r >= 0 => Ok(true),
                        r if -r == libc::EAGAIN || -r == libc::EIO || -r == libc::ENOBUFS => {
                            Ok(false)
                        }
                        r => Err(Error::io(
                            format!("writing {} bytes to {name}", chunk[i].1.len()),
                            io::Error::from_raw_os_error(-r),
                        )),
                    };
                    left -= 1;
                }
            }
            if let Some(e) = broken {
                // The kernel will not take the ring any more: stop using it.
                // What may still be in flight only reads memory (a frame
                // could at worst go out garbled), so the caller's frames may
                // go; the headers and iovecs are leaked.
                std::mem::forget(std::mem::take(&mut self.iovs));
                std::mem::forget(std::mem::take(&mut self.hdrs));
                self.state = RingState::Unavailable;
                out.truncate(base);
                return Err(Error::io(format!("writing to {name}"), e));
            }
        }
        Ok(())
    }
}
