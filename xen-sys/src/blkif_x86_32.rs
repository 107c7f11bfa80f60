//! The block device protocol of `xen/io/blkif.h` as a 32-bit x86 guest lays it
//! out (`protocol = "x86_32-abi"`,
//! [`XEN_IO_PROTO_ABI_X86_32`](crate::protocols::XEN_IO_PROTO_ABI_X86_32)).
//!
//! The header is the same; the i386 C ABI is not: a `uint64_t` inside a struct
//! is aligned to 4 bytes, not 8, so `id` sits at offset 4 instead of 8, a
//! request is 108 bytes instead of 112 and a response 12 instead of 16, and a
//! ring page holds the same 32 entries at other offsets. The indirect request
//! gains the i386-only `uint64_t pad` the header adds to keep it at 64 bytes.
//! A 64-bit backend serving a 32-bit frontend reads these slots and answers in
//! this layout (Linux's `blkif_get_x86_32_req`, QEMU's `blkif_get_x86_32_req`).
//!
//! The layouts are checked against the real header compiled for i386
//! (`gcc -m32`) by `tests/c_layout.rs`. `From` conversions go to and from the
//! native structs of [`crate::blkif`], losing nothing.

use crate::blkif::{
    BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST, BLKIF_MAX_SEGMENTS_PER_REQUEST, BLKIF_OP_DISCARD,
    BLKIF_OP_INDIRECT, BlkifRequest, BlkifRequestDiscard, BlkifRequestIndirect,
    BlkifRequestSegment, BlkifResponse, BlkifSector, BlkifVdev,
};
use bytemuck::{Pod, Zeroable};
use std::mem::{align_of, offset_of, size_of};

/// `struct blkif_request` on i386 (Linux: `struct blkif_x86_32_request`).
#[repr(C, packed(4))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct BlkifX86_32Request {
    /// `BLKIF_OP_*`.
    pub operation: u8,
    /// Number of entries of `seg` in use.
    pub nr_segments: u8,
    /// Device handle.
    pub handle: BlkifVdev,
    /// Private frontend value, echoed in the response (4-byte aligned here).
    pub id: u64,
    /// Start sector, in 512-byte units.
    pub sector_number: BlkifSector,
    /// The data pages.
    pub seg: [BlkifRequestSegment; BLKIF_MAX_SEGMENTS_PER_REQUEST],
}

/// `struct blkif_request_discard` on i386.
#[repr(C, packed(4))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct BlkifX86_32RequestDiscard {
    /// `BLKIF_OP_DISCARD`.
    pub operation: u8,
    /// `BLKIF_DISCARD_SECURE` or zero.
    pub flag: u8,
    /// Device handle.
    pub handle: BlkifVdev,
    /// Private frontend value.
    pub id: u64,
    /// Start sector.
    pub sector_number: BlkifSector,
    /// Number of sectors to discard.
    pub nr_sectors: u64,
}

/// `struct blkif_request_indirect` on i386.
#[repr(C, packed(4))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct BlkifX86_32RequestIndirect {
    /// `BLKIF_OP_INDIRECT`.
    pub operation: u8,
    /// `BLKIF_OP_READ` or `BLKIF_OP_WRITE`.
    pub indirect_op: u8,
    /// Number of segments.
    pub nr_segments: u16,
    /// Private frontend value.
    pub id: u64,
    /// Start sector.
    pub sector_number: BlkifSector,
    /// Device handle.
    pub handle: BlkifVdev,
    /// Implicit padding in C.
    pub _pad1: [u8; 2],
    /// Grant references of the pages holding the segments.
    pub indirect_grefs: [u32; BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST],
    /// The header's `#ifdef __i386__ uint64_t pad`.
    pub pad: u64,
}

/// `struct blkif_response` on i386. Its padding must be zero on the ring.
#[repr(C, packed(4))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct BlkifX86_32Response {
    /// The request's `id`.
    pub id: u64,
    /// The request's `operation`.
    pub operation: u8,
    /// Implicit padding in C.
    pub _pad0: u8,
    /// `BLKIF_RSP_*`.
    pub status: i16,
}

