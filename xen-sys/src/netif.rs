//! The network device protocol of `xen/io/netif.h`.
//!
//! Two rings per queue: the tx ring carries [`NetifTxRequest`] / [`NetifTxResponse`]
//! (frames from the frontend), the rx ring [`NetifRxRequest`] / [`NetifRxResponse`]
//! (empty buffers posted by the frontend, filled by the backend). A
//! [`NetifExtraInfo`] occupies a tx request slot (or an rx response slot) after a
//! request whose flags carry `NETTXF_extra_info` / `NETRXF_extra_info`.

use bytemuck::{Pod, Zeroable};
use std::mem::{align_of, offset_of, size_of};

/// `XEN_NETIF_NR_SLOTS_MIN`: the most slots a backend must accept for one packet.
pub const XEN_NETIF_NR_SLOTS_MIN: usize = 18;
/// `XEN_NETIF_MAX_TX_SIZE`: the largest packet a tx request can describe.
pub const XEN_NETIF_MAX_TX_SIZE: usize = 0xffff;

/// `NETTXF_csum_blank`: the protocol checksum is not yet calculated.
pub const NETTXF_CSUM_BLANK: u16 = 1 << 0;
/// `NETTXF_data_validated`: the packet's data was validated.
pub const NETTXF_DATA_VALIDATED: u16 = 1 << 1;
/// `NETTXF_more_data`: the packet continues in the next request.
pub const NETTXF_MORE_DATA: u16 = 1 << 2;
/// `NETTXF_extra_info`: a [`NetifExtraInfo`] follows this request.
pub const NETTXF_EXTRA_INFO: u16 = 1 << 3;

/// `NETRXF_data_validated`.
pub const NETRXF_DATA_VALIDATED: u16 = 1 << 0;
/// `NETRXF_csum_blank`.
pub const NETRXF_CSUM_BLANK: u16 = 1 << 1;
/// `NETRXF_more_data`.
pub const NETRXF_MORE_DATA: u16 = 1 << 2;
/// `NETRXF_extra_info`.
pub const NETRXF_EXTRA_INFO: u16 = 1 << 3;
/// `NETRXF_gso_prefix`.
pub const NETRXF_GSO_PREFIX: u16 = 1 << 4;

/// `XEN_NETIF_EXTRA_TYPE_NONE` (never used, invalid).
pub const XEN_NETIF_EXTRA_TYPE_NONE: u8 = 0;
/// `XEN_NETIF_EXTRA_TYPE_GSO`.
pub const XEN_NETIF_EXTRA_TYPE_GSO: u8 = 1;
/// `XEN_NETIF_EXTRA_TYPE_MCAST_ADD`.
pub const XEN_NETIF_EXTRA_TYPE_MCAST_ADD: u8 = 2;
/// `XEN_NETIF_EXTRA_TYPE_MCAST_DEL`.
pub const XEN_NETIF_EXTRA_TYPE_MCAST_DEL: u8 = 3;
/// `XEN_NETIF_EXTRA_TYPE_HASH`.
pub const XEN_NETIF_EXTRA_TYPE_HASH: u8 = 4;
/// `XEN_NETIF_EXTRA_TYPE_MAX`.
pub const XEN_NETIF_EXTRA_TYPE_MAX: u8 = 5;
/// `XEN_NETIF_EXTRA_FLAG_MORE`: another extra info follows.
pub const XEN_NETIF_EXTRA_FLAG_MORE: u8 = 1 << 0;

/// `XEN_NETIF_GSO_TYPE_NONE`.
pub const XEN_NETIF_GSO_TYPE_NONE: u8 = 0;
/// `XEN_NETIF_GSO_TYPE_TCPV4`.
pub const XEN_NETIF_GSO_TYPE_TCPV4: u8 = 1;
/// `XEN_NETIF_GSO_TYPE_TCPV6`.
pub const XEN_NETIF_GSO_TYPE_TCPV6: u8 = 2;

/// `NETIF_RSP_DROPPED`.
pub const NETIF_RSP_DROPPED: i16 = -2;
/// `NETIF_RSP_ERROR`.
pub const NETIF_RSP_ERROR: i16 = -1;
/// `NETIF_RSP_OKAY`.
pub const NETIF_RSP_OKAY: i16 = 0;
/// `NETIF_RSP_NULL`: the response for an extra-info slot.
pub const NETIF_RSP_NULL: i16 = 1;

/// `struct netif_tx_request`: one fragment of a packet to transmit.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct NetifTxRequest {
    /// Grant of the page holding the fragment.
    pub gref: u32,
    /// Offset of the fragment within the page.
    pub offset: u16,
    /// `NETTXF_*`.
    pub flags: u16,
    /// Echoed in the response.
    pub id: u16,
    /// First slot of a packet: the whole packet's size; later slots: this fragment's.
    pub size: u16,
}

/// `struct netif_tx_response`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct NetifTxResponse {
    /// The request's id.
    pub id: u16,
    /// `NETIF_RSP_*`.
    pub status: i16,
}

/// `struct netif_rx_request`: an empty buffer posted by the frontend.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct NetifRxRequest {
    /// Echoed in the response.
    pub id: u16,
    /// `pad`.
    pub pad: u16,
    /// Grant of the buffer page.
    pub gref: u32,
}

/// `struct netif_rx_response`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct NetifRxResponse {
    /// The request's id.
    pub id: u16,
    /// Offset of the data in the buffer page.
    pub offset: u16,
    /// `NETRXF_*`.
    pub flags: u16,
    /// Bytes received (> 0) or `NETIF_RSP_*` (<= 0).
    pub status: i16,
}

