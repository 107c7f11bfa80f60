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
mod evtchn;
mod grant;
pub mod handshake;
#[cfg(feature = "inprocess")]
mod inprocess;
pub mod local;
pub mod platform;
pub mod region;
mod storm;
pub mod window;
pub mod xen;

pub use error::{Error, Result};
pub use evtchn::{EventChannel, EventChannels};
pub use grant::{Access, CopyBuf, GrantCopy, GrantMapper, GrantTable, Granted};
#[cfg(feature = "inprocess")]
pub use platform::{InProcDomain, InProcess};
pub use platform::{LocalPlatform, Platform, XenPlatform};
pub use region::{ReadOnlyRegion, Region};
pub use storm::{MAX_DELAY as MAX_STORM_DELAY, SpuriousEvents};
pub use window::GrantWindow;
pub use xenio_xen_sys::{DomId, GrantRef, Port};
pub use xenio_xenstore::{
    self as xenstore, Client as StoreClient, Perm, PermAccess, Store, Tx, Watch, WatchEvent,
    XsError,
};
