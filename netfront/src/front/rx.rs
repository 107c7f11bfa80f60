//! The rx side of a queue: one page granted read-write per ring slot, the ring
//! kept full of buffers (`request-rx-copy`: the backend copies frames into
//! them). As in Linux's netfront, the request at ring index `i` has id
//! `i % ring size` and uses page `i % ring size`. Every response is checked
//! before its bytes are copied out; a bad packet is dropped and counted.

use crate::counters::{Counters, add};
use crate::error::Result;
use crate::options::MAX_FRAME;
use crate::packet::{Gso, GsoKind, PacketMeta};
use std::sync::Arc;
use xenio_ring::FrontRing;
use xenio_xen_sys::GrantRef;
use xenio_xen_sys::netif::*;
use xenio_xen_sys::ring::XEN_PAGE_SIZE as PAGE;
use xenio_xenbus::{Granted, Region};

/// A received packet being put together.
#[derive(Default)]
struct RxPartial {
    data: Vec<u8>,
    slots: usize,
    bad: Option<String>,
    /// Extra-info slots still to come.
    extras: bool,
    /// The last data slot said `NETRXF_more_data`.
    more: bool,
    started: bool,
    /// The first slot's flags.
    flags0: u16,
    /// The GSO extra info, if one came.
    gso: Option<NetifExtraGso>,
}

/// What [`RxRing::take`] did.
pub(crate) struct Taken {
    /// A frame is in the caller's buffer.
    pub(crate) frame: bool,
    /// Buffers were posted again and should be published now.
    pub(crate) publish: bool,
    /// The frame's offload metadata.
    pub(crate) meta: PacketMeta,
}

/// A queue's rx ring and the pages its buffers are.
pub(crate) struct RxRing<G: Granted> {
    ring_grant: G,
    ring: FrontRing<NetifRxRequest, NetifRxResponse, Arc<Region>>,
    /// One page per rx id, granted read-write.
    pages: G,
    partial: RxPartial,
    /// Frames received on this ring.
    pub(crate) frames: u64,
    /// Rx buffers posted again but not yet published.
    unpublished: u32,
}

impl<G: Granted> RxRing<G> {
    /// The ring in `ring_grant` (initialised), and one page of `pages` per slot.
    pub(crate) fn new(
        ring_grant: G,
        ring: FrontRing<NetifRxRequest, NetifRxResponse, Arc<Region>>,
        pages: G,
    ) -> Self {
        RxRing {
            ring_grant,
            ring,
            pages,
            partial: RxPartial::default(),
            frames: 0,
            unpublished: 0,
        }
    }

    /// For a new backend: a fresh ring in the same page, no packet half received.
    pub(crate) fn reset(&mut self) -> Result<()> {
        self.ring = FrontRing::init(self.ring_grant.region().clone())?;
        self.partial = RxPartial::default();
        self.unpublished = 0;
        Ok(())
    }

    /// The ring's grant reference.
    pub(crate) fn ring_ref(&self) -> u32 {
        self.ring_grant.refs()[0].0
    }

    /// The grant references of the buffers.
    pub(crate) fn buffer_refs(&self) -> &[GrantRef] {
        self.pages.refs()
    }

    /// Post every buffer and publish them, without notifying (a fresh ring).
    pub(crate) fn post_all(&mut self) -> Result<()> {
        for _ in 0..self.ring.size() {
            self.post()?;
        }
        self.ring.push_requests();
        Ok(())
    }

    /// Post the buffer of the next request slot (same slot modulo the ring
    /// size: the ring is full).
    fn post(&mut self) -> Result<()> {
        let idx = self.ring.req_prod_pvt();
        let id = (idx & (self.ring.size() - 1)) as u16;
        self.ring.push_request(&NetifRxRequest {
            id,
            pad: 0,
            gref: self.pages.refs()[usize::from(id)].0,
        })?;
        Ok(())
    }

    /// Whether posted buffers wait to be published.
    pub(crate) fn has_unpublished(&self) -> bool {
        self.unpublished > 0
    }

    /// Publish the posted buffers; returns whether the backend must be notified.
    pub(crate) fn publish(&mut self) -> bool {
        self.unpublished = 0;
        self.ring.push_requests_and_check_notify().is_required()
    }

    /// Arm the ring's event before sleeping: whether responses came meanwhile.
    pub(crate) fn final_check(&mut self) -> Result<bool> {
        Ok(self.ring.final_check_for_responses()?)
    }

