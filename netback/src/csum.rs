//! Completing TCP/UDP checksums in software, for packets whose checksum was
//! left to an offload that the other side does not take.
//!
//! A frontend that uses checksum offload (Linux netfront does unless the
//! backend says `feature-no-csum-offload`) leaves the transport checksum
//! unfinished. When the network cannot carry "checksum pending" (a TAP device
//! opened without `IFF_VNET_HDR`, a custom network that takes no
//! [`Offloads`](crate::Offloads)), the backend computes it ([`complete`]): the
//! pseudo-header sum plus the transport segment, whatever the field held.
//! In the other direction, a packet from the network with a partial checksum
//! for a frontend that takes none is finished with [`complete_partial`].

const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// One's-complement sum of `data` (as big-endian 16-bit words) added to `sum`.
pub(crate) fn add(mut sum: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum = sum.wrapping_add(u32::from(u16::from_be_bytes([c[0], c[1]])));
        sum = (sum & 0xffff) + (sum >> 16);
    }
    if let [last] = chunks.remainder() {
        sum = sum.wrapping_add(u32::from(*last) << 8);
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum
}

pub(crate) fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Fill in the TCP or UDP checksum of an IPv4 or IPv6 frame. Returns `false`
/// (leaving the frame alone) for anything else: other protocols, IPv4
/// fragments, IPv6 extension headers, truncated headers.
pub fn complete(frame: &mut [u8]) -> bool {
    let mut l3 = 14;
    let mut ethertype = match be16(frame, 12) {
        Some(t) => t,
        None => return false,
    };
    if ethertype == ETH_P_8021Q {
        ethertype = match be16(frame, 16) {
            Some(t) => t,
            None => return false,
        };
        l3 = 18;
    }
    let (proto, l4, l4_len, pseudo) = match ethertype {
        ETH_P_IPV4 => {
            let Some(&vihl) = frame.get(l3) else {
                return false;
            };
            let ihl = usize::from(vihl & 0xf) * 4;
            if vihl >> 4 != 4 || ihl < 20 || frame.len() < l3 + ihl {
                return false;
            }
            let total = usize::from(be16(frame, l3 + 2).unwrap_or(0));
            let frag = be16(frame, l3 + 6).unwrap_or(0);
            if frag & 0x3fff != 0 || total < ihl || l3 + total > frame.len() {
                return false;
            }
            let proto = frame[l3 + 9];
            let l4_len = total - ihl;
            let mut s = add(0, &frame[l3 + 12..l3 + 20]);
            s = add(s, &[0, proto]);
            s = add(s, &(l4_len as u16).to_be_bytes());
            (proto, l3 + ihl, l4_len, s)
        }
        ETH_P_IPV6 => {
            if frame.len() < l3 + 40 || frame[l3] >> 4 != 6 {
                return false;
            }
            let payload = usize::from(be16(frame, l3 + 4).unwrap_or(0));
            let proto = frame[l3 + 6];
            if l3 + 40 + payload > frame.len() {
                return false;
            }
            let mut s = add(0, &frame[l3 + 8..l3 + 40]);
            s = add(s, &(payload as u32).to_be_bytes());
            s = add(s, &[0, 0, 0, proto]);
            (proto, l3 + 40, payload, s)
        }
        _ => return false,
    };
    let field = match proto {
        IPPROTO_TCP if l4_len >= 20 => l4 + 16,
        IPPROTO_UDP if l4_len >= 8 => l4 + 6,
        _ => return false,
    };
    frame[field] = 0;
    frame[field + 1] = 0;
    let mut c = fold(add(pseudo, &frame[l4..l4 + l4_len]));
    if proto == IPPROTO_UDP && c == 0 {
        c = 0xffff;
    }
    frame[field..field + 2].copy_from_slice(&c.to_be_bytes());
    true
}

