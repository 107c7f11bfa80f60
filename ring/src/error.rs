//! The ring's one error type.

use xenio_xen_sys::ring::RingIdx;

/// What can go wrong on a ring. The two `*ProdOverflow` variants mean the peer
/// wrote an impossible producer index: the ring is then broken for good and every
/// later call returns the same error (see [`RingError::is_broken`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    /// The region cannot hold the header and one entry.
    #[error(
        "a ring needs the 64-byte header and at least one {entry_bytes}-byte entry; \
         the region has {region_bytes} bytes"
    )]
    RegionTooSmall {
        /// Bytes in the region.
        region_bytes: usize,
        /// Bytes of one entry (the request/response union).
        entry_bytes: usize,
    },
    /// No free slot: `size` requests are outstanding (`RING_FULL`).
    #[error("the ring is full: all {size} slots hold outstanding requests")]
    Full {
        /// Entries in the ring.
        size: u32,
    },
    /// The backend tried to push a response while no consumed request awaits one.
    #[error(
        "no consumed request is waiting for a response (rsp_prod_pvt == req_cons == {req_cons})"
    )]
    NoRequestToAnswer {
        /// The backend's consumer index.
        req_cons: RingIdx,
    },
    /// The frontend's `req_prod` claims more requests than the ring can hold, or
    /// moved backwards (`RING_REQUEST_PROD_OVERFLOW`).
    #[error(
        "broken ring: the frontend published req_prod {req_prod}, outside \
         [{req_cons}, {rsp_prod_pvt} + {size}] (RING_REQUEST_PROD_OVERFLOW)"
    )]
    RequestProdOverflow {
        /// The index the frontend wrote.
        req_prod: RingIdx,
        /// Requests consumed so far.
        req_cons: RingIdx,
        /// Responses produced so far.
        rsp_prod_pvt: RingIdx,
        /// Entries in the ring.
        size: u32,
    },
    /// The backend's `rsp_prod` claims responses to requests never made, or moved
    /// backwards (`RING_RESPONSE_PROD_OVERFLOW`).
    #[error(
        "broken ring: the backend published rsp_prod {rsp_prod}, outside \
         [{rsp_cons}, {req_prod_pvt}] (RING_RESPONSE_PROD_OVERFLOW)"
    )]
    ResponseProdOverflow {
        /// The index the backend wrote.
        rsp_prod: RingIdx,
        /// Responses consumed so far.
        rsp_cons: RingIdx,
        /// Requests produced so far.
        req_prod_pvt: RingIdx,
    },
}

impl RingError {
    /// Whether the peer broke the ring (it must be disconnected, not retried).
    pub fn is_broken(&self) -> bool {
        matches!(
            self,
            RingError::RequestProdOverflow { .. } | RingError::ResponseProdOverflow { .. }
        )
    }
}
