//! The Linux `/dev/xen` device ioctls (`xen/evtchn.h`, `xen/gntdev.h`,
//! `xen/gntalloc.h` from the kernel's uapi headers).
//!
//! Linux encodes them as `_IOC(_IOC_NONE, type, nr, sizeof(arg))`: direction
//! "none" but with the argument's size, which none of nix's `ioctl_read!`-style
//! macros produce, so the request codes are built with `nix::ioc!` and the wrappers
//! with the `_bad` macros. Each wrapper is an `unsafe fn` taking a raw pointer;
//! the OS-device wrappers of the platform crate give them safe shapes.

pub mod evtchn;
pub mod gntalloc;
pub mod gntdev;

/// `_IOC(_IOC_NONE, ty, nr, size)`.
pub(crate) const fn ioc_none(ty: u8, nr: u8, size: usize) -> nix::sys::ioctl::ioctl_num_type {
    nix::ioc!(nix::sys::ioctl::NONE, ty, nr, size)
}

/// `UNMAP_NOTIFY_CLEAR_BYTE`: on unmap, clear the byte at the notify offset.
pub const UNMAP_NOTIFY_CLEAR_BYTE: u32 = 0x1;
/// `UNMAP_NOTIFY_SEND_EVENT`: on unmap, send an event on the given port.
pub const UNMAP_NOTIFY_SEND_EVENT: u32 = 0x2;
