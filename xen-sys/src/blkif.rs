//! The block device protocol of `xen/io/blkif.h` (x86_64 ABI, "x86_64-abi").
//!
//! One ring carries [`BlkifRequest`] entries (112 bytes) and [`BlkifResponse`]
//! entries (16 bytes). Discard and indirect requests are other views of the same
//! 112-byte slot: C declares them as separate structs written into a
//! `blkif_request` slot, and [`BlkifRequest::as_discard`],
//! [`BlkifRequest::as_indirect`] and the `From` conversions do the same here.

use bytemuck::{Pod, Zeroable};
use std::mem::{align_of, offset_of, size_of};

/// `blkif_vdev_t`.
pub type BlkifVdev = u16;
/// `blkif_sector_t`: always in 512-byte units, whatever `sector-size` says.
pub type BlkifSector = u64;

/// `BLKIF_OP_READ`.
pub const BLKIF_OP_READ: u8 = 0;
/// `BLKIF_OP_WRITE`.
pub const BLKIF_OP_WRITE: u8 = 1;
/// `BLKIF_OP_WRITE_BARRIER`: a write ordered after everything before it, then flushed.
pub const BLKIF_OP_WRITE_BARRIER: u8 = 2;
/// `BLKIF_OP_FLUSH_DISKCACHE`.
pub const BLKIF_OP_FLUSH_DISKCACHE: u8 = 3;
/// `BLKIF_OP_RESERVED_1`: never valid.
pub const BLKIF_OP_RESERVED_1: u8 = 4;
/// `BLKIF_OP_DISCARD`: see [`BlkifRequestDiscard`].
pub const BLKIF_OP_DISCARD: u8 = 5;
/// `BLKIF_OP_INDIRECT`: see [`BlkifRequestIndirect`].
pub const BLKIF_OP_INDIRECT: u8 = 6;

/// `BLKIF_MAX_SEGMENTS_PER_REQUEST`: segments carried directly in a request.
pub const BLKIF_MAX_SEGMENTS_PER_REQUEST: usize = 11;
/// `BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST`: indirect segment pages per request.
pub const BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST: usize = 8;
/// Segments held by one indirect page (Linux's `SEGS_PER_INDIRECT_FRAME`:
/// a 4 KiB page of 8-byte [`BlkifRequestSegment`]s).
pub const BLKIF_SEGS_PER_INDIRECT_FRAME: usize =
    crate::ring::XEN_PAGE_SIZE / size_of::<BlkifRequestSegment>();
/// The most segments an indirect request can name (8 pages of 512).
pub const BLKIF_MAX_INDIRECT_SEGMENTS: usize =
    BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST * BLKIF_SEGS_PER_INDIRECT_FRAME;

/// `BLKIF_DISCARD_SECURE`: flag of [`BlkifRequestDiscard::flag`].
pub const BLKIF_DISCARD_SECURE: u8 = 1 << 0;

/// `BLKIF_RSP_EOPNOTSUPP`.
pub const BLKIF_RSP_EOPNOTSUPP: i16 = -2;
/// `BLKIF_RSP_ERROR`.
pub const BLKIF_RSP_ERROR: i16 = -1;
/// `BLKIF_RSP_OKAY`.
pub const BLKIF_RSP_OKAY: i16 = 0;

/// `VDISK_CDROM`, a bit of the `info` key.
pub const VDISK_CDROM: u32 = 0x1;
/// `VDISK_REMOVABLE`.
pub const VDISK_REMOVABLE: u32 = 0x2;
/// `VDISK_READONLY`.
pub const VDISK_READONLY: u32 = 0x4;

/// The unit of `sector_number`, `first_sect` and `last_sect`.
pub const BLKIF_SECTOR_SIZE: usize = 512;
/// Sectors in one 4 KiB segment page: `last_sect` is at most this minus one.
pub const BLKIF_SECTORS_PER_PAGE: u8 = (crate::ring::XEN_PAGE_SIZE / BLKIF_SECTOR_SIZE) as u8;

