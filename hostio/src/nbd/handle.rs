//! A libnbd handle with safe methods, and the completion callback that posts
//! into the queue's [`Sink`].

use super::ffi;
use std::cell::RefCell;
use std::ffi::{CStr, CString, c_int, c_void};
use std::io;
use std::os::fd::RawFd;
use std::ptr::NonNull;

/// The calling thread's last libnbd error, as an `io::Error` (libnbd's errno,
/// EIO when it gave none) whose message starts with `what`.
pub(super) fn last_error(what: &str) -> io::Error {
    // SAFETY: both return the calling thread's last error; the string is
    // owned by libnbd, valid until the next libnbd call on this thread, and
    // copied at once.
    let (errno, msg) = unsafe {
        let e = ffi::nbd_get_errno();
        let m = ffi::nbd_get_error();
        let m = if m.is_null() {
            String::from("(no message)")
        } else {
            CStr::from_ptr(m).to_string_lossy().into_owned()
        };
        (e, m)
    };
    let errno = if errno == 0 { libc::EIO } else { errno };
    let kind = io::Error::from_raw_os_error(errno).kind();
    // libnbd's messages start with the function's name already.
    if msg.starts_with(what) {
        io::Error::new(kind, msg)
    } else {
        io::Error::new(kind, format!("{what}: {msg}"))
    }
}

/// One finished command, as libnbd reported it.
#[derive(Clone, Copy, Debug)]
pub(super) struct Done {
    pub slot: u32,
    pub generation: u64,
    pub errno: i32,
}

/// Where the completion callback posts. Owned by the queue in a `Box` (a
/// stable address) that outlives every handle it was given to.
#[derive(Debug, Default)]
pub(super) struct Sink(pub RefCell<Vec<Done>>);

struct CallbackData {
    sink: *const Sink,
    slot: u32,
    generation: u64,
}

unsafe extern "C" fn on_complete(user_data: *mut c_void, error: *mut c_int) -> c_int {
    // SAFETY: `user_data` is the `CallbackData` boxed by `callback`, freed only
    // by `on_free` after the last call to this function; its sink outlives the
    // handle (the queue closes its handle before dropping the sink). libnbd
    // calls this only inside a libnbd call the queue makes on its own thread,
    // while the queue holds no borrow of the sink. `error` points at libnbd's
    // int for this command.
    unsafe {
        let d = &*(user_data as *const CallbackData);
        let errno = if error.is_null() { libc::EIO } else { *error };
        if let Ok(mut v) = (*d.sink).0.try_borrow_mut() {
            v.push(Done {
                slot: d.slot,
                generation: d.generation,
                errno,
            });
        }
    }
    // 1: libnbd retires the command itself.
    1
}

unsafe extern "C" fn on_free(user_data: *mut c_void) {
    // SAFETY: libnbd calls the free function exactly once per callback
    // structure, after its last use; the pointer came from `Box::into_raw`.
    drop(unsafe { Box::from_raw(user_data as *mut CallbackData) });
}

/// The callback structure for command `slot` of connection `generation`.
pub(super) fn callback(sink: &Sink, slot: u32, generation: u64) -> ffi::nbd_completion_callback {
    let d = Box::new(CallbackData {
        sink,
        slot,
        generation,
    });
    ffi::nbd_completion_callback {
        callback: Some(on_complete),
        user_data: Box::into_raw(d).cast(),
        free: Some(on_free),
    }
}

/// An `nbd_handle`, closed when dropped (which releases every buffer and
/// callback of the commands still in it: libnbd runs no thread of its own).
pub(super) struct Handle(NonNull<ffi::nbd_handle>);

// SAFETY: libnbd handles may be used from any thread (each call takes the
// handle's lock); the queue uses one from one thread at a time.
unsafe impl Send for Handle {}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "nbd_handle({:p})", self.0)
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: the handle is valid and closed exactly once, here.
        unsafe { ffi::nbd_close(self.0.as_ptr()) }
    }
}

/// `rc` of a libnbd call returning -1 on error.
fn check(rc: c_int, what: &str) -> io::Result<c_int> {
    if rc < 0 {
        Err(last_error(what))
    } else {
        Ok(rc)
    }
}

impl Handle {
    /// `nbd_create`, with `pread_initialize` off (the reply fills the buffer).
    pub fn new() -> io::Result<Handle> {
        // SAFETY: no arguments; returns NULL on error.
        let h =
            NonNull::new(unsafe { ffi::nbd_create() }).ok_or_else(|| last_error("nbd_create"))?;
        let h = Handle(h);
        // SAFETY: a valid handle.
        unsafe { ffi::nbd_set_pread_initialize(h.ptr(), false) };
        Ok(h)
    }

    fn ptr(&self) -> *mut ffi::nbd_handle {
        self.0.as_ptr()
    }

