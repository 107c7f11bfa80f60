//! Memory shared with another domain: granted pages, mapped grants, rings.
//!
//! A [`Region`] is read-write and can hold a ring ([`SharedMemory`]); a
//! [`ReadOnlyRegion`] can only be read, so a read-only grant cannot be written
//! through safe code (the pages are also mapped without write permission, so even
//! a stray pointer write faults). Both unmap their pages when dropped.
//!
//! The peer may change the bytes at any moment. Copies out of a region are
//! therefore snapshots: validate the copy, never re-read the region.

use crate::error::{Error, Result};
use std::any::Any;
use std::ptr::NonNull;
use xenio_ring::{AtomicU32, SharedMemory};

/// Whatever keeps a region's pages mapped; dropped (and so unmapped) last.
pub type Owner = Box<dyn Any + Send + Sync>;

struct Raw {
    ptr: NonNull<u8>,
    len: usize,
    _owner: Owner,
}

// SAFETY: the region is plain memory shared with other processes; all access goes
// through copies or atomics, and the owner is Send + Sync.
unsafe impl Send for Raw {}
// SAFETY: as above.
unsafe impl Sync for Raw {}

impl Raw {
    fn check(&self, offset: usize, n: usize) -> Result<()> {
        match offset.checked_add(n) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(Error::Limit(format!(
                "access of {n} bytes at offset {offset} is outside a region of {} bytes",
                self.len
            ))),
        }
    }

    fn read(&self, offset: usize, buf: &mut [u8]) -> Result<()> {
        self.check(offset, buf.len())?;
        // SAFETY: the range is inside the mapping (checked above), which lives as long
        // as `self`; `buf` is a distinct local buffer. The peer may write concurrently:
        // we only ever copy the bytes, so a torn copy is garbage data, not unsoundness
        // in this process.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.ptr.as_ptr().add(offset),
                buf.as_mut_ptr(),
                buf.len(),
            )
        };
        Ok(())
    }
}

impl std::fmt::Debug for Raw {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:p}+{:#x}", self.ptr, self.len)
    }
}

/// Read-write shared pages.
#[derive(Debug)]
pub struct Region(Raw);

/// Read-only shared pages.
#[derive(Debug)]
pub struct ReadOnlyRegion(Raw);

impl Region {
    /// Wrap `len` bytes at `ptr`, kept alive (and later unmapped) by `owner`.
    ///
    /// # Safety
    /// `ptr` must be 4-byte aligned and readable and writable for `len` bytes until
    /// `owner` is dropped, and within this process the bytes must not be accessed
    /// through references (only through this region or raw pointers).
    pub unsafe fn from_raw(ptr: NonNull<u8>, len: usize, owner: Owner) -> Self {
        Region(Raw {
            ptr,
            len,
            _owner: owner,
        })
    }

    /// Private zeroed memory of `len` bytes (rounded up to whole 4 KiB pages):
    /// bounce buffers, grant-copy staging, tests.
    pub fn anonymous(len: usize) -> Result<Self> {
        let pages = len.div_ceil(4096).max(1) * 4096;
        let map = memmap2::MmapMut::map_anon(pages)
            .map_err(|e| Error::io(format!("allocating {pages} bytes"), e))?;
        let ptr = NonNull::new(map.as_ptr() as *mut u8)
            .ok_or_else(|| Error::Limit("mmap returned null".into()))?;
        // SAFETY: a private anonymous mapping, page aligned and read-write for `pages`
        // bytes, owned (and unmapped) by `map`, which the region keeps; the
        // `MmapMut` is moved into the owner and never dereferenced again, so no
        // reference to the bytes exists besides this region.
        Ok(unsafe { Region::from_raw(ptr, pages, Box::new(map)) })
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len
    }

    /// Whether the region is empty.
    pub fn is_empty(&self) -> bool {
        self.0.len == 0
    }

    /// The start address, for OS interfaces that take one (io_uring, ioctls).
    /// Using it is the caller's `unsafe` business.
    pub fn as_ptr(&self) -> *mut u8 {
        self.0.ptr.as_ptr()
    }

    /// Copy `buf.len()` bytes at `offset` out of the region.
    pub fn read(&self, offset: usize, buf: &mut [u8]) -> Result<()> {
        self.0.read(offset, buf)
    }

    /// Copy `data` into the region at `offset`.
    pub fn write(&self, offset: usize, data: &[u8]) -> Result<()> {
        self.0.check(offset, data.len())?;
        // SAFETY: in bounds (checked), writable for the region's life (contract of
        // `from_raw`); `data` is a distinct buffer.
        unsafe {
            std::ptr::copy_nonoverlapping(
                data.as_ptr(),
                self.0.ptr.as_ptr().add(offset),
                data.len(),
            )
        };
        Ok(())
    }

    /// The same memory, from now on only readable through the returned value.
    pub fn into_read_only(self) -> ReadOnlyRegion {
        ReadOnlyRegion(self.0)
    }

    /// Fill `len` bytes at `offset` with `byte`.
    pub fn fill(&self, offset: usize, len: usize, byte: u8) -> Result<()> {
        self.0.check(offset, len)?;
        // SAFETY: in bounds (checked) and writable (contract of `from_raw`).
        unsafe { std::ptr::write_bytes(self.0.ptr.as_ptr().add(offset), byte, len) };
        Ok(())
    }
}

impl ReadOnlyRegion {
    /// Wrap `len` bytes at `ptr`, kept alive (and later unmapped) by `owner`.
    ///
    /// # Safety
    /// As [`Region::from_raw`], but only readability is required.
    pub unsafe fn from_raw(ptr: NonNull<u8>, len: usize, owner: Owner) -> Self {
        ReadOnlyRegion(Raw {
            ptr,
            len,
            _owner: owner,
        })
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len
    }

    /// Whether the region is empty.
    pub fn is_empty(&self) -> bool {
        self.0.len == 0
    }

    /// The start address (for OS interfaces: a write through it faults).
    pub fn as_ptr(&self) -> *const u8 {
        self.0.ptr.as_ptr()
    }

    /// Copy `buf.len()` bytes at `offset` out of the region.
    pub fn read(&self, offset: usize, buf: &mut [u8]) -> Result<()> {
        self.0.read(offset, buf)
    }
}

impl SharedMemory for Region {
    #[inline]
    fn words(&self) -> &[AtomicU32] {
        // SAFETY: `from_raw` guarantees 4-byte alignment, read-write validity for the
        // region's life and no references to the bytes; AtomicU32 has u32's layout.
        unsafe {
            std::slice::from_raw_parts(self.0.ptr.as_ptr().cast::<AtomicU32>(), self.0.len / 4)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anonymous_regions_are_zeroed_pages_with_checked_access() {
        let r = Region::anonymous(5000).unwrap();
        assert_eq!(r.len(), 8192);
        let mut b = [1u8; 16];
        r.read(8192 - 16, &mut b).unwrap();
        assert_eq!(b, [0; 16]);
        r.write(100, b"xenio").unwrap();
        r.read(100, &mut b[..5]).unwrap();
        assert_eq!(&b[..5], b"xenio");
        assert!(r.write(8190, b"xyz").is_err());
        assert!(r.read(usize::MAX, &mut b).is_err());
        assert!(r.fill(0, 8193, 0).is_err());
    }
}
