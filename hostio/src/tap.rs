//! Linux TAP devices: Ethernet frames in and out of the host's network stack
//! through `/dev/net/tun` (`IFF_TAP | IFF_NO_PI`, see the kernel's
//! `Documentation/networking/tuntap.rst`), optionally with a virtio-net header
//! in front of every packet (`IFF_VNET_HDR`, [`VirtioNetHdr`]): then a write
//! may be one TCP segment of up to 64 KiB with its checksum left to the kernel
//! (GSO), and a read gives what the host sends the same way, for the offloads
//! set with [`Tap::set_offload`] (`TUNSETOFFLOAD`).
//!
//! This is an OS-device wrapper: the `ioctl`s (`TUNSETIFF`, `TUNSETVNETHDRSZ`,
//! `TUNSETOFFLOAD`) are the only `unsafe` here; reads and writes go through
//! nix. Each [`Tap`] is one queue of the device; a device created (or opened)
//! with `multi_queue` may have several.

use crate::error::{Error, Result};
use nix::errno::Errno;
use nix::fcntl::{OFlag, open};
use nix::sys::stat::Mode;
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

/// `IFF_TAP` (`linux/if_tun.h`).
const IFF_TAP: i16 = libc::IFF_TAP as i16;
/// `IFF_NO_PI`: no 4-byte packet-information prefix.
const IFF_NO_PI: i16 = libc::IFF_NO_PI as i16;
/// `IFF_MULTI_QUEUE`.
const IFF_MULTI_QUEUE: i16 = libc::IFF_MULTI_QUEUE as i16;
/// `IFF_VNET_HDR`: a virtio-net header before every packet.
const IFF_VNET_HDR: i16 = libc::IFF_VNET_HDR as i16;
/// `IFNAMSIZ`.
const IFNAMSIZ: usize = 16;

/// `VIRTIO_NET_HDR_F_NEEDS_CSUM` (`linux/virtio_net.h`): the checksum from
/// `csum_start` to the end is still to be computed and stored at
/// `csum_start + csum_offset`.
pub const VIRTIO_NET_HDR_F_NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_F_DATA_VALID`: the checksums were verified.
pub const VIRTIO_NET_HDR_F_DATA_VALID: u8 = 2;
/// `VIRTIO_NET_HDR_GSO_NONE`.
pub const VIRTIO_NET_HDR_GSO_NONE: u8 = 0;
/// `VIRTIO_NET_HDR_GSO_TCPV4`.
pub const VIRTIO_NET_HDR_GSO_TCPV4: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_UDP` (UFO; never asked for here).
pub const VIRTIO_NET_HDR_GSO_UDP: u8 = 3;
/// `VIRTIO_NET_HDR_GSO_TCPV6`.
pub const VIRTIO_NET_HDR_GSO_TCPV6: u8 = 4;
/// `VIRTIO_NET_HDR_GSO_ECN`: or-ed into `gso_type`, the segments carry ECN.
pub const VIRTIO_NET_HDR_GSO_ECN: u8 = 0x80;

/// `struct virtio_net_hdr_mrg_rxbuf` (`linux/virtio_net.h`): 12 bytes before
/// every packet of a TAP opened with [`TapConfig::vnet_hdr`] (this wrapper
/// sets the header size with `TUNSETVNETHDRSZ`, so a persistent device another
/// program left at another size reads the same). Fields are in the host's byte
/// order (the kernel's `tun_is_little_endian` without `TUNSETVNETLE`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VirtioNetHdr {
    /// `VIRTIO_NET_HDR_F_*`.
    pub flags: u8,
    /// `VIRTIO_NET_HDR_GSO_*`.
    pub gso_type: u8,
    /// Bytes of Ethernet, IP and TCP headers (a hint for GSO packets).
    pub hdr_len: u16,
    /// Payload bytes per segment (GSO).
    pub gso_size: u16,
    /// Where the checksummed part starts (with `NEEDS_CSUM`).
    pub csum_start: u16,
    /// Where the checksum goes, from `csum_start`.
    pub csum_offset: u16,
    /// `num_buffers`: unused by TAP devices, 0.
    pub num_buffers: u16,
}

/// Bytes of [`VirtioNetHdr`] on the wire.
pub const VNET_HDR_LEN: usize = 12;

