//! Linux TAP devices: Ethernet frames in and out of the host's network stack
//! through `/dev/net/tun` (`IFF_TAP | IFF_NO_PI`, see the kernel's
//! `Documentation/networking/tuntap.rst`).
//!
//! This is an OS-device wrapper: the one `ioctl` (`TUNSETIFF`) is the only
//! `unsafe` here; reads and writes go through nix. Each [`Tap`] is one queue of
//! the device; a device created (or opened) with `multi_queue` may have several.

use crate::error::{Error, Result};
use nix::errno::Errno;
use nix::fcntl::{OFlag, open};
use nix::sys::stat::Mode;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

/// `IFF_TAP` (`linux/if_tun.h`).
const IFF_TAP: i16 = 0x0002;
/// `IFF_NO_PI`: no 4-byte packet-information prefix.
const IFF_NO_PI: i16 = 0x1000;
/// `IFF_MULTI_QUEUE`.
const IFF_MULTI_QUEUE: i16 = 0x0100;
/// `IFNAMSIZ`.
const IFNAMSIZ: usize = 16;

/// `struct ifreq` as `TUNSETIFF` reads it: the name, then `ifr_flags` at the
/// start of the 24-byte union.
#[repr(C)]
struct IfReqFlags {
    name: [u8; IFNAMSIZ],
    flags: i16,
    _pad: [u8; 22],
}
const _: () = assert!(std::mem::size_of::<IfReqFlags>() == 40);

mod sys {
    #![allow(missing_docs)]
    // `TUNSETIFF` is `_IOW('T', 202, int)` even though it takes a `struct ifreq *`,
    // which the kernel reads and writes (the chosen name comes back in it).
    nix::ioctl_readwrite_bad!(
        tunsetiff,
        nix::request_code_write!(b'T', 202, std::mem::size_of::<libc::c_int>()),
        super::IfReqFlags
    );
}
use sys::tunsetiff;

/// One queue of a TAP device, non-blocking.
#[derive(Debug)]
pub struct Tap {
    fd: OwnedFd,
    name: String,
}

impl Tap {
    /// Attach to the TAP device `name`, creating it (non-persistent: it goes when
    /// its last queue is closed) if it does not exist. `multi_queue` must match
    /// how an existing device was created (`ip tuntap add ... multi_queue`).
    ///
    /// # Errors
    ///
    /// [`Error::BadValue`] for a name Linux cannot take (empty, 16 bytes or more,
    /// `/`, spaces); [`Error::Io`] if `/dev/net/tun` cannot be opened (module
    /// `tun`, `CAP_NET_ADMIN` to create a device) or `TUNSETIFF` is refused (an
    /// existing device of another kind or queue mode, a device of another owner).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use xenio_hostio::tap::Tap;
    ///
    /// let tap = Tap::open("xenio0", false)?; // as root, or with CAP_NET_ADMIN
    /// let mut frame = [0u8; 1514];
    /// if let Some(n) = tap.read(&mut frame)? {
    ///     println!("{n} bytes from the host");
    /// }
    /// # Ok::<(), xenio_hostio::Error>(())
    /// ```
    pub fn open(name: &str, multi_queue: bool) -> Result<Tap> {
        if name.is_empty() || name.len() >= IFNAMSIZ || name.contains(['/', ' ', '\0']) {
            return Err(Error::BadValue {
                what: "TAP device name (1 to 15 characters, no '/' or spaces)".into(),
                value: name.into(),
            });
        }
        let fd = open(
            "/dev/net/tun",
            OFlag::O_RDWR | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::io("opening /dev/net/tun", e.into()))?;
        let mut req = IfReqFlags {
            name: [0; IFNAMSIZ],
            flags: IFF_TAP | IFF_NO_PI | if multi_queue { IFF_MULTI_QUEUE } else { 0 },
            _pad: [0; 22],
        };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        // SAFETY: `fd` is an open /dev/net/tun descriptor and `req` a valid,
        // initialised `struct ifreq` (name NUL-terminated: at most 15 bytes were
        // copied into 16 zeroed ones) that lives across the call; the kernel reads
        // it and writes the chosen name back into it.
        unsafe { tunsetiff(fd.as_raw_fd(), &mut req) }.map_err(|e| {
            let hint = match e {
                Errno::EINVAL => " (was the device created with a different multi_queue setting?)",
                Errno::EPERM => " (needs CAP_NET_ADMIN, or a device owned by this user)",
                Errno::EBUSY => " (another process holds its only queue)",
                _ => "",
            };
            Error::io(
                format!("attaching to TAP device {name}{hint}"),
                std::io::Error::from(e),
            )
        })?;
        let end = req.name.iter().position(|&b| b == 0).unwrap_or(IFNAMSIZ);
        Ok(Tap {
            fd,
            name: String::from_utf8_lossy(&req.name[..end]).into_owned(),
        })
    }

    /// The device's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Read one frame into `buf` (a frame longer than `buf` is truncated by the
    /// kernel). `Ok(None)`: no frame is waiting.
    pub fn read(&self, buf: &mut [u8]) -> Result<Option<usize>> {
        loop {
            match nix::unistd::read(self.fd.as_fd(), buf) {
                Ok(n) => return Ok(Some(n)),
                Err(Errno::EAGAIN) => return Ok(None),
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    return Err(Error::io(
                        format!("reading from {}", self.name),
                        std::io::Error::from(e),
                    ));
                }
            }
        }
    }

    /// Write one frame into the host's stack. `Ok(false)`: the device could not
    /// take it now (queue full, or the interface is down) and it was dropped.
    pub fn write(&self, frame: &[u8]) -> Result<bool> {
        loop {
            match nix::unistd::write(self.fd.as_fd(), frame) {
                Ok(_) => return Ok(true),
                Err(Errno::EAGAIN | Errno::EIO | Errno::ENOBUFS) => return Ok(false),
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    return Err(Error::io(
                        format!("writing {} bytes to {}", frame.len(), self.name),
                        std::io::Error::from(e),
                    ));
                }
            }
        }
    }
}

impl AsFd for Tap {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
