//! One queue of the device: the granted ring, its event channel, the request
//! in each ring slot and each slot's indirect pages. Request ids name the
//! queue, the slot and the slot's generation, so a response for anything not
//! in flight is recognised, never trusted.

use crate::error::{Error, Result};
use crate::front::submit::Spec;
use std::sync::Arc;
use xenio_ring::FrontRing;
use xenio_xen_sys::blkif::*;
use xenio_xen_sys::ring::XEN_PAGE_SIZE as PAGE;
use xenio_xen_sys::{DomId, GrantRef, Port};
use xenio_xenbus::platform::Platform;
use xenio_xenbus::{Access, EventChannel, EventChannels, GrantTable, Granted, Region};

const SEGS_PER_INDIRECT_PAGE: usize = BLKIF_SEGS_PER_INDIRECT_FRAME;

#[derive(Debug, Default)]
struct Slot {
    generation: u16,
    spec: Option<Spec>,
}

/// One ring and what is in flight on it.
pub(crate) struct Queue<G: Granted, C: EventChannel> {
    ring_grant: G,
    ring: FrontRing<BlkifRequest, BlkifResponse, Arc<Region>>,
    channel: C,
    slots: Vec<Slot>,
    free: Vec<u16>,
    /// Indirect segment pages: `pages_per_slot` per slot, granted read-write (see
    /// where they are granted).
    indirect: Option<G>,
    pages_per_slot: usize,
}

/// The queue type of platform `P`.
pub(crate) type PlatformQueue<P> = Queue<
    <<P as Platform>::Grants as GrantTable>::Granted,
    <<P as Platform>::Events as EventChannels>::Channel,
>;

impl<G: Granted, C: EventChannel> Queue<G, C> {
    /// A ring of `1 << order` pages granted to `backend` for requests of up to
    /// `max_segments` segments, the indirect pages that needs, and an unbound
    /// event channel (granted and allocated in that order).
    pub(crate) fn new(
        grants: &impl GrantTable<Granted = G>,
        events: &impl EventChannels<Channel = C>,
        backend: DomId,
        order: u32,
        max_segments: usize,
    ) -> Result<Self> {
        let ring_grant = grants.grant(backend, 1 << order, Access::ReadWrite)?;
        let ring = FrontRing::init(ring_grant.region().clone())?;
        let size = ring.size() as usize;
        let pages_per_slot = if max_segments > BLKIF_MAX_SEGMENTS_PER_REQUEST {
            max_segments.div_ceil(SEGS_PER_INDIRECT_PAGE)
        } else {
            0
        };
        // Granted read-write although the backend only reads them: Linux's
        // xen-blkback maps every grant read-write once persistent grants are
        // negotiated (xen_blkbk_map adds GNTMAP_readonly only without them),
        // indirect pages included, and Xen refuses a read-write map of a
        // read-only grant, so the request fails (found in the Xen lab).
        // Linux's xen-blkfront grants its indirect pages read-write too.
        let indirect = if pages_per_slot > 0 {
            Some(grants.grant(backend, size * pages_per_slot, Access::ReadWrite)?)
        } else {
            None
        };
        Ok(Queue {
            ring_grant,
            ring,
            channel: events.alloc_unbound(backend)?,
            slots: (0..size).map(|_| Slot::default()).collect(),
            free: (0..size as u16).rev().collect(),
            indirect,
            pages_per_slot,
        })
    }

    /// For a new backend with the same geometry: the ring reset in place, a new
    /// event channel. What was in flight stays in its slots.
    pub(crate) fn reset(
        &mut self,
        events: &impl EventChannels<Channel = C>,
        backend: DomId,
    ) -> Result<()> {
        self.ring = FrontRing::init(self.ring_grant.region().clone())?;
        self.channel = events.alloc_unbound(backend)?;
        Ok(())
    }

    /// The ring's grant references, one per page.
    pub(crate) fn ring_refs(&self) -> &[GrantRef] {
        self.ring_grant.refs()
    }

    /// The event channel's local port.
    pub(crate) fn port(&self) -> Port {
        self.channel.port()
    }

    /// The event channel.
    pub(crate) fn channel(&self) -> &C {
        &self.channel
    }

    /// Whether no request is in flight.
    pub(crate) fn is_idle(&self) -> bool {
        self.slots.iter().all(|s| s.spec.is_none())
    }

    /// Take every request in flight out of its slot, in slot order.
    pub(crate) fn take_in_flight(&mut self) -> Vec<Spec> {
        self.slots
            .iter_mut()
            .filter_map(|s| s.spec.take())
            .collect()
    }

    /// The slots with a request in flight, in order.
    pub(crate) fn in_flight_slots(&self) -> Vec<usize> {
        (0..self.slots.len())
            .filter(|&s| self.slots[s].spec.is_some())
            .collect()
    }

    /// Whether a slot is free.
    pub(crate) fn has_room(&self) -> bool {
        !self.free.is_empty()
    }

    /// Put `spec` in a free slot (there must be one, see
    /// [`Queue::has_room`]) under a new generation; returns the slot.
    pub(crate) fn occupy(&mut self, spec: Spec) -> usize {
        let slot = self.free.pop().expect("free slot") as usize;
        self.slots[slot].generation = self.slots[slot].generation.wrapping_add(1);
        self.slots[slot].spec = Some(spec);
        slot
    }

