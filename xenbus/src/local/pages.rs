//! Mapping pages of a file into one contiguous range: the OS wrapper behind local
//! grants (pool pages granted by a frontend, grants mapped by a backend).

use crate::error::{Error, Result};
use crate::region::{ReadOnlyRegion, Region};
use crate::window::Slot;
use nix::sys::mman::{MapFlags, ProtFlags, mmap, mmap_anonymous, munmap};
use std::fs::File;
use std::num::NonZeroUsize;
use std::ptr::NonNull;
use std::sync::atomic::AtomicU64;

/// 4 KiB, the grant unit.
pub const PAGE: usize = 4096;

/// A contiguous mapping of file pages; unmapped on drop.
#[derive(Debug)]
pub(crate) struct PageMap {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain shared memory owned by this value; it carries no
// thread affinity.
unsafe impl Send for PageMap {}
// SAFETY: as above; access goes through `Region`'s copies or atomics.
unsafe impl Sync for PageMap {}

impl PageMap {
    /// Map `pages` (page indices into `file`) in order, read-write or read-only.
    /// `file` must have been opened with matching access; every page must lie
    /// inside the file (the caller checks the size), or touching it would SIGBUS.
    pub(crate) fn new(file: &File, pages: &[u64], writable: bool) -> Result<PageMap> {
        let len = pages.len() * PAGE;
        let nz =
            NonZeroUsize::new(len).ok_or_else(|| Error::Limit("mapping of zero pages".into()))?;
        let prot = if writable {
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE
        } else {
            ProtFlags::PROT_READ
        };
        // SAFETY: an anonymous PROT_NONE reservation at an address the kernel picks;
        // it aliases nothing.
        let base = unsafe { mmap_anonymous(None, nz, ProtFlags::PROT_NONE, MapFlags::MAP_PRIVATE) }
            .map_err(|e| Error::io("reserving address space for a page mapping", e.into()))?;
        let map = PageMap {
            ptr: base.cast(),
            len,
        };
        // Runs of consecutive file pages become one mmap each.
        let mut i = 0;
        while i < pages.len() {
            let mut j = i + 1;
            while j < pages.len() && pages[j] == pages[j - 1] + 1 {
                j += 1;
            }
            let addr = map.ptr.as_ptr() as usize + i * PAGE;
            let offset = pages[i]
                .checked_mul(PAGE as u64)
                .and_then(|o| i64::try_from(o).ok())
                .ok_or_else(|| Error::Limit(format!("page index {} is out of range", pages[i])))?;
            // SAFETY: MAP_FIXED replaces pages of our own PROT_NONE reservation (in
            // bounds: i..j < pages.len()), which nothing else references.
            unsafe {
                mmap(
                    NonZeroUsize::new(addr),
                    NonZeroUsize::new((j - i) * PAGE).expect("non-empty run"),
                    prot,
                    MapFlags::MAP_SHARED | MapFlags::MAP_FIXED,
                    file,
                    offset,
                )
            }
            .map_err(|e| {
                Error::io(
                    format!("mapping pages {}..{} of a pool", pages[i], pages[j - 1] + 1),
                    e.into(),
                )
            })?;
            i = j;
        }
        Ok(map)
    }

    pub(crate) fn into_region(self) -> Region {
        let (ptr, len) = (self.ptr, self.len);
        // SAFETY: read-write shared mapping of `len` bytes, page aligned, unmapped
        // only when the owner (self) drops; no references to it exist.
        unsafe { Region::from_raw(ptr, len, Box::new(self)) }
    }

    pub(crate) fn into_readonly_region(self) -> ReadOnlyRegion {
        let (ptr, len) = (self.ptr, self.len);
        // SAFETY: as above, readable for `len` bytes.
        unsafe { ReadOnlyRegion::from_raw(ptr, len, Box::new(self)) }
    }
}

impl Drop for PageMap {
    fn drop(&mut self) {
        // SAFETY: the whole range is ours (the reservation and the fixed mappings in
        // it), and the region that borrowed it is being dropped.
        let _ = unsafe { munmap(self.ptr.cast(), self.len) };
    }
}

/// Map page `page` of `file` read-write over `slot` of a grant window
/// (`file` opened read-write, the page inside it: the caller checks the size).
/// Dropping the slot unmaps it again.
pub(crate) fn map_over(slot: &Slot, file: &File, page: u64) -> Result<()> {
    let offset = page
        .checked_mul(PAGE as u64)
        .and_then(|o| i64::try_from(o).ok())
        .ok_or_else(|| Error::Limit(format!("page index {page} is out of range")))?;
    let addr = NonZeroUsize::new(slot.addr().as_ptr() as usize).expect("non-null");
    // SAFETY: MAP_FIXED replaces exactly the page of a window slot this caller
    // holds (taken, so nothing else is mapped there or refers to it); the slot
    // puts the reservation back when dropped.
    unsafe {
        mmap(
            Some(addr),
            NonZeroUsize::new(PAGE).expect("non-zero"),
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
            MapFlags::MAP_SHARED | MapFlags::MAP_FIXED,
            file,
            offset,
        )
    }
    .map_err(|e| {
        Error::io(
            format!("mapping pool page {page} into a grant window"),
            e.into(),
        )
    })?;
    Ok(())
}

/// A whole file mapped shared, seen as 64-bit atomics (grant tables, map tracks).
#[derive(Debug)]
pub(crate) struct AtomicFile {
    map: memmap2::MmapRaw,
}

impl AtomicFile {
    pub(crate) fn new(file: &File, what: &str) -> Result<AtomicFile> {
        let map = memmap2::MmapOptions::new()
            .map_raw(file)
            .map_err(|e| Error::io(format!("mapping {what}"), e))?;
        if map.len() % 8 != 0 {
            return Err(Error::BadValue {
                what: what.into(),
                value: format!("{} bytes", map.len()),
            });
        }
        Ok(AtomicFile { map })
    }

    pub(crate) fn words(&self) -> &[AtomicU64] {
        // SAFETY: the mapping is page aligned, read-write for `len()` bytes and lives
        // as long as `self`; within this process it is only accessed through these
        // atomics. Other processes may write it at any time.
        unsafe {
            std::slice::from_raw_parts(
                self.map.as_mut_ptr().cast::<AtomicU64>(),
                self.map.len() / 8,
            )
        }
    }
}
