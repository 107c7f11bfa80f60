//! The [`Store`] trait drivers program against, and the types of its requests.

use crate::error::{Error, Result};
use std::time::Duration;
use xenio_xen_sys::DomId;

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
///
/// Paths are absolute (`/local/domain/1/device/vbd/51712/state`) or relative to
/// the connection's own domain (`device/vbd/51712/state` for domain 1).
///
/// # Errors
///
/// Every request fails with [`Error::Store`] when the store answers with an
/// error ([`XsError`](crate::XsError): `ENOENT` for a missing node, `EACCES` where the domain may
/// not look, `EAGAIN` for a conflicting transaction, `EINVAL` for a malformed
/// path, `ENOSPC`/`E2BIG` at a quota), [`Error::Timeout`] when no reply comes in
/// time, and [`Error::Protocol`] or [`Error::Io`] when the connection breaks.
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
    /// `attempts` times) while the commit reports a conflict (`EAGAIN`). An error
    /// from `f` aborts the transaction and is returned as it is.
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
        Err(last.unwrap_or_else(|| Error::Protocol("transaction never ran".into())))
    }
}
