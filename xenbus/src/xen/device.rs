//! The Linux `/dev/xen` devices: where they are, whether this is a Xen domain
//! that has them, opening them, and mappings of their pages.

use crate::error::{Error, Result};
use crate::window::Slot;
use nix::errno::Errno;
use nix::sys::mman::{MapFlags, ProtFlags, mmap, mmap_anonymous, munmap};
use std::fs::{File, OpenOptions};
use std::num::NonZeroUsize;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::ptr::NonNull;
use xenio_xen_sys::Port;

/// The size of a grant (and of a page as the devices count them): 4 KiB.
pub const XEN_PAGE: usize = 4096;

/// The event channel device.
pub const EVTCHN_PATH: &str = "/dev/xen/evtchn";
/// The grant mapping device (backend side).
pub const GNTDEV_PATH: &str = "/dev/xen/gntdev";
/// The grant allocation device (frontend side).
pub const GNTALLOC_PATH: &str = "/dev/xen/gntalloc";

/// The kernel module behind each device (Debian builds all three as modules).
const DEVICES: [(&str, &str); 3] = [
    (EVTCHN_PATH, "xen-evtchn"),
    (GNTDEV_PATH, "xen-gntdev"),
    (GNTALLOC_PATH, "xen-gntalloc"),
];

/// What happens when a grant mapping (gntdev) or a granted page (gntalloc) goes
/// away, including when this process dies: the "unmap notification" of
/// `IOCTL_GNTDEV_SET_UNMAP_NOTIFY` / `IOCTL_GNTALLOC_SET_UNMAP_NOTIFY`.
///
/// Typically the byte is a "connected" flag in a shared page and the port the
/// channel to the peer, so the peer learns that this side is gone.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnmapNotify {
    /// Clear the byte at this offset of the region (`UNMAP_NOTIFY_CLEAR_BYTE`).
    /// Needs a writable mapping.
    pub clear_byte: Option<usize>,
    /// Send an event on this local port (`UNMAP_NOTIFY_SEND_EVENT`). The port must
    /// be bound through `/dev/xen/evtchn` in this domain (an [`EvtchnDevice`](super::EvtchnDevice)
    /// channel); the kernel keeps it alive until the notification is sent.
    pub send_event: Option<Port>,
}

// ---------------------------------------------------------------- the probe

/// Whether the Xen platform can run here: a Xen domain with `/dev/xen/evtchn`,
/// `/dev/xen/gntdev` and `/dev/xen/gntalloc`. The error
/// ([`Error::Unavailable`]) names everything that is missing and how to fix it.
pub fn available() -> Result<()> {
    available_under(Path::new("/"))
}

/// [`available`], looking for `/sys`, `/proc` and `/dev` under `root` (a chroot,
/// or a directory a test builds).
pub fn available_under(root: &Path) -> Result<()> {
    let mut missing = Vec::new();
    if let Err(why) = xen_domain_under(root) {
        missing.push(why);
    }
    for (dev, module) in DEVICES {
        let path = under(root, dev);
        if !path.exists() {
            missing.push(missing_device(dev, module));
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Error::Unavailable(format!(
            "the Xen platform is not available: {}",
            missing.join("; ")
        )))
    }
}

fn under(root: &Path, abs: &str) -> std::path::PathBuf {
    root.join(abs.trim_start_matches('/'))
}

/// `Ok` in a Xen domain (`/sys/hypervisor/type` says `xen`, or `/proc/xen`
/// exists, which the kernel creates only in a Xen domain); else why not.
fn xen_domain_under(root: &Path) -> std::result::Result<(), String> {
    let proc_xen = under(root, "/proc/xen");
    let hv_type = under(root, "/sys/hypervisor/type");
    let hv = std::fs::read_to_string(&hv_type).ok();
    let hv = hv.as_deref().map(str::trim);
    if hv == Some("xen") || proc_xen.exists() {
        return Ok(());
    }
    Err(match hv {
        Some(other) => format!(
            "this machine is not a Xen domain: /sys/hypervisor/type says {other:?} and /proc/xen \
             is missing"
        ),
        None => "this machine is not a Xen domain: /sys/hypervisor/type and /proc/xen are both \
                 missing (run xenio inside a Xen domain, dom0 or a domU)"
            .to_string(),
    })
}

fn missing_device(dev: &str, module: &str) -> String {
    format!("{dev} is missing: load the {module} module (modprobe {module}) or run in a Xen domain")
}

