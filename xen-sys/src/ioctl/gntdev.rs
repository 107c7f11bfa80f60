//! `/dev/xen/gntdev` (`xen/gntdev.h`): a process maps another domain's grants
//! (MAP_GRANT_REF, then `mmap` at the returned index) or copies through them
//! without mapping (GRANT_COPY).

use super::ioc_none;
use nix::sys::ioctl::ioctl_num_type;
use std::mem::{offset_of, size_of};

/// `struct ioctl_gntdev_grant_ref`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoctlGntdevGrantRef {
    /// The domain that granted the page.
    pub domid: u32,
    /// The grant reference.
    pub ref_: u32,
}

/// `struct ioctl_gntdev_map_grant_ref`, followed in memory by `count - 1` more
/// `refs` (allocate [`IoctlGntdevMapGrantRef::size_for`] bytes for `count`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoctlGntdevMapGrantRef {
    /// IN: number of grants.
    pub count: u32,
    /// `pad`.
    pub pad: u32,
    /// OUT: the offset to `mmap` at.
    pub index: u64,
    /// IN: the grants (variable length).
    pub refs: [IoctlGntdevGrantRef; 1],
}

impl IoctlGntdevMapGrantRef {
    /// Bytes of the argument for `count` grants (at least the struct's size).
    pub const fn size_for(count: usize) -> usize {
        let n = offset_of!(IoctlGntdevMapGrantRef, refs) + count * size_of::<IoctlGntdevGrantRef>();
        if n < size_of::<Self>() {
            size_of::<Self>()
        } else {
            n
        }
    }
}

/// `struct ioctl_gntdev_unmap_grant_ref`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoctlGntdevUnmapGrantRef {
    /// The index returned by the map.
    pub index: u64,
    /// Number of pages.
    pub count: u32,
    /// `pad`.
    pub pad: u32,
}

/// `struct ioctl_gntdev_get_offset_for_vaddr`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoctlGntdevGetOffsetForVaddr {
    /// IN: address of the first mapped page.
    pub vaddr: u64,
    /// OUT: the offset used in the mmap.
    pub offset: u64,
    /// OUT: pages in the mapping.
    pub count: u32,
    /// `pad`.
    pub pad: u32,
}

/// `struct ioctl_gntdev_set_max_grants`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoctlGntdevSetMaxGrants {
    /// Most grants that may be mapped at once.
    pub count: u32,
}

/// `struct ioctl_gntdev_unmap_notify`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoctlGntdevUnmapNotify {
    /// Offset (as used in mmap) of the byte to clear, or of any byte in the page.
    pub index: u64,
    /// `UNMAP_NOTIFY_*`.
    pub action: u32,
    /// Event channel to notify.
    pub event_channel_port: u32,
}

/// `foreign` of `struct gntdev_grant_copy_segment`'s `source`/`dest` union.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GntdevCopyForeign {
    /// The grant reference.
    pub ref_: u32,
    /// Offset in the granted page.
    pub offset: u16,
    /// The granting domain.
    pub domid: u16,
}

/// The `source` / `dest` union of `struct gntdev_grant_copy_segment`: a local
/// address, or a foreign grant (chosen by `GNTCOPY_*_gref` in `flags`).
#[repr(C)]
#[derive(Clone, Copy)]
pub union GntdevCopyPtr {
    /// A local buffer.
    pub virt: *mut libc::c_void,
    /// A peer's granted page.
    pub foreign: GntdevCopyForeign,
}

impl std::fmt::Debug for GntdevCopyPtr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // SAFETY: both members are 8 bytes of plain data; reading the pointer member
        // only copies its bits, it is never dereferenced.
        let bits = unsafe { self.virt } as usize;
        write!(f, "GntdevCopyPtr({bits:#x})")
    }
}

/// `struct gntdev_grant_copy_segment`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct GntdevGrantCopySegment {
    /// Where to copy from.
    pub source: GntdevCopyPtr,
    /// Where to copy to.
    pub dest: GntdevCopyPtr,
    /// Bytes to copy (must not cross a page).
    pub len: u16,
    /// `GNTCOPY_*`.
    pub flags: u16,
    /// OUT: `GNTST_*`.
    pub status: i16,
    /// Implicit tail padding in C.
    pub _pad: u16,
}

/// `struct ioctl_gntdev_grant_copy`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct IoctlGntdevGrantCopy {
    /// Number of segments.
    pub count: u32,
    /// Implicit padding in C.
    pub _pad: u32,
    /// The segments.
    pub segments: *mut GntdevGrantCopySegment,
}

