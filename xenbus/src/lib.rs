//! The platform layer drivers program against: event channels, grants, the store
//! and the device handshake, with one implementation per place xenio runs.
//!
//! Drivers see only the traits of this module ([`EventChannels`],
//! [`GrantTable`], [`GrantMapper`], [`Store`]); they never open `/dev/xen` or the
//! local platform's files themselves. The implementations:
//!
//! - `local`: the embedded default. Each domain is a process on one Linux host; the
//!   store is xenio's own daemon speaking the real xenstore wire protocol, grants
//!   are pages of a per-domain shared pool checked against a per-domain grant table
//!   with Xen's rules, and event channels are pollable, coalescing FIFOs.
//!   `docs/local-platform.md` specifies all of it, precisely enough for a C program.
//! - `xen`: real Xen, over `/dev/xen/evtchn`, `/dev/xen/gntalloc`,
//!   `/dev/xen/gntdev` and xenstored.
//!
//! - `InProcess` (feature `inprocess`): several domains as threads of one process,
//!   for tests, fuzzing and micro-benchmarks.
//!
//! The store itself (the [`Store`] trait, its client and xenio's store daemon) is
//! the `xenio-xenstore` crate; its types are re-exported here so that a driver
//! depends on this crate alone.
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

mod error;
pub mod handshake;
#[cfg(feature = "inprocess")]
mod inprocess;
pub mod local;
pub mod platform;
pub mod region;
pub mod xen;

pub use error::{Error, Result};
#[cfg(feature = "inprocess")]
pub use platform::{InProcDomain, InProcess};
pub use platform::{LocalPlatform, Platform, XenPlatform};
pub use region::{ReadOnlyRegion, Region};
pub use xenio_xen_sys::{DomId, GrantRef, Port};
pub use xenio_xenstore::{
    self as xenstore, Client as StoreClient, Perm, PermAccess, Store, Tx, Watch, WatchEvent,
    XsError,
};

use std::os::fd::AsFd;
use std::time::Duration;

// ---------------------------------------------------------------- event channels

/// One bound event channel: the local end of an interdomain channel.
///
/// Notifications coalesce as Xen's do: several notifications before the owner
/// looks are one pending event. A notification sent while the owner is not waiting
/// stays pending until it waits. The descriptor ([`AsFd`]) is readable while an
/// event is pending, so a channel can sit in a `poll` set or an io_uring.
pub trait EventChannel: AsFd + Send + Sync {
    /// The local port.
    fn port(&self) -> Port;
    /// Send an event to the other end.
    fn notify(&self) -> Result<()>;
    /// Consume a pending event without blocking; `true` if there was one. The
    /// channel is unmasked again afterwards.
    fn take_pending(&self) -> Result<bool>;
    /// Block until an event is pending (consuming it, then unmasking), or until
    /// `timeout` passes (`Ok(false)`). `None` waits forever.
    fn wait(&self, timeout: Option<Duration>) -> Result<bool>;
    /// Unmask the port after the caller consumed an event through the descriptor.
    fn unmask(&self) -> Result<()>;
}

/// Allocating and binding event channels (what `/dev/xen/evtchn` offers).
pub trait EventChannels: Send + Sync {
    /// The channels this provider creates.
    type Channel: EventChannel;
    /// Frontend side: a new port that `remote` may bind to.
    fn alloc_unbound(&self, remote: DomId) -> Result<Self::Channel>;
    /// Backend side: bind to `remote`'s unbound port `remote_port`.
    fn bind_interdomain(&self, remote: DomId, remote_port: Port) -> Result<Self::Channel>;
}

// ---------------------------------------------------------------- grants

/// Access a grant gives (or a mapping asks for).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    /// The peer may only read.
    ReadOnly,
    /// The peer may read and write.
    ReadWrite,
}

/// Pages of this domain's memory granted to another domain. Dropping the value
/// revokes the grants (after the peer unmapped them; see [`Granted::revoke`]).
pub trait Granted: Send + Sync {
    /// One grant reference per page, in order.
    fn refs(&self) -> &[GrantRef];
    /// The pages, contiguous in this process (shared, so a ring can own a handle).
    fn region(&self) -> &std::sync::Arc<Region>;
    /// Revoke every grant now. Fails (and keeps the grants) while the peer still
    /// has a page mapped, as `gnttab_end_foreign_access` does.
    fn revoke(&mut self) -> Result<()>;
}

/// Frontend side: grant pages of this domain's memory (what `/dev/xen/gntalloc`
/// offers).
pub trait GrantTable: Send + Sync {
    /// The granted pages this table hands out.
    type Granted: Granted;
    /// Allocate `pages` fresh zeroed pages and grant them to `to` with `access`.
    fn grant(&self, to: DomId, pages: usize, access: Access) -> Result<Self::Granted>;
}

/// One grant copy (`GNTTABOP_copy`): between a peer's granted page and a local
/// buffer, without mapping the page.
#[derive(Debug)]
pub struct GrantCopy<'a> {
    /// The granting domain.
    pub domid: DomId,
    /// Its grant reference.
    pub gref: GrantRef,
    /// Offset in the granted page; `offset + len` must stay within the 4 KiB page.
    pub offset: u16,
    /// The local side and the direction.
    pub local: CopyBuf<'a>,
}

/// The local side of a [`GrantCopy`].
#[derive(Debug)]
pub enum CopyBuf<'a> {
    /// Copy from the granted page into this buffer.
    FromGrant(&'a mut [u8]),
    /// Copy this buffer into the granted page (needs a read-write grant).
    ToGrant(&'a [u8]),
}

/// Backend side: map or copy another domain's grants (what `/dev/xen/gntdev` offers).
pub trait GrantMapper: Send + Sync {
    /// Map grants of `domid` read-write into one contiguous region, in order.
    /// Refused unless every grant was granted to this domain, read-write, and not revoked.
    fn map(&self, domid: DomId, refs: &[GrantRef]) -> Result<Region>;
    /// Map grants of `domid` read-only (works for read-only and read-write grants).
    fn map_readonly(&self, domid: DomId, refs: &[GrantRef]) -> Result<ReadOnlyRegion>;
    /// Perform grant copies. The result has one entry per copy, in order: each
    /// copy succeeds or fails on its own, as `GNTTABOP_copy` reports per segment.
    fn copy(&self, ops: &mut [GrantCopy<'_>]) -> Result<Vec<Result<()>>>;
}
