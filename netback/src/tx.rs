//! Assembling transmitted packets from tx ring slots, and validating them.
//!
//! A packet on the tx ring is one request whose `size` is the *whole* packet's
//! length, optionally followed by extra-info slots (`NETTXF_extra_info`, chained
//! with `XEN_NETIF_EXTRA_FLAG_MORE`), then further requests while the previous
//! data slot had `NETTXF_more_data`, each carrying its own fragment's size. The
//! first fragment's length is what the later ones leave of the total.
//!
//! [`parse`] works on copies of the slots (taken out of the ring once) and
//! decides, like Linux's `xenvif_count_requests` / `xenvif_tx_build_gops`:
//!
//! - a packet that is merely unacceptable (shorter than an Ethernet header,
//!   longer than the MTU allows, more than [`XEN_NETIF_NR_SLOTS_MIN`] data slots
//!   but within [`FATAL_SLOTS`]) is dropped: every slot gets `NETIF_RSP_ERROR`
//!   (extra-info slots `NETIF_RSP_NULL`) and the ring goes on;
//! - a packet that breaks the protocol (a fragment past the end of its page, a
//!   fragment bigger than what is left of the total, an invalid extra-info, a
//!   chain longer than [`FATAL_SLOTS`]) is fatal: the frontend is disconnected.
//!
//! Zero-length fragments after the first are valid (XSA-448), and the first
//! fragment may be short or empty (XSA-423, 432): the backend gathers the whole
//! frame into one buffer, so no later code ever sees headers split across pieces.

use crate::inline::Inline;
use crate::packet::Offloads;
use xenio_xen_sys::GrantRef;
use xenio_xen_sys::netif::*;

/// Bytes in a granted page.
pub const PAGE: usize = 4096;
/// An Ethernet header: the shortest packet accepted.
pub const ETH_HLEN: usize = 14;
/// Data slots beyond which a packet is a protocol violation rather than a drop
/// (Linux netback's `fatal_skb_slots` default).
pub const FATAL_SLOTS: usize = 20;
/// Extra-info slots one packet may carry (one per type).
pub const MAX_EXTRAS: usize = XEN_NETIF_EXTRA_TYPE_MAX as usize - 1;

/// What the backend accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxLimits {
    /// Largest frame, Ethernet header included (MTU + 14, + 4 for a VLAN tag).
    pub max_frame: usize,
    /// Whether packets may span several slots (`feature-sg` negotiated).
    pub sg: bool,
    /// What the network takes: GSO packets of a kind it does not take are
    /// dropped (that kind was not offered); GSO packets may be longer than
    /// `max_frame` (up to 64 KiB), their segments may not.
    pub offloads: Offloads,
}

impl Default for TxLimits {
    fn default() -> Self {
        TxLimits {
            max_frame: 1500 + ETH_HLEN + 4,
            sg: true,
            offloads: Offloads::NONE,
        }
    }
}

/// Where one fragment's bytes are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Frag {
    /// The frontend's grant.
    pub gref: GrantRef,
    /// Offset in the granted page.
    pub offset: u16,
    /// Bytes (may be 0 after the first fragment).
    pub len: u16,
}

/// One slot's response to send, in slot order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlotId {
    /// The request's id.
    pub id: u16,
    /// An extra-info slot (answered with `NETIF_RSP_NULL`).
    pub extra: bool,
}

/// A valid packet, ready to be copied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxPacket {
    /// Every slot of the packet, in ring order.
    pub slots: Inline<SlotId>,
    /// The data fragments, in order.
    pub frags: Inline<Frag>,
    /// Total length.
    pub len: usize,
    /// The first request's flags (`NETTXF_csum_blank`, `NETTXF_data_validated`).
    pub flags: u16,
    /// The GSO extra info, if the frontend sent one.
    pub gso: Option<NetifExtraGso>,
}

impl TxPacket {
    /// Responses for every slot: `status` for data slots, `NETIF_RSP_NULL` for extras.
    pub fn responses(&self, status: i16) -> impl Iterator<Item = NetifTxResponse> + '_ {
        responses(&self.slots, status)
    }
}