impl VirtioNetHdr {
    /// The header as the kernel reads it.
    pub fn to_bytes(&self) -> [u8; VNET_HDR_LEN] {
        let mut b = [0u8; VNET_HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_ne_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_ne_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_ne_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_ne_bytes());
        b[10..12].copy_from_slice(&self.num_buffers.to_ne_bytes());
        b
    }

    /// The header the kernel wrote.
    pub fn from_bytes(b: &[u8; VNET_HDR_LEN]) -> Self {
        let u = |i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
        VirtioNetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u(2),
            gso_size: u(4),
            csum_start: u(6),
            csum_offset: u(8),
            num_buffers: u(10),
        }
    }
}

/// How to open a TAP queue.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TapConfig {
    /// `IFF_MULTI_QUEUE`: must match how an existing device was created.
    pub multi_queue: bool,
    /// `IFF_VNET_HDR`: every packet read or written starts with a
    /// [`VirtioNetHdr`] ([`Tap::read_packet`], [`Tap::write_packet`]).
    pub vnet_hdr: bool,
}

/// Offloads the reader of a TAP takes (`TUNSETOFFLOAD`, `TUN_F_*`): what the
/// kernel may leave undone in the packets it gives. They belong to the device,
/// not to one queue.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TapOffload {
    /// `TUN_F_CSUM`: packets with the checksum still to compute (`NEEDS_CSUM`).
    pub csum: bool,
    /// `TUN_F_TSO4`: IPv4 TCP segments of up to 64 KiB (needs `csum`).
    pub tso4: bool,
    /// `TUN_F_TSO6`: IPv6 TCP segments of up to 64 KiB (needs `csum`).
    pub tso6: bool,
    /// `TUN_F_TSO_ECN`: TSO packets with ECN (needs `tso4` or `tso6`).
    pub tso_ecn: bool,
}

impl TapOffload {
    /// The `TUN_F_*` bits; TSO without checksum offload is dropped (the kernel
    /// refuses it).
    pub fn bits(&self) -> u32 {
        let mut b = 0;
        if self.csum {
            b |= libc::TUN_F_CSUM;
            if self.tso4 {
                b |= libc::TUN_F_TSO4;
            }
            if self.tso6 {
                b |= libc::TUN_F_TSO6;
            }
            if self.tso_ecn && (self.tso4 || self.tso6) {
                b |= libc::TUN_F_TSO_ECN;
            }
        }
        b
    }
}

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
    nix::ioctl_readwrite_bad!(tunsetiff, libc::TUNSETIFF, super::IfReqFlags);
    // `TUNSETVNETHDRSZ` reads an `int` through its pointer argument.
    nix::ioctl_write_ptr_bad!(tunsetvnethdrsz, libc::TUNSETVNETHDRSZ, libc::c_int);
    // `TUNSETOFFLOAD` takes the `TUN_F_*` bits as the argument itself.
    nix::ioctl_write_int_bad!(tunsetoffload, libc::TUNSETOFFLOAD);
}
use sys::{tunsetiff, tunsetoffload, tunsetvnethdrsz};

