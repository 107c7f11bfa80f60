//! The request ring of one queue in the layout the frontend chose with its
//! `protocol` key: the native (x86_64) entries of `xen/io/blkif.h`, or the
//! 32-bit x86 ones (`x86_32-abi`: 108-byte requests, 12-byte responses). The
//! queue worker sees native [`BlkifRequest`]s and answers native
//! [`BlkifResponse`]s either way; 32-bit slots are translated as they are copied
//! out (once, as always) and as responses are written (as Linux's blkback and
//! QEMU's xen-block do).

use crate::error::{Error, Result};
use xenio_ring::{BackRing, Notify, RingError};
use xenio_xen_sys::blkif::{BlkifRequest, BlkifResponse};
use xenio_xen_sys::blkif_x86_32::{BlkifX86_32Request, BlkifX86_32Response};
use xenio_xen_sys::protocols::{
    XEN_IO_PROTO_ABI_ARM, XEN_IO_PROTO_ABI_X86_32, XEN_IO_PROTO_ABI_X86_64,
};
use xenio_xen_sys::ring::RingIdx;
use xenio_xenbus::Region;

/// How the frontend lays out ring entries (its `protocol` key).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// `x86_64-abi` (and an absent or empty key, and `arm-abi`, whose layout is
    /// the same: every `uint64_t` 8-byte aligned).
    #[default]
    X86_64,
    /// `x86_32-abi`: `uint64_t` 4-byte aligned inside structs.
    X86_32,
}

impl Protocol {
    /// The protocol a frontend's `protocol` key names (`None`: no key).
    ///
    /// # Errors
    ///
    /// [`Error::Frontend`] for a name `xen/io/protocols.h` does not define.
    pub fn from_key(value: Option<&str>) -> Result<Protocol> {
        match value.map(str::trim) {
            None | Some("") => Ok(Protocol::X86_64),
            Some(XEN_IO_PROTO_ABI_X86_64) | Some(XEN_IO_PROTO_ABI_ARM) => Ok(Protocol::X86_64),
            Some(XEN_IO_PROTO_ABI_X86_32) => Ok(Protocol::X86_32),
            Some(other) => Err(Error::Frontend(format!(
                "protocol {other:?} is not one of {XEN_IO_PROTO_ABI_X86_64}, \
                 {XEN_IO_PROTO_ABI_X86_32} or {XEN_IO_PROTO_ABI_ARM}"
            ))),
        }
    }

    /// The slots a ring of `bytes` bytes holds in this layout (`__RING_SIZE`).
    pub fn ring_size(self, bytes: usize) -> u32 {
        use xenio_xen_sys::ring::{const_ring_size, entry_size};
        let entry = match self {
            Protocol::X86_64 => entry_size::<BlkifRequest, BlkifResponse>(),
            Protocol::X86_32 => entry_size::<BlkifX86_32Request, BlkifX86_32Response>(),
        };
        const_ring_size(bytes, entry)
    }

    /// The key's value for this protocol.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::X86_64 => XEN_IO_PROTO_ABI_X86_64,
            Protocol::X86_32 => XEN_IO_PROTO_ABI_X86_32,
        }
    }
}

/// The response producer index the frontend sees in the ring in `mem`
/// (`sring->rsp_prod`): what the last backend published.
pub fn published_responses(mem: &Region) -> RingIdx {
    use xenio_ring::SharedMemory;
    // Acquire: pairs with the Release store of the backend that published it
    // (another process, which is gone).
    mem.words()[2].load(std::sync::atomic::Ordering::Acquire)
}

/// A backend's ring in either layout.
pub enum BlkRing {
    /// Native (x86_64) entries.
    X86_64(BackRing<BlkifRequest, BlkifResponse, Region>),
    /// 32-bit x86 entries, with a buffer for the copies being translated.
    X86_32(
        BackRing<BlkifX86_32Request, BlkifX86_32Response, Region>,
        Vec<BlkifX86_32Request>,
    ),
}

impl From<BackRing<BlkifRequest, BlkifResponse, Region>> for BlkRing {
    fn from(r: BackRing<BlkifRequest, BlkifResponse, Region>) -> Self {
        BlkRing::X86_64(r)
    }
}

