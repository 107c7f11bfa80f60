//! Memory regions a ring can live in. All of this crate's `unsafe` is here.
//!
//! A ring only ever touches its memory through aligned 32-bit atomics: the four
//! indices with the orderings documented in [`crate`], and the entries with
//! relaxed word-sized loads and stores. So a region is anything that can present
//! itself as a slice of [`AtomicU32`] ([`SharedMemory`]). Three are provided:
//!
//! - [`HeapMemory`]: a heap allocation, for both ends as threads of one process
//!   (share it with `Arc`). No `unsafe` at all.
//! - [`MmapRegion`]: a `MAP_SHARED` mapping of a file (a memfd, or a file under
//!   `/dev/shm`), for two processes.
//! - [`RawRegion`]: any pages mapped by someone else (a grant mapping, a region
//!   handed over by C), under the contract of [`RawRegion::new`].
//!
//! Because the peer is another program, nothing it writes into the region can make
//! these accesses unsound: every bit pattern is a valid `u32`, and the ring masks
//! each index before it becomes an offset.

use crate::sync::AtomicU32;
#[cfg(not(loom))]
use std::ptr::NonNull;

/// A region of memory holding a shared ring, seen as aligned 32-bit words.
///
/// Implementing it is safe: the ring reaches the memory only through the returned
/// atomics, and only at word offsets below `words().len()`.
pub trait SharedMemory {
    /// The region as 32-bit words. Its length must not change over the region's life.
    fn words(&self) -> &[AtomicU32];

    /// Length of the region in bytes.
    fn len_bytes(&self) -> usize {
        self.words().len() * 4
    }
}

impl<T: SharedMemory + ?Sized> SharedMemory for &T {
    #[inline]
    fn words(&self) -> &[AtomicU32] {
        (**self).words()
    }
}

impl<T: SharedMemory + ?Sized> SharedMemory for std::sync::Arc<T> {
    #[inline]
    fn words(&self) -> &[AtomicU32] {
        (**self).words()
    }
}

#[cfg(loom)]
impl<T: SharedMemory + ?Sized> SharedMemory for loom::sync::Arc<T> {
    #[inline]
    fn words(&self) -> &[AtomicU32] {
        (**self).words()
    }
}

impl<T: SharedMemory + ?Sized> SharedMemory for Box<T> {
    #[inline]
    fn words(&self) -> &[AtomicU32] {
        (**self).words()
    }
}

/// A zeroed heap region: both ends of a ring as threads of one process.
#[derive(Debug)]
pub struct HeapMemory {
    words: Box<[AtomicU32]>,
}

impl HeapMemory {
    /// A zeroed region of `bytes` bytes (rounded up to whole words).
    pub fn new(bytes: usize) -> Self {
        HeapMemory {
            words: (0..bytes.div_ceil(4)).map(|_| AtomicU32::new(0)).collect(),
        }
    }

    /// A zeroed region of `1 << order` 4 KiB pages, the size of a ring of that order.
    pub fn pages(order: u32) -> Self {
        Self::new(xenio_xen_sys::ring::ring_bytes(order))
    }
}

impl SharedMemory for HeapMemory {
    #[inline]
    fn words(&self) -> &[AtomicU32] {
        &self.words
    }
}

/// Cast `len` bytes at `ptr` to a slice of atomics.
///
/// # Safety
/// `ptr` must be 4-byte aligned and valid for reads and writes of `len` bytes for
/// `'a`, and within this process the bytes must only be accessed atomically during
/// `'a` (no `&[u8]` or `&mut` to them may exist).
#[cfg(not(loom))]
#[inline]
unsafe fn atomic_words<'a>(ptr: NonNull<u8>, len: usize) -> &'a [AtomicU32] {
    debug_assert_eq!(ptr.as_ptr() as usize % 4, 0);
    // SAFETY: AtomicU32 has the size and alignment of u32 and may alias memory that
    // other processes write; alignment, validity and atomic-only access are the
    // caller's contract.
    unsafe { std::slice::from_raw_parts(ptr.as_ptr().cast::<AtomicU32>(), len / 4) }
}

/// A shared (`MAP_SHARED`) mapping of a whole file: a ring between processes.
///
/// Create the file (a memfd, or a file under `/dev/shm`) and size it, then map it
/// here in every process that takes part.
#[cfg(not(loom))]
#[derive(Debug)]
pub struct MmapRegion {
    map: memmap2::MmapRaw,
    /// Start of the mapping (cached from `map`, which never moves it).
    ptr: NonNull<u8>,
}