/// Responses for `slots`: `status` for data slots, `NETIF_RSP_NULL` for extras.
pub fn responses(slots: &[SlotId], status: i16) -> impl Iterator<Item = NetifTxResponse> + '_ {
    slots.iter().map(move |s| NetifTxResponse {
        id: s.id,
        status: if s.extra { NETIF_RSP_NULL } else { status },
    })
}

/// Why a packet is dropped (answered with errors; the ring goes on).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Drop {
    /// Shorter than an Ethernet header.
    #[error("packet of {0} bytes is shorter than an Ethernet header")]
    TooShort(usize),
    /// Longer than the MTU allows.
    #[error("packet of {len} bytes is longer than the {max}-byte limit")]
    TooLong {
        /// The packet's size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// More data slots than a backend must accept.
    #[error("packet uses {0} slots (at most {XEN_NETIF_NR_SLOTS_MIN})")]
    TooManySlots(usize),
    /// Several slots without `feature-sg`.
    #[error("packet spans {0} slots but feature-sg was not negotiated")]
    NoSg(usize),
    /// A GSO extra of a kind the backend did not offer.
    #[error("a GSO packet of a kind that was not offered")]
    GsoNotOffered,
    /// A GSO packet that cannot be cut as it says (not TCP of its kind, an MSS
    /// below the minimum, above the packet's length, or making segments longer
    /// than the MTU).
    #[error("GSO packet: {0}")]
    Gso(String),
    /// Headers that claim more than the packet carries, or are malformed (for
    /// a packet whose checksum or segmentation depends on them).
    #[error("headers: {0}")]
    Headers(String),
}

/// A protocol violation: the frontend is disconnected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Fatal {
    /// A fragment runs past the end of its page.
    #[error("fragment of {size} bytes at offset {offset} crosses the page end")]
    CrossesPage {
        /// Offset in the page.
        offset: u16,
        /// Bytes.
        size: usize,
    },
    /// A fragment claims more than the packet has left.
    #[error("fragment of {size} bytes, but only {left} of the packet remain")]
    FragTooBig {
        /// The fragment's size.
        size: u16,
        /// What the first slot's total leaves.
        left: usize,
    },
    /// A chain of more slots than any packet may use.
    #[error("packet chain of more than {FATAL_SLOTS} slots")]
    Chain,
    /// An extra-info slot of an unknown type, or too many of them.
    #[error("invalid extra info: {0}")]
    Extra(String),
}

/// What [`parse`] found at the head of the slots.
#[derive(Clone, Debug, PartialEq, Eq)]
// A packet is a few hundred bytes inline, against a drop's hundred: boxing
// it would put back the allocation per packet that `Inline` takes away.
#[allow(clippy::large_enum_variant)]
pub enum Parsed {
    /// The packet continues in slots not published yet.
    NeedMore,
    /// A valid packet using the first `used` slots.
    Packet {
        /// Slots consumed.
        used: usize,
        /// The packet.
        packet: TxPacket,
    },
    /// A packet to drop, using the first `used` slots.
    Dropped {
        /// Slots consumed.
        used: usize,
        /// Its slots, to answer.
        slots: Inline<SlotId>,
        /// Why.
        why: Drop,
    },
}