impl From<BackRing<BlkifX86_32Request, BlkifX86_32Response, Region>> for BlkRing {
    fn from(r: BackRing<BlkifX86_32Request, BlkifX86_32Response, Region>) -> Self {
        BlkRing::X86_32(r, Vec::new())
    }
}

/// Call `$body` with the inner ring, whichever layout it has.
macro_rules! either {
    ($self:expr, $r:ident => $body:expr) => {
        match $self {
            BlkRing::X86_64($r) => $body,
            BlkRing::X86_32($r, _) => $body,
        }
    };
}

impl BlkRing {
    /// Attach to the ring the frontend initialised in `mem`, in `protocol`'s
    /// layout, resuming where its shared indices stand ([`BackRing::attach`]).
    ///
    /// # Errors
    ///
    /// As [`BackRing::attach`].
    pub fn attach(mem: Region, protocol: Protocol) -> Result<Self, RingError> {
        Ok(match protocol {
            Protocol::X86_64 => BlkRing::X86_64(BackRing::attach(mem)?),
            Protocol::X86_32 => BlkRing::X86_32(BackRing::attach(mem)?, Vec::new()),
        })
    }

    /// Attach to a ring another backend was serving until it died, with its
    /// request consumer at `req_cons` ([`BackRing::attach_resumed`]).
    ///
    /// # Errors
    ///
    /// As [`BackRing::attach_resumed`].
    pub fn attach_resumed(
        mem: Region,
        protocol: Protocol,
        req_cons: RingIdx,
    ) -> Result<Self, RingError> {
        Ok(match protocol {
            Protocol::X86_64 => BlkRing::X86_64(BackRing::attach_resumed(mem, req_cons)?),
            Protocol::X86_32 => {
                BlkRing::X86_32(BackRing::attach_resumed(mem, req_cons)?, Vec::new())
            }
        })
    }

    /// The layout.
    pub fn protocol(&self) -> Protocol {
        match self {
            BlkRing::X86_64(_) => Protocol::X86_64,
            BlkRing::X86_32(..) => Protocol::X86_32,
        }
    }

    /// `RING_SIZE`.
    pub fn size(&self) -> u32 {
        either!(self, r => r.size())
    }

    /// `req_cons`.
    pub fn req_cons(&self) -> RingIdx {
        either!(self, r => r.req_cons())
    }

    /// `rsp_prod_pvt`.
    pub fn rsp_prod_pvt(&self) -> RingIdx {
        either!(self, r => r.rsp_prod_pvt())
    }

    /// [`BackRing::unconsumed_requests`].
    ///
    /// # Errors
    ///
    /// As [`BackRing::unconsumed_requests`].
    pub fn unconsumed_requests(&mut self) -> Result<u32, RingError> {
        either!(self, r => r.unconsumed_requests())
    }

    /// [`BackRing::take_requests_up_to`], each request copied out once and, for
    /// a 32-bit frontend, translated from its copy.
    ///
    /// # Errors
    ///
    /// As [`BackRing::take_requests_up_to`].
    pub fn take_requests_up_to(
        &mut self,
        out: &mut Vec<BlkifRequest>,
        max: usize,
    ) -> Result<usize, RingError> {
        match self {
            BlkRing::X86_64(r) => r.take_requests_up_to(out, max),
            BlkRing::X86_32(r, buf) => {
                buf.clear();
                let n = r.take_requests_up_to(buf, max)?;
                out.extend(buf.iter().map(BlkifRequest::from));
                Ok(n)
            }
        }
    }

    /// [`BackRing::push_response`], in the ring's layout.
    ///
    /// # Errors
    ///
    /// As [`BackRing::push_response`].
    pub fn push_response(&mut self, rsp: &BlkifResponse) -> Result<(), RingError> {
        match self {
            BlkRing::X86_64(r) => r.push_response(rsp),
            BlkRing::X86_32(r, _) => r.push_response(&BlkifX86_32Response::from(rsp)),
        }
    }

    /// [`BackRing::push_responses_and_check_notify`].
    pub fn push_responses_and_check_notify(&mut self) -> Notify {
        either!(self, r => r.push_responses_and_check_notify())
    }

    /// [`BackRing::final_check_for_requests`].
    ///
    /// # Errors
    ///
    /// As [`BackRing::final_check_for_requests`].
    pub fn final_check_for_requests(&mut self) -> Result<bool, RingError> {
        either!(self, r => r.final_check_for_requests())
    }
}
