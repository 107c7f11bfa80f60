//! Typed access to a shared ring's words: the four indices of the header and the
//! entries after it. No ordering decisions are made here; the callers in
//! `front.rs` and `back.rs` pass the ordering of each access and say why.

use crate::error::RingError;
use crate::shm::SharedMemory;
use crate::sync::{AtomicU32, Ordering};
use bytemuck::Pod;
use std::marker::PhantomData;
use std::mem::size_of;
use xenio_xen_sys::ring::{RingIdx, SRING_HEADER_SIZE, const_ring_size, entry_size};

/// Word offsets of the header fields (`struct name##_sring`).
pub(crate) const REQ_PROD: usize = 0;
pub(crate) const REQ_EVENT: usize = 1;
pub(crate) const RSP_PROD: usize = 2;
pub(crate) const RSP_EVENT: usize = 3;
const ENTRIES: usize = SRING_HEADER_SIZE / 4;

/// A shared ring of `Req`/`Rsp` entries in the memory `M`.
pub(crate) struct Sring<Req, Rsp, M> {
    mem: M,
    size: u32,
    entry_words: usize,
    _entries: PhantomData<fn() -> (Req, Rsp)>,
}

impl<Req: Pod, Rsp: Pod, M: SharedMemory> Sring<Req, Rsp, M> {
    pub(crate) fn new(mem: M) -> Result<Self, RingError> {
        const {
            assert!(
                size_of::<Req>() % 4 == 0 && size_of::<Rsp>() % 4 == 0,
                "ring entries are copied as 32-bit words: their sizes must be multiples of 4"
            )
        };
        let entry = entry_size::<Req, Rsp>();
        let region_bytes = mem.len_bytes();
        let size = const_ring_size(region_bytes, entry);
        if size == 0 {
            return Err(RingError::RegionTooSmall {
                region_bytes,
                entry_bytes: entry,
            });
        }
        Ok(Sring {
            mem,
            size,
            entry_words: entry / 4,
            _entries: PhantomData,
        })
    }

    /// `RING_SIZE`: entries in the ring, a power of two.
    pub(crate) fn size(&self) -> u32 {
        self.size
    }

    pub(crate) fn memory(&self) -> &M {
        &self.mem
    }

    pub(crate) fn load(&self, field: usize, order: Ordering) -> RingIdx {
        self.mem.words()[field].load(order)
    }

    pub(crate) fn store(&self, field: usize, value: RingIdx, order: Ordering) {
        self.mem.words()[field].store(value, order)
    }

    /// Zero `pvt` and `__pad` (part of `SHARED_RING_INIT`).
    pub(crate) fn clear_header_padding(&self) {
        for w in &self.mem.words()[4..ENTRIES] {
            w.store(0, Ordering::Relaxed);
        }
    }

    fn slot(&self, idx: RingIdx, bytes: usize) -> &[AtomicU32] {
        // The mask keeps the slot inside the ring whatever index a peer made us use.
        let start = ENTRIES + (idx & (self.size - 1)) as usize * self.entry_words;
        &self.mem.words()[start..start + bytes / 4]
    }

    /// Copy the entry at `idx` out of shared memory (`RING_COPY_REQUEST` /
    /// `RING_COPY_RESPONSE`): each word is read exactly once, so the peer cannot
    /// change the value after it was looked at (XSA-155).
    #[inline]
    pub(crate) fn read<T: Pod>(&self, idx: RingIdx) -> T {
        let mut value = T::zeroed();
        self.read_into(idx, &mut value);
        value
    }

    /// [`Sring::read`] into `dst`, which the caller keeps (a vector's element, so
    /// that a batch is copied once, straight to where it is used).
    #[inline]
    pub(crate) fn read_into<T: Pod>(&self, idx: RingIdx, dst: &mut T) {
        let slot = self.slot(idx, size_of::<T>());
        // Relaxed loads: the caller's Acquire load of the producer index ordered these
        // reads after the peer's writes of the entry.
        for (chunk, w) in bytemuck::bytes_of_mut(dst).chunks_exact_mut(4).zip(slot) {
            chunk.copy_from_slice(&w.load(Ordering::Relaxed).to_ne_bytes());
        }
    }

    /// Write an entry at `idx` (`RING_GET_REQUEST` / `RING_GET_RESPONSE` then assign).
    /// Every byte of `T` is initialised (`Pod`), so no stale data leaks (XSA-216).
    #[inline]
    pub(crate) fn write<T: Pod>(&self, idx: RingIdx, value: &T) {
        let slot = self.slot(idx, size_of::<T>());
        // Relaxed stores: published to the peer by the caller's Release store of the
        // producer index. `value` was usually built field by field just before; a
        // 32-bit read of it is forwarded from a 32- or 64-bit field's store, where a
        // wider one would wait for the stores to reach the cache.
        for (chunk, w) in bytemuck::bytes_of(value).chunks_exact(4).zip(slot) {
            w.store(word(chunk), Ordering::Relaxed);
        }
    }
}

/// Four bytes as a native-endian word.
#[inline]
fn word(bytes: &[u8]) -> u32 {
    let mut b = [0; 4];
    b.copy_from_slice(bytes);
    u32::from_ne_bytes(b)
}

/// The notify test of `RING_PUSH_*_AND_CHECK_NOTIFY`: did the producer index move
/// from `old` to `new` across the peer's `event` (i.e. `old < event <= new`,
/// in wrapping arithmetic)?
pub(crate) fn crossed(old: RingIdx, new: RingIdx, event: RingIdx) -> bool {
    new.wrapping_sub(event) < new.wrapping_sub(old)
}
