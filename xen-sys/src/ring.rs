//! The shared ring header and size formula of `xen/io/ring.h`.
//!
//! `DEFINE_RING_TYPES(name, req, rsp)` lays out a ring as a 64-byte header
//! ([`SringHeader`]) followed by an array of `union { req; rsp; }` entries. The
//! number of entries is the largest power of two that fits ([`const_ring_size`],
//! `__CONST_RING_SIZE`). The ring logic itself lives in the `xenio-ring` crate.

use bytemuck::{Pod, Zeroable};
use std::mem::{align_of, offset_of, size_of};

/// `RING_IDX`: a free-running index; all arithmetic on it wraps.
pub type RingIdx = u32;

/// `XEN_PAGE_SHIFT`: rings and grants are always in 4 KiB pages.
pub const XEN_PAGE_SHIFT: u32 = 12;
/// `XEN_PAGE_SIZE`.
pub const XEN_PAGE_SIZE: usize = 1 << XEN_PAGE_SHIFT;

/// The header of `struct name##_sring` (`xen/io/ring.h`), everything before
/// `ring[]`: the four indices, the private union `pvt` and `__pad`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct SringHeader {
    /// Producer index of requests, written by the frontend.
    pub req_prod: RingIdx,
    /// The backend asks to be notified when `req_prod` passes this index.
    pub req_event: RingIdx,
    /// Producer index of responses, written by the backend.
    pub rsp_prod: RingIdx,
    /// The frontend asks to be notified when `rsp_prod` passes this index.
    pub rsp_event: RingIdx,
    /// `union { netif.smartpoll_active; tapif_user.msg; pvt_pad[4] } pvt`.
    pub pvt: [u8; 4],
    /// `__pad[44]`.
    pub pad: [u8; 44],
}

/// Byte offset of `ring[0]` in `struct name##_sring`.
pub const SRING_HEADER_SIZE: usize = size_of::<SringHeader>();

const _: () = assert!(size_of::<SringHeader>() == 64);
const _: () = assert!(align_of::<SringHeader>() == 4);
const _: () = assert!(offset_of!(SringHeader, req_prod) == 0);
const _: () = assert!(offset_of!(SringHeader, req_event) == 4);
const _: () = assert!(offset_of!(SringHeader, rsp_prod) == 8);
const _: () = assert!(offset_of!(SringHeader, rsp_event) == 12);
const _: () = assert!(offset_of!(SringHeader, pvt) == 16);
const _: () = assert!(offset_of!(SringHeader, pad) == 20);

/// `__RD32`: round a 32-bit value down to a power of two (0 stays 0).
pub const fn rd32(x: u32) -> u32 {
    if x == 0 {
        0
    } else {
        1 << (31 - x.leading_zeros())
    }
}

/// Size of `union name##_sring_entry { req; rsp; }`: the larger member, rounded up
/// to the stricter alignment, as a C compiler lays out a union.
pub const fn entry_size<Req, Rsp>() -> usize {
    let size = if size_of::<Req>() > size_of::<Rsp>() {
        size_of::<Req>()
    } else {
        size_of::<Rsp>()
    };
    let align = if align_of::<Req>() > align_of::<Rsp>() {
        align_of::<Req>()
    } else {
        align_of::<Rsp>()
    };
    size.div_ceil(align) * align
}

/// `__CONST_RING_SIZE`: how many entries of `entry_size` bytes a ring of
/// `ring_bytes` bytes holds. Zero if not even one fits.
pub const fn const_ring_size(ring_bytes: usize, entry_size: usize) -> u32 {
    if ring_bytes <= SRING_HEADER_SIZE || entry_size == 0 {
        return 0;
    }
    let n = (ring_bytes - SRING_HEADER_SIZE) / entry_size;
    let n = if n > u32::MAX as usize {
        u32::MAX
    } else {
        n as u32
    };
    rd32(n)
}

/// Bytes of a ring of `1 << order` pages (`XEN_PAGE_SIZE << order`).
pub const fn ring_bytes(order: u32) -> usize {
    XEN_PAGE_SIZE << order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rd32_rounds_down_to_powers_of_two() {
        assert_eq!(rd32(0), 0);
        assert_eq!(rd32(1), 1);
        assert_eq!(rd32(3), 2);
        assert_eq!(rd32(36), 32);
        assert_eq!(rd32(u32::MAX), 1 << 31);
    }

    #[test]
    fn union_size_rounds_to_alignment() {
        #[repr(C, align(8))]
        struct A([u8; 9]);
        assert_eq!(entry_size::<A, u32>(), 16);
        assert_eq!(entry_size::<[u16; 6], u32>(), 12);
    }
}
