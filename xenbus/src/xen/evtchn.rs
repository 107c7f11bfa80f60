//! Event channels over `/dev/xen/evtchn`.
//!
//! The kernel's side, for reference (Linux `drivers/xen/evtchn.c`): a port bound
//! through a descriptor starts unmasked; when it fires the kernel masks it and
//! queues the port number in the descriptor's ring, which makes the descriptor
//! readable. `read()` returns the queued ports as `u32`s, `write()` of a port
//! unmasks it. While masked, further sends only set the port's pending bit in Xen,
//! and unmasking a pending port fires it again: notifications coalesce, and none
//! sent between the read and the unmask is lost. Closing the descriptor unbinds
//! its ports.
//!
//! Each [`XenEventChannel`] opens the device for itself (one port per
//! descriptor, like one libxenevtchn handle per port), so its descriptor is a
//! precise readiness source and its ring holds at most one entry.

use super::device::{EVTCHN_PATH, errno_text, open_device};
use crate::error::{Error, Result};
use crate::evtchn::{EventChannel, EventChannels};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, ppoll};
use nix::sys::time::TimeSpec;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use xenio_xen_sys::ioctl::evtchn::*;
use xenio_xen_sys::{DomId, Port};

const MODULE: &str = "xen-evtchn";

/// Event channels over `/dev/xen/evtchn` ([`EventChannels`]).
#[derive(Clone, Debug)]
pub struct EvtchnDevice {
    path: Arc<Path>,
}

impl EvtchnDevice {
    /// Use `/dev/xen/evtchn`. Fails with [`Error::Unavailable`] (saying how to
    /// fix it) when the device is missing.
    pub fn open() -> Result<Self> {
        Self::open_path(EVTCHN_PATH)
    }

    /// Use the event channel device at `path` (a non-standard device node).
    pub fn open_path(path: impl Into<PathBuf>) -> Result<Self> {
        let path: Arc<Path> = path.into().into();
        // Open once now, so a missing device or driver is reported here rather than
        // at the first bind.
        drop(open_device(&path, MODULE, true)?);
        Ok(EvtchnDevice { path })
    }

    /// The device path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn bind(&self, what: String, bind: impl FnOnce(&File) -> nix::Result<i32>) -> Result<Chan> {
        let file = open_device(&self.path, MODULE, true)?;
        let fail = |reason: String| Error::EventChannel {
            port: Port(0),
            reason: format!("{what} on {}: {reason}", self.path.display()),
        };
        let port = bind(&file).map_err(|e| fail(bind_hint(e)))?;
        let port =
            u32::try_from(port).map_err(|_| fail(format!("the kernel returned port {port}")))?;
        Ok(Chan {
            file,
            port: Port(port),
        })
    }
}

struct Chan {
    file: File,
    port: Port,
}

fn bind_hint(e: Errno) -> String {
    let hint = match e {
        Errno::EINVAL => {
            ": the remote port is not an unbound port reserved for this domain, or is out of range"
        }
        Errno::ESRCH => ": no such domain",
        Errno::EPERM | Errno::EACCES => {
            ": not permitted (XSM policy, or the handle is restricted to another domain)"
        }
        Errno::ENOSPC | Errno::EMFILE | Errno::EBUSY => ": this domain has no free port",
        _ => "",
    };
    format!("{}{hint}", errno_text(e))
}

impl EventChannels for EvtchnDevice {
    type Channel = XenEventChannel;

    /// `IOCTL_EVTCHN_BIND_UNBOUND_PORT`: a new port that `remote` may bind to.
    fn alloc_unbound(&self, remote: DomId) -> Result<XenEventChannel> {
        let arg = IoctlEvtchnBindUnboundPort {
            remote_domain: u32::from(remote.0),
        };
        let c = self.bind(
            format!("IOCTL_EVTCHN_BIND_UNBOUND_PORT for domain {remote}"),
            |f| {
                // SAFETY: `arg` is a valid `ioctl_evtchn_bind_unbound_port` that the
                // kernel only reads during the call; `f` is an open evtchn device.
                unsafe { evtchn_bind_unbound_port(f.as_raw_fd(), &arg) }
            },
        )?;
        Ok(XenEventChannel::new(c, remote, None, self.path.clone()))
    }

    /// `IOCTL_EVTCHN_BIND_INTERDOMAIN`: bind to `remote`'s unbound port.
    fn bind_interdomain(&self, remote: DomId, remote_port: Port) -> Result<XenEventChannel> {
        let arg = IoctlEvtchnBindInterdomain {
            remote_domain: u32::from(remote.0),
            remote_port: remote_port.0,
        };
        let c = self.bind(
            format!("IOCTL_EVTCHN_BIND_INTERDOMAIN to port {remote_port} of domain {remote}"),
            |f| {
                // SAFETY: `arg` is a valid `ioctl_evtchn_bind_interdomain`, only read
                // by the kernel during the call; `f` is an open evtchn device.
                unsafe { evtchn_bind_interdomain(f.as_raw_fd(), &arg) }
            },
        )?;
        Ok(XenEventChannel::new(
            c,
            remote,
            Some(remote_port),
            self.path.clone(),
        ))
    }
}

/// One bound port, on its own descriptor of `/dev/xen/evtchn`; unbound on drop.
///
/// The descriptor ([`AsFd`]) is non-blocking and readable while the port has
/// fired and not been consumed. A caller that polls it itself consumes the event
/// with [`EventChannel::take_pending`] (which also unmasks).
#[derive(Debug)]
pub struct XenEventChannel {
    file: File,
    port: Port,
    remote: DomId,
    remote_port: Option<Port>,
    path: Arc<Path>,
}