/// One queue of a TAP device, non-blocking.
#[derive(Debug)]
pub struct Tap {
    fd: OwnedFd,
    name: String,
    vnet_hdr: bool,
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
        Self::open_with(
            name,
            &TapConfig {
                multi_queue,
                vnet_hdr: false,
            },
        )
    }

    /// As [`Tap::open`], with the choices of `config`; with
    /// [`TapConfig::vnet_hdr`] the header size is set to [`VNET_HDR_LEN`] and
    /// the device's offloads are reset to none (see [`Tap::set_offload`]).
    ///
    /// # Errors
    ///
    /// As [`Tap::open`]; and [`Error::Io`] if the kernel refuses the header size.
    pub fn open_with(name: &str, config: &TapConfig) -> Result<Tap> {
        let multi_queue = config.multi_queue;
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
            flags: IFF_TAP
                | IFF_NO_PI
                | if multi_queue { IFF_MULTI_QUEUE } else { 0 }
                | if config.vnet_hdr { IFF_VNET_HDR } else { 0 },
            _pad: [0; 22],
        };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        // A backend killed with reads armed through io_uring
        // ([`crate::tapring`]) lets go of its queue only when the kernel has
        // torn its ring down, after the process is gone: `EBUSY` is retried
        // for up to two seconds.
        let t = std::time::Instant::now();
        let attached = loop {
            // SAFETY: `fd` is an open /dev/net/tun descriptor and `req` a
            // valid, initialised `struct ifreq` (name NUL-terminated: at most
            // 15 bytes were copied into 16 zeroed ones) that lives across the
            // call; the kernel reads it and writes the chosen name back.
            let r = unsafe { tunsetiff(fd.as_raw_fd(), &mut req) };
            match r {
                Err(Errno::EBUSY) if t.elapsed() < std::time::Duration::from_secs(2) => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                r => break r,
            }
        };
        attached.map_err(|e| {
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
        let tap = Tap {
            fd,
            name: String::from_utf8_lossy(&req.name[..end]).into_owned(),
            vnet_hdr: config.vnet_hdr,
        };
        if config.vnet_hdr {
            let size = VNET_HDR_LEN as libc::c_int;
            // SAFETY: `tap.fd` is an attached TAP queue; the kernel reads one
            // `int` through the pointer, which points at `size` for the call.
            unsafe { tunsetvnethdrsz(tap.fd.as_raw_fd(), &size) }.map_err(|e| {
                Error::io(
                    format!("setting the virtio-net header size of {}", tap.name),
                    e.into(),
                )
            })?;
            tap.set_offload(&TapOffload::default())?;
        }
        Ok(tap)
    }

    /// Whether packets carry a [`VirtioNetHdr`].
    pub fn vnet_hdr(&self) -> bool {
        self.vnet_hdr
    }

    /// Tell the kernel which offloads the reader takes (`TUNSETOFFLOAD`): with
    /// none, every packet read is a whole frame with its checksums done. This
    /// is the device's setting, shared by all its queues and kept by a
    /// persistent device after this program ends.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the kernel refuses (a device opened without
    /// [`TapConfig::vnet_hdr`] takes only no offloads).
    pub fn set_offload(&self, offload: &TapOffload) -> Result<()> {
        let bits = offload.bits();
        // SAFETY: `self.fd` is an attached TAP queue; `TUNSETOFFLOAD` takes its
        // argument by value and touches no memory of ours.
        unsafe { tunsetoffload(self.fd.as_raw_fd(), bits as libc::c_int) }.map_err(|e| {
            Error::io(
                format!("setting offloads {offload:?} on {}", self.name),
                e.into(),
            )
        })?;
        Ok(())
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

impl Tap {
    /// Read one packet and its virtio-net header (a device opened with
    /// [`TapConfig::vnet_hdr`]); `buf` should hold 65,550 bytes for the largest
    /// GSO packet (a longer one is truncated by the kernel). `Ok(None)`: no
    /// packet is waiting.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the read fails, or returns less than a header.
    pub fn read_packet(&self, buf: &mut [u8]) -> Result<Option<(VirtioNetHdr, usize)>> {
        let mut hdr = [0u8; VNET_HDR_LEN];
        loop {
            let mut iov = [IoSliceMut::new(&mut hdr), IoSliceMut::new(buf)];
            match nix::sys::uio::readv(self.fd.as_fd(), &mut iov) {
                Ok(n) if n >= VNET_HDR_LEN => {
                    return Ok(Some((VirtioNetHdr::from_bytes(&hdr), n - VNET_HDR_LEN)));
                }
                Ok(n) => {
                    return Err(Error::io(
                        format!("reading from {}", self.name),
                        std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            format!("{n} bytes, less than a virtio-net header"),
                        ),
                    ));
                }
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

    /// Write one packet with its virtio-net header (a device opened with
    /// [`TapConfig::vnet_hdr`]), in one `writev`. `Ok(false)`: the device could
    /// not take it now (queue full, or the interface is down) and it was
    /// dropped.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the write fails; `EINVAL` (kind
    /// [`InvalidInput`](std::io::ErrorKind::InvalidInput)) is the kernel
    /// refusing this packet's header (a GSO packet it cannot take).
    pub fn write_packet(&self, hdr: &VirtioNetHdr, frame: &[u8]) -> Result<bool> {
        let h = hdr.to_bytes();
        let iov = [IoSlice::new(&h), IoSlice::new(frame)];
        loop {
            match nix::sys::uio::writev(self.fd.as_fd(), &iov) {
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