    /// `nbd_supports_uri`: libnbd was built with URI support.
    pub fn supports_uri(&self) -> bool {
        // SAFETY: a valid handle.
        unsafe { ffi::nbd_supports_uri(self.ptr()) == 1 }
    }

    /// `nbd_aio_connect_uri`: start connecting (non-blocking).
    pub fn aio_connect_uri(&self, uri: &CString) -> io::Result<()> {
        // SAFETY: a valid handle and a NUL-terminated string alive for the call
        // (libnbd copies what it keeps).
        check(
            unsafe { ffi::nbd_aio_connect_uri(self.ptr(), uri.as_ptr()) },
            "nbd_aio_connect_uri",
        )
        .map(drop)
    }

    /// The socket, once there is one.
    pub fn fd(&self) -> Option<RawFd> {
        // SAFETY: a valid handle.
        let fd = unsafe { ffi::nbd_aio_get_fd(self.ptr()) };
        (fd >= 0).then_some(fd)
    }

    /// Whether libnbd waits to read (`.0`) and to write (`.1`).
    pub fn direction(&self) -> (bool, bool) {
        // SAFETY: a valid handle.
        let d = unsafe { ffi::nbd_aio_get_direction(self.ptr()) };
        (
            d & ffi::LIBNBD_AIO_DIRECTION_READ != 0,
            d & ffi::LIBNBD_AIO_DIRECTION_WRITE != 0,
        )
    }

    /// `nbd_aio_notify_read`: the socket is readable (completion callbacks run
    /// inside).
    pub fn notify_read(&self) -> io::Result<()> {
        // SAFETY: a valid handle.
        check(
            unsafe { ffi::nbd_aio_notify_read(self.ptr()) },
            "nbd_aio_notify_read",
        )
        .map(drop)
    }

    /// `nbd_aio_notify_write`: the socket is writable.
    pub fn notify_write(&self) -> io::Result<()> {
        // SAFETY: a valid handle.
        check(
            unsafe { ffi::nbd_aio_notify_write(self.ptr()) },
            "nbd_aio_notify_write",
        )
        .map(drop)
    }

    /// Tell libnbd what `poll` saw on its socket (`revents`), for the direction
    /// it waits in. A hang-up or an error is reported to whichever direction it
    /// waits for, so libnbd notices the dead connection.
    pub fn service(&self, revents: nix::poll::PollFlags) -> io::Result<()> {
        use nix::poll::PollFlags as P;
        let (r, w) = self.direction();
        let bad = revents.intersects(P::POLLHUP | P::POLLERR);
        if r && (bad || revents.contains(P::POLLIN)) {
            self.notify_read()?;
        }
        let (_, w_now) = self.direction();
        if w && w_now && (bad || revents.contains(P::POLLOUT)) {
            self.notify_write()?;
        }
        Ok(())
    }

    /// `nbd_aio_is_ready || nbd_aio_is_processing`: commands can be issued.
    pub fn is_up(&self) -> bool {
        // SAFETY: a valid handle.
        unsafe {
            ffi::nbd_aio_is_ready(self.ptr()) == 1 || ffi::nbd_aio_is_processing(self.ptr()) == 1
        }
    }

    /// `nbd_aio_is_connecting`.
    pub fn is_connecting(&self) -> bool {
        // SAFETY: a valid handle.
        unsafe { ffi::nbd_aio_is_connecting(self.ptr()) == 1 }
    }

    /// `nbd_aio_is_dead || nbd_aio_is_closed`: the connection is gone.
    pub fn is_gone(&self) -> bool {
        // SAFETY: a valid handle.
        unsafe { ffi::nbd_aio_is_dead(self.ptr()) == 1 || ffi::nbd_aio_is_closed(self.ptr()) == 1 }
    }

    /// `nbd_get_size`.
    pub fn size(&self) -> io::Result<u64> {
        // SAFETY: a valid handle.
        let s = unsafe { ffi::nbd_get_size(self.ptr()) };
        u64::try_from(s).map_err(|_| last_error("nbd_get_size"))
    }

    /// `nbd_get_block_size(LIBNBD_SIZE_MINIMUM)` (0 when the server gave none).
    pub fn min_block_size(&self) -> u64 {
        // SAFETY: a valid handle.
        let s = unsafe { ffi::nbd_get_block_size(self.ptr(), ffi::LIBNBD_SIZE_MINIMUM) };
        u64::try_from(s).unwrap_or(0)
    }