impl XenEventChannel {
    fn new(c: Chan, remote: DomId, remote_port: Option<Port>, path: Arc<Path>) -> Self {
        XenEventChannel {
            file: c.file,
            port: c.port,
            remote,
            remote_port,
            path,
        }
    }

    /// The remote domain.
    pub fn remote_domain(&self) -> DomId {
        self.remote
    }

    /// The remote port, when this end bound to it (`bind_interdomain`). For an
    /// unbound port the peer's port is not known here.
    pub fn remote_port(&self) -> Option<Port> {
        self.remote_port
    }

    fn err(&self, what: &str, reason: impl std::fmt::Display) -> Error {
        Error::EventChannel {
            port: self.port,
            reason: format!("{what} on {}: {reason}", self.path.display()),
        }
    }

    /// Unmask `ports` (all of this descriptor's, in practice only ours).
    fn unmask_ports(&self, ports: &[u8]) -> Result<()> {
        loop {
            match (&self.file).write(ports) {
                Ok(n) if n == ports.len() => return Ok(()),
                Ok(n) => {
                    return Err(self.err(
                        "unmask (write)",
                        format!("short write of {n} of {} bytes", ports.len()),
                    ));
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.err("unmask (write)", e)),
            }
        }
    }

    /// After a ring overflow (`EFBIG`; cannot happen with one port per
    /// descriptor, but a kernel may say so): clear the ring with
    /// `IOCTL_EVTCHN_RESET`. The caller then unmasks and reports an event.
    fn reset_ring(&self) -> Result<()> {
        // SAFETY: `IOCTL_EVTCHN_RESET` takes no argument; the descriptor is ours.
        unsafe { evtchn_reset(self.file.as_raw_fd()) }
            .map(drop)
            .map_err(|e| self.err("IOCTL_EVTCHN_RESET after a ring overflow", errno_text(e)))
    }
}

impl AsFd for XenEventChannel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

impl EventChannel for XenEventChannel {
    fn port(&self) -> Port {
        self.port
    }

    /// `IOCTL_EVTCHN_NOTIFY`. Xen drops a send on a port whose peer has not bound
    /// yet (or has closed), as on the local platform.
    fn notify(&self) -> Result<()> {
        let arg = IoctlEvtchnNotify { port: self.port.0 };
        // SAFETY: `arg` is a valid `ioctl_evtchn_notify`, only read by the kernel
        // during the call; the descriptor is ours.
        unsafe { evtchn_notify(self.file.as_raw_fd(), &arg) }
            .map(drop)
            .map_err(|e| self.err("IOCTL_EVTCHN_NOTIFY", errno_text(e)))
    }

    /// `read()` the fired ports (the kernel masked them), then `write()` them back
    /// to unmask.
    fn take_pending(&self) -> Result<bool> {
        let mut buf = [0u8; 64];
        loop {
            match (&self.file).read(&mut buf) {
                Ok(n) => {
                    // Whole u32s only; the kernel never returns a partial port.
                    let whole = n - n % 4;
                    if whole == 0 {
                        return Ok(false);
                    }
                    self.unmask_ports(&buf[..whole])?;
                    return Ok(true);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) if e.raw_os_error() == Some(libc::EFBIG) => {
                    self.reset_ring()?;
                    self.unmask()?;
                    return Ok(true);
                }
                Err(e) => return Err(self.err("read of pending ports", e)),
            }
        }
    }

    fn wait(&self, timeout: Option<Duration>) -> Result<bool> {
        // Poll first, then read: a caller sleeps after its ring's final check
        // found nothing, so a port is rarely queued yet, and a read before the
        // poll would be one system call per sleep for nothing (poll returns at
        // once when one is queued).
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            // To the microsecond (`ppoll`): a nap of 300 us must not last 1 ms.
            let left = match deadline {
                None => None,
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        // Out of time: one last look.
                        return self.take_pending();
                    }
                    Some(TimeSpec::from_duration(left))
                }
            };
            // POLLIN when a port is queued; POLLERR after an overflow, which the
            // next read reports as EFBIG.
            let mut fds = [PollFd::new(self.file.as_fd(), PollFlags::POLLIN)];
            let ready = match ppoll(&mut fds, left, None) {
                Ok(n) => n > 0,
                Err(Errno::EINTR) => false,
                Err(e) => return Err(self.err("poll", errno_text(e))),
            };
            if ready && self.take_pending()? {
                return Ok(true);
            }
        }
    }

    /// `write()` of the port. The kernel ignores a port that is not masked.
    fn unmask(&self) -> Result<()> {
        self.unmask_ports(&self.port.0.to_ne_bytes())
    }
}

impl Drop for XenEventChannel {
    fn drop(&mut self) {
        let arg = IoctlEvtchnUnbind { port: self.port.0 };
        // SAFETY: `arg` is a valid `ioctl_evtchn_unbind`, only read by the kernel
        // during the call; the descriptor is ours. (Closing it next would unbind
        // the port too; doing it explicitly reports a failure.)
        if let Err(e) = unsafe { evtchn_unbind(self.file.as_raw_fd(), &arg) } {
            tracing::warn!(
                "IOCTL_EVTCHN_UNBIND of port {} on {}: {}",
                self.port,
                self.path.display(),
                errno_text(e)
            );
        }
    }
}