    /// Take responses until one whole good packet is in `out` (replacing its
    /// contents) or the ring has none left, posting every buffer again at once.
    pub(crate) fn take(&mut self, out: &mut Vec<u8>, counters: &Counters) -> Result<Taken> {
        let max_slots = XEN_NETIF_NR_SLOTS_MIN + XEN_NETIF_EXTRA_TYPE_MAX as usize;
        let size = self.ring.size();
        let mut reposted = false;
        let mut frame = false;
        let mut meta = PacketMeta::default();
        loop {
            let idx = self.ring.rsp_cons();
            let Some(r) = self.ring.take_response()? else {
                break;
            };
            let slot = (idx & (size - 1)) as u16;
            add(&counters.rx_slots, 1);
            let p = &mut self.partial;
            p.slots += 1;
            let first = !p.started;
            p.started = true;
            if !first && p.extras {
                let e = r.as_extra_info();
                p.extras = e.flags & XEN_NETIF_EXTRA_FLAG_MORE != 0;
                if e.type_ == XEN_NETIF_EXTRA_TYPE_GSO {
                    // The union is plain data: read its 6 bytes as the GSO view.
                    let g: NetifExtraGso = bytemuck::cast(e.u);
                    p.gso = Some(g);
                }
            } else {
                if first {
                    p.flags0 = r.flags;
                }
                p.more = r.flags & NETRXF_MORE_DATA != 0;
                if first && r.flags & NETRXF_EXTRA_INFO != 0 {
                    p.extras = true;
                }
                if r.id != slot {
                    p.bad.get_or_insert(format!(
                        "rx response id {} at ring slot {slot} (ids follow the slots)",
                        r.id
                    ));
                } else if r.status <= 0 {
                    p.bad
                        .get_or_insert(format!("rx response status {}", r.status));
                } else {
                    let (off, len) = (usize::from(r.offset), r.status as usize);
                    if off + len > PAGE {
                        p.bad.get_or_insert(format!(
                            "rx response of {len} bytes at offset {off} runs past its page"
                        ));
                    } else if p.data.len() + len > MAX_FRAME {
                        p.bad
                            .get_or_insert(format!("rx packet longer than {MAX_FRAME} bytes"));
                    } else {
                        let at = p.data.len();
                        p.data.resize(at + len, 0);
                        self.pages
                            .region()
                            .read(usize::from(slot) * PAGE + off, &mut p.data[at..])?;
                    }
                }
            }
            if p.slots > max_slots {
                p.bad
                    .get_or_insert(format!("rx packet over more than {max_slots} slots"));
            }
            let more = p.extras || p.more;
            self.post()?;
            reposted = true;
            self.unpublished += 1;
            if !more {
                let mut done = std::mem::take(&mut self.partial);
                // The packet's buffer and the caller's trade places: the next
                // packet is gathered in the caller's old buffer, so that no
                // packet allocates once both have grown.
                std::mem::swap(out, &mut done.data);
                let mut spare = std::mem::take(&mut done.data);
                spare.clear();
                self.partial.data = spare;
                match done.bad {
                    Some(why) => {
                        tracing::debug!("dropping a received packet: {why}");
                        add(&counters.rx_errors, 1);
                    }
                    None => {
                        meta = rx_meta(done.flags0, done.gso);
                        self.frames += 1;
                        add(&counters.rx_packets, 1);
                        add(&counters.rx_bytes, out.len() as u64);
                        frame = true;
                        break;
                    }
                }
            }
        }
        // Publish the buffers in batches, and whenever the backend has nothing
        // more for us (it may be waiting for them).
        let publish =
            reposted && (self.unpublished >= 32 || self.ring.unconsumed_responses()? == 0);
        Ok(Taken {
            frame,
            publish,
            meta,
        })
    }
}

/// The metadata of a received packet: its first slot's flags and its GSO
/// extra (an MSS of 0 or an unknown type is no GSO).
fn rx_meta(flags0: u16, gso: Option<NetifExtraGso>) -> PacketMeta {
    PacketMeta {
        csum_blank: flags0 & NETRXF_CSUM_BLANK != 0,
        data_validated: flags0 & NETRXF_DATA_VALIDATED != 0,
        gso: gso.and_then(|g| {
            let kind = match g.type_ {
                XEN_NETIF_GSO_TYPE_TCPV4 => GsoKind::TcpV4,
                XEN_NETIF_GSO_TYPE_TCPV6 => GsoKind::TcpV6,
                _ => return None,
            };
            (g.size > 0).then_some(Gso { kind, mss: g.size })
        }),
    }
}
