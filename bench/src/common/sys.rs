//! The few OS services the benchmarks need (today the ring benchmark), through
//! nix's safe wrappers: CPU affinity, memfd-backed shared files, eventfd
//! doorbells.

use crate::common::error::{BenchError, Result};
use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::memfd::{MFdFlags, memfd_create};
use nix::unistd::Pid;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::Duration;

/// Pin the calling thread to CPU `core`.
pub fn pin_to_core(core: usize) -> Result<()> {
    let mut set = CpuSet::new();
    set.set(core).map_err(|e| {
        BenchError::os(
            format!(
                "CPU {core} is beyond the {} CPUs a CPU set can name",
                CpuSet::count()
            ),
            e,
        )
    })?;
    sched_setaffinity(Pid::from_raw(0), &set).map_err(|e| {
        BenchError::os(
            format!(
                "pinning to CPU {core} (allowed here: {:?}; see `--cores`)",
                allowed_cpus().unwrap_or_default()
            ),
            e,
        )
    })
}

/// The CPUs the calling thread may run on.
pub fn allowed_cpus() -> Result<Vec<usize>> {
    let set =
        sched_getaffinity(Pid::from_raw(0)).map_err(|e| BenchError::os("sched_getaffinity", e))?;
    Ok((0..CpuSet::count())
        .filter(|&c| set.is_set(c).unwrap_or(false))
        .collect())
}

/// A fresh anonymous shared file (a memfd, close-on-exec) of `len` bytes.
pub fn shared_file(name: &str, len: u64) -> Result<File> {
    let fd =
        memfd_create(name, MFdFlags::MFD_CLOEXEC).map_err(|e| BenchError::os("memfd_create", e))?;
    let file = File::from(fd);
    file.set_len(len)
        .map_err(|e| BenchError::io(format!("sizing the shared file to {len} bytes"), e))?;
    Ok(file)
}

/// Let a child process inherit `file` across exec (clear `FD_CLOEXEC`), or stop it.
pub fn set_inheritable(file: &File, inheritable: bool) -> Result<()> {
    let flags = if inheritable {
        FdFlag::empty()
    } else {
        FdFlag::FD_CLOEXEC
    };
    fcntl(file, FcntlArg::F_SETFD(flags))
        .map(drop)
        .map_err(|e| BenchError::os(format!("fcntl(F_SETFD) on fd {}", file.as_raw_fd()), e))
}

/// Open a shared file inherited from the parent as descriptor `fd`
/// (through `/proc/self/fd`, which works for memfds and `/dev/shm` files).
pub fn open_inherited(fd: i32) -> Result<File> {
    let path = format!("/proc/self/fd/{fd}");
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| BenchError::io(format!("opening inherited descriptor {fd} ({path})"), e))
}

/// One direction of notification between the two sides: an eventfd, the local
/// stand-in for a Xen event channel (notifications coalesce in its counter).
#[derive(Debug)]
pub struct Doorbell {
    fd: OwnedFd,
}

impl Doorbell {
    /// A fresh eventfd, close-on-exec, counter zero.
    pub fn new() -> Result<Self> {
        let efd =
            EventFd::from_flags(EfdFlags::EFD_CLOEXEC).map_err(|e| BenchError::os("eventfd", e))?;
        Ok(Doorbell {
            fd: OwnedFd::from(efd),
        })
    }

    /// A doorbell over an eventfd this process already holds (e.g. a dup of stdin).
    pub fn from_fd(fd: OwnedFd) -> Self {
        Doorbell { fd }
    }

    /// A second descriptor for the same eventfd (to hand to a child process).
    pub fn try_clone_fd(&self) -> Result<OwnedFd> {
        self.fd
            .try_clone()
            .map_err(|e| BenchError::io("duplicating an eventfd", e))
    }

    /// Notify: add one to the counter, waking a waiter.
    #[inline]
    pub fn ring(&self) -> Result<()> {
        nix::unistd::write(&self.fd, &1u64.to_ne_bytes())
            .map(drop)
            .map_err(|e| BenchError::os("writing an eventfd doorbell", e))
    }

    /// Block until notified or `timeout` passes. `true` if notified (the counter is
    /// then consumed), `false` on timeout or signal.
    pub fn wait(&self, timeout: Duration) -> Result<bool> {
        let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
        let timeout = PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX);
        match poll(&mut fds, timeout) {
            Ok(0) | Err(nix::Error::EINTR) => Ok(false),
            Ok(_) => {
                let mut buf = [0u8; 8];
                nix::unistd::read(&self.fd, &mut buf)
                    .map_err(|e| BenchError::os("reading an eventfd doorbell", e))?;
                Ok(true)
            }
            Err(e) => Err(BenchError::os("poll on an eventfd doorbell", e)),
        }
    }
}

/// The two doorbells of an event-driven measurement.
#[derive(Debug)]
pub struct Bells {
    /// Rung by the frontend, waited on by the backend.
    pub to_back: Doorbell,
    /// Rung by the backend, waited on by the frontend.
    pub to_front: Doorbell,
}

impl Bells {
    /// Two fresh eventfds.
    pub fn new() -> Result<Self> {
        Ok(Bells {
            to_back: Doorbell::new()?,
            to_front: Doorbell::new()?,
        })
    }
}
