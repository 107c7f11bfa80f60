//! Granting this domain's pages over `/dev/xen/gntalloc` (the frontend side).
//!
//! The kernel's side (Linux `drivers/xen/gntalloc.c`): `IOCTL_GNTALLOC_ALLOC_GREF`
//! allocates zeroed pages, grants each to the domain and returns the grant
//! references and an mmap offset (`index`) in this descriptor; `mmap(MAP_SHARED)`
//! at that offset maps them. A page is released when both the descriptor's
//! reference (dropped by `IOCTL_GNTALLOC_DEALLOC_GREF` or closing it) and every
//! mapping of it are gone, and even then the grant is only ended once the peer no
//! longer maps it: until then the kernel keeps the page aside (and counts it
//! against its limit, 1024 pages by default, module parameter `limit`).

use super::abi;
use super::device::{GNTALLOC_PATH, Mapping, UnmapNotify, XEN_PAGE, open_device};
use crate::error::{Error, Result};
use crate::grant::{Access, GrantTable, Granted};
use crate::region::Region;
use nix::errno::Errno;
use std::fs::File;
use std::num::NonZeroUsize;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use xenio_xen_sys::ioctl::gntalloc::*;
use xenio_xen_sys::{DomId, GrantRef};

const MODULE: &str = "xen-gntalloc";

#[derive(Debug)]
struct Dev {
    file: File,
    path: PathBuf,
}

/// Granting pages over `/dev/xen/gntalloc` ([`GrantTable`]). One descriptor is
/// shared by every grant it hands out.
#[derive(Clone, Debug)]
pub struct GntallocDevice {
    dev: Arc<Dev>,
}

impl GntallocDevice {
    /// Open `/dev/xen/gntalloc`. Fails with [`Error::Unavailable`] (saying how to
    /// fix it) when the device is missing.
    pub fn open() -> Result<Self> {
        Self::open_path(GNTALLOC_PATH)
    }

    /// Open the grant allocation device at `path` (a non-standard device node).
    pub fn open_path(path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        let file = open_device(&path, MODULE, false)?;
        Ok(GntallocDevice {
            dev: Arc::new(Dev { file, path }),
        })
    }

    /// The device path.
    pub fn path(&self) -> &Path {
        &self.dev.path
    }
}

impl Dev {
    fn io(&self, what: String, e: Errno) -> Error {
        Error::io(
            format!("{what} on {}", self.path.display()),
            std::io::Error::from(e),
        )
    }

    fn dealloc(&self, index: u64, count: u32) -> Result<()> {
        let arg = IoctlGntallocDeallocGref {
            index,
            count,
            _pad: 0,
        };
        // SAFETY: `arg` is a valid `ioctl_gntalloc_dealloc_gref`, only read by the
        // kernel during the call; the descriptor is ours.
        unsafe { gntalloc_dealloc_gref(self.file.as_raw_fd(), &arg) }
            .map(drop)
            .map_err(|e| {
                self.io(
                    format!("IOCTL_GNTALLOC_DEALLOC_GREF of {count} pages at index {index:#x}"),
                    e,
                )
            })
    }
}

impl GrantTable for GntallocDevice {
    type Granted = XenGranted;

    /// `IOCTL_GNTALLOC_ALLOC_GREF` (writable for [`Access::ReadWrite`]), then
    /// `mmap(MAP_SHARED)` of the pages at the returned index.
    fn grant(&self, to: DomId, pages: usize, access: Access) -> Result<XenGranted> {
        let dev = &self.dev;
        let what = format!("IOCTL_GNTALLOC_ALLOC_GREF of {pages} pages for domain {to}");
        let len = pages
            .checked_mul(XEN_PAGE)
            .and_then(NonZeroUsize::new)
            .ok_or_else(|| Error::Limit(format!("{what}: {pages} pages cannot be mapped")))?;
        let count = u32::try_from(pages)
            .map_err(|_| Error::Limit(format!("{what}: more than 2^32 pages")))?;
        let mut arg = abi::alloc_gref(to, access, pages)?;
        let ptr = arg.as_mut_ptr::<IoctlGntallocAllocGref>()?;
        // SAFETY: `ptr` points at `IoctlGntallocAllocGref::size_for(pages)` bytes,
        // 8-byte aligned, exclusively borrowed for the call: the kernel reads the
        // header and writes `index` and `pages` grant references, all inside it.
        let r = unsafe { gntalloc_alloc_gref(dev.file.as_raw_fd(), ptr) };
        if let Err(e) = r {
            let hint = match e {
                Errno::ENOSPC => {
                    ": the domain-wide gntalloc limit is reached (module parameter \
                     xen_gntalloc.limit, 1024 pages by default; pages revoked while a peer \
                     still maps them count until it unmaps)"
                }
                Errno::ENOMEM => ": out of memory, or the grant table is full",
                _ => "",
            };
            return Err(Error::io(
                format!("{what} on {}{hint}", dev.path.display()),
                std::io::Error::from(e),
            ));
        }
        let Some((index, refs)) = abi::alloc_gref_result(&arg, pages) else {
            return Err(Error::Limit(format!("{what}: the result does not fit")));
        };
        let mapping = match Mapping::device(&dev.file, len, index, true) {
            Ok(m) => m,
            Err(e) => {
                let err = dev.io(
                    format!("mmap of {pages} granted pages at index {index:#x}"),
                    e,
                );
                if let Err(e2) = dev.dealloc(index, count) {
                    tracing::warn!("after a failed mmap: {e2}");
                }
                return Err(err);
            }
        };
        let mapping = Arc::new(mapping);
        let (ptr, len) = (mapping.ptr, mapping.len);
        // SAFETY: `mapping` is a read-write shared mapping of `len` bytes, page
        // aligned, unmapped only when the last `Arc` of it drops (the region's owner
        // or `XenGranted::mapping`, both dropped with the `XenGranted`); a revoke
        // swaps in private pages but keeps the range readable and writable; nothing
        // in this process holds references into it.
        let region = unsafe { Region::from_raw(ptr, len, Box::new(mapping.clone())) };
        Ok(XenGranted {
            refs,
            region: Arc::new(region),
            mapping,
            dev: self.dev.clone(),
            index,
            count,
            to,
            revoked: false,
        })
    }
}

