//! The tx side of a queue: one page granted read-only per ring slot, frames
//! copied into them and described by one request per fragment (more than one
//! only with `feature-sg`), slots freed as the backend answers.

use crate::counters::{Counters, add};
use crate::error::{Error, Result};
use crate::options::MAX_FRAME;
use std::sync::Arc;
use xenio_ring::FrontRing;
use xenio_xen_sys::DomId;
use xenio_xen_sys::netif::*;
use xenio_xen_sys::ring::XEN_PAGE_SIZE as PAGE;
use xenio_xenbus::{Granted, Region};

/// A queue's tx ring and the pages its slots point to.
pub(crate) struct TxRing<G: Granted> {
    ring_grant: G,
    ring: FrontRing<NetifTxRequest, NetifTxResponse, Arc<Region>>,
    /// One page per tx id, granted read-only.
    pages: G,
    free: Vec<u16>,
    busy: Vec<bool>,
    /// Frames sent on this ring.
    pub(crate) frames: u64,
}

impl<G: Granted> TxRing<G> {
    /// The ring in `ring_grant` (initialised), and one page of `pages` per slot.
    pub(crate) fn new(
        ring_grant: G,
        ring: FrontRing<NetifTxRequest, NetifTxResponse, Arc<Region>>,
        pages: G,
    ) -> Self {
        let size = ring.size() as usize;
        TxRing {
            ring_grant,
            ring,
            pages,
            free: (0..size as u16).rev().collect(),
            busy: vec![false; size],
            frames: 0,
        }
    }

    /// For a new backend: a fresh ring in the same page, every slot free.
    pub(crate) fn reset(&mut self) -> Result<()> {
        self.ring = FrontRing::init(self.ring_grant.region().clone())?;
        let size = self.busy.len();
        self.free = (0..size as u16).rev().collect();
        self.busy.fill(false);
        Ok(())
    }

    /// The ring's grant reference.
    pub(crate) fn ring_ref(&self) -> u32 {
        self.ring_grant.refs()[0].0
    }

    /// Free slots: pages, and ring slots (an extra info takes a ring slot
    /// but no page).
    pub(crate) fn free_slots(&self) -> usize {
        self.free.len().min(self.ring.free_requests() as usize)
    }

    /// Whether some slot waits for the backend's answer.
    pub(crate) fn in_flight(&self) -> bool {
        self.free.len() < self.busy.len()
    }

    /// Arm the ring's event before sleeping: whether responses came meanwhile.
    pub(crate) fn final_check(&mut self) -> Result<bool> {
        Ok(self.ring.final_check_for_responses()?)
    }

    /// Free the slots the backend answered; a response for a slot not in
    /// flight is the `backend`'s error.
    pub(crate) fn reap(&mut self, backend: DomId, counters: &Counters) -> Result<()> {
        while let Some(r) = self.ring.take_response()? {
            if r.status == NETIF_RSP_NULL {
                // The answer to an extra-info slot; we send none.
                continue;
            }
            let id = usize::from(r.id);
            if id >= self.busy.len() || !self.busy[id] {
                return Err(Error::Backend {
                    backend,
                    what: format!("tx response for id {id}, which is not in flight"),
                });
            }
            self.busy[id] = false;
            self.free.push(r.id);
            if r.status != NETIF_RSP_OKAY {
                add(&counters.tx_errors, 1);
            }
        }
        Ok(())
    }

