//! Grant table v1 entries and flags of `xen/grant_table.h`.

use bytemuck::{Pod, Zeroable};
use std::mem::{offset_of, size_of};

/// `grant_ref_t`.
pub type GrantRefT = u32;

/// `struct grant_entry_v1`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct GrantEntryV1 {
    /// `GTF_*`: type and flags.
    pub flags: u16,
    /// The domain being granted foreign privileges.
    pub domid: u16,
    /// The frame the domain may map (or transfer into).
    pub frame: u32,
}

const _: () = assert!(size_of::<GrantEntryV1>() == 8);
const _: () = assert!(offset_of!(GrantEntryV1, domid) == 2);
const _: () = assert!(offset_of!(GrantEntryV1, frame) == 4);

/// `GTF_invalid`: the entry grants no privileges.
pub const GTF_INVALID: u16 = 0;
/// `GTF_permit_access`: allow `domid` to map and access `frame`.
pub const GTF_PERMIT_ACCESS: u16 = 1;
/// `GTF_accept_transfer`.
pub const GTF_ACCEPT_TRANSFER: u16 = 2;
/// `GTF_transitive`.
pub const GTF_TRANSITIVE: u16 = 3;
/// `GTF_type_mask`.
pub const GTF_TYPE_MASK: u16 = 3;
/// `GTF_readonly`: restrict `domid` to read-only mappings and accesses.
pub const GTF_READONLY: u16 = 1 << 2;
/// `GTF_reading`: currently mapped for reading (set by Xen).
pub const GTF_READING: u16 = 1 << 3;
/// `GTF_writing`: currently mapped for writing (set by Xen).
pub const GTF_WRITING: u16 = 1 << 4;
/// `GTF_PWT`.
pub const GTF_PWT: u16 = 1 << 5;
/// `GTF_PCD`.
pub const GTF_PCD: u16 = 1 << 6;
/// `GTF_PAT`.
pub const GTF_PAT: u16 = 1 << 7;
/// `GTF_sub_page`.
pub const GTF_SUB_PAGE: u16 = 1 << 8;
/// `GTF_transfer_committed`.
pub const GTF_TRANSFER_COMMITTED: u16 = 1 << 2;
/// `GTF_transfer_completed`.
pub const GTF_TRANSFER_COMPLETED: u16 = 1 << 3;

/// `GNTCOPY_source_gref`: the copy source is a grant reference.
pub const GNTCOPY_SOURCE_GREF: u16 = 1 << 0;
/// `GNTCOPY_dest_gref`: the copy destination is a grant reference.
pub const GNTCOPY_DEST_GREF: u16 = 1 << 1;

/// `GNTST_okay`.
pub const GNTST_OKAY: i16 = 0;
/// `GNTST_general_error`.
pub const GNTST_GENERAL_ERROR: i16 = -1;
/// `GNTST_bad_domain`.
pub const GNTST_BAD_DOMAIN: i16 = -2;
/// `GNTST_bad_gntref`.
pub const GNTST_BAD_GNTREF: i16 = -3;
/// `GNTST_bad_handle`.
pub const GNTST_BAD_HANDLE: i16 = -4;
/// `GNTST_bad_virt_addr`.
pub const GNTST_BAD_VIRT_ADDR: i16 = -5;
/// `GNTST_bad_dev_addr`.
pub const GNTST_BAD_DEV_ADDR: i16 = -6;
/// `GNTST_no_device_space`.
pub const GNTST_NO_DEVICE_SPACE: i16 = -7;
/// `GNTST_permission_denied`.
pub const GNTST_PERMISSION_DENIED: i16 = -8;
/// `GNTST_bad_page`.
pub const GNTST_BAD_PAGE: i16 = -9;
/// `GNTST_bad_copy_arg`.
pub const GNTST_BAD_COPY_ARG: i16 = -10;
/// `GNTST_address_too_big`.
pub const GNTST_ADDRESS_TOO_BIG: i16 = -11;
/// `GNTST_eagain`.
pub const GNTST_EAGAIN: i16 = -12;
/// `GNTST_no_space`.
pub const GNTST_NO_SPACE: i16 = -13;
