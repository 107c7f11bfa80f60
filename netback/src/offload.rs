//! Offloads between the frontend and the network: what netback checks and
//! fills in for a packet with `NETTXF_csum_blank` or a GSO extra before the
//! network gets it ([`tx_meta`]), and how a packet from the network is given
//! to the frontend ([`rx_plan`], or cut into frames by [`segment`] when the
//! frontend cannot take it whole).
//!
//! The headers are read with `etherparse` ([`headers`]) rather than by hand:
//! it checks every length a header claims against the bytes there are (IPv4
//! total length and IHL, IPv6 payload length and extension headers, TCP data
//! offset, UDP length, VLAN tags), which is exactly what a hostile frontend
//! lies about, and it allocates nothing.

use crate::csum::{complete_partial, pseudo_header};
use crate::packet::{Checksum, Gso, GsoKind, Meta, Offloads};
use crate::tx::Drop;
use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use xenio_xen_sys::netif::*;

/// `IPPROTO_TCP`.
const TCP: u8 = 6;
/// `IPPROTO_UDP`.
const UDP: u8 = 17;
/// The smallest MSS a GSO packet may ask for (Linux's `TCP_MIN_MSS`): below
/// it one 64 KiB packet would become thousands of segments in the host.
pub const MIN_GSO_SIZE: u16 = 88;

/// Where the headers of an IP packet are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Headers {
    /// Offset of the IP header.
    pub l3: usize,
    /// IP version 6.
    pub ipv6: bool,
    /// The transport protocol (after IPv6 extension headers).
    pub proto: u8,
    /// Offset of the transport header.
    pub l4: usize,
    /// Bytes of the transport header and payload, as the IP header says.
    pub l4_len: usize,
    /// An IP fragment (no transport header to speak of).
    pub fragmented: bool,
    /// The TCP header's length (TCP only).
    pub tcp_hlen: Option<usize>,
}

/// The headers of `frame`: `Ok(None)` when it is not IP (ARP, another
/// ethertype); an error when a header claims more than the frame carries or is
/// malformed.
pub fn headers(frame: &[u8]) -> Result<Option<Headers>, String> {
    let p = SlicedPacket::from_ethernet(frame).map_err(|e| e.to_string())?;
    let base = frame.as_ptr() as usize;
    let off = |s: &[u8]| s.as_ptr() as usize - base;
    let (l3, ipv6, payload) = match &p.net {
        Some(NetSlice::Ipv4(ip)) => (off(ip.header().slice()), false, ip.payload()),
        Some(NetSlice::Ipv6(ip)) => (off(ip.header().slice()), true, ip.payload()),
        _ => return Ok(None),
    };
    let tcp_hlen = match &p.transport {
        Some(TransportSlice::Tcp(t)) => Some(usize::from(t.data_offset()) * 4),
        _ => None,
    };
    Ok(Some(Headers {
        l3,
        ipv6,
        proto: payload.ip_number.0,
        l4: off(payload.payload),
        l4_len: payload.payload.len(),
        fragmented: payload.fragmented,
        tcp_hlen,
    }))
}

