//! Mapping and copying a peer's grants over `/dev/xen/gntdev` (the backend side).
//!
//! The kernel's side (Linux `drivers/xen/gntdev.c`): `IOCTL_GNTDEV_MAP_GRANT_REF`
//! only records the grants and returns an mmap offset (`index`); the grants are
//! mapped by the `mmap(MAP_SHARED)` at that offset, read-only when the mapping is
//! not writable, and a refusal by Xen for any of them fails the `mmap` with
//! `EINVAL` (the kernel does not say which). `munmap` unmaps the grants and
//! `IOCTL_GNTDEV_UNMAP_GRANT_REF` frees the slot. `IOCTL_GNTDEV_GRANT_COPY` runs
//! `GNTTABOP_copy` per segment and writes each segment's `GNTST_*` status back; a
//! segment that leaves its granted page fails the whole call with `EINVAL`, which
//! is why [`GntdevDevice::copy`](crate::GrantMapper::copy) checks that first.

use super::abi::{self, CopySegment};
use super::device::{GNTDEV_PATH, Mapping, UnmapNotify, XEN_PAGE, errno_text, open_device};
use crate::error::{Error, Result};
use crate::grant::{CopyBuf, GrantCopy, GrantMapper};
use crate::region::{ReadOnlyRegion, Region};
use crate::window::{GrantWindow, Slot};
use nix::errno::Errno;
use std::collections::HashMap;
use std::fs::File;
use std::num::NonZeroUsize;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use xenio_xen_sys::ioctl::gntdev::*;
use xenio_xen_sys::{DomId, GrantRef};

const MODULE: &str = "xen-gntdev";

/// How long a map retries an `mmap` that says `EAGAIN` (a granted page of the
/// peer is paged out), as libxengnttab does, before giving up.
const EAGAIN_RETRIES: u32 = 1000;

/// One live mapping of this descriptor.
#[derive(Clone, Copy, Debug)]
struct MapInfo {
    index: u64,
    len: usize,
    writable: bool,
}

#[derive(Debug)]
struct Dev {
    file: File,
    path: PathBuf,
    /// Live mappings by start address: which index a region has, so that
    /// `set_unmap_notify` only ever addresses mappings of this descriptor.
    maps: Mutex<HashMap<usize, MapInfo>>,
}

impl Dev {
    fn io(&self, what: String, e: Errno) -> Error {
        Error::io(
            format!("{what} on {}", self.path.display()),
            std::io::Error::from(e),
        )
    }

    fn unmap_grant_ref(&self, index: u64, count: u32) -> Result<()> {
        let arg = IoctlGntdevUnmapGrantRef {
            index,
            count,
            pad: 0,
        };
        // SAFETY: `arg` is a valid `ioctl_gntdev_unmap_grant_ref`, only read by the
        // kernel during the call; the descriptor is ours.
        unsafe { gntdev_unmap_grant_ref(self.file.as_raw_fd(), &arg) }
            .map(drop)
            .map_err(|e| {
                self.io(
                    format!("IOCTL_GNTDEV_UNMAP_GRANT_REF of {count} pages at index {index:#x}"),
                    e,
                )
            })
    }

    fn forget(&self, addr: usize) {
        match self.maps.lock() {
            Ok(mut m) => {
                m.remove(&addr);
            }
            Err(poisoned) => {
                poisoned.into_inner().remove(&addr);
            }
        }
    }
}

/// A mapping's owner: unmaps the pages, then frees the descriptor's slot.
#[derive(Debug)]
struct GntdevMap {
    mapping: Option<Mapping>,
    dev: Arc<Dev>,
    index: u64,
    count: u32,
}

impl Drop for GntdevMap {
    fn drop(&mut self) {
        if let Some(m) = self.mapping.take() {
            // Forget it before the address can be reused by another mapping.
            self.dev.forget(m.ptr.as_ptr() as usize);
            drop(m);
        }
        if let Err(e) = self.dev.unmap_grant_ref(self.index, self.count) {
            tracing::warn!("{e}");
        }
    }
}