    /// Write slot `slot`'s request into the ring (not yet published); this is
    /// queue `qi` of the device.
    pub(crate) fn push(&mut self, qi: usize, slot: usize) -> Result<()> {
        let spec = self.slots[slot].spec.clone().expect("slot in use");
        let id = request_id(qi, slot, self.slots[slot].generation);
        let req = if spec.operation == BLKIF_OP_DISCARD {
            BlkifRequest::from(BlkifRequestDiscard {
                operation: BLKIF_OP_DISCARD,
                id,
                sector_number: spec.sector,
                nr_sectors: spec.discard_sectors,
                ..Default::default()
            })
        } else if spec.segs.len() <= BLKIF_MAX_SEGMENTS_PER_REQUEST {
            let mut r = BlkifRequest {
                operation: spec.operation,
                nr_segments: spec.segs.len() as u8,
                id,
                sector_number: spec.sector,
                ..Default::default()
            };
            r.seg[..spec.segs.len()].copy_from_slice(&spec.segs);
            r
        } else {
            let g = self
                .indirect
                .as_ref()
                .ok_or_else(|| Error::Invalid("indirect request without indirect pages".into()))?;
            let base = slot * self.pages_per_slot;
            let bytes: Vec<u8> = spec.segs.iter().flat_map(segment_bytes).collect();
            g.region().write(base * PAGE, &bytes)?;
            let mut grefs = [0u32; BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST];
            for (i, r) in g.refs()[base..base + spec.segs.len().div_ceil(SEGS_PER_INDIRECT_PAGE)]
                .iter()
                .enumerate()
            {
                grefs[i] = r.0;
            }
            BlkifRequest::from(BlkifRequestIndirect {
                operation: BLKIF_OP_INDIRECT,
                indirect_op: spec.operation,
                nr_segments: spec.segs.len() as u16,
                id,
                sector_number: spec.sector,
                indirect_grefs: grefs,
                ..Default::default()
            })
        };
        self.ring.push_request(&req)?;
        Ok(())
    }

    /// Publish the pushed requests; notifies the backend if it asked to be
    /// (returns whether it did).
    pub(crate) fn publish(&mut self) -> Result<bool> {
        if self.ring.push_requests_and_check_notify().is_required() {
            self.channel.notify()?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Whether responses wait on the ring.
    pub(crate) fn has_responses(&mut self) -> Result<bool> {
        Ok(self.ring.unconsumed_responses()? > 0)
    }

    /// Arm the ring's event before sleeping: whether responses came meanwhile
    /// (`RING_FINAL_CHECK_FOR_RESPONSES`).
    pub(crate) fn final_check(&mut self) -> Result<bool> {
        Ok(self.ring.final_check_for_responses()?)
    }

    /// Every response on the ring, appended to `out`.
    pub(crate) fn take_responses(&mut self, out: &mut Vec<BlkifResponse>) -> Result<()> {
        self.ring.take_responses(out)?;
        Ok(())
    }

    /// Check response `r`, which came on queue `qi`, against what is in flight
    /// and free its slot; returns the op its request belongs to
    /// ([`Spec::pending`]). A response naming no request in flight, or with
    /// the wrong operation, is the `backend`'s error.
    pub(crate) fn complete(&mut self, qi: usize, r: &BlkifResponse, backend: DomId) -> Result<u64> {
        let bad = |what: String| Error::Backend { backend, what };
        let (rq, generation, slot) = (
            (r.id >> 32) as usize,
            (r.id >> 16) as u16,
            (r.id & 0xffff) as usize,
        );
        let Some(s) = self.slots.get_mut(slot).filter(|_| rq == qi) else {
            return Err(bad(format!("response with unknown id {:#x}", r.id)));
        };
        let Some(spec) = s.spec.as_ref().filter(|_| s.generation == generation) else {
            return Err(bad(format!(
                "response for id {:#x}, which is not in flight (duplicate?)",
                r.id
            )));
        };
        let expected = if spec.segs.len() > BLKIF_MAX_SEGMENTS_PER_REQUEST {
            BLKIF_OP_INDIRECT
        } else {
            spec.operation
        };
        if r.operation != expected && r.operation != spec.operation {
            return Err(bad(format!(
                "response for id {:#x} has operation {}, the request was {expected}",
                r.id, r.operation
            )));
        }
        let pending = spec.pending;
        s.spec = None;
        self.free.push(slot as u16);
        Ok(pending)
    }
}

/// The id of the request in `slot` of queue `qi` at `generation`.
fn request_id(qi: usize, slot: usize, generation: u16) -> u64 {
    ((qi as u64) << 32) | ((generation as u64) << 16) | slot as u64
}

/// A segment as it sits in an indirect page (`struct blkif_request_segment`).
fn segment_bytes(s: &BlkifRequestSegment) -> [u8; 8] {
    let mut b = [0u8; 8];
    b[..4].copy_from_slice(&s.gref.to_le_bytes());
    b[4] = s.first_sect;
    b[5] = s.last_sect;
    b
}
