//! The argument encodings of the `/dev/xen` ioctls that are variable in length or
//! carry addresses: `IOCTL_GNTDEV_MAP_GRANT_REF`, `IOCTL_GNTALLOC_ALLOC_GREF`,
//! `IOCTL_GNTDEV_GRANT_COPY` and the two `SET_UNMAP_NOTIFY`s.
//!
//! Each argument is built as bytes in an 8-byte aligned buffer ([`ArgBuf`]), every
//! field at the offset of its `xenio-xen-sys` mirror (`offset_of!`), so safe code
//! writes it and the ioctl only gets a pointer. `tests/xen_abi.rs` compares the
//! bytes with what a C program compiled against the kernel's `xen/gntdev.h` and
//! `xen/gntalloc.h` puts in the same structs.

use super::device::{UnmapNotify, XEN_PAGE};
use crate::error::{Error, Result};
use crate::grant::Access;
use std::mem::{align_of, offset_of, size_of};
use xenio_xen_sys::grant_table::*;
use xenio_xen_sys::ioctl::gntalloc::{
    GNTALLOC_FLAG_WRITABLE, IoctlGntallocAllocGref, IoctlGntallocUnmapNotify,
};
use xenio_xen_sys::ioctl::gntdev::{
    GntdevCopyForeign, GntdevGrantCopySegment, IoctlGntdevGrantCopy, IoctlGntdevGrantRef,
    IoctlGntdevMapGrantRef, IoctlGntdevUnmapNotify,
};
use xenio_xen_sys::ioctl::{UNMAP_NOTIFY_CLEAR_BYTE, UNMAP_NOTIFY_SEND_EVENT};
use xenio_xen_sys::{DomId, GrantRef};

/// Bytes of an ioctl argument, zero-initialised, in 8-byte aligned storage (the
/// alignment of every struct involved).
#[derive(Clone, PartialEq, Eq)]
pub struct ArgBuf {
    words: Vec<u64>,
    len: usize,
}

impl std::fmt::Debug for ArgBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ArgBuf[")?;
        for b in self.as_bytes() {
            write!(f, "{b:02x}")?;
        }
        write!(f, "]")
    }
}

impl ArgBuf {
    /// `len` zero bytes.
    pub fn zeroed(len: usize) -> Self {
        ArgBuf {
            words: vec![0; len.div_ceil(8)],
            len,
        }
    }

    /// A copy of `bytes` (what the kernel wrote, in tests).
    pub fn from_bytes(bytes: &[u8]) -> Self {
        let mut a = ArgBuf::zeroed(bytes.len());
        a.bytes_mut().copy_from_slice(bytes);
        a
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the buffer is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes, as the kernel sees them.
    pub fn as_bytes(&self) -> &[u8] {
        let all: &[u8] = bytemuck::cast_slice(&self.words);
        &all[..self.len]
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        let all: &mut [u8] = bytemuck::cast_slice_mut(&mut self.words);
        &mut all[..self.len]
    }

    fn put(&mut self, offset: usize, bytes: &[u8]) -> Result<()> {
        let len = self.len;
        let dst = offset
            .checked_add(bytes.len())
            .and_then(|end| self.bytes_mut().get_mut(offset..end))
            .ok_or_else(|| {
                Error::Limit(format!(
                    "ioctl argument: {} bytes at offset {offset} overflow {len} bytes",
                    bytes.len()
                ))
            })?;
        dst.copy_from_slice(bytes);
        Ok(())
    }

    fn get<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        self.as_bytes()
            .get(offset..offset.checked_add(N)?)?
            .try_into()
            .ok()
    }

    /// The `u16` at `offset` (native byte order), if in bounds.
    pub fn read_u16(&self, offset: usize) -> Option<u16> {
        self.get(offset).map(u16::from_ne_bytes)
    }

    /// The `i16` at `offset`, if in bounds.
    pub fn read_i16(&self, offset: usize) -> Option<i16> {
        self.get(offset).map(i16::from_ne_bytes)
    }

    /// The `u32` at `offset`, if in bounds.
    pub fn read_u32(&self, offset: usize) -> Option<u32> {
        self.get(offset).map(u32::from_ne_bytes)
    }

    /// The `u64` at `offset`, if in bounds.
    pub fn read_u64(&self, offset: usize) -> Option<u64> {
        self.get(offset).map(u64::from_ne_bytes)
    }