/// Check a packet the frontend sent (its bytes gathered in `frame`, `flags`
/// and `gso` from its first slot and extra) and make it what the network
/// `takes`: a partial checksum or a GSO packet passes through with its
/// [`Meta`] (the pseudo-header sum written into the checksum field, whatever
/// the frontend left there), a checksum the network cannot leave undone is
/// computed here. `max_frame` is the longest frame the MTU allows: every
/// segment of a GSO packet must fit it.
///
/// # Errors
///
/// The [`Drop`] to answer with `NETIF_RSP_ERROR`: headers that claim more than
/// the packet carries (`Drop::Headers`), a GSO packet that is not TCP of its
/// kind, whose MSS is below [`MIN_GSO_SIZE`], above the packet's length or
/// makes segments longer than the MTU (`Drop::Gso`), or of a kind not offered
/// (`Drop::GsoNotOffered`).
pub fn tx_meta(
    frame: &mut [u8],
    flags: u16,
    gso: Option<NetifExtraGso>,
    takes: Offloads,
    max_frame: usize,
) -> Result<Meta, Drop> {
    let csum_blank = flags & NETTXF_CSUM_BLANK != 0;
    if gso.is_none() && !csum_blank {
        return Ok(Meta::default());
    }
    let h = headers(frame).map_err(Drop::Headers)?;
    if let Some(g) = gso {
        let kind = if g.type_ == XEN_NETIF_GSO_TYPE_TCPV6 {
            GsoKind::TcpV6
        } else {
            GsoKind::TcpV4
        };
        let offered = match kind {
            GsoKind::TcpV4 => takes.tso4,
            GsoKind::TcpV6 => takes.tso6,
        };
        if !offered {
            return Err(Drop::GsoNotOffered);
        }
        let h = match h {
            Some(h) if h.proto == TCP && !h.fragmented && h.ipv6 == (kind == GsoKind::TcpV6) => h,
            _ => {
                return Err(Drop::Gso(format!(
                    "a {kind:?} GSO packet that is not {kind:?}"
                )));
            }
        };
        let tcp_hlen = h
            .tcp_hlen
            .ok_or_else(|| Drop::Gso("no TCP header".into()))?;
        let hdr_len = h.l4 + tcp_hlen;
        let size = usize::from(g.size);
        if g.size < MIN_GSO_SIZE {
            return Err(Drop::Gso(format!("MSS {} below {MIN_GSO_SIZE}", g.size)));
        }
        if size > frame.len() {
            return Err(Drop::Gso(format!(
                "MSS {size} larger than the {}-byte packet",
                frame.len()
            )));
        }
        if hdr_len + size > max_frame {
            return Err(Drop::Gso(format!(
                "segments of {} bytes, longer than the {max_frame}-byte limit",
                hdr_len + size
            )));
        }
        let field = h.l4 + 16;
        let pseudo = pseudo_header(frame, h.l3, h.ipv6, TCP, h.l4_len);
        frame[field..field + 2].copy_from_slice(&pseudo.to_be_bytes());
        let payload = h.l4_len - tcp_hlen;
        let gso = (payload > size).then_some(Gso {
            kind,
            size: g.size,
            hdr_len: hdr_len as u16,
        });
        let meta = Meta {
            checksum: Checksum::Partial {
                start: h.l4 as u16,
                offset: 16,
            },
            gso,
        };
        if gso.is_some() || takes.takes(&meta, h.ipv6) {
            return Ok(meta);
        }
        // One segment for a network without checksum offload: finish it here.
        complete_partial(&mut frame[..h.l4 + h.l4_len], h.l4, 16);
        return Ok(Meta::default());
    }
    // csum_blank without GSO: only TCP and UDP have a checksum to finish.
    let Some(h) = h.filter(|h| !h.fragmented && (h.proto == TCP || h.proto == UDP)) else {
        return Ok(Meta::default());
    };
    let offset = if h.proto == TCP { 16 } else { 6 };
    let field = h.l4 + offset;
    if field + 2 > h.l4 + h.l4_len {
        return Err(Drop::Headers(format!(
            "checksum field at {field} past the {}-byte segment",
            h.l4_len
        )));
    }
    let pseudo = pseudo_header(frame, h.l3, h.ipv6, h.proto, h.l4_len);
    frame[field..field + 2].copy_from_slice(&pseudo.to_be_bytes());
    let meta = Meta {
        checksum: Checksum::Partial {
            start: h.l4 as u16,
            offset: offset as u16,
        },
        gso: None,
    };
    if takes.takes(&meta, h.ipv6) {
        return Ok(meta);
    }
    complete_partial(&mut frame[..h.l4 + h.l4_len], h.l4, offset);
    Ok(Meta::default())
}

/// How a packet from the network goes to the frontend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RxPlan {
    /// As it is, with these `NETRXF_*` flags on its first slot and this GSO
    /// extra after it.
    Whole {
        /// `NETRXF_csum_blank`, `NETRXF_data_validated`.
        flags: u16,
        /// The GSO extra info.
        gso: Option<NetifExtraGso>,
    },
    /// A large TCP segment the frontend cannot take: cut it with [`segment`]
    /// into segments of `mss` payload bytes.
    Segment {
        /// The headers.
        headers: Headers,
        /// Payload bytes per segment.
        mss: usize,
    },
}