impl BlkifX86_32Request {
    /// The slot read as a discard request.
    pub fn as_discard(&self) -> BlkifX86_32RequestDiscard {
        bytemuck::pod_read_unaligned(
            &bytemuck::bytes_of(self)[..size_of::<BlkifX86_32RequestDiscard>()],
        )
    }
    /// The slot read as an indirect request.
    pub fn as_indirect(&self) -> BlkifX86_32RequestIndirect {
        bytemuck::pod_read_unaligned(
            &bytemuck::bytes_of(self)[..size_of::<BlkifX86_32RequestIndirect>()],
        )
    }
}

/// Place a smaller struct at the start of a zeroed 32-bit request slot.
fn slot_of<T: Pod>(v: &T) -> BlkifX86_32Request {
    let mut req = BlkifX86_32Request::zeroed();
    bytemuck::bytes_of_mut(&mut req)[..size_of::<T>()].copy_from_slice(bytemuck::bytes_of(v));
    req
}

impl From<BlkifX86_32RequestDiscard> for BlkifX86_32Request {
    fn from(d: BlkifX86_32RequestDiscard) -> Self {
        slot_of(&d)
    }
}

impl From<BlkifX86_32RequestIndirect> for BlkifX86_32Request {
    fn from(r: BlkifX86_32RequestIndirect) -> Self {
        slot_of(&r)
    }
}

/// A 32-bit slot as the native request it stands for: the fields of the view
/// its `operation` selects (plain, discard or indirect) are copied one by one.
impl From<&BlkifX86_32Request> for BlkifRequest {
    fn from(r: &BlkifX86_32Request) -> Self {
        match r.operation {
            BLKIF_OP_DISCARD => {
                let d = r.as_discard();
                BlkifRequestDiscard {
                    operation: d.operation,
                    flag: d.flag,
                    handle: d.handle,
                    id: d.id,
                    sector_number: d.sector_number,
                    nr_sectors: d.nr_sectors,
                    ..Zeroable::zeroed()
                }
                .into()
            }
            BLKIF_OP_INDIRECT => {
                let i = r.as_indirect();
                BlkifRequestIndirect {
                    operation: i.operation,
                    indirect_op: i.indirect_op,
                    nr_segments: i.nr_segments,
                    id: i.id,
                    sector_number: i.sector_number,
                    handle: i.handle,
                    indirect_grefs: i.indirect_grefs,
                    ..Zeroable::zeroed()
                }
                .into()
            }
            _ => BlkifRequest {
                operation: r.operation,
                nr_segments: r.nr_segments,
                handle: r.handle,
                id: r.id,
                sector_number: r.sector_number,
                seg: r.seg,
                ..Zeroable::zeroed()
            },
        }
    }
}

/// A native request in the 32-bit layout (what a 32-bit frontend writes).
impl From<&BlkifRequest> for BlkifX86_32Request {
    fn from(r: &BlkifRequest) -> Self {
        match r.operation {
            BLKIF_OP_DISCARD => {
                let d = r.as_discard();
                BlkifX86_32RequestDiscard {
                    operation: d.operation,
                    flag: d.flag,
                    handle: d.handle,
                    id: d.id,
                    sector_number: d.sector_number,
                    nr_sectors: d.nr_sectors,
                }
                .into()
            }
            BLKIF_OP_INDIRECT => {
                let i = r.as_indirect();
                BlkifX86_32RequestIndirect {
                    operation: i.operation,
                    indirect_op: i.indirect_op,
                    nr_segments: i.nr_segments,
                    id: i.id,
                    sector_number: i.sector_number,
                    handle: i.handle,
                    indirect_grefs: i.indirect_grefs,
                    ..Zeroable::zeroed()
                }
                .into()
            }
            _ => BlkifX86_32Request {
                operation: r.operation,
                nr_segments: r.nr_segments,
                handle: r.handle,
                id: r.id,
                sector_number: r.sector_number,
                seg: r.seg,
            },
        }
    }
}