    /// The address of the buffer as the argument type `T` of an ioctl, checked to
    /// cover `size_of::<T>()` bytes at `T`'s alignment. The kernel may read and
    /// write `len()` bytes through it while `self` is mutably borrowed.
    pub(crate) fn as_mut_ptr<T>(&mut self) -> Result<*mut T> {
        if size_of::<T>() > self.len || align_of::<T>() > align_of::<u64>() {
            return Err(Error::Limit(format!(
                "ioctl argument of {} bytes is too small for {}",
                self.len,
                std::any::type_name::<T>()
            )));
        }
        Ok(self.words.as_mut_ptr().cast())
    }

    /// The address as an integer (for a pointer field inside another argument).
    fn addr(&mut self) -> usize {
        self.words.as_mut_ptr() as usize
    }
}

fn count_u32(n: usize, what: &str) -> Result<u32> {
    if n == 0 {
        return Err(Error::Limit(format!("{what} of zero pages")));
    }
    u32::try_from(n).map_err(|_| Error::Limit(format!("{what} of {n} pages (more than 2^32)")))
}

// ---------------------------------------------------------------- gntdev map

/// `struct ioctl_gntdev_map_grant_ref` for `refs` of `domid`:
/// [`IoctlGntdevMapGrantRef::size_for`] bytes, `count` set, `refs[i]` =
/// `{domid, ref}`, `index` (the output) zero.
pub fn map_grant_ref(domid: DomId, refs: &[GrantRef]) -> Result<ArgBuf> {
    let count = count_u32(refs.len(), "a grant mapping")?;
    let mut a = ArgBuf::zeroed(IoctlGntdevMapGrantRef::size_for(refs.len()));
    a.put(
        offset_of!(IoctlGntdevMapGrantRef, count),
        &count.to_ne_bytes(),
    )?;
    for (i, r) in refs.iter().enumerate() {
        let at = offset_of!(IoctlGntdevMapGrantRef, refs) + i * size_of::<IoctlGntdevGrantRef>();
        a.put(
            at + offset_of!(IoctlGntdevGrantRef, domid),
            &u32::from(domid.0).to_ne_bytes(),
        )?;
        a.put(
            at + offset_of!(IoctlGntdevGrantRef, ref_),
            &r.0.to_ne_bytes(),
        )?;
    }
    Ok(a)
}

/// The `index` (mmap offset) the kernel wrote into a [`map_grant_ref`] argument.
pub fn map_grant_ref_index(arg: &ArgBuf) -> Option<u64> {
    arg.read_u64(offset_of!(IoctlGntdevMapGrantRef, index))
}

// ---------------------------------------------------------------- gntalloc

/// `struct ioctl_gntalloc_alloc_gref` granting `count` pages to `domid`:
/// [`IoctlGntallocAllocGref::size_for`] bytes, `flags` =
/// `GNTALLOC_FLAG_WRITABLE` for [`Access::ReadWrite`], the outputs zero.
pub fn alloc_gref(domid: DomId, access: Access, count: usize) -> Result<ArgBuf> {
    let n = count_u32(count, "a grant")?;
    let flags = match access {
        Access::ReadWrite => GNTALLOC_FLAG_WRITABLE,
        Access::ReadOnly => 0,
    };
    let mut a = ArgBuf::zeroed(IoctlGntallocAllocGref::size_for(count));
    a.put(
        offset_of!(IoctlGntallocAllocGref, domid),
        &domid.0.to_ne_bytes(),
    )?;
    a.put(
        offset_of!(IoctlGntallocAllocGref, flags),
        &flags.to_ne_bytes(),
    )?;
    a.put(offset_of!(IoctlGntallocAllocGref, count), &n.to_ne_bytes())?;
    Ok(a)
}

/// What the kernel wrote into an [`alloc_gref`] argument for `count` pages: the
/// mmap `index` and one grant reference per page.
pub fn alloc_gref_result(arg: &ArgBuf, count: usize) -> Option<(u64, Vec<GrantRef>)> {
    let index = arg.read_u64(offset_of!(IoctlGntallocAllocGref, index))?;
    let refs = (0..count)
        .map(|i| {
            arg.read_u32(offset_of!(IoctlGntallocAllocGref, gref_ids) + i * size_of::<u32>())
                .map(GrantRef)
        })
        .collect::<Option<Vec<_>>>()?;
    Some((index, refs))
}

// ---------------------------------------------------------------- unmap notify

