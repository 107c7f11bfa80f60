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
//! The store client ([`store::Client`]) speaks the wire protocol to either the local
//! daemon or the real xenstored (socket or `/dev/xen/xenbus`).
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod disk;
mod error;
pub mod handshake;
pub mod local;
pub mod platform;
pub mod region;
pub mod store;
pub mod tap;
pub mod xen;
pub mod xenstored;

pub use error::{Error, Result};
pub use region::{ReadOnlyRegion, Region};
pub use xenio_xen_sys::{DomId, GrantRef, Port};

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

// ---------------------------------------------------------------- the store

/// A store transaction id (`tx_id` of `xsd_sockmsg`); [`Tx::NONE`] is no transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Tx(pub u32);

impl Tx {
    /// Not in a transaction.
    pub const NONE: Tx = Tx(0);
}

/// What a domain may do with a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PermAccess {
    /// `n`: nothing.
    None,
    /// `r`: read.
    Read,
    /// `w`: write.
    Write,
    /// `b`: read and write.
    Both,
}

/// One entry of a node's permission list. The first entry names the owner and the
/// access of every domain not listed; the others grant listed domains access.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Perm {
    /// The domain.
    pub domid: DomId,
    /// Its access.
    pub access: PermAccess,
}

impl std::fmt::Display for Perm {
    /// The store's text form: `b0`, `r5`, ...
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = match self.access {
            PermAccess::None => 'n',
            PermAccess::Read => 'r',
            PermAccess::Write => 'w',
            PermAccess::Both => 'b',
        };
        write!(f, "{c}{}", self.domid.0)
    }
}

impl std::str::FromStr for Perm {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::BadValue {
            what: "permission".into(),
            value: s.into(),
        };
        let mut chars = s.chars();
        let access = match chars.next() {
            Some('n') => PermAccess::None,
            Some('r') => PermAccess::Read,
            Some('w') => PermAccess::Write,
            Some('b') => PermAccess::Both,
            _ => return Err(bad()),
        };
        let domid = chars.as_str().parse::<u16>().map_err(|_| bad())?;
        Ok(Perm {
            domid: DomId(domid),
            access,
        })
    }
}

/// A watch event: `path` changed (or was the watched path at registration).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchEvent {
    /// The node that changed.
    pub path: String,
    /// The token given to [`Store::watch`].
    pub token: String,
}

/// A registered watch; unregistered when dropped. Yields the initial event Xen
/// sends on registration first.
pub trait Watch: Send {
    /// The next event, or `Ok(None)` if `timeout` passed first (`None`: wait forever).
    fn next_event(&mut self, timeout: Option<Duration>) -> Result<Option<WatchEvent>>;
}

/// A connection to a xenstore (the local daemon or the real xenstored).
pub trait Store: Send + Sync {
    /// The watches this store hands out.
    type Watch: Watch;
    /// Read a node's value.
    fn read(&self, tx: Tx, path: &str) -> Result<Vec<u8>>;
    /// Write a node (creating it and missing parents).
    fn write(&self, tx: Tx, path: &str, value: &[u8]) -> Result<()>;
    /// Create a node with an empty value (and missing parents); fine if it exists.
    fn mkdir(&self, tx: Tx, path: &str) -> Result<()>;
    /// Remove a node and everything below it.
    fn rm(&self, tx: Tx, path: &str) -> Result<()>;
    /// The names of a node's children.
    fn directory(&self, tx: Tx, path: &str) -> Result<Vec<String>>;
    /// A node's permissions.
    fn get_perms(&self, tx: Tx, path: &str) -> Result<Vec<Perm>>;
    /// Set a node's permissions (the first entry is the owner and default access).
    fn set_perms(&self, tx: Tx, path: &str, perms: &[Perm]) -> Result<()>;
    /// Start a transaction.
    fn transaction_start(&self) -> Result<Tx>;
    /// Commit (`true`) or abort a transaction. A commit that conflicted with another
    /// writer fails with `EAGAIN` ([`Error::is_again`]): run the transaction again.
    fn transaction_end(&self, tx: Tx, commit: bool) -> Result<()>;
    /// Watch `path` and everything below it.
    fn watch(&self, path: &str, token: &str) -> Result<Self::Watch>;

    /// Read a node as UTF-8 text, without the trailing NUL some writers add.
    fn read_string(&self, tx: Tx, path: &str) -> Result<String> {
        let v = self.read(tx, path)?;
        let v = v.strip_suffix(&[0]).unwrap_or(&v);
        String::from_utf8(v.to_vec()).map_err(|_| Error::BadValue {
            what: path.to_string(),
            value: String::from_utf8_lossy(v).into(),
        })
    }

    /// Read a node if it exists.
    fn read_opt(&self, tx: Tx, path: &str) -> Result<Option<String>> {
        match self.read_string(tx, path) {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Run `f` in a transaction, committing at the end and running it again (up to
    /// `attempts` times) while the commit reports a conflict.
    fn transaction<T>(&self, attempts: u32, mut f: impl FnMut(Tx) -> Result<T>) -> Result<T>
    where
        Self: Sized,
    {
        let mut last = None;
        for _ in 0..attempts.max(1) {
            let tx = self.transaction_start()?;
            let value = match f(tx) {
                Ok(v) => v,
                Err(e) => {
                    let _ = self.transaction_end(tx, false);
                    return Err(e);
                }
            };
            match self.transaction_end(tx, true) {
                Ok(()) => return Ok(value),
                Err(e) if e.is_again() => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::StoreProtocol("transaction never ran".into())))
    }
}
