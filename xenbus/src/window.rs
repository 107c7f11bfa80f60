//! A grant window: one range of address space into which single grants are
//! mapped, each at a slot the caller picks, so that grants in neighbouring
//! slots are neighbours in memory.
//!
//! A backend that keeps the frontend's grants mapped (persistent grants) maps
//! each grant once, on first use. Mapped anywhere, the pages of one request are
//! scattered: a 1 MiB I/O reaches the kernel as 256 separate buffers, and the
//! kernel pins each page with a call of its own. Mapped at slot = grant
//! reference in one window, the pages of a request whose grant references are
//! consecutive (a frontend that grants its buffers in runs, as xenio's does)
//! form one buffer.
//!
//! The window is reserved address space (`PROT_NONE`, no memory behind it);
//! [`GrantMapper::map_in`](crate::GrantMapper::map_in) maps a grant over one
//! slot with `MAP_FIXED`, and dropping the returned region puts the
//! reservation back over the slot in one step (the grant is unmapped, the
//! address is never given to anything else) before the slot can be taken
//! again. A slot holds one mapping at a time.

use crate::error::{Error, Result};
use nix::sys::mman::{MapFlags, ProtFlags, mmap_anonymous, munmap};
use std::num::NonZeroUsize;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex};

/// 4 KiB, a grant's page.
const PAGE: usize = 4096;

/// Reserved address space for `slots` single-page grant mappings.
#[derive(Clone, Debug)]
pub struct GrantWindow {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    base: NonNull<u8>,
    slots: usize,
    taken: Mutex<Vec<bool>>,
}

// SAFETY: `base` is the address of a reservation owned by this value; it has no
// thread affinity, and the bytes are only reached through the regions mapped
// into it (whose owners hold a `Slot`, and so an `Arc` of this).
unsafe impl Send for Inner {}
// SAFETY: as above; shared access is to the address and the `Mutex`.
unsafe impl Sync for Inner {}

impl Drop for Inner {
    fn drop(&mut self) {
        // Every slot's owner holds an `Arc` of this, so no mapping is left in
        // the range: it is all reservation.
        // SAFETY: the whole range was reserved by `GrantWindow::new` and is owned
        // by this value alone.
        let _ = unsafe { munmap(self.base.cast(), self.slots * PAGE) };
    }
}

impl GrantWindow {
    /// Reserve address space for `slots` pages (no memory is used until grants
    /// are mapped into it).
    ///
    /// # Errors
    ///
    /// [`Error::Limit`] for zero slots or a size that overflows,
    /// [`Error::Io`] when the kernel refuses the reservation.
    pub fn new(slots: usize) -> Result<Self> {
        let len = slots
            .checked_mul(PAGE)
            .and_then(NonZeroUsize::new)
            .ok_or_else(|| Error::Limit(format!("a grant window of {slots} slots")))?;
        // SAFETY: an anonymous PROT_NONE reservation at an address the kernel
        // picks; it aliases nothing.
        let base = unsafe {
            mmap_anonymous(
                None,
                len,
                ProtFlags::PROT_NONE,
                MapFlags::MAP_PRIVATE | MapFlags::MAP_NORESERVE,
            )
        }
        .map_err(|e| Error::io("reserving a grant window", e.into()))?;
        Ok(GrantWindow {
            inner: Arc::new(Inner {
                base: base.cast(),
                slots,
                taken: Mutex::new(vec![false; slots]),
            }),
        })
    }

    /// How many pages it holds.
    pub fn slots(&self) -> usize {
        self.inner.slots
    }

    /// The address of slot `slot` (for tests and diagnostics: whether two
    /// regions are neighbours).
    pub fn addr(&self, slot: usize) -> Option<usize> {
        (slot < self.inner.slots).then(|| self.inner.base.as_ptr() as usize + slot * PAGE)
    }

    /// Take slot `slot` for a mapping: `None` when it is out of range or holds
    /// a mapping already.
    pub(crate) fn take(&self, slot: usize) -> Option<Slot> {
        if slot >= self.inner.slots {
            return None;
        }
        let mut taken = self.inner.taken.lock().ok()?;
        if std::mem::replace(&mut taken[slot], true) {
            return None;
        }
        Some(Slot {
            window: self.inner.clone(),
            index: slot,
        })
    }
}

/// A taken slot. Whoever maps a grant over it keeps this in the mapping's
/// owner, dropped first: dropping it puts the reservation back over the page
/// (unmapping whatever was mapped there), then frees the slot.
#[derive(Debug)]
pub(crate) struct Slot {
    window: Arc<Inner>,
    index: usize,
}

impl Slot {
    /// The slot's page.
    pub(crate) fn addr(&self) -> NonNull<u8> {
        // In range: checked when the slot was taken.
        NonNull::new(self.window.base.as_ptr().wrapping_add(self.index * PAGE))
            .expect("inside a mapped window")
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let addr = NonZeroUsize::new(self.addr().as_ptr() as usize).expect("non-null");
        // SAFETY: MAP_FIXED over exactly this slot's page of our own window, which
        // only this slot's mapping used; the region over it is being dropped, so
        // nothing reads or writes the page any more.
        let r = unsafe {
            mmap_anonymous(
                Some(addr),
                NonZeroUsize::new(PAGE).expect("non-zero"),
                ProtFlags::PROT_NONE,
                MapFlags::MAP_PRIVATE | MapFlags::MAP_NORESERVE | MapFlags::MAP_FIXED,
            )
        };
        match r {
            Ok(_) => {
                if let Ok(mut taken) = self.window.taken.lock() {
                    taken[self.index] = false;
                }
            }
            // The old mapping may still be there: keep the slot taken for good
            // rather than map over it again.
            Err(e) => tracing::warn!("returning grant window slot {}: {e}", self.index),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_taken_once_and_given_back() {
        let w = GrantWindow::new(8).unwrap();
        assert_eq!(w.slots(), 8);
        let a = w.take(3).unwrap();
        assert!(w.take(3).is_none(), "a slot holds one mapping");
        assert!(w.take(8).is_none(), "out of range");
        assert_eq!(a.addr().as_ptr() as usize, w.addr(3).unwrap());
        assert_eq!(w.addr(4).unwrap() - w.addr(3).unwrap(), PAGE);
        drop(a);
        assert!(w.take(3).is_some(), "free again");
        assert!(GrantWindow::new(0).is_err());
    }
}