/// `struct blkif_request_segment`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct BlkifRequestSegment {
    /// Grant reference of the I/O buffer page.
    pub gref: u32,
    /// First 512-byte sector in the page to transfer (inclusive).
    pub first_sect: u8,
    /// Last 512-byte sector in the page to transfer (inclusive).
    pub last_sect: u8,
    /// Implicit padding in C.
    pub _pad: [u8; 2],
}

/// `struct blkif_request`: READ, WRITE, WRITE_BARRIER and FLUSH_DISKCACHE.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct BlkifRequest {
    /// `BLKIF_OP_*`.
    pub operation: u8,
    /// Number of entries of `seg` in use.
    pub nr_segments: u8,
    /// Device handle (only for read/write requests).
    pub handle: BlkifVdev,
    /// Implicit padding in C.
    pub _pad0: [u8; 4],
    /// Private frontend value, echoed in the response.
    pub id: u64,
    /// Start sector on disk, in 512-byte units.
    pub sector_number: BlkifSector,
    /// The data pages.
    pub seg: [BlkifRequestSegment; BLKIF_MAX_SEGMENTS_PER_REQUEST],
}

/// `struct blkif_request_discard`: the slot of a `BLKIF_OP_DISCARD` request.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct BlkifRequestDiscard {
    /// `BLKIF_OP_DISCARD`.
    pub operation: u8,
    /// `BLKIF_DISCARD_SECURE` or zero.
    pub flag: u8,
    /// Device handle.
    pub handle: BlkifVdev,
    /// Implicit padding in C.
    pub _pad0: [u8; 4],
    /// Private frontend value, echoed in the response.
    pub id: u64,
    /// Start sector, in 512-byte units.
    pub sector_number: BlkifSector,
    /// Number of contiguous 512-byte sectors to discard.
    pub nr_sectors: u64,
}

/// `struct blkif_request_indirect`: the slot of a `BLKIF_OP_INDIRECT` request,
/// whose segments live in separately granted pages.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct BlkifRequestIndirect {
    /// `BLKIF_OP_INDIRECT`.
    pub operation: u8,
    /// `BLKIF_OP_READ` or `BLKIF_OP_WRITE`.
    pub indirect_op: u8,
    /// Number of segments, spread over the indirect pages.
    pub nr_segments: u16,
    /// Implicit padding in C.
    pub _pad0: [u8; 4],
    /// Private frontend value, echoed in the response.
    pub id: u64,
    /// Start sector, in 512-byte units.
    pub sector_number: BlkifSector,
    /// Device handle.
    pub handle: BlkifVdev,
    /// Implicit padding in C.
    pub _pad1: [u8; 2],
    /// Grant references of the pages holding the segments.
    pub indirect_grefs: [u32; BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST],
    /// Implicit tail padding in C (to the 8-byte alignment).
    pub _pad2: [u8; 4],
}

/// `struct blkif_response`. Its padding must be zero on the ring (XSA-216).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct BlkifResponse {
    /// The request's `id`.
    pub id: u64,
    /// The request's `operation`.
    pub operation: u8,
    /// Implicit padding in C.
    pub _pad0: u8,
    /// `BLKIF_RSP_*`.
    pub status: i16,
    /// Implicit tail padding in C.
    pub _pad1: [u8; 4],
}

impl BlkifResponse {
    /// A response with every padding byte zero.
    pub const fn new(id: u64, operation: u8, status: i16) -> Self {
        BlkifResponse {
            id,
            operation,
            _pad0: 0,
            status,
            _pad1: [0; 4],
        }
    }
}

/// Reinterpret the first `size_of::<T>()` bytes of a request slot.
fn view<T: Pod>(req: &BlkifRequest) -> T {
    bytemuck::pod_read_unaligned(&bytemuck::bytes_of(req)[..size_of::<T>()])
}

/// Place a smaller request struct at the start of a zeroed request slot.
fn slot_of<T: Pod>(v: &T) -> BlkifRequest {
    let mut req = BlkifRequest::zeroed();
    bytemuck::bytes_of_mut(&mut req)[..size_of::<T>()].copy_from_slice(bytemuck::bytes_of(v));
    req
}