fn unmap_notify(
    offsets: [usize; 3],
    map_index: u64,
    map_len: usize,
    notify: UnmapNotify,
) -> Result<ArgBuf> {
    let [o_index, o_action, o_port] = offsets;
    let mut action = 0;
    let mut index = map_index;
    if let Some(off) = notify.clear_byte {
        if off >= map_len {
            return Err(Error::Limit(format!(
                "unmap notification: byte {off} is outside the {map_len}-byte region"
            )));
        }
        index = map_index
            .checked_add(off as u64)
            .ok_or_else(|| Error::Limit("unmap notification: index overflows".into()))?;
        action |= UNMAP_NOTIFY_CLEAR_BYTE;
    }
    let mut port = 0;
    if let Some(p) = notify.send_event {
        action |= UNMAP_NOTIFY_SEND_EVENT;
        port = p.0;
    }
    let mut a = ArgBuf::zeroed(16);
    a.put(o_index, &index.to_ne_bytes())?;
    a.put(o_action, &action.to_ne_bytes())?;
    a.put(o_port, &port.to_ne_bytes())?;
    Ok(a)
}

/// `struct ioctl_gntdev_unmap_notify` for a mapping at mmap offset `map_index` of
/// `map_len` bytes: `index` is the byte to clear (else the mapping's first byte).
pub fn gntdev_unmap_notify(map_index: u64, map_len: usize, notify: UnmapNotify) -> Result<ArgBuf> {
    const _: () = assert!(size_of::<IoctlGntdevUnmapNotify>() == 16);
    unmap_notify(
        [
            offset_of!(IoctlGntdevUnmapNotify, index),
            offset_of!(IoctlGntdevUnmapNotify, action),
            offset_of!(IoctlGntdevUnmapNotify, event_channel_port),
        ],
        map_index,
        map_len,
        notify,
    )
}

/// `struct ioctl_gntalloc_unmap_notify`, as [`gntdev_unmap_notify`].
pub fn gntalloc_unmap_notify(
    map_index: u64,
    map_len: usize,
    notify: UnmapNotify,
) -> Result<ArgBuf> {
    const _: () = assert!(size_of::<IoctlGntallocUnmapNotify>() == 16);
    unmap_notify(
        [
            offset_of!(IoctlGntallocUnmapNotify, index),
            offset_of!(IoctlGntallocUnmapNotify, action),
            offset_of!(IoctlGntallocUnmapNotify, event_channel_port),
        ],
        map_index,
        map_len,
        notify,
    )
}

// ---------------------------------------------------------------- grant copy

/// One `struct gntdev_grant_copy_segment`. Addresses are this process's; the
/// kernel pins the pages behind them during the ioctl.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CopySegment {
    /// From a granted page (`GNTCOPY_source_gref`) into local memory at `dest`.
    FromGrant {
        /// The granting domain.
        domid: DomId,
        /// Its grant reference.
        gref: GrantRef,
        /// Offset in the granted page.
        offset: u16,
        /// Local address to copy to.
        dest: usize,
        /// Bytes to copy.
        len: u16,
    },
    /// From local memory at `src` into a granted page (`GNTCOPY_dest_gref`).
    ToGrant {
        /// Local address to copy from.
        src: usize,
        /// The granting domain.
        domid: DomId,
        /// Its grant reference.
        gref: GrantRef,
        /// Offset in the granted page.
        offset: u16,
        /// Bytes to copy.
        len: u16,
    },
}

impl CopySegment {
    /// Refuse what the kernel would refuse for the whole ioctl (`EINVAL`): a range
    /// that leaves the granted page. Xen's name for it is `GNTST_bad_copy_arg`.
    pub fn check(offset: u16, len: usize) -> std::result::Result<u16, String> {
        match usize::from(offset).checked_add(len) {
            Some(end) if end <= XEN_PAGE => Ok(len as u16),
            _ => Err(format!(
                "a copy of {len} bytes at offset {offset} leaves the {XEN_PAGE}-byte granted page \
                 (GNTST_bad_copy_arg); not submitted"
            )),
        }
    }
}

fn put_foreign(a: &mut ArgBuf, at: usize, domid: DomId, gref: GrantRef, offset: u16) -> Result<()> {
    a.put(
        at + offset_of!(GntdevCopyForeign, ref_),
        &gref.0.to_ne_bytes(),
    )?;
    a.put(
        at + offset_of!(GntdevCopyForeign, offset),
        &offset.to_ne_bytes(),
    )?;
    a.put(
        at + offset_of!(GntdevCopyForeign, domid),
        &domid.0.to_ne_bytes(),
    )
}