/// Pages granted through `/dev/xen/gntalloc`.
///
/// **Revoking differs from the local platform.** [`Granted::revoke`] (and
/// dropping) unmaps the pages from this process and gives them back to the kernel
/// (`IOCTL_GNTALLOC_DEALLOC_GREF`). It never fails because the peer still maps a
/// page: Linux cannot take a grant back from a peer, so it defers ending the
/// grant until the peer unmaps, and the peer keeps access to the (no longer
/// ours) page until then. The local platform instead refuses the revoke while a
/// live process maps the page. After a revoke, [`Granted::region`] is fresh
/// private zeroed memory at the same address, no longer shared with anyone.
#[derive(Debug)]
pub struct XenGranted {
    refs: Vec<GrantRef>,
    region: Arc<Region>,
    /// The same mapping the region's owner holds, to swap it out on revoke.
    mapping: Arc<Mapping>,
    dev: Arc<Dev>,
    index: u64,
    count: u32,
    to: DomId,
    revoked: bool,
}

impl XenGranted {
    /// The domain the pages are granted to.
    pub fn granted_to(&self) -> DomId {
        self.to
    }

    /// Whether [`Granted::revoke`] ran.
    pub fn is_revoked(&self) -> bool {
        self.revoked
    }

    /// `IOCTL_GNTALLOC_SET_UNMAP_NOTIFY`: when this side lets go of the pages
    /// (revoke, drop, or this process dying), clear a byte of the region and/or
    /// send an event, so the peer learns that the frontend is gone. Replaces an
    /// earlier notification. Only before [`Granted::revoke`].
    pub fn set_unmap_notify(&self, notify: UnmapNotify) -> Result<()> {
        let what = "IOCTL_GNTALLOC_SET_UNMAP_NOTIFY";
        if self.revoked {
            return Err(Error::Limit(format!(
                "{what} on {}: the grants are already revoked",
                self.dev.path.display()
            )));
        }
        let mut arg = abi::gntalloc_unmap_notify(self.index, self.region.len(), notify)?;
        let ptr = arg.as_mut_ptr::<IoctlGntallocUnmapNotify>()?;
        // SAFETY: `ptr` covers a complete `ioctl_gntalloc_unmap_notify` (16 bytes,
        // 8-byte aligned) that the kernel only reads during the call.
        let r = unsafe { gntalloc_set_unmap_notify(self.dev.file.as_raw_fd(), ptr) };
        r.map(drop).map_err(|e| {
            let hint = match e {
                Errno::EINVAL => {
                    ": the port is not an event channel bound through /dev/xen/evtchn in this \
                     domain"
                }
                Errno::ENOENT => ": these pages are not allocated through this descriptor",
                _ => "",
            };
            Error::io(
                format!("{what} ({notify:?}) on {}{hint}", self.dev.path.display()),
                std::io::Error::from(e),
            )
        })
    }

    /// The mmap offset of the first page in the gntalloc descriptor (page `i` is at
    /// `index() + i * 4096`).
    pub fn index(&self) -> u64 {
        self.index
    }
}

impl Granted for XenGranted {
    fn refs(&self) -> &[GrantRef] {
        &self.refs
    }

    fn region(&self) -> &Arc<Region> {
        &self.region
    }

    /// Unmap the granted pages (replacing them with private zero pages, so
    /// [`Granted::region`] stays valid memory), then
    /// `IOCTL_GNTALLOC_DEALLOC_GREF`. See the type's documentation for how this
    /// differs from the local platform: it does not wait for the peer.
    fn revoke(&mut self) -> Result<()> {
        if self.revoked {
            return Ok(());
        }
        self.mapping.replace_with_anonymous().map_err(|e| {
            self.dev.io(
                format!(
                    "unmapping {} granted pages at index {:#x} (mmap MAP_FIXED)",
                    self.count, self.index
                ),
                e,
            )
        })?;
        self.dev.dealloc(self.index, self.count)?;
        self.revoked = true;
        Ok(())
    }
}

impl Drop for XenGranted {
    fn drop(&mut self) {
        if let Err(e) = self.revoke() {
            // The descriptor still holds the pages; they go when it closes.
            tracing::warn!("revoking grants {:?}: {e}", self.refs);
        }
    }
}