/// How to give the frontend a packet with `meta` when it `takes` these
/// offloads: as it is (partial checksums only of TCP or UDP whose transport
/// header the frontend will find where `meta` says, since netif carries no
/// offsets), after completing its checksum here, or cut into frames. A packet
/// whose metadata makes no sense goes whole, its checksum left as it is (the
/// frontend checks it).
pub fn rx_plan(frame: &mut [u8], meta: &Meta, takes: Offloads) -> RxPlan {
    let takes = takes.normalized();
    let plain = |flags| RxPlan::Whole { flags, gso: None };
    let (start, offset) = match meta.checksum {
        Checksum::None => return plain(0),
        Checksum::Validated => return plain(NETRXF_DATA_VALIDATED),
        Checksum::Partial { start, offset } => (usize::from(start), usize::from(offset)),
    };
    let h = headers(frame).ok().flatten().filter(|h| {
        h.l4 == start
            && !h.fragmented
            && ((h.proto == TCP && offset == 16) || (h.proto == UDP && offset == 6))
    });
    if let (Some(g), Some(h)) = (meta.gso, h) {
        let kind_ok = h.proto == TCP && h.ipv6 == (g.kind == GsoKind::TcpV6);
        if kind_ok && takes.takes(meta, h.ipv6) {
            return RxPlan::Whole {
                flags: NETRXF_CSUM_BLANK | NETRXF_DATA_VALIDATED,
                gso: Some(NetifExtraGso {
                    size: g.size,
                    type_: match g.kind {
                        GsoKind::TcpV4 => XEN_NETIF_GSO_TYPE_TCPV4,
                        GsoKind::TcpV6 => XEN_NETIF_GSO_TYPE_TCPV6,
                    },
                    pad: 0,
                    features: 0,
                }),
            };
        }
        if kind_ok && g.size >= 1 {
            return RxPlan::Segment {
                headers: h,
                mss: usize::from(g.size),
            };
        }
    }
    if let Some(h) = h {
        let whole = Meta { gso: None, ..*meta };
        if takes.takes(&whole, h.ipv6) {
            return plain(NETRXF_CSUM_BLANK | NETRXF_DATA_VALIDATED);
        }
    }
    if complete_partial(frame, start, offset) {
        plain(NETRXF_DATA_VALIDATED)
    } else {
        plain(0)
    }
}

/// Cut a large TCP packet (headers `h`) into segments of at most `mss`
/// payload bytes, as the kernel's `tcp_gso_segment` does: the headers copied
/// in front of each, IPv4 total length, id and header checksum or IPv6 payload
/// length set, the sequence number advanced, FIN and PSH on the last segment
/// only, CWR on the first only, and the TCP checksum computed. Each segment is
/// built in `seg` and handed to `out`.
pub fn segment(
    frame: &[u8],
    h: &Headers,
    mss: usize,
    seg: &mut Vec<u8>,
    mut out: impl FnMut(&[u8]),
) {
    let Some(tcp_hlen) = h.tcp_hlen else {
        return;
    };
    let hdr = h.l4 + tcp_hlen;
    let end = (h.l4 + h.l4_len).min(frame.len());
    if hdr > end || mss == 0 {
        return;
    }
    let payload = &frame[hdr..end];
    let seq0 = u32::from_be_bytes([
        frame[h.l4 + 4],
        frame[h.l4 + 5],
        frame[h.l4 + 6],
        frame[h.l4 + 7],
    ]);
    let id0 = u16::from_be_bytes([frame[h.l3 + 4], frame[h.l3 + 5]]);
    let n = payload.len().div_ceil(mss).max(1);
    for i in 0..n {
        let chunk = &payload[(i * mss).min(payload.len())..((i + 1) * mss).min(payload.len())];
        seg.clear();
        seg.extend_from_slice(&frame[..hdr]);
        seg.extend_from_slice(chunk);
        let l4_len = tcp_hlen + chunk.len();
        if h.ipv6 {
            let plen = (h.l4 - h.l3 - 40 + l4_len) as u16;
            seg[h.l3 + 4..h.l3 + 6].copy_from_slice(&plen.to_be_bytes());
        } else {
            let total = (h.l4 - h.l3 + l4_len) as u16;
            seg[h.l3 + 2..h.l3 + 4].copy_from_slice(&total.to_be_bytes());
            seg[h.l3 + 4..h.l3 + 6].copy_from_slice(&id0.wrapping_add(i as u16).to_be_bytes());
            seg[h.l3 + 10..h.l3 + 12].copy_from_slice(&[0, 0]);
            let c = crate::csum::fold(crate::csum::add(0, &seg[h.l3..h.l4]));
            seg[h.l3 + 10..h.l3 + 12].copy_from_slice(&c.to_be_bytes());
        }
        let seq = seq0.wrapping_add((i * mss) as u32);
        seg[h.l4 + 4..h.l4 + 8].copy_from_slice(&seq.to_be_bytes());
        let mut fl = seg[h.l4 + 13];
        if i + 1 < n {
            fl &= !0x09; // FIN, PSH
        }
        if i > 0 {
            fl &= !0x80; // CWR
        }
        seg[h.l4 + 13] = fl;
        let pseudo = pseudo_header(seg, h.l3, h.ipv6, TCP, l4_len);
        seg[h.l4 + 16..h.l4 + 18].copy_from_slice(&pseudo.to_be_bytes());
        complete_partial(&mut seg[..], h.l4, 16);
        out(seg);
    }
}
