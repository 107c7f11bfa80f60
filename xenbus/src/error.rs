//! The platform's one error type.

use std::io;
use xenio_xen_sys::{DomId, GrantRef, Port};

/// What can go wrong below a driver.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A system call or file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A store request failed (an error reply, a broken connection, no reply).
    #[error(transparent)]
    Store(#[from] xenio_xenstore::Error),
    /// A grant could not be mapped, copied or revoked.
    #[error("grant {gref} of domain {domid}: {reason}")]
    Grant {
        /// The granting domain.
        domid: DomId,
        /// The reference.
        gref: GrantRef,
        /// Why (not granted, granted to another domain, read-only, revoked, in use...).
        reason: String,
    },
    /// An event channel operation failed.
    #[error("event channel {port}: {reason}")]
    EventChannel {
        /// The local port (0 if none was allocated yet).
        port: Port,
        /// Why.
        reason: String,
    },
    /// A wait ran out of time.
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(std::time::Duration, String),
    /// A value in the store or from a peer is malformed.
    #[error("bad value for {what}: {value:?}")]
    BadValue {
        /// Which key or field.
        what: String,
        /// What was found.
        value: String,
    },
    /// A handshake key is missing, malformed, or has a value this end cannot
    /// work with ([`crate::handshake::keys::parse_key`],
    /// [`crate::handshake::keys::bad_key`]).
    #[error("store key {path}: {problem}")]
    BadKey {
        /// The key's full store path.
        path: String,
        /// What is wrong with it (quoting the value).
        problem: String,
    },
    /// The requested platform is not available here.
    #[error("{0}")]
    Unavailable(String),
    /// A limit was hit (quota, table full, ...).
    #[error("{0}")]
    Limit(String),
    /// The toolstack's hotplug script failed for the device (its
    /// `hotplug-status = error`, with `hotplug-error`).
    #[error("hotplug script failed: {0}")]
    Hotplug(String),
}

impl Error {
    /// An I/O error with context.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// Whether the store said `ENOENT`: the node (or the device's directory)
    /// is gone, e.g. from an [`Endpoint::switch`](crate::handshake::Endpoint::switch)
    /// on a device the toolstack removed.
    pub fn is_gone(&self) -> bool {
        matches!(self, Error::Store(e) if e.is_not_found())
    }

    /// The error the store answered with, if this is one.
    pub fn store_errno(&self) -> Option<xenio_xenstore::XsError> {
        match self {
            Error::Store(e) => e.errno(),
            _ => None,
        }
    }

    /// Whether this is the store's `ENOENT`.
    pub fn is_not_found(&self) -> bool {
        self.store_errno() == Some(xenio_xenstore::XsError::ENOENT)
    }

    /// Whether this is the store's `EAGAIN` (a transaction conflict: retry).
    pub fn is_again(&self) -> bool {
        self.store_errno() == Some(xenio_xenstore::XsError::EAGAIN)
    }

    /// Whether this is the store's `EACCES`.
    pub fn is_denied(&self) -> bool {
        self.store_errno() == Some(xenio_xenstore::XsError::EACCES)
    }
}

impl From<nix::Error> for Error {
    fn from(e: nix::Error) -> Self {
        Error::io("system call", io::Error::from(e))
    }
}

/// Results of the platform layer.
pub type Result<T, E = Error> = std::result::Result<T, E>;