/// Mapping and copying grants over `/dev/xen/gntdev` ([`GrantMapper`]). One
/// descriptor is shared by every mapping it makes.
#[derive(Clone, Debug)]
pub struct GntdevDevice {
    dev: Arc<Dev>,
}

/// A region mapped by [`GntdevDevice`] ([`Region`] or [`ReadOnlyRegion`]), for
/// [`GntdevDevice::set_unmap_notify`].
pub trait GrantRegion: sealed::Sealed {
    /// The start address.
    fn start(&self) -> usize;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for crate::region::Region {}
    impl Sealed for crate::region::ReadOnlyRegion {}
}

impl GrantRegion for Region {
    fn start(&self) -> usize {
        self.as_ptr() as usize
    }
}

impl GrantRegion for ReadOnlyRegion {
    fn start(&self) -> usize {
        self.as_ptr() as usize
    }
}

impl GntdevDevice {
    /// Open `/dev/xen/gntdev`. Fails with [`Error::Unavailable`] (saying how to
    /// fix it) when the device is missing.
    pub fn open() -> Result<Self> {
        Self::open_path(GNTDEV_PATH)
    }

    /// Open the grant mapping device at `path` (a non-standard device node).
    pub fn open_path(path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        let file = open_device(&path, MODULE, false)?;
        Ok(GntdevDevice {
            dev: Arc::new(Dev {
                file,
                path,
                maps: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The device path.
    pub fn path(&self) -> &Path {
        &self.dev.path
    }

    /// `IOCTL_GNTDEV_SET_MAX_GRANTS`: the most grants this descriptor may map at
    /// once. Mainline Linux never implemented it (the limit is the module
    /// parameter `xen_gntdev.limit` per map, 65536 by default) and answers
    /// `ENOTTY`, which, like libxengnttab, this treats as success.
    pub fn set_max_grants(&self, count: u32) -> Result<()> {
        let arg = IoctlGntdevSetMaxGrants { count };
        // SAFETY: `arg` is a valid `ioctl_gntdev_set_max_grants`, only read by the
        // kernel during the call; the descriptor is ours.
        match unsafe { gntdev_set_max_grants(self.dev.file.as_raw_fd(), &arg) } {
            Ok(_) | Err(Errno::ENOTTY) => Ok(()),
            Err(e) => Err(self
                .dev
                .io(format!("IOCTL_GNTDEV_SET_MAX_GRANTS to {count}"), e)),
        }
    }

    /// `IOCTL_GNTDEV_SET_UNMAP_NOTIFY`: when `region` is unmapped (dropped, or this
    /// process dies), clear a byte of it and/or send an event, so the frontend
    /// learns that the backend is gone. Replaces an earlier notification. A
    /// read-only region can only send an event. `region` must come from this
    /// device (the same descriptor).
    pub fn set_unmap_notify<R: GrantRegion>(&self, region: &R, notify: UnmapNotify) -> Result<()> {
        let what = format!("IOCTL_GNTDEV_SET_UNMAP_NOTIFY ({notify:?})");
        let info = {
            let maps = self
                .dev
                .maps
                .lock()
                .map_err(|_| Error::Limit(format!("{what}: lock poisoned")))?;
            maps.get(&region.start()).copied()
        };
        let Some(info) = info else {
            return Err(Error::BadValue {
                what: format!("region for {what}"),
                value: format!(
                    "{:#x} was not mapped through this descriptor of {}",
                    region.start(),
                    self.dev.path.display()
                ),
            });
        };
        if notify.clear_byte.is_some() && !info.writable {
            return Err(Error::Limit(format!(
                "{what} on {}: a read-only mapping cannot clear a byte on unmap",
                self.dev.path.display()
            )));
        }
        let mut arg = abi::gntdev_unmap_notify(info.index, info.len, notify)?;
        let ptr = arg.as_mut_ptr::<IoctlGntdevUnmapNotify>()?;
        // SAFETY: `ptr` covers a complete `ioctl_gntdev_unmap_notify` (16 bytes,
        // 8-byte aligned) that the kernel only reads during the call.
        let r = unsafe { gntdev_set_unmap_notify(self.dev.file.as_raw_fd(), ptr) };
        r.map(drop).map_err(|e| {
            let hint = match e {
                Errno::EINVAL => {
                    ": the port is not an event channel bound through /dev/xen/evtchn in this \
                     domain (or the mapping is read-only)"
                }
                Errno::ENOENT => ": no mapping of this descriptor at that index",
                _ => "",
            };
            Error::io(
                format!("{what} on {}{hint}", self.dev.path.display()),
                std::io::Error::from(e),
            )
        })
    }

    /// `IOCTL_GNTDEV_MAP_GRANT_REF`: the index to mmap `refs` at, and their
    /// count.
    fn map_grant_ref(&self, domid: DomId, refs: &[GrantRef], what: &str) -> Result<(u64, u32)> {
        let dev = &self.dev;
        let count = u32::try_from(refs.len())
            .map_err(|_| Error::Limit(format!("{what}: more than 2^32")))?;
        let mut arg = abi::map_grant_ref(domid, refs)?;
        let ptr = arg.as_mut_ptr::<IoctlGntdevMapGrantRef>()?;
        // SAFETY: `ptr` points at `IoctlGntdevMapGrantRef::size_for(n)` bytes,
        // 8-byte aligned, exclusively borrowed for the call: the kernel reads the
        // header and `n` grant refs and writes the header back, all inside it.
        let r = unsafe { gntdev_map_grant_ref(dev.file.as_raw_fd(), ptr) };
        if let Err(e) = r {
            let hint = match e {
                Errno::EINVAL => {
                    ": too many grants for one map (module parameter xen_gntdev.limit, 65536 \
                     by default)"
                }
                Errno::ENOMEM => ": out of memory",
                _ => "",
            };
            return Err(dev.io(format!("IOCTL_GNTDEV_MAP_GRANT_REF ({what}){hint}"), e));
        }
        let Some(index) = abi::map_grant_ref_index(&arg) else {
            return Err(Error::Limit(format!("{what}: no index in the result")));
        };
        Ok((index, count))
    }

    /// MAP_GRANT_REF then mmap; the owner of the result undoes both.
    fn map_with(&self, domid: DomId, refs: &[GrantRef], writable: bool) -> Result<GntdevMap> {
        let dev = &self.dev;
        let n = refs.len();
        let access = if writable { "read-write" } else { "read-only" };
        let what = format!("mapping {n} grants of domain {domid} {access}");
        let len = n
            .checked_mul(XEN_PAGE)
            .and_then(NonZeroUsize::new)
            .ok_or_else(|| Error::Limit(format!("{what}: nothing to map, or too much")))?;
        let (index, count) = self.map_grant_ref(domid, refs, &what)?;
        let mut tries = 0;
        let mapping = loop {
            match Mapping::device(&dev.file, len, index, writable) {
                Ok(m) => break m,
                Err(Errno::EAGAIN) if tries < EAGAIN_RETRIES => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => {
                    if let Err(e2) = dev.unmap_grant_ref(index, count) {
                        tracing::warn!("after a failed grant mmap: {e2}");
                    }
                    return Err(map_refused(dev, domid, refs, &what, index, e));
                }
            }
        };
        let info = MapInfo {
            index,
            len: len.get(),
            writable,
        };
        let addr = mapping.ptr.as_ptr() as usize;
        let owner = GntdevMap {
            mapping: Some(mapping),
            dev: dev.clone(),
            index,
            count,
        };
        match dev.maps.lock() {
            Ok(mut m) => {
                m.insert(addr, info);
            }
            Err(_) => return Err(Error::Limit(format!("{what}: lock poisoned"))),
        }
        Ok(owner)
    }
}

/// The error for an mmap of grants that failed.
fn map_refused(
    dev: &Dev,
    domid: DomId,
    refs: &[GrantRef],
    what: &str,
    index: u64,
    e: Errno,
) -> Error {
    let shown: Vec<String> = refs.iter().take(8).map(|r| r.to_string()).collect();
    let more = if refs.len() > 8 { ", ..." } else { "" };
    match e {
        // Xen refused at least one of the grants (GNTST_* in the kernel's log only).
        Errno::EINVAL | Errno::EPERM | Errno::EFAULT => Error::Grant {
            domid,
            gref: refs.first().copied().unwrap_or_default(),
            reason: format!(
                "{what} (refs {}{more}) on {}: mmap at index {index:#x} failed ({}): Xen refused \
                 at least one grant: not granted to this domain, revoked, never granted, or \
                 read-only and mapped read-write",
                shown.join(", "),
                dev.path.display(),
                errno_text(e)
            ),
        },
        _ => dev.io(format!("mmap at index {index:#x} ({what})"), e),
    }
}

/// A grant mapped over a window slot: the slot goes back to the window
/// (unmapping the grant), then the descriptor's index is freed.
#[derive(Debug)]
struct GntdevSlot {
    slot: Option<Slot>,
    dev: Arc<Dev>,
    index: u64,
}

impl Drop for GntdevSlot {
    fn drop(&mut self) {
        drop(self.slot.take());
        if let Err(e) = self.dev.unmap_grant_ref(self.index, 1) {
            tracing::warn!("{e}");
        }
    }
}

impl GrantMapper for GntdevDevice {
    /// `IOCTL_GNTDEV_MAP_GRANT_REF` of the one grant, then `mmap(PROT_READ |
    /// PROT_WRITE, MAP_SHARED | MAP_FIXED)` of its index over the window's
    /// slot: gntdev maps a grant wherever its mapping is placed.
    fn map_in(
        &self,
        window: &GrantWindow,
        slot: usize,
        domid: DomId,
        gref: GrantRef,
    ) -> Result<Region> {
        let Some(slot) = window.take(slot) else {
            return self.map(domid, &[gref]);
        };
        let dev = &self.dev;
        let what = format!("mapping grant {gref} of domain {domid} read-write into a window");
        let (index, _) = self.map_grant_ref(domid, &[gref], &what)?;
        let mut tries = 0;
        loop {
            match Mapping::device_over(&dev.file, &slot, index) {
                Ok(()) => break,
                Err(Errno::EAGAIN) if tries < EAGAIN_RETRIES => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => {
                    // The slot's reservation goes back before the index is freed.
                    drop(slot);
                    if let Err(e2) = dev.unmap_grant_ref(index, 1) {
                        tracing::warn!("after a failed grant mmap: {e2}");
                    }
                    return Err(map_refused(dev, domid, &[gref], &what, index, e));
                }
            }
        }
        let ptr = slot.addr();
        let owner = GntdevSlot {
            slot: Some(slot),
            dev: dev.clone(),
            index,
        };
        // SAFETY: the slot's page is a read-write shared mapping of the grant
        // (just made), page aligned, kept until `owner` gives the slot back;
        // nothing else in this process refers to it.
        Ok(unsafe { Region::from_raw(ptr, XEN_PAGE, Box::new(owner)) })
    }

    /// `IOCTL_GNTDEV_MAP_GRANT_REF`, then `mmap(PROT_READ | PROT_WRITE,
    /// MAP_SHARED)` at the index. Dropping the region unmaps and frees the slot.
    fn map(&self, domid: DomId, refs: &[GrantRef]) -> Result<Region> {
        let owner = self.map_with(domid, refs, true)?;
        let Some(m) = owner.mapping.as_ref() else {
            return Err(Error::Limit("a gntdev map without its mapping".into()));
        };
        let (ptr, len) = (m.ptr, m.len);
        // SAFETY: `owner` holds a read-write shared mapping of `len` bytes, page
        // aligned, that it unmaps only when dropped with the region; nothing in this
        // process holds references into it.
        Ok(unsafe { Region::from_raw(ptr, len, Box::new(owner)) })
    }

    /// As [`map`](Self::map) with `mmap(PROT_READ)`: the kernel then maps the
    /// grants read-only (`GNTMAP_readonly`), so a read-only grant works.
    fn map_readonly(&self, domid: DomId, refs: &[GrantRef]) -> Result<ReadOnlyRegion> {
        let owner = self.map_with(domid, refs, false)?;
        let Some(m) = owner.mapping.as_ref() else {
            return Err(Error::Limit("a gntdev map without its mapping".into()));
        };
        let (ptr, len) = (m.ptr, m.len);
        // SAFETY: `owner` holds a readable shared mapping of `len` bytes, page
        // aligned, unmapped only when dropped with the region.
        Ok(unsafe { ReadOnlyRegion::from_raw(ptr, len, Box::new(owner)) })
    }

    /// `IOCTL_GNTDEV_GRANT_COPY` with one segment per op. An op that leaves its
    /// granted page is refused here (the kernel would fail the whole call); a
    /// zero-length op succeeds without a segment. Each submitted op's result is
    /// the status Xen wrote for its segment.
    fn copy(&self, ops: &mut [GrantCopy<'_>]) -> Result<Vec<Result<()>>> {
        let dev = &self.dev;
        let mut results: Vec<Option<Result<()>>> = Vec::with_capacity(ops.len());
        let mut segs = Vec::new();
        let mut submitted = Vec::new();
        for (i, op) in ops.iter_mut().enumerate() {
            let (len, addr, to_grant) = match &mut op.local {
                CopyBuf::FromGrant(b) => (b.len(), b.as_mut_ptr() as usize, false),
                CopyBuf::ToGrant(b) => (b.len(), b.as_ptr() as usize, true),
            };
            match CopySegment::check(op.offset, len) {
                Err(reason) => results.push(Some(Err(Error::Grant {
                    domid: op.domid,
                    gref: op.gref,
                    reason,
                }))),
                Ok(0) => results.push(Some(Ok(()))),
                Ok(len) => {
                    results.push(None);
                    segs.push(if to_grant {
                        CopySegment::ToGrant {
                            src: addr,
                            domid: op.domid,
                            gref: op.gref,
                            offset: op.offset,
                            len,
                        }
                    } else {
                        CopySegment::FromGrant {
                            domid: op.domid,
                            gref: op.gref,
                            offset: op.offset,
                            dest: addr,
                            len,
                        }
                    });
                    submitted.push(i);
                }
            }
        }
        if !segs.is_empty() {
            let mut seg_buf = abi::grant_copy_segments(&segs)?;
            let mut arg = abi::grant_copy(&mut seg_buf)?;
            let ptr = arg.as_mut_ptr::<IoctlGntdevGrantCopy>()?;
            // SAFETY: `ptr` is a complete `ioctl_gntdev_grant_copy` whose `segments`
            // points at `seg_buf` (`segs.len()` segments, 8-byte aligned), which the
            // kernel reads and whose `status` fields it writes. Each segment's local
            // address is a buffer of `ops`, borrowed (mutably for `FromGrant`, which
            // the kernel writes; shared for `ToGrant`, which it only reads) for this
            // whole function, and `len` stays inside it.
            let r = unsafe { gntdev_grant_copy(dev.file.as_raw_fd(), ptr) };
            if let Err(e) = r {
                return Err(dev.io(
                    format!("IOCTL_GNTDEV_GRANT_COPY of {} segments", segs.len()),
                    e,
                ));
            }
            for (k, &i) in submitted.iter().enumerate() {
                let op = &ops[i];
                let dir = match op.local {
                    CopyBuf::FromGrant(_) => "from",
                    CopyBuf::ToGrant(_) => "to",
                };
                let res = match abi::grant_copy_status(&seg_buf, k) {
                    Some(0) => Ok(()),
                    status => Err(Error::Grant {
                        domid: op.domid,
                        gref: op.gref,
                        reason: format!(
                            "grant copy {dir} the grant at offset {} through {}: {}",
                            op.offset,
                            dev.path.display(),
                            status.map_or_else(|| "no status".into(), abi::gntst_reason)
                        ),
                    }),
                };
                if let Some(slot) = results.get_mut(i) {
                    *slot = Some(res);
                }
            }
        }
        Ok(results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(Error::Limit("grant copy op not run".into()))))
            .collect())
    }
}