#[cfg(not(loom))]
// SAFETY: the mapping is only accessed through atomics (see `words`), and the
// pointer is just a cached address of `map`, which is itself Send and Sync.
unsafe impl Send for MmapRegion {}
#[cfg(not(loom))]
// SAFETY: as above.
unsafe impl Sync for MmapRegion {}

#[cfg(not(loom))]
impl MmapRegion {
    /// Map all of `file` read-write and shared.
    pub fn from_file(file: &std::fs::File) -> std::io::Result<Self> {
        let len = file.metadata()?.len();
        if len == 0 || len % 4 != 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("a ring file must be a non-empty multiple of 4 bytes, this one has {len}"),
            ));
        }
        let map = memmap2::MmapOptions::new().map_raw(file)?;
        let ptr = NonNull::new(map.as_mut_ptr())
            .ok_or_else(|| std::io::Error::other("mmap returned null"))?;
        Ok(MmapRegion { map, ptr })
    }
}

#[cfg(not(loom))]
impl SharedMemory for MmapRegion {
    #[inline]
    fn words(&self) -> &[AtomicU32] {
        // SAFETY: `ptr` is the start of the mapping, page aligned, readable and writable
        // for `len()` bytes and alive as long as `self`; `MmapRaw` hands out no
        // references, and this is the only place that turns it into one (of atomics).
        unsafe { atomic_words(self.ptr, self.map.len()) }
    }
}

/// Pages mapped by someone else (a grant mapping, a buffer handed over by C).
#[cfg(not(loom))]
#[derive(Debug)]
pub struct RawRegion {
    ptr: NonNull<u8>,
    len: usize,
}

#[cfg(not(loom))]
// SAFETY: the region is only accessed through atomics, which are Sync and Send;
// the raw pointer itself carries no thread affinity.
unsafe impl Send for RawRegion {}
#[cfg(not(loom))]
// SAFETY: as above.
unsafe impl Sync for RawRegion {}

#[cfg(not(loom))]
impl RawRegion {
    /// Wrap `len` bytes at `ptr`. `len` is rounded down to whole words.
    ///
    /// # Safety
    /// For as long as the returned value (or anything borrowing it) lives:
    /// - `ptr` is 4-byte aligned and valid for reads and writes of `len` bytes
    ///   (the pages stay mapped: unmap only after dropping the region);
    /// - within this process, those bytes are accessed only through this region or
    ///   through other atomic accesses: no `&[u8]`, `&mut` or non-atomic copy of them.
    ///   Other processes and domains may write them in any way at any time.
    pub unsafe fn new(ptr: NonNull<u8>, len: usize) -> Self {
        assert_eq!(
            ptr.as_ptr() as usize % 4,
            0,
            "a ring region must be 4-byte aligned"
        );
        RawRegion { ptr, len: len & !3 }
    }
}

#[cfg(not(loom))]
impl SharedMemory for RawRegion {
    #[inline]
    fn words(&self) -> &[AtomicU32] {
        // SAFETY: the contract of `RawRegion::new` guarantees alignment, validity for
        // the region's life and atomic-only access.
        unsafe { atomic_words(self.ptr, self.len) }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering::Relaxed;

    #[test]
    fn heap_rounds_up_to_words() {
        assert_eq!(HeapMemory::new(5).len_bytes(), 8);
        assert_eq!(HeapMemory::pages(2).len_bytes(), 16384);
    }

    #[test]
    #[cfg_attr(miri, ignore = "Miri cannot map files")]
    fn mmap_region_is_shared_between_two_mappings() {
        let path = std::env::temp_dir().join(format!("xenio-shm-test-{}", std::process::id()));
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        f.set_len(4096).unwrap();
        let a = MmapRegion::from_file(&f).unwrap();
        let b = MmapRegion::from_file(&f).unwrap();
        a.words()[1023].store(0xfeed, Relaxed);
        assert_eq!(b.words()[1023].load(Relaxed), 0xfeed);
        assert_eq!(b.len_bytes(), 4096);
        std::fs::remove_file(&path).unwrap();
        f.set_len(3).unwrap();
        assert!(MmapRegion::from_file(&f).is_err());
    }

    #[test]
    fn raw_region_sees_the_same_words() {
        let backing: Vec<std::sync::atomic::AtomicU32> =
            (0..16).map(|_| Default::default()).collect();
        let ptr = NonNull::new(backing.as_ptr() as *mut u8).unwrap();
        // SAFETY: `backing` outlives `raw`, is aligned, and is only used atomically.
        let raw = unsafe { RawRegion::new(ptr, 16 * 4 + 3) };
        raw.words()[15].store(7, Relaxed);
        assert_eq!(backing[15].load(Relaxed), 7);
        assert_eq!(raw.len_bytes(), 64);
    }
}