const _: () = assert!(size_of::<IoctlGntdevGrantRef>() == 8);
const _: () = assert!(size_of::<IoctlGntdevMapGrantRef>() == 24);
const _: () = assert!(offset_of!(IoctlGntdevMapGrantRef, index) == 8);
const _: () = assert!(offset_of!(IoctlGntdevMapGrantRef, refs) == 16);
const _: () = assert!(size_of::<IoctlGntdevUnmapGrantRef>() == 16);
const _: () = assert!(size_of::<IoctlGntdevGetOffsetForVaddr>() == 24);
const _: () = assert!(size_of::<IoctlGntdevUnmapNotify>() == 16);
const _: () = assert!(size_of::<GntdevCopyPtr>() == 8);
const _: () = assert!(size_of::<GntdevGrantCopySegment>() == 24);
const _: () = assert!(offset_of!(GntdevGrantCopySegment, len) == 16);
const _: () = assert!(offset_of!(GntdevGrantCopySegment, status) == 20);
const _: () = assert!(size_of::<IoctlGntdevGrantCopy>() == 16);
const _: () = assert!(offset_of!(IoctlGntdevGrantCopy, segments) == 8);

/// `IOCTL_GNTDEV_MAP_GRANT_REF`.
pub const IOCTL_GNTDEV_MAP_GRANT_REF: ioctl_num_type =
    ioc_none(b'G', 0, size_of::<IoctlGntdevMapGrantRef>());
/// `IOCTL_GNTDEV_UNMAP_GRANT_REF`.
pub const IOCTL_GNTDEV_UNMAP_GRANT_REF: ioctl_num_type =
    ioc_none(b'G', 1, size_of::<IoctlGntdevUnmapGrantRef>());
/// `IOCTL_GNTDEV_GET_OFFSET_FOR_VADDR`.
pub const IOCTL_GNTDEV_GET_OFFSET_FOR_VADDR: ioctl_num_type =
    ioc_none(b'G', 2, size_of::<IoctlGntdevGetOffsetForVaddr>());
/// `IOCTL_GNTDEV_SET_MAX_GRANTS`.
pub const IOCTL_GNTDEV_SET_MAX_GRANTS: ioctl_num_type =
    ioc_none(b'G', 3, size_of::<IoctlGntdevSetMaxGrants>());
/// `IOCTL_GNTDEV_SET_UNMAP_NOTIFY`.
pub const IOCTL_GNTDEV_SET_UNMAP_NOTIFY: ioctl_num_type =
    ioc_none(b'G', 7, size_of::<IoctlGntdevUnmapNotify>());
/// `IOCTL_GNTDEV_GRANT_COPY`.
pub const IOCTL_GNTDEV_GRANT_COPY: ioctl_num_type =
    ioc_none(b'G', 8, size_of::<IoctlGntdevGrantCopy>());

nix::ioctl_readwrite_bad!(
    /// `IOCTL_GNTDEV_MAP_GRANT_REF`. The pointer must cover
    /// [`IoctlGntdevMapGrantRef::size_for`]`(count)` bytes.
    gntdev_map_grant_ref,
    IOCTL_GNTDEV_MAP_GRANT_REF,
    IoctlGntdevMapGrantRef
);
nix::ioctl_write_ptr_bad!(
    /// `IOCTL_GNTDEV_UNMAP_GRANT_REF`.
    gntdev_unmap_grant_ref,
    IOCTL_GNTDEV_UNMAP_GRANT_REF,
    IoctlGntdevUnmapGrantRef
);
nix::ioctl_readwrite_bad!(
    /// `IOCTL_GNTDEV_GET_OFFSET_FOR_VADDR`.
    gntdev_get_offset_for_vaddr,
    IOCTL_GNTDEV_GET_OFFSET_FOR_VADDR,
    IoctlGntdevGetOffsetForVaddr
);
nix::ioctl_write_ptr_bad!(
    /// `IOCTL_GNTDEV_SET_MAX_GRANTS`.
    gntdev_set_max_grants,
    IOCTL_GNTDEV_SET_MAX_GRANTS,
    IoctlGntdevSetMaxGrants
);
nix::ioctl_write_ptr_bad!(
    /// `IOCTL_GNTDEV_SET_UNMAP_NOTIFY`.
    gntdev_set_unmap_notify,
    IOCTL_GNTDEV_SET_UNMAP_NOTIFY,
    IoctlGntdevUnmapNotify
);
nix::ioctl_readwrite_bad!(
    /// `IOCTL_GNTDEV_GRANT_COPY`: the kernel writes each segment's `status`.
    gntdev_grant_copy,
    IOCTL_GNTDEV_GRANT_COPY,
    IoctlGntdevGrantCopy
);