/// `u.gso` of `struct netif_extra_info`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct NetifExtraGso {
    /// Maximum payload size of each segment.
    pub size: u16,
    /// `XEN_NETIF_GSO_TYPE_*`.
    pub type_: u8,
    /// Must be zero.
    pub pad: u8,
    /// `XEN_NETIF_GSO_FEAT_*`.
    pub features: u16,
}

/// `u.mcast` of `struct netif_extra_info`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct NetifExtraMcast {
    /// Multicast MAC address.
    pub addr: [u8; 6],
}

/// `u.hash` of `struct netif_extra_info`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct NetifExtraHash {
    /// `_XEN_NETIF_CTRL_HASH_TYPE_*`.
    pub type_: u8,
    /// `XEN_NETIF_CTRL_HASH_ALGORITHM_*`.
    pub algorithm: u8,
    /// The hash value.
    pub value: [u8; 4],
}

/// The union `u` of `struct netif_extra_info`.
#[repr(C)]
#[derive(Clone, Copy)]
pub union NetifExtraInfoU {
    /// `XEN_NETIF_EXTRA_TYPE_GSO`.
    pub gso: NetifExtraGso,
    /// `XEN_NETIF_EXTRA_TYPE_MCAST_{ADD,DEL}`.
    pub mcast: NetifExtraMcast,
    /// `XEN_NETIF_EXTRA_TYPE_HASH`.
    pub hash: NetifExtraHash,
    /// `pad[3]`.
    pub pad: [u16; 3],
}

const _: () = assert!(size_of::<NetifExtraGso>() == 6);
const _: () = assert!(size_of::<NetifExtraMcast>() == 6);
const _: () = assert!(size_of::<NetifExtraHash>() == 6);
const _: () = assert!(size_of::<NetifExtraInfoU>() == 6 && align_of::<NetifExtraInfoU>() == 2);

// SAFETY: every member is Pod and exactly 6 bytes long with no padding, so every
// byte of the union is initialised whichever member was written, and every bit
// pattern is a valid value of every member.
unsafe impl Zeroable for NetifExtraInfoU {}
// SAFETY: as above; the union is Copy, 'static and repr(C).
unsafe impl Pod for NetifExtraInfoU {}

impl Default for NetifExtraInfoU {
    fn default() -> Self {
        Zeroable::zeroed()
    }
}

impl std::fmt::Debug for NetifExtraInfoU {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("NetifExtraInfoU")
            .field(&bytemuck::bytes_of(self))
            .finish()
    }
}

impl PartialEq for NetifExtraInfoU {
    fn eq(&self, other: &Self) -> bool {
        bytemuck::bytes_of(self) == bytemuck::bytes_of(other)
    }
}
impl Eq for NetifExtraInfoU {}

/// `struct netif_extra_info`: extra information about a packet, in its own slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct NetifExtraInfo {
    /// `XEN_NETIF_EXTRA_TYPE_*`.
    pub type_: u8,
    /// `XEN_NETIF_EXTRA_FLAG_*`.
    pub flags: u8,
    /// Type-specific data.
    pub u: NetifExtraInfoU,
}

impl From<NetifExtraInfo> for NetifTxRequest {
    /// Place an extra info in a tx request slot (the rest zeroed).
    fn from(e: NetifExtraInfo) -> Self {
        let mut slot = NetifTxRequest::zeroed();
        bytemuck::bytes_of_mut(&mut slot)[..8].copy_from_slice(bytemuck::bytes_of(&e));
        slot
    }
}

impl From<NetifExtraInfo> for NetifRxResponse {
    /// Place an extra info in an rx response slot.
    fn from(e: NetifExtraInfo) -> Self {
        bytemuck::cast(e)
    }
}

impl NetifTxRequest {
    /// The slot read as an extra info (meaningful after `NETTXF_extra_info`).
    pub fn as_extra_info(&self) -> NetifExtraInfo {
        bytemuck::pod_read_unaligned(&bytemuck::bytes_of(self)[..8])
    }
}

impl NetifRxResponse {
    /// The slot read as an extra info (meaningful after `NETRXF_extra_info`).
    pub fn as_extra_info(&self) -> NetifExtraInfo {
        bytemuck::cast(*self)
    }
}

const _: () = assert!(size_of::<NetifTxRequest>() == 12 && align_of::<NetifTxRequest>() == 4);
const _: () = assert!(offset_of!(NetifTxRequest, offset) == 4);
const _: () = assert!(offset_of!(NetifTxRequest, flags) == 6);
const _: () = assert!(offset_of!(NetifTxRequest, id) == 8);
const _: () = assert!(offset_of!(NetifTxRequest, size) == 10);
const _: () = assert!(size_of::<NetifTxResponse>() == 4);
const _: () = assert!(size_of::<NetifRxRequest>() == 8);
const _: () = assert!(offset_of!(NetifRxRequest, gref) == 4);
const _: () = assert!(size_of::<NetifRxResponse>() == 8);
const _: () = assert!(offset_of!(NetifRxResponse, status) == 6);
const _: () = assert!(size_of::<NetifExtraInfo>() == 8 && align_of::<NetifExtraInfo>() == 2);
const _: () = assert!(offset_of!(NetifExtraInfo, u) == 2);
const _: () = assert!(crate::ring::entry_size::<NetifTxRequest, NetifTxResponse>() == 12);
const _: () = assert!(crate::ring::entry_size::<NetifRxRequest, NetifRxResponse>() == 8);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_info_round_trips_through_slots() {
        let e = NetifExtraInfo {
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
        assert_eq!(NetifTxRequest::from(e).as_extra_info(), e);
        assert_eq!(NetifRxResponse::from(e).as_extra_info(), e);
        assert_eq!(NetifTxRequest::from(e).size, 0);
    }
}