    /// Copy `frame` into free slots as `layout` says ([`layout`]; there must
    /// be as many free slots, one more with `gso`), `flags0` on the first, a
    /// GSO extra info after it if `gso`, and publish. Returns whether the
    /// backend must be notified.
    pub(crate) fn push(
        &mut self,
        frame: &[u8],
        layout: &[(u16, usize)],
        flags0: u16,
        gso: Option<NetifExtraGso>,
    ) -> Result<bool> {
        let mut pos = 0;
        let last = layout.len() - 1;
        for (k, &(off, n)) in layout.iter().enumerate() {
            let id = self.free.pop().expect("checked above");
            self.busy[usize::from(id)] = true;
            self.pages.region().write(
                usize::from(id) * PAGE + usize::from(off),
                &frame[pos..pos + n],
            )?;
            pos += n;
            let mut flags = if k < last { NETTXF_MORE_DATA } else { 0 };
            if k == 0 {
                flags |= flags0;
                if gso.is_some() {
                    flags |= NETTXF_EXTRA_INFO;
                }
            }
            self.ring.push_request(&NetifTxRequest {
                gref: self.pages.refs()[usize::from(id)].0,
                offset: off,
                flags,
                id,
                size: if k == 0 { frame.len() as u16 } else { n as u16 },
            })?;
            if let (0, Some(g)) = (k, gso) {
                // The extra info fills the next slot; the backend answers it
                // with NETIF_RSP_NULL.
                self.ring
                    .push_request(&NetifTxRequest::from(NetifExtraInfo {
                        type_: XEN_NETIF_EXTRA_TYPE_GSO,
                        flags: 0,
                        u: NetifExtraInfoU { gso: g },
                    }))?;
            }
        }
        Ok(self.ring.push_requests_and_check_notify().is_required())
    }
}

/// Slots a frame of `len` bytes takes with fragments of at most `max_slot`
/// bytes, the first at `offset` in its page, or why it cannot be sent (`sg`:
/// whether multi-slot packets were negotiated).
pub(crate) fn check_frame(len: usize, max_slot: usize, offset: u16, sg: bool) -> Result<usize> {
    if len == 0 || len > MAX_FRAME {
        return Err(Error::Invalid(format!(
            "{len} bytes (a frame has 1 to {MAX_FRAME})"
        )));
    }
    let n = slot_count(len, max_slot, offset);
    if n > 1 && !sg {
        return Err(Error::Invalid(format!(
            "{len} bytes need {n} slots, and feature-sg was not negotiated"
        )));
    }
    if n > XEN_NETIF_NR_SLOTS_MIN {
        return Err(Error::Invalid(format!(
            "{len} bytes need {n} slots (at most {XEN_NETIF_NR_SLOTS_MIN})"
        )));
    }
    Ok(n)
}

/// The tx fragments of a frame of `len` bytes, at most `max_slot` bytes each,
/// the first at `offset` in its page: (offset in page, bytes).
#[cfg(test)]
pub(crate) fn layout(len: usize, max_slot: usize, offset: u16) -> Vec<(u16, usize)> {
    let mut out = Vec::new();
    layout_into(&mut out, len, max_slot, offset);
    out
}

/// [`layout`] into `out` (replacing its contents; a buffer kept across frames).
pub(crate) fn layout_into(out: &mut Vec<(u16, usize)>, len: usize, max_slot: usize, offset: u16) {
    out.clear();
    let max = max_slot.clamp(1, PAGE);
    let first_off = usize::from(offset) % PAGE;
    let first = len.min(max).min(PAGE - first_off);
    out.push((first_off as u16, first));
    let mut left = len - first;
    while left > 0 {
        let n = left.min(max);
        out.push((0, n));
        left -= n;
    }
}

/// `layout(len, max_slot, offset).len()`, computed.
fn slot_count(len: usize, max_slot: usize, offset: u16) -> usize {
    let max = max_slot.clamp(1, PAGE);
    let first_off = usize::from(offset) % PAGE;
    let first = len.min(max).min(PAGE - first_off);
    1 + (len - first).div_ceil(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_count_matches_the_layout() {
        for (max, off) in [
            (4096usize, 0u16),
            (200, 3),
            (256, 100),
            (1, 0),
            (4096, 4095),
            (9000, 7),
        ] {
            for len in [
                1usize, 13, 60, 199, 200, 201, 1514, 4095, 4096, 4097, 9014, 65535,
            ] {
                let l = layout(len, max, off);
                assert_eq!(
                    slot_count(len, max, off),
                    l.len(),
                    "len {len} max {max} off {off}"
                );
                assert_eq!(l.iter().map(|f| f.1).sum::<usize>(), len);
                assert!(
                    l.iter()
                        .all(|&(o, n)| usize::from(o) + n <= PAGE && n <= max.max(1))
                );
            }
        }
    }
}
