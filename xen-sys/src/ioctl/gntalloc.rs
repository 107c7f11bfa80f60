//! `/dev/xen/gntalloc` (`xen/gntalloc.h`): a process grants its own pages to
//! another domain, then `mmap`s them at the returned index.

use super::ioc_none;
use nix::sys::ioctl::ioctl_num_type;
use std::mem::{offset_of, size_of};

/// `GNTALLOC_FLAG_WRITABLE`: grant read-write (otherwise read-only).
pub const GNTALLOC_FLAG_WRITABLE: u16 = 1;

/// `struct ioctl_gntalloc_alloc_gref`, followed in memory by `count - 1` more
/// `gref_ids` (allocate [`IoctlGntallocAllocGref::size_for`] bytes for `count`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoctlGntallocAllocGref {
    /// IN: the domain given access.
    pub domid: u16,
    /// IN: `GNTALLOC_FLAG_*`.
    pub flags: u16,
    /// IN: number of pages.
    pub count: u32,
    /// OUT: the offset to `mmap` the pages at.
    pub index: u64,
    /// OUT: the grant references, one per page (variable length).
    pub gref_ids: [u32; 1],
    /// Implicit tail padding in C.
    pub _pad: u32,
}

impl IoctlGntallocAllocGref {
    /// Bytes of the argument for `count` pages (at least the struct's size).
    pub const fn size_for(count: usize) -> usize {
        let n = offset_of!(IoctlGntallocAllocGref, gref_ids) + count * size_of::<u32>();
        if n < size_of::<Self>() {
            size_of::<Self>()
        } else {
            n
        }
    }
}

/// `struct ioctl_gntalloc_dealloc_gref`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoctlGntallocDeallocGref {
    /// The offset returned by the alloc.
    pub index: u64,
    /// Number of references to release.
    pub count: u32,
    /// Implicit tail padding in C.
    pub _pad: u32,
}

/// `struct ioctl_gntalloc_unmap_notify`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoctlGntallocUnmapNotify {
    /// Offset (as used in mmap) of the byte to clear, or of any byte in the page.
    pub index: u64,
    /// `UNMAP_NOTIFY_*`.
    pub action: u32,
    /// Event channel to notify.
    pub event_channel_port: u32,
}

const _: () = assert!(size_of::<IoctlGntallocAllocGref>() == 24);
const _: () = assert!(offset_of!(IoctlGntallocAllocGref, index) == 8);
const _: () = assert!(offset_of!(IoctlGntallocAllocGref, gref_ids) == 16);
const _: () = assert!(size_of::<IoctlGntallocDeallocGref>() == 16);
const _: () = assert!(size_of::<IoctlGntallocUnmapNotify>() == 16);

/// `IOCTL_GNTALLOC_ALLOC_GREF`.
pub const IOCTL_GNTALLOC_ALLOC_GREF: ioctl_num_type =
    ioc_none(b'G', 5, size_of::<IoctlGntallocAllocGref>());
/// `IOCTL_GNTALLOC_DEALLOC_GREF`.
pub const IOCTL_GNTALLOC_DEALLOC_GREF: ioctl_num_type =
    ioc_none(b'G', 6, size_of::<IoctlGntallocDeallocGref>());
/// `IOCTL_GNTALLOC_SET_UNMAP_NOTIFY`.
pub const IOCTL_GNTALLOC_SET_UNMAP_NOTIFY: ioctl_num_type =
    ioc_none(b'G', 7, size_of::<IoctlGntallocUnmapNotify>());

nix::ioctl_readwrite_bad!(
    /// `IOCTL_GNTALLOC_ALLOC_GREF`. The pointer must cover
    /// [`IoctlGntallocAllocGref::size_for`]`(count)` bytes.
    gntalloc_alloc_gref,
    IOCTL_GNTALLOC_ALLOC_GREF,
    IoctlGntallocAllocGref
);
nix::ioctl_write_ptr_bad!(
    /// `IOCTL_GNTALLOC_DEALLOC_GREF`.
    gntalloc_dealloc_gref,
    IOCTL_GNTALLOC_DEALLOC_GREF,
    IoctlGntallocDeallocGref
);
nix::ioctl_write_ptr_bad!(
    /// `IOCTL_GNTALLOC_SET_UNMAP_NOTIFY`.
    gntalloc_set_unmap_notify,
    IOCTL_GNTALLOC_SET_UNMAP_NOTIFY,
    IoctlGntallocUnmapNotify
);
