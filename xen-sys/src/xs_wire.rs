//! The xenstore wire protocol of `xen/io/xs_wire.h`.

use bytemuck::{Pod, Zeroable};
use std::mem::{offset_of, size_of};

/// `enum xsd_sockmsg_type`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum XsdSockmsgType {
    Control = 0,
    Directory = 1,
    Read = 2,
    GetPerms = 3,
    Watch = 4,
    Unwatch = 5,
    TransactionStart = 6,
    TransactionEnd = 7,
    Introduce = 8,
    Release = 9,
    GetDomainPath = 10,
    Write = 11,
    Mkdir = 12,
    Rm = 13,
    SetPerms = 14,
    WatchEvent = 15,
    Error = 16,
    IsDomainIntroduced = 17,
    Resume = 18,
    SetTarget = 19,
    /// 20 was `XS_RESTRICT`, removed.
    ResetWatches = 21,
    DirectoryPart = 22,
}

/// `XS_TYPE_COUNT`: number of valid types (20 is a hole).
pub const XS_TYPE_COUNT: u32 = 23;
/// `XS_INVALID`: guaranteed to remain invalid.
pub const XS_INVALID: u32 = 0xffff;

impl TryFrom<u32> for XsdSockmsgType {
    type Error = u32;
    fn try_from(v: u32) -> Result<Self, u32> {
        use XsdSockmsgType::*;
        Ok(match v {
            0 => Control,
            1 => Directory,
            2 => Read,
            3 => GetPerms,
            4 => Watch,
            5 => Unwatch,
            6 => TransactionStart,
            7 => TransactionEnd,
            8 => Introduce,
            9 => Release,
            10 => GetDomainPath,
            11 => Write,
            12 => Mkdir,
            13 => Rm,
            14 => SetPerms,
            15 => WatchEvent,
            16 => Error,
            17 => IsDomainIntroduced,
            18 => Resume,
            19 => SetTarget,
            21 => ResetWatches,
            22 => DirectoryPart,
            other => return Err(other),
        })
    }
}

/// `struct xsd_sockmsg`: the 16-byte header of every message, followed by `len`
/// bytes of payload (generally NUL-terminated strings).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct XsdSockmsg {
    /// `XS_*` ([`XsdSockmsgType`]).
    pub type_: u32,
    /// Request identifier, echoed in the daemon's response.
    pub req_id: u32,
    /// Transaction id (0 if not in a transaction).
    pub tx_id: u32,
    /// Length of the payload that follows.
    pub len: u32,
}

/// `xsd_errors[]`: errors travel as their names; the index is the wire order.
pub const XSD_ERRORS: [(i32, &str); 16] = [
    (libc::EINVAL, "EINVAL"),
    (libc::EACCES, "EACCES"),
    (libc::EEXIST, "EEXIST"),
    (libc::EISDIR, "EISDIR"),
    (libc::ENOENT, "ENOENT"),
    (libc::ENOMEM, "ENOMEM"),
    (libc::ENOSPC, "ENOSPC"),
    (libc::EIO, "EIO"),
    (libc::ENOTEMPTY, "ENOTEMPTY"),
    (libc::ENOSYS, "ENOSYS"),
    (libc::EROFS, "EROFS"),
    (libc::EBUSY, "EBUSY"),
    (libc::EAGAIN, "EAGAIN"),
    (libc::EISCONN, "EISCONN"),
    (libc::E2BIG, "E2BIG"),
    (libc::EPERM, "EPERM"),
];

/// `XS_WRITE_NONE`.
pub const XS_WRITE_NONE: &str = "NONE";
/// `XS_WRITE_CREATE`.
pub const XS_WRITE_CREATE: &str = "CREATE";
/// `XS_WRITE_CREATE_EXCL`.
pub const XS_WRITE_CREATE_EXCL: &str = "CREATE|EXCL";

/// `XS_WATCH_PATH`: index of the path in a watch event's payload.
pub const XS_WATCH_PATH: u32 = 0;
/// `XS_WATCH_TOKEN`: index of the token in a watch event's payload.
pub const XS_WATCH_TOKEN: u32 = 1;

/// `XENSTORE_RING_SIZE`.
pub const XENSTORE_RING_SIZE: usize = 1024;
/// `XENSTORE_PAYLOAD_MAX`: the largest payload; more is a protocol violation.
pub const XENSTORE_PAYLOAD_MAX: usize = 4096;
/// `XENSTORE_ABS_PATH_MAX`.
pub const XENSTORE_ABS_PATH_MAX: usize = 3072;
/// `XENSTORE_REL_PATH_MAX`.
pub const XENSTORE_REL_PATH_MAX: usize = 2048;
/// `XENSTORE_SERVER_FEATURE_RECONNECTION`.
pub const XENSTORE_SERVER_FEATURE_RECONNECTION: u32 = 1;
/// `XENSTORE_SERVER_FEATURE_ERROR`.
pub const XENSTORE_SERVER_FEATURE_ERROR: u32 = 2;
/// `XENSTORE_CONNECTED`.
pub const XENSTORE_CONNECTED: u32 = 0;
/// `XENSTORE_RECONNECT`.
pub const XENSTORE_RECONNECT: u32 = 1;
/// `XENSTORE_ERROR_NONE`.
pub const XENSTORE_ERROR_NONE: u32 = 0;
/// `XENSTORE_ERROR_COMM`.
pub const XENSTORE_ERROR_COMM: u32 = 1;
/// `XENSTORE_ERROR_RINGIDX`.
pub const XENSTORE_ERROR_RINGIDX: u32 = 2;
/// `XENSTORE_ERROR_PROTO`.
pub const XENSTORE_ERROR_PROTO: u32 = 3;

/// `struct xenstore_domain_interface`: the page a domain talks to xenstored through.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct XenstoreDomainInterface {
    /// Requests to the daemon.
    pub req: [u8; XENSTORE_RING_SIZE],
    /// Replies and watch events.
    pub rsp: [u8; XENSTORE_RING_SIZE],
    /// `req_cons`.
    pub req_cons: u32,
    /// `req_prod`.
    pub req_prod: u32,
    /// `rsp_cons`.
    pub rsp_cons: u32,
    /// `rsp_prod`.
    pub rsp_prod: u32,
    /// Bitmap of `XENSTORE_SERVER_FEATURE_*`.
    pub server_features: u32,
    /// `XENSTORE_CONNECTED` or `XENSTORE_RECONNECT`.
    pub connection: u32,
    /// `XENSTORE_ERROR_*`.
    pub error: u32,
}

const _: () = assert!(size_of::<XsdSockmsg>() == 16);
const _: () = assert!(offset_of!(XsdSockmsg, len) == 12);
const _: () = assert!(size_of::<XenstoreDomainInterface>() == 2076);
const _: () = assert!(offset_of!(XenstoreDomainInterface, req_cons) == 2048);
const _: () = assert!(offset_of!(XenstoreDomainInterface, error) == 2072);