impl From<&BlkifResponse> for BlkifX86_32Response {
    fn from(r: &BlkifResponse) -> Self {
        BlkifX86_32Response {
            id: r.id,
            operation: r.operation,
            _pad0: 0,
            status: r.status,
        }
    }
}

impl From<&BlkifX86_32Response> for BlkifResponse {
    fn from(r: &BlkifX86_32Response) -> Self {
        BlkifResponse::new(r.id, r.operation, r.status)
    }
}

const _: () = assert!(size_of::<BlkifX86_32Request>() == 108);
const _: () = assert!(align_of::<BlkifX86_32Request>() == 4);
const _: () = assert!(offset_of!(BlkifX86_32Request, handle) == 2);
const _: () = assert!(offset_of!(BlkifX86_32Request, id) == 4);
const _: () = assert!(offset_of!(BlkifX86_32Request, sector_number) == 12);
const _: () = assert!(offset_of!(BlkifX86_32Request, seg) == 20);
const _: () = assert!(size_of::<BlkifX86_32RequestDiscard>() == 28);
const _: () = assert!(offset_of!(BlkifX86_32RequestDiscard, nr_sectors) == 20);
const _: () = assert!(size_of::<BlkifX86_32RequestIndirect>() == 64);
const _: () = assert!(offset_of!(BlkifX86_32RequestIndirect, handle) == 20);
const _: () = assert!(offset_of!(BlkifX86_32RequestIndirect, indirect_grefs) == 24);
const _: () = assert!(offset_of!(BlkifX86_32RequestIndirect, pad) == 56);
const _: () = assert!(size_of::<BlkifX86_32Response>() == 12);
const _: () = assert!(align_of::<BlkifX86_32Response>() == 4);
const _: () = assert!(offset_of!(BlkifX86_32Response, operation) == 8);
const _: () = assert!(offset_of!(BlkifX86_32Response, status) == 10);
const _: () = assert!(crate::ring::entry_size::<BlkifX86_32Request, BlkifX86_32Response>() == 108);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blkif::{BLKIF_DISCARD_SECURE, BLKIF_OP_READ, BLKIF_OP_WRITE, BLKIF_RSP_ERROR};

    #[test]
    fn every_view_converts_both_ways_without_loss() {
        let mut rw = BlkifRequest {
            operation: BLKIF_OP_WRITE,
            nr_segments: 2,
            handle: 3,
            id: 0x0123_4567_89ab_cdef,
            sector_number: 1 << 40,
            ..Default::default()
        };
        rw.seg[0] = BlkifRequestSegment {
            gref: 9,
            first_sect: 1,
            last_sect: 7,
            _pad: [0; 2],
        };
        let discard: BlkifRequest = BlkifRequestDiscard {
            operation: BLKIF_OP_DISCARD,
            flag: BLKIF_DISCARD_SECURE,
            handle: 1,
            id: u64::MAX,
            sector_number: 8,
            nr_sectors: 99,
            ..Zeroable::zeroed()
        }
        .into();
        let indirect: BlkifRequest = BlkifRequestIndirect {
            operation: BLKIF_OP_INDIRECT,
            indirect_op: BLKIF_OP_READ,
            nr_segments: 300,
            id: 5,
            sector_number: 64,
            handle: 2,
            indirect_grefs: [1, 2, 3, 4, 5, 6, 7, 8],
            ..Zeroable::zeroed()
        }
        .into();
        for native in [rw, discard, indirect] {
            let narrow = BlkifX86_32Request::from(&native);
            assert_eq!(BlkifRequest::from(&narrow), native);
        }
        // The id is where an i386 compiler puts it: right after the handle.
        let narrow = BlkifX86_32Request::from(&rw);
        assert_eq!(
            &bytemuck::bytes_of(&narrow)[4..12],
            &0x0123_4567_89ab_cdef_u64.to_ne_bytes()
        );
        let rsp = BlkifResponse::new(7, BLKIF_OP_READ, BLKIF_RSP_ERROR);
        let narrow = BlkifX86_32Response::from(&rsp);
        assert_eq!(bytemuck::bytes_of(&narrow)[9], 0);
        assert_eq!(BlkifResponse::from(&narrow), rsp);
    }
}
