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
//!
//! Dropping many such regions one by one costs one `mmap` each, and on a PV
//! Xen domain each of those is a TLB flush of its own (Linux's gntdev unmaps
//! the grant when its page is unmapped): [`GrantWindow::release`] puts the
//! reservation back over all of them with one `mmap` per run of neighbouring
//! slots instead, then drops them.

use crate::error::{Error, Result};
use crate::region::Region;
use nix::errno::Errno;
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
    state: Mutex<Vec<SlotState>>,
}

/// Where a slot is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SlotState {
    /// Reservation, free to take.
    Free,
    /// Taken: its owner may have mapped something over it.
    Taken,
    /// Still taken, but [`GrantWindow::release`] has put the reservation back
    /// over it already: its owner's drop only frees it.
    Cleared,
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
                state: Mutex::new(vec![SlotState::Free; slots]),
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
        let mut state = self.inner.state.lock().ok()?;
        if state[slot] != SlotState::Free {
            return None;
        }
        state[slot] = SlotState::Taken;
        Some(Slot {
            window: self.inner.clone(),
            index: slot,
        })
    }
}

impl GrantWindow {
    /// Drop `regions`, putting the reservation back over those mapped into
    /// this window ([`GrantMapper::map_in`](crate::GrantMapper::map_in)) with
    /// one `mmap` per run of neighbouring slots (free slots between them count
    /// as neighbours) instead of one per region; what each region's owner does
    /// after that (a gntdev index freed, a pin dropped) is done as before, in
    /// order. Regions not in this window are dropped as they are. Returns how
    /// many `mmap` calls it made.
    ///
    /// The window's lock is held over those calls, so no slot is taken (and
    /// mapped over) meanwhile; a slot still mapped by a region not given here
    /// is never covered. A failed call leaves its slots to their own drops.
    pub fn release(&self, regions: Vec<Region>) -> usize {
        let base = self.inner.base.as_ptr() as usize;
        let end = base + self.inner.slots * PAGE;
        let mut mine: Vec<usize> = regions
            .iter()
            .filter(|r| r.len() == PAGE)
            .map(|r| r.as_ptr() as usize)
            .filter(|a| (base..end).contains(a) && (a - base) % PAGE == 0)
            .map(|a| (a - base) / PAGE)
            .collect();
        mine.sort_unstable();
        mine.dedup();
        let mut calls = 0;
        if let Ok(mut state) = self.inner.state.lock() {
            mine.retain(|&i| state[i] == SlotState::Taken);
            let mut i = 0;
            while i < mine.len() {
                // Extend the run over free slots and given regions' slots.
                let (first, mut last) = (mine[i], mine[i]);
                i += 1;
                while i < mine.len()
                    && state[last + 1..mine[i]]
                        .iter()
                        .all(|s| *s == SlotState::Free)
                {
                    last = mine[i];
                    i += 1;
                }
                calls += 1;
                match reserve(self.inner.base, first, last + 1 - first) {
                    Ok(()) => {
                        for s in &mut state[first..=last] {
                            if *s == SlotState::Taken {
                                *s = SlotState::Cleared;
                            }
                        }
                    }
                    Err(e) => tracing::warn!(
                        "returning grant window slots {first}..={last} in one call: {e} \
                         (each is returned on its own)"
                    ),
                }
            }
        }
        // Their owners now find their slots cleared and only free them.
        drop(regions);
        calls
    }
}

/// Put the `PROT_NONE` reservation back over `n` slots from `first`.
fn reserve(base: NonNull<u8>, first: usize, n: usize) -> nix::Result<()> {
    let addr = NonZeroUsize::new(base.as_ptr() as usize + first * PAGE).ok_or(Errno::EINVAL)?;
    let len = NonZeroUsize::new(n * PAGE).ok_or(Errno::EINVAL)?;
    // SAFETY: MAP_FIXED over slots of our own window only. Callers cover slots
    // whose mappings nothing reads or writes any more (their regions are being
    // dropped) and free slots, which are reservation already; the window's lock
    // (or the slot's ownership) keeps anyone from mapping over them meanwhile.
    unsafe {
        mmap_anonymous(
            Some(addr),
            len,
            ProtFlags::PROT_NONE,
            MapFlags::MAP_PRIVATE | MapFlags::MAP_NORESERVE | MapFlags::MAP_FIXED,
        )
    }
    .map(drop)
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
        let cleared = self
            .window
            .state
            .lock()
            .is_ok_and(|s| s[self.index] == SlotState::Cleared);
        // Unless `release` did it already: exactly this slot's page of our own
        // window, which only this slot's mapping used; the region over it is
        // being dropped, so nothing reads or writes the page any more.
        let r = match cleared {
            true => Ok(()),
            false => reserve(self.window.base, self.index, 1),
        };
        match r {
            Ok(()) => {
                if let Ok(mut state) = self.window.state.lock() {
                    state[self.index] = SlotState::Free;
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