/// The array of `struct gntdev_grant_copy_segment`, `status` zero.
pub fn grant_copy_segments(segs: &[CopySegment]) -> Result<ArgBuf> {
    let seg = size_of::<GntdevGrantCopySegment>();
    let bytes = segs
        .len()
        .checked_mul(seg)
        .ok_or_else(|| Error::Limit(format!("{} grant copy segments", segs.len())))?;
    let mut a = ArgBuf::zeroed(bytes);
    let source = offset_of!(GntdevGrantCopySegment, source);
    let dest = offset_of!(GntdevGrantCopySegment, dest);
    for (i, s) in segs.iter().enumerate() {
        let at = i * seg;
        let (len, flags) = match *s {
            CopySegment::FromGrant {
                domid,
                gref,
                offset,
                dest: addr,
                len,
            } => {
                put_foreign(&mut a, at + source, domid, gref, offset)?;
                a.put(at + dest, &addr.to_ne_bytes())?;
                (len, GNTCOPY_SOURCE_GREF)
            }
            CopySegment::ToGrant {
                src,
                domid,
                gref,
                offset,
                len,
            } => {
                a.put(at + source, &src.to_ne_bytes())?;
                put_foreign(&mut a, at + dest, domid, gref, offset)?;
                (len, GNTCOPY_DEST_GREF)
            }
        };
        a.put(
            at + offset_of!(GntdevGrantCopySegment, len),
            &len.to_ne_bytes(),
        )?;
        a.put(
            at + offset_of!(GntdevGrantCopySegment, flags),
            &flags.to_ne_bytes(),
        )?;
    }
    Ok(a)
}

/// The `status` (`GNTST_*`) the kernel wrote into segment `i`.
pub fn grant_copy_status(segments: &ArgBuf, i: usize) -> Option<i16> {
    let at = i
        .checked_mul(size_of::<GntdevGrantCopySegment>())?
        .checked_add(offset_of!(GntdevGrantCopySegment, status))?;
    segments.read_i16(at)
}

/// `struct ioctl_gntdev_grant_copy` pointing at `segments`.
pub fn grant_copy(segments: &mut ArgBuf) -> Result<ArgBuf> {
    let n = segments.len() / size_of::<GntdevGrantCopySegment>();
    let count = u32::try_from(n)
        .map_err(|_| Error::Limit(format!("{n} grant copy segments (more than 2^32)")))?;
    grant_copy_at(count, segments.addr())
}

/// `struct ioctl_gntdev_grant_copy` of `count` segments at address `segments`.
pub fn grant_copy_at(count: u32, segments: usize) -> Result<ArgBuf> {
    let mut a = ArgBuf::zeroed(size_of::<IoctlGntdevGrantCopy>());
    a.put(
        offset_of!(IoctlGntdevGrantCopy, count),
        &count.to_ne_bytes(),
    )?;
    a.put(
        offset_of!(IoctlGntdevGrantCopy, segments),
        &segments.to_ne_bytes(),
    )?;
    Ok(a)
}

/// What a `GNTST_*` status means (`xen/grant_table.h`), for error messages.
pub fn gntst_reason(status: i16) -> String {
    let (name, what) = match status {
        GNTST_OKAY => ("GNTST_okay", "success"),
        GNTST_GENERAL_ERROR => ("GNTST_general_error", "general error"),
        GNTST_BAD_DOMAIN => ("GNTST_bad_domain", "no such domain"),
        GNTST_BAD_GNTREF => (
            "GNTST_bad_gntref",
            "not a valid grant of that domain (never granted, revoked, or out of range)",
        ),
        GNTST_BAD_HANDLE => ("GNTST_bad_handle", "bad grant handle"),
        GNTST_BAD_VIRT_ADDR => ("GNTST_bad_virt_addr", "bad local address"),
        GNTST_BAD_DEV_ADDR => ("GNTST_bad_dev_addr", "bad device address"),
        GNTST_NO_DEVICE_SPACE => ("GNTST_no_device_space", "out of I/O MMU space"),
        GNTST_PERMISSION_DENIED => (
            "GNTST_permission_denied",
            "permission denied (granted to another domain, or read-only and this copy writes it)",
        ),
        GNTST_BAD_PAGE => ("GNTST_bad_page", "the page is not valid for this operation"),
        GNTST_BAD_COPY_ARG => ("GNTST_bad_copy_arg", "the copy leaves the page"),
        GNTST_ADDRESS_TOO_BIG => ("GNTST_address_too_big", "page address too large"),
        GNTST_EAGAIN => ("GNTST_eagain", "the page is paged out; try again"),
        GNTST_NO_SPACE => ("GNTST_no_space", "out of grant handles"),
        other => return format!("unknown grant status {other}"),
    };
    format!("{what} ({name})")
}