/// Finish a partial checksum the way the kernel's `skb_checksum_help` does:
/// the one's-complement sum of `frame[start..]` (whose field at `start +
/// offset` holds the pseudo-header sum) goes into that field. `false`
/// (the frame untouched) when the field lies outside the frame.
pub fn complete_partial(frame: &mut [u8], start: usize, offset: usize) -> bool {
    let field = start.saturating_add(offset);
    if field.saturating_add(2) > frame.len() || start > frame.len() {
        return false;
    }
    let mut c = fold(add(0, &frame[start..]));
    // A UDP checksum of 0 means "none": send 0xffff instead (RFC 768). For
    // TCP the two are the same number in one's complement.
    if c == 0 {
        c = 0xffff;
    }
    frame[field..field + 2].copy_from_slice(&c.to_be_bytes());
    true
}

/// The pseudo-header sum (folded, not complemented: what a partial checksum's
/// field holds) of a transport segment of `l4_len` bytes and protocol
/// `proto`, whose IP header starts at `l3` (`ipv6`: version 6).
pub fn pseudo_header(frame: &[u8], l3: usize, ipv6: bool, proto: u8, l4_len: usize) -> u16 {
    let s = if ipv6 {
        let s = add(0, &frame[l3 + 8..l3 + 40]);
        let s = add(s, &(l4_len as u32).to_be_bytes());
        add(s, &[0, 0, 0, proto])
    } else {
        let s = add(0, &frame[l3 + 12..l3 + 20]);
        let s = add(s, &[0, proto]);
        add(s, &(l4_len as u16).to_be_bytes())
    };
    !fold(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A UDP/IPv4 frame with a known-good checksum (computed independently:
    /// 192.0.2.1:1234 -> 192.0.2.2:5678, payload "hello").
    fn udp_frame() -> Vec<u8> {
        let mut f = vec![0u8; 14];
        f[12..14].copy_from_slice(&ETH_P_IPV4.to_be_bytes());
        let payload = b"hello";
        let udp_len = 8 + payload.len();
        let mut ip = vec![
            0x45,
            0,
            0,
            0,
            0,
            0,
            0x40,
            0,
            64,
            IPPROTO_UDP,
            0,
            0,
            192,
            0,
            2,
            1,
            192,
            0,
            2,
            2,
        ];
        let total = (20 + udp_len) as u16;
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        f.extend_from_slice(&ip);
        f.extend_from_slice(&1234u16.to_be_bytes());
        f.extend_from_slice(&5678u16.to_be_bytes());
        f.extend_from_slice(&(udp_len as u16).to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn udp_checksum_matches_a_hand_computation() {
        let mut f = udp_frame();
        assert!(complete(&mut f));
        // Pseudo header: c000+0201+c000+0202 + 0011 + 000d; UDP: 04d2+162e+000d+0000
        // + 6865+6c6c+6f00.
        let words: [u32; 13] = [
            0xc000, 0x0201, 0xc000, 0x0202, 0x0011, 0x000d, 0x04d2, 0x162e, 0x000d, 0, 0x6865,
            0x6c6c, 0x6f00,
        ];
        let mut s: u32 = words.iter().sum();
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        let want = !(s as u16);
        assert_eq!(u16::from_be_bytes([f[40], f[41]]), want);
        // Whatever the field held before (a pseudo-header seed, garbage), the
        // result is the same.
        f[40] = 0x12;
        f[41] = 0x34;
        assert!(complete(&mut f));
        assert_eq!(u16::from_be_bytes([f[40], f[41]]), want);
        // And the whole segment now sums to 0xffff, the receiver's check.
        let mut chk = add(0, &f[26..34]);
        chk = add(chk, &[0, IPPROTO_UDP]);
        chk = add(chk, &13u16.to_be_bytes());
        chk = add(chk, &f[34..]);
        assert_eq!(fold(chk), 0);
    }

    #[test]
    fn leaves_what_it_does_not_understand() {
        let mut arp = vec![0u8; 42];
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        let before = arp.clone();
        assert!(!complete(&mut arp));
        assert_eq!(arp, before);
        let mut short = udp_frame();
        short.truncate(30);
        assert!(!complete(&mut short));
        let mut frag = udp_frame();
        frag[20] = 0x20; // more fragments
        assert!(!complete(&mut frag));
        assert!(!complete(&mut []));
    }
}