/// Parse the packet at the head of `slots` (copies of ring entries).
pub fn parse(slots: &[NetifTxRequest], limits: &TxLimits) -> Result<Parsed, Fatal> {
    let Some(first) = slots.first() else {
        return Ok(Parsed::NeedMore);
    };
    let mut ids = Inline::default();
    ids.push(SlotId {
        id: first.id,
        extra: false,
    });
    let mut i = 1;
    let mut gso = None;
    // Extra-info slots follow the first request.
    if first.flags & NETTXF_EXTRA_INFO != 0 {
        let mut n = 0;
        loop {
            let Some(slot) = slots.get(i) else {
                return Ok(Parsed::NeedMore);
            };
            n += 1;
            if n > MAX_EXTRAS {
                return Err(Fatal::Extra(format!("more than {MAX_EXTRAS} extra slots")));
            }
            let e = slot.as_extra_info();
            match e.type_ {
                XEN_NETIF_EXTRA_TYPE_GSO => {
                    // The union is Pod: read its 6 bytes as the GSO view.
                    let g: NetifExtraGso = bytemuck::cast(e.u);
                    if g.size == 0 {
                        return Err(Fatal::Extra("GSO size 0".into()));
                    }
                    if g.type_ != XEN_NETIF_GSO_TYPE_TCPV4 && g.type_ != XEN_NETIF_GSO_TYPE_TCPV6 {
                        return Err(Fatal::Extra(format!("GSO type {}", g.type_)));
                    }
                    gso = Some(g);
                }
                XEN_NETIF_EXTRA_TYPE_MCAST_ADD
                | XEN_NETIF_EXTRA_TYPE_MCAST_DEL
                | XEN_NETIF_EXTRA_TYPE_HASH => {}
                t => return Err(Fatal::Extra(format!("type {t}"))),
            }
            // The extra info fills bytes 0..8 of the slot; the response carries
            // the id found in bytes 8..10 (what Linux leaves there, too).
            ids.push(SlotId {
                id: slot.id,
                extra: true,
            });
            i += 1;
            if e.flags & XEN_NETIF_EXTRA_FLAG_MORE == 0 {
                break;
            }
        }
    }
    // Data slots after the first, while the previous one says more_data.
    let total = usize::from(first.size);
    let mut frags = Inline::default();
    let mut left = total;
    let mut more = first.flags & NETTXF_MORE_DATA != 0;
    while more {
        let Some(slot) = slots.get(i) else {
            return Ok(Parsed::NeedMore);
        };
        // The first slot plus those after it, this one included.
        if frags.len() + 2 > FATAL_SLOTS {
            return Err(Fatal::Chain);
        }
        if usize::from(slot.size) > left {
            return Err(Fatal::FragTooBig {
                size: slot.size,
                left,
            });
        }
        left -= usize::from(slot.size);
        if usize::from(slot.offset) + usize::from(slot.size) > PAGE {
            return Err(Fatal::CrossesPage {
                offset: slot.offset,
                size: usize::from(slot.size),
            });
        }
        frags.push(Frag {
            gref: GrantRef(slot.gref),
            offset: slot.offset,
            len: slot.size,
        });
        ids.push(SlotId {
            id: slot.id,
            extra: false,
        });
        more = slot.flags & NETTXF_MORE_DATA != 0;
        i += 1;
    }
    // The first fragment holds what the others leave.
    if usize::from(first.offset) + left > PAGE {
        return Err(Fatal::CrossesPage {
            offset: first.offset,
            size: left,
        });
    }
    frags.push_front(Frag {
        gref: GrantRef(first.gref),
        offset: first.offset,
        len: left as u16,
    });
    let used = i;
    let data_slots = frags.len();
    let gso_offered = gso.is_none_or(|g: NetifExtraGso| {
        if g.type_ == XEN_NETIF_GSO_TYPE_TCPV6 {
            limits.offloads.tso6
        } else {
            limits.offloads.tso4
        }
    });
    let why = if total < ETH_HLEN {
        Some(Drop::TooShort(total))
    } else if !gso_offered {
        Some(Drop::GsoNotOffered)
    } else if total > limits.max_frame && gso.is_none() {
        Some(Drop::TooLong {
            len: total,
            max: limits.max_frame,
        })
    } else if data_slots > XEN_NETIF_NR_SLOTS_MIN {
        Some(Drop::TooManySlots(data_slots))
    } else if data_slots > 1 && !limits.sg {
        Some(Drop::NoSg(data_slots))
    } else {
        None
    };
    if let Some(why) = why {
        return Ok(Parsed::Dropped {
            used,
            slots: ids,
            why,
        });
    }
    Ok(Parsed::Packet {
        used,
        packet: TxPacket {
            slots: ids,
            frags,
            len: total,
            flags: first.flags & (NETTXF_CSUM_BLANK | NETTXF_DATA_VALIDATED),
            gso,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(gref: u32, offset: u16, flags: u16, id: u16, size: u16) -> NetifTxRequest {
        NetifTxRequest {
            gref,
            offset,
            flags,
            id,
            size,
        }
    }

    fn packet(p: Parsed) -> (usize, TxPacket) {
        match p {
            Parsed::Packet { used, packet } => (used, packet),
            other => panic!("expected a packet, got {other:?}"),
        }
    }

    #[test]
    fn single_slot_packet() {
        let (used, p) = packet(parse(&[req(5, 100, 0, 9, 60)], &TxLimits::default()).unwrap());
        assert_eq!(used, 1);
        assert_eq!(p.len, 60);
        assert_eq!(
            p.frags,
            vec![Frag {
                gref: GrantRef(5),
                offset: 100,
                len: 60
            }]
        );
    }

    #[test]
    fn multi_slot_first_fragment_is_the_remainder() {
        let slots = [
            req(1, 0, NETTXF_MORE_DATA, 1, 1000),
            req(2, 10, NETTXF_MORE_DATA, 2, 300),
            req(3, 0, 0, 3, 200),
            req(4, 0, 0, 4, 60),
        ];
        let (used, p) = packet(parse(&slots, &TxLimits::default()).unwrap());
        assert_eq!(used, 3);
        let lens: Vec<u16> = p.frags.iter().map(|f| f.len).collect();
        assert_eq!(lens, vec![500, 300, 200]);
    }

    #[test]
    fn incomplete_chains_wait() {
        let slots = [req(1, 0, NETTXF_MORE_DATA, 1, 1000)];
        assert_eq!(
            parse(&slots, &TxLimits::default()).unwrap(),
            Parsed::NeedMore
        );
        let slots = [req(1, 0, NETTXF_EXTRA_INFO, 1, 100)];
        assert_eq!(
            parse(&slots, &TxLimits::default()).unwrap(),
            Parsed::NeedMore
        );
    }

    #[test]
    fn zero_length_later_fragments_are_fine_xsa_448() {
        let slots = [
            req(1, 0, NETTXF_MORE_DATA, 1, 100),
            req(2, 0, NETTXF_MORE_DATA, 2, 0),
            req(3, 0, 0, 3, 0),
        ];
        let (_, p) = packet(parse(&slots, &TxLimits::default()).unwrap());
        assert_eq!(p.frags.iter().map(|f| f.len).sum::<u16>(), 100);
        assert_eq!(p.frags.len(), 3);
    }

    #[test]
    fn all_data_in_later_fragments_xsa_423() {
        // The first fragment is empty: its share of the total is 0.
        let slots = [req(1, 0, NETTXF_MORE_DATA, 1, 60), req(2, 0, 0, 2, 60)];
        let (_, p) = packet(parse(&slots, &TxLimits::default()).unwrap());
        assert_eq!(p.frags[0].len, 0);
        assert_eq!(p.frags[1].len, 60);
    }

    #[test]
    fn eighteen_tiny_slots_are_one_packet_xsa_432() {
        let mut slots = vec![req(0, 0, NETTXF_MORE_DATA, 0, 18 * 4)];
        for k in 1..18u16 {
            let flags = if k < 17 { NETTXF_MORE_DATA } else { 0 };
            slots.push(req(u32::from(k), 0, flags, k, 4));
        }
        let (used, p) = packet(parse(&slots, &TxLimits::default()).unwrap());
        assert_eq!(used, 18);
        assert!(p.frags.iter().all(|f| f.len == 4));
    }

    #[test]
    fn drops_short_long_and_too_many_slots() {
        let l = TxLimits::default();
        for (slots, want) in [
            (vec![req(1, 0, 0, 1, 13)], Drop::TooShort(13)),
            (
                vec![req(1, 0, 0, 1, 1600)],
                Drop::TooLong {
                    len: 1600,
                    max: 1518,
                },
            ),
        ] {
            match parse(&slots, &l).unwrap() {
                Parsed::Dropped { why, used, .. } => {
                    assert_eq!(why, want);
                    assert_eq!(used, slots.len());
                }
                other => panic!("{other:?}"),
            }
        }
        let mut slots = vec![req(0, 0, NETTXF_MORE_DATA, 0, 19 * 10)];
        for k in 1..19u16 {
            let flags = if k < 18 { NETTXF_MORE_DATA } else { 0 };
            slots.push(req(1, 0, flags, k, 10));
        }
        match parse(&slots, &l).unwrap() {
            Parsed::Dropped { why, used, slots } => {
                assert_eq!(why, Drop::TooManySlots(19));
                assert_eq!(used, 19);
                assert_eq!(slots.len(), 19);
            }
            other => panic!("{other:?}"),
        }
        let nosg = TxLimits { sg: false, ..l };
        let slots = [req(1, 0, NETTXF_MORE_DATA, 1, 100), req(2, 0, 0, 2, 50)];
        assert!(matches!(
            parse(&slots, &nosg).unwrap(),
            Parsed::Dropped {
                why: Drop::NoSg(2),
                ..
            }
        ));
    }

    #[test]
    fn protocol_violations_are_fatal() {
        let l = TxLimits::default();
        // Offset + size past the page.
        assert!(matches!(
            parse(&[req(1, 4000, 0, 1, 200)], &l),
            Err(Fatal::CrossesPage { .. })
        ));
        let slots = [req(1, 0, NETTXF_MORE_DATA, 1, 300), req(2, 4000, 0, 2, 200)];
        assert!(matches!(parse(&slots, &l), Err(Fatal::CrossesPage { .. })));
        // A fragment bigger than the total.
        let slots = [req(1, 0, NETTXF_MORE_DATA, 1, 100), req(2, 0, 0, 2, 200)];
        assert!(matches!(parse(&slots, &l), Err(Fatal::FragTooBig { .. })));
        // An endless chain.
        let mut slots = vec![req(1, 0, NETTXF_MORE_DATA, 0, 1000)];
        slots.extend((1..40u16).map(|k| req(1, 0, NETTXF_MORE_DATA, k, 0)));
        assert_eq!(parse(&slots, &l), Err(Fatal::Chain));
        // Bad extra info.
        let bad = NetifExtraInfo {
            type_: 0,
            ..Default::default()
        };
        let slots = [req(1, 0, NETTXF_EXTRA_INFO, 1, 60), bad.into()];
        assert!(matches!(parse(&slots, &l), Err(Fatal::Extra(_))));
    }

    #[test]
    fn extras_are_answered_with_null() {
        let gso = NetifExtraInfo {
            type_: XEN_NETIF_EXTRA_TYPE_GSO,
            flags: XEN_NETIF_EXTRA_FLAG_MORE,
            u: NetifExtraInfoU {
                gso: NetifExtraGso {
                    size: 1448,
                    type_: XEN_NETIF_GSO_TYPE_TCPV4,
                    pad: 0,
                    features: 0,
                },
            },
        };
        let mcast = NetifExtraInfo {
            type_: XEN_NETIF_EXTRA_TYPE_MCAST_ADD,
            ..Default::default()
        };
        let slots = [
            req(1, 0, NETTXF_EXTRA_INFO | NETTXF_MORE_DATA, 7, 100),
            gso.into(),
            mcast.into(),
            req(2, 0, 0, 8, 40),
        ];
        // The network takes GSO (else the packet is dropped: not offered).
        let limits = TxLimits {
            offloads: Offloads::ALL,
            ..TxLimits::default()
        };
        let (used, p) = packet(parse(&slots, &limits).unwrap());
        assert_eq!(used, 4);
        assert!(p.gso.is_some());
        let rsps: Vec<_> = p.responses(NETIF_RSP_OKAY).collect();
        assert_eq!(rsps.len(), 4);
        assert_eq!(rsps[0].status, NETIF_RSP_OKAY);
        assert_eq!(rsps[1].status, NETIF_RSP_NULL);
        assert_eq!(rsps[2].status, NETIF_RSP_NULL);
        assert_eq!(rsps[3], NetifTxResponse { id: 8, status: 0 });
    }
}