    /// The flags of the export: (read-only, flush, fua, trim, zero, multi-conn).
    pub fn flags(&self) -> io::Result<[bool; 6]> {
        let p = self.ptr();
        let f = |rc: c_int, what| check(rc, what).map(|v| v == 1);
        // SAFETY: a valid, connected handle.
        let read_only = unsafe { ffi::nbd_is_read_only(p) };
        // SAFETY: as above.
        let flush = unsafe { ffi::nbd_can_flush(p) };
        // SAFETY: as above.
        let fua = unsafe { ffi::nbd_can_fua(p) };
        // SAFETY: as above.
        let trim = unsafe { ffi::nbd_can_trim(p) };
        // SAFETY: as above.
        let zero = unsafe { ffi::nbd_can_zero(p) };
        // SAFETY: as above.
        let multi_conn = unsafe { ffi::nbd_can_multi_conn(p) };
        Ok([
            f(read_only, "nbd_is_read_only")?,
            f(flush, "nbd_can_flush")?,
            f(fua, "nbd_can_fua")?,
            f(trim, "nbd_can_trim")?,
            f(zero, "nbd_can_zero")?,
            f(multi_conn, "nbd_can_multi_conn")?,
        ])
    }

    /// Issue a command; returns libnbd's cookie.
    ///
    /// # Safety
    /// For a read, `buf` must be valid for writes of `len` bytes, for a write
    /// valid for reads, until the command's completion callback has run or the
    /// handle is dropped, and not accessed through Rust references meanwhile.
    pub unsafe fn issue(
        &self,
        cmd: Command,
        buf: *mut u8,
        cb: ffi::nbd_completion_callback,
    ) -> io::Result<u64> {
        let p = self.ptr();
        // SAFETY: a valid handle; the caller keeps `buf` valid as required. On
        // failure libnbd still calls the callback's free function.
        let rc = unsafe {
            match cmd {
                Command::Read { offset, len } => {
                    ffi::nbd_aio_pread(p, buf.cast(), len as usize, offset, cb, 0)
                }
                Command::Write { offset, len, flags } => {
                    ffi::nbd_aio_pwrite(p, buf.cast_const().cast(), len as usize, offset, cb, flags)
                }
                Command::Flush => ffi::nbd_aio_flush(p, cb, 0),
                Command::Trim { offset, len } => ffi::nbd_aio_trim(p, len, offset, cb, 0),
                Command::Zero { offset, len, flags } => {
                    ffi::nbd_aio_zero(p, len, offset, cb, flags)
                }
            }
        };
        u64::try_from(rc).map_err(|_| last_error(cmd.name()))
    }
}

/// An NBD command as libnbd issues it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Command {
    Read { offset: u64, len: u64 },
    Write { offset: u64, len: u64, flags: u32 },
    Flush,
    Trim { offset: u64, len: u64 },
    Zero { offset: u64, len: u64, flags: u32 },
}

impl Command {
    pub fn name(&self) -> &'static str {
        match self {
            Command::Read { .. } => "NBD_CMD_READ",
            Command::Write { .. } => "NBD_CMD_WRITE",
            Command::Flush => "NBD_CMD_FLUSH",
            Command::Trim { .. } => "NBD_CMD_TRIM",
            Command::Zero { .. } => "NBD_CMD_WRITE_ZEROES",
        }
    }
}

/// `LIBNBD_CMD_FLAG_FUA`.
pub(super) const FLAG_FUA: u32 = ffi::LIBNBD_CMD_FLAG_FUA;
/// `LIBNBD_CMD_FLAG_NO_HOLE`.
pub(super) const FLAG_NO_HOLE: u32 = ffi::LIBNBD_CMD_FLAG_NO_HOLE;

/// Connect to `uri` and finish the handshake, giving up after `timeout`.
pub(super) fn connect(uri: &CString, timeout: std::time::Duration) -> io::Result<Handle> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::BorrowedFd;
    use std::time::Instant;
    let h = Handle::new()?;
    if !h.supports_uri() {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "this libnbd was built without URI support",
        ));
    }
    let deadline = Instant::now() + timeout;
    h.aio_connect_uri(uri)?;
    loop {
        if h.is_up() {
            return Ok(h);
        }
        if h.is_gone() || !h.is_connecting() {
            return Err(last_error("connecting"));
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no NBD handshake within {timeout:?}"),
            ));
        }
        let Some(fd) = h.fd() else {
            return Err(last_error("connecting (no socket)"));
        };
        let (r, w) = h.direction();
        let mut ev = PollFlags::empty();
        if r {
            ev |= PollFlags::POLLIN;
        }
        if w {
            ev |= PollFlags::POLLOUT;
        }
        // SAFETY: the socket belongs to the handle, open for this loop turn.
        let bfd = unsafe { BorrowedFd::borrow_raw(fd) };
        let ms = (deadline - now).as_millis().clamp(1, 1000) as u16;
        let mut fds = [PollFd::new(bfd, ev)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(io::Error::from(e)),
        }
        h.service(fds[0].revents().unwrap_or(PollFlags::empty()))?;
    }
}