impl BlkifRequest {
    /// The slot read as a discard request (meaningful when `operation` is DISCARD).
    pub fn as_discard(&self) -> BlkifRequestDiscard {
        view(self)
    }
    /// The slot read as an indirect request (meaningful when `operation` is INDIRECT).
    pub fn as_indirect(&self) -> BlkifRequestIndirect {
        view(self)
    }
}

impl From<BlkifRequestDiscard> for BlkifRequest {
    fn from(d: BlkifRequestDiscard) -> Self {
        slot_of(&d)
    }
}

impl From<BlkifRequestIndirect> for BlkifRequest {
    fn from(r: BlkifRequestIndirect) -> Self {
        slot_of(&r)
    }
}

const _: () = assert!(size_of::<BlkifRequestSegment>() == 8);
const _: () = assert!(offset_of!(BlkifRequestSegment, first_sect) == 4);
const _: () = assert!(offset_of!(BlkifRequestSegment, last_sect) == 5);
const _: () = assert!(size_of::<BlkifRequest>() == 112 && align_of::<BlkifRequest>() == 8);
const _: () = assert!(offset_of!(BlkifRequest, handle) == 2);
const _: () = assert!(offset_of!(BlkifRequest, id) == 8);
const _: () = assert!(offset_of!(BlkifRequest, sector_number) == 16);
const _: () = assert!(offset_of!(BlkifRequest, seg) == 24);
const _: () = assert!(size_of::<BlkifRequestDiscard>() == 32);
const _: () = assert!(offset_of!(BlkifRequestDiscard, nr_sectors) == 24);
const _: () = assert!(size_of::<BlkifRequestIndirect>() == 64);
const _: () = assert!(offset_of!(BlkifRequestIndirect, nr_segments) == 2);
const _: () = assert!(offset_of!(BlkifRequestIndirect, handle) == 24);
const _: () = assert!(offset_of!(BlkifRequestIndirect, indirect_grefs) == 28);
const _: () = assert!(size_of::<BlkifResponse>() == 16 && align_of::<BlkifResponse>() == 8);
const _: () = assert!(offset_of!(BlkifResponse, operation) == 8);
const _: () = assert!(offset_of!(BlkifResponse, status) == 10);
const _: () = assert!(crate::ring::entry_size::<BlkifRequest, BlkifResponse>() == 112);
const _: () = assert!(BLKIF_SEGS_PER_INDIRECT_FRAME == 512);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discard_round_trips_through_a_request_slot() {
        let d = BlkifRequestDiscard {
            operation: BLKIF_OP_DISCARD,
            flag: BLKIF_DISCARD_SECURE,
            handle: 7,
            id: 0xdead_beef,
            sector_number: 1 << 40,
            nr_sectors: 99,
            ..Zeroable::zeroed()
        };
        let slot = BlkifRequest::from(d);
        assert_eq!(slot.operation, BLKIF_OP_DISCARD);
        assert_eq!(slot.id, 0xdead_beef);
        assert_eq!(slot.as_discard(), d);
        assert!(bytemuck::bytes_of(&slot)[32..].iter().all(|&b| b == 0));
    }

    #[test]
    fn indirect_round_trips_through_a_request_slot() {
        let r = BlkifRequestIndirect {
            operation: BLKIF_OP_INDIRECT,
            indirect_op: BLKIF_OP_WRITE,
            nr_segments: 300,
            id: 5,
            sector_number: 8,
            handle: 1,
            indirect_grefs: [1, 2, 3, 4, 5, 6, 7, 8],
            ..Zeroable::zeroed()
        };
        assert_eq!(BlkifRequest::from(r).as_indirect(), r);
    }

    #[test]
    fn new_response_has_zero_padding() {
        let r = BlkifResponse::new(u64::MAX, BLKIF_OP_READ, BLKIF_RSP_ERROR);
        let b = bytemuck::bytes_of(&r);
        assert_eq!(b[9], 0);
        assert_eq!(&b[12..], &[0; 4]);
    }
}