/// Open a `/dev/xen` device read-write. A device that does not exist (or whose
/// driver is not there) is [`Error::Unavailable`] with the fix, never a bare
/// `ENOENT`.
pub(super) fn open_device(path: &Path, module: &str, nonblock: bool) -> Result<File> {
    let mut opts = OpenOptions::new();
    opts.read(true).write(true);
    if nonblock {
        opts.custom_flags(libc::O_NONBLOCK);
    }
    opts.open(path).map_err(|e| {
        let shown = path.display().to_string();
        let not_xen = match xen_domain_under(Path::new("/")) {
            Ok(()) => String::new(),
            Err(why) => format!(" ({why})"),
        };
        match e.raw_os_error() {
            Some(libc::ENOENT) => {
                Error::Unavailable(format!("{}{not_xen}", missing_device(&shown, module)))
            }
            Some(libc::ENODEV | libc::ENXIO) => Error::Unavailable(format!(
                "opening {shown}: the device exists but has no driver ({e}): load the {module} \
                 module (modprobe {module}) or run in a Xen domain{not_xen}"
            )),
            Some(libc::EACCES | libc::EPERM) => Error::io(
                format!(
                    "opening {shown} (the Xen devices need root, or read-write access for this \
                     user)"
                ),
                e,
            ),
            _ => Error::io(format!("opening {shown}"), e),
        }
    })
}

/// An errno as its name and description (`ENOTTY: Inappropriate ioctl for device`).
pub(super) fn errno_text(e: Errno) -> String {
    // "ENOTTY: Inappropriate ioctl for device"
    e.to_string()
}

// ---------------------------------------------------------------- mappings

/// Pages of a device file mapped `MAP_SHARED` into this process; unmapped on drop.
#[derive(Debug)]
pub(super) struct Mapping {
    pub(super) ptr: NonNull<u8>,
    pub(super) len: usize,
}

// SAFETY: the mapping is an address range owned by this value; it has no thread
// affinity, and all access to the bytes goes through `Region` copies or atomics.
unsafe impl Send for Mapping {}
// SAFETY: as above; `&Mapping` only exposes the address and length.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// `mmap(NULL, len, prot, MAP_SHARED, fd, offset)`.
    pub(super) fn device(
        file: &File,
        len: NonZeroUsize,
        offset: u64,
        writable: bool,
    ) -> nix::Result<Self> {
        let offset = i64::try_from(offset).map_err(|_| Errno::EOVERFLOW)?;
        let prot = if writable {
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE
        } else {
            ProtFlags::PROT_READ
        };
        // SAFETY: a new mapping at an address the kernel picks (no MAP_FIXED), so it
        // aliases nothing of ours; the device decides what pages back it. The result
        // is owned by the returned value, which unmaps it exactly once.
        let ptr = unsafe { mmap(None, len, prot, MapFlags::MAP_SHARED, file, offset) }?;
        Ok(Mapping {
            ptr: ptr.cast(),
            len: len.get(),
        })
    }

    /// `mmap(slot, 4 KiB, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd,
    /// offset)`: the device's page over a grant window's slot, which unmaps it
    /// again when dropped (this returns no owner of its own).
    pub(crate) fn device_over(file: &File, slot: &Slot, offset: u64) -> nix::Result<()> {
        let offset = i64::try_from(offset).map_err(|_| Errno::EOVERFLOW)?;
        let addr = NonZeroUsize::new(slot.addr().as_ptr() as usize).ok_or(Errno::EINVAL)?;
        // SAFETY: MAP_FIXED replaces exactly the page of a window slot the caller
        // holds (taken: nothing else is mapped there or refers to it); the device
        // decides what backs it, and the slot puts the reservation back when
        // dropped.
        unsafe {
            mmap(
                Some(addr),
                NonZeroUsize::new(XEN_PAGE).ok_or(Errno::EINVAL)?,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED | MapFlags::MAP_FIXED,
                file,
                offset,
            )
        }?;
        Ok(())
    }

    /// Replace the pages with fresh private zero pages at the same address, in one
    /// step (`MAP_FIXED`): the device's pages are unmapped, the range stays valid.
    pub(super) fn replace_with_anonymous(&self) -> nix::Result<()> {
        let len = NonZeroUsize::new(self.len).ok_or(Errno::EINVAL)?;
        let addr = NonZeroUsize::new(self.ptr.as_ptr() as usize).ok_or(Errno::EINVAL)?;
        // SAFETY: MAP_FIXED over exactly the range this value owns (and nothing
        // else); the caller holds `&mut` to the owner of every `Region` over it, so
        // nothing reads or writes it during the swap, and afterwards the range is
        // readable and writable memory as the `Region` contract requires.
        unsafe {
            mmap_anonymous(
                Some(addr),
                len,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_PRIVATE | MapFlags::MAP_FIXED,
            )
        }?;
        Ok(())
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the range was mapped by `Mapping::device` and is owned by this
        // value alone; the region that exposed it is being dropped.
        if let Err(e) = unsafe { munmap(self.ptr.cast(), self.len) } {
            tracing::warn!("munmap of {} bytes of a /dev/xen mapping: {e}", self.len);
        }
    }
}
